//! An analyzed trace as OTLP `ResourceSpans`, with the analysis added to each
//! span as attributes ([`CRITICAL_MS`], [`SELF_MS`], [`ON_CRITICAL_PATH`],
//! [`FINDINGS`]).
//!
//! Spans are grouped by the resource they came from: its service, its
//! `service.instance.id` and its other attributes (ingest keeps those as one
//! JSON text under [`RESOURCE_ATTRS`] on each span; here they become the
//! resource's again and that internal key is left out). The model does not
//! keep the instrumentation scope, so every span goes out under one scope
//! named `hopscope`. Arrays, maps and bytes, which ingest keeps as JSON text,
//! go out as OTLP arrays and maps again (bytes as their hex string).

use rustc_hash::FxHashMap;

use crate::analyze::AnalyzedTrace;
use crate::ingest::otlp::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use crate::ingest::otlp::resource::v1::Resource;
use crate::ingest::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use crate::model::{AttrArena, AttrRange, AttrValue, SpanId, SpanKind, StatusCode, Sym};
use crate::model::{Trace, RESOURCE_ATTRS};

/// The span's time on the critical path, in milliseconds (double).
pub const CRITICAL_MS: &str = "hopscope.critical_ms";
/// The span's own time (not covered by a child), in milliseconds (double).
pub const SELF_MS: &str = "hopscope.self_ms";
/// Whether any of the span's time is on the critical path (bool).
pub const ON_CRITICAL_PATH: &str = "hopscope.on_critical_path";
/// The kinds of the trace's findings whose evidence names the span (string
/// array; absent when none).
pub const FINDINGS: &str = "hopscope.findings";
/// The one instrumentation scope forwarded spans go out under.
pub const SCOPE: &str = "hopscope";

const SERVICE_NAME: &str = "service.name";
const SERVICE_INSTANCE: &str = "service.instance.id";

/// What the spans of one resource share.
type ResourceKey = (Sym, Option<Sym>, Option<Sym>);

/// `trace` as OTLP, one `ResourceSpans` per resource. `extra` is called once
/// per span (its index in the trace) with the span's attributes, to add more.
pub fn encode(
    trace: &AnalyzedTrace,
    extra: &mut dyn FnMut(u32, &mut Vec<KeyValue>),
) -> Vec<ResourceSpans> {
    let t = &trace.trace;
    let findings = findings_by_span(trace);
    let instance_key = Sym::new(SERVICE_INSTANCE);
    let mut groups: Vec<(ResourceKey, Vec<Span>)> = Vec::new();
    let mut index: FxHashMap<ResourceKey, usize> = FxHashMap::default();
    for i in 0..t.len() as u32 {
        let s = t.span(i);
        let key = (
            s.service,
            t.arena.get_sym(s.attrs, instance_key),
            t.arena.get_sym(s.attrs, *RESOURCE_ATTRS),
        );
        let mut attributes = attributes(&t.arena, s.attrs, &[instance_key]);
        added(trace, i, findings.get(&s.span_id), &mut attributes);
        extra(i, &mut attributes);
        let next = groups.len();
        let at = *index.entry(key).or_insert(next);
        if at == next {
            groups.push((key, Vec::new()));
        }
        groups[at].1.push(otlp_span(t, i, attributes));
    }
    groups
        .into_iter()
        .map(|(key, spans)| ResourceSpans {
            resource: Some(resource(key)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect()
}

/// Per span id, the kinds of the trace's findings that name it.
fn findings_by_span(trace: &AnalyzedTrace) -> FxHashMap<SpanId, Vec<&'static str>> {
    let mut out: FxHashMap<SpanId, Vec<&'static str>> = FxHashMap::default();
    for o in &trace.observations {
        for span in &o.spans {
            let kinds = out.entry(*span).or_default();
            if !kinds.contains(&o.kind.as_str()) {
                kinds.push(o.kind.as_str());
            }
        }
    }
    out
}

/// The analysis' attributes of span `i`.
fn added(
    trace: &AnalyzedTrace,
    i: u32,
    findings: Option<&Vec<&'static str>>,
    out: &mut Vec<KeyValue>,
) {
    let critical_ns = trace.path.critical_ns.get(i as usize).copied().unwrap_or(0);
    let self_ns = trace.path.self_ns.get(i as usize).copied().unwrap_or(0);
    out.push(kv(
        CRITICAL_MS,
        any_value::Value::DoubleValue(critical_ns as f64 / 1e6),
    ));
    out.push(kv(
        SELF_MS,
        any_value::Value::DoubleValue(self_ns as f64 / 1e6),
    ));
    out.push(kv(
        ON_CRITICAL_PATH,
        any_value::Value::BoolValue(critical_ns > 0),
    ));
    if let Some(kinds) = findings {
        let values = kinds
            .iter()
            .map(|k| any(any_value::Value::StringValue((*k).to_owned())))
            .collect();
        out.push(kv(
            FINDINGS,
            any_value::Value::ArrayValue(ArrayValue { values }),
        ));
    }
}

/// Span `i` of `t` with `attributes`.
fn otlp_span(t: &Trace, i: u32, attributes: Vec<KeyValue>) -> Span {
    let s = t.span(i);
    let kind = match s.kind {
        SpanKind::Unspecified => span::SpanKind::Unspecified,
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    };
    let code = match s.status {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    };
    Span {
        trace_id: t.trace_id.as_bytes().to_vec().into(),
        span_id: s.span_id.to_bytes().to_vec().into(),
        parent_span_id: s
            .parent_id
            .map_or_else(Vec::new, |p| p.to_bytes().to_vec())
            .into(),
        name: s.operation.as_str().to_owned(),
        kind: kind as i32,
        start_time_unix_nano: s.start_ns,
        end_time_unix_nano: s.end_ns,
        attributes,
        events: s
            .events()
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_ns,
                name: e.name.as_str().to_owned(),
                attributes: attributes_of(&t.arena, e.attrs),
                ..Default::default()
            })
            .collect(),
        links: s
            .links()
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.as_bytes().to_vec().into(),
                span_id: l.span_id.to_bytes().to_vec().into(),
                attributes: attributes_of(&t.arena, l.attrs),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            message: s.status_message().unwrap_or_default().to_owned(),
            code,
        }),
        ..Default::default()
    }
}

