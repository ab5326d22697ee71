//! The daemon's clock, and the bounds it puts on span times.
//!
//! Windows, retention, bucket pruning and finding expiry count back from
//! [`Clock::now_ns`], never from the largest timestamp seen: one span stamped
//! in the year 2500 (a client with a broken clock, or anyone who can reach a
//! receiver) would otherwise push every earlier trace, bucket and finding out
//! of its window at once. The receivers refuse spans that end far from the
//! clock ([`TimeBounds::screen`]) through OTLP partial success, with the reason,
//! so what is stored always lies within the bounds. A span is judged by its
//! end alone, one at a time: a trace whose spans straddle a bound loses only
//! the spans beyond it, and nothing is shifted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::model::SpanBatch;

/// The monotonic instant the assembly buffer's idle and age limits are
/// measured in, passed in by its caller (the buffer reads no clock). It is
/// tokio's, so that tests with paused time move it; the buffer names it here
/// and not in tokio, which the core does not import (ARCHITECTURE.md, rule 1).
pub use tokio::time::Instant;

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock (the daemon).
    #[default]
    System,
    /// A time that moves only when set (tests; `hopscope analyze`, where now
    /// is the files' own time: as far as the spans it keeps reach).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A clock that reads `now_ns` until [`Clock::advance_to`].
    pub fn manual(now_ns: u64) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(now_ns)))
    }

    /// Now, in unix nanoseconds.
    pub fn now_ns(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64,
            Clock::Manual(at) => at.load(Ordering::Relaxed),
        }
    }

    /// Moves a manual clock forward to `now_ns`, never back (the system
    /// clock is not moved).
    pub fn advance_to(&self, now_ns: u64) {
        if let Clock::Manual(at) = self {
            at.fetch_max(now_ns, Ordering::Relaxed);
        }
    }
}

/// How far from the clock a span may end and still be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    /// A span ending more than this after now is refused (`future_skew`).
    pub future: Duration,
    /// A span ending more than this before now is refused (the aggregates'
    /// retention: it could count in nothing).
    pub past: Duration,
}

/// What [`TimeBounds::screen`] refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Screened {
    /// Spans ending more than `future` after now.
    pub future: u64,
    /// Spans ending more than `past` before now.
    pub past: u64,
}

/// At most this many reasons are quoted per batch, as for malformed ids.
const MAX_REASONS: usize = 3;

impl TimeBounds {
    /// Removes the spans of `batch` that end outside `[now - past, now +
    /// future]`, counting them as rejected with a reason each (the first few),
    /// which the receivers answer in OTLP partial success.
    pub fn screen(&self, now_ns: u64, batch: &mut SpanBatch) -> Screened {
        let latest = now_ns.saturating_add(self.future.as_nanos() as u64);
        let earliest = now_ns.saturating_sub(self.past.as_nanos() as u64);
        let mut out = Screened::default();
        let mut reasons = Vec::new();
        for (trace_id, set) in &mut batch.traces {
            set.spans.retain(|s| {
                let (bound, count, side) = if s.end_ns > latest {
                    (self.future, &mut out.future, "after")
                } else if s.end_ns < earliest {
                    (self.past, &mut out.past, "before")
                } else {
                    return true;
                };
                *count += 1;
                if reasons.len() < MAX_REASONS {
                    reasons.push(format!(
                        "trace {trace_id} span {}: ends at {}, more than {} {side} the clock ({})",
                        s.span_id,
                        rfc3339(s.end_ns),
                        humantime::format_duration(bound),
                        rfc3339(now_ns),
                    ));
                }
                false
            });
        }
        batch.traces.retain(|(_, set)| !set.spans.is_empty());
        let refused = out.future + out.past;
        batch.accepted -= refused;
        batch.rejected += refused;
        let room = MAX_REASONS.saturating_sub(batch.errors.len());
        batch.errors.extend(reasons.into_iter().take(room));
        out
    }
}

fn rfc3339(ns: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Span, SpanId, SpanKind, SpanSet, TraceId};

    const S: u64 = 1_000_000_000;
    const NOW: u64 = 1_800_000_000 * S;

    fn batch(ends: &[u64]) -> SpanBatch {
        let mut set = SpanSet::default();
        for (i, &end) in ends.iter().enumerate() {
            set.spans.push(Span::new(
                SpanId::from_bytes(&[i as u8 + 1; 8]).unwrap(),
                None,
                "svc",
                "op",
                SpanKind::Server,
                (end.saturating_sub(S), end),
            ));
        }
        SpanBatch {
            traces: vec![(TraceId::from_bytes(&[7; 16]).unwrap(), set)],
            accepted: ends.len() as u64,
            rejected: 0,
            errors: Vec::new(),
        }
    }

    #[test]
    fn spans_ending_far_from_the_clock_are_refused_with_a_reason_and_the_rest_kept() {
        let bounds = TimeBounds {
            future: Duration::from_secs(3_600),
            past: Duration::from_secs(24 * 3_600),
        };
        // Within the bounds at both edges, the year 2500, the epoch.
        let year_2500 = 16_725_225_600 * S;
        let mut b = batch(&[NOW + 3_600 * S, NOW - 24 * 3_600 * S, year_2500, 0, NOW]);
        let screened = bounds.screen(NOW, &mut b);
        assert_eq!(screened, Screened { future: 1, past: 1 });
        assert_eq!((b.accepted, b.rejected), (3, 2));
        assert_eq!(b.traces[0].1.spans.len(), 3);
        assert!(
            b.errors[0].contains("ends at 2500-01-01T00:00:00Z, more than 1h after"),
            "{:?}",
            b.errors
        );
        assert!(
            b.errors[1].contains("ends at 1970-01-01T00:00:00Z, more than 1day before"),
            "{:?}",
            b.errors
        );
    }

    #[test]
    fn a_batch_of_only_refused_spans_keeps_no_trace() {
        let bounds = TimeBounds {
            future: Duration::from_secs(60),
            past: Duration::from_secs(60),
        };
        let mut b = batch(&[0, 0]);
        bounds.screen(NOW, &mut b);
        assert!(b.traces.is_empty());
        assert_eq!((b.accepted, b.rejected), (0, 2));
    }

    #[test]
    fn a_manual_clock_moves_only_forward_and_when_told() {
        let clock = Clock::manual(5);
        let shared = clock.clone();
        shared.advance_to(9);
        shared.advance_to(7);
        assert_eq!(clock.now_ns(), 9);
        assert!(Clock::System.now_ns() > NOW / 2);
    }
}
