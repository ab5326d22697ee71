//! Loads Jaeger JSON into hopscope spans, for tests that use traces written by
//! other tools as fixtures.
//!
//! Accepted shapes: the query-API envelope `{"data": [trace, ...]}`, a bare trace
//! `{"traceID", "spans", "processes"}`, and the jaeger-ui critical-path test wrapper
//! `{"trace": trace, "expectedCriticalPathSections": [...]}`.
//!
//! Mapping: `startTime`/`duration` are microseconds and become nanoseconds; the
//! parent is the first `CHILD_OF` or `FOLLOWS_FROM` reference (else a legacy
//! `parentSpanID`); the service is `processes[processID].serviceName` (or an
//! inline `process`); the kind comes from the `span.kind` tag. Span ids that are
//! not 16 hex digits (the synthetic "span-C", "A", ...) get a stable hashed id,
//! and [`JaegerTrace::name`] maps every id back to the fixture's text.

use std::collections::HashMap;

use hopscope::model::{Span, SpanId, SpanKind, TraceId};
use serde_json::Value;

/// One Jaeger trace converted to hopscope spans.
#[derive(Debug, Clone)]
pub struct JaegerTrace {
    /// The fixture's `traceID` text.
    pub trace_id_text: String,
    pub trace_id: TraceId,
    /// In the fixture's order.
    pub spans: Vec<Span>,
    names: HashMap<SpanId, String>,
}

impl JaegerTrace {
    /// The fixture's span id text for `id`.
    pub fn name(&self, id: SpanId) -> &str {
        self.names
            .get(&id)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("span id {id} is not one of this trace's spans"))
    }

    /// The hopscope id of the fixture's span id text `name`.
    pub fn id(&self, name: &str) -> SpanId {
        span_id(name)
    }
}

/// 64-bit FNV-1a, so ids are stable across runs and platforms.
fn fnv1a(seed: u64, text: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A 16-hex-digit id as itself; anything else by a stable hash.
pub fn span_id(text: &str) -> SpanId {
    if text.len() == 16 && is_hex(text) {
        if let Ok(id) = SpanId::parse_hex(text) {
            return id;
        }
    }
    SpanId::from_u64(fnv1a(0, text)).unwrap_or_else(|| SpanId::from_u64(1).expect("nonzero"))
}

/// A 16- or 32-hex-digit id as itself (left-padded); anything else by a stable hash.
pub fn trace_id(text: &str) -> TraceId {
    if (text.len() == 16 || text.len() == 32) && is_hex(text) {
        if let Ok(id) = TraceId::parse_hex(&format!("{text:0>32}")) {
            return id;
        }
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv1a(1, text).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv1a(2, text).to_be_bytes());
    bytes[15] |= 1;
    TraceId::from_bytes(&bytes).expect("16 nonzero bytes")
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn micros(v: &Value, key: &str, span: &str) -> i64 {
    let field = v
        .get(key)
        .unwrap_or_else(|| panic!("span {span} has no {key}"));
    field
        .as_i64()
        .or_else(|| field.as_f64().map(|f| f.round() as i64))
        .unwrap_or_else(|| panic!("span {span}: {key} is not a number: {field}"))
}

fn kind(span: &Value) -> SpanKind {
    let tag = span
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|t| str_field(t, "key") == Some("span.kind"))
        .and_then(|t| str_field(t, "value"));
    match tag.map(str::to_ascii_lowercase).as_deref() {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        Some("internal") => SpanKind::Internal,
        _ => SpanKind::Unspecified,
    }
}

fn parent(span: &Value) -> Option<String> {
    let from_refs = span
        .get("references")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|r| matches!(str_field(r, "refType"), Some("CHILD_OF" | "FOLLOWS_FROM")))
        .and_then(|r| str_field(r, "spanID"));
    from_refs
        .or_else(|| str_field(span, "parentSpanID"))
        .filter(|p| !p.is_empty() && p.bytes().any(|b| b != b'0'))
        .map(str::to_owned)
}

/// Converts one Jaeger trace object (`traceID`, `spans`, `processes`).
pub fn convert_trace(trace: &Value) -> JaegerTrace {
    let trace_id_text = str_field(trace, "traceID")
        .or_else(|| trace["spans"].get(0).and_then(|s| str_field(s, "traceID")))
        .unwrap_or("")
        .to_owned();
    let processes = trace.get("processes");
    let mut names = HashMap::new();
    let spans = trace["spans"]
        .as_array()
        .expect("a Jaeger trace has a spans array")
        .iter()
        .map(|s| {
            let text = str_field(s, "spanID").expect("every span has a spanID");
            let id = span_id(text);
            if let Some(other) = names.insert(id, text.to_owned()) {
                assert_eq!(other, text, "two span id texts hash to {id}");
            }
            let start_us = micros(s, "startTime", text);
            let duration_us = micros(s, "duration", text);
            let service = str_field(s, "processID")
                .and_then(|p| processes.and_then(|ps| ps.get(p)))
                .or_else(|| s.get("process"))
                .and_then(|p| str_field(p, "serviceName"))
                .unwrap_or("unknown");
            let start_ns = u64::try_from(start_us).expect("start time >= 0") * 1_000;
            let end_ns = u64::try_from(start_us + duration_us).expect("end time >= 0") * 1_000;
            Span::new(
                id,
                parent(s).map(|p| span_id(&p)),
                service,
                str_field(s, "operationName").unwrap_or(""),
                kind(s),
                (start_ns, end_ns),
            )
        })
        .collect();
    JaegerTrace {
        trace_id: trace_id(&trace_id_text),
        trace_id_text,
        spans,
        names,
    }
}

/// Every trace in a Jaeger JSON document of any accepted shape.
pub fn load_all(doc: &Value) -> Vec<JaegerTrace> {
    if let Some(data) = doc.get("data").and_then(Value::as_array) {
        data.iter().map(convert_trace).collect()
    } else if let Some(trace) = doc.get("trace") {
        vec![convert_trace(trace)]
    } else {
        vec![convert_trace(doc)]
    }
}

/// The one trace of a Jaeger JSON document.
pub fn load(doc: &Value) -> JaegerTrace {
    let mut all = load_all(doc);
    assert_eq!(all.len(), 1, "expected exactly one trace in the document");
    all.pop().expect("one trace")
}
