// Chronos dashboard: theme and time preferences (remembered in localStorage), confirmations, and the
// live run stream (server-sent events), which is closed while the tab is hidden and on "pause live".
(function () {
  "use strict";
  var root = document.documentElement;
  var store = {
    get: function (k, d) { try { return localStorage.getItem(k) || d; } catch (e) { return d; } },
    set: function (k, v) { try { localStorage.setItem(k, v); } catch (e) { /* private mode */ } }
  };
  root.setAttribute("data-theme", store.get("chronos.theme", "system"));

  function announce(text) {
    var region = document.getElementById("announce");
    if (region) { region.textContent = ""; setTimeout(function () { region.textContent = text; }, 50); }
  }

  function relative(ms) {
    var s = Math.round(ms / 1000), a = Math.abs(s), unit = "second", n = a;
    if (a >= 86400) { unit = "day"; n = Math.round(a / 86400); }
    else if (a >= 3600) { unit = "hour"; n = Math.round(a / 3600); }
    else if (a >= 60) { unit = "minute"; n = Math.round(a / 60); }
    var text = n + " " + unit + (n === 1 ? "" : "s");
    return s >= 0 ? "in " + text : text + " ago";
  }

  function showTimes(scope) {
    var mode = store.get("chronos.time", "utc");
    (scope || document).querySelectorAll("time[datetime]").forEach(function (el) {
      if (!el.dataset.utc) { el.dataset.utc = el.textContent; }
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) { return; }
      if (mode === "local") { el.textContent = d.toLocaleString(); }
      else if (mode === "relative") { el.textContent = relative(d - Date.now()); }
      else { el.textContent = el.dataset.utc; }
      el.title = el.dataset.utc;
    });
  }

  function liveStream() {
    var toggle = document.getElementById("live-toggle");
    var log = document.getElementById("log");
    if (!toggle || !log) { return; }
    var source = null, ended = false, paused = false;
    var state = document.getElementById("live-state");
    function setState(text) { if (state) { state.textContent = text; } }
    function close() { if (source) { source.close(); source = null; } }
    function open() {
      if (source || ended || paused || document.hidden) { return; }
      source = new EventSource(toggle.dataset.stream + "?after=" + log.children.length);
      setState("live");
      source.addEventListener("log", function (e) {
        log.insertAdjacentHTML("beforeend", e.data);
        showTimes(log.lastElementChild);
        log.scrollTop = log.scrollHeight;
      });
      source.addEventListener("status", function (e) {
        var old = document.getElementById("run-summary");
        var before = old && old.dataset.status;
        if (old) { old.outerHTML = e.data; }
        var now = document.getElementById("run-summary");
        showTimes(now);
        if (now && before && now.dataset.status !== before) { announce("Run status: " + now.dataset.status); }
      });
      source.addEventListener("end", function (e) {
        ended = true; close(); setState("run ended"); toggle.disabled = true;
        announce("Run ended: " + e.data);
      });
    }
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", String(!paused));
      toggle.textContent = paused ? "Live updates off" : "Live updates on";
      if (paused) { close(); setState("paused"); } else { open(); }
    });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { close(); setState("paused while hidden"); } else { open(); }
    });
    open();
  }

  // The jobs list's bulk form says how many rows are ticked (or "all matching") as they change.
  function bulkCount(form) {
    var region = form.querySelector("#bulk-count");
    if (!region) { return; }
    var all = form.querySelector("#all");
    var n = form.querySelectorAll("input[name=id]:checked").length;
    region.textContent = all && all.checked ? "All jobs matching the filter selected"
      : n ? n + " selected" : "None selected";
  }

  document.addEventListener("DOMContentLoaded", function () {
    var theme = document.getElementById("theme");
    var time = document.getElementById("time-mode");
    if (theme) {
      theme.value = store.get("chronos.theme", "system");
      theme.addEventListener("change", function () {
        store.set("chronos.theme", theme.value); root.setAttribute("data-theme", theme.value);
      });
    }
    if (time) {
      time.value = store.get("chronos.time", "utc");
      time.addEventListener("change", function () { store.set("chronos.time", time.value); showTimes(); });
    }
    document.addEventListener("submit", function (e) {
      var msg = e.target.getAttribute && e.target.getAttribute("data-confirm");
      if (msg && !window.confirm(msg)) { e.preventDefault(); }
    });
    var kind = document.getElementById("schedule_type");
    if (kind) {
      // Only the fields of the chosen kind of schedule are shown (the others are not used).
      var showKind = function () {
        document.querySelectorAll("[data-kinds]").forEach(function (el) {
          el.hidden = el.dataset.kinds.split(" ").indexOf(kind.value) < 0;
        });
      };
      kind.addEventListener("change", showKind);
      showKind();
    }
    document.addEventListener("change", function (e) {
      var form = e.target.form;
      // (not `form.id`: the row checkboxes named "id" shadow it)
      if (form && form.getAttribute("id") === "bulk") { bulkCount(form); }
    });
    // A refused filter (422) still replaces the list: its answer says what is wrong with the filter.
    document.body.addEventListener("htmx:beforeSwap", function (e) {
      if (e.detail.xhr.status === 422) { e.detail.shouldSwap = true; e.detail.isError = false; }
    });
    document.body.addEventListener("htmx:afterSwap", function (e) { showTimes(e.target); });
    showTimes();
    liveStream();
  });
})();
