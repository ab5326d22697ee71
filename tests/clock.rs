//! The daemon's clock, not the spans' stamps, governs what it keeps: a span
//! stamped in the year 2500 or at the epoch (a client with a broken clock, or
//! anyone who can reach a receiver) is refused through OTLP partial success
//! on both protocols and counted, and moves no window, no retention and no
//! finding's expiry, before or after a restart.

mod support;

use std::path::PathBuf;

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::trace::v1::Span;
use opentelemetry::trace::SpanKind;
use serde_json::{json, Value};
use support::wire::export;
use support::{scenarios, sp, Sp, TestDaemon};

/// 2500-01-01T00:00:00Z, in unix nanoseconds.
const YEAR_2500_NS: u64 = 16_725_225_600_000_000_000;

/// A data directory of this test process, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &TempDir) -> TestDaemon {
    support::start(Settings {
        data_dir: Some(dir.0.clone()),
        checkpoint_interval: Some("100ms".parse().unwrap()),
        ..support::detecting()
    })
    .await
}

/// Three requests a gateway cut off at `limit_ms` with a 504 while its backend
/// worked on: a gateway limit the cross-trace detectors name.
fn gateway_limit(
    gateway: &'static str,
    route: &'static str,
    limit_ms: u64,
    message: &'static str,
) -> Vec<Vec<Sp>> {
    (0..3)
        .map(|_| {
            vec![
                sp(gateway, (1, 0), route, SpanKind::Server, (0, limit_ms))
                    .http(504)
                    .error(message),
                sp(
                    "backend",
                    (2, 1),
                    route,
                    SpanKind::Server,
                    (5, limit_ms + 6_000),
                ),
            ]
        })
        .collect()
}

/// The shared cascade, its slow leaf served by `leaf`.
fn cascade(leaf: &'static str) -> Vec<Sp> {
    let mut spans = scenarios::cascade();
    spans.last_mut().expect("a leaf").service = leaf;
    spans
}

