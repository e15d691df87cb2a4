// Hookline dashboard: progressive enhancement only; every page works without it.
(function () {
  "use strict";

  // Relative times ("in 4 min", "3 h ago"), refreshed; the exact time is the title.
  function relative(iso) {
    var diff = (new Date(iso).getTime() - Date.now()) / 1000;
    var abs = Math.abs(diff), text;
    if (abs < 5) return "now";
    if (abs < 60) text = Math.round(abs) + " s";
    else if (abs < 3600) text = Math.round(abs / 60) + " min";
    else if (abs < 86400) text = Math.round(abs / 3600) + " h";
    else text = Math.round(abs / 86400) + " d";
    return diff > 0 ? "in " + text : text + " ago";
  }
  function refreshTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) { t.textContent = relative(t.getAttribute("datetime")); });
  }

  function toast(text) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.classList.add("show");
    setTimeout(function () { el.classList.remove("show"); }, 2500);
  }

  // Live regions: re-fetch this page and swap #live when it changed.
  var live = document.getElementById("live");
  var busy = false;
  function poll() {
    if (!live || busy || document.hidden) return;
    busy = true;
    fetch(location.href, { headers: { "x-hookline-live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (fresh && fresh.innerHTML !== live.innerHTML) {
          var open = Array.prototype.map.call(live.querySelectorAll("details[open]"), function (d) { return d.id; });
          live.innerHTML = fresh.innerHTML;
          open.forEach(function (id) { var d = id && document.getElementById(id); if (d) d.open = true; });
          refreshTimes(live);
          bindForms(live);
        }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  if (live) setInterval(poll, 1500);
  setInterval(function () { refreshTimes(document); }, 10000);

  // Forms marked data-async post in the background and stay on the page;
  // the live region shows the result.
  function bindForms(root) {
    root.querySelectorAll("form[data-async]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var button = form.querySelector("button[type=submit], button:not([type])");
        if (button) button.disabled = true;
        fetch(form.action, {
          method: "POST",
          body: new URLSearchParams(new FormData(form)),
          credentials: "same-origin",
          headers: { "x-hookline-async": "1" },
        })
          .then(function (r) { return r.text().then(function (t) { return { ok: r.ok, text: t }; }); })
          .then(function (r) { toast(r.ok ? (form.dataset.async || "Done") : r.text || "Failed"); poll(); })
          .catch(function () { toast("Network error"); })
          .then(function () { if (button) button.disabled = false; });
      });
    });
  }
  bindForms(document);

  // Confirmations for destructive or bulk actions.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !confirm(msg)) ev.preventDefault();
  }, true);

  // Secret reveal without a round trip.
  document.querySelectorAll("[data-reveal]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-reveal"));
      var shown = target.getAttribute("data-shown") === "1";
      target.textContent = shown ? "••••••••••••••••" : target.getAttribute("data-secret");
      target.setAttribute("data-shown", shown ? "0" : "1");
      button.textContent = shown ? "Reveal" : "Hide";
    });
  });

  // Retry policy presets fill the editor.
  document.querySelectorAll("[data-preset]").forEach(function (button) {
    button.addEventListener("click", function () {
      var p = JSON.parse(button.getAttribute("data-preset"));
      var form = button.closest("form");
      form.elements.schedule.value = p.schedule;
      form.elements.success.value = p.success;
      form.elements.timeout.value = p.timeout;
    });
  });

  // Customer portal links carry the token in the fragment (never sent to
  // servers or logs); hand it to the sign-in form.
  var portal = document.getElementById("portal-login");
  if (portal) {
    var m = /token=([^&]+)/.exec(location.hash);
    if (m) {
      portal.elements.token.value = decodeURIComponent(m[1]);
      history.replaceState(null, "", location.pathname);
      portal.submit();
    }
  }

  refreshTimes(document);
})();
