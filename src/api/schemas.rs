//! How the core's types become JSON and OpenAPI schemas: the analysis and the
//! model derive only `serde` (format-neutral), and this module turns their
//! values into JSON and describes the ones the answers show.
//!
//! Decision: a core type the API shows gets a hand-written
//! [`utoipa::PartialSchema`]/[`utoipa::ToSchema`] implementation here, built
//! from the core's own list of values where it has one, rather than a copy of
//! the type as an API body: the value the API serialises is the core's, so a
//! copy would be a second definition of the same shape. A finding's evidence
//! is documented as an object (its fields differ per kind; `docs/DETECTORS.md`
//! lists them).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::analyze::budget::Layer;

/// `value` as JSON. Objects come out with their keys sorted, as every answer
/// has always shown evidence.
pub fn json<T: Serialize>(value: &T) -> Value {
    // The core's types serialise to JSON objects with string keys, which
    // cannot fail.
    serde_json::to_value(value).unwrap_or_default()
}

/// A string schema with `description` and the values `values` serialise to.
fn string_enum<T: Serialize>(
    description: &str,
    values: impl IntoIterator<Item = T>,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .enum_values(Some(values.into_iter().map(|v| json(&v))))
        .into()
}

impl PartialSchema for Layer {
    fn schema() -> RefOr<Schema> {
        string_enum("A layer whose limit is a known fingerprint.", Layer::ALL)
    }
}

impl ToSchema for Layer {}

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

    #[test]
    fn evidence_of_another_kind_is_refused() {
        let wrong = stored("slow_health_check", json!({"calls": 3}));
        let err = serde_json::from_str::<Observation>(&wrong).unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }
}
