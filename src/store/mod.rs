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
pub use window::{
    CallWindow, Detection, WindowSnapshot, WindowStats, WINDOW_MAX_AGE, WINDOW_MAX_RECORDS,
};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::analyze::budget::TraceCalls;
use crate::analyze::{finding_id, AnalyzedTrace, Observation};
use crate::clock::Clock;
use crate::stats::Stats;
use wal::LogRange;

/// Everything the pipeline keeps after analysis, in parts that each own
/// their state behind their own lock.
///
/// # Contract
///
/// **Writers.** Only the pipeline writes, through three doors:
/// [`Store::put`] (an analyzed trace and its call records, from
/// [`crate::pipeline::finish`]), [`Store::expire`] (the clock's retention, from
/// the periodic tasks) and [`Store::set_detection`] (what the cross-trace
/// detectors concluded and computed, from [`crate::pipeline::detect_window`]). The state
/// file restores and checkpoints it ([`durable`]). Nothing else mutates it:
/// the parts a reader gets ([`Store::traces`], [`Store::findings`], ...) are
/// for reading.
///
/// **Readers** (the API, `hopscope analyze`'s report) see each part
/// consistent on its own: a trace is in [`Store::traces`] whole or not at
/// all, a finding's counts are never half updated, an aggregate bucket has a
/// trace's every hop or none. There is no snapshot across parts: a reader
/// racing a `put` may see the trace stored before its hops are in
/// [`Store::aggregates`] or its calls in the window; a trace analyzed again
/// (late spans) is retracted from the aggregates, then added back, and a
/// reader between the two misses it. The cross-trace
/// findings, the budget map and the statement shapes ([`Store::detection`])
/// lag the window by up to one detection interval
/// ([`Store::detectors_current`] says whether they caught up); once it says
/// so, [`Store::detection`] is the pass over the window as it is. Within one
/// part, what a reader sees only moves forward: a later read never shows an
/// older state of it.
///
/// **Ordering.** `put` stores the findings a trace reports, then its totals,
/// the trace itself, its aggregates, service graph and coverage, then its
/// call records; `put`s are not serialized against each other beyond each
/// part's lock (the pipeline calls it from one thread at a time).
pub struct Store {
    traces: TraceStore,
    aggregates: Aggregates,
    /// The service graph, in the aggregates' buckets and retention.
    edges: Edges,
    findings: FindingStore,
    /// Call records of recent traces ([`WINDOW_MAX_AGE`], [`WINDOW_MAX_RECORDS`]).
    window: CallWindow,
    /// Whether analyzed traces' call records join the window (not on an
    /// assembling replica, whose records the detect tier keeps).
    keeps_window: bool,
    /// Totals since start, for Prometheus.
    totals: Totals,
    /// What each service's spans carry, over every analyzed trace.
    coverage: Coverage,
    /// The window generation the cross-trace detectors last ran on.
    detected_generation: AtomicU64,
    /// What their last pass computed besides findings.
    detection: RwLock<Arc<Detection>>,
    /// Which traces are counted, by log segment (with a write-ahead log).
    ledger: Mutex<Ledger>,
    /// What the window, the aggregates' retention and the findings' expiry
    /// count back from.
    clock: Clock,
    stats: Arc<Stats>,
}

