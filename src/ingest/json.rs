//! OTLP/JSON `ExportTraceServiceRequest` bodies → the internal span model.
//!
//! The OTLP JSON mapping is protobuf's JSON mapping with three deviations: trace
//! and span ids are hex (not base64), enums are integers, and field names are
//! lowerCamelCase. Read leniently, as protobuf's JSON parsers do: the proto's
//! snake_case names are accepted too, 64-bit integers as decimal strings or plain
//! numbers, enums also by name, `null` as an absent field, and unknown fields
//! are ignored. A missing or misspelled id is left empty, so that span is
//! rejected through partial success (never merged into another trace), as a
//! malformed id is on the protobuf path; text that is not JSON, or a value of
//! the wrong type, fails the request.
//!
//! The body is parsed into borrowed structs (strings without escapes point into
//! it) that are handed to the same [`Builder`] as the protobuf walk. Nesting is
//! bounded twice: serde_json refuses input nested more than 128 deep before the
//! stack could suffer, and attribute values nested more than
//! [`MAX_VALUE_DEPTH`] are refused as on the protobuf path.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::build::{
    event, link, span_ids, Builder, Codes, Resource, ResourceAttrs, SpanFields, Value,
    MAX_VALUE_DEPTH,
};
use crate::model::{Event, IdError, Link, SpanBatch, SpanId, TraceId};

/// Why an OTLP/JSON body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("malformed OTLP/JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("malformed OTLP/JSON: attribute value nested more than {MAX_VALUE_DEPTH} deep")]
    TooDeep,
}

/// Decodes one OTLP/JSON export request. Spans with a missing or malformed
/// trace, span or parent id are refused and counted; the rest are accepted.
pub fn decode_export_json(body: &[u8]) -> Result<SpanBatch, JsonError> {
    let request: Request<'_> = serde_json::from_slice(body)?;
    let mut b = Builder::default();
    for (index, rs) in request.resource_spans.iter().flatten().enumerate() {
        let mut attrs = ResourceAttrs::default();
        for kv in rs
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter().flatten())
        {
            if let (Some(key), Some(value)) = (&kv.key, kv.value()?) {
                attrs.attribute(key.0.as_bytes(), value);
            }
        }
        let resource = attrs.finish();
        let spans = rs.scope_spans.iter().flatten();
        for (span_index, s) in spans.flat_map(|ss| ss.spans.iter().flatten()).enumerate() {
            span(&mut b, s, resource, (index, span_index))?;
        }
    }
    Ok(b.finish())
}

