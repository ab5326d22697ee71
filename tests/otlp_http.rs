//! The OTLP/HTTP receiver end to end: the OpenTelemetry SDK's exporter over
//! HTTP (protobuf and JSON) against the same spans over gRPC; the OTLP
//! specification's and Jaeger UI's example requests, checked against Jaeger
//! UI's own conversion; gzip; every refusal with its status and message; partial
//! success for spans with bad ids in both encodings; and the load generator.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use hopscope::clock::Clock;
use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue as PbKeyValue};
use hopscope::ingest::otlp::resource::v1::Resource as PbResource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span as PbSpan};
use hopscope_loadgen::{self as loadgen, Options, Protocol as LoadProtocol, Until};
use opentelemetry::trace::{Event, SpanKind, Status};
use opentelemetry::{Array, KeyValue, StringValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanEvents, SpanExporter as _};
use prost::Message;
use serde_json::{json, Value};
use support::{base_time, random_trace_id, resource, span_data, SpanSpec, TestDaemon};

/// When the fixtures were recorded (their spans' last end, unix ns): the
/// daemon's clock then, so it takes them.
const SPEC_EXAMPLE: u64 = 1_544_712_661_000_000_000;
const JANUARY_2024: u64 = 1_706_678_909_209_835_000;
const MARCH_2024: u64 = 1_711_138_247_116_321_958;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/otlp-json");

/// `google.rpc.Status`, as the OTLP/HTTP specification defines error bodies.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The SDK's OTLP/HTTP span exporter for one service.
fn http_exporter(
    d: &TestDaemon,
    service: &str,
    protocol: Protocol,
    gzip: bool,
) -> opentelemetry_otlp::SpanExporter {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        // A programmatic endpoint is used as is: the SDK appends /v1/traces only
        // to OTEL_EXPORTER_OTLP_ENDPOINT.
        .with_endpoint(format!("{}/v1/traces", d.http_endpoint))
        .with_timeout(Duration::from_secs(10));
    if gzip {
        builder = builder.with_compression(opentelemetry_otlp::Compression::Gzip);
    }
    let mut exporter = builder.build().expect("exporter builds");
    exporter.set_resource(&resource(service));
    exporter
}

/// A hand-written OTLP/HTTP request.
async fn post(
    d: &TestDaemon,
    path: &str,
    content_type: &str,
    gzip: bool,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{path}", d.http_endpoint))
        .header("content-type", content_type);
    let body = if gzip {
        request = request.header("content-encoding", "gzip");
        gzipped(&body)
    } else {
        body
    };
    request.body(body).send().await.expect("receiver answers")
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

/// Waits until the trace is analyzed with `spans` spans.
async fn trace(d: &TestDaemon, trace_id: &str, spans: usize) -> Value {
    d.wait_for(&format!("/api/v1/traces/{trace_id}"), |status, body| {
        status == 200 && body["span_count"] == spans
    })
    .await
}

/// The trace's spans by id.
fn spans(trace: &Value) -> BTreeMap<String, Value> {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap().to_owned(), s.clone()))
        .collect()
}

