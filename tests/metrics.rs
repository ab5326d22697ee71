//! `GET /metrics` end to end: traces through the real OTLP exporter, the
//! exposition parsed by an independent Prometheus text parser, and the numbers
//! checked against what was sent.

mod support;

use opentelemetry::trace::SpanKind;
use prometheus_parse::{Sample, Scrape, Value};
use support::{send, sp, Sp};

/// gateway → orders; orders takes `orders_ms` and the gateway gives up at
/// 3 s, answering 504 when orders is slower.
fn trace(orders_ms: u64) -> Vec<Sp> {
    let timed_out = orders_ms > 3_000;
    let end = orders_ms.min(3_000) + 10;
    let mut root = sp(
        "gateway",
        (1, 0),
        "GET /checkout",
        SpanKind::Server,
        (0, end),
    );
    let mut call = sp(
        "gateway",
        (2, 1),
        "POST /orders",
        SpanKind::Client,
        (5, end - 5),
    );
    if timed_out {
        root = root.failed("upstream timed out", 504);
        call = call.deadline();
    } else {
        root = root.http(200);
    }
    vec![
        root,
        call,
        sp(
            "orders",
            (3, 2),
            "POST /orders",
            SpanKind::Server,
            (10, 10 + orders_ms),
        )
        .http(200),
    ]
}

fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        _ => panic!("{} is not a single value", s.metric),
    }
}

/// The one sample of `metric` whose labels include `labels`.
fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_ingested_and_how_the_latency_splits() {
    let d = support::start(Default::default()).await;
    // Two healthy checkouts (orders 100 and 300 ms) and one that times out.
    send(&d, vec![trace(100), trace(300), trace(5_000)]).await;
    d.wait_for("/api/v1/stats", |status, body| {
        status == 200 && body["counters"]["traces_analyzed"] == 3 && body["analysis_pending"] == 0
    })
    .await;

    let response = reqwest::get(format!("{}/metrics", d.api)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");

    // Counters, with their help text.
    let accepted = sample(&scrape, "hopscope_spans_accepted_total", &[]);
    assert!(
        matches!(accepted.value, Value::Counter(9.0)),
        "{accepted:?}"
    );
    assert!(scrape.docs["hopscope_spans_accepted_total"].contains("accepted"));
    assert_eq!(
        value(sample(&scrape, "hopscope_traces_analyzed_total", &[])),
        3.0
    );
    assert_eq!(
        value(sample(
            &scrape,
            "hopscope_export_requests_refused_total",
            &[]
        )),
        0.0
    );
    for reason in ["memory_budget", "too_large", "unauthenticated", "malformed"] {
        let refused = sample(
            &scrape,
            "hopscope_otlp_requests_refused_total",
            &[("reason", reason)],
        );
        assert_eq!(value(refused), 0.0, "{reason}");
    }
    assert!(value(sample(&scrape, "hopscope_export_bytes_total", &[])) > 9.0 * 50.0);
    assert_eq!(value(sample(&scrape, "hopscope_buffered_spans", &[])), 0.0);
    assert_eq!(value(sample(&scrape, "hopscope_stored_traces", &[])), 3.0);
    assert_eq!(
        value(sample(&scrape, "hopscope_memory_budget_bytes", &[])),
        (512 << 20) as f64
    );

    // One analysis timed per trace.
    let analysis = sample(&scrape, "hopscope_trace_analysis_seconds", &[]);
    let Value::Histogram(buckets) = &analysis.value else {
        panic!("{analysis:?}")
    };
    assert_eq!(buckets.last().unwrap().count, 3.0);
    assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count));

    // The timed-out checkout is a cascade finding.
    let cascades = sample(
        &scrape,
        "hopscope_findings",
        &[("kind", "cascading_timeout"), ("severity", "critical")],
    );
    assert_eq!(value(cascades), 1.0);

    // Root seconds per entry point, and the hops partition them: the
    // latency share is hop critical seconds over root seconds.
    let entry = [
        ("entry_service", "gateway"),
        ("entry_operation", "GET /checkout"),
    ];
    assert_eq!(
        value(sample(&scrape, "hopscope_entry_traces_total", &entry)),
        3.0
    );
    let root = value(sample(&scrape, "hopscope_entry_root_seconds_total", &entry));
    assert!((root - (0.110 + 0.310 + 3.010)).abs() < 1e-6, "{root}");
    let hops: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "hopscope_hop_critical_seconds_total")
        .collect();
    let critical: f64 = hops.iter().map(|s| value(s)).sum();
    assert!((critical - root).abs() < 1e-6, "{critical} vs {root}");
    let orders = value(sample(
        &scrape,
        "hopscope_hop_critical_seconds_total",
        &[
            ("kind", "span"),
            ("service", "orders"),
            ("operation", "POST /orders"),
        ],
    ));
    assert!(
        orders / root > 0.9,
        "orders holds the latency: {orders} of {root}"
    );
    d.stop().await;
}
