//! `GET /metrics`: the daemon's state in the Prometheus text exposition format
//! (version 0.0.4), one registry per daemon.
//!
//! - every counter of [`crate::stats::Stats`] as `hopscope_<name>_total`;
//! - the refused OTLP requests again as one family by `reason`
//!   (`hopscope_otlp_requests_refused_total`);
//! - gauges of the buffer, the trace store and the memory budget;
//! - `hopscope_trace_analysis_seconds` and `hopscope_detection_run_seconds`
//!   histograms;
//! - `hopscope_findings` and `hopscope_finding_observations` by kind and
//!   severity;
//! - per entry point `hopscope_entry_traces_total` and
//!   `hopscope_entry_root_seconds_total`, and per hop
//!   `hopscope_hop_critical_seconds_total` and `hopscope_hop_traces_total`
//!   ([`crate::store::Totals`], cardinality capped), so that across replicas
//!   `sum by (service, operation) (rate(hopscope_hop_critical_seconds_total[5m]))
//!   / on (entry_service, entry_operation) group_left sum by (entry_service,
//!   entry_operation) (rate(hopscope_entry_root_seconds_total[5m]))` is a hop's
//!   latency share.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;
use crate::stats::{HistogramSnapshot, HISTOGRAM_BOUNDS};

/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value, escaped as the format asks (backslash, quote, newline).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes one metric family: its HELP and TYPE lines, then its samples
/// (`labels` already rendered, without braces).
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, f64)> + 'a,
) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\n', " "));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, count) in HISTOGRAM_BOUNDS.iter().zip(h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count {}", h.count);
}

pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let counters = state.stats.snapshot();
    for (name, help, value) in counters.fields() {
        family(
            &mut out,
            &format!("hopscope_{name}_total"),
            "counter",
            &help,
            [(String::new(), value as f64)],
        );
    }
    let refused = [
        ("memory_budget", counters.export_requests_refused),
        ("too_large", counters.otlp_too_large),
        ("unauthenticated", counters.otlp_unauthenticated),
        ("malformed", counters.otlp_malformed),
        ("unsupported", counters.otlp_http_unsupported),
        ("log_write_failed", counters.wal_write_errors),
    ];
    family(
        &mut out,
        "hopscope_otlp_requests_refused_total",
        "counter",
        "OTLP export requests refused, by reason (the same counts as the per-reason counters).",
        refused.map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
    let dropped = [
        ("shutdown", counters.forward_spans_dropped_shutdown),
        ("retries_exhausted", counters.forward_spans_dropped_retries),
        ("refused", counters.forward_spans_dropped_refused),
        ("rejected_by_receiver", counters.forward_spans_rejected),
    ];
    family(
        &mut out,
        "hopscope_forward_spans_dropped_total",
        "counter",
        "Spans not forwarded, by reason (the same counts as the per-reason counters).",
        dropped.map(|(reason, n)| (format!("reason=\"{reason}\""), n as f64)),
    );
    let names = crate::model::intern::usage();
    let gauges = [
        (
            "hopscope_buffered_traces",
            "Traces in the in-flight buffer.",
            state.buffer.trace_count() as f64,
        ),
        (
            "hopscope_buffered_spans",
            "Spans in the in-flight buffer.",
            state.buffer.span_count() as f64,
        ),
        (
            "hopscope_buffered_bytes",
            "Estimated bytes held by the in-flight buffer.",
            state.buffer.bytes() as f64,
        ),
        (
            "hopscope_memory_budget_bytes",
            "The buffer's memory budget: past it exports are refused.",
            state.buffer.limits().max_bytes as f64,
        ),
        (
            "hopscope_buffer_span_ceiling",
            "Spans the buffer holds before analyzing the oldest traces early: max_buffered_spans, lower while resident memory is near memory_limit_mib.",
            state.buffer.span_ceiling() as f64,
        ),
        (
            "hopscope_resident_bytes",
            "The process's resident memory.",
            crate::memory::resident_bytes().unwrap_or(0) as f64,
        ),
        (
            "hopscope_stored_traces",
            "Analyzed traces kept for the API.",
            state.store.traces().len() as f64,
        ),
        (
            "hopscope_stored_bytes",
            "Estimated bytes held by the analyzed traces kept.",
            state.store.traces().bytes() as f64,
        ),
        (
            "hopscope_interned_names",
            "Distinct names from the wire held by the interner.",
            names.names as f64,
        ),
        (
            "hopscope_interned_bytes",
            "Their estimated bytes, against names_max_mib.",
            names.bytes as f64,
        ),
        (
            "hopscope_analysis_pending",
            "Traces out of the buffer whose analysis is not stored yet.",
            counters.analysis_pending() as f64,
        ),
        (
            "hopscope_forward_spans_queued",
            "Spans queued for forwarding, being batched or in flight.",
            state.stats.forward_queued.load(std::sync::atomic::Ordering::Relaxed) as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(&mut out, name, "gauge", help, [(String::new(), value)]);
    }
    family(
        &mut out,
        "hopscope_names_refused_total",
        "counter",
        "New names from the wire read as hopscope.names_over_limit (names_max_mib reached).",
        [(String::new(), names.names_refused as f64)],
    );
    histogram(
        &mut out,
        "hopscope_trace_analysis_seconds",
        "Time to assemble, analyze and store one trace.",
        &state.stats.analysis.snapshot(),
    );
    histogram(
        &mut out,
        "hopscope_detection_run_seconds",
        "Time of one run of the cross-trace detectors over the window.",
        &state.stats.detection.snapshot(),
    );

    let findings = state.store.findings().counts();
    let by_kind = |(kind, severity): (crate::analyze::FindingKind, crate::analyze::Severity)| {
        format!(
            "kind=\"{}\",severity=\"{}\"",
            kind.as_str(),
            severity.as_str()
        )
    };
    family(
        &mut out,
        "hopscope_findings",
        "gauge",
        "Findings held, by kind and severity.",
        findings.iter().map(|&(k, (n, _))| (by_kind(k), n as f64)),
    );
    family(
        &mut out,
        "hopscope_finding_observations",
        "gauge",
        "Observations (traces or calls) behind the findings held, by kind and severity.",
        findings.iter().map(|&(k, (_, n))| (by_kind(k), n as f64)),
    );

    let entry_labels = |e: &crate::analyze::EntryPoint| {
        format!(
            "entry_service=\"{}\",entry_operation=\"{}\"",
            escape(e.service.as_str()),
            escape(e.operation.as_str())
        )
    };
    let entries = state.store.totals().entries();
    family(
        &mut out,
        "hopscope_entry_traces_total",
        "counter",
        "Traces analyzed per entry point (first analyses).",
        entries
            .iter()
            .map(|(e, t)| (entry_labels(e), t.traces as f64)),
    );
    family(
        &mut out,
        "hopscope_entry_root_seconds_total",
        "counter",
        "Summed root span durations per entry point: the denominator of a hop's latency share.",
        entries
            .iter()
            .map(|(e, t)| (entry_labels(e), t.root_ns as f64 / 1e9)),
    );
    let hops = state.store.totals().hops();
    let hop_labels = |(e, h): &(crate::analyze::EntryPoint, crate::analyze::HopKey)| {
        format!(
            "{},kind=\"{}\",service=\"{}\",operation=\"{}\",peer=\"{}\"",
            entry_labels(e),
            match h.kind {
                crate::analyze::HopKind::Span => "span",
                crate::analyze::HopKind::Wire => "wire",
                crate::analyze::HopKind::Queue => "queue",
            },
            escape(h.service.as_str()),
            escape(h.operation.as_str()),
            escape(h.peer.map_or("", |p| p.as_str())),
        )
    };
    family(
        &mut out,
        "hopscope_hop_critical_seconds_total",
        "counter",
        "Critical-path seconds per hop of an entry point: over the entry's root seconds, the hop's latency share.",
        hops.iter()
            .map(|(k, t)| (hop_labels(k), t.critical_ns as f64 / 1e9)),
    );
    family(
        &mut out,
        "hopscope_hop_traces_total",
        "counter",
        "Traces whose critical path went through the hop.",
        hops.iter().map(|(k, t)| (hop_labels(k), t.traces as f64)),
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out)
}
