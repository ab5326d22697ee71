//! `--forward-otlp`: a daemon (A) forwards every analyzed trace to another
//! (B), over gRPC and over HTTP with gzip; what B shows is what A was sent,
//! with A's analysis added as `hopscope.*` attributes. When B is down, A
//! waits and retries, and nothing is lost once B is up.

mod support;

use std::collections::BTreeMap;

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{scenarios, send, sp, start, Sp};

/// A's settings when it forwards to `url`.
fn forwarding(url: &str, protocol: &str, compression: &str) -> Settings {
    Settings {
        forward_otlp: Some(url.to_owned()),
        forward_protocol: Some(protocol.parse().expect("a protocol")),
        forward_compression: Some(compression.parse().expect("a compression")),
        ..Settings::default()
    }
}

/// A checkout whose spans carry attributes of every type, an exception and
/// an error status.
fn typed_trace() -> Vec<Sp> {
    vec![
        sp("shop", (1, 0), "GET /checkout", SpanKind::Server, (0, 120))
            .attr("http.route", "/checkout")
            .attr("cart.items", 3i64)
            .attr("cart.total", 42.5)
            .attr("cart.gift", true)
            .attr(
                "cart.skus",
                opentelemetry::Value::Array(vec![7i64, 9].into()),
            ),
        sp("shop", (2, 1), "SELECT carts", SpanKind::Client, (10, 40))
            .attr("db.system", "postgresql"),
        sp("shop", (3, 1), "POST /pay", SpanKind::Client, (45, 115))
            .failed("card declined", 502)
            .exception("PaymentError", "card declined"),
        sp("payments", (4, 3), "POST /pay", SpanKind::Server, (50, 110))
            .failed("card declined", 402),
    ]
}

