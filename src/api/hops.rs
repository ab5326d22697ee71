//! `GET /api/v1/hops?entry=SERVICE:OPERATION&since=&until=`: latency share per hop
//! of each entry point over a window.

use std::time::SystemTime;

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

/// One entry point's hops over a window, as `GET /api/v1/hops` shows it.
pub fn entry_body(e: &EntryStats) -> EntryAggBody {
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
        Some(text) => match params::entry(text) {
            (service, Some(operation)) => match (Sym::lookup(service), Sym::lookup(operation)) {
                (Some(service), Some(operation)) => Some(EntryPoint { service, operation }),
                // Never seen: no traces, so nothing to report.
                _ => {
                    return Ok(Json(HopsBody {
                        entries: Vec::new(),
                    }))
                }
            },
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_entry",
                    format!("`entry` must be SERVICE:OPERATION, got `{text}`"),
                ))
            }
        },
    };
    let entries = state.store.aggregates.query(entry, since, until);
    Ok(Json(HopsBody {
        entries: entries.iter().map(entry_body).collect(),
    }))
}
