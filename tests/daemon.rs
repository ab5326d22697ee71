//! End to end: real OTLP exporters over gRPC into a daemon on ephemeral ports,
//! answers read from the HTTP API.

mod support;

use std::time::{Duration, SystemTime};

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue as PbKeyValue};
use hopscope::ingest::otlp::resource::v1::Resource as PbResource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span as PbSpan};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use serde_json::Value;
use support::{approx, base_time, exporter, hops, span_data, SpanSpec};

/// Creates and ends one span at fixed offsets from `base`, under `parent`.
fn span(
    provider: &SdkTracerProvider,
    base: SystemTime,
    parent: Option<&SpanContext>,
    name: &'static str,
    kind: SpanKind,
    (start_ms, end_ms): (u64, u64),
) -> SpanContext {
    let tracer = provider.tracer("hopscope-tests");
    let cx = match parent {
        Some(p) => Context::new().with_remote_span_context(p.clone()),
        None => Context::new(),
    };
    let mut s = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_start_time(base + Duration::from_millis(start_ms))
        .start_with_context(&tracer, &cx);
    let sc = s.span_context().clone();
    s.end_with_timestamp(base + Duration::from_millis(end_ms));
    sc
}

/// frontend fans out to cart, pricing and inventory in parallel; inventory is the
/// slowest and so the hop the request waited on. Times in ms:
///
/// ```text
/// frontend  GET /checkout (SERVER)            [0, 100]
///   frontend POST /cart (CLIENT)              [5, 35]
///     cart POST /cart (SERVER)                [8, 32]
///       cart SELECT orders (CLIENT, no server)[10, 30]
///   frontend GET /price (CLIENT)              [40, 60]
///     pricing GET /price (SERVER)             [42, 58]
///   frontend GET /stock (CLIENT)              [40, 90]
///     inventory GET /stock (SERVER)           [41, 89]
/// ```
///
/// Critical path, walking back from 100: frontend own 90–100, stock wire 89–90,
/// inventory 41–89, stock wire 40–41, frontend own 35–40, cart wire 32–35, cart own
/// 30–32, SELECT 10–30, cart own 8–10, cart wire 5–8, frontend own 0–5.
/// Pricing ran in parallel with inventory and finished earlier: not on the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fan_out_names_the_hop_the_request_waited_on() {
    let d = support::start(Settings::default()).await;
    let endpoint = d.grpc_endpoint.clone();
    let base = base_time();
    let trace_id = tokio::task::spawn_blocking(move || {
        let p = |svc: &str| {
            SdkTracerProvider::builder()
                .with_resource(support::resource(svc))
                .with_simple_exporter(exporter(&endpoint, svc, false))
                .build()
        };
        let (frontend, cart, pricing, inventory) =
            (p("frontend"), p("cart"), p("pricing"), p("inventory"));
        let root = span(
            &frontend,
            base,
            None,
            "GET /checkout",
            SpanKind::Server,
            (0, 100),
        );
        let c = span(
            &frontend,
            base,
            Some(&root),
            "POST /cart",
            SpanKind::Client,
            (5, 35),
        );
        let cs = span(
            &cart,
            base,
            Some(&c),
            "POST /cart",
            SpanKind::Server,
            (8, 32),
        );
        span(
            &cart,
            base,
            Some(&cs),
            "SELECT orders",
            SpanKind::Client,
            (10, 30),
        );
        let pc = span(
            &frontend,
            base,
            Some(&root),
            "GET /price",
            SpanKind::Client,
            (40, 60),
        );
        span(
            &pricing,
            base,
            Some(&pc),
            "GET /price",
            SpanKind::Server,
            (42, 58),
        );
        let sc = span(
            &frontend,
            base,
            Some(&root),
            "GET /stock",
            SpanKind::Client,
            (40, 90),
        );
        span(
            &inventory,
            base,
            Some(&sc),
            "GET /stock",
            SpanKind::Server,
            (41, 89),
        );
        for provider in [frontend, cart, pricing, inventory] {
            provider.force_flush().expect("flush");
            provider.shutdown().expect("shutdown");
        }
        root.trace_id()
    })
    .await
    .unwrap();

    let t = d.wait_trace(trace_id, 8).await;
    assert_eq!(t["entry"]["service"], "frontend");
    assert_eq!(t["entry"]["operation"], "GET /checkout");
    assert!(approx(t["duration_ms"].as_f64().unwrap(), 100.0));
    assert_eq!(t["warnings"], Value::Array(vec![]));

    let path: Vec<(String, String, f64, f64)> = t["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap().to_owned(),
                s["hop_kind"].as_str().unwrap().to_owned(),
                s["start_offset_ms"].as_f64().unwrap(),
                s["duration_ms"].as_f64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("frontend", "span", 0.0, 5.0),
        ("frontend", "wire", 5.0, 3.0),
        ("cart", "span", 8.0, 2.0),
        ("cart", "span", 10.0, 20.0),
        ("cart", "span", 30.0, 2.0),
        ("frontend", "wire", 32.0, 3.0),
        ("frontend", "span", 35.0, 5.0),
        ("frontend", "wire", 40.0, 1.0),
        ("inventory", "span", 41.0, 48.0),
        ("frontend", "wire", 89.0, 1.0),
        ("frontend", "span", 90.0, 10.0),
    ];
    assert_eq!(path.len(), want.len(), "{path:?}");
    for (got, want) in path.iter().zip(want) {
        assert_eq!(
            (got.0.as_str(), got.1.as_str()),
            (want.0, want.1),
            "{path:?}"
        );
        assert!(approx(got.2, want.2) && approx(got.3, want.3), "{path:?}");
    }

    let got = hops(&t);
    let want = [
        ("inventory", "GET /stock", "span", 48.0),
        ("cart", "SELECT orders", "span", 20.0),
        ("frontend", "GET /checkout", "span", 20.0),
        ("frontend", "POST /cart", "wire", 6.0),
        ("cart", "POST /cart", "span", 4.0),
        ("frontend", "GET /stock", "wire", 2.0),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for w in want {
        assert!(
            got.iter().any(
                |g| (g.0.as_str(), g.1.as_str(), g.2.as_str()) == (w.0, w.1, w.2)
                    && approx(g.3, w.3)
            ),
            "missing hop {w:?} in {got:?}"
        );
    }
    assert_eq!(got[0].0, "inventory", "largest share first");
    let share_sum: f64 = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["share"].as_f64().unwrap())
        .sum();
    assert!(approx(share_sum, 1.0));
    let wire = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["operation"] == "GET /stock" && h["kind"] == "wire")
        .unwrap();
    assert_eq!(wire["peer"], "inventory");

    let spans = t["spans"].as_array().unwrap();
    let pricing = spans.iter().find(|s| s["service"] == "pricing").unwrap();
    assert_eq!(pricing["critical_ms"], 0.0);
    assert!(approx(pricing["self_ms"].as_f64().unwrap(), 16.0));
    assert_eq!(pricing["service_instance_id"], "pricing-1");
    assert_eq!(pricing["kind"], "server");

    // The same trace, aggregated per entry point.
    let agg = d
        .get("/api/v1/hops?entry=frontend:GET%20/checkout&since=1h")
        .await;
    assert_eq!(agg.0, 200);
    let entry = &agg.1["entries"][0];
    assert_eq!(entry["traces"], 1);
    assert!(approx(entry["total_root_ms"].as_f64().unwrap(), 100.0));
    let top = &entry["hops"][0];
    assert_eq!(
        (top["service"].as_str(), top["kind"].as_str()),
        (Some("inventory"), Some("span"))
    );
    assert!(approx(top["share"].as_f64().unwrap(), 0.48));
    let p95 = top["critical_p95_ms"].as_f64().unwrap();
    assert!(
        (p95 - 48.0).abs() < 48.0 * 0.011,
        "sketch p95 {p95} within 1 % of 48"
    );

    // Listed, newest first, and filterable.
    let list = d
        .get("/api/v1/traces?service=pricing&min_duration_ms=50")
        .await
        .1;
    assert_eq!(list["traces"][0]["trace_id"], trace_id.to_string());
    let none = d.get("/api/v1/traces?min_duration_ms=101").await.1;
    assert_eq!(none["traces"], Value::Array(vec![]));
    d.stop().await;
}

