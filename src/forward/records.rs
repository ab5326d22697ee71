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

#[derive(serde::Serialize, serde::Deserialize)]
struct RootWire {
    entry: (Sym, Sym),
    start: u64,
    dur: u64,
    timed_out: bool,
    /// Index in [`SpanKind::ALL`].
    kind: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relayed_from: Option<EdgeWire>,
    own: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CallWire {
    edge: EdgeWire,
    start: u64,
    dur: u64,
    timed_out: bool,
    relayed: bool,
    overrun: u64,
    depth: u16,
    /// Index in this part's `calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<u32>,
    root_span: bool,
    shadow: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct QueryWire {
    statement: String,
    target: (Option<Sym>, Option<Sym>, Option<Sym>),
    start: u64,
    dur: u64,
    critical: u64,
    lock_wait: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RequestWire {
    instance: Sym,
    operation: Sym,
    start: u64,
    end: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    caller: Option<(u64, u64)>,
    busy: Vec<(u64, u64)>,
    uses: Vec<UseWire>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetWire {
    Pool(Sym),
    Db(Option<Sym>, Option<Sym>, Option<Sym>),
    Http(Sym),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct UseWire {
    target: TargetWire,
    calls: Vec<(u64, u64)>,
    wait: u64,
    explicit: bool,
    hold: (u64, u64),
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
    for (i, c) in calls.calls.iter().enumerate().filter(|(i, _)| keep[*i]) {
        index[i] = Some(wires.len() as u32);
        wires.push(CallWire {
            edge: edge_wire(c.edge),
            start: c.start_offset_ns,
            dur: c.duration_ns,
            timed_out: c.timed_out,
            relayed: c.relayed,
            overrun: c.overrun_ns,
            depth: c.depth,
            parent: c.parent.and_then(|p| index[p as usize]),
            root_span: c.root_span,
            shadow: c.shadow || c.edge.caller != service,
        });
    }
    let sat = &calls.saturation;
    let queries: Vec<QueryWire> = sat
        .queries
        .iter()
        .filter(|q| q.service == service)
        .map(|q| QueryWire {
            statement: q.statement.to_string(),
            target: (q.target.system, q.target.address, q.target.namespace),
            start: q.start_ns,
            dur: q.duration_ns,
            critical: q.critical_ns,
            lock_wait: q.lock_wait_ns,
        })
        .collect();
    let requests: Vec<RequestWire> = sat
        .requests
        .iter()
        .filter(|r| r.service == service)
        .map(|r| RequestWire {
            instance: r.instance,
            operation: r.operation,
            start: r.start_ns,
            end: r.end_ns,
            caller: r.caller,
            busy: sat.busy(r).to_vec(),
            uses: sat
                .use_parts(r)
                .into_iter()
                .map(|u| UseWire {
                    target: match u.target {
                        Target::Pool(name) => TargetWire::Pool(name),
                        Target::Db(d) => TargetWire::Db(d.system, d.address, d.namespace),
                        Target::Http(peer) => TargetWire::Http(peer),
                    },
                    calls: u.calls,
                    wait: u.wait_ns,
                    explicit: u.explicit,
                    hold: u.hold,
                })
                .collect(),
        })
        .collect();
    let own_calls = wires.iter().any(|w| !w.shadow);
    if !own && !own_calls && queries.is_empty() && requests.is_empty() {
        return None;
    }
    let r = &calls.root;
    Some(Wire {
        v: VERSION,
        service,
        root: RootWire {
            entry: (r.entry.service, r.entry.operation),
            start: r.start_ns,
            dur: r.duration_ns,
            timed_out: r.timed_out,
            kind: SpanKind::ALL.iter().position(|k| *k == r.kind).unwrap_or(0) as u8,
            http: r.http_status,
            relayed_from: r.relayed_from.map(edge_wire),
            own,
        },
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
    let kind = *SpanKind::ALL
        .get(w.root.kind as usize)
        .ok_or(RecordError::Inconsistent("unknown span kind"))?;
    let mut calls = Vec::with_capacity(w.calls.len());
    for (i, c) in w.calls.into_iter().enumerate() {
        if c.parent.is_some_and(|p| p as usize >= i) {
            return Err(RecordError::Inconsistent("a call's parent comes after it"));
        }
        calls.push(CallRecord {
            edge: edge_of(c.edge),
            start_offset_ns: c.start,
            duration_ns: c.dur,
            timed_out: c.timed_out,
            relayed: c.relayed,
            overrun_ns: c.overrun,
            depth: c.depth,
            parent: c.parent,
            root_span: c.root_span,
            shadow: c.shadow,
        });
    }
    let mut saturation = SaturationRecords::default();
    saturation
        .queries
        .extend(w.queries.into_iter().map(|q| QueryRecord {
            service: w.service,
            statement: Arc::from(q.statement),
            target: DbTarget {
                system: q.target.0,
                address: q.target.1,
                namespace: q.target.2,
            },
            start_ns: q.start,
            duration_ns: q.dur,
            critical_ns: q.critical,
            lock_wait_ns: q.lock_wait,
        }));
    for r in w.requests {
        if r.end < r.start {
            return Err(RecordError::Inconsistent("a request ends before it starts"));
        }
        let uses: Vec<UseParts> = r
            .uses
            .into_iter()
            .map(|u| UseParts {
                target: match u.target {
                    TargetWire::Pool(name) => Target::Pool(name),
                    TargetWire::Db(system, address, namespace) => Target::Db(DbTarget {
                        system,
                        address,
                        namespace,
                    }),
                    TargetWire::Http(peer) => Target::Http(peer),
                },
                calls: u.calls,
                wait_ns: u.wait,
                explicit: u.explicit,
                hold: u.hold,
            })
            .collect();
        let head = RequestRecord::new(
            (w.service, r.instance, r.operation),
            (r.start, r.end),
            r.caller,
        );
        saturation.push_request(head, &r.busy, &uses);
    }
    Ok(TraceCalls {
        trace_id,
        root: RootRecord {
            entry: EntryPoint {
                service: w.root.entry.0,
                operation: w.root.entry.1,
            },
            start_ns: w.root.start,
            duration_ns: w.root.dur,
            timed_out: w.root.timed_out,
            kind,
            http_status: w.root.http,
            relayed_from: w.root.relayed_from.map(edge_of),
        },
        calls,
        saturation,
        owns_root: w.root.own,
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
        let cycle = api.replacen("\"parent\":0", "\"parent\":9", 1);
        assert_ne!(cycle, api);
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
