//! `GET /api/v1/edges`: the service graph from traces exported through the
//! real OTLP exporter.

mod support;

use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::SpanExporter;
use serde_json::Value;
use support::{base_time, exporter, random_trace_id, send, sp, span_data, spec, Sp};

/// gateway → orders → inventory, and a database call of orders (no SERVER
/// span: not an edge). Each CLIENT span is 20 ms (gateway) or 10 ms (orders)
/// longer than the SERVER span it called; inventory fails when `fail`.
fn checkout(fail: bool) -> Vec<Sp> {
    let mut inventory = sp(
        "inventory",
        (5, 4),
        "GET /stock",
        SpanKind::Server,
        (35, 165),
    );
    let mut call = sp("orders", (4, 3), "GET /stock", SpanKind::Client, (30, 170));
    if fail {
        inventory = inventory.failed("out of stock service", 500);
        call = call.error("500 Internal Server Error");
    }
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /checkout",
            SpanKind::Server,
            (0, 200),
        ),
        sp(
            "gateway",
            (2, 1),
            "POST /orders",
            SpanKind::Client,
            (10, 190),
        ),
        sp(
            "orders",
            (3, 2),
            "POST /orders",
            SpanKind::Server,
            (20, 180),
        ),
        call,
        inventory,
        sp("orders", (6, 3), "SELECT", SpanKind::Client, (172, 178))
            .attr("db.system.name", "postgresql"),
    ]
}

fn edge<'a>(body: &'a Value, caller: &str, callee: &str) -> &'a Value {
    body["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["caller"] == caller && e["callee"] == callee)
        .unwrap_or_else(|| panic!("no edge {caller} -> {callee} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_count_calls_errors_and_wire_time_between_services() {
    let d = support::start(Default::default()).await;
    send(&d, vec![checkout(false), checkout(true), checkout(false)]).await;
    let body = d
        .wait_for("/api/v1/edges?since=15m", |status, body| {
            status == 200
                && body["edges"].as_array().is_some_and(|e| {
                    e.iter()
                        .map(|e| e["calls"].as_u64().unwrap_or(0))
                        .sum::<u64>()
                        == 6
                })
        })
        .await;
    println!("edges: {body:#}");
    assert_eq!(
        body["edges"].as_array().unwrap().len(),
        2,
        "the database call is no edge"
    );
    let front = edge(&body, "gateway", "orders");
    assert_eq!(
        (front["calls"].as_u64(), front["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(front["wire_ms"], 60.0);
    assert_eq!(front["critical_wire_ms"], 60.0);
    assert!((front["wire_p50_ms"].as_f64().unwrap() - 20.0).abs() < 0.3);
    let back = edge(&body, "orders", "inventory");
    assert_eq!(
        (back["calls"].as_u64(), back["errors"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(back["wire_ms"], 30.0);
    assert!((back["wire_p95_ms"].as_f64().unwrap() - 10.0).abs() < 0.2);

    // A window before the traces holds nothing; a bad time is a JSON error.
    let (status, before) = d.get("/api/v1/edges?until=1000").await;
    assert_eq!(
        (status, before["edges"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let (status, bad) = d.get("/api/v1/edges?since=yesterday").await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_time"))
    );
    d.stop().await;
}

/// A trace analyzed again after late spans counts its calls once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_analyzed_again_counts_its_calls_once() {
    let d = support::start(Default::default()).await;
    let trace_id = random_trace_id();
    let base = base_time();
    let gateway = exporter(&d.grpc_endpoint, "gateway", false);
    let orders = exporter(&d.grpc_endpoint, "orders", false);
    let first = [
        spec(1, 0, "GET /checkout", SpanKind::Server, (0, 200)),
        spec(2, 1, "POST /orders", SpanKind::Client, (10, 190)),
    ];
    gateway
        .export(first.iter().map(|s| span_data(trace_id, base, s)).collect())
        .await
        .unwrap();
    orders
        .export(vec![span_data(
            trace_id,
            base,
            &spec(3, 2, "POST /orders", SpanKind::Server, (20, 180)),
        )])
        .await
        .unwrap();
    d.wait_trace(trace_id, 3).await;
    let body = d.get("/api/v1/edges").await.1;
    assert_eq!(edge(&body, "gateway", "orders")["calls"], 1);

    // orders' call to inventory arrives late, without its SERVER span: the
    // gateway edge is retracted and added again, and no new edge appears.
    orders
        .export(vec![span_data(
            trace_id,
            base,
            &spec(4, 3, "GET /stock", SpanKind::Client, (30, 170)),
        )])
        .await
        .unwrap();
    d.wait_trace(trace_id, 4).await;
    let body = d.get("/api/v1/edges").await.1;
    assert_eq!(body["edges"].as_array().unwrap().len(), 1, "{body}");
    let front = edge(&body, "gateway", "orders");
    assert_eq!(front["calls"], 1, "counted once: {body}");
    assert_eq!(front["wire_ms"], 20.0);
    assert_eq!(
        front["critical_wire_ms"], 20.0,
        "the late span moved orders' time, not the wire's"
    );
    d.stop().await;
}