/// The SDK's exporter over HTTP, protobuf and JSON (gzip), delivers what it
/// delivers over gRPC: the same spans, attributes, events, status, critical path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exporter_over_http_protobuf_and_json_builds_the_same_trace_as_over_grpc() {
    let d = support::start(Settings::default()).await;
    let base = base_time();
    let mut traces = Vec::new();
    for transport in ["grpc", "http/protobuf", "http/json"] {
        let trace_id = random_trace_id();
        let spec = |id, parent, name, kind, times: (u64, u64)| SpanSpec {
            id,
            parent,
            name,
            kind,
            start_ms: times.0,
            end_ms: times.1,
        };
        let mut root = span_data(
            trace_id,
            base,
            &spec(1, 0, "GET /checkout", SpanKind::Server, (0, 100)),
        );
        root.attributes = vec![
            KeyValue::new("http.response.status_code", 504),
            KeyValue::new("http.route", "/checkout"),
        ];
        root.status = Status::error("upstream timed out");
        let mut call = span_data(
            trace_id,
            base,
            &spec(2, 1, "GET /stock", SpanKind::Client, (10, 90)),
        );
        call.attributes = vec![
            KeyValue::new("retry", true),
            KeyValue::new("ratio", 0.25),
            KeyValue::new(
                "tags",
                opentelemetry::Value::Array(Array::String(vec![
                    StringValue::from("a"),
                    StringValue::from("b"),
                ])),
            ),
        ];
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "exception",
            base + Duration::from_millis(50),
            vec![KeyValue::new("exception.type", "TimeoutError")],
            0,
        ));
        call.events = events;
        let mut server = span_data(
            trace_id,
            base,
            &spec(3, 2, "GET /stock", SpanKind::Server, (20, 80)),
        );
        server.attributes = vec![KeyValue::new("http.response.status_code", 200)];
        for (service, batch) in [("frontend", vec![root, call]), ("inventory", vec![server])] {
            let exporter = match transport {
                "grpc" => support::exporter(&d.grpc_endpoint, service, false),
                "http/protobuf" => http_exporter(&d, service, Protocol::HttpBinary, false),
                _ => http_exporter(&d, service, Protocol::HttpJson, true),
            };
            exporter.export(batch).await.expect("export accepted");
        }
        traces.push((transport, d.wait_trace(trace_id, 3).await));
    }

    for (transport, t) in &traces {
        let by_id = spans(t);
        let (root, call, server) = (
            &by_id["0000000000000001"],
            &by_id["0000000000000002"],
            &by_id["0000000000000003"],
        );
        assert_eq!(root["parent_span_id"], Value::Null, "{transport}");
        assert_eq!(call["parent_span_id"], "0000000000000001", "{transport}");
        assert_eq!(server["parent_span_id"], "0000000000000002", "{transport}");
        assert_eq!(
            (&root["service"], &call["service"], &server["service"]),
            (&json!("frontend"), &json!("frontend"), &json!("inventory")),
            "{transport}"
        );
        assert_eq!(
            root["service_instance_id"], "frontend-1",
            "{transport}: the resource's instance id"
        );
        assert_eq!(root["attributes"]["http.response.status_code"], 504);
        assert_eq!(root["attributes"]["http.route"], "/checkout");
        assert_eq!(
            root["status"],
            json!({"code": "error", "message": "upstream timed out"}),
            "{transport}"
        );
        assert_eq!(
            call["attributes"],
            json!({"retry": true, "ratio": 0.25, "tags": ["a", "b"], "service.instance.id": "frontend-1"}),
            "{transport}"
        );
        assert_eq!(call["events"][0]["name"], "exception", "{transport}");
        assert_eq!(
            call["events"][0]["attributes"]["exception.type"], "TimeoutError",
            "{transport}"
        );
        assert_eq!(server["kind"], "server", "{transport}");
        assert_eq!(server["duration_ms"], 60.0, "{transport}");
    }
    let (_, grpc) = &traces[0];
    for (transport, t) in &traces[1..] {
        for part in ["spans", "critical_path", "hops", "warnings"] {
            assert_eq!(
                t[part], grpc[part],
                "{transport} differs from gRPC in {part}"
            );
        }
    }
    d.stop().await;
}

/// The OTLP specification's example request, with a charset parameter and
/// gzip: one span, its parent not in the request (an orphan root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_specifications_example_request_is_one_span_of_my_service() {
    let d = support::start_at(Settings::default(), Clock::manual(SPEC_EXAMPLE)).await;
    let response = post(
        &d,
        "/v1/traces",
        "application/json; charset=utf-8",
        true,
        fixture("trace.json"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));

    // The ids are upper-case hex in the request.
    let t = trace(&d, "5b8efff798038103d269b633813fc60c", 1).await;
    let span = &t["spans"][0];
    assert_eq!(span["span_id"], "eee19b7ec3c1b174");
    assert_eq!(span["parent_span_id"], "eee19b7ec3c1b173");
    assert_eq!(span["service"], "my.service");
    assert_eq!(span["operation"], "I'm a server span");
    assert_eq!(span["kind"], "server");
    assert_eq!(span["start_time"], "2018-12-13T14:51:00.000000Z");
    assert_eq!(span["duration_ms"], 1000.0);
    assert_eq!(span["attributes"], json!({"my.span.attr": "some value"}));
    assert_eq!(t["entry"]["service"], "my.service");
    d.stop().await;
}

/// Jaeger UI's expected conversion of a request, by span id: operation, parent,
/// start and duration (µs) and service.
fn jaeger_ui_spans(out: &Value) -> BTreeMap<String, (String, Option<String>, u64, u64, String)> {
    let trace = &out["data"][0];
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let parent = s["references"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["refType"] == "CHILD_OF")
                .map(|r| r["spanID"].as_str().unwrap().to_owned());
            let process = s["processID"].as_str().unwrap();
            (
                s["spanID"].as_str().unwrap().to_owned(),
                (
                    s["operationName"].as_str().unwrap().to_owned(),
                    parent,
                    s["startTime"].as_u64().unwrap(),
                    s["duration"].as_u64().unwrap(),
                    trace["processes"][process]["serviceName"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ),
            )
        })
        .collect()
}

