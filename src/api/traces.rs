//! `GET /api/v1/traces` and `GET /api/v1/traces/{trace_id}`, whole or in
//! parts: a page of its spans in tree order, or its critical path alone
//! (see [`TraceParams`]).

use std::collections::{BTreeMap, HashSet};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::params::{self, ms, rfc3339};
use super::schemas::attr_json;
use super::trace_tree::TreeOrder;
use super::{ApiError, AppState};
use crate::analyze::{AnalyzedTrace, EntryPoint, FindingKind, HopKey, HopKind};
use crate::model::{
    AttrArena, AttrRange, Semantics, SpanId, SpanKind, StatusCode, Sym, TraceId, Warning,
    RESOURCE_ATTRS,
};
use crate::store::{Finding, FindingStore};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;
/// Spans in a page of one trace when `limit` is not given.
const DEFAULT_PAGE: usize = 1000;
/// Spans in a page of one trace at most.
const MAX_PAGE: usize = 10_000;

/// Filters of `GET /api/v1/traces`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Traces with a span of this service.
    service: Option<String>,
    /// Traces of this entry point: `SERVICE` or `SERVICE:OPERATION`.
    entry: Option<String>,
    /// Traces at least this long.
    min_duration_ms: Option<f64>,
    /// At most this many, most recent first (default 20, at most 1000).
    #[param(schema_with = super::openapi::limit_schema)]
    limit: Option<usize>,
}

/// An entry point: the root span's service and operation.
#[derive(Serialize, ToSchema)]
pub struct EntryBody {
    service: Sym,
    operation: Sym,
}

impl From<EntryPoint> for EntryBody {
    fn from(e: EntryPoint) -> Self {
        EntryBody {
            service: e.service,
            operation: e.operation,
        }
    }
}

/// One analyzed trace in a list.
#[derive(Serialize, ToSchema)]
pub struct TraceSummary {
    trace_id: TraceId,
    entry: EntryBody,
    start_time: String,
    duration_ms: f64,
    span_count: usize,
    error: bool,
}

fn summary(t: &AnalyzedTrace) -> TraceSummary {
    TraceSummary {
        trace_id: t.trace.trace_id,
        entry: t.entry.into(),
        start_time: rfc3339(t.trace.root_span().start_ns),
        duration_ms: ms(t.duration_ns()),
        span_count: t.trace.len(),
        error: t.error,
    }
}

/// The most recent analyzed traces.
#[derive(Serialize, ToSchema)]
pub struct TraceListBody {
    traces: Vec<TraceSummary>,
}