/// (kind, culprit service) of every finding.
async fn culprits(d: &TestDaemon) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = d
        .findings()
        .await
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["culprit"]["service"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until every `(kind, service)` of `want` is a finding; returns all.
async fn wait_culprits(d: &TestDaemon, want: &[(&str, &str)]) -> Vec<(String, String)> {
    d.wait_for("/api/v1/findings", |status, body| {
        status == 200
            && want.iter().all(|(kind, service)| {
                body["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|f| f["kind"] == *kind && f["culprit"]["service"] == *service)
            })
    })
    .await;
    culprits(d).await
}

/// One span of service `clocks` lasting 10 ms from `start_ns`.
fn pb_span(trace: u8, span: u8, parent: Option<u8>, start_ns: u64) -> Span {
    Span {
        trace_id: vec![trace; 16].into(),
        span_id: vec![span; 8].into(),
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default().into(),
        name: "GET /time".into(),
        kind: 2,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + 10_000_000,
        ..Default::default()
    }
}

/// A span in the year 2500, one at the epoch, and a trace whose root is now
/// and whose child is in 2500 (it straddles the bound).
fn hostile(trace: u8) -> ExportTraceServiceRequest {
    let now = support::base_ns();
    export(
        "clocks",
        vec![
            pb_span(trace, 1, None, YEAR_2500_NS),
            pb_span(trace + 1, 1, None, 0),
            pb_span(trace + 2, 1, None, now),
            pb_span(trace + 2, 2, Some(1), YEAR_2500_NS),
        ],
    )
}

fn trace_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(16)
}

/// Both receivers refuse the far-future and epoch spans with the reason and
/// keep the rest; returns nothing, asserts each answer.
async fn send_hostile(d: &TestDaemon) {
    // OTLP/gRPC, protobuf.
    let mut grpc = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap();
    let partial = grpc
        .export(hostile(0x10))
        .await
        .expect("the request as a whole succeeds")
        .into_inner()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 3, "{}", partial.error_message);
    let message = partial.error_message;
    assert!(
        message.contains("ends at 2500-01-01T00:00:00Z, more than 1h after the clock"),
        "{message}"
    );
    assert!(
        message.contains("ends at 1970-01-01T00:00:00Z, more than 1day before"),
        "{message}"
    );

    // OTLP/HTTP, JSON.
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "clocks"}}]},
        "scopeSpans": [{"spans": hostile(0x20).resource_spans[0].scope_spans[0].spans.iter().map(|s| json!({
            "traceId": hex(&s.trace_id), "spanId": hex(&s.span_id), "parentSpanId": hex(&s.parent_span_id),
            "name": s.name, "kind": s.kind,
            "startTimeUnixNano": s.start_time_unix_nano.to_string(),
            "endTimeUnixNano": s.end_time_unix_nano.to_string(),
        })).collect::<Vec<_>>()}]
    }]});
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .json(&body)
        .send()
        .await
        .expect("receiver answers")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "3", "{answer}");
    let message = answer["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("more than 1h after"), "{message}");
    assert!(message.contains("more than 1day before"), "{message}");

    // The straddling traces' roots are analyzed as sent, their 2500 children
    // left out; nothing of the refused spans is kept.
    for trace in [0x12, 0x22] {
        let t = d
            .wait_for(&format!("/api/v1/traces/{}", trace_hex(trace)), |s, b| {
                s == 200 && b["span_count"] == 1
            })
            .await;
        assert_eq!(t["spans"][0]["span_id"], "0101010101010101", "{t}");
    }
    for refused in [0x10, 0x11, 0x20, 0x21] {
        let (status, _) = d
            .get(&format!("/api/v1/traces/{}", trace_hex(refused)))
            .await;
        assert_eq!(status, 404, "trace {refused:x} was refused whole");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The report, replayed: real findings, then far-future and epoch
/// spans over both protocols, a restart, and more traffic. The earlier
/// findings survive, the later ones are found (per-trace and cross-trace),
/// the refusals are counted, and the window never leaves the present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_the_year_2500_and_the_epoch_move_no_window_across_a_restart() {
    let dir = TempDir(std::env::temp_dir().join(format!("hopscope-clock-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let d = start(&dir).await;

    // Real findings: nginx's 60 s limit (cross-trace) and a cascade (per trace).
    let mut first = gateway_limit("nginx", "GET /export", 60_000, "upstream timed out");
    first.push(cascade("inventory"));
    support::send(&d, first).await;
    let before = wait_culprits(
        &d,
        &[
            ("gateway_timeout", "nginx"),
            ("cascading_timeout", "inventory"),
        ],
    )
    .await;

    send_hostile(&d).await;
    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["counters"]["spans_rejected_future"], 4, "{stats}");
    assert_eq!(stats["counters"]["spans_rejected_past"], 2, "{stats}");
    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hopscope_spans_rejected_future_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hopscope_spans_rejected_past_total 2"),
        "{metrics}"
    );

    // The window still holds the real traffic and the two straddling roots,
    // all of the present.
    let timeouts = d
        .wait_for("/api/v1/timeouts", |s, b| {
            s == 200 && b["window"]["traces"] == 6
        })
        .await;
    let newest = timeouts["window"]["newest_end"].as_str().unwrap();
    assert!(!newest.starts_with("2500"), "{timeouts}");
    // A detector run after the hostile spans keeps the earlier findings.
    d.detected(6).await;
    assert_eq!(culprits(&d).await, before);

    // A restart on the same data directory changes nothing.
    d.stop().await;
    let d = start(&dir).await;
    d.detected(6).await;
    assert_eq!(culprits(&d).await, before, "after the restart");

    // New traffic: API Gateway's 29 s limit and another cascade are found,
    // beside the earlier findings.
    let mut later = gateway_limit("apigw", "GET /report", 29_000, "Endpoint request timed out");
    later.push(cascade("pricing"));
    support::send(&d, later).await;
    let after = wait_culprits(
        &d,
        &[
            ("gateway_timeout", "nginx"),
            ("gateway_timeout", "apigw"),
            ("cascading_timeout", "inventory"),
            ("cascading_timeout", "pricing"),
        ],
    )
    .await;
    for earlier in &before {
        assert!(after.contains(earlier), "{earlier:?} survives: {after:?}");
    }
    d.stop().await;
}