/// The same, from hopscope's API (start in RFC 3339 with µs, duration in ms).
fn hopscope_spans(t: &Value) -> BTreeMap<String, (String, Option<String>, u64, u64, String)> {
    spans(t)
        .into_iter()
        .map(|(id, s)| {
            let start = s["start_time"].as_str().unwrap();
            let micros = humantime::parse_rfc3339(start)
                .unwrap()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            (
                id,
                (
                    s["operation"].as_str().unwrap().to_owned(),
                    s["parent_span_id"].as_str().map(str::to_owned),
                    micros,
                    // Whole µs, truncated as Jaeger UI's conversion does.
                    (s["duration_ms"].as_f64().unwrap() * 1000.0 + 1e-6).floor() as u64,
                    s["service"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// Jaeger UI's converter fixtures: hopscope reads each request as Jaeger UI
/// does, except that it keeps one copy of a duplicated span (and says so), and
/// a resource without a service name is `unknown_service`, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_ui_fixtures_agree_with_jaeger_uis_own_conversion() {
    let dir = "jaeger-ui-otlp2jaeger";
    let expected: Value =
        serde_json::from_slice(&fixture(&format!("{dir}/otlp2jaeger-out.json"))).unwrap();
    let d = support::start_at(Settings::default(), Clock::manual(JANUARY_2024)).await;
    let response = post(
        &d,
        "/v1/traces",
        "application/json",
        false,
        fixture(&format!("{dir}/otlp2jaeger-in.json")),
    )
    .await;
    assert_eq!(response.status(), 200);
    let t = trace(&d, "83a9efd15c1c98a977e0711cc93ee28b", 1).await;
    assert_eq!(hopscope_spans(&t), jaeger_ui_spans(&expected));
    assert_eq!(expected["data"][0]["spans"].as_array().unwrap().len(), 2);
    assert!(
        t["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "duplicate_span"),
        "{}",
        t["warnings"]
    );
    assert_eq!(
        t["spans"][0]["attributes"],
        json!({"net.peer.ip": "1.2.3.4", "peer.service": "telemetrygen-client"})
    );
    d.stop().await;

    let d = support::start_at(Settings::default(), Clock::manual(JANUARY_2024)).await;
    let response = post(
        &d,
        "/v1/traces",
        "application/json",
        false,
        fixture(&format!("{dir}/otlp2jaeger-in-error.json")),
    )
    .await;
    assert_eq!(response.status(), 200);
    let t = trace(&d, "83a9efd15c1c98a977e0711cc93ee28b", 1).await;
    assert_eq!(t["spans"][0]["service"], "unknown_service");
    d.stop().await;

    // Four spans in one request, and the same spans one request each: one trace.
    let expected: Value =
        serde_json::from_slice(&fixture(&format!("{dir}/oltp2jaeger-multi-out.json"))).unwrap();
    let combined = fixture(&format!("{dir}/otlp2jaeger-multi-in-combined.json"));
    let lines = fixture(&format!("{dir}/otlp2jaeger-multi-in.json.txt"));
    let lines: Vec<Vec<u8>> = lines
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines.len(), 4);
    let mut seen = Vec::new();
    for requests in [vec![combined], lines] {
        let d = support::start_at(Settings::default(), Clock::manual(MARCH_2024)).await;
        for body in requests {
            let response = post(&d, "/v1/traces", "application/json", false, body).await;
            assert_eq!(response.status(), 200);
        }
        let t = trace(&d, "c620759e5d60fafb8ee0922b30e06bc6", 4).await;
        assert_eq!(hopscope_spans(&t), jaeger_ui_spans(&expected));
        assert_eq!(t["entry"]["operation"], "main");
        seen.push(t["spans"].clone());
        d.stop().await;
    }
    assert_eq!(seen[0], seen[1]);
}

fn pb_request(spans: Vec<PbSpan>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(PbResource {
                attributes: vec![PbKeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("cart".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn pb_span(trace_id: &[u8], span_id: &[u8], parent: &[u8]) -> PbSpan {
    let t0 = support::base_ns();
    PbSpan {
        trace_id: trace_id.to_vec().into(),
        span_id: span_id.to_vec().into(),
        parent_span_id: parent.to_vec().into(),
        name: "GET /cart".into(),
        kind: 2,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 100_000_000,
        ..Default::default()
    }
}

fn json_span(trace_id: Value, span_id: &str, parent: &str) -> Value {
    let t0 = support::base_ns();
    json!({
        "traceId": trace_id, "spanId": span_id, "parentSpanId": parent,
        "name": "GET /cart", "kind": 2,
        "startTimeUnixNano": t0.to_string(), "endTimeUnixNano": (t0 + 100_000_000).to_string()
    })
}

/// Spans with bad ids are rejected through partial success in either encoding;
/// the good spans of the same request are kept, each in its own trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_are_a_partial_success_and_the_good_spans_keep_their_own_traces() {
    let d = support::start(Settings::default()).await;
    let pb = pb_request(vec![
        pb_span(&[0x11; 16], &[1; 8], &[]),
        pb_span(&[0x11; 15], &[2; 8], &[]),
        pb_span(&[], &[3; 8], &[]),
        pb_span(&[0x12; 16], &[4; 8], &[0xff; 3]),
        pb_span(&[0x12; 16], &[5; 8], &[]),
    ]);
    let response = post(&d, "/v1/traces", "application/x-protobuf", false, pb).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial.error_message.contains("rejected 3 of 5 spans")
            && partial
                .error_message
                .contains("span[1]: trace id must be 16 bytes, got 15")
            && partial
                .error_message
                .contains("span[3]: parent span id must be 8 bytes, got 3"),
        "{}",
        partial.error_message
    );

    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]},
        "scopeSpans": [{"spans": [
            json_span(json!("21212121212121212121212121212121"), "0101010101010101", ""),
            // misspelled: the id is missing
            json!({"traceID": "21212121212121212121212121212121", "spanId": "0202020202020202"}),
            // base64 is not the OTLP JSON form
            json_span(json!("ISEhISEhISEhISEhISEhIQ=="), "0303030303030303", ""),
            json_span(json!("22222222222222222222222222222222"), "0404040404040404", "not hex!"),
            json_span(json!("22222222222222222222222222222222"), "0505050505050505", "")
        ]}]
    }]});
    let response = post(
        &d,
        "/v1/traces",
        "application/json",
        false,
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let partial = &answer["partialSuccess"];
    assert_eq!(
        partial["rejectedSpans"], "3",
        "an int64 is a string in JSON"
    );
    let message = partial["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("rejected 3 of 5 spans")
            && message.contains("span[1]: trace id must be 16 bytes, got 0")
            && message.contains("span[2]: trace id is not 32 lowercase or uppercase hex digits"),
        "{message}"
    );

    for (trace_id, span_id) in [
        ("11111111111111111111111111111111", "0101010101010101"),
        ("12121212121212121212121212121212", "0505050505050505"),
        ("21212121212121212121212121212121", "0101010101010101"),
        ("22222222222222222222222222222222", "0505050505050505"),
    ] {
        let t = trace(&d, trace_id, 1).await;
        assert_eq!(t["spans"][0]["span_id"], span_id);
        assert_eq!(t["spans"][0]["service"], "cart");
    }
    let stats = d.get("/api/v1/stats").await.1;
    assert_eq!(stats["counters"]["spans_accepted"], 4);
    assert_eq!(stats["counters"]["spans_rejected"], 6);
    d.stop().await;
}

/// A protobuf request gzip-compressed by hand is inflated and accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_protobuf_body_is_accepted() {
    let d = support::start(Settings::default()).await;
    let body = pb_request(vec![pb_span(&[0x31; 16], &[1; 8], &[])]);
    let response = post(&d, "/v1/traces", "application/x-protobuf", true, body).await;
    assert_eq!(response.status(), 200);
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success, None);
    trace(&d, "31313131313131313131313131313131", 1).await;
    d.stop().await;
}

/// The error body: a `google.rpc.Status` in the request's encoding (JSON when
/// the request's is unknown).
async fn refusal(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, String) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let content_type = headers["content-type"].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();
    let message = match content_type.as_str() {
        "application/x-protobuf" => RpcStatus::decode(body).expect("a Status").message,
        "application/json" => {
            let status: Value = serde_json::from_slice(&body).expect("a JSON Status");
            status["message"].as_str().expect("a message").to_owned()
        }
        other => panic!("unexpected content type {other}"),
    };
    (status, headers, message)
}

