// ferry's dashboard: reads the /v1 API of the server that served it, with the key the user
// pasted (kept in this tab's sessionStorage), draws SVG, and refreshes every 30 seconds.
// No library and no request to any other host. Every drawn figure carries its number in a
// data- attribute, so a test can compare the page with the API.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 30000;
const RANGES = { "6h": 6 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
const state = { key: sessionStorage.getItem("ferry-key"), tenant: null, range: "24h", timer: null, seq: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const ns = ["svg", "g", "rect", "line", "text", "circle", "title", "path"].includes(tag);
  const node = ns ? document.createElementNS(SVG, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === "") continue;
    // Through the CSSOM: the page's Content-Security-Policy refuses inline style attributes.
    if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const fmt = new Intl.NumberFormat("en");
const num = (n) => fmt.format(Math.round(n));
const time = (iso, long) => {
  const d = new Date(iso);
  return long
    ? d.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "UTC" }) + " UTC"
    : d.toLocaleString("en-GB", { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "UTC" });
};

class Unauthorized extends Error {}

async function api(path, params = {}) {
  const qs = new URLSearchParams(params).toString();
  const url = "/v1" + path + (qs ? "?" + qs : "");
  const r = await fetch(url, { headers: { Authorization: "Bearer " + state.key } });
  if (r.status === 401) throw new Unauthorized("the key was refused");
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : "HTTP " + r.status);
  return body;
}

function tenantApi(path, params) {
  return api("/tenants/" + encodeURIComponent(state.tenant) + path, params);
}

// ---- sign in ----

async function signIn(key) {
  state.key = key;
  const me = await api("/whoami");
  sessionStorage.setItem("ferry-key", key);
  const select = $("tenant");
  select.replaceChildren();
  if (me.tenant) {
    state.tenant = me.tenant;
    $("tenant-label").textContent = me.tenant;
    select.hidden = true;
  } else {
    for (const t of me.tenants) select.append(el("option", { value: t }, t));
    state.tenant = me.tenants[0] || null;
    $("tenant-label").textContent = "operator:";
    select.hidden = false;
  }
  $("signin").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  await refresh();
}

function signOut(message) {
  sessionStorage.removeItem("ferry-key");
  state.key = null;
  clearTimeout(state.timer);
  $("board").hidden = true;
  $("signout").hidden = true;
  $("tenant").hidden = true;
  $("tenant-label").textContent = "";
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("key").value = "";
  $("key").focus();
}

// ---- charts ----

function eventsChart(series, anomalies) {
  const W = 960, H = 220, L = 56, B = 26, T = 10;
  const pts = series.points;
  // Four gridlines at a round step (1, 2 or 5 times a power of ten).
  const top = Math.max(1, ...pts.map((p) => p.value));
  const unit = 10 ** Math.floor(Math.log10(top / 4));
  const tick = [1, 2, 5, 10].map((m) => m * unit).find((t) => t * 4 >= top) || unit * 10;
  const max = Math.max(1, tick * 4);
  const step = (W - L) / Math.max(1, pts.length);
  const total = pts.reduce((s, p) => s + p.value, 0);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, "data-chart": "events", "data-total": total,
    "data-from": series.from, "data-to": series.to, "data-grain": series.grain, role: "img",
    "aria-label": `events per ${series.grain}: ${num(total)} in all` });
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - B - T) * (1 - i / 4);
    svg.append(el("line", { x1: L, x2: W, y1: y, y2: y, class: "grid" }));
    svg.append(el("text", { x: L - 6, y: y + 4, class: "axis", "text-anchor": "end" }, num((max * i) / 4)));
  }
  const bars = el("g", { class: "bars" });
  pts.forEach((p, i) => {
    const h = ((H - B - T) * p.value) / max;
    bars.append(el("rect", { x: L + i * step, y: H - B - h, width: Math.max(1, step - 0.5), height: Math.max(0, h),
      "data-bucket": p.bucket, "data-value": p.value }, el("title", {}, `${time(p.bucket, true)}: ${num(p.value)} events`)));
  });
  svg.append(bars);
  const labels = [[0, "start"], [Math.floor(pts.length / 2), "middle"], [pts.length - 1, "end"]];
  for (const [i, anchor] of labels.filter(([i], k) => pts[i] && (k === 0 || i > 0))) {
    const x = anchor === "end" ? L + (i + 1) * step : L + i * step;
    svg.append(el("text", { x, y: H - 8, class: "axis", "text-anchor": anchor }, time(pts[i].bucket)));
  }
  const start = Date.parse(series.from);
  const end = Date.parse(series.to);
  for (const a of anomalies) {
    const t = Date.parse(a.bucket);
    if (!a.metric.startsWith("events") || t < start || t >= end) continue;
    const x = L + ((t - start) / (end - start)) * (W - L);
    svg.append(el("circle", { cx: x, cy: T + 6, r: 5, class: "anomaly", "data-anomaly": a.kind, "data-bucket": a.bucket },
      el("title", {}, `${a.kind} in ${a.metric} at ${time(a.bucket, true)}: ${num(a.value)} against a baseline of ${num(a.baseline)} (score ${a.score.toFixed(1)}, ${a.method})`)));
  }
  return svg;
}

