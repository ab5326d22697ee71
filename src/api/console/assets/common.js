// Shared by every console page: the API client (with the bearer token kept in
// sessionStorage), a DOM builder that never parses data as HTML, formatting,
// the finding card the findings and trace pages both show, and the badge of a
// detector that coverage leaves blind (findings and coverage pages).
import { KINDS } from "./kinds.js";

const TOKEN_KEY = "hopscope.api_token";

/** Thrown when the API wants a token; the page shows the token form. */
export class NeedToken extends Error {}

/** GET a JSON path of the API, with `Authorization: Bearer` when a token is kept. */
export async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const resp = await fetch(path, { headers });
  if (resp.status === 401) {
    if (token) sessionStorage.removeItem(TOKEN_KEY);
    showTokenForm(token ? "The token was refused; enter it again." : "This hopscope needs its API token.");
    throw new NeedToken("token required");
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = body?.error?.message ?? `${resp.status} ${resp.statusText}`;
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  return body;
}

let retry = null;

function showTokenForm(message) {
  setStatus(message, "error");
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-forget").hidden = true;
  document.getElementById("token-input").focus();
}

/**
 * Runs `load` now and again whenever a token is entered; reports failures in
 * the status line. Returns a function that reloads.
 */
export function start(load) {
  const form = document.getElementById("token-form");
  const forget = document.getElementById("token-forget");
  forget.hidden = !sessionStorage.getItem(TOKEN_KEY);
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  const run = async () => {
    try {
      await load();
      clearStatus();
    } catch (e) {
      if (!(e instanceof NeedToken)) setStatus(`Could not load: ${e.message}`, "error");
    }
  };
  retry = run;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value.trim());
    form.hidden = true;
    forget.hidden = false;
    clearStatus();
    retry();
  });
  run();
  return run;
}

export function setStatus(text, kind = "") {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = `notice ${kind}`;
  el.hidden = false;
}

function clearStatus() {
  const el = document.getElementById("status");
  if (el.classList.contains("error")) el.hidden = true;
}

/** Builds an element: `h("a", {href}, "text", child, ...)`; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "rect", "line", "text", "g", "title"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces the children of the element with id `id`. */
export function fill(id, ...children) {
  // Absent parts (`cond ? node : null`) are left out, not printed as "null".
  document.getElementById(id).replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

export function ms(v) {
  if (v === null || v === undefined) return "–";
  if (Math.abs(v) >= 10000) return `${(v / 1000).toFixed(1)} s`;
  if (Math.abs(v) >= 100) return `${v.toFixed(0)} ms`;
  if (Math.abs(v) >= 1) return `${v.toFixed(1)} ms`;
  return `${v.toFixed(2)} ms`;
}

export function pct(v) {
  return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`;
}

export function when(rfc3339) {
  const d = new Date(rfc3339);
  return Number.isNaN(d.getTime()) ? rfc3339 : d.toLocaleString();
}

/** `service operation` or `service → peer operation`. */
export function culprit(c) {
  return c.peer ? `${c.service} → ${c.peer} ${c.operation}` : `${c.service} ${c.operation}`;
}

export function traceLink(id) {
  return h("a", { href: `/ui/trace?id=${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 12));
}

/** The page's query parameters as an object, and a way to write them back. */
export function params() {
  return Object.fromEntries(new URLSearchParams(location.search));
}

export function setParams(values) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v) q.set(k, v);
  const s = q.toString();
  history.replaceState(null, "", s ? `${location.pathname}?${s}` : location.pathname);
}

/** Binds a filter form to the URL: fills it from the query, calls `changed` on edits. */
export function bindFilters(form, changed) {
  const p = params();
  for (const el of form.elements) {
    if (!el.name || !(el.name in p)) continue;
    if (el.type === "checkbox") el.checked = p[el.name] !== "off";
    else el.value = p[el.name];
  }
  const values = () => {
    const out = {};
    for (const el of form.elements) {
      if (!el.name) continue;
      out[el.name] = el.type === "checkbox" ? (el.checked ? "" : "off") : el.value.trim();
    }
    return out;
  };
  form.addEventListener("change", () => {
    setParams(values());
    changed(values());
  });
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    setParams(values());
    changed(values());
  });
  return values;
}

function label(key) {
  return key.replaceAll("_", " ");
}

/** A finding kind's label ("N+1 calls"), from the server's list. */
export function kindLabel(kind) {
  return KINDS[kind]?.label ?? label(kind);
}

/** A finding kind's one-line description. */
export function kindDescription(kind) {
  return KINDS[kind]?.description ?? "";
}

/** A number as a person reads it: whole, or with at most three decimals. */
function num(v) {
  return Number.isInteger(v) ? String(v) : String(Number(v.toFixed(3)));
}

/** `file:line in function (namespace)`, as much of it as is known. */
export function location(l) {
  const where = l.file ? `${l.file}${l.line != null ? `:${l.line}` : ""}` : "";
  const fn = l.function ? `${where ? " in " : ""}${l.function}` : "";
  return `${where}${fn}${l.namespace ? ` (${l.namespace})` : ""}`;
}

/** `crossed n_plus_one.min_calls: 12 ≥ 5`. */
export function crossed(c) {
  return `crossed ${c.threshold}: ${num(c.value)} ${c.value >= c.limit ? "≥" : "≤"} ${num(c.limit)}`;
}

