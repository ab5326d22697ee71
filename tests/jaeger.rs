//! The Jaeger query API as Grafana's Jaeger datasource uses it: spans exported
//! over real OTLP (gRPC through the SDK's exporter, or OTLP/JSON posted to the
//! HTTP receiver), answers read over HTTP from the Jaeger listener and checked
//! against Jaeger's own answers and shapes (`tests/fixtures/jaeger-api/`,
//! `tests/fixtures/otlp-json/jaeger-ui-otlp2jaeger/`).

mod support;

use std::collections::BTreeSet;

use hopscope::clock::Clock;
use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::{json, Value};
use support::{sp, Sp, TestDaemon};

/// When the Jaeger fixtures were recorded (their spans' end, unix ns).
const JANUARY_2024: u64 = 1_706_678_909_209_835_000;
const MARCH_2024: u64 = 1_711_138_247_116_321_958;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{path}")).expect("fixture")
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).expect("fixture is JSON")
}

/// `GET` on the Jaeger listener, with an optional bearer token.
async fn get_with(d: &TestDaemon, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", d.jaeger));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("Jaeger API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("Jaeger API answers JSON"))
}

async fn get(d: &TestDaemon, path: &str) -> (u16, Value) {
    get_with(d, path, None).await
}

/// A successful answer's `data`, after checking the envelope around it.
async fn data(d: &TestDaemon, path: &str) -> Value {
    let (status, body) = get(d, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["data", "total", "limit", "offset", "errors"]),
        "{path}"
    );
    assert_eq!(body["errors"], Value::Null, "{path}");
    assert_eq!(
        (body["limit"].as_u64(), body["offset"].as_u64()),
        (Some(0), Some(0))
    );
    body["data"].clone()
}

/// A failed answer: the status, `data: null` and one error with that code.
async fn error(d: &TestDaemon, path: &str, status: u16) -> String {
    let (got, body) = get(d, path).await;
    assert_eq!(got, status, "{path}: {body}");
    assert_eq!(body["data"], Value::Null, "{path}");
    assert_eq!(body["total"], 0);
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], status);
    errors[0]["msg"].as_str().expect("msg").to_owned()
}

/// Exports the traces over OTLP/gRPC and waits for their analysis.
async fn send(d: &TestDaemon, traces: Vec<Vec<Sp>>) -> Vec<String> {
    let sizes: Vec<usize> = traces.iter().map(Vec::len).collect();
    let ids = support::send(d, traces).await;
    for (id, n) in ids.iter().zip(sizes) {
        d.wait_trace(*id, n).await;
    }
    ids.iter().map(ToString::to_string).collect()
}

/// The one trace `GET /api/traces/{id}` answers.
async fn jaeger_trace(d: &TestDaemon, id: &str) -> Value {
    let data = data(d, &format!("/api/traces/{id}")).await;
    assert_eq!(data.as_array().unwrap().len(), 1, "{data}");
    data[0].clone()
}

fn span(trace: &Value, id: u64) -> &Value {
    let id = format!("{id:016x}");
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spanID"] == id.as_str())
        .unwrap_or_else(|| panic!("span {id} in {trace}"))
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
}

fn tag_value<'a>(span: &'a Value, key: &str) -> &'a Value {
    &tag(span, key).unwrap_or_else(|| panic!("tag {key} in {span}"))["value"]
}

/// The harness's cascade (gateway → frontend → orders → inventory, each
/// caller with its own timeout, inventory slow), plus an audit that frontend
/// runs beside its call to orders and nobody waits for.
fn cascade() -> Vec<Sp> {
    let mut spans = support::scenarios::cascade();
    spans.push(sp(
        "frontend",
        (8, 3),
        "audit",
        SpanKind::Internal,
        (12, 100),
    ));
    spans
}

