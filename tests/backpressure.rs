//! Backpressure end to end: a flood of OTLP/gRPC and OTLP/HTTP exports
//! against a small memory budget is refused with the retryable answers
//! (UNAVAILABLE with RetryInfo; 503 with Retry-After), counted, and never pushes the buffer past the budget; an
//! exporter that retries as told gets everything in, and nothing accepted is
//! lost.

mod support;

use std::time::Duration;

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::trace::v1::Span;
use prost::Message;
use support::wire::{export, text};
use tonic::Code;
use tonic_types::StatusExt;

/// Requests in the flood, traces per request and spans per trace.
const REQUESTS: usize = 24;
const TRACES: usize = 10;
const SPANS: usize = 20;
/// The budget: 1 MiB, about a third of what the flood holds.
const BUDGET_MIB: usize = 1;

/// Request `n`: `TRACES` traces of `SPANS` spans, each span with a few hundred
/// bytes of attributes (about 130 KB in all).
fn request(n: usize) -> ExportTraceServiceRequest {
    let t0 = support::base_ns();
    let mut spans = Vec::new();
    for t in 0..TRACES {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&(n as u64 + 1).to_be_bytes());
        trace_id[8..].copy_from_slice(&(t as u64 + 1).to_be_bytes());
        for s in 0..SPANS {
            spans.push(Span {
                trace_id: trace_id.to_vec().into(),
                span_id: (s as u64 + 1).to_be_bytes().to_vec().into(),
                parent_span_id: if s == 0 {
                    Default::default()
                } else {
                    1u64.to_be_bytes().to_vec().into()
                },
                name: format!("op-{s}"),
                kind: 2,
                start_time_unix_nano: t0 + s as u64 * 1_000,
                end_time_unix_nano: t0 + 10_000_000 - s as u64 * 1_000,
                attributes: (0..4)
                    .map(|a| {
                        text(
                            &format!("attr.{a}"),
                            format!("{n}-{t}-{s}-{a}-{}", "x".repeat(120)),
                        )
                    })
                    .collect(),
                ..Default::default()
            });
        }
    }
    export("flood", spans)
}

/// Sends request `n` until it is accepted, waiting as each refusal says:
/// even requests over OTLP/gRPC, odd ones over OTLP/HTTP. Returns how many
/// times it was refused.
async fn export_retrying(d: Endpoints, n: usize) -> usize {
    let mut refused = 0;
    loop {
        let retry = if n % 2 == 0 {
            grpc_export(&d.grpc, n).await
        } else {
            http_export(&d.http, n).await
        };
        let Some(retry) = retry else {
            return refused;
        };
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(5));
        refused += 1;
        // The exporter's backoff: as told, shortened to keep the test quick.
        tokio::time::sleep(retry / 10).await;
    }
}

#[derive(Clone)]
struct Endpoints {
    grpc: String,
    http: String,
}

/// One gRPC export: `None` when accepted, else the delay the refusal asks for.
async fn grpc_export(endpoint: &str, n: usize) -> Option<Duration> {
    let mut client = TraceServiceClient::connect(endpoint.to_owned())
        .await
        .expect("connects")
        .max_decoding_message_size(usize::MAX);
    match client.export(request(n)).await {
        Ok(answer) => {
            assert!(answer.into_inner().partial_success.is_none());
            None
        }
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert!(
                status.message().contains("memory budget"),
                "{}",
                status.message()
            );
            let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
            Some(retry.expect("the refusal says when to retry"))
        }
    }
}

