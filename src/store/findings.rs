//! Findings: observations merged by kind and culprit, bounded in number (the
//! least recently seen go first).

use std::collections::VecDeque;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::analyze::{finding_id, ChainHop, Culprit, FindingKind, Observation, Severity};
use crate::model::TraceId;

/// Example traces kept per finding.
const EXAMPLES: usize = 10;

/// One problem, however many traces showed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub id: u64,
    pub kind: FindingKind,
    /// The worst severity observed.
    pub severity: Severity,
    pub culprit: Culprit,
    /// From the latest observation.
    pub chain: Vec<ChainHop>,
    pub summary: String,
    pub remedy: String,
    pub evidence: serde_json::Value,
    /// The most recent first.
    pub trace_ids: VecDeque<TraceId>,
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// Which findings to list.
#[derive(Debug, Clone, Default)]
pub struct FindingFilter {
    pub kind: Option<FindingKind>,
    /// Culprit or any hop of the chain.
    pub service: Option<String>,
    /// At least this severe.
    pub severity: Option<Severity>,
    /// Seen at or after (unix ns).
    pub since_ns: Option<u64>,
    /// First seen before (unix ns).
    pub until_ns: Option<u64>,
}

impl FindingFilter {
    fn accepts(&self, f: &Finding) -> bool {
        self.kind.is_none_or(|k| k == f.kind)
            && self.severity.is_none_or(|s| f.severity >= s)
            && self.since_ns.is_none_or(|t| f.last_seen_ns >= t)
            && self.until_ns.is_none_or(|t| f.first_seen_ns < t)
            && self.service.as_deref().is_none_or(|s| {
                f.culprit.service.as_str() == s || f.chain.iter().any(|h| h.service.as_str() == s)
            })
    }
}

pub struct FindingStore {
    inner: RwLock<FxHashMap<u64, Finding>>,
    max: usize,
}

impl FindingStore {
    pub fn new(max: usize) -> Self {
        FindingStore {
            inner: RwLock::new(FxHashMap::default()),
            max: max.max(1),
        }
    }

    /// Merges an observation into the finding of its kind and culprit: its
    /// count adds to the finding's (per-trace detectors: one per trace).
    pub fn record(&self, o: Observation) {
        self.merge(o, false);
    }

    /// Merges the observation of a window detector, which recounts what the
    /// window holds on every run: its count replaces the finding's, so an
    /// occurrence is never counted twice across runs.
    pub fn set(&self, o: Observation) {
        self.merge(o, true);
    }

    fn merge(&self, o: Observation, replace_count: bool) {
        let id = finding_id(o.kind, &o.culprit);
        let mut inner = self.inner.write();
        match inner.get_mut(&id) {
            Some(f) => {
                f.severity = f.severity.max(o.severity);
                f.count = if replace_count {
                    o.count
                } else {
                    f.count + o.count
                };
                f.first_seen_ns = f.first_seen_ns.min(o.seen_ns);
                if o.seen_ns >= f.last_seen_ns {
                    f.last_seen_ns = o.seen_ns;
                    f.chain = o.chain;
                    f.summary = o.summary;
                    f.remedy = o.remedy;
                    f.evidence = o.evidence;
                }
                for t in o.trace_ids.into_iter().rev() {
                    f.trace_ids.retain(|x| *x != t);
                    f.trace_ids.push_front(t);
                }
                f.trace_ids.truncate(EXAMPLES);
            }
            None => {
                if inner.len() >= self.max {
                    if let Some(oldest) =
                        inner.values().min_by_key(|f| f.last_seen_ns).map(|f| f.id)
                    {
                        inner.remove(&oldest);
                    }
                }
                let mut trace_ids: VecDeque<TraceId> = o.trace_ids.into_iter().collect();
                trace_ids.truncate(EXAMPLES);
                inner.insert(
                    id,
                    Finding {
                        id,
                        kind: o.kind,
                        severity: o.severity,
                        culprit: o.culprit,
                        chain: o.chain,
                        summary: o.summary,
                        remedy: o.remedy,
                        evidence: o.evidence,
                        trace_ids,
                        count: o.count,
                        first_seen_ns: o.seen_ns,
                        last_seen_ns: o.seen_ns,
                    },
                );
            }
        }
    }

    /// Worst first: severity, then occurrences, then the most recent.
    pub fn list(&self, filter: &FindingFilter, limit: usize) -> Vec<Finding> {
        let inner = self.inner.read();
        let mut out: Vec<Finding> = inner
            .values()
            .filter(|f| filter.accepts(f))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.count.cmp(&a.count))
                .then(b.last_seen_ns.cmp(&a.last_seen_ns))
                .then(a.id.cmp(&b.id))
        });
        out.truncate(limit);
        out
    }

    pub fn get(&self, id: u64) -> Option<Finding> {
        self.inner.read().get(&id).cloned()
    }

    /// Findings that name `trace` among their examples, or whose ids are given.
    pub fn for_trace(&self, trace: TraceId, ids: &[u64]) -> Vec<Finding> {
        let inner = self.inner.read();
        let mut out: Vec<Finding> = inner
            .values()
            .filter(|f| ids.contains(&f.id) || f.trace_ids.contains(&trace))
            .cloned()
            .collect();
        out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sym;

    fn observation(count: u64, seen_ns: u64) -> Observation {
        Observation {
            kind: FindingKind::TimeoutInversion,
            severity: Severity::Warning,
            culprit: Culprit {
                service: Sym::new("api"),
                operation: Sym::new("GET /b"),
                peer: Some(Sym::new("b")),
            },
            chain: Vec::new(),
            summary: format!("{count} calls"),
            remedy: String::new(),
            evidence: serde_json::Value::Null,
            trace_ids: vec![TraceId::from_bytes(&[count as u8 + 1; 16]).unwrap()],
            count,
            seen_ns,
        }
    }

    #[test]
    fn window_observations_replace_the_count_and_trace_observations_add_to_it() {
        let store = FindingStore::new(10);
        store.set(observation(4, 10));
        store.set(observation(6, 20));
        let f = store.list(&FindingFilter::default(), 10).remove(0);
        assert_eq!((f.count, f.first_seen_ns, f.last_seen_ns), (6, 10, 20));
        assert_eq!(f.summary, "6 calls");
        assert_eq!(f.trace_ids.len(), 2);

        store.record(observation(1, 30));
        store.record(observation(1, 40));
        assert_eq!(store.get(f.id).unwrap().count, 8);
    }
}
