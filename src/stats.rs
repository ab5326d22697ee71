//! Counters every stage bumps and the API reports: what was accepted, refused,
//! completed early, merged late or evicted. Nothing is dropped without a count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

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
    /// Export requests refused (retryable) because the buffer was at its
    /// memory budget.
    export_requests_refused,
    /// Their bytes (after decompression).
    export_bytes_refused,
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
    /// HTTP API requests refused for a missing or wrong bearer token (401).
    api_unauthenticated,
    /// HTTP API requests refused for a body over its limit (413).
    api_too_large,
    /// OTLP requests refused for a missing or wrong bearer token (gRPC
    /// UNAUTHENTICATED, HTTP 401).
    otlp_unauthenticated,
    /// OTLP requests refused for being over `otlp_max_message_mib` (gRPC
    /// OUT_OF_RANGE, HTTP 413).
    otlp_too_large,
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

/// Lets a repeated log line through at most once per period (10 s by
/// default) while the events go on; the counters have the rest.
#[derive(Debug)]
pub struct LogEvery {
    period: Duration,
    started: Instant,
    /// When a line last went through (ms since `started`, plus one; 0: never).
    last_ms: AtomicU64,
}

impl Default for LogEvery {
    fn default() -> Self {
        LogEvery::new(Duration::from_secs(10))
    }
}

impl LogEvery {
    pub fn new(period: Duration) -> Self {
        LogEvery {
            period,
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Whether this event may log (true for one caller per period).
    pub fn ready(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.period.as_millis() as u64)
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}
