//! Wiring and lifecycle: binds the listeners, starts the servers
//! (`servers`), the completion sweeper and the window detectors
//! (`tasks`), replays the write-ahead log into the sink (`sink`), and
//! shuts down in order (stop accepting, analyze what is buffered, exit) on
//! one cancellation signal (`shutdown`).

mod servers;
mod shutdown;
mod sink;
mod tasks;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::analyze;
use crate::api::AppState;
use crate::assemble::{Buffer, BufferLimits};
use crate::auth::{Guard, Listener};
use crate::config::Config;
use crate::forward::{ForwardError, Forwarder};
use crate::peers::Peers;
use crate::stats::Stats;
use crate::store::durable::{Durable, DurableError, DurableOptions};
use crate::store::{Aggregates, FindingStore, Store, TraceStore};
use crate::tls::{Tls, TlsError};
use servers::{Addrs, Listeners, Servers};
use shutdown::Shutdown;
use sink::BufferSink;
use tasks::Tasks;

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
    #[error(transparent)]
    Forward(#[from] ForwardError),
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

/// Binds the listeners and starts the daemon.
pub async fn start(config: Config) -> Result<Running, DaemonError> {
    let tls = config.tls.as_ref().map(Tls::load).transpose()?;
    crate::model::intern::set_wire_limit(config.names_max_bytes);
    let listeners = Listeners::bind(&config).await?;
    let addrs = listeners.addrs();
    let core = Core::open(&config).await?;
    let full = Arc::new(Notify::new());
    let ready = Arc::new(AtomicBool::new(false));
    let signal = CancellationToken::new();
    // Servers stop on `stop_servers`; the sweeper runs until they have.
    let stop_servers = signal.child_token();
    let sink = Arc::new(BufferSink::new(&config, &core, full.clone()));
    let peers = Arc::new(Peers::new(&config).map_err(|e| DaemonError::Server {
        what: "peers",
        message: e.to_string(),
    })?);
    peers.discover(signal.child_token());
    let state = core.api_state(&config, ready.clone(), peers.clone());
    let servers = Servers::start(
        &config,
        tls.as_ref(),
        listeners,
        sink.clone(),
        state,
        stop_servers.clone(),
    )?;
    let tasks = Tasks::start(&config, &core, full, peers);
    if let Err(e) = replay(&sink, core.durable.as_ref()).await {
        // The log cannot be read (not damage, which is cut and skipped):
        // stop what was started and report it.
        signal.cancel();
        tasks.stop();
        return Err(e);
    }
    ready.store(true, Ordering::Release);
    log_listening(&config, addrs, tls.is_some());
    let store = core.store.clone();
    let shutdown = Shutdown {
        signal: signal.clone(),
        stop_servers,
        ready,
        servers,
        tasks,
        core,
        timeout: config.shutdown_timeout,
    };
    Ok(Running {
        otlp_grpc_addr: addrs.otlp_grpc,
        otlp_http_addr: addrs.otlp_http,
        api_addr: addrs.api,
        jaeger_addr: addrs.jaeger,
        store,
        shutdown: signal,
        task: tokio::spawn(shutdown.run()),
    })
}

/// What the sink, the servers, the periodic tasks and the shutdown share.
#[derive(Clone)]
struct Core {
    stats: Arc<Stats>,
    buffer: Arc<Buffer>,
    store: Arc<Store>,
    analysis: Arc<analyze::Options>,
    durable: Option<Arc<Durable>>,
    /// Where analyzed traces are forwarded (`forward_otlp`).
    forward: Option<Arc<Forwarder>>,
}

impl Core {
    /// The buffer and the store `config` describes, the store restored from
    /// the data directory when there is one.
    async fn open(config: &Config) -> Result<Core, DaemonError> {
        let stats = Arc::new(Stats::default());
        let buffer = Arc::new(Buffer::new(buffer_limits(config), stats.clone()));
        let store = Arc::new(new_store(config, stats.clone()));
        let durable = open_durable(config, &store).await?;
        let analysis = Arc::new(analyze::Options {
            thresholds: config.detectors.clone(),
        });
        let forward = config
            .forward
            .as_ref()
            .map(|f| Forwarder::start(f, stats.clone()).map(Arc::new))
            .transpose()?;
        Ok(Core {
            stats,
            buffer,
            store,
            analysis,
            durable,
            forward,
        })
    }

    /// What the HTTP API and the Jaeger query API read.
    fn api_state(&self, config: &Config, ready: Arc<AtomicBool>, peers: Arc<Peers>) -> AppState {
        AppState {
            peers,
            role: config.role,
            analysis: self.analysis.clone(),
            store: self.store.clone(),
            buffer: self.buffer.clone(),
            stats: self.stats.clone(),
            ready,
            api_guard: Guard::new(
                config.api_token.as_deref(),
                Listener::Api,
                self.stats.clone(),
            ),
        }
    }
}

/// Logs where the daemon listens and how it is guarded.
fn log_listening(config: &Config, addrs: Addrs, tls: bool) {
    tracing::info!(
        otlp_grpc_addr = %addrs.otlp_grpc,
        otlp_http_addr = %addrs.otlp_http,
        api_addr = %addrs.api,
        jaeger_addr = %addrs.jaeger,
        tls,
        api_token = config.api_token.is_some(),
        otlp_token = config.otlp_token.is_some(),
        "hopscope listening"
    );
}

/// The buffer's limits from `config`.
fn buffer_limits(config: &Config) -> BufferLimits {
    BufferLimits {
        idle: config.trace_idle,
        max_age: config.trace_max_age,
        late_grace: config.late_grace,
        max_spans: config.max_buffered_spans,
        max_bytes: config.memory_limit_bytes,
    }
}

/// An empty store with `config`'s bounds (the stage benchmark's too).
pub fn new_store(config: &Config, stats: Arc<Stats>) -> Store {
    let store = Store::new(
        TraceStore::new(config.store_max_traces, config.store_max_bytes),
        Aggregates::new(config.aggregate_retention)
            .limited(config.aggregate_max_entries, config.aggregate_max_hops),
        FindingStore::new(MAX_FINDINGS),
        stats,
        config.clock.clone(),
    );
    match config.role.detects() {
        true => store,
        false => store.without_window(),
    }
}

/// Opens the data directory, when `config` has one, restoring `store` from
/// its state file.
async fn open_durable(
    config: &Config,
    store: &Arc<Store>,
) -> Result<Option<Arc<Durable>>, DaemonError> {
    let Some(dir) = &config.data_dir else {
        return Ok(None);
    };
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
    Ok(Some(Arc::new(durable)))
}

/// Feeds the log written before this start back through `sink` (new exports
/// are taken meanwhile, into new segments; the daemon is ready after).
async fn replay(sink: &Arc<BufferSink>, durable: Option<&Arc<Durable>>) -> Result<(), DaemonError> {
    let Some(d) = durable else {
        return Ok(());
    };
    let (sink, d) = (sink.clone(), d.clone());
    tokio::task::spawn_blocking(move || sink.replay(&d))
        .await
        .map_err(|e| DaemonError::Server {
            what: "replay",
            message: e.to_string(),
        })?
        .map_err(DaemonError::from)
}
