// Cairn's web UI: plain JavaScript over Flink's REST shapes (and Cairn's
// additions under /jobs/:id/cairn). The same file serves one job (its REST
// server's `/`) and every job on the machine (`cairn dashboard`, detected by
// GET /cairn/dashboard). Pages update by polling; nothing is fetched from
// anywhere but this server. DOM is built with createElement only (names and
// paths from jobs are never parsed as HTML).
"use strict";

const S = {
  token: null,
  dashboard: null, // GET /cairn/dashboard when served by `cairn dashboard`
  refresh: 1000,
  timer: null,
  route: null,
  tab: "overview",
  results: {}, // action results per job, kept across redraws
  forms: {}, // form values per job, kept across redraws
};

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "text", "path", "line", "defs", "marker", "polygon", "title", "tspan"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (S.token && method !== "GET") headers["Authorization"] = "Bearer " + S.token;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let json = null;
  try { json = await r.json(); } catch (e) { json = null; }
  if (!r.ok) {
    const msg = json && json.errors ? json.errors.join("; ") : r.status + " " + r.statusText;
    const code = r.headers.get("cairn-error-code");
    throw new Error(code ? msg + " [" + code + "]" : msg);
  }
  return json;
}

const get = (p) => api("GET", p);

function fmtTime(ms) {
  if (!ms || ms < 0) return "–";
  const d = new Date(ms);
  return d.toISOString().replace("T", " ").slice(0, 19);
}
function fmtDur(ms) {
  if (ms === undefined || ms === null || ms < 0) return "–";
  if (ms < 1000) return ms + " ms";
  let s = Math.floor(ms / 1000);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60);
  s = s % 60;
  return hh ? `${hh}h ${mm}m ${s}s` : mm ? `${mm}m ${s}s` : `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)}s`;
}
function fmtBytes(n) {
  if (n === undefined || n === null) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return i ? v.toFixed(1) + " " + u[i] : v + " B";
}
function fmtNum(n) {
  if (n === undefined || n === null) return "–";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Math.round(n).toString();
}
const state = (s) => h("span", { class: "state " + s }, s);
function bar(frac, cls) {
  const i = h("i");
  i.style.width = Math.max(0, Math.min(1, frac || 0)) * 100 + "%";
  return h("span", { class: "bar " + (cls || ""), title: Math.round((frac || 0) * 100) + "%" }, i);
}
function setStatus(t) { document.getElementById("status").textContent = t; }

// ---------------------------------------------------------------- routing

function parseRoute() {
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/job\/([0-9a-f]{32})(?:\/(\w+))?/);
  if (m) return { page: "job", jid: m[1], tab: m[2] || "overview" };
  return { page: "overview" };
}

function takeToken() {
  // `#token=...` from `cairn dashboard`'s printed address; kept for the tab.
  const m = (location.hash || "").match(/token=([0-9A-Za-z_-]+)/);
  if (m) {
    sessionStorage.setItem("cairn-token", m[1]);
    history.replaceState(null, "", location.pathname + "#/");
  }
  S.token = sessionStorage.getItem("cairn-token");
}

async function init() {
  takeToken();
  try {
    const cfg = await get("/config");
    if (cfg && cfg["refresh-interval"]) S.refresh = Math.min(3000, Math.max(500, cfg["refresh-interval"]));
  } catch (e) { /* keep the default */ }
  try {
    S.dashboard = await get("/cairn/dashboard");
    document.getElementById("mode").textContent = "dashboard · every job on this machine";
  } catch (e) {
    S.dashboard = null;
    document.getElementById("mode").textContent = "job REST server";
  }
  window.addEventListener("hashchange", () => { S.forms = {}; draw(true); });
  draw(true);
}

async function draw(first) {
  clearTimeout(S.timer);
  const route = parseRoute();
  S.route = route;
  try {
    if (route.page === "job") await drawJob(route.jid, route.tab, first);
    else await drawOverview();
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus("update failed: " + e.message);
  }
  S.timer = setTimeout(() => draw(false), S.refresh);
}

function replaceApp(...nodes) {
  const app = document.getElementById("app");
  // Typed values live in S.forms; while a field has focus the page is not
  // redrawn under the user's fingers.
  const a = document.activeElement;
  if (a && app.contains(a) && (a.tagName === "INPUT" || a.tagName === "SELECT")) return;
  app.replaceChildren(...nodes);
}

