//! `GET /api/v1/timeouts?entry=&since=&until=`: the inferred timeout budget of
//! each entry point.
//!
//! As of the last detection pass: the window detectors compute the budget map
//! over the call window (the last 15 minutes of trace time at most) every
//! `detect_interval` (5 s) when it changed, so an answer is at most one
//! interval old (`detectors_current` in `/api/v1/stats` says whether the pass
//! is over the window as it is). `entry` is `SERVICE` or `SERVICE:OPERATION`
//! and selects what is shown, while timeouts are still inferred from every
//! trace selected by time. `since`/`until` select traces by root start, as in
//! `/api/v1/hops`: when they leave out some of the pass's traces, the map is
//! computed on request over the rest of them ([`pipeline::budget_map`]), so it
//! is exact and as of the same pass. Keeping maps per time bucket instead
//! would not be: an inferred timeout and a percentile do not add up from
//! buckets, and `since`/`until` fall anywhere. The answer:
//!
//! ```json
//! {"window": {"traces": 12, "calls": 40, "oldest_end": "...", "newest_end": "...",
//!             "dropped_traces": 0, "dropped_calls": 0},
//!  "entries": [{
//!    "entry": {"service": "gateway", "operation": "GET /report"},
//!    "traces": 4, "timed_out": 4,
//!    "timeout_ms": 29000.0, "supporting_calls": 4, "layer": "aws_api_gateway",
//!    "timeout_relayed_from": null, "p95_ms": null, "p99_ms": null,
//!    "edges": [{
//!      "caller": "api", "callee": "reports", "operation": "GET /build", "depth": 1,
//!      "timeout_ms": 30000.0, "supporting_calls": 4, "calls": 4, "timed_out": 4,
//!      "p95_ms": null, "p99_ms": null,
//!      "budget_left_ms": 28950.0, "budget_from": {"kind": "entry", "timeout_ms": 29000.0},
//!      "overrunning_calls": 4, "max_overrun_ms": 9950.0,
//!      "violations": [{"id": "...", "kind": "timeout_inversion", "severity": "warning",
//!                      "summary": "...", "remedy": "...", "count": 4,
//!                      "evidence": {...}, "trace_ids": ["..."]}]}],
//!    "violations": [{"kind": "gateway_timeout", ...}]}]}
//! ```
//!
//! * Entry `timeout_ms` / `supporting_calls`: where the entry's timed-out roots
//!   cluster, and how many are in the cluster (`null` / 0 without one); `layer`
//!   names a known limit (`aws_api_gateway`, `nginx_or_alb`, `cloudflare`);
//!   `timeout_relayed_from` is the edge whose timeout the roots only reported
//!   (then it is no budget for the edges). `p95_ms` / `p99_ms` are of the roots
//!   that did not time out.
//! * Edge `timeout_ms` / `supporting_calls`: inferred from the timed-out calls of
//!   the edge under every entry point (calls that gave up themselves, not those
//!   that relayed their callee's timeout); `calls`, `timed_out` (either kind),
//!   the percentiles (of calls that did not time out), `budget_left_ms`
//!   (median, negative when the deadline above had passed), `overrunning_calls`
//!   and `max_overrun_ms` are this entry point's. `depth` is the fewest calls
//!   above it on a chain.
//!   `budget_from` is the deadline the budget is measured against: the entry's
//!   timeout or an enclosing edge's (`{"kind": "edge", "caller", "callee",
//!   "operation", "timeout_ms"}`); `null` when no timeout above is known.
//! * `violations`: what the window detectors report, as they will appear in
//!   `/api/v1/findings` (`id` is the finding's); the entry's own
//!   (`gateway_timeout`, `timeout_headroom`) and each edge's
//!   (`timeout_inversion`, `deadline_not_propagated`, `timeout_headroom`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::federate::{self, PeerStatus, Scope};
use super::params::{self, ms, rfc3339, TimeRange};
use super::traces::EntryBody;
use super::{ApiError, AppState};
use crate::analyze::budget::{EdgeBudget, EntryBudget, Layer, Violation};
use crate::analyze::evidence::OuterTimeout;
use crate::analyze::{FindingKind, Severity};
use crate::model::{Sym, TraceId};
use crate::pipeline;
use crate::store::Detection;

