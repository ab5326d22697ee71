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
    fn accept(&self, batch: SpanBatch);
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
