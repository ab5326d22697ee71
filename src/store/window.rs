//! The call window: the call records ([`TraceCalls`]) of recent traces, which
//! the cross-trace detectors read, and what their last pass computed over it
//! ([`Detection`]), which `GET /api/v1/timeouts` and `GET /api/v1/queries`
//! read.
//!
//! Bounded by time and by size: a trace leaves when it ended more than
//! `max_age` before the daemon's clock ([`crate::clock::Clock`]; never the
//! newest trace seen, which one span stamped years ahead would make
//! everything else older than), and the oldest
//! traces leave first when the window holds more than `max_records` records
//! (each call, database query and instance-tagged SERVER span is one, each
//! trace's root one more). Every trace dropped is
//! counted. A trace put again (analyzed again after late spans) replaces its
//! earlier records, so it counts once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::analyze::budget::{EntryBudget, Timeouts, TraceCalls};
use crate::analyze::saturation::QueryShape;
use crate::model::TraceId;

/// How much trace time the window spans.
pub const WINDOW_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Most records the window holds (about 64 bytes each; a query record also
/// holds its statement shape, at most 1 KiB).
pub const WINDOW_MAX_RECORDS: usize = 200_000;

#[derive(Default)]
struct Inner {
    /// By trace end, then id: the oldest first.
    by_end: BTreeMap<(u64, TraceId), Arc<TraceCalls>>,
    ends: FxHashMap<TraceId, u64>,
    records: usize,
    calls: usize,
    generation: u64,
    dropped_traces: u64,
    dropped_calls: u64,
}

impl Inner {
    fn remove(&mut self, key: (u64, TraceId)) -> Option<Arc<TraceCalls>> {
        let t = self.by_end.remove(&key)?;
        self.ends.remove(&key.1);
        self.records -= t.records();
        self.calls -= t.calls.len();
        Some(t)
    }

    /// Drops the traces that ended outside `[earliest, latest]`, then the
    /// oldest while there are more than `max_records` records, counting them.
    fn bound(&mut self, earliest: u64, latest: u64, max_records: usize) {
        let mut dropped = false;
        while let Some(&key) = self.by_end.keys().next() {
            if key.0 >= earliest && self.records <= max_records {
                break;
            }
            self.drop_trace(key);
            dropped = true;
        }
        while let Some(&key) = self.by_end.keys().next_back() {
            if key.0 <= latest {
                break;
            }
            self.drop_trace(key);
            dropped = true;
        }
        if dropped {
            self.generation += 1;
        }
    }

    fn stats(&self) -> WindowStats {
        WindowStats {
            traces: self.by_end.len(),
            calls: self.calls,
            oldest_end_ns: self.by_end.keys().next().map(|k| k.0),
            newest_end_ns: self.by_end.keys().next_back().map(|k| k.0),
            dropped_traces: self.dropped_traces,
            dropped_calls: self.dropped_calls,
        }
    }

    fn drop_trace(&mut self, key: (u64, TraceId)) {
        let t = self.remove(key).expect("the key is there");
        self.dropped_traces += 1;
        self.dropped_calls += t.calls.len() as u64;
    }
}

/// The window as one detection pass reads it.
#[derive(Debug, Clone, Default)]
pub struct WindowSnapshot {
    /// [`CallWindow::generation`] when it was read.
    pub generation: u64,
    /// What the window held and had dropped.
    pub stats: WindowStats,
    /// Every trace's records, oldest end first.
    pub traces: Vec<Arc<TraceCalls>>,
}

impl WindowSnapshot {
    /// A window of `traces`, in any order, as a pass reads it: oldest end
    /// first, with its stats (none dropped): the union of every replica's
    /// window a merged answer computes over.
    pub fn of(mut traces: Vec<Arc<TraceCalls>>) -> WindowSnapshot {
        traces.sort_by_key(|t| (t.end_ns(), t.trace_id));
        let stats = WindowStats {
            traces: traces.len(),
            calls: traces.iter().map(|t| t.calls.len()).sum(),
            oldest_end_ns: traces.first().map(|t| t.end_ns()),
            newest_end_ns: traces.last().map(|t| t.end_ns()),
            dropped_traces: 0,
            dropped_calls: 0,
        };
        WindowSnapshot {
            generation: 0,
            stats,
            traces,
        }
    }

    /// Its traces whose root started in `[since_ns, until_ns)`, oldest end
    /// first, or `None` when that is every one of them.
    pub fn narrowed(
        &self,
        since_ns: Option<u64>,
        until_ns: Option<u64>,
    ) -> Option<Vec<Arc<TraceCalls>>> {
        if since_ns.is_none() && until_ns.is_none() {
            return None;
        }
        let kept: Vec<Arc<TraceCalls>> = self
            .traces
            .iter()
            .filter(|t| {
                since_ns.is_none_or(|s| t.root.start_ns >= s)
                    && until_ns.is_none_or(|u| t.root.start_ns < u)
            })
            .cloned()
            .collect();
        (kept.len() < self.traces.len()).then_some(kept)
    }
}

/// What one pass of the cross-trace detectors computed besides findings, with
/// the window it ran over; kept until the next pass replaces it.
#[derive(Debug, Default)]
pub struct Detection {
    /// The window the pass ran over.
    pub window: WindowSnapshot,
    /// The timeout budget map of every entry point in the window.
    pub budgets: Vec<EntryBudget>,
    /// Every statement shape in the window, most critical time first.
    pub shapes: Vec<QueryShape>,
    /// The timeouts of edges and entry points this window does not own that
    /// the pass used: a detect replica's peers' ([`Timeouts`]).
    pub outside: Timeouts,
    /// The timeouts the pass inferred of the edges and entry points this
    /// window owns, which a detect replica's peers ask for.
    pub inferred: Timeouts,
    /// The findings the pass judged whether or not it reported them
    /// (timeout inversions, cold starts): one it did not report while its
    /// example traces are still in the window is contradicted by what the
    /// window now holds ([`crate::store::Store::set_detection`]).
    pub judged: Vec<u64>,
}

/// What the window holds and has dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    pub traces: usize,
    pub calls: usize,
    /// End of the oldest and of the newest trace held (unix ns).
    pub oldest_end_ns: Option<u64>,
    pub newest_end_ns: Option<u64>,
    /// Dropped to stay within the bounds, since start.
    pub dropped_traces: u64,
    pub dropped_calls: u64,
}

