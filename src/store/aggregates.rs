//! Latency share per entry point and hop, in one-minute buckets keyed by the
//! trace's start time. Every number is a sum or a [`Sketch`], so buckets merge for
//! any window and a trace analyzed again is retracted and re-added exactly.
//! Buckets older than the retention before the daemon's clock are dropped,
//! which bounds memory (never relative to the newest bucket seen, which a
//! span stamped years ahead would make every other bucket older than).
//!
//! Cardinality is bounded too, as the OpenTelemetry Collector's spanmetrics
//! connector bounds its series (`aggregation_cardinality_limit`, overflow in a
//! series marked `otel.metric.overflow`): at most `max_entries` entry points
//! have series of their own, and at most `max_hops` hops per entry point.
//! A trace of a later entry point is counted under the entry point
//! [`OVERFLOW`] (service and operation), whose hops are all one hop
//! [`OVERFLOW`]; a later hop of an admitted entry point is counted under that
//! entry's hop [`OVERFLOW`]. An entry point or hop keeps its series while it
//! has buckets (it leaves with its last bucket, past the retention), and a
//! retraction lands in a series only when it is there, so a trace analyzed
//! again is retracted where it was added. Span names carrying ids are folded
//! before they get here ([`crate::analyze::names`]), so the limits are met only
//! by names nothing could fold.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Duration;

use parking_lot::Mutex;

use super::sketch::Sketch;
use crate::analyze::budget::TraceCalls;
use crate::analyze::{AnalyzedTrace, EntryPoint, HopKey, HopKind};
use crate::model::Sym;

/// The width of a bucket: one minute.
pub(super) const BUCKET_NS: u64 = 60_000_000_000;

/// The name of the entry point (service and operation) and of the hop that
/// count what is past the cardinality limits.
pub const OVERFLOW: &str = "(overflow)";
/// Entry points with series of their own, by default (`aggregate_max_entries`).
pub const DEFAULT_MAX_ENTRIES: usize = 1_000;
/// Hops with series of their own per entry point, by default (`aggregate_max_hops`).
pub const DEFAULT_MAX_HOPS: usize = 100;

/// Whether `entry` is the one that counts entry points past the limit.
pub fn is_overflow_entry(entry: &EntryPoint) -> bool {
    entry.operation.as_str() == OVERFLOW && entry.service.as_str() == OVERFLOW
}

/// Whether `hop` is the one that counts an entry point's hops past the limit.
pub fn is_overflow_hop(hop: &HopKey) -> bool {
    hop.operation.as_str() == OVERFLOW && hop.service.as_str() == OVERFLOW
}

fn overflow_entry() -> EntryPoint {
    let o = Sym::new(OVERFLOW);
    EntryPoint {
        service: o,
        operation: o,
    }
}

fn overflow_hop() -> HopKey {
    let o = Sym::new(OVERFLOW);
    HopKey {
        kind: HopKind::Span,
        service: o,
        operation: o,
        peer: None,
    }
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct HopAgg {
    traces: i64,
    critical_ns: i128,
    critical: Sketch,
    share: Sketch,
}

impl HopAgg {
    fn merge(&mut self, other: &HopAgg) {
        self.traces += other.traces;
        self.critical_ns += other.critical_ns;
        self.critical.merge(&other.critical);
        self.share.merge(&other.share);
    }
}

#[derive(Default)]
struct Bucket {
    traces: i64,
    root_ns: i128,
    hops: FxHashMap<HopKey, HopAgg>,
}

/// One minute of one entry point, as the state file keeps it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct BucketState {
    entry: EntryPoint,
    minute: u64,
    traces: i64,
    root_ns: i128,
    hops: Vec<(HopKey, HopAgg)>,
}

/// One hop of an entry point over a window.
#[derive(Debug, Clone, PartialEq)]
pub struct HopStats {
    pub key: HopKey,
    /// Traces whose critical path went through the hop.
    pub traces: u64,
    pub critical_ns: u64,
    /// Hop critical time / the entry's total root time in the window.
    pub share: f64,
    /// Per-trace share quantiles, over the traces that went through the hop.
    pub share_p50: f64,
    pub share_p95: f64,
    pub critical_p50_ns: f64,
    pub critical_p95_ns: f64,
    pub critical_p99_ns: f64,
}

/// An entry point over a window, hops sorted by share (largest first).
#[derive(Debug, Clone, PartialEq)]
pub struct EntryStats {
    pub entry: EntryPoint,
    pub traces: u64,
    pub root_ns: u64,
    pub hops: Vec<HopStats>,
}

/// One entry point's buckets and the hops admitted to series of their own.
#[derive(Default)]
struct Entry {
    buckets: BTreeMap<u64, Bucket>,
    hops: FxHashSet<HopKey>,
}

