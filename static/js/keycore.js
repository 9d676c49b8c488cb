// KeyCore's few behaviours, attached by data attributes (no inline scripts: CSP script-src 'self').
(function () {
  "use strict";

  // <form data-confirm="Really?">: ask before submitting.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
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
