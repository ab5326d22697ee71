//! Monotonic totals since start, for Prometheus: per entry point its traces
//! and root seconds, per hop of an entry point its critical-path seconds and
//! traces. Summed across replicas, `rate(hop critical) / rate(entry root)` is
//! the hop's latency share, as `GET /api/v1/hops` computes it for one daemon.
//!
//! Only a trace's first analysis counts (counters never go down; a late merge
//! would have to retract). Label cardinality is bounded: past
//! [`MAX_ENTRIES`] entry points or [`MAX_HOPS`] hops, new ones are counted
//! under an `other` entry or hop (the hops of the `other` entry are all one
//! `other` hop).

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::analyze::{AnalyzedTrace, EntryPoint, HopKey, HopKind};
use crate::model::Sym;

/// Most entry points with their own series.
pub const MAX_ENTRIES: usize = 200;
/// Most hops (over all entry points) with their own series.
pub const MAX_HOPS: usize = 2_000;

/// What is counted per entry point.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EntryTotal {
    pub traces: u64,
    pub root_ns: u64,
}

/// What is counted per hop.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HopTotal {
    pub traces: u64,
    pub critical_ns: u64,
}

#[derive(Default)]
struct Inner {
    entries: FxHashMap<EntryPoint, EntryTotal>,
    hops: FxHashMap<(EntryPoint, HopKey), HopTotal>,
}

#[derive(Default)]
pub struct Totals {
    inner: Mutex<Inner>,
}

/// The entry point or hop that stands for all those past the caps.
fn other() -> Sym {
    Sym::new("other")
}

impl Totals {
    /// Counts the first analysis of a trace.
    pub fn add(&self, t: &AnalyzedTrace) {
        let mut inner = self.inner.lock();
        let Inner { entries, hops } = &mut *inner;
        let known = entries.contains_key(&t.entry) || entries.len() < MAX_ENTRIES;
        let entry = if known {
            t.entry
        } else {
            EntryPoint {
                service: other(),
                operation: other(),
            }
        };
        let e = entries.entry(entry).or_default();
        e.traces += 1;
        e.root_ns = e.root_ns.saturating_add(t.duration_ns());
        for hop in &t.hops {
            let mut key = (entry, hop.key);
            if !known || (!hops.contains_key(&key) && hops.len() >= MAX_HOPS) {
                key.1 = HopKey {
                    kind: HopKind::Span,
                    service: other(),
                    operation: other(),
                    peer: None,
                };
            }
            let h = hops.entry(key).or_default();
            h.traces += 1;
            h.critical_ns = h.critical_ns.saturating_add(hop.critical_ns);
        }
    }

    /// Every entry point's totals, sorted by service and operation.
    pub fn entries(&self) -> Vec<(EntryPoint, EntryTotal)> {
        let mut out: Vec<_> = self
            .inner
            .lock()
            .entries
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        out.sort_by_key(|(e, _)| (e.service.as_str(), e.operation.as_str()));
        out
    }

    /// Every hop's totals, sorted by entry point and hop.
    pub fn hops(&self) -> Vec<((EntryPoint, HopKey), HopTotal)> {
        let mut out: Vec<_> = self
            .inner
            .lock()
            .hops
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        out.sort_by_key(|((e, h), _)| {
            (
                e.service.as_str(),
                e.operation.as_str(),
                h.kind,
                h.service.as_str(),
                h.operation.as_str(),
                h.peer.map(|p| p.as_str()),
            )
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{Span, SpanId, SpanKind, SpanSet, TraceId};

    fn trace(entry: usize) -> AnalyzedTrace {
        let span = Span::new(
            SpanId::from_u64(1).unwrap(),
            None,
            "api",
            &format!("GET /e{entry}"),
            SpanKind::Server,
            (0, 1_000),
        );
        let set: SpanSet = [span].into_iter().collect();
        analyze(assemble(TraceId::from_bytes(&[9; 16]).unwrap(), set).unwrap())
    }

    #[test]
    fn entry_points_past_the_cap_are_counted_as_other() {
        let totals = Totals::default();
        for n in 0..MAX_ENTRIES + 5 {
            totals.add(&trace(n));
        }
        totals.add(&trace(0));
        let entries = totals.entries();
        assert_eq!(entries.len(), MAX_ENTRIES + 1);
        let count = |op: &str| {
            entries
                .iter()
                .find(|(e, _)| e.operation.as_str() == op)
                .map(|(_, t)| t.traces)
        };
        assert_eq!(count("other"), Some(5));
        assert_eq!(count("GET /e0"), Some(2), "a known entry keeps its series");
        let hops = totals.hops();
        assert_eq!(
            hops.len(),
            MAX_ENTRIES + 1,
            "one hop per entry, other included"
        );
        assert_eq!(
            hops.iter().map(|(_, h)| h.critical_ns).sum::<u64>(),
            1_000 * (MAX_ENTRIES as u64 + 6)
        );
    }
}
