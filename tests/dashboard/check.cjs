// Drives the dashboard in a real Chromium (Debian's, through playwright-core) and checks that
// what it draws holds the numbers the API returns for the same range.
//
//   node tests/dashboard/check.cjs <base url> <api key> <screenshot.png>
//
// PLAYWRIGHT_CORE: where playwright-core is installed (scripts/setup.sh puts it under
// $FERRY_TOOLS/node); CHROMIUM: the browser (default /usr/bin/chromium). Exits 1 with what
// differed; prints one line per check that held.
"use strict";

const [base, key, screenshot] = process.argv.slice(2);
const { chromium } = require(process.env.PLAYWRIGHT_CORE || "playwright-core");

const problems = [];
const check = (ok, what) => {
  if (ok) console.log("ok   " + what);
  else { console.log("FAIL " + what); problems.push(what); }
};

async function api(path, params) {
  const url = base + "/v1" + path + (params ? "?" + new URLSearchParams(params) : "");
  const r = await fetch(url, { headers: { Authorization: "Bearer " + key } });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
  const foreign = [];
  const errors = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) foreign.push(r.url()); });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const codings = {}; // path -> Content-Encoding of the first answer the browser received
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (!(u.pathname in codings)) codings[u.pathname] = r.headers()["content-encoding"] || "identity";
  });

  await page.goto(base + "/");
  await page.fill("#key", "fy_live_" + "a".repeat(40));
  await page.click("#signin button[type=submit]");
  await page.waitForFunction(() => document.getElementById("signin-error").textContent !== "");
  check(await page.isVisible("#signin"), "a wrong key keeps the sign-in form, with a message");
  errors.length = 0; // the browser logs the refused request (401) as an error: that one was meant

  await page.fill("#key", key);
  await page.click("#signin button[type=submit]");
  await page.waitForSelector("body[data-ready]", { timeout: 15000 });

  const me = await api("/whoami");
  const tenant = me.tenant || me.tenants[0];
  check((await page.textContent("#tenant-label")).includes(me.tenant || "operator"), `the header names ${tenant}`);

  // The events chart: the same buckets and values as the API for the page's own range.
  const chart = await page.$eval("svg[data-chart=events]", (svg) => ({
    from: svg.dataset.from, to: svg.dataset.to, grain: svg.dataset.grain, total: Number(svg.dataset.total),
    bars: [...svg.querySelectorAll("rect[data-bucket]")].map((r) => [r.dataset.bucket, Number(r.dataset.value)]),
    anomalies: svg.querySelectorAll("circle.anomaly").length,
  }));
  const range = { from: chart.from, to: chart.to };
  const events = await api(`/tenants/${tenant}/events`, { ...range, grain: chart.grain });
  const want = events.points.map((p) => [p.bucket, p.value]);
  check(JSON.stringify(chart.bars) === JSON.stringify(want), `events chart: ${chart.bars.length} buckets of ${chart.grain} equal the API's`);
  const total = events.points.reduce((s, p) => s + p.value, 0);
  check(chart.total === total && total > 0, `events chart total ${chart.total} = API ${total}`);

  const visitors = await api(`/tenants/${tenant}/visitors`, range);
  const users = Number(await page.getAttribute("[data-users]", "data-users"));
  check(users === visitors.visitors.users, `visitors: ${users} users = API ${visitors.visitors.users}`);

  const pages = await api(`/tenants/${tenant}/pages/top`, { ...range, limit: 10 });
  const drawnPages = await page.$$eval("[data-page]", (els) => els.map((e) => [e.dataset.page, Number(e.dataset.views)]));
  check(JSON.stringify(drawnPages) === JSON.stringify(pages.pages.map((p) => [p.page, p.views])) && drawnPages.length > 0,
    `top pages: ${drawnPages.length} bars equal the API's`);

  const products = await api(`/tenants/${tenant}/products/top`, { ...range, limit: 10 });
  const drawnProducts = await page.$$eval("tr[data-product]", (els) =>
    els.map((e) => [e.dataset.product, Number(e.dataset.views), Number(e.dataset.cart), Number(e.dataset.purchases)]));
  check(JSON.stringify(drawnProducts) === JSON.stringify(products.products.map((p) => [p.product, p.views, p.cart_adds, p.purchases])),
    `product funnel: ${drawnProducts.length} rows equal the API's`);

  const revenue = await api(`/tenants/${tenant}/revenue`, range);
  const drawnRevenue = await page.$$eval("[data-currency]", (els) => els.map((e) => [e.dataset.currency, Number(e.dataset.net)]));
  check(JSON.stringify(drawnRevenue) === JSON.stringify(revenue.currencies.map((c) => [c.currency, c.net])),
    `revenue: ${drawnRevenue.map((r) => r.join(" ")).join(", ") || "none"} as the API`);

  const cells = await page.$$eval("td[data-source]", (els) => els.map((e) => Number(e.dataset.events)));
  check(cells.reduce((s, n) => s + n, 0) > 0, `sources per day: ${cells.length} cells drawn`);
  const endpoints = await api(`/tenants/${tenant}/endpoints`);
  const rows = await page.$$eval("tr[data-endpoint]", (els) => els.map((e) => [Number(e.dataset.endpoint), e.dataset.state]));
  check(rows.length === endpoints.endpoints.length, `endpoints: ${rows.length} rows for ${endpoints.endpoints.length} endpoints`);
  check(rows.some(([, s]) => s === "failing") === endpoints.endpoints.some((e) => e.failing_since && e.status === "active"),
    "a failing endpoint is shown failing");

  // It refreshes on its own: a range switch redraws at once.
  const before = await page.getAttribute("body", "data-ready");
  await page.click("#ranges button[data-range='7d']");
  await page.waitForFunction((b) => document.body.dataset.ready !== b, before, { timeout: 15000 });
  const grain7d = await page.getAttribute("svg[data-chart=events]", "data-grain");
  check(grain7d === "1h", `7 days read at ${grain7d}`);
  const after7d = await page.getAttribute("body", "data-ready");
  await page.click("#ranges button[data-range='24h']");
  await page.waitForFunction((b) => document.body.dataset.ready !== b, after7d, { timeout: 15000 });
  const grain24h = await page.getAttribute("svg[data-chart=events]", "data-grain");
  check(grain24h === "5m", `back to 24 hours at ${grain24h}`);

  // The page's script came compressed and the browser decoded it (the page ran, above).
  const js = codings["/dashboard.js"];
  check(js === "br" || js === "gzip", `the browser received the script compressed (${js})`);
  const series = codings["/v1/tenants/" + tenant + "/events"];
  check(series === "br" || series === "gzip", `and a day of 5-minute points (${series})`);
  check(foreign.length === 0, `no request left ${base} (${foreign.join(", ") || "none"})`);
  check(errors.length === 0, `no script errors (${errors.join("; ") || "none"})`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot: " + screenshot);
  await browser.close();
}

main().then(
  () => process.exit(problems.length ? 1 : 0),
  (e) => { console.log("FAIL " + (e.stack || e)); process.exit(1); },
);