pub struct CallWindow {
    inner: Mutex<Inner>,
    max_age_ns: u64,
    max_records: usize,
}

impl CallWindow {
    pub fn new(max_age: Duration, max_records: usize) -> Self {
        CallWindow {
            inner: Mutex::new(Inner::default()),
            max_age_ns: max_age.as_nanos() as u64,
            max_records: max_records.max(1),
        }
    }

    /// Adds the records of one trace, replacing any earlier ones of it; `now_ns`
    /// is the daemon's clock.
    pub fn put(&self, trace: TraceCalls, now_ns: u64) {
        let mut inner = self.inner.lock();
        self.insert(&mut inner, trace, now_ns);
    }

    fn insert(&self, inner: &mut Inner, trace: TraceCalls, now_ns: u64) {
        let id = trace.trace_id;
        let end = trace.end_ns();
        if let Some(old) = inner.ends.get(&id).copied() {
            inner.remove((old, id));
        }
        inner.records += trace.records();
        inner.calls += trace.calls.len();
        inner.ends.insert(id, end);
        inner.by_end.insert((end, id), Arc::new(trace));
        inner.generation += 1;
        inner.bound(
            now_ns.saturating_sub(self.max_age_ns),
            u64::MAX,
            self.max_records,
        );
    }

    /// Adds a part of one trace's records (a detect replica receives them
    /// service by service): merged with the parts already held when they come
    /// from the same analysis (the same root), else replacing them (the trace
    /// was analyzed again after late spans, and every part comes again).
    pub fn merge(&self, part: TraceCalls, now_ns: u64) {
        let id = part.trace_id;
        let mut inner = self.inner.lock();
        let held = inner
            .ends
            .get(&id)
            .and_then(|end| inner.by_end.get(&(*end, id)))
            .filter(|t| t.root == part.root);
        let whole = match held {
            Some(held) => {
                let mut whole = TraceCalls::clone(held);
                whole.merge(&part);
                whole
            }
            None => part,
        };
        self.insert(&mut inner, whole, now_ns);
    }

    /// Drops the traces that ended more than `max_age` before `now_ns` or
    /// after `latest_ns` (counted as dropped), so a window nobody adds to
    /// still ages.
    pub fn expire(&self, now_ns: u64, latest_ns: u64) {
        self.inner.lock().bound(
            now_ns.saturating_sub(self.max_age_ns),
            latest_ns,
            self.max_records,
        );
    }

    /// Everything the window holds, with its generation and stats, read at
    /// once.
    pub fn snapshot(&self) -> WindowSnapshot {
        let inner = self.inner.lock();
        WindowSnapshot {
            generation: inner.generation,
            stats: inner.stats(),
            traces: inner.by_end.values().cloned().collect(),
        }
    }

    /// Changes on every [`CallWindow::put`]: a detector run over an unchanged
    /// window can be skipped.
    pub fn generation(&self) -> u64 {
        self.inner.lock().generation
    }

