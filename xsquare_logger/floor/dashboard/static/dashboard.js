// The floor lead's screen: robot tiles, today's totals and the episode search.
//
// It polls the floor API (GET /api/v1/robots every 1.5 s, /api/v1/summary every 5 s)
// instead of holding a push connection: polling keeps the service stateless, so any
// replica behind a load balancer answers any request and a restarted service needs no
// reconnect logic. Every value shown, flags included, is what the service computed
// (RobotTile.stale/losing/disk_low/upload_failed): no threshold lives here.
//
// Data is written with textContent only: task names and operators come from robots and
// tablets, never markup.
"use strict";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "xsq.floor.token";
  const ROBOTS_EVERY_MS = 1500;
  const SUMMARY_EVERY_MS = 5000;
  const TIMEOUT_MS = 5000; // a hung service must show the banner, not freeze the screen
  const PAGE_SIZE = 50;
  const FLAGS = ["stale", "losing", "disk_low", "upload_failed", "revoked"];
  const CHIP = { losing: "LOSS", disk_low: "DISK", upload_failed: "UPLOAD", revoked: "REVOKED" };

  const $ = (id) => document.getElementById(id);
  const byName = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  class Unauthorized extends Error {
    constructor(status) { super(`HTTP ${status}`); this.status = status; }
  }
  class ApiError extends Error {
    constructor(message, status) { super(message); this.status = status; }
  }

  let token = "";
  let generation = 0; // bumped by every sign-in/out: stale poll loops stop themselves
  let lastOk = null; // Date of the last answer, shown while the service is unreachable
  let downSince = null;
  const tiles = new Map(); // robot_id -> tile element
  let search = { params: null, cursor: null, shown: 0 };

  // -- token ---------------------------------------------------------------------------

  // A wall screen may be bookmarked as /#token=...: the fragment never leaves the
  // browser (not part of any HTTP request), and we drop it from the address bar.
  function takeTokenFromHash() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return;
    const t = decodeURIComponent(m[1]).trim();
    if (t) localStorage.setItem(TOKEN_KEY, t);
    history.replaceState(null, "", location.pathname + location.search);
  }

  function showSignIn(message) {
    generation += 1;
    token = "";
    $("app").hidden = true;
    $("banner").hidden = true;
    $("signin").hidden = false;
    $("signin-message").textContent = message || "";
    $("signin-token").value = "";
    $("signin-token").focus();
  }

  function refused(err) {
    localStorage.removeItem(TOKEN_KEY);
    showSignIn(err.status === 403
      ? "That token may not read the floor (403): use a reader token (xsq floor readers add NAME)."
      : "The floor refused that token (401): enter a valid reader token.");
  }

  function start(t) {
    token = t;
    generation += 1;
    downSince = null;
    $("signin").hidden = true;
    $("app").hidden = false;
    poll(pollRobots, ROBOTS_EVERY_MS, generation);
    poll(pollSummary, SUMMARY_EVERY_MS, generation);
  }

  // -- HTTP ----------------------------------------------------------------------------

  async function api(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
    let resp;
    try {
      resp = await fetch(API + path, {
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        signal: ctl.signal,
      });
    } catch (e) {
      throw new ApiError(ctl.signal.aborted ? "no answer" : "no connection", 0);
    } finally {
      clearTimeout(timer);
    }
    if (resp.status === 401 || resp.status === 403) throw new Unauthorized(resp.status);
    if (!resp.ok) throw new ApiError(`HTTP ${resp.status}${await detail(resp)}`, resp.status);
    return resp.json();
  }

  async function detail(resp) {
    try {
      const body = await resp.json();
      const d = body && body.detail;
      if (typeof d === "string") return `: ${d}`;
      if (Array.isArray(d) && d.length) {
        return `: ${d.map((x) => `${(x.loc || []).slice(-1)[0] || ""} ${x.msg || ""}`.trim()).join("; ")}`;
      }
    } catch (e) { /* not JSON: the status says enough */ }
    return "";
  }

  // One loop per resource; setTimeout after each answer (not setInterval) so a slow
  // service never gets a pile of overlapping requests from one screen.
  function poll(fn, every, gen) {
    const tick = async () => {
      if (gen !== generation) return;
      try {
        await fn();
        if (gen !== generation) return;
        reachable();
      } catch (e) {
        if (gen !== generation) return;
        if (e instanceof Unauthorized) { refused(e); return; }
        unreachable(e);
      }
      setTimeout(tick, every);
    };
    tick();
  }

  function reachable() {
    lastOk = new Date();
    downSince = null;
    $("banner").hidden = true;
    $("updated").textContent = `updated ${clock(lastOk)}`;
  }

  function unreachable(err) {
    if (!downSince) downSince = new Date();
    const last = lastOk ? ` (showing data from ${clock(lastOk)})` : "";
    $("banner").textContent =
      `Floor service unreachable since ${clock(downSince)}: ${err.message}${last}`;
    $("banner").hidden = false;
  }

  // -- robots --------------------------------------------------------------------------

  async function pollRobots() {
    const robots = await api("/robots");
    renderTiles(robots);
  }

  function makeTile(id) {
    const el = document.createElement("article");
    el.className = "tile";
    el.dataset.robot = id;
    el.innerHTML = // fixed markup only; data goes in with textContent below
      '<div class="row"><span class="name"></span><span class="chips"></span></div>' +
      '<div class="row"><span class="state"></span><span class="task"></span></div>' +
      '<div class="big"></div>' +
      '<div class="detail">' +
      '<div class="row"><span class="elapsed" title="session elapsed"></span>' +
      '<span class="lost" title="messages lost this session"></span>' +
      '<span class="hb" title="seconds since the last heartbeat"></span></div>' +
      '<div class="row"><span class="disk" title="disk free"></span>' +
      '<span class="backlog" title="upload backlog: sessions, size"></span></div>' +
      "</div>";
    el.querySelector(".name").textContent = id;
    return el;
  }

  function fillTile(el, t) {
    const hb = t.last_heartbeat;
    const flags = FLAGS.filter((f) => t[f] === true);
    el.dataset.flags = flags.join(" ");
    const state = hb ? hb.state : "unknown";
    el.className = ["tile", `s-${state}`, ...flags.map((f) => `f-${f}`)].join(" ");
    const q = (sel) => el.querySelector(sel);

    const chips = q(".chips");
    chips.textContent = "";
    for (const f of flags) {
      if (!CHIP[f]) continue;
      const c = document.createElement("span");
      c.className = `chip ${f}`;
      c.textContent = CHIP[f];
      chips.appendChild(c);
    }

    const since = t.seconds_since_heartbeat;
    q(".state").textContent = { recording: "● REC", idle: "IDLE", error: "ERROR" }[state] || "—";
    let task = "";
    if (hb && hb.task) task = hb.task;
    if (hb && hb.episode_index >= 0) task += ` · ep ${hb.episode_index} ${duration(hb.episode_elapsed_sec)}`;
    if (!task && hb) task = hb.session_id ? "no task" : "";
    q(".task").textContent = task.trim();
    q(".task").title = task.trim();
    q(".big").textContent = since == null ? "STALE —" : `STALE ${age(since)}`;
    q(".elapsed").textContent = hb && hb.session_id ? duration(hb.elapsed_sec) : "";
    q(".lost").textContent = hb ? `lost ${hb.messages_lost}` : "";
    q(".lost").title = hb ? lostTitle(hb.streams) : "";
    q(".disk").textContent = hb ? `disk ${gbShort(hb.disk_free_bytes)}` : "";
    q(".backlog").textContent = hb
      ? `⬆ ${hb.upload_backlog_sessions} · ${gbShort(hb.upload_backlog_bytes)}` : "";
    q(".backlog").title = hb && hb.last_upload_error
      ? `upload error: ${hb.last_upload_error}` : "upload backlog: sessions, size";
    q(".hb").textContent = since == null ? "hb never" : `hb ${age(since)}`;
  }

  function renderTiles(robots) {
    const grid = $("tiles");
    robots.sort((a, b) => byName.compare(a.robot_id, b.robot_id));
    const seen = new Set();
    robots.forEach((t, i) => {
      let el = tiles.get(t.robot_id);
      if (!el) { el = makeTile(t.robot_id); tiles.set(t.robot_id, el); }
      fillTile(el, t);
      if (grid.children[i] !== el) grid.insertBefore(el, grid.children[i] || null);
      seen.add(t.robot_id);
    });
    for (const [id, el] of tiles) {
      if (!seen.has(id)) { el.remove(); tiles.delete(id); }
    }
    options("robot-list", robots.map((t) => t.robot_id));
  }

  // -- today's totals ------------------------------------------------------------------

  async function pollSummary() {
    const s = await api("/summary");
    $("t-recording").textContent = `${s.robots_recording}/${s.robots}`;
    $("t-stale").textContent = String(s.robots_stale);
    $("t-hours").textContent = s.hours_recorded.toFixed(1);
    const outcomes = sortedCounts(s.episodes_by_outcome);
    $("t-outcomes").textContent = outcomes.length
      ? outcomes.map(([k, n]) => `${k} ${n}`).join(" · ") : "0";
    // Totals count kept episodes only; re-recorded takes are shown apart.
    $("t-discarded").textContent = String(s.episodes_discarded ?? 0);
    $("t-backlog").textContent = gb(s.upload_backlog_bytes);
    $("t-day").textContent = s.day;
    countTable("by-task", s.episodes_by_task);
    countTable("by-operator", s.episodes_by_operator);
    countTable("by-outcome", s.episodes_by_outcome);
    options("task-list", Object.keys(s.episodes_by_task));
    options("operator-list", Object.keys(s.episodes_by_operator));
  }

  function sortedCounts(obj) {
    return Object.entries(obj || {}).sort((a, b) => b[1] - a[1] || byName.compare(a[0], b[0]));
  }

  function countTable(id, obj) {
    const body = $(id).tBodies[0];
    body.textContent = "";
    const rows = sortedCounts(obj);
    if (!rows.length) rows.push(["none yet", ""]);
    for (const [k, n] of rows) {
      const tr = body.insertRow();
      tr.insertCell().textContent = k === "" ? "(none)" : k;
      const c = tr.insertCell();
      c.className = "n";
      c.textContent = String(n);
    }
  }

  function options(id, values) {
    const list = $(id);
    const want = [...new Set(values)].sort(byName.compare);
    if (list.dataset.values === want.join("\n")) return;
    list.dataset.values = want.join("\n");
    list.textContent = "";
    for (const v of want) {
      const o = document.createElement("option");
      o.value = v;
      list.appendChild(o);
    }
  }

  // -- episode search ------------------------------------------------------------------

  function searchParams() {
    const form = new FormData($("search"));
    const p = new URLSearchParams();
    for (const name of ["task", "outcome", "operator", "robot", "since"]) {
      const v = String(form.get(name) || "").trim();
      if (v) p.set(name, v);
    }
    p.set("limit", String(PAGE_SIZE));
    return p;
  }

  async function runSearch(more) {
    const gen = generation;
    if (!more) {
      search = { params: searchParams(), cursor: null, shown: 0 };
      $("episodes").tBodies[0].textContent = "";
    }
    const p = new URLSearchParams(search.params);
    if (more && search.cursor) p.set("cursor", search.cursor);
    $("more").hidden = true;
    $("search-status").textContent = "searching…";
    let page;
    try {
      page = await api(`/episodes?${p}`);
    } catch (e) {
      if (gen !== generation) return;
      if (e instanceof Unauthorized) { refused(e); return; }
      $("search-status").textContent = `Search failed: ${e.message}`;
      $("more").hidden = !search.cursor;
      return;
    }
    if (gen !== generation) return;
    const body = $("episodes").tBodies[0];
    for (const row of page.items) body.appendChild(episodeRow(row));
    search.shown += page.items.length;
    search.cursor = page.next_cursor;
    $("more").hidden = !page.next_cursor;
    $("search-status").textContent = `${search.shown} episode${search.shown === 1 ? "" : "s"}` +
      (page.next_cursor ? " shown (more available)" : "");
  }

  function episodeRow(e) {
    const tr = document.createElement("tr");
    tr.dataset.session = e.session_id;
    tr.dataset.episode = String(e.episode_index);
    const cell = (text, cls, title) => {
      const td = tr.insertCell();
      td.textContent = text;
      if (cls) td.className = cls;
      if (title) td.title = title;
    };
    const lost = Object.values(e.lost || {}).reduce((a, b) => a + b, 0);
    cell(e.robot_id);
    cell(e.session_id, "", e.remote || "not uploaded");
    cell(String(e.episode_index), "n");
    cell(e.task, "", e.instruction);
    cell(e.outcome || "open", `outcome-${e.outcome || "open"}`);
    cell(e.operator);
    cell(dateTime(e.start_ns));
    cell(e.duration_sec == null ? "—" : duration(e.duration_sec), "n");
    cell(String(lost), lost ? "n lossy" : "n", lostTitle(e.lost));
    return tr;
  }

  // -- formatting ----------------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  const clock = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

  function dateTime(ns) {
    const d = new Date(ns / 1e6); // ns since the epoch; ms precision is plenty here
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
  }

  function duration(sec) {
    const s = Math.max(0, Math.floor(sec || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
  }

  function age(sec) {
    const s = Math.max(0, Math.floor(sec));
    if (s < 120) return `${s}s`;
    if (s < 7200) return `${Math.floor(s / 60)}m`;
    return `${Math.floor(s / 3600)}h`;
  }

  // Decimal gigabytes (1 GB = 10^9 bytes), as disks and S3 bills count them.
  const gb = (bytes) => `${((bytes || 0) / 1e9).toFixed(1)} GB`;
  // The tiles' narrow form: "123G", "3.4G".
  function gbShort(bytes) {
    const g = (bytes || 0) / 1e9;
    return `${g >= 100 ? Math.round(g) : g.toFixed(1)}G`;
  }

  function lostTitle(perStream) {
    const parts = Object.entries(perStream || {})
      .map(([k, v]) => [k, typeof v === "number" ? v : v.lost])
      .filter(([, n]) => n > 0)
      .map(([k, n]) => `${k}: ${n}`);
    return parts.length ? parts.join("\n") : "no losses";
  }

  // -- wiring --------------------------------------------------------------------------

  function main() {
    $("signin").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("signin-token").value.trim();
      if (!t) return;
      localStorage.setItem(TOKEN_KEY, t);
      start(t);
    });
    $("signout").addEventListener("click", () => {
      localStorage.removeItem(TOKEN_KEY);
      showSignIn("Signed out.");
    });
    $("search").addEventListener("submit", (ev) => { ev.preventDefault(); runSearch(false); });
    $("more").addEventListener("click", () => runSearch(true));
    window.addEventListener("hashchange", () => {
      if (!/token=/.test(location.hash)) return;
      takeTokenFromHash();
      const t = localStorage.getItem(TOKEN_KEY);
      if (t) start(t);
    });

    takeTokenFromHash();
    const t = localStorage.getItem(TOKEN_KEY);
    if (t) start(t);
    else showSignIn("");
  }

  main();
})();
