//! OTLP/gRPC `TraceService/Export`, served by hand over tonic so the request
//! arrives as bytes and is decoded by [`super::decode_export`] straight into the
//! span model. gzip-compressed requests are accepted.

use std::convert::Infallible;
use std::future::ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::body::Body as TonicBody;
use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use super::codec::ServerCodec;
use super::otlp::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use super::{decode_export, partial_success_message, BodyFormat, ExportBody, SpanSink};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC service; add it to a `tonic::transport::Server`.
pub struct OtlpGrpc<S> {
    sink: Arc<S>,
    max_message_bytes: usize,
}

impl<S> Clone for OtlpGrpc<S> {
    fn clone(&self) -> Self {
        OtlpGrpc {
            sink: self.sink.clone(),
            max_message_bytes: self.max_message_bytes,
        }
    }
}

impl<S: SpanSink> OtlpGrpc<S> {
    /// `max_message_bytes` bounds a request after decompression.
    pub fn new(sink: Arc<S>, max_message_bytes: usize) -> Self {
        OtlpGrpc {
            sink,
            max_message_bytes,
        }
    }
}

impl<S> NamedService for OtlpGrpc<S> {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export<S>(Arc<S>);

impl<S: SpanSink> UnaryService<Bytes> for Export<S> {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let bytes = request.into_inner();
        // Held until the spans are buffered: the budget counts them meanwhile.
        let admitted = match self.0.admit(bytes.len()) {
            Ok(permit) => permit,
            Err(refused) => return Box::pin(ready(Err(unavailable(&refused)))),
        };
        let mut batch = match decode_export(&bytes) {
            Ok(batch) => batch,
            Err(e) => {
                self.0.malformed(&e);
                return Box::pin(ready(Err(Status::invalid_argument(e.to_string()))));
            }
        };
        self.0.screen(&mut batch);
        let sink = self.0.clone();
        Box::pin(async move {
            let partial_success = (batch.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: batch.rejected as i64,
                error_message: partial_success_message(&batch),
            });
            let body = ExportBody {
                format: BodyFormat::Protobuf,
                bytes,
            };
            let accepted = sink.accept(body, batch).await;
            drop(admitted);
            accepted.map_err(|e| unavailable(&e.refused()))?;
            Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            }))
        })
    }
}

/// The retryable refusal: `UNAVAILABLE` with a `RetryInfo` detail (OTLP
/// exporters retry it with backoff, honouring the delay; a bare
/// `RESOURCE_EXHAUSTED` would tell them to drop the data).
fn unavailable(refused: &super::Refused) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    Status::with_error_details(
        Code::Unavailable,
        refused.reason.clone(),
        ErrorDetails::with_retry_info(Some(refused.retry_after)),
    )
}

impl<S, B> Service<http::Request<B>> for OtlpGrpc<S>
where
    S: SpanSink,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let status = Status::unimplemented(format!("no such method: {}", request.uri().path()));
            return Box::pin(ready(Ok(status.into_http())));
        }
        let sink = self.sink.clone();
        let export = Export(sink.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(ServerCodec::default())
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            let response = grpc.unary(export, request).await;
            // tonic answers a request over the limit with OUT_OF_RANGE, or
            // RESOURCE_EXHAUSTED when it grows past it while decompressing;
            // `Export` never answers either.
            if let Some(status) = Status::from_header_map(response.headers()) {
                if matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted) {
                    sink.too_large(max);
                }
            }
            Ok(response)
        })
    }
}
