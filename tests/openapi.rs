//! `GET /api/v1/openapi.json` over HTTP: it is the document the router was
//! built from, every operation in it is served with the parameters it lists,
//! and the answers carry what its schemas require.

mod support;

use std::collections::BTreeSet;

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{sp, TestDaemon};

/// Follows a local `$ref` (`#/components/schemas/Name`).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(doc, doc.pointer(pointer).expect("$ref resolves"))
        }
        None => schema,
    }
}

/// Checks that `value` has every property `schema` requires, one level into
/// arrays of objects too; returns what is missing.
fn missing_required(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut missing = Vec::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().expect("property name");
        match value.get(name) {
            None => missing.push(format!("{at}.{name}")),
            Some(Value::Array(items)) => {
                let item_schema = &resolve(doc, &schema["properties"][name])["items"];
                for (i, item) in items.iter().enumerate() {
                    if resolve(doc, item_schema)["type"] == "object" {
                        missing.extend(missing_required(
                            doc,
                            item_schema,
                            item,
                            &format!("{at}.{name}[{i}]"),
                        ));
                    }
                }
            }
            Some(_) => {}
        }
    }
    missing
}

/// A value the parameter's schema forbids, when it forbids any.
fn invalid_value(doc: &Value, schema: &Value) -> Option<&'static str> {
    let schema = resolve(doc, schema);
    if let Some(alternatives) = schema["oneOf"].as_array() {
        // Forbidden by every alternative.
        let each: Option<Vec<_>> = alternatives.iter().map(|a| invalid_value(doc, a)).collect();
        return each.map(|_| "not a valid value");
    }
    if schema["type"] == "integer" || schema["type"] == "number" {
        Some("not-a-number")
    } else if schema["type"] == "boolean"
        || schema.get("enum").is_some()
        || schema.get("pattern").is_some()
    {
        Some("not a valid value")
    } else {
        None
    }
}

