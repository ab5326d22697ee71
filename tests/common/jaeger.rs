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
