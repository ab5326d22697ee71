// The web console end to end in headless Chromium: starts `hopscope-demo`
// (cascading-timeout) and a token-protected `hopscope serve`, waits for the
// demo's findings through the API, then loads every console page, checks
// what a user would see, and writes a screenshot of each page. The protected
// daemon also gets one poorly instrumented span over OTLP/HTTP, so its
// findings page has no findings and says which detectors are blind. A third
// daemon gets a trace of over 100,000 spans (bigtrace.mjs) over OTLP/HTTP;
// the test measures how long its trace page takes to show the critical path
// and prints it.
//
//   HOPSCOPE_BIN      the hopscope binary (default: target/debug/hopscope)
//   HOPSCOPE_DEMO_BIN the hopscope-demo binary (default: hopscope-demo beside
//                     HOPSCOPE_BIN)
//   CHROMIUM          the browser (default: chromium on PATH)
//   SCREENSHOT_DIR    where screenshots go (default: target/console-screenshots)
//
// Exits non-zero on the first failed check, naming it.
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { bigTrace } from "./bigtrace.mjs";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = resolve(root, process.env.HOPSCOPE_BIN ?? "target/debug/hopscope");
const demoBin = resolve(root, process.env.HOPSCOPE_DEMO_BIN ?? resolve(bin, "../hopscope-demo"));
const shots = resolve(root, process.env.SCREENSHOT_DIR ?? "target/console-screenshots");
const browserPath = process.env.CHROMIUM ?? execFileSync("sh", ["-c", "command -v chromium"]).toString().trim();
const TOKEN = "console-test-token";
mkdirSync(shots, { recursive: true });

const children = [];
process.on("exit", () => children.forEach((c) => c.kill("SIGINT")));

