// lanes dashboard: live updates and the action buttons, without a framework.
// Every 2 s the page is fetched again and its <main> swapped for the fresh one (unless the
// tab is hidden or the user is typing in a field of it); buttons with data-action POST to
// the JSON API (the token cookie goes along, with the header that lets the API take it) and
// show its answer.
(function () {
  "use strict";
  var stamp = function (text) {
    var el = document.getElementById("updated");
    if (el) el.textContent = text;
  };
  var refresh = function () {
    var main = document.querySelector('main[data-live="true"]');
    if (!main || document.hidden) return Promise.resolve();
    var focus = document.activeElement;
    if (focus && main.contains(focus) && /INPUT|SELECT|TEXTAREA/.test(focus.tagName)) {
      return Promise.resolve();
    }
    return fetch(location.href, { credentials: "same-origin", headers: { "X-Lanes-Live": "1" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) return;
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (fresh) {
          var keep = document.getElementById("outcome");
          main.replaceWith(fresh);
          var slot = document.getElementById("outcome");
          if (keep && slot) slot.textContent = keep.textContent;
          stamp("live, updated " + new Date().toLocaleTimeString());
        }
      })
      .catch(function () { stamp("not reachable; retrying"); });
  };
  setInterval(refresh, 2000);
  document.addEventListener("click", function (e) {
    var button = e.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    fetch(button.dataset.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Lanes-Dashboard": "1" },
    })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (body) {
          var out = document.getElementById("outcome");
          if (out) out.textContent = r.ok ? "done" : (body.error || ("HTTP " + r.status));
          if (!r.ok) button.disabled = false;
        });
      })
      .then(refresh);
  });
})();