    pub fn stats(&self) -> WindowStats {
        self.inner.lock().stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::budget::{CallRecord, EdgeKey, RootRecord};
    use crate::analyze::EntryPoint;
    use crate::model::{SpanKind, Sym};

    const S: u64 = 1_000_000_000;

    fn trace(n: u8, start_s: u64, calls: usize) -> TraceCalls {
        let edge = EdgeKey {
            caller: Sym::new("a"),
            callee: Some(Sym::new("b")),
            operation: Sym::new("op"),
        };
        TraceCalls {
            trace_id: TraceId::from_bytes(&[n; 16]).unwrap(),
            root: RootRecord {
                entry: EntryPoint {
                    service: Sym::new("a"),
                    operation: Sym::new("GET /"),
                },
                start_ns: start_s * S,
                duration_ns: S,
                timed_out: false,
                kind: SpanKind::Server,
                http_status: None,
                relayed_from: None,
            },
            calls: vec![
                CallRecord {
                    edge,
                    start_offset_ns: 0,
                    duration_ns: S / 2,
                    timed_out: false,
                    relayed: false,
                    overrun_ns: 0,
                    depth: 0,
                    parent: None,
                    root_span: false,
                    shadow: false,
                };
                calls
            ],
            saturation: Default::default(),
            owns_root: true,
        }
    }

    fn ids(w: &CallWindow) -> Vec<u8> {
        w.snapshot()
            .traces
            .iter()
            .map(|t| t.trace_id.as_bytes()[0])
            .collect()
    }

    #[test]
    fn traces_older_than_the_clock_by_max_age_leave_and_are_counted() {
        let w = CallWindow::new(Duration::from_secs(60), 1_000);
        w.put(trace(1, 1_000, 2), 1_010 * S);
        w.put(trace(2, 1_030, 1), 1_040 * S);
        w.put(trace(3, 1_070, 3), 1_071 * S);
        // Trace 1 ended at 1,001 s, more than 60 s before the clock's 1,071 s.
        assert_eq!(ids(&w), vec![2, 3]);
        let s = w.stats();
        assert_eq!(
            (s.traces, s.calls, s.dropped_traces, s.dropped_calls),
            (2, 4, 1, 2)
        );
        assert_eq!(s.oldest_end_ns, Some(1_031 * S));
        // A late trace already out of the window is dropped at once.
        w.put(trace(4, 900, 1), 1_071 * S);
        assert_eq!(ids(&w), vec![2, 3]);
        assert_eq!(w.stats().dropped_traces, 2);
        // Time passes without traffic: the window empties.
        let g = w.generation();
        w.expire(1_132 * S, u64::MAX);
        assert_eq!(ids(&w), Vec::<u8>::new());
        assert!(
            w.generation() > g,
            "the detectors run again on what is left"
        );
    }

    #[test]
    fn a_trace_from_the_far_future_moves_nothing_out_and_leaves_on_expiry() {
        let w = CallWindow::new(Duration::from_secs(60), 1_000);
        w.put(trace(1, 1_000, 1), 1_010 * S);
        // Stamped in the year 2500: the clock still reads 1,011 s.
        w.put(trace(2, 16_725_225_600, 1), 1_011 * S);
        w.put(trace(3, 1_005, 1), 1_012 * S);
        assert_eq!(ids(&w), vec![1, 3, 2]);
        w.expire(1_012 * S, 1_012 * S + 3_600 * S);
        assert_eq!(ids(&w), vec![1, 3]);
    }

    #[test]
    fn the_oldest_leave_first_past_the_record_bound_and_a_trace_put_again_counts_once() {
        let w = CallWindow::new(Duration::from_secs(3_600), 10);
        for n in 1..=4 {
            w.put(trace(n, 1_000 + n as u64, 2), 1_010 * S);
        }
        assert_eq!(ids(&w), vec![2, 3, 4], "3 records each: 12 > 10");
        let g = w.generation();
        w.put(trace(3, 1_003, 1), 1_010 * S);
        assert_eq!(ids(&w), vec![2, 3, 4]);
        assert_eq!(w.stats().calls, 5);
        assert!(w.generation() > g);
        // By root start: [1,003 s, 1,004 s).
        let whole = w.snapshot();
        assert_eq!(whole.generation, w.generation());
        let picked = whole.narrowed(Some(1_003 * S), Some(1_004 * S)).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].trace_id.as_bytes()[0], 3);
        assert!(
            whole.narrowed(Some(1_000 * S), None).is_none(),
            "every trace is selected: the whole window answers"
        );
    }
}
