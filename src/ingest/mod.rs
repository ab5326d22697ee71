//! The OTLP edge: receives export requests over gRPC ([`OtlpGrpc`]) and HTTP
//! ([`OtlpHttp`]), decodes them straight from protobuf ([`decode_export`]) or
//! OTLP/JSON ([`decode_export_json`]) into [`SpanBatch`]es, and hands them to a
//! [`SpanSink`]. Ingest never touches the buffer directly.

mod build;
pub mod codec;
mod convert;
mod grpc;
mod http;
mod json;
pub mod otlp;
mod wire;

pub use convert::decode_export;
pub use grpc::OtlpGrpc;
pub use http::{OtlpHttp, TRACES_PATH};
pub use json::{decode_export_json, JsonError};
pub use wire::DecodeError;

use crate::model::SpanBatch;

/// Where ingest delivers accepted spans (the daemon wires it to the buffer).
pub trait SpanSink: Send + Sync + 'static {
    /// Holds a request's admission until its spans are accepted.
    type Permit: Send;

    /// Admits a request of `bytes` (after decompression) before it is decoded,
    /// or refuses it for now: the receiver answers with the protocol's
    /// retryable refusal, so the exporter sends it again later.
    fn admit(&self, bytes: usize) -> Result<Self::Permit, Refused>;

    fn accept(&self, batch: SpanBatch);

    /// A request over `limit` bytes (after decompression) was refused before
    /// it was decoded.
    fn too_large(&self, limit: usize);
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
        "rejected {} of {} spans with malformed ids: {}",
        batch.rejected,
        batch.rejected + batch.accepted,
        batch.errors.join("; ")
    )
}
