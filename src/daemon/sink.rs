//! The sink the OTLP receivers deliver to: the write-ahead log first (when
//! there is one), then the buffer; and the replay of the log at start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Core;
use crate::assemble::{Admitted, Buffer};
use crate::clock::{Clock, TimeBounds};
use crate::config::{Config, Role};
use crate::forward::records;
use crate::ingest::{ExportBody, Refused, SinkError, SpanSink};
use crate::model::{AttrValue, SpanBatch, Sym};
use crate::stats::{LogEvery, Stats};
use crate::store::durable::{Durable, DurableError};
use crate::store::Store;

/// Delivers ingested spans to the buffer, after the write-ahead log when there
/// is one, and wakes the sweeper when the buffer is full.
pub(super) struct BufferSink {
    buffer: Arc<Buffer>,
    /// A detect replica's (`--role detect`): spans are not buffered, the call
    /// records their carriers hold join this store's call window.
    records: Option<Arc<Store>>,
    records_log: LogEvery,
    stats: Arc<Stats>,
    full: Arc<Notify>,
    /// Refusals are logged once in a while; the counters have the rest.
    refusal_log: LogEvery,
    too_large_log: LogEvery,
    malformed_log: LogEvery,
    time_log: LogEvery,
    /// A failing disk fails every append: logged once in a while, counted
    /// in `wal_write_errors`, and its end logged once.
    wal_error_log: LogEvery,
    wal_failing: AtomicBool,
    durable: Option<Arc<Durable>>,
    /// What "now" is for the bounds on span times.
    clock: Clock,
    bounds: TimeBounds,
}

impl BufferSink {
    /// A sink into `core`'s buffer (after its log, if any) that wakes `full`
    /// when the buffer is over its span limit and refuses spans outside
    /// `config`'s time bounds.
    pub(super) fn new(config: &Config, core: &Core, full: Arc<Notify>) -> BufferSink {
        BufferSink {
            buffer: core.buffer.clone(),
            records: (config.role == Role::Detect).then(|| core.store.clone()),
            records_log: LogEvery::default(),
            stats: core.stats.clone(),
            full,
            refusal_log: LogEvery::default(),
            too_large_log: LogEvery::default(),
            malformed_log: LogEvery::default(),
            time_log: LogEvery::default(),
            wal_error_log: LogEvery::default(),
            wal_failing: AtomicBool::new(false),
            durable: core.durable.clone(),
            clock: config.clock.clone(),
            bounds: config.time_bounds(),
        }
    }

    /// Puts spans logged in segment `log` into the buffer.
    fn deliver(&self, batch: SpanBatch, log: Option<u64>) {
        if let Some(store) = &self.records {
            self.merge_records(store, batch);
            return;
        }
        // The buffer ages traces by the runtime's clock (paused in tests).
        let now = Instant::now().into_std();
        let mut over = false;
        for (trace_id, spans) in batch.traces {
            over |= self.buffer.insert(trace_id, spans, now, log);
        }
        if over {
            self.full.notify_one();
        }
    }

    /// A detect replica's delivery: each carrier's part of its trace's call
    /// records into the call window; the other spans were only their company.
    fn merge_records(&self, store: &Store, batch: SpanBatch) {
        let key = Sym::new(records::RECORDS);
        for (trace_id, set) in batch.traces {
            for span in &set.spans {
                let Some(AttrValue::Str(text)) = set.arena.get(span.attrs, key) else {
                    continue;
                };
                match records::decode(trace_id, text) {
                    Ok(part) => store.merge_calls(part),
                    Err(e) => {
                        Stats::add(&self.stats.records_refused, 1);
                        if self.records_log.ready() {
                            tracing::warn!(%trace_id, error = %e, "forwarded call records refused; counted in records_refused");
                        }
                    }
                }
            }
        }
    }

