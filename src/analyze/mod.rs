//! Analysis of one assembled trace: pure functions, no I/O, no clock. Per-trace
//! detectors (`cascade.rs`, `health_check.rs`, the request's own anti-patterns
//! in [`patterns`]) run here and leave [`Observation`]s on the result; the cross-trace detectors ([`budget`],
//! [`saturation`]) run over the records of many. [`coverage`] counts what the
//! spans of each service carry, and which detectors that leaves blind.
//!
//! [`analyze`] computes the critical path and turns it into hops: each segment
//! is charged to the span it belongs to, except the own time of a CLIENT span that
//! called a SERVER span of another service, which is the edge's time and is
//! charged to a *wire* hop (caller service, client operation, callee), or to a
//! *queue* hop for the part before the callee's SERVER span started that the
//! response's transport cannot explain (`QUEUE_FACTOR`).

pub mod budget;
mod cascade;
mod checkout;
pub mod coverage;
mod critical_path;
pub mod evidence;
pub mod finding;
mod health_check;
mod layers;
pub mod names;
pub mod patterns;
pub mod saturation;
pub mod thresholds;
mod timeout;

pub use cascade::cascading_timeout;
pub use checkout::checkouts;
pub use critical_path::{critical_path, CriticalPath, Segment};
pub use evidence::Evidence;
pub use finding::{
    finding_id, ChainHop, CodeLocation, Crossed, Culprit, FindingKind, Observation, Severity,
};
pub use health_check::{
    slow_health_checks, HealthRoutes, InvalidHealthRoute, DEFAULT_HEALTH_ROUTES,
};
pub use layers::layers;
pub use thresholds::{InvalidThreshold, Thresholds};
pub use timeout::{says_timeout, timeout, TimeoutCause};

use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use crate::model::{SpanKind, StatusCode, Sym, Trace, Warning};

/// What the configuration tells the per-trace detectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Every detector's thresholds (the `[detectors]` section), validated.
    pub thresholds: Thresholds,
}

static DEFAULT_OPTIONS: LazyLock<Options> = LazyLock::new(Options::default);

/// Whether a hop is a span's own work, the network time of an edge, or the
/// time a request queued in front of its callee before the callee started it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    Span,
    Wire,
    Queue,
}

impl HopKind {
    /// Every kind of hop.
    pub const ALL: [HopKind; 3] = [HopKind::Span, HopKind::Wire, HopKind::Queue];
}

/// What a hop is, for aggregation across traces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct HopKey {
    pub kind: HopKind,
    /// For wire hops, the caller.
    pub service: Sym,
    /// For wire hops, the caller's CLIENT span operation.
    pub operation: Sym,
    /// For wire hops, the callee service.
    pub peer: Option<Sym>,
}

/// One hop's contribution to one trace's critical path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hop {
    pub key: HopKey,
    pub critical_ns: u64,
    /// `critical_ns` / root duration; the shares of a trace sum to 1.
    pub share: f64,
}

/// Where requests enter: the root span's service and operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct EntryPoint {
    pub service: Sym,
    pub operation: Sym,
}

/// A trace with its analysis: what the store keeps and the API shows.
#[derive(Debug, Clone)]
pub struct AnalyzedTrace {
    pub trace: Trace,
    pub entry: EntryPoint,
    pub path: CriticalPath,
    /// Per segment of `path.segments`, the hop it is charged to.
    pub segment_hops: Vec<HopKey>,
    /// Sorted by critical time, largest first.
    pub hops: Vec<Hop>,
    pub warnings: Vec<Warning>,
    pub error: bool,
    /// Per span: did it end in a timeout ([`timeout`]).
    pub timed_out: Vec<bool>,
    /// Per span: it repeats a call another span records ([`layers`]); the
    /// detectors count the call once.
    pub layered: Vec<bool>,
    /// Per span: it obtains a database connection ([`checkouts`]).
    pub checkouts: Vec<bool>,
    /// Per span: the name it is aggregated under, and the attribute that
    /// would have kept ids out of it ([`names::aggregation_name`]).
    pub names: Vec<(Sym, Option<names::Fix>)>,
    /// What the per-trace detectors found (moved to the findings when stored).
    pub observations: Vec<Observation>,
    /// The findings this trace contributed to (set when stored).
    pub finding_ids: Vec<u64>,
    /// Per finding whose observation named spans of this trace (a per-trace
    /// pattern, a cascade's chain): its id and those spans (set when stored),
    /// for marking them on the trace page.
    pub marks: Vec<(u64, Vec<crate::model::SpanId>)>,
}

