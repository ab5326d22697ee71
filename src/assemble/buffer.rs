//! The in-flight trace buffer: spans by trace id in a sharded concurrent map.
//!
//! Completion policy: a trace is complete when no span arrived for `idle`, or
//! when it is older than `max_age` (noticed within `idle` of it). Completed
//! trace ids are remembered for `late_grace`; a span arriving for one of them
//! opens a *late* entry, which the daemon merges with the stored trace and
//! analyzes again. When more spans are buffered than
//! the span ceiling (`max_spans`, lowered while the process is short of
//! memory: see [`crate::memory`]), the oldest traces are handed out early.
//!
//! Admission: before a request is decoded, [`Buffer::admit`] checks that the
//! buffered spans plus the requests being decoded stay within `max_bytes` (the
//! memory budget); past it the request is refused, to be retried by its
//! exporter, and counted. Memory never grows past the budget plus one
//! request per admission that raced the check.
//!
//! The sweeps never scan the buffer: every insert also appends its trace id
//! to queues in arrival order ([`Order`]), and completion, eviction and the
//! forgetting of completed ids pop them from the front, so a sweep costs what
//! it hands out, not what is buffered (small traces made those scans the
//! buffer's main cost per span).
//!
//! Time is passed in (`now`), so the policy is tested without a clock.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use rustc_hash::FxBuildHasher;

use crate::model::{SpanSet, TraceId};
use crate::stats::Stats;

/// The completion policy and the memory bound.
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    pub idle: Duration,
    pub max_age: Duration,
    pub late_grace: Duration,
    pub max_spans: usize,
    /// The memory budget: most estimated bytes of buffered spans plus requests
    /// being decoded.
    pub max_bytes: usize,
}

/// A request refused because the buffer is at its memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "hopscope is at its memory budget for buffered spans ({buffered} bytes buffered,      {in_flight} being decoded, budget {budget}): retry later"
)]
pub struct MemoryFull {
    pub buffered: usize,
    pub in_flight: usize,
    pub budget: usize,
}

/// An admitted request's share of the budget, given back when it is dropped
/// (once its spans are in the buffer, where they are counted instead).
pub struct Admitted {
    buffer: Arc<Buffer>,
    bytes: usize,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.buffer
            .in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Why a trace left the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Idle,
    MaxAge,
    Evicted,
    Shutdown,
}

/// A trace handed from the buffer to analysis.
#[derive(Debug)]
pub struct Completed {
    pub trace_id: TraceId,
    pub spans: SpanSet,
    pub completion: Completion,
    /// The spans arrived after the trace was analyzed once: merge with the stored trace.
    pub late: bool,
    /// The write-ahead log segments holding the spans, oldest to newest
    /// (none without a log). The buffer knows only the segments' numbers;
    /// what they are is the log's.
    pub log: Option<RangeInclusive<u64>>,
}

struct Pending {
    spans: SpanSet,
    bytes: usize,
    first_seen: Instant,
    last_seen: Instant,
    late: bool,
    log: Option<RangeInclusive<u64>>,
}

/// Trace ids in the order of events, each with the event's time; an entry is
/// stale when its trace has changed since (it left, or received spans again),
/// which whoever pops it checks against the buffer.
#[derive(Default)]
struct Order {
    /// Every insert: (its time, the trace). A trace's newest entry carries
    /// its `last_seen`, so idle completion pops these; a trace that keeps
    /// receiving spans has an entry popped at least every `idle`, which is
    /// when its max age is checked (so it completes at most `idle` late);
    /// eviction pops the oldest.
    arrivals: VecDeque<(Instant, TraceId)>,
    /// Every completion: (when, the trace), to forget it after the late
    /// grace, or sooner when more than `max_spans` ids are remembered.
    done: VecDeque<(Instant, TraceId)>,
}

/// Pops the entries of `queue` whose time is at or before `until`.
fn due_entries(
    queue: &mut VecDeque<(Instant, TraceId)>,
    until: Instant,
) -> Vec<(Instant, TraceId)> {
    let n = queue.iter().take_while(|(at, _)| *at <= until).count();
    queue.drain(..n).collect()
}

pub struct Buffer {
    pending: DashMap<TraceId, Pending, FxBuildHasher>,
    /// Recently completed trace ids and when they completed.
    done: DashMap<TraceId, Instant, FxBuildHasher>,
    order: Mutex<Order>,
    spans: AtomicUsize,
    bytes: AtomicUsize,
    /// Bytes of admitted requests not in the buffer yet.
    in_flight: AtomicUsize,
    /// Most spans held before the oldest traces are handed out early:
    /// `max_spans`, or less while memory is short.
    ceiling: AtomicUsize,
    limits: BufferLimits,
    stats: Arc<Stats>,
}

