//! Wiring and lifecycle: binds the listeners, starts the servers, the
//! completion sweeper and the window detectors, and shuts down in order (stop
//! accepting, analyze what is buffered, exit) on one cancellation signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::analyze;
use crate::api::{self, AppState};
use crate::assemble::{Admitted, Buffer, BufferLimits};
use crate::auth::{self, Guard, Listener, RequireToken};
use crate::clock::TimeBounds;
use crate::config::Config;
use crate::ingest::{ExportBody, Intake, OtlpGrpc, OtlpHttp, Refused, SinkError, SpanSink};
use crate::listener::{self, ConnLimits};
use crate::memory::{self, Buffered, MemoryGuard};
use crate::model::SpanBatch;
use crate::pipeline;
use crate::stats::{LogEvery, Stats};
use crate::store::durable::{Durable, DurableError, DurableOptions};
use crate::store::{Aggregates, FindingStore, Store, TraceStore};
use crate::tls::{Tls, TlsError};

/// Distinct findings kept (merged by kind and culprit; least recently seen dropped).
const MAX_FINDINGS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} server failed: {message}")]
    Server { what: &'static str, message: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Data(#[from] DurableError),
}

/// A started daemon.
pub struct Running {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The Jaeger query API's listener.
    pub jaeger_addr: SocketAddr,
    store: Arc<Store>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Running {
    /// Asks the daemon to stop: stop accepting, analyze what is buffered, exit.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The analyzed traces and aggregates (what the API serves).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Waits until the daemon has stopped.
    pub async fn wait(self) -> Result<(), DaemonError> {
        self.task.await.unwrap_or_else(|e| {
            Err(DaemonError::Server {
                what: "daemon",
                message: e.to_string(),
            })
        })
    }
}

/// Delivers ingested spans to the buffer, after the write-ahead log when there
/// is one, and wakes the sweeper when the buffer is full.
struct BufferSink {
    buffer: Arc<Buffer>,
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
    clock: crate::clock::Clock,
    bounds: TimeBounds,
}

impl BufferSink {
    /// Puts spans logged in segment `log` into the buffer.
    fn deliver(&self, batch: SpanBatch, log: Option<u64>) {
        let now = Instant::now();
        let mut over = false;
        for (trace_id, spans) in batch.traces {
            over |= self.buffer.insert(trace_id, spans, now, log);
        }
        if over {
            self.full.notify_one();
        }
    }

    /// Feeds the log written before this start back through decode and the
    /// buffer (blocking); the traces complete and are analyzed as usual.
    fn replay(&self, durable: &Durable) -> Result<(), DurableError> {
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

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

/// Binds the listeners and starts the daemon.
pub async fn start(config: Config) -> Result<Running, DaemonError> {
    let tls = config.tls.as_ref().map(Tls::load).transpose()?;
    crate::model::intern::set_wire_limit(config.names_max_bytes);
    let grpc_listener = bind("OTLP/gRPC", config.otlp_grpc_addr).await?;
    let otlp_http_listener = bind("OTLP/HTTP", config.otlp_http_addr).await?;
    let api_listener = bind("the HTTP API", config.api_addr).await?;
    let jaeger_listener = bind("the Jaeger query API", config.jaeger_addr).await?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| DaemonError::Bind { what, addr, source })
    };
    let otlp_grpc_addr = local(&grpc_listener, "OTLP/gRPC", config.otlp_grpc_addr)?;
    let otlp_http_addr = local(&otlp_http_listener, "OTLP/HTTP", config.otlp_http_addr)?;
    let api_addr = local(&api_listener, "the HTTP API", config.api_addr)?;
    let jaeger_addr = local(&jaeger_listener, "the Jaeger query API", config.jaeger_addr)?;

    let stats = Arc::new(Stats::default());
    let buffer = Arc::new(Buffer::new(
        BufferLimits {
            idle: config.trace_idle,
            max_age: config.trace_max_age,
            late_grace: config.late_grace,
            max_spans: config.max_buffered_spans,
            max_bytes: config.memory_limit_bytes,
        },
        stats.clone(),
    ));
    let store = Arc::new(Store::new(
        TraceStore::new(config.store_max_traces, config.store_max_bytes),
        Aggregates::new(config.aggregate_retention)
            .limited(config.aggregate_max_entries, config.aggregate_max_hops),
        FindingStore::new(MAX_FINDINGS),
        stats.clone(),
        config.clock.clone(),
    ));
    let durable = match &config.data_dir {
        Some(dir) => {
            let options = DurableOptions {
                dir: dir.clone(),
                sync: config.wal_sync,
                segment_bytes: config.wal_segment_bytes,
                retention: config.retention,
                future_skew: config.future_skew,
                max_bytes: config.retention_max_bytes,
            };
            let store = store.clone();
            let durable = tokio::task::spawn_blocking(move || Durable::open(options, &store))
                .await
                .map_err(|e| DaemonError::Server {
                    what: "data directory",
                    message: e.to_string(),
                })??;
            tracing::info!(data_dir = %dir.display(), sync = %config.wal_sync, "write-ahead log on");
            Some(Arc::new(durable))
        }
        None => None,
    };
    let full = Arc::new(Notify::new());
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = CancellationToken::new();
    // Servers stop on `stop_servers`; the sweeper runs until they have.
    let stop_servers = shutdown.child_token();

