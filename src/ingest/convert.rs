//! OTLP protobuf → the internal span model. The only place prost types meet
//! [`crate::model`].

use std::num::NonZeroU16;

use super::otlp::common::v1::{any_value, AnyValue, KeyValue};
use super::otlp::trace::v1::{span, ResourceSpans, Span as OtlpSpan};
use crate::model::{
    AttrsBuilder, Event, Link, Semantics, Span, SpanBatch, SpanId, SpanKind, StatusCode, Sym,
    TraceId,
};

/// How many refusal reasons a partial-success message quotes.
const MAX_REASONS: usize = 3;

/// Converts the resource spans of one export request. Spans with a malformed trace,
/// span or parent id are refused and counted; the rest are accepted.
pub fn convert(resource_spans: Vec<ResourceSpans>) -> SpanBatch {
    let mut batch = SpanBatch::default();
    let mut attrs = AttrsBuilder::default();
    for (r, rs) in resource_spans.into_iter().enumerate() {
        let mut service = None;
        let mut instance = None;
        for kv in rs.resource.iter().flat_map(|res| &res.attributes) {
            if let Some(any_value::Value::StringValue(s)) =
                kv.value.as_ref().and_then(|v| v.value.as_ref())
            {
                match kv.key.as_str() {
                    "service.name" => service = Some(Sym::new(s)),
                    "service.instance.id" => instance = Some(Sym::new(s)),
                    _ => {}
                }
            }
        }
        // The SDK specification's fallback when a resource names no service.
        let service = service.unwrap_or_else(|| Sym::new("unknown_service"));
        for scope in rs.scope_spans {
            for (s, span) in scope.spans.into_iter().enumerate() {
                match convert_span(span, service, instance, &mut attrs) {
                    Ok((trace_id, span)) => {
                        batch.accepted += 1;
                        match batch.traces.last_mut() {
                            Some((last, spans)) if *last == trace_id => spans.push(span),
                            _ => batch.traces.push((trace_id, vec![span])),
                        }
                    }
                    Err(why) => {
                        batch.rejected += 1;
                        if batch.errors.len() < MAX_REASONS {
                            batch
                                .errors
                                .push(format!("resource_spans[{r}] span[{s}]: {why}"));
                        }
                    }
                }
            }
        }
    }
    batch
}

fn convert_span(
    span: OtlpSpan,
    service: Sym,
    instance: Option<Sym>,
    attrs: &mut AttrsBuilder,
) -> Result<(TraceId, Span), String> {
    let trace_id = TraceId::from_bytes(&span.trace_id).map_err(|e| e.to_string())?;
    let span_id = SpanId::from_bytes(&span.span_id).map_err(|e| e.to_string())?;
    let parent_id = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(SpanId::from_bytes(&span.parent_span_id).map_err(|e| format!("parent {e}"))?)
    };
    let kind = match span::SpanKind::try_from(span.kind) {
        Ok(span::SpanKind::Internal) => SpanKind::Internal,
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    };
    let (status, status_message) = match span.status {
        Some(st) => (
            match st.code {
                1 => StatusCode::Ok,
                2 => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            (!st.message.is_empty()).then(|| st.message.into_boxed_str()),
        ),
        None => (StatusCode::Unset, None),
    };
    let mut sem = Semantics::default();
    for kv in &span.attributes {
        push_attr(kv, attrs, Some(&mut sem));
    }
    let span_attrs = attrs.finish();
    let events = span
        .events
        .iter()
        .map(|e| {
            for kv in &e.attributes {
                push_attr(kv, attrs, None);
            }
            Event {
                time_ns: e.time_unix_nano,
                name: Sym::new(&e.name),
                attrs: attrs.finish(),
            }
        })
        .collect();
    let links = span
        .links
        .iter()
        .filter_map(|l| {
            let trace_id = TraceId::from_bytes(&l.trace_id).ok()?;
            let span_id = SpanId::from_bytes(&l.span_id).ok()?;
            for kv in &l.attributes {
                push_attr(kv, attrs, None);
            }
            Some(Link {
                trace_id,
                span_id,
                attrs: attrs.finish(),
            })
        })
        .collect();
    Ok((
        trace_id,
        Span {
            span_id,
            parent_id,
            start_ns: span.start_time_unix_nano,
            end_ns: span.end_time_unix_nano,
            service,
            instance,
            operation: Sym::new(&span.name),
            kind,
            status,
            status_message,
            sem,
            attrs: span_attrs,
            events,
            links,
        },
    ))
}

