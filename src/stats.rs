//! Counters every stage bumps and the API reports: what was accepted, refused,
//! completed early, merged late or evicted. Nothing is dropped without a count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Process-wide counters (monotonic) and timings.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// How long one trace's assembly, analysis and storing take.
            pub analysis: Histogram,
            /// How long one run of the cross-trace detectors takes.
            pub detection: Histogram,
            /// Spans queued for forwarding, being batched or in flight (a gauge).
            pub forward_queued: AtomicU64,
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

        impl StatsSnapshot {
            /// Each counter: its name, its documentation (its lines joined
            /// with line breaks) and value.
            pub fn fields(&self) -> Vec<(&'static str, String, u64)> {
                vec![$((stringify!($name), doc_text(&[$(stringify!($doc)),*]), self.$name),)*]
            }
        }
    };
}

counters! {
    /// OTLP export requests received.
    export_requests,
    /// Their bytes (after decompression).
    export_bytes,
    /// Spans accepted into the buffer.
    spans_accepted,
    /// Spans refused through OTLP partial success (malformed ids, or times
    /// far from the daemon's clock).
    spans_rejected,
    /// Of those, spans ending more than `future_skew` after the daemon's clock.
    spans_rejected_future,
    /// Of those, spans ending more than `aggregate_retention` before the
    /// daemon's clock.
    spans_rejected_past,
    /// Export requests refused (retryable) because the buffer was at its
    /// memory budget.
    export_requests_refused,
    /// Their bytes (after decompression).
    export_bytes_refused,
    /// OTLP requests refused as undecodable (gRPC INVALID_ARGUMENT; HTTP 400:
    /// not protobuf, not JSON, not gzip).
    otlp_malformed,
    /// OTLP/HTTP requests refused for their content type or encoding (415),
    /// method (405) or path (404).
    otlp_http_unsupported,
    /// Traces completed because no span arrived for `trace_idle`.
    traces_completed_idle,
    /// Traces completed because they reached `trace_max_age`.
    traces_completed_max_age,
    /// Traces analyzed early because the buffer reached `max_buffered_spans`.
    traces_evicted_early,
    /// Traces analyzed at shutdown.
    traces_flushed_at_shutdown,
    /// Traces analyzed and stored (each completion above, once it is done;
    /// one whose analysis panicked counts here too, and in `analysis_panics`).
    traces_analyzed,
    /// Spans that arrived after their trace was analyzed (within `late_grace`).
    late_spans,
    /// Traces analyzed again after late spans were merged in.
    traces_reanalyzed,
    /// Completed traces dropped from the trace store to stay within its bounds.
    store_traces_evicted,
    /// Observations counted under `(overflow)` in the hop aggregates: a trace
    /// of an entry point past `aggregate_max_entries` (and each of its hops),
    /// or a hop past `aggregate_max_hops` of its entry point.
    aggregate_overflow,
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
    /// Connections closed as accepted because their listener had
    /// `max_connections` open.
    connections_refused,
    /// HTTP connections closed for not sending a complete request head
    /// within `header_read_timeout` (slow clients; idle keep-alive
    /// connections too).
    http_header_timeouts,
    /// OTLP/HTTP requests refused (503) because their body did not arrive
    /// within `body_read_timeout`.
    otlp_body_timeouts,
    /// OTLP/HTTP requests refused (503, retryable) because the bodies being
    /// read already held `otlp_body_budget_mib`.
    otlp_body_budget_refused,
    /// API and Jaeger API requests answered 503 after `request_timeout`.
    api_request_timeouts,
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
    /// Parts of traces' call records merged into the call window (a detect
    /// replica, `--role detect`: one per service of a forwarded trace).
    records_merged,
    /// Forwarded call records refused (malformed, or of another version):
    /// logged once in a while.
    records_refused,
    /// Traces whose analysis panicked (a bug): logged, counted in
    /// `traces_analyzed`, and the rest of their batch analyzed all the same.
    analysis_panics,
    /// Runs of the cross-trace detectors that panicked (a bug): logged; the
    /// next run starts afresh.
    detection_panics,
    /// Spans forwarded (`forward_otlp`) and accepted by the receiver.
    forward_spans,
    /// Forwarding requests sent, retries included.
    forward_requests,
    /// Forwarding requests retried after a retryable answer.
    forward_retries,
    /// Bytes of forwarding request bodies, as sent (after compression).
    forward_bytes,
    /// Spans not forwarded because the shutdown deadline came first.
    forward_spans_dropped_shutdown,
    /// Spans not forwarded because the receiver still answered retryably
    /// after `forward_max_elapsed`.
    forward_spans_dropped_retries,
    /// Spans not forwarded because the receiver refused their request (a
    /// permanent error).
    forward_spans_dropped_refused,
    /// Spans the receiver rejected through OTLP partial success.
    forward_spans_rejected,
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

/// The text of `doc = r"..."` attributes as `stringify!` gives them, joined.
fn doc_text(attrs: &[&str]) -> String {
    attrs
        .iter()
        .filter_map(|a| {
            let (start, end) = (a.find('"')?, a.rfind('"')?);
            (a.trim_start().starts_with("doc") && end > start).then(|| a[start + 1..end].trim())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Upper bounds (seconds) of the [`Histogram`] buckets.
pub const HISTOGRAM_BOUNDS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets ([`HISTOGRAM_BOUNDS`]), lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound (not cumulative); the last counts
    /// the ones over every bound.
    buckets: [AtomicU64; HISTOGRAM_BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`]: cumulative counts per bound, the
/// total count and the sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: [u64; HISTOGRAM_BOUNDS.len()],
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let i = HISTOGRAM_BOUNDS.partition_point(|&b| b < seconds);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; HISTOGRAM_BOUNDS.len()];
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            count += b.load(Ordering::Relaxed);
            if i < cumulative.len() {
                cumulative[i] = count;
            }
        }
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_carry_their_documentation() {
        let fields = Stats::default().snapshot().fields();
        let (_, doc, _) = fields
            .iter()
            .find(|f| f.0 == "spans_rejected")
            .expect("a counter");
        assert_eq!(
            doc,
            "Spans refused through OTLP partial success (malformed ids, or times\nfar from the daemon's clock)."
        );
    }

    #[test]
    fn a_histogram_counts_each_observation_under_its_bound() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_secs(9));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative[0], 1, "3 µs is under 10 µs");
        assert_eq!(s.cumulative[4], 2, "1 ms is at the 1 ms bound");
        assert_eq!(
            s.cumulative[HISTOGRAM_BOUNDS.len() - 1],
            2,
            "9 s is over them all"
        );
        assert!((s.sum_seconds - 9.001003).abs() < 1e-9);
    }
}
