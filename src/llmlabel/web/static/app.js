// Keyboard for labelling: keys 1-9 pick the label with that number (answering at once when it
// is a button), Enter submits a multi-label form, Esc leaves a text box. Nothing else here.
(function () {
  "use strict";

  function typing(el) {
    return el && el.closest && el.closest("textarea, select, input[type=text], input[type=search], input[type=password]");
  }

  function send(form, submitter) {
    form.requestSubmit(submitter);
  }

  // A held-down key or a double click must not answer twice.
  document.addEventListener("submit", function (e) {
    if (e.target.dataset.sent) e.preventDefault();
    else e.target.dataset.sent = "1";
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent]").forEach(function (f) { delete f.dataset.sent; });
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape" && typing(e.target)) { e.target.blur(); return; }
    if (typing(e.target)) return;
    var form = document.querySelector("form.keys");
    if (!form) return;
    if (/^[1-9]$/.test(e.key)) {
      var el = form.querySelector('[data-key="' + e.key + '"]');
      if (!el) return;
      e.preventDefault();
      if (el.tagName === "BUTTON") send(form, el);
      else if (el.type === "checkbox") el.checked = !el.checked;
      else if (el.type === "radio") el.checked = true;
    } else if (e.key === "Enter" && !(e.target.tagName === "BUTTON")) {
      var submit = form.querySelector("button.primary");
      if (submit) { e.preventDefault(); send(form, submit); }
    }
  });

  // Taxonomies: filter the category list as you type; Enter in the filter picks the first match.
  document.querySelectorAll("input.tree-filter").forEach(function (input) {
    var select = document.getElementById(input.dataset.filter);
    if (!select) return;
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      var first = null;
      Array.prototype.forEach.call(select.options, function (o) {
        o.hidden = q !== "" && o.text.toLowerCase().indexOf(q) < 0;
        if (!o.hidden && !first) first = o;
      });
      if (first && (select.selectedIndex < 0 || select.options[select.selectedIndex].hidden)) first.selected = true;
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); select.focus(); }
    });
  });
})();