/// What a replica shares with its peers (`api::federate`): the state file's
/// mergeable parts, every one a sum, a sketch or a merge by id.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Shared {
    pub findings: Vec<Finding>,
    pub aggregates: Vec<BucketState>,
    pub edges: Vec<EdgeBucketState>,
    pub coverage: Vec<(crate::model::Sym, crate::analyze::coverage::Counts)>,
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
            keeps_window: true,
            totals: Totals::default(),
            coverage: Coverage::default(),
            detected_generation: AtomicU64::default(),
            detection: RwLock::default(),
            ledger: Mutex::new(Ledger::default()),
            clock,
            stats,
        }
    }

    /// A store whose window stays empty: an assembling replica's
    /// (`--role assemble`), which forwards the call records instead.
    pub fn without_window(self) -> Self {
        Store {
            keeps_window: false,
            ..self
        }
    }

    /// The recent analyzed traces.
    pub fn traces(&self) -> &TraceStore {
        &self.traces
    }

    /// The per-hop aggregates.
    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    /// The service graph, in the aggregates' buckets and retention.
    pub fn edges(&self) -> &Edges {
        &self.edges
    }

    /// The findings, per-trace and cross-trace.
    pub fn findings(&self) -> &FindingStore {
        &self.findings
    }

    /// Totals since start, for Prometheus.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// What each service's spans carry, over every analyzed trace.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// What the window, the aggregates' retention and the findings' expiry
    /// count back from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The whole call window at once: what the cross-trace detectors read.
    pub fn window(&self) -> WindowSnapshot {
        self.window.snapshot()
    }

    /// The call window's generation: it changes whenever records come or go.
    pub fn window_generation(&self) -> u64 {
        self.window.generation()
    }

    /// Whether the cross-trace detectors have run over the window as it is.
    pub fn detectors_current(&self) -> bool {
        self.detected_generation.load(Ordering::Acquire) == self.window.generation()
    }

    /// What the cross-trace detectors last computed besides findings: the
    /// budget map and the statement shapes, with the window they ran over.
    pub fn detection(&self) -> Arc<Detection> {
        self.detection.read().clone()
    }

    /// Publishes a pass of the cross-trace detectors over the window of
    /// `detection.window.generation`: merges its `observations` into the
    /// findings, replacing their counts ([`FindingStore::set`]; look-alikes
    /// an observation explains are withdrawn first), then keeps `detection`
    /// in place of the previous pass's (findings first, so every violation
    /// the budget map names is already a finding). Only then does
    /// [`Store::detectors_current`] say the pass is over the window as it is.
    pub fn set_detection(&self, detection: Detection, observations: Vec<Observation>) {
        // A finding the pass judged and did not report again, while the
        // traces it was seen in are still in the window, is contradicted by
        // what the window now holds (more of the same calls: an earlier pass
        // saw part of them). One whose traces left the window stays: that is
        // history, not a contradiction.
        let reported: Vec<u64> = observations
            .iter()
            .map(|o| finding_id(o.kind, &o.culprit))
            .collect();
        let held: rustc_hash::FxHashSet<crate::model::TraceId> =
            detection.window.traces.iter().map(|t| t.trace_id).collect();
        for id in detection.judged.iter().filter(|id| !reported.contains(id)) {
            self.findings
                .withdraw_if(*id, |f| f.latest.trace_ids.iter().all(|t| held.contains(t)));
        }
        for o in observations {
            self.findings.withdraw_explained_by(&o);
            self.findings.set(o);
        }
        let generation = detection.window.generation;
        *self.detection.write() = Arc::new(detection);
        self.detected_generation
            .store(generation, Ordering::Release);
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

    /// Its findings, aggregates, service graph and coverage, as peers read them.
    pub fn shared(&self) -> Shared {
        Shared {
            findings: self.findings.export(),
            aggregates: self.aggregates.export(),
            edges: self.edges.export(),
            coverage: self.coverage.services(),
        }
    }

    /// An empty store of the same bounds and clock, holding this one's last
    /// pass of the cross-trace detectors (the budget map and the statement
    /// shapes, which no peer shares): a scratch view that [`Store::absorb`]
    /// merges replicas into.
    pub fn scratch(&self) -> Store {
        let scratch = Store::new(
            TraceStore::new(1, 0),
            self.aggregates.empty_like(),
            self.findings.empty_like(),
            self.stats.clone(),
            self.clock.clone(),
        );
        *scratch.detection.write() = self.detection();
        scratch
    }

    /// Shows `detection` (a scratch store's: what the cross-trace detectors
    /// computed over every replica's window), leaving the findings as they are.
    pub fn show_detection(&self, detection: Detection) {
        *self.detection.write() = Arc::new(detection);
    }

    /// Merges a replica's shared state into this store: findings by id,
    /// aggregate and service-graph buckets by key (sums, sketches merged),
    /// coverage added.
    pub fn absorb(&self, shared: Shared) {
        for f in shared.findings {
            self.findings.absorb(f);
        }
        self.aggregates.import(shared.aggregates);
        self.edges.import(shared.edges);
        self.coverage.import(shared.coverage);
    }

    /// The counters it bumps (shared with the rest of the daemon).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Adds a part of one trace's call records that an assembling replica
    /// forwarded (`--role detect`): merged with that trace's other parts in
    /// the call window ([`CallWindow::merge`]).
    pub fn merge_calls(&self, part: TraceCalls) {
        self.window.merge(part, self.clock.now_ns());
        Stats::add(&self.stats.records_merged, 1);
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
    ///
    /// `calls` are the trace's call records ([`crate::analyze::budget::call_records`]),
    /// which join the window bounded as the aggregates are
    /// ([`Aggregates::bounded`]).
    pub fn put(
        &self,
        mut trace: AnalyzedTrace,
        calls: TraceCalls,
        late: bool,
        log: Option<LogRange>,
    ) {
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
            if self.keeps_window {
                self.window.put(self.aggregates.bounded(calls), now);
            }
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
    use crate::pipeline::keep;

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
        keep(&store, trace(1, now - MIN), (false, None), None);
        // A trace stamped in the year 2500 ages nothing out.
        keep(
            &store,
            trace(2, 16_725_225_600_000_000_000),
            (false, None),
            None,
        );
        store.expire(now + 60 * MIN);
        assert_eq!(store.window().stats.traces, 1);
        assert_eq!(store.aggregates.query(None, None, None)[0].traces, 1);
        assert_eq!(store.edges.query(None, None).len(), 1);
        // Twenty minutes on, without traffic: out of the window, still
        // within the aggregates' hour.
        clock.advance_to(now + 20 * MIN);
        store.expire(u64::MAX);
        assert_eq!(store.window().stats.traces, 0);
        assert_eq!(store.aggregates.query(None, None, None).len(), 1);
        // Past the hour, the aggregates and the service graph let it go.
        clock.advance_to(now + 62 * MIN);
        store.expire(u64::MAX);
        assert!(store.aggregates.query(None, None, None).is_empty());
        assert!(store.edges.query(None, None).is_empty());
    }
}
