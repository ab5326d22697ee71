//! OTLP/HTTP: `POST /v1/traces` with a protobuf (`application/x-protobuf`) or
//! OTLP/JSON (`application/json`) body, plain or gzip, decoded straight into the
//! span model ([`super::decode_export`], [`super::decode_export_json`]) and
//! handed to the [`SpanSink`].
//!
//! Answers follow the OTLP/HTTP specification, in the request's encoding: 200
//! with an `ExportTraceServiceResponse` (its `partial_success` says how many
//! spans were rejected and why); otherwise a `google.rpc.Status` with a message:
//! 400 for a body that cannot be decoded, 413 over the size limit, 415 for an
//! unknown content type or encoding, 405 for other methods, 404 for other paths,
//! and 503 with `Retry-After` while the daemon is at its memory budget (the
//! retryable answer: exporters send the request again later).
//! The limit applies to the body as received and again as it is inflated, so a
//! small gzip body that would inflate to gigabytes is stopped at the limit.
//! A body must arrive whole within the [`Intake`]'s time (else 503 with
//! `Retry-After`: a congested exporter sends it again, a hostile one is cut
//! off), and all
//! bodies being received share its byte budget (a request that would pass it
//! is refused with 503 and `Retry-After`): many slow uploads cannot hold
//! connections × the size limit. Every refusal is counted in [`Stats`] and
//! logged.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{
    ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::otlp::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use super::{
    decode, partial_success_message, BodyError, BodyFormat, ExportBody, Refused, SinkError,
    SpanSink,
};
use crate::stats::{LogEvery, Stats};

/// Where exporters post traces (the SDKs append it to their endpoint).
pub const TRACES_PATH: &str = "/v1/traces";

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP receiver; [`OtlpHttp::router`] serves it.
pub struct OtlpHttp<S> {
    sink: Arc<S>,
    stats: Arc<Stats>,
    max_body_bytes: usize,
    intake: Intake,
    /// Slow or over-budget bodies are logged once in a while.
    slow_log: LogEvery,
}

/// What bodies being received may take, across all connections: time and
/// bytes. The bytes are held from their arrival until the request is
/// admitted by the sink (whose memory budget then counts it) or refused.
#[derive(Clone)]
pub struct Intake {
    /// How long a body may take to arrive, whole.
    timeout: Duration,
    /// Bytes of bodies being received (one permit a byte).
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl Intake {
    /// Bodies must arrive within `timeout` and hold at most `budget_bytes`
    /// together.
    pub fn new(timeout: Duration, budget_bytes: usize) -> Self {
        let budget_bytes = budget_bytes.min(Semaphore::MAX_PERMITS);
        Intake {
            timeout,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        }
    }

    /// Takes `bytes` more of the budget into `held`, or says it is spent.
    fn take(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), Refusal> {
        let Ok(n) = u32::try_from(bytes) else {
            return Err(Refusal::Budget(self.budget_bytes));
        };
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| Refusal::Budget(self.budget_bytes))?;
        match held {
            Some(h) => h.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }
}

impl<S: SpanSink> OtlpHttp<S> {
    /// `max_body_bytes` bounds a request body, both as received and inflated;
    /// bodies are received within `intake`'s time and byte budget.
    pub fn new(sink: Arc<S>, stats: Arc<Stats>, max_body_bytes: usize, intake: Intake) -> Self {
        OtlpHttp {
            sink,
            stats,
            max_body_bytes,
            intake,
            slow_log: LogEvery::default(),
        }
    }

    /// `POST /v1/traces`; other methods and paths are refused.
    pub fn router(self) -> Router {
        Router::new()
            .route(
                TRACES_PATH,
                post(export::<S>).fallback(method_not_allowed::<S>),
            )
            .fallback(not_found::<S>)
            .with_state(Arc::new(self))
    }

    /// Decodes, delivers and answers one request.
    async fn export(&self, headers: &HeaderMap, body: Body) -> Result<Response, Refusal> {
        let encoding = Encoding::of(headers)?;
        let gzip = gzipped(headers)?;
        let limit = self.max_body_bytes;
        let mut held = None;
        let body = tokio::time::timeout(
            self.intake.timeout,
            read_body(body, headers, limit, |n| self.intake.take(&mut held, n)),
        )
        .await
        .map_err(|_| Refusal::Slow(self.intake.timeout))??;
        let body = if gzip {
            gunzip(&body[..], limit)?
        } else {
            body
        };
        // Held until the spans are in the buffer, so the budget counts them
        // while they are decoded; from here on it, not the intake, counts
        // the body.
        let _admitted = self.sink.admit(body.len()).map_err(Refusal::Busy)?;
        drop(held);
        let body = ExportBody {
            format: encoding.format(),
            bytes: body.into(),
        };
        let mut batch = decode(&body)?;
        self.sink.screen(&mut batch);
        let partial_success = (batch.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: batch.rejected as i64,
            error_message: partial_success_message(&batch),
        });
        self.sink.accept(body, batch).await?;
        Ok(answer(partial_success, encoding))
    }