    let sink = Arc::new(BufferSink {
        buffer: buffer.clone(),
        stats: stats.clone(),
        full: full.clone(),
        refusal_log: LogEvery::default(),
        too_large_log: LogEvery::default(),
        malformed_log: LogEvery::default(),
        time_log: LogEvery::default(),
        wal_error_log: LogEvery::default(),
        wal_failing: AtomicBool::new(false),
        durable: durable.clone(),
        clock: store.clock.clone(),
        bounds: config.time_bounds(),
    });
    let otlp_guard = Guard::new(config.otlp_token.as_deref(), Listener::Otlp, stats.clone());
    let intake = Intake::new(config.body_read_timeout, config.otlp_body_budget_bytes);
    let otlp_http = OtlpHttp::new(
        sink.clone(),
        stats.clone(),
        config.otlp_max_message_bytes,
        intake,
    )
    .router()
    .route_layer(RequireToken::new(otlp_guard.clone(), auth::http_refusal));
    let serving = Serving {
        tls: tls.as_ref(),
        limits: config.conn_limits,
        stats: stats.clone(),
        stop: stop_servers.clone(),
        drain: config.shutdown_timeout,
    };
    let otlp_http_task = serving.serve("OTLP/HTTP", otlp_http_listener, otlp_http);
    let grpc = OtlpGrpc::new(sink.clone(), config.otlp_max_message_bytes);
    let grpc_stop = stop_servers.clone();
    let (grpc_limits, grpc_stats) = (config.conn_limits, stats.clone());
    let mut grpc_server = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        grpc_server = grpc_server
            .tls_config(tls.grpc())
            .map_err(|e| DaemonError::Server {
                what: "OTLP/gRPC",
                message: e.to_string(),
            })?;
    }
    let grpc_server = grpc_server
        .layer(RequireToken::new(otlp_guard, auth::grpc_refusal))
        .add_service(grpc);
    let grpc_task = tokio::spawn(async move {
        grpc_server
            .serve_with_incoming_shutdown(
                listener::limit_incoming(
                    "OTLP/gRPC",
                    TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                    grpc_limits,
                    grpc_stats,
                ),
                grpc_stop.cancelled(),
            )
            .await
            .map_err(|e| DaemonError::Server {
                what: "OTLP/gRPC",
                message: e.to_string(),
            })
    });

    let analysis = Arc::new(analyze::Options {
        thresholds: config.detectors.clone(),
    });
    let state = AppState {
        analysis: analysis.clone(),
        store: store.clone(),
        buffer: buffer.clone(),
        stats: stats.clone(),
        ready: ready.clone(),
        api_guard: Guard::new(config.api_token.as_deref(), Listener::Api, stats.clone()),
    };
    let time_limit = axum::middleware::from_fn_with_state(
        (config.request_timeout, stats.clone()),
        api::time_limit,
    );
    let jaeger_task = serving.serve(
        "Jaeger query API",
        jaeger_listener,
        api::jaeger::router(state.clone()).layer(time_limit.clone()),
    );
    let api_task = serving.serve(
        "HTTP API",
        api_listener,
        api::router(state).layer(time_limit),
    );

    let sweeper_stop = CancellationToken::new();
    let sweeper = tokio::spawn(sweep(
        buffer.clone(),
        (store.clone(), analysis.clone()),
        stats.clone(),
        full,
        MemoryGuard::new(config.memory_limit_bytes, config.max_buffered_spans),
        durable.clone().map(|d| (d, config.checkpoint_interval)),
        sweeper_stop.clone(),
    ));

    let detector = tokio::spawn(detect(
        (store.clone(), analysis.clone()),
        config.detect_interval,
        sweeper_stop.clone(),
    ));

