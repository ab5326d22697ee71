//! `GET /api/v1/findings` (worst first) and `GET /api/v1/findings/{id}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::federate::{self, PeerStatus, Scope};
use super::params::{self, rfc3339, TimeRange};
use super::{ApiError, AppState};
use crate::analyze::{ChainHop, CodeLocation, Crossed, Culprit, FindingKind, Severity};
use crate::model::TraceId;
use crate::store::{Finding, FindingFilter, Store};

const DEFAULT_LIMIT: usize = 100;
/// Most findings one answer lists.
pub const MAX_LIMIT: usize = 1000;

/// Filters of `GET /api/v1/findings`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// One finding kind (`cascading_timeout`, `slow_query`, `n_plus_one`, ...;
    /// the `FindingKind` schema lists and describes them all).
    #[param(schema_with = super::openapi::kind_schema)]
    kind: Option<String>,
    /// Findings whose culprit or chain involves this service.
    service: Option<String>,
    /// At least this severity: `info`, `warning` or `critical`.
    #[param(schema_with = super::openapi::severity_schema)]
    severity: Option<String>,
    /// At most this many, worst first (default 100, at most 1000).
    #[param(schema_with = super::openapi::limit_schema)]
    limit: Option<usize>,
}

/// A finding as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct FindingBody {
    id: String,
    kind: FindingKind,
    severity: Severity,
    culprit: Culprit,
    chain: Vec<ChainHop>,
    summary: String,
    remedy: String,
    /// Kind-specific numbers.
    #[schema(value_type = Object)]
    evidence: serde_json::Value,
    trace_ids: Vec<TraceId>,
    count: u64,
    first_seen: String,
    last_seen: String,
    /// Where in the source the culprit's calls are made, from its spans'
    /// `code.*` attributes; null when they carry none.
    #[schema(required = true)]
    location: Option<CodeLocation>,
    /// The configured thresholds (keys under `[detectors]`) it crossed, with
    /// the value observed; empty for detectors without configured thresholds.
    crossed: Vec<Crossed>,
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
            evidence: super::schemas::json(&o.evidence),
            trace_ids: o.trace_ids,
            count: o.count,
            first_seen: rfc3339(f.first_seen_ns),
            last_seen: rfc3339(o.seen_ns),
            location: o.location,
            crossed: o.crossed,
        }
    }
}

/// Findings, worst first.
#[derive(Serialize, ToSchema)]
pub struct FindingListBody {
    findings: Vec<FindingBody>,
    /// With peers configured (and not `local`): whether each answered;
    /// the findings of those that did not are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerStatus>>,
}

/// `file:line in function (namespace)`, as much of it as is known.
pub fn location_text(l: &CodeLocation) -> String {
    let mut out = String::new();
    if let Some(file) = &l.file {
        out.push_str(file);
        if let Some(line) = l.line {
            out.push_str(&format!(":{line}"));
        }
        if l.function.is_some() {
            out.push_str(" in ");
        }
    }
    if let Some(function) = &l.function {
        out.push_str(function);
    }
    if let Some(namespace) = &l.namespace {
        out.push_str(&format!(" ({namespace})"));
    }
    out
}

/// `crossed n_plus_one.min_calls: 12 ≥ 5`.
pub fn crossed_text(c: &Crossed) -> String {
    let sign = if c.value >= c.limit { "≥" } else { "≤" };
    format!(
        "crossed {}: {} {sign} {}",
        c.threshold,
        number(c.value),
        number(c.limit)
    )
}

/// A whole number without decimals, else at most three.
pub(super) fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').to_owned()
    }
}

/// A finding kind by name (absent or empty: any).
pub fn parse_kind(text: Option<&str>) -> Result<Option<FindingKind>, ApiError> {
    let Some(k) = text.filter(|k| !k.is_empty()) else {
        return Ok(None);
    };
    FindingKind::parse(k).map(Some).ok_or_else(|| {
        let known: Vec<&str> = FindingKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(
            "invalid_kind",
            format!("unknown finding kind `{k}`; known: {}", known.join(", ")),
        )
    })
}

/// A severity by name (absent or empty: any).
pub fn parse_severity(text: Option<&str>) -> Result<Option<Severity>, ApiError> {
    let Some(s) = text.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    Severity::parse(s).map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_severity",
            format!("`severity` must be info, warning or critical; got `{s}`"),
        )
    })
}

/// What is wrong, worst first.
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    operation_id = "list_findings",
    tag = "findings",
    params(ListParams, TimeRange, Scope),
    responses(
        (status = 200, description = "Matching findings, worst first", body = FindingListBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<FindingListBody>, ApiError> {
    let (p, range) = (params::query(q)?, TimeRange::read(range)?);
    let (store, peers) = federate::view(&state, Scope::read(scope)?, false).await;
    Ok(Json(FindingListBody {
        findings: select(&store, p, range)?
            .into_iter()
            .map(FindingBody::from)
            .collect(),
        peers,
    }))
}

/// The findings `p` asks for, last seen within `(since, until)`, worst first
/// (also the console's plain page).
pub(super) fn select(
    store: &Store,
    p: ListParams,
    (since_ns, until_ns): (Option<u64>, Option<u64>),
) -> Result<Vec<Finding>, ApiError> {
    let filter = FindingFilter {
        kind: parse_kind(p.kind.as_deref())?,
        service: p.service.filter(|s| !s.is_empty()),
        severity: parse_severity(p.severity.as_deref())?,
        since_ns,
        until_ns,
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    Ok(store.findings().list(&filter, limit))
}

/// One finding by id.
#[utoipa::path(
    get,
    path = "/api/v1/findings/{id}",
    operation_id = "get_finding",
    tag = "findings",
    params(("id" = String, Path, description = "16 hex digits", pattern = "^[0-9a-fA-F]{16}$")),
    responses(
        (status = 200, description = "The finding", body = FindingBody),
        (status = 400, description = "Not a finding id", body = super::error::ErrorBody),
        (status = 404, description = "No such finding", body = super::error::ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<FindingBody>, ApiError> {
    // `from_str_radix` alone would take a leading `+`.
    let id = (raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
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
        .findings()
        .get(id)
        .map(|f| Json(f.into()))
        .ok_or_else(|| ApiError::not_found("finding_not_found", format!("no finding {raw}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_locations_read_as_people_write_them() {
        let text = |threshold, limit: f64, value: f64| {
            crossed_text(&Crossed::new(threshold, limit, value))
        };
        assert_eq!(
            text("n_plus_one.min_calls", 5.0, 12.0),
            "crossed n_plus_one.min_calls: 12 ≥ 5"
        );
        assert_eq!(
            text("serial_calls.min_saved_share", 0.2, 0.375),
            "crossed serial_calls.min_saved_share: 0.375 ≥ 0.2"
        );
        assert_eq!(
            text("chatty_edge.max_gap_ms", 1.5, 0.25),
            "crossed chatty_edge.max_gap_ms: 0.25 ≤ 1.5"
        );
        let at = |file: Option<&str>, line, function: Option<&str>, namespace: Option<&str>| {
            location_text(&CodeLocation {
                file: file.map(str::to_owned),
                line,
                function: function.map(str::to_owned),
                namespace: namespace.map(str::to_owned),
            })
        };
        assert_eq!(
            at(
                Some("app/orders.py"),
                Some(42),
                Some("list_items"),
                Some("orders.views")
            ),
            "app/orders.py:42 in list_items (orders.views)"
        );
        assert_eq!(at(None, Some(42), Some("list_items"), None), "list_items");
        assert_eq!(at(Some("app/orders.py"), None, None, None), "app/orders.py");
    }
}
