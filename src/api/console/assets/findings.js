// Findings page: worst first, filtered by kind, service, severity and time,
// refreshed every 5 s unless paused.
import { api, bindFilters, fill, findingCard, h, start } from "./common.js";

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

async function load() {
  const f = filters();
  const q = new URLSearchParams();
  for (const k of ["kind", "service", "severity", "since"]) if (f[k]) q.set(k, f[k]);
  const body = await api(`/api/v1/findings?${q}`);
  const cards = body.findings.map((x) => findingCard(x, { open: !closed.has(`finding-${x.id}`) }));
  fill("findings", cards.length ? cards : h("p", { class: "muted" }, "No findings match."));
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