    /// Feeds the log written before this start back through decode and the
    /// buffer (blocking); the traces complete and are analyzed as usual.
    pub(super) fn replay(&self, durable: &Durable) -> Result<(), DurableError> {
        let replayed = durable.replay(|segment, code, bytes| {
            let Some(format) = crate::ingest::BodyFormat::from_code(code) else {
                Stats::add(&self.stats.wal_records_undecodable, 1);
                tracing::warn!(segment, code, "log record of an unknown format skipped");
                return;
            };
            match crate::ingest::decode(&ExportBody { format, bytes }) {
                Ok(mut batch) => {
                    // Judged again by the clock now: what has aged past the
                    // retention since it was logged counts in nothing.
                    self.screen(&mut batch);
                    Stats::add(&self.stats.wal_spans_replayed, batch.accepted);
                    self.deliver(batch, Some(segment));
                }
                Err(e) => {
                    Stats::add(&self.stats.wal_records_undecodable, 1);
                    tracing::warn!(segment, error = %e, "log record no longer decodes; skipped");
                }
            }
        })?;
        Stats::add(&self.stats.wal_records_replayed, replayed.records);
        Stats::add(
            &self.stats.wal_segments_damaged,
            replayed.damaged.len() as u64,
        );
        Stats::add(
            &self.stats.wal_bytes_skipped,
            replayed.damaged.iter().map(|d| d.1.skipped).sum(),
        );
        tracing::info!(
            segments = replayed.segments,
            records = replayed.records,
            spans = self.stats.snapshot().wal_spans_replayed,
            damaged = replayed.damaged.len(),
            "write-ahead log replayed"
        );
        Ok(())
    }
}

/// The delay a refused exporter is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl SpanSink for BufferSink {
    type Permit = Admitted;

    fn admit(&self, bytes: usize) -> Result<Admitted, Refused> {
        self.buffer.admit(bytes).map_err(|full| {
            if self.refusal_log.ready() {
                let refused = self.stats.export_requests_refused.load(Ordering::Relaxed);
                tracing::warn!(%full, refused_so_far = refused, "refusing exports");
            }
            Refused {
                reason: full.to_string(),
                retry_after: RETRY_AFTER,
            }
        })
    }

    fn too_large(&self, limit: usize) {
        Stats::add(&self.stats.otlp_too_large, 1);
        if self.too_large_log.ready() {
            let refused = self.stats.otlp_too_large.load(Ordering::Relaxed);
            tracing::warn!(
                limit_bytes = limit,
                refused_so_far = refused,
                "refusing OTLP requests over the size limit (otlp_max_message_mib)"
            );
        }
    }

    fn screen(&self, batch: &mut SpanBatch) {
        let screened = self.bounds.screen(self.clock.now_ns(), batch);
        Stats::add(&self.stats.spans_rejected_future, screened.future);
        Stats::add(&self.stats.spans_rejected_past, screened.past);
        if screened.future + screened.past > 0 && self.time_log.ready() {
            tracing::warn!(
                future = screened.future,
                past = screened.past,
                reasons = ?batch.errors,
                "refusing spans far from the daemon's clock (future_skew, aggregate_retention)"
            );
        }
    }

    fn malformed(&self, error: &dyn std::fmt::Display) {
        Stats::add(&self.stats.otlp_malformed, 1);
        if self.malformed_log.ready() {
            let refused = self.stats.otlp_malformed.load(Ordering::Relaxed);
            tracing::warn!(%error, refused_so_far = refused, "refusing undecodable OTLP requests");
        }
    }

    async fn accept(&self, body: ExportBody, batch: SpanBatch) -> Result<(), SinkError> {
        Stats::add(&self.stats.export_requests, 1);
        Stats::add(&self.stats.export_bytes, body.bytes.len() as u64);
        let ack = match &self.durable {
            Some(durable) if batch.accepted > 0 => {
                match durable.append(body.format.code(), body.bytes).await {
                    Ok(ack) => {
                        if self.wal_failing.swap(false, Ordering::Relaxed) {
                            tracing::info!("write-ahead log writable again: exports accepted");
                        }
                        Some(ack)
                    }
                    Err(e) => {
                        Stats::add(&self.stats.wal_write_errors, 1);
                        self.wal_failing.store(true, Ordering::Relaxed);
                        if self.wal_error_log.ready() {
                            let failed = self.stats.wal_write_errors.load(Ordering::Relaxed);
                            tracing::error!(
                                error = %e,
                                failed_so_far = failed,
                                "write-ahead log append failed: exports refused (retryable) until it can write again"
                            );
                        }
                        return Err(SinkError::Durability(e.to_string()));
                    }
                }
            }
            _ => None,
        };
        Stats::add(&self.stats.spans_accepted, batch.accepted);
        Stats::add(&self.stats.spans_rejected, batch.rejected);
        // The ack keeps its segment until the spans are in the buffer.
        self.deliver(batch, ack.as_ref().map(|a| a.segment()));
        drop(ack);
        Ok(())
    }
}
