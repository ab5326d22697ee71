//! What outlives the buffer: recent analyzed traces and the per-hop aggregates.

mod aggregates;
mod sketch;
mod traces;

pub use aggregates::{Aggregates, EntryStats, HopStats};
pub use sketch::Sketch;
pub use traces::TraceStore;

use std::sync::Arc;

use crate::analyze::AnalyzedTrace;
use crate::stats::Stats;

pub struct Store {
    pub traces: TraceStore,
    pub aggregates: Aggregates,
    stats: Arc<Stats>,
}

impl Store {
    pub fn new(traces: TraceStore, aggregates: Aggregates, stats: Arc<Stats>) -> Self {
        Store {
            traces,
            aggregates,
            stats,
        }
    }

    /// Keeps an analyzed trace. A trace analyzed again (`late`: spans were merged
    /// in) replaces its earlier analysis, whose contribution to the aggregates is
    /// retracted first. A late trace whose earlier analysis already left the store
    /// is kept for viewing but not aggregated again, so no trace counts twice.
    pub fn put(&self, trace: AnalyzedTrace, late: bool) {
        let trace = Arc::new(trace);
        let displaced = self.traces.put(trace.clone());
        if let Some(old) = &displaced.replaced {
            self.aggregates.record(old, -1);
        }
        if !late || displaced.replaced.is_some() {
            self.aggregates.record(&trace, 1);
        }
        Stats::add(&self.stats.store_traces_evicted, displaced.evicted as u64);
    }
}