fn path_params(template: &str) -> BTreeSet<String> {
    template
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

/// One gateway request that timed out behind it: a trace and a finding.
async fn one_timed_out_trace(d: &TestDaemon) -> String {
    let trace = vec![
        sp("gateway", (1, 0), "GET /a", SpanKind::Server, (0, 300)).failed("timed out", 504),
        sp("gateway", (2, 1), "GET /b", SpanKind::Client, (5, 295)).deadline(),
        sp("backend", (3, 2), "GET /b", SpanKind::Server, (10, 900)),
    ];
    let ids = support::send(d, vec![trace]).await;
    d.wait_trace(ids[0], 3).await;
    ids[0].to_string()
}

#[tokio::test]
async fn the_served_document_lists_every_v1_route_with_its_parameters() {
    let d = support::start(Settings::default()).await;
    let trace_id = one_timed_out_trace(&d).await;
    let findings = d
        .wait_for("/api/v1/findings", |s, b| {
            s == 200 && b["findings"].as_array().is_some_and(|f| !f.is_empty())
        })
        .await;
    let finding_id = findings["findings"][0]["id"].as_str().unwrap().to_owned();

    let (status, doc) = d.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // The router and the document come from the same registrations.
    let from_code = serde_json::to_value(hopscope::api::openapi_document()).unwrap();
    assert_eq!(
        doc, from_code,
        "the served document is the one built with the router"
    );

    // Each finding kind is listed and described, the new patterns too.
    let kind = &doc["components"]["schemas"]["FindingKind"];
    let described = kind["description"].as_str().expect("kinds described");
    let kinds = kind["enum"].as_array().expect("kinds listed");
    assert_eq!(kinds.len(), 16, "{kind}");
    for k in kinds {
        assert!(
            described.contains(&format!("- `{}` (", k.as_str().unwrap())),
            "{k}: {described}"
        );
    }
    assert!(
        described.contains("- `n_plus_one` (N+1 calls): "),
        "{described}"
    );
    // A finding's source location and thresholds; a trace's marks.
    // A schema's properties, a flattened struct's (`allOf`) included.
    let properties = |name: &str| -> BTreeSet<String> {
        let schema = &doc["components"]["schemas"][name];
        std::iter::once(schema)
            .chain(schema["allOf"].as_array().into_iter().flatten())
            .filter_map(|s| s["properties"].as_object())
            .flat_map(|p| p.keys().cloned())
            .collect()
    };
    for (name, fields) in [
        ("FindingBody", &["location", "crossed"][..]),
        ("CodeLocation", &["file", "line", "function", "namespace"]),
        ("Crossed", &["threshold", "limit", "value"]),
        ("TraceBody", &["marks"]),
        ("MarkBody", &["finding_id", "kind", "span_ids"]),
    ] {
        let have = properties(name);
        for field in fields {
            assert!(have.contains(*field), "{name}.{field}: {have:?}");
        }
    }

    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.contains_key("/api/v1/openapi.json"));
    for (template, item) in paths {
        assert!(
            template.starts_with("/api/v1/"),
            "{template} is outside /api/v1"
        );
        let item = item.as_object().unwrap();
        assert_eq!(
            item.keys().collect::<Vec<_>>(),
            ["get"],
            "{template}: only GET"
        );
        let op = &item["get"];
        let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
        let documented: BTreeSet<String> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            documented,
            path_params(template),
            "{template}: path parameters"
        );

        let mut path = template.clone();
        for name in &documented {
            let sample = match name.as_str() {
                "trace_id" => &trace_id,
                "id" => &finding_id,
                other => panic!("{template}: no sample value for path parameter `{other}`"),
            };
            path = path.replace(&format!("{{{name}}}"), sample);
        }

        // Served, and with everything its schema requires.
        let (status, body) = d.get(&path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
        let missing = missing_required(&doc, schema, &body, "body");
        assert!(missing.is_empty(), "GET {path} lacks {missing:?}: {body}");

        // Each query parameter is read under its documented name: a value its
        // schema forbids is refused in the error shape, any other is taken.
        for p in params.iter().filter(|p| p["in"] == "query") {
            let name = p["name"].as_str().unwrap();
            assert_eq!(p["required"], false, "{template}: `{name}` is optional");
            let (status, body) = match invalid_value(&doc, &p["schema"]) {
                Some(bad) => {
                    let url = format!("{path}?{name}={}", bad.replace(' ', "%20"));
                    let (status, body) = d.get(&url).await;
                    assert_eq!(status, 400, "GET {url}: {body}");
                    assert!(body["error"]["code"].is_string(), "GET {url}: {body}");
                    let message = body["error"]["message"].as_str().unwrap();
                    assert!(message.contains(name), "GET {url}: {message}");
                    continue;
                }
                None => d.get(&format!("{path}?{name}=anything")).await,
            };
            assert_eq!(status, 200, "GET {path}?{name}=anything: {body}");
        }

        // Every documented error answer is in the one error shape.
        for (code, response) in op["responses"].as_object().unwrap() {
            if code != "200" {
                let schema = &response["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ErrorBody",
                    "{template} {code}"
                );
            }
        }
    }
    d.stop().await;
}

#[test]
fn v1_routes_are_registered_only_through_the_documented_router() {
    fn scan(dir: &std::path::Path, offenders: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, offenders);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let squeezed: String = text.split_whitespace().collect();
                if squeezed.contains(".route(\"/api/v1") {
                    offenders.push(path.display().to_string());
                }
            }
        }
    }
    let mut offenders = Vec::new();
    scan(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut offenders,
    );
    assert!(
        offenders.is_empty(),
        "register /api/v1 routes with `routes!` in src/api/openapi.rs, not `.route`: {offenders:?}"
    );
}

// Found by the property-based API check (.ci/api-check).

#[tokio::test]
async fn hops_with_since_after_until_answer_nothing_instead_of_panicking() {
    let d = support::start(Settings::default()).await;
    one_timed_out_trace(&d).await;
    let (status, body) = d.get("/api/v1/hops").await;
    assert_eq!(
        (status, body["entries"].as_array().unwrap().len()),
        (200, 1)
    );
    // A reversed window used to panic in the bucket range and drop the connection.
    let (status, body) = d.get("/api/v1/hops?since=100000&until=0").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], serde_json::json!([]));
    d.stop().await;
}

#[tokio::test]
async fn a_finding_id_with_a_sign_is_not_a_finding_id() {
    // u64::from_str_radix takes a leading `+`; the schema's 16 hex digits do not.
    let d = support::start(Settings::default()).await;
    let (status, body) = d.get("/api/v1/findings/+000000000000001").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_finding_id");
    d.stop().await;
}
