//! Counters every stage bumps and the API reports: what was accepted, refused,
//! completed early, merged late or evicted. Nothing is dropped without a count.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Process-wide counters (monotonic).
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// OTLP export requests received.
    export_requests,
    /// Spans accepted into the buffer.
    spans_accepted,
    /// Spans refused through OTLP partial success (malformed ids).
    spans_rejected,
    /// Traces completed because no span arrived for `trace_idle`.
    traces_completed_idle,
    /// Traces completed because they reached `trace_max_age`.
    traces_completed_max_age,
    /// Traces analyzed early because the buffer reached `max_buffered_spans`.
    traces_evicted_early,
    /// Traces analyzed at shutdown.
    traces_flushed_at_shutdown,
    /// Traces analyzed and stored (each completion above, once it is done).
    traces_analyzed,
    /// Spans that arrived after their trace was analyzed (within `late_grace`).
    late_spans,
    /// Traces analyzed again after late spans were merged in.
    traces_reanalyzed,
    /// Completed traces dropped from the trace store to stay within its bounds.
    store_traces_evicted,
    /// Export requests refused (retryably) because the write-ahead log failed.
    wal_write_errors,
    /// Write-ahead log records replayed at start.
    wal_records_replayed,
    /// Spans replayed from the write-ahead log at start.
    wal_spans_replayed,
    /// Log segments cut short at start (a torn or corrupt record and what followed).
    wal_segments_damaged,
    /// Bytes skipped in damaged segments.
    wal_bytes_skipped,
    /// Replayed records that no longer decode (none expected: a decoder change).
    wal_records_undecodable,
    /// Log segments deleted once their traces were analyzed and stored.
    wal_segments_deleted,
    /// Log segments of analyzed traces deleted to stay within the data directory's size.
    wal_segments_dropped_for_size,
    /// Replayed traces dropped because their older spans were already covered.
    wal_fragments_dropped,
    /// Replayed traces the restored state already counted: shown again, not counted twice.
    wal_traces_already_counted,
    /// State files written.
    checkpoints,
    /// State files that could not be written.
    checkpoint_errors,
    /// Findings dropped by age (`retention`).
    findings_expired,
}

impl StatsSnapshot {
    /// Traces out of the buffer whose analysis is not stored yet.
    pub fn analysis_pending(&self) -> u64 {
        (self.traces_completed_idle
            + self.traces_completed_max_age
            + self.traces_evicted_early
            + self.traces_flushed_at_shutdown)
            .saturating_sub(self.traces_analyzed)
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