/// One span, accepted or (with missing or malformed ids) rejected.
fn span(
    b: &mut Builder,
    s: &SpanJson<'_>,
    resource: Resource,
    at: (usize, usize),
) -> Result<(), JsonError> {
    b.begin_span(resource);
    let status = s.status.as_ref();
    let mut fields = SpanFields {
        name: bytes(&s.name),
        kind: s.kind.map_or(0, |k| k.0),
        start_ns: s.start_time_unix_nano.map_or(0, |t| t.0),
        end_ns: s.end_time_unix_nano.map_or(0, |t| t.0),
        status: status.and_then(|st| st.code).map_or(0, |c| c.0),
        status_message: status.map_or(&[], |st| bytes(&st.message)),
        codes: Codes::default(),
    };
    for kv in s.attributes.iter().flatten() {
        attribute(b, kv, Some(&mut fields.codes))?;
    }
    let attrs = b.attrs_since(0);
    let ids = span_ids(
        trace_id(&s.trace_id),
        span_id(&s.span_id),
        s.parent_span_id
            .as_ref()
            .filter(|p| !p.0.is_empty())
            .map(|p| SpanId::parse_hex(&p.0)),
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
    let mut events: Vec<Event> = Vec::new();
    for e in s.events.iter().flatten() {
        let mark = b.mark();
        for kv in e.attributes.iter().flatten() {
            attribute(b, kv, None)?;
        }
        let time_ns = e.time_unix_nano.map_or(0, |t| t.0);
        events.push(event(b, mark, time_ns, bytes(&e.name)));
    }
    let mut links: Vec<Link> = Vec::new();
    for l in s.links.iter().flatten() {
        let mark = b.mark();
        for kv in l.attributes.iter().flatten() {
            attribute(b, kv, None)?;
        }
        links.extend(link(b, mark, trace_id(&l.trace_id), span_id(&l.span_id)));
    }
    b.accept(ids, resource, fields, attrs, events, links);
    Ok(())
}

fn attribute(
    b: &mut Builder,
    kv: &KeyValueJson<'_>,
    codes: Option<&mut Codes>,
) -> Result<(), JsonError> {
    if let Some(value) = kv.value()? {
        b.attribute(bytes(&kv.key), value, codes);
    }
    Ok(())
}

fn bytes<'a>(text: &'a Option<Text<'_>>) -> &'a [u8] {
    text.as_ref().map_or(&[], |t| t.0.as_bytes())
}

/// A hex trace id; a missing or empty one is "0 bytes", as on the protobuf path.
fn trace_id(text: &Option<Text<'_>>) -> Result<TraceId, IdError> {
    match text.as_ref().map_or("", |t| &t.0) {
        "" => TraceId::from_bytes(&[]),
        hex => TraceId::parse_hex(hex),
    }
}

fn span_id(text: &Option<Text<'_>>) -> Result<SpanId, IdError> {
    match text.as_ref().map_or("", |t| &t.0) {
        "" => SpanId::from_bytes(&[]),
        hex => SpanId::parse_hex(hex),
    }
}

// The request's shape. Every field is optional (`null` reads as absent); field
// names are lowerCamelCase, with the proto's snake_case names as aliases where
// they differ.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request<'a> {
    #[serde(borrow, alias = "resource_spans")]
    resource_spans: Option<Vec<ResourceSpansJson<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpansJson<'a> {
    #[serde(borrow)]
    resource: Option<ResourceJson<'a>>,
    #[serde(borrow, alias = "scope_spans")]
    scope_spans: Option<Vec<ScopeSpansJson<'a>>>,
}

#[derive(Deserialize)]
struct ResourceJson<'a> {
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
}

#[derive(Deserialize)]
struct ScopeSpansJson<'a> {
    #[serde(borrow)]
    spans: Option<Vec<SpanJson<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpanJson<'a> {
    #[serde(borrow, alias = "trace_id")]
    trace_id: Option<Text<'a>>,
    #[serde(borrow, alias = "span_id")]
    span_id: Option<Text<'a>>,
    #[serde(borrow, alias = "parent_span_id")]
    parent_span_id: Option<Text<'a>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    kind: Option<Kind>,
    #[serde(alias = "start_time_unix_nano")]
    start_time_unix_nano: Option<Int<u64>>,
    #[serde(alias = "end_time_unix_nano")]
    end_time_unix_nano: Option<Int<u64>>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
    #[serde(borrow)]
    events: Option<Vec<EventJson<'a>>>,
    #[serde(borrow)]
    links: Option<Vec<LinkJson<'a>>>,
    #[serde(borrow)]
    status: Option<StatusJson<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    #[serde(alias = "time_unix_nano")]
    time_unix_nano: Option<Int<u64>>,
    #[serde(borrow)]
    name: Option<Text<'a>>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkJson<'a> {
    #[serde(borrow, alias = "trace_id")]
    trace_id: Option<Text<'a>>,
    #[serde(borrow, alias = "span_id")]
    span_id: Option<Text<'a>>,
    #[serde(borrow)]
    attributes: Option<Vec<KeyValueJson<'a>>>,
}

#[derive(Deserialize)]
struct StatusJson<'a> {
    #[serde(borrow)]
    message: Option<Text<'a>>,
    code: Option<StatusCode>,
}