impl Buffer {
    pub fn new(limits: BufferLimits, stats: Arc<Stats>) -> Self {
        Buffer {
            pending: DashMap::with_hasher(FxBuildHasher),
            done: DashMap::with_hasher(FxBuildHasher),
            order: Mutex::default(),
            spans: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            ceiling: AtomicUsize::new(limits.max_spans),
            limits,
            stats,
        }
    }

    /// Admits a request of `bytes` (its decoded spans take about as much) when
    /// the buffered spans, the requests being decoded and it fit the memory
    /// budget; counts the refusal otherwise.
    pub fn admit(self: &Arc<Self>, bytes: usize) -> Result<Admitted, MemoryFull> {
        let in_flight = self.in_flight.fetch_add(bytes, Ordering::Relaxed);
        let buffered = self.bytes();
        if buffered + in_flight + bytes > self.limits.max_bytes {
            self.in_flight.fetch_sub(bytes, Ordering::Relaxed);
            Stats::add(&self.stats.export_requests_refused, 1);
            Stats::add(&self.stats.export_bytes_refused, bytes as u64);
            return Err(MemoryFull {
                buffered,
                in_flight,
                budget: self.limits.max_bytes,
            });
        }
        Ok(Admitted {
            buffer: self.clone(),
            bytes,
        })
    }

    /// Adds spans of one trace, logged in write-ahead log segment `log` (if
    /// any). Returns true when the buffer is now over its span limit.
    pub fn insert(
        &self,
        trace_id: TraceId,
        mut spans: SpanSet,
        now: Instant,
        log: Option<u64>,
    ) -> bool {
        let n = spans.len();
        spans.shrink_to_fit();
        let mut entry = self.pending.entry(trace_id).or_insert_with(|| {
            let late = self
                .done
                .get(&trace_id)
                .is_some_and(|at| now.saturating_duration_since(*at) < self.limits.late_grace);
            Pending {
                spans: SpanSet::default(),
                bytes: 0,
                first_seen: now,
                last_seen: now,
                late,
                log: None,
            }
        });
        if let Some(segment) = log {
            entry.log = Some(match entry.log.take() {
                Some(r) => *r.start().min(&segment)..=*r.end().max(&segment),
                None => segment..=segment,
            });
        }
        if entry.late {
            Stats::add(&self.stats.late_spans, n as u64);
        }
        entry.spans.append(spans);
        let bytes = entry.spans.size_bytes();
        let grown = bytes - entry.bytes;
        entry.bytes = bytes;
        // Inserts racing on one trace may come in either order.
        entry.last_seen = entry.last_seen.max(now);
        // Taken under the trace's shard lock, as everywhere: the sweeps pop
        // the queues first and take shard locks after.
        self.order.lock().arrivals.push_back((now, trace_id));
        drop(entry);
        self.bytes.fetch_add(grown, Ordering::Relaxed);
        self.spans.fetch_add(n, Ordering::Relaxed) + n > self.span_ceiling()
    }

    /// Most spans held before the oldest traces are handed out early.
    pub fn span_ceiling(&self) -> usize {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// Sets the span ceiling, at most `max_spans`.
    pub fn set_span_ceiling(&self, spans: usize) {
        self.ceiling
            .store(spans.min(self.limits.max_spans), Ordering::Relaxed);
    }

    pub fn span_count(&self) -> usize {
        self.spans.load(Ordering::Relaxed)
    }

    pub fn trace_count(&self) -> usize {
        self.pending.len()
    }

    /// Estimated bytes held by buffered spans (see [`SpanSet::size_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> BufferLimits {
        self.limits
    }

    /// The oldest write-ahead log segment holding buffered spans.
    pub fn oldest_log(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter_map(|e| e.log.as_ref().map(|l| *l.start()))
            .min()
    }

    /// Hands out every trace that is idle or too old, and forgets completed ids
    /// older than the late grace period.
    pub fn take_complete(&self, now: Instant) -> Vec<Completed> {
        let limits = self.limits;
        let due = |p: &Pending| {
            if now.saturating_duration_since(p.first_seen) >= limits.max_age {
                Some(Completion::MaxAge)
            } else if now.saturating_duration_since(p.last_seen) >= limits.idle {
                Some(Completion::Idle)
            } else {
                None
            }
        };
        let popped = now
            .checked_sub(limits.idle)
            .map(|t| due_entries(&mut self.order.lock().arrivals, t))
            .unwrap_or_default();
        let mut out = Vec::new();
        for (_, id) in popped {
            // A stale entry finds its trace gone or not due (a newer entry
            // stands for it).
            if self.pending.get(&id).is_none_or(|p| due(&p).is_none()) {
                continue;
            }
            // Mark done first, so a span racing with the removal is seen as late.
            self.mark_done(id, now);
            let mut why = None;
            let removed = self.pending.remove_if(&id, |_, p| {
                why = due(p);
                why.is_some()
            });
            if let (Some((trace_id, p)), Some(completion)) = (removed, why) {
                out.push(self.hand_out(trace_id, p, completion));
            }
        }
        self.forget_done(now);
        out
    }