/// Which typed field a semantic-convention key fills (current and legacy names).
#[derive(Clone, Copy)]
enum Field {
    HttpStatus,
    GrpcStatus,
    HttpMethod,
    HttpRoute,
    RpcSystem,
    RpcService,
    RpcMethod,
    DbSystem,
    DbNamespace,
    ServerAddress,
    PeerService,
    ErrorType,
}

fn field(key: &str) -> Option<Field> {
    Some(match key {
        "http.response.status_code" | "http.status_code" => Field::HttpStatus,
        "rpc.grpc.status_code" => Field::GrpcStatus,
        "http.request.method" | "http.method" => Field::HttpMethod,
        "http.route" => Field::HttpRoute,
        "rpc.system" => Field::RpcSystem,
        "rpc.service" => Field::RpcService,
        "rpc.method" => Field::RpcMethod,
        "db.system.name" | "db.system" => Field::DbSystem,
        "db.namespace" | "db.name" => Field::DbNamespace,
        "server.address" | "net.peer.name" => Field::ServerAddress,
        "peer.service" => Field::PeerService,
        "error.type" => Field::ErrorType,
        _ => return None,
    })
}

fn as_int(value: &any_value::Value) -> Option<i64> {
    match value {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.trim().parse().ok(),
        any_value::Value::DoubleValue(d) if d.fract() == 0.0 => Some(*d as i64),
        _ => None,
    }
}

/// Appends one attribute; with `sem`, also fills the typed field its key names.
fn push_attr(kv: &KeyValue, attrs: &mut AttrsBuilder, sem: Option<&mut Semantics>) {
    let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
        return;
    };
    let key = Sym::new(&kv.key);
    if let (Some(sem), Some(f)) = (sem, field(&kv.key)) {
        match f {
            Field::HttpStatus | Field::GrpcStatus => {
                if let Some(code) = as_int(value) {
                    match f {
                        Field::HttpStatus => {
                            sem.http_status = u16::try_from(code).ok().and_then(NonZeroU16::new)
                        }
                        _ => sem.grpc_status = u8::try_from(code).ok(),
                    }
                }
            }
            _ => {
                if let any_value::Value::StringValue(s) = value {
                    let sym = Sym::new(s);
                    *match f {
                        Field::HttpMethod => &mut sem.http_method,
                        Field::HttpRoute => &mut sem.http_route,
                        Field::RpcSystem => &mut sem.rpc_system,
                        Field::RpcService => &mut sem.rpc_service,
                        Field::RpcMethod => &mut sem.rpc_method,
                        Field::DbSystem => &mut sem.db_system,
                        Field::DbNamespace => &mut sem.db_namespace,
                        Field::ServerAddress => &mut sem.server_address,
                        Field::PeerService => &mut sem.peer_service,
                        _ => &mut sem.error_type,
                    } = Some(sym);
                    attrs.sym(key, sym);
                    return;
                }
            }
        }
    }
    match value {
        any_value::Value::StringValue(s) => attrs.str(key, s),
        any_value::Value::BoolValue(b) => attrs.bool(key, *b),
        any_value::Value::IntValue(i) => attrs.int(key, *i),
        any_value::Value::DoubleValue(d) => attrs.double(key, *d),
        other => attrs.json(key, &to_json(other).to_string()),
    }
}