/// One OTLP/HTTP export (protobuf): `None` when accepted, else the
/// `Retry-After` of the 503.
async fn http_export(endpoint: &str, n: usize) -> Option<Duration> {
    let answer = reqwest::Client::new()
        .post(format!("{endpoint}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request(n).encode_to_vec())
        .send()
        .await
        .expect("the receiver answers");
    let status = answer.status().as_u16();
    if status == 200 {
        return None;
    }
    assert_eq!(status, 503, "the retryable refusal");
    let retry = answer.headers()["retry-after"].to_str().unwrap().parse();
    let message = String::from_utf8_lossy(&answer.bytes().await.unwrap()).into_owned();
    assert!(message.contains("memory budget"), "{message}");
    Some(Duration::from_secs(retry.expect("Retry-After in seconds")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_memory_budget_is_refused_retryably_and_nothing_accepted_is_lost() {
    let d = support::start(Settings {
        memory_limit_mib: Some(BUDGET_MIB),
        trace_idle: Some("300ms".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    let flood: Vec<_> = (0..REQUESTS)
        .map(|n| {
            let endpoints = Endpoints {
                grpc: d.grpc_endpoint.clone(),
                http: d.http_endpoint.clone(),
            };
            tokio::spawn(export_retrying(endpoints, n))
        })
        .collect();
    // Refusals over gRPC (even requests) and over HTTP (odd ones).
    let mut by_protocol = [0, 0];
    let mut peak = 0u64;
    for (n, task) in flood.into_iter().enumerate() {
        by_protocol[n % 2] += task.await.expect("the exporter finishes");
        let stats = d.get("/api/v1/stats").await.1;
        peak = peak.max(stats["buffered_bytes_estimate"].as_u64().unwrap());
    }
    let refusals: usize = by_protocol.iter().sum();
    assert!(
        refusals > 0,
        "the flood holds three budgets: some must wait: {by_protocol:?}"
    );

    // Every span of every request is accepted once and analyzed in its trace.
    let all = (REQUESTS * TRACES * SPANS) as u64;
    let stats = d
        .wait_for("/api/v1/stats", |status, body| {
            status == 200
                && body["counters"]["traces_analyzed"] == (REQUESTS * TRACES) as u64
                && body["analysis_pending"] == 0
        })
        .await;
    let counters = &stats["counters"];
    assert_eq!(counters["spans_accepted"], all);
    assert_eq!(counters["spans_rejected"], 0);
    assert_eq!(counters["export_requests_refused"], refusals as u64);
    assert!(counters["export_bytes_refused"].as_u64().unwrap() > 100_000 * refusals as u64);
    assert_eq!(counters["export_requests"], REQUESTS as u64);
    assert_eq!(stats["memory_budget_bytes"], BUDGET_MIB << 20);
    assert!(
        peak <= (BUDGET_MIB << 20) as u64,
        "the buffer stayed within its budget: {peak}"
    );
    let trace = d
        .get("/api/v1/traces/0000000000000007000000000000000a")
        .await;
    assert_eq!(trace.0, 200);
    assert_eq!(trace.1["spans"].as_array().unwrap().len(), SPANS);
    d.stop().await;
}

/// With the buffer held at its budget (traces never go idle), an OTLP/HTTP
/// export is refused with 503 and `Retry-After`, whichever protocol filled it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_export_past_the_budget_gets_503_with_retry_after() {
    let d = support::start(Settings {
        memory_limit_mib: Some(BUDGET_MIB),
        trace_idle: Some("1h".parse().unwrap()),
        trace_max_age: Some("1h".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    // Fill the buffer over gRPC until it refuses: nothing completes meanwhile.
    let mut n = 0;
    while grpc_export(&d.grpc_endpoint, n).await.is_none() {
        n += 1;
        assert!(
            n < REQUESTS,
            "a 1 MiB budget holds fewer than {REQUESTS} requests"
        );
    }
    let retry = http_export(&d.http_endpoint, n + 1).await;
    assert_eq!(
        retry,
        Some(Duration::from_secs(1)),
        "503 with Retry-After: 1"
    );
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["counters"]["export_requests_refused"], 2, "{stats}");
    assert_eq!(
        stats["counters"]["spans_accepted"],
        (n * TRACES * SPANS) as u64,
        "what was accepted is still there"
    );
    d.stop().await;
}