impl Entry {
    /// The series `key` is counted under: its own when admitted, or while
    /// there is room and `admit`; else the overflow hop.
    fn hop_series(&mut self, key: HopKey, admit: bool, max_hops: usize) -> HopKey {
        // The overflow hop (met in a state file) takes no slot of its own.
        if self.hops.contains(&key) || is_overflow_hop(&key) {
            return key;
        }
        if admit && self.hops.len() < max_hops {
            self.hops.insert(key);
            return key;
        }
        overflow_hop()
    }
}

pub struct Aggregates {
    entries: Mutex<FxHashMap<EntryPoint, Entry>>,
    retention_buckets: u64,
    max_entries: usize,
    max_hops: usize,
}

impl Aggregates {
    /// Keeps `retention` of trace time, within the default limits.
    pub fn new(retention: Duration) -> Self {
        Aggregates {
            entries: Mutex::new(FxHashMap::default()),
            retention_buckets: (retention.as_nanos() as u64 / BUCKET_NS).max(1),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_hops: DEFAULT_MAX_HOPS,
        }
    }

    /// These aggregates with at most `max_entries` entry points and
    /// `max_hops` hops per entry point in series of their own (each at least 1).
    pub fn limited(self, max_entries: usize, max_hops: usize) -> Self {
        Aggregates {
            max_entries: max_entries.max(1),
            max_hops: max_hops.max(1),
            ..self
        }
    }

    /// The series `entry` is counted under: its own when it has one, or
    /// while there is room and `admit`; else the overflow entry.
    fn entry_series(
        &self,
        entries: &FxHashMap<EntryPoint, Entry>,
        entry: EntryPoint,
        admit: bool,
    ) -> EntryPoint {
        let overflow = overflow_entry();
        if entry == overflow || entries.contains_key(&entry) {
            return entry;
        }
        let own = entries.len() - usize::from(entries.contains_key(&overflow));
        if admit && own < self.max_entries {
            entry
        } else {
            overflow
        }
    }

    /// The call records of a trace as the call window keeps them: under the
    /// entry point `(overflow)`, with every call's operation `(overflow)`,
    /// when the trace's entry point has no series of its own (past
    /// `max_entries`), so the window's entry points and their edges are
    /// bounded as the aggregates are (`GET /api/v1/timeouts`, the budget
    /// detectors).
    pub fn bounded(&self, mut calls: TraceCalls) -> TraceCalls {
        if !self.entries.lock().contains_key(&calls.root.entry) {
            calls.root.entry = overflow_entry();
            let o = Sym::new(OVERFLOW);
            for c in &mut calls.calls {
                c.edge.operation = o;
            }
        }
        calls
    }

    /// Empty aggregates of the same retention and limits.
    pub fn empty_like(&self) -> Self {
        Aggregates {
            entries: Mutex::new(FxHashMap::default()),
            ..*self
        }
    }

    /// How much trace time is kept.
    pub fn retention(&self) -> Duration {
        Duration::from_nanos(self.retention_buckets * BUCKET_NS)
    }

    /// Adds (`weight` 1) or retracts (`weight` -1) one analyzed trace, and
    /// drops its entry point's buckets older than the retention before
    /// `now_ns` (the daemon's clock). Returns how many of its observations
    /// (the trace under its entry point, each hop under its hop) an addition
    /// counted under [`OVERFLOW`].
    pub fn record(&self, t: &AnalyzedTrace, weight: i64, now_ns: u64) -> u64 {
        let bucket_id = t.trace.start(t.trace.root) / BUCKET_NS;
        let admit = weight > 0;
        let mut entries = self.entries.lock();
        let key = self.entry_series(&entries, t.entry, admit);
        let mut overflowed = u64::from(key != t.entry);
        let entry = entries.entry(key).or_default();
        // The trace's hops by series: those past the limit merge into one.
        let mut hops: Vec<(HopKey, u64, f64)> = Vec::with_capacity(t.hops.len());
        for hop in &t.hops {
            let series = if key == t.entry {
                entry.hop_series(hop.key, admit, self.max_hops)
            } else {
                overflow_hop()
            };
            overflowed += u64::from(series != hop.key);
            match hops.iter_mut().find(|h| h.0 == series) {
                Some(h) => {
                    h.1 += hop.critical_ns;
                    h.2 += hop.share;
                }
                None => hops.push((series, hop.critical_ns, hop.share)),
            }
        }
        let buckets = &mut entry.buckets;
        let bucket = buckets.entry(bucket_id).or_default();
        bucket.traces += weight;
        bucket.root_ns += t.duration_ns() as i128 * weight as i128;
        for (series, critical_ns, share) in hops {
            let agg = bucket.hops.entry(series).or_default();
            agg.traces += weight;
            agg.critical_ns += critical_ns as i128 * weight as i128;
            agg.critical.add(critical_ns as f64, weight);
            agg.share.add(share, weight);
            if agg.traces == 0 {
                bucket.hops.remove(&series);
            }
        }
        if bucket.traces == 0 {
            buckets.remove(&bucket_id);
        }
        *buckets = buckets.split_off(&self.oldest_kept(now_ns));
        if buckets.is_empty() {
            entries.remove(&key);
        }
        if admit {
            overflowed
        } else {
            0
        }
    }

