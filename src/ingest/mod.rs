//! The OTLP edge: decodes export requests straight from the wire format into
//! [`SpanBatch`]es and hands them to a [`SpanSink`]. Ingest never touches the
//! buffer directly.

pub mod codec;
mod convert;
mod grpc;
pub mod otlp;
mod wire;

pub use convert::decode_export;
pub use grpc::OtlpGrpc;
pub use wire::DecodeError;

use std::future::Future;

use bytes::Bytes;

use crate::model::SpanBatch;

/// How a request body is encoded (the write-ahead log keeps bodies as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// An OTLP `ExportTraceServiceRequest` in protobuf (gRPC, or HTTP protobuf).
    Protobuf,
}

impl BodyFormat {
    /// The format's code in a write-ahead log record.
    pub fn code(self) -> u8 {
        match self {
            BodyFormat::Protobuf => 1,
        }
    }

    pub fn from_code(code: u8) -> Option<BodyFormat> {
        match code {
            1 => Some(BodyFormat::Protobuf),
            _ => None,
        }
    }
}

/// A request body as received (after decompression).
#[derive(Debug, Clone)]
pub struct ExportBody {
    pub format: BodyFormat,
    pub bytes: Bytes,
}

/// Decodes a body of any format (what a replay of the log does).
pub fn decode(body: &ExportBody) -> Result<SpanBatch, DecodeError> {
    match body.format {
        BodyFormat::Protobuf => decode_export(&body.bytes),
    }
}

/// Why a sink did not take a request: the receiver answers with a retryable
/// error (gRPC `UNAVAILABLE`), never a success.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot make the request durable, retry: {0}")]
    Durability(String),
}

/// Where ingest delivers accepted spans (the daemon wires it to the buffer).
///
/// A receiver decodes the body, then awaits `accept` with the batch and the
/// body as received, and answers the exporter only when it resolves: `Ok`
/// means the spans are durable (written to the write-ahead log per its sync
/// policy, when there is one) and buffered; an error means the exporter must
/// retry.
pub trait SpanSink: Send + Sync + 'static {
    fn accept(
        &self,
        body: ExportBody,
        batch: SpanBatch,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The partial-success answer for a batch: counts and a readable reason.
pub(crate) fn partial_success_message(batch: &SpanBatch) -> String {
    if batch.rejected == 0 {
        return String::new();
    }
    format!(
        "rejected {} of {} spans with malformed ids: {}",
        batch.rejected,
        batch.rejected + batch.accepted,
        batch.errors.join("; ")
    )
}
