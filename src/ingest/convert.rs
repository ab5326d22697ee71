//! OTLP `ExportTraceServiceRequest` bytes → the internal span model, in one walk
//! over the wire format: ids are read in place, names and attribute keys are
//! interned through a per-thread cache, attributes are packed as they are read
//! (by the [`Builder`] the JSON decoder shares). Nothing is first decoded into
//! prost's owned structs.

use std::cell::RefCell;

use rustc_hash::FxHashMap;

use super::build::{
    event, link, lossy, span_ids, Builder, Codes, Resource, ResourceAttrs, SpanFields, Value,
    MAX_VALUE_DEPTH,
};
use super::wire::{DecodeError, Reader, Value as Wire};
use crate::model::{Event, Link, SpanBatch, SpanId, TraceId};

/// Decodes one export request. Spans with a malformed trace, span or parent id
/// are refused and counted; the rest are accepted. Bytes that are not a valid
/// protobuf message fail the whole request.
pub fn decode_export(request: &[u8]) -> Result<SpanBatch, DecodeError> {
    let mut b = Builder::default();
    let mut r = Reader::new(request);
    let mut index = 0;
    while let Some((field, v)) = r.next()? {
        if field == 1 {
            resource_spans(&mut b, r.nested(v.bytes()), index)?;
            index += 1;
        }
    }
    Ok(b.finish())
}

/// The set field of an `AnyValue` (its number and value).
type Any<'a> = (u32, Wire<'a>);

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
    (field, v): (u32, Wire<'_>),
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

/// One `KeyValue` into the builder (see [`Builder::attribute`]).
fn attribute(b: &mut Builder, r: Reader<'_>, codes: Option<&mut Codes>) -> Result<(), DecodeError> {
    let reader = r.clone();
    let (key, any) = key_value(r)?;
    let Some(any) = any else {
        return Ok(());
    };
    b.attribute(key, value_of(&reader, any)?, codes);
    Ok(())
}

/// The value of a `KeyValue` read by `reader`.
fn value_of<'a>(reader: &Reader<'a>, any: Any<'a>) -> Result<Value<'a>, DecodeError> {
    let (kind, v) = any;
    Ok(match kind {
        1 => Value::Str(v.bytes()),
        2 => Value::Bool(v.varint() != 0),
        3 => Value::Int(v.varint() as i64),
        4 => Value::Double(f64::from_bits(v.fixed64())),
        _ => Value::Json(any_json(reader, any, 0)?),
    })
}

/// Resources read lately on this thread, at most this many.
const MAX_CACHED_RESOURCES: usize = 256;

thread_local! {
    /// Resources by their encoded bytes: a service sends the same resource with
    /// every request, so its attributes are read (and their text built and
    /// interned) once, not once per request.
    static RESOURCES: RefCell<FxHashMap<Box<[u8]>, Resource>> = RefCell::default();
}

/// A resource's attributes into `attrs`.
fn read_resource(attrs: &mut ResourceAttrs, mut res: Reader<'_>) -> Result<(), DecodeError> {
    while let Some((f, kv)) = res.next()? {
        if f != 1 {
            continue;
        }
        let reader = res.nested(kv.bytes());
        if let (key, Some(any)) = key_value(reader.clone())? {
            // A value nested too deeply is left out of the resource, not an error.
            if let Ok(value) = value_of(&reader, any) {
                attrs.attribute(key, value);
            }
        }
    }
    Ok(())
}

/// The resource of a `ResourceSpans` read by `r`.
fn resource(r: &Reader<'_>) -> Result<Resource, DecodeError> {
    // The resource may come after its spans on the wire: find it first.
    let mut scan = r.clone();
    let (mut found, mut several) = (None, false);
    while let Some((field, v)) = scan.next()? {
        if field == 1 {
            several |= found.is_some();
            found = Some(v.bytes());
        }
    }
    match found {
        Some(bytes) if !several => RESOURCES.with(|cache| {
            if let Some(resource) = cache.borrow().get(bytes) {
                return Ok(*resource);
            }
            let mut attrs = ResourceAttrs::default();
            read_resource(&mut attrs, r.nested(bytes))?;
            let resource = attrs.finish();
            let mut cache = cache.borrow_mut();
            if cache.len() >= MAX_CACHED_RESOURCES {
                cache.clear();
            }
            cache.insert(bytes.into(), resource);
            Ok(resource)
        }),
        // None, or (unusually) several parts to merge.
        _ => {
            let mut attrs = ResourceAttrs::default();
            let mut scan = r.clone();
            while let Some((field, v)) = scan.next()? {
                if field == 1 {
                    read_resource(&mut attrs, scan.nested(v.bytes()))?;
                }
            }
            Ok(attrs.finish())
        }
    }
}

fn resource_spans(b: &mut Builder, r: Reader<'_>, index: usize) -> Result<(), DecodeError> {
    let resource = resource(&r)?;
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
            span(b, scope.nested(s.bytes()), resource, (index, span_index))?;
            span_index += 1;
        }
    }
    Ok(())
}