    /// The first bucket within the retention before `now_ns`.
    fn oldest_kept(&self, now_ns: u64) -> u64 {
        (now_ns / BUCKET_NS).saturating_sub(self.retention_buckets)
    }

    /// Drops every bucket older than the retention before `now_ns` or
    /// starting after `latest_ns` (a state file written under a clock that
    /// ran ahead).
    pub fn expire(&self, now_ns: u64, latest_ns: u64) {
        let keep = self.oldest_kept(now_ns)..=latest_ns / BUCKET_NS;
        self.entries.lock().retain(|_, entry| {
            entry.buckets.retain(|minute, _| keep.contains(minute));
            !entry.buckets.is_empty()
        });
    }

    /// Every bucket, for the state file.
    pub fn export(&self) -> Vec<BucketState> {
        let entries = self.entries.lock();
        let mut out = Vec::new();
        for (entry, e) in entries.iter() {
            for (minute, b) in &e.buckets {
                out.push(BucketState {
                    entry: *entry,
                    minute: *minute,
                    traces: b.traces,
                    root_ns: b.root_ns,
                    hops: b
                        .hops
                        .iter()
                        .map(|(k, h)| {
                            let mut copy = HopAgg::default();
                            copy.merge(h);
                            (*k, copy)
                        })
                        .collect(),
                });
            }
        }
        out
    }

    /// Adds exported buckets (a restart's history) to these aggregates,
    /// admitting their entry points and hops within the limits as if they had
    /// just been seen.
    pub fn import(&self, state: Vec<BucketState>) {
        let mut entries = self.entries.lock();
        for s in state {
            let key = self.entry_series(&entries, s.entry, true);
            let entry = entries.entry(key).or_default();
            let mut hops = Vec::with_capacity(s.hops.len());
            for (hop, h) in s.hops {
                let series = if key == s.entry {
                    entry.hop_series(hop, true, self.max_hops)
                } else {
                    overflow_hop()
                };
                hops.push((series, h));
            }
            let bucket = entry.buckets.entry(s.minute).or_default();
            bucket.traces += s.traces;
            bucket.root_ns += s.root_ns;
            for (series, h) in hops {
                bucket.hops.entry(series).or_default().merge(&h);
            }
        }
    }

    /// Entry points (all, or the one asked for) over `[since_ns, until_ns)` of trace
    /// start times, at one-minute resolution.
    pub fn query(
        &self,
        entry: Option<EntryPoint>,
        since_ns: Option<u64>,
        until_ns: Option<u64>,
    ) -> Vec<EntryStats> {
        let (lo, hi) = bucket_range(since_ns, until_ns);
        let entries = self.entries.lock();
        let mut out: Vec<EntryStats> = entries
            .iter()
            .filter(|(e, _)| entry.is_none_or(|want| want == **e))
            .filter_map(|(e, entry)| entry_stats(*e, entry.buckets.range(lo..hi).map(|(_, b)| b)))
            .collect();
        out.sort_by(|a, b| b.traces.cmp(&a.traces).then(a.entry.cmp(&b.entry)));
        out
    }

    /// One entry point over `[since_ns, until_ns)` in steps of `step` (whole
    /// minutes, at least one), from the step of its first bucket in the window
    /// to the step of its last: each step's start (unix ns) and its stats,
    /// `None` for a step without traces. Empty when the entry has no traces in
    /// the window. At most retention / step points.
    pub fn series(
        &self,
        entry: EntryPoint,
        since_ns: Option<u64>,
        until_ns: Option<u64>,
        step: Duration,
    ) -> Vec<(u64, Option<EntryStats>)> {
        let step = (step.as_nanos() as u64 / BUCKET_NS).max(1);
        let (lo, hi) = bucket_range(since_ns, until_ns);
        let entries = self.entries.lock();
        let Some(buckets) = entries.get(&entry).map(|e| &e.buckets) else {
            return Vec::new();
        };
        let mut in_window = buckets.range(lo..hi);
        let (Some((&first, _)), Some((&last, _))) =
            (in_window.next(), buckets.range(lo..hi).next_back())
        else {
            return Vec::new();
        };
        let first = first - first % step;
        (first..=last)
            .step_by(step as usize)
            .map(|from| {
                let to = (from + step).min(hi);
                let stats = entry_stats(entry, buckets.range(from.max(lo)..to).map(|(_, b)| b));
                (from * BUCKET_NS, stats)
            })
            .collect()
    }
}