    /// Remembers that `id` completed at `now` (a span of it arriving within
    /// the late grace opens a late entry).
    fn mark_done(&self, id: TraceId, now: Instant) {
        self.done.insert(id, now);
        self.order.lock().done.push_back((now, id));
    }

    /// Forgets completed ids past the late grace, and the oldest beyond
    /// `max_spans` of them (a flood of small traces would otherwise hold
    /// millions of ids for the grace period: late spans of the oldest are
    /// then taken as a new trace).
    fn forget_done(&self, now: Instant) {
        let expired = {
            let mut order = self.order.lock();
            let mut expired = now
                .checked_sub(self.limits.late_grace)
                .map(|t| due_entries(&mut order.done, t))
                .unwrap_or_default();
            let over = order.done.len().saturating_sub(self.limits.max_spans);
            expired.extend(order.done.drain(..over));
            expired
        };
        for (at, id) in expired {
            // Completed again since: the newer entry forgets it.
            self.done.remove_if(&id, |_, t| *t == at);
        }
    }

    /// When over the span ceiling, hands out the oldest traces until the buffer
    /// is at 90 % of it.
    pub fn take_oldest(&self, now: Instant) -> Vec<Completed> {
        let max = self.span_ceiling();
        let count = self.span_count();
        if count <= max {
            return Vec::new();
        }
        let target = max - max / 10;
        let mut freed = 0;
        let mut out = Vec::new();
        while count - freed > target {
            // The trace with the oldest insert still queued: the oldest
            // trace, or one whose first spans came as long ago.
            let Some((_, id)) = self.order.lock().arrivals.pop_front() else {
                break;
            };
            if !self.pending.contains_key(&id) {
                continue;
            }
            self.mark_done(id, now);
            if let Some((trace_id, p)) = self.pending.remove(&id) {
                freed += p.spans.len();
                out.push(self.hand_out(trace_id, p, Completion::Evicted));
            }
        }
        out
    }

