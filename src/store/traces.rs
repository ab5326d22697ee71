//! Completed traces, queryable by id and newest first, bounded by count and by
//! estimated bytes; the oldest completed are dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::analyze::AnalyzedTrace;
use crate::model::TraceId;

struct Entry {
    seq: u64,
    bytes: usize,
    trace: Arc<AnalyzedTrace>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TraceId, Entry>,
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

    pub fn put(&self, trace: Arc<AnalyzedTrace>) -> Displaced {
        let id = trace.trace.trace_id;
        let bytes = trace.size_bytes();
        let mut inner = self.inner.write();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let replaced = inner.map.insert(id, Entry { seq, bytes, trace });
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