function bars(rows, label, value, attrs) {
  const max = Math.max(1, ...rows.map(value));
  const list = el("div", { class: "hbars" });
  if (rows.length === 0) return el("p", { class: "empty" }, "nothing in this range");
  for (const r of rows) {
    list.append(el("div", { class: "hbar", ...attrs(r) },
      el("span", { class: "label", title: label(r) }, label(r)),
      el("span", { class: "track" }, el("span", { class: "fill", style: `width:${(100 * value(r)) / max}%` })),
      el("span", { class: "value" }, num(value(r)))));
  }
  return list;
}

function funnel(products) {
  if (products.length === 0) return el("p", { class: "empty" }, "no product activity in this range");
  const max = Math.max(1, ...products.map((p) => p.views));
  const table = el("table", { class: "funnel" },
    el("thead", {}, el("tr", {}, el("th", {}, "product"), el("th", {}, ""), el("th", {}, "views"),
      el("th", {}, "cart"), el("th", {}, "bought"), el("th", {}, "conversion"))));
  const body = el("tbody");
  for (const p of products) {
    const w = (n) => `width:${(100 * n) / max}%`;
    body.append(el("tr", { "data-product": p.product, "data-views": p.views, "data-cart": p.cart_adds, "data-purchases": p.purchases },
      el("td", { class: "label" }, p.product),
      el("td", { class: "stack" }, el("span", { class: "v", style: w(p.views) }), el("span", { class: "c", style: w(p.cart_adds) }),
        el("span", { class: "p", style: w(p.purchases) })),
      el("td", {}, num(p.views)), el("td", {}, num(p.cart_adds)), el("td", {}, num(p.purchases)),
      el("td", {}, p.views ? ((100 * p.purchases) / p.views).toFixed(1) + "%" : "–")));
  }
  table.append(body);
  return table;
}

function money(minor, currency) {
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency }).format(minor / 100);
  } catch (_) {
    return `${(minor / 100).toFixed(2)} ${currency}`;
  }
}

function sourcesGrid(days) {
  if (days.length === 0) return el("p", { class: "empty" }, "no events in this range");
  const dayKeys = [...new Set(days.map((d) => d.day))].sort();
  const sources = [...new Set(days.map((d) => d.source))].sort();
  const count = new Map(days.map((d) => [d.source + "|" + d.day, d.events]));
  const max = Math.max(1, ...days.map((d) => d.events));
  const table = el("table", { class: "grid-table" });
  table.append(el("thead", {}, el("tr", {}, el("th", {}, "source"), ...dayKeys.map((d) => el("th", {}, d.slice(5, 10))))));
  const body = el("tbody");
  for (const s of sources) {
    const row = el("tr", {}, el("td", { class: "label" }, s));
    let seen = false;
    for (const d of dayKeys) {
      const n = count.get(s + "|" + d) || 0;
      const silent = n === 0 && seen;
      seen = seen || n > 0;
      const alpha = n ? 0.15 + (0.85 * n) / max : 0;
      row.append(el("td", { class: silent ? "cell silent" : "cell", "data-source": s, "data-day": d, "data-events": n,
        style: n ? `background:rgba(37,99,235,${alpha.toFixed(2)})` : "", title: `${s}, ${d.slice(0, 10)}: ${num(n)} events` },
        n ? num(n) : silent ? "silent" : ""));
    }
    body.append(row);
  }
  table.append(body);
  return table;
}

