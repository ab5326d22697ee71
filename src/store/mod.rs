//! What outlives the buffer: recent analyzed traces, the per-hop aggregates,
//! the service graph, the findings, instrumentation coverage per service, and
//! the call window the cross-trace detectors read.

mod aggregates;
mod coverage;
pub mod durable;
mod edges;
mod findings;
mod ledger;
mod sketch;
pub mod snapshot;
mod totals;
mod traces;
pub mod wal;
mod window;

pub use aggregates::{
    is_overflow_entry, is_overflow_hop, Aggregates, BucketState, EntryStats, HopStats,
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_HOPS, OVERFLOW,
};
pub use coverage::{Coverage, MAX_SERVICES};
pub use edges::{EdgeBucketState, EdgeKey, EdgeStats, Edges, MAX_EDGES};
pub use findings::{Finding, FindingFilter, FindingStore};
pub use ledger::{Ledger, Replay};
pub use sketch::Sketch;
pub use totals::{EntryTotal, HopTotal, Totals, MAX_ENTRIES, MAX_HOPS};
pub use traces::TraceStore;
pub use window::{CallWindow, WindowStats, WINDOW_MAX_AGE, WINDOW_MAX_RECORDS};

use std::sync::Arc;

use parking_lot::Mutex;

use crate::analyze::budget::call_records;
use crate::analyze::{finding_id, AnalyzedTrace};
use crate::clock::Clock;
use crate::stats::Stats;
use wal::LogRange;

pub struct Store {
    pub traces: TraceStore,
    pub aggregates: Aggregates,
    /// The service graph, in the aggregates' buckets and retention.
    pub edges: Edges,
    pub findings: FindingStore,
    /// Call records of recent traces ([`WINDOW_MAX_AGE`], [`WINDOW_MAX_RECORDS`]).
    pub window: CallWindow,
    /// Totals since start, for Prometheus.
    pub totals: Totals,
    /// What each service's spans carry, over every analyzed trace.
    pub coverage: Coverage,
    /// The window generation the cross-trace detectors last ran on.
    pub detected_generation: std::sync::atomic::AtomicU64,
    /// Which traces are counted, by log segment (with a write-ahead log).
    pub ledger: Mutex<Ledger>,
    /// What the window, the aggregates' retention and the findings' expiry
    /// count back from.
    pub clock: Clock,
    stats: Arc<Stats>,
}

impl Store {
    pub fn new(
        traces: TraceStore,
        aggregates: Aggregates,
        findings: FindingStore,
        stats: Arc<Stats>,
        clock: Clock,
    ) -> Self {
        Store {
            traces,
            edges: Edges::new(aggregates.retention()),
            aggregates,
            findings,
            window: CallWindow::new(WINDOW_MAX_AGE, WINDOW_MAX_RECORDS),
            totals: Totals::default(),
            coverage: Coverage::default(),
            detected_generation: Default::default(),
            ledger: Mutex::new(Ledger::default()),
            clock,
            stats,
        }
    }

    /// Drops what the clock has aged out of the call window, the aggregates
    /// and the service graph, and whatever of them lies after `latest_ns` (a
    /// state file written under a clock that ran ahead). Findings expire at
    /// checkpoints ([`durable::Durable::checkpoint`]).
    pub fn expire(&self, latest_ns: u64) {
        let now = self.clock.now_ns();
        self.window.expire(now, latest_ns);
        self.aggregates.expire(now, latest_ns);
        self.edges.expire(now, latest_ns);
    }

