// hotparams console: small progressive enhancement; every page works without it.
(function () {
  "use strict";
  // Fleet: refresh the table while a change rolls out (every second, then every 3 s).
  function live(box) {
    var url = box.getAttribute("data-live");
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          box.innerHTML = html;
          var summary = box.querySelector("[data-complete]");
          var done = summary && summary.getAttribute("data-complete") === "true";
          setTimeout(tick, done ? 3000 : 1000);
        })
        .catch(function () { setTimeout(tick, 5000); });
    }
    setTimeout(tick, 1000);
  }
  // Search: filter the rows of a table as one types (the form still works without it).
  function filter(input) {
    var rows = document.querySelectorAll(input.getAttribute("data-filter"));
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      rows.forEach(function (row) {
        var name = (row.getAttribute("data-name") || row.textContent).toLowerCase();
        row.hidden = q !== "" && name.indexOf(q) < 0;
      });
    });
  }
  // A form is sent once: a second click on Publish does nothing.
  function once(form) {
    form.addEventListener("submit", function () {
      var buttons = form.querySelectorAll("button[type=submit]");
      setTimeout(function () { buttons.forEach(function (b) { b.disabled = true; }); }, 0);
    });
  }
  // JSON editors: say at once when the text is not JSON (the server checks it again).
  function jsonHint(area) {
    var note = document.createElement("p");
    note.className = "field-error";
    note.id = area.id + "-json";
    note.hidden = true;
    area.insertAdjacentElement("afterend", note);
    area.addEventListener("input", function () {
      var text = area.value.trim();
      var problem = "";
      if (text !== "") {
        try { JSON.parse(text); } catch (e) { problem = "not JSON yet: " + e.message; }
      }
      note.textContent = problem;
      note.hidden = problem === "";
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("textarea.json").forEach(jsonHint);
    document.querySelectorAll("[data-live]").forEach(live);
    document.querySelectorAll("input[data-filter]").forEach(filter);
    document.querySelectorAll("form[method=post]").forEach(once);
    var invalid = document.querySelector("[aria-invalid=true]");
    if (invalid) { invalid.focus(); }
  });
})();