/// Every refusal has its status, a readable message, and a count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_has_its_status_a_message_and_a_count() {
    let d = support::start(Settings {
        otlp_max_message_mib: Some(1),
        ..Settings::default()
    })
    .await;
    let pb = "application/x-protobuf";
    let js = "application/json";

    // 400: undecodable protobuf, malformed JSON, a body that is not gzip.
    let (status, headers, message) = refusal(
        post(
            &d,
            "/v1/traces",
            pb,
            false,
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], pb);
    assert!(message.starts_with("malformed protobuf"), "{message}");
    let (status, headers, message) = refusal(
        post(
            &d,
            "/v1/traces",
            js,
            false,
            br#"{"resourceSpans": [}"#.to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], js);
    assert!(
        message.starts_with("malformed OTLP/JSON") && message.contains("column"),
        "{message}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .header("content-type", js)
        .header("content-encoding", "gzip")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, _, message) = refusal(response).await;
    assert_eq!(status, 400);
    assert!(message.contains("not valid gzip"), "{message}");

    // 413: over 1 MiB as sent, and a gzip bomb over it once inflated.
    let (status, headers, message) =
        refusal(post(&d, "/v1/traces", pb, false, vec![0; (1 << 20) + 1]).await).await;
    assert_eq!(status, 413);
    assert_eq!(headers["content-type"], pb);
    assert!(
        message.contains("over the limit of 1048576 bytes"),
        "{message}"
    );
    let bomb = gzipped(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .header("content-type", js)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    let (status, _, message) = refusal(response).await;
    assert_eq!(status, 413);
    assert!(message.contains("once inflated"), "{message}");

    // 415: an unknown content type, or none, and an unknown content encoding.
    let (status, headers, message) =
        refusal(post(&d, "/v1/traces", "text/plain", false, b"spans".to_vec()).await).await;
    assert_eq!(status, 415);
    assert_eq!(headers["content-type"], js);
    assert!(message.contains("application/x-protobuf"), "{message}");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(response).await.0, 415);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/traces", d.http_endpoint))
        .header("content-type", pb)
        .header("content-encoding", "br")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    let (status, headers, message) = refusal(response).await;
    assert_eq!(status, 415);
    assert_eq!(headers["content-type"], pb);
    assert_eq!(headers["accept-encoding"], "gzip, identity");
    assert!(message.contains("\"br\""), "{message}");

    // 405 for other methods, 404 for other paths.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/traces", d.http_endpoint))
        .send()
        .await
        .unwrap();
    let (status, headers, message) = refusal(response).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    assert!(message.contains("GET"), "{message}");
    let (status, _, message) = refusal(post(&d, "/v1/logs", js, false, b"{}".to_vec()).await).await;
    assert_eq!(status, 404);
    assert!(message.contains("/v1/logs"), "{message}");

    let stats = d.get("/api/v1/stats").await.1;
    let counters = &stats["counters"];
    assert_eq!(counters["otlp_malformed"], 3, "{counters}");
    assert_eq!(counters["otlp_too_large"], 2, "{counters}");
    assert_eq!(counters["otlp_http_unsupported"], 5, "{counters}");
    assert_eq!(
        counters["export_requests"], 0,
        "nothing refused reached the buffer"
    );
    d.stop().await;
}

/// `hopscope-loadgen --protocol http` against the receiver: every span sent
/// is acknowledged, counted and analyzed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_over_otlp_http_is_acknowledged_and_counted() {
    let d = support::start(Settings::default()).await;
    let mut total = 0;
    for gzip in [false, true] {
        let opts = Options {
            endpoint: d.http_endpoint.clone(),
            protocol: LoadProtocol::Http,
            connections: 2,
            until: Until::Spans(5_000),
            gzip,
            api: Some(d.api.clone()),
            ..Options::default()
        };
        let report = loadgen::run(&opts, |_| {}).await.expect("run");
        assert_eq!(report.accepted, report.sent, "{report}");
        assert_eq!((report.refused, report.given_up), (0, 0), "{report}");
        assert_eq!(report.daemon_accepted, Some(report.sent), "{report}");
        total += report.sent;
    }
    let stats = d
        .wait_for("/api/v1/stats", |status, body| {
            status == 200 && body["buffered_spans"] == 0 && body["analysis_pending"] == 0
        })
        .await;
    assert_eq!(stats["counters"]["spans_accepted"], total);
    d.stop().await;
}
