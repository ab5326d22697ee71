//! Jaeger's query API (`/api/...`), for Grafana's Jaeger datasource and trace
//! view, at the root of its own listener (`--jaeger-addr`): the datasource
//! drops path prefixes on search, so it cannot share the API's listener.
//!
//! Every answer is Jaeger's envelope `{data, total, limit, offset, errors}`,
//! errors included (`errors: [{code, msg}]` with the HTTP status). Everything
//! is read from the trace store and the analysis stored with each trace; each
//! span carries that analysis as `hopscope.*` tags.

mod convert;
mod query;

pub use convert::TraceJson;

use convert::trace_json;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::AppState;
use crate::analyze::AnalyzedTrace;
use crate::auth::RequireToken;
use crate::model::Sym;
use crate::peers::PeerError;
use crate::store::{FindingStore, Store};
use query::{Pairs, Search};

/// The Jaeger query API's routes, behind the API's bearer token (if set).
pub fn router(state: AppState) -> Router {
    let guard = RequireToken::new(state.api_guard.clone(), super::unauthenticated);
    routes()
        .route_layer(guard)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.stats.clone(),
            super::error::limit_body,
        ))
        .layer(DefaultBodyLimit::max(super::MAX_BODY_BYTES))
        .with_state(state)
}

/// Where the API listener serves this replica's own Jaeger answers to its
/// peers (`/peer/jaeger/api/services`, ...): a replica's list of peer API
/// URLs is all federation needs.
pub const PEER_PREFIX: &str = "/peer/jaeger";

/// The Jaeger routes under [`PEER_PREFIX`], for the API's router: answered
/// locally, with this replica's node id.
pub fn peer_router(state: &AppState) -> Router<AppState> {
    Router::new().nest(
        PEER_PREFIX,
        routes()
            .layer(Extension(LocalOnly))
            .layer(middleware::map_response_with_state(
                state.clone(),
                |State(state): State<AppState>, r: Response| async move {
                    super::federate::with_node(&state, r)
                },
            )),
    )
}

/// Marks a peer's request: answered from this replica alone.
#[derive(Clone, Copy)]
struct LocalOnly;

fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/dependencies", get(dependencies))
}

/// Jaeger's answer envelope (`structuredResponse`).
#[derive(Serialize)]
struct Envelope<T> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<ErrorEntry>>,
}

#[derive(Serialize)]
struct ErrorEntry {
    code: u16,
    msg: String,
}

fn answer<T: Serialize>(data: T, total: usize) -> Json<Envelope<T>> {
    answer_missing(data, total, Vec::new())
}

/// An answer with the peers missing from it in `errors`.
fn answer_missing<T: Serialize>(
    data: T,
    total: usize,
    missing: Vec<ErrorEntry>,
) -> Json<Envelope<T>> {
    Json(Envelope {
        data,
        total,
        limit: 0,
        offset: 0,
        errors: (!missing.is_empty()).then_some(missing),
    })
}

/// What a peer's Jaeger answer is read for: its `data`, as `T`.
#[derive(Deserialize)]
struct PeerAnswer<T> {
    data: T,
}

/// Whether a request is answered from this replica alone: a peer asked
/// ([`LocalOnly`]), `?local=true`, or there are no peers.
fn local_only(state: &AppState, marked: Option<Extension<LocalOnly>>, uri: &Uri) -> bool {
    marked.is_some() || state.peers.is_empty() || super::federate::asks_local(uri)
}

/// The peer's part missing from an answer, as a Jaeger error.
fn missing(peer: &str, e: impl std::fmt::Display) -> ErrorEntry {
    ErrorEntry {
        code: StatusCode::BAD_GATEWAY.as_u16(),
        msg: format!("peer {peer}: {e}"),
    }
}

