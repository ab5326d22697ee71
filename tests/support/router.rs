//! The OpenTelemetry Collector's `loadbalancing` exporter, emulated for the
//! scale-out test (the Collector is not available here): an OTLP/HTTP
//! receiver that routes each span by trace id, or each resource by its
//! `service.name`, over a consistent-hash ring of members, exactly as
//! `exporter/loadbalancingexporter/consistent_hashing.go` builds it: every
//! member placed at 100 positions `crc32(member ‖ byte(i)) % 36000`, a
//! position taken by an earlier member skipped, and a key going to the first
//! member at or after `crc32(key) % 36000`, wrapping around. The routing key of
//! a trace is its 16 id bytes; of a service, its name's bytes. An export is
//! answered once every member it went to accepted its part (retrying
//! retryable refusals, as the exporter's retry does), so when a sender is
//! done, every span reached the next tier.

use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::any_value::Value as AnyValue;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans};
use hopscope::ingest::{ExportBody, OtlpGrpc, Refused, SinkError, SpanSink};
use hopscope::model::SpanBatch;
use parking_lot::RwLock;
use prost::Message as _;
use tonic::transport::server::TcpIncoming;

const MAX_POSITIONS: u32 = 36_000;
const WEIGHT: u32 = 100;

/// What a ring routes by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    TraceId,
    Service,
}

/// The ring over `members` (OTLP/HTTP base URLs).
pub fn ring(members: &[String]) -> Vec<(u32, String)> {
    let mut taken = std::collections::HashSet::new();
    let mut items = Vec::new();
    let mut sorted = members.to_vec();
    sorted.sort();
    for m in &sorted {
        for i in 0..WEIGHT {
            let mut h = crc32fast::Hasher::new();
            h.update(m.as_bytes());
            h.update(&[i as u8]);
            let pos = h.finalize() % MAX_POSITIONS;
            if taken.insert(pos) {
                items.push((pos, m.clone()));
            }
        }
    }
    items.sort_by_key(|i| i.0);
    items
}

/// The member of `ring` that `key` goes to.
pub fn member_for<'a>(ring: &'a [(u32, String)], key: &[u8]) -> &'a str {
    let pos = crc32fast::hash(key) % MAX_POSITIONS;
    let i = ring.partition_point(|item| item.0 < pos);
    &ring[if i == ring.len() { 0 } else { i }].1
}

struct Inner {
    key: Key,
    ring: RwLock<Vec<(u32, String)>>,
    /// Also get every export whole (the daemon alone, to compare).
    tees: RwLock<Vec<String>>,
    http: reqwest::Client,
}

/// A running router.
pub struct Router {
    /// Its OTLP/HTTP base URL.
    pub endpoint: String,
    /// Its OTLP/gRPC endpoint.
    pub grpc_endpoint: String,
    inner: Arc<Inner>,
}

