//! The HTTP API (axum): health, traces, hops, findings, timeout budgets,
//! statement shapes and counters as JSON. The only place JSON response shapes live.
//!
//! Conventions: ids are lowercase hex, durations are milliseconds as numbers in
//! fields ending `_ms`, times are RFC 3339, and every error is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

mod error;
mod findings;
mod health;
mod hops;
mod metrics;
mod params;
mod queries;
mod timeouts;
mod traces;

pub use error::ApiError;
pub use findings::FindingBody;
pub use hops::{entry_body, EntryAggBody};
pub use params::rfc3339;
pub use traces::{trace_body, TraceBody};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;

use crate::assemble::Buffer;
use crate::auth::{self, Guard, RequireToken};
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
    /// Checks the bearer token of every route but the probes'.
    pub api_guard: Guard,
}

/// Largest request body the API takes (its routes read none): larger ones are
/// answered 413 and counted (`api_too_large`).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The API's routes. `/healthz` and `/readyz` stay open (probes send no
/// tokens); every other route requires the API's bearer token, if one is set,
/// and request bodies are bounded ([`MAX_BODY_BYTES`]).
pub fn router(state: AppState) -> Router {
    let guard = RequireToken::new(state.api_guard.clone(), auth::http_refusal);
    Router::new()
        .route("/api/v1/stats", get(health::stats))
        .route("/api/v1/traces", get(traces::list))
        .route("/api/v1/traces/{trace_id}", get(traces::get))
        .route("/api/v1/hops", get(hops::list))
        .route("/api/v1/findings", get(findings::list))
        .route("/api/v1/findings/{id}", get(findings::get))
        .route("/api/v1/timeouts", get(timeouts::list))
        .route("/api/v1/queries", get(queries::list))
        .route("/metrics", get(metrics::render))
        .route_layer(guard)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(error::not_found)
        .layer(middleware::from_fn_with_state(
            state.stats.clone(),
            error::limit_body,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