/// Every peer's `data` for the same request as `uri` (none when `local`),
/// and an error per peer that did not answer (or not with a `T`); a peer's
/// 404 is an answer without data when `absent_ok` (a trace it does not hold).
async fn ask_peers<T: DeserializeOwned + Send + 'static>(
    state: &AppState,
    local: bool,
    uri: &Uri,
    absent_ok: bool,
) -> (Vec<T>, Vec<ErrorEntry>) {
    if local {
        return (Vec::new(), Vec::new());
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for f in state
        .peers
        .fetch_all::<PeerAnswer<T>>(&format!("{PEER_PREFIX}{path}"))
        .await
    {
        match f.result {
            Ok(a) => data.push(a.data),
            Err(PeerError::Status(404)) if absent_ok => {}
            Err(e) => errors.push(missing(&f.peer, &e)),
        }
    }
    (data, errors)
}

/// `mine` with the items of the peers' lists.
fn union<T: Ord>(mut mine: BTreeSet<T>, theirs: Vec<Vec<T>>) -> BTreeSet<T> {
    mine.extend(theirs.into_iter().flatten());
    mine
}

/// An error as Jaeger answers it: the status, and `{data: null, errors: [{code, msg}]}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {msg}")]
pub struct JaegerError {
    pub status: StatusCode,
    pub msg: String,
}

impl JaegerError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        JaegerError {
            status: StatusCode::BAD_REQUEST,
            msg: msg.into(),
        }
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        JaegerError {
            status: StatusCode::NOT_FOUND,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = Envelope {
            data: (),
            total: 0,
            limit: 0,
            offset: 0,
            errors: Some(vec![ErrorEntry {
                code: self.status.as_u16(),
                msg: self.msg,
            }]),
        };
        (self.status, Json(body)).into_response()
    }
}

async fn not_found(uri: Uri) -> JaegerError {
    JaegerError::not_found(format!("no such endpoint: {}", uri.path()))
}

fn pairs(q: Result<Query<Pairs>, QueryRejection>) -> Result<Pairs, JaegerError> {
    q.map(|Query(p)| p)
        .map_err(|e| JaegerError::bad_request(e.body_text()))
}

/// Runs `work` on the blocking pool: walking (and rendering) the stored traces
/// takes time linear in the store, which must not hold up the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JaegerError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| JaegerError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            msg: format!("the request failed: {e}"),
        })
}

/// Every stored trace, newest completed first (a snapshot: the store's lock is
/// not held while a request walks them).
fn stored(state: &AppState) -> Vec<Arc<AnalyzedTrace>> {
    state.store.traces().recent(usize::MAX, |_| true)
}

/// The Jaeger rendering of a stored trace, with the kinds of the findings it
/// contributed to on the spans they name.
pub fn render(t: &AnalyzedTrace, findings: &FindingStore) -> TraceJson {
    let found = convert::span_findings(t, &findings.for_trace(t.trace.trace_id, &t.finding_ids));
    trace_json(t, &found)
}

/// `GET /api/services`: every service with a span in the stored traces, sorted.
async fn services(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
) -> Result<impl IntoResponse, JaegerError> {
    let local = local_only(&state, marked, &uri);
    let peers = ask_peers(&state, local, &uri, false);
    let walked = state.clone();
    let mine = blocking(move || {
        // Symbols while walking (a hash of a number per span), text once.
        let mut services = FxHashSet::default();
        for t in stored(&walked) {
            services.extend(t.trace.spans.iter().map(|s| s.service));
        }
        services
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect::<BTreeSet<_>>()
    });
    let (mine, (theirs, missing)) = tokio::join!(mine, peers);
    let names = union(mine?, theirs);
    let total = names.len();
    Ok(answer_missing(names, total, missing))
}

/// The distinct operations of `service`'s spans, with their span kinds as
/// Jaeger names them ([`convert::span_kind`]).
async fn operation_set(
    state: AppState,
    service: String,
) -> Result<BTreeSet<(&'static str, &'static str)>, JaegerError> {
    blocking(move || operations_of(&state, &service)).await
}

fn operations_of(state: &AppState, service: &str) -> BTreeSet<(&'static str, &'static str)> {
    let Some(service) = Sym::lookup(service) else {
        return BTreeSet::new();
    };
    let mut ops = FxHashSet::default();
    for t in stored(state) {
        ops.extend(
            t.trace
                .spans
                .iter()
                .filter(|s| s.service == service)
                .map(|s| (s.operation, s.kind)),
        );
    }
    ops.into_iter()
        .map(|(operation, kind)| (operation.as_str(), convert::span_kind(kind)))
        .collect()
}

/// `GET /api/services/{service}/operations`: operation names, sorted.
async fn service_operations(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
    Path(service): Path<String>,
) -> Result<impl IntoResponse, JaegerError> {
    let local = local_only(&state, marked, &uri);
    let (mine, (theirs, missing)) = tokio::join!(
        operation_set(state.clone(), service),
        ask_peers(&state, local, &uri, false)
    );
    let mine: BTreeSet<String> = mine?.into_iter().map(|(name, _)| name.to_owned()).collect();
    let names = union(mine, theirs);
    let total = names.len();
    Ok(answer_missing(names, total, missing))
}

