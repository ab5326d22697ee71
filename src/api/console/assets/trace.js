// Trace page: the span waterfall with the critical path drawn over the spans,
// each span's self and critical time, the trace's warnings, and its findings
// marked on the spans they name: a badge linking to the finding on the spans
// a finding is made of (its repeated or serial calls, a cascade's chain), a
// lighter tag on the other spans it names.
//
// A trace of any size opens in a few seconds: the page asks the API for the
// critical path alone (its spans and their ancestors, in tree order, with the
// subtrees it leaves out counted), collapses those subtrees into "+ N spans"
// rows that fetch one level of children per click (pages of the tree order),
// and draws only the rows in view. Traces of up to SMALL spans open whole, as
// they always did.
import { api, bindFilters, fill, findingCard, h, kindDescription, kindLabel, ms, setParams, start, traceLink, when } from "./common.js";

/** Traces with at most this many spans open with every span shown. */
const SMALL = 1000;
/** Spans fetched for one click on a collapsed row. */
const PAGE = 1000;
/** From this many rows on, only the rows in view (and MARGIN on each side) are in the page. */
const VIRTUAL = 300;
const MARGIN = 30;

const form = document.getElementById("filters");
const filters = bindFilters(form, () => reload());

/** Adds to `marked` (span id → marks) the marks (`{finding_id, kind}`) of the findings each span is part of. */
function addMarks(marked, marks) {
  for (const m of marks ?? []) {
    for (const id of m.span_ids) {
      if (!marked.has(id)) marked.set(id, []);
      marked.get(id).push(m);
    }
  }
}

/**
 * The kinds of the findings that name span `s` without it being part of them:
 * a span of a finding's chain, or of its culprit's service and operation.
 */
function flags(s, findings, marks) {
  const kinds = new Set();
  for (const f of findings) {
    if ((marks ?? []).some((m) => m.finding_id === f.id)) continue;
    if ((f.chain ?? []).some((c) => c.span_id === s.span_id) || (s.service === f.culprit.service && s.operation === f.culprit.operation)) kinds.add(f.kind);
  }
  return kinds.size ? kinds : null;
}

/** A span's badge for a finding it is part of, linking to the finding's card below. */
function markBadge(m) {
  return h("a", { class: "tag mark", href: `#finding-${m.finding_id}`, "data-finding": m.finding_id, "data-kind": m.kind,
    title: `Part of this ${kindLabel(m.kind)} finding: ${kindDescription(m.kind)}` }, kindLabel(m.kind));
}

/** The waterfall's rows: a span (`{span}`) or a run of collapsed subtrees (`{group}`), in tree order. */
function initialRows(spans, collapsed) {
  const depth = new Map(spans.map((s) => [s.span_id, s.depth]));
  const rows = spans.map((span) => ({ at: span.tree_index, span }));
  for (const c of collapsed ?? []) {
    rows.push({ at: c.offset, group: { depth: depth.get(c.parent_span_id) + 1, offset: c.offset, count: c.span_count } });
  }
  return rows.sort((a, b) => a.at - b.at);
}

/**
 * The waterfall of trace `t` (its critical-path answer) over `rows`, whose
 * spans `marks` marks; `path` is the trace's API path.
 */
function waterfall(t, rows, marks, path) {
  const segs = new Map();
  for (const seg of t.critical_path) {
    if (!segs.has(seg.span_id)) segs.set(seg.span_id, []);
    segs.get(seg.span_id).push(seg);
  }
  const view = {
    t, rows, segs,
    marked: new Map(),
    warned: new Set(t.warnings.map((w) => w.span_id).filter(Boolean)),
    t0: Date.parse(t.start_time),
    scale: h("th", {}),
    tbody: h("tbody", {}),
    rowHeight: 0,
  };
  addMarks(view.marked, marks);
  view.table = h("table", { class: "waterfall" },
    h("thead", {}, h("tr", {}, h("th", {}, "Span"), h("th", {}, "Kind"), h("th", { class: "num" }, "Duration"),
      h("th", { class: "num" }, "Self"), h("th", { class: "num" }, "Critical"), view.scale)),
    view.tbody);
  view.scroller = h("div", { class: "waterfall-scroll" }, view.table);
  let queued = false;
  view.scroller.addEventListener("scroll", () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      draw(view);
    });
  });
  view.expand = (group) => expand(view, group, path);
  rescale(view);
  return view;
}