impl AnalyzedTrace {
    pub fn duration_ns(&self) -> u64 {
        self.trace.end(self.trace.root) - self.trace.start(self.trace.root)
    }

    /// Approximate bytes held.
    pub fn size_bytes(&self) -> usize {
        self.trace.size_bytes()
            + self.path.segments.len() * (size_of::<Segment>() + 16)
            + self.trace.len() * (18 + size_of::<(Sym, Option<names::Fix>)>())
            + self.hops.len() * size_of::<Hop>()
            + self
                .marks
                .iter()
                .map(|(_, spans)| 32 + spans.len() * size_of::<crate::model::SpanId>())
                .sum::<usize>()
    }
}

/// The SERVER span of another service that `span` called, when `span` is a
/// CLIENT span of a remote call: the two ends of a service-graph edge, whose
/// CLIENT time outside its children is the edge's wire time.
pub fn remote_server(trace: &Trace, span: u32) -> Option<u32> {
    let s = trace.span(span);
    if s.kind != SpanKind::Client {
        return None;
    }
    trace.children(span).iter().copied().find(|&c| {
        let child = trace.span(c);
        child.kind == SpanKind::Server && child.service != s.service
    })
}

/// A CLIENT span's callee, and the part of its wait before the callee's
/// SERVER span started that was queueing, where the evidence allows.
#[derive(Debug, Clone, Copy)]
struct Remote {
    peer: Sym,
    queue: Option<(u64, u64)>,
}

/// The time before the callee's SERVER span starts is the request's transport
/// plus any queue in front of the callee (an event loop busy elsewhere, a full
/// accept queue: the runtime starts the span when it gets to the request);
/// the time after it ends is the response's transport alone. When the first
/// is at least this many times the second ...
const QUEUE_FACTOR: u64 = 5;
/// ... plus this much (a DNS lookup or a new connection's handshake, which
/// also come before the request reaches the callee, stay wire), the excess
/// is queueing, not network.
const QUEUE_MIN_NS: u64 = 50_000_000;

/// The callee when `span` is a CLIENT span that called a SERVER span of
/// another service, with its queue window: `[client start + response
/// transport, server start)` when the wait before the server span dwarfs the
/// response's transport (`QUEUE_FACTOR`, `QUEUE_MIN_NS`).
fn remote(trace: &Trace, span: u32) -> Option<Remote> {
    let server = remote_server(trace, span)?;
    let (start, end) = (trace.start(span), trace.end(span));
    let before = trace.start(server).saturating_sub(start);
    let after = end.saturating_sub(trace.end(server));
    Some(Remote {
        peer: trace.span(server).service,
        queue: (before >= QUEUE_FACTOR * after + QUEUE_MIN_NS)
            .then(|| (start + after, trace.start(server))),
    })
}

/// Analyzes one trace with the default [`Options`].
pub fn analyze(trace: Trace) -> AnalyzedTrace {
    analyze_with(trace, &DEFAULT_OPTIONS)
}

