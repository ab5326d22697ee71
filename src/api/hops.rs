//! `GET /api/v1/hops?entry=SERVICE:OPERATION&since=&until=`: latency share per hop
//! of each entry point over a window.

use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::params::{self, ms};
use super::traces::{EntryBody, HopBody};
use super::{ApiError, AppState};
use crate::analyze::EntryPoint;
use crate::model::Sym;
use crate::store::{EntryStats, HopStats};

/// Filters of `GET /api/v1/hops`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HopParams {
    /// One entry point, `SERVICE:OPERATION`.
    #[param(schema_with = super::openapi::entry_schema)]
    entry: Option<String>,
    /// Traces whose root started at or after: RFC 3339, unix ms, or a duration ago (`15m`).
    #[param(schema_with = super::openapi::time_schema)]
    since: Option<String>,
    /// Traces whose root started before: RFC 3339, unix ms, or a duration ago.
    #[param(schema_with = super::openapi::time_schema)]
    until: Option<String>,
}

/// A hop of an entry point over the window.
#[derive(Serialize, ToSchema)]
pub struct HopAggBody {
    #[serde(flatten)]
    hop: HopBody,
    traces: u64,
    share_p50: f64,
    share_p95: f64,
    critical_p50_ms: f64,
    critical_p95_ms: f64,
    critical_p99_ms: f64,
}

/// An entry point and the hops it waited on.
#[derive(Serialize, ToSchema)]
pub struct EntryAggBody {
    entry: EntryBody,
    traces: u64,
    total_root_ms: f64,
    hops: Vec<HopAggBody>,
}

/// Latency share per hop of each entry point.
#[derive(Serialize, ToSchema)]
pub struct HopsBody {
    entries: Vec<EntryAggBody>,
}

fn hop_body(h: &HopStats) -> HopAggBody {
    HopAggBody {
        hop: HopBody::new(h.key, h.critical_ns, h.share),
        traces: h.traces,
        share_p50: h.share_p50,
        share_p95: h.share_p95,
        critical_p50_ms: h.critical_p50_ns / 1e6,
        critical_p95_ms: h.critical_p95_ns / 1e6,
        critical_p99_ms: h.critical_p99_ns / 1e6,
    }
}

/// An entry point over a window as the API shows it.
pub fn entry_body(e: &EntryStats) -> EntryAggBody {
    EntryAggBody {
        entry: e.entry.into(),
        traces: e.traces,
        total_root_ms: ms(e.root_ns),
        hops: e.hops.iter().map(hop_body).collect(),
    }
}

/// Parses `SERVICE:OPERATION`; `None` for an entry point never seen (no
/// traces, so nothing to report).
pub fn parse_entry(text: &str) -> Result<Option<EntryPoint>, ApiError> {
    match params::entry(text) {
        (service, Some(operation)) => Ok(Sym::lookup(service)
            .zip(Sym::lookup(operation))
            .map(|(service, operation)| EntryPoint { service, operation })),
        _ => Err(ApiError::bad_request(
            "invalid_entry",
            format!("`entry` must be SERVICE:OPERATION, got `{text}`"),
        )),
    }
}

/// Which hops each entry point waits on, over a window.
#[utoipa::path(
    get,
    path = "/api/v1/hops",
    operation_id = "list_hops",
    tag = "hops",
    params(HopParams),
    responses(
        (status = 200, description = "Latency share per hop of each entry point", body = HopsBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<HopParams>, QueryRejection>,
) -> Result<Json<HopsBody>, ApiError> {
    let p = params::query(q)?;
    let now = SystemTime::now();
    let since = params::time_ns("since", p.since.as_deref(), now)?;
    let until = params::time_ns("until", p.until.as_deref(), now)?;
    let entry = match p.entry.as_deref() {
        None | Some("") => None,
        Some(text) => match parse_entry(text)? {
            Some(entry) => Some(entry),
            None => {
                return Ok(Json(HopsBody {
                    entries: Vec::new(),
                }))
            }
        },
    };
    let entries = state.store.aggregates.query(entry, since, until);
    Ok(Json(HopsBody {
        entries: entries.iter().map(entry_body).collect(),
    }))
}
