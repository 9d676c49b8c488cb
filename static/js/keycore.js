// KeyCore's few behaviours, attached by data attributes (no inline scripts: CSP script-src 'self').
(function () {
  "use strict";

  // <form data-confirm="Really?">: ask in the page before submitting (a <dialog>, not the browser's
  // confirm() box): the question, the action's own button name, and Cancel, which has the focus, so that
  // Enter or Escape never does the action by accident. Without JS the form submits as it is.
  var dialog = null;
  function confirmDialog() {
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.className = "confirm-dialog";
    dialog.setAttribute("aria-labelledby", "confirm-dialog-question");
    dialog.innerHTML = '<article><p id="confirm-dialog-question"></p><footer class="form-actions">' +
      '<button type="button" class="secondary" data-answer="no">Cancel</button>' +
      '<button type="button" data-answer="yes"></button></footer></article>';
    document.body.appendChild(dialog);
    return dialog;
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (!question) return;
    if (form.getAttribute("data-confirmed") === "yes") {
      form.removeAttribute("data-confirmed");
      return;
    }
    event.preventDefault();
    var submitter = event.submitter || form.querySelector("[type=submit]");
    var box = confirmDialog();
    var yes = box.querySelector("[data-answer=yes]");
    box.querySelector("p").textContent = question;
    yes.textContent = submitter ? submitter.textContent.replace(/[….]+$/, "").trim() : "Confirm";
    yes.className = submitter && submitter.classList.contains("danger") ? "danger" : "";
    box.onclick = function (click) {
      var answer = click.target.getAttribute && click.target.getAttribute("data-answer");
      if (!answer) return;
      box.close();
      if (answer === "yes") {
        form.setAttribute("data-confirmed", "yes");
        if (form.requestSubmit) { form.requestSubmit(submitter || undefined); } else { form.submit(); }
      } else if (submitter) {
        submitter.focus();
      }
    };
    box.showModal();
    box.querySelector("[data-answer=no]").focus();
  }, true);

  // <input data-confirm-text="Acme"> enables the form's [data-confirm-target] button only when typed exactly.
  function syncTypedConfirmation(input) {
    var form = input.form;
    if (!form) return;
    var button = form.querySelector("[data-confirm-target]");
    if (button) button.disabled = input.value !== input.getAttribute("data-confirm-text");
  }
  document.addEventListener("input", function (event) {
    if (event.target.matches && event.target.matches("[data-confirm-text]")) syncTypedConfirmation(event.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-confirm-text]").forEach(syncTypedConfirmation);
  });

  // A table wider than the screen scrolls in its .table-scroll box (and long text in its <pre>); a box
  // that scrolls can be focused, so that keyboard users can scroll it with the arrow keys too.
  function markScrollableTables() {
    document.querySelectorAll(".table-scroll, pre").forEach(function (box) {
      if (box.scrollWidth > box.clientWidth + 1 || box.scrollHeight > box.clientHeight + 1) {
        box.setAttribute("tabindex", "0");
      } else {
        box.removeAttribute("tabindex");
      }
    });
  }
  document.addEventListener("DOMContentLoaded", markScrollableTables);
  window.addEventListener("resize", markScrollableTables);
  document.addEventListener("htmx:afterSettle", markScrollableTables);

  // <button data-copy="id" hidden>: copies the text of #id. Shown only here, so that without JS the page
  // offers the text to select, not a button that does nothing. Says "Copied" to screen readers too.
  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { done(copyTheOldWay(text)); });
      return;
    }
    done(copyTheOldWay(text));  // plain-http pages have no clipboard API
  }
  function copyTheOldWay(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var label = button.firstChild;
    copyText(source.textContent.trim(), function (ok) {
      label.textContent = ok === false ? "Select and copy" : "Copied";
      button.setAttribute("aria-live", "polite");
      if (ok === false) {
        var range = document.createRange();
        range.selectNodeContents(source);
        window.getSelection().removeAllRanges();
        window.getSelection().addRange(range);
      }
      window.setTimeout(function () { label.textContent = "Copy"; }, 2500);
    });
  });

  // <button data-fill-form="form-id" data-fill-from=".values" hidden>: fills the form's inputs from the
  // [data-fill-field=name] elements inside .values (the demo KMS's settings).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-fill-form]");
    if (!button) return;
    var form = document.getElementById(button.getAttribute("data-fill-form"));
    var values = document.querySelector(button.getAttribute("data-fill-from"));
    if (!form || !values) return;
    values.querySelectorAll("[data-fill-field]").forEach(function (el) {
      var input = form.elements[el.getAttribute("data-fill-field")];
      if (input) input.value = el.textContent.trim();
    });
    var first = form.querySelector("input:not([type=hidden])");
    if (first && !first.value) first.focus();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-copy], [data-fill-form]").forEach(function (b) { b.hidden = false; });
  });

  // <input data-suggest-from="id_name">: suggests an external id from the name ("Acme Corp." → "acme-corp")
  // while the field is empty or still holds the last suggestion; typing in it keeps what was typed.
  function slug(text) {
    return text.normalize("NFKD").replace(/[\u0300-\u036f]/g, "").toLowerCase()
      .replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 128).replace(/-+$/, "");
  }
  document.addEventListener("input", function (event) {
    document.querySelectorAll("[data-suggest-from]").forEach(function (target) {
      if (event.target.id !== target.getAttribute("data-suggest-from")) return;
      var last = target.getAttribute("data-suggested") || "";
      if (target.value === "" || target.value === last) {
        target.value = slug(event.target.value);
        target.setAttribute("data-suggested", target.value);
      }
    });
  });

  // A form sent back with errors: the first field with an error gets the focus (its message is read with it).
  document.addEventListener("DOMContentLoaded", function () {
    if (document.activeElement && document.activeElement !== document.body) return;
    var invalid = document.querySelector(
      "main form [aria-invalid=true], main form .has-errors input, main form .has-errors select, main form .has-errors textarea");
    if (invalid) invalid.focus();
  });

  // Keyboard: "/" focuses the page's search box; j/k move through rows of a [data-keynav] table; Enter opens.
  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.metaKey || event.ctrlKey || event.altKey) return;
    if (event.key === "/") {
      var search = document.querySelector("[data-search]");
      if (search) { event.preventDefault(); search.focus(); }
      return;
    }
    var table = document.querySelector("[data-keynav]");
    if (!table) return;
    var rows = Array.prototype.slice.call(table.querySelectorAll("tbody tr[data-href]"));
    if (!rows.length) return;
    var current = rows.findIndex(function (r) { return r.classList.contains("selected"); });
    if (event.key === "j" || event.key === "k") {
      event.preventDefault();
      if (current >= 0) rows[current].classList.remove("selected");
      current = event.key === "j" ? Math.min(rows.length - 1, current + 1) : Math.max(0, current - 1);
      rows[current].classList.add("selected");
      rows[current].scrollIntoView({ block: "nearest" });
    } else if (event.key === "Enter" && current >= 0) {
      window.location = rows[current].getAttribute("data-href");
    }
  });
})();
