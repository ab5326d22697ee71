//! OTLP `ExportTraceServiceRequest` bytes → the internal span model, in one walk
//! over the wire format: ids are read in place, names and attribute keys are
//! interned through a per-thread cache, attributes are packed as they are read.
//! Nothing is first decoded into prost's owned structs.

use std::num::NonZeroU16;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use super::wire::{DecodeError, Reader, Value};
use crate::model::{
    AttrsBuilder, Event, Link, Semantics, Span, SpanBatch, SpanId, SpanKind, StatusCode, Sym,
    TraceId,
};

/// How many refusal reasons a partial-success message quotes.
const MAX_REASONS: usize = 3;

/// Deepest nesting of array/map attribute values accepted.
const MAX_VALUE_DEPTH: usize = 32;

/// Decodes one export request. Spans with a malformed trace, span or parent id
/// are refused and counted; the rest are accepted. Bytes that are not a valid
/// protobuf message fail the whole request.
pub fn decode_export(request: &[u8]) -> Result<SpanBatch, DecodeError> {
    let mut d = Decoder {
        batch: SpanBatch::default(),
        attrs: AttrsBuilder::default(),
    };
    let mut r = Reader::new(request);
    let mut index = 0;
    while let Some((field, v)) = r.next()? {
        if field == 1 {
            d.resource_spans(r.nested(v.bytes()), index)?;
            index += 1;
        }
    }
    Ok(d.batch)
}

struct Decoder {
    batch: SpanBatch,
    attrs: AttrsBuilder,
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

static FIELDS: LazyLock<FxHashMap<Sym, Field>> = LazyLock::new(|| {
    [
        ("http.response.status_code", Field::HttpStatus),
        ("http.status_code", Field::HttpStatus),
        ("rpc.grpc.status_code", Field::GrpcStatus),
        ("http.request.method", Field::HttpMethod),
        ("http.method", Field::HttpMethod),
        ("http.route", Field::HttpRoute),
        ("rpc.system", Field::RpcSystem),
        ("rpc.service", Field::RpcService),
        ("rpc.method", Field::RpcMethod),
        ("db.system.name", Field::DbSystem),
        ("db.system", Field::DbSystem),
        ("db.namespace", Field::DbNamespace),
        ("db.name", Field::DbNamespace),
        ("server.address", Field::ServerAddress),
        ("net.peer.name", Field::ServerAddress),
        ("peer.service", Field::PeerService),
        ("error.type", Field::ErrorType),
    ]
    .into_iter()
    .map(|(k, f)| (Sym::new(k), f))
    .collect()
});

static SERVICE_NAME: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.name"));
static SERVICE_INSTANCE: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.instance.id"));
/// The SDK specification's fallback when a resource names no service.
static UNKNOWN_SERVICE: LazyLock<Sym> = LazyLock::new(|| Sym::new("unknown_service"));

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The set field of an `AnyValue` (its number and value).
type Any<'a> = (u32, Value<'a>);

/// A `KeyValue` message: its key bytes and its `AnyValue`, if set.
fn key_value<'a>(mut r: Reader<'a>) -> Result<(&'a [u8], Option<Any<'a>>), DecodeError> {
    let (mut key, mut any) = (&[][..], None);
    while let Some((field, v)) = r.next()? {
        match field {
            1 => key = v.bytes(),
            2 => any = r.nested(v.bytes()).next()?,
            _ => {}
        }
    }
    Ok((key, any))
}

/// An `AnyValue` as JSON (arrays, maps and bytes in the trace view).
fn any_json(
    r: &Reader<'_>,
    (field, v): (u32, Value<'_>),
    depth: usize,
) -> Result<serde_json::Value, DecodeError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(DecodeError {
            what: "attribute value nested too deeply",
            offset: 0,
        });
    }
    Ok(match field {
        1 => lossy(v.bytes()).into(),
        2 => (v.varint() != 0).into(),
        3 => (v.varint() as i64).into(),
        4 => f64::from_bits(v.fixed64()).into(),
        5 => {
            let mut items = Vec::new();
            let mut list = r.nested(v.bytes());
            while let Some((f, item)) = list.next()? {
                if f == 1 {
                    let mut any = list.nested(item.bytes());
                    items.push(match any.next()? {
                        Some(inner) => any_json(&any, inner, depth + 1)?,
                        None => serde_json::Value::Null,
                    });
                }
            }
            items.into()
        }
        6 => {
            let mut map = serde_json::Map::new();
            let mut list = r.nested(v.bytes());
            while let Some((f, kv)) = list.next()? {
                if f == 1 {
                    let kv_reader = list.nested(kv.bytes());
                    let (key, any) = key_value(list.nested(kv.bytes()))?;
                    let value = match any {
                        Some(inner) => any_json(&kv_reader, inner, depth + 1)?,
                        None => serde_json::Value::Null,
                    };
                    map.insert(lossy(key).into_owned(), value);
                }
            }
            map.into()
        }
        7 => hex::encode(v.bytes()).into(),
        // A dictionary index of the profiles signal; meaningless without the dictionary.
        _ => (v.varint() as i32).into(),
    })
}

