// pgflow dashboard: polls the JSON API and redraws. No dependencies.
"use strict";

const state = { token: sessionStorage.getItem("pgflow-token") || "", readOnly: true,
                overview: null, chartQueue: "", dlqQueue: "" };

// A token in the URL (?token=…) is taken once and removed from the address bar.
(function takeTokenFromUrl() {
  const u = new URL(location.href);
  const t = u.searchParams.get("token");
  if (t) {
    state.token = t;
    sessionStorage.setItem("pgflow-token", t);
    u.searchParams.delete("token");
    history.replaceState(null, "", u.pathname + u.search + u.hash);
  }
})();

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k ?? "")));
  return e;
}
const SVG = "http://www.w3.org/2000/svg";
function sv(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
const fmt = (n, d = 0) => (n === null || n === undefined) ? "–" : Number(n).toFixed(d);
const $ = (s) => document.querySelector(s);

async function api(path, opts = {}) {
  const headers = {};
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const r = await fetch(path, { ...opts, headers });
  const text = await r.text();
  if (!r.ok) throw new Error(text || r.statusText);
  return text ? JSON.parse(text) : null;
}

// ---- overview: clock, alerts, topology, queue table --------------------------------
async function refreshOverview() {
  let o;
  try {
    o = await api("/api/overview");
  } catch (e) {
    $("#status").textContent = "dashboard API unavailable: " + e.message;
    return;
  }
  state.overview = o;
  state.readOnly = o.read_only;
  $("#clock").textContent = o.at ? new Date(o.at).toLocaleTimeString() : "waiting for the first sample";
  $("#status").textContent = o.sampling_error ? "sampling failed: " + o.sampling_error : "live";
  drawMode();
  drawAlerts(o.alerts || []);
  drawTopology(o.topology);
  drawQueues(o.topology.edges);
  fillQueueSelects(o.topology.edges.map((e) => e.queue));
}

function drawMode() {
  const m = $("#mode");
  if (state.readOnly) { m.textContent = "read-only (no token configured)"; m.className = "badge"; }
  else if (state.token) { m.textContent = "write access: token set"; m.className = "badge ok"; }
  else { m.textContent = "read-only: enter the token"; m.className = "badge"; }
  const canWrite = !state.readOnly && !!state.token;
  document.querySelectorAll("button.retry, #purge").forEach((b) => { b.disabled = !canWrite; });
}

function drawAlerts(alerts) {
  const ul = $("#alerts");
  ul.replaceChildren(...(alerts.length
    ? alerts.map((a) => el("li", { "data-alert": a.name, "data-queue": a.queue }, `${a.name}: ${a.message}`))
    : [el("li", { class: "muted" }, "none")]));
  const c = $("#alert-count");
  c.textContent = alerts.length;
  c.className = alerts.length ? "badge bad" : "badge";
}

const POS = { singularity: [150, 250], centralcloud: [850, 95], genesis: [850, 385] };
// Where each direction's queue labels are listed (the curves pass by them).
const BLOCKS = {
  "singularity>centralcloud": [300, 28], "centralcloud>singularity": [470, 170],
  "singularity>genesis": [300, 330], "genesis>singularity": [470, 395],
  "centralcloud>genesis": [640, 240], "singularity>singularity": [40, 372],
};

function drawTopology(t) {
  const svg = $("#topology");
  const parts = [];
  const byPair = {};
  for (const e of t.edges) (byPair[e.from + ">" + e.to] ||= []).push(e);
  for (const [pair, edges] of Object.entries(byPair)) {
    const [from, to] = pair.split(">");
    const [bx, by] = BLOCKS[pair] || [500, 240];
    parts.push(sv("text", { x: bx, y: by, class: "label muted-label" }, `${from} → ${to}`));
    edges.forEach((e, i) => parts.push(...edgeShapes(e, from, to, bx, by + 14 * (i + 1))));
  }
  for (const n of t.nodes) parts.push(...nodeShapes(n));
  svg.replaceChildren(...parts);
}

function edgeShapes(e, from, to, lx, ly) {
  const p = e.now || {};
  const depth = (p.pending || 0) + (p.in_flight || 0);
  const cls = "edge" + ((p.dlq || 0) > 0 ? " bad" : (depth > 0 || (p.rate || 0) > 0) ? " busy" : "");
  const label = `${e.queue}  ${depth} · ${fmt(p.rate, 1)}/s${p.dlq ? " · DLQ " + p.dlq : ""}`;
  const text = sv("text", { x: lx, y: ly, class: "label", id: "edge-" + e.queue }, label);
  const [x1, y1] = POS[from], [x2, y2] = POS[to];
  let d;
  if (from === to) {
    d = `M ${x1 - 40} ${y1 + 60} C ${x1 - 110} ${ly - 30}, ${x1 + 110} ${ly - 30}, ${x1 + 40} ${y1 + 60}`;
  } else {
    // A curve through a point just left of its label.
    const cx = 2 * (lx - 8) - (x1 + x2) / 2, cy = 2 * (ly - 4) - (y1 + y2) / 2;
    d = `M ${x1} ${y1} Q ${cx} ${cy} ${x2} ${y2}`;
  }
  return [sv("path", { d, class: cls, "data-queue": e.queue }), text];
}

function nodeShapes(n) {
  const [x, y] = POS[n.service];
  const w = 190, h = 120;
  const out = [sv("rect", { x: x - w / 2, y: y - h / 2, width: w, height: h, rx: 10,
                            class: "node" + (n.connections ? "" : " down"), "data-service": n.service }),
               sv("text", { x: x - w / 2 + 10, y: y - h / 2 + 20 }, n.service),
               sv("text", { x: x - w / 2 + 10, y: y - h / 2 + 38, class: "label" },
                  `${n.connections} db connection${n.connections === 1 ? "" : "s"}`)];
  n.instances.forEach((inst, i) => {
    const ix = x - w / 2 + 16 + (i % 6) * 28, iy = y + 5 + Math.floor(i / 6) * 26;
    out.push(sv("circle", { cx: ix, cy: iy, r: 8, class: "inst" + (inst.live ? "" : " gone"),
                            "data-instance": inst.id }));
    out.push(sv("title", {}, `${inst.id}: ${inst.live ? "live" : "gone"}, seen ${fmt(inst.last_seen_s, 1)} s ago`));
  });
  if (n.instances.length)
    out.push(sv("text", { x: x - w / 2 + 10, y: y + h / 2 - 10, class: "label" },
                `${n.instances.filter((i) => i.live).length}/${n.instances.length} instances live`));
  return out;
}

const sparkHistory = {};

function drawQueues(edges) {
  const body = $("#queues tbody");
  const th = state.overview.thresholds;
  body.replaceChildren(...edges.map((e) => {
    const p = e.now || {};
    const hist = (sparkHistory[e.queue] ||= []);
    hist.push((p.pending || 0) + (p.in_flight || 0));
    if (hist.length > 120) hist.shift();
    const hot = (p.dlq || 0) > th.dlq_max || (p.oldest_age_s || 0) > th.latency;
    return el("tr", { "data-queue": e.queue, class: hot ? "hot" : "" },
      el("td", {}, e.queue), el("td", {}, `${e.from} → ${e.to}`), el("td", {}, e.delivery),
      el("td", { class: "n depth" }, fmt(p.pending)), el("td", { class: "n in-flight" }, fmt(p.in_flight)),
      el("td", { class: "n delayed" }, fmt(p.delayed)), el("td", { class: "n dlq" }, fmt(p.dlq)),
      el("td", { class: "n rate" }, fmt(p.rate, 1)), el("td", { class: "n latency" }, fmt(p.latency_ms, 1)),
      el("td", { class: "n oldest" }, fmt(p.oldest_age_s, 1)), el("td", {}, spark(hist)));
  }));
}

function spark(values) {
  const s = sv("svg", { width: 120, height: 22, viewBox: "0 0 120 22" });
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * 118 + 1},${21 - (v / max) * 20}`);
  s.append(sv("polyline", { points: pts.join(" "), class: "series" }));
  return s;
}

function fillQueueSelects(queues) {
  for (const [id, allLabel] of [["#chart-queue", null], ["#dlq-queue", "all queues"]]) {
    const sel = $(id);
    if (sel.options.length === queues.length + (allLabel ? 1 : 0)) continue;
    const keep = sel.value;
    sel.replaceChildren(...(allLabel ? [el("option", { value: "" }, allLabel)] : []),
                        ...queues.map((q) => el("option", { value: q }, q)));
    sel.value = keep || (allLabel ? "" : queues[0]);
  }
  state.chartQueue = $("#chart-queue").value;
}

// ---- charts ----------------------------------------------------------------------
async function refreshCharts() {
  if (!state.chartQueue) return;
  let s;
  try { s = await api("/api/series?queue=" + encodeURIComponent(state.chartQueue)); } catch { return; }
  const pts = s.points.map((p) => ({ at: new Date(p.at), q: p.queues[state.chartQueue] || {} }));
  lineChart($("#chart-depth"), pts.map((p) => [p.at, (p.q.pending || 0) + (p.q.in_flight || 0)]));
  lineChart($("#chart-rate"), pts.map((p) => [p.at, p.q.rate || 0]));
  lineChart($("#chart-latency"), pts.map((p) => [p.at, p.q.latency_ms ?? null]).filter((p) => p[1] !== null));
}

function lineChart(svg, pts) {
  const W = 320, H = 140, L = 40, B = 18;
  const out = [sv("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }),
               sv("line", { x1: L, y1: 4, x2: L, y2: H - B, class: "axis" })];
  if (pts.length) {
    const t0 = pts[0][0].getTime(), t1 = Math.max(t0 + 1000, pts[pts.length - 1][0].getTime());
    const max = Math.max(1, ...pts.map((p) => p[1]));
    const x = (t) => L + ((t.getTime() - t0) / (t1 - t0)) * (W - L - 4);
    const y = (v) => H - B - (v / max) * (H - B - 8);
    out.push(sv("polyline", { class: "series", points: pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
    out.push(sv("text", { x: 2, y: 12 }, fmt(max, max < 10 ? 1 : 0)));
    out.push(sv("text", { x: 2, y: H - B }, "0"));
    out.push(sv("text", { x: L, y: H - 4 }, pts[0][0].toLocaleTimeString()));
    out.push(sv("text", { x: W - 60, y: H - 4 }, pts[pts.length - 1][0].toLocaleTimeString()));
  } else {
    out.push(sv("text", { x: L + 10, y: 60 }, "no data yet"));
  }
  svg.replaceChildren(...out);
}

// ---- dead letters ----------------------------------------------------------------
async function refreshDlq() {
  const q = $("#dlq-queue").value;
  let rows;
  try { rows = await api("/api/dlq?limit=200" + (q ? "&queue=" + encodeURIComponent(q) : "")); }
  catch (e) { $("#dlq-message").textContent = e.message; return; }
  $("#dlq-count").textContent = rows.length;
  $("#dlq tbody").replaceChildren(...rows.map((m) => el("tr", { "data-id": m.id, "data-queue": m.queue_name },
    el("td", {}, new Date(m.created_at).toLocaleString()), el("td", {}, m.queue_name),
    el("td", {}, m.msg_type), el("td", { class: "n" }, m.attempts), el("td", { class: "error" }, m.error),
    el("td", {}, el("details", {}, el("summary", {}, `${(m.history || []).length} entries · trace ${m.trace_id.slice(0, 8)}`),
                    el("pre", {}, JSON.stringify({ history: m.history, payload: m.payload }, null, 2)))),
    el("td", {}, el("button", { type: "button", class: "retry", "data-id": m.id, onclick: () => retry(m.id) }, "Retry")))));
  drawMode();
}

async function retry(id) {
  try {
    await api(`/api/dlq/${id}/retry`, { method: "POST" });
    $("#dlq-message").textContent = `retried ${id}: back on its queue`;
  } catch (e) { $("#dlq-message").textContent = "retry failed: " + e.message; }
  refreshDlq();
}

async function purge() {
  const q = $("#dlq-queue").value;
  if (!confirm(`Delete every dead letter of ${q || "all queues"}? This cannot be undone.`)) return;
  try {
    const r = await api("/api/dlq/purge" + (q ? "?queue=" + encodeURIComponent(q) : ""), { method: "POST" });
    $("#dlq-message").textContent = `purged ${r.purged} dead letters`;
  } catch (e) { $("#dlq-message").textContent = "purge failed: " + e.message; }
  refreshDlq();
}

// ---- journey ---------------------------------------------------------------------
async function showJourney(ev) {
  ev.preventDefault();
  const id = $("#journey-id").value.trim();
  const list = $("#journey");
  let j;
  try { j = await api("/api/journey?id=" + encodeURIComponent(id)); }
  catch (e) { $("#journey-summary").textContent = e.message; list.replaceChildren(); return; }
  if (!j.hops.length) {
    $("#journey-summary").textContent = `nothing found for ${id}`;
    list.replaceChildren();
    return;
  }
  const t0 = Math.min(...j.hops.map((h) => Date.parse(h.sent_at)));
  const t1 = Math.max(...j.hops.map((h) => Date.parse(h.done_at || h.sent_at)), t0 + 1);
  $("#journey-summary").textContent =
    `trace ${j.trace_id}${j.by_proposal ? " (found by proposal id)" : ""}: ${j.hops.length} messages over ${t1 - t0} ms`;
  list.replaceChildren(...j.hops.map((h) => {
    const s = Date.parse(h.sent_at), e = Date.parse(h.done_at || h.sent_at);
    const left = ((s - t0) / (t1 - t0)) * 100, width = Math.max(0.5, ((e - s) / (t1 - t0)) * 100);
    const cls = "bar" + (h.state === "dead" ? " dead" : h.state === "done" ? "" : " open");
    return el("li", { "data-queue": h.queue_name, "data-state": h.state },
      el("span", {}, `+${s - t0} ms ${h.queue_name}`),
      el("div", {}, el("div", { class: cls, style: `margin-left:${left}%;width:${width}%` })),
      el("span", {}, `${h.producer || h.source || "?"} → ${h.consumer || "?"}${h.target ? " (" + h.target + ")" : ""}: ` +
                     `${h.msg_type}, ${h.state}${h.done_at ? ` in ${e - s} ms` : ""}${h.error ? " – " + h.error : ""}`));
  }));
}

// ---- wiring ----------------------------------------------------------------------
$("#token").value = state.token;
$("#token-save").addEventListener("click", () => {
  state.token = $("#token").value.trim();
  if (state.token) sessionStorage.setItem("pgflow-token", state.token);
  else sessionStorage.removeItem("pgflow-token");
  drawMode();
});
$("#chart-queue").addEventListener("change", () => { state.chartQueue = $("#chart-queue").value; refreshCharts(); });
$("#dlq-queue").addEventListener("change", refreshDlq);
$("#purge").addEventListener("click", purge);
$("#journey-form").addEventListener("submit", showJourney);

async function loop(fn, ms) { for (;;) { await fn(); await new Promise((r) => setTimeout(r, ms)); } }
loop(refreshOverview, 1000);
loop(refreshCharts, 2000);
loop(refreshDlq, 2000);