// ---------------------------------------------------------------- overview

async function drawOverview() {
  const ov = await get("/jobs/overview");
  const jobs = (ov.jobs || []).slice().sort((a, b) => (b["start-time"] || 0) - (a["start-time"] || 0));
  const details = {};
  await Promise.all(jobs.map(async (j) => {
    if (["FINISHED", "CANCELED", "FAILED"].includes(j.state) && S.dashboard) return;
    try { details[j.jid] = await get("/jobs/" + j.jid); } catch (e) { /* ended meanwhile */ }
  }));
  const rows = jobs.map((j) => {
    const d = details[j.jid];
    const verts = d ? d.vertices || [] : [];
    const par = verts.length ? Math.max(...verts.map((v) => v.parallelism)) : "–";
    const sumIn = verts.reduce((a, v) => a + (v.metrics ? v.metrics["read-records"] : 0), 0);
    const sumOut = verts.reduce((a, v) => a + (v.metrics ? v.metrics["write-records"] : 0), 0);
    return h("tr", { class: "clickable", "data-jid": j.jid, onclick: () => { location.hash = "#/job/" + j.jid; } },
      h("td", {}, h("a", { href: "#/job/" + j.jid }, j.name)),
      h("td", { class: "mono" }, j.jid),
      h("td", {}, state(j.state)),
      h("td", {}, fmtTime(j["start-time"])),
      h("td", {}, fmtDur(j.duration)),
      h("td", { class: "parallelism" }, par),
      h("td", { class: "records-in" }, d ? fmtNum(sumIn) : "–"),
      h("td", { class: "records-out" }, d ? fmtNum(sumOut) : "–"));
  });
  const table = h("table", { id: "jobs-table" },
    h("thead", {}, h("tr", {}, ["Name", "Job id", "Status", "Started (UTC)", "Duration", "Parallelism", "Records in", "Records out"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No jobs."))));
  const running = jobs.filter((j) => j.state === "RUNNING").length;
  const nodes = [
    h("h1", {}, "Jobs"),
    h("div", { class: "grid" },
      h("div", { class: "stat" }, h("b", {}, running), h("span", {}, "running")),
      h("div", { class: "stat" }, h("b", {}, jobs.length - running), h("span", {}, "other"))),
    h("h2", {}, "All jobs"), table,
  ];
  if (S.dashboard) nodes.push(await restorePanel());
  replaceApp(...nodes);
}

// The dashboard starts a job binary it has seen from a snapshot, exactly as
// `cairn run -s <path> -p <n> [-n] -- <binary> <args>` does.
async function restorePanel() {
  S.dashboard = await get("/cairn/dashboard");
  const f = S.forms.restore || (S.forms.restore = { program: "0", snapshot: "", parallelism: "", nonRestored: false });
  const programs = S.dashboard.programs || [];
  const snaps = S.dashboard.snapshots || [];
  const prog = h("select", { id: "restore-program", onchange: (e) => { f.program = e.target.value; } },
    programs.map((p) => h("option", { value: p.index, selected: String(p.index) === f.program },
      `${p.name} — ${p.program} ${(p.flags || []).concat(p.args || []).join(" ")}`)));
  const snap = h("select", { id: "restore-snapshot", onchange: (e) => { f.snapshot = e.target.value; txt.value = e.target.value; } },
    h("option", { value: "" }, "— no snapshot (fresh start) —"),
    snaps.map((s) => h("option", { value: s.path, selected: s.path === f.snapshot }, `${s.kind}: ${s.path} (${s.name})`)));
  const txt = h("input", { type: "text", id: "restore-path", placeholder: "or a savepoint / checkpoint path", value: f.snapshot, oninput: (e) => { f.snapshot = e.target.value; } });
  const par = h("input", { type: "number", id: "restore-parallelism", min: 1, placeholder: "as before", value: f.parallelism, oninput: (e) => { f.parallelism = e.target.value; } });
  const nrs = h("input", { type: "checkbox", id: "restore-allow-non-restored", onchange: (e) => { f.nonRestored = e.target.checked; } });
  nrs.checked = f.nonRestored;
  const result = h("div", { id: "restore-result", class: "result " + (S.results.restore ? S.results.restore.cls : "") },
    S.results.restore ? S.results.restore.node() : "");
  const go = h("button", { id: "btn-restore", onclick: async () => {
    const body = { program: Number(f.program), savepointPath: f.snapshot || null, allowNonRestoredState: f.nonRestored };
    if (f.parallelism) body.parallelism = Number(f.parallelism);
    S.results.restore = { cls: "", node: () => "Starting…" };
    draw(false);
    try {
      const r = await api("POST", "/cairn/run", body);
      S.results.restore = { cls: "ok", node: () => h("span", {}, "Started job ", h("a", { href: "#/job/" + r.jobid, id: "restored-job" }, r.jobid), " (log ", h("code", {}, r.log), ")") };
    } catch (e) {
      S.results.restore = { cls: "err", node: () => "Start failed: " + e.message };
    }
    draw(false);
  } }, "Start");
  if (!programs.length) {
    return h("div", { class: "card" }, h("h2", {}, "Restore a job"), h("p", { class: "muted" }, "No job binaries seen yet: start one with `cairn run`."));
  }
  return h("div", { class: "card", id: "restore" },
    h("h2", {}, "Restore a job from a savepoint or retained checkpoint"),
    h("div", { class: "actions" },
      h("label", {}, "Job binary ", prog),
      h("label", {}, "Snapshot ", snap),
      txt,
      h("label", {}, "Parallelism ", par),
      h("label", {}, nrs, " allow non-restored state (-n)"),
      go),
    result);
}

// ---------------------------------------------------------------- job page

async function drawJob(jid, tab, first) {
  const [job, extra, cps] = await Promise.all([
    get("/jobs/" + jid),
    get("/jobs/" + jid + "/cairn").catch(() => null),
    get("/jobs/" + jid + "/checkpoints").catch(() => null),
  ]);
  const running = job.state === "RUNNING";
  const tabs = h("div", { class: "tabs" },
    ["overview", "checkpoints", "configuration"].map((t) =>
      h("a", { href: `#/job/${jid}/${t}`, id: "tab-" + t, class: t === tab ? "active" : "" }, t[0].toUpperCase() + t.slice(1))));
  let body;
  if (tab === "checkpoints") body = await checkpointsTab(jid, cps, extra);
  else if (tab === "configuration") body = await configurationTab(jid, extra);
  else body = overviewTab(job, extra);
  const head = h("div", {},
    h("p", {}, h("a", { href: "#/" }, "← all jobs")),
    h("h1", {}, job.name || "(no job details)", " ", state(job.state)),
    h("div", { class: "grid" },
      h("div", { class: "stat" }, h("b", { class: "mono small" }, jid), h("span", {}, "job id")),
      h("div", { class: "stat" }, h("b", {}, fmtTime(job["start-time"])), h("span", {}, "started (UTC)")),
      h("div", { class: "stat" }, h("b", {}, fmtDur(job.duration)), h("span", {}, "duration")),
      h("div", { class: "stat" }, h("b", {}, extra ? extra.restarts : "–"), h("span", {}, "restarts")),
      extra && extra["restored-from"] ? h("div", { class: "stat" }, h("b", { class: "mono small", id: "restored-from" }, extra["restored-from"]), h("span", {}, "restored from")) : null));
  replaceApp(head, actionsPanel(jid, running, extra), tabs, body);
}

function overviewTab(job, extra) {
  const ops = extra ? extra.operators || [] : [];
  const verts = job.vertices || [];
  const graph = drawGraph(job, extra);
  const opRows = ops.map((o) => h("tr", { "data-uid": o.uid },
    h("td", {}, o.name), h("td", { class: "mono" }, o.uid), h("td", {}, o.parallelism + "/" + o.maxParallelism),
    h("td", { class: "rate-in" }, fmtNum(o["records-in-per-second"]) + "/s"),
    h("td", { class: "rate-out" }, fmtNum(o["records-out-per-second"]) + "/s"),
    h("td", {}, fmtNum(o["records-in"])), h("td", {}, fmtNum(o["records-out"])),
    h("td", {}, bar(o["busy-ms-per-second"] / 1000), " ", Math.round(o["busy-ms-per-second"] / 10) + "%"),
    h("td", {}, bar(o["backpressured-ms-per-second"] / 1000, "bp"), " ", Math.round(o["backpressured-ms-per-second"] / 10) + "%"),
    h("td", {}, o.watermark === null || o.watermark === undefined ? "–" : o.watermark >= 9.2e18 ? "end" : fmtTime(o.watermark))));
  const subRows = [];
  for (const o of ops) {
    for (const s of o.subtasks || []) {
      subRows.push(h("tr", {},
        h("td", {}, o.name), h("td", {}, s.subtask), h("td", {}, fmtNum(s["records-in"])), h("td", {}, fmtNum(s["records-out"])),
        h("td", {}, fmtNum(s["records-in-per-second"]) + "/s"), h("td", {}, fmtNum(s["records-out-per-second"]) + "/s"),
        h("td", {}, Math.round(s["busy-ms-per-second"] / 10) + "%"), h("td", {}, Math.round(s["backpressured-ms-per-second"] / 10) + "%")));
    }
  }
  return h("div", {},
    h("h2", {}, "Job graph"), graph,
    h("h2", {}, "Operators"),
    h("table", { id: "operators-table" },
      h("thead", {}, h("tr", {}, ["Operator", "uid", "Parallelism", "In/s", "Out/s", "Records in", "Records out", "Busy", "Backpressured", "Watermark"].map((t) => h("th", {}, t)))),
      h("tbody", {}, opRows)),
    h("h2", {}, "Subtasks"),
    h("table", { id: "subtasks-table" },
      h("thead", {}, h("tr", {}, ["Operator", "Subtask", "Records in", "Records out", "In/s", "Out/s", "Busy", "Backpressured"].map((t) => h("th", {}, t)))),
      h("tbody", {}, subRows)),
    h("p", { class: "muted small" }, `${verts.length} tasks (chains) · ${ops.length} operators`));
}

// Vertices (chains) in columns by depth; each box lists its operators with
// parallelism, records in/out per second, busy and backpressured time.
function drawGraph(job, extra) {
  const nodes = (job.plan && job.plan.nodes) || [];
  const verts = job.vertices || [];
  const ops = extra ? extra.operators || [] : [];
  const depth = {};
  const byId = Object.fromEntries(nodes.map((n) => [n.id, n]));
  const d = (id, seen = new Set()) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    const ins = (byId[id] && byId[id].inputs) || [];
    depth[id] = ins.length ? 1 + Math.max(...ins.map((i) => d(i.id, seen))) : 0;
    return depth[id];
  };
  nodes.forEach((n) => d(n.id));
  const cols = {};
  nodes.forEach((n) => { (cols[depth[n.id]] = cols[depth[n.id]] || []).push(n.id); });
  const W = 250, GAP = 90, PAD = 20;
  const heightOf = (id) => {
    const chain = ops.filter((o) => o.vertex === id);
    return 56 + 16 * Math.max(1, chain.length);
  };
  const pos = {};
  let maxH = 0;
  Object.keys(cols).sort((a, b) => a - b).forEach((c) => {
    let y = PAD;
    cols[c].forEach((id) => {
      pos[id] = { x: PAD + c * (W + GAP), y, h: heightOf(id) };
      y += pos[id].h + 30;
    });
    maxH = Math.max(maxH, y);
  });
  const width = PAD * 2 + Object.keys(cols).length * (W + GAP) - GAP;
  const svg = h("svg", { class: "graph", id: "job-graph", viewBox: `0 0 ${Math.max(width, 300)} ${Math.max(maxH, 120)}`, height: Math.max(maxH, 120) });
  svg.appendChild(h("defs", {}, h("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    h("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
  for (const n of nodes) {
    for (const i of n.inputs || []) {
      const a = pos[i.id], b = pos[n.id];
      if (!a || !b) continue;
      const x1 = a.x + W, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2, mx = (x1 + x2) / 2;
      svg.appendChild(h("g", { class: "edge", "data-from": i.id, "data-to": n.id },
        h("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`, "marker-end": "url(#arrow)" }),
        h("text", { x: mx - 28, y: (y1 + y2) / 2 - 6 }, i.ship_strategy)));
    }
  }
  for (const n of nodes) {
    const p = pos[n.id];
    const v = verts.find((x) => x.id === n.id) || {};
    const chain = ops.filter((o) => o.vertex === n.id);
    const head = chain[0] || {}, tail = chain[chain.length - 1] || {};
    const busy = (head["busy-ms-per-second"] || 0) / 1000, bp = (head["backpressured-ms-per-second"] || 0) / 1000;
    const cls = "vertex" + (bp > 0.3 ? " backpressured" : busy > 0.8 ? " busy" : "");
    const g = h("g", { class: cls, "data-vertex": n.id, transform: `translate(${p.x},${p.y})` },
      h("title", {}, n.description),
      h("rect", { width: W, height: p.h, rx: 6 }),
      h("text", { x: 10, y: 18 }, `Task · parallelism ${v.parallelism || n.parallelism}`));
    chain.forEach((o, k) => g.appendChild(h("text", { class: "op", x: 14, y: 36 + k * 16 }, (k ? "→ " : "") + o.name + " [" + o.uid + "]")));
    const base = 36 + 16 * Math.max(1, chain.length);
    g.appendChild(h("text", { class: "metric", x: 10, y: base + 4 }, `in ${fmtNum(head["records-in-per-second"])}/s · out ${fmtNum(tail["records-out-per-second"])}/s`));
    g.appendChild(h("text", { class: "metric", x: 10, y: base + 18 }, `busy ${Math.round(busy * 100)}% · backpressured ${Math.round(bp * 100)}%`));
    svg.appendChild(g);
  }
  return svg;
}

function actionsPanel(jid, running, extra) {
  const f = S.forms[jid] || (S.forms[jid] = { dir: "", format: "CANONICAL", stopDir: "", drain: false });
  const res = S.results[jid] || {};
  const result = (id) => h("div", { id, class: "result " + (res[id] ? res[id].cls : "") }, res[id] ? res[id].text : "");
  const set = (id, cls, text) => { (S.results[jid] = S.results[jid] || {})[id] = { cls, text }; };
  const run = (id, label, fn) => async () => {
    set(id, "", label + "…");
    draw(false);
    try { set(id, "ok", await fn()); } catch (e) { set(id, "err", label + " failed: " + e.message); }
    draw(false);
  };
  const poll = async (path) => {
    for (let i = 0; i < 600; i++) {
      const s = await get(path);
      if (s.status.id !== "IN_PROGRESS") return s.operation || {};
      await new Promise((r) => setTimeout(r, 300));
    }
    throw new Error("still in progress after 3 minutes");
  };
  const failure = (op) => op["failure-cause"] || op.failureCause;
  const spDefault = extra && extra["checkpoint-config"] ? extra["checkpoint-config"]["savepoint-dir"] : null;
  const dir = h("input", { type: "text", id: "sp-dir", placeholder: spDefault ? "default: " + spDefault : "target directory", value: f.dir, oninput: (e) => { f.dir = e.target.value; } });
  const fmt = h("select", { id: "sp-format", onchange: (e) => { f.format = e.target.value; } },
    ["CANONICAL", "NATIVE"].map((x) => h("option", { value: x, selected: f.format === x }, x.toLowerCase())));
  const drain = h("input", { type: "checkbox", id: "stop-drain", onchange: (e) => { f.drain = e.target.checked; } });
  drain.checked = f.drain;
  const savepoint = run("savepoint-result", "Savepoint", async () => {
    const body = { formatType: f.format, "cancel-job": false };
    if (f.dir) body["target-directory"] = f.dir;
    const t = await api("POST", `/jobs/${jid}/savepoints`, body);
    const op = await poll(`/jobs/${jid}/savepoints/${t["request-id"]}`);
    if (failure(op)) throw new Error(failure(op)["stack-trace"]);
    return "Savepoint completed: " + op.location;
  });
  const checkpoint = run("checkpoint-result", "Checkpoint", async () => {
    const t = await api("POST", `/jobs/${jid}/checkpoints`, { checkpointType: "CONFIGURED" });
    const op = await poll(`/jobs/${jid}/checkpoints/${t["request-id"]}`);
    if (failure(op)) throw new Error(failure(op)["stack-trace"]);
    return "Checkpoint " + op.checkpointId + " completed";
  });
  const stop = run("stop-result", "Stop", async () => {
    const body = { formatType: f.format, drain: f.drain };
    if (f.dir) body.targetDirectory = f.dir;
    const t = await api("POST", `/jobs/${jid}/stop`, body);
    const op = await poll(`/jobs/${jid}/savepoints/${t["request-id"]}`);
    if (failure(op)) throw new Error(failure(op)["stack-trace"]);
    return "Stopped with savepoint: " + op.location;
  });
  const cancel = run("cancel-result", "Cancel", async () => {
    if (!confirm("Cancel job " + jid + "?")) return "Not cancelled.";
    await api("PATCH", `/jobs/${jid}?mode=cancel`);
    return "Cancel requested.";
  });
  const dis = !running;
  return h("div", { class: "card", id: "actions" },
    h("div", { class: "actions" },
      h("fieldset", {}, h("legend", {}, "Savepoint"), dir, " ", fmt, " ",
        h("button", { id: "btn-savepoint", onclick: savepoint, disabled: dis }, "Trigger savepoint")),
      h("fieldset", {}, h("legend", {}, "Checkpoint"), h("button", { id: "btn-checkpoint", class: "secondary", onclick: checkpoint, disabled: dis }, "Trigger checkpoint")),
      h("fieldset", {}, h("legend", {}, "Stop with savepoint"), h("label", {}, drain, " drain"), " ",
        h("button", { id: "btn-stop", onclick: stop, disabled: dis }, "Stop")),
      h("fieldset", {}, h("legend", {}, "Cancel"), h("button", { id: "btn-cancel", class: "danger", onclick: cancel, disabled: dis }, "Cancel job"))),
    result("savepoint-result"), result("checkpoint-result"), result("stop-result"), result("cancel-result"),
    !S.token && S.dashboard ? h("p", { class: "muted small" }, "Actions need the dashboard's token: open the address `cairn dashboard` printed.") : null);
}

// ---------------------------------------------------------------- checkpoints

async function checkpointsTab(jid, cps, extra) {
  if (!cps) return h("p", { class: "muted" }, "No checkpoint statistics.");
  const c = cps.counts || {};
  const phases = {};
  for (const p of (extra && extra["checkpoint-phases"]) || []) phases[p.id] = p;
  const latest = cps.latest || {};
  const latestRow = (label, s, extraCell) => h("tr", {}, h("th", {}, label),
    h("td", {}, s ? "#" + s.id : "–"), h("td", {}, s ? fmtTime(s.trigger_timestamp || s.restore_timestamp) : "–"),
    h("td", { class: "mono small" }, s ? (s.external_path || s.failure_message || "") : ""), extraCell || h("td", {}));
  const rows = (cps.history || []).map((s) => {
    const p = phases[s.id] || {};
    return h("tr", { "data-checkpoint": s.id },
      h("td", {}, s.id), h("td", {}, state(s.status)),
      h("td", { "data-type": s.checkpoint_type }, s.is_savepoint ? "savepoint" : s.checkpoint_type === "UNALIGNED_CHECKPOINT" ? "unaligned" : "aligned"),
      h("td", {}, fmtTime(s.trigger_timestamp)), h("td", {}, fmtDur(s.end_to_end_duration)),
      h("td", {}, fmtBytes(s.state_size)), h("td", { "data-persisted": s.persisted_data }, fmtBytes(s.persisted_data || 0)),
      h("td", {}, fmtDur(p.sync_duration)), h("td", {}, fmtDur(p.async_duration)),
      h("td", {}, fmtDur(p.alignment_duration)), h("td", {}, s.num_acknowledged_subtasks + "/" + s.num_subtasks),
      h("td", { class: "mono small" }, s.external_path || s.failure_message || ""));
  });
  const sum = cps.summary || {};
  const ps = (extra && extra["checkpoint-phase-summary"]) || {};
  const sumRow = (label, x, f) => h("tr", {}, h("th", {}, label), h("td", {}, x ? f(x.min) : "–"), h("td", {}, x ? f(x.avg) : "–"), h("td", {}, x ? f(x.max) : "–"));
  const savepoints = ((extra && extra.savepoints) || []).map((s) => h("tr", {},
    h("td", {}, s.id), h("td", {}, fmtTime(s.trigger_timestamp)), h("td", {}, fmtBytes(s.state_size)), h("td", { class: "mono small savepoint-path" }, s.path)));
  return h("div", { id: "checkpoints" },
    h("div", { class: "grid", id: "cp-counts" },
      [["triggered", c.total], ["in progress", c.in_progress], ["completed", c.completed], ["failed", c.failed], ["restored", c.restored]]
        .map(([k, v]) => h("div", { class: "stat", "data-count": k.replace(" ", "_") }, h("b", {}, v), h("span", {}, k)))),
    h("h2", {}, "Latest"),
    h("table", { id: "cp-latest" }, h("tbody", {},
      latestRow("Completed checkpoint", latest.completed),
      latestRow("Savepoint", latest.savepoint),
      latestRow("Failed", latest.failed),
      latestRow("Restored", latest.restored))),
    h("h2", {}, "History (newest first)"),
    h("table", { id: "cp-history" },
      h("thead", {}, h("tr", {}, ["Id", "Status", "Type", "Triggered (UTC)", "Duration", "Size", "In-flight data", "Sync", "Async", "Alignment", "Acknowledged", "Path"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows)),
    h("h2", {}, "Summary of completed checkpoints"),
    h("table", { id: "cp-summary" },
      h("thead", {}, h("tr", {}, ["", "Min", "Average", "Max"].map((t) => h("th", {}, t)))),
      h("tbody", {},
        sumRow("End-to-end duration", sum.end_to_end_duration, fmtDur),
        sumRow("State size", sum.state_size, fmtBytes),
        sumRow("In-flight data (unaligned)", sum.persisted_data, fmtBytes),
        sumRow("Synchronous part", ps.sync_duration, fmtDur),
        sumRow("Asynchronous part", ps.async_duration, fmtDur),
        sumRow("Alignment", ps.alignment_duration, fmtDur))),
    h("h2", {}, "Savepoints"),
    h("table", { id: "savepoints-table" },
      h("thead", {}, h("tr", {}, ["Id", "Triggered (UTC)", "Size", "Path"].map((t) => h("th", {}, t)))),
      h("tbody", {}, savepoints.length ? savepoints : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "None in the recent history.")))),
    await checkpointConfig(jid, extra));
}

async function checkpointConfig(jid, extra) {
  const cfg = await get(`/jobs/${jid}/checkpoints/config`).catch(() => null);
  if (!cfg) return h("div");
  const cc = (extra && extra["checkpoint-config"]) || {};
  const row = (k, v) => h("tr", {}, h("th", {}, k), h("td", { class: "mono small" }, v === undefined || v === null ? "–" : String(v)));
  return h("div", {}, h("h2", {}, "Configuration"),
    h("table", { id: "cp-config" }, h("tbody", {},
      row("Mode", cfg.mode), row("Interval", cfg.interval ? fmtDur(cfg.interval) : "off"), row("Timeout", fmtDur(cfg.timeout)),
      row("Minimum pause", fmtDur(cfg.min_pause)), row("Maximum concurrent", cfg.max_concurrent),
      row("Tolerable failures", cfg.tolerable_failed_checkpoints),
      row("Unaligned checkpoints", cfg.unaligned_checkpoints ? "enabled" : "disabled"),
      row("Aligned checkpoint timeout", cfg.unaligned_checkpoints ? fmtDur(cfg.aligned_checkpoint_timeout) : "–"),
      row("Retention", cc.externalization),
      row("Retained", cc["num-retained"]), row("State backend", cfg.state_backend), row("Checkpoint storage", cfg.checkpoint_storage),
      row("Savepoint directory", cc["savepoint-dir"]))));
}

async function configurationTab(jid, extra) {
  const cfg = await get(`/jobs/${jid}/config`);
  const user = (cfg["execution-config"] && cfg["execution-config"]["user-config"]) || {};
  const rows = Object.keys(user).sort().map((k) => h("tr", {}, h("td", { class: "mono" }, k), h("td", { class: "mono" }, user[k])));
  const edges = ((extra && extra.edges) || []).map((e) => h("tr", {}, h("td", { class: "mono small" }, e.source), h("td", { class: "mono small" }, e.target), h("td", {}, e.partitioning)));
  return h("div", {},
    h("h2", {}, "Job configuration"),
    h("table", { id: "config-table" }, h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Value"))), h("tbody", {}, rows)),
    h("h2", {}, "Edges"),
    h("table", {}, h("thead", {}, h("tr", {}, ["From operator", "To operator", "Partitioning"].map((t) => h("th", {}, t)))), h("tbody", {}, edges)));
}

init();