    if let Some(d) = &durable {
        // New exports are taken meanwhile (into new segments); ready after.
        let (sink, d) = (sink.clone(), d.clone());
        let replayed = tokio::task::spawn_blocking(move || sink.replay(&d))
            .await
            .map_err(|e| DaemonError::Server {
                what: "replay",
                message: e.to_string(),
            })
            .and_then(|r| r.map_err(DaemonError::from));
        if let Err(e) = replayed {
            // The log cannot be read (not damage, which is cut and skipped):
            // stop what was started and report it.
            shutdown.cancel();
            sweeper_stop.cancel();
            return Err(e);
        }
    }
    ready.store(true, Ordering::Release);
    tracing::info!(
        %otlp_grpc_addr,
        %otlp_http_addr,
        %api_addr,
        %jaeger_addr,
        tls = tls.is_some(),
        api_token = config.api_token.is_some(),
        otlp_token = config.otlp_token.is_some(),
        "hopscope listening"
    );

    let timeout = config.shutdown_timeout;
    let handle = shutdown.clone();
    let store_handle = store.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: no new exports; analyzing what is buffered");
        ready.store(false, Ordering::Release);
        // One deadline for all of it: the servers' drain, then the flush.
        let deadline = Instant::now() + timeout;
        stop_servers.cancel();
        let (grpc_result, otlp_http_result, api_result, jaeger_result) = tokio::join!(
            drained("OTLP/gRPC", grpc_task, deadline),
            otlp_http_task,
            api_task,
            jaeger_task
        );
        sweeper_stop.cancel();
        let _ = tokio::join!(sweeper, detector);
        let drained = buffer.drain();
        let count = drained.len();
        let flush = tokio::task::spawn_blocking(move || {
            pipeline::finish(&store, &analysis, drained);
            (store, stats)
        });
        match tokio::time::timeout_at(deadline, flush).await {
            Ok(Ok((store, stats))) => {
                tracing::info!(traces = count, "buffered traces analyzed; stopped");
                if let Some(d) = durable {
                    let closing = d.clone();
                    let _ =
                        tokio::task::spawn_blocking(move || checkpoint(&d, &store, &stats, None))
                            .await;
                    closing.close().await;
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "analysis failed at shutdown"),
            Err(_) => tracing::warn!(
                traces = count,
                "shutdown timeout reached before every buffered trace was analyzed"
            ),
        }
        for result in [grpc_result, otlp_http_result, api_result, jaeger_result] {
            result.map_err(|e| DaemonError::Server {
                what: "task",
                message: e.to_string(),
            })??;
        }
        Ok(())
    });

    Ok(Running {
        otlp_grpc_addr,
        otlp_http_addr,
        api_addr,
        jaeger_addr,
        store: store_handle,
        shutdown: handle,
        task,
    })
}

/// What every HTTP listener is served with.
struct Serving<'a> {
    tls: Option<&'a Tls>,
    limits: ConnLimits,
    stats: Arc<Stats>,
    stop: CancellationToken,
    /// The longest the servers' drain may take (`shutdown_timeout`).
    drain: Duration,
}

impl Serving<'_> {
    /// Serves `app` on `listener` (TLS when configured) until `stop`, letting
    /// requests in flight finish until the drain's deadline.
    fn serve(
        &self,
        what: &'static str,
        listener: TcpListener,
        app: axum::Router,
    ) -> JoinHandle<Result<(), DaemonError>> {
        match self.tls {
            Some(tls) => self.spawn(what, tls.listener(listener), app),
            None => {
                // Small answers must not wait for Nagle's algorithm.
                let listener = listener.tap_io(move |tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, what, "cannot set TCP_NODELAY");
                    }
                });
                self.spawn(what, listener, app)
            }
        }
    }

    fn spawn<L>(
        &self,
        what: &'static str,
        listener: L,
        app: axum::Router,
    ) -> JoinHandle<Result<(), DaemonError>>
    where
        L: axum::serve::Listener,
    {
        let (limits, stats, stop, drain) = (
            self.limits,
            self.stats.clone(),
            self.stop.clone(),
            self.drain,
        );
        tokio::spawn(async move {
            listener::serve(what, listener, app, limits, stats, stop, drain).await;
            Ok(())
        })
    }
}

/// Waits for a server's task until `deadline`, then stops it (its
/// connections still open are closed).
async fn drained(
    what: &'static str,
    mut task: JoinHandle<Result<(), DaemonError>>,
    deadline: Instant,
) -> Result<Result<(), DaemonError>, tokio::task::JoinError> {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                what,
                "shutdown deadline reached: closing the connections still open"
            );
            task.abort();
            Ok(Ok(()))
        }
    }
}

