//! Serving an HTTP listener (OTLP/HTTP, the API, the Jaeger query API) so
//! that hostile or merely slow clients cannot hold the daemon: at most
//! `max_connections` connections at once (one over it is closed at once,
//! counted), a request head that must arrive within `header_read_timeout`
//! (a slowloris client is dropped, counted), and a drain on shutdown that
//! ends at a deadline, after which the connections still open are closed.
//! The bodies' own limits live with their readers (`ingest::http`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::stats::{LogEvery, Stats};

/// What a listener allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once; past it a new one is closed as accepted.
    pub max_connections: usize,
    /// Time from the start of a request head (or of an idle keep-alive
    /// connection's wait for one) to its last header line.
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `stop`; then stops accepting, lets the
/// requests in flight finish for at most `drain` and closes whatever is
/// still open.
pub async fn serve<L>(
    what: &'static str,
    mut listener: L,
    app: axum::Router,
    limits: ConnLimits,
    stats: Arc<Stats>,
    stop: CancellationToken,
    drain: Duration,
) where
    L: axum::serve::Listener,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refused_log = LogEvery::default();
    let timeouts_log = Arc::new(LogEvery::default());
    let mut conns = JoinSet::new();
    loop {
        let io = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            (io, _) = listener.accept() => io,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Stats::add(&stats.connections_refused, 1);
            if refused_log.ready() {
                let refused = stats
                    .connections_refused
                    .load(std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    what,
                    max_connections = limits.max_connections,
                    refused_so_far = refused,
                    "connection limit reached: new connections closed"
                );
            }
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let (stop, stats, timeouts_log) = (stop.clone(), stats.clone(), timeouts_log.clone());
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            tokio::pin!(conn);
            let served = tokio::select! {
                served = conn.as_mut() => served,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            let Err(e) = served else { return };
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                Stats::add(&stats.http_header_timeouts, 1);
                if timeouts_log.ready() {
                    tracing::info!(
                        what,
                        "connection closed: no request head within header_read_timeout"
                    );
                }
            } else {
                tracing::debug!(what, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            what,
            open = conns.len(),
            "shutdown deadline reached: closing the connections still open"
        );
        conns.shutdown().await;
    }
}
