//! How the core's types become JSON and OpenAPI schemas: the analysis and the
//! model derive only `serde` (format-neutral), and this module turns their
//! values into JSON and describes the ones the answers show.
//!
//! Decision: a core type the API shows gets a hand-written
//! [`utoipa::PartialSchema`]/[`utoipa::ToSchema`] implementation here, built
//! from the core's own list of values where it has one, rather than a copy of
//! the type as an API body: the value the API serialises is the core's, so a
//! copy would be a second definition of the same shape. Each schema says what
//! the type's documentation says, as a derived one would. A finding's evidence
//! is documented as an object (its fields differ per kind; `docs/DETECTORS.md`
//! lists them).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{schema, PartialSchema, ToSchema};

use crate::analyze::budget::Layer;
use crate::analyze::coverage::Level;
use crate::analyze::{ChainHop, CodeLocation, Crossed, Culprit, FindingKind, HopKind, Severity};
use crate::model::intern::InternerUsage;
use crate::model::{AttrValue, SpanId, SpanKind, StatusCode, Sym, TraceId, Warning, WarningCode};
use crate::stats::StatsSnapshot;

/// `value` as JSON. Objects come out with their keys sorted, as every answer
/// has always shown evidence.
pub fn json<T: Serialize>(value: &T) -> Value {
    // The core's types serialise to JSON objects with string keys, which
    // cannot fail.
    serde_json::to_value(value).unwrap_or_default()
}

/// An attribute value as JSON (the trace view, the Jaeger tags): a JSON
/// text (an array or a map from OTLP) as the value it encodes, or as the
/// text itself if it encodes none.
pub fn attr_json(value: AttrValue<'_>) -> Value {
    match value {
        AttrValue::Str(s) => s.into(),
        AttrValue::Int(i) => i.into(),
        AttrValue::Double(d) => d.into(),
        AttrValue::Bool(b) => b.into(),
        AttrValue::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
    }
}

/// The `[key, value]` pairs of a resource's other attributes, as ingest
/// keeps them under [`crate::model::RESOURCE_ATTRS`] (empty if malformed).
pub fn resource_attrs(text: &str) -> Vec<(String, Value)> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Implements [`PartialSchema`] for the core type `$ty` with `$schema`, and
/// [`ToSchema`] registering the named schemas that one refers to.
macro_rules! core_schema {
    ($ty:ty => $schema:expr $(; refers to $($named:ty),+)?) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }

        impl ToSchema for $ty {
            $(fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                $(
                    schemas.push((<$named>::name().into_owned(), <$named>::schema()));
                    <$named>::schemas(schemas);
                )+
            })?
        }
    };
}

/// A string schema with `description` (if the type has one) and the values
/// `values` serialise to.
fn string_enum<T: Serialize>(
    description: Option<&str>,
    values: impl IntoIterator<Item = T>,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(description)
        .enum_values(Some(values.into_iter().map(|v| json(&v))))
        .into()
}

/// A string schema with `description` and, if given, the `pattern` its
/// values match.
pub(super) fn string_schema(description: &str, pattern: Option<&str>) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}

/// The schema named after `T`, by reference.
fn named<T: ToSchema>() -> RefOr<Schema> {
    Ref::from_schema_name(T::name()).into()
}

/// `schema` with the documentation of the field it describes.
fn described(schema: impl Into<RefOr<Schema>>, description: &str) -> RefOr<Schema> {
    match schema.into() {
        RefOr::Ref(mut r) => {
            r.description = description.to_owned();
            r.into()
        }
        RefOr::T(Schema::Object(mut o)) => {
            o.description = Some(description.to_owned());
            o.into()
        }
        other => other,
    }
}

/// `schema`, or null.
fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(schema)
        .into()
}

/// An object schema, property by property.
struct Object(ObjectBuilder);

impl Object {
    fn new(description: &str) -> Object {
        Object(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(description)),
        )
    }

    /// A property every value has.
    fn required(self, name: &str, schema: impl Into<RefOr<Schema>>) -> Object {
        Object(self.0.property(name, schema).required(name))
    }

    /// A property a value may lack (or have as null).
    fn optional(self, name: &str, schema: impl Into<RefOr<Schema>>) -> Object {
        Object(self.0.property(name, schema))
    }

    fn build(self) -> RefOr<Schema> {
        self.0.into()
    }
}

