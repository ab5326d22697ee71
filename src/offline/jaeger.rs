//! Jaeger query-API JSON → the span model, through the OTLP decoders' builder.
//!
//! Accepted documents: the query API's envelope `{"data": [trace, ...]}` (what
//! Jaeger UI's "Download JSON" and `/api/traces` give), a bare trace
//! `{"traceID", "spans", "processes"}`, an array of traces, and Jaeger UI's
//! test wrapper `{"trace": trace}`.
//!
//! Mapping (as the OpenTelemetry Collector's Jaeger translator does, where it
//! matters to the analysis): `startTime`/`duration` are microseconds; the
//! parent is the first `CHILD_OF` or `FOLLOWS_FROM` reference (else a legacy
//! `parentSpanID`), other references become links; the service is
//! `processes[processID].serviceName` (or an inline `process`), the instance
//! the process's `service.instance.id`, `client-uuid` or `hostname` tag; the
//! kind comes from the `span.kind` tag; `error=true` or `otel.status_code` set
//! the status, whose message is `otel.status_description` or else the `error`
//! (or `message`) field of the span's first log that has one (so "redis
//! timeout" reads as a timeout); logs become events named by their `event`
//! field. Other tags are attributes with their types.

use std::collections::HashMap;

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::ids::{span_id, trace_id};
use super::micros_to_ns;
use crate::ingest::build::{
    event, link, span_ids, Builder, Codes, Resource, ResourceAttrs, SpanFields, Value,
};
use crate::model::{Event, Link, SpanBatch, Sym};

/// Converts every trace of a Jaeger JSON document of any accepted shape,
/// handing each to `each` as a batch as soon as it is parsed (spans with
/// malformed ids or times are refused and counted, as OTLP's partial success
/// does). A `data` array is converted trace by trace: only one trace's parsed
/// JSON is held at a time.
pub fn read(doc: &[u8], each: &mut dyn FnMut(SpanBatch)) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    Traces { each, index: 0 }.deserialize(&mut de)?;
    de.end()
}

/// Streams the traces of a document (or of its `data` array) to `each`.
struct Traces<'a> {
    each: &'a mut dyn FnMut(SpanBatch),
    index: usize,
}

impl Traces<'_> {
    fn trace(&mut self, trace: TraceJson) {
        (self.each)(convert(trace, self.index));
        self.index += 1;
    }
}

impl<'de> DeserializeSeed<'de> for Traces<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Traces<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Jaeger trace, an array of traces or {\"data\": [trace...]}")
    }

    /// An array of traces (a document, or its `data`).
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(trace) = seq.next_element::<TraceJson>()? {
            self.trace(trace);
        }
        Ok(())
    }

    /// `data: null`.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    /// The envelope (`data`), Jaeger UI's test wrapper (`trace`) or a bare trace.
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut bare = TraceJson::default();
        let mut wrapped = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => {
                    map.next_value_seed(Traces {
                        each: &mut *self.each,
                        index: self.index,
                    })?;
                    wrapped = true;
                }
                "trace" => {
                    let trace: TraceJson = map.next_value()?;
                    self.trace(trace);
                    wrapped = true;
                }
                "traceID" => bare.trace_id = map.next_value()?,
                "spans" => bare.spans = map.next_value()?,
                "processes" => bare.processes = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !wrapped {
            self.trace(bare);
        }
        Ok(())
    }
}