/** Starts `program` (hopscope unless named) with `args`; resolves with the base URLs of the addresses `pattern` captures. */
function launch(args, pattern, program = bin) {
  return new Promise((ok, fail) => {
    const child = spawn(program, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.push(child);
    let seen = "";
    const timer = setTimeout(() => fail(new Error(`${program} ${args[0]} printed no API address:\n${seen}`)), 60000);
    const look = (chunk) => {
      seen += chunk;
      const m = pattern.exec(seen);
      if (m) {
        clearTimeout(timer);
        ok(m.slice(1).map((addr) => `http://${addr}`));
      }
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.on("exit", (code) => fail(new Error(`hopscope ${args[0]} exited (${code}):\n${seen}`)));
  });
}

async function waitFor(what, check, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const checks = [];
function pass(page, what) {
  checks.push(`${page}: ${what}`);
  console.log(`ok  ${page}: ${what}`);
}

/** A page that fails the test on any console error, page error or failed request. */
async function open(context, name) {
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`));
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on("response", (r) => r.status() >= 400 && !page.allow401 && problems.push(`HTTP ${r.status()}: ${r.url()}`));
  page.fitsWidth = async () => {
    const [content, width] = await page.evaluate(() => [document.documentElement.scrollWidth, innerWidth]);
    assert.ok(content <= width, `${name}: ${content} px wide on a ${width} px screen`);
    pass(name, `fits a ${width} px wide screen without scrolling sideways`);
  };
  page.noProblems = () => {
    assert.deepEqual(problems, [], `${name}: the page had errors`);
    pass(name, "no console errors, page errors or failed requests");
  };
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

const demoUrl = launch(["--scenario", "cascading-timeout", "--keep-running"], /hopscope API on http:\/\/(\S+?);/, demoBin);
const tokenUrl = launch(
  ["serve", "--api-addr", "127.0.0.1:0", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
    "--jaeger-addr", "127.0.0.1:0",
    "--no-wal", "--api-token", TOKEN, "--trace-idle", "200ms", "--log", "info"],
  /otlp_http_addr=(\S+) api_addr=(\S+)/);
// The big trace's daemon: a trace completes 2 s after its last span, so the
// export requests of one trace always meet.
const bigUrl = launch(
  ["serve", "--api-addr", "127.0.0.1:0", "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr", "127.0.0.1:0",
    "--jaeger-addr", "127.0.0.1:0", "--no-wal", "--trace-idle", "2s", "--log", "info"],
  /otlp_http_addr=(\S+) api_addr=(\S+)/);
const [base] = await demoUrl;
const cascade = await waitFor("the demo's cascading_timeout finding", async () => {
  const r = await fetch(`${base}/api/v1/findings?kind=cascading_timeout`);
  return (await r.json()).findings[0];
});
await waitFor("the demo's timeout inversions", async () => {
  const r = await fetch(`${base}/api/v1/findings?kind=timeout_inversion`);
  return (await r.json()).findings.length > 0;
});

const browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
// A laptop screen.
const context = await browser.newContext({ viewport: { width: 1366, height: 768 }, deviceScaleFactor: 1 });

// --- findings ---------------------------------------------------------------
{
  const page = await open(context, "findings");
  await page.goto(`${base}/`);
  const first = page.locator("article.finding").first();
  await first.waitFor();
  assert.equal(await first.getAttribute("data-kind"), "cascading_timeout", "worst first: the critical cascade leads");
  const text = await first.innerText();
  assert.match(text, /inventory GET \/stock\/\{sku\}/);
  assert.match(text, /Remedy:/);
  assert.equal(await first.locator(".kind").innerText(), "Cascading timeout", "the kind by its label");
  assert.match(await first.locator(".kind").getAttribute("title"), /time out/, "its one line on hover");
  pass("findings", "cascading_timeout naming inventory GET /stock/{sku} is first, by its label, with its remedy");
  assert.ok(await first.locator("dl.evidence dt").first().isVisible(), "evidence shown as a list, open");
  assert.ok(await first.locator("ol.chain li.timed-out").count() > 0, "the chain marks timed-out hops");
  const links = first.locator(".traces a");
  assert.ok(await links.count() > 0, "example trace links");
  pass("findings", "evidence as a definition list, the chain with timed-out hops, example trace links");
  const severities = await page.locator("article.finding .badge").allInnerTexts();
  const rank = { critical: 0, warning: 1, info: 2 };
  assert.deepEqual([...severities].sort((a, b) => rank[a] - rank[b]), severities, "ordered by severity");
  pass("findings", `${severities.length} findings ordered worst first`);
  // Auto-refresh: the list is fetched again within 5 s, and not once paused.
  const fetched = () => page.waitForResponse((r) => r.url().includes("/api/v1/findings"), { timeout: 8000 });
  await fetched();
  pass("findings", "auto-refresh fetched the findings again");
  // Unchecking applies the filters once more, then no timer runs.
  const applied = fetched();
  await page.locator("input[name=refresh]").uncheck();
  await applied;
  const paused = await fetched().then(() => false, () => true);
  assert.ok(paused, "no refresh while paused");
  pass("findings", "pausing stops the refresh");
  // Closing a finding's evidence survives the refresh.
  await first.locator("details summary").click();
  await page.locator("input[name=refresh]").check();
  await fetched();
  assert.ok(!(await page.locator("article.finding").first().locator("dl.evidence").isVisible()), "closed evidence stays closed");
  await page.locator("article.finding").first().locator("details summary").click();
  pass("findings", "evidence open by default; a reader's closing it survives the refresh");
  const labels = await page.locator("select[name=kind] option").allInnerTexts();
  for (const l of ["N+1 calls", "Serial calls", "Redundant call", "Chatty edge", "Excessive fan-out"])
    assert.ok(labels.includes(l), `the kind filter offers ${l}`);
  pass("findings", "the kind filter offers every kind by its label, the request patterns too");
  // Filter by kind: only timeout inversions, and the URL keeps the filter.
  await page.locator("select[name=kind]").selectOption("timeout_inversion");
  await page.waitForFunction(() => {
    const cards = [...document.querySelectorAll("article.finding")];
    return cards.length > 0 && cards.every((c) => c.dataset.kind === "timeout_inversion");
  });
  assert.match(page.url(), /kind=timeout_inversion/);
  pass("findings", "the kind filter shows only timeout_inversion and is kept in the URL");
  await page.locator("select[name=kind]").selectOption("");
  await page.locator("input[name=service]").fill("no-such-service");
  await page.locator("input[name=service]").press("Enter");
  await page.getByText("No findings match.").waitFor();
  pass("findings", "the service filter with an unknown service shows none");
  await page.locator("input[name=service]").fill("");
  await page.locator("input[name=service]").press("Enter");
  await page.locator("article.finding").first().waitFor();
  await shot(page, "findings");
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

// --- trace ------------------------------------------------------------------
const traceId = cascade.trace_ids[0];
{
  const page = await open(context, "trace");
  await page.goto(`${base}/`);
  await page.locator('article.finding[data-kind="cascading_timeout"] .traces a').first().click();
  await page.waitForURL(/\/ui\/trace\?id=/);
  const rows = page.locator("table.waterfall tbody tr");
  await rows.first().waitFor();
  const trace = await (await fetch(`${base}/api/v1/traces/${new URL(page.url()).searchParams.get("id")}`)).json();
  assert.equal(await rows.count(), trace.span_count, "one row per span");
  pass("trace", `the waterfall has one row per span (${trace.span_count})`);
  const segs = page.locator(".track .seg.critical");
  assert.ok(await segs.count() >= 1, "critical path segments drawn");
  const color = await segs.first().evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(color, "rgb(194, 65, 12)", "critical segments in the highlight colour");
  assert.equal(await page.locator(".track .seg").count(), trace.critical_path.length, "one bar per critical-path segment");
  pass("trace", `the critical path is highlighted: ${trace.critical_path.length} segments in the critical colour`);
  const inventory = page.locator("tr.on-path", { hasText: "GET /stock/{sku}" }).filter({ hasText: "inventory" }).first();
  await inventory.waitFor();
  assert.match(await inventory.innerText(), /Cascading timeout/, "the finding is marked on the inventory span");
  const expectedCritical = trace.spans.find((s) => s.service === "inventory").critical_ms;
  assert.ok(expectedCritical > 0);
  pass("trace", "inventory GET /stock/{sku} is on the critical path and marked with the cascading timeout");
  // The spans the cascade is made of (the trace's marks) are tinted, with a
  // badge of the kind that leads to the finding's card.
  const marked = new Set(trace.marks.flatMap((m) => m.span_ids));
  assert.ok(marked.size > 0, "the cascade marks its spans");
  const markedRows = await page.locator("table.waterfall tr.marked").evaluateAll((els) => els.map((e) => e.dataset.spanId));
  assert.deepEqual(new Set(markedRows), marked, "exactly the marked spans are tinted");
  const mark = trace.marks.find((m) => m.kind === "cascading_timeout");
  const badge = page.locator(`tr[data-span-id="${mark.span_ids[0]}"] a.tag.mark[data-kind="cascading_timeout"]`);
  assert.equal(await badge.innerText(), "Cascading timeout");
  const tint = await page.locator("table.waterfall tr.marked td").first().evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(tint, "rgb(253, 242, 248)", "marked rows in the mark colour");
  const header = await page.locator("table.waterfall thead").innerText();
  assert.match(header, /Self/);
  assert.match(header, /Critical/);
  pass("trace", "per-span self and critical time columns");
  const warnings = await page.locator("#warnings").innerText();
  for (const w of trace.warnings) assert.ok(warnings.includes(w.code), `warning ${w.code} shown`);
  assert.ok(trace.warnings.length > 0);
  pass("trace", `the trace's ${trace.warnings.length} warnings are listed (${[...new Set(trace.warnings.map((w) => w.code))].join(", ")})`);
  const kinds = await page.locator("#trace-findings article.finding").evaluateAll((els) => els.map((e) => e.dataset.kind));
  assert.ok(kinds.includes("cascading_timeout"));
  pass("trace", "the trace's findings are shown, cascading_timeout among them");
  await shot(page, "trace");
  // The first screenful, as the README shows it (docs/console-trace.png).
  await page.screenshot({ path: `${shots}/trace-screen.png` });
  await badge.click();
  assert.equal(new URL(page.url()).hash, `#finding-${mark.finding_id}`);
  assert.ok(await page.locator(`#finding-${mark.finding_id}`).isVisible(), "the badge leads to the finding");
  pass("trace", `the ${marked.size} spans the cascade is made of are tinted, with a badge leading to the finding`);
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

// --- entry point --------------------------------------------------------------
{
  const page = await open(context, "entry");
  await page.goto(`${base}/ui/entry`);
  const bars = page.locator("svg.chart rect");
  await bars.first().waitFor();
  const titles = await page.locator("svg.chart rect title").allTextContents();
  assert.ok(titles.some((t) => t.startsWith("inventory GET /stock/{sku}")), "inventory in the stacked chart");
  pass("entry", `the stacked chart draws ${titles.length} hop bars, inventory GET /stock/{sku} among them`);
  assert.equal(await page.locator("select[name=entry]").inputValue(), "gateway:GET /checkout");
  const firstHop = await page.locator("table.hops tbody tr").first().innerText();
  assert.match(firstHop, /inventory GET \/stock\/\{sku\}/, "the largest share first");
  assert.ok(await page.locator('table.hops tbody tr[data-kind="wire"]').count() > 0, "wire hops listed");
  const head = await page.locator("table.hops thead").innerText();
  for (const col of ["Share", "Critical p50", "p95", "p99", "Wire time"]) assert.ok(head.includes(col), col);
  pass("entry", "the hop table leads with inventory and has share, critical p50/p95/p99 and wire time");
  await page.locator("select[name=step]").selectOption("5m");
  await page.waitForResponse((r) => r.url().includes("step=5m") && r.ok());
  assert.match(page.url(), /step=5m/);
  pass("entry", "changing the step refetches the series");
  await shot(page, "entry");
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

// --- timeout budgets -----------------------------------------------------------
{
  const page = await open(context, "timeouts");
  await page.goto(`${base}/ui/timeouts`);
  const block = page.locator('section.budget[data-entry="gateway:GET /checkout"]');
  await block.waitFor();
  const budgets = await (await fetch(`${base}/api/v1/timeouts`)).json();
  const entry = budgets.entries.find((e) => e.entry.service === "gateway" && e.entry.operation === "GET /checkout");
  const inverted = entry.edges
    .filter((x) => x.violations.some((v) => v.kind === "timeout_inversion"))
    .map((x) => `${x.caller} → ${x.callee}`);
  assert.ok(inverted.length >= 1, "the demo's budget map has an inversion");
  const inversions = block.locator("tr.inversion");
  const shown = (await inversions.locator("td.edge").allInnerTexts()).map((t) => t.split(/\s+/).slice(0, 3).join(" "));
  assert.deepEqual(shown.sort(), inverted.sort(), "exactly the inverted edges are highlighted");
  assert.equal(await block.locator("tbody tr").count(), entry.edges.length, "one row per edge");
  const bg = await inversions.first().locator("td").first().evaluate((el) => getComputedStyle(el).backgroundColor);
  assert.equal(bg, "rgb(253, 236, 234)", "inversion rows highlighted");
  pass("timeouts", `one row per edge; exactly the inverted edges highlighted (${inverted.join(", ")})`);
  assert.ok(await block.locator(".meter .fill.over").count() >= 1, "a timeout longer than the time left drawn over the limit");
  pass("timeouts", "the timeout-vs-time-left meter shows the overrun");
  await shot(page, "timeouts");
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

// --- coverage --------------------------------------------------------------------
{
  const page = await open(context, "coverage");
  await page.goto(`${base}/`);
  await page.locator('#coverage-note a[href="/ui/coverage"]').click();
  const answer = await page.waitForResponse((r) => r.url().includes("/api/v1/coverage") && r.ok());
  const coverage = await answer.json();
  assert.match(page.url(), /\/ui\/coverage$/);
  pass("coverage", "the findings page links the coverage page");
  const rows = page.locator("table.coverage tbody tr");
  await rows.first().waitFor();
  assert.deepEqual(await rows.evaluateAll((rs) => rs.map((r) => r.dataset.service)), coverage.services.map((s) => s.service));
  assert.deepEqual(coverage.services.map((s) => s.service), ["frontend", "gateway", "inventory", "orders"]);
  for (const s of coverage.services) {
    const cells = page.locator(`tr[data-service="${s.service}"] td.num`);
    const shown = (await cells.allInnerTexts()).map((t) => Number(t.split(" ")[0]));
    const fields = await cells.evaluateAll((cs) => cs.map((c) => c.dataset.field));
    assert.deepEqual(shown, fields.map((f) => s[f]), `${s.service}: the API's counts`);
  }
  pass("coverage", `one row per service of the demo (${coverage.services.length}) with the API's counts`);
  // The demo's services record everything the detectors read.
  assert.equal(await page.locator("table.coverage .badge").count(), 0);
  await page.getByText("Nothing: every service's spans carry what the detectors read.").waitFor();
  pass("coverage", "the demo's services leave no detector blind, and the page says so");
  await shot(page, "coverage");
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

// --- without JavaScript ----------------------------------------------------------
{
  const nojs = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1440, height: 900 } });
  const page = await nojs.newPage();
  await page.goto(`${base}/`);
  await page.locator('noscript a[href="/ui/plain/findings"], a[href="/ui/plain/findings"]').first().click();
  await page.waitForURL(/\/ui\/plain\/findings/);
  const table = await page.locator("table").innerText();
  assert.match(table, /cascading_timeout/);
  assert.match(table, /inventory GET \/stock\/\{sku\}/);
  pass("plain findings (no JavaScript)", "the <noscript> link leads to a server-rendered table with the cascade");
  await shot(page, "plain-findings");
  await nojs.close();
}

// --- API token -------------------------------------------------------------------
{
  const [protectedOtlp, protectedBase] = await tokenUrl;
  const page = await open(context, "token");
  page.allow401 = true;
  const sent = [];
  page.on("request", (r) => r.url().includes("/api/v1/") && sent.push(r.headers().authorization ?? null));
  await page.goto(`${protectedBase}/`);
  await page.locator("#token-form").waitFor({ state: "visible" });
  pass("token", "the page and its assets load without the token, and the token form appears on 401");
  await page.locator("#token-input").fill("wrong");
  await page.locator("#token-form button").click();
  await page.getByText("The token was refused").waitFor();
  pass("token", "a wrong token is refused and asked for again");
  await page.locator("#token-input").fill(TOKEN);
  await page.locator("#token-form button").click();
  await page.getByText("No findings match.").waitFor();
  assert.equal(await page.locator("#blind-notice").count(), 0, "nothing analyzed, nothing blind");
  assert.ok(sent.includes(`Bearer ${TOKEN}`), "the bearer token is sent");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("hopscope.api_token")), TOKEN);
  await page.goto(`${protectedBase}/ui/timeouts`);
  await page.getByText("No traces in the call window.").waitFor();
  assert.ok(await page.locator("#token-form").isHidden(), "the token is kept for the session");
  pass("token", "the right token is sent as Authorization: Bearer and kept in sessionStorage across pages");

  // One SERVER span without an instance id or a status code: no findings,
  // and the findings page says that is no evidence of health.
  // The specification's example, moved to now: the daemon refuses spans
  // that ended longer ago than its aggregates keep.
  const startNs = BigInt(Date.now() - 60000) * 1000000n;
  const example = readFileSync(resolve(root, "tests/fixtures/otlp-json/trace.json"), "utf8")
    .replace("1544712660000000000", startNs.toString())
    .replace("1544712661000000000", (startNs + 1000000000n).toString());
  const exported = await fetch(`${protectedOtlp}/v1/traces`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: example,
  });
  assert.equal(exported.status, 200, "the OTLP/HTTP export is accepted");
  const partial = (await exported.json()).partialSuccess;
  assert.ok(!partial?.rejectedSpans, `no span refused: ${JSON.stringify(partial)}`);
  await waitFor("the exported span's coverage", async () => {
    const r = await fetch(`${protectedBase}/api/v1/coverage`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    return (await r.json()).services.length > 0;
  });
  await page.goto(`${protectedBase}/`);
  const notice = page.locator("#blind-notice");
  await notice.waitFor();
  assert.match(await notice.innerText(), /No findings — but these detectors are blind for these services:/);
  const blindShown = await notice.locator('li[data-service="my.service"] .badge').evaluateAll((bs) => bs.map((b) => b.dataset.detector));
  assert.ok(blindShown.includes("pool_exhaustion") && blindShown.includes("cascading_timeout"), `${blindShown}`);
  pass("findings", `with no findings, the blind detectors of my.service are named (${blindShown.length})`);
  await shot(page, "findings-blind");
  await notice.locator('a[href="/ui/coverage?service=my.service"]').click();
  const reasons = page.locator('section.reasons[data-service="my.service"]');
  await reasons.waitFor();
  assert.match(await reasons.innerText(), /set service\.instance\.id/);
  assert.match(await page.locator('tr[data-service="my.service"]').innerText(), /Pool exhaustion/);
  pass("coverage", "the service's link opens its coverage, with what to add (set service.instance.id)");
  await shot(page, "coverage-blind");

  // A healthy trace's header: no error tag, and nothing printed for it.
  const healthy = JSON.parse(readFileSync(resolve(root, "tests/fixtures/otlp-json/trace.json"))).resourceSpans[0].scopeSpans[0].spans[0].traceId.toLowerCase();
  await page.goto(`${protectedBase}/ui/trace?id=${healthy}`);
  const summary = page.locator("#trace-summary");
  await summary.locator("strong").waitFor();
  const said = await summary.innerText();
  assert.doesNotMatch(said, /null|undefined|error/, said);
  pass("trace", `a healthy trace's header says what it is and nothing else: ${said.replace(/\s+/g, " ").trim()}`);
  await page.close();
}

// --- a trace of over 100,000 spans ------------------------------------------------
{
  const [otlp, bigBase] = await bigUrl;
  const big = bigTrace();
  for (const body of big.bodies) {
    // A refusal under memory pressure is retryable (503 with Retry-After): send again.
    await waitFor("the big trace's export to be accepted", async () => {
      const r = await fetch(`${otlp}/v1/traces`, { method: "POST", headers: { "content-type": "application/json" }, body });
      return r.status === 200;
    }, 120000);
  }
  const tracePath = `${bigBase}/api/v1/traces/${big.traceId}`;
  const critical = await waitFor(`the ${big.spanCount}-span trace's analysis`, async () => {
    const r = await fetch(`${tracePath}?critical_path=true`);
    const body = r.ok ? await r.json() : null;
    return body?.span_count === big.spanCount ? body : null;
  }, 300000);
  const kept = critical.spans.map((s) => s.span_id);
  for (const id of big.onPath) assert.ok(kept.includes(id), `${id} on the critical path`);
  const fetchedAt = Date.now();
  const whole = await (await fetch(tracePath)).text();
  const wholeMs = Date.now() - fetchedAt;
  console.log(`    the whole trace is ${(whole.length / 1e6).toFixed(1)} MB of JSON (${wholeMs} ms); its critical path alone ${(JSON.stringify(critical).length / 1e3).toFixed(0)} kB`);

  const page = await open(context, "big trace");
  const asked = [];
  page.on("request", (r) => r.url().includes(`/api/v1/traces/${big.traceId}`) && asked.push(new URL(r.url()).search));
  const started = Date.now();
  await page.goto(`${bigBase}/ui/trace?id=${big.traceId}`);
  await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`table.waterfall tr[data-span-id="${id}"]`)), kept);
  const last = page.locator(`tr[data-span-id="${kept.at(-1)}"]`);
  await last.waitFor({ state: "visible" });
  const openedMs = Date.now() - started;
  console.log(`    the ${big.spanCount}-span trace's page showed its critical path ${openedMs} ms after navigation`);
  assert.ok(openedMs < 15000, `opened in ${openedMs} ms`);
  const onPath = critical.spans.filter((s) => s.critical_ms > 0).map((s) => s.span_id);
  const shownOnPath = await page.locator("table.waterfall tr.on-path").evaluateAll((rs) => rs.map((r) => r.dataset.spanId));
  assert.deepEqual(shownOnPath, onPath, "the critical path's spans, highlighted");
  assert.ok(asked.length > 0 && asked.every((q) => q !== ""), `never the whole trace: ${asked}`);
  pass("big trace", `${big.spanCount} spans: the critical path's ${kept.length} rows shown in ${(openedMs / 1000).toFixed(1)} s, without fetching the whole trace`);
  // Everything off the critical path is collapsed into "+ N spans" rows.
  const collapsed = page.locator("table.waterfall tr.collapsed");
  const counts = (await collapsed.evaluateAll((rs) => rs.map((r) => Number(r.dataset.count))));
  assert.equal(kept.length + counts.reduce((a, b) => a + b, 0), big.spanCount, "every span either shown or counted");
  assert.match(await page.locator("#collapsed-note").innerText(), /off the critical path are collapsed/);
  pass("big trace", `the other ${big.spanCount - kept.length} spans are in ${counts.length} collapsed rows`);
  // Opening the workers' row lists them one level deep, each with its
  // queries collapsed, and only the rows in view are in the page.
  const workers = critical.collapsed.reduce((a, b) => (b.span_count > a.span_count ? b : a));
  await page.locator(`tr.collapsed[data-offset="${workers.offset}"] button`).click();
  await page.locator(`tr.collapsed[data-offset="${workers.offset}"]`).waitFor({ state: "detached" });
  const pages = await page.locator("tr", { hasText: "render page" }).count();
  assert.ok(pages > 20, `${pages} workers drawn`);
  const scroller = page.locator(".waterfall-scroll.virtual");
  const drawn = await page.locator("table.waterfall tbody tr:not(.spacer)").count();
  const [height, box] = await scroller.evaluate((el) => [el.scrollHeight, el.clientHeight]);
  assert.ok(drawn < 200, `${drawn} rows in the page`);
  assert.ok(height > 20 * 400 && box < height, `the scroll box spans every row: ${height} px`);
  pass("big trace", `opening the workers' row lists them with their queries collapsed; ${drawn} rows drawn in a ${height} px scroll box`);
  await shot(page, "trace-big");
  // Scrolled to the end: the last rows are drawn, the first are not.
  await scroller.evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await last.waitFor({ state: "visible" });
  assert.equal(await page.locator(`tr[data-span-id="${kept[0]}"]`).count(), 0, "the root's row left the page");
  pass("big trace", "scrolling to the end draws the last rows and drops the first");
  // The last worker's other queries open too, in place of their row.
  const rest = page.locator("tr.collapsed").last();
  const [offset, queries] = [await rest.getAttribute("data-offset"), Number(await rest.getAttribute("data-count"))];
  await rest.locator("button").click();
  await page.locator(`tr.collapsed[data-offset="${offset}"]`).waitFor({ state: "detached" });
  const grown = await scroller.evaluate((el) => el.scrollHeight);
  assert.ok(grown >= height + (queries - 1) * 20, `${queries} more rows: ${height} → ${grown} px`);
  pass("big trace", `"+ ${queries} spans" opens those queries in its place`);
  await page.fitsWidth();
  page.noProblems();
  await page.close();
}

await browser.close();
console.log(`\n${checks.length} checks passed; screenshots in ${shots}`);
process.exit(0);
