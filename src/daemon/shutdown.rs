//! Shutdown in order, on one signal and under one deadline: stop being ready,
//! stop the servers (letting requests in flight finish), stop the periodic
//! tasks, analyze what is buffered, write a last checkpoint and close the log,
//! and forward what the analysis queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::servers::Servers;
use super::tasks::{checkpoint, Tasks};
use super::Core;
use super::DaemonError;
use crate::pipeline;

/// What a shutdown stops, drains and flushes.
pub(super) struct Shutdown {
    /// Cancelled to start the shutdown.
    pub signal: CancellationToken,
    /// Cancelled to stop the servers (a child of `signal`).
    pub stop_servers: CancellationToken,
    /// Cleared first, so `/readyz` answers not ready while it lasts.
    pub ready: Arc<AtomicBool>,
    pub servers: Servers,
    pub tasks: Tasks,
    /// What is flushed: the buffer into the store, then a last checkpoint.
    pub core: Core,
    /// The longest all of it may take (`shutdown_timeout`).
    pub timeout: Duration,
}

impl Shutdown {
    /// Waits for the signal, then shuts down; the error is the first server's
    /// that failed.
    pub(super) async fn run(self) -> Result<(), DaemonError> {
        self.signal.cancelled().await;
        tracing::info!("shutting down: no new exports; analyzing what is buffered");
        self.ready.store(false, Ordering::Release);
        // One deadline for all of it: the servers' drain, then the flush.
        let deadline = Instant::now() + self.timeout;
        if let Some(forward) = &self.core.forward {
            forward.give_up_at(deadline);
        }
        self.stop_servers.cancel();
        let served = self.servers.drain(deadline).await;
        self.tasks.join().await;
        flush(self.core, deadline).await;
        served
    }
}

/// Analyzes what `core`'s buffer holds until `deadline`; when all of it was, writes
/// a last checkpoint and closes the log.
async fn flush(core: Core, deadline: Instant) {
    let Core {
        stats,
        buffer,
        store,
        analysis,
        durable,
        forward,
    } = core;
    let drained = buffer.drain();
    let count = drained.len();
    let forwarding = forward.clone();
    let flush = tokio::task::spawn_blocking(move || {
        pipeline::finish(&store, &analysis, forwarding.as_deref(), drained);
        (store, stats)
    });
    match tokio::time::timeout_at(deadline, flush).await {
        Ok(Ok((store, stats))) => {
            tracing::info!(traces = count, "buffered traces analyzed; stopped");
            if let Some(d) = durable {
                let closing = d.clone();
                let _ =
                    tokio::task::spawn_blocking(move || checkpoint(&d, &store, &stats, None)).await;
                closing.close().await;
            }
        }
        Ok(Err(e)) => tracing::error!(error = %e, "analysis failed at shutdown"),
        Err(_) => tracing::warn!(
            traces = count,
            "shutdown timeout reached before every buffered trace was analyzed"
        ),
    }
    // What the analysis queued is sent until the deadline (`give_up_at`).
    if let Some(forward) = forward {
        forward.drain().await;
    }
}
