//! Cross-trace saturation detectors: `slow_query` and `cold_start`.
//!
//! Each analyzed trace leaves a [`QueryRecord`] per database call (its
//! statement normalised by [`normalize()`], its target, duration and critical
//! time) and a [`ServerRecord`] per SERVER span of a known
//! `service.instance.id` ([`saturation_records`]), next to its call records in
//! the window; [`detect`] runs over the window with the timeout detectors.
//!
//! * **`slow_query`** ([`slow_queries`]): the database call itself is slow. Calls
//!   are grouped by statement shape and target ([`query_shapes`], also
//!   `GET /api/v1/queries`); a shape is slow when its p95 is at least 500 ms, or
//!   at least 100 ms and 5× the median of the other shapes on its target, with
//!   at least 3 calls that slow. Time spent *before* a fast call (waiting for a
//!   connection) is not a slow query.
//! * **`cold_start`** ([`cold_starts`]): the first 3 SERVER spans of an instance
//!   have a median at least 3× and 100 ms over the service's steady state (its
//!   other requests, at least 10).

mod cold_start;
mod normalize;
mod queries;
mod records;

pub use cold_start::{
    cold_starts, is_cold, COLD_FACTOR, COLD_MIN_EXTRA_NS, COLD_REQUESTS, MIN_STEADY,
};
pub use normalize::normalize;
pub use queries::{
    query_shapes, slow_queries, slow_threshold_ns, QueryShape, MIN_SLOW_CALLS, SLOW_ABSOLUTE_NS,
    SLOW_FACTOR, SLOW_MIN_NS,
};
pub use records::{saturation_records, DbTarget, QueryRecord, ServerRecord};

use std::sync::Arc;

use super::budget::TraceCalls;
use super::Observation;

/// Runs the saturation detectors over `traces` (the window's contents).
pub fn detect(traces: &[Arc<TraceCalls>]) -> Vec<Observation> {
    let mut out = slow_queries(&query_shapes(traces));
    out.extend(cold_starts(traces));
    out
}
