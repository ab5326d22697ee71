//! Answers for the whole deployment (docs/FEDERATION.md): `GET
//! /api/v1/peer/state` shares this replica's findings, hop aggregates,
//! service graph and coverage; [`view`] merges every peer's into a scratch
//! [`Store`] the handlers read as they read the local one, and says which
//! peers answered ([`PeerStatus`]). Requests between peers never fan out
//! again: the peer endpoints answer locally, and so does any public one
//! asked with `?local=true`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{params, ApiError, AppState};
use crate::analyze::budget::{Timeouts, TraceCalls};
use crate::forward::records;
use crate::model::TraceId;
use crate::peers::{Fetched, NODE_HEADER};
use crate::pipeline;
use crate::store::{Shared, Store, WindowSnapshot};
use rustc_hash::FxHashMap;

/// `?local=true`: answer from this replica alone.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Scope {
    /// `true`: this replica's own data only, without asking its peers
    /// (default `false`).
    #[param(value_type = Option<bool>)]
    local: Option<String>,
}

impl Scope {
    /// Whether the request asks for local data only.
    pub fn read(q: Result<Query<Scope>, QueryRejection>) -> Result<bool, ApiError> {
        match params::query(q)?.local.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                "invalid_local",
                format!("`local` must be true or false; got `{other}`"),
            )),
        }
    }
}

/// Whether a request's query string has `local=true` (the Grafana and Jaeger
/// routes, whose parameters are not `/api/v1`'s).
pub fn asks_local(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p == "local=true"))
}

/// Whether a peer answered a merged request, and who it is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeerStatus {
    /// The peer's API base URL.
    pub peer: String,
    pub ok: bool,
    /// Why its part is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its node id, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl PeerStatus {
    /// The status of one fetch; `ok` means its answer is in.
    pub fn of<T>(f: &Fetched<T>) -> PeerStatus {
        PeerStatus {
            peer: f.peer.clone(),
            ok: f.result.is_ok(),
            error: f.result.as_ref().err().map(ToString::to_string),
            node: f.node.clone(),
        }
    }
}

/// One replica's share, as `GET /api/v1/peer/state` answers it.
#[derive(Serialize, Deserialize)]
pub struct PeerState {
    /// Its random node id, drawn at start.
    pub node: String,
    pub role: String,
    /// Its findings, aggregate and service-graph buckets and coverage (not
    /// flattened: the buckets' sums are 128-bit).
    pub state: Shared,
}

/// This replica's findings, hop aggregate buckets (with their sketches),
/// service graph buckets and coverage, for its peers; never asks them.
#[utoipa::path(
    get,
    path = "/api/v1/peer/state",
    operation_id = "peer_state",
    tag = "peers",
    responses(
        (status = 200, description = "This replica's node id, role, findings, aggregate and service-graph buckets and coverage", content_type = "application/json", body = Object)
    )
)]
pub async fn state(State(state): State<AppState>) -> Response {
    let body = PeerState {
        node: state.peers.node().to_owned(),
        role: state.role.as_str().to_owned(),
        state: state.store.shared(),
    };
    with_node(&state, Json(body).into_response())
}

/// The timeouts this replica's last detection pass inferred for the edges
/// and entry points whose calls and roots it owns (a detect replica's,
/// `--role detect`): its peers' budgets need them for the deadlines above
/// their calls. Never asks its own peers.
#[utoipa::path(
    get,
    path = "/api/v1/peer/timeouts",
    operation_id = "peer_timeouts",
    tag = "peers",
    responses(
        (status = 200, description = "Inferred timeouts: `edges` as [edge, ns] pairs, `entries` as [entry point, budget ns] pairs", content_type = "application/json", body = Object)
    )
)]
pub async fn timeouts(State(state): State<AppState>) -> Response {
    let inferred = state.store.detection().inferred.clone();
    with_node(&state, Json(inferred).into_response())
}

/// One replica's call window, as `GET /api/v1/peer/window` answers it: per
/// trace, its records service by service (`forward::records` parts).
#[derive(Serialize, Deserialize)]
pub struct PeerWindow {
    pub traces: Vec<(TraceId, Vec<String>)>,
}

