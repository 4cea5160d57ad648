// Night mode: red on black for dark-adapted eyes, remembered by the browser. A classic script in <head>, so the
// page never flashes bright before the setting is applied.
(function () {
  "use strict";
  const KEY = "alpaca-focuser-night";
  const root = document.documentElement;
  function apply(on) {
    if (on) root.setAttribute("data-night", "1"); else root.removeAttribute("data-night");
    const button = document.getElementById("night");
    if (button) button.setAttribute("aria-pressed", on ? "true" : "false");
  }
  let stored = null;
  try { stored = window.localStorage.getItem(KEY); } catch (err) { stored = null; }
  apply(stored === "1");
  document.addEventListener("DOMContentLoaded", function () {
    apply(root.hasAttribute("data-night"));
    const button = document.getElementById("night");
    if (!button) return;
    button.addEventListener("click", function () {
      const on = !root.hasAttribute("data-night");
      apply(on);
      try { window.localStorage.setItem(KEY, on ? "1" : "0"); } catch (err) { /* private mode: this page only */ }
      document.dispatchEvent(new CustomEvent("nightmode"));
    });
  });
})();
