//! `GET /api/v1/hops?entry=SERVICE:OPERATION&since=&until=`: latency share per hop
//! of each entry point over a window. Entry points and hops past the
//! aggregates' limits are one entry point or hop `(overflow)`, with
//! `overflow: true` ([`crate::store::Aggregates`]).
//!
//! `GET /api/v1/hops/series?entry=SERVICE:OPERATION&since=&until=&step=5m`: the
//! same for one entry point, step by step (the console's stacked chart):
//!
//! ```json
//! {"step_ms": 60000.0,
//!  "points": [{"start": "...", "traces": 12, "total_root_ms": 3480.0,
//!              "hops": [{"service": "inventory", ..., "share": 0.81, ...}]},
//!             {"start": "...", "traces": 0, "total_root_ms": 0.0, "hops": []}]}
//! ```
//!
//! `step` is a duration rounded down to whole minutes (the aggregates'
//! resolution; at least 1m, at most 24h, default 1m). Points run from the step
//! of the entry's first trace in the window to that of its last; a step
//! without traces is present with `traces` 0.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::federate::{self, PeerStatus, Scope};
use super::params::{self, ms, TimeRange};
use super::traces::{EntryBody, HopBody};
use super::{ApiError, AppState};
use crate::analyze::EntryPoint;
use crate::model::Sym;
use crate::store::{is_overflow_entry, is_overflow_hop, EntryStats, HopStats};

/// Filters of `GET /api/v1/hops`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HopParams {
    /// One entry point, `SERVICE:OPERATION`.
    #[param(schema_with = super::openapi::entry_schema)]
    entry: Option<String>,
}

/// A hop of an entry point over the window.
#[derive(Serialize, ToSchema)]
pub struct HopAggBody {
    #[serde(flatten)]
    hop: HopBody,
    /// The hop `(overflow)`: the entry point's hops past `aggregate_max_hops`
    /// (or every hop of the entry point `(overflow)`), counted together.
    overflow: bool,
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
    /// The entry point `(overflow)`: the traces of entry points past
    /// `aggregate_max_entries`, counted together.
    overflow: bool,
    traces: u64,
    total_root_ms: f64,
    hops: Vec<HopAggBody>,
}

/// Latency share per hop of each entry point.
#[derive(Serialize, ToSchema)]
pub struct HopsBody {
    entries: Vec<EntryAggBody>,
    /// With peers configured (and not `local`): whether each answered;
    /// the traces of those that did not are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerStatus>>,
}

fn hop_body(h: &HopStats) -> HopAggBody {
    HopAggBody {
        hop: HopBody::new(h.key, h.critical_ns, h.share),
        overflow: is_overflow_hop(&h.key),
        traces: h.traces,
        share_p50: h.share_p50,
        share_p95: h.share_p95,
        critical_p50_ms: h.critical_p50_ns / 1e6,
        critical_p95_ms: h.critical_p95_ns / 1e6,
        critical_p99_ms: h.critical_p99_ns / 1e6,
    }
}

