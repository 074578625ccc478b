/**
 * `GET /` on the admin endpoint: one self-contained page (no CDN, no build
 * step) that polls `/status.json` every second and shows every service and
 * backend live: health, admin state, connections, rates and bytes. With a
 * token configured, the page asks for it and keeps it for the tab.
 *
 * @module
 */

/** The page. Rows carry data-* attributes so scripts and tests can read them. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bal</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d2329; background: #f6f7f9; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  .meta { color: #5b6670; }
  table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 2px #0002; }
  th, td { text-align: left; padding: .35em .7em; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
  th { background: #eef0f3; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .up { color: #137333; font-weight: 600; } .down { color: #c5221f; font-weight: 600; }
  .draining, .disabled { color: #b06000; }
  #error { color: #c5221f; } form { margin: 1em 0; }
</style>
</head>
<body>
<h1>bal</h1>
<div class="meta" id="meta">loading…</div>
<div id="error"></div>
<form id="login" hidden><label>Admin token <input id="token" type="password" size="40"></label>
<button>Show</button></form>
<div id="services"></div>
<script>
"use strict";
let token = sessionStorage.getItem("bal-token") || "";
let previous = null;
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
};
const bytes = (n) => n >= 1 << 30 ? (n / (1 << 30)).toFixed(1) + " GiB"
  : n >= 1 << 20 ? (n / (1 << 20)).toFixed(1) + " MiB" : (n / 1024).toFixed(1) + " KiB";
const rate = (now, before, seconds) => before === undefined || seconds <= 0
  ? "–" : ((now - before) / seconds).toFixed(1);
document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = document.getElementById("token").value;
  sessionStorage.setItem("bal-token", token);
  document.getElementById("login").hidden = true;
  poll();
});
function render(s, at) {
  const seconds = previous ? (at - previous.at) / 1000 : 0;
  const before = new Map();
  for (const svc of previous?.s.services ?? []) {
    for (const b of svc.backends) before.set(svc.name + "/" + b.address, b);
  }
  document.getElementById("meta").textContent = "pid " + s.pid + ", up " + s.uptime_s + " s, " +
    s.workers + " data plane(s), " + s.engine + " engine, config " + s.config_path;
  const root = document.getElementById("services");
  root.replaceChildren(...s.services.map((svc) => {
    const head = el("tr", {}, ...["backend", "health", "admin", "weight", "active", "conn/s",
      "served", "in", "out", "last error"].map((h) => el("th", {}, h)));
    const rows = svc.backends.map((b) => {
      const old = before.get(svc.name + "/" + b.address);
      const health = b.reachable ? "up" : "DOWN";
      return el("tr", { "data-service": svc.name, "data-backend": b.address,
        "data-state": b.reachable ? "up" : "down", "data-admin": b.admin_state },
        el("td", {}, b.address), el("td", { class: b.reachable ? "up" : "down" }, health),
        el("td", { class: b.admin_state }, b.admin_state), el("td", { class: "num" }, String(b.weight)),
        el("td", { class: "num" }, String(b.active_connections)),
        el("td", { class: "num" }, rate(b.connections_served, old?.connections_served, seconds)),
        el("td", { class: "num" }, String(b.connections_served)),
        el("td", { class: "num" }, bytes(b.bytes_in)), el("td", { class: "num" }, bytes(b.bytes_out)),
        el("td", {}, b.last_error ?? ""));
    });
    return el("section", { "data-service": svc.name },
      el("h2", {}, svc.name + " on " + (svc.bind_address.includes(":") ? "[" + svc.bind_address + "]" : svc.bind_address) +
        ":" + svc.port + " · " + svc.method + " · " + svc.active_connections + " active · " +
        svc.backend_reachable + "/" + svc.backend_total + " up"),
      el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
  }));
  previous = { s, at };
}
async function poll() {
  try {
    const r = await fetch("status.json", { headers: token ? { authorization: "Bearer " + token } : {} });
    if (r.status === 401) {
      document.getElementById("login").hidden = false;
      document.getElementById("error").textContent = token ? "that token was refused" : "";
      return;
    }
    render(await r.json(), Date.now());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "bal does not answer: " + e;
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
`;