#[derive(Deserialize)]
struct KeyValueJson<'a> {
    #[serde(borrow)]
    key: Option<Text<'a>>,
    #[serde(borrow)]
    value: Option<AnyJson<'a>>,
}

impl KeyValueJson<'_> {
    /// The value, or `None` when it is unset (the attribute is skipped).
    fn value(&self) -> Result<Option<Value<'_>>, JsonError> {
        let Some(any) = &self.value else {
            return Ok(None);
        };
        Ok(Some(match any {
            AnyJson {
                string_value: Some(s),
                ..
            } => Value::Str(s.0.as_bytes()),
            AnyJson {
                bool_value: Some(v),
                ..
            } => Value::Bool(*v),
            AnyJson {
                int_value: Some(v), ..
            } => Value::Int(v.0),
            AnyJson {
                double_value: Some(v),
                ..
            } => Value::Double(v.0),
            AnyJson {
                array_value: None,
                kvlist_value: None,
                bytes_value: None,
                ..
            } => return Ok(None),
            complex => Value::Json(complex.to_json(0)?),
        }))
    }
}

/// An `AnyValue`: one of its fields is set (the first of them counts).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyJson<'a> {
    #[serde(borrow, alias = "string_value")]
    string_value: Option<Text<'a>>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value")]
    int_value: Option<Int<i64>>,
    #[serde(alias = "double_value")]
    double_value: Option<Double>,
    #[serde(borrow, alias = "array_value")]
    array_value: Option<Values<AnyJson<'a>>>,
    #[serde(borrow, alias = "kvlist_value")]
    kvlist_value: Option<Values<KeyValueJson<'a>>>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<Base64>,
}

/// `ArrayValue` and `KeyValueList`: both a list named `values`.
#[derive(Deserialize)]
struct Values<T> {
    values: Option<Vec<T>>,
}

impl AnyJson<'_> {
    /// The value as JSON, as the protobuf path renders it (bytes as hex, an
    /// unset value as `null`).
    fn to_json(&self, depth: usize) -> Result<serde_json::Value, JsonError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(JsonError::TooDeep);
        }
        Ok(if let Some(s) = &self.string_value {
            s.0.as_ref().into()
        } else if let Some(b) = self.bool_value {
            b.into()
        } else if let Some(i) = self.int_value {
            i.0.into()
        } else if let Some(d) = self.double_value {
            d.0.into()
        } else if let Some(array) = &self.array_value {
            let items = array.values.iter().flatten();
            items
                .map(|v| v.to_json(depth + 1))
                .collect::<Result<Vec<_>, _>>()?
                .into()
        } else if let Some(kvlist) = &self.kvlist_value {
            let mut map = serde_json::Map::new();
            for kv in kvlist.values.iter().flatten() {
                let value = match &kv.value {
                    Some(v) => v.to_json(depth + 1)?,
                    None => serde_json::Value::Null,
                };
                map.insert(kv.key.as_ref().map_or("", |k| &k.0).to_owned(), value);
            }
            map.into()
        } else if let Some(bytes) = &self.bytes_value {
            hex::encode(&bytes.0).into()
        } else {
            serde_json::Value::Null
        })
    }
}

/// A JSON string, borrowed from the body unless it has escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

/// A 64-bit integer: a decimal string (the mapping's form) or a plain number.
#[derive(Clone, Copy)]
struct Int<T>(T);

impl<'de, T> Deserialize<'de> for Int<T>
where
    T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T> Visitor<'_> for V<T>
        where
            T: TryFrom<u64> + TryFrom<i64> + std::str::FromStr,
        {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string holding one")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
                T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
                v.parse()
                    .map_err(|_| E::custom(format!("{v:?} is not an integer in range")))
            }
        }
        d.deserialize_any(V(PhantomData)).map(Int)
    }
}

/// A double: a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` or a numeric string.
#[derive(Clone, Copy)]
struct Double(f64);

