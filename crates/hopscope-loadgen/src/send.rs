//! Sending: one task per connection, one request in flight on each, paced by a
//! shared schedule when a rate is set.
//!
//! Request `r` (numbered across all connections) may leave at
//! `start + r × spans_per_request / rate`, so the rate holds on average and a
//! connection that fell behind catches up at once, as a token bucket would with
//! a one-request burst per connection. Failures that OTLP calls retryable
//! (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, CANCELLED, ABORTED,
//! OUT_OF_RANGE, DATA_LOSS; HTTP 429, 502, 503, 504; a broken connection) are
//! counted as refused and retried after an exponential backoff, at most
//! [`Plan::retries`] times; then the request's spans are given up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HOST};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::generate::Rng;
use super::template::Template;
use super::{LoadgenError, Options, Protocol};
use hopscope::ingest::codec::ClientCodec;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceResponse;

const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Appended to an OTLP/HTTP endpoint, as the SDKs do.
const HTTP_TRACES_PATH: &str = "/v1/traces";
/// The SDKs' default export timeout.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry's backoff; it doubles with each retry of a request.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What all connections share: the requests, the schedule, the counters.
pub(super) struct Plan {
    pub(super) templates: Arc<[Template]>,
    pub(super) start: Instant,
    /// No request leaves after this.
    pub(super) deadline: Option<Instant>,
    /// Requests to send in all.
    pub(super) max_requests: Option<u64>,
    /// Spans per second over all connections.
    pub(super) rate: Option<f64>,
    pub(super) retries: u32,
    /// The next request's number.
    pub(super) next_request: AtomicU64,
    pub(super) counters: Counters,
    /// Of each successful export not yet taken.
    pub(super) latencies: parking_lot::Mutex<Vec<Duration>>,
}

impl Plan {
    /// The latencies of the successful exports since the last call.
    pub(super) fn take_latencies(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.latencies.lock())
    }
}

/// Running totals over all connections.
#[derive(Default)]
pub(super) struct Counters {
    requests: AtomicU64,
    sent: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    retries: AtomicU64,
    given_up: AtomicU64,
}

/// A copy of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    /// Distinct requests (retries not counted).
    pub(super) requests: u64,
    /// Distinct spans sent.
    pub(super) sent: u64,
    pub(super) accepted: u64,
    /// Spans refused: rejected in a partial success, or in a failed attempt.
    pub(super) refused: u64,
    /// Attempts repeated after a retryable failure.
    pub(super) retries: u64,
    /// Spans of requests that failed for good.
    pub(super) given_up: u64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            requests: get(&self.requests),
            sent: get(&self.sent),
            accepted: get(&self.accepted),
            refused: get(&self.refused),
            retries: get(&self.retries),
            given_up: get(&self.given_up),
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What one connection measured (its latencies are in [`Plan::latencies`]).
pub(super) struct Finished {
    /// Failed attempts by gRPC status or HTTP status or cause.
    pub(super) failures: BTreeMap<String, u64>,
}

/// Why one export attempt failed.
struct Failure {
    code: String,
    retryable: bool,
}

impl Failure {
    fn retryable(code: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            retryable: true,
        }
    }
}

/// One connection to the daemon.
pub(super) enum Transport {
    Grpc(Grpc<Channel>),
    Http(HttpExporter),
}

/// Opens one connection for `opts.protocol` (each is its own TCP connection).
pub(super) async fn connect(opts: &Options) -> Result<Transport, LoadgenError> {
    let failed = |message: String| LoadgenError::Connect {
        endpoint: opts.endpoint.clone(),
        message,
    };
    match opts.protocol {
        Protocol::Grpc => {
            let endpoint = Endpoint::from_shared(opts.endpoint.clone())
                .map_err(|e| failed(chain(&e)))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(EXPORT_TIMEOUT)
                .tcp_nodelay(true);
            let channel = endpoint.connect().await.map_err(|e| failed(chain(&e)))?;
            let mut grpc = Grpc::new(channel);
            if opts.gzip {
                grpc = grpc
                    .send_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Gzip);
            }
            Ok(Transport::Grpc(grpc))
        }
        Protocol::Http => {
            let uri: Uri = opts
                .endpoint
                .parse()
                .map_err(|e| failed(format!("not a URL: {e}")))?;
            let base = uri.path().trim_end_matches('/');
            let path = if base.ends_with(HTTP_TRACES_PATH) {
                base.to_owned()
            } else {
                format!("{base}{HTTP_TRACES_PATH}")
            };
            let sender = http1(&uri).await.map_err(failed)?;
            Ok(Transport::Http(HttpExporter {
                uri,
                path,
                gzip: opts.gzip,
                sender: Some(sender),
            }))
        }
    }
}

