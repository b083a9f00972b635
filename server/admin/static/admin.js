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

  // The rollout view: poll the small JSON endpoint, redraw the counts, the per-location table,
  // the last errors and a hand-drawn SVG chart of the counts over time. No reload, no library.
  function setupRollout() {
    var root = document.querySelector("[data-rollout-url]");
    if (!root) return;
    var url = root.getAttribute("data-rollout-url");
    var every = parseInt(root.getAttribute("data-rollout-poll"), 10) || 1500;
    var chart = root.querySelector("[data-rollout-chart]");
    var updated = document.querySelector("[data-rollout-updated]");
    var history = [];
    var since = 0;
    var SVG = "http://www.w3.org/2000/svg";
    var COLORS = { awaiting_activation: "#8c959f", awaiting_sign_in: "#bf8700", signed_in: "#1a7f37" };
    var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
    var utc = function (t) { return new Date(t * 1000).toISOString().slice(11, 19) + " UTC"; };

    function el(name, attrs, text) {
      var node = document.createElementNS(SVG, name);
      Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
      if (text !== undefined) node.textContent = text;
      return node;
    }
    function cell(tr, text, cls) {
      var td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
      return td;
    }
    function setCount(key, label, n) {
      var li = root.querySelector('[data-count="' + key + '"]');
      if (li) li.textContent = label + ": " + fmt(n);
    }

    function drawChart(data) {
      var w = 720, h = 260, left = 56, right = 12, top = 34, bottom = 28;
      var svg = el("svg", { viewBox: "0 0 " + w + " " + h, class: "chart-svg", "aria-hidden": "true", focusable: "false" });
      var points = history.slice();
      var now = data.at;
      if (points.length) points.push({ at: now, counts: data.counts });
      var t0 = points.length ? points[0].at : now - 60;
      var t1 = Math.max(now, t0 + 10);
      var max = Math.max(1, data.total);
      var x = function (t) { return left + (w - left - right) * (t - t0) / (t1 - t0); };
      var y = function (n) { return top + (h - top - bottom) * (1 - n / max); };
      [0, 0.5, 1].forEach(function (f) {
        var v = Math.round(max * f);
        svg.appendChild(el("line", { x1: left, x2: w - right, y1: y(v), y2: y(v), class: "grid" }));
        svg.appendChild(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
      });
      svg.appendChild(el("text", { x: left, y: h - 8, class: "tick" }, utc(t0)));
      svg.appendChild(el("text", { x: w - right, y: h - 8, "text-anchor": "end", class: "tick" }, utc(t1)));
      data.states.forEach(function (s) {
        if (!points.length) return;
        var d = "";
        points.forEach(function (p, i) {
          var px = x(p.at).toFixed(1), py = y(p.counts[s] || 0).toFixed(1);
          // A step line: a count holds until the next point.
          d += i === 0 ? "M" + px + "," + py : "H" + px + "V" + py;
        });
        svg.appendChild(el("path", { d: d, class: "series", stroke: COLORS[s] || "#0b5cad" }));
      });
      var legend = el("g", { class: "legend" });
      data.states.forEach(function (s, i) {
        var lx = left + 8 + i * 170;
        legend.appendChild(el("rect", { x: lx, y: 6, width: 12, height: 12, fill: COLORS[s] || "#0b5cad" }));
        legend.appendChild(el("text", { x: lx + 16, y: 16, class: "tick" }, data.labels[s] + " " + fmt(data.counts[s])));
      });
      svg.appendChild(legend);
      chart.textContent = "";
      chart.appendChild(svg);
      chart.setAttribute("aria-label", "Chart of devices by state over time. Now: " + data.states.map(function (s) {
        return data.labels[s] + " " + fmt(data.counts[s]);
      }).join(", ") + ".");
    }

    function show(data) {
      (data.history || []).forEach(function (p) { history.push(p); });
      if (history.length > 900) history = history.slice(history.length - 900);
      if (history.length) since = history[history.length - 1].at;
      setCount("total", "Registered", data.total);
      data.states.forEach(function (s) { setCount(s, data.labels[s], data.counts[s]); });
      setCount("locked", "Locked", data.locked);
      setCount("errors_total", "Errors", data.errors_total);
      if (data.discovered !== undefined) setCount("discovered", "Discovered, not registered (all tenants)", data.discovered);

      var body = root.querySelector("[data-rollout-locations]");
      if (body) {
        body.textContent = "";
        data.locations.forEach(function (row) {
          var tr = document.createElement("tr");
          cell(tr, row.location || "(no location)");
          data.states.forEach(function (s) { cell(tr, fmt(row.counts[s]), "num"); });
          cell(tr, fmt(row.total), "num");
          body.appendChild(tr);
        });
        if (!data.locations.length) cell(body.appendChild(document.createElement("tr")), "No devices registered yet.").colSpan = data.states.length + 2;
      }
      var more = root.querySelector("[data-rollout-more-locations]");
      if (more) more.textContent = data.locations_total > data.locations.length
        ? "The first " + fmt(data.locations.length) + " of " + fmt(data.locations_total) + " locations, by name." : "";

      var errors = root.querySelector("[data-rollout-errors]");
      if (errors) {
        errors.textContent = "";
        data.errors.forEach(function (e) {
          var tr = document.createElement("tr");
          cell(tr, e.when);
          cell(tr, e.mac, "mono");
          cell(tr, e.location || "\u2014");
          cell(tr, e.stage === "code_entry" ? "Code entry" : "Sign-in");
          cell(tr, e.label).title = e.message;
          errors.appendChild(tr);
        });
        if (!data.errors.length) cell(errors.appendChild(document.createElement("tr")), "No errors.").colSpan = 5;
      }
      drawChart(data);
      if (updated) updated.textContent = "Live: updated " + utc(data.at) + ".";
    }

    function poll() {
      fetch(url + "?since=" + encodeURIComponent(since), { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) {
          if (r.redirected || !r.ok) throw new Error("status " + r.status);
          return r.json();
        })
        .then(function (data) { show(data); setTimeout(poll, every); })
        .catch(function () {
          if (updated) updated.textContent = "Not updating: the server did not answer. Retrying; reload the page if this stays.";
          setTimeout(poll, every * 3);
        });
    }
    poll();
  }

  function setupPrint() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (b) {
      b.addEventListener("click", function () { window.print(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupSelection();
    setupStatus();
    setupRollout();
    setupPrint();
  });
})();
