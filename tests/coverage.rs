//! `GET /api/v1/coverage`: what each service's spans carry and which
//! detectors that leaves blind, from traces exported through the real OTLP
//! exporter.

mod support;

use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SpanExporter;
use serde_json::{json, Value};
use support::{base_time, exporter, random_trace_id, send, sp, span_data, spec, Sp};

/// Off the whole millisecond, as most SDKs' clocks are.
const SHIFT_US: u64 = 137;

/// shop serves a request with everything the detectors read: an instance id,
/// status codes, a connection checkout (SQLAlchemy's `connect`) before its
/// query, the statement, and a call to pricing that names its peer.
fn instrumented() -> Vec<Sp> {
    let db = |s: Sp| {
        s.attr("db.system.name", "postgresql")
            .attr("server.address", "db.internal")
    };
    [
        sp("shop", (1, 0), "GET /buy", SpanKind::Server, (0, 100)).http(200),
        db(sp("shop", (2, 1), "connect", SpanKind::Client, (2, 4))),
        db(sp(
            "shop",
            (3, 1),
            "SELECT items",
            SpanKind::Client,
            (5, 20),
        ))
        .attr("db.query.text", "SELECT * FROM items WHERE id = ?"),
        sp("shop", (4, 1), "GET", SpanKind::Client, (25, 80))
            .attr("url.full", "http://pricing:8080/price?item=7")
            .http(200),
        sp("pricing", (5, 4), "GET /price", SpanKind::Server, (30, 70)).http(200),
    ]
    .into_iter()
    .map(|s| s.shift_us(SHIFT_US))
    .collect()
}

/// legacy: no `service.instance.id`, a query without its statement, and
/// whole-millisecond timestamps (as Node's SDK records them).
fn bare() -> Vec<Sp> {
    vec![
        sp("legacy", (1, 0), "GET /report", SpanKind::Server, (0, 200))
            .http(200)
            .no_instance(),
        sp("legacy", (2, 1), "query", SpanKind::Client, (10, 150))
            .attr("db.system", "mysql")
            .attr("net.peer.name", "db.internal")
            .no_instance(),
    ]
}

fn service<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

