// Passkeys (WebAuthn) on the sign-in, two-factor, confirm-access and passkey pages.
// No inline script (CSP script-src 'self'): a button says what it does in data attributes,
//   <button data-passkey="create|get|login" data-passkey-form="form id" data-passkey-options="json block id">
// the server's WebAuthn options come in a <script type="application/json"> data block (never executed),
// and the browser's answer is posted in the form's hidden "credential" field. webauthnJSON is allauth's
// copy of github/webauthn-json (static/mfa/js/webauthn-json.js), loaded before this file.
(function () {
  "use strict";

  var MESSAGES = {
    NotAllowedError: "The passkey prompt was closed or timed out. Try again.",
    InvalidStateError: "This passkey is already registered for your account.",
    SecurityError: "Passkeys only work on KeyCore's own address (HTTPS, or localhost).",
    NotSupportedError: "This browser or authenticator cannot create this kind of passkey.",
  };

  function supported() {
    return !!(window.PublicKeyCredential && navigator.credentials && window.webauthnJSON);
  }

  function showError(form, text) {
    var box = form.querySelector("[data-passkey-error]") || document.querySelector("[data-passkey-error]");
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  function options(button) {
    var block = document.getElementById(button.getAttribute("data-passkey-options"));
    return JSON.parse(block.textContent);
  }

  // A passkey that signs in alone must live on the authenticator (resident) and check its user (PIN, biometrics).
  function creationOptions(button, form) {
    var publicKey = JSON.parse(JSON.stringify(options(button).creation_options));
    var passwordless = form.querySelector("input[name=passwordless]");
    if (passwordless) {
      var selection = publicKey.publicKey.authenticatorSelection;
      selection.residentKey = passwordless.checked ? "required" : "discouraged";
      selection.requireResidentKey = passwordless.checked;
      if (passwordless.checked) selection.userVerification = "required";
    }
    return publicKey;
  }

  async function requestOptions(button, form) {
    if (button.getAttribute("data-passkey") !== "login") return options(button).request_options;
    // passwordless sign-in: a fresh challenge for an unknown user, fetched when the button is pressed
    var response = await fetch(form.action, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!response.ok) throw new Error(response.status === 429 ? "Too many sign-in attempts. Wait a minute." : "KeyCore could not start the passkey sign-in.");
    return (await response.json()).request_options;
  }

  async function ceremony(button) {
    var form = document.getElementById(button.getAttribute("data-passkey-form")) || button.form;
    var errors = form.querySelector("[data-passkey-error]") || document.querySelector("[data-passkey-error]");
    if (errors) errors.hidden = true;
    if (!supported()) {
      showError(form, "This browser cannot use passkeys.");
      return;
    }
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      var credential = button.getAttribute("data-passkey") === "create"
        ? await window.webauthnJSON.create(creationOptions(button, form))
        : await window.webauthnJSON.get(await requestOptions(button, form));
      form.querySelector("input[name=credential]").value = JSON.stringify(credential);
      form.submit();
    } catch (error) {
      showError(form, MESSAGES[error && error.name] || (error && error.message) || "The passkey did not answer.");
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-passkey]");
    if (!button) return;
    event.preventDefault();
    ceremony(button);
  });

  document.addEventListener("DOMContentLoaded", function () {
    if (supported()) return;
    document.querySelectorAll("[data-passkey]").forEach(function (button) {
      button.disabled = true;
      button.title = "This browser cannot use passkeys.";
    });
  });
})();