/// Analyzes one trace.
pub fn analyze_with(trace: Trace, options: &Options) -> AnalyzedTrace {
    let mut path = critical_path(&trace);
    let root = trace.root_span();
    // Entry points and hops are named without the ids some span names carry:
    // every span's name once, for the hops, the coverage count and the calls.
    let names: Vec<(Sym, Option<names::Fix>)> = (0..trace.len() as u32)
        .map(|i| names::aggregation_name(&trace, i))
        .collect();
    let entry = EntryPoint {
        service: root.service,
        operation: names[trace.root as usize].0,
    };
    // Per span, its callee and queue window when it is a CLIENT span of a
    // remote call (computed once).
    let mut remotes: Vec<Option<Option<Remote>>> = vec![None; trace.len()];
    let mut segments: Vec<Segment> = Vec::with_capacity(path.segments.len());
    let mut segment_hops: Vec<HopKey> = Vec::with_capacity(path.segments.len());
    for seg in &path.segments {
        let span = trace.span(seg.span);
        let operation = names[seg.span as usize].0;
        let key = |kind, peer| HopKey {
            kind,
            service: span.service,
            operation,
            peer,
        };
        match *remotes[seg.span as usize].get_or_insert_with(|| remote(&trace, seg.span)) {
            Some(Remote { peer, queue }) => {
                let window = queue
                    .map(|(a, b)| (a.max(seg.start_ns), b.min(seg.end_ns)))
                    .filter(|(a, b)| a < b);
                let Some((a, b)) = window else {
                    segments.push(*seg);
                    segment_hops.push(key(HopKind::Wire, Some(peer)));
                    continue;
                };
                // The part of the segment in the queue window is queueing,
                // the rest wire.
                for (start_ns, end_ns, kind) in [
                    (seg.start_ns, a, HopKind::Wire),
                    (a, b, HopKind::Queue),
                    (b, seg.end_ns, HopKind::Wire),
                ] {
                    if end_ns > start_ns {
                        segments.push(Segment {
                            span: seg.span,
                            start_ns,
                            end_ns,
                        });
                        segment_hops.push(key(kind, Some(peer)));
                    }
                }
            }
            None => {
                segments.push(*seg);
                segment_hops.push(key(HopKind::Span, None));
            }
        }
    }
    path.segments = segments;

    let mut by_key: FxHashMap<HopKey, u64> =
        FxHashMap::with_capacity_and_hasher(path.segments.len().min(64), Default::default());
    for (seg, key) in path.segments.iter().zip(&segment_hops) {
        *by_key.entry(*key).or_default() += seg.end_ns - seg.start_ns;
    }
    let total = trace.end(trace.root) - trace.start(trace.root);
    let mut hops: Vec<Hop> = if total == 0 {
        // A zero-length root: the whole (empty) request is the root's own.
        vec![Hop {
            key: HopKey {
                kind: HopKind::Span,
                service: entry.service,
                operation: entry.operation,
                peer: None,
            },
            critical_ns: 0,
            share: 1.0,
        }]
    } else {
        by_key
            .into_iter()
            .map(|(key, ns)| Hop {
                key,
                critical_ns: ns,
                share: ns as f64 / total as f64,
            })
            .collect()
    };
    hops.sort_by(|a, b| b.critical_ns.cmp(&a.critical_ns).then(a.key.cmp(&b.key)));

    let mut warnings = trace.warnings.clone();
    warnings.extend(path.notes.iter().cloned());
    let error = trace.spans.iter().any(|s| s.status == StatusCode::Error);
    let timed_out: Vec<bool> = trace
        .spans
        .iter()
        .map(|s| timeout(s, &trace.arena).is_some())
        .collect();
    let layered = layers(&trace);
    let checkouts = checkouts(&trace);
    let mut observations: Vec<Observation> =
        cascading_timeout(&trace, &timed_out, &options.thresholds.cascade)
            .into_iter()
            .collect();
    observations.extend(slow_health_checks(
        &trace,
        &options.thresholds.slow_health_check,
    ));
    let mut analyzed = AnalyzedTrace {
        trace,
        entry,
        path,
        segment_hops,
        hops,
        warnings,
        error,
        timed_out,
        layered,
        checkouts,
        names,
        observations,
        finding_ids: Vec::new(),
        marks: Vec::new(),
    };
    let found = patterns::detect(&analyzed, &options.thresholds);
    analyzed.observations.extend(found);
    analyzed
}

