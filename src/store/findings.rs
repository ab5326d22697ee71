//! Findings: observations merged by kind and culprit, bounded in number (the
//! least recently seen go first).

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use crate::analyze::saturation::explains;
use crate::analyze::{finding_id, FindingKind, Observation, Severity};
use crate::model::TraceId;

/// Example traces kept per finding.
const EXAMPLES: usize = 10;

/// One problem, however many traces showed it: the latest observation of its
/// kind and culprit, with what was merged into it — the worst severity, the
/// count, the most recent example traces first, and `seen_ns` as last seen.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finding {
    pub id: u64,
    pub first_seen_ns: u64,
    pub latest: Observation,
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
        let o = &f.latest;
        self.kind.is_none_or(|k| k == o.kind)
            && self.severity.is_none_or(|s| o.severity >= s)
            && self.since_ns.is_none_or(|t| o.seen_ns >= t)
            && self.until_ns.is_none_or(|t| f.first_seen_ns < t)
            && self.service.as_deref().is_none_or(|s| {
                o.culprit.service.as_str() == s || o.chain.iter().any(|h| h.service.as_str() == s)
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
        let first_seen_ns = o.seen_ns;
        self.merge(o, false, first_seen_ns);
    }

    /// Merges the observation of a window detector, which recounts what the
    /// window holds on every run: its count replaces the finding's, so an
    /// occurrence is never counted twice across runs.
    pub fn set(&self, o: Observation) {
        let first_seen_ns = o.seen_ns;
        self.merge(o, true, first_seen_ns);
    }

    /// Merges a finding another replica holds (`api::federate`): counts add,
    /// examples combine (bounded as here), first seen is the earlier, last
    /// seen the later, severity the worse.
    pub fn absorb(&self, f: Finding) {
        self.merge(f.latest, false, f.first_seen_ns);
    }

    /// An empty store of the same bound.
    pub fn empty_like(&self) -> FindingStore {
        FindingStore::new(self.max)
    }

    fn merge(&self, mut o: Observation, replace_count: bool, first_seen_ns: u64) {
        let id = finding_id(o.kind, &o.culprit);
        let mut inner = self.inner.write();
        match inner.get_mut(&id) {
            Some(f) => {
                let old = &mut f.latest;
                let severity = old.severity.max(o.severity);
                let count = if replace_count {
                    o.count
                } else {
                    old.count + o.count
                };
                f.first_seen_ns = f.first_seen_ns.min(first_seen_ns);
                // The new examples first; one seen again moves to the front.
                let mut examples = std::mem::take(&mut o.trace_ids);
                old.trace_ids.retain(|t| !examples.contains(t));
                examples.append(&mut old.trace_ids);
                examples.truncate(EXAMPLES);
                if o.seen_ns >= old.seen_ns {
                    *old = o;
                }
                old.severity = severity;
                old.count = count;
                old.trace_ids = examples;
            }
            None => {
                if inner.len() >= self.max {
                    if let Some(oldest) = inner
                        .values()
                        .min_by_key(|f| f.latest.seen_ns)
                        .map(|f| f.id)
                    {
                        inner.remove(&oldest);
                    }
                }
                o.trace_ids.truncate(EXAMPLES);
                inner.insert(
                    id,
                    Finding {
                        id,
                        first_seen_ns,
                        latest: o,
                    },
                );
            }
        }
    }

    /// Every finding, for the state file.
    pub fn export(&self) -> Vec<Finding> {
        self.inner.read().values().cloned().collect()
    }

    /// Adds findings kept before a restart (within the bound, most recently
    /// seen first).
    pub fn import(&self, mut findings: Vec<Finding>) {
        findings.sort_by_key(|f| std::cmp::Reverse(f.latest.seen_ns));
        let mut inner = self.inner.write();
        for f in findings {
            if inner.len() >= self.max {
                break;
            }
            inner.entry(f.id).or_insert(f);
        }
    }

    /// Drops the findings last seen outside `[earliest_ns, latest_ns]` (unix
    /// ns); returns how many.
    pub fn retain_seen_within(&self, earliest_ns: u64, latest_ns: u64) -> usize {
        let mut inner = self.inner.write();
        let before = inner.len();
        inner.retain(|_, f| (earliest_ns..=latest_ns).contains(&f.latest.seen_ns));
        before - inner.len()
    }

    /// Drops finding `id` if it is held and `contradicted` says so; whether
    /// it was dropped.
    pub fn withdraw_if(&self, id: u64, contradicted: impl FnOnce(&Finding) -> bool) -> bool {
        let mut inner = self.inner.write();
        let drop = inner.get(&id).is_some_and(contradicted);
        if drop {
            inner.remove(&id);
        }
        drop
    }

    /// Drops the findings `o` explains ([`crate::analyze::saturation::explains`]):
    /// a diagnosis made on part of the evidence (a window that held some of a
    /// hot row's calls looked like a slow query) withdrawn once the rest shows
    /// what it was. Returns how many.
    pub fn withdraw_explained_by(&self, o: &Observation) -> usize {
        let mut inner = self.inner.write();
        let before = inner.len();
        inner.retain(|_, f| !explains(o, &f.latest));
        before - inner.len()
    }

    /// Worst first: severity, then occurrences, then the most recent.
    /// Per kind and severity: how many findings there are and how many
    /// observations they hold, for every kind and severity present.
    pub fn counts(&self) -> Vec<((FindingKind, Severity), (u64, u64))> {
        let mut out: std::collections::BTreeMap<_, (u64, u64)> = Default::default();
        for f in self.inner.read().values() {
            let c = out.entry((f.latest.kind, f.latest.severity)).or_default();
            c.0 += 1;
            c.1 += f.latest.count;
        }
        out.into_iter().collect()
    }

    pub fn list(&self, filter: &FindingFilter, limit: usize) -> Vec<Finding> {
        let inner = self.inner.read();
        let mut out: Vec<Finding> = inner
            .values()
            .filter(|f| filter.accepts(f))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            let (x, y) = (&a.latest, &b.latest);
            y.severity
                .cmp(&x.severity)
                .then(y.count.cmp(&x.count))
                .then(y.seen_ns.cmp(&x.seen_ns))
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
            .filter(|f| ids.contains(&f.id) || f.latest.trace_ids.contains(&trace))
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (b.latest.severity)
                .cmp(&a.latest.severity)
                .then(a.id.cmp(&b.id))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::evidence::LockContention;
    use crate::analyze::{Culprit, Evidence};
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
            // The store keeps evidence as it is and reads none of it.
            evidence: Evidence::LockContention(Default::default()),
            trace_ids: vec![TraceId::from_bytes(&[count as u8 + 1; 16]).unwrap()],
            count,
            seen_ns,
            crossed: Vec::new(),
            location: None,
            spans: Vec::new(),
        }
    }

    #[test]
    fn window_observations_replace_the_count_and_trace_observations_add_to_it() {
        let store = FindingStore::new(10);
        store.set(observation(4, 10));
        store.set(observation(6, 20));
        let f = store.list(&FindingFilter::default(), 10).remove(0);
        assert_eq!(
            (f.latest.count, f.first_seen_ns, f.latest.seen_ns),
            (6, 10, 20)
        );
        assert_eq!(f.latest.summary, "6 calls");
        assert_eq!(f.latest.trace_ids.len(), 2);

        store.record(observation(1, 30));
        store.record(observation(1, 40));
        assert_eq!(store.get(f.id).unwrap().latest.count, 8);
    }

    #[test]
    fn a_replica_s_finding_adds_its_count_and_widens_the_sightings() {
        let store = FindingStore::new(10);
        store.record(observation(3, 20));
        let theirs = FindingStore::new(10);
        theirs.record(Observation {
            severity: Severity::Critical,
            ..observation(5, 10)
        });
        theirs.record(observation(1, 40));
        for f in theirs.export() {
            store.absorb(f);
        }
        let f = store.list(&FindingFilter::default(), 10).remove(0);
        assert_eq!(f.latest.count, 9);
        assert_eq!((f.first_seen_ns, f.latest.seen_ns), (10, 40));
        assert_eq!(f.latest.severity, Severity::Critical);
        assert_eq!(f.latest.trace_ids.len(), 3);
    }

    #[test]
    fn a_lock_wait_withdraws_the_slow_query_and_blocked_worker_it_explains() {
        let of = |kind, service: &str, operation: &str, peer: &str| Observation {
            kind,
            culprit: Culprit {
                service: Sym::new(service),
                operation: Sym::new(operation),
                peer: Some(Sym::new(peer)),
            },
            ..observation(1, 10)
        };
        let store = FindingStore::new(10);
        let lookalike = of(
            FindingKind::SlowQuery,
            "orders",
            "SELECT … FOR UPDATE",
            "pg",
        );
        store.set(lookalike.clone());
        store.set(of(FindingKind::SlowQuery, "orders", "SELECT report", "pg"));
        store.set(of(
            FindingKind::BlockedWorker,
            "orders",
            "POST /order",
            "orders-1",
        ));
        store.set(of(
            FindingKind::BlockedWorker,
            "hasher",
            "GET /hash",
            "hasher-1",
        ));
        let mut lock = of(
            FindingKind::LockContention,
            "orders",
            "SELECT … FOR UPDATE",
            "pg",
        );
        lock.evidence = Evidence::LockContention(LockContention {
            waiting_services: vec!["orders".to_owned()],
            ..Default::default()
        });
        // Only a lock finding explains anything.
        assert_eq!(store.withdraw_explained_by(&lookalike), 0);
        assert_eq!(store.withdraw_explained_by(&lock), 2);
        let left: Vec<(FindingKind, &str)> = store
            .list(&FindingFilter::default(), 10)
            .iter()
            .map(|f| (f.latest.kind, f.latest.culprit.operation.as_str()))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.contains(&(FindingKind::SlowQuery, "SELECT report")));
        assert!(left.contains(&(FindingKind::BlockedWorker, "GET /hash")));
    }
}
