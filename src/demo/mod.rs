//! `hopscope demo`: the daemon plus four small instrumented services in one
//! process, a scenario's traffic through them, and what the daemon made of it.
//!
//! ```text
//!  user ──► gateway ───────► frontend ──────► orders ────────► inventory
//!           GET /checkout     GET /checkout     POST /orders      GET /stock/{sku}
//! ```
//!
//! Each service is an axum server with its own OpenTelemetry SDK tracer provider
//! exporting through `opentelemetry-otlp` (gRPC) to the in-process daemon
//! (`telemetry`); W3C trace context and real client timeouts connect them
//! (`services`). A [`Scenario`] sets the timeouts, inventory's latency,
//! deadline propagation and failures. Times are scaled by
//! [`DemoOptions::time_scale`], so a 29 s gateway timeout lasts 290 ms by default.
//!
//! [`Demo::start`] starts everything, [`Demo::drive`] sends the requests, waits
//! until the daemon analyzed every trace and reads its API into a
//! [`DemoReport`], and [`Demo::stop`] stops it all; [`run`] does the three.

mod report;
mod scenario;
mod services;
mod telemetry;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use report::DemoReport;
pub use scenario::Scenario;

use crate::config::Config;
use crate::daemon::{self, DaemonError, Running};
use scenario::{Plan, DEADLINE_MARGIN, FRONTEND_WORK, GATEWAY_WORK, ORDERS_WORK, TRACE_IDLE};
use services::{Call, InFlight, Service, Spec};

/// The entry point's service: every request enters through it.
const ENTRY_SERVICE: &str = "gateway";
/// How often the daemon's counters are read while waiting for analysis.
const POLL: Duration = Duration::from_millis(50);
/// How often the demo's daemon runs its cross-trace detectors.
const DETECT_INTERVAL: Duration = Duration::from_millis(200);
/// How long the daemon may take to analyze, beyond its trace idle time.
const ANALYSIS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one API request may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// What a demo run does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// What goes wrong behind the gateway.
    pub scenario: Scenario,
    /// Requests sent through the gateway.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Wall-clock seconds per scenario second (0.01: the gateway's 29 s limit
    /// lasts 290 ms; 1: real durations). Greater than 0, at most 10.
    pub time_scale: f64,
    /// Listen address of the daemon's HTTP API (port 0: an ephemeral port).
    pub api_addr: SocketAddr,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: Scenario::CascadingTimeout,
            requests: 40,
            concurrency: 4,
            time_scale: 0.01,
            api_addr: ([127, 0, 0, 1], 0).into(),
        }
    }
}

impl DemoOptions {
    /// Scenario time in wall-clock time.
    fn units(&self, units: f64) -> Duration {
        Duration::from_secs_f64(units * self.time_scale)
    }

    /// The daemon's trace idle time: `TRACE_IDLE` units, at least 500 ms.
    fn trace_idle(&self) -> Duration {
        self.units(TRACE_IDLE).max(Duration::from_millis(500))
    }
}