/** Places the spans' bars on one time axis: the trace's and every loaded span's extent. */
function rescale(view) {
  let lo = 0;
  let hi = view.t.duration_ms;
  for (const r of view.rows) {
    const s = r.span;
    if (!s) continue;
    if (s.start === undefined) s.start = Date.parse(s.start_time) - view.t0 + (s.skew_adjustment_ms ?? 0) + fraction(s.start_time) - fraction(view.t.start_time);
    lo = Math.min(lo, s.start);
    hi = Math.max(hi, s.start + s.duration_ms);
  }
  view.lo = lo;
  view.width = Math.max(hi - lo, 1e-6);
  view.scale.textContent = `0 – ${ms(hi - lo)}`;
}

/** The waterfall on the page, redrawn when the window's size changes what is in view. */
let shown = null;
addEventListener("resize", () => shown && draw(shown));

/** Fills the table: every row of a small waterfall, else those in view between two spacers. */
function draw(view) {
  const { rows, tbody, scroller } = view;
  const virtual = rows.length >= VIRTUAL;
  scroller.classList.toggle("virtual", virtual);
  view.table.classList.toggle("virtual", virtual);
  if (!virtual) {
    tbody.replaceChildren(...rows.map((r) => row(view, r)));
    return;
  }
  if (!view.rowHeight) {
    tbody.replaceChildren(row(view, rows[0]));
    view.rowHeight = tbody.firstChild.getBoundingClientRect().height || 26;
  }
  const first = Math.max(0, Math.floor(scroller.scrollTop / view.rowHeight) - MARGIN);
  const end = Math.min(rows.length, first + Math.ceil(scroller.clientHeight / view.rowHeight) + 2 * MARGIN);
  tbody.replaceChildren(spacer(first * view.rowHeight), ...rows.slice(first, end).map((r) => row(view, r)),
    spacer((rows.length - end) * view.rowHeight));
}

function spacer(height) {
  const td = h("td", { colspan: 6 });
  td.style.height = `${height}px`;
  return h("tr", { class: "spacer", "aria-hidden": "true" }, td);
}

/** Opens a collapsed run: its first level of spans, each with its own subtree collapsed; the rest of a long run stays collapsed. */
async function expand(view, group, path) {
  if (group.loading) return;
  group.loading = true;
  try {
    await openRun(view, group, path);
  } finally {
    group.loading = false;
  }
}

async function openRun(view, group, path) {
  const end = group.offset + group.count;
  const page = await api(`${path}?offset=${group.offset}&limit=${PAGE}&max_depth=${group.depth}`);
  addMarks(view.marked, page.marks);
  const opened = [];
  for (const span of page.spans.filter((s) => s.tree_index < end)) {
    opened.push({ at: span.tree_index, span });
    if (span.descendants > 0) {
      opened.push({ at: span.tree_index + 1, group: { depth: span.depth + 1, offset: span.tree_index + 1, count: span.descendants } });
    }
  }
  const next = page.page.next_offset;
  if (next !== null && next < end) opened.push({ at: next, group: { depth: group.depth, offset: next, count: end - next } });
  const at = view.rows.findIndex((r) => r.group === group);
  if (at < 0) return;
  view.rows.splice(at, 1, ...opened);
  rescale(view);
  draw(view);
}

