// A big trace for the browser test, as OTLP/JSON export requests: an export
// endpoint that loads its orders (three queries one after another), then
// renders WORKERS pages in parallel, each running QUERIES overlapping item
// queries. 3 + 3 + WORKERS × (1 + QUERIES) spans (100,206 with the defaults);
// the critical path runs through the root, `load` and its queries, `render`,
// the last worker and two of its queries, so nearly every span is off it.
import { randomBytes } from "node:crypto";

const MS = 1_000_000n;

/** One span as OTLP/JSON has it; times in ms from `t0` (ns, a BigInt). */
function span(traceId, id, parent, name, kind, t0, [startMs, endMs], attributes = []) {
  return {
    traceId,
    spanId: id.toString(16).padStart(16, "0"),
    ...(parent ? { parentSpanId: parent.toString(16).padStart(16, "0") } : {}),
    name,
    kind,
    startTimeUnixNano: String(t0 + BigInt(startMs) * MS),
    endTimeUnixNano: String(t0 + BigInt(endMs) * MS),
    attributes,
  };
}

const SERVER = 2;
const INTERNAL = 1;
const CLIENT = 3;
const db = [{ key: "db.system", value: { stringValue: "postgresql" } }];

/**
 * The trace's id, its span count, the ids of the spans on its critical path,
 * and its spans as export request bodies of at most `perRequest` spans each.
 */
export function bigTrace({ workers = 200, queries = 500, perRequest = 5000 } = {}) {
  const traceId = randomBytes(16).toString("hex");
  // Ten seconds ago, so the whole trace lies in the past.
  const t0 = BigInt(Date.now() - 10_000) * MS;
  const spans = [
    span(traceId, 1, 0, "GET /export", SERVER, t0, [0, 2000], [{ key: "http.route", value: { stringValue: "/export" } }]),
    span(traceId, 2, 1, "load", INTERNAL, t0, [0, 400]),
  ];
  for (let q = 0; q < 3; q++) spans.push(span(traceId, 3 + q, 2, "SELECT orders", CLIENT, t0, [q * 130, q * 130 + 120], db));
  spans.push(span(traceId, 6, 1, "render", INTERNAL, t0, [400, 2000]));
  let id = 7;
  const onPath = [1, 2, 3, 4, 5, 6];
  for (let w = 0; w < workers; w++) {
    const worker = id++;
    const start = 410 + w * 2;
    spans.push(span(traceId, worker, 6, "render page", INTERNAL, t0, [start, start + 990]));
    if (w === workers - 1) onPath.push(worker);
    for (let q = 0; q < queries; q++) {
      spans.push(span(traceId, id++, worker, "SELECT items", CLIENT, t0, [start + q, start + q + 300], db));
    }
  }
  const bodies = [];
  for (let i = 0; i < spans.length; i += perRequest) {
    bodies.push(JSON.stringify({
      resourceSpans: [{
        resource: { attributes: [{ key: "service.name", value: { stringValue: "exporter" } },
          { key: "service.instance.id", value: { stringValue: "exporter-1" } }] },
        scopeSpans: [{ scope: { name: "bigtrace" }, spans: spans.slice(i, i + perRequest) }],
      }],
    }));
  }
  return { traceId, spanCount: spans.length, onPath: onPath.map((n) => n.toString(16).padStart(16, "0")), bodies };
}