    /// Hands out everything (shutdown).
    pub fn drain(&self) -> Vec<Completed> {
        self.order.lock().arrivals.clear();
        let ids: Vec<TraceId> = self.pending.iter().map(|e| *e.key()).collect();
        ids.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|(trace_id, p)| self.hand_out(trace_id, p, Completion::Shutdown))
            .collect()
    }

    /// Counts the completion before the spans leave the buffer's count, so a
    /// reader that looks at the buffer first and the counters second always sees
    /// a trace in one or the other (`analysis_pending` never misses it).
    fn hand_out(&self, trace_id: TraceId, p: Pending, completion: Completion) -> Completed {
        let counter = match completion {
            Completion::Idle => &self.stats.traces_completed_idle,
            Completion::MaxAge => &self.stats.traces_completed_max_age,
            Completion::Evicted => &self.stats.traces_evicted_early,
            Completion::Shutdown => &self.stats.traces_flushed_at_shutdown,
        };
        Stats::add(counter, 1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.spans.fetch_sub(p.spans.len(), Ordering::Relaxed);
        self.bytes.fetch_sub(p.bytes, Ordering::Relaxed);
        Completed {
            trace_id,
            spans: p.spans,
            completion,
            late: p.late,
            log: p.log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Span, SpanId, SpanKind};

    fn limits() -> BufferLimits {
        BufferLimits {
            idle: Duration::from_secs(10),
            max_age: Duration::from_secs(300),
            late_grace: Duration::from_secs(60),
            max_spans: 100,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn requests_are_refused_past_the_memory_budget_and_admitted_again_below_it() {
        let stats = Arc::new(Stats::default());
        let b = Arc::new(Buffer::new(
            BufferLimits {
                max_bytes: 10_000,
                ..limits()
            },
            stats.clone(),
        ));
        let first = b.admit(6_000).expect("fits");
        let full = b
            .admit(6_000)
            .expect_err("two requests being decoded pass the budget");
        assert_eq!((full.in_flight, full.budget), (6_000, 10_000));
        drop(first);
        b.insert(tid(1), spans(1..40), Instant::now(), None);
        let buffered = b.bytes();
        assert!(buffered > 2_000, "{buffered}");
        b.admit(10_000 - buffered)
            .expect("what is left of the budget fits");
        let full = b
            .admit(10_001 - buffered)
            .expect_err("one byte more does not");
        assert_eq!((full.buffered, full.in_flight), (buffered, 0));
        let s = stats.snapshot();
        assert_eq!(s.export_requests_refused, 2);
        assert_eq!(s.export_bytes_refused, 6_000 + (10_001 - buffered) as u64);
        b.drain();
        b.admit(10_000)
            .expect("an empty buffer takes the whole budget");
    }

    fn spans(ids: std::ops::Range<u64>) -> SpanSet {
        ids.map(|n| {
            Span::new(
                SpanId::from_u64(n).unwrap(),
                None,
                "svc",
                "op",
                SpanKind::Server,
                (0, 1),
            )
        })
        .collect()
    }

    fn tid(n: u8) -> TraceId {
        TraceId::from_bytes(&[n; 16]).unwrap()
    }

    #[test]
    fn a_trace_completes_after_idle_and_late_spans_reopen_it() {
        let stats = Arc::new(Stats::default());
        let b = Buffer::new(limits(), stats.clone());
        let t0 = Instant::now();
        b.insert(tid(1), spans(1..3), t0, None);
        b.insert(tid(1), spans(3..4), t0 + Duration::from_secs(5), None);
        assert!(
            b.take_complete(t0 + Duration::from_secs(14)).is_empty(),
            "idle counts from the last span"
        );
        let done = b.take_complete(t0 + Duration::from_secs(15));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].spans.len(), 3);
        assert!(!done[0].late);
        assert_eq!((b.span_count(), b.bytes()), (0, 0));

        // Within the grace period: a late entry, counted.
        b.insert(tid(1), spans(4..5), t0 + Duration::from_secs(20), None);
        let late = b.take_complete(t0 + Duration::from_secs(30));
        assert!(late[0].late);
        assert_eq!(stats.snapshot().late_spans, 1);

        // Past the grace period the id is forgotten: a new trace.
        b.insert(tid(1), spans(5..6), t0 + Duration::from_secs(100), None);
        assert!(!b.take_complete(t0 + Duration::from_secs(110))[0].late);
    }

    #[test]
    fn completed_ids_are_remembered_at_most_max_spans_at_a_time() {
        let b = Buffer::new(limits(), Arc::new(Stats::default()));
        let t0 = Instant::now();
        // 150 one-span traces complete together; the limit is 100 ids.
        for n in 0..150u64 {
            let id = TraceId::from_bytes(&(n as u128 + 1).to_be_bytes()).unwrap();
            b.insert(id, spans(n + 1..n + 2), t0, None);
        }
        assert_eq!(b.take_complete(t0 + Duration::from_secs(10)).len(), 150);
        let again = |n: u64| {
            let id = TraceId::from_bytes(&(n as u128 + 1).to_be_bytes()).unwrap();
            b.insert(id, spans(1_000..1_001), t0 + Duration::from_secs(11), None);
        };
        again(0);
        again(149);
        let late: Vec<bool> = b
            .take_complete(t0 + Duration::from_secs(21))
            .iter()
            .map(|c| c.late)
            .collect();
        assert_eq!(
            late,
            [false, true],
            "the oldest completed ids are forgotten first, the newest kept"
        );
    }

    #[test]
    fn a_trace_that_never_goes_idle_completes_at_max_age() {
        let stats = Arc::new(Stats::default());
        let b = Buffer::new(limits(), stats.clone());
        let t0 = Instant::now();
        for s in 0..61 {
            b.insert(
                tid(2),
                spans(s + 1..s + 2),
                t0 + Duration::from_secs(s * 5),
                None,
            );
            let done = b.take_complete(t0 + Duration::from_secs(s * 5));
            if s * 5 >= 300 {
                assert_eq!(done[0].completion, Completion::MaxAge);
                assert_eq!(stats.snapshot().traces_completed_max_age, 1);
                return;
            }
            assert!(done.is_empty());
        }
        unreachable!("the trace should have reached its max age");
    }

    #[test]
    fn over_the_span_limit_the_oldest_traces_leave_first() {
        let stats = Arc::new(Stats::default());
        let b = Buffer::new(limits(), stats.clone());
        let t0 = Instant::now();
        for n in 0..5u8 {
            let full = b.insert(
                tid(n + 1),
                spans(1..26),
                t0 + Duration::from_millis(n as u64),
                None,
            );
            assert_eq!(full, n >= 4, "over 100 spans only with the fifth trace");
        }
        let evicted = b.take_oldest(t0 + Duration::from_millis(10));
        // 125 spans; down to 90 takes two traces of 25, the two oldest.
        let ids: Vec<TraceId> = evicted.iter().map(|c| c.trace_id).collect();
        assert_eq!(ids, vec![tid(1), tid(2)]);
        assert!(evicted.iter().all(|c| c.completion == Completion::Evicted));
        assert_eq!(b.span_count(), 75);
        assert_eq!(stats.snapshot().traces_evicted_early, 2);
        assert!(
            b.take_oldest(t0).is_empty(),
            "under the limit nothing more leaves"
        );
        assert_eq!(b.drain().len(), 3);
    }
}
