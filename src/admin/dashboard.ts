/**
 * `GET /` on the admin endpoint: one self-contained page (no CDN, no build
 * step, no chart library) that polls `/status.json` every second and shows
 * every service live: charts of the last 15 minutes (connections/s, bytes/s
 * in and out, active connections, refusals/s by cause), protection mode and
 * discovery, and every backend with its health, admin state and where it
 * came from (backup, route, dns/srv/etcd). With many services each folds
 * away and a filter box narrows them. With a token configured, the page asks
 * for it and keeps it for the tab.
 *
 * The history lives in the page (bal keeps counters, not series): a tab
 * opened now starts its charts now.
 *
 * @module
 */

/** The page. Rows and charts carry data-* attributes so scripts and tests can read them. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bal</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em; color: #1d2329; background: #f6f7f9; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; display: inline-block; margin-right: 1em; }
  .meta { color: #5b6670; }
  #bar { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin-bottom: .6em; }
  #filter { padding: .25em .5em; width: 18em; }
  details { background: #fff; box-shadow: 0 1px 2px #0002; margin: .6em 0; border-radius: 4px; }
  summary { cursor: pointer; padding: .45em .7em; font-weight: 600; }
  summary .meta { font-weight: normal; }
  .body { padding: 0 .7em .6em; }
  .charts { display: flex; flex-wrap: wrap; gap: .6em; margin: .3em 0 .5em; }
  figure { margin: 0; width: 190px; }
  figcaption { font-size: 12px; color: #5b6670; display: flex; justify-content: space-between; }
  figcaption b { color: #1d2329; font-variant-numeric: tabular-nums; }
  svg { display: block; width: 190px; height: 42px; background: #f3f5f8; border-radius: 3px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
  th { background: #eef0f3; font-weight: 600; font-size: 13px; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .up { color: #137333; font-weight: 600; } .down { color: #c5221f; font-weight: 600; }
  .draining, .disabled { color: #b06000; }
  .tag { display: inline-block; font-size: 11px; padding: 0 .45em; margin-left: .3em; border-radius: 8px;
    background: #e8eaed; color: #3c4043; }
  .tag.warn { background: #fce8b2; color: #7a4f01; } .tag.bad { background: #fad2cf; color: #a50e0e; }
  .notes { margin: .2em 0 .4em; font-size: 13px; }
  #error { color: #c5221f; } form { margin: 1em 0; }
</style>
</head>
<body>
<div id="bar"><h1>bal</h1><span class="meta" id="meta">loading…</span>
<input id="filter" type="search" placeholder="filter services and backends" hidden></div>
<div id="change" class="meta"></div>
<div id="error"></div>
<form id="login" hidden><label>Admin token <input id="token" type="password" size="40"></label>
<button>Show</button></form>
<div id="services"></div>
<script>
"use strict";
// 15 minutes of one-second samples per service.
const KEEP = 900;
const SPAN_MIN = 60;
// Above this many services, each starts folded (its header still says how it is).
const FOLD_ABOVE = 6;
let token = sessionStorage.getItem("bal-token") || "";
let previous = null;
let filter = "";
const history = new Map();
const folded = new Map();
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
};
const plural = (n, noun) => n + " " + noun + (n === 1 ? "" : "s");
const bytes = (n) => n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB"
  : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : (n / 1024).toFixed(1) + " KiB";
const perSecond = (n) => n >= 100 ? n.toFixed(0) : n.toFixed(1);
const sum = (list, f) => list.reduce((t, x) => t + f(x), 0);
const refusals = (svc) => ({ ...svc.refused_by_cause, no_backend: svc.no_backend_connections });

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("bal-token", token);
  $("login").hidden = true;
  $("meta").textContent = "loading…";
  poll();
});
$("filter").addEventListener("input", () => {
  filter = $("filter").value.trim().toLowerCase();
  if (previous) draw(previous.s);
});

// One sample per service: rates from the counters' change since the last poll.
function sample(s, at) {
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  for (const svc of s.services) {
    const old = previous?.s.services.find((x) => x.name === svc.name);
    const series = history.get(svc.name) ?? [];
    const rate = (now, before) => old && seconds > 0 ? Math.max(0, now - before) / seconds : 0;
    const causes = refusals(svc);
    const oldCauses = old ? refusals(old) : {};
    const refused = {};
    for (const [cause, n] of Object.entries(causes)) refused[cause] = rate(n, oldCauses[cause] ?? n);
    series.push({
      conn: rate(svc.connections_accepted, old?.connections_accepted),
      in: rate(sum(svc.backends, (b) => b.bytes_in), old ? sum(old.backends, (b) => b.bytes_in) : 0),
      out: rate(sum(svc.backends, (b) => b.bytes_out), old ? sum(old.backends, (b) => b.bytes_out) : 0),
      active: svc.active_connections,
      refused,
    });
    if (series.length > KEEP) series.splice(0, series.length - KEEP);
    history.set(svc.name, series);
  }
  for (const name of history.keys()) {
    if (!s.services.some((x) => x.name === name)) history.delete(name);
  }
}

// A line chart of the window: scaled to its own peak, the current value beside its name.
function chart(service, key, label, values, show) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  // A young page's window is its first minute, widening to the 15 minutes it keeps.
  const span = Math.max(SPAN_MIN, values.length);
  svg.setAttribute("viewBox", "0 0 " + span + " 40");
  svg.setAttribute("preserveAspectRatio", "none");
  const peak = Math.max(...values, 0);
  if (values.length > 1 && peak > 0) {
    const line = document.createElementNS(ns, "polyline");
    const x0 = span - values.length;
    line.setAttribute("points", values.map((v, i) => (x0 + i) + "," + (38 - v / peak * 36)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#1a73e8");
    line.setAttribute("stroke-width", "2");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  const last = values.length ? values[values.length - 1] : 0;
  return el("figure", { "data-service": service, "data-chart": key, "data-points": values.length,
    "data-last": String(Math.round(last * 100) / 100), "data-peak": String(Math.round(peak * 100) / 100) },
    el("figcaption", {}, label, el("b", {}, show(last))), svg);
}

function charts(svc) {
  const series = history.get(svc.name) ?? [];
  const refused = series.map((p) => sum(Object.values(p.refused), (n) => n));
  // Which causes refused anyone in the window, most first.
  const causes = {};
  for (const p of series) for (const [c, n] of Object.entries(p.refused)) causes[c] = (causes[c] ?? 0) + n;
  const named = Object.entries(causes).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1])
    .map(([c]) => c).join(", ");
  return el("div", { class: "charts" },
    chart(svc.name, "conn_rate", "connections/s", series.map((p) => p.conn), perSecond),
    chart(svc.name, "bytes_in_rate", "in/s (from clients)", series.map((p) => p.in), bytes),
    chart(svc.name, "bytes_out_rate", "out/s (to clients)", series.map((p) => p.out), bytes),
    chart(svc.name, "active", "active", series.map((p) => p.active), String),
    chart(svc.name, "refused_rate", "refused/s" + (named ? " (" + named + ")" : ""), refused, perSecond));
}

function backendRow(svc, b) {
  const tags = [];
  if (b.backup) tags.push(el("span", { class: "tag" }, "backup"));
  if (b.route) tags.push(el("span", { class: "tag" }, "route " + b.route));
  if (b.source && b.source !== "static") tags.push(el("span", { class: "tag" }, b.source + " " + (b.origin ?? "")));
  if (b.cooldown_remaining_ms) tags.push(el("span", { class: "tag warn" }, "cooldown"));
  if (b.slow_start_remaining_ms) tags.push(el("span", { class: "tag" }, "slow start"));
  return el("tr", { "data-service": svc.name, "data-backend": b.address,
    "data-state": b.reachable ? "up" : "down", "data-admin": b.admin_state,
    "data-source": b.source ?? "static", "data-backup": String(b.backup), "data-route": b.route ?? "" },
    el("td", {}, b.address, ...tags), el("td", { class: b.reachable ? "up" : "down" }, b.reachable ? "up" : "DOWN"),
    el("td", { class: b.admin_state }, b.admin_state), el("td", { class: "num" }, String(b.weight)),
    el("td", { class: "num" }, String(b.active_connections)),
    el("td", { class: "num" }, String(b.connections_served)),
    el("td", { class: "num" }, bytes(b.bytes_in)), el("td", { class: "num" }, bytes(b.bytes_out)),
    el("td", {}, b.last_error ?? ""));
}

// Protection mode and each discovered entry, said only when there is something to say.
function notes(svc) {
  const lines = [];
  const p = svc.protection_mode;
  if (p?.enabled) {
    lines.push(el("div", { "data-protection": "on" }, el("span", { class: "tag bad" }, "protection on"),
      " " + (p.reason ?? "") + (p.since ? " since " + p.since : "")));
  }
  const u = svc.udp;
  if (u) {
    const drops = Object.entries(u.drops).filter(([, n]) => n > 0).map(([why, n]) => n + " " + why);
    lines.push(el("div", { "data-udp": svc.name }, el("span", { class: "tag" }, "udp " + u.engine),
      " datagrams " + u.datagrams_in + " in, " + u.datagrams_out + " out · flows " + u.flows_active +
        " active, " + u.flows_created + " created, " + u.flows_expired + " idled out · dropped " +
        (drops.length ? drops.join(", ") : "none")));
  }
  const bw = svc.bandwidth;
  if (bw) {
    const way = (name, rate, delayed, ms) => rate ? name + " " + bytes(rate) + "/s, " + bytes(delayed) +
      " held back, paused " + (ms / 1000).toFixed(1) + " s" : name + " unlimited";
    lines.push(el("div", { "data-bandwidth": svc.name }, el("span", { class: "tag" }, "bandwidth per " + bw.per),
      " " + way("upload", bw.upload_bytes_per_s, bw.upload_delayed_bytes, bw.upload_paused_ms) + " · " +
        way("download", bw.download_bytes_per_s, bw.download_delayed_bytes, bw.download_paused_ms)));
  }
  const m = svc.mirror;
  if (m) {
    const drops = Object.entries(m.dropped).filter(([, n]) => n > 0).map(([why, n]) => n + " " + why);
    lines.push(el("div", { "data-mirror": svc.name }, el("span", { class: "tag" }, "mirror " + m.percent + "%"),
      " " + m.backend + " · " + m.mirrored + " copied, " + bytes(m.bytes) + " sent · dropped " +
        (drops.length ? drops.join(", ") : "none")));
  }
  for (const c of svc.tls ? svc.tls.certificates : []) {
    const days = Math.floor((Date.parse(c.not_after) - Date.now()) / 86400000);
    lines.push(el("div", { "data-certificate": svc.name, "data-names": c.names.join(",") },
      el("span", { class: days < 14 ? "tag warn" : "tag" }, "tls " + svc.tls.min_version + "+"),
      " " + c.names.join(", ") + " · expires " + c.not_after.slice(0, 10) + " (in " + plural(days, "day") + ")"));
  }
  for (const d of svc.discovery ?? []) {
    const cls = d.state === "ok" ? "tag" : d.state === "failing" ? "tag bad" : "tag warn";
    const said = d.state === "ok" ? plural(d.targets, "address") + (d.resolved_at ? ", as of " + d.resolved_at : "")
      : d.state === "failing" ? (d.last_error ?? "") + "; keeping " + plural(d.targets, "address")
      : d.last_error ?? "asking";
    lines.push(el("div", { "data-discovery": d.kind + " " + d.name, "data-discovery-state": d.state },
      el("span", { class: cls }, d.kind + " " + d.state), " " + d.name + ": " + said));
  }
  return el("div", { class: "notes" }, ...lines);
}

function section(svc, fold) {
  const host = svc.bind_address.includes(":") ? "[" + svc.bind_address + "]" : svc.bind_address;
  const down = svc.backend_total - svc.backend_reachable;
  const head = el("summary", {}, svc.name + " ",
    el("span", { class: "meta" }, host + ":" + svc.port + (svc.protocol === "udp" ? "/udp" : "") + " · " + svc.method + " · " +
      svc.active_connections + " active · " + svc.backend_reachable + "/" + svc.backend_total + " up"),
    ...(down > 0 ? [el("span", { class: "tag bad" }, plural(down, "backend") + " down")] : []),
    ...(svc.protection_mode?.enabled ? [el("span", { class: "tag bad" }, "protection")] : []));
  const columns = ["backend", "health", "admin", "weight", "active", "served", "in", "out", "last error"];
  const table = el("table", {}, el("thead", {}, el("tr", {}, ...columns.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...svc.backends.map((b) => backendRow(svc, b))));
  const open = folded.has(svc.name) ? !folded.get(svc.name) : !fold;
  const details = el("details", { "data-service": svc.name }, head,
    el("div", { class: "body" }, charts(svc), notes(svc), table));
  details.open = open;
  details.addEventListener("toggle", () => folded.set(svc.name, !details.open));
  return details;
}

function matches(svc) {
  if (!filter) return true;
  return svc.name.toLowerCase().includes(filter) ||
    svc.backends.some((b) => b.address.toLowerCase().includes(filter));
}

function draw(s) {
  const planes = s.workers ?? 1;
  $("meta").textContent = "pid " + s.pid + ", up " + s.uptime_s + " s, " + plural(s.services.length, "service") +
    ", " + plural(planes, "data plane") + ", " + s.engine + " engine, config " + s.config_path;
  const c = s.last_change;
  $("change").textContent = c ? "last change: " + c.change + ", by " + c.who + " at " + c.at : "";
  const many = s.services.length > FOLD_ABOVE;
  $("filter").hidden = !many;
  $("services").replaceChildren(...s.services.filter(matches).map((svc) => section(svc, many)));
}

async function poll() {
  try {
    const r = await fetch("status.json", { headers: token ? { authorization: "Bearer " + token } : {} });
    if (r.status === 401) {
      $("login").hidden = false;
      $("meta").textContent = "this bal asks for its admin token";
      $("error").textContent = token ? "that token was refused" : "";
      return;
    }
    const s = await r.json();
    const at = Date.now();
    sample(s, at);
    previous = { s, at };
    draw(s);
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = "bal does not answer: " + e;
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
`;