#[derive(Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Operation {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: String,
}

/// `GET /api/operations?service=&spanKind=`: `{name, spanKind}` per operation
/// and kind (`spanKind` is `""` for an unspecified kind).
async fn operations(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<impl IntoResponse, JaegerError> {
    let p = pairs(q)?;
    let get = |key: &str| {
        p.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let service = get("service")
        .ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))?;
    let kind = get("spanKind");
    let local = local_only(&state, marked, &uri);
    let (mine, (theirs, missing)) = tokio::join!(
        operation_set(state.clone(), service.to_owned()),
        ask_peers(&state, local, &uri, false)
    );
    let mine: BTreeSet<Operation> = mine?
        .into_iter()
        .map(|(name, span_kind)| Operation {
            name: name.to_owned(),
            span_kind: span_kind.to_owned(),
        })
        .filter(|o| kind.is_none_or(|k| o.span_kind == k))
        .collect();
    let ops = union(mine, theirs);
    let total = ops.len();
    Ok(answer_missing(ops, total, missing))
}

/// Whether `t` has a span that passes every condition of the search (Jaeger's
/// stores: one span must match the service, operation, times, durations and
/// all the tags together).
/// Process tags by instance and resource: one search reads each resource once.
type ProcessCache = FxHashMap<(Option<Sym>, Option<Sym>), Vec<convert::Tag>>;

fn matches(
    t: &AnalyzedTrace,
    q: &Search,
    findings: &FindingStore,
    processes: &mut ProcessCache,
) -> bool {
    let trace = &t.trace;
    let candidates: Vec<usize> = (0..trace.len())
        .filter(|&i| q.span_passes(&trace.spans[i], trace.start(i as u32)))
        .collect();
    if candidates.is_empty() {
        return false;
    }
    if q.tags.is_empty() {
        return true;
    }
    // Tags are matched on what the rendering shows, so a search sees exactly
    // the tags a user sees (`error`, `span.kind`, `hopscope.*`, process tags),
    // built for the candidate spans only.
    let found = if q
        .tags
        .iter()
        .any(|(k, _)| convert::LIST_TAGS.contains(&k.as_str()))
    {
        convert::span_findings(t, &findings.for_trace(t.trace.trace_id, &t.finding_ids))
    } else {
        Vec::new()
    };
    let none = convert::SpanFindings::default();
    candidates.into_iter().any(|i| {
        let span = convert::span_tags(t, i, found.get(i).unwrap_or(&none));
        let process = processes
            .entry((span.instance, span.resource))
            .or_insert_with(|| convert::process_tags(span.instance, span.resource));
        q.tags_match(&span.tags, &convert::logs(t, i), process)
    })
}

