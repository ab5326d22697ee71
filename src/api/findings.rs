//! `GET /api/v1/findings` (worst first) and `GET /api/v1/findings/{id}`.

use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::params::{self, rfc3339};
use super::{ApiError, AppState};
use crate::analyze::{ChainHop, Culprit, FindingKind, Severity};
use crate::model::TraceId;
use crate::store::{Finding, FindingFilter};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Deserialize)]
pub struct ListParams {
    kind: Option<String>,
    service: Option<String>,
    severity: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// A finding as the API shows it.
#[derive(Serialize)]
pub struct FindingBody {
    id: String,
    kind: FindingKind,
    severity: Severity,
    culprit: Culprit,
    chain: Vec<ChainHop>,
    summary: String,
    remedy: String,
    evidence: serde_json::Value,
    trace_ids: Vec<TraceId>,
    count: u64,
    first_seen: String,
    last_seen: String,
}

impl From<Finding> for FindingBody {
    fn from(f: Finding) -> Self {
        let o = f.latest;
        FindingBody {
            id: format!("{:016x}", f.id),
            kind: o.kind,
            severity: o.severity,
            culprit: o.culprit,
            chain: o.chain,
            summary: o.summary,
            remedy: o.remedy,
            evidence: o.evidence,
            trace_ids: o.trace_ids,
            count: o.count,
            first_seen: rfc3339(f.first_seen_ns),
            last_seen: rfc3339(o.seen_ns),
        }
    }
}

#[derive(Serialize)]
pub struct ListBody {
    findings: Vec<FindingBody>,
}

pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListBody>, ApiError> {
    Ok(Json(ListBody {
        findings: select(&state, params::query(q)?)?
            .into_iter()
            .map(FindingBody::from)
            .collect(),
    }))
}

/// The findings `p` asks for, worst first (also the console's plain page).
pub(super) fn select(state: &AppState, p: ListParams) -> Result<Vec<Finding>, ApiError> {
    let now = SystemTime::now();
    let kind = match p.kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(FindingKind::parse(k).ok_or_else(|| {
            let known: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(
                "invalid_kind",
                format!("unknown finding kind `{k}`; known: {}", known.join(", ")),
            )
        })?),
    };
    let severity = match p.severity.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Severity::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_severity",
                format!("`severity` must be info, warning or critical; got `{s}`"),
            )
        })?),
    };
    let filter = FindingFilter {
        kind,
        service: p.service.filter(|s| !s.is_empty()),
        severity,
        since_ns: params::time_ns("since", p.since.as_deref(), now)?,
        until_ns: params::time_ns("until", p.until.as_deref(), now)?,
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    Ok(state.store.findings.list(&filter, limit))
}

pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<FindingBody>, ApiError> {
    let id = (raw.len() == 16)
        .then(|| u64::from_str_radix(&raw, 16).ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_finding_id",
                format!("`{raw}` is not a finding id (16 hex digits)"),
            )
        })?;
    state
        .store
        .findings
        .get(id)
        .map(|f| Json(f.into()))
        .ok_or_else(|| ApiError::not_found("finding_not_found", format!("no finding {raw}")))
}