#[cfg(test)]
mod tests {
    use super::testing::{span, trace};
    use super::*;

    const MS: u64 = 1_000_000;

    /// The hops of a gateway whose CLIENT span waits `(client)` on a callee's
    /// SERVER span over `(server)` (ms).
    fn hops_of(client: (u64, u64), server: (u64, u64)) -> Vec<(HopKind, u64)> {
        let t = analyze(trace(vec![
            (
                span(
                    "gateway",
                    (1, 0),
                    "GET /",
                    SpanKind::Server,
                    (0, client.1 * MS),
                ),
                vec![],
            ),
            (
                span(
                    "gateway",
                    (2, 1),
                    "GET",
                    SpanKind::Client,
                    (client.0 * MS, client.1 * MS),
                ),
                vec![],
            ),
            (
                span(
                    "hasher",
                    (3, 2),
                    "GET /hash",
                    SpanKind::Server,
                    (server.0 * MS, server.1 * MS),
                ),
                vec![],
            ),
        ]));
        let mut out: Vec<(HopKind, u64)> = t
            .hops
            .iter()
            .map(|h| (h.key.kind, h.critical_ns / MS))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_wait_before_the_callee_starts_that_its_answer_cannot_explain_is_queueing() {
        // 900 ms before the callee started, 1 ms back: 899 ms queued, 1 ms
        // each way on the wire.
        assert_eq!(
            hops_of((0, 1_000), (900, 999)),
            [
                (HopKind::Span, 99),
                (HopKind::Wire, 2),
                (HopKind::Queue, 899)
            ]
        );
        // The same both ways, or a slow network both ways: wire.
        assert_eq!(
            hops_of((0, 100), (1, 99)),
            [(HopKind::Span, 98), (HopKind::Wire, 2)]
        );
        assert_eq!(
            hops_of((0, 160), (30, 150)),
            [(HopKind::Span, 120), (HopKind::Wire, 40)]
        );
    }
}

/// Traces built by hand for the analysis' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::assemble::assemble;
    use crate::model::{AttrArena, Span, SpanId, SpanKind, SpanSet, Sym, Trace, TraceId};

    /// A span of `service`, ids `(id, parent)` (parent 0: none), times in ns.
    pub fn span(
        service: &str,
        (id, parent): (u64, u64),
        name: &str,
        kind: SpanKind,
        times: (u64, u64),
    ) -> Span {
        Span::new(
            SpanId::from_u64(id).unwrap(),
            SpanId::from_u64(parent),
            service,
            name,
            kind,
            times,
        )
    }

    /// The assembled trace of `(id, parent, start, end)` spans of `svc`
    /// named `op{id}` (ids 1-based, parent 0: none), without attributes.
    pub fn tree(spans: &[(u64, u64, u64, u64)]) -> Trace {
        let spans = spans
            .iter()
            .map(|&(id, parent, start, end)| {
                span(
                    "svc",
                    (id, parent),
                    &format!("op{id}"),
                    SpanKind::Internal,
                    (start, end),
                )
            })
            .collect();
        assemble(TraceId::from_bytes(&[1; 16]).unwrap(), spans).unwrap()
    }

    /// The assembled trace of `spans` with their string attributes.
    pub fn trace(spans: Vec<(Span, Vec<(&str, &str)>)>) -> Trace {
        let mut set = SpanSet::default();
        let mut scratch = AttrArena::default();
        for (mut s, attrs) in spans {
            let mark = scratch.mark();
            for (k, v) in attrs {
                scratch.sym(Sym::new(k), Sym::new(v));
            }
            s.attrs = scratch.finish(mark);
            set.push(s, &mut scratch);
            scratch.clear();
        }
        assemble(TraceId::from_bytes(&[7; 16]).unwrap(), set).unwrap()
    }
}
