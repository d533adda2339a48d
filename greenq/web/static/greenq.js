// greenq dashboard: the only script (CSP allows no inline one). Everything
// works without it; it adds "pick every row" boxes and confirmation dialogs
// on destructive buttons.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("input.check-all").forEach(function (all) {
    all.addEventListener("change", function () {
      all.closest("form").querySelectorAll("input[name=ids]").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  });
  document.querySelectorAll("button[data-confirm]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });
});