function endpointsTable(endpoints) {
  if (endpoints.length === 0) return el("p", { class: "empty" }, "no partner endpoints (ferry endpoint add)");
  const table = el("table", { class: "endpoints" },
    el("thead", {}, el("tr", {}, ...["endpoint", "state", "delivered", "pending", "failed", "last error"].map((h) => el("th", {}, h)))));
  const body = el("tbody");
  for (const e of endpoints) {
    const state = e.status !== "active" ? "disabled" : e.failing_since ? "failing" : "healthy";
    body.append(el("tr", { "data-endpoint": e.endpoint_id, "data-state": state },
      el("td", { class: "label", title: e.event_types.join(", ") }, `#${e.endpoint_id} ${e.url}`),
      el("td", {}, el("span", { class: "badge " + state, title: e.failing_since ? "failing since " + time(e.failing_since, true) : e.disabled_reason || "" }, state)),
      el("td", {}, num(e.delivered)), el("td", {}, num(e.pending)), el("td", {}, num(e.failed)),
      el("td", { class: "error-text" }, e.last_error || "")));
  }
  table.append(body);
  return table;
}

// ---- refresh ----

async function refresh() {
  clearTimeout(state.timer);
  if (!state.key || !state.tenant) return;
  // A newer refresh (a range or tenant switch) wins over one still in flight.
  const seq = ++state.seq;
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[state.range]);
  const range = { from: from.toISOString(), to: to.toISOString() };
  const days = { from: new Date(Math.max(from.getTime(), to.getTime() - 14 * 86400e3)).toISOString().slice(0, 10), to: range.to };
  $("status").textContent = "updating…";
  try {
    const [events, anomalies, visitors, pages, products, revenue, sources, endpoints] = await Promise.all([
      tenantApi("/events", range),
      tenantApi("/anomalies", { since: range.from, limit: 100 }),
      tenantApi("/visitors", range),
      tenantApi("/pages/top", { ...range, limit: 10 }),
      tenantApi("/products/top", { ...range, limit: 10 }),
      tenantApi("/revenue", range),
      tenantApi("/sources", days),
      tenantApi("/endpoints"),
    ]);
    if (seq !== state.seq) return;
    $("events").replaceChildren(eventsChart(events, anomalies.anomalies));
    $("events-grain").textContent = `per ${events.grain}`;
    $("visitors").replaceChildren(
      el("div", { class: "figure", "data-users": visitors.visitors.users }, el("b", {}, num(visitors.visitors.users)), " users"),
      el("div", { class: "figure", "data-sessions": visitors.visitors.sessions }, el("b", {}, num(visitors.visitors.sessions)), " sessions"));
    $("revenue").replaceChildren(...(revenue.currencies.length ? revenue.currencies.map((c) =>
      el("div", { class: "figure", "data-currency": c.currency, "data-net": c.net }, el("b", {}, money(c.net, c.currency)),
        ` from ${num(c.purchases)} purchases` + (c.refunds ? `, ${num(c.refunds)} refunds` : ""))) : [el("p", { class: "empty" }, "no purchases in this range")]));
    $("pages").replaceChildren(bars(pages.pages, (p) => p.page, (p) => p.views, (p) => ({ "data-page": p.page, "data-views": p.views })));
    $("funnel").replaceChildren(funnel(products.products));
    $("sources").replaceChildren(sourcesGrid(sources.days));
    const findings = anomalies.anomalies.filter((a) => a.kind.startsWith("source_"));
    $("findings").replaceChildren(...findings.map((a) => el("li", { "data-finding": a.kind },
      `${a.kind === "source_silent" ? "silent" : "dropped"}: ${a.metric.replace(/^source:/, "")} at ${time(a.bucket, true)} (${num(a.value)} against ${num(a.baseline)})`)));
    $("endpoints").replaceChildren(endpointsTable(endpoints.endpoints));
    document.body.dataset.ready = String(Date.now());
    $("status").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    $("status").classList.remove("error");
  } catch (e) {
    if (seq !== state.seq) return;
    if (e instanceof Unauthorized) return signOut("The key was refused; it may have been revoked.");
    $("status").textContent = "update failed: " + e.message + " (retrying)";
    $("status").classList.add("error");
  }
  state.timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn($("key").value.trim()).catch((e) => signOut(e instanceof Unauthorized ? "That key was refused." : e.message));
  });
  $("signout").addEventListener("click", () => signOut());
  $("tenant").addEventListener("change", () => { state.tenant = $("tenant").value; refresh(); });
  for (const b of document.querySelectorAll("#ranges button")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
      refresh();
    });
  }
  if (state.key) signIn(state.key).catch(() => signOut());
  else signOut();
});
