//! Distinct names from the wire are bounded (`names_max_mib`): a client that
//! puts ids in its span names gets `hopscope.names_over_limit` for the names
//! past the limit, counted, while every span is still accepted and analyzed
//! and the names held before keep reading right. Its own test binary: the
//! interner is process-wide.

mod support;

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::otlp::resource::v1::Resource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use hopscope::model::intern::{ENTRY_OVERHEAD, OVER_LIMIT};

/// Requests and single-span traces per request: 40,000 names of 40 bytes,
/// about 2.75 MiB with overhead, against a 1 MiB limit.
const REQUESTS: u64 = 20;
const PER_REQUEST: u64 = 2_000;

fn name(n: u64) -> String {
    format!("GET /orders/{n:028}")
}

/// Request `r`: one root span per trace, each named after its own order id.
fn request(r: u64) -> ExportTraceServiceRequest {
    let t0 = support::base_ns();
    let spans = (0..PER_REQUEST)
        .map(|i| {
            let n = r * PER_REQUEST + i + 1;
            Span {
                trace_id: [n.to_be_bytes(), n.to_be_bytes()].concat().into(),
                span_id: n.to_be_bytes().to_vec().into(),
                name: name(n),
                kind: 2,
                start_time_unix_nano: t0,
                end_time_unix_nano: t0 + 10_000_000,
                ..Default::default()
            }
        })
        .collect();
    let service = KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("orders".into())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![service],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_past_the_limit_read_as_over_limit_and_every_span_is_still_analyzed() {
    let d = support::start(Settings {
        names_max_mib: Some(1),
        store_max_traces: Some(50_000),
        ..Settings::default()
    })
    .await;
    let mut client = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap();
    for r in 0..REQUESTS {
        client.export(request(r)).await.expect("accepted");
    }
    let all = REQUESTS * PER_REQUEST;
    let stats = d
        .wait_for("/api/v1/stats", |_, s| {
            s["counters"]["traces_analyzed"] == all && s["analysis_pending"] == 0
        })
        .await;
    assert_eq!(stats["counters"]["spans_accepted"], all);
    let interner = &stats["interner"];
    let (held, limit) = (interner["bytes"].as_u64().unwrap(), 1 << 20);
    assert!(held <= limit, "within the limit: {interner}");
    let cost = (name(1).len() + ENTRY_OVERHEAD) as u64;
    assert!(held + cost > limit, "filled up to it: {interner}");
    let refused = interner["names_refused"].as_u64().unwrap();
    assert!(
        refused >= all - limit / cost,
        "every new name past the limit is counted: {interner}"
    );

    let trace = |n: u64| format!("/api/v1/traces/{n:016x}{n:016x}");
    let (_, first) = d.get(&trace(1)).await;
    assert_eq!(
        first["spans"][0]["operation"],
        name(1),
        "held before: {first}"
    );
    let (_, last) = d.get(&trace(all)).await;
    assert_eq!(last["spans"][0]["operation"], OVER_LIMIT, "{last}");

    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("hopscope_names_refused_total {refused}")),
        "{metrics}"
    );
    d.stop().await;
}
