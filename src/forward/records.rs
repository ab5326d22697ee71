//! The call records a forwarded trace carries to the detect replicas
//! (`--role detect`): both directions of one format, so the two tiers cannot
//! disagree on it.
//!
//! The second tier is routed by service (the Collector's `loadbalancing`
//! exporter, `routing_key: service`), so each service's part of a trace's
//! records ([`TraceCalls`]) rides on one span of that service, its carrier
//! ([`carriers`]): the calls that service made, with the calls above them as
//! shadows ([`CallRecord::shadow`]: their deadlines bound the budget left
//! below), its database calls and its instances' requests, and the root's
//! record as context (owned only by the part of the root's service,
//! [`TraceCalls::owns_root`]). A detect replica decodes each carrier
//! ([`decode`]) and merges the parts of one trace it receives
//! ([`crate::store::CallWindow::merge`]): no trace is assembled again.
//!
//! The format is JSON text in the span attribute [`RECORDS`], versioned
//! (`"v": 1`); an unknown version or a malformed record is refused with a
//! reason, never guessed at.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::encode::kv;
use crate::analyze::budget::{CallRecord, EdgeKey, RootRecord, TraceCalls};
use crate::analyze::saturation::{
    DbTarget, QueryRecord, RequestRecord, SaturationRecords, Target, UseParts,
};
use crate::analyze::{AnalyzedTrace, EntryPoint};
use crate::ingest::otlp::common::v1::any_value::Value;
use crate::ingest::otlp::common::v1::KeyValue;
use crate::model::{SpanKind, Sym, TraceId};

/// The span attribute a service's part of a trace's records rides in.
pub const RECORDS: &str = "hopscope.records";
/// The trace's entry point, on every forwarded span: its root's service and
/// operation (as aggregated).
pub const ENTRY_SERVICE: &str = "hopscope.entry.service";
pub const ENTRY_OPERATION: &str = "hopscope.entry.operation";

const VERSION: u32 = 1;

/// Why a carried record was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("hopscope.records is not a record: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("hopscope.records has version {0}; this daemon reads version {VERSION}")]
    Version(u32),
    #[error("hopscope.records is inconsistent: {0}")]
    Inconsistent(&'static str),
}

type EdgeWire = (Sym, Option<Sym>, Sym);
/// `[start, end)` as ns from the root's start (negative: before it, a skewed
/// clock).
type Interval = (i64, i64);

// Records are arrays, not objects, and times are offsets from the root's
// start: a trace's parts are forwarded on every trace, so their size is the
// forwarding's cost (docs/FORWARDING.md). Each struct documents its fields
// in order.

/// `{"v": 1, "service", "root", "calls", "queries", "requests"}`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    v: u32,
    service: Sym,
    root: RootWire,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    calls: Vec<CallWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    queries: Vec<QueryWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    requests: Vec<RequestWire>,
}

/// `[entry service, entry operation, start (unix ns), duration, timed out,
/// kind (index in SpanKind::ALL), HTTP status, relayed from, owned here]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct RootWire(
    Sym,
    Sym,
    u64,
    u64,
    bool,
    u8,
    Option<u16>,
    Option<EdgeWire>,
    bool,
);

/// [`CallWire`]'s flags.
const TIMED_OUT: u8 = 1;
const RELAYED: u8 = 2;
const ROOT_SPAN: u8 = 4;
const SHADOW: u8 = 8;

/// `[edge, start offset, duration, overrun, depth, parent (index in this
/// part's calls), flags (TIMED_OUT | RELAYED | ROOT_SPAN | SHADOW)]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct CallWire(EdgeWire, u64, u64, u64, u16, Option<u32>, u8);

/// `[statement, [system, address, namespace], [start, end], critical, lock
/// wait]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct QueryWire(
    String,
    (Option<Sym>, Option<Sym>, Option<Sym>),
    Interval,
    u64,
    u64,
);

