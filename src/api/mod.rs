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
mod openapi;
mod params;
mod queries;
mod timeouts;
mod traces;

pub use error::ApiError;
pub use openapi::{document as openapi_document, v1_routes};

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
        .merge(openapi::v1_routes())
        .route("/metrics", get(metrics::render))
        .fallback(error::not_found)
        .with_state(state)
}
