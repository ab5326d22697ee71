// Timeout-budget page: per entry point, the inferred timeouts of each call
// edge against the deadline above it; inversions (a timeout longer than what
// is left of the caller's deadline) highlighted.
import { api, bindFilters, fill, h, kindLabel, ms, start, traceLink, when } from "./common.js";

const form = document.getElementById("filters");
const filters = bindFilters(form, () => reload());

const INVERSION = "timeout_inversion";

function outer(b) {
  if (!b) return "–";
  return b.kind === "entry" ? `entry (${ms(b.timeout_ms)})` : `${b.caller} → ${b.callee ?? "?"} ${b.operation} (${ms(b.timeout_ms)})`;
}

/** The edge's timeout against the time left of the deadline above it. */
function meter(e) {
  if (e.timeout_ms === null || e.budget_left_ms === null) return "–";
  const scale = Math.max(e.timeout_ms, e.budget_left_ms, 1);
  const fill = h("div", { class: `fill${e.timeout_ms > e.budget_left_ms ? " over" : ""}` });
  fill.style.width = `${(e.timeout_ms / scale) * 100}%`;
  const limit = h("div", { class: "limit", title: `left of the deadline above: ${ms(e.budget_left_ms)}` });
  limit.style.left = `${(Math.max(e.budget_left_ms, 0) / scale) * 100}%`;
  return h("div", { class: "meter", title: `timeout ${ms(e.timeout_ms)} vs ${ms(e.budget_left_ms)} left` }, fill, limit);
}

function violations(list) {
  return list.map((v) => h("span", { class: `badge sev-${v.severity}`, title: v.summary }, kindLabel(v.kind)));
}

function entryBlock(e) {
  const inversions = e.edges.filter((x) => x.violations.some((v) => v.kind === INVERSION)).length;
  return h("section", { class: "budget", "data-entry": `${e.entry.service}:${e.entry.operation}` },
    h("h2", {}, `${e.entry.service} ${e.entry.operation}`),
    h("p", {},
      `${e.traces} traces, ${e.timed_out} timed out · entry timeout `,
      h("strong", {}, e.timeout_ms === null ? "none inferred" : ms(e.timeout_ms)),
      e.layer ? ` (${e.layer.replaceAll("_", " ")})` : "",
      e.timeout_relayed_from ? ` — relayed from ${e.timeout_relayed_from.caller} → ${e.timeout_relayed_from.callee ?? "?"} ${e.timeout_relayed_from.operation}` : "",
      ` · p95 ${ms(e.p95_ms)}, p99 ${ms(e.p99_ms)} of the roots that did not time out`,
      inversions ? h("span", { class: "tag err" }, `${inversions} inversion(s)`) : null),
    e.violations.length ? h("p", {}, violations(e.violations)) : null,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {},
        h("th", {}, "Call"), h("th", { class: "num" }, "Timeout"), h("th", {}, "Deadline above"),
        h("th", { class: "num" }, "Left at start"), h("th", {}, "Timeout vs left"),
        h("th", { class: "num" }, "Calls / timed out"), h("th", { class: "num" }, "p95 / p99"),
        h("th", { class: "num" }, "Overran (max)"), h("th", {}, "Findings"))),
      h("tbody", {}, e.edges.map((x) => {
        const name = h("td", { class: "edge" }, `${x.caller} → ${x.callee ?? "?"} `, h("span", { class: "mono" }, x.operation));
        name.style.paddingLeft = `${8 + x.depth * 16}px`;
        return h("tr", { class: x.violations.some((v) => v.kind === INVERSION) ? "inversion" : "" },
          name,
          h("td", { class: "num" }, x.timeout_ms === null ? "–" : ms(x.timeout_ms)),
          h("td", { class: "outer" }, outer(x.budget_from)),
          h("td", { class: `num${x.budget_left_ms !== null && x.budget_left_ms < 0 ? " negative" : ""}` }, ms(x.budget_left_ms)),
          h("td", {}, meter(x)),
          h("td", { class: "num" }, `${x.calls} / ${x.timed_out}`),
          h("td", { class: "num" }, `${ms(x.p95_ms)} / ${ms(x.p99_ms)}`),
          h("td", { class: "num" }, x.overrunning_calls ? `${x.overrunning_calls} (${ms(x.max_overrun_ms)})` : "–"),
          h("td", {}, violations(x.violations),
            x.violations[0]?.trace_ids?.length ? [" ", traceLink(x.violations[0].trace_ids[0])] : null));
      })))));
}

async function load() {
  const f = filters();
  const q = new URLSearchParams();
  if (f.since) q.set("since", f.since);
  const body = await api(`/api/v1/timeouts?${q}`);
  const w = body.window;
  document.getElementById("window").textContent = w.newest_end
    ? `call window: ${w.traces} traces, ${w.calls} calls, ended ${when(w.oldest_end)} – ${when(w.newest_end)}`
    : "call window: empty";
  fill("budgets", body.entries.length ? body.entries.map(entryBlock) : h("p", { class: "muted" }, "No traces in the call window."));
}

const reload = start(load);
