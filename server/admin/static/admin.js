// Imprint admin UI: small progressive enhancements. Every page works without this file.
(function () {
  "use strict";

  // "Select all on this page" for the device table, and a live count of the selection.
  function setupSelection() {
    var all = document.querySelector("[data-select-all]");
    if (!all || !all.form) return;
    var form = all.form;
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[type="checkbox"][name="mac"]'));
    var counter = form.querySelector("[data-selected-count]");
    function update() {
      var n = boxes.filter(function (b) { return b.checked; }).length;
      all.checked = n > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
      if (counter) counter.textContent = n ? n + " selected" : "";
    }
    all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      update();
    });
    boxes.forEach(function (b) { b.addEventListener("change", update); });
    update();
  }

  // "Sign in a user": poll the device's state until it is signed in (bounded: the user code
  // expires within 15 minutes, so polling stops after 20).
  function setupStatus() {
    var el = document.querySelector("[data-status-url]");
    if (!el) return;
    var url = el.getAttribute("data-status-url");
    var started = Date.now();
    var limitMs = 20 * 60 * 1000;
    function show(data) {
      if (data.state === "signed_in") {
        el.textContent = "Signed in" + (data.signed_in_user ? " as " + data.signed_in_user : "") + ". The device is ready.";
        el.classList.add("done");
        el.setAttribute("data-state", "signed_in");
        var done = document.getElementById("signin-done");
        if (done) done.textContent = "Done";
        return true;
      }
      el.setAttribute("data-state", data.state);
      return false;
    }
    function poll() {
      if (Date.now() - started > limitMs) {
        el.textContent = "Stopped checking. Reload the device page to see its state.";
        return;
      }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && show(data)) return;
          setTimeout(poll, 2000);
        })
        .catch(function () { setTimeout(poll, 5000); });
    }
    setTimeout(poll, 1000);
  }

  function setupPrint() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (b) {
      b.addEventListener("click", function () { window.print(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupSelection();
    setupStatus();
    setupPrint();
  });
})();