    /// Counts and logs a refusal, and answers it with a `google.rpc.Status`.
    fn refuse(&self, refusal: Refusal, encoding: Encoding) -> Response {
        let status = refusal.status();
        let message = refusal.to_string();
        match &refusal {
            // The sink counts and logs these (rate-limited), as for gRPC.
            Refusal::Busy(_) | Refusal::Sink(_) => {}
            Refusal::Slow(_) => {
                Stats::add(&self.stats.otlp_body_timeouts, 1);
                if self.slow_log.ready() {
                    tracing::warn!(error = %message, "OTLP/HTTP body too slow: refused");
                }
            }
            Refusal::Budget(_) => {
                Stats::add(&self.stats.otlp_body_budget_refused, 1);
                if self.slow_log.ready() {
                    tracing::warn!(error = %message, "OTLP/HTTP bodies being received at their budget: refusing");
                }
            }
            Refusal::TooLarge { limit } | Refusal::TooLargeInflated { limit } => {
                self.sink.too_large(*limit)
            }
            _ if status == StatusCode::BAD_REQUEST => self.sink.malformed(&message),
            _ => {
                Stats::add(&self.stats.otlp_http_unsupported, 1);
                tracing::warn!(status = status.as_u16(), error = %message, "OTLP/HTTP export refused");
            }
        }
        // The gRPC code a client may log; OTLP/HTTP clients act on the HTTP status.
        let code = match status {
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => tonic::Code::Unimplemented,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            _ => tonic::Code::InvalidArgument,
        } as i32;
        let body = match encoding {
            Encoding::Protobuf => RpcStatus { code, message }.encode_to_vec(),
            Encoding::Json => serde_json::json!({"code": code, "message": message})
                .to_string()
                .into_bytes(),
        };
        let mut response =
            (status, [(CONTENT_TYPE, encoding.content_type())], body).into_response();
        let headers = response.headers_mut();
        match refusal {
            Refusal::Method(_) => {
                headers.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            Refusal::ContentEncoding(_) => {
                headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, identity"));
            }
            Refusal::Busy(refused) => retry_after(headers, &refused),
            Refusal::Sink(e) => retry_after(headers, &e.refused()),
            Refusal::Budget(_) | Refusal::Slow(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        response
    }
}

/// Whole seconds, rounded up: exporters wait at least this long.
fn retry_after(headers: &mut HeaderMap, refused: &Refused) {
    let seconds = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
}

async fn export<S: SpanSink>(
    State(rx): State<Arc<OtlpHttp<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match rx.export(&headers, body).await {
        Ok(response) => response,
        Err(refusal) => rx.refuse(refusal, Encoding::answering(&headers)),
    }
}

async fn method_not_allowed<S: SpanSink>(
    State(rx): State<Arc<OtlpHttp<S>>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    rx.refuse(Refusal::Method(method), Encoding::answering(&headers))
}

async fn not_found<S: SpanSink>(
    State(rx): State<Arc<OtlpHttp<S>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    rx.refuse(
        Refusal::Path(uri.path().to_owned()),
        Encoding::answering(&headers),
    )
}

/// The success answer, with the partial success if any spans were rejected.
fn answer(partial_success: Option<ExportTracePartialSuccess>, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Protobuf => ExportTraceServiceResponse { partial_success }.encode_to_vec(),
        // int64 is a decimal string in the JSON mapping.
        Encoding::Json => match partial_success {
            Some(p) => serde_json::json!({"partialSuccess": {
                "rejectedSpans": p.rejected_spans.to_string(),
                "errorMessage": p.error_message,
            }}),
            None => serde_json::json!({}),
        }
        .to_string()
        .into_bytes(),
    };
    (
        StatusCode::OK,
        [(CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error answer (without details).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// How a request's body, and so its answer, is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From the `content-type` header, ignoring parameters such as `charset`.
    fn of(headers: &HeaderMap) -> Result<Encoding, Refusal> {
        let value = headers.get(CONTENT_TYPE).map(|v| v.as_bytes());
        let value = value.map(|v| String::from_utf8_lossy(v).into_owned());
        let media_type = value.as_deref().and_then(|v| v.split(';').next());
        match media_type.map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case(PROTOBUF) => Ok(Encoding::Protobuf),
            Some(t) if t.eq_ignore_ascii_case(JSON) => Ok(Encoding::Json),
            _ => Err(Refusal::ContentType(value)),
        }
    }

    /// The encoding of an error answer: the request's, or JSON (readable) when
    /// the request's is unknown.
    fn answering(headers: &HeaderMap) -> Encoding {
        Encoding::of(headers).unwrap_or(Encoding::Json)
    }

    /// The body format the sink (and the write-ahead log) is told.
    fn format(self) -> BodyFormat {
        match self {
            Encoding::Protobuf => BodyFormat::Protobuf,
            Encoding::Json => BodyFormat::Json,
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// Whether the body is gzip (`content-encoding: gzip`), or as is (no header or
/// `identity`); any other coding is refused.
fn gzipped(headers: &HeaderMap) -> Result<bool, Refusal> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let coding = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else if coding.is_empty() || coding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(Refusal::ContentEncoding(coding))
    }
}

/// Reads a body of at most `limit` bytes. A longer one (as declared, or as it
/// arrives) is refused, but what is left of it is read and dropped first (at
/// most `limit` bytes more, for at most [`DRAIN_TIME`]), so that a client still
/// sending gets to read the refusal instead of a reset connection.
///
/// `take(n)` is asked for each chunk's bytes before they are kept (the
/// intake's shared budget); its refusal ends the read.
async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limit: usize,
    mut take: impl FnMut(usize) -> Result<(), Refusal>,
) -> Result<Vec<u8>, Refusal> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body, limit).await;
        return Err(Refusal::TooLarge { limit });
    }
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Refusal::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.len() > limit {
            drain(body, limit).await;
            return Err(Refusal::TooLarge { limit });
        }
        take(data.len())?;
        out.extend_from_slice(&data);
    }
    Ok(out)
}

