//! The OTLP edge: receives export requests over gRPC ([`OtlpGrpc`]) and HTTP
//! ([`OtlpHttp`]), decodes them straight from protobuf ([`decode_export`]) or
//! OTLP/JSON ([`decode_export_json`]) into [`SpanBatch`]es, and hands them to a
//! [`SpanSink`]. Ingest never touches the buffer directly.

pub(crate) mod build;
pub mod codec;
mod convert;
mod grpc;
mod http;
mod json;
pub mod otlp;
mod wire;

pub use convert::decode_export;
pub use grpc::OtlpGrpc;
pub use http::{Intake, OtlpHttp, TRACES_PATH};
pub use json::{decode_export_json, JsonError};
pub use wire::DecodeError;

use std::future::Future;

use bytes::Bytes;

use crate::model::SpanBatch;

/// How a request body is encoded (the write-ahead log keeps bodies as received).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// An OTLP `ExportTraceServiceRequest` in protobuf (gRPC, or HTTP protobuf).
    Protobuf,
    /// The same request in the OTLP/JSON mapping (HTTP JSON).
    Json,
}

impl BodyFormat {
    /// The format's code in a write-ahead log record.
    pub fn code(self) -> u8 {
        match self {
            BodyFormat::Protobuf => 1,
            BodyFormat::Json => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<BodyFormat> {
        match code {
            1 => Some(BodyFormat::Protobuf),
            2 => Some(BodyFormat::Json),
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

/// Why a body does not decode, in either format.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Protobuf(#[from] DecodeError),
    #[error(transparent)]
    Json(#[from] JsonError),
}

/// Decodes a body of either format (the receivers and a replay of the log).
pub fn decode(body: &ExportBody) -> Result<SpanBatch, BodyError> {
    Ok(match body.format {
        BodyFormat::Protobuf => decode_export(&body.bytes)?,
        BodyFormat::Json => decode_export_json(&body.bytes)?,
    })
}

/// Why a sink did not take a request: the receiver answers with a retryable
/// error (gRPC `UNAVAILABLE`), never a success.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot make the request durable, retry: {0}")]
    Durability(String),
}

impl SinkError {
    /// When the exporter should try again: a disk that fails now may have
    /// room in a second (the writer starts a new segment on the next append).
    pub fn refused(&self) -> Refused {
        Refused {
            reason: self.to_string(),
            retry_after: std::time::Duration::from_secs(1),
        }
    }
}

/// Where ingest delivers accepted spans (the daemon wires it to the buffer).
///
/// A receiver decodes the body, then awaits `accept` with the batch and the
/// body as received, and answers the exporter only when it resolves: `Ok`
/// means the spans are durable (written to the write-ahead log per its sync
/// policy, when there is one) and buffered; an error means the exporter must
/// retry.
pub trait SpanSink: Send + Sync + 'static {
    /// Holds a request's admission until its spans are accepted.
    type Permit: Send;

    /// Admits a request of `bytes` (after decompression) before it is decoded,
    /// or refuses it for now: the receiver answers with the protocol's
    /// retryable refusal, so the exporter sends it again later.
    fn admit(&self, bytes: usize) -> Result<Self::Permit, Refused>;

    /// Refuses the spans of a decoded request that it will not take (times far
    /// from the daemon's clock: [`crate::clock::TimeBounds::screen`]),
    /// counting them in the batch's `rejected`, which the receiver answers
    /// in partial success. Called before [`SpanSink::accept`].
    fn screen(&self, batch: &mut SpanBatch);

    /// Takes a decoded request; see the trait's documentation.
    fn accept(
        &self,
        body: ExportBody,
        batch: SpanBatch,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// A request over `limit` bytes (after decompression) was refused before
    /// it was decoded.
    fn too_large(&self, limit: usize);

    /// A request was refused because it does not decode.
    fn malformed(&self, error: &dyn std::fmt::Display);
}

/// A request refused for now (the daemon is at its memory budget).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    pub reason: String,
    /// When the exporter should try again.
    pub retry_after: std::time::Duration,
}

/// The partial-success answer for a batch: counts and a readable reason.
pub(crate) fn partial_success_message(batch: &SpanBatch) -> String {
    if batch.rejected == 0 {
        return String::new();
    }
    format!(
        "rejected {} of {} spans: {}",
        batch.rejected,
        batch.rejected + batch.accepted,
        batch.errors.join("; ")
    )
}
