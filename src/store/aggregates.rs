//! Latency share per entry point and hop, in one-minute buckets keyed by the
//! trace's start time. Every number is a sum or a [`Sketch`], so buckets merge for
//! any window and a trace analyzed again is retracted and re-added exactly.
//! Buckets older than the retention before the daemon's clock are dropped,
//! which bounds memory (never relative to the newest bucket seen, which a
//! span stamped years ahead would make every other bucket older than).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::sketch::Sketch;
use crate::analyze::{AnalyzedTrace, EntryPoint, HopKey};

/// The width of a bucket: one minute.
pub(super) const BUCKET_NS: u64 = 60_000_000_000;

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

pub struct Aggregates {
    entries: Mutex<FxHashMap<EntryPoint, BTreeMap<u64, Bucket>>>,
    retention_buckets: u64,
}

impl Aggregates {
    pub fn new(retention: Duration) -> Self {
        Aggregates {
            entries: Mutex::new(FxHashMap::default()),
            retention_buckets: (retention.as_nanos() as u64 / BUCKET_NS).max(1),
        }
    }

    /// How much trace time is kept.
    pub fn retention(&self) -> Duration {
        Duration::from_nanos(self.retention_buckets * BUCKET_NS)
    }

    /// Adds (`weight` 1) or retracts (`weight` -1) one analyzed trace, and
    /// drops its entry point's buckets older than the retention before
    /// `now_ns` (the daemon's clock).
    pub fn record(&self, t: &AnalyzedTrace, weight: i64, now_ns: u64) {
        let bucket_id = t.trace.start(t.trace.root) / BUCKET_NS;
        let mut entries = self.entries.lock();
        let buckets = entries.entry(t.entry).or_default();
        let bucket = buckets.entry(bucket_id).or_default();
        bucket.traces += weight;
        bucket.root_ns += t.duration_ns() as i128 * weight as i128;
        for hop in &t.hops {
            let agg = bucket.hops.entry(hop.key).or_default();
            agg.traces += weight;
            agg.critical_ns += hop.critical_ns as i128 * weight as i128;
            agg.critical.add(hop.critical_ns as f64, weight);
            agg.share.add(hop.share, weight);
            if agg.traces == 0 {
                bucket.hops.remove(&hop.key);
            }
        }
        if bucket.traces == 0 {
            buckets.remove(&bucket_id);
        }
        *buckets = buckets.split_off(&self.oldest_kept(now_ns));
        if buckets.is_empty() {
            entries.remove(&t.entry);
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
        self.entries.lock().retain(|_, buckets| {
            buckets.retain(|minute, _| keep.contains(minute));
            !buckets.is_empty()
        });
    }

    /// Every bucket, for the state file.
    pub fn export(&self) -> Vec<BucketState> {
        let entries = self.entries.lock();
        let mut out = Vec::new();
        for (entry, buckets) in entries.iter() {
            for (minute, b) in buckets {
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

    /// Adds exported buckets (a restart's history) to these aggregates.
    pub fn import(&self, state: Vec<BucketState>) {
        let mut entries = self.entries.lock();
        for s in state {
            let bucket = entries
                .entry(s.entry)
                .or_default()
                .entry(s.minute)
                .or_default();
            bucket.traces += s.traces;
            bucket.root_ns += s.root_ns;
            for (key, h) in s.hops {
                bucket.hops.entry(key).or_default().merge(&h);
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
            .filter_map(|(e, buckets)| entry_stats(*e, buckets.range(lo..hi).map(|(_, b)| b)))
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
        let Some(buckets) = entries.get(&entry) else {
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