/**
 * A per-request pattern's headline numbers, where its evidence has them:
 * calls per request, what was in flight at once, what it costs the user on
 * the critical path and what running the calls in parallel would save.
 */
function facts(kind, e) {
  const out = [];
  if (!KINDS[kind]?.per_request) return out;
  if (Array.isArray(e.calls)) out.push(`${e.calls.length} calls in series`);
  else if (typeof e.calls === "number") out.push(`${e.calls} calls per request`);
  if (typeof e.children === "number") out.push(`${e.children} children`);
  if (typeof e.peak_in_flight === "number")
    out.push(`up to ${e.peak_in_flight} in flight${typeof e.throttled_to === "number" ? ` (throttled to ${e.throttled_to})` : ""}`);
  if (typeof e.critical_ms === "number")
    out.push(`costs ${ms(e.critical_ms)} on the critical path${typeof e.critical_share === "number" ? ` (${pct(e.critical_share)} of the request)` : ""}`);
  if (typeof e.saved_ms === "number") out.push(`in parallel: ${ms(e.saved_ms)} saved`);
  return out;
}

/** Calls listed in evidence (`serial_calls`): one row each. */
function callsTable(calls) {
  const cols = ["service", "operation", "target", "start_ms", "duration_ms", "critical_ms"].filter((k) => calls.some((c) => k in c));
  return h("table", { class: "calls" },
    h("thead", {}, h("tr", {}, cols.map((k) => h("th", { class: k.endsWith("_ms") ? "num" : "" }, label(k))))),
    h("tbody", {}, calls.map((c) => h("tr", {}, cols.map((k) =>
      h("td", { class: k.endsWith("_ms") ? "num" : "" }, value(k, c[k])))))));
}

function value(key, v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (key.endsWith("_ms")) return ms(v);
    if (key.includes("share") || key.includes("ratio")) return pct(v);
    return Number.isInteger(v) ? String(v) : v.toFixed(3);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x !== "object" || x === null)) return v.map((x) => value(key, x)).join(", ");
    if (key === "chain") return chain(v);
    if (key === "calls") return callsTable(v);
    return h("ol", {}, v.map((x) => h("li", {}, typeof x === "object" ? evidence(x) : value(key, x))));
  }
  if ("service" in v && "operation" in v) return culprit(v);
  if ("caller" in v && "operation" in v)
    return `${v.caller} → ${v.callee ?? "?"} ${v.operation}${v.timeout_ms !== undefined ? ` (timeout ${ms(v.timeout_ms)})` : ""}`;
  return evidence(v);
}

/** Evidence as a definition list: names spelled out, durations and shares formatted. */
export function evidence(obj) {
  return h("dl", { class: "evidence" },
    Object.entries(obj).flatMap(([k, v]) => [h("dt", {}, label(k)), h("dd", {}, value(k, v))]));
}

function chain(hops) {
  return h("ol", { class: "chain" }, hops.map((c) =>
    h("li", { class: c.timed_out ? "timed-out" : "" },
      `${c.service} ${c.operation}${c.duration_ms > 0 ? ` — ${ms(c.duration_ms)}` : ""}${c.timed_out ? " (timed out)" : ""}`)));
}

/**
 * One finding: severity, kind, culprit, summary, where in the source and the
 * thresholds it crossed, what it costs, remedy, evidence, example traces.
 */
export function findingCard(f, { open = false } = {}) {
  const { chain: _chain, ...rest } = f.evidence ?? {};
  const headline = facts(f.kind, rest);
  return h("article", { class: `finding sev-${f.severity}-card`, "data-kind": f.kind, id: `finding-${f.id}` },
    h("header", {},
      h("span", { class: `badge sev-${f.severity}` }, f.severity),
      h("span", { class: "kind", title: kindDescription(f.kind) }, kindLabel(f.kind)),
      h("span", { class: "mono" }, culprit(f.culprit)),
      h("span", { class: "muted" }, `${f.count}× · last ${when(f.last_seen)}`)),
    h("p", { class: "summary" }, f.summary),
    f.location ? h("p", { class: "location" }, h("span", { class: "muted" }, "In the source: "), h("code", {}, location(f.location))) : null,
    f.crossed?.length ? h("p", { class: "crossed" }, f.crossed.map((c) => h("span", { class: "tag" }, crossed(c)))) : null,
    headline.length ? h("p", { class: "facts" }, headline.join(" · ")) : null,
    h("p", { class: "remedy" }, h("strong", {}, "Remedy: "), f.remedy),
    f.chain?.length ? h("div", {}, h("span", { class: "muted" }, "Chain from the entry point (example trace):"), chain(f.chain)) : null,
    h("details", { open },
      h("summary", {}, "Evidence"),
      evidence(rest)),
    f.trace_ids?.length
      ? h("p", { class: "traces" }, h("span", { class: "muted" }, "Example traces: "), f.trace_ids.map(traceLink))
      : null);
}

/** A detector coverage leaves blind (red) or weakened (amber); the reason on hover. */
export function detectorBadge(b) {
  return h("span", { class: `badge ${b.level === "blind" ? "sev-critical" : "sev-warning"}`, "data-detector": b.detector, title: b.reason },
    `${kindLabel(b.detector)}${b.level === "weakened" ? " (weakened)" : ""}`);
}