function row(view, r) {
  if (r.group) {
    const g = r.group;
    const button = h("button", { type: "button", class: "expand", title: "Off the critical path: show these spans", disabled: g.loading },
      g.loading ? "loading…" : `+ ${g.count.toLocaleString("en")} spans`);
    button.addEventListener("click", () => {
      button.disabled = true;
      button.textContent = "loading…";
      view.expand(g).catch((e) => {
        button.disabled = false;
        button.textContent = `+ ${g.count.toLocaleString("en")} spans (could not load: ${e.message})`;
      });
    });
    const td = h("td", { colspan: 6 }, button);
    td.style.paddingLeft = `${8 + g.depth * 16}px`;
    return h("tr", { class: "collapsed", "data-offset": g.offset, "data-count": g.count }, td);
  }
  const s = r.span;
  const x = (v) => `${(((v - view.lo) / view.width) * 100).toFixed(3)}%`;
  const w = (v) => `${((v / view.width) * 100).toFixed(3)}%`;
  const track = h("div", { class: "track" });
  const bar = h("div", { class: "span-bar" });
  bar.style.left = x(s.start);
  bar.style.width = w(s.duration_ms);
  track.append(bar);
  for (const seg of view.segs.get(s.span_id) ?? []) {
    const el = h("div", { class: `seg ${seg.hop_kind === "wire" || seg.hop_kind === "queue" ? "wire" : "critical"}`, title: `${seg.hop_kind} on the critical path: ${ms(seg.duration_ms)}` });
    el.style.left = x(seg.start_offset_ms);
    el.style.width = w(seg.duration_ms);
    track.append(el);
  }
  const marks = view.marked.get(s.span_id);
  const kinds = flags(s, view.t.findings, marks);
  const name = h("td", { class: "name", title: `${s.service} ${s.operation} (${s.kind}) ${s.span_id}` },
    h("span", { class: "label" }, h("span", { class: "muted" }, s.service), " ", s.operation),
    s.status.code === "error" ? h("span", { class: "tag err", title: s.status.message ?? "" }, "error") : null,
    s.skew_adjustment_ms ? h("span", { class: "tag skew" }, `skew ${ms(s.skew_adjustment_ms)}`) : null,
    view.warned.has(s.span_id) ? h("span", { class: "tag skew" }, "warning") : null,
    marks ? marks.map(markBadge) : null,
    kinds ? [...kinds].map((k) => h("span", { class: "tag flag", title: kindDescription(k) }, kindLabel(k))) : null);
  name.style.paddingLeft = `${8 + s.depth * 16}px`;
  return h("tr", {
    class: [(s.critical_ms > 0 ? "on-path" : ""), (kinds ? "flagged" : ""), (marks ? "marked" : "")].join(" ").trim(),
    "data-span-id": s.span_id,
  },
    name,
    h("td", {}, s.kind),
    h("td", { class: "num" }, ms(s.duration_ms)),
    h("td", { class: "num" }, ms(s.self_ms)),
    h("td", { class: "num" }, s.critical_ms > 0 ? h("strong", {}, ms(s.critical_ms)) : ms(0)),
    h("td", { class: "bar" }, track));
}

/** Sub-millisecond part of an RFC 3339 time (Date keeps only milliseconds). */
function fraction(rfc3339) {
  const m = /\.(\d+)/.exec(rfc3339);
  return m ? Number(`0.${m[1]}`) * 1000 - Math.floor(Number(`0.${m[1]}`) * 1000) : 0;
}

async function recent() {
  const body = await api("/api/v1/traces?limit=10");
  fill("recent", body.traces.length
    ? h("ul", {}, body.traces.map((t) => h("li", {}, traceLink(t.trace_id),
      ` ${t.entry.service} ${t.entry.operation} — ${ms(t.duration_ms)}, ${t.span_count} spans${t.error ? ", error" : ""}`)))
    : h("p", { class: "muted" }, "No traces kept yet."));
  return body.traces;
}

async function load() {
  let id = filters().id;
  const traces = await recent();
  if (!id && traces.length) {
    id = traces[0].trace_id;
    form.elements.id.value = id;
    setParams({ id });
  }
  if (!id) return;
  const path = `/api/v1/traces/${encodeURIComponent(id)}`;
  const t = await api(`${path}?critical_path=true`);
  const small = t.span_count <= SMALL;
  const whole = small ? await api(`${path}?offset=0&limit=${SMALL}`) : t;
  const rows = initialRows(whole.spans, whole.collapsed);
  document.getElementById("trace-id").textContent = t.trace_id;
  document.title = `Trace ${t.trace_id.slice(0, 12)} · hopscope`;
  const onPath = t.spans.filter((s) => s.critical_ms > 0).length;
  fill("trace-summary",
    h("strong", {}, `${t.entry.service} ${t.entry.operation}`),
    ` — ${ms(t.duration_ms)}, ${t.span_count} spans (${onPath} on the critical path), started ${when(t.start_time)}`,
    t.error ? h("span", { class: "tag err" }, "error") : null,
    " · ", h("a", { href: `/ui/entry?entry=${encodeURIComponent(`${t.entry.service}:${t.entry.operation}`)}` }, "entry point"));
  const view = waterfall(t, rows, whole.marks, path);
  const left = t.collapsed.reduce((n, c) => n + c.span_count, 0);
  fill("waterfall", small ? null : h("p", { class: "muted", id: "collapsed-note" },
    `${t.span_count.toLocaleString("en")} spans: the ${left.toLocaleString("en")} off the critical path are collapsed; "+ N spans" opens a level.`),
  view.scroller);
  shown = view;
  draw(view);
  fill("warnings", t.warnings.length
    ? h("ul", { class: "warnings" }, t.warnings.map((w) => h("li", {}, h("code", {}, w.code), " ", w.message)))
    : h("p", { class: "muted" }, "None: no skew adjusted, no orphans, no ambiguity."));
  fill("trace-findings", t.findings.length
    ? t.findings.map((f) => findingCard(f))
    : h("p", { class: "muted" }, "None."));
}

const reload = start(load);
