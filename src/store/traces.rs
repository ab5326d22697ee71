//! Completed traces, queryable by id and newest first, bounded by count and by
//! estimated bytes; the oldest completed are dropped first.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use super::wal::LogRange;
use crate::analyze::AnalyzedTrace;
use crate::model::TraceId;

struct Entry {
    seq: u64,
    bytes: usize,
    trace: Arc<AnalyzedTrace>,
    /// Where its spans are in the write-ahead log: kept while it is here.
    log: Option<LogRange>,
}

#[derive(Default)]
struct Inner {
    map: FxHashMap<TraceId, Entry>,
    /// Completion order; entries whose `seq` no longer matches the map are stale.
    order: VecDeque<(u64, TraceId)>,
    bytes: usize,
    next_seq: u64,
}

pub struct TraceStore {
    inner: RwLock<Inner>,
    max_traces: usize,
    max_bytes: usize,
}

/// What a [`TraceStore::put`] displaced.
pub struct Displaced {
    /// The earlier analysis of the same trace (late spans were merged).
    pub replaced: Option<Arc<AnalyzedTrace>>,
    /// How many other traces were dropped to stay within bounds.
    pub evicted: usize,
}

impl TraceStore {
    pub fn new(max_traces: usize, max_bytes: usize) -> Self {
        TraceStore {
            inner: RwLock::new(Inner::default()),
            max_traces: max_traces.max(1),
            max_bytes,
        }
    }

    /// Keeps a trace whose spans are in `log` (with those of the analysis it
    /// replaces).
    pub fn put(&self, trace: Arc<AnalyzedTrace>, mut log: Option<LogRange>) -> Displaced {
        let id = trace.trace.trace_id;
        let bytes = trace.size_bytes();
        let mut inner = self.inner.write();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(old) = inner.map.get(&id).and_then(|e| e.log) {
            log = Some(log.map_or(old, |l| l.union(old)));
        }
        let replaced = inner.map.insert(
            id,
            Entry {
                seq,
                bytes,
                trace,
                log,
            },
        );
        if let Some(old) = &replaced {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        inner.order.push_back((seq, id));
        let mut evicted = 0;
        while inner.map.len() > self.max_traces
            || (inner.bytes > self.max_bytes && inner.map.len() > 1)
        {
            let Some((seq, old_id)) = inner.order.pop_front() else {
                break;
            };
            if inner.map.get(&old_id).is_some_and(|e| e.seq == seq) {
                let e = inner.map.remove(&old_id).expect("checked");
                inner.bytes -= e.bytes;
                evicted += 1;
            }
        }
        // Drop stale order entries at the front (left by replacements).
        while let Some(&(seq, id)) = inner.order.front() {
            if inner.map.get(&id).is_some_and(|e| e.seq == seq) {
                break;
            }
            inner.order.pop_front();
        }
        Displaced {
            replaced: replaced.map(|e| e.trace),
            evicted,
        }
    }

    /// The oldest write-ahead log segment holding spans of a kept trace.
    pub fn oldest_log(&self) -> Option<u64> {
        self.inner
            .read()
            .map
            .values()
            .filter_map(|e| e.log.map(|l| l.first))
            .min()
    }

    pub fn get(&self, id: &TraceId) -> Option<Arc<AnalyzedTrace>> {
        self.inner.read().map.get(id).map(|e| e.trace.clone())
    }

    /// Newest completed first, those `keep` accepts, at most `limit`.
    pub fn recent(
        &self,
        limit: usize,
        mut keep: impl FnMut(&AnalyzedTrace) -> bool,
    ) -> Vec<Arc<AnalyzedTrace>> {
        let inner = self.inner.read();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|(seq, id)| inner.map.get(id).filter(|e| e.seq == *seq))
            .filter(|e| keep(&e.trace))
            .take(limit)
            .map(|e| e.trace.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.inner.read().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{Span, SpanId, SpanKind};

    fn trace(n: u8, spans: u64) -> Arc<AnalyzedTrace> {
        let spans = (1..=spans)
            .map(|i| {
                Span::new(
                    SpanId::from_u64(i).unwrap(),
                    SpanId::from_u64(i - 1),
                    "s",
                    "op",
                    SpanKind::Internal,
                    (0, 10),
                )
            })
            .collect();
        Arc::new(analyze(
            assemble(TraceId::from_bytes(&[n; 16]).unwrap(), spans).unwrap(),
        ))
    }

    #[test]
    fn the_oldest_completed_traces_leave_first_by_count_and_by_bytes() {
        let store = TraceStore::new(3, usize::MAX);
        for n in 1..=4 {
            store.put(trace(n, 1), None);
        }
        let ids: Vec<u8> = store
            .recent(10, |_| true)
            .iter()
            .map(|t| t.trace.trace_id.as_bytes()[0])
            .collect();
        assert_eq!(ids, vec![4, 3, 2]);

        // Replacing a trace makes it the newest, without counting it twice.
        let d = store.put(trace(2, 2), None);
        assert!(d.replaced.is_some());
        assert_eq!(d.evicted, 0);
        let ids: Vec<u8> = store
            .recent(10, |_| true)
            .iter()
            .map(|t| t.trace.trace_id.as_bytes()[0])
            .collect();
        assert_eq!(ids, vec![2, 4, 3]);

        let one = trace(9, 50).size_bytes();
        let small = TraceStore::new(100, one * 2);
        for n in 10..15 {
            small.put(trace(n, 50), None);
        }
        assert_eq!(small.len(), 2);
        assert!(small.bytes() <= one * 2);
        assert!(small
            .get(&TraceId::from_bytes(&[14; 16]).unwrap())
            .is_some());
    }
}
