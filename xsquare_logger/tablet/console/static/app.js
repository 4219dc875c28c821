// Operator console page. Talks only to the local console process (same origin):
//   POST /api/command  -> the robot's reply ({ok, result} or {ok:false, error:{code, message}})
//   GET  /api/status   -> latest robot status + age_sec/stale
//   GET  /api/config   -> task names, robot endpoint
// No framework, no build step, nothing fetched from the internet.
"use strict";

(function () {
  const POLL_MS = 500;
  const FETCH_TIMEOUT_MS = 15000; // a command may wait for several robot retries
  const OPTIMISTIC_MS = 3000; // how long a command's result outranks an older status

  const $ = (id) => document.getElementById(id);
  const el = {
    body: document.body,
    robot: $("robot-endpoint"),
    link: $("link-state"),
    rec: $("rec-indicator"),
    banner: $("error-banner"),
    code: $("error-code"),
    message: $("error-message"),
    retry: $("error-retry"),
    dismiss: $("error-dismiss"),
    busy: $("busy-indicator"),
    visitForm: $("visit-form"),
    visitSummary: $("visit-summary"),
    visitSummarySession: $("visit-summary-session"),
    stopVisit: $("stop-visit"),
    stopConfirm: $("stop-confirm"),
    stopYes: $("stop-confirm-yes"),
    stopNo: $("stop-confirm-no"),
    activeTask: $("active-task"),
    activeTaskName: $("active-task-name"),
    activeTaskEpisode: $("active-task-episode"),
    taskNote: $("task-note"),
    taskSection: $("task-section"),
    taskButtons: $("task-buttons"),
    taskFree: $("task-free-text"),
    taskFreeStart: $("task-free-start"),
    taskInstruction: $("task-instruction"),
    markLabel: $("mark-label"),
    mark: $("mark"),
    panel: $("status-panel"),
  };

  let busy = false;
  let lastFailed = null; // {cmd, args, id}: Retry re-sends with the same id (idempotent)
  let optimistic = null; // {fields, until}: a command's effect before the next status shows it
  let lastStatus = null;

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
        error: { code: "CONSOLE_UNREACHABLE", message: "The console program on this tablet did not answer (" + err + ")." },
      };
    } finally {
      setBusy(false);
    }
    if (reply.ok) {
      hideError();
      lastFailed = null;
      applyResult(cmd, args || {}, reply.result || {});
      pollNow();
    } else {
      const err = reply.error || { code: "UNKNOWN", message: JSON.stringify(reply) };
      const retriable = err.code === "ROBOT_UNREACHABLE" || err.code === "CONSOLE_UNREACHABLE";
      lastFailed = retriable ? { cmd: cmd, args: args, id: id } : null;
      showError(err.code, err.message, retriable);
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

  // ---- error banner -----------------------------------------------------------------
  function showError(code, message, retriable) {
    el.code.textContent = code;
    el.message.textContent = message || "";
    el.retry.hidden = !retriable;
    el.banner.hidden = false;
  }

  function hideError() {
    el.banner.hidden = true;
    el.code.textContent = "";
    el.message.textContent = "";
  }

  // ---- what a successful command changes, until the status catches up ----------------
  function applyResult(cmd, args, result) {
    let fields = null;
    if (cmd === "session.start") {
      fields = { phase: "visit", session_id: result.session_id || "", current_task: "" };
      el.visitForm.reset();
    } else if (cmd === "task.start") {
      fields = { phase: "task", current_task: args.task, episode_index: result.episode_index };
      el.taskFree.value = "";
      el.taskInstruction.value = "";
    } else if (cmd === "task.end") {
      fields = { phase: "visit", current_task: "" };
      el.taskNote.value = "";
    } else if (cmd === "session.stop") {
      fields = { phase: "none", session_id: "", current_task: "" };
    } else if (cmd === "mark") {
      el.markLabel.value = "";
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

  function num(n) {
    return typeof n === "number" && isFinite(n) ? String(n) : "—";
  }

  function set(node, text) {
    if (node.textContent !== text) node.textContent = text;
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

    el.body.dataset.phase = phase;
    el.body.dataset.state = s.state || "unknown";

    // link and REC; a refused key (AUTH_REFUSED) says so instead of "not responding"
    const linkError = raw.link_error && raw.link_error.code;
    if (stale && linkError) {
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
    el.activeTask.hidden = phase !== "task";
    el.taskSection.hidden = phase === "task";
    set(el.activeTaskName, s.current_task || "");
    set(el.activeTaskEpisode, typeof ep === "number" && ep >= 0 ? String(ep) : "—");
  }

  function setPill(node, cls, text) {
    node.classList.remove("link-ok", "link-bad", "link-waiting", "rec-on", "rec-off");
    node.classList.add(cls);
    set(node, text);
  }

  let pollTimer = null;
  let polling = false;

  async function poll() {
    clearTimeout(pollTimer);
    if (polling) return;
    polling = true;
    try {
      render(await fetchJson("/api/status"));
    } catch (err) {
      setPill(el.link, "link-bad", "CONSOLE OFFLINE");
      el.panel.classList.add("stale");
    } finally {
      polling = false;
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }

  function pollNow() {
    poll();
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
      showError("TASK_REQUIRED", "Pick a task or type its name.", false);
      return;
    }
    send("task.start", { task: name, instruction: el.taskInstruction.value.trim() });
  }

  el.visitForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send("session.start", {
      visit_id: $("visit-id").value.trim(),
      operator: $("visit-operator").value.trim(),
      // Sent as ticked or not: the robot is the one that refuses without consent.
      consent: $("visit-consent").checked,
      site: $("visit-site").value.trim(),
      notes: $("visit-notes").value.trim(),
    });
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

  async function loadConfig() {
    try {
      const cfg = await fetchJson("/api/config");
      el.taskButtons.textContent = "";
      (cfg.tasks || []).forEach(addTaskButton);
      const r = cfg.robot || {};
      set(el.robot, (r.command_endpoint || "") + (r.secure === false ? "  (INSECURE)" : ""));
    } catch (err) {
      showError("CONSOLE_UNREACHABLE", "Could not load the console configuration; reload the page.", false);
    }
  }

  loadConfig();
  poll();
})();
