//! Cross-trace saturation detectors: from the outside each looks like "the
//! database call is slow"; each has a different fix.
//!
//! Each analyzed trace leaves its [`SaturationRecords`] next to its call
//! records in the window ([`saturation_records`], one pass over the spans'
//! attributes): a [`QueryRecord`] per database call (its statement normalised
//! by [`normalize()`], its target, duration and critical time) and a
//! [`RequestRecord`] per SERVER span of a known `service.instance.id` (its self
//! time, and per downstream [`Target`] its calls and the wait before the
//! first). [`detect`] runs over the window with the timeout detectors.
//!
//! * **`slow_query`** ([`slow_queries`]): the database call itself is slow. Calls
//!   are grouped by statement shape and target ([`query_shapes`], also
//!   `GET /api/v1/queries`); a shape is slow when its p95 is at least 500 ms, or
//!   at least 100 ms and 5× the median of the other shapes on its target, with
//!   at least 3 calls that slow (the defaults of `slow_query` in
//!   [`Thresholds`]; every detector's are in its section). Time spent *before* a fast call (waiting for a
//!   connection) is not a slow query.
//! * **`pool_exhaustion`** ([`pool_exhaustion`]): an instance's requests queue
//!   before their calls to a target while the calls stay fast and the calls in
//!   flight sit at a ceiling, the estimated pool size; a ceiling that shrinks
//!   is a suspected leak.
//! * **`blocked_worker`** ([`blocked_workers`]): one instance serves its
//!   requests one at a time ([`Serialized`]: self times in series, requests
//!   queued before SERVER spans that never overlap, or ends in a staircase).
//! * **`lock_contention`** ([`lock_contention`]): calls of one statement wait
//!   for a lock one transaction at a time holds (lock events on the span, or
//!   concurrent calls ending in a staircase while the fastest is fast). Runs
//!   first: the shapes it explains are not slow queries, the services whose
//!   requests waited are not blocked workers.
//! * **`cold_start`** ([`cold_starts`]): most of the first 3 SERVER spans of an
//!   instance take at least 3× and 100 ms over their own operation's steady
//!   median (its other requests, at least 10): a new instance whose first
//!   requests are a slow endpoint is not cold.
//!
//! Files: `records.rs` extracts the records, `normalize.rs` folds statements,
//! `lock.rs` finds lock waits and staircases,
//! `timeline.rs` counts intervals in flight; one file per detector.

mod blocked;
mod cold_start;
mod lock;
mod normalize;
mod pool;
mod queries;
mod records;
mod timeline;

pub use blocked::{
    blocked_workers, contention, queued_before_server, Contention, Queue, Serialized,
};
pub use cold_start::{cold_starts, is_cold};
pub use lock::{
    bursts, explains, lock_contention, staircase, table_of, takes_locks, Locks, Staircase,
};
pub use normalize::normalize;
pub use pool::{ceilings, pool_exhaustion, shrinking};
pub(crate) use queries::culprit_statement;
pub use queries::{query_shapes, slow_queries, slow_threshold_ns, QueryShape};
pub(crate) use records::shape_of;
pub use records::{
    lock_wait, saturation_records, wait_before, DbTarget, PoolUse, QueryRecord, RequestRecord,
    SaturationRecords, Target, UseParts,
};
pub use timeline::Timeline;

use std::sync::Arc;

use super::budget::TraceCalls;
use super::{Observation, Thresholds};

/// Runs the saturation detectors over `traces` (the window's contents) with
/// `thresholds`: the statement shapes ([`query_shapes`], computed once,
/// returned for whoever shows them) and the observations. Lock contention
/// runs first: the shapes and services it explains are not reported again as
/// slow queries or blocked workers.
///
/// Also returns the ids of the findings it judged whether or not it
/// reported them ([`cold_starts`]).
pub fn detect(
    traces: &[Arc<TraceCalls>],
    thresholds: &Thresholds,
) -> (Vec<QueryShape>, Vec<Observation>, Vec<u64>) {
    let locks = lock_contention(traces, &thresholds.lock_contention);
    let shapes = query_shapes(traces);
    let unexplained: Vec<&QueryShape> = shapes
        .iter()
        .filter(|s| !locks.shapes.contains(&(s.statement.clone(), s.target)))
        .collect();
    let mut out = locks.observations;
    out.extend(slow_queries(&unexplained, &thresholds.slow_query));
    out.extend(pool_exhaustion(traces, &thresholds.pool));
    out.extend(blocked_workers(traces, &locks.services, thresholds));
    let (cold, judged) = cold_starts(traces, &thresholds.cold_start);
    out.extend(cold);
    (shapes, out, judged)
}

/// Orders a detector's observations by culprit service, then peer (stable, so
/// ties keep the detector's own order): the same window gives the same order
/// whatever order its hash maps iterated in.
fn sort_by_culprit(observations: &mut [Observation]) {
    fn key(o: &Observation) -> (&str, Option<&str>) {
        (
            o.culprit.service.as_str(),
            o.culprit.peer.map(|p| p.as_str()),
        )
    }
    observations.sort_by(|a, b| key(a).cmp(&key(b)));
}