/// `[instance, operation, [start, end], caller's [start, end], self-time
/// intervals, uses]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct RequestWire(
    Sym,
    Sym,
    Interval,
    Option<Interval>,
    Vec<Interval>,
    Vec<UseWire>,
);

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetWire {
    Pool(Sym),
    Db(Option<Sym>, Option<Sym>, Option<Sym>),
    Http(Sym),
}

/// `[target, calls, wait, explicit, hold]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct UseWire(TargetWire, Vec<Interval>, u64, bool, Interval);

/// Unix ns to and from offsets of the root's start.
#[derive(Clone, Copy)]
struct Base(u64);

impl Base {
    fn off(self, (start, end): (u64, u64)) -> Interval {
        (
            start.wrapping_sub(self.0) as i64,
            end.wrapping_sub(self.0) as i64,
        )
    }

    fn abs(self, (start, end): Interval) -> (u64, u64) {
        (
            self.0.wrapping_add(start as u64),
            self.0.wrapping_add(end as u64),
        )
    }
}

fn edge_wire(e: EdgeKey) -> EdgeWire {
    (e.caller, e.callee, e.operation)
}

fn edge_of((caller, callee, operation): EdgeWire) -> EdgeKey {
    EdgeKey {
        caller,
        callee,
        operation,
    }
}

/// What the records add to the forwarded spans of `t` (whose records are
/// `calls`), as [`super::encode::encode`]'s `extra`, which visits the spans
/// in order: the entry point on every span, and each service's part of the
/// records ([`RECORDS`]) on its carrier.
pub fn attributes(t: &AnalyzedTrace, calls: &TraceCalls) -> impl FnMut(u32, &mut Vec<KeyValue>) {
    let mut carriers = carriers(t, calls).into_iter().peekable();
    let entry = t.entry;
    move |span, attrs| {
        attrs.push(kv(
            ENTRY_SERVICE,
            Value::StringValue(entry.service.as_str().to_owned()),
        ));
        attrs.push(kv(
            ENTRY_OPERATION,
            Value::StringValue(entry.operation.as_str().to_owned()),
        ));
        while carriers.next_if(|c| c.0 < span).is_some() {}
        if let Some((_, text)) = carriers.next_if(|c| c.0 == span) {
            attrs.push(kv(RECORDS, Value::StringValue(text)));
        }
    }
}

/// Each service's part of `calls` (the records of the analyzed trace `t`),
/// as the span that carries it and the text of [`RECORDS`]: the root span for
/// the root's service, else the service's first span. A service with nothing
/// to carry (no call, query or request of its own, not the root's) has none.
pub fn carriers(t: &AnalyzedTrace, calls: &TraceCalls) -> Vec<(u32, String)> {
    let trace = &t.trace;
    let root_service = trace.root_span().service;
    let mut first: FxHashMap<Sym, u32> = FxHashMap::default();
    first.insert(root_service, trace.root);
    for (i, s) in trace.spans.iter().enumerate() {
        first.entry(s.service).or_insert(i as u32);
    }
    let mut out: Vec<(u32, String)> = first
        .into_iter()
        .filter_map(|(service, span)| {
            let own = service == root_service;
            let part = part_of(calls, service, own)?;
            serde_json::to_string(&part).ok().map(|text| (span, text))
        })
        .collect();
    out.sort_unstable_by_key(|c| c.0);
    out
}

/// Every service's part of `calls` (a window's records of one trace, whole
/// or a detect replica's parts of it), as [`RECORDS`] texts: what a replica
/// shares of its window with its peers (`GET /api/v1/peer/window`), merged
/// back with [`decode`] and [`TraceCalls::merge`] as a detect replica merges
/// carriers.
pub fn parts(calls: &TraceCalls) -> Vec<String> {
    let mut services: Vec<Sym> = calls
        .calls
        .iter()
        .filter(|c| !c.shadow)
        .map(|c| c.edge.caller)
        .chain(calls.saturation.queries.iter().map(|q| q.service))
        .chain(calls.saturation.requests.iter().map(|r| r.service))
        .collect();
    let root_service = calls.root.entry.service;
    if calls.owns_root {
        services.push(root_service);
    }
    services.sort_by_key(|s| s.as_str());
    services.dedup();
    services
        .into_iter()
        .filter_map(|s| part_of(calls, s, calls.owns_root && s == root_service))
        .filter_map(|w| serde_json::to_string(&w).ok())
        .collect()
}

