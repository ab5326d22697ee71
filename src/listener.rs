//! Serving an HTTP listener (OTLP/HTTP, the API, the Jaeger query API) so
//! that hostile or merely slow clients cannot hold the daemon: at most
//! `max_connections` connections at once (one over it is closed at once,
//! counted), a request head that must arrive within `header_read_timeout`
//! (a slowloris client is dropped, counted), and a drain on shutdown that
//! ends at a deadline, after which the connections still open are closed.
//! The bodies' own limits live with their readers (`ingest::http`).
//! [`limit_incoming`] puts the same connection limit on the OTLP/gRPC
//! listener (tonic serves its connections itself), and closes a connection
//! that sends nothing (not even the HTTP/2 preface) within
//! `header_read_timeout`.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::{Stream, StreamExt};
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
    let permits = Permits::new(what, limits.max_connections, stats.clone());
    let timeouts_log = Arc::new(LogEvery::default());
    let mut conns = JoinSet::new();
    loop {
        let io = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            (io, _) = listener.accept() => io,
        };
        let Some(permit) = permits.take() else {
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

/// A listener's connection slots; a connection holds one while open.
struct Permits {
    what: &'static str,
    slots: Arc<Semaphore>,
    max: usize,
    stats: Arc<Stats>,
    refused_log: LogEvery,
}

impl Permits {
    fn new(what: &'static str, max: usize, stats: Arc<Stats>) -> Self {
        Permits {
            what,
            slots: Arc::new(Semaphore::new(max)),
            max,
            stats,
            refused_log: LogEvery::default(),
        }
    }

    /// A slot for a new connection, or `None` (counted, logged once in a
    /// while): the caller closes it.
    fn take(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.slots.clone().try_acquire_owned().ok();
        if permit.is_none() {
            Stats::add(&self.stats.connections_refused, 1);
            if self.refused_log.ready() {
                let refused = self
                    .stats
                    .connections_refused
                    .load(std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    what = self.what,
                    max_connections = self.max,
                    refused_so_far = refused,
                    "connection limit reached: new connections closed"
                );
            }
        }
        permit
    }
}

/// Accepted connections, at most `max_connections` open at once: one over it
/// is dropped (closed) and counted; one that sends nothing within
/// `header_read_timeout` fails its first read (closed, counted in
/// `http_header_timeouts`). For tonic, which serves a stream of connections.
pub fn limit_incoming<I, IO, E>(
    what: &'static str,
    incoming: I,
    limits: ConnLimits,
    stats: Arc<Stats>,
) -> impl Stream<Item = Result<Held<IO>, E>>
where
    I: Stream<Item = Result<IO, E>>,
{
    let permits = Permits::new(what, limits.max_connections, stats.clone());
    incoming.filter_map(move |accepted| match accepted {
        Ok(io) => permits.take().map(|permit| {
            Ok(Held {
                io,
                _permit: permit,
                first_read: Some(Box::pin(tokio::time::sleep(limits.header_read_timeout))),
                stats: stats.clone(),
            })
        }),
        Err(e) => Some(Err(e)),
    })
}

/// A connection holding its slot until it is closed.
pub struct Held<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    /// Until the first bytes arrive: when they must have.
    first_read: Option<Pin<Box<tokio::time::Sleep>>>,
    stats: Arc<Stats>,
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Held<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Held<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_read {
            if read.is_ready() {
                this.first_read = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                Stats::add(&this.stats.http_header_timeouts, 1);
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Held<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