/// The buckets `[lo, hi)` that hold trace starts in `[since_ns, until_ns)`.
fn bucket_range(since_ns: Option<u64>, until_ns: Option<u64>) -> (u64, u64) {
    let lo = since_ns.map_or(0, |s| s / BUCKET_NS);
    let hi = until_ns.map_or(u64::MAX, |u| u.div_ceil(BUCKET_NS));
    (lo, hi.max(lo))
}

/// An entry point's buckets merged, hops by share (largest first); `None`
/// without traces.
fn entry_stats<'a>(
    entry: EntryPoint,
    buckets: impl Iterator<Item = &'a Bucket>,
) -> Option<EntryStats> {
    let mut traces = 0;
    let mut root_ns = 0;
    let mut hops: FxHashMap<HopKey, HopAgg> = FxHashMap::default();
    for b in buckets {
        traces += b.traces;
        root_ns += b.root_ns;
        for (k, h) in &b.hops {
            hops.entry(*k).or_default().merge(h);
        }
    }
    if traces <= 0 {
        return None;
    }
    let mut hops: Vec<HopStats> = hops
        .into_iter()
        .map(|(key, h)| HopStats {
            key,
            traces: h.traces.max(0) as u64,
            critical_ns: h.critical_ns.max(0) as u64,
            share: if root_ns > 0 {
                h.critical_ns as f64 / root_ns as f64
            } else {
                h.traces as f64 / traces as f64
            },
            share_p50: h.share.quantile(0.5).unwrap_or(0.0),
            share_p95: h.share.quantile(0.95).unwrap_or(0.0),
            critical_p50_ns: h.critical.quantile(0.5).unwrap_or(0.0),
            critical_p95_ns: h.critical.quantile(0.95).unwrap_or(0.0),
            critical_p99_ns: h.critical.quantile(0.99).unwrap_or(0.0),
        })
        .collect();
    hops.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.key.cmp(&b.key)));
    Some(EntryStats {
        entry,
        traces: traces as u64,
        root_ns: root_ns.max(0) as u64,
        hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::analyze::testing::{span, trace};
    use crate::model::SpanKind;

    /// `api` serving `entry`, which spends its second half in `child`.
    fn traced(entry: &str, child: &str) -> AnalyzedTrace {
        analyze(trace(vec![
            (
                span("api", (1, 0), entry, SpanKind::Server, (0, 100)),
                vec![],
            ),
            (
                span("api", (2, 1), child, SpanKind::Internal, (50, 100)),
                vec![],
            ),
        ]))
    }

    /// An entry point's operation and traces, with its hops' operations and traces.
    type Named = (String, u64, Vec<(String, u64)>);

    fn names(aggs: &Aggregates) -> Vec<Named> {
        let mut out: Vec<_> = aggs
            .query(None, None, None)
            .into_iter()
            .map(|e| {
                let mut hops: Vec<_> = e
                    .hops
                    .iter()
                    .map(|h| (h.key.operation.as_str().to_owned(), h.traces))
                    .collect();
                hops.sort();
                (e.entry.operation.as_str().to_owned(), e.traces, hops)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn entry_points_and_hops_past_the_limits_are_counted_as_overflow_and_retracted_there() {
        let aggs = Aggregates::new(Duration::from_secs(3600)).limited(1, 2);
        assert_eq!(aggs.record(&traced("GET /a", "load"), 1, 0), 0);
        // A third hop of the admitted entry point: past the hop limit.
        assert_eq!(aggs.record(&traced("GET /a", "render"), 1, 0), 1);
        // Another entry point: past the entry limit, with both its hops.
        let late = traced("GET /b", "load");
        assert_eq!(aggs.record(&late, 1, 0), 3);
        assert_eq!(
            names(&aggs),
            [
                (OVERFLOW.to_owned(), 1, vec![(OVERFLOW.to_owned(), 1)],),
                (
                    "GET /a".to_owned(),
                    2,
                    vec![
                        (OVERFLOW.to_owned(), 1),
                        ("GET /a".to_owned(), 2),
                        ("load".to_owned(), 1)
                    ],
                ),
            ]
        );
        let overflow = aggs.query(Some(overflow_entry()), None, None);
        assert!(is_overflow_entry(&overflow[0].entry) && is_overflow_hop(&overflow[0].hops[0].key));
        assert_eq!(overflow[0].hops[0].share, 1.0, "the trace's hops are one");
        // Analyzed again: retracted from the overflow, where it was added.
        assert_eq!(aggs.record(&late, -1, 0), 0);
        assert_eq!(names(&aggs).len(), 1);
        // The state file keeps the limits.
        let restored = Aggregates::new(Duration::from_secs(3600)).limited(1, 2);
        restored.import(aggs.export());
        assert_eq!(names(&restored), names(&aggs));
    }
}