/// One span, accepted or (with malformed ids) rejected; `at` is its place in
/// the request, for the rejection message.
fn span(
    b: &mut Builder,
    mut r: Reader<'_>,
    resource: Resource,
    at: (usize, usize),
) -> Result<(), DecodeError> {
    let (mut trace_id, mut span_id, mut parent) = (&[][..], &[][..], &[][..]);
    let mut fields = SpanFields::default();
    b.begin_span(resource);
    let mut events = Vec::new();
    let mut links = Vec::new();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => trace_id = v.bytes(),
            2 => span_id = v.bytes(),
            4 => parent = v.bytes(),
            5 => fields.name = v.bytes(),
            6 => fields.kind = v.varint(),
            7 => fields.start_ns = v.fixed64(),
            8 => fields.end_ns = v.fixed64(),
            9 => attribute(b, r.nested(v.bytes()), Some(&mut fields.codes))?,
            11 => events.push(r.nested(v.bytes())),
            13 => links.push(r.nested(v.bytes())),
            15 => {
                let mut st = r.nested(v.bytes());
                while let Some((f, sv)) = st.next()? {
                    match f {
                        2 => fields.status_message = sv.bytes(),
                        3 => fields.status = sv.varint(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let attrs = b.attrs_since(0);
    let ids = span_ids(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        (!parent.is_empty()).then(|| SpanId::from_bytes(parent)),
    );
    let ids = match ids {
        Ok(ids) => ids,
        Err(why) => {
            b.reject(
                format_args!("resource_spans[{}] span[{}]", at.0, at.1),
                &why,
            );
            return Ok(());
        }
    };
    let events = events
        .into_iter()
        .map(|e| span_event(b, e))
        .collect::<Result<_, _>>()?;
    let links = links
        .into_iter()
        .filter_map(|l| span_link(b, l).transpose())
        .collect::<Result<_, _>>()?;
    b.accept(ids, resource, fields, attrs, events, links);
    Ok(())
}

fn span_event(b: &mut Builder, mut r: Reader<'_>) -> Result<Event, DecodeError> {
    let (mut time_ns, mut name) = (0, &[][..]);
    let mark = b.mark();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => time_ns = v.fixed64(),
            2 => name = v.bytes(),
            3 => attribute(b, r.nested(v.bytes()), None)?,
            _ => {}
        }
    }
    Ok(event(b, mark, time_ns, name))
}

fn span_link(b: &mut Builder, mut r: Reader<'_>) -> Result<Option<Link>, DecodeError> {
    let (mut trace_id, mut span_id) = (&[][..], &[][..]);
    let mark = b.mark();
    while let Some((field, v)) = r.next()? {
        match field {
            1 => trace_id = v.bytes(),
            2 => span_id = v.bytes(),
            4 => attribute(b, r.nested(v.bytes()), None)?,
            _ => {}
        }
    }
    Ok(link(
        b,
        mark,
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
    ))
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
    use crate::model::{AttrValue, Semantics, SpanKind, StatusCode, Sym};

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
            let sp = &batch.traces[0].1.spans[0];
            assert_eq!(sp.service.as_str(), "checkout");
            let arena = &batch.traces[0].1.arena;
            let sem = Semantics::of(sp, arena);
            assert_eq!(sem.instance.map(Sym::as_str), Some("pod-7"));
            assert_eq!(sp.operation.as_str(), "SELECT");
            assert_eq!((sp.start_ns, sp.end_ns), (10, 30));
            assert_eq!(sp.kind, SpanKind::Client);
            assert_eq!(sp.status, StatusCode::Error);
            assert_eq!(sp.status_message(), Some("context deadline exceeded"));
            assert_eq!(sp.http_status.map(|c| c.get()), Some(504));
            assert_eq!(sem.http_status.map(|c| c.get()), Some(504));
            assert_eq!(sem.db_system.map(Sym::as_str), Some("postgresql"));
            assert_eq!(sem.server_address.map(Sym::as_str), Some("db.internal"));
            assert_eq!(sp.grpc_status, Some(4));
            assert_eq!(sem.error_type.map(Sym::as_str), Some("timeout"));
            assert_eq!(
                arena.get(sp.attrs, Sym::new(stmt_key)),
                Some(AttrValue::Str("SELECT * FROM orders WHERE id = 42"))
            );
            let Some(AttrValue::Json(tags)) = arena.get(sp.attrs, Sym::new("tags")) else {
                panic!("tags kept as JSON text")
            };
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(tags).unwrap(),
                serde_json::json!(["a", 2])
            );
            assert_eq!(
                arena.iter(sp.attrs).count(),
                8,
                "every attribute kept for the trace view, and the instance id"
            );
            assert_eq!(sp.events().len(), 1);
            assert_eq!(
                arena.get(sp.events()[0].attrs, Sym::new("exception.type")),
                Some(AttrValue::Str("TimeoutError"))
            );
        }
    }

    #[test]
    fn a_resource_without_a_service_name_is_unknown_service() {
        let mut req = request(vec![]);
        req.resource_spans[0].resource = None;
        assert_eq!(
            decode(&req).traces[0].1.spans[0].service.as_str(),
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
        assert_eq!(batch.traces[0].1.spans[0].service.as_str(), "checkout");
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