/// How long a refused body may take to be read and dropped.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to `most` bytes of what is left of a body.
async fn drain(mut body: Body, most: usize) {
    let mut left = most;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            left = left.saturating_sub(data.len());
            if left == 0 {
                return;
            }
        }
    })
    .await;
}

/// Inflates a gzip body (every member), refusing as soon as it passes `limit`
/// bytes: what lies beyond is never inflated.
#[allow(
    clippy::disallowed_methods,
    reason = "the one inflate of request bodies, bounded by `limit`"
)]
fn gunzip(body: impl Read, limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Refusal::Gzip(e.to_string()))?;
    if out.len() > limit {
        return Err(Refusal::TooLargeInflated { limit });
    }
    Ok(out)
}

/// Why a request was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("unsupported content type {}: send application/x-protobuf or application/json", quoted(.0))]
    ContentType(Option<String>),
    #[error("unsupported content encoding {0:?}: send gzip or an uncompressed body")]
    ContentEncoding(String),
    #[error("request body over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body over the limit of {limit} bytes once inflated")]
    TooLargeInflated { limit: usize },
    #[error("cannot read the request body: {0}")]
    Read(String),
    #[error("request body is not valid gzip: {0}")]
    Gzip(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}; retry later")]
    Busy(Refused),
    #[error("request body not received within {0:?} (body_read_timeout)")]
    Slow(Duration),
    #[error("request bodies being received hold the budget of {0} bytes (otlp_body_budget_mib); retry later")]
    Budget(usize),
    #[error("method {0} not allowed: export with POST")]
    Method(Method),
    #[error("no such path {0:?}: export traces to {TRACES_PATH}")]
    Path(String),
}

fn quoted(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "(none)".to_owned(),
    }
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::ContentType(_) | Refusal::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Refusal::TooLarge { .. } | Refusal::TooLargeInflated { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Refusal::Read(_) | Refusal::Gzip(_) | Refusal::Body(_) => StatusCode::BAD_REQUEST,
            Refusal::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::Path(_) => StatusCode::NOT_FOUND,
            Refusal::Busy(_) | Refusal::Sink(_) | Refusal::Budget(_) | Refusal::Slow(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A reader that counts what was taken from it.
    struct Counting<'a>(&'a [u8], usize);

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_without_inflating_it_all() {
        // 1,024 members of 1 MiB of zeros each: 1 GiB inflated from ~1 MiB.
        let member = gzip(&vec![0; 1 << 20]);
        let bomb = member.repeat(1024);
        let mut input = Counting(&bomb, 0);
        let err = gunzip(&mut input, 1 << 20).unwrap_err();
        assert!(matches!(err, Refusal::TooLargeInflated { .. }), "{err}");
        assert!(
            input.1 < bomb.len() / 8,
            "read {} of {} compressed bytes",
            input.1,
            bomb.len()
        );
        // Under the limit, every member is inflated.
        assert_eq!(
            gunzip(&member.repeat(3)[..], 4 << 20).unwrap().len(),
            3 << 20
        );
        assert!(matches!(
            gunzip(&b"not gzip"[..], 1 << 20),
            Err(Refusal::Gzip(_))
        ));
    }

    #[tokio::test]
    async fn a_body_is_refused_once_it_passes_the_limit_declared_or_not() {
        let none = HeaderMap::new();
        let read = |n: usize, headers: HeaderMap| async move {
            read_body(Body::from(vec![7; n]), &headers, 10, |_| Ok(())).await
        };
        assert_eq!(read(10, none.clone()).await.unwrap(), vec![7; 10]);
        assert!(matches!(
            read(11, none).await,
            Err(Refusal::TooLarge { limit: 10 })
        ));
        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(matches!(
            read(11, declared).await,
            Err(Refusal::TooLarge { limit: 10 })
        ));
    }

    #[test]
    fn content_type_parameters_and_case_are_ignored() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            Encoding::of(&headers)
        };
        assert_eq!(
            with("application/json; charset=utf-8").unwrap(),
            Encoding::Json
        );
        assert_eq!(
            with(" Application/X-Protobuf ").unwrap(),
            Encoding::Protobuf
        );
        assert!(with("application/protobuf").is_err());
        assert!(with("text/plain").is_err());
        assert!(Encoding::of(&HeaderMap::new()).is_err());
    }
}
