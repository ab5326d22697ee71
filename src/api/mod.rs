//! The HTTP API (axum): health, traces, hops, findings, timeout budgets,
//! statement shapes and counters as JSON. The only place JSON response shapes live.
//!
//! Conventions: ids are lowercase hex, durations are milliseconds as numbers in
//! fields ending `_ms`, times are RFC 3339, and every error is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

mod edges;
mod error;
mod findings;
mod grafana;
mod health;
mod hops;
mod metrics;
mod params;
mod queries;
mod timeouts;
mod traces;

pub use error::ApiError;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::assemble::Buffer;
use crate::stats::Stats;
use crate::store::Store;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub buffer: Arc<Buffer>,
    pub stats: Arc<Stats>,
    /// Set once every listener is bound.
    pub ready: Arc<AtomicBool>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/stats", get(health::stats))
        .route("/api/v1/traces", get(traces::list))
        .route("/api/v1/traces/{trace_id}", get(traces::get))
        .route("/api/v1/hops", get(hops::list))
        .route("/api/v1/findings", get(findings::list))
        .route("/api/v1/findings/{id}", get(findings::get))
        .route("/api/v1/timeouts", get(timeouts::list))
        .route("/api/v1/queries", get(queries::list))
        .route("/api/v1/edges", get(edges::list))
        .route("/metrics", get(metrics::render))
        .merge(grafana::router())
        .fallback(error::not_found)
        .with_state(state)
}
