//! Sending one export request, as the OTLP specification asks of exporters:
//! gRPC (the encoded request sent as it is, through `ingest::codec`'s
//! [`ClientCodec`]) or HTTP (`POST` of a protobuf
//! body with `reqwest`), gzip or not; each attempt times out after
//! [`REQUEST_TIMEOUT`]. Retryable answers (gRPC `UNAVAILABLE`, `CANCELLED`,
//! `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `DATA_LOSS`, and
//! `RESOURCE_EXHAUSTED` with `RetryInfo`; HTTP 429, 502, 503, 504; a
//! connection that fails or times out) are retried after the delay the
//! receiver asks for (`RetryInfo`, `Retry-After`), else with exponential
//! backoff and jitter from 1 s to 30 s, until `max_elapsed`; any other
//! answer drops the request, with a log line once in a while.

use std::io::Write;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use prost::Message;
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_types::StatusExt;

use super::{Compression, Options, Protocol};
use crate::ingest::codec::ClientCodec;
use crate::ingest::otlp::collector::trace::v1::ExportTraceServiceResponse;
use crate::stats::{LogEvery, Stats};

/// How long one attempt may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay, doubled at each retry up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward_otlp `{url}`: {message}")]
    Client { url: String, message: String },
}

/// How a request ended.
pub(super) enum Outcome {
    /// Accepted, but for `rejected` spans (partial success).
    Sent { rejected: u64 },
    /// Still retryable after `max_elapsed`.
    GaveUp,
    /// A permanent error.
    Refused,
}

/// One attempt's answer.
enum Attempt {
    Sent {
        rejected: u64,
    },
    /// Retryable, after the delay the receiver asked for if it did.
    Retry(Option<Duration>, String),
    Refused(String),
}

/// A gRPC channel that counts the bytes of request bodies (compressed, as
/// sent) in `forward_bytes`.
#[derive(Clone)]
pub(super) struct Counted {
    channel: Channel,
    stats: Arc<Stats>,
}

impl tower::Service<http::Request<tonic::body::Body>> for Counted {
    type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let stats = self.stats.clone();
        let request = request.map(|body| {
            tonic::body::Body::new(body.map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    Stats::add(&stats.forward_bytes, data.len() as u64);
                }
                frame
            }))
        });
        self.channel.call(request)
    }
}

/// The gRPC method every export calls.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

enum Transport {
    Grpc(Grpc<Counted>),
    Http {
        client: reqwest::Client,
        url: reqwest::Url,
        gzip: bool,
    },
}

/// One request as every attempt sends it.
enum Prepared<'a> {
    Grpc(&'a Grpc<Counted>, Bytes),
    Http {
        client: &'a reqwest::Client,
        url: &'a reqwest::Url,
        body: Bytes,
        gzip: bool,
    },
}

/// The receiver, and the counters requests bump.
pub(super) struct Client {
    transport: Transport,
    stats: Arc<Stats>,
    refused_log: LogEvery,
}

impl Client {
    pub(super) fn new(options: &Options, stats: Arc<Stats>) -> Result<Client, ForwardError> {
        let error = |message: String| ForwardError::Client {
            url: options.url.to_string(),
            message,
        };
        let gzip = options.compression == Compression::Gzip;
        let transport = match options.protocol {
            Protocol::Grpc => {
                let channel = Endpoint::from_shared(options.url.to_string())
                    .map_err(|e| error(e.to_string()))?
                    .connect_timeout(REQUEST_TIMEOUT)
                    .timeout(REQUEST_TIMEOUT)
                    .connect_lazy();
                let mut client = Grpc::new(Counted {
                    channel,
                    stats: stats.clone(),
                })
                .max_decoding_message_size(1 << 20);
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                Transport::Grpc(client)
            }
            Protocol::Http => Transport::Http {
                client: reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(|e| error(e.to_string()))?,
                url: options.url.clone(),
                gzip,
            },
        };
        Ok(Client {
            transport,
            stats,
            refused_log: LogEvery::default(),
        })
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sends `request` (an encoded `ExportTraceServiceRequest`), retrying
    /// until `max_elapsed`.
    pub(super) async fn export(&self, request: Bytes, max_elapsed: Duration) -> Outcome {
        let prepared = match self.prepare(request) {
            Ok(prepared) => prepared,
            Err(why) => {
                self.refused(&why);
                return Outcome::Refused;
            }
        };
        let started = Instant::now();
        let mut retries = 0u32;
        loop {
            Stats::add(&self.stats.forward_requests, 1);
            let attempt = match &prepared {
                Prepared::Grpc(client, body) => grpc((*client).clone(), body.clone()).await,
                Prepared::Http {
                    client,
                    url,
                    body,
                    gzip,
                } => {
                    Stats::add(&self.stats.forward_bytes, body.len() as u64);
                    post(client, url, body.clone(), *gzip).await
                }
            };
            let (asked, why) = match attempt {
                Attempt::Sent { rejected } => return Outcome::Sent { rejected },
                Attempt::Refused(why) => {
                    self.refused(&why);
                    return Outcome::Refused;
                }
                Attempt::Retry(asked, why) => (asked, why),
            };
            let delay = asked.unwrap_or_else(|| backoff(retries));
            if started.elapsed() + delay > max_elapsed {
                tracing::warn!(error = %why, retries, "forwarding: receiver still failing after forward_max_elapsed; request dropped (counted in forward_spans_dropped_retries)");
                return Outcome::GaveUp;
            }
            tracing::debug!(error = %why, ?delay, "forwarding: retrying");
            Stats::add(&self.stats.forward_retries, 1);
            retries += 1;
            tokio::time::sleep(delay).await;
        }
    }

    /// What every attempt at `request` sends: the encoded message, which
    /// the gRPC client frames (and compresses), or the HTTP body, compressed
    /// or not.
    fn prepare(&self, request: Bytes) -> Result<Prepared<'_>, String> {
        Ok(match &self.transport {
            Transport::Grpc(client) => Prepared::Grpc(client, request),
            Transport::Http { client, url, gzip } => Prepared::Http {
                client,
                url,
                body: if *gzip {
                    compress(&request).map_err(|e| format!("cannot compress the request: {e}"))?
                } else {
                    request
                },
                gzip: *gzip,
            },
        })
    }

