//! `GET /api/v1/coverage?service=`: per service, how many spans carry what
//! the detectors read, and which detectors are blind or weakened for it and
//! why ([`crate::analyze::coverage`] has the rules), so that an empty findings
//! list is not mistaken for health:
//!
//! ```json
//! {"services": [{"service": "orders", "spans": 120, "server_spans": 40,
//!   "client_spans": 80, "database_spans": 40, "statement": 0,
//!   "peer_address": 80, "status_code": 80, "instance_id": 0,
//!   "connection_checkout": 0, "timestamps_ms": 0, "error_spans": 2,
//!   "ids_in_names": 0, "ids_in_statement_names": 0,
//!   "blind": [{"detector": "pool_exhaustion", "level": "blind",
//!     "reason": "requests of different replicas cannot be told apart: set service.instance.id ..."},
//!   {"detector": "slow_query", "level": "blind", "reason": "..."}]}]}
//! ```
//!
//! Counts cover every trace analyzed since the state began (they are kept in
//! the state file), services by name; `service` keeps that one service.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{params, ApiError, AppState};
use crate::analyze::coverage::{Counts, Level};
use crate::model::Sym;
use crate::store::Store;

/// The filter of `GET /api/v1/coverage`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CoverageParams {
    /// Only this service (empty: every service).
    service: Option<String>,
}

/// A detector a service leaves blind or weakened.
#[derive(Serialize, ToSchema)]
pub struct BlindBody {
    #[schema(schema_with = super::openapi::detector_schema)]
    detector: &'static str,
    level: Level,
    /// What is missing and which attribute or instrumentation to add.
    reason: &'static str,
}

/// What one service's spans carry, and what that leaves blind.
#[derive(Serialize, ToSchema)]
pub struct ServiceCoverageBody {
    service: Sym,
    /// Spans of the service.
    spans: u64,
    server_spans: u64,
    client_spans: u64,
    /// Spans (not SERVER) naming a database system or carrying a statement,
    /// connection checkouts excepted.
    database_spans: u64,
    /// Database spans with statement text (`db.query.text`, `db.statement`, `sql.query`).
    statement: u64,
    /// CLIENT spans naming their peer (`server.address`, `net.peer.name`,
    /// `peer.service`, the host of `url.full`/`http.url`) or answered by a
    /// SERVER span of another service.
    peer_address: u64,
    /// SERVER and CLIENT spans with an HTTP or gRPC status code.
    status_code: u64,
    /// Spans whose resource has `service.instance.id`.
    instance_id: u64,
    /// Spans that obtain a database connection (pool attributes, or a
    /// `connect`/`pool.acquire`... span before a query).
    connection_checkout: u64,
    /// Spans whose start and end are whole milliseconds.
    timestamps_ms: u64,
    /// Spans with status ERROR.
    error_spans: u64,
    /// Spans whose names carry ids (`GET /users/48213`) with no `http.route`
    /// to name them: set `http.route` and name the span after it.
    ids_in_names: u64,
    /// Spans whose names read as statements with ids (`SELECT users 48213`)
    /// and no `db.query.summary`: set it.
    ids_in_statement_names: u64,
    /// The detectors blind or weakened for this service; empty when its
    /// spans carry everything they read.
    blind: Vec<BlindBody>,
}

impl ServiceCoverageBody {
    fn new(service: Sym, c: Counts) -> Self {
        ServiceCoverageBody {
            service,
            spans: c.spans,
            server_spans: c.server,
            client_spans: c.client,
            database_spans: c.database,
            statement: c.statement,
            peer_address: c.peer_address,
            status_code: c.status_code,
            instance_id: c.instance_id,
            connection_checkout: c.connection_checkout,
            timestamps_ms: c.timestamps_ms,
            error_spans: c.error,
            ids_in_names: c.ids_in_names,
            ids_in_statement_names: c.ids_in_statement_names,
            blind: c
                .blind()
                .into_iter()
                .map(|b| BlindBody {
                    detector: b.detector.as_str(),
                    level: b.level,
                    reason: b.reason,
                })
                .collect(),
        }
    }
}

/// Instrumentation coverage per service, by name.
#[derive(Serialize, ToSchema)]
pub struct CoverageBody {
    services: Vec<ServiceCoverageBody>,
}

/// The coverage of every service, or of `service` only, as the API shows it.
pub fn coverage_bodies(store: &Store, service: Option<&str>) -> Vec<ServiceCoverageBody> {
    let service = service.filter(|s| !s.is_empty());
    store
        .coverage()
        .services()
        .into_iter()
        .filter(|(s, _)| service.is_none_or(|want| s.as_str() == want))
        .map(|(s, c)| ServiceCoverageBody::new(s, c))
        .collect()
}

/// Per service, the detectors its spans leave blind (not the weakened ones),
/// for the services that have any: what a "no findings" answer cannot vouch
/// for (the plain findings page and `hopscope analyze` say so).
pub fn blind_by_service(coverage: &[(Sym, Counts)]) -> Vec<(Sym, Vec<&'static str>)> {
    coverage
        .iter()
        .filter_map(|(s, c)| {
            let names: Vec<&str> = c
                .blind()
                .into_iter()
                .filter(|b| b.level == Level::Blind)
                .map(|b| b.detector.as_str())
                .collect();
            (!names.is_empty()).then_some((*s, names))
        })
        .collect()
}

/// What each service's spans carry, and which detectors are blind for it.
#[utoipa::path(
    get,
    path = "/api/v1/coverage",
    operation_id = "list_coverage",
    tag = "coverage",
    params(CoverageParams),
    responses(
        (status = 200, description = "Per service, span counts and the detectors blind for it", body = CoverageBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<CoverageParams>, QueryRejection>,
) -> Result<Json<CoverageBody>, ApiError> {
    let p = params::query(q)?;
    Ok(Json(CoverageBody {
        services: coverage_bodies(&state.store, p.service.as_deref()),
    }))
}