fn as_int((field, v): Any<'_>) -> Option<i64> {
    match field {
        3 => Some(v.varint() as i64),
        1 => std::str::from_utf8(v.bytes()).ok()?.trim().parse().ok(),
        4 => {
            let d = f64::from_bits(v.fixed64());
            (d.fract() == 0.0).then_some(d as i64)
        }
        _ => None,
    }
}

impl Decoder {
    fn reject(&mut self, resource: usize, span: usize, why: String) {
        self.batch.rejected += 1;
        if self.batch.errors.len() < MAX_REASONS {
            self.batch
                .errors
                .push(format!("resource_spans[{resource}] span[{span}]: {why}"));
        }
    }

    fn resource_spans(&mut self, r: Reader<'_>, index: usize) -> Result<(), DecodeError> {
        // The resource may come after its spans on the wire: find it first.
        let (mut service, mut instance) = (None, None);
        let mut scan = r.clone();
        while let Some((field, v)) = scan.next()? {
            if field != 1 {
                continue;
            }
            let mut res = scan.nested(v.bytes());
            while let Some((f, kv)) = res.next()? {
                if f != 1 {
                    continue;
                }
                if let (key, Some((1, value))) = key_value(res.nested(kv.bytes()))? {
                    let key = Sym::from_utf8_lossy(key);
                    if key == *SERVICE_NAME {
                        service = Some(Sym::from_utf8_lossy(value.bytes()));
                    } else if key == *SERVICE_INSTANCE {
                        instance = Some(Sym::from_utf8_lossy(value.bytes()));
                    }
                }
            }
        }
        let service = service.unwrap_or(*UNKNOWN_SERVICE);
        let mut r = r;
        let mut span_index = 0;
        while let Some((field, v)) = r.next()? {
            if field != 2 {
                continue;
            }
            let mut scope = r.nested(v.bytes());
            while let Some((f, s)) = scope.next()? {
                if f != 2 {
                    continue;
                }
                match self.span(scope.nested(s.bytes()), service, instance)? {
                    Ok((trace_id, span)) => {
                        self.batch.accepted += 1;
                        match self.batch.traces.last_mut() {
                            Some((last, spans)) if *last == trace_id => spans.push(span),
                            _ => self.batch.traces.push((trace_id, vec![span])),
                        }
                    }
                    Err(why) => self.reject(index, span_index, why),
                }
                span_index += 1;
            }
        }
        Ok(())
    }

    /// One attribute into the builder; with `sem`, also its typed field.
    fn attribute(&mut self, r: Reader<'_>, sem: Option<&mut Semantics>) -> Result<(), DecodeError> {
        let reader = r.clone();
        let (key, any) = key_value(r)?;
        let Some(any) = any else {
            return Ok(());
        };
        let key = Sym::from_utf8_lossy(key);
        let (field, v) = any;
        if let (Some(sem), Some(&f)) = (sem, FIELDS.get(&key)) {
            match f {
                Field::HttpStatus => {
                    sem.http_status = as_int(any)
                        .and_then(|c| u16::try_from(c).ok())
                        .and_then(NonZeroU16::new)
                }
                Field::GrpcStatus => {
                    sem.grpc_status = as_int(any).and_then(|c| u8::try_from(c).ok())
                }
                _ if field == 1 => {
                    let sym = Sym::from_utf8_lossy(v.bytes());
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
                    self.attrs.sym(key, sym);
                    return Ok(());
                }
                _ => {}
            }
        }
        match field {
            1 => self.attrs.str(key, &lossy(v.bytes())),
            2 => self.attrs.bool(key, v.varint() != 0),
            3 => self.attrs.int(key, v.varint() as i64),
            4 => self.attrs.double(key, f64::from_bits(v.fixed64())),
            _ => {
                let json = any_json(&reader, any, 0)?;
                self.attrs.json(key, &json.to_string());
            }
        }
        Ok(())
    }

