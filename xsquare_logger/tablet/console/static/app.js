// Operator console page. Talks only to the local console process (same origin):
//   POST /api/command  -> the robot's reply ({ok, result} or {ok:false, error:{code, message, text}})
//   GET  /api/status   -> latest robot status + age_sec/stale + console (episode list, marks)
//   GET  /api/config   -> task names, required visit fields, robot endpoint
//   GET  /api/preview?camera=NAME -> the newest camera preview (polled only while visible)
// No framework, no build step, nothing fetched from the internet. docs/console.md.
"use strict";

(function () {
  const POLL_MS = 500;
  const PREVIEW_MS = 1000; // about one picture a second per camera
  const FETCH_TIMEOUT_MS = 15000; // a command may wait for several robot retries
  const OPTIMISTIC_MS = 3000; // how long a command's result outranks an older status
  const TOAST_MS = 5000;
  // Fields the start form always has; any other required field gets an input of its own.
  const BUILTIN_FIELDS = ["visit_id", "operator", "site", "notes", "consent"];
  const STATE_WORDS = { ok: "OK", degraded: "SLOW", stalled: "STOPPED", missing: "MISSING", unknown: "NOT MEASURED" };
  // Sentences for errors the console process cannot word itself (it is the one not answering).
  const LOCAL_TEXT = {
    CONSOLE_UNREACHABLE: "The console program on this tablet is not answering. Reload the page; if that fails, restart the console.",
    TASK_REQUIRED: "Pick a task, or type its name, then press Start.",
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    robot: $("robot-endpoint"),
    link: $("link-state"),
    rec: $("rec-indicator"),
    problem: $("problem-banner"),
    problemTitle: $("problem-title"),
    problemDetail: $("problem-detail"),
    privacyBanner: $("privacy-banner"),
    privacyElapsed: $("privacy-elapsed"),
    privacyPause: $("privacy-pause"),
    privacyResume: $("privacy-resume"),
    banner: $("error-banner"),
    errorText: $("error-text"),
    code: $("error-code"),
    message: $("error-message"),
    retry: $("error-retry"),
    dismiss: $("error-dismiss"),
    toast: $("mark-confirm"),
    busy: $("busy-indicator"),
    tiles: $("health-tiles"),
    healthEmpty: $("health-empty"),
    visitForm: $("visit-form"),
    visitExtra: $("visit-extra"),
    visitSummary: $("visit-summary"),
    visitSummarySession: $("visit-summary-session"),
    stopVisit: $("stop-visit"),
    stopConfirm: $("stop-confirm"),
    stopYes: $("stop-confirm-yes"),
    stopNo: $("stop-confirm-no"),
    activeTask: $("active-task"),
    activeTaskName: $("active-task-name"),
    activeTaskEpisode: $("active-task-episode"),
    taskElapsed: $("task-elapsed"),
    taskNote: $("task-note"),
    review: $("review"),
    reviewKeep: $("review-keep"),
    reviewRerecord: $("review-rerecord"),
    taskSection: $("task-section"),
    taskButtons: $("task-buttons"),
    taskFree: $("task-free-text"),
    taskFreeStart: $("task-free-start"),
    taskInstruction: $("task-instruction"),
    markLabel: $("mark-label"),
    mark: $("mark"),
    previews: $("previews"),
    previewGrid: $("preview-grid"),
    episodeList: $("episode-list"),
    episodeEmpty: $("episode-empty"),
    episodePartial: $("episode-partial"),
    panel: $("status-panel"),
  };

  let busy = false;
  let lastFailed = null; // {cmd, args, id}: Retry re-sends with the same id (idempotent)
  let optimistic = null; // {fields, until}: a command's effect before the next status shows it
  let lastStatus = null;
  let config = null;
  let toastTimer = null;
  // Episodes the operator kept (review card closed); per session, survives a reload.
  const kept = new Set(JSON.parse(sessionStorage.getItem("xsq-kept") || "[]"));

  // ---- request ids ------------------------------------------------------------------
  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const b = new Uint8Array(16);
    crypto.getRandomValues(b); // available outside secure contexts too
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  // ---- HTTP -------------------------------------------------------------------------
  async function fetchJson(url, options) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const resp = await fetch(url, Object.assign({ signal: ctl.signal, cache: "no-store" }, options));
      return await resp.json();
    } finally {
      clearTimeout(timer);
    }
  }

  async function send(cmd, args, id) {
    if (busy) return null;
    id = id || newId();
    setBusy(true);
    let reply;
    try {
      reply = await fetchJson("/api/command", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ cmd: cmd, args: args || {}, id: id }),
      });
    } catch (err) {
      reply = {
        ok: false,
        error: { code: "CONSOLE_UNREACHABLE", message: String(err) },
      };
    } finally {
      setBusy(false);
    }
    if (reply.ok) {
      hideError();
      lastFailed = null;
      applyResult(cmd, args || {}, reply);
      pollNow();
    } else {
      const err = reply.error || { code: "UNKNOWN", message: JSON.stringify(reply) };
      const retriable = err.code === "ROBOT_UNREACHABLE" || err.code === "CONSOLE_UNREACHABLE";
      lastFailed = retriable ? { cmd: cmd, args: args, id: id } : null;
      showError(err, retriable);
      if (cmd === "session.start") markMissing(err);
    }
    return reply;
  }

  function setBusy(on) {
    busy = on;
    el.busy.hidden = !on;
    document.querySelectorAll("button").forEach((b) => {
      if (b !== el.dismiss) b.disabled = on;
    });
  }

  // ---- error banner: the operator's sentence large, the code small for support -------
  function showError(err, retriable) {
    set(el.errorText, err.text || LOCAL_TEXT[err.code] || "Something went wrong.");
    set(el.code, err.code || "");
    set(el.message, err.message ? "· " + err.message : "");
    el.retry.hidden = !retriable;
    el.banner.hidden = false;
  }

  function localError(code) {
    showError({ code: code, text: LOCAL_TEXT[code], message: "" }, false);
  }

  function hideError() {
    el.banner.hidden = true;
    set(el.errorText, "");
    set(el.code, "");
    set(el.message, "");
  }

  function showToast(text) {
    set(el.toast, text);
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, TOAST_MS);
  }

  // ---- what a successful command changes, until the status catches up ----------------
  function applyResult(cmd, args, reply) {
    const result = reply.result || {};
    let fields = null;
    if (cmd === "session.start") {
      fields = { phase: "visit", session_id: result.session_id || "", current_task: "" };
      el.visitForm.reset();
      clearMissing();
    } else if (cmd === "task.start") {
      fields = { phase: "task", current_task: args.task, episode_index: result.episode_index, task_elapsed_sec: 0 };
      el.taskFree.value = "";
      el.taskInstruction.value = "";
    } else if (cmd === "task.end") {
      fields = { phase: "visit", current_task: "" };
      el.taskNote.value = "";
    } else if (cmd === "session.stop") {
      fields = { phase: "none", session_id: "", current_task: "" };
    } else if (cmd === "mark") {
      el.markLabel.value = "";
      const where = typeof result.episode_index === "number" && result.episode_index >= 0
        ? " in episode " + result.episode_index : " (no task open)";
      const at = typeof reply.robot_time_ns === "number"
        ? " at " + new Date(reply.robot_time_ns / 1e6).toLocaleTimeString() : "";
      showToast("✓ Mark saved: “" + (result.label || args.label) + "”" + where + at);
    }
    if (fields) {
      optimistic = { fields: fields, until: Date.now() + OPTIMISTIC_MS };
      if (lastStatus) render(lastStatus);
    }
  }

  // ---- status -----------------------------------------------------------------------
  function phaseOf(s) {
    if (!s || s.state === "unknown") return "unknown";
    if (s.current_task) return "task";
    if (s.session_id && s.state !== "idle") return "visit";
    return "none";
  }

  function fmtElapsed(sec) {
    if (typeof sec !== "number" || !isFinite(sec)) return "—";
    sec = Math.max(0, Math.floor(sec));
    const h = Math.floor(sec / 3600);
    const m = Math.floor((sec % 3600) / 60);
    const s = sec % 60;
    return h + ":" + String(m).padStart(2, "0") + ":" + String(s).padStart(2, "0");
  }

  function fmtBytes(n, unit) {
    if (typeof n !== "number" || !isFinite(n)) return "—";
    if (unit === "GB") return (n / 1e9).toFixed(1) + " GB";
    return (n / 1e6).toFixed(1) + " MB";
  }

  function fmtSec(x) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(1) + " s" : "";
  }

  function num(n) {
    return typeof n === "number" && isFinite(n) ? String(n) : "—";
  }

  function set(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function make(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function streamsOf(s) {
    return Array.isArray(s.streams) ? s.streams.filter((x) => x && typeof x.name === "string") : null;
  }

  function isCamera(st) {
    if (st.kind) return st.kind === "camera";
    return /cam|image/i.test(st.name + " " + (st.topic || ""));
  }

  // The one problem the operator must see first, or null. Order: the link, the
  // recorder, then the streams (an error during a task, a warning between tasks).
  function problemOf(raw, s, phase) {
    if (raw.consoleOffline) {
      return { level: "red", title: "CONSOLE NOT ANSWERING", detail: LOCAL_TEXT.CONSOLE_UNREACHABLE };
    }
    const linkError = raw.link_error;
    if (raw.stale !== false && linkError && linkError.code) {
      return { level: "red", title: "ROBOT REFUSES THIS TABLET", detail: linkError.text || linkError.message || linkError.code };
    }
    if (raw.age_sec === null || raw.age_sec === undefined) {
      return {
        level: "amber", title: "WAITING FOR ROBOT",
        detail: "No word from the robot yet. Check that it is switched on and on the same Wi-Fi as this tablet.",
      };
    }
    if (raw.stale !== false) {
      return {
        level: "red", title: "ROBOT NOT RESPONDING",
        detail: "No word from the robot for " + Math.round(raw.age_sec) + " s. The numbers below are old. Check the robot and the Wi-Fi.",
      };
    }
    if (s.state === "recording" && s.recording === false) {
      return {
        level: "red", title: "RECORDING STOPPED",
        detail: "The robot stopped recording by itself" + (s.last_error ? " (" + s.last_error + ")" : "") + ". Stop the visit and tell support.",
      };
    }
    if (s.state === "idle" && s.session_lost_reason) {
      return { level: "red", title: "VISIT ENDED BY THE ROBOT", detail: s.session_lost_reason };
    }
    // A camera silent for a privacy pause is no problem.
    const bad = (streamsOf(s) || []).filter((x) => (x.state === "stalled" || x.state === "missing") &&
      x.paused !== true && !(s.privacy_paused === true && isCamera(x)));
    if (phase === "task" && !bad.length && s.stream_alert) {
      return { level: "red", title: "STREAM STOPPED DURING THE TASK", detail: s.stream_alert + ". End the task, check the sensor, then re-record." };
    }
    if (bad.length && (phase === "task" || phase === "visit")) {
      const names = bad.map((x) => x.name + (x.state === "missing" ? " (never seen)" : " (stopped)")).join(", ");
      if (phase === "task") {
        return {
          level: "red", title: "STREAM STOPPED DURING THE TASK",
          detail: names + ". This episode will not be usable: end it, check the sensor, then re-record.",
        };
      }
      return { level: "amber", title: "STREAM NOT RECORDING", detail: names + ". Fix it before the next task." };
    }
    return null;
  }

  function render(raw) {
    lastStatus = raw;
    let s = raw;
    let phase = phaseOf(raw);
    if (optimistic) {
      if (Date.now() > optimistic.until || phase === optimistic.fields.phase) {
        optimistic = null;
      } else {
        s = Object.assign({}, raw, optimistic.fields);
        phase = optimistic.fields.phase;
      }
    }
    const stale = raw.stale !== false;
    const recording = phase === "visit" || phase === "task";
    const live = stale ? 0 : (raw.age_sec || 0); // time since the status was made

    el.body.dataset.phase = phase;
    el.body.dataset.state = s.state || "unknown";

    // link pill and REC
    const linkError = raw.link_error && raw.link_error.code;
    if (raw.consoleOffline) {
      setPill(el.link, "link-bad", "CONSOLE OFFLINE");
    } else if (stale && linkError) {
      setPill(el.link, "link-bad", linkError.replace(/_/g, " "));
      el.link.title = raw.link_error.message || "";
    } else if (raw.age_sec === null || raw.age_sec === undefined) {
      setPill(el.link, "link-waiting", "WAITING FOR ROBOT");
    } else if (stale) {
      setPill(el.link, "link-bad", "ROBOT NOT RESPONDING");
    } else {
      setPill(el.link, "link-ok", "LINK OK");
    }
    setPill(el.rec, recording && !stale ? "rec-on" : "rec-off", recording ? "REC" : "IDLE");
    el.panel.classList.toggle("stale", stale);

    // the problem banner
    const problem = problemOf(raw, s, phase);
    el.problem.hidden = !problem;
    if (problem) {
      el.problem.classList.toggle("banner-red", problem.level === "red");
      el.problem.classList.toggle("banner-amber", problem.level === "amber");
      el.problem.dataset.level = problem.level;
      set(el.problemTitle, problem.title);
      set(el.problemDetail, problem.detail);
    }

    // privacy
    const paused = recording && s.privacy_paused === true;
    el.privacyBanner.hidden = !paused;
    el.privacyPause.hidden = paused;
    set(el.privacyElapsed, paused && typeof s.privacy_paused_sec === "number" ? "(" + fmtElapsed(s.privacy_paused_sec + live) + ")" : "");

    renderHealth(s, recording, paused);

    // status panel
    set($("status-state"), s.state || "—");
    set($("status-session"), s.session_id || "—");
    set($("status-task"), s.current_task || "—");
    const ep = s.episode_index;
    set($("status-episode"), s.current_task && typeof ep === "number" && ep >= 0 ? String(ep) : "—");
    set($("status-elapsed"), recording ? fmtElapsed(s.elapsed_sec) : "—");
    set($("status-mb"), fmtBytes(s.bytes_written, "MB"));
    const lost = $("status-lost");
    set(lost, num(s.messages_lost));
    lost.classList.toggle("bad", typeof s.messages_lost === "number" && s.messages_lost > 0);
    const disk = $("status-disk");
    set(disk, fmtBytes(s.disk_free_bytes, "GB"));
    disk.classList.toggle("warn", typeof s.disk_free_bytes === "number" && s.disk_free_bytes < 10e9);
    set($("status-backlog"), num(s.upload_backlog));
    set($("status-age"), typeof raw.age_sec === "number" ? raw.age_sec.toFixed(1) + " s ago" : "never");

    // controls
    el.visitForm.hidden = recording;
    el.visitSummary.hidden = !recording;
    if (!recording) el.stopConfirm.hidden = true;
    set(el.visitSummarySession, s.session_id || "");
    set($("visit-summary-visit"), s.visit_id || "");
    set($("visit-summary-operator"), s.operator ? "· " + s.operator : "");
    set($("count-episodes"), num(s.episodes));
    set($("count-marks"), num(s.marks));
    set($("visit-elapsed"), recording && typeof s.elapsed_sec === "number" ? fmtElapsed(s.elapsed_sec + live) : "—");
    el.activeTask.hidden = phase !== "task";
    el.taskSection.hidden = phase === "task";
    set(el.activeTaskName, s.current_task || "");
    set(el.activeTaskEpisode, typeof ep === "number" && ep >= 0 ? String(ep) : "—");
    set(el.taskElapsed, typeof s.task_elapsed_sec === "number" ? fmtElapsed(s.task_elapsed_sec + live) : "0:00:00");

    const log = raw.console || { episodes: [], complete: true };
    renderEpisodes(log);
    renderReview(log, phase);
  }

  function renderHealth(s, recording, paused) {
    const streams = recording ? streamsOf(s) : null;
    el.healthEmpty.hidden = !!(streams && streams.length);
    if (!recording) set(el.healthEmpty, "Stream health appears when the visit records.");
    else if (!streams) set(el.healthEmpty, "This robot does not report stream health.");
    else if (!streams.length) set(el.healthEmpty, "The robot reports no streams.");
    const seen = new Set();
    (streams || []).forEach((st, i) => {
      seen.add(st.name);
      let tile = el.tiles.querySelector('[data-stream="' + CSS.escape(st.name) + '"]');
      if (!tile) {
        tile = make("div", "tile");
        tile.setAttribute("data-testid", "health-tile");
        tile.dataset.stream = st.name;
        tile.append(make("span", "tile-name", st.name), make("span", "tile-state"), make("span", "tile-rate"));
      }
      if (el.tiles.children[i] !== tile) el.tiles.insertBefore(tile, el.tiles.children[i] || null);
      // A camera in a privacy pause is silent on purpose: grey, not red.
      const state = st.paused === true || (paused && isCamera(st))
        ? "paused" : (STATE_WORDS[st.state] ? st.state : "unknown");
      tile.className = "tile tile-" + state;
      tile.dataset.state = state;
      const word = state === "paused" ? "PAUSED" : (STATE_WORDS[state] || String(st.state || "?").toUpperCase());
      set(tile.children[1], word);
      let rate = "";
      if (typeof st.rate_hz === "number") {
        rate = st.rate_hz.toFixed(st.rate_hz < 10 ? 1 : 0) + " Hz";
        if (typeof st.nominal_hz === "number" && st.nominal_hz > 0) rate += " of " + st.nominal_hz.toFixed(0);
      }
      if ((state === "stalled") && typeof st.last_seen_s === "number") rate = "nothing for " + st.last_seen_s.toFixed(0) + " s";
      if (state === "missing") rate = "never seen";
      if (typeof st.lost === "number" && st.lost > 0) rate += (rate ? " · " : "") + st.lost + " lost";
      set(tile.children[2], rate);
    });
    [...el.tiles.children].forEach((t) => { if (!seen.has(t.dataset.stream)) t.remove(); });
    syncPreviews(streams || [], recording && !paused);
  }

  function verdictOf(ep) {
    const v = ep.quality && ep.quality.verdict;
    return v === "pass" || v === "warn" || v === "fail" ? v : "none";
  }

  const OUTCOME_WORDS = { success: "Success", failure: "Failure", aborted: "Aborted" };

  function renderEpisodes(log) {
    const eps = log.episodes || [];
    el.episodeEmpty.hidden = eps.length > 0;
    el.episodePartial.hidden = log.complete !== false;
    const rows = eps.map((ep) => {
      const li = make("li", "episode" + (ep.discarded ? " discarded" : ""));
      li.setAttribute("data-testid", "episode-row");
      li.dataset.index = String(ep.index);
      li.dataset.outcome = ep.outcome || "open";
      li.dataset.quality = verdictOf(ep);
      li.dataset.discarded = String(!!ep.discarded);
      const outcome = ep.outcome ? (OUTCOME_WORDS[ep.outcome] || ep.outcome) : "running";
      const dur = fmtSec(ep.duration_sec);
      const v = verdictOf(ep);
      const badge = make("span", "badge badge-" + (ep.discarded ? "none" : v),
        ep.discarded ? "discarded" : (v === "none" ? (ep.outcome ? "no check" : "…") : v.toUpperCase()));
      li.append(
        make("span", "episode-index", "#" + ep.index),
        make("span", "episode-task", ep.task + (ep.marks ? " · " + ep.marks + " mark" + (ep.marks > 1 ? "s" : "") : "")),
        make("span", "episode-outcome outcome-" + (ep.outcome || "open"), outcome + (dur ? " · " + dur : "")),
        badge);
      return li;
    });
    const key = JSON.stringify(eps);
    if (el.episodeList.dataset.key !== key) {
      el.episodeList.dataset.key = key;
      el.episodeList.replaceChildren(...rows);
    }
  }

  // After task end: the last episode's verdict, until Keep, Re-record or the next task.
  let reviewed = null;
  function renderReview(log, phase) {
    const last = (log.episodes || [])[0];
    const show = phase === "visit" && last && last.outcome && !last.discarded &&
      !kept.has(log.session_id + "#" + last.index);
    el.review.hidden = !show;
    if (!show) { reviewed = null; return; }
    reviewed = { session_id: log.session_id, index: last.index, task: last.task, instruction: last.instruction || "" };
    const v = verdictOf(last);
    el.review.dataset.verdict = v;
    set($("review-episode"), String(last.index));
    set($("review-task"), last.task);
    const badge = $("review-verdict");
    badge.className = "verdict verdict-" + v;
    set(badge, v === "none" ? "NOT CHECKED" : v.toUpperCase());
    set($("review-outcome"), (OUTCOME_WORDS[last.outcome] || last.outcome) + (last.duration_sec != null ? " · " + fmtSec(last.duration_sec) : ""));
    const reasons = (last.quality && Array.isArray(last.quality.reasons)) ? last.quality.reasons.map(String) : [];
    if (v === "none") reasons.splice(0, reasons.length, "The robot gave no quality verdict for this episode.");
    const ul = $("review-reasons");
    if (ul.dataset.key !== JSON.stringify(reasons)) {
      ul.dataset.key = JSON.stringify(reasons);
      ul.replaceChildren(...reasons.map((r) => make("li", "", r)));
    }
    // A failed episode: Re-record is the expected tap, so it gets the strong colour.
    el.reviewRerecord.className = "btn " + (v === "fail" ? "btn-stop" : "btn-main");
  }

  function setPill(node, cls, text) {
    node.classList.remove("link-ok", "link-bad", "link-waiting", "rec-on", "rec-off");
    node.classList.add(cls);
    set(node, text);
  }

  // ---- camera previews: asked for only while this page is visible --------------------
  const previewState = new Map(); // camera -> {fig, img, cap, inflight, timer}
  let previewsOn = false;

  function syncPreviews(streams, active) {
    const cameras = config && config.previews === false ? [] : streams.filter(isCamera);
    el.previews.hidden = !cameras.length;
    previewsOn = active && cameras.length > 0;
    const names = new Set(cameras.map((c) => c.name));
    for (const [name, p] of previewState) {
      if (!names.has(name)) { clearTimeout(p.timer); p.fig.remove(); previewState.delete(name); }
    }
    cameras.forEach((c) => {
      if (previewState.has(c.name)) return;
      const fig = make("figure", "preview");
      fig.setAttribute("data-testid", "preview");
      fig.dataset.camera = c.name;
      const img = make("img");
      img.alt = "camera " + c.name;
      img.hidden = true;
      const none = make("div", "noimg", "no picture yet");
      const cap = make("figcaption", "", c.name);
      fig.append(img, none, cap);
      el.previewGrid.appendChild(fig);
      const p = { fig: fig, img: img, none: none, cap: cap, inflight: false, timer: null };
      previewState.set(c.name, p);
      schedulePreview(c.name, 0);
    });
  }

  function schedulePreview(name, delay) {
    const p = previewState.get(name);
    if (!p) return;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => loadPreview(name), delay);
  }

  async function loadPreview(name) {
    const p = previewState.get(name);
    if (!p) return;
    // Hidden tab, no recording or privacy pause: ask nothing, so the robot makes nothing.
    if (!previewsOn || document.visibilityState !== "visible" || p.inflight) {
      if (!previewsOn) { p.img.hidden = true; p.none.hidden = false; set(p.none, "no picture (not recording)"); }
      schedulePreview(name, PREVIEW_MS);
      return;
    }
    p.inflight = true;
    try {
      const r = await fetchJson("/api/preview?camera=" + encodeURIComponent(name));
      if (r.available && r.data_b64) {
        p.img.src = "data:image/" + (r.format === "png" ? "png" : "jpeg") + ";base64," + r.data_b64;
        p.img.hidden = false;
        p.none.hidden = true;
        set(p.cap, name + (typeof r.age_sec === "number" && r.age_sec >= 2 ? " · " + r.age_sec.toFixed(0) + " s old" : ""));
        p.fig.dataset.available = "true";
      } else {
        p.img.hidden = true;
        p.none.hidden = false;
        set(p.none, r.error && r.error.code === "PREVIEW_UNSUPPORTED" ? "this robot sends no pictures" : "no picture yet");
        set(p.cap, name);
        p.fig.dataset.available = "false";
      }
    } catch (err) {
      p.fig.dataset.available = "false";
    } finally {
      p.inflight = false;
      schedulePreview(name, PREVIEW_MS);
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") previewState.forEach((_, name) => schedulePreview(name, 0));
  });

  // ---- polling ----------------------------------------------------------------------
  let pollTimer = null;
  let polling = false;

  async function poll() {
    clearTimeout(pollTimer);
    if (polling) return;
    polling = true;
    try {
      const st = await fetchJson("/api/status");
      render(st);
      if (config && !config.robot_answered && st.stale === false && !configLoading) loadConfig();
    } catch (err) {
      render(Object.assign({}, lastStatus || { state: "unknown", age_sec: null }, { stale: true, consoleOffline: true }));
    } finally {
      polling = false;
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  function pollNow() {
    poll();
  }

  // ---- the start form: fields the robot requires -------------------------------------
  function fieldInput(name) {
    return el.visitForm.querySelector('input[data-field="' + CSS.escape(name) + '"]');
  }

  function fieldLabel(name) {
    const s = name.replace(/_/g, " ").trim();
    return s.charAt(0).toUpperCase() + s.slice(1);
  }

  function ensureField(name) {
    if (name === "consent" || fieldInput(name)) return;
    const label = make("label", "", fieldLabel(name));
    const input = make("input");
    input.type = "text";
    input.maxLength = 256;
    input.dataset.field = name;
    input.setAttribute("data-testid", "visit-field-" + name);
    label.appendChild(input);
    el.visitExtra.appendChild(label);
  }

  function clearMissing() {
    el.visitForm.querySelectorAll(".missing").forEach((n) => n.classList.remove("missing"));
  }

  function markMissing(err) {
    clearMissing();
    let missing = Array.isArray(err.missing) ? err.missing.map(String) : [];
    if (err.code === "CONSENT_REQUIRED") missing = ["consent"];
    missing.forEach(ensureField);
    let first = null;
    missing.forEach((name) => {
      const node = name === "consent" ? $("visit-consent-label") : fieldInput(name);
      if (!node) return;
      (name === "consent" ? node : node.closest("label") || node).classList.add("missing");
      first = first || (name === "consent" ? $("visit-consent") : node);
    });
    if (first) first.focus();
  }

  function visitArgs() {
    const args = {
      visit_id: $("visit-id").value.trim(),
      operator: $("visit-operator").value.trim(),
      // Sent as ticked or not: the robot is the one that refuses without consent.
      consent: $("visit-consent").checked,
      site: $("visit-site").value.trim(),
      notes: $("visit-notes").value.trim(),
    };
    const metadata = {};
    el.visitExtra.querySelectorAll("input[data-field]").forEach((input) => {
      const v = input.value.trim();
      if (v) metadata[input.dataset.field] = v; // left out when empty: the robot names it
    });
    if (Object.keys(metadata).length) args.metadata = metadata;
    return args;
  }

  // ---- wiring -----------------------------------------------------------------------
  function addTaskButton(name) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "btn";
    b.textContent = name;
    b.setAttribute("data-testid", "task-button");
    b.dataset.task = name;
    b.addEventListener("click", () => startTask(name));
    el.taskButtons.appendChild(b);
  }

  function startTask(name) {
    name = (name || "").trim();
    if (!name) {
      localError("TASK_REQUIRED");
      return;
    }
    send("task.start", { task: name, instruction: el.taskInstruction.value.trim() });
  }

  el.visitForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send("session.start", visitArgs());
  });
  // Text fields are required by the robot, not the browser: keep one error path.
  el.visitForm.noValidate = true;

  el.taskFreeStart.addEventListener("click", () => startTask(el.taskFree.value));
  el.taskFree.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") startTask(el.taskFree.value);
  });

  document.querySelectorAll("[data-outcome]").forEach((b) => {
    b.addEventListener("click", () =>
      send("task.end", { outcome: b.dataset.outcome, note: el.taskNote.value.trim() }));
  });

  el.mark.addEventListener("click", () =>
    send("mark", { label: el.markLabel.value.trim() || "mark", note: "" }));

  el.reviewKeep.addEventListener("click", () => {
    if (!reviewed) return;
    kept.add(reviewed.session_id + "#" + reviewed.index);
    sessionStorage.setItem("xsq-kept", JSON.stringify([...kept].slice(-200)));
    el.review.hidden = true;
  });
  // Re-record: the episode stays in the bag marked discarded, and the same task opens again.
  el.reviewRerecord.addEventListener("click", async () => {
    if (!reviewed) return;
    const again = reviewed;
    // episode_index: the robot refuses if the screen is stale and another episode ended since.
    const reply = await send("task.discard", { episode_index: again.index });
    if (reply && reply.ok) {
      const r = reply.result || {};
      const args = { task: r.task || again.task };
      const instruction = typeof r.instruction === "string" ? r.instruction : again.instruction;
      if (instruction) args.instruction = instruction;
      await send("task.start", args);
    }
  });

  el.privacyPause.addEventListener("click", () => send("privacy.pause", {}));
  el.privacyResume.addEventListener("click", () => send("privacy.resume", {}));

  el.stopVisit.addEventListener("click", () => { el.stopConfirm.hidden = false; });
  el.stopNo.addEventListener("click", () => { el.stopConfirm.hidden = true; });
  el.stopYes.addEventListener("click", async () => {
    const reply = await send("session.stop", {});
    if (reply && reply.ok) el.stopConfirm.hidden = true;
  });

  el.dismiss.addEventListener("click", hideError);
  el.retry.addEventListener("click", () => {
    if (lastFailed) send(lastFailed.cmd, lastFailed.args, lastFailed.id);
  });

  let configLoading = false;
  async function loadConfig() {
    configLoading = true;
    try {
      const cfg = await fetchJson("/api/config");
      const first = config === null;
      config = cfg;
      if (first || el.taskButtons.children.length !== (cfg.tasks || []).length) {
        el.taskButtons.textContent = "";
        (cfg.tasks || []).forEach(addTaskButton);
      }
      (cfg.required_fields || []).forEach((name) => {
        if (!BUILTIN_FIELDS.includes(name)) ensureField(name);
      });
      const r = cfg.robot || {};
      set(el.robot, (r.command_endpoint || "") + (r.secure === false ? "  (INSECURE)" : ""));
    } catch (err) {
      localError("CONSOLE_UNREACHABLE");
    } finally {
      configLoading = false;
    }
  }

  loadConfig();
  poll();
})();
