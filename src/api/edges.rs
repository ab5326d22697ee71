//! `GET /api/v1/edges?since=&until=`: the service graph, caller service →
//! callee service, over a window of trace start times (one-minute resolution):
//!
//! ```json
//! {"edges": [{"caller": "frontend", "callee": "orders", "calls": 40,
//!   "errors": 3, "wire_ms": 120.0, "wire_p50_ms": 2.9, "wire_p95_ms": 4.1,
//!   "critical_wire_ms": 118.5}]}
//! ```
//!
//! `wire_ms` is the summed time of the CLIENT spans outside the SERVER spans
//! they called (network, queueing, connection setup); `critical_wire_ms` the
//! part of it on the traces' critical paths. The most called edges come first.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::params::{ms, TimeRange};
use super::{ApiError, AppState};
use crate::model::Sym;
use crate::store::{EdgeStats, Store};

/// One edge as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ServiceEdgeBody {
    caller: Sym,
    callee: Sym,
    calls: u64,
    errors: u64,
    wire_ms: f64,
    wire_p50_ms: f64,
    wire_p95_ms: f64,
    critical_wire_ms: f64,
}

impl From<EdgeStats> for ServiceEdgeBody {
    fn from(e: EdgeStats) -> Self {
        ServiceEdgeBody {
            caller: e.key.caller,
            callee: e.key.callee,
            calls: e.calls,
            errors: e.errors,
            wire_ms: ms(e.wire_ns),
            wire_p50_ms: e.wire_p50_ns / 1e6,
            wire_p95_ms: e.wire_p95_ns / 1e6,
            critical_wire_ms: ms(e.critical_wire_ns),
        }
    }
}

/// The service graph, the most called edges first.
#[derive(Serialize, ToSchema)]
pub struct ServiceGraphBody {
    edges: Vec<ServiceEdgeBody>,
}

/// The edges of `[since_ns, until_ns)` as the API shows them.
pub fn edges(store: &Store, since_ns: Option<u64>, until_ns: Option<u64>) -> Vec<ServiceEdgeBody> {
    store
        .edges()
        .query(since_ns, until_ns)
        .into_iter()
        .map(Into::into)
        .collect()
}

/// The service graph: caller → callee service edges.
#[utoipa::path(
    get,
    path = "/api/v1/edges",
    operation_id = "list_edges",
    tag = "edges",
    params(TimeRange),
    responses(
        (status = 200, description = "Caller → callee edges with calls, errors and wire time", body = ServiceGraphBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    range: Result<Query<TimeRange>, QueryRejection>,
) -> Result<Json<ServiceGraphBody>, ApiError> {
    let (since, until) = TimeRange::read(range)?;
    Ok(Json(ServiceGraphBody {
        edges: edges(&state.store, since, until),
    }))
}