    /// One span: `Ok(Err(reason))` when its ids are malformed.
    fn span(
        &mut self,
        mut r: Reader<'_>,
        service: Sym,
        instance: Option<Sym>,
    ) -> Result<Result<(TraceId, Span), String>, DecodeError> {
        let (mut trace_id, mut span_id, mut parent) = (&[][..], &[][..], &[][..]);
        let mut name = &[][..];
        let (mut kind, mut start, mut end) = (0, 0, 0);
        let (mut status, mut status_message) = (StatusCode::Unset, None);
        let mut sem = Semantics::default();
        let mut events = Vec::new();
        let mut links = Vec::new();
        while let Some((field, v)) = r.next()? {
            match field {
                1 => trace_id = v.bytes(),
                2 => span_id = v.bytes(),
                4 => parent = v.bytes(),
                5 => name = v.bytes(),
                6 => kind = v.varint(),
                7 => start = v.fixed64(),
                8 => end = v.fixed64(),
                9 => self.attribute(r.nested(v.bytes()), Some(&mut sem))?,
                11 => events.push(r.nested(v.bytes())),
                13 => links.push(r.nested(v.bytes())),
                15 => {
                    let mut st = r.nested(v.bytes());
                    while let Some((f, sv)) = st.next()? {
                        match (f, sv.varint()) {
                            (2, _) if !sv.bytes().is_empty() => {
                                status_message = Some(lossy(sv.bytes()).into())
                            }
                            (3, 1) => status = StatusCode::Ok,
                            (3, 2) => status = StatusCode::Error,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let span_attrs = self.attrs.finish();
        let ids = (|| {
            let trace_id = TraceId::from_bytes(trace_id).map_err(|e| e.to_string())?;
            let span_id = SpanId::from_bytes(span_id).map_err(|e| e.to_string())?;
            let parent_id = match parent {
                [] => None,
                p => Some(SpanId::from_bytes(p).map_err(|e| format!("parent {e}"))?),
            };
            Ok::<_, String>((trace_id, span_id, parent_id))
        })();
        let (trace_id, span_id, parent_id) = match ids {
            Ok(ids) => ids,
            Err(why) => return Ok(Err(why)),
        };
        let events = events
            .into_iter()
            .map(|e| self.event(e))
            .collect::<Result<_, _>>()?;
        let links = links
            .into_iter()
            .filter_map(|l| self.link(l).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Ok((
            trace_id,
            Span {
                span_id,
                parent_id,
                start_ns: start,
                end_ns: end,
                service,
                instance,
                operation: Sym::from_utf8_lossy(name),
                kind: match kind {
                    1 => SpanKind::Internal,
                    2 => SpanKind::Server,
                    3 => SpanKind::Client,
                    4 => SpanKind::Producer,
                    5 => SpanKind::Consumer,
                    _ => SpanKind::Unspecified,
                },
                status,
                status_message,
                sem,
                attrs: span_attrs,
                events,
                links,
            },
        )))
    }

    fn event(&mut self, mut r: Reader<'_>) -> Result<Event, DecodeError> {
        let (mut time_ns, mut name) = (0, &[][..]);
        while let Some((field, v)) = r.next()? {
            match field {
                1 => time_ns = v.fixed64(),
                2 => name = v.bytes(),
                3 => self.attribute(r.nested(v.bytes()), None)?,
                _ => {}
            }
        }
        Ok(Event {
            time_ns,
            name: Sym::from_utf8_lossy(name),
            attrs: self.attrs.finish(),
        })
    }

    /// A link; `None` when its ids are malformed (a link is context, not a span).
    fn link(&mut self, mut r: Reader<'_>) -> Result<Option<Link>, DecodeError> {
        let (mut trace_id, mut span_id) = (&[][..], &[][..]);
        while let Some((field, v)) = r.next()? {
            match field {
                1 => trace_id = v.bytes(),
                2 => span_id = v.bytes(),
                4 => self.attribute(r.nested(v.bytes()), None)?,
                _ => {}
            }
        }
        let attrs = self.attrs.finish();
        Ok(TraceId::from_bytes(trace_id)
            .ok()
            .zip(SpanId::from_bytes(span_id).ok())
            .map(|(trace_id, span_id)| Link {
                trace_id,
                span_id,
                attrs,
            }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::ingest::otlp::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
    use crate::ingest::otlp::resource::v1::Resource;
    use crate::ingest::otlp::trace::v1::{
        span, ResourceSpans, ScopeSpans, Span as OtlpSpan, Status,
    };
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

    fn request(attributes: Vec<KeyValue>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
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
                        events: vec![span::Event {
                            time_unix_nano: 20,
                            name: "exception".into(),
                            attributes: vec![kv("exception.type", s("TimeoutError"))],
                            ..Default::default()
                        }],
                        status: Some(Status {
                            code: 2,
                            message: "context deadline exceeded".into(),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn decode(req: &ExportTraceServiceRequest) -> SpanBatch {
        decode_export(&req.encode_to_vec()).expect("valid protobuf")
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
            let batch = decode(&request(vec![
                kv(status_key, any_value::Value::IntValue(504)),
                kv(db_key, s("postgresql")),
                kv(stmt_key, s("SELECT * FROM orders WHERE id = 42")),
                kv(peer_key, s("db.internal")),
                kv("rpc.grpc.status_code", any_value::Value::IntValue(4)),
                kv("error.type", s("timeout")),
                kv(
                    "tags",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(s("a")),
                            },
                            AnyValue {
                                value: Some(any_value::Value::IntValue(2)),
                            },
                        ],
                    }),
                ),
            ]));
            assert_eq!((batch.accepted, batch.rejected), (1, 0));
            let sp = &batch.traces[0].1[0];
            assert_eq!(sp.service.as_str(), "checkout");
            assert_eq!(sp.instance.map(Sym::as_str), Some("pod-7"));
            assert_eq!(sp.operation.as_str(), "SELECT");
            assert_eq!((sp.start_ns, sp.end_ns), (10, 30));
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
                serde_json::json!(["a", 2])
            );
            assert_eq!(
                sp.attrs.iter().count(),
                7,
                "every attribute kept for the trace view"
            );
            assert_eq!(sp.events.len(), 1);
            assert_eq!(
                sp.events[0].attrs.get(Sym::new("exception.type")),
                Some(AttrValue::Str("TimeoutError"))
            );
        }
    }

    #[test]
    fn a_resource_without_a_service_name_is_unknown_service() {
        let mut req = request(vec![]);
        req.resource_spans[0].resource = None;
        assert_eq!(
            decode(&req).traces[0].1[0].service.as_str(),
            "unknown_service"
        );
    }

    #[test]
    fn the_resource_may_follow_its_spans_on_the_wire() {
        let req = request(vec![]);
        let rs = &req.resource_spans[0];
        // ResourceSpans with field 2 (scope_spans) written before field 1 (resource).
        let mut inner = Vec::new();
        for scope in &rs.scope_spans {
            prost::encoding::message::encode(2, scope, &mut inner);
        }
        prost::encoding::message::encode(1, rs.resource.as_ref().unwrap(), &mut inner);
        let mut outer = Vec::new();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut outer);
        prost::encoding::encode_varint(inner.len() as u64, &mut outer);
        outer.extend(inner);
        let batch = decode_export(&outer).unwrap();
        assert_eq!(batch.traces[0].1[0].service.as_str(), "checkout");
    }

    #[test]
    fn garbage_fails_the_request_and_never_panics() {
        let good = request(vec![kv("k", s("v"))]).encode_to_vec();
        for cut in 0..good.len() {
            // Every prefix either decodes (at a field boundary) or is refused.
            let _ = decode_export(&good[..cut]);
        }
        let mut flipped = good.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let _ = decode_export(&flipped);
            flipped[i] ^= 0xff;
        }
        assert!(decode_export(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let deep = (0..100).fold(
            AnyValue {
                value: Some(s("x")),
            },
            |inner, _| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![inner],
                })),
            },
        );
        let mut req = request(vec![]);
        req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
            key: "deep".into(),
            value: Some(deep),
            ..Default::default()
        }];
        let err = decode_export(&req.encode_to_vec()).unwrap_err();
        assert_eq!(err.what, "attribute value nested too deeply");
    }
}
