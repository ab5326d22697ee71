//! Zipkin v2 JSON → the span model, through the OTLP decoders' builder.
//!
//! Accepted documents: an array of spans (what `POST /api/v2/spans` takes and
//! Zipkin UI downloads) or an array of traces, each an array of spans (what
//! `GET /api/v2/traces` answers).
//!
//! Mapping: `timestamp`/`duration` are microseconds; `kind` CLIENT, SERVER,
//! PRODUCER, CONSUMER, none is INTERNAL; the service is
//! `localEndpoint.serviceName`, the instance its `ipv4` (or `ipv6`) and
//! `port`; `remoteEndpoint.serviceName` is `peer.service`; tags are string
//! attributes (`http.status_code` is read as the status code); an `error` tag
//! makes the status ERROR with its value as the message; annotations become
//! events. A span `"shared": true` is the server half of a span whose id the
//! client half also has: when the client half is in the document, the server
//! half gets an id of its own derived from it and becomes the client's child,
//! and the spans below it (its service's children of that id) hang under it.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::ids::{derived_span_id, span_id, trace_id};
use super::micros_to_ns;
use crate::ingest::build::{event, span_ids, Builder, Codes, Resource, SpanFields, Value};
use crate::model::{Event, SpanBatch, SpanId, Sym, TraceId};

/// A Zipkin v2 span.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanJson {
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default)]
    duration: Option<serde_json::Number>,
    #[serde(default)]
    local_endpoint: Option<Endpoint>,
    #[serde(default)]
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    tags: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    annotations: Option<Vec<Annotation>>,
    #[serde(default)]
    shared: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<u64>,
}

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    timestamp: Option<serde_json::Number>,
    #[serde(default)]
    value: Option<String>,
}

/// A Zipkin document: spans, or traces of spans.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Document {
    Traces(Vec<Vec<SpanJson>>),
    Spans(Vec<SpanJson>),
}

impl Document {
    /// All spans of the document.
    pub(super) fn spans(self) -> Vec<SpanJson> {
        match self {
            Document::Traces(traces) => traces.into_iter().flatten().collect(),
            Document::Spans(spans) => spans,
        }
    }
}

fn service(endpoint: Option<&Endpoint>) -> Option<&str> {
    endpoint
        .and_then(|e| e.service_name.as_deref())
        .filter(|s| !s.is_empty())
}

fn is_shared_server(s: &SpanJson) -> bool {
    s.shared == Some(true) && s.kind.as_deref() == Some("SERVER")
}

/// Where the server half of a shared span went: (trace, shared id, service).
type SharedServers = HashSet<(TraceId, SpanId, String)>;

/// Converts a document's spans into one batch (spans with malformed ids or
/// without a timestamp are refused and counted).
pub(super) fn convert(spans: Vec<SpanJson>) -> SpanBatch {
    let ids_of = |s: &SpanJson| {
        Some((
            trace_id(s.trace_id.as_deref()?).ok()?,
            span_id(s.id.as_deref()?).ok()?,
        ))
    };
    // Ids of client halves: a shared server half with one of these is split off.
    let clients: HashSet<(TraceId, SpanId)> = spans
        .iter()
        .filter(|s| !is_shared_server(s))
        .filter_map(ids_of)
        .collect();
    let split: SharedServers = spans
        .iter()
        .filter(|s| is_shared_server(s))
        .filter_map(|s| {
            let (t, id) = ids_of(s)?;
            clients.contains(&(t, id)).then(|| {
                let service = service(s.local_endpoint.as_ref()).unwrap_or_default();
                (t, id, service.to_owned())
            })
        })
        .collect();
    let mut b = Builder::default();
    for (n, s) in spans.iter().enumerate() {
        span(&mut b, s, &split, n);
    }
    b.finish()
}