/// The most recent analyzed traces, filtered.
#[utoipa::path(
    get,
    path = "/api/v1/traces",
    operation_id = "list_traces",
    tag = "traces",
    params(ListParams),
    responses(
        (status = 200, description = "The most recent matching traces", body = TraceListBody),
        (status = 400, description = "A parameter is malformed", body = super::error::ErrorBody)
    )
)]
pub async fn list(
    State(state): State<AppState>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<TraceListBody>, ApiError> {
    let p = params::query(q)?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let min_ns = p.min_duration_ms.map(|m| (m.max(0.0) * 1e6) as u64);
    let entry = p.entry.as_deref().map(params::entry);
    let traces = state.store.traces().recent(limit, |t| {
        min_ns.is_none_or(|min| t.duration_ns() >= min)
            && p.service
                .as_deref()
                .is_none_or(|s| t.trace.spans.iter().any(|sp| sp.service.as_str() == s))
            && entry.is_none_or(|(s, o)| {
                t.entry.service.as_str() == s && o.is_none_or(|o| t.entry.operation.as_str() == o)
            })
    });
    Ok(Json(TraceListBody {
        traces: traces.iter().map(|t| summary(t)).collect(),
    }))
}

/// The span's OTLP status.
#[derive(Serialize, ToSchema)]
pub struct StatusBody {
    code: StatusCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// A span event.
#[derive(Serialize, ToSchema)]
pub struct EventBody {
    time: String,
    name: Sym,
    attributes: BTreeMap<&'static str, Value>,
}

/// A link to another span.
#[derive(Serialize, ToSchema)]
pub struct LinkBody {
    trace_id: TraceId,
    span_id: SpanId,
    attributes: BTreeMap<&'static str, Value>,
}

/// A span with its self and critical time.
#[derive(Serialize, ToSchema)]
pub struct SpanBody {
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    service: Sym,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_instance_id: Option<Sym>,
    operation: Sym,
    kind: SpanKind,
    start_time: String,
    duration_ms: f64,
    self_ms: f64,
    critical_ms: f64,
    /// Shift applied to this span's times for attribution (clock skew).
    #[serde(skip_serializing_if = "Option::is_none")]
    skew_adjustment_ms: Option<f64>,
    status: StatusBody,
    attributes: BTreeMap<&'static str, Value>,
    events: Vec<EventBody>,
    links: Vec<LinkBody>,
    /// The span's position in depth-first tree order (children by start
    /// time): the index `offset` counts. A subtree is the block of positions
    /// from its span's to its span's plus `descendants`.
    tree_index: usize,
    /// Levels below the root (the root's is 0).
    depth: u32,
    /// How many spans are below this one.
    descendants: usize,
}

/// One stretch of the critical path.
#[derive(Serialize, ToSchema)]
pub struct SegmentBody {
    span_id: SpanId,
    service: Sym,
    operation: Sym,
    /// `span`, or `wire` for a CLIENT span's time outside its remote server span.
    hop_kind: HopKind,
    start_offset_ms: f64,
    duration_ms: f64,
}

/// A hop and its share of the request.
#[derive(Serialize, ToSchema)]
pub struct HopBody {
    service: Sym,
    operation: Sym,
    kind: HopKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<Sym>,
    critical_ms: f64,
    share: f64,
}

impl HopBody {
    pub fn new(key: HopKey, critical_ns: u64, share: f64) -> Self {
        HopBody {
            service: key.service,
            operation: key.operation,
            kind: key.kind,
            peer: key.peer,
            critical_ms: ms(critical_ns),
            share,
        }
    }
}

/// One analyzed trace in full.
#[derive(Serialize, ToSchema)]
pub struct TraceBody {
    #[serde(flatten)]
    summary: TraceSummary,
    spans: Vec<SpanBody>,
    critical_path: Vec<SegmentBody>,
    hops: Vec<HopBody>,
    warnings: Vec<Warning>,
    /// The findings this trace contributed to.
    findings: Vec<super::findings::FindingBody>,
    /// The spans of this trace each finding is made of (the repeated or serial
    /// calls of a pattern, a cascade's timed-out chain), one entry per finding
    /// of `findings` that names spans. In a part of the trace (`offset`,
    /// `limit`, `max_depth` or `critical_path`), only the spans of `spans`,
    /// and no entry for a finding none of whose spans are there.
    marks: Vec<MarkBody>,
    /// With `offset`, `limit` or `max_depth`: which part of the tree order
    /// `spans` is.
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<PageBody>,
    /// With `critical_path=true`: the runs of sibling subtrees left out of
    /// `spans`, in tree order.
    #[serde(skip_serializing_if = "Option::is_none")]
    collapsed: Option<Vec<CollapsedBody>>,
}

/// Which part of a trace's tree order a page holds.
#[derive(Serialize, ToSchema)]
pub struct PageBody {
    /// The position the page starts from.
    offset: usize,
    /// How many spans `spans` holds.
    returned: usize,
    /// The `offset` of the next page; null after the last one.
    next_offset: Option<usize>,
}

/// Sibling subtrees left out of a critical-path answer: the spans at tree
/// positions `offset` to `offset + span_count - 1`, all below `parent_span_id`.
/// `?offset={offset}&limit={span_count}` fetches them.
#[derive(Serialize, ToSchema)]
pub struct CollapsedBody {
    parent_span_id: SpanId,
    offset: usize,
    span_count: usize,
}

/// Which of a trace's spans `GET /api/v1/traces/{trace_id}` answers. Without
/// any, every span, in the order the trace keeps them. With
/// `critical_path=true`, the others are not read.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TraceParams {
    /// Only the spans on the critical path and their ancestors, in tree
    /// order, with the subtrees left out counted in `collapsed`.
    #[param(schema_with = super::openapi::flag_schema)]
    critical_path: Option<bool>,
    /// A page of the spans in depth-first tree order, from this position.
    #[param(schema_with = super::openapi::offset_schema)]
    offset: Option<usize>,
    /// At most this many spans in the page (default 1000, at most 10000).
    #[param(schema_with = super::openapi::page_limit_schema)]
    limit: Option<usize>,
    /// Leave out spans deeper than this (the root is at depth 0): with
    /// `offset` at a span's first child and its depth + 1, that span's
    /// children without their subtrees.
    #[param(schema_with = super::openapi::depth_schema)]
    max_depth: Option<usize>,
}

/// The spans an answer holds.
enum Selection {
    All,
    Page {
        offset: usize,
        limit: usize,
        max_depth: Option<usize>,
    },
    CriticalPath,
}

impl TraceParams {
    /// `critical_path=true` wins over the page parameters: a query string
    /// cannot say that they exclude each other, and an answer whose
    /// `collapsed` is there and whose `page` is not says which was served.
    fn selection(&self) -> Selection {
        if self.critical_path.unwrap_or(false) {
            Selection::CriticalPath
        } else if self.offset.is_some() || self.limit.is_some() || self.max_depth.is_some() {
            Selection::Page {
                offset: self.offset.unwrap_or(0),
                limit: self.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
                max_depth: self.max_depth,
            }
        } else {
            Selection::All
        }
    }
}

/// The spans of a trace one finding is made of.
#[derive(Serialize, ToSchema)]
pub struct MarkBody {
    /// The finding's id (`GET /api/v1/findings/{id}`).
    finding_id: String,
    kind: FindingKind,
    span_ids: Vec<SpanId>,
}

/// The marks of `t` whose findings are among `findings` (a finding no longer
/// kept has nothing to link to).
pub fn marks<'a>(
    t: &'a AnalyzedTrace,
    findings: &'a [Finding],
) -> impl Iterator<Item = (&'a Finding, &'a [SpanId])> {
    t.marks.iter().filter_map(|(id, spans)| {
        findings
            .iter()
            .find(|f| f.id == *id)
            .map(|f| (f, spans.as_slice()))
    })
}