/// Filters of `GET /api/v1/timeouts`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TimeoutParams {
    /// The entry points shown: `SERVICE` or `SERVICE:OPERATION`.
    entry: Option<String>,
}

/// A budget violation, as it appears among the findings.
#[derive(Serialize, ToSchema)]
pub struct ViolationBody {
    id: String,
    kind: FindingKind,
    severity: Severity,
    summary: String,
    remedy: String,
    count: u64,
    #[schema(value_type = Object)]
    evidence: Value,
    trace_ids: Vec<TraceId>,
}

impl From<&Violation> for ViolationBody {
    fn from(v: &Violation) -> Self {
        let o = &v.observation;
        ViolationBody {
            id: format!("{:016x}", v.finding_id),
            kind: o.kind,
            severity: o.severity,
            summary: o.summary.clone(),
            remedy: o.remedy.clone(),
            count: o.count,
            evidence: super::schemas::json(&o.evidence),
            trace_ids: o.trace_ids.clone(),
        }
    }
}

/// A call edge under an entry point and its timeout budget.
#[derive(Serialize, ToSchema)]
pub struct EdgeBody {
    caller: Sym,
    callee: Option<Sym>,
    operation: Sym,
    depth: u16,
    timeout_ms: Option<f64>,
    supporting_calls: u64,
    calls: u64,
    timed_out: u64,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    budget_left_ms: Option<f64>,
    /// `{"kind": "entry" | "edge", "timeout_ms", ...edge}`.
    #[schema(value_type = Option<Object>)]
    budget_from: Option<Value>,
    overrunning_calls: u64,
    max_overrun_ms: f64,
    violations: Vec<ViolationBody>,
}

impl From<&EdgeBudget> for EdgeBody {
    fn from(e: &EdgeBudget) -> Self {
        EdgeBody {
            caller: e.edge.caller,
            callee: e.edge.callee,
            operation: e.edge.operation,
            depth: e.depth,
            timeout_ms: e.timeout.map(|t| ms(t.value_ns)),
            supporting_calls: e.timeout.map_or(0, |t| t.supporting),
            calls: e.calls,
            timed_out: e.timed_out,
            p95_ms: e.p95_ns.map(ms),
            p99_ms: e.p99_ns.map(ms),
            budget_left_ms: e.budget_left_ns.map(|l| l as f64 / 1e6),
            budget_from: e
                .outer
                .map(|o| super::schemas::json(&OuterTimeout::from(o))),
            overrunning_calls: e.overran,
            max_overrun_ms: ms(e.max_overrun_ns),
            violations: e.violations.iter().map(Into::into).collect(),
        }
    }
}

/// An entry point's timeout budget.
#[derive(Serialize, ToSchema)]
pub struct EntryTimeoutBody {
    entry: EntryBody,
    traces: u64,
    timed_out: u64,
    timeout_ms: Option<f64>,
    supporting_calls: u64,
    layer: Option<Layer>,
    /// `{"caller", "callee", "operation"}`.
    #[schema(value_type = Option<Object>)]
    timeout_relayed_from: Option<Value>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    edges: Vec<EdgeBody>,
    violations: Vec<ViolationBody>,
}

impl From<&EntryBudget> for EntryTimeoutBody {
    fn from(e: &EntryBudget) -> Self {
        EntryTimeoutBody {
            entry: e.entry.into(),
            traces: e.traces,
            timed_out: e.timed_out,
            timeout_ms: e.timeout.map(|t| ms(t.value_ns)),
            supporting_calls: e.timeout.map_or(0, |t| t.supporting),
            layer: e.layer,
            timeout_relayed_from: e.source.map(|s| super::schemas::json(&s)),
            p95_ms: e.p95_ns.map(ms),
            p99_ms: e.p99_ns.map(ms),
            edges: e.edges.iter().map(Into::into).collect(),
            violations: e.violations.iter().map(Into::into).collect(),
        }
    }
}