/// `GET /api/traces`: the stored traces with a span matching the search,
/// newest (by start) first, at most `limit` (default 100); `traceID=`
/// parameters name traces directly.
async fn search(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<impl IntoResponse, JaegerError> {
    let q = Search::parse(&pairs(q)?)?;
    let local = local_only(&state, marked, &uri);
    let limit = q.trace_ids.is_empty().then_some(q.limit);
    let (mine, (theirs, missing)) = tokio::join!(
        blocking({
            let state = state.clone();
            move || search_traces(&state, &q)
        }),
        ask_peers(&state, local, &uri, false)
    );
    let mine = mine?;
    if theirs.is_empty() {
        return Ok(answer_missing(json!(mine), 0, missing));
    }
    Ok(answer_missing(
        merge_traces(mine, theirs, limit),
        0,
        missing,
    ))
}

/// The traces of this replica and its peers' answers, each trace once
/// (ours first), newest (by first span start) first, at most `limit`.
fn merge_traces(mine: Vec<TraceJson>, theirs: Vec<Vec<Value>>, limit: Option<usize>) -> Value {
    let start = |t: &Value| -> u64 {
        t["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["startTime"].as_u64())
            .min()
            .unwrap_or(0)
    };
    let mut seen = FxHashSet::default();
    let mut all: Vec<Value> = mine
        .iter()
        .map(|t| json!(t))
        .chain(theirs.into_iter().flatten())
        .filter(|t| {
            t["spans"].as_array().is_some_and(|s| !s.is_empty())
                && seen.insert(t["traceID"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    all.sort_by_key(|t| std::cmp::Reverse(start(t)));
    all.truncate(limit.unwrap_or(usize::MAX));
    Value::Array(all)
}

/// The renderings of the traces a search finds.
fn search_traces(state: &AppState, q: &Search) -> Vec<TraceJson> {
    let findings = state.store.findings();
    let mut processes = ProcessCache::default();
    let traces: Vec<Arc<AnalyzedTrace>> = if q.trace_ids.is_empty() {
        let mut found: Vec<Arc<AnalyzedTrace>> = stored(state)
            .into_iter()
            .filter(|t| matches(t, q, findings, &mut processes))
            .collect();
        found.sort_by_key(|t| std::cmp::Reverse(t.trace.start(t.trace.root)));
        found.truncate(q.limit);
        found
    } else {
        q.trace_ids
            .iter()
            .filter_map(|id| state.store.traces().get(id))
            .collect()
    };
    traces
        .iter()
        .map(|t| render(t, findings))
        // An assembled trace always has a span; an empty `spans` list would
        // crash Grafana's datasource, so none is ever sent.
        .filter(|j| !j.spans.is_empty())
        .collect()
}

/// `GET /api/traces/{traceID}`: one trace (`start`/`end` query parameters,
/// which Grafana may add in µs or ms, are hints and are not read).
/// A trace this replica does not hold is asked of every peer at once; the
/// first that holds it answers (its owner).
async fn trace(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
    Path(raw): Path<String>,
) -> Result<Response, JaegerError> {
    let id = query::parse_trace_id(&raw)
        .map_err(|e| JaegerError::bad_request(format!("`{raw}` is not a trace id: {e}")))?;
    let json = state
        .store
        .traces()
        .get(&id)
        .map(|t| render(&t, state.store.findings()))
        .filter(|j| !j.spans.is_empty());
    if let Some(json) = json {
        return Ok(answer(vec![json], 0).into_response());
    }
    let local = local_only(&state, marked, &uri);
    let (theirs, mut missing) = ask_peers::<Vec<Value>>(&state, local, &uri, true).await;
    let found = theirs.into_iter().find(|data| {
        data.first()
            .is_some_and(|t| t["spans"].as_array().is_some_and(|s| !s.is_empty()))
    });
    if let Some(data) = found {
        return Ok(answer(data, 0).into_response());
    }
    if missing.is_empty() {
        return Err(JaegerError::not_found("trace not found"));
    }
    // Perhaps held by a peer that did not answer: said with the 404.
    missing.insert(
        0,
        ErrorEntry {
            code: StatusCode::NOT_FOUND.as_u16(),
            msg: "trace not found".to_owned(),
        },
    );
    let body = Envelope {
        data: (),
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(missing),
    };
    Ok((StatusCode::NOT_FOUND, Json(body)).into_response())
}

/// One edge of Jaeger's dependency graph.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct Dependency {
    pub parent: &'static str,
    pub child: &'static str,
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// Caller service → callee service calls of the traces that started within
/// `[from_ns, to_ns]` (at the aggregate's one-minute resolution), from the
/// store's service graph ([`crate::store::Edges`]): every analyzed trace
/// counts, not only those still in the trace store. A call is a CLIENT span
/// answered by a SERVER span of another service, the edge the critical path
/// calls `wire`. Sorted by parent, then child.
pub fn dependency_edges(store: &Store, (from_ns, to_ns): (u64, u64)) -> Vec<Dependency> {
    let mut edges: Vec<Dependency> = store
        .edges()
        .query(Some(from_ns), Some(to_ns.saturating_add(1)))
        .into_iter()
        .map(|e| Dependency {
            parent: e.key.caller.as_str(),
            child: e.key.callee.as_str(),
            call_count: e.calls,
        })
        .collect();
    edges.sort_by(|a, b| (a.parent, a.child).cmp(&(b.parent, b.child)));
    edges
}

/// `GET /api/dependencies?endTs=&lookback=` (unix ms and ms).
async fn dependencies(
    State(state): State<AppState>,
    marked: Option<Extension<LocalOnly>>,
    uri: Uri,
    q: Result<Query<Pairs>, QueryRejection>,
) -> Result<impl IntoResponse, JaegerError> {
    let window = query::dependencies_window(&pairs(q)?, SystemTime::now())?;
    let local = local_only(&state, marked, &uri);
    let (store, peers) = super::federate::view(&state, local, false).await;
    let missing = peers
        .into_iter()
        .flatten()
        .filter_map(|p| p.error.map(|e| missing(&p.peer, e)))
        .collect();
    Ok(answer_missing(dependency_edges(&store, window), 0, missing))
}