/// This replica's call window, for its peers' merged budget maps and
/// statement shapes; never asks them.
#[utoipa::path(
    get,
    path = "/api/v1/peer/window",
    operation_id = "peer_window",
    tag = "peers",
    responses(
        (status = 200, description = "Per trace in this replica's call window, its records service by service (the `hopscope.records` format of docs/FORWARDING.md)", content_type = "application/json", body = Object)
    )
)]
pub async fn window(State(state): State<AppState>) -> Response {
    let traces = state.store.window().traces;
    let body = tokio::task::spawn_blocking(move || PeerWindow {
        traces: traces
            .iter()
            .map(|t| (t.trace_id, records::parts(t)))
            .collect(),
    })
    .await
    .unwrap_or(PeerWindow { traces: Vec::new() });
    with_node(&state, Json(body).into_response())
}

/// `response` with this replica's node id ([`NODE_HEADER`]).
pub fn with_node(state: &AppState, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(state.peers.node()) {
        response.headers_mut().insert(NODE_HEADER, v);
    }
    response
}

/// What a request reads: the local store when it is `local` or there are no
/// peers (with no statuses), else every peer's state merged with the local
/// one into a scratch store, with a status per peer.
///
/// `windows`: the answer reads the cross-trace detectors' budget map or
/// statement shapes, so the peers' call windows are fetched too, merged with
/// this replica's by trace id (a detect replica's parts of a trace become the
/// whole trace's records again) and the detectors run over the union: the
/// budget map and shapes of one window holding every replica's traces. A
/// peer missing from either fetch is reported missing.
pub async fn view(
    state: &AppState,
    local: bool,
    windows: bool,
) -> (Arc<Store>, Option<Vec<PeerStatus>>) {
    if local || state.peers.is_empty() {
        return (state.store.clone(), None);
    }
    let (fetched, peer_windows) = tokio::join!(
        state.peers.fetch_all::<PeerState>("/api/v1/peer/state"),
        async {
            match windows {
                true => Some(
                    state
                        .peers
                        .fetch_all::<PeerWindow>("/api/v1/peer/window")
                        .await,
                ),
                false => None,
            }
        }
    );
    let local = state.store.clone();
    let thresholds = state.analysis.thresholds.clone();
    tokio::task::spawn_blocking(move || {
        let scratch = local.scratch();
        scratch.absorb(local.shared());
        let mut statuses: Vec<PeerStatus> = fetched
            .into_iter()
            .map(|f| {
                let status = PeerStatus::of(&f);
                if let Ok(p) = f.result {
                    scratch.absorb(p.state);
                }
                status
            })
            .collect();
        if let Some(peer_windows) = peer_windows {
            let mut traces: FxHashMap<TraceId, TraceCalls> = local
                .window()
                .traces
                .iter()
                .map(|t| (t.trace_id, TraceCalls::clone(t)))
                .collect();
            for f in peer_windows {
                match f.result {
                    Ok(w) => merge_window(&mut traces, w),
                    Err(_) => {
                        // Reported once per peer: its state may have come.
                        if let Some(s) = statuses.iter_mut().find(|s| s.peer == f.peer) {
                            let status = PeerStatus::of(&f);
                            *s = status;
                        }
                    }
                }
            }
            let window = WindowSnapshot::of(traces.into_values().map(Arc::new).collect());
            let (detection, _) = pipeline::detect(window, &thresholds, Timeouts::default());
            scratch.show_detection(detection);
        }
        (Arc::new(scratch), Some(statuses))
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(error = %e, "merging the peers' state failed; answering locally");
        (state.store.clone(), None)
    })
}

/// The `x-hopscope-missing-peers` header of an answer whose shape has no
/// room for [`PeerStatus`] (the Grafana datasource): the peers missing from
/// it, comma-separated; none when every peer answered.
pub fn missing_header(statuses: &[PeerStatus]) -> Option<(&'static str, HeaderValue)> {
    let missing: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.peer.as_str())
        .collect();
    if missing.is_empty() {
        return None;
    }
    HeaderValue::from_str(&missing.join(","))
        .ok()
        .map(|v| (MISSING_PEERS_HEADER, v))
}

/// The response header naming the peers a Grafana answer lacks.
pub const MISSING_PEERS_HEADER: &str = "x-hopscope-missing-peers";

/// Merges a peer's window into `traces`: each part decoded and merged into
/// its trace's records (a part that does not decode is skipped: it came from
/// a replica of another version).
fn merge_window(traces: &mut FxHashMap<TraceId, TraceCalls>, window: PeerWindow) {
    for (trace_id, parts) in window.traces {
        for part in parts
            .iter()
            .filter_map(|p| records::decode(trace_id, p).ok())
        {
            match traces.get_mut(&trace_id) {
                Some(held) if held.root == part.root => held.merge(&part),
                Some(_) => {}
                None => {
                    traces.insert(trace_id, part);
                }
            }
        }
    }
}