/// Why a demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The options make no sense (zero requests, a negative time scale...).
    #[error("invalid demo options: {0}")]
    Options(String),
    /// The in-process daemon did not start or stop cleanly.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A service could not listen.
    #[error("cannot listen for the {service} service: {source}")]
    Bind {
        /// The service.
        service: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A service's server failed.
    #[error("the {service} service failed: {message}")]
    Server {
        /// The service.
        service: &'static str,
        /// What failed.
        message: String,
    },
    /// A service's OTLP exporter could not be built.
    #[error("cannot build the OTLP exporter of {service}: {message}")]
    Exporter {
        /// The service.
        service: &'static str,
        /// Why.
        message: String,
    },
    /// Exporting a service's spans to the daemon failed.
    #[error("exporting the spans of {service} failed: {message}")]
    Export {
        /// The service.
        service: &'static str,
        /// The first failure.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    /// The daemon's API failed to answer as expected.
    #[error("the daemon's API failed on {url}: {message}")]
    Api {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon did not analyze everything in time.
    #[error("the daemon did not finish analyzing within {0:?}; last counters: {1}")]
    AnalysisTimeout(Duration, Value),
}

/// A started demo: the daemon and the services, ready for traffic.
pub struct Demo {
    options: DemoOptions,
    daemon: Running,
    services: Vec<Service>,
    in_flight: InFlight,
    stop: CancellationToken,
    http: reqwest::Client,
    api: String,
    gateway: String,
}

impl Demo {
    /// Starts the daemon (OTLP/gRPC on an ephemeral port, the API on
    /// `options.api_addr`) and the services of `options.scenario`.
    pub async fn start(options: &DemoOptions) -> Result<Demo, DemoError> {
        validate(options)?;
        let plan = options.scenario.plan();
        let trace_idle = options.trace_idle();
        let daemon = daemon::start(Config {
            otlp_grpc_addr: ([127, 0, 0, 1], 0).into(),
            otlp_http_addr: ([127, 0, 0, 1], 0).into(),
            api_addr: options.api_addr,
            trace_idle,
            trace_max_age: (trace_idle * 4).max(Config::default().trace_max_age),
            // The cross-trace detectors run soon after the last trace is analyzed.
            detect_interval: DETECT_INTERVAL,
            ..Config::default()
        })
        .await?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(DemoError::Client)?;
        let mut demo = Demo {
            options: options.clone(),
            api: format!("http://{}", daemon.api_addr),
            daemon,
            services: Vec::new(),
            in_flight: InFlight::new(),
            stop: CancellationToken::new(),
            http,
            gateway: String::new(),
        };
        if let Err(e) = demo.start_services(&plan).await {
            // Stop what did start; the first error is the one to report.
            let _ = demo.stop().await;
            return Err(e);
        }
        Ok(demo)
    }

    /// Starts inventory, orders, frontend and the gateway, each calling the one
    /// started before it.
    async fn start_services(&mut self, plan: &Plan) -> Result<(), DemoError> {
        let o = self.options.clone();
        let margin = plan.propagate_deadlines.then(|| o.units(DEADLINE_MARGIN));
        let inventory = if plan.inventory_up {
            let spec = Spec {
                name: "inventory",
                serves: services::stock(),
                work: o.units(plan.inventory_work),
                call: None,
                gateway: false,
                deadline_margin: margin,
            };
            self.start_service(spec).await?
        } else {
            // Down: a port nothing listens on, so orders' connection is refused.
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|source| DemoError::Bind {
                    service: "inventory",
                    source,
                })?
        };
        let orders = self
            .start_service(Spec {
                name: "orders",
                serves: services::orders(),
                work: o.units(ORDERS_WORK),
                call: Some(Call {
                    service: "inventory",
                    target: inventory,
                    endpoint: services::stock(),
                    timeout: o.units(plan.orders_timeout),
                }),
                gateway: false,
                deadline_margin: margin,
            })
            .await?;
        let frontend = self
            .start_service(Spec {
                name: "frontend",
                serves: services::checkout(),
                work: o.units(FRONTEND_WORK),
                call: Some(Call {
                    service: "orders",
                    target: orders,
                    endpoint: services::orders(),
                    timeout: o.units(plan.frontend_timeout),
                }),
                gateway: false,
                deadline_margin: margin,
            })
            .await?;
        let gateway = self
            .start_service(Spec {
                name: ENTRY_SERVICE,
                serves: services::checkout(),
                work: o.units(GATEWAY_WORK),
                call: Some(Call {
                    service: "frontend",
                    target: frontend,
                    endpoint: services::checkout(),
                    timeout: o.units(plan.gateway_timeout),
                }),
                gateway: true,
                deadline_margin: margin,
            })
            .await?;
        self.gateway = format!("http://{gateway}{}", services::checkout().path);
        Ok(())
    }

    async fn start_service(&mut self, spec: Spec) -> Result<SocketAddr, DemoError> {
        let service = Service::start(
            spec,
            &format!("http://{}", self.daemon.otlp_grpc_addr),
            self.http.clone(),
            self.in_flight.clone(),
            self.stop.clone(),
        )
        .await?;
        let addr = service.addr;
        self.services.push(service);
        Ok(addr)
    }

    /// The daemon's HTTP API, `http://host:port`.
    pub fn api_url(&self) -> &str {
        &self.api
    }

    /// The URL the requests are sent to (the gateway's `GET /checkout`).
    pub fn gateway_url(&self) -> &str {
        &self.gateway
    }

    /// Sends the requests, waits until every service finished its work, every
    /// span was exported and the daemon analyzed every trace, and reads the
    /// entry point's hops and the findings from the daemon's API.
    pub async fn drive(&self) -> Result<DemoReport, DemoError> {
        let o = &self.options;
        let started = Instant::now();
        let (outcomes, failed) = self.send_requests().await;
        let elapsed = started.elapsed();
        // A slow callee may still be working after its caller gave up.
        self.in_flight.idle().await;
        let mut spans_exported = 0;
        for service in &self.services {
            spans_exported += service.telemetry.flush().await?;
        }
        self.wait_analysis(spans_exported).await?;
        let entry = format!("{ENTRY_SERVICE}:{}", services::checkout().operation());
        let hops = self
            .get(&format!("/api/v1/hops?entry={}", entry.replace(' ', "%20")))
            .await?
            .1;
        let (status, findings) = self.get("/api/v1/findings").await?;
        if status != 200 {
            return Err(DemoError::Api {
                url: format!("{}/api/v1/findings", self.api),
                message: format!("answered {status}: {findings}"),
            });
        }
        Ok(DemoReport {
            scenario: o.scenario,
            requests: o.requests,
            concurrency: o.concurrency,
            time_scale: o.time_scale,
            elapsed,
            outcomes,
            failed,
            spans_exported,
            entry,
            hops: hops["entries"].get(0).cloned().unwrap_or(Value::Null),
            findings,
            api: self.api.clone(),
        })
    }

    /// `requests` GETs of the gateway, `concurrency` at a time: how many got
    /// each status, and how many got no answer.
    async fn send_requests(&self) -> (BTreeMap<u16, usize>, usize) {
        let o = &self.options;
        let plan = o.scenario.plan();
        // The user waits longer than the gateway does.
        let patience = o.units(plan.gateway_timeout) * 2 + Duration::from_secs(1);
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..o.concurrency.min(o.requests) {
            let (next, http, url, requests) = (
                next.clone(),
                self.http.clone(),
                self.gateway.clone(),
                o.requests,
            );
            workers.spawn(async move {
                let mut got = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let answer = async {
                        let response = http.get(&url).timeout(patience).send().await?;
                        let status = response.status().as_u16();
                        response.bytes().await?;
                        Ok::<_, reqwest::Error>(status)
                    };
                    got.push(answer.await.ok());
                }
                got
            });
        }
        let mut outcomes = BTreeMap::new();
        let mut failed = 0;
        while let Some(done) = workers.join_next().await {
            for status in done.unwrap_or_default() {
                match status {
                    Some(status) => *outcomes.entry(status).or_insert(0) += 1,
                    None => failed += 1,
                }
            }
        }
        (outcomes, failed)
    }

    /// Polls the daemon's counters until it accepted every exported span and
    /// has nothing buffered or being analyzed.
    async fn wait_analysis(&self, spans_exported: u64) -> Result<(), DemoError> {
        let limit = self.options.trace_idle() + ANALYSIS_TIMEOUT;
        let deadline = Instant::now() + limit;
        loop {
            let (_, stats) = self.get("/api/v1/stats").await?;
            let done = stats["counters"]["spans_accepted"].as_u64() >= Some(spans_exported)
                && stats["buffered_spans"] == 0
                && stats["analysis_pending"] == 0
                && stats["detectors_current"] == true;
            if done {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DemoError::AnalysisTimeout(limit, stats));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// GETs an API path; its status and JSON body.
    async fn get(&self, path: &str) -> Result<(u16, Value), DemoError> {
        let url = format!("{}{path}", self.api);
        let failed = |e: reqwest::Error| DemoError::Api {
            url: url.clone(),
            message: e.to_string(),
        };
        let response = self
            .http
            .get(&url)
            .timeout(API_TIMEOUT)
            .send()
            .await
            .map_err(failed)?;
        let status = response.status().as_u16();
        let body = response.json().await.map_err(failed)?;
        Ok((status, body))
    }

    /// Stops the services (exporting their last spans), then the daemon (which
    /// analyzes what is buffered).
    pub async fn stop(self) -> Result<(), DemoError> {
        self.stop.cancel();
        let mut first_error = None;
        for service in self.services {
            if let Err(e) = service.stop().await {
                first_error.get_or_insert(e);
            }
        }
        self.daemon.shutdown();
        if let Err(e) = self.daemon.wait().await {
            first_error.get_or_insert(e.into());
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn validate(o: &DemoOptions) -> Result<(), DemoError> {
    let invalid = |m: &str| Err(DemoError::Options(m.to_owned()));
    if o.requests == 0 {
        return invalid("requests must be at least 1");
    }
    if o.concurrency == 0 {
        return invalid("concurrency must be at least 1");
    }
    if !(o.time_scale > 0.0 && o.time_scale <= 10.0) {
        return invalid("time scale must be greater than 0 and at most 10");
    }
    Ok(())
}

/// Starts a demo, drives its traffic, stops it, and returns what it found.
pub async fn run(options: &DemoOptions) -> Result<DemoReport, DemoError> {
    let demo = Demo::start(options).await?;
    let report = demo.drive().await;
    let stopped = demo.stop().await;
    let report = report?;
    stopped?;
    Ok(report)
}