/// The spans of an analyzed trace body, by span id.
fn spans(body: &Value) -> BTreeMap<String, Value> {
    body["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s["span_id"].as_str().expect("an id").to_owned(), s.clone()))
        .collect()
}

/// The span ids a trace body marks for each per-trace finding, with its kind.
fn marked(body: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for mark in body["marks"].as_array().expect("marks") {
        for id in mark["span_ids"].as_array().expect("span ids") {
            let kinds = out
                .entry(id.as_str().expect("an id").to_owned())
                .or_default();
            let kind = mark["kind"].as_str().expect("a kind").to_owned();
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
    }
    out
}

/// Every forwarding drop counter in `/api/v1/stats`'s counters is zero.
fn assert_nothing_dropped(counters: &Value) {
    for dropped in [
        "forward_spans_dropped_shutdown",
        "forward_spans_dropped_retries",
        "forward_spans_dropped_refused",
        "forward_spans_rejected",
    ] {
        assert_eq!(counters[dropped], 0, "{dropped}: {counters}");
    }
}

/// Sends two traces to A, which forwards to B; checks that B has every span
/// as A was sent it, with A's analysis added.
async fn forwards_intact(protocol: &str, compression: &str) {
    let b = start(Settings::default()).await;
    let url = match protocol {
        "grpc" => b.grpc_endpoint.clone(),
        _ => b.http_endpoint.clone(),
    };
    let a = start(forwarding(&url, protocol, compression)).await;
    let traces = vec![scenarios::cascade(), typed_trace()];
    let sizes: Vec<usize> = traces.iter().map(Vec::len).collect();
    let ids = send(&a, traces).await;
    let mut findings_seen = 0;
    for (id, n) in ids.iter().zip(sizes) {
        let sent = a.wait_trace(*id, n).await;
        let got = b.wait_trace(*id, n).await;
        let (sent_spans, got_spans) = (spans(&sent), spans(&got));
        assert_eq!(
            sent_spans.keys().collect::<Vec<_>>(),
            got_spans.keys().collect::<Vec<_>>(),
            "every span arrives, with its id"
        );
        let marks = marked(&sent);
        let mut carriers = 0;
        for (span_id, s) in &sent_spans {
            let g = &got_spans[span_id];
            for field in [
                "parent_span_id",
                "service",
                "service_instance_id",
                "operation",
                "kind",
                "start_time",
                "duration_ms",
                "status",
                "events",
                "links",
            ] {
                assert_eq!(s[field], g[field], "span {span_id}: {field}");
            }
            let mut attributes = g["attributes"].as_object().expect("attributes").clone();
            let critical_ms = attributes.remove("hopscope.critical_ms");
            let self_ms = attributes.remove("hopscope.self_ms");
            let on_path = attributes.remove("hopscope.on_critical_path");
            let findings = attributes.remove("hopscope.findings");
            // Every span names its trace's entry point; one span per service
            // carries that service's call records (for a detect replica).
            let entry = (
                attributes.remove("hopscope.entry.service"),
                attributes.remove("hopscope.entry.operation"),
            );
            assert_eq!(
                entry,
                (
                    Some(sent["entry"]["service"].clone()),
                    Some(sent["entry"]["operation"].clone())
                ),
                "span {span_id}: the entry point"
            );
            if let Some(records) = attributes.remove("hopscope.records") {
                let records: Value =
                    serde_json::from_str(records.as_str().expect("text")).expect("JSON records");
                assert_eq!(records["v"], 1);
                assert_eq!(
                    records["service"], s["service"],
                    "span {span_id}: its own service's"
                );
                carriers += 1;
            }
            assert_eq!(
                &Value::Object(attributes),
                &s["attributes"],
                "span {span_id}: its attributes, and only the analysis added"
            );
            let a_critical = s["critical_ms"].as_f64().expect("critical_ms");
            assert_eq!(
                on_path,
                Some(Value::Bool(a_critical > 0.0)),
                "span {span_id} is on the critical path exactly when A says so"
            );
            let close = |v: Option<Value>, want: f64| {
                v.and_then(|v| v.as_f64())
                    .is_some_and(|v| (v - want).abs() < 1e-6)
            };
            assert!(
                close(critical_ms, a_critical),
                "span {span_id}: critical_ms"
            );
            assert!(
                close(self_ms, s["self_ms"].as_f64().expect("self_ms")),
                "span {span_id}: self_ms"
            );
            let kinds = findings.map(|f| {
                f.as_array()
                    .expect("an array of kinds")
                    .iter()
                    .map(|k| k.as_str().expect("a kind").to_owned())
                    .collect::<Vec<_>>()
            });
            assert_eq!(
                kinds.as_ref(),
                marks.get(span_id),
                "span {span_id}: findings"
            );
            findings_seen += usize::from(kinds.is_some());
        }
        assert!(carriers > 0, "the root's service carries the root's record");
    }
    assert!(findings_seen > 0, "the cascade's chain carries its finding");
    let total = ids.len() as u64;
    let (_, stats) = a.get("/api/v1/stats").await;
    let c = &stats["counters"];
    assert_eq!(c["forward_spans"], 11, "{c}");
    assert!(c["forward_requests"].as_u64() >= Some(1));
    assert!(c["forward_bytes"].as_u64() > Some(100 * total));
    assert_nothing_dropped(c);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_over_grpc_every_span_arrives_with_its_critical_path() {
    forwards_intact("grpc", "gzip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_over_http_with_gzip_every_span_arrives_with_its_critical_path() {
    forwards_intact("http", "gzip").await;
}

/// A loopback address nothing listens on (yet).
fn unused_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
}

/// `settings`, forwarding over gzipped gRPC to `port` with a queue of 4 spans.
fn forwarding_to_nothing(port: std::net::SocketAddr, settings: Settings) -> Settings {
    Settings {
        forward_queue_spans: Some(4),
        ..settings.or(forwarding(&format!("http://{port}"), "grpc", "gzip"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_waited_for_and_nothing_is_lost() {
    // A port nothing listens on yet: B starts there later.
    let port = unused_port();
    let a = start(forwarding_to_nothing(port, Settings::default())).await;
    let traces: Vec<Vec<Sp>> = (0..6).map(|_| typed_trace()).collect();
    let total = traces.iter().map(Vec::len).sum::<usize>() as u64;
    let ids = send(&a, traces).await;
    // A retries, its queue full: the rest wait in its buffer.
    let stats = a
        .wait_for("/api/v1/stats", |status, s| {
            status == 200 && s["counters"]["forward_retries"].as_u64() >= Some(1)
        })
        .await;
    assert!(
        stats["forward_spans_queued"].as_u64() <= Some(4),
        "the queue holds at most its bound: {stats}"
    );
    assert_eq!(stats["counters"]["forward_spans"], 0);
    let b = start(Settings {
        otlp_grpc_addr: Some(port),
        ..Settings::default()
    })
    .await;
    for id in &ids {
        b.wait_trace(*id, 4).await;
    }
    let stats = a
        .wait_for("/api/v1/stats", |status, s| {
            status == 200 && s["counters"]["forward_spans"] == total
        })
        .await;
    let c = &stats["counters"];
    assert!(c["forward_retries"].as_u64() >= Some(1), "{c}");
    assert_nothing_dropped(c);
    assert_eq!(stats["forward_spans_queued"], 0);
    let metrics = reqwest::get(format!("{}/metrics", a.api))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("hopscope_forward_spans_dropped_total{reason=\"retries_exhausted\"} 0"),
        "{metrics}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_shutdown_deadline_what_is_not_forwarded_is_dropped_and_counted() {
    // Nothing ever listens there: A retries until it is told to stop.
    let a = start(forwarding_to_nothing(
        unused_port(),
        Settings {
            shutdown_timeout: Some("1s".parse().expect("a duration")),
            ..Settings::default()
        },
    ))
    .await;
    let traces: Vec<Vec<Sp>> = (0..3).map(|_| typed_trace()).collect();
    let total = traces.iter().map(Vec::len).sum::<usize>() as u64;
    send(&a, traces).await;
    a.wait_for("/api/v1/stats", |status, s| {
        status == 200 && s["counters"]["forward_retries"].as_u64() >= Some(1)
    })
    .await;
    let store = a.store();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), a.stop()).await;
    assert!(
        stopped.is_ok(),
        "the shutdown deadline holds with the receiver down"
    );
    let c = store.stats().snapshot();
    assert_eq!(c.forward_spans, 0);
    assert_eq!(
        c.forward_spans_dropped_shutdown, total,
        "every span not forwarded is counted: {c:?}"
    );
    assert_eq!(
        store
            .stats()
            .forward_queued
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
