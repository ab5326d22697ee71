//! The service graph: caller service → callee service edges of analyzed
//! traces, in the one-minute buckets of [`Aggregates`](super::Aggregates)
//! (keyed by the trace's start time, dropped past the same retention).
//!
//! An edge is a CLIENT span that called a SERVER span of another service
//! ([`remote_server`]). Per edge: calls, calls that failed (either end's
//! status is an error), the wire time (the CLIENT span's time outside its
//! children: network, queueing, connection setup; a *wire* hop on the critical
//! path) as a sum and a [`Sketch`], and the part of it on the critical path.
//! Every number is a sum or a sketch, so a trace analyzed again is retracted
//! and re-added exactly.
//!
//! Cardinality is bounded: the first [`MAX_EDGES`] edges seen have their own
//! series; later ones are counted under `other → other`. An edge once admitted
//! stays admitted, and once the set is full nothing new is admitted, so a
//! retraction always lands where its trace was added.

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};

use super::aggregates::BUCKET_NS;
use super::sketch::Sketch;
use crate::analyze::{remote_server, AnalyzedTrace, HopKind};
use crate::model::{StatusCode, Sym};

/// Most edges with their own series.
pub const MAX_EDGES: usize = 2_000;

/// A caller service and the service it called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EdgeKey {
    pub caller: Sym,
    pub callee: Sym,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct EdgeAgg {
    calls: i64,
    errors: i64,
    wire_ns: i128,
    critical_ns: i128,
    wire: Sketch,
}

impl EdgeAgg {
    fn merge(&mut self, other: &EdgeAgg) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.wire_ns += other.wire_ns;
        self.critical_ns += other.critical_ns;
        self.wire.merge(&other.wire);
    }
}

/// One edge over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeStats {
    pub key: EdgeKey,
    pub calls: u64,
    /// Calls whose CLIENT or SERVER span ended in an error.
    pub errors: u64,
    /// Summed wire time of the calls.
    pub wire_ns: u64,
    /// Per-call wire time quantiles.
    pub wire_p50_ns: f64,
    pub wire_p95_ns: f64,
    /// The part of the wire time on the traces' critical paths.
    pub critical_wire_ns: u64,
}

#[derive(Default)]
struct Inner {
    buckets: BTreeMap<u64, FxHashMap<EdgeKey, EdgeAgg>>,
    admitted: FxHashSet<EdgeKey>,
}

impl Inner {
    /// The series `key` is counted under (admitting it while there is room).
    fn series(&mut self, key: EdgeKey) -> EdgeKey {
        if self.admitted.contains(&key) {
            return key;
        }
        if self.admitted.len() < MAX_EDGES {
            self.admitted.insert(key);
            return key;
        }
        let other = Sym::new("other");
        EdgeKey {
            caller: other,
            callee: other,
        }
    }
}

/// One minute of the service graph, as the state file keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EdgeBucketState {
    minute: u64,
    edges: Vec<(EdgeKey, EdgeAgg)>,
}

/// The service-graph aggregate.
pub struct Edges {
    inner: Mutex<Inner>,
    retention_buckets: u64,
}

impl Edges {
    /// Keeps `retention` of trace time before the daemon's clock.
    pub fn new(retention: Duration) -> Self {
        Edges {
            inner: Mutex::new(Inner::default()),
            retention_buckets: (retention.as_nanos() as u64 / BUCKET_NS).max(1),
        }
    }