/// Arrays, maps and bytes as JSON (bytes as a hex string).
fn to_json(value: &any_value::Value) -> serde_json::Value {
    let of = |v: &AnyValue| v.value.as_ref().map_or(serde_json::Value::Null, to_json);
    match value {
        any_value::Value::StringValue(s) => s.as_str().into(),
        any_value::Value::BoolValue(b) => (*b).into(),
        any_value::Value::IntValue(i) => (*i).into(),
        any_value::Value::DoubleValue(d) => (*d).into(),
        any_value::Value::BytesValue(b) => hex::encode(b).into(),
        // A dictionary index of the profiles signal; meaningless without the dictionary.
        any_value::Value::StringValueStrindex(i) => (*i).into(),
        any_value::Value::ArrayValue(a) => a.values.iter().map(of).collect(),
        any_value::Value::KvlistValue(kv) => kv
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map_or(serde_json::Value::Null, of),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::otlp::resource::v1::Resource;
    use crate::ingest::otlp::trace::v1::{ScopeSpans, Status};
    use crate::model::AttrValue;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(text: &str) -> any_value::Value {
        any_value::Value::StringValue(text.into())
    }

    fn request(attributes: Vec<KeyValue>) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("service.instance.id", s("pod-7")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![OtlpSpan {
                    trace_id: vec![1; 16].into(),
                    span_id: vec![2; 8].into(),
                    name: "SELECT".into(),
                    kind: span::SpanKind::Client as i32,
                    start_time_unix_nano: 10,
                    end_time_unix_nano: 30,
                    attributes,
                    status: Some(Status {
                        code: 2,
                        message: "context deadline exceeded".into(),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }]
    }

    #[test]
    fn current_and_legacy_semantic_names_fill_the_same_typed_fields() {
        for (status_key, db_key, stmt_key, peer_key) in [
            (
                "http.response.status_code",
                "db.system.name",
                "db.query.text",
                "server.address",
            ),
            (
                "http.status_code",
                "db.system",
                "db.statement",
                "net.peer.name",
            ),
        ] {
            let batch = convert(request(vec![
                kv(status_key, any_value::Value::IntValue(504)),
                kv(db_key, s("postgresql")),
                kv(stmt_key, s("SELECT * FROM orders WHERE id = 42")),
                kv(peer_key, s("db.internal")),
                kv("rpc.grpc.status_code", any_value::Value::IntValue(4)),
                kv("error.type", s("timeout")),
                kv(
                    "tags",
                    any_value::Value::ArrayValue(crate::ingest::otlp::common::v1::ArrayValue {
                        values: vec![AnyValue {
                            value: Some(s("a")),
                        }],
                    }),
                ),
            ]));
            assert_eq!((batch.accepted, batch.rejected), (1, 0));
            let (_, spans) = &batch.traces[0];
            let sp = &spans[0];
            assert_eq!(sp.service.as_str(), "checkout");
            assert_eq!(sp.instance.map(Sym::as_str), Some("pod-7"));
            assert_eq!(sp.kind, SpanKind::Client);
            assert_eq!(sp.status, StatusCode::Error);
            assert_eq!(
                sp.status_message.as_deref(),
                Some("context deadline exceeded")
            );
            assert_eq!(sp.sem.http_status.map(|c| c.get()), Some(504));
            assert_eq!(sp.sem.db_system.map(Sym::as_str), Some("postgresql"));
            assert_eq!(sp.sem.server_address.map(Sym::as_str), Some("db.internal"));
            assert_eq!(sp.sem.grpc_status, Some(4));
            assert_eq!(sp.sem.error_type.map(Sym::as_str), Some("timeout"));
            assert_eq!(
                sp.attrs.get(Sym::new(stmt_key)),
                Some(AttrValue::Str("SELECT * FROM orders WHERE id = 42"))
            );
            assert_eq!(
                sp.attrs.get(Sym::new("tags")).unwrap().to_json(),
                serde_json::json!(["a"])
            );
            assert_eq!(
                sp.attrs.iter().count(),
                7,
                "every attribute kept for the trace view"
            );
        }
    }

    #[test]
    fn a_resource_without_a_service_name_is_unknown_service() {
        let mut req = request(vec![]);
        req[0].resource = None;
        let batch = convert(req);
        assert_eq!(batch.traces[0].1[0].service.as_str(), "unknown_service");
    }
}
