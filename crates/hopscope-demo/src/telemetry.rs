//! Each demo service's tracer provider, and how its spans reach the daemon: the
//! real `opentelemetry-otlp` gRPC (tonic) exporter, driven from a Tokio task.
//!
//! Why not an SDK processor: the SDK's `BatchSpanProcessor` exports from a thread
//! of its own that has no Tokio reactor, where the tonic exporter panics (see
//! `tests/support`); `SimpleSpanProcessor` blocks the thread that ends a span on a
//! gRPC round trip, a runtime worker here; and the async-runtime batch processor
//! sits behind an experimental feature and blocks the caller of `force_flush`.
//! So [`QueueProcessor`] only hands each ended span to an unbounded channel, and
//! one task per service exports what has queued with `exporter.export(batch).await`
//! on the runtime, where tonic works. A flush is a marker sent down the same
//! channel and acknowledged once everything queued before it was exported, so it
//! is awaited without blocking a thread.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::DemoError;

/// Most spans in one export request (the SDK batch processor's default).
const MAX_BATCH: usize = 512;
/// How long one export may take before the exporter gives up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

enum Message {
    Span(Box<SpanData>),
    /// Answered with the spans exported so far, or the first export failure.
    Flush(oneshot::Sender<Result<u64, String>>),
}

/// Hands ended spans to the export task; never blocks.
#[derive(Debug)]
struct QueueProcessor {
    queue: Mutex<Option<mpsc::UnboundedSender<Message>>>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if let Some(queue) = &*self.queue.lock() {
            // Only fails once the export task has stopped: nothing to do then.
            let _ = queue.send(Message::Span(Box::new(span)));
        }
    }

    /// Every ended span is already queued; [`Telemetry::flush`] waits for the
    /// export without blocking a runtime thread, which this method could not.
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Closes this processor's end of the queue; the task exports what is left.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.queue.lock().take();
        Ok(())
    }
}

/// One service's tracing: its provider and the task exporting its spans.
pub(super) struct Telemetry {
    provider: SdkTracerProvider,
    queue: mpsc::UnboundedSender<Message>,
    task: JoinHandle<Result<u64, String>>,
    service: &'static str,
}

impl Telemetry {
    /// A provider for `service` (its instance id `instance`) exporting to the
    /// OTLP/gRPC receiver at `endpoint` (`http://host:port`).
    pub(super) fn new(
        service: &'static str,
        instance: String,
        endpoint: &str,
    ) -> Result<Telemetry, DemoError> {
        let resource = Resource::builder_empty()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.instance.id", instance))
            .build();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| DemoError::Exporter {
                service,
                message: e.to_string(),
            })?;
        exporter.set_resource(&resource);
        let (queue, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(export(exporter, rx));
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(QueueProcessor {
                queue: Mutex::new(Some(queue.clone())),
            })
            .build();
        Ok(Telemetry {
            provider,
            queue,
            task,
            service,
        })
    }

    /// The service's tracer.
    pub(super) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("hopscope-demo")
    }

    /// Waits until every span ended so far was exported; returns how many spans
    /// this service exported in all.
    pub(super) async fn flush(&self) -> Result<u64, DemoError> {
        let (ack, done) = oneshot::channel();
        let failed = |message: String| DemoError::Export {
            service: self.service,
            message,
        };
        self.queue
            .send(Message::Flush(ack))
            .map_err(|_| failed("the export task stopped".to_owned()))?;
        done.await
            .map_err(|_| failed("the export task stopped".to_owned()))?
            .map_err(failed)
    }

    /// Shuts the provider down and waits until the export task exported what
    /// was queued; returns how many spans this service exported in all.
    pub(super) async fn shutdown(self) -> Result<u64, DemoError> {
        let service = self.service;
        // Only fails if already shut down; the queue is closed either way.
        let _ = self.provider.shutdown();
        drop(self.queue);
        self.task
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|message| DemoError::Export { service, message })
    }
}

/// Exports queued spans in batches until every sender is gone.
async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::UnboundedReceiver<Message>,
) -> Result<u64, String> {
    let mut out = Outbox {
        exporter,
        batch: Vec::new(),
        exported: 0,
        failure: None,
    };
    let mut messages = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut messages, MAX_BATCH).await > 0 {
        for message in messages.drain(..) {
            match message {
                Message::Span(span) => out.batch.push(*span),
                Message::Flush(ack) => {
                    out.send().await;
                    let _ = ack.send(out.result());
                }
            }
        }
        out.send().await;
    }
    let _ = out.exporter.shutdown();
    out.result()
}

/// The export task's state.
struct Outbox {
    exporter: opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    exported: u64,
    /// The first export that failed.
    failure: Option<String>,
}

impl Outbox {
    async fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let n = self.batch.len() as u64;
        match self.exporter.export(std::mem::take(&mut self.batch)).await {
            Ok(()) => self.exported += n,
            Err(e) => {
                self.failure.get_or_insert_with(|| e.to_string());
            }
        }
    }

    fn result(&self) -> Result<u64, String> {
        self.failure.clone().map_or(Ok(self.exported), Err)
    }
}