    /// Adds (`weight` 1) or retracts (`weight` -1) the calls of one trace,
    /// and drops the buckets older than the retention before `now_ns` (the
    /// daemon's clock).
    pub fn record(&self, t: &AnalyzedTrace, weight: i64, now_ns: u64) {
        let trace = &t.trace;
        let bucket_id = trace.start(trace.root) / BUCKET_NS;
        let mut inner = self.inner.lock();
        let mut bucket = inner.buckets.remove(&bucket_id).unwrap_or_default();
        for span in 0..trace.len() as u32 {
            let Some(server) = remote_server(trace, span) else {
                continue;
            };
            let (client, server) = (trace.span(span), trace.span(server));
            let key = inner.series(EdgeKey {
                caller: client.service,
                callee: server.service,
            });
            let wire_ns = t.path.self_ns[span as usize];
            let agg = bucket.entry(key).or_default();
            agg.calls += weight;
            if client.status == StatusCode::Error || server.status == StatusCode::Error {
                agg.errors += weight;
            }
            agg.wire_ns += wire_ns as i128 * weight as i128;
            agg.wire.add(wire_ns as f64, weight);
        }
        for hop in t.hops.iter().filter(|h| h.key.kind == HopKind::Wire) {
            let Some(callee) = hop.key.peer else { continue };
            let key = inner.series(EdgeKey {
                caller: hop.key.service,
                callee,
            });
            bucket.entry(key).or_default().critical_ns += hop.critical_ns as i128 * weight as i128;
        }
        bucket.retain(|_, agg| agg.calls != 0);
        if !bucket.is_empty() {
            inner.buckets.insert(bucket_id, bucket);
        }
        self.expire_locked(&mut inner, now_ns, u64::MAX);
    }

    /// Drops the buckets older than the retention before `now_ns` or starting
    /// after `latest_ns` (a state file written under a clock that ran ahead).
    pub fn expire(&self, now_ns: u64, latest_ns: u64) {
        self.expire_locked(&mut self.inner.lock(), now_ns, latest_ns);
    }

    fn expire_locked(&self, inner: &mut Inner, now_ns: u64, latest_ns: u64) {
        let oldest_kept = (now_ns / BUCKET_NS).saturating_sub(self.retention_buckets);
        inner.buckets = inner.buckets.split_off(&oldest_kept);
        inner
            .buckets
            .split_off(&(latest_ns / BUCKET_NS).saturating_add(1));
    }

    /// Every bucket, for the state file.
    pub fn export(&self) -> Vec<EdgeBucketState> {
        let inner = self.inner.lock();
        let copy = |agg: &EdgeAgg| {
            let mut out = EdgeAgg::default();
            out.merge(agg);
            out
        };
        inner
            .buckets
            .iter()
            .map(|(minute, bucket)| EdgeBucketState {
                minute: *minute,
                edges: bucket.iter().map(|(k, agg)| (*k, copy(agg))).collect(),
            })
            .collect()
    }

    /// Adds exported buckets (a restart's history), admitting their edges
    /// within [`MAX_EDGES`] as if they had just been seen.
    pub fn import(&self, state: Vec<EdgeBucketState>) {
        let mut inner = self.inner.lock();
        for s in state {
            for (key, agg) in s.edges {
                let key = inner.series(key);
                let bucket = inner.buckets.entry(s.minute).or_default();
                bucket.entry(key).or_default().merge(&agg);
            }
        }
    }

