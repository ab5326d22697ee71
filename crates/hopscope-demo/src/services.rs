//! The demo's services: axum servers on ephemeral ports that create a SERVER
//! span per request (parent from the W3C `traceparent` header), do some work,
//! call the next hops over HTTP with a real client timeout inside a CLIENT span
//! each (injecting `traceparent`), query their database ([`super::db`]), do
//! blocking work if the plan says so ([`Hop`]), and answer. Semantic-convention
//! attributes throughout; a timed-out call is status ERROR with `error.type`
//! `timeout` and the caller answers 504.
//!
//! Each request's work runs in a task of its own, as in a server that does not
//! cancel work when the caller hangs up: a slow callee keeps working (and ends
//! its span) after its caller gave up. A service is served by the demo's
//! runtime, or by one thread of its own ([`Hop::one_thread`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::db::Database;
use super::scenario::{Call, Hop};
use super::telemetry::Telemetry;
use super::DemoError;

/// The remaining deadline a caller passes on, in milliseconds.
pub(super) const DEADLINE_HEADER: &str = "x-deadline-ms";
/// The status message of a call that ran out of its own (stacked) timeout.
const TIMED_OUT: &str = "operation timed out";
/// The status message of a call, or work, that ran out of a propagated deadline.
const DEADLINE_EXCEEDED: &str = "context deadline exceeded";
/// What an API gateway answers when its integration timed out.
const GATEWAY_TIMED_OUT: &str = "Endpoint request timed out";

/// An HTTP endpoint: method, route template and the concrete path called.
#[derive(Debug, Clone)]
pub(super) struct Endpoint {
    pub method: Method,
    pub route: &'static str,
    pub path: &'static str,
    /// The message of a successful answer.
    pub answer: &'static str,
}

impl Endpoint {
    /// The span name: `{method} {route}`.
    pub(super) fn operation(&self) -> String {
        format!("{} {}", self.method, self.route)
    }
}

/// `GET /checkout`, served by the gateway and by frontend.
pub(super) fn checkout() -> Endpoint {
    Endpoint {
        method: Method::GET,
        route: "/checkout",
        path: "/checkout",
        answer: "order placed",
    }
}

/// `POST /orders`, served by orders.
pub(super) fn orders() -> Endpoint {
    Endpoint {
        method: Method::POST,
        route: "/orders",
        path: "/orders",
        answer: "order placed",
    }
}

/// `GET /stock/{sku}`, served by inventory.
pub(super) fn stock() -> Endpoint {
    Endpoint {
        method: Method::GET,
        route: "/stock/{sku}",
        path: "/stock/sku-1842",
        answer: "in stock",
    }
}

/// `GET /products/{sku}`, served by catalog.
pub(super) fn products() -> Endpoint {
    Endpoint {
        method: Method::GET,
        route: "/products/{sku}",
        path: "/products/P-004217",
        answer: "product found",
    }
}

/// Where a call goes: a started service's address and endpoint.
#[derive(Debug, Clone)]
pub(super) struct Callee {
    pub addr: SocketAddr,
    pub endpoint: Endpoint,
}

/// What one service does, wired to its callees and its database.
#[derive(Debug)]
pub(super) struct Spec {
    pub hop: Hop,
    /// Where each of `hop.calls` goes, in the same order.
    pub callees: Vec<Callee>,
    /// The database of `hop.db`.
    pub db: Option<Arc<Database>>,
}

/// Requests being worked on, over all services.
#[derive(Clone)]
pub(super) struct InFlight(Arc<watch::Sender<usize>>);