impl Transport {
    /// Sends one encoded request; `Ok` holds the spans the daemon rejected.
    async fn export(&mut self, body: Bytes) -> Result<u64, Failure> {
        match self {
            Transport::Grpc(grpc) => {
                grpc.ready()
                    .await
                    .map_err(|_| Failure::retryable("connection error"))?;
                let response = grpc
                    .unary(
                        tonic::Request::new(body),
                        PathAndQuery::from_static(GRPC_EXPORT_PATH),
                        ClientCodec::default(),
                    )
                    .await;
                match response {
                    Ok(response) => Ok(rejected(response.get_ref())),
                    Err(status) => Err(Failure {
                        code: format!("gRPC {:?}", status.code()),
                        retryable: matches!(
                            status.code(),
                            Code::Cancelled
                                | Code::DeadlineExceeded
                                | Code::Aborted
                                | Code::OutOfRange
                                | Code::Unavailable
                                | Code::DataLoss
                                | Code::ResourceExhausted
                        ),
                    }),
                }
            }
            Transport::Http(http) => http.export(body).await,
        }
    }
}

fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_spans.max(0) as u64)
}

/// OTLP/HTTP over one HTTP/1.1 connection, opened again when it breaks.
pub(super) struct HttpExporter {
    uri: Uri,
    path: String,
    gzip: bool,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpExporter {
    async fn export(&mut self, body: Bytes) -> Result<u64, Failure> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            slot => slot.insert(
                http1(&self.uri)
                    .await
                    .map_err(|_| Failure::retryable("connection refused"))?,
            ),
        };
        let mut request = hyper::Request::post(self.path.as_str())
            .header(HOST, authority(&self.uri))
            .header(CONTENT_TYPE, "application/x-protobuf");
        let body = if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
            gzip(&body)
        } else {
            body
        };
        let request = request
            .body(Full::new(body))
            .expect("a path and constant headers make a valid request");
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let outcome = tokio::time::timeout(EXPORT_TIMEOUT, exchange).await;
        let (status, body) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => {
                self.sender = None;
                return Err(Failure::retryable("connection error"));
            }
            Err(_) => {
                self.sender = None;
                return Err(Failure::retryable("timeout"));
            }
        };
        if status.is_success() {
            // An empty or undecodable body is a full success, as the SDKs read it.
            return Ok(ExportTraceServiceResponse::decode(body)
                .map(|r| rejected(&r))
                .unwrap_or(0));
        }
        Err(Failure {
            code: format!("HTTP {}", status.as_u16()),
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
        })
    }
}

fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder
        .write_all(body)
        .expect("writing to a Vec does not fail");
    encoder
        .finish()
        .expect("writing to a Vec does not fail")
        .into()
}

pub(super) fn authority(uri: &Uri) -> &str {
    uri.authority().map_or("localhost", |a| a.as_str())
}

/// Opens an HTTP/1.1 connection to an `http://` URL's host and port.
pub(super) async fn http1(uri: &Uri) -> Result<SendRequest<Full<Bytes>>, String> {
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "`{uri}` is not an http:// URL (TLS is not supported)"
        ));
    }
    let host = uri.host().ok_or_else(|| format!("`{uri}` has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| chain(&e))?;
    // Ends when the sender is dropped or the peer closes; errors reach the sender.
    tokio::spawn(connection);
    Ok(sender)
}

/// An error and its sources, `: `-separated.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// One connection's loop: take the next request number, wait for its slot,
/// stamp its template, send it (again, while retryable), count.
pub(super) async fn drive(mut transport: Transport, plan: Arc<Plan>, mut rng: Rng) -> Finished {
    let mut finished = Finished {
        failures: BTreeMap::new(),
    };
    let c = &plan.counters;
    loop {
        let r = plan.next_request.fetch_add(1, Ordering::Relaxed);
        if plan.max_requests.is_some_and(|max| r >= max) {
            break;
        }
        let template = &plan.templates[(r % plan.templates.len() as u64) as usize];
        let spans = template.spans();
        if let Some(rate) = plan.rate {
            let due = plan.start + Duration::from_secs_f64((r * spans) as f64 / rate);
            if plan.deadline.is_some_and(|d| due >= d) {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        // Behind schedule (or flat out), the deadline still ends the run.
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let body = template.stamp(&mut rng, now_ns());
        add(&c.requests, 1);
        add(&c.sent, spans);
        let mut attempt = 0;
        loop {
            let sent_at = Instant::now();
            match transport.export(body.clone()).await {
                Ok(rejected) => {
                    plan.latencies.lock().push(sent_at.elapsed());
                    let rejected = rejected.min(spans);
                    add(&c.accepted, spans - rejected);
                    add(&c.refused, rejected);
                    break;
                }
                Err(failure) => {
                    *finished.failures.entry(failure.code).or_insert(0) += 1;
                    add(&c.refused, spans);
                    if !failure.retryable || attempt >= plan.retries {
                        add(&c.given_up, spans);
                        break;
                    }
                    let backoff = FIRST_BACKOFF.saturating_mul(1 << attempt.min(16));
                    attempt += 1;
                    add(&c.retries, 1);
                    tokio::time::sleep(backoff.min(MAX_BACKOFF)).await;
                }
            }
        }
    }
    finished
}