/// Hands complete traces to analysis: on every tick (idle and max-age policy) and
/// whenever the buffer is over its span limit.
///
/// With a data directory, every `checkpoint_interval` (or sooner, when the log
/// grew by an eighth of the directory's bound) it also writes the state
/// file and deletes the log segments no longer needed: here, between two
/// analyses, so no trace is between the buffer and the store meanwhile.
async fn sweep(
    buffer: Arc<Buffer>,
    (store, analysis): (Arc<Store>, Arc<analyze::Options>),
    stats: Arc<Stats>,
    full: Arc<Notify>,
    mut memory: MemoryGuard,
    durable: Option<(Arc<Durable>, Duration)>,
    stop: CancellationToken,
) {
    let mut last_checkpoint = Instant::now();
    // A load above what the buffer holds for `trace_idle` keeps it full:
    // one line per period, with the running count, not one per sweep.
    let full_log = LogEvery::default();
    let memory_log = LogEvery::default();
    let period =
        (buffer.limits().idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = full.notified() => {}
        }
        let now = Instant::now();
        if let Some(resident) = memory::resident_bytes() {
            let buffered = Buffered {
                spans: buffer.span_count(),
                bytes: buffer.bytes(),
            };
            let ceiling = buffer.span_ceiling();
            let next = memory.next_ceiling(resident, buffered, ceiling, now.into_std());
            if next < ceiling && memory_log.ready() {
                tracing::warn!(
                    resident_mib = resident >> 20,
                    span_ceiling = next,
                    "memory short: analyzing the oldest traces early (logged once in a while)"
                );
            }
            buffer.set_span_ceiling(next);
        }
        let mut done = buffer.take_oldest(now);
        if !done.is_empty() && full_log.ready() {
            tracing::warn!(
                traces_evicted_early = stats.traces_evicted_early.load(Ordering::Relaxed),
                max_buffered_spans = buffer.limits().max_spans,
                "buffer full: analyzing the oldest traces early (logged once in a while)"
            );
        }
        done.extend(buffer.take_complete(now));
        if !done.is_empty() {
            let (store, analysis) = (store.clone(), analysis.clone());
            if let Err(e) =
                tokio::task::spawn_blocking(move || pipeline::finish(&store, &analysis, done)).await
            {
                tracing::error!(error = %e, "analysis task failed");
            }
        }
        if let Some((durable, every)) = &durable {
            if last_checkpoint.elapsed() >= *every || durable.checkpoint_due() {
                last_checkpoint = Instant::now();
                let (d, store, stats, buffer) = (
                    durable.clone(),
                    store.clone(),
                    stats.clone(),
                    buffer.clone(),
                );
                let _ = tokio::task::spawn_blocking(move || {
                    checkpoint(&d, &store, &stats, Some(&buffer))
                })
                .await;
            }
        }
    }
}

/// Writes the state file and deletes unneeded log segments, logging failures
/// (the log is kept, so nothing is lost; the next checkpoint tries again).
fn checkpoint(durable: &Durable, store: &Store, stats: &Stats, buffer: Option<&Buffer>) {
    match durable.checkpoint(store, stats, || buffer.and_then(Buffer::oldest_log)) {
        Ok(c) => {
            Stats::add(&stats.checkpoints, 1);
            tracing::debug!(
                log_start = c.log_start,
                segments_deleted = c.segments_deleted,
                state_bytes = c.state_bytes,
                "checkpoint written"
            );
        }
        Err(e) => {
            Stats::add(&stats.checkpoint_errors, 1);
            tracing::error!(error = %e, "checkpoint failed; the log is kept");
        }
    }
}

/// Runs the cross-trace detectors over the call window every `every`, when it
/// changed since the last run, and merges what they report into the findings,
/// replacing their counts ([`crate::store::FindingStore::set`]).
async fn detect(
    (store, analysis): (Arc<Store>, Arc<analyze::Options>),
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The window ages by the clock even when no trace comes.
        store.expire(u64::MAX);
        let generation = store.window.generation();
        if last == Some(generation) {
            continue;
        }
        last = Some(generation);
        let (window, analysis) = (store.clone(), analysis.clone());
        let run = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            pipeline::detect_window(&window, &analysis.thresholds);
            window
                .detected_generation
                .store(generation, std::sync::atomic::Ordering::Release);
            window.stats().detection.observe(started.elapsed());
        });
        if let Err(e) = run.await {
            if e.is_panic() {
                Stats::add(&store.stats().detection_panics, 1);
            }
            tracing::error!(error = %e, "window detectors failed; the next run starts afresh");
        }
    }
}