impl Router {
    /// Starts a router over `members` (OTLP/HTTP base URLs), receiving
    /// OTLP/HTTP and OTLP/gRPC.
    pub async fn start(key: Key, members: &[String]) -> Router {
        let inner = Arc::new(Inner {
            key,
            ring: RwLock::new(ring(members)),
            tees: RwLock::new(Vec::new()),
            http: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .route("/v1/traces", post(export))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_endpoint = format!("http://{}", listener.local_addr().unwrap());
        let grpc = OtlpGrpc::new(Arc::new(Sink(inner.clone())), 64 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        Router {
            endpoint,
            grpc_endpoint,
            inner,
        }
    }

    /// Also sends every export, whole, to each OTLP/HTTP receiver of `tees`
    /// (instead of any earlier ones).
    pub fn set_tees(&self, tees: Vec<String>) {
        *self.inner.tees.write() = tees;
    }

    /// Replaces the members, as the exporter does when its resolver's answer
    /// changes (a replica removed from the headless Service).
    pub fn set_members(&self, members: &[String]) {
        *self.inner.ring.write() = ring(members);
    }
}

fn service_of(rs: &ResourceSpans) -> Vec<u8> {
    rs.resource
        .iter()
        .flat_map(|r| &r.attributes)
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.as_bytes().to_vec(),
            _ => Vec::new(),
        })
        .unwrap_or_default()
}

/// Splits `request` by member.
fn split(
    key: Key,
    ring: &[(u32, String)],
    request: ExportTraceServiceRequest,
) -> Vec<(String, ExportTraceServiceRequest)> {
    let mut out: Vec<(String, ExportTraceServiceRequest)> = Vec::new();
    let mut part = |member: &str, rs: ResourceSpans| match out.iter_mut().find(|(m, _)| m == member)
    {
        Some((_, r)) => r.resource_spans.push(rs),
        None => out.push((
            member.to_owned(),
            ExportTraceServiceRequest {
                resource_spans: vec![rs],
            },
        )),
    };
    for rs in request.resource_spans {
        match key {
            Key::Service => {
                let member = member_for(ring, &service_of(&rs)).to_owned();
                part(&member, rs);
            }
            Key::TraceId => {
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        let member = member_for(ring, &span.trace_id).to_owned();
                        part(
                            &member,
                            ResourceSpans {
                                resource: rs.resource.clone(),
                                scope_spans: vec![ScopeSpans {
                                    scope: ss.scope.clone(),
                                    spans: vec![span.clone()],
                                    schema_url: ss.schema_url.clone(),
                                }],
                                schema_url: rs.schema_url.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
    out
}

/// Sends `body` to `member` until it is accepted (retryable refusals are
/// retried, as the exporter's `retry_on_failure` does).
async fn send(http: &reqwest::Client, member: &str, body: Vec<u8>) -> Result<(), String> {
    let url = format!("{member}/v1/traces");
    for _ in 0..600 {
        let answer = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if ![429, 502, 503, 504].contains(&r.status().as_u16()) => {
                return Err(format!("{url} answered {}", r.status()));
            }
            // Refused for now, or the member is gone: try again shortly.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Err(format!("{url} kept refusing"))
}

/// Routes one export request (protobuf) to the members and the tees; done
/// once all accepted their parts.
async fn route(inner: &Inner, body: Vec<u8>) -> Result<(), String> {
    let request = ExportTraceServiceRequest::decode(&body[..]).map_err(|e| e.to_string())?;
    let parts = split(inner.key, &inner.ring.read(), request);
    let mut sends: Vec<_> = parts
        .into_iter()
        .map(|(member, r)| (member, r.encode_to_vec()))
        .chain(inner.tees.read().iter().map(|t| (t.clone(), body.clone())))
        .map(|(to, bytes)| {
            let http = inner.http.clone();
            tokio::spawn(async move { send(&http, &to, bytes).await })
        })
        .collect();
    for s in sends.drain(..) {
        s.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn export(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let body: Vec<u8> = match headers.get("content-encoding").map(|v| v.as_bytes()) {
        Some(b"gzip") => {
            let mut raw = Vec::new();
            // Bounded, as the daemon's own gunzip is: 64 MiB inflated at most.
            #[allow(clippy::disallowed_methods)]
            let inflated = flate2::read::MultiGzDecoder::new(&body[..])
                .take(64 << 20)
                .read_to_end(&mut raw);
            if inflated.is_err() {
                return (StatusCode::BAD_REQUEST, "bad gzip");
            }
            raw
        }
        _ => body.to_vec(),
    };
    match route(&inner, body).await {
        Ok(()) => (StatusCode::OK, ""),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "a member refused"),
    }
}

/// The router's OTLP/gRPC side: the daemon's own gRPC service, whose sink
/// routes the request's bytes as they came.
struct Sink(Arc<Inner>);

impl SpanSink for Sink {
    type Permit = ();

    fn admit(&self, _bytes: usize) -> Result<(), Refused> {
        Ok(())
    }

    fn screen(&self, _batch: &mut SpanBatch) {}

    async fn accept(&self, body: ExportBody, _batch: SpanBatch) -> Result<(), SinkError> {
        route(&self.0, body.bytes.to_vec())
            .await
            .map_err(SinkError::Durability)
    }

    fn too_large(&self, _limit: usize) {}

    fn malformed(&self, _error: &dyn std::fmt::Display) {}
}
