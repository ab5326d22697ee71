//! Security at the listeners, through real sockets: bearer tokens on the API
//! and the OTLP/gRPC receiver (with the OpenTelemetry SDK's exporter), size
//! limits, and TLS with a certificate made for the test.

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter;
use serde_json::Value;
use support::{random_trace_id, span_data, SpanSpec, TestDaemon};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::Code;

const TOKEN: &str = "s3cret-token";

/// The daemon's counters, read with `token` if the API needs one.
async fn counters(d: &TestDaemon, token: Option<&str>) -> Value {
    let mut request = reqwest::Client::new().get(format!("{}/api/v1/stats", d.api));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["counters"].clone()
}

/// An OTLP/gRPC exporter sending `authorization` (if given) to `endpoint`.
fn exporter(
    endpoint: &str,
    authorization: Option<&str>,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> opentelemetry_otlp::SpanExporter {
    let mut metadata = MetadataMap::new();
    if let Some(value) = authorization {
        metadata.insert("authorization", value.parse().unwrap());
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .with_metadata(metadata);
    if let Some(tls) = tls {
        builder = builder.with_tls_config(tls);
    }
    let mut exporter = builder.build().expect("exporter builds");
    exporter.set_resource(&support::resource("frontend"));
    exporter
}

/// Exports one single-span trace; returns its id and the export's result.
async fn export_one(
    exporter: &opentelemetry_otlp::SpanExporter,
) -> (TraceId, opentelemetry_sdk::error::OTelSdkResult) {
    let trace_id = random_trace_id();
    let span = SpanSpec {
        id: 1,
        parent: 0,
        name: "GET /checkout",
        kind: SpanKind::Server,
        start_ms: 0,
        end_ms: 20,
    };
    let result = exporter
        .export(vec![span_data(trace_id, support::base_time(), &span)])
        .await;
    (trace_id, result)
}

#[tokio::test]
async fn api_routes_need_the_token_and_the_probes_do_not() {
    let d = support::start(Settings {
        api_token: Some(TOKEN.into()),
        ..Settings::default()
    })
    .await;
    let http = reqwest::Client::new();
    let traces = format!("{}/api/v1/traces", d.api);

    let missing = http.get(&traces).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");
    let wrong = http.get(&traces).bearer_auth("s3cret-tokem").send().await;
    assert_eq!(wrong.unwrap().status(), 401);
    let basic = http
        .get(&traces)
        .basic_auth("admin", Some(TOKEN))
        .send()
        .await;
    assert_eq!(basic.unwrap().status(), 401);

    let right = http.get(&traces).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(right.status(), 200);
    let body: Value = right.json().await.unwrap();
    assert!(body["traces"].is_array());

    // Probes send no tokens.
    for probe in ["/healthz", "/readyz"] {
        let answer = http.get(format!("{}{probe}", d.api)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
    }
    for protected in ["/api/v1/stats", "/metrics", "/api/v1/edges", "/grafana/"] {
        let answer = http.get(format!("{}{protected}", d.api)).send().await;
        assert_eq!(answer.unwrap().status(), 401, "{protected}");
    }

    let counters = counters(&d, Some(TOKEN)).await;
    assert_eq!(counters["api_unauthenticated"], 7);
    assert_eq!(counters["otlp_unauthenticated"], 0);
    d.stop().await;
}

#[tokio::test]
async fn otlp_exports_need_the_token() {
    let d = support::start(Settings {
        otlp_token: Some(TOKEN.into()),
        ..Settings::default()
    })
    .await;

    for authorization in [None, Some("Bearer wrong"), Some(TOKEN)] {
        let (_, result) = export_one(&exporter(&d.grpc_endpoint, authorization, None)).await;
        let error = result
            .expect_err("refused without the right token")
            .to_string();
        assert!(error.contains("Unauthenticated"), "{error}");
    }
    // The status, as a gRPC client sees it.
    let mut client = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap();
    let status = client
        .export(ExportTraceServiceRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let with_token = format!("Bearer {TOKEN}");
    let exporter = exporter(&d.grpc_endpoint, Some(&with_token), None);
    let (trace_id, result) = export_one(&exporter).await;
    result.expect("the right token is accepted");
    d.wait_trace(trace_id, 1).await;

    // The OTLP/HTTP receiver takes the same token; an empty request checks it.
    let http = reqwest::Client::new();
    for (authorization, expected) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some(with_token.as_str()), 200),
    ] {
        let mut request = http
            .post(format!("{}/v1/traces", d.http_endpoint))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status().as_u16(), expected, "{authorization:?}");
    }

    let counters = counters(&d, None).await;
    assert_eq!(counters["otlp_unauthenticated"], 6);
    assert_eq!(counters["spans_accepted"], 1);
    d.stop().await;
}

/// A request of one span whose attribute holds `bytes` bytes of `fill`.
fn request_of(bytes: usize, fill: &str) -> ExportTraceServiceRequest {
    let value = fill.repeat(bytes / fill.len());
    let t0 = support::base_ns();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: random_trace_id().to_bytes().to_vec().into(),
                    span_id: 7u64.to_be_bytes().to_vec().into(),
                    name: "big".into(),
                    start_time_unix_nano: t0,
                    end_time_unix_nano: t0 + 1_000_000,
                    attributes: vec![KeyValue {
                        key: "payload".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(value)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn requests_over_the_size_limits_are_refused_and_counted() {
    let d = support::start(Settings {
        otlp_max_message_mib: Some(1),
        ..Settings::default()
    })
    .await;
    let client = TraceServiceClient::connect(d.grpc_endpoint.clone())
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    const MIB: usize = 1 << 20;

    let status = client
        .clone()
        .export(request_of(MIB + MIB / 2, "0123456789abcdef"))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Small on the wire, over the limit once decompressed.
    let status = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .export(request_of(2 * MIB, "a"))
        .await
        .expect_err("over the limit after decompression");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    client
        .clone()
        .export(request_of(MIB / 2, "0123456789abcdef"))
        .await
        .expect("under the limit");

    // The API reads no bodies and takes none over 64 KiB.
    let answer = reqwest::Client::new()
        .get(format!("{}/api/v1/traces", d.api))
        .body(vec![b'x'; 100 << 10])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");

    let counters = counters(&d, None).await;
    assert_eq!(counters["otlp_too_large"], 2);
    assert_eq!(counters["api_too_large"], 1);
    assert_eq!(counters["spans_accepted"], 1);
    // Prometheus sees them by reason.
    let metrics = reqwest::get(format!("{}/metrics", d.api))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "hopscope_otlp_requests_refused_total{reason=\"too_large\"} 2"),
        "{metrics}"
    );
    d.stop().await;
}

/// A self-signed certificate for `localhost` and its key, as PEM files in a
/// directory of their own; returns the certificate's PEM too.
fn self_signed() -> (PathBuf, PathBuf, String) {
    let dir = std::env::temp_dir().join(format!(
        "hopscope-tls-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

#[tokio::test]
async fn with_a_certificate_both_listeners_speak_tls_only() {
    let (cert, key, cert_pem) = self_signed();
    let d = support::start(Settings {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Settings::default()
    })
    .await;
    let port = |url: &str| url.rsplit(':').next().unwrap().to_owned();
    let grpc_tls = format!("https://localhost:{}", port(&d.grpc_endpoint));
    let api_tls = format!("localhost:{}", port(&d.api));

    // The SDK's exporter, trusting the test's certificate.
    let ca = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let (trace_id, result) = export_one(&exporter(&grpc_tls, None, Some(ca))).await;
    result.expect("export over TLS");

    // The API over HTTPS, while another client stalls its handshake.
    let _stalled = tokio::net::TcpStream::connect(&api_tls).await.unwrap();
    let https = Https::trusting(&cert_pem, &api_tls);
    let path = format!("/api/v1/traces/{trace_id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Well within the stalled handshake's 10 s: it holds up no one.
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), https.get(&path))
            .await
            .expect("answered while another handshake stalls");
        if status == 200 {
            assert_eq!(body["span_count"], 1);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace never analyzed"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Plain text is refused on both.
    let (_, plain) = export_one(&exporter(&d.grpc_endpoint, None, None)).await;
    plain.expect_err("a plain-text export to the TLS listener fails");
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", d.api))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to the TLS listener: {plain:?}");
    let (_, stats) = https.get("/api/v1/stats").await;
    assert_eq!(stats["counters"]["spans_accepted"], 1);
    d.stop().await;
}

/// An HTTPS client of the API (hyper over rustls) trusting one certificate.
struct Https {
    connector: tokio_rustls::TlsConnector,
    /// `localhost:PORT`
    authority: String,
}

impl Https {
    fn trusting(cert_pem: &str, authority: &str) -> Https {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
            authority: authority.to_owned(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        use http_body_util::{BodyExt, Empty};
        let tcp = tokio::net::TcpStream::connect(&self.authority)
            .await
            .unwrap();
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header("host", &self.authority)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }
}
