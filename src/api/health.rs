//! Liveness, readiness and counters.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::AppState;
use crate::model::intern::{self, InternerUsage};
use crate::stats::StatsSnapshot;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

/// Counters and buffer and store sizes.
#[derive(Serialize, ToSchema)]
pub struct StatsBody {
    counters: StatsSnapshot,
    /// Traces taken out of the buffer whose analysis is not stored yet.
    analysis_pending: u64,
    /// Whether the cross-trace detectors have run on every analyzed trace.
    detectors_current: bool,
    buffered_traces: usize,
    buffered_spans: usize,
    buffered_bytes_estimate: usize,
    /// The memory budget of the buffer: past it exports are refused.
    memory_budget_bytes: usize,
    /// Spans the buffer holds before analyzing the oldest traces early:
    /// `max_buffered_spans`, lower while resident memory is near
    /// `memory_limit_mib`.
    buffer_span_ceiling: usize,
    /// The process's resident memory (absent where it cannot be read).
    resident_bytes: Option<usize>,
    stored_traces: usize,
    stored_bytes_estimate: usize,
    /// Distinct names from the wire held, against `names_max_mib`.
    interner: InternerUsage,
    /// Spans queued for forwarding, being batched or in flight (0 without
    /// `forward_otlp`).
    forward_spans_queued: u64,
}

/// Counters, buffer and store sizes.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    operation_id = "stats",
    tag = "meta",
    responses((status = 200, description = "Counters, buffer and store sizes", body = StatsBody))
)]
pub async fn stats(State(state): State<AppState>) -> Json<StatsBody> {
    // The buffer first, then the counters: see `Buffer::hand_out`.
    let (buffered_traces, buffered_spans) = (state.buffer.trace_count(), state.buffer.span_count());
    std::sync::atomic::fence(Ordering::SeqCst);
    let counters = state.stats.snapshot();
    Json(StatsBody {
        detectors_current: state.store.detectors_current(),
        analysis_pending: counters.analysis_pending(),
        counters,
        buffered_traces,
        buffered_spans,
        buffered_bytes_estimate: state.buffer.bytes(),
        memory_budget_bytes: state.buffer.limits().max_bytes,
        buffer_span_ceiling: state.buffer.span_ceiling(),
        resident_bytes: crate::memory::resident_bytes(),
        stored_traces: state.store.traces().len(),
        stored_bytes_estimate: state.store.traces().bytes(),
        interner: intern::usage(),
        forward_spans_queued: state.stats.forward_queued.load(Ordering::Relaxed),
    })
}