    fn refused(&self, why: &str) {
        if self.refused_log.ready() {
            tracing::error!(error = %why, "forwarding: receiver refused a request; its spans are dropped (counted in forward_spans_dropped_refused; logged once in a while)");
        }
    }
}

/// `body` gzipped.
fn compress(body: &[u8]) -> std::io::Result<Bytes> {
    let mut out = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    out.write_all(body)?;
    Ok(out.finish()?.into())
}

/// The delay before retry number `retries + 1`: 1 s doubled at each retry,
/// at most 30 s, less up to half of it at random (jitter).
fn backoff(retries: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let full = MIN_BACKOFF
        .saturating_mul(1 << retries.min(5))
        .min(MAX_BACKOFF);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(retries);
    let fraction = (hasher.finish() % 1000) as u32;
    full - full / 2 * fraction / 1000
}

/// One gRPC attempt.
async fn grpc(mut client: Grpc<Counted>, body: Bytes) -> Attempt {
    if let Err(e) = client.ready().await {
        return Attempt::Retry(None, format!("gRPC connection: {e}"));
    }
    let answer = client
        .unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(EXPORT_PATH),
            ClientCodec::default(),
        )
        .await;
    match answer {
        Ok(response) => Attempt::Sent {
            rejected: rejected(&response.into_inner()),
        },
        Err(status) => {
            let asked = status.get_details_retry_info().and_then(|r| r.retry_delay);
            let why = format!("gRPC {:?}: {}", status.code(), status.message());
            match status.code() {
                Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::OutOfRange
                | Code::DataLoss => Attempt::Retry(asked, why),
                Code::ResourceExhausted if asked.is_some() => Attempt::Retry(asked, why),
                _ => Attempt::Refused(why),
            }
        }
    }
}

/// One OTLP/HTTP attempt.
async fn post(client: &reqwest::Client, url: &reqwest::Url, body: Bytes, gzip: bool) -> Attempt {
    let mut request = client
        .post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body);
    if gzip {
        request = request.header(http::header::CONTENT_ENCODING, "gzip");
    }
    let response = match request.send().await {
        Ok(response) => response,
        // Not connected, or no answer in time: the receiver may come back.
        Err(e) => return Attempt::Retry(None, format!("HTTP: {e}")),
    };
    let status = response.status();
    if status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        let rejected = ExportTraceServiceResponse::decode(body)
            .map(|r| rejected(&r))
            .unwrap_or(0);
        return Attempt::Sent { rejected };
    }
    let why = format!("HTTP {status}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => {
            let asked = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            Attempt::Retry(asked, why)
        }
        _ => Attempt::Refused(why),
    }
}

/// The spans a receiver's partial success says it rejected.
fn rejected(response: &ExportTraceServiceResponse) -> u64 {
    response
        .partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_spans.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_thirty_with_jitter() {
        for (retries, full) in [(0, 1), (1, 2), (2, 4), (4, 16), (5, 30), (20, 30)] {
            let d = backoff(retries);
            let full = Duration::from_secs(full);
            assert!(d <= full && d >= full / 2, "{retries}: {d:?}");
        }
    }
}