fn span(b: &mut Builder, s: &SpanJson, split: &SharedServers, n: usize) {
    let local = service(s.local_endpoint.as_ref());
    let instance = s.local_endpoint.as_ref().and_then(|e| {
        let ip = e.ipv4.as_deref().or(e.ipv6.as_deref())?;
        Some(match e.port {
            Some(port) => Sym::from_utf8_lossy(format!("{ip}:{port}").as_bytes()),
            None => Sym::from_utf8_lossy(ip.as_bytes()),
        })
    });
    let resource = Resource {
        service: Sym::from_utf8_lossy(local.unwrap_or("unknown_service").as_bytes()),
        instance,
        attrs: None,
    };
    b.begin_span(resource);
    let Some(start_ns) = micros_to_ns(s.timestamp.as_ref()) else {
        b.reject(format_args!("span[{n}]"), "no timestamp (microseconds)");
        return;
    };
    let duration_ns = micros_to_ns(s.duration.as_ref()).unwrap_or(0);
    let ids = span_ids(
        trace_id(s.trace_id.as_deref().unwrap_or_default()),
        span_id(s.id.as_deref().unwrap_or_default()),
        s.parent_id
            .as_deref()
            .filter(|p| !p.is_empty() && p.bytes().any(|c| c != b'0'))
            .map(span_id),
    );
    let (trace, id, mut parent) = match ids {
        Ok(ids) => ids,
        Err(why) => {
            b.reject(format_args!("span[{n}]"), &why);
            return;
        }
    };
    let service_text = local.unwrap_or_default().to_owned();
    let mut id = id;
    if is_shared_server(s) && split.contains(&(trace, id, service_text.clone())) {
        // The server half: a child of its client half, with an id of its own.
        parent = Some(id);
        id = derived_span_id(id, "server");
    } else if let Some(p) = parent {
        // A child of a split shared span, in the server's service: under the server half.
        if split.contains(&(trace, p, service_text)) {
            parent = Some(derived_span_id(p, "server"));
        }
    }
    let mut fields = SpanFields {
        name: s.name.as_deref().unwrap_or_default().as_bytes(),
        kind: match s.kind.as_deref() {
            Some("SERVER") => 2,
            Some("CLIENT") => 3,
            Some("PRODUCER") => 4,
            Some("CONSUMER") => 5,
            _ => 1,
        },
        start_ns,
        end_ns: start_ns.saturating_add(duration_ns),
        codes: Codes::default(),
        ..SpanFields::default()
    };
    if let Some(peer) = service(s.remote_endpoint.as_ref()) {
        b.attribute(b"peer.service", Value::Str(peer.as_bytes()), None);
    }
    let mut message = String::new();
    for (key, value) in s.tags.iter().flatten() {
        let text = match value {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        if key == "error" {
            fields.status = 2;
            message = text;
            continue;
        }
        b.attribute(
            key.as_bytes(),
            Value::Str(text.as_bytes()),
            Some(&mut fields.codes),
        );
    }
    fields.status_message = message.as_bytes();
    let attrs = b.attrs_since(0);
    let events: Vec<Event> = s
        .annotations
        .iter()
        .flatten()
        .map(|a| {
            let mark = b.mark();
            let time_ns = micros_to_ns(a.timestamp.as_ref()).unwrap_or(start_ns);
            event(
                b,
                mark,
                time_ns,
                a.value.as_deref().unwrap_or_default().as_bytes(),
            )
        })
        .collect();
    b.accept(
        (trace, id, parent),
        resource,
        fields,
        attrs,
        events,
        Vec::new(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SpanKind, StatusCode};

    fn spans(doc: &str) -> Vec<SpanJson> {
        serde_json::from_str::<Document>(doc).unwrap().spans()
    }

    #[test]
    fn a_shared_server_half_becomes_the_client_halfs_child_with_its_own_children() {
        let doc = r#"[
            {"traceId": "a", "id": "1", "kind": "SERVER", "name": "get", "timestamp": 100, "duration": 50,
             "localEndpoint": {"serviceName": "front"}},
            {"traceId": "a", "id": "2", "parentId": "1", "kind": "CLIENT", "name": "post", "timestamp": 110,
             "duration": 30, "localEndpoint": {"serviceName": "front"},
             "remoteEndpoint": {"serviceName": "back"}, "tags": {"http.status_code": "500", "error": "boom"}},
            {"traceId": "a", "id": "2", "parentId": "1", "kind": "SERVER", "shared": true, "name": "post",
             "timestamp": 112, "duration": 26, "localEndpoint": {"serviceName": "back", "ipv4": "10.0.0.2", "port": 80}},
            {"traceId": "a", "id": "3", "parentId": "2", "name": "query", "timestamp": 115, "duration": 5,
             "localEndpoint": {"serviceName": "back"}, "annotations": [{"timestamp": 116, "value": "wr"}]}
        ]"#;
        let batch = convert(spans(doc));
        assert_eq!((batch.accepted, batch.rejected), (4, 0));
        let set = &batch.traces[0].1;
        let id = |n: &str| span_id(n).unwrap();
        let client = &set.spans[1];
        let server = &set.spans[2];
        let query = &set.spans[3];
        assert_eq!((client.span_id, client.kind), (id("2"), SpanKind::Client));
        assert_eq!(client.status, StatusCode::Error);
        assert_eq!(client.status_message(), Some("boom"));
        assert_eq!(client.http_status.map(|c| c.get()), Some(500));
        assert_eq!(server.kind, SpanKind::Server);
        assert_eq!(server.parent_id, Some(id("2")));
        assert_ne!(server.span_id, id("2"));
        assert_eq!(query.parent_id, Some(server.span_id));
        assert_eq!(query.kind, SpanKind::Internal);
        assert_eq!(query.events()[0].name.as_str(), "wr");
    }

    #[test]
    fn a_shared_span_without_its_client_half_keeps_its_id_and_traces_of_spans_are_read() {
        let doc = r#"[[{"traceId": "a", "id": "2", "parentId": "1", "kind": "SERVER", "shared": true,
                        "timestamp": 112, "duration": 26, "localEndpoint": {"serviceName": "back"}}],
                      [{"traceId": "b", "id": "5"}]]"#;
        let batch = convert(spans(doc));
        assert_eq!(
            (batch.accepted, batch.rejected),
            (1, 1),
            "no timestamp: refused"
        );
        let s = &batch.traces[0].1.spans[0];
        assert_eq!(s.span_id, span_id("2").unwrap());
        assert_eq!(s.parent_id, Some(span_id("1").unwrap()));
    }
}
