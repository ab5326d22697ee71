//! `GET /api/v1/hops?entry=SERVICE:OPERATION&since=&until=`: latency share per hop
//! of each entry point over a window.
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

use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::params::{self, ms};
use super::traces::{EntryBody, HopBody};
use super::{ApiError, AppState};
use crate::analyze::EntryPoint;
use crate::model::Sym;
use crate::store::{EntryStats, HopStats};

#[derive(Deserialize)]
pub struct HopParams {
    entry: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

#[derive(Serialize)]
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

#[derive(Serialize)]
pub struct EntryAggBody {
    entry: EntryBody,
    traces: u64,
    total_root_ms: f64,
    hops: Vec<HopAggBody>,
}

#[derive(Serialize)]
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

fn entry_body(e: &EntryStats) -> EntryAggBody {
    EntryAggBody {
        entry: e.entry.into(),
        traces: e.traces,
        total_root_ms: ms(e.root_ns),
        hops: e.hops.iter().map(hop_body).collect(),
    }
}

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
        Some(text) => match entry_point(text)? {
            Some(entry) => Some(entry),
            // Never seen: no traces, so nothing to report.
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

/// `SERVICE:OPERATION` as an entry point; `None` when either name was never
/// seen (so no trace has it).
fn entry_point(text: &str) -> Result<Option<EntryPoint>, ApiError> {
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

const DEFAULT_STEP: Duration = Duration::from_secs(60);
const MAX_STEP: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
pub struct SeriesParams {
    entry: Option<String>,
    since: Option<String>,
    until: Option<String>,
    step: Option<String>,
}

#[derive(Serialize)]
pub struct PointBody {
    start: String,
    traces: u64,
    total_root_ms: f64,
    hops: Vec<HopAggBody>,
}

#[derive(Serialize)]
pub struct SeriesBody {
    step_ms: f64,
    points: Vec<PointBody>,
}

pub async fn series(
    State(state): State<AppState>,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<SeriesBody>, ApiError> {
    let p = params::query(q)?;
    let now = SystemTime::now();
    let since = params::time_ns("since", p.since.as_deref(), now)?;
    let until = params::time_ns("until", p.until.as_deref(), now)?;
    let step = match p.step.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_STEP,
        Some(text) => humantime::parse_duration(text)
            .ok()
            .filter(|d| (DEFAULT_STEP..=MAX_STEP).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_step",
                    format!("`step` must be a duration from 1m to 24h, like 5m; got `{text}`"),
                )
            })?,
    };
    let text = p
        .entry
        .as_deref()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_entry", "`entry` (SERVICE:OPERATION) is required")
        })?;
    let points = match entry_point(text)? {
        None => Vec::new(),
        Some(entry) => state.store.aggregates.series(entry, since, until, step),
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
    }))
}
