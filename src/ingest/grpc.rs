//! OTLP/gRPC `TraceService/Export`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::otlp::collector::trace::v1::trace_service_server::TraceService;
use super::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use super::{convert, partial_success_message, SpanSink};

/// The gRPC service; wrap it in `TraceServiceServer` to serve it.
pub struct OtlpGrpc<S> {
    sink: Arc<S>,
}

impl<S: SpanSink> OtlpGrpc<S> {
    pub fn new(sink: Arc<S>) -> Self {
        OtlpGrpc { sink }
    }
}

#[tonic::async_trait]
impl<S: SpanSink> TraceService for OtlpGrpc<S> {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let batch = convert(request.into_inner().resource_spans);
        let partial_success = (batch.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: batch.rejected as i64,
            error_message: partial_success_message(&batch),
        });
        self.sink.accept(batch);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}