/// The keys of every span object in Jaeger's answers.
fn jaeger_span_keys() -> BTreeSet<String> {
    let ui = fixture_json("jaeger-api/ui_01.json");
    let api = fixture_json("jaeger-api/otlp2jaeger-out.json");
    let keys = |s: &Value| -> BTreeSet<String> { s.as_object().unwrap().keys().cloned().collect() };
    let all: Vec<BTreeSet<String>> = ui["spans"]
        .as_array()
        .unwrap()
        .iter()
        .chain(api["data"][0]["spans"].as_array().unwrap())
        .map(keys)
        .collect();
    assert!(all.windows(2).all(|w| w[0] == w[1]), "{all:?}");
    all[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_answers_in_jaegers_shape_with_the_analysis_as_tags() {
    let d = support::start(Settings::default()).await;
    let ids = send(&d, vec![cascade()]).await;
    let id = &ids[0];
    let t = jaeger_trace(&d, id).await;
    let ours = d.get(&format!("/api/v1/traces/{id}")).await.1;

    // Trace and span objects have exactly Jaeger's fields.
    let trace_keys: BTreeSet<&str> = t.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        trace_keys,
        BTreeSet::from(["traceID", "spans", "processes", "warnings"])
    );
    assert_eq!(t["traceID"], id.as_str());
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 8);
    let expected_keys = jaeger_span_keys();
    let root_start = span(&t, 1)["startTime"].as_u64().expect("integer µs");
    let base_us = root_start;
    for s in spans {
        let keys: BTreeSet<String> = s.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, expected_keys, "{s}");
        assert_eq!(s["traceID"], id.as_str());
        assert!(s["startTime"].is_u64() && s["duration"].is_u64(), "{s}");
        for t in s["tags"].as_array().unwrap() {
            let kind = t["type"].as_str().unwrap();
            assert!(
                ["string", "bool", "int64", "float64", "binary"].contains(&kind),
                "{t}"
            );
        }
        // Its process is in `processes`, with the resource's instance as a tag.
        let process = &t["processes"][s["processID"].as_str().unwrap()];
        let service = process["serviceName"].as_str().expect("serviceName");
        assert_eq!(
            process["tags"],
            json!([{"key": "service.instance.id", "type": "string", "value": format!("{service}-1")}])
        );
        assert!(tag(s, "service.instance.id").is_none(), "{s}");
    }
    assert_eq!(t["processes"].as_object().unwrap().len(), 4);

    // Times are integer microseconds, as exported (ms offsets from one base).
    let inventory = span(&t, 7);
    assert_eq!(inventory["startTime"], base_us + 30_000);
    assert_eq!(inventory["duration"], 3_970_000);
    assert_eq!(inventory["operationName"], "GET /inventory");
    assert_eq!(
        inventory["references"],
        json!([{"refType": "CHILD_OF", "traceID": id, "spanID": "0000000000000006"}])
    );
    assert_eq!(span(&t, 1)["references"], json!([]));

    // Kind and status as Jaeger's OTLP translator writes them.
    assert_eq!(tag_value(inventory, "span.kind"), "server");
    assert_eq!(tag_value(inventory, "http.response.status_code"), 200);
    assert_eq!(
        tag(inventory, "http.response.status_code").unwrap()["type"],
        "int64"
    );
    assert!(tag(inventory, "error").is_none());
    let orders_client = span(&t, 6);
    assert_eq!(tag_value(orders_client, "span.kind"), "client");
    assert_eq!(tag_value(orders_client, "otel.status_code"), "ERROR");
    assert_eq!(
        tag(orders_client, "error").unwrap(),
        &json!({"key": "error", "type": "bool", "value": true})
    );
    assert_eq!(
        tag_value(orders_client, "otel.status_description"),
        "context deadline exceeded"
    );

    // The analysis: critical time per span, as the trace API has it, summing
    // to the root's duration; the audit nobody waited for is off the path.
    let mut sum = 0.0;
    for s in ours["spans"].as_array().unwrap() {
        let id = u64::from_str_radix(s["span_id"].as_str().unwrap(), 16).unwrap();
        let j = span(&t, id);
        assert_eq!(tag_value(j, "hopscope.critical_ms"), &s["critical_ms"]);
        assert_eq!(tag_value(j, "hopscope.self_ms"), &s["self_ms"]);
        assert_eq!(tag(j, "hopscope.critical_ms").unwrap()["type"], "float64");
        sum += tag_value(j, "hopscope.critical_ms").as_f64().unwrap();
    }
    assert!((sum - 2900.0).abs() < 1e-6, "critical times sum to {sum}");
    let audit = span(&t, 8);
    assert_eq!(tag_value(audit, "hopscope.on_critical_path"), false);
    assert_eq!(tag_value(audit, "hopscope.critical_ms"), 0.0);
    assert!(tag(audit, "hopscope.findings").is_none(), "{audit}");
    for on_path in [1, 2, 3, 4, 5, 6, 7] {
        let s = span(&t, on_path);
        assert_eq!(tag_value(s, "hopscope.on_critical_path"), true, "{s}");
        // The cascade's chain runs through every span the gateway waited on.
        assert_eq!(
            tag_value(s, "hopscope.findings"),
            "cascading_timeout",
            "{s}"
        );
    }
    assert!(
        tag_value(inventory, "hopscope.critical_ms")
            .as_f64()
            .unwrap()
            > 2800.0
    );
    // The spans the cascade is made of (the trace API's marks: its timed-out
    // calls and the slow span) say so, with the finding's id.
    let mark = &ours["marks"][0];
    let marked: Vec<&str> = mark["span_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(marked.len(), 7, "{mark}");
    for s in spans {
        let part_of = marked.contains(&s["spanID"].as_str().unwrap());
        let tags = (tag(s, "hopscope.finding"), tag(s, "hopscope.finding_id"));
        if part_of {
            assert_eq!(tags.0.unwrap()["value"], "cascading_timeout", "{s}");
            assert_eq!(tags.1.unwrap()["value"], mark["finding_id"], "{s}");
        } else {
            assert_eq!(tags, (None, None), "{s}");
        }
    }
    assert!(!marked.contains(&audit["spanID"].as_str().unwrap()));
    // A search can name a finding kind; the audit is not named by the cascade.
    let by_finding = r#"tags={"hopscope.findings":"cascading_timeout"}"#;
    assert_eq!(found(&d, by_finding).await, [id.as_str()]);
    assert!(found(&d, r#"tags={"hopscope.findings":"slow_query"}"#)
        .await
        .is_empty());
    let audit_named = format!("service=frontend&operation=audit&{by_finding}");
    assert!(found(&d, &audit_named).await.is_empty());
    assert_eq!(
        found(&d, "service=frontend&operation=audit").await,
        [id.as_str()]
    );
    let part_of = r#"tags={"hopscope.finding":"cascading_timeout"}"#;
    assert_eq!(found(&d, part_of).await, [id.as_str()]);
    let by_id = format!(r#"tags={{"hopscope.finding_id":{}}}"#, mark["finding_id"]);
    assert_eq!(found(&d, &by_id).await, [id.as_str()]);
    assert!(
        found(&d, &format!("service=frontend&operation=audit&{part_of}"))
            .await
            .is_empty()
    );

    // hopscope's repair warnings are the spans' warnings: frontend's server
    // span outlived the gateway's call to it.
    let warned: Vec<&Value> = spans.iter().filter(|s| !s["warnings"].is_null()).collect();
    assert!(!warned.is_empty(), "{t}");
    for s in warned {
        assert!(s["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_string));
    }

    // start/end hints on the trace id are hints: in µs, in ms, nonsense.
    for hints in [
        format!("?start={}&end={}", base_us, base_us + 10_000_000),
        format!("?start={}&end={}", base_us / 1000, base_us / 1000 + 10_000),
        "?start=0&end=1".to_owned(),
        "?start=yesterday&end=".to_owned(),
    ] {
        let again = data(&d, &format!("/api/traces/{id}{hints}")).await;
        assert_eq!(again[0], t, "{hints}");
    }
    // Upper-case hex names the same trace.
    let upper = id.to_uppercase();
    assert_eq!(jaeger_trace(&d, &upper).await, t);

    // Unknown trace: 404 in the envelope; a malformed id: 400.
    let msg = error(&d, "/api/traces/0123456789abcdef0123456789abcdef", 404).await;
    assert!(msg.contains("not found"), "{msg}");
    error(&d, "/api/traces/not-an-id", 400).await;
    error(&d, "/api/traces/00000000000000000000000000000000", 400).await;
    error(&d, "/api/nothing/here", 404).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_operations_and_dependencies_come_from_the_stored_traces() {
    let d = support::start(Settings::default()).await;
    let (status, body) = get(&d, "/api/services").await;
    assert_eq!((status, &body["data"]), (200, &json!([])), "{body}");
    send(&d, vec![cascade(), cascade()]).await;

    let (_, services) = get(&d, "/api/services").await;
    assert_eq!(
        services["data"],
        json!(["frontend", "gateway", "inventory", "orders"])
    );
    assert_eq!(services["total"], 4);

    let (_, ops) = get(&d, "/api/services/frontend/operations").await;
    assert_eq!(
        ops["data"],
        json!(["POST /checkout", "POST /orders", "audit"])
    );
    assert_eq!(ops["total"], 3);
    assert_eq!(data(&d, "/api/services/nobody/operations").await, json!([]));

    // Grafana's form: {name, spanKind}, optionally of one kind.
    assert_eq!(
        data(&d, "/api/operations?service=frontend").await,
        json!([
            {"name": "POST /checkout", "spanKind": "server"},
            {"name": "POST /orders", "spanKind": "client"},
            {"name": "audit", "spanKind": "internal"},
        ])
    );
    assert_eq!(
        data(&d, "/api/operations?service=frontend&spanKind=client").await,
        json!([{"name": "POST /orders", "spanKind": "client"}])
    );
    let msg = error(&d, "/api/operations", 400).await;
    assert!(msg.contains("service"), "{msg}");

    // Two traces, three cross-service calls each.
    let deps = data(&d, "/api/dependencies").await;
    assert_eq!(
        deps,
        json!([
            {"parent": "frontend", "child": "orders", "callCount": 2},
            {"parent": "gateway", "child": "frontend", "callCount": 2},
            {"parent": "orders", "child": "inventory", "callCount": 2},
        ])
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let recent = data(
        &d,
        &format!("/api/dependencies?endTs={now_ms}&lookback=3600000"),
    )
    .await;
    assert_eq!(recent, deps);
    // The traces started about a minute ago: a window ending 10 minutes ago misses them.
    let old = data(
        &d,
        &format!(
            "/api/dependencies?endTs={}&lookback=60000",
            now_ms - 600_000
        ),
    )
    .await;
    assert_eq!(old, json!([]));
    error(&d, "/api/dependencies?endTs=soon", 400).await;
    d.stop().await;
}

/// The ids of a search's traces, in the order answered.
async fn found(d: &TestDaemon, query: &str) -> Vec<String> {
    let data = data(d, &format!("/api/traces?{query}")).await;
    data.as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(!t["spans"].as_array().unwrap().is_empty(), "{t}");
            t["traceID"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_search_parameter_narrows_the_traces_found() {
    let d = support::start(Settings::default()).await;
    // a: shop GET /a, 100 ms, a gold customer, a database call.
    // b: shop GET /b one second later, 500 ms, failed, a silver customer.
    // c: billing POST /pay two seconds later, 2 s.
    let ids = send(
        &d,
        vec![
            vec![
                sp("shop", (1, 0), "GET /a", SpanKind::Server, (0, 100)).attr("customer", "gold"),
                sp("shop", (2, 1), "SELECT", SpanKind::Client, (10, 90))
                    .attr("db.system.name", "postgresql"),
            ],
            vec![sp("shop", (1, 0), "GET /b", SpanKind::Server, (1000, 1500))
                .attr("customer", "silver")
                .failed("boom", 500)],
            vec![sp(
                "billing",
                (1, 0),
                "POST /pay",
                SpanKind::Server,
                (2000, 4000),
            )],
        ],
    )
    .await;
    let (a, b, c) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());
    let base_us = jaeger_trace(&d, a).await["spans"][0]["startTime"]
        .as_u64()
        .unwrap();

    // Newest first; a search returns whole traces.
    assert_eq!(found(&d, "").await, [c, b, a]);
    let whole = data(&d, "/api/traces?service=shop&operation=SELECT").await;
    assert_eq!(whole[0]["spans"].as_array().unwrap().len(), 2);

    let cases: Vec<(String, Vec<&str>)> = vec![
        ("service=shop".into(), vec![b, a]),
        ("service=billing".into(), vec![c]),
        ("service=nobody".into(), vec![]),
        ("service=shop&operation=GET%20/a".into(), vec![a]),
        ("service=shop&operation=POST%20/pay".into(), vec![]),
        // Tags: a JSON map (Grafana), logfmt, Jaeger's tag=k:v; span, status
        // and process tags, and hopscope's own.
        (r#"service=shop&tags={"customer":"gold"}"#.into(), vec![a]),
        ("service=shop&tags=customer%3Dsilver".into(), vec![b]),
        ("service=shop&tag=customer:silver".into(), vec![b]),
        (r#"tags={"error":"true"}"#.into(), vec![b]),
        (
            r#"tags={"db.system.name":"postgresql","span.kind":"client"}"#.into(),
            vec![a],
        ),
        (
            r#"tags={"customer":"gold","span.kind":"client"}"#.into(),
            vec![],
        ),
        (
            r#"tags={"service.instance.id":"billing-1"}"#.into(),
            vec![c],
        ),
        (
            r#"service=shop&tags={"hopscope.on_critical_path":"true"}"#.into(),
            vec![b, a],
        ),
        // Durations are the spans': Go duration strings.
        ("service=shop&minDuration=400ms".into(), vec![b]),
        ("service=shop&maxDuration=0.2s".into(), vec![a]),
        ("minDuration=1.5s".into(), vec![c]),
        ("minDuration=1m30s".into(), vec![]),
        (
            "service=shop&minDuration=70000us&maxDuration=85ms".into(),
            vec![a],
        ),
        // Times are the spans' starts, in µs.
        (format!("start={}", base_us + 500_000), vec![c, b]),
        (format!("end={}", base_us + 1_500_000), vec![b, a]),
        (
            format!("start={}&end={}", base_us + 500_000, base_us + 1_500_000),
            vec![b],
        ),
        ("service=shop&limit=1".into(), vec![b]),
        (format!("traceID={a}&traceID={c}"), vec![a, c]),
    ];
    for (query, want) in cases {
        assert_eq!(found(&d, &query).await, want, "{query}");
    }

    // Bad parameters: 400 in Jaeger's envelope.
    for query in [
        "minDuration=5",
        "maxDuration=fast",
        "minDuration=2s&maxDuration=1s",
        "start=yesterday",
        "end=-1",
        "limit=-1",
        "tags={",
        "tags=customer",
        "tag=customer",
        "traceID=xyz",
    ] {
        let msg = error(&d, &format!("/api/traces?{query}"), 400).await;
        assert!(!msg.is_empty(), "{query}");
    }
    d.stop().await;
}

/// A span as Jaeger's answers and ours can be compared: fields by name, tags,
/// references and process tags as sets, the process inline, and without what
/// only hopscope adds (`hopscope.*`) or only Jaeger keeps (the instrumentation
/// scope, `otel.scope.*` / `otel.library.*`: hopscope does not store it).
fn comparable(trace: &Value, span: &Value) -> Value {
    let set = |v: &Value| -> Vec<String> {
        let mut items: Vec<String> = v
            .as_array()
            .map(|a| a.iter().map(Value::to_string).collect())
            .unwrap_or_default();
        items.sort();
        items
    };
    let tags: Vec<Value> = span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            let key = t["key"].as_str().unwrap();
            !["hopscope.", "otel.scope.", "otel.library."]
                .iter()
                .any(|p| key.starts_with(p))
        })
        .cloned()
        .collect();
    let references: Vec<Value> = span["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!({"refType": r["refType"], "traceID": r["traceID"], "spanID": r["spanID"]}))
        .collect();
    let process = &trace["processes"][span["processID"].as_str().unwrap()];
    json!({
        "traceID": span["traceID"],
        "spanID": span["spanID"],
        "operationName": span["operationName"],
        "references": set(&Value::Array(references)),
        "startTime": span["startTime"],
        "duration": span["duration"],
        "tags": set(&Value::Array(tags)),
        "logs": span["logs"],
        "process": {"serviceName": process["serviceName"], "tags": set(&process["tags"])},
    })
}

fn comparable_spans(trace: &Value) -> Vec<Value> {
    let mut spans: Vec<Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| comparable(trace, s))
        .collect();
    spans.sort_by_key(Value::to_string);
    spans.dedup();
    spans
}

/// Posts an OTLP/JSON request to the OTLP/HTTP receiver.
async fn post_otlp_json(d: &TestDaemon, body: Vec<u8>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("receiver answers");
    assert_eq!(response.status(), 200);
}

/// Jaeger's own conversions of OTLP/JSON requests, compared with hopscope's
/// answer for the same requests. Deviations, each deliberate or a limit of
/// what hopscope stores: a span sent twice is kept once (Jaeger keeps both
/// copies; hopscope warns `duplicate_span`), which `comparable_spans`
/// accounts for by comparing distinct spans; and the instrumentation scope is
/// not stored (no `otel.scope.*` tags). The resource's attributes
/// (`telemetry.sdk.*` here) are the process's tags, as in Jaeger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_fixtures_answer_as_jaeger_converts_them() {
    let pairs = [
        // Jaeger's query API itself (the whole envelope).
        (
            "jaeger-api/otlp2jaeger-in.json",
            "jaeger-api/otlp2jaeger-out.json",
            "83a9efd15c1c98a977e0711cc93ee28b",
            1,
            JANUARY_2024,
        ),
        // Jaeger UI's converter.
        (
            "otlp-json/jaeger-ui-otlp2jaeger/otlp2jaeger-in.json",
            "otlp-json/jaeger-ui-otlp2jaeger/otlp2jaeger-out.json",
            "83a9efd15c1c98a977e0711cc93ee28b",
            1,
            JANUARY_2024,
        ),
        (
            "otlp-json/jaeger-ui-otlp2jaeger/otlp2jaeger-multi-in-combined.json",
            "otlp-json/jaeger-ui-otlp2jaeger/oltp2jaeger-multi-out.json",
            "c620759e5d60fafb8ee0922b30e06bc6",
            4,
            MARCH_2024,
        ),
    ];
    for (input, output, id, spans, recorded) in pairs {
        // The daemon's clock when the fixture was recorded.
        let d = support::start_at(Settings::default(), Clock::manual(recorded)).await;
        post_otlp_json(&d, fixture(input)).await;
        d.wait_for(&format!("/api/v1/traces/{id}"), |status, body| {
            status == 200 && body["span_count"] == spans
        })
        .await;
        let (status, body) = get(&d, &format!("/api/traces/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let expected = fixture_json(output);
        // The envelope as Jaeger answers it.
        if output.starts_with("jaeger-api/") {
            for key in ["total", "limit", "offset", "errors"] {
                assert_eq!(body[key], expected[key], "{key}");
            }
        }
        let want = comparable_spans(&expected["data"][0]);
        let got = comparable_spans(&body["data"][0]);
        assert_eq!(got, want, "{input}");
        assert_eq!(got.len(), spans);
        d.stop().await;
    }
}

/// A resource's attributes are its process's tags, typed, and a search can
/// name them; two instances of one service are two processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_attributes_are_the_process_tags() {
    let resource = |instance: &str| {
        json!({"attributes": [
            {"key": "service.name", "value": {"stringValue": "cart"}},
            {"key": "service.instance.id", "value": {"stringValue": instance}},
            {"key": "host.cpus", "value": {"intValue": "8"}},
            {"key": "canary", "value": {"boolValue": instance == "cart-2"}},
            {"key": "load", "value": {"doubleValue": 0.25}},
            {"key": "zones", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}
        ]})
    };
    let id = "5b8efff798038103d269b633813fc60c";
    let otlp_span = |span_id: &str, parent: &str, start: u64| {
        json!({"traceId": id, "spanId": span_id, "parentSpanId": parent, "name": "GET /cart",
               "kind": 2, "startTimeUnixNano": start.to_string(),
               "endTimeUnixNano": (start + 1_000_000).to_string()})
    };
    let start = 1_764_000_000_000_000_000u64;
    let d = support::start_at(Settings::default(), Clock::manual(start)).await;
    let body = json!({"resourceSpans": [
        {"resource": resource("cart-1"), "scopeSpans": [{"spans": [otlp_span("eee19b7ec3c1b174", "", start)]}]},
        {"resource": resource("cart-2"), "scopeSpans": [{"spans": [otlp_span("eee19b7ec3c1b175", "eee19b7ec3c1b174", start + 100_000)]}]}
    ]});
    post_otlp_json(&d, body.to_string().into_bytes()).await;
    d.wait_for(&format!("/api/v1/traces/{id}"), |status, body| {
        status == 200 && body["span_count"] == 2
    })
    .await;
    let t = jaeger_trace(&d, id).await;
    let processes = t["processes"].as_object().unwrap();
    assert_eq!(processes.len(), 2, "{t}");
    let canary = span(&t, 0xeee19b7ec3c1b175);
    let process = &t["processes"][canary["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "cart");
    assert_eq!(
        process["tags"],
        json!([
            {"key": "service.instance.id", "type": "string", "value": "cart-2"},
            {"key": "host.cpus", "type": "int64", "value": 8},
            {"key": "canary", "type": "bool", "value": true},
            {"key": "load", "type": "float64", "value": 0.25},
            {"key": "zones", "type": "string", "value": "[\"a\"]"},
        ])
    );
    // Resource attributes are the process's, not the span's.
    assert!(tag(canary, "host.cpus").is_none(), "{canary}");
    let ours = d.get(&format!("/api/v1/traces/{id}")).await.1;
    assert!(
        ours["spans"][0]["attributes"]
            .get("hopscope.resource")
            .is_none(),
        "{ours}"
    );
    assert_eq!(found(&d, r#"tags={"canary":"true"}"#).await, [id]);
    assert_eq!(
        found(&d, r#"tags={"host.cpus":"4"}"#).await,
        Vec::<String>::new()
    );
    d.stop().await;
}

/// Events are logs (the name as the `event` field first, unless an attribute
/// says it), links are FOLLOWS_FROM references, bytes are binary; a search
/// matches log fields too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_logs_and_links_are_follows_from_references() {
    let id = "0af7651916cd43dd8448eb211c80319c";
    let start = 1_764_000_000_000_000_000u64;
    let d = support::start_at(Settings::default(), Clock::manual(start)).await;
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": id, "spanId": "b7ad6b7169203331", "name": "checkout", "kind": 1,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 2_000_000).to_string(),
            "attributes": [{"key": "digest", "value": {"bytesValue": "AAAwOQ=="}}],
            "events": [
                {"timeUnixNano": (start + 500_000).to_string(), "name": "exception",
                 "attributes": [
                     {"key": "exception.type", "value": {"stringValue": "TimeoutError"}},
                     {"key": "attempt", "value": {"intValue": "2"}}
                 ]},
                {"timeUnixNano": (start + 1_500_000).to_string(), "name": "ignored",
                 "attributes": [{"key": "event", "value": {"stringValue": "cache miss"}}]}
            ],
            "links": [{"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7"}]
        }]}]
    }]});
    post_otlp_json(&d, body.to_string().into_bytes()).await;
    d.wait_for(&format!("/api/v1/traces/{id}"), |status, body| {
        status == 200 && body["span_count"] == 1
    })
    .await;
    let t = jaeger_trace(&d, id).await;
    let s = span(&t, 0xb7ad6b7169203331);
    let start_us = start / 1000;
    assert_eq!(
        s["logs"],
        json!([
            {"timestamp": start_us + 500, "fields": [
                {"key": "event", "type": "string", "value": "exception"},
                {"key": "exception.type", "type": "string", "value": "TimeoutError"},
                {"key": "attempt", "type": "int64", "value": 2},
            ]},
            {"timestamp": start_us + 1500, "fields": [
                {"key": "event", "type": "string", "value": "cache miss"},
            ]},
        ])
    );
    assert_eq!(
        s["references"],
        json!([{"refType": "FOLLOWS_FROM", "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
                "spanID": "00f067aa0ba902b7"}])
    );
    assert_eq!(
        tag(s, "digest").unwrap(),
        &json!({"key": "digest", "type": "binary", "value": "AAAwOQ=="})
    );
    assert_eq!(tag_value(s, "span.kind"), "internal");
    assert_eq!(
        found(&d, r#"tags={"exception.type":"TimeoutError"}"#).await,
        [id]
    );
    assert!(found(&d, r#"tags={"exception.type":"OtherError"}"#)
        .await
        .is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jaeger_listener_takes_the_api_token() {
    let d = support::start(Settings {
        api_token: Some("s3cret".into()),
        ..Settings::default()
    })
    .await;
    let (status, _) = get(&d, "/api/services").await;
    assert_eq!(status, 401);
    let (status, _) = get_with(&d, "/api/services", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = get_with(&d, "/api/services", Some("s3cret")).await;
    assert_eq!((status, &body["data"]), (200, &json!([])));
    d.stop().await;
}
