//! `GET /api/v1/queries?target=&since=&until=&limit=`: the slow-query log built
//! from traces: statement shapes by their time on the critical path.
//!
//! As of the last detection pass: the window detectors compute the shapes
//! over the call window every `detect_interval` (5 s) when it changed, so an
//! answer is at most one interval old (`detectors_current` in
//! `/api/v1/stats` says whether the pass is over the window as it is).
//! `since`/`until` select traces by root start: when they leave out some of
//! the pass's traces, the shapes are computed on request over the rest of
//! them ([`pipeline::query_shapes`]; exact, and as of the same pass, where
//! shapes kept per time bucket could not give exact percentiles). `target`
//! keeps shapes whose database system, address, namespace or
//! `system address/namespace` label equals it; `limit` defaults to 100, at
//! most 1,000:
//!
//! ```json
//! {"queries": [{"statement": "SELECT * FROM orders WHERE customer_id = ?",
//!   "target": {"system": "postgresql", "address": "db.internal", "namespace": "shop"},
//!   "services": ["orders"], "count": 12, "p50_ms": 640.0, "p95_ms": 700.0,
//!   "max_ms": 702.0, "total_ms": 7700.0, "critical_ms": 7600.0,
//!   "critical_share": 0.81, "trace_ids": ["..."]}]}
//! ```
//!
//! `critical_share` is the shape's critical time over the summed durations of
//! every trace of the entry points that ran it; `trace_ids` the most recent
//! (at most 10).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::federate::{self, PeerStatus, Scope};
use super::params::{self, ms, TimeRange};
use super::{ApiError, AppState};
use crate::analyze::saturation::{DbTarget, QueryShape};
use crate::model::{Sym, TraceId};
use crate::pipeline;
use crate::store::Detection;

const DEFAULT_LIMIT: usize = 100;
/// Most shapes one answer lists.
pub const MAX_LIMIT: usize = 1000;

/// Filters of `GET /api/v1/queries`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// A database system, address, namespace or `system address/namespace` label.
    target: Option<String>,
    /// At most this many shapes (default 100, at most 1000).
    #[param(schema_with = super::openapi::limit_schema)]
    limit: Option<usize>,
}

/// The database a statement ran against.
#[derive(Serialize, ToSchema)]
pub struct TargetBody {
    system: Option<Sym>,
    address: Option<Sym>,
    namespace: Option<Sym>,
}

/// A statement shape and its timings.
#[derive(Serialize, ToSchema)]
pub struct QueryBody {
    statement: String,
    target: TargetBody,
    services: Vec<Sym>,
    count: u64,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    total_ms: f64,
    critical_ms: f64,
    critical_share: f64,
    trace_ids: Vec<TraceId>,
}

impl From<&QueryShape> for QueryBody {
    fn from(s: &QueryShape) -> Self {
        QueryBody {
            statement: s.statement.to_string(),
            target: TargetBody {
                system: s.target.system,
                address: s.target.address,
                namespace: s.target.namespace,
            },
            services: s.services.iter().map(|x| x.0).collect(),
            count: s.count(),
            p50_ms: ms(s.p50_ns()),
            p95_ms: ms(s.p95_ns()),
            max_ms: ms(s.max_ns()),
            total_ms: ms(s.total_ns),
            critical_ms: ms(s.critical_ns),
            critical_share: s.critical_share,
            trace_ids: s.trace_ids.clone(),
        }
    }
}

/// Statement shapes by time on the critical path.
#[derive(Serialize, ToSchema)]
pub struct QueriesBody {
    queries: Vec<QueryBody>,
    /// With peers configured (and not `local`): whether each answered; the
    /// shapes are over the windows of those that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerStatus>>,
}

fn target_matches(t: &DbTarget, want: &str) -> bool {
    [t.system, t.address, t.namespace]
        .iter()
        .any(|s| s.is_some_and(|s| s.as_str() == want))
        || t.label() == want
}

/// The statement shapes of the last detection pass (`detection`) over its
/// traces that started in `[since_ns, until_ns)`, as the API shows them:
/// those of `target` only when given, at most `limit`.
pub async fn shapes(
    detection: Arc<Detection>,
    target: Option<&str>,
    since_ns: Option<u64>,
    until_ns: Option<u64>,
    limit: usize,
) -> Result<Vec<QueryBody>, ApiError> {
    let target = target.filter(|t| !t.is_empty()).map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let shapes = pipeline::query_shapes(&detection, since_ns, until_ns);
        shapes
            .iter()
            .filter(|s| {
                target
                    .as_deref()
                    .is_none_or(|want| target_matches(&s.target, want))
            })
            .take(limit)
            .map(Into::into)
            .collect()
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("computing the statement shapes failed: {e}"),
    })
}

/// The slow-query log built from traces.
///
/// As of the last detection pass, at most one `detect_interval` old
/// (`detectors_current` in `/api/v1/stats` says whether it is over the
/// window as it is). With `since`/`until` leaving out some of its traces, the
/// shapes are computed over the rest of them on request.
#[utoipa::path(
    get,
    path = "/api/v1/queries",
    operation_id = "list_queries",
    tag = "queries",
    params(QueryParams, TimeRange, Scope),
    responses(
        (status = 200, description = "Statement shapes, most critical time first, as of the last detection pass", body = QueriesBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody),
        (status = 500, description = "The computation failed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<QueryParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<QueriesBody>, ApiError> {
    let p = params::query(q)?;
    let (since, until) = TimeRange::read(range)?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let (store, peers) = federate::view(&state, Scope::read(scope)?, true).await;
    Ok(Json(QueriesBody {
        queries: shapes(store.detection(), p.target.as_deref(), since, until, limit).await?,
        peers,
    }))
}
