//! Cross-trace timeout detectors: `deadline_not_propagated`,
//! `timeout_inversion`, `gateway_timeout` and `timeout_headroom`.
//!
//! One trace cannot say what a timeout is set to; many can. Each analyzed trace
//! leaves compact [`CallRecord`]s and a [`RootRecord`] ([`call_records`]); the
//! store keeps those of recent traces in a bounded window; [`detect`] runs over
//! the window every few seconds. All of it is pure: no clock, no I/O.
//!
//! * **Timeouts** are inferred from where the durations of timed-out calls
//!   cluster ([`infer_timeout`]: by default at least 3 calls within 1 % of
//!   each other, and at least half of the edge's timed-out calls:
//!   `timeout_inference` in [`Thresholds`]), per edge
//!   (caller service → callee service and operation), and per entry point from
//!   its timed-out roots.
//! * **The budget map** ([`budget_map`]): per entry point, its timeout and each
//!   edge below with its inferred timeout and the budget left when it starts.
//! * **`timeout_inversion`**: an edge's timeout is longer than the budget left
//!   above it (A→B 30 s under a 29 s gateway; A→B 30 s then B→C 30 s), so the
//!   caller keeps waiting after its own caller has given up.
//! * **`deadline_not_propagated`**: in at least 3 calls of an edge
//!   (`deadline_not_propagated.min_calls`), work went on after the side
//!   waiting for it timed out.
//! * **`gateway_timeout`**: an entry point's timed-out roots cluster at a
//!   duration: 29 s is AWS API Gateway (critical: a hard limit), 60 s nginx or
//!   an ALB, 100 s Cloudflare, any other value a configured timeout of it.
//! * **`timeout_headroom`**: the p95 or p99 of an entry point or edge that did
//!   not time out is above half of the timeout in front of it (at least 20
//!   of them; `headroom.share` and `headroom.min_samples`).
//!
//! Files: `calls.rs` extracts the records, `infer.rs` clusters durations and
//! names layers, `map.rs` does the budget arithmetic, `report.rs` words what it
//! finds.
//!
//! A window finding's `count` is the number of supporting calls (or traces) in
//! the window at the time of the run; the store replaces, not adds, it
//! ([`crate::store::FindingStore::set`]), so a run never counts an occurrence
//! an earlier run counted.

mod calls;
mod infer;
mod map;
mod report;

pub use calls::{call_records, CallRecord, EdgeKey, RootRecord, TraceCalls};
pub use infer::{infer_timeout, quantile, Inferred, Layer};
pub use map::{budget_map, EdgeBudget, EntryBudget, Outer, Timeouts, Violation};

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{finding_id, Observation, Thresholds};

/// The ids of the `timeout_inversion` findings `map` judged against: every
/// edge with an inferred timeout and a known budget above it. One such
/// finding the same pass did not report is contradicted by what the window
/// now holds (an earlier pass inferred a deadline above it from fewer calls,
/// or, across detect replicas, from a peer's earlier answer; or the timeouts
/// changed) and is withdrawn ([`crate::store::Store::set_detection`]).
pub fn judged_inversions(map: &[EntryBudget]) -> Vec<u64> {
    let mut ids: Vec<u64> = map
        .iter()
        .flat_map(|e| &e.edges)
        .filter(|b| b.timeout.is_some() && b.budget_left_ns.is_some())
        .map(|b| report::inversion_id(b.edge))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Runs the window detectors over `traces` (the window's contents): the
/// budget map ([`budget_map`], computed once, returned for whoever shows it)
/// and the observations it holds. An edge seen under several entry points
/// yields one observation per kind: the one with the most support speaks for
/// it, with the counts of all of them added up.
pub fn detect(
    traces: &[Arc<TraceCalls>],
    thresholds: &Thresholds,
    outside: &Timeouts,
) -> (Vec<EntryBudget>, Vec<Observation>) {
    let map = budget_map(traces, thresholds, outside);
    let mut merged: FxHashMap<u64, (Observation, u64)> = FxHashMap::default();
    let all = map.iter().flat_map(|e| {
        e.violations
            .iter()
            .chain(e.edges.iter().flat_map(|edge| &edge.violations))
    });
    for v in all {
        let o = v.observation.clone();
        match merged.entry(v.finding_id) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                let count = o.count;
                slot.insert((o, count));
            }
            std::collections::hash_map::Entry::Occupied(mut m) => {
                let (best, total) = m.get_mut();
                *total += o.count;
                let seen = best.seen_ns.max(o.seen_ns);
                let severity = best.severity.max(o.severity);
                let mut ids = if o.count > best.count {
                    let ids = std::mem::take(&mut best.trace_ids);
                    *best = o;
                    ids
                } else {
                    o.trace_ids
                };
                ids.retain(|id| !best.trace_ids.contains(id));
                best.trace_ids.extend(ids);
                best.trace_ids.truncate(10);
                best.seen_ns = seen;
                best.severity = severity;
            }
        }
    }
    let mut out: Vec<Observation> = merged
        .into_values()
        .map(|(mut o, total)| {
            o.count = total;
            o
        })
        .collect();
    out.sort_by_key(|o| finding_id(o.kind, &o.culprit));
    (map, out)
}