/// What the call window holds.
#[derive(Serialize, ToSchema)]
pub struct WindowBody {
    traces: usize,
    calls: usize,
    oldest_end: Option<String>,
    newest_end: Option<String>,
    dropped_traces: u64,
    dropped_calls: u64,
}

/// The timeout budget map.
#[derive(Serialize, ToSchema)]
pub struct TimeoutsBody {
    window: WindowBody,
    entries: Vec<EntryTimeoutBody>,
    /// With peers configured (and not `local`): whether each answered; the
    /// map is over the windows of those that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    peers: Option<Vec<PeerStatus>>,
}

/// The budget map of the last detection pass (`detection`) over its traces
/// that started in `[since_ns, until_ns)`, as the API shows it; with `entry`
/// (`SERVICE` or `SERVICE:OPERATION`), only its entry points (timeouts are
/// still inferred from every trace selected by time), with the configured
/// `analysis` thresholds when the map is computed again for a narrower time.
pub async fn budgets(
    detection: Arc<Detection>,
    analysis: Arc<crate::analyze::Options>,
    entry: Option<&str>,
    since_ns: Option<u64>,
    until_ns: Option<u64>,
) -> Result<Vec<EntryTimeoutBody>, ApiError> {
    let entry = entry.filter(|e| !e.is_empty()).map(|text| {
        let (service, operation) = params::entry(text);
        (service.to_owned(), operation.map(str::to_owned))
    });
    tokio::task::spawn_blocking(move || {
        let map = pipeline::budget_map(&detection, &analysis.thresholds, since_ns, until_ns);
        map.iter()
            .filter(|e| {
                entry.as_ref().is_none_or(|(service, operation)| {
                    e.entry.service.as_str() == service
                        && operation
                            .as_deref()
                            .is_none_or(|o| e.entry.operation.as_str() == o)
                })
            })
            .map(Into::into)
            .collect()
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("computing the budget map failed: {e}"),
    })
}

/// The inferred timeout budget of each entry point.
///
/// As of the last detection pass, at most one `detect_interval` old
/// (`detectors_current` in `/api/v1/stats` says whether it is over the
/// window as it is); `window` describes what that pass ran over. With
/// `since`/`until` leaving out some of its traces, the map is computed over
/// the rest of them on request.
#[utoipa::path(
    get,
    path = "/api/v1/timeouts",
    operation_id = "list_timeouts",
    tag = "timeouts",
    params(TimeoutParams, TimeRange, Scope),
    responses(
        (status = 200, description = "The budget map, as of the last detection pass", body = TimeoutsBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody),
        (status = 500, description = "The computation failed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<TimeoutParams>, QueryRejection>,
    range: Result<Query<TimeRange>, QueryRejection>,
    scope: Result<Query<Scope>, QueryRejection>,
) -> Result<Json<TimeoutsBody>, ApiError> {
    let p = params::query(q)?;
    let (since, until) = TimeRange::read(range)?;
    let (store, peers) = federate::view(&state, Scope::read(scope)?, true).await;
    let detection = store.detection();
    let stats = detection.window.stats;
    let entries = budgets(
        detection,
        state.analysis.clone(),
        p.entry.as_deref(),
        since,
        until,
    )
    .await?;
    Ok(Json(TimeoutsBody {
        window: WindowBody {
            traces: stats.traces,
            calls: stats.calls,
            oldest_end: stats.oldest_end_ns.map(rfc3339),
            newest_end: stats.newest_end_ns.map(rfc3339),
            dropped_traces: stats.dropped_traces,
            dropped_calls: stats.dropped_calls,
        },
        entries,
        peers,
    }))
}