/// `service`'s part of `calls`, or `None` when it has nothing to carry.
fn part_of(calls: &TraceCalls, service: Sym, own: bool) -> Option<Wire> {
    // The calls it made, and every call above one of them.
    let mut keep = vec![false; calls.calls.len()];
    for (i, c) in calls.calls.iter().enumerate().rev() {
        if c.edge.caller == service || keep[i] {
            keep[i] = true;
            if let Some(p) = c.parent {
                keep[p as usize] = true;
            }
        }
    }
    let mut index: Vec<Option<u32>> = vec![None; calls.calls.len()];
    let mut wires: Vec<CallWire> = Vec::new();
    let mut own_calls = false;
    for (i, c) in calls.calls.iter().enumerate().filter(|(i, _)| keep[*i]) {
        index[i] = Some(wires.len() as u32);
        let shadow = c.shadow || c.edge.caller != service;
        own_calls |= !shadow;
        let flags = [
            (c.timed_out, TIMED_OUT),
            (c.relayed, RELAYED),
            (c.root_span, ROOT_SPAN),
            (shadow, SHADOW),
        ]
        .iter()
        .filter(|f| f.0)
        .fold(0, |acc, f| acc | f.1);
        wires.push(CallWire(
            edge_wire(c.edge),
            c.start_offset_ns,
            c.duration_ns,
            c.overrun_ns,
            c.depth,
            c.parent.and_then(|p| index[p as usize]),
            flags,
        ));
    }
    let r = &calls.root;
    let base = Base(r.start_ns);
    let sat = &calls.saturation;
    let queries: Vec<QueryWire> = sat
        .queries
        .iter()
        .filter(|q| q.service == service)
        .map(|q| {
            QueryWire(
                q.statement.to_string(),
                (q.target.system, q.target.address, q.target.namespace),
                base.off((q.start_ns, q.end_ns())),
                q.critical_ns,
                q.lock_wait_ns,
            )
        })
        .collect();
    let requests: Vec<RequestWire> = sat
        .requests
        .iter()
        .filter(|r| r.service == service)
        .map(|r| {
            RequestWire(
                r.instance,
                r.operation,
                base.off((r.start_ns, r.end_ns)),
                r.caller.map(|c| base.off(c)),
                sat.busy(r).iter().map(|&b| base.off(b)).collect(),
                sat.use_parts(r)
                    .into_iter()
                    .map(|u| {
                        UseWire(
                            match u.target {
                                Target::Pool(name) => TargetWire::Pool(name),
                                Target::Db(d) => TargetWire::Db(d.system, d.address, d.namespace),
                                Target::Http(peer) => TargetWire::Http(peer),
                            },
                            u.calls.iter().map(|&c| base.off(c)).collect(),
                            u.wait_ns,
                            u.explicit,
                            base.off(u.hold),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    if !own && !own_calls && queries.is_empty() && requests.is_empty() {
        return None;
    }
    Some(Wire {
        v: VERSION,
        service,
        root: RootWire(
            r.entry.service,
            r.entry.operation,
            r.start_ns,
            r.duration_ns,
            r.timed_out,
            SpanKind::ALL.iter().position(|k| *k == r.kind).unwrap_or(0) as u8,
            r.http_status,
            r.relayed_from.map(edge_wire),
            own,
        ),
        calls: wires,
        queries,
        requests,
    })
}

/// The part of trace `trace_id`'s records that `text` (a [`RECORDS`]
/// attribute) carries.
pub fn decode(trace_id: TraceId, text: &str) -> Result<TraceCalls, RecordError> {
    let w: Wire = serde_json::from_str(text)?;
    if w.v != VERSION {
        return Err(RecordError::Version(w.v));
    }
    let RootWire(service, operation, start_ns, duration_ns, timed_out, kind, http, relayed, own) =
        w.root;
    let kind = *SpanKind::ALL
        .get(kind as usize)
        .ok_or(RecordError::Inconsistent("unknown span kind"))?;
    let base = Base(start_ns);
    let mut calls = Vec::with_capacity(w.calls.len());
    for (i, CallWire(edge, start, duration, overrun, depth, parent, flags)) in
        w.calls.into_iter().enumerate()
    {
        if parent.is_some_and(|p| p as usize >= i) {
            return Err(RecordError::Inconsistent("a call's parent comes after it"));
        }
        calls.push(CallRecord {
            edge: edge_of(edge),
            start_offset_ns: start,
            duration_ns: duration,
            timed_out: flags & TIMED_OUT != 0,
            relayed: flags & RELAYED != 0,
            overrun_ns: overrun,
            depth,
            parent,
            root_span: flags & ROOT_SPAN != 0,
            shadow: flags & SHADOW != 0,
        });
    }
    let mut saturation = SaturationRecords::default();
    for QueryWire(statement, (system, address, namespace), at, critical, lock_wait) in w.queries {
        let (start, end) = base.abs(at);
        saturation.queries.push(QueryRecord {
            service: w.service,
            statement: Arc::from(statement),
            target: DbTarget {
                system,
                address,
                namespace,
            },
            start_ns: start,
            duration_ns: end
                .checked_sub(start)
                .ok_or(RecordError::Inconsistent("a query ends before it starts"))?,
            critical_ns: critical,
            lock_wait_ns: lock_wait,
        });
    }
    for RequestWire(instance, operation, at, caller, busy, uses) in w.requests {
        let (start, end) = base.abs(at);
        if end < start {
            return Err(RecordError::Inconsistent("a request ends before it starts"));
        }
        let uses: Vec<UseParts> = uses
            .into_iter()
            .map(|UseWire(target, calls, wait, explicit, hold)| UseParts {
                target: match target {
                    TargetWire::Pool(name) => Target::Pool(name),
                    TargetWire::Db(system, address, namespace) => Target::Db(DbTarget {
                        system,
                        address,
                        namespace,
                    }),
                    TargetWire::Http(peer) => Target::Http(peer),
                },
                calls: calls.into_iter().map(|c| base.abs(c)).collect(),
                wait_ns: wait,
                explicit,
                hold: base.abs(hold),
            })
            .collect();
        let busy: Vec<(u64, u64)> = busy.into_iter().map(|b| base.abs(b)).collect();
        let head = RequestRecord::new(
            (w.service, instance, operation),
            (start, end),
            caller.map(|c| base.abs(c)),
        );
        saturation.push_request(head, &busy, &uses);
    }
    Ok(TraceCalls {
        trace_id,
        root: RootRecord {
            entry: EntryPoint { service, operation },
            start_ns,
            duration_ns,
            timed_out,
            kind,
            http_status: http,
            relayed_from: relayed.map(edge_of),
        },
        calls,
        saturation,
        owns_root: own,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{analyze, budget::call_records, testing};
    use crate::model::{SpanKind, StatusCode};

    const MS: u64 = 1_000_000;

    /// gateway → api (instance api-1) → db-svc, and api's own query, with a
    /// call that gave up.
    fn analyzed() -> AnalyzedTrace {
        let res = r#"[["service.instance.id","api-1"]]"#;
        let mut gave_up = testing::span(
            "api",
            (4, 3),
            "GET /stock",
            SpanKind::Client,
            (20 * MS, 80 * MS),
        );
        gave_up.status = StatusCode::Error;
        analyze(testing::trace(vec![
            (
                testing::span(
                    "gateway",
                    (1, 0),
                    "GET /order",
                    SpanKind::Server,
                    (0, 100 * MS),
                ),
                vec![],
            ),
            (
                testing::span(
                    "gateway",
                    (2, 1),
                    "GET /api",
                    SpanKind::Client,
                    (MS, 99 * MS),
                ),
                vec![],
            ),
            (
                testing::span(
                    "api",
                    (3, 2),
                    "GET /api",
                    SpanKind::Server,
                    (2 * MS, 98 * MS),
                ),
                vec![("hopscope.resource", res)],
            ),
            (gave_up, vec![("hopscope.resource", res)]),
            (
                testing::span(
                    "db-svc",
                    (5, 4),
                    "GET /stock",
                    SpanKind::Server,
                    (21 * MS, 90 * MS),
                ),
                vec![],
            ),
            (
                testing::span("api", (6, 3), "SELECT", SpanKind::Client, (3 * MS, 15 * MS)),
                vec![
                    ("hopscope.resource", res),
                    ("db.system", "postgresql"),
                    ("db.statement", "SELECT * FROM orders WHERE id = 7"),
                ],
            ),
        ]))
    }

    fn sorted_calls(t: &TraceCalls) -> Vec<(EdgeKey, u64, u64, u16, bool)> {
        let mut v: Vec<_> = t
            .calls
            .iter()
            .map(|c| (c.edge, c.start_offset_ns, c.duration_ns, c.depth, c.shadow))
            .collect();
        v.sort_by_key(|c| (c.0.sort_key(), c.1, c.2));
        v
    }

    #[test]
    fn the_parts_of_a_trace_merge_back_into_its_records() {
        let t = analyzed();
        let whole = call_records(&t);
        assert!(whole.calls.len() >= 3, "{whole:?}");
        assert_eq!(whole.saturation.queries.len(), 1);
        let parts = carriers(&t, &whole);
        // One part per service with something of its own: gateway (the
        // root's), api (calls, the query, its instance's request), and none
        // for db-svc, which made no call.
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert_eq!(
            parts[0].0, t.trace.root,
            "the root's part rides on the root span"
        );
        let decoded: Vec<TraceCalls> = parts
            .iter()
            .map(|(_, text)| decode(whole.trace_id, text).unwrap())
            .collect();
        assert!(decoded[0].owns_root && !decoded[1].owns_root);
        // The api part holds gateway's call above its own as a shadow.
        assert!(decoded[1]
            .calls
            .iter()
            .any(|c| c.shadow && c.edge.caller.as_str() == "gateway"));
        assert!(decoded[1]
            .calls
            .iter()
            .all(|c| c.shadow || c.edge.caller.as_str() == "api"));

        // Merged in either order, the parts are the trace's records again.
        for order in [[0, 1], [1, 0]] {
            let mut merged = decoded[order[0]].clone();
            merged.merge(&decoded[order[1]]);
            assert!(merged.owns_root);
            assert_eq!(merged.root, whole.root);
            assert_eq!(sorted_calls(&merged), sorted_calls(&whole));
            for (i, c) in merged.calls.iter().enumerate() {
                assert!(c.parent.is_none_or(|p| (p as usize) < i), "parents first");
            }
            assert_eq!(merged.saturation.queries, whole.saturation.queries);
            assert_eq!(
                merged.saturation.requests.len(),
                whole.saturation.requests.len()
            );
            for (a, b) in merged
                .saturation
                .requests
                .iter()
                .zip(&whole.saturation.requests)
            {
                assert_eq!(merged.saturation.busy(a), whole.saturation.busy(b));
                assert_eq!(
                    merged.saturation.use_parts(a),
                    whole.saturation.use_parts(b)
                );
            }
        }
    }

    #[test]
    fn a_malformed_or_foreign_record_is_refused_with_its_reason() {
        let id = TraceId::from_bytes(&[7; 16]).unwrap();
        assert!(matches!(decode(id, "{"), Err(RecordError::Malformed(_))));
        let t = analyzed();
        let text = carriers(&t, &call_records(&t)).remove(0).1;
        let v2 = text.replacen("\"v\":1", "\"v\":2", 1);
        assert!(matches!(decode(id, &v2), Err(RecordError::Version(2))));
        let api = carriers(&t, &call_records(&t)).remove(1).1;
        // A call whose parent comes after it.
        let mut cycle: serde_json::Value = serde_json::from_str(&api).unwrap();
        cycle["calls"][1][5] = 9.into();
        let cycle = cycle.to_string();
        assert!(matches!(
            decode(id, &cycle),
            Err(RecordError::Inconsistent(_))
        ));
    }

    /// gateway (gives up at 29 s) → api, whose call to reports gives up at
    /// 30 s: an inversion whose deadline (the gateway's) and timeout (api's)
    /// are owned by different detect replicas.
    fn inverted(n: u8) -> AnalyzedTrace {
        const S: u64 = 1_000 * MS;
        let at = u64::from(n) * 100 * S;
        let t = |a: u64, b: u64| (at + a, at + b);
        let mut gw = testing::span(
            "gateway",
            (1, 0),
            "GET /report",
            SpanKind::Server,
            t(0, 29 * S),
        );
        gw.http_status = std::num::NonZeroU16::new(504);
        let mut api = testing::span(
            "api",
            (2, 1),
            "GET /report",
            SpanKind::Server,
            t(MS, 31 * S),
        );
        api.http_status = std::num::NonZeroU16::new(504);
        let mut call = testing::span(
            "api",
            (3, 2),
            "GET",
            SpanKind::Client,
            t(50 * MS, 30 * S + 50 * MS),
        );
        call.status = StatusCode::Error;
        call.extra = Some(Box::new(crate::model::Extra {
            status_message: Some("context deadline exceeded".into()),
            ..Default::default()
        }));
        let reports = testing::span(
            "reports",
            (4, 3),
            "GET /build",
            SpanKind::Server,
            t(51 * MS, 40 * S),
        );
        let mut trace = testing::trace(vec![
            (gw, vec![]),
            (api, vec![]),
            (call, vec![]),
            (reports, vec![]),
        ]);
        trace.trace_id = TraceId::from_bytes(&[n + 1; 16]).unwrap();
        analyze(trace)
    }

    /// (kind, finding id, count) of what the budget detectors report.
    fn found(observations: &[crate::analyze::Observation]) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = observations
            .iter()
            .map(|o| {
                (
                    format!("{:?}", o.kind),
                    crate::analyze::finding_id(o.kind, &o.culprit),
                    o.count,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn detect_replicas_owning_different_services_find_what_one_window_finds() {
        use crate::analyze::budget::{detect, Timeouts};
        use crate::analyze::Thresholds;
        let traces: Vec<AnalyzedTrace> = (0..4).map(inverted).collect();
        let thresholds = Thresholds::default();
        let whole: Vec<Arc<TraceCalls>> =
            traces.iter().map(|t| Arc::new(call_records(t))).collect();
        let (_, one) = detect(&whole, &thresholds, &Timeouts::default());
        assert!(
            found(&one).iter().any(|f| f.0 == "TimeoutInversion"),
            "{:?}",
            found(&one)
        );

        // Replica 0 owns gateway, replica 1 api and reports.
        let owner = |service: &str| usize::from(service != "gateway");
        let mut windows: [Vec<Arc<TraceCalls>>; 2] = Default::default();
        for t in &traces {
            let whole = call_records(t);
            let mut parts: [Option<TraceCalls>; 2] = Default::default();
            for (span, text) in carriers(t, &whole) {
                let part = decode(whole.trace_id, &text).unwrap();
                let slot = &mut parts[owner(t.trace.span(span).service.as_str())];
                match slot {
                    Some(held) => held.merge(&part),
                    None => *slot = Some(part),
                }
            }
            for (w, p) in windows.iter_mut().zip(parts) {
                w.extend(p.map(Arc::new));
            }
        }
        // A first pass each, then again with the other's timeouts (what the
        // detector task fetches from its peers).
        let first: Vec<Timeouts> = windows
            .iter()
            .map(|w| Timeouts::of(&detect(w, &thresholds, &Timeouts::default()).0))
            .collect();
        let mut split = Vec::new();
        for (i, w) in windows.iter().enumerate() {
            split.extend(detect(w, &thresholds, &first[1 - i]).1);
        }
        assert_eq!(found(&split), found(&one));
        // Without the other's timeouts, replica 1 cannot see the inversion.
        let (_, alone) = detect(&windows[1], &thresholds, &Timeouts::default());
        assert!(!found(&alone).iter().any(|f| f.0 == "TimeoutInversion"));
    }
}
