// Entry-point page: per-hop latency share over time as stacked columns (SVG),
// the hop table for the window, and the entry's recent traces.
import { api, bindFilters, fill, h, ms, pct, setParams, start, traceLink, when } from "./common.js";

const COLORS = ["#c2410c", "#1f5fbf", "#15803d", "#7c3aed", "#b45309", "#0e7490", "#be185d", "#4d7c0f", "#6b7280"];
const form = document.getElementById("filters");
const filters = bindFilters(form, () => reload());

const hopName = (x) =>
  x.kind === "wire"
    ? `${x.service} → ${x.peer ?? "?"} ${x.operation} (wire)`
    : x.kind === "queue"
      ? `${x.service} → ${x.peer ?? "?"} ${x.operation} (queued before the callee started it)`
      : `${x.service} ${x.operation}`;
const entryKey = (e) => `${e.service}:${e.operation}`;

async function entries() {
  const body = await api("/api/v1/hops");
  const select = form.elements.entry;
  const wanted = filters().entry;
  select.replaceChildren(...body.entries.map((e) =>
    h("option", { value: entryKey(e.entry) }, `${e.entry.service} ${e.entry.operation} (${e.traces} traces)`)));
  if (wanted && body.entries.some((e) => entryKey(e.entry) === wanted)) select.value = wanted;
  return select.value;
}

function chart(points, colorOf) {
  const W = 900, H = 260, L = 44, B = 24, T = 8;
  const n = Math.max(points.length, 1);
  const slot = (W - L - 8) / n;
  const bar = Math.max(Math.min(slot * 0.8, 80), 2);
  const y = (v) => T + (H - T - B) * (1 - v);
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "latency share per hop over time" });
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(h("line", { class: "grid", x1: L, x2: W - 4, y1: y(v), y2: y(v) }),
      h("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, `${v * 100}%`));
  }
  points.forEach((p, i) => {
    const x = L + i * slot + (slot - bar) / 2;
    let acc = 0;
    for (const hop of p.hops) {
      const share = Math.max(0, Math.min(hop.share, 1 - acc));
      if (share <= 0) continue;
      svg.append(h("rect", { x, width: bar, y: y(acc + share), height: y(acc) - y(acc + share), fill: colorOf(hop) },
        h("title", {}, `${hopName(hop)}: ${pct(hop.share)} of ${ms(p.total_root_ms)} (${p.traces} traces)`)));
      acc += share;
    }
    const every = Math.ceil(n / 8);
    if (i % every === 0) {
      svg.append(h("text", { x: x + bar / 2, y: H - 6, "text-anchor": "middle" },
        new Date(p.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  });
  return svg;
}

async function load() {
  const entry = await entries();
  const f = filters();
  setParams({ ...f, entry });
  if (!entry) {
    fill("chart", h("p", { class: "muted" }, "No traces yet."));
    return;
  }
  const q = new URLSearchParams({ entry });
  if (f.since) q.set("since", f.since);
  const [series, hops, traces] = await Promise.all([
    api(`/api/v1/hops/series?${q}&step=${encodeURIComponent(f.step || "1m")}`),
    api(`/api/v1/hops?${q}`),
    api(`/api/v1/traces?${new URLSearchParams({ entry, limit: "10" })}`),
  ]);
  const stats = hops.entries[0];
  const order = (stats?.hops ?? []).map(hopName);
  const colorOf = (hop) => {
    const i = order.indexOf(hopName(hop));
    return COLORS[i >= 0 && i < COLORS.length - 1 ? i : COLORS.length - 1];
  };
  fill("chart",
    series.points.length ? chart(series.points, colorOf) : h("p", { class: "muted" }, "No traces in this window."),
    h("div", { class: "chart-legend" }, (stats?.hops ?? []).map((x) =>
      h("span", {}, h("i", { class: "swatch", "data-color": colorOf(x) }), ` ${hopName(x)}`))));
  for (const sw of document.querySelectorAll(".chart-legend .swatch")) sw.style.background = sw.dataset.color;
  if (!stats) {
    fill("hops", h("p", { class: "muted" }, "No traces in this window."));
    fill("entry-summary");
    return;
  }
  const total = (kind) => stats.hops.filter((x) => x.kind === kind).reduce((a, x) => a + x.critical_ms, 0);
  const share = (t) => `${ms(t)} (${pct(stats.total_root_ms > 0 ? t / stats.total_root_ms : 0)})`;
  const [wire, queued] = [total("wire"), total("queue")];
  fill("entry-summary",
    `${stats.traces} traces, ${ms(stats.total_root_ms)} in all; wire time (client spans outside their server spans) `,
    h("strong", {}, share(wire)),
    ...(queued > 0 ? ["; queued in front of callees before they started the request ", h("strong", {}, share(queued))] : []),
    ".");
  fill("hops", h("table", { class: "hops" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Hop"), h("th", {}, "Kind"), h("th", { class: "num" }, "Share"),
      h("th", { class: "num" }, "Share p50 / p95"), h("th", { class: "num" }, "Critical p50"),
      h("th", { class: "num" }, "p95"), h("th", { class: "num" }, "p99"),
      h("th", { class: "num" }, "Wire time"), h("th", { class: "num" }, "Traces"))),
    h("tbody", {}, stats.hops.map((x) => h("tr", { "data-kind": x.kind },
      h("td", {}, hopName(x)), h("td", {}, x.kind),
      h("td", { class: "num" }, pct(x.share)),
      h("td", { class: "num" }, `${pct(x.share_p50)} / ${pct(x.share_p95)}`),
      h("td", { class: "num" }, ms(x.critical_p50_ms)),
      h("td", { class: "num" }, ms(x.critical_p95_ms)),
      h("td", { class: "num" }, ms(x.critical_p99_ms)),
      h("td", { class: "num" }, x.kind === "wire" ? ms(x.critical_ms) : "–"),
      h("td", { class: "num" }, x.traces))))));
  fill("traces", traces.traces.length
    ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Trace"), h("th", {}, "Started"),
        h("th", { class: "num" }, "Duration"), h("th", { class: "num" }, "Spans"), h("th", {}, "Error"))),
      h("tbody", {}, traces.traces.map((t) => h("tr", {},
        h("td", {}, traceLink(t.trace_id)), h("td", {}, when(t.start_time)),
        h("td", { class: "num" }, ms(t.duration_ms)), h("td", { class: "num" }, t.span_count),
        h("td", {}, t.error ? "yes" : "")))))
    : h("p", { class: "muted" }, "No recent traces kept."));
}

const reload = start(load);