core_schema!(Sym => string_schema("A service, operation or attribute name.", None));

core_schema!(TraceId => string_schema(
    "A W3C trace id: 32 lowercase hex digits.",
    Some("^[0-9a-f]{32}$"),
));

core_schema!(SpanId => string_schema(
    "A span id: 16 lowercase hex digits.",
    Some("^[0-9a-f]{16}$"),
));

// The document replaces this description by the list of kinds with their
// labels (`openapi::document`).
core_schema!(FindingKind => string_enum(Some("What was found."), FindingKind::ALL));

core_schema!(Severity => string_enum(Some("How urgent: ordered, worst last."), Severity::ALL));

core_schema!(Layer => string_enum(Some("A layer whose limit is a known fingerprint."), Layer::ALL));

core_schema!(HopKind => string_enum(
    Some(
        "Whether a hop is a span's own work, the network time of an edge, or the\n\
         time a request queued in front of its callee before the callee started it.",
    ),
    HopKind::ALL,
));

core_schema!(Level => string_enum(Some("How much a detector loses."), Level::ALL));

core_schema!(WarningCode => string_enum(None, WarningCode::ALL));

core_schema!(SpanKind => string_enum(Some("OTLP span kind."), SpanKind::ALL));

core_schema!(StatusCode => string_enum(Some("OTLP span status code."), StatusCode::ALL));

core_schema!(Culprit => Object::new("The hop a finding blames.")
    .required("service", named::<Sym>())
    .required("operation", named::<Sym>())
    .optional("peer", nullable(described(
        named::<Sym>(),
        "The callee or resource on the other side (a service, a database, a host).",
    )))
    .build(); refers to Sym);

core_schema!(ChainHop => Object::new("One hop of the chain from the entry point to the culprit.")
    .optional("span_id", nullable(named::<SpanId>()))
    .required("service", named::<Sym>())
    .required("operation", named::<Sym>())
    .required("duration_ms", schema!(f64))
    .required("timed_out", schema!(bool))
    .build(); refers to SpanId, Sym);

core_schema!(Crossed => Object::new(
    "One threshold an observation crossed: its key in the `[detectors]`\n\
     configuration, its configured limit and the value observed.",
)
    .required("threshold", described(
        schema!(String),
        "The key under `[detectors]`, e.g. `n_plus_one.min_calls`.",
    ))
    .required("limit", schema!(f64))
    .required("value", schema!(f64))
    .build());

core_schema!(CodeLocation => Object::new(
    "Where in the source code a span was made (`code.file.path`,\n\
     `code.line.number`, `code.function.name`, or the older `code.filepath`,\n\
     `code.lineno`, `code.function`; `code.namespace`).",
)
    .optional("file", schema!(Option<String>))
    .optional("line", schema!(Option<u32>))
    .optional("function", schema!(Option<String>))
    .optional("namespace", schema!(Option<String>))
    .build());

core_schema!(Warning => Object::new(
    "What was wrong with a trace or uncertain about its analysis. Reported with\n\
     the trace, never a reason to fail.",
)
    .required("code", named::<WarningCode>())
    .optional("span_id", nullable(named::<SpanId>()))
    .required("message", schema!(String))
    .build(); refers to WarningCode, SpanId);

core_schema!(InternerUsage => Object::new(
    "How much of its limit the interner uses, and how many new names it refused.",
)
    .required("names", described(schema!(usize), "Distinct names interned from the wire."))
    .required("bytes", described(schema!(usize), "Their cost in bytes, overhead included."))
    .required("limit_bytes", described(schema!(usize), "The limit on `bytes`."))
    .required("names_refused", described(
        schema!(u64),
        "New names read as [`OVER_LIMIT`] because the limit was reached.",
    ))
    .build());