impl<'de> Deserialize<'de> for Double {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                match v {
                    "NaN" => Ok(f64::NAN),
                    "Infinity" => Ok(f64::INFINITY),
                    "-Infinity" => Ok(f64::NEG_INFINITY),
                    _ => v
                        .parse()
                        .map_err(|_| E::custom(format!("{v:?} is not a number"))),
                }
            }
        }
        d.deserialize_any(V).map(Double)
    }
}

/// An enum: its number (the mapping's form) or its name.
fn enum_number<'de, D: Deserializer<'de>>(
    d: D,
    names: &'static [&'static str],
) -> Result<u64, D::Error> {
    struct V(&'static [&'static str]);
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an enum number or one of {:?}", self.0)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            // A negative number is an unknown value, like any other unknown number.
            Ok(u64::try_from(v).unwrap_or(u64::MAX))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            self.0
                .iter()
                .position(|name| *name == v)
                .map(|i| i as u64)
                .ok_or_else(|| E::unknown_variant(v, self.0))
        }
    }
    d.deserialize_any(V(names))
}

/// `Span.kind`.
#[derive(Clone, Copy)]
struct Kind(u64);

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &[
            "SPAN_KIND_UNSPECIFIED",
            "SPAN_KIND_INTERNAL",
            "SPAN_KIND_SERVER",
            "SPAN_KIND_CLIENT",
            "SPAN_KIND_PRODUCER",
            "SPAN_KIND_CONSUMER",
        ];
        enum_number(d, NAMES).map(Kind)
    }
}

/// `Status.code`.
#[derive(Clone, Copy)]
struct StatusCode(u64);

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
        enum_number(d, NAMES).map(StatusCode)
    }
}

