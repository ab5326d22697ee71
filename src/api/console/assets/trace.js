// Trace page: the span waterfall with the critical path drawn over the spans,
// each span's self and critical time, the trace's warnings, and its findings
// marked on the spans they name: a badge linking to the finding on the spans
// a finding is made of (its repeated or serial calls, a cascade's chain), a
// lighter tag on the other spans it names.
import { api, bindFilters, fill, findingCard, h, kindDescription, kindLabel, ms, setParams, start, traceLink, when } from "./common.js";

const form = document.getElementById("filters");
const filters = bindFilters(form, () => reload());

/** Spans in tree order (children by start), with their depth; orphans keep their place under the root. */
function treeOrder(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  const roots = [];
  for (const s of spans) {
    if (s.parent_span_id && ids.has(s.parent_span_id)) {
      if (!children.has(s.parent_span_id)) children.set(s.parent_span_id, []);
      children.get(s.parent_span_id).push(s);
    } else roots.push(s);
  }
  const byStart = (a, b) => a.start - b.start;
  const out = [];
  const stack = roots.sort(byStart).reverse().map((s) => [s, 0]);
  while (stack.length) {
    const [s, depth] = stack.pop();
    out.push([s, depth]);
    const kids = (children.get(s.span_id) ?? []).sort(byStart);
    for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1]);
  }
  return out;
}

/** Per span, the marks (`{finding_id, kind}`) of the findings it is part of. */
function markedSpans(marks) {
  const marked = new Map();
  for (const m of marks ?? []) {
    for (const id of m.span_ids) {
      if (!marked.has(id)) marked.set(id, []);
      marked.get(id).push(m);
    }
  }
  return marked;
}

/**
 * Which kinds each finding names on other spans: the spans of its chain, and
 * those of its culprit's service and operation (less than being part of it).
 */
function flaggedSpans(spans, findings, marked) {
  const flagged = new Map();
  for (const f of findings) {
    const chainIds = new Set((f.chain ?? []).map((c) => c.span_id));
    for (const s of spans) {
      if ((marked.get(s.span_id) ?? []).some((m) => m.finding_id === f.id)) continue;
      if (chainIds.has(s.span_id) || (s.service === f.culprit.service && s.operation === f.culprit.operation)) {
        if (!flagged.has(s.span_id)) flagged.set(s.span_id, new Set());
        flagged.get(s.span_id).add(f.kind);
      }
    }
  }
  return flagged;
}

/** A span's badge for a finding it is part of, linking to the finding's card below. */
function markBadge(m) {
  return h("a", { class: "tag mark", href: `#finding-${m.finding_id}`, "data-finding": m.finding_id, "data-kind": m.kind,
    title: `Part of this ${kindLabel(m.kind)} finding: ${kindDescription(m.kind)}` }, kindLabel(m.kind));
}

function waterfall(t) {
  const t0 = Date.parse(t.start_time);
  for (const s of t.spans) s.start = Date.parse(s.start_time) - t0 + (s.skew_adjustment_ms ?? 0) + fraction(s.start_time) - fraction(t.start_time);
  const lo = Math.min(0, ...t.spans.map((s) => s.start));
  const hi = Math.max(t.duration_ms, ...t.spans.map((s) => s.start + s.duration_ms));
  const span = Math.max(hi - lo, 1e-6);
  const x = (v) => `${(((v - lo) / span) * 100).toFixed(3)}%`;
  const w = (v) => `${((v / span) * 100).toFixed(3)}%`;
  const segs = new Map();
  for (const seg of t.critical_path) {
    if (!segs.has(seg.span_id)) segs.set(seg.span_id, []);
    segs.get(seg.span_id).push(seg);
  }
  const marked = markedSpans(t.marks);
  const flagged = flaggedSpans(t.spans, t.findings, marked);
  const warned = new Set(t.warnings.map((w) => w.span_id).filter(Boolean));
  const rows = treeOrder(t.spans).map(([s, depth]) => {
    const track = h("div", { class: "track" });
    const bar = h("div", { class: "span-bar" });
    bar.style.left = x(s.start);
    bar.style.width = w(s.duration_ms);
    track.append(bar);
    for (const seg of segs.get(s.span_id) ?? []) {
      const el = h("div", { class: `seg ${seg.hop_kind === "wire" || seg.hop_kind === "queue" ? "wire" : "critical"}`, title: `${seg.hop_kind} on the critical path: ${ms(seg.duration_ms)}` });
      el.style.left = x(seg.start_offset_ms);
      el.style.width = w(seg.duration_ms);
      track.append(el);
    }
    const kinds = flagged.get(s.span_id);
    const marks = marked.get(s.span_id);
    const name = h("td", { class: "name", title: `${s.service} ${s.operation} (${s.kind}) ${s.span_id}` },
      h("span", { class: "label" }, h("span", { class: "muted" }, s.service), " ", s.operation),
      s.status.code === "error" ? h("span", { class: "tag err", title: s.status.message ?? "" }, "error") : null,
      s.skew_adjustment_ms ? h("span", { class: "tag skew" }, `skew ${ms(s.skew_adjustment_ms)}`) : null,
      warned.has(s.span_id) ? h("span", { class: "tag skew" }, "warning") : null,
      marks ? marks.map(markBadge) : null,
      kinds ? [...kinds].map((k) => h("span", { class: "tag flag", title: kindDescription(k) }, kindLabel(k))) : null);
    name.style.paddingLeft = `${8 + depth * 16}px`;
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
  });
  return h("table", { class: "waterfall" },
    h("thead", {}, h("tr", {}, h("th", {}, "Span"), h("th", {}, "Kind"), h("th", { class: "num" }, "Duration"),
      h("th", { class: "num" }, "Self"), h("th", { class: "num" }, "Critical"), h("th", {}, `0 – ${ms(hi - lo)}`))),
    h("tbody", {}, rows));
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
  const t = await api(`/api/v1/traces/${encodeURIComponent(id)}`);
  document.getElementById("trace-id").textContent = t.trace_id;
  document.title = `Trace ${t.trace_id.slice(0, 12)} · hopscope`;
  const onPath = t.spans.filter((s) => s.critical_ms > 0).length;
  fill("trace-summary",
    h("strong", {}, `${t.entry.service} ${t.entry.operation}`),
    ` — ${ms(t.duration_ms)}, ${t.span_count} spans (${onPath} on the critical path), started ${when(t.start_time)}`,
    t.error ? h("span", { class: "tag err" }, "error") : null,
    " · ", h("a", { href: `/ui/entry?entry=${encodeURIComponent(`${t.entry.service}:${t.entry.operation}`)}` }, "entry point"));
  fill("waterfall", waterfall(t));
  fill("warnings", t.warnings.length
    ? h("ul", { class: "warnings" }, t.warnings.map((w) => h("li", {}, h("code", {}, w.code), " ", w.message)))
    : h("p", { class: "muted" }, "None: no skew adjusted, no orphans, no ambiguity."));
  fill("trace-findings", t.findings.length
    ? t.findings.map((f) => findingCard(f))
    : h("p", { class: "muted" }, "None."));
}

const reload = start(load);