/// One trace as the query API writes it.
#[derive(Deserialize, Default)]
struct TraceJson {
    #[serde(rename = "traceID", default)]
    trace_id: Option<String>,
    #[serde(default)]
    spans: Option<Vec<SpanJson>>,
    #[serde(default)]
    processes: Option<HashMap<String, ProcessJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpanJson {
    #[serde(rename = "traceID", default)]
    trace_id: Option<String>,
    #[serde(rename = "spanID", default)]
    span_id: Option<String>,
    #[serde(rename = "parentSpanID", default)]
    parent_span_id: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    references: Option<Vec<ReferenceJson>>,
    #[serde(default)]
    start_time: Option<serde_json::Number>,
    #[serde(default)]
    duration: Option<serde_json::Number>,
    #[serde(default)]
    tags: Option<Vec<TagJson>>,
    #[serde(default)]
    logs: Option<Vec<LogJson>>,
    #[serde(rename = "processID", default)]
    process_id: Option<String>,
    #[serde(default)]
    process: Option<ProcessJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferenceJson {
    #[serde(default)]
    ref_type: Option<String>,
    #[serde(rename = "traceID", default)]
    trace_id: Option<String>,
    #[serde(rename = "spanID", default)]
    span_id: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct ProcessJson {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    tags: Option<Vec<TagJson>>,
}

#[derive(Deserialize, Clone)]
struct TagJson {
    #[serde(default)]
    key: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Deserialize)]
struct LogJson {
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default)]
    fields: Option<Vec<TagJson>>,
}

impl TagJson {
    fn text(&self) -> Option<&str> {
        self.value.as_str()
    }

    fn is_true(&self) -> bool {
        self.value.as_bool() == Some(true) || self.text() == Some("true")
    }

    /// The value with the type the tag declares (numbers may come as strings).
    fn value(&self) -> Value<'_> {
        let v = &self.value;
        match (self.kind.as_deref(), v) {
            (Some("bool"), _) if v.is_boolean() || v.is_string() => Value::Bool(self.is_true()),
            (Some("int64"), _) => match v.as_i64().or_else(|| v.as_str()?.parse().ok()) {
                Some(i) => Value::Int(i),
                None => plain(v),
            },
            (Some("float64"), _) => match v.as_f64().or_else(|| v.as_str()?.parse().ok()) {
                Some(d) => Value::Double(d),
                None => plain(v),
            },
            _ => plain(v),
        }
    }
}

/// A value by its JSON type.
fn plain(v: &serde_json::Value) -> Value<'_> {
    match v {
        serde_json::Value::String(s) => Value::Str(s.as_bytes()),
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Double(n.as_f64().unwrap_or_default()),
        },
        other => Value::Json(other.clone()),
    }
}

/// Process tags naming the instance, in order of preference.
const INSTANCE_TAGS: [&str; 3] = ["service.instance.id", "client-uuid", "hostname"];

