/* openai_batches admin: live updates of the job list and the job page.
 *
 * No build step, no library. The page carries <div id="ob-live" data-url data-mode
 * data-interval [data-job data-moving]>; list rows carry [data-ob-job][data-ob-moving].
 * While a job on the page is moving, this polls the admin's live view every few seconds
 * and swaps in the server-rendered fragments; when nothing moves it stops. It pauses while
 * the tab is hidden and backs off when the server does not answer.
 */
(function () {
  "use strict";

  function moving(config) {
    if (config.dataset.mode === "page") {
      return config.dataset.moving === "1";
    }
    return document.querySelector('[data-ob-job][data-ob-moving="1"]') !== null;
  }

  function ids(config) {
    if (config.dataset.mode === "page") {
      return [config.dataset.job];
    }
    // Only the rows that move: a finished row has nothing left to change.
    var marks = document.querySelectorAll('[data-ob-job][data-ob-moving="1"]');
    return Array.prototype.map.call(marks, function (el) { return el.dataset.obJob; });
  }

  function applyList(jobs) {
    Object.keys(jobs).forEach(function (id) {
      var mark = document.querySelector('[data-ob-job="' + id + '"]');
      if (!mark) { return; }
      var row = mark.closest("tr");
      var job = jobs[id];
      Object.keys(job.fields).forEach(function (name) {
        var cell = row && row.querySelector(".field-" + name);
        if (cell) { cell.innerHTML = job.fields[name]; }
      });
      mark.dataset.obMoving = job.moving ? "1" : "0";
    });
  }

  function applyPage(config, jobs) {
    var job = jobs[config.dataset.job];
    if (!job) { return; }
    Object.keys(job.fields).forEach(function (name) {
      var box = document.querySelector(".field-" + name + " .readonly");
      if (box) { box.innerHTML = job.fields[name]; }
    });
    var tools = document.querySelector(".object-tools");
    if (tools && typeof job.buttons === "string") {
      Array.prototype.forEach.call(tools.querySelectorAll("li.ob-button-item"), function (li) {
        li.remove();
      });
      var holder = document.createElement("template");
      holder.innerHTML = job.buttons.trim();
      tools.insertBefore(holder.content, tools.firstChild);
    }
    config.dataset.moving = job.moving ? "1" : "0";
  }

  function start(config) {
    var interval = (parseFloat(config.dataset.interval) || 3) * 1000;
    var failures = 0;
    var polls = 0;

    function stop(why) {
      config.dataset.state = why;
    }

    function schedule() {
      var wait = Math.min(interval * Math.pow(2, failures), 60000);
      window.setTimeout(tick, wait);
    }

    function tick() {
      if (!moving(config)) { stop("stopped"); return; }
      if (document.hidden) { schedule(); return; }
      var query = "?ids=" + ids(config).join(",") + (config.dataset.mode === "page" ? "&page=1" : "");
      fetch(config.dataset.url + query, {
        credentials: "same-origin",
        headers: { "Accept": "application/json" },
        cache: "no-store"
      }).then(function (response) {
        if (response.status === 401 || response.status === 403) {
          stop("refused");
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      }).then(function (data) {
        if (data === null) { return; }
        failures = 0;
        polls += 1;
        config.dataset.polls = String(polls);
        if (config.dataset.mode === "page") { applyPage(config, data.jobs); } else { applyList(data.jobs); }
        if (moving(config)) { schedule(); } else { stop("stopped"); }
      }).catch(function () {
        failures += 1;
        schedule();
      });
    }

    if (moving(config)) {
      config.dataset.state = "polling";
      schedule();
    } else {
      stop("stopped");
    }
  }

  function init() {
    var config = document.getElementById("ob-live");
    if (config && window.fetch) { start(config); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