    /// Every edge with calls in `[since_ns, until_ns)` of trace start times (at
    /// one-minute resolution), the most called first.
    pub fn query(&self, since_ns: Option<u64>, until_ns: Option<u64>) -> Vec<EdgeStats> {
        let lo = since_ns.map_or(0, |s| s / BUCKET_NS);
        let hi = until_ns.map_or(u64::MAX, |u| u.div_ceil(BUCKET_NS));
        let mut merged: FxHashMap<EdgeKey, EdgeAgg> = FxHashMap::default();
        {
            let inner = self.inner.lock();
            if lo >= hi {
                return Vec::new();
            }
            for (_, bucket) in inner.buckets.range(lo..hi) {
                for (k, agg) in bucket {
                    merged.entry(*k).or_default().merge(agg);
                }
            }
        }
        let mut out: Vec<EdgeStats> = merged
            .into_iter()
            .filter(|(_, a)| a.calls > 0)
            .map(|(key, a)| EdgeStats {
                key,
                calls: a.calls as u64,
                errors: a.errors.max(0) as u64,
                wire_ns: a.wire_ns.max(0) as u64,
                wire_p50_ns: a.wire.quantile(0.5).unwrap_or(0.0),
                wire_p95_ns: a.wire.quantile(0.95).unwrap_or(0.0),
                critical_wire_ns: a.critical_ns.max(0) as u64,
            })
            .collect();
        out.sort_by(|a, b| {
            b.calls.cmp(&a.calls).then_with(|| {
                (a.key.caller.as_str(), a.key.callee.as_str())
                    .cmp(&(b.key.caller.as_str(), b.key.callee.as_str()))
            })
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{Span, SpanId, SpanKind, SpanSet, TraceId};

    /// `caller` → `callee{n}`: a CLIENT span of 100 ns around a SERVER span of 60.
    fn trace(callee: usize, start: u64) -> AnalyzedTrace {
        let id = |n| SpanId::from_u64(n).unwrap();
        let callee = format!("callee{callee}");
        let set: SpanSet = [
            Span::new(
                id(1),
                None,
                "caller",
                "GET /",
                SpanKind::Server,
                (start, start + 200),
            ),
            Span::new(
                id(2),
                Some(id(1)),
                "caller",
                "GET /x",
                SpanKind::Client,
                (start + 50, start + 150),
            ),
            Span::new(
                id(3),
                Some(id(2)),
                &callee,
                "GET /x",
                SpanKind::Server,
                (start + 70, start + 130),
            ),
        ]
        .into_iter()
        .collect();
        analyze(assemble(TraceId::from_bytes(&[3; 16]).unwrap(), set).unwrap())
    }

    /// The daemon's clock in these tests: within the retention of every trace.
    const NOW: u64 = BUCKET_NS * 4;

    #[test]
    fn the_clock_not_the_newest_bucket_decides_what_is_kept() {
        let edges = Edges::new(Duration::from_secs(3600));
        edges.record(&trace(0, 1_000), 1, NOW);
        // A trace stamped in the year 2500 keeps the earlier one in.
        edges.record(&trace(1, 16_725_225_600_000_000_000), 1, NOW);
        assert_eq!(edges.query(None, None).len(), 2);
        // On load, nothing past the clock's bound is kept.
        edges.expire(NOW, NOW + 3_600_000_000_000);
        assert_eq!(edges.query(None, None).len(), 1);
        // Two hours later, the first trace is past the retention.
        edges.expire(NOW + 2 * 3_600_000_000_000, u64::MAX);
        assert!(edges.query(None, None).is_empty());
    }

    #[test]
    fn retraction_is_exact_and_edges_past_the_cap_are_other() {
        let edges = Edges::new(Duration::from_secs(3600));
        let t = trace(0, 1_000);
        edges.record(&t, 1, NOW);
        let got = edges.query(None, None);
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].calls, got[0].wire_ns, got[0].critical_wire_ns),
            (1, 40, 40)
        );
        edges.record(&t, -1, NOW);
        assert!(edges.query(None, None).is_empty());

        for n in 0..MAX_EDGES + 3 {
            edges.record(&trace(n, 1_000), 1, NOW);
        }
        let got = edges.query(None, None);
        assert_eq!(got.len(), MAX_EDGES + 1);
        let other = got
            .iter()
            .find(|e| e.key.caller.as_str() == "other")
            .unwrap();
        assert_eq!((other.calls, other.wire_ns), (3, 120));
        edges.record(&trace(MAX_EDGES + 1, 1_000), -1, NOW);
        let other = edges.query(None, None);
        let other = other
            .iter()
            .find(|e| e.key.caller.as_str() == "other")
            .unwrap();
        assert_eq!(
            other.calls, 2,
            "a retraction lands where its trace was added"
        );
    }

    #[test]
    fn the_state_file_form_restores_the_same_graph() {
        let edges = Edges::new(Duration::from_secs(3600));
        for (n, start) in [(0, 1_000), (0, BUCKET_NS * 3), (1, BUCKET_NS * 3)] {
            edges.record(&trace(n, start), 1, NOW);
        }
        let json = serde_json::to_string(&edges.export()).unwrap();
        let restored = Edges::new(Duration::from_secs(3600));
        restored.import(serde_json::from_str(&json).unwrap());
        assert_eq!(restored.query(None, None), edges.query(None, None));
        assert_eq!(
            restored.query(Some(BUCKET_NS * 3), None)[0].calls,
            1,
            "buckets kept apart"
        );
        // A trace counted before the restart is retracted from the restored graph.
        restored.record(&trace(1, BUCKET_NS * 3), -1, NOW);
        assert_eq!(restored.query(None, None).len(), 1);
    }
}