/// One entry point's hops over a window, as `GET /api/v1/hops` shows it.
pub fn entry_body(e: &EntryStats) -> EntryAggBody {
    EntryAggBody {
        entry: e.entry.into(),
        overflow: is_overflow_entry(&e.entry),
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
    params(HopParams, TimeRange, Scope),
    responses(
        (status = 200, description = "Latency share per hop of each entry point", body = HopsBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<HopParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<HopsBody>, ApiError> {
    let p = params::query(q)?;
    let (since, until) = TimeRange::read(range)?;
    let local = Scope::read(scope)?;
    // Parsed before the peers are asked (a malformed entry is refused
    // without them); an entry point no replica has seen has no traces.
    let text = p.entry.as_deref().filter(|e| !e.is_empty());
    if let Some(text) = text {
        parse_entry(text)?;
    }
    let (store, peers) = federate::view(&state, local, false).await;
    let entries = match text.map(parse_entry).transpose()? {
        Some(None) => Vec::new(),
        entry => store.aggregates().query(entry.flatten(), since, until),
    };
    Ok(Json(HopsBody {
        entries: entries.iter().map(entry_body).collect(),
        peers,
    }))
}

const DEFAULT_STEP: Duration = Duration::from_secs(60);
const MAX_STEP: Duration = Duration::from_secs(24 * 3600);

/// A step: whole minutes (`5m`) or hours (`2h`), at least a minute; longer
/// than [`MAX_STEP`] is taken as it.
fn parse_step(text: &str) -> Result<Duration, ApiError> {
    let minutes = |n: &str, per: u64| n.parse::<u64>().ok().map(|n| n.saturating_mul(per));
    let parsed = match text.as_bytes().last() {
        Some(b'm') => minutes(&text[..text.len() - 1], 1),
        Some(b'h') => minutes(&text[..text.len() - 1], 60),
        _ => None,
    };
    parsed
        .filter(|&m| m > 0)
        .map(|m| Duration::from_secs(m.saturating_mul(60)).min(MAX_STEP))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_step",
                format!("`step` must be whole minutes or hours, like 5m or 1h; got `{text}`"),
            )
        })
}

/// Parameters of `GET /api/v1/hops/series`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// The entry point, `SERVICE:OPERATION` (default: the busiest of the window).
    #[param(schema_with = super::openapi::entry_schema)]
    entry: Option<String>,
    /// The width of a point: whole minutes or hours (`5m`, `1h`; default `1m`,
    /// at most `24h`).
    #[param(schema_with = super::openapi::step_schema)]
    step: Option<String>,
}

/// One step of the series.
#[derive(Serialize, ToSchema)]
pub struct PointBody {
    start: String,
    traces: u64,
    total_root_ms: f64,
    hops: Vec<HopAggBody>,
}

/// Per-hop latency share of an entry point, step by step.
#[derive(Serialize, ToSchema)]
pub struct SeriesBody {
    step_ms: f64,
    points: Vec<PointBody>,
    /// With peers configured (and not `local`): whether each answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerStatus>>,
}

/// The hops of one entry point over time.
#[utoipa::path(
    get,
    path = "/api/v1/hops/series",
    operation_id = "hop_series",
    tag = "hops",
    params(SeriesParams, TimeRange, Scope),
    responses(
        (status = 200, description = "One point per step, oldest first", body = SeriesBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn series(
    State(state): State<AppState>,
    q: Result<Query<SeriesParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<SeriesBody>, ApiError> {
    let p = params::query(q)?;
    let (since, until) = TimeRange::read(range)?;
    let local = Scope::read(scope)?;
    let step = match p.step.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_STEP,
        Some(text) => parse_step(text)?,
    };
    let text = p.entry.as_deref().filter(|e| !e.is_empty());
    if let Some(text) = text {
        parse_entry(text)?;
    }
    let (store, peers) = federate::view(&state, local, false).await;
    let entry = match text {
        Some(text) => parse_entry(text)?,
        // The busiest entry point of the window (the aggregates answer busiest first).
        None => store
            .aggregates()
            .query(None, since, until)
            .first()
            .map(|e| e.entry),
    };
    let points = match entry {
        None => Vec::new(),
        Some(entry) => store.aggregates().series(entry, since, until, step),
    };
    Ok(Json(SeriesBody {
        step_ms: (step.as_secs() / 60 * 60_000) as f64,
        points: points
            .into_iter()
            .map(|(start, stats)| PointBody {
                start: params::rfc3339(start),
                traces: stats.as_ref().map_or(0, |s| s.traces),
                total_root_ms: stats.as_ref().map_or(0.0, |s| ms(s.root_ns)),
                hops: stats.map_or_else(Vec::new, |s| s.hops.iter().map(hop_body).collect()),
            })
            .collect(),
        peers,
    }))
}