/// One request being worked on; counted until dropped.
struct Busy(Arc<watch::Sender<usize>>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl InFlight {
    pub(super) fn new() -> InFlight {
        InFlight(Arc::new(watch::Sender::new(0)))
    }

    fn enter(&self) -> Busy {
        self.0.send_modify(|n| *n += 1);
        Busy(self.0.clone())
    }

    /// Waits until no service is working on a request.
    pub(super) async fn idle(&self) {
        let mut rx = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// A running service.
pub(super) struct Service {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub telemetry: Telemetry,
    server: JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Binds 127.0.0.1:0 and serves `spec`, exporting spans to `otlp_endpoint`.
    /// A one-thread service gets its own HTTP client, so that its connections
    /// are driven by its thread too; the others share `http`.
    pub(super) async fn start(
        spec: Spec,
        otlp_endpoint: &str,
        http: reqwest::Client,
        in_flight: InFlight,
        stop: CancellationToken,
    ) -> Result<Service, DemoError> {
        let name = spec.hop.name;
        let bound = std::net::TcpListener::bind(("127.0.0.1", 0)).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok((l.local_addr()?, l))
        });
        let (addr, listener) = bound.map_err(|source| DemoError::Bind {
            service: name,
            source,
        })?;
        let telemetry = Telemetry::new(name, format!("{name}-{}", addr.port()), otlp_endpoint)?;
        let one_thread = spec.hop.one_thread;
        let http = if one_thread {
            reqwest::Client::builder()
                .build()
                .map_err(DemoError::Client)?
        } else {
            http
        };
        let route = match spec.hop.serves.method {
            Method::POST => post(handle),
            _ => get(handle),
        };
        let node = Arc::new(Node {
            tracer: telemetry.tracer(),
            propagator: TraceContextPropagator::new(),
            addr,
            http,
            in_flight,
            spec,
        });
        let app = Router::new()
            .route(node.spec.hop.serves.route, route)
            .with_state(node);
        let served = serve(listener, app, stop);
        let server = if one_thread {
            on_own_thread(name, served)?
        } else {
            tokio::spawn(served)
        };
        Ok(Service {
            name,
            addr,
            telemetry,
            server,
        })
    }

    /// Waits until the server stopped (after the demo's stop token fired), then
    /// exports the rest of the spans; returns the spans exported in all.
    pub(super) async fn stop(self) -> Result<u64, DemoError> {
        let served = self.server.await;
        let exported = self.telemetry.shutdown().await?;
        let failed = |message: String| DemoError::Server {
            service: self.name,
            message,
        };
        served
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        Ok(exported)
    }
}

/// Serves `app` on `listener` until `stop` fires and every request is answered.
async fn serve(
    listener: std::net::TcpListener,
    app: Router,
    stop: CancellationToken,
) -> std::io::Result<()> {
    // Registered with the runtime that polls this future.
    let listener = TcpListener::from_std(listener)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// Runs `served` on a current-thread runtime of its own OS thread: every
/// request of the service, its tasks and its connections share that one
/// thread. The handle finishes when the thread's runtime has shut down.
fn on_own_thread(
    service: &'static str,
    served: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
) -> Result<JoinHandle<std::io::Result<()>>, DemoError> {
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("{service}-worker"))
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|runtime| runtime.block_on(served));
            // The runtime is dropped by now: its tasks are gone too.
            let _ = done.send(result);
        })
        .map_err(|e| DemoError::Server {
            service,
            message: format!("cannot start its thread: {e}"),
        })?;
    Ok(tokio::spawn(async move {
        finished
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("the service's thread died")))
    }))
}

/// A service's request handling.
struct Node {
    spec: Spec,
    addr: SocketAddr,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    http: reqwest::Client,
    in_flight: InFlight,
}

/// What came back from the next hop.
enum Upstream {
    Answered(StatusCode),
    TimedOut,
    /// No answer, with the `error.type` recorded (e.g. `connection_refused`).
    Failed(&'static str),
}

async fn handle(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    // In a task of its own, so the work goes on if the caller hangs up.
    match tokio::spawn(node.serve(headers)).await {
        Ok(response) => response,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl Node {
    async fn serve(self: Arc<Self>, headers: HeaderMap) -> Response {
        let _busy = self.in_flight.enter();
        let arrived = Instant::now();
        let parent = self.propagator.extract(&HeaderExtractor(&headers));
        let deadline = self.deadline(arrived, &headers);
        let serves = &self.spec.hop.serves;
        let span = self
            .tracer
            .span_builder(serves.operation())
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", serves.method.to_string()),
                KeyValue::new("http.route", serves.route),
                KeyValue::new("url.path", serves.path),
                KeyValue::new("url.scheme", "http"),
                KeyValue::new("server.address", self.addr.ip().to_string()),
                KeyValue::new("server.port", i64::from(self.addr.port())),
                KeyValue::new("network.protocol.version", "1.1"),
            ])
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        let (status, message) = self.work(&cx, deadline).await;
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
            span.set_status(Status::error(message.clone()));
        }
        span.end();
        (
            status,
            Json(json!({ "service": self.spec.hop.name, "message": message })),
        )
            .into_response()
    }

    /// The request's deadline, when deadlines are propagated: the gateway's own
    /// limit, or what the caller passed on less the margin.
    fn deadline(&self, arrived: Instant, headers: &HeaderMap) -> Option<Instant> {
        let margin = self.spec.hop.deadline_margin?;
        if self.spec.hop.gateway {
            return self.spec.hop.calls.first().map(|c| arrived + c.timeout);
        }
        let ms: u64 = headers.get(DEADLINE_HEADER)?.to_str().ok()?.parse().ok()?;
        Some(arrived + Duration::from_millis(ms).saturating_sub(margin))
    }