/// A span's (or event's, or link's) own attributes: the resource's, which
/// travel with each span under [`RESOURCE_ATTRS`], are not among them.
fn attributes(arena: &AttrArena, range: AttrRange) -> BTreeMap<&'static str, Value> {
    arena
        .iter(range)
        .filter(|(k, _)| *k != *RESOURCE_ATTRS)
        .map(|(k, v)| (k.as_str(), attr_json(v)))
        .collect()
}

/// One analyzed trace: spans, critical path, hops, warnings and findings.
/// A big trace can be read in parts: its critical path alone
/// (`critical_path=true`), or its spans in pages of tree order (`offset`,
/// `limit`, `max_depth`).
#[utoipa::path(
    get,
    path = "/api/v1/traces/{trace_id}",
    operation_id = "get_trace",
    tag = "traces",
    params(("trace_id" = String, Path, description = "32 hex digits", pattern = "^(?!0{32})[0-9a-fA-F]{32}$"), TraceParams),
    responses(
        (status = 200, description = "The trace", body = TraceBody),
        (status = 400, description = "Not a trace id, or a parameter is malformed", body = super::error::ErrorBody),
        (status = 404, description = "Not among the completed traces kept", body = super::error::ErrorBody)
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    q: Result<Query<TraceParams>, QueryRejection>,
) -> Result<Json<TraceBody>, ApiError> {
    let selection = params::query(q)?.selection();
    let id = TraceId::parse_hex(&raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_trace_id",
            format!("`{raw}` is not a trace id: {e}"),
        )
    })?;
    let t = state.store.traces().get(&id).ok_or_else(|| {
        ApiError::not_found(
            "trace_not_found",
            format!("trace {id} is not among the completed traces kept"),
        )
    })?;
    Ok(Json(selected_body(&t, state.store.findings(), selection)))
}

/// The JSON body of one analyzed trace: its spans, critical path, hops,
/// warnings and the findings it contributed to. Flat lists, so rendering takes
/// the same stack however deep the trace is.
pub fn trace_body(t: &AnalyzedTrace, findings: &FindingStore) -> TraceBody {
    selected_body(t, findings, Selection::All)
}

