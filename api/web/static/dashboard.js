// Chronos dashboard: theme and time preferences (remembered in localStorage), confirmations, and the
// live streams (server-sent events) of a run page and of the jobs list, which are closed while the tab
// is hidden and on "pause live".
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

  // One live stream per page (a run's log, or the jobs list's rows), closed while the tab is hidden
  // and while "Live updates" is off; the choice holds across the list's filter swaps.
  var live = { source: null, toggle: null, url: null, handlers: null, ended: false, paused: false };
  function liveState(text) {
    var state = document.getElementById("live-state");
    if (state) { state.textContent = text; }
  }
  function liveClose() { if (live.source) { live.source.close(); live.source = null; } }
  function liveOpen() {
    if (live.source || !live.toggle || live.ended || live.paused || document.hidden) { return; }
    live.source = new EventSource(live.url());
    liveState("live");
    Object.keys(live.handlers).forEach(function (name) {
      live.source.addEventListener(name, live.handlers[name]);
    });
    // The user holds as many live views as the server allows: stop, rather than reconnect.
    live.source.addEventListener("busy", function (e) { liveEnd(e.data); });
  }
  function liveEnd(text) {
    live.ended = true; liveClose(); liveState(text);
    if (live.toggle) { live.toggle.disabled = true; }
  }
  function showPaused() {
    live.toggle.setAttribute("aria-pressed", String(!live.paused));
    live.toggle.textContent = live.paused ? "Live updates off" : "Live updates on";
    if (live.paused) { liveState("paused"); }
  }
  function liveStart(toggle, url, handlers) {
    liveClose();
    live.toggle = toggle; live.url = url; live.handlers = handlers; live.ended = false;
    if (!toggle) { return; }
    showPaused();
    toggle.addEventListener("click", function () {
      live.paused = !live.paused;
      showPaused();
      if (live.paused) { liveClose(); } else { liveOpen(); }
    });
    liveOpen();
  }
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      if (live.source) { liveClose(); liveState("paused while hidden"); }
    } else { liveOpen(); }
  });

  function runLive() {
    var toggle = document.getElementById("live-toggle");
    var log = document.getElementById("log");
    if (!toggle || !log) { return; }
    liveStart(toggle, function () { return toggle.dataset.stream + "?after=" + log.children.length; }, {
      log: function (e) {
        log.insertAdjacentHTML("beforeend", e.data);
        showTimes(log.lastElementChild);
        log.scrollTop = log.scrollHeight;
      },
      status: function (e) {
        var old = document.getElementById("run-summary");
        var before = old && old.dataset.status;
        if (old) { old.outerHTML = e.data; }
        var now = document.getElementById("run-summary");
        showTimes(now);
        if (now && before && now.dataset.status !== before) { announce("Run status: " + now.dataset.status); }
      },
      end: function (e) { liveEnd("run ended"); announce("Run ended: " + e.data); }
    });
  }

  // The job page: its state, next runs and newest runs, each swapped in whole.
  function jobLive() {
    var runs = document.getElementById("job-runs");
    var toggle = document.getElementById("live-toggle");
    if (!runs || !toggle) { return; }
    function swap(id) {
      return function (e) {
        var old = document.getElementById(id);
        if (!old) { return; }
        var before = old.dataset.state;
        old.outerHTML = e.data;
        var now = document.getElementById(id);
        showTimes(now);
        if (before && now.dataset.state !== before) { announce("Job state: " + now.dataset.state); }
      };
    }
    liveStart(toggle, function () {
      return toggle.dataset.stream + "?row=" + encodeURIComponent(document.getElementById("job-runs").dataset.live);
    }, {
      job_state: swap("job-state"),
      job_next: swap("job-next"),
      job_runs: swap("job-runs"),
      gone: function () { liveEnd("job deleted"); announce("This job was deleted"); },
      end: function () { liveEnd("job deleted"); }
    });
  }

  // The jobs list: a changed row comes whole; only the cells whose content differs are replaced, so a
  // ticked box and the focus stay where they are.
  function swapRow(e) {
    var holder = document.createElement("template");
    holder.innerHTML = e.data.trim();
    var fresh = holder.content.firstElementChild;
    var old = fresh && document.getElementById(fresh.id);
    if (!old) { return; }
    var before = old.dataset.summary;
    Array.prototype.slice.call(fresh.cells).forEach(function (cell, i) {
      if (i > 0 && old.cells[i] && old.cells[i].innerHTML !== cell.innerHTML) {
        old.cells[i].replaceWith(cell);
        showTimes(cell);
      }
    });
    old.dataset.live = fresh.dataset.live;
    old.dataset.summary = fresh.dataset.summary;
    if (before !== fresh.dataset.summary) { announce(fresh.dataset.summary); }
  }
  function jobsLive() {
    var results = document.getElementById("results");
    if (!results) { return; }
    var toggle = document.getElementById("live-toggle");
    liveStart(toggle, function () {
      var rows = results.querySelectorAll("tr[data-live]");
      return toggle.dataset.stream + "?" + Array.prototype.map.call(rows, function (row) {
        return "row=" + encodeURIComponent(row.dataset.live);
      }).join("&");
    }, {
      job_row: swapRow,
      gone: function (e) {
        var row = document.getElementById("job-" + e.data);
        if (row) { announce(row.dataset.summary.split(":")[0] + " was deleted"); row.remove(); }
      },
      end: function () { liveEnd("no jobs left to follow"); }
    });
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
    document.body.addEventListener("htmx:afterSwap", function (e) {
      showTimes(e.target);
      // A filter swapped the list in: follow its rows (not those of the list it replaced).
      if (document.getElementById("results") && live.toggle !== document.getElementById("live-toggle")) {
        jobsLive();
      }
    });
    showTimes();
    runLive();
    jobsLive();
    jobLive();
  });
})();