/// The process as a resource: its service, its tags as resource attributes
/// (kept for the Jaeger API's process tags), and the instance from the first
/// of [`INSTANCE_TAGS`] it has.
fn resource(process: Option<&ProcessJson>) -> Resource {
    let service = process
        .and_then(|p| p.service_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown_service");
    let tags = process.and_then(|p| p.tags.as_deref()).unwrap_or_default();
    let mut attrs = ResourceAttrs::default();
    attrs.attribute(b"service.name", Value::Str(service.as_bytes()));
    for t in tags {
        attrs.attribute(t.key.as_bytes(), plain(&t.value));
    }
    let mut resource = attrs.finish();
    if resource.instance.is_none() {
        resource.instance = INSTANCE_TAGS.iter().find_map(|key| {
            tags.iter().find(|t| t.key == *key).map(|t| {
                let text = t.text().map_or_else(|| t.value.to_string(), str::to_owned);
                Sym::from_utf8_lossy(text.as_bytes())
            })
        });
    }
    resource
}

/// OTLP's `SpanKind` number of a `span.kind` tag.
fn kind(text: &str) -> u64 {
    match text.to_ascii_lowercase().as_str() {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0,
    }
}

/// Converts one trace (the `index`th of its document) into a batch.
fn convert(trace: TraceJson, index: usize) -> SpanBatch {
    let mut b = Builder::default();
    let processes = trace.processes.unwrap_or_default();
    let trace_id = trace.trace_id.unwrap_or_default();
    for (n, s) in trace.spans.into_iter().flatten().enumerate() {
        span(&mut b, s, &processes, &trace_id, (index, n));
    }
    b.finish()
}

fn span(
    b: &mut Builder,
    s: SpanJson,
    processes: &HashMap<String, ProcessJson>,
    trace_id_text: &str,
    (index, n): (usize, usize),
) {
    let process = s
        .process_id
        .as_ref()
        .and_then(|p| processes.get(p))
        .or(s.process.as_ref());
    let resource = resource(process);
    b.begin_span(resource);
    let (Some(start_ns), Some(duration_ns)) = (
        micros_to_ns(s.start_time.as_ref()),
        micros_to_ns(s.duration.as_ref()),
    ) else {
        b.reject(
            format_args!("data[{index}].spans[{n}]"),
            "no startTime or duration (microseconds)",
        );
        return;
    };
    let refs = s.references.unwrap_or_default();
    let parent_ref = refs
        .iter()
        .position(|r| matches!(r.ref_type.as_deref(), Some("CHILD_OF" | "FOLLOWS_FROM")));
    let parent = parent_ref
        .and_then(|i| refs[i].span_id.as_deref())
        .or(s.parent_span_id.as_deref())
        .filter(|p| !p.is_empty() && p.bytes().any(|c| c != b'0'));
    let trace_text = s
        .trace_id
        .as_deref()
        .or_else(|| parent_ref.and_then(|i| refs[i].trace_id.as_deref()))
        .filter(|t| !t.is_empty())
        .unwrap_or(trace_id_text);
    let ids = span_ids(
        trace_id(trace_text),
        span_id(s.span_id.as_deref().unwrap_or_default()),
        parent.map(span_id),
    );
    let ids = match ids {
        Ok(ids) => ids,
        Err(why) => {
            b.reject(format_args!("data[{index}].spans[{n}]"), &why);
            return;
        }
    };
    let mut fields = SpanFields {
        name: s.operation_name.as_deref().unwrap_or_default().as_bytes(),
        start_ns,
        end_ns: start_ns.saturating_add(duration_ns),
        codes: Codes::default(),
        ..SpanFields::default()
    };
    let logs = s.logs.unwrap_or_default();
    let mut message: Option<String> = None;
    for tag in s.tags.iter().flatten() {
        match tag.key.as_str() {
            "span.kind" => fields.kind = tag.text().map_or(0, kind),
            "error" => {
                if tag.is_true() {
                    fields.status = 2;
                }
            }
            "otel.status_code" => match tag.text() {
                Some("ERROR") => fields.status = 2,
                Some("OK") => fields.status = 1,
                _ => {}
            },
            "otel.status_description" => message = tag.text().map(str::to_owned),
            key => b.attribute(key.as_bytes(), tag.value(), Some(&mut fields.codes)),
        }
    }
    if fields.status == 2 && message.is_none() {
        message = logs.iter().find_map(|l| {
            l.fields.iter().flatten().find_map(|f| {
                matches!(f.key.as_str(), "error" | "error.object" | "message")
                    .then(|| f.text().map(str::to_owned))
                    .flatten()
            })
        });
    }
    let message = message.unwrap_or_default();
    fields.status_message = message.as_bytes();
    let attrs = b.attrs_since(0);
    let mut events: Vec<Event> = Vec::with_capacity(logs.len());
    for log in &logs {
        let mark = b.mark();
        let mut name = "log";
        for f in log.fields.iter().flatten() {
            match (f.key.as_str(), f.text()) {
                ("event", Some(text)) => name = text,
                _ => b.attribute(f.key.as_bytes(), f.value(), None),
            }
        }
        let time_ns = micros_to_ns(log.timestamp.as_ref()).unwrap_or(start_ns);
        events.push(event(b, mark, time_ns, name.as_bytes()));
    }
    let mut links: Vec<Link> = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        if Some(i) == parent_ref {
            continue;
        }
        let mark = b.mark();
        links.extend(link(
            b,
            mark,
            trace_id(r.trace_id.as_deref().unwrap_or(trace_text)),
            span_id(r.span_id.as_deref().unwrap_or_default()),
        ));
    }
    b.accept(ids, resource, fields, attrs, events, links);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{timeout, TimeoutCause};
    use crate::model::{AttrValue, Semantics, SpanKind, StatusCode};

    #[test]
    fn tags_logs_references_and_the_process_map_onto_the_span_model() {
        let doc = br#"{"data": [{"traceID": "abc", "spans": [
            {"spanID": "1", "operationName": "GetDriver", "startTime": 10, "duration": 5,
             "processID": "p1",
             "references": [{"refType": "CHILD_OF", "spanID": "2"},
                            {"refType": "FOLLOWS_FROM", "traceID": "def", "spanID": "3"}],
             "tags": [{"key": "span.kind", "type": "string", "value": "client"},
                      {"key": "error", "type": "bool", "value": true},
                      {"key": "http.status_code", "type": "int64", "value": "503"},
                      {"key": "retry", "type": "float64", "value": 1.5}],
             "logs": [{"timestamp": 12, "fields": [
                 {"key": "event", "type": "string", "value": "redis timeout"},
                 {"key": "error", "type": "string", "value": "redis timeout"}]}]},
            {"spanID": "4", "startTime": 1}
        ]}], "processes": null}"#;
        let mut batches = Vec::new();
        read(doc, &mut |b| batches.push(b)).unwrap();
        let [batch] = &batches[..] else {
            panic!("one trace: {}", batches.len())
        };
        // The span without a duration is refused, with where it was.
        assert_eq!((batch.accepted, batch.rejected), (1, 1));
        assert!(
            batch.errors[0].starts_with("data[0].spans[1]"),
            "{:?}",
            batch.errors
        );
        let (trace_id, set) = &batch.traces[0];
        assert_eq!(trace_id.to_string(), "00000000000000000000000000000abc");
        let s = &set.spans[0];
        assert_eq!(s.span_id.to_string(), "0000000000000001");
        assert_eq!(
            s.parent_id.map(|p| p.to_string()).as_deref(),
            Some("0000000000000002")
        );
        assert_eq!((s.start_ns, s.end_ns), (10_000, 15_000));
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!(s.status, StatusCode::Error);
        assert_eq!(s.http_status.map(|c| c.get()), Some(503));
        assert_eq!(s.service.as_str(), "unknown_service");
        // The error log's text is the status message: a timeout to the one classifier.
        assert_eq!(
            timeout(s, &set.arena),
            Some(TimeoutCause::StatusMessage("redis timeout".into()))
        );
        assert_eq!(s.events()[0].name.as_str(), "redis timeout");
        assert_eq!(s.events()[0].time_ns, 12_000);
        assert_eq!(s.links()[0].span_id.to_string(), "0000000000000003");
        let attrs: Vec<(&str, AttrValue)> = set
            .arena
            .iter(s.attrs)
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        assert_eq!(
            attrs,
            [
                ("http.status_code", AttrValue::Int(503)),
                ("retry", AttrValue::Double(1.5))
            ]
        );
    }

    #[test]
    fn the_service_and_instance_come_from_the_process() {
        let doc = br#"{"traceID": "1", "processes": {"p1": {"serviceName": "mysql", "tags": [
            {"key": "hostname", "type": "string", "value": "host-a"},
            {"key": "client-uuid", "type": "string", "value": "264deb062c77e666"}]}},
          "spans": [{"spanID": "1", "startTime": 1, "duration": 2, "processID": "p1"}]}"#;
        let mut batches = Vec::new();
        read(doc, &mut |b| batches.push(b)).unwrap();
        let set = &batches[0].traces[0].1;
        let s = &set.spans[0];
        assert_eq!(s.service.as_str(), "mysql");
        let instance = Semantics::of(s, &set.arena).instance.map(|i| i.as_str());
        assert_eq!(instance, Some("264deb062c77e666"));
    }
}
