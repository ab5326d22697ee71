//! The four listeners and their servers: OTLP/gRPC, OTLP/HTTP, the HTTP API
//! and the Jaeger query API, each behind its bearer token (when configured),
//! TLS (when configured) and the connection limits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use super::sink::BufferSink;
use super::DaemonError;
use crate::api::{self, AppState};
use crate::auth::{self, Guard, Listener, RequireToken};
use crate::config::Config;
use crate::ingest::{Intake, OtlpGrpc, OtlpHttp};
use crate::listener::{self, ConnLimits};
use crate::stats::Stats;
use crate::tls::Tls;

/// The four bound listeners.
pub(super) struct Listeners {
    otlp_grpc: (TcpListener, SocketAddr),
    otlp_http: (TcpListener, SocketAddr),
    api: (TcpListener, SocketAddr),
    jaeger: (TcpListener, SocketAddr),
}

/// Where the four listeners listen (the ports the system chose for port 0).
#[derive(Debug, Clone, Copy)]
pub(super) struct Addrs {
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub api: SocketAddr,
    pub jaeger: SocketAddr,
}

impl Listeners {
    /// Binds the addresses `config` names.
    pub(super) async fn bind(config: &Config) -> Result<Listeners, DaemonError> {
        Ok(Listeners {
            otlp_grpc: bind("OTLP/gRPC", config.otlp_grpc_addr).await?,
            otlp_http: bind("OTLP/HTTP", config.otlp_http_addr).await?,
            api: bind("the HTTP API", config.api_addr).await?,
            jaeger: bind("the Jaeger query API", config.jaeger_addr).await?,
        })
    }

    pub(super) fn addrs(&self) -> Addrs {
        Addrs {
            otlp_grpc: self.otlp_grpc.1,
            otlp_http: self.otlp_http.1,
            api: self.api.1,
            jaeger: self.jaeger.1,
        }
    }
}

/// Binds `addr` and reads back the address bound.
async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), DaemonError> {
    let error = |source| DaemonError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    Ok((listener, local))
}

/// The running servers, until [`Servers::drain`].
pub(super) struct Servers {
    otlp_grpc: JoinHandle<Result<(), DaemonError>>,
    otlp_http: JoinHandle<Result<(), DaemonError>>,
    api: JoinHandle<Result<(), DaemonError>>,
    jaeger: JoinHandle<Result<(), DaemonError>>,
}

impl Servers {
    /// Serves the OTLP receivers into `sink` and the APIs from `state` on
    /// `listeners` until `stop`.
    pub(super) fn start(
        config: &Config,
        tls: Option<&Tls>,
        listeners: Listeners,
        sink: Arc<BufferSink>,
        state: AppState,
        stop: CancellationToken,
    ) -> Result<Servers, DaemonError> {
        let stats = state.stats.clone();
        let otlp_guard = Guard::new(config.otlp_token.as_deref(), Listener::Otlp, stats.clone());
        let intake = Intake::new(config.body_read_timeout, config.otlp_body_budget_bytes);
        let otlp_http = OtlpHttp::new(
            sink.clone(),
            stats.clone(),
            config.otlp_max_message_bytes,
            intake,
        )
        .router()
        .route_layer(RequireToken::new(otlp_guard.clone(), api::unauthenticated));
        let serving = Serving {
            tls,
            limits: config.conn_limits,
            stats: stats.clone(),
            stop: stop.clone(),
            drain: config.shutdown_timeout,
        };
        let otlp_http = serving.serve("OTLP/HTTP", listeners.otlp_http.0, otlp_http);
        let otlp_grpc = serve_grpc(
            config,
            tls,
            listeners.otlp_grpc.0,
            sink,
            otlp_guard,
            stats.clone(),
            stop,
        )?;
        let time_limit =
            axum::middleware::from_fn_with_state((config.request_timeout, stats), api::time_limit);
        let jaeger = serving.serve(
            "Jaeger query API",
            listeners.jaeger.0,
            api::jaeger::router(state.clone()).layer(time_limit.clone()),
        );
        let api = serving.serve(
            "HTTP API",
            listeners.api.0,
            api::router(state).layer(time_limit),
        );
        Ok(Servers {
            otlp_grpc,
            otlp_http,
            api,
            jaeger,
        })
    }

    /// Waits for the servers (stopped by their token) to finish the requests
    /// in flight, OTLP/gRPC's until `deadline` (the HTTP servers keep theirs
    /// themselves); the first that failed is the error.
    pub(super) async fn drain(self, deadline: Instant) -> Result<(), DaemonError> {
        let (otlp_grpc, otlp_http, api, jaeger) = tokio::join!(
            drained("OTLP/gRPC", self.otlp_grpc, deadline),
            self.otlp_http,
            self.api,
            self.jaeger
        );
        for result in [otlp_grpc, otlp_http, api, jaeger] {
            result.map_err(|e| DaemonError::Server {
                what: "task",
                message: e.to_string(),
            })??;
        }
        Ok(())
    }
}

/// Serves OTLP/gRPC into `sink` on `listener` until `stop`.
fn serve_grpc(
    config: &Config,
    tls: Option<&Tls>,
    listener: TcpListener,
    sink: Arc<BufferSink>,
    guard: Guard,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<JoinHandle<Result<(), DaemonError>>, DaemonError> {
    let server_error = |e: tonic::transport::Error| DaemonError::Server {
        what: "OTLP/gRPC",
        message: e.to_string(),
    };
    let grpc = OtlpGrpc::new(sink, config.otlp_max_message_bytes);
    let limits = config.conn_limits;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls.grpc()).map_err(server_error)?;
    }
    let server = server
        .layer(RequireToken::new(guard, auth::grpc_refusal))
        .add_service(grpc);
    Ok(tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(
                listener::limit_incoming(
                    "OTLP/gRPC",
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    limits,
                    stats,
                ),
                stop.cancelled(),
            )
            .await
            .map_err(server_error)
    }))
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