/// The resource of `key`: its service, instance and other attributes.
fn resource((service, instance, others): ResourceKey) -> Resource {
    let mut attributes = vec![kv(
        SERVICE_NAME,
        any_value::Value::StringValue(service.as_str().to_owned()),
    )];
    if let Some(instance) = instance {
        attributes.push(kv(
            SERVICE_INSTANCE,
            any_value::Value::StringValue(instance.as_str().to_owned()),
        ));
    }
    if let Some(text) = others {
        // Ingest wrote it; anything else is left out rather than guessed at.
        let pairs: Vec<(String, serde_json::Value)> =
            serde_json::from_str(text.as_str()).unwrap_or_default();
        attributes.extend(
            pairs
                .into_iter()
                .map(|(key, value)| key_value(key, json_any(value))),
        );
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The attributes of an event or a link.
fn attributes_of(arena: &AttrArena, range: AttrRange) -> Vec<KeyValue> {
    attributes(arena, range, &[])
}

/// The attributes in `range` but the internal [`RESOURCE_ATTRS`] and those
/// of `skip` (moved to the resource).
fn attributes(arena: &AttrArena, range: AttrRange, skip: &[Sym]) -> Vec<KeyValue> {
    arena
        .iter(range)
        .filter(|(k, _)| *k != *RESOURCE_ATTRS && !skip.contains(k))
        .map(|(k, v)| key_value(k.as_str().to_owned(), value(v)))
        .collect()
}

/// A model attribute value as OTLP.
fn value(v: AttrValue<'_>) -> AnyValue {
    match v {
        AttrValue::Str(s) => any(any_value::Value::StringValue(s.to_owned())),
        AttrValue::Int(i) => any(any_value::Value::IntValue(i)),
        AttrValue::Double(d) => any(any_value::Value::DoubleValue(d)),
        AttrValue::Bool(b) => any(any_value::Value::BoolValue(b)),
        AttrValue::Json(text) => match serde_json::from_str(text) {
            Ok(json) => json_any(json),
            Err(_) => any(any_value::Value::StringValue(text.to_owned())),
        },
    }
}

/// A JSON value (as ingest renders arrays, maps, bytes and resource
/// attributes) as OTLP: integers stay integers, `null` is an empty value.
/// Nesting is bounded by ingest's `MAX_VALUE_DEPTH`.
fn json_any(json: serde_json::Value) -> AnyValue {
    use serde_json::Value as J;
    AnyValue {
        value: match json {
            J::Null => None,
            J::Bool(b) => Some(any_value::Value::BoolValue(b)),
            J::Number(n) => Some(match n.as_i64() {
                Some(i) => any_value::Value::IntValue(i),
                None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
            }),
            J::String(s) => Some(any_value::Value::StringValue(s)),
            J::Array(items) => Some(any_value::Value::ArrayValue(ArrayValue {
                values: items.into_iter().map(json_any).collect(),
            })),
            J::Object(map) => Some(any_value::Value::KvlistValue(KeyValueList {
                values: map
                    .into_iter()
                    .map(|(key, v)| key_value(key, json_any(v)))
                    .collect(),
            })),
        },
    }
}

fn any(value: any_value::Value) -> AnyValue {
    AnyValue { value: Some(value) }
}

pub(super) fn kv(key: &str, value: any_value::Value) -> KeyValue {
    key_value(key.to_owned(), any(value))
}

fn key_value(key: String, value: AnyValue) -> KeyValue {
    KeyValue {
        key,
        value: Some(value),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::ingest::decode_export;
    use crate::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::model::SpanSet;
    use prost::Message;

    /// Decodes `request` as ingest does and analyzes its one trace.
    fn analyzed(request: &ExportTraceServiceRequest) -> AnalyzedTrace {
        let batch = decode_export(&request.encode_to_vec()).expect("decodes");
        let (id, spans): (_, SpanSet) = batch.traces.into_iter().next().expect("a trace");
        analyze(crate::assemble::assemble(id, spans).expect("assembles"))
    }

    fn request() -> ExportTraceServiceRequest {
        let attr = kv;
        let span = |id: u8, parent: Option<u8>, name: &str, (start, end): (u64, u64)| Span {
            trace_id: vec![7; 16].into(),
            span_id: vec![id; 8].into(),
            parent_span_id: parent.map_or_else(Vec::new, |p| vec![p; 8]).into(),
            name: name.to_owned(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        };
        let mut root = span(1, None, "GET /", (1_000_000_000, 1_100_000_000));
        root.attributes = vec![
            attr("http.route", any_value::Value::StringValue("/".into())),
            attr("retries", any_value::Value::IntValue(3)),
            attr(
                "tags",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        any(any_value::Value::StringValue("a".into())),
                        any(any_value::Value::IntValue(2)),
                    ],
                }),
            ),
        ];
        root.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        let child = span(2, Some(1), "work", (1_010_000_000, 1_060_000_000));
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        attr(SERVICE_NAME, any_value::Value::StringValue("shop".into())),
                        attr(
                            SERVICE_INSTANCE,
                            any_value::Value::StringValue("shop-1".into()),
                        ),
                        attr("host.name", any_value::Value::StringValue("h1".into())),
                        attr("pid", any_value::Value::IntValue(42)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![root, child],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn find<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_trace_goes_out_as_it_came_in_with_its_analysis_added() {
        let sent = request();
        let trace = analyzed(&sent);
        let mut called = Vec::new();
        let out = encode(&trace, &mut |i, attrs| {
            called.push(i);
            attrs.push(kv("extra", any_value::Value::BoolValue(true)));
        });
        assert_eq!(called, [0, 1]);
        assert_eq!(out.len(), 1, "one resource");
        let resource = &out[0].resource.as_ref().unwrap().attributes;
        let sent_resource = &sent.resource_spans[0].resource.as_ref().unwrap().attributes;
        for key in [SERVICE_NAME, SERVICE_INSTANCE, "host.name", "pid"] {
            assert_eq!(find(resource, key), find(sent_resource, key), "{key}");
        }
        let scope = out[0].scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(scope.name, SCOPE);
        let spans = &out[0].scope_spans[0].spans;
        let root = spans.iter().find(|s| s.name == "GET /").unwrap();
        let sent_root = &sent.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            (&root.trace_id, &root.span_id, &root.parent_span_id),
            (
                &sent_root.trace_id,
                &sent_root.span_id,
                &sent_root.parent_span_id
            )
        );
        assert_eq!(root.status, sent_root.status);
        assert_eq!(root.kind, sent_root.kind);
        for key in ["http.route", "retries", "tags"] {
            assert_eq!(
                find(&root.attributes, key),
                find(&sent_root.attributes, key),
                "{key}"
            );
        }
        assert!(find(&root.attributes, RESOURCE_ATTRS.as_str()).is_none());
        assert!(find(&root.attributes, SERVICE_INSTANCE).is_none());
        // The root's own 50 ms before and after its child: the child's 50
        // ms are the child's.
        assert_eq!(
            find(&root.attributes, CRITICAL_MS),
            Some(&any_value::Value::DoubleValue(50.0))
        );
        assert_eq!(
            find(&root.attributes, SELF_MS),
            Some(&any_value::Value::DoubleValue(50.0))
        );
        assert_eq!(
            find(&root.attributes, ON_CRITICAL_PATH),
            Some(&any_value::Value::BoolValue(true))
        );
        assert!(find(&root.attributes, FINDINGS).is_none());
        assert_eq!(
            find(&root.attributes, "extra"),
            Some(&any_value::Value::BoolValue(true))
        );
    }
}