/// 31 spans from two services exported one to four spans at a time, in shuffled
/// order, gzip-compressed: one trace, the same answer as if sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_split_across_shuffled_batches_is_assembled_whole() {
    let d = support::start(Settings::default()).await;
    let trace_id = support::random_trace_id();
    let base = base_time();
    // root [0, 310]; call i: client [10+30i, 30+30i] → server [12+30i, 28+30i] → work [14+30i, 26+30i]
    let mut specs = vec![(
        "frontend",
        SpanSpec {
            id: 1,
            parent: 0,
            name: "GET /report",
            kind: SpanKind::Server,
            start_ms: 0,
            end_ms: 310,
        },
    )];
    for i in 0..10u64 {
        let t = 10 + 30 * i;
        specs.push((
            "frontend",
            SpanSpec {
                id: 100 + i,
                parent: 1,
                name: "GET /rows",
                kind: SpanKind::Client,
                start_ms: t,
                end_ms: t + 20,
            },
        ));
        specs.push((
            "backend",
            SpanSpec {
                id: 200 + i,
                parent: 100 + i,
                name: "GET /rows",
                kind: SpanKind::Server,
                start_ms: t + 2,
                end_ms: t + 18,
            },
        ));
        specs.push((
            "backend",
            SpanSpec {
                id: 300 + i,
                parent: 200 + i,
                name: "scan",
                kind: SpanKind::Internal,
                start_ms: t + 4,
                end_ms: t + 16,
            },
        ));
    }
    // A fixed shuffle (a permutation by a stride coprime with 31).
    let order: Vec<usize> = (0..specs.len())
        .map(|k| (k * 17 + 5) % specs.len())
        .collect();
    let endpoint = d.grpc_endpoint.clone();
    let front = exporter(&endpoint, "frontend", true);
    let back = exporter(&endpoint, "backend", true);
    let mut k = 0;
    while k < order.len() {
        let n = 1 + k % 4;
        for service in ["frontend", "backend"] {
            let batch: Vec<_> = order[k..(k + n).min(order.len())]
                .iter()
                .filter(|&&i| specs[i].0 == service)
                .map(|&i| span_data(trace_id, base, &specs[i].1))
                .collect();
            if !batch.is_empty() {
                let exp = if service == "frontend" { &front } else { &back };
                exp.export(batch).await.expect("export accepted");
            }
        }
        k += n;
    }

    let t = d.wait_trace(trace_id, 31).await;
    let got = hops(&t);
    let want = [
        ("backend", "scan", "span", 120.0),
        ("frontend", "GET /report", "span", 110.0),
        ("backend", "GET /rows", "span", 40.0),
        ("frontend", "GET /rows", "wire", 40.0),
    ];
    assert_eq!(got.len(), 4, "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.0.as_str(), g.1.as_str(), g.2.as_str()),
            (w.0, w.1, w.2),
            "{got:?}"
        );
        assert!(approx(g.3, w.3), "{got:?}");
    }
    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["counters"]["spans_accepted"], 31);
    assert_eq!(stats["counters"]["spans_rejected"], 0);
    d.stop().await;
}

