//! Which format an input is, from its content (never its name).
//!
//! * Not JSON (the first byte that is not whitespace is neither `{` nor `[`):
//!   OTLP protobuf, either one `ExportTraceServiceRequest` (it starts with
//!   field 1's tag, 0x0A, which reads as whitespace and is skipped) or a
//!   stream of requests each behind a 4-byte big-endian length, as the
//!   OpenTelemetry Collector's file exporter writes them (a length below
//!   16 MiB starts with 0x00). A single request whose bytes after the tag
//!   happen to read as JSON is tried as protobuf when it is not JSON.
//! * A JSON object whose first line is a whole JSON value: JSON Lines, one
//!   document per line (the Collector's file exporter writes OTLP/JSON so).
//! * Otherwise one JSON document. An object is OTLP/JSON when it has
//!   `resourceSpans` (or `resource_spans`), Jaeger when it has `data`, `spans`
//!   or `trace`; an array is Zipkin when its first element is a span (or an
//!   array of spans) with `traceId`, Jaeger when it is a trace with `spans`.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A format `hopscope analyze` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// OTLP `ExportTraceServiceRequest`s in protobuf.
    OtlpProtobuf,
    /// OTLP/JSON: one request, or JSON Lines of requests.
    OtlpJson,
    /// Jaeger query-API JSON.
    Jaeger,
    /// Zipkin v2 JSON.
    Zipkin,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::OtlpProtobuf => "OTLP protobuf",
            Format::OtlpJson => "OTLP/JSON",
            Format::Jaeger => "Jaeger JSON",
            Format::Zipkin => "Zipkin v2 JSON",
        })
    }
}

/// How the bytes of an input are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One protobuf request.
    ProtobufSingle,
    /// Length-delimited protobuf requests.
    ProtobufStream,
    /// One JSON document per line.
    JsonLines,
    /// One JSON document.
    JsonDocument,
}

/// The layout of an input from its first bytes (`head`, at least its first
/// line when it starts with `{`).
pub fn layout(head: &[u8]) -> Option<Layout> {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.iter().position(|b| !b.is_ascii_whitespace())?;
    Some(match text[first] {
        b'[' => Layout::JsonDocument,
        b'{' => {
            let line_end = text[first..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |i| first + i);
            let line = &text[first..line_end];
            if serde_json::from_slice::<IgnoredAny>(line).is_ok() {
                Layout::JsonLines
            } else {
                Layout::JsonDocument
            }
        }
        0 if text.len() >= 4 => Layout::ProtobufStream,
        _ => Layout::ProtobufSingle,
    })
}

/// The format of one JSON document, from its keys; `None` when it is none we read.
pub fn json_format(doc: &[u8]) -> Result<Option<Format>, serde_json::Error> {
    let shape: Shape = serde_json::from_slice(doc)?;
    let has = |keys: &[String], k: &str| keys.iter().any(|x| x == k);
    Ok(match shape {
        Shape::Object(keys) => {
            if has(&keys, "resourceSpans") || has(&keys, "resource_spans") {
                Some(Format::OtlpJson)
            } else if has(&keys, "data") || has(&keys, "spans") || has(&keys, "trace") {
                Some(Format::Jaeger)
            } else {
                None
            }
        }
        Shape::Array(None) => Some(Format::Zipkin),
        Shape::Array(Some(keys)) => {
            if has(&keys, "traceId") {
                Some(Format::Zipkin)
            } else if has(&keys, "spans") {
                Some(Format::Jaeger)
            } else {
                None
            }
        }
    })
}

/// A document's top-level keys, or the keys of its array's first object (or
/// of the first object of its first array: Zipkin's traces).
enum Shape {
    Object(Vec<String>),
    /// `None`: an empty array.
    Array(Option<Vec<String>>),
}

struct Keys(Vec<String>);

impl<'de> de::Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                // A trace as an array of spans: the first span's keys.
                let first = seq.next_element::<Keys>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(first.unwrap_or(Keys(Vec::new())))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> de::Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object or array")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shape, A::Error> {
                let Keys(keys) = <Keys as de::Deserialize>::deserialize(
                    de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(Shape::Object(keys))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let first = seq.next_element::<Keys>()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Array(first.map(|k| k.0)))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_from_the_first_bytes() {
        assert_eq!(
            layout(b"  {\"a\": 1}\n{\"a\": 2}\n"),
            Some(Layout::JsonLines)
        );
        assert_eq!(layout(b"{\n  \"a\": 1\n}\n"), Some(Layout::JsonDocument));
        assert_eq!(
            layout(b"[{\"traceId\": \"1\"}]"),
            Some(Layout::JsonDocument)
        );
        assert_eq!(layout(b"\x0a\x10..."), Some(Layout::ProtobufSingle));
        assert_eq!(
            layout(b"\x00\x00\x01\x00\x0a"),
            Some(Layout::ProtobufStream)
        );
        assert_eq!(layout(b" \n\t"), None);
    }

    #[test]
    fn json_formats_from_their_keys() {
        let f = |doc: &str| json_format(doc.as_bytes()).unwrap();
        assert_eq!(f(r#"{"resourceSpans": []}"#), Some(Format::OtlpJson));
        assert_eq!(f(r#"{"data": [], "total": 0}"#), Some(Format::Jaeger));
        assert_eq!(f(r#"{"traceID": "1", "spans": []}"#), Some(Format::Jaeger));
        assert_eq!(
            f(r#"[{"traceID": "1", "spans": []}]"#),
            Some(Format::Jaeger)
        );
        assert_eq!(f(r#"[{"traceId": "1", "id": "2"}]"#), Some(Format::Zipkin));
        assert_eq!(
            f(r#"[[{"traceId": "1", "id": "2"}]]"#),
            Some(Format::Zipkin)
        );
        assert_eq!(f(r#"{"hello": 1}"#), None);
        assert!(json_format(b"{\"data\": [").is_err());
    }
}