// Each counter with its documentation, from the counters' own list.
core_schema!(StatsSnapshot => StatsSnapshot::default()
    .fields()
    .into_iter()
    .fold(Object::new("A point-in-time copy of [`Stats`]."), |o, (name, doc, _)| {
        o.required(name, described(schema!(u64), &doc))
    })
    .build());

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::analyze::Observation;

    /// An observation as the state file of earlier versions holds it (its
    /// `kind` before its `evidence`), with `evidence` of kind `kind`.
    fn stored(kind: &str, evidence: Value) -> String {
        format!(
            r#"{{"kind":"{kind}","severity":"warning","culprit":{{"service":"api","operation":"GET /b","peer":null}},"chain":[],"summary":"s","remedy":"r","evidence":{evidence},"trace_ids":[],"count":1,"seen_ns":5,"crossed":[],"location":null}}"#
        )
    }

    #[test]
    fn stored_evidence_loads_and_is_shown_as_it_was() {
        let edge = json!({"caller": "api", "callee": "b", "operation": "GET /b"});
        let cases = [
            stored(
                "timeout_inversion",
                json!({
                    "entry": {"service": "api", "operation": "GET /a"}, "edge": edge,
                    "timeout_ms": 30000.0, "supporting_calls": 4, "budget_left_ms": 28950.0,
                    "outer": {"kind": "edge", "caller": "gw", "callee": "api",
                              "operation": "GET /a", "timeout_ms": 29000.0},
                    "equal_to_outer": false, "calls": 4, "calls_over_budget": 4,
                }),
            ),
            stored(
                "blocked_worker",
                json!({
                    "shape": "ends_in_staircase", "max_in_flight": 4, "step_ms": 50.0,
                    "waited_requests": 3, "wait_p95_ms": 150.0, "wait_total_ms": 300.0,
                    "instance": "api-1", "requests": 4,
                    "other_instances": [{"instance": "api-2", "requests": 2,
                                         "max_in_flight": 1, "overlap_share": 0.0}],
                }),
            ),
            stored(
                "gateway_timeout",
                json!({
                    "timeout_ms": 29000.0, "layer": "aws_api_gateway", "supporting_traces": 3,
                    "timed_out_traces": 3, "traces": 10, "cluster_ms": [28990.0, 29010.0],
                    "http_status": 504, "relayed_from": null,
                }),
            ),
        ];
        for text in cases {
            let o: Observation = serde_json::from_str(&text).unwrap();
            let case: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(o.evidence.kind().as_str(), case["kind"]);
            assert_eq!(
                serde_json::to_string(&json(&o.evidence)).unwrap(),
                serde_json::to_string(&case["evidence"]).unwrap()
            );
            assert_eq!(json(&o), case, "written back as it was read");
        }
    }

    /// The property names of object schema `schema`, and the required ones.
    fn properties(schema: RefOr<Schema>) -> (Vec<String>, Vec<String>) {
        let RefOr::T(Schema::Object(o)) = schema else {
            panic!("an object schema")
        };
        (o.properties.into_keys().collect(), o.required)
    }

    /// A hand-written schema drifts when its type gains or loses a field:
    /// each lists exactly the fields the core's values serialise to (and
    /// requires none they lack).
    #[test]
    fn each_object_schema_lists_the_fields_its_values_show() {
        let span_id = SpanId::from_u64(1);
        let cases = [
            (
                Culprit::schema(),
                json(&Culprit {
                    service: Sym::new("api"),
                    operation: Sym::new("GET /"),
                    peer: Some(Sym::new("db")),
                }),
            ),
            (
                ChainHop::schema(),
                json(&ChainHop {
                    span_id,
                    service: Sym::new("api"),
                    operation: Sym::new("GET /"),
                    duration_ms: 1.0,
                    timed_out: false,
                }),
            ),
            (Crossed::schema(), json(&Crossed::new("x.min", 1, 2))),
            (
                CodeLocation::schema(),
                json(&CodeLocation {
                    file: Some("a.rs".into()),
                    line: Some(1),
                    function: Some("f".into()),
                    namespace: Some("m".into()),
                }),
            ),
            (
                Warning::schema(),
                json(&Warning {
                    code: WarningCode::Orphan,
                    span_id,
                    message: "m".into(),
                }),
            ),
            (
                InternerUsage::schema(),
                json(&crate::model::intern::usage()),
            ),
            (StatsSnapshot::schema(), json(&StatsSnapshot::default())),
        ];
        for (schema, value) in cases {
            let (mut names, required) = properties(schema);
            let object = value.as_object().expect("an object");
            let mut shown: Vec<String> = object.keys().cloned().collect();
            names.sort();
            shown.sort();
            assert_eq!(names, shown, "{value}");
            for name in required {
                assert!(object.contains_key(&name), "{name} required but not shown");
            }
        }
    }

    #[test]
    fn evidence_of_another_kind_is_refused() {
        let wrong = stored("slow_health_check", json!({"calls": 3}));
        let err = serde_json::from_str::<Observation>(&wrong).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }
}