/// The trace's root never arrives: the longest span stands in, the orphans are
/// attached under it and reported, and the attribution still adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reported_and_still_attributed() {
    let d = support::start(Settings::default()).await;
    let trace_id = support::random_trace_id();
    let base = base_time();
    let specs = [
        // Parent 0xdead never arrives.
        SpanSpec {
            id: 10,
            parent: 0xdead,
            name: "GET /a",
            kind: SpanKind::Server,
            start_ms: 0,
            end_ms: 50,
        },
        SpanSpec {
            id: 11,
            parent: 10,
            name: "work",
            kind: SpanKind::Internal,
            start_ms: 10,
            end_ms: 20,
        },
        // Another orphan, under a different missing parent, inside the first.
        SpanSpec {
            id: 20,
            parent: 0xbeef,
            name: "GET /b",
            kind: SpanKind::Server,
            start_ms: 30,
            end_ms: 45,
        },
    ];
    let exp = exporter(&d.grpc_endpoint, "api", false);
    exp.export(specs.iter().map(|s| span_data(trace_id, base, s)).collect())
        .await
        .unwrap();
    let t = d.wait_trace(trace_id, 3).await;
    assert_eq!(t["entry"]["operation"], "GET /a");
    let codes: Vec<&str> = t["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == "orphan").count(),
        2,
        "{codes:?}"
    );
    let got = hops(&t);
    let total: f64 = got.iter().map(|h| h.3).sum();
    assert!(approx(total, 50.0), "{got:?}");
    assert!(
        got.contains(&("api".into(), "GET /b".into(), "span".into(), 15.0)),
        "{got:?}"
    );
    assert!(
        got.contains(&("api".into(), "work".into(), "span".into(), 10.0)),
        "{got:?}"
    );
    d.stop().await;
}