fn spans(body: &Value, name: &str) -> u64 {
    body["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["service"] == name))
        .map_or(0, |s| s["spans"].as_u64().unwrap())
}

/// `[(detector, level)]` of a service.
fn blind(s: &Value) -> Vec<(String, String)> {
    s["blind"]
        .as_array()
        .expect("blind")
        .iter()
        .map(|b| {
            (
                b["detector"].as_str().unwrap().to_owned(),
                b["level"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_instrumentation_is_blind_to_nothing_and_missing_ids_and_statements_are_named() {
    let d = support::start(Default::default()).await;
    send(&d, vec![instrumented(), instrumented(), bare()]).await;
    let body = d
        .wait_for("/api/v1/coverage", |status, body| {
            status == 200
                && spans(body, "shop") == 8
                && spans(body, "pricing") == 2
                && spans(body, "legacy") == 2
        })
        .await;
    println!("coverage: {body:#}");
    let names: Vec<&str> = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["legacy", "pricing", "shop"], "by name");

    let shop = service(&body, "shop");
    assert_eq!(
        shop,
        &json!({
            "service": "shop", "spans": 8, "server_spans": 2, "client_spans": 6,
            "database_spans": 2, "statement": 2, "peer_address": 6, "status_code": 4,
            "instance_id": 8, "connection_checkout": 2, "timestamps_ms": 0,
            "error_spans": 0, "ids_in_names": 0, "ids_in_statement_names": 0, "blind": []
        }),
        "connect is a checkout, not a query; each client names its peer"
    );
    assert_eq!(service(&body, "pricing")["blind"], json!([]));

    let legacy = service(&body, "legacy");
    let count = |field: &str| legacy[field].as_u64().unwrap();
    assert_eq!(
        [
            "database_spans",
            "statement",
            "instance_id",
            "peer_address",
            "status_code",
            "timestamps_ms"
        ]
        .map(count),
        [1, 0, 0, 1, 1, 2]
    );
    let pair = |d: &str, l: &str| (d.to_owned(), l.to_owned());
    assert_eq!(
        blind(legacy),
        [
            pair("pool_exhaustion", "blind"),
            pair("blocked_worker", "blind"),
            pair("cold_start", "blind"),
            pair("slow_query", "blind"),
            pair("lock_contention", "blind"),
            pair("service_graph", "weakened"),
        ]
    );
    let reason = |detector: &str| {
        legacy["blind"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["detector"] == detector)
            .and_then(|b| b["reason"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("pool_exhaustion").starts_with(
            "requests of different replicas cannot be told apart: set service.instance.id"
        ),
        "{}",
        reason("pool_exhaustion")
    );
    assert!(reason("slow_query").contains("db.query.text"));

    // One service by name; an unknown one has none.
    let (status, one) = d.get("/api/v1/coverage?service=legacy").await;
    assert_eq!(status, 200);
    assert_eq!(one["services"], json!([legacy]));
    let (_, none) = d.get("/api/v1/coverage?service=nothing").await;
    assert_eq!(none["services"], json!([]));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_blind_without_status_codes_and_the_service_graph_without_peers() {
    let d = support::start(Default::default()).await;
    // A worker whose spans carry neither a status code nor an error, calling
    // something it does not name.
    let trace = vec![
        sp("worker", (1, 0), "handle", SpanKind::Server, (0, 50)),
        sp("worker", (2, 1), "POST", SpanKind::Client, (5, 45)),
    ]
    .into_iter()
    .map(|s| s.shift_us(SHIFT_US))
    .collect();
    send(&d, vec![trace]).await;
    let body = d
        .wait_for("/api/v1/coverage?service=worker", |_, b| {
            spans(b, "worker") == 2
        })
        .await;
    let worker = service(&body, "worker");
    let detectors: Vec<String> = blind(worker).into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        detectors,
        [
            "cascading_timeout",
            "deadline_not_propagated",
            "timeout_inversion",
            "gateway_timeout",
            "timeout_headroom",
            "service_graph"
        ]
    );
    d.stop().await;
}

/// A trace analyzed again after late spans counts its spans once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_analyzed_again_counts_its_spans_once() {
    let d = support::start(Default::default()).await;
    let trace_id = random_trace_id();
    let base = base_time();
    let shop = exporter(&d.grpc_endpoint, "shop", false);
    shop.export(vec![
        span_data(
            trace_id,
            base,
            &spec(1, 0, "GET /buy", SpanKind::Server, (0, 100)),
        ),
        span_data(
            trace_id,
            base,
            &spec(2, 1, "SELECT", SpanKind::Client, (10, 20)),
        ),
    ])
    .await
    .unwrap();
    let path = "/api/v1/coverage?service=shop";
    let body = d.wait_for(path, |_, b| spans(b, "shop") >= 2).await;
    assert_eq!(service(&body, "shop")["client_spans"], 1);

    // The statement's span arrives late, as a second query.
    let mut late = span_data(
        trace_id,
        base,
        &spec(3, 1, "SELECT", SpanKind::Client, (30, 40)),
    );
    late.attributes = vec![KeyValue::new("db.statement", "SELECT 1")];
    shop.export(vec![late]).await.unwrap();
    d.wait_trace(trace_id, 3).await;
    // Retracted and added again in one step: once it shows the third span,
    // a double count would show more.
    let body = d.wait_for(path, |_, b| spans(b, "shop") >= 3).await;
    let shop = service(&body, "shop");
    assert_eq!(
        (
            shop["spans"].as_u64(),
            shop["client_spans"].as_u64(),
            shop["statement"].as_u64()
        ),
        (Some(3), Some(2), Some(1)),
        "counted once: {body}"
    );
    d.stop().await;
}