/// `bytesValue`: base64, standard or URL-safe alphabet, padded or not.
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const CONFIG: GeneralPurposeConfig =
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
        const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
        const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
        let text = Text::deserialize(d)?;
        STANDARD
            .decode(text.0.as_bytes())
            .or_else(|_| URL_SAFE.decode(text.0.as_bytes()))
            .map(Base64)
            .map_err(|e| de::Error::custom(format!("bytesValue is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;
    use crate::ingest::decode_export;
    use crate::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
    use crate::ingest::otlp::common::v1::{
        any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
    };
    use crate::ingest::otlp::resource::v1::Resource as PbResource;
    use crate::ingest::otlp::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
    use crate::model::{AttrValue, Sym};

    fn decode(body: serde_json::Value) -> SpanBatch {
        decode_export_json(body.to_string().as_bytes()).expect("valid OTLP/JSON")
    }

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// The same request in both encodings decodes to the same spans and arena.
    #[test]
    fn json_and_protobuf_of_one_request_decode_alike() {
        use any_value::Value as V;
        let pb = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(PbResource {
                    attributes: vec![
                        kv("service.name", V::StringValue("checkout".into())),
                        kv("service.instance.id", V::StringValue("pod-7".into())),
                        kv("host.name", V::StringValue("node-1".into())),
                        kv("host.cpus", V::IntValue(8)),
                        kv("canary", V::BoolValue(true)),
                        kv("load", V::DoubleValue(0.25)),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16].into(),
                        span_id: vec![0x01; 8].into(),
                        parent_span_id: vec![0x02; 8].into(),
                        name: "GET /cart/{id}".into(),
                        kind: span::SpanKind::Server as i32,
                        start_time_unix_nano: 1_544_712_660_000_000_000,
                        end_time_unix_nano: 1_544_712_661_000_000_000,
                        attributes: vec![
                            kv("http.response.status_code", V::IntValue(504)),
                            kv("rpc.grpc.status_code", V::StringValue("4".into())),
                            kv("ratio", V::DoubleValue(0.5)),
                            kv("retry", V::BoolValue(true)),
                            kv("raw", V::BytesValue(vec![0xde, 0xad].into())),
                            kv(
                                "tags",
                                V::ArrayValue(ArrayValue {
                                    values: vec![
                                        AnyValue {
                                            value: Some(V::StringValue("a".into())),
                                        },
                                        AnyValue {
                                            value: Some(V::IntValue(-2)),
                                        },
                                        AnyValue { value: None },
                                    ],
                                }),
                            ),
                            kv(
                                "map",
                                V::KvlistValue(KeyValueList {
                                    values: vec![kv("k", V::BoolValue(false))],
                                }),
                            ),
                        ],
                        events: vec![span::Event {
                            time_unix_nano: 1_544_712_660_500_000_000,
                            name: "exception".into(),
                            attributes: vec![kv(
                                "exception.type",
                                V::StringValue("TimeoutError".into()),
                            )],
                            ..Default::default()
                        }],
                        links: vec![
                            span::Link {
                                trace_id: vec![0xcd; 16].into(),
                                span_id: vec![0x03; 8].into(),
                                attributes: vec![kv("why", V::StringValue("batch".into()))],
                                ..Default::default()
                            },
                            span::Link {
                                trace_id: vec![0xcd; 3].into(),
                                span_id: vec![0x03; 8].into(),
                                ..Default::default()
                            },
                        ],
                        status: Some(Status {
                            code: 2,
                            message: "deadline exceeded".into(),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let from_pb = decode_export(&pb.encode_to_vec()).unwrap();
        // The second time, the resource comes from the thread's cache: the same.
        let again = decode_export(&pb.encode_to_vec()).unwrap();
        assert!(again.traces[0].1.arena == from_pb.traces[0].1.arena);
        let from_json = decode(json!({"resourceSpans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"stringValue": "checkout"}},
                {"key": "service.instance.id", "value": {"stringValue": "pod-7"}},
                {"key": "host.name", "value": {"stringValue": "node-1"}},
                {"key": "host.cpus", "value": {"intValue": "8"}},
                {"key": "canary", "value": {"boolValue": true}},
                {"key": "load", "value": {"doubleValue": 0.25}}
            ]},
            "scopeSpans": [{"scope": {"name": "lib"}, "spans": [{
                "traceId": "abababababababababababababababab",
                "spanId": "0101010101010101",
                "parentSpanId": "0202020202020202",
                "name": "GET /cart/{id}",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": "1544712661000000000",
                "attributes": [
                    {"key": "http.response.status_code", "value": {"intValue": "504"}},
                    {"key": "rpc.grpc.status_code", "value": {"stringValue": "4"}},
                    {"key": "ratio", "value": {"doubleValue": 0.5}},
                    {"key": "retry", "value": {"boolValue": true}},
                    {"key": "raw", "value": {"bytesValue": "3q0="}},
                    {"key": "tags", "value": {"arrayValue": {"values": [
                        {"stringValue": "a"}, {"intValue": "-2"}, {}
                    ]}}},
                    {"key": "map", "value": {"kvlistValue": {"values": [
                        {"key": "k", "value": {"boolValue": false}}
                    ]}}}
                ],
                "events": [{"timeUnixNano": "1544712660500000000", "name": "exception",
                    "attributes": [{"key": "exception.type", "value": {"stringValue": "TimeoutError"}}]}],
                "links": [
                    {"traceId": "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", "spanId": "0303030303030303",
                     "attributes": [{"key": "why", "value": {"stringValue": "batch"}}]},
                    {"traceId": "cdcdcd", "spanId": "0303030303030303"}
                ],
                "status": {"code": 2, "message": "deadline exceeded"}
            }]}]
        }]}));
        assert_eq!((from_json.accepted, from_json.rejected), (1, 0));
        assert_eq!(from_json.traces.len(), 1);
        let ((pb_id, pb_set), (json_id, json_set)) = (&from_pb.traces[0], &from_json.traces[0]);
        assert_eq!(pb_id, json_id);
        assert_eq!(pb_set.spans, json_set.spans);
        assert!(
            pb_set.arena == json_set.arena,
            "the same attributes, packed alike"
        );
        let sp = &json_set.spans[0];
        assert_eq!(sp.http_status.map(|c| c.get()), Some(504));
        assert_eq!(sp.grpc_status, Some(4));
        assert_eq!(sp.links().len(), 1, "a link with a malformed id is dropped");
        let arena = &json_set.arena;
        assert_eq!(
            arena.get(sp.attrs, Sym::new("raw")),
            Some(AttrValue::Json("\"dead\""))
        );
        let Some(AttrValue::Json(tags)) = arena.get(sp.attrs, Sym::new("tags")) else {
            panic!("tags kept as JSON text")
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(tags).unwrap(),
            json!(["a", -2, null])
        );
        // The resource's other attributes travel with the span, typed.
        let resource = arena.get(sp.attrs, *crate::model::RESOURCE_ATTRS);
        let Some(AttrValue::Str(text)) = resource else {
            panic!("resource attributes: {resource:?}")
        };
        assert_eq!(
            serde_json::from_str::<Vec<(String, serde_json::Value)>>(text).unwrap(),
            vec![
                ("host.name".to_owned(), json!("node-1")),
                ("host.cpus".to_owned(), json!(8)),
                ("canary".to_owned(), json!(true)),
                ("load".to_owned(), json!(0.25)),
            ]
        );
    }

    #[test]
    fn snake_case_names_plain_numbers_enum_names_nulls_and_unknown_fields_are_read() {
        let batch = decode(json!({"resource_spans": [{
            "resource": {"attributes": [
                {"key": "service.name", "value": {"string_value": "cart"}}
            ], "droppedAttributesCount": 0},
            "schemaUrl": "https://opentelemetry.io/schemas/1.4.0",
            "scope_spans": [{"spans": [{
                "trace_id": "5B8EFFF798038103D269B633813FC60C",
                "span_id": "EEE19B7EC3C1B174",
                "parent_span_id": null,
                "name": "SELECT",
                "kind": "SPAN_KIND_CLIENT",
                "start_time_unix_nano": 10,
                "end_time_unix_nano": "30",
                "flags": 256,
                "traceState": "",
                "attributes": [
                    {"key": "n", "value": {"int_value": 7}},
                    {"key": "inf", "value": {"double_value": "-Infinity"}},
                    {"key": "unset", "value": {}},
                    {"key": "null", "value": null}
                ],
                "events": null,
                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                "somethingNew": {"nested": [1, 2, {"x": null}]}
            }]}]
        }]}));
        assert_eq!((batch.accepted, batch.rejected), (1, 0));
        let (trace_id, set) = &batch.traces[0];
        assert_eq!(trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
        let sp = &set.spans[0];
        assert_eq!(sp.span_id.to_string(), "eee19b7ec3c1b174");
        assert_eq!(sp.parent_id, None);
        assert_eq!(sp.service.as_str(), "cart");
        assert_eq!((sp.start_ns, sp.end_ns), (10, 30));
        assert_eq!(sp.kind, crate::model::SpanKind::Client);
        assert_eq!(sp.status, crate::model::StatusCode::Error);
        assert_eq!(sp.status_message(), Some("boom"));
        let attrs: Vec<_> = set.arena.iter(sp.attrs).collect();
        assert_eq!(
            attrs,
            vec![
                (Sym::new("n"), AttrValue::Int(7)),
                (Sym::new("inf"), AttrValue::Double(f64::NEG_INFINITY)),
            ],
            "unset values are skipped"
        );
    }

    #[test]
    fn a_missing_or_malformed_id_rejects_that_span_only() {
        let good = "0af7651916cd43dd8448eb211c80319c";
        let span = |trace: serde_json::Value, id: serde_json::Value, parent: &str| json!({"traceId": trace, "spanId": id, "parentSpanId": parent, "name": "s"});
        let mut spans = vec![
            span(json!(good), json!("b7ad6b7169203331"), ""),
            // the id misspelled: left empty
            json!({"traceID": good, "spanId": "b7ad6b7169203332", "name": "s"}),
            span(json!(""), json!("b7ad6b7169203333"), ""),
            span(
                json!("0af7651916cd43dd8448eb211c8031"),
                json!("b7ad6b7169203334"),
                "",
            ),
            span(
                json!("0af7651916cd43dd8448eb211c80319g"),
                json!("b7ad6b7169203335"),
                "",
            ),
            // base64 instead of hex
            span(
                json!("CvdlGRbNQ92ESOshHIAxnA=="),
                json!("b7ad6b7169203336"),
                "",
            ),
            span(
                json!("00000000000000000000000000000000"),
                json!("b7ad6b7169203337"),
                "",
            ),
            span(json!(good), json!(null), ""),
            span(json!(good), json!("b7ad6b71692033"), ""),
            span(json!(good), json!("b7ad6b7169203338"), "zz"),
            span(json!(good), json!("b7ad6b7169203339"), "0000000000000000"),
        ];
        spans.push(span(
            json!("1af7651916cd43dd8448eb211c80319c"),
            json!("c7ad6b7169203331"),
            "b7ad6b7169203331",
        ));
        let batch = decode(json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}));
        assert_eq!((batch.accepted, batch.rejected), (2, 10));
        let ids: Vec<String> = batch.traces.iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(
            ids,
            vec![
                good.to_owned(),
                "1af7651916cd43dd8448eb211c80319c".to_owned()
            ],
            "each good span in its own trace"
        );
        assert_eq!(batch.traces[0].1.len(), 1);
        assert_eq!(
            batch.errors,
            vec![
                "resource_spans[0] span[1]: trace id must be 16 bytes, got 0",
                "resource_spans[0] span[2]: trace id must be 16 bytes, got 0",
                "resource_spans[0] span[3]: trace id is not 32 lowercase or uppercase hex digits",
            ]
        );
        let message = crate::ingest::partial_success_message(&batch);
        assert!(message.starts_with("rejected 10 of 12 spans"), "{message}");
    }

    #[test]
    fn malformed_bodies_fail_the_request_and_never_overflow_the_stack() {
        for body in [
            "",
            "{",
            "[]",
            "null",
            r#"{"resourceSpans": {}}"#,
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}"#,
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}"#,
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": -1}]}]}]}"#,
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SERVER"}]}]}]}"#,
            r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "b", "value": {"bytesValue": "!!"}}]}]}]}]}"#,
        ] {
            let err = decode_export_json(body.as_bytes()).unwrap_err();
            assert!(matches!(err, JsonError::Syntax(_)), "{body}: {err}");
        }
        let nested = |depth: usize| {
            let value = (0..depth).fold(
                json!({"stringValue": "x"}),
                |inner, _| json!({"arrayValue": {"values": [inner]}}),
            );
            json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
                "attributes": [{"key": "deep", "value": value}]
            }]}]}]})
            .to_string()
        };
        assert!(decode_export_json(nested(MAX_VALUE_DEPTH).as_bytes()).is_ok());
        let err = decode_export_json(nested(MAX_VALUE_DEPTH + 1).as_bytes()).unwrap_err();
        assert!(matches!(err, JsonError::TooDeep), "{err}");
        // Far deeper than any stack would take, built as text (serde_json's own
        // printer would recurse): refused by the parser's depth limit.
        let deep = 100_000;
        let body = format!(
            r#"{{"resourceSpans": [{{"scopeSpans": [{{"spans": [{{"attributes": [{{"key": "deep", "value": {}{}}}]}}]}}]}}]}}"#,
            r#"{"arrayValue": {"values": ["#.repeat(deep),
            "]}}".repeat(deep)
        );
        let err = decode_export_json(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
        // An unknown field is skipped without recursion, however deep.
        let unknown = format!(r#"{{"future": {}{}}}"#, "[".repeat(deep), "]".repeat(deep));
        assert_eq!(decode_export_json(unknown.as_bytes()).unwrap().accepted, 0);
    }
}