    /// The counters it bumps (shared with the rest of the daemon).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Keeps an analyzed trace. A trace analyzed again (`late`: spans were merged
    /// in) replaces its earlier analysis, whose contribution to the aggregates is
    /// retracted first. A late trace whose earlier analysis already left the store
    /// is kept for viewing but not aggregated again, so no trace counts twice.
    /// The call window follows the aggregates: a trace analyzed again replaces
    /// its records, and a late part alone (whose earlier analysis left) is not
    /// added, since its spans hang under a stand-in root.
    ///
    /// `log` is where the spans are in the write-ahead log. A trace replayed
    /// after a restart that the restored aggregates and findings already count
    /// ([`Ledger`]) is kept and joins the call window without counting again;
    /// a fragment of one (its older spans were not replayed) is dropped.
    pub fn put(&self, mut trace: AnalyzedTrace, late: bool, log: Option<LogRange>) {
        let id = trace.trace.trace_id;
        let counted = match self.ledger.lock().replayed(&id) {
            Replay::New => false,
            Replay::Counted => {
                Stats::add(&self.stats.wal_traces_already_counted, 1);
                true
            }
            Replay::Fragment => {
                Stats::add(&self.stats.wal_fragments_dropped, 1);
                return;
            }
        };
        // Observations go to the findings; a trace analyzed again reports only
        // what its earlier analysis did not, so no trace counts twice.
        let previous = late.then(|| self.traces.get(&id)).flatten();
        // The spans each observation names stay with the trace (its marks),
        // not with the finding.
        for mut o in std::mem::take(&mut trace.observations) {
            let fid = finding_id(o.kind, &o.culprit);
            let seen = previous
                .as_ref()
                .is_some_and(|p| p.finding_ids.contains(&fid));
            trace.finding_ids.push(fid);
            let spans = std::mem::take(&mut o.spans);
            if !spans.is_empty() {
                match trace.marks.iter_mut().find(|(id, _)| *id == fid) {
                    Some((_, marked)) => {
                        for s in spans {
                            if !marked.contains(&s) {
                                marked.push(s);
                            }
                        }
                    }
                    None => trace.marks.push((fid, spans)),
                }
            }
            if !seen && !counted {
                self.findings.record(o);
            }
        }
        if !late {
            self.totals.add(&trace);
        }
        let trace = Arc::new(trace);
        let now = self.clock.now_ns();
        let displaced = self.traces.put(trace.clone(), log);
        if let Some(old) = &displaced.replaced {
            self.aggregates.record(old, -1, now);
            self.edges.record(old, -1, now);
            self.coverage.record(old, true);
        }
        if !late || displaced.replaced.is_some() {
            if !counted {
                let overflowed = self.aggregates.record(&trace, 1, now);
                Stats::add(&self.stats.aggregate_overflow, overflowed);
                self.edges.record(&trace, 1, now);
                self.coverage.record(&trace, false);
            }
            self.window
                .put(self.aggregates.bounded(call_records(&trace)), now);
        }
        if let Some(log) = log {
            self.ledger.lock().count(id, log);
        }
        Stats::add(&self.stats.store_traces_evicted, displaced.evicted as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{Span, SpanId, SpanKind, SpanSet, TraceId};

    const MIN: u64 = 60_000_000_000;

    /// A trace of one SERVER span calling another service, starting at `start`.
    pub(super) fn trace(n: u8, start: u64) -> AnalyzedTrace {
        let id = |n| SpanId::from_u64(n).unwrap();
        let set: SpanSet = [
            Span::new(
                id(1),
                None,
                "web",
                "GET /",
                SpanKind::Server,
                (start, start + 100),
            ),
            Span::new(
                id(2),
                Some(id(1)),
                "web",
                "GET",
                SpanKind::Client,
                (start + 10, start + 90),
            ),
            Span::new(
                id(3),
                Some(id(2)),
                "api",
                "GET",
                SpanKind::Server,
                (start + 20, start + 80),
            ),
        ]
        .into_iter()
        .collect();
        analyze(assemble(TraceId::from_bytes(&[n; 16]).unwrap(), set).unwrap())
    }

    #[test]
    fn the_window_and_the_aggregates_age_by_the_clock_not_by_the_newest_trace() {
        let now = 30_000_000 * MIN;
        let clock = Clock::manual(now);
        let store = Store::new(
            TraceStore::new(100, 1 << 20),
            Aggregates::new(Duration::from_secs(3_600)),
            FindingStore::new(100),
            Arc::new(Stats::default()),
            clock.clone(),
        );
        store.put(trace(1, now - MIN), false, None);
        // A trace stamped in the year 2500 ages nothing out.
        store.put(trace(2, 16_725_225_600_000_000_000), false, None);
        store.expire(now + 60 * MIN);
        assert_eq!(store.window.stats().traces, 1);
        assert_eq!(store.aggregates.query(None, None, None)[0].traces, 1);
        assert_eq!(store.edges.query(None, None).len(), 1);
        // Twenty minutes on, without traffic: out of the window, still
        // within the aggregates' hour.
        clock.advance_to(now + 20 * MIN);
        store.expire(u64::MAX);
        assert_eq!(store.window.stats().traces, 0);
        assert_eq!(store.aggregates.query(None, None, None).len(), 1);
        // Past the hour, the aggregates and the service graph let it go.
        clock.advance_to(now + 62 * MIN);
        store.expire(u64::MAX);
        assert!(store.aggregates.query(None, None, None).is_empty());
        assert!(store.edges.query(None, None).is_empty());
    }
}
