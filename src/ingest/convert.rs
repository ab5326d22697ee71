//! OTLP `ExportTraceServiceRequest` bytes → the internal span model, in one walk
//! over the wire format: ids are read in place, names and attribute keys are
//! interned through a per-thread cache, attributes are packed as they are read.
//! Nothing is first decoded into prost's owned structs.

use std::num::NonZeroU16;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use super::wire::{DecodeError, Reader, Value};
use crate::model::{
    field, AttrArena, Event, Extra, Field, Link, Span, SpanBatch, SpanId, SpanKind, SpanSet,
    StatusCode, Sym, TraceId,
};

/// How many refusal reasons a partial-success message quotes.
const MAX_REASONS: usize = 3;

/// Deepest nesting of array/map attribute values accepted.
const MAX_VALUE_DEPTH: usize = 32;

/// String values up to this long are interned while their key's values repeat.
const MAX_INTERNED_VALUE: usize = 512;

/// New values a key may intern on one thread before its values are stored inline
/// (a key with many distinct values, such as `url.full`, never fills the interner).
const MAX_INTERNED_PER_KEY: u32 = 1024;

thread_local! {
    /// Per attribute key: how many of its values missed the interning cache.
    static KEY_MISSES: std::cell::RefCell<FxHashMap<Sym, u32>> =
        std::cell::RefCell::new(FxHashMap::default());
}

/// Interns a short string value while its key's values keep repeating; `None`
/// means store it inline.
fn intern_value(key: Sym, value: &[u8]) -> Option<Sym> {
    if value.len() > MAX_INTERNED_VALUE {
        return None;
    }
    KEY_MISSES.with(|misses| {
        let mut misses = misses.borrow_mut();
        let count = misses.entry(key).or_default();
        if *count >= MAX_INTERNED_PER_KEY {
            return None;
        }
        let (sym, hit) = Sym::cached(value);
        if !hit {
            *count += 1;
        }
        Some(sym)
    })
}

/// Decodes one export request. Spans with a malformed trace, span or parent id
/// are refused and counted; the rest are accepted. Bytes that are not a valid
/// protobuf message fail the whole request.
pub fn decode_export(request: &[u8]) -> Result<SpanBatch, DecodeError> {
    let mut d = Decoder {
        batch: SpanBatch::default(),
        groups: FxHashMap::default(),
        scratch: AttrArena::default(),
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
    /// Where each trace's spans are in `batch.traces`: one set per trace, however
    /// its spans are spread over the request's resources.
    groups: FxHashMap<TraceId, usize>,
    /// The attributes of the span being decoded (and its events and links).
    scratch: AttrArena,
}

static SERVICE_NAME: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.name"));
static SERVICE_INSTANCE: LazyLock<Sym> = LazyLock::new(|| Sym::new("service.instance.id"));
/// What a span keeps inline from its attributes.
#[derive(Default)]
struct Codes {
    http: Option<NonZeroU16>,
    grpc: Option<u8>,
    error_type: bool,
}

/// The SDK specification's fallback when a resource names no service.
static UNKNOWN_SERVICE: LazyLock<Sym> = LazyLock::new(|| Sym::new("unknown_service"));

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => String::from_utf8_lossy(bytes),
    }
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
                        let next = self.batch.traces.len();
                        let at = *self.groups.entry(trace_id).or_insert(next);
                        if at == next {
                            self.batch.traces.push((trace_id, SpanSet::default()));
                        }
                        let (_, set) = &mut self.batch.traces[at];
                        set.push(span, &mut self.scratch);
                    }
                    Err(why) => {
                        self.scratch.clear();
                        self.reject(index, span_index, why)
                    }
                }
                span_index += 1;
            }
        }
        Ok(())
    }

    /// One attribute into the scratch arena; with `codes`, a span's attribute, whose
    /// HTTP and gRPC status codes are also kept inline.
    fn attribute(&mut self, r: Reader<'_>, codes: Option<&mut Codes>) -> Result<(), DecodeError> {
        let reader = r.clone();
        let (key, any) = key_value(r)?;
        let Some(any) = any else {
            return Ok(());
        };
        let key = Sym::from_utf8_lossy(key);
        let (kind, v) = any;
        let semantic = field(key);
        if let Some(codes) = codes {
            match semantic {
                Some(Field::HttpStatus) => {
                    codes.http = as_int(any)
                        .and_then(|c| u16::try_from(c).ok())
                        .and_then(NonZeroU16::new)
                }
                Some(Field::GrpcStatus) => {
                    codes.grpc = as_int(any).and_then(|c| u8::try_from(c).ok())
                }
                Some(Field::ErrorType) => codes.error_type = true,
                _ => {}
            }
        }
        match kind {
            // Semantic-convention values are always interned: the detectors look them up.
            1 if semantic.is_some() => self.scratch.sym(key, Sym::from_utf8_lossy(v.bytes())),
            1 => match intern_value(key, v.bytes()) {
                Some(sym) => self.scratch.sym(key, sym),
                None => self.scratch.str(key, &lossy(v.bytes())),
            },
            2 => self.scratch.bool(key, v.varint() != 0),
            3 => self.scratch.int(key, v.varint() as i64),
            4 => self.scratch.double(key, f64::from_bits(v.fixed64())),
            _ => {
                let json = any_json(&reader, any, 0)?;
                self.scratch.json(key, &json.to_string());
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
        let mut codes = Codes::default();
        if let Some(instance) = instance {
            // The resource's instance id travels with each span, as an attribute.
            self.scratch.sym(*SERVICE_INSTANCE, instance);
        }
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
                9 => self.attribute(r.nested(v.bytes()), Some(&mut codes))?,
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
        let span_attrs = self.scratch.finish(0);
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
        let events: Vec<Event> = events
            .into_iter()
            .map(|e| self.event(e))
            .collect::<Result<_, _>>()?;
        let links: Vec<Link> = links
            .into_iter()
            .filter_map(|l| self.link(l).transpose())
            .collect::<Result<_, _>>()?;
        let extra =
            (status_message.is_some() || !events.is_empty() || !links.is_empty()).then(|| {
                Box::new(Extra {
                    status_message,
                    events,
                    links,
                })
            });
        Ok(Ok((
            trace_id,
            Span {
                span_id,
                parent_id,
                start_ns: start,
                end_ns: end,
                service,
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
                attrs: span_attrs,
                extra,
                http_status: codes.http,
                grpc_status: codes.grpc,
                has_error_type: codes.error_type,
            },
        )))
    }

    fn event(&mut self, mut r: Reader<'_>) -> Result<Event, DecodeError> {
        let (mut time_ns, mut name) = (0, &[][..]);
        let mark = self.scratch.mark();
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
            attrs: self.scratch.finish(mark),
        })
    }

    /// A link; `None` when its ids are malformed (a link is context, not a span).
    fn link(&mut self, mut r: Reader<'_>) -> Result<Option<Link>, DecodeError> {
        let (mut trace_id, mut span_id) = (&[][..], &[][..]);
        let mark = self.scratch.mark();
        while let Some((field, v)) = r.next()? {
            match field {
                1 => trace_id = v.bytes(),
                2 => span_id = v.bytes(),
                4 => self.attribute(r.nested(v.bytes()), None)?,
                _ => {}
            }
        }
        let attrs = self.scratch.finish(mark);
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
    use crate::model::{AttrValue, Semantics};

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
            assert_eq!(
                arena.get(sp.attrs, Sym::new("tags")).unwrap().to_json(),
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
