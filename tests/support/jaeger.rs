//! Jaeger JSON fixtures as hopscope spans, read by the library's reader
//! ([`hopscope::offline::jaeger`], the one `hopscope analyze` uses), plus the
//! fixture's span id texts, so tests can name spans as the fixture does.
//!
//! Accepted shapes: the query-API envelope `{"data": [trace, ...]}`, a bare trace
//! `{"traceID", "spans", "processes"}`, and the jaeger-ui critical-path test wrapper
//! `{"trace": trace, "expectedCriticalPathSections": [...]}`. Span ids that are
//! not hex (the synthetic "span-C", "A", ...) get a stable hashed id
//! ([`hopscope::offline::span_id`]), and [`JaegerTrace::name`] maps every id
//! back to the fixture's text.

use std::collections::HashMap;

use hopscope::model::{AttrArena, Span, SpanId, SpanSet, TraceId};
use hopscope::offline::{jaeger, span_id};
use serde_json::Value;

/// One Jaeger trace converted to hopscope spans.
#[derive(Debug, Clone)]
pub struct JaegerTrace {
    /// The fixture's `traceID` text.
    pub trace_id_text: String,
    pub trace_id: TraceId,
    /// In the fixture's order.
    pub spans: Vec<Span>,
    /// Where the spans' attributes are.
    pub arena: AttrArena,
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
        span_id(name).expect("a span id text")
    }

    /// The spans as a set, for `assemble`.
    pub fn set(&self) -> SpanSet {
        SpanSet {
            spans: self.spans.clone(),
            arena: self.arena.clone(),
        }
    }
}

fn traces(doc: &Value) -> Vec<&Value> {
    if let Some(data) = doc.get("data").and_then(Value::as_array) {
        data.iter().collect()
    } else if let Some(trace) = doc.get("trace") {
        vec![trace]
    } else {
        vec![doc]
    }
}

/// Every trace in a Jaeger JSON document of any accepted shape.
pub fn load_all(doc: &Value) -> Vec<JaegerTrace> {
    let bytes = serde_json::to_vec(doc).expect("JSON");
    let mut batches = Vec::new();
    jaeger::read(&bytes, &mut |batch| batches.push(batch)).expect("a Jaeger JSON document");
    traces(doc)
        .into_iter()
        .zip(batches)
        .map(|(trace, batch)| {
            assert_eq!(batch.rejected, 0, "spans refused: {:?}", batch.errors);
            let mut sets = batch.traces;
            assert_eq!(sets.len(), 1, "one trace id per Jaeger trace");
            let (trace_id, set) = sets.pop().expect("one trace");
            let mut names = HashMap::new();
            for s in trace["spans"].as_array().into_iter().flatten() {
                let text = s["spanID"].as_str().expect("every span has a spanID");
                let id = span_id(text).expect("a span id");
                if let Some(other) = names.insert(id, text.to_owned()) {
                    assert_eq!(other, text, "two span id texts hash to {id}");
                }
            }
            JaegerTrace {
                trace_id_text: trace["traceID"]
                    .as_str()
                    .or_else(|| trace["spans"][0]["traceID"].as_str())
                    .unwrap_or("")
                    .to_owned(),
                trace_id,
                spans: set.spans,
                arena: set.arena,
                names,
            }
        })
        .collect()
}

/// The one trace of a Jaeger JSON document.
pub fn load(doc: &Value) -> JaegerTrace {
    let mut all = load_all(doc);
    assert_eq!(all.len(), 1, "expected exactly one trace in the document");
    all.pop().expect("one trace")
}

/// A Jaeger JSON document (any accepted shape) as one OTLP/JSON export
/// request, as the OpenTelemetry Collector's Jaeger receiver would forward it:
/// a resource per process (its service name and tags), `span.kind` as the
/// span's kind, `error=true` as status ERROR, logs as events named by their
/// `event` field, CHILD_OF as the parent. Ids are left-padded to their OTLP
/// widths.
pub fn otlp_json(doc: &Value) -> Value {
    fn value(tag: &Value) -> Value {
        match tag["type"].as_str() {
            Some("int64") => serde_json::json!({"intValue": match &tag["value"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            }}),
            Some("float64") => serde_json::json!({"doubleValue": tag["value"]}),
            Some("bool") => serde_json::json!({"boolValue": tag["value"]}),
            _ => serde_json::json!({"stringValue": tag["value"].as_str().unwrap_or_default()}),
        }
    }
    fn attributes<'a>(tags: impl Iterator<Item = &'a Value>) -> Vec<Value> {
        tags.map(|t| serde_json::json!({"key": t["key"], "value": value(t)}))
            .collect()
    }
    fn pad(id: &str, width: usize) -> String {
        format!("{id:0>width$}")
    }
    let mut resource_spans = Vec::new();
    for trace in traces(doc) {
        let empty = serde_json::Map::new();
        let processes = trace["processes"].as_object().unwrap_or(&empty);
        for (pid, process) in processes {
            let spans: Vec<Value> = trace["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["processID"] == pid.as_str())
                .map(|s| {
                    let tags = s["tags"].as_array().map(Vec::as_slice).unwrap_or_default();
                    let tag = |key: &str| tags.iter().find(|t| t["key"] == key);
                    let kind = match tag("span.kind").and_then(|t| t["value"].as_str()) {
                        Some("server") => 2,
                        Some("client") => 3,
                        Some("producer") => 4,
                        Some("consumer") => 5,
                        _ => 1,
                    };
                    let error = tag("error").is_some_and(|t| t["value"] == true);
                    let start = s["startTime"].as_u64().expect("startTime") * 1_000;
                    let end = start + s["duration"].as_u64().expect("duration") * 1_000;
                    let parent = s["references"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["refType"] == "CHILD_OF")
                        .and_then(|r| r["spanID"].as_str())
                        .map(|id| pad(id, 16));
                    let events: Vec<Value> = s["logs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|l| {
                            let fields = l["fields"].as_array().map(Vec::as_slice).unwrap_or_default();
                            let name = fields
                                .iter()
                                .find(|f| f["key"] == "event")
                                .and_then(|f| f["value"].as_str())
                                .unwrap_or("log");
                            serde_json::json!({
                                "timeUnixNano": (l["timestamp"].as_u64().unwrap_or(0) * 1_000).to_string(),
                                "name": name,
                                "attributes": attributes(fields.iter().filter(|f| f["key"] != "event")),
                            })
                        })
                        .collect();
                    serde_json::json!({
                        "traceId": pad(s["traceID"].as_str().expect("traceID"), 32),
                        "spanId": pad(s["spanID"].as_str().expect("spanID"), 16),
                        "parentSpanId": parent.unwrap_or_default(),
                        "name": s["operationName"],
                        "kind": kind,
                        "startTimeUnixNano": start.to_string(),
                        "endTimeUnixNano": end.to_string(),
                        "attributes": attributes(tags.iter().filter(|t| t["key"] != "span.kind" && t["key"] != "error")),
                        "events": events,
                        "status": {"code": if error { 2 } else { 0 }},
                    })
                })
                .collect();
            let mut resource = vec![serde_json::json!({
                "key": "service.name",
                "value": {"stringValue": process["serviceName"]},
            })];
            resource.extend(attributes(process["tags"].as_array().into_iter().flatten()));
            resource_spans.push(serde_json::json!({
                "resource": {"attributes": resource},
                "scopeSpans": [{"scope": {"name": "jaeger"}, "spans": spans}],
            }));
        }
    }
    serde_json::json!({"resourceSpans": resource_spans})
}
