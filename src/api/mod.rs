//! The HTTP API (axum): health, traces, hops, findings, timeout budgets,
//! statement shapes, the service graph, instrumentation coverage and counters
//! as JSON. The only place JSON response shapes live.
//!
//! Conventions: ids are lowercase hex, durations are milliseconds as numbers in
//! fields ending `_ms`, times are RFC 3339, and every error is
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

mod console;
mod coverage;
mod edges;
mod error;
mod federate;
mod findings;
mod grafana;
mod health;
mod hops;
pub mod jaeger;
mod kinds;
mod metrics;
mod openapi;
mod params;
mod queries;
mod schemas;
mod timeouts;
mod trace_tree;
mod traces;

pub use coverage::{blind_by_service, coverage_bodies, ServiceCoverageBody};
pub use error::{time_limit, unauthenticated, ApiError};
pub use federate::{PeerState, PeerStatus, MISSING_PEERS_HEADER};
pub use findings::{crossed_text, FindingBody};
pub use hops::{entry_body, EntryAggBody};
pub use openapi::{document as openapi_document, v1_routes};
pub use params::rfc3339;
pub use traces::{trace_body, TraceBody};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;

use crate::assemble::Buffer;
use crate::auth::{Guard, RequireToken};
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
    /// The detectors' configuration (the timeout budgets are computed on
    /// request with its thresholds).
    pub analysis: Arc<crate::analyze::Options>,
    /// The other replicas, whose state merged answers include.
    pub peers: Arc<crate::peers::Peers>,
    /// What this replica does among them.
    pub role: crate::config::Role,
}

/// Largest request body the API takes (its routes read none): larger ones are
/// answered 413 and counted (`api_too_large`).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// The API's routes. `/healthz` and `/readyz` stay open (probes send no
/// tokens), and so do the web console's pages and assets (they hold no data;
/// see `api/console/`); every other route requires the API's bearer token, if one
/// is set, and request bodies are bounded ([`MAX_BODY_BYTES`]).
pub fn router(state: AppState) -> Router {
    let guard = RequireToken::new(state.api_guard.clone(), unauthenticated);
    Router::new()
        .merge(v1_routes())
        .route("/metrics", get(metrics::render))
        .merge(grafana::router())
        .merge(jaeger::peer_router(&state))
        .merge(console::data())
        .route_layer(guard)
        .merge(console::pages())
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