/// [`trace_body`] with only the spans `selection` asks for.
fn selected_body(t: &AnalyzedTrace, findings: &FindingStore, selection: Selection) -> TraceBody {
    let trace = &t.trace;
    let root_start = trace.start(trace.root);
    let tree = TreeOrder::of(trace);
    let (chosen, page, collapsed) = match selection {
        Selection::All => ((0..trace.len() as u32).collect(), None, None),
        Selection::Page {
            offset,
            limit,
            max_depth,
        } => {
            let (spans, next_offset) = tree.page(offset, limit, max_depth);
            let page = PageBody {
                offset,
                returned: spans.len(),
                next_offset,
            };
            (spans, Some(page), None)
        }
        Selection::CriticalPath => {
            let (spans, left_out) = tree.critical(trace, t.path.segments.iter().map(|s| s.span));
            let collapsed = left_out
                .into_iter()
                .map(|c| CollapsedBody {
                    parent_span_id: trace.span(c.parent).span_id,
                    offset: c.offset,
                    span_count: c.spans,
                })
                .collect();
            (spans, None, Some(collapsed))
        }
    };
    // A part's marks name only the spans it holds: a loop's 100,000 calls
    // are marked page by page, not all with the critical path.
    let returned: Option<HashSet<SpanId>> = (chosen.len() < trace.len())
        .then(|| chosen.iter().map(|&i| trace.span(i).span_id).collect());
    let spans = chosen
        .into_iter()
        .map(|i| {
            let s = trace.span(i);
            let shift = trace.shift_ns[i as usize];
            SpanBody {
                span_id: s.span_id,
                parent_span_id: s.parent_id,
                service: s.service,
                service_instance_id: Semantics::of(s, &trace.arena).instance,
                operation: s.operation,
                kind: s.kind,
                start_time: rfc3339(s.start_ns),
                duration_ms: ms(s.duration_ns()),
                self_ms: ms(t.path.self_ns[i as usize]),
                critical_ms: ms(t.path.critical_ns[i as usize]),
                skew_adjustment_ms: (shift != 0).then(|| shift as f64 / 1e6),
                status: StatusBody {
                    code: s.status,
                    message: s.status_message().map(str::to_owned),
                },
                attributes: attributes(&trace.arena, s.attrs),
                events: s
                    .events()
                    .iter()
                    .map(|e| EventBody {
                        time: rfc3339(e.time_ns),
                        name: e.name,
                        attributes: attributes(&trace.arena, e.attrs),
                    })
                    .collect(),
                links: s
                    .links()
                    .iter()
                    .map(|l| LinkBody {
                        trace_id: l.trace_id,
                        span_id: l.span_id,
                        attributes: attributes(&trace.arena, l.attrs),
                    })
                    .collect(),
                tree_index: tree.position(i),
                depth: tree.depth(i),
                descendants: tree.descendants(i),
            }
        })
        .collect();
    let critical_path = t
        .path
        .segments
        .iter()
        .zip(&t.segment_hops)
        .map(|(seg, hop)| {
            let s = trace.span(seg.span);
            SegmentBody {
                span_id: s.span_id,
                service: s.service,
                operation: s.operation,
                hop_kind: hop.kind,
                start_offset_ms: ms(seg.start_ns - root_start),
                duration_ms: ms(seg.end_ns - seg.start_ns),
            }
        })
        .collect();
    let found = findings.for_trace(t.trace.trace_id, &t.finding_ids);
    TraceBody {
        summary: summary(t),
        spans,
        critical_path,
        hops: t
            .hops
            .iter()
            .map(|h| HopBody::new(h.key, h.critical_ns, h.share))
            .collect(),
        warnings: t.warnings.clone(),
        marks: marks(t, &found)
            .map(|(f, spans)| MarkBody {
                finding_id: format!("{:016x}", f.id),
                kind: f.latest.kind,
                span_ids: spans
                    .iter()
                    .filter(|id| returned.as_ref().is_none_or(|r| r.contains(id)))
                    .copied()
                    .collect(),
            })
            .filter(|m| !m.span_ids.is_empty())
            .collect(),
        findings: found.into_iter().map(Into::into).collect(),
        page,
        collapsed,
    }
}