    /// Own work, the calls, the queries, the blocking work; the answer's status
    /// and message. The first call or query that fails decides the answer.
    async fn work(&self, cx: &Context, deadline: Option<Instant>) -> (StatusCode, String) {
        let hop = &self.spec.hop;
        let done = Instant::now() + hop.work;
        match deadline {
            Some(deadline) if deadline < done => {
                tokio::time::sleep_until(deadline).await;
                return (StatusCode::GATEWAY_TIMEOUT, DEADLINE_EXCEEDED.to_owned());
            }
            // No work, no yield: on a busy one-thread service, a request
            // yielding here would wait its turn before its first call.
            _ if hop.work.is_zero() => {}
            _ => tokio::time::sleep_until(done).await,
        }
        for (call, callee) in hop.calls.iter().zip(&self.spec.callees) {
            let failed = match self.call(cx, call, callee, deadline).await {
                Upstream::Answered(status) if status.is_success() => continue,
                Upstream::Answered(status) => {
                    (status, format!("{} answered {status}", call.service))
                }
                Upstream::TimedOut if hop.gateway => {
                    (StatusCode::GATEWAY_TIMEOUT, GATEWAY_TIMED_OUT.to_owned())
                }
                Upstream::TimedOut => (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("{} did not answer in time", call.service),
                ),
                Upstream::Failed(error) => (
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach {}: {}", call.service, error.replace('_', " ")),
                ),
            };
            return failed;
        }
        if let Some(db) = &self.spec.db {
            let (db, tracer, cx) = (db.clone(), self.tracer.clone(), cx.clone());
            // The pool blocks while it waits for a connection, and so do the
            // queries: off the runtime's threads.
            let queried = tokio::task::spawn_blocking(move || db.serve(&tracer, &cx)).await;
            let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, format!("database: {e}"));
            match queried {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return failed(e.to_string()),
                Err(e) => return failed(e.to_string()),
            }
        }
        if !hop.blocking.is_zero() {
            // Synchronous, on the thread serving this request: nothing else
            // that thread serves moves meanwhile.
            std::thread::sleep(hop.blocking);
        }
        (StatusCode::OK, hop.serves.answer.to_owned())
    }

    /// Calls `callee` inside a CLIENT span, with the client timeout or, if
    /// shorter, what is left of the propagated deadline.
    async fn call(
        &self,
        cx: &Context,
        call: &Call,
        callee: &Callee,
        deadline: Option<Instant>,
    ) -> Upstream {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let (timeout, timeout_message) = match left {
            Some(left) if left < call.timeout => (left, DEADLINE_EXCEEDED),
            _ => (call.timeout, TIMED_OUT),
        };
        let endpoint = &callee.endpoint;
        let url = format!("http://{}{}", callee.addr, endpoint.path);
        let span = self
            .tracer
            .span_builder(endpoint.operation())
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", endpoint.method.to_string()),
                KeyValue::new("url.full", url.clone()),
                KeyValue::new("url.template", endpoint.route),
                KeyValue::new("server.address", callee.addr.ip().to_string()),
                KeyValue::new("server.port", i64::from(callee.addr.port())),
                KeyValue::new("network.protocol.version", "1.1"),
            ])
            .start_with_context(&self.tracer, cx);
        let cx = cx.with_span(span);
        let mut headers = HeaderMap::new();
        self.propagator
            .inject_context(&cx, &mut HeaderInjector(&mut headers));
        if deadline.is_some() {
            headers.insert(
                DEADLINE_HEADER,
                HeaderValue::from(timeout.as_millis() as u64),
            );
        }
        let sent = async {
            let response = self
                .http
                .request(endpoint.method.clone(), &url)
                .headers(headers)
                .timeout(timeout)
                .send()
                .await?;
            let status = response.status();
            response.bytes().await?;
            Ok::<_, reqwest::Error>(status)
        }
        .await;
        let span = cx.span();
        let upstream = match sent {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                if status.is_client_error() || status.is_server_error() {
                    span.set_attribute(KeyValue::new("error.type", status.as_str().to_owned()));
                    span.set_status(Status::error(format!("{} answered {status}", call.service)));
                }
                Upstream::Answered(status)
            }
            Err(e) if e.is_timeout() => {
                span.set_attribute(KeyValue::new("error.type", "timeout"));
                span.set_status(Status::error(timeout_message));
                Upstream::TimedOut
            }
            Err(e) => {
                let error = error_type(&e);
                span.set_attribute(KeyValue::new("error.type", error));
                span.set_status(Status::error(error.replace('_', " ")));
                Upstream::Failed(error)
            }
        };
        span.end();
        upstream
    }
}

/// `error.type` of a call that got no answer.
fn error_type(e: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection_refused",
                std::io::ErrorKind::ConnectionReset => return "connection_reset",
                _ => {}
            }
        }
        source = err.source();
    }
    if e.is_connect() {
        "connect_error"
    } else {
        "request_error"
    }
}

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C trace context into request headers.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
