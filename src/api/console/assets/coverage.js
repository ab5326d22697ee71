// Coverage page: per service, how many spans carry what the detectors read,
// and which detectors are blind or weakened for it, with what to add.
import { api, bindFilters, detectorBadge, fill, h, start } from "./common.js";

const form = document.getElementById("filters");
const filters = bindFilters(form, () => reload());

/** Columns: heading, field, what it counts, and the field it is a part of. */
const COLUMNS = [
  ["Spans", "spans", "spans of the service"],
  ["SERVER", "server_spans", "SERVER spans", "spans"],
  ["CLIENT", "client_spans", "CLIENT spans", "spans"],
  ["Database", "database_spans", "spans calling a database", "spans"],
  ["Statement", "statement", "database spans with statement text", "database_spans"],
  ["Peer", "peer_address", "CLIENT spans naming their peer", "client_spans"],
  ["Status code", "status_code", "SERVER/CLIENT spans with an HTTP or gRPC status code"],
  ["Instance id", "instance_id", "spans with service.instance.id", "spans"],
  ["Checkout", "connection_checkout", "spans obtaining a database connection"],
  ["Whole ms", "timestamps_ms", "spans with whole-millisecond timestamps", "spans"],
  ["Error", "error_spans", "spans with status ERROR", "spans"],
];

function cell(s, [, field, , of]) {
  const v = s[field];
  const part = of && s[of] > 0 ? h("span", { class: "muted" }, ` ${Math.round((v / s[of]) * 100)}%`) : null;
  return h("td", { class: "num", "data-field": field }, String(v), part);
}

function table(services) {
  return h("div", { class: "scroll" }, h("table", { class: "coverage" },
    h("thead", {}, h("tr", {}, h("th", {}, "Service"),
      COLUMNS.map(([head, , what]) => h("th", { class: "num", title: what }, head)),
      h("th", {}, "Blind detectors"))),
    h("tbody", {}, services.map((s) =>
      h("tr", { "data-service": s.service, class: s.blind.some((b) => b.level === "blind") ? "blind" : "" },
        h("td", { class: "mono" }, s.service),
        COLUMNS.map((c) => cell(s, c)),
        h("td", { class: "detectors" }, s.blind.length ? s.blind.map(detectorBadge) : h("span", { class: "muted" }, "none")))))));
}

function reasons(services) {
  const blind = services.filter((s) => s.blind.length);
  if (!blind.length) return h("p", { class: "muted" }, "Nothing: every service's spans carry what the detectors read.");
  return blind.map((s) => {
    // Detectors that share a reason on one line.
    const lines = new Map();
    for (const b of s.blind) {
      const key = `${b.level} ${b.reason}`;
      if (!lines.has(key)) lines.set(key, [b.reason, []]);
      lines.get(key)[1].push(b);
    }
    return h("section", { class: "reasons", "data-service": s.service },
      h("h3", { class: "mono" }, s.service),
      h("ul", {}, [...lines.values()].map(([reason, list]) => h("li", {}, list.map(detectorBadge), " ", reason))));
  });
}

async function load() {
  const f = filters();
  const q = new URLSearchParams();
  if (f.service) q.set("service", f.service);
  const body = await api(`/api/v1/coverage?${q}`);
  fill("coverage", body.services.length ? table(body.services) : h("p", { class: "muted" }, "No spans analyzed yet."));
  fill("reasons", reasons(body.services));
  document.getElementById("updated").textContent = `${body.services.length} service(s)`;
}

const reload = start(load);
