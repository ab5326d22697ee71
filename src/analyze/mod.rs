//! Analysis of one assembled trace: pure functions, no I/O, no clock. Per-trace
//! detectors (`cascade.rs`, `health_check.rs`) run here and leave
//! [`Observation`]s on the result; the cross-trace detectors ([`budget`],
//! [`saturation`]) run over the records of many. [`coverage`] counts what the
//! spans of each service carry, and which detectors that leaves blind.
//!
//! [`analyze`] computes the critical path and turns it into hops: each segment
//! is charged to the span it belongs to, except the own time of a CLIENT span that
//! called a SERVER span of another service, which is the edge's wire-and-queue time
//! and is charged to a *wire* hop (caller service, client operation, callee).

pub mod budget;
mod cascade;
mod checkout;
pub mod coverage;
mod critical_path;
pub mod finding;
mod health_check;
mod layers;
pub mod saturation;
mod timeout;

pub use cascade::cascading_timeout;
pub use checkout::checkouts;
pub use critical_path::{critical_path, CriticalPath, Segment};
pub use finding::{finding_id, ChainHop, Culprit, FindingKind, Observation, Severity};
pub use health_check::{
    slow_health_checks, HealthRoutes, InvalidHealthRoute, DEFAULT_HEALTH_ROUTES,
    HEALTH_CHECK_LIMIT_NS,
};
pub use layers::layers;
pub use timeout::{says_timeout, timeout, TimeoutCause};

use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use crate::model::{SpanKind, StatusCode, Sym, Trace, Warning};

/// What the configuration tells the per-trace detectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The routes `slow_health_check` watches.
    pub health_routes: HealthRoutes,
}

static DEFAULT_OPTIONS: LazyLock<Options> = LazyLock::new(Options::default);

/// Whether a hop is a span's own work or the network/queue time of an edge.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    Span,
    Wire,
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
    /// What the per-trace detectors found (moved to the findings when stored).
    pub observations: Vec<Observation>,
    /// The findings this trace contributed to (set when stored).
    pub finding_ids: Vec<u64>,
}

impl AnalyzedTrace {
    pub fn duration_ns(&self) -> u64 {
        self.trace.end(self.trace.root) - self.trace.start(self.trace.root)
    }

    /// Approximate bytes held.
    pub fn size_bytes(&self) -> usize {
        self.trace.size_bytes()
            + self.path.segments.len() * (std::mem::size_of::<Segment>() + 16)
            + self.trace.len() * 18
            + self.hops.len() * std::mem::size_of::<Hop>()
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

/// The callee service when `span` is a CLIENT span that called a SERVER span of
/// another service.
fn remote_peer(trace: &Trace, span: u32) -> Option<Sym> {
    remote_server(trace, span).map(|c| trace.span(c).service)
}

/// Analyzes one trace with the default [`Options`].
pub fn analyze(trace: Trace) -> AnalyzedTrace {
    analyze_with(trace, &DEFAULT_OPTIONS)
}

/// Analyzes one trace.
pub fn analyze_with(trace: Trace, options: &Options) -> AnalyzedTrace {
    let path = critical_path(&trace);
    let root = trace.root_span();
    let entry = EntryPoint {
        service: root.service,
        operation: root.operation,
    };
    // Per span, its callee when it is a CLIENT span of a remote call (computed once).
    let mut peers: Vec<Option<Option<Sym>>> = vec![None; trace.len()];
    let segment_hops: Vec<HopKey> = path
        .segments
        .iter()
        .map(|seg| {
            let span = trace.span(seg.span);
            match *peers[seg.span as usize].get_or_insert_with(|| remote_peer(&trace, seg.span)) {
                Some(peer) => HopKey {
                    kind: HopKind::Wire,
                    service: span.service,
                    operation: span.operation,
                    peer: Some(peer),
                },
                None => HopKey {
                    kind: HopKind::Span,
                    service: span.service,
                    operation: span.operation,
                    peer: None,
                },
            }
        })
        .collect();

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
        cascading_timeout(&trace, &timed_out).into_iter().collect();
    observations.extend(slow_health_checks(&trace, &options.health_routes));
    AnalyzedTrace {
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
        observations,
        finding_ids: Vec::new(),
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
