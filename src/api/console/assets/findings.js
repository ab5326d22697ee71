// Findings page: worst first, filtered by kind, service, severity and time,
// refreshed every 5 s unless paused; with the detectors that coverage leaves
// blind, so that no findings is not mistaken for health.
import { api, bindFilters, detectorBadge, fill, findingCard, h, start } from "./common.js";

const REFRESH_MS = 5000;
const form = document.getElementById("filters");
let filters = bindFilters(form, () => reload());
let timer = null;
// Evidence is open unless the reader closed it; kept across refreshes.
const closed = new Set();
document.getElementById("findings").addEventListener("toggle", (ev) => {
  const id = ev.target.closest("article.finding")?.id;
  if (id) ev.target.open ? closed.delete(id) : closed.add(id);
}, true);

/** `[service, [blind entries]]` of the services with detectors blind (of `kind` only, when given). */
async function blindServices(f) {
  const q = new URLSearchParams();
  if (f.service) q.set("service", f.service);
  const coverage = await api(`/api/v1/coverage?${q}`);
  return coverage.services
    .map((s) => [s.service, s.blind.filter((b) => b.level === "blind" && (!f.kind || b.detector === f.kind))])
    .filter(([, blind]) => blind.length);
}

function coverageLink(service) {
  return `/ui/coverage${service ? `?service=${encodeURIComponent(service)}` : ""}`;
}

/** Shown instead of a bare "no findings" when detectors could not have seen anything. */
function blindNotice(blind) {
  return h("div", { id: "blind-notice", class: "notice" },
    h("p", {}, h("strong", {}, "No findings — but these detectors are blind for these services:")),
    h("ul", {}, blind.map(([service, list]) =>
      h("li", { "data-service": service }, h("a", { href: coverageLink(service), class: "mono" }, service), " ", list.map(detectorBadge)))),
    h("p", {}, "Their problems cannot show up here. ", h("a", { href: coverageLink() }, "Coverage"),
      " says which attribute or instrumentation to add."));
}

async function load() {
  const f = filters();
  const q = new URLSearchParams();
  for (const k of ["kind", "service", "severity", "since"]) if (f[k]) q.set(k, f[k]);
  const [body, blind] = await Promise.all([api(`/api/v1/findings?${q}`), blindServices(f)]);
  const cards = body.findings.map((x) => findingCard(x, { open: !closed.has(`finding-${x.id}`) }));
  fill("findings", cards.length ? cards : [h("p", { class: "muted" }, "No findings match."), blind.length ? blindNotice(blind) : null]);
  fill("coverage-note", h("a", { href: coverageLink() }, "Instrumentation coverage"),
    blind.length
      ? `: ${blind.length} service(s) with detectors blind for lack of instrumentation (${blind.map(([s]) => s).join(", ")}).`
      : ": which detectors are blind for which services.");
  document.getElementById("updated").textContent =
    `${body.findings.length} finding(s), updated ${new Date().toLocaleTimeString()}`;
}

const reload = start(async () => {
  clearTimeout(timer);
  try {
    await load();
  } finally {
    if (filters().refresh !== "off") timer = setTimeout(reload, REFRESH_MS);
  }
});