/// The caller gave up at 50 ms; its child ran to 80 ms. Only the part the caller
/// waited for is on its critical path; the rest is reported as wasted work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_outliving_its_parent_is_clipped_and_flagged() {
    let d = support::start(Settings::default()).await;
    let trace_id = support::random_trace_id();
    let base = base_time();
    let exp = exporter(&d.grpc_endpoint, "api", false);
    exp.export(vec![
        span_data(
            trace_id,
            base,
            &SpanSpec {
                id: 1,
                parent: 0,
                name: "GET /slow",
                kind: SpanKind::Server,
                start_ms: 0,
                end_ms: 50,
            },
        ),
        span_data(
            trace_id,
            base,
            &SpanSpec {
                id: 2,
                parent: 1,
                name: "compute",
                kind: SpanKind::Internal,
                start_ms: 10,
                end_ms: 80,
            },
        ),
    ])
    .await
    .unwrap();
    let t = d.wait_trace(trace_id, 2).await;
    let child = t["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["operation"] == "compute")
        .unwrap();
    assert!(approx(child["critical_ms"].as_f64().unwrap(), 40.0));
    assert!(approx(child["duration_ms"].as_f64().unwrap(), 70.0));
    let w = t["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["code"] == "child_outlives_parent")
        .expect("flagged");
    assert_eq!(w["span_id"], "0000000000000002");
    assert!(w["message"].as_str().unwrap().contains("30.000 ms"), "{w}");
    d.stop().await;
}

fn pb_span(trace_id: Vec<u8>, span_id: Vec<u8>, name: &str) -> PbSpan {
    let t0 = support::base_ns();
    PbSpan {
        trace_id: trace_id.into(),
        span_id: span_id.into(),
        name: name.into(),
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 10_000_000,
        ..Default::default()
    }
}

/// Malformed ids are refused span by span through OTLP partial success; the
/// well-formed span of the same request is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ids_are_rejected_through_partial_success() {
    let d = support::start(Settings::default()).await;
    let mut client = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap();
    let good = vec![7u8; 16];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(PbResource {
                attributes: vec![PbKeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("raw".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    pb_span(good.clone(), vec![1; 8], "ok"),
                    pb_span(vec![7; 15], vec![2; 8], "short trace id"),
                    pb_span(good.clone(), vec![0; 8], "zero span id"),
                    PbSpan {
                        parent_span_id: vec![1, 2, 3].into(),
                        ..pb_span(good.clone(), vec![3; 8], "bad parent")
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let resp = client
        .export(request)
        .await
        .expect("the request as a whole succeeds")
        .into_inner();
    let partial = resp.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial
            .error_message
            .contains("trace id must be 16 bytes, got 15"),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains("span id is all zeros"),
        "{}",
        partial.error_message
    );
    assert!(
        partial
            .error_message
            .contains("parent span id must be 8 bytes"),
        "{}",
        partial.error_message
    );

    let t = d.wait_trace(TraceId::from_bytes([7; 16]), 1).await;
    assert_eq!(t["spans"][0]["operation"], "ok");
    assert_eq!(t["spans"][0]["service"], "raw");
    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["counters"]["spans_rejected"], 3);
    assert_eq!(stats["counters"]["spans_accepted"], 1);
    d.stop().await;
}

/// Spans that arrive after their trace was analyzed are merged; the trace is
/// analyzed again and counted once in the aggregates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_spans_are_merged_and_the_trace_reanalyzed() {
    let d = support::start(Settings::default()).await;
    let trace_id = support::random_trace_id();
    let base = base_time();
    let exp = exporter(&d.grpc_endpoint, "late", false);
    exp.export(vec![span_data(
        trace_id,
        base,
        &SpanSpec {
            id: 1,
            parent: 0,
            name: "GET /late",
            kind: SpanKind::Server,
            start_ms: 0,
            end_ms: 100,
        },
    )])
    .await
    .unwrap();
    let first = d.wait_trace(trace_id, 1).await;
    assert!(approx(first["hops"][0]["share"].as_f64().unwrap(), 1.0));

    exp.export(vec![span_data(
        trace_id,
        base,
        &SpanSpec {
            id: 2,
            parent: 1,
            name: "db",
            kind: SpanKind::Client,
            start_ms: 20,
            end_ms: 80,
        },
    )])
    .await
    .unwrap();
    let t = d.wait_trace(trace_id, 2).await;
    assert!(t["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["code"] == "late_spans"));
    let db = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["operation"] == "db")
        .unwrap();
    assert!(approx(db["share"].as_f64().unwrap(), 0.6));

    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["counters"]["late_spans"], 1);
    assert_eq!(stats["counters"]["traces_reanalyzed"], 1);
    let agg = d.get("/api/v1/hops?entry=late:GET%20/late").await.1;
    assert_eq!(agg["entries"][0]["traces"], 1, "counted once: {agg}");
    assert!(approx(
        agg["entries"][0]["hops"][0]["share"].as_f64().unwrap(),
        0.6
    ));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_json_with_fitting_status() {
    let d = support::start(Settings::default()).await;
    let cases = [
        (
            "/api/v1/traces/0123456789abcdef0123456789abcdef",
            404,
            "trace_not_found",
        ),
        ("/api/v1/traces/not-a-trace-id", 400, "invalid_trace_id"),
        (
            "/api/v1/traces/00000000000000000000000000000000",
            400,
            "invalid_trace_id",
        ),
        ("/api/v1/traces?limit=many", 400, "invalid_query"),
        ("/api/v1/hops?entry=no-operation", 400, "invalid_entry"),
        ("/api/v1/hops?since=yesterday-ish", 400, "invalid_time"),
        ("/api/v1/nothing-here", 404, "not_found"),
    ];
    for (path, status, code) in cases {
        let (got, body) = d.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    assert_eq!(d.get("/healthz").await.0, 200);
    assert_eq!(d.get("/readyz").await.0, 200);
    d.stop().await;
}

/// Nothing accepted is lost at shutdown: buffered traces are analyzed even
/// though they have not gone idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_analyzes_what_is_buffered() {
    let d = support::start(Settings {
        trace_idle: Some("1h".parse().unwrap()),
        trace_max_age: Some("2h".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    let trace_id = support::random_trace_id();
    let exp = exporter(&d.grpc_endpoint, "svc", false);
    exp.export(vec![span_data(
        trace_id,
        base_time(),
        &SpanSpec {
            id: 1,
            parent: 0,
            name: "op",
            kind: SpanKind::Server,
            start_ms: 0,
            end_ms: 5,
        },
    )])
    .await
    .unwrap();
    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["buffered_spans"], 1);
    assert_eq!(stats["stored_traces"], 0);
    let store = d.store();
    d.stop().await;
    assert!(store
        .traces()
        .get(&hopscope::model::TraceId::from_bytes(&trace_id.to_bytes()).unwrap())
        .is_some());
}
