//! `hopscope-demo`: the daemon plus small instrumented services in one
//! process, a scenario's traffic through them, and what the daemon made of it.
//!
//! ```text
//!  timeouts:   user ──► gateway ──► frontend ──► orders ──► inventory
//!  pool:       user ──► gateway ──► frontend ──► orders ══► SQLite (pool of 4)
//!  slow query: user ──► gateway ──► frontend ──► catalog ═► SQLite
//!  blocked:    user ──► gateway ──► frontend ──► orders (one thread) ──► inventory
//!  mixed:      user ──► gateway ──► frontend ─┬► orders ══► SQLite (pool of 4)
//!                                             └► catalog ═► SQLite
//! ```
//!
//! Each service is an axum server with its own OpenTelemetry SDK tracer provider
//! exporting through `opentelemetry-otlp` (gRPC) to the in-process daemon
//! (`telemetry`); W3C trace context and real client timeouts connect them
//! (`services`); a service with a database queries a real SQLite file through
//! an r2d2 pool (`db`). A [`Scenario`] plans which services run and what each
//! does: timeouts, latencies, failures, databases, a service served by one
//! thread. Times are scaled by [`DemoOptions::time_scale`], so a 29 s gateway
//! timeout lasts 290 ms by default; SQL runs at its real speed.
//!
//! [`Demo::start`] starts everything, [`Demo::drive`] sends the requests, waits
//! until the daemon analyzed every trace and reads its API into a
//! [`DemoReport`], and [`Demo::stop`] stops it all (and removes the databases);
//! [`run`] does the three.
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

mod db;
mod report;
mod scenario;
mod services;
mod telemetry;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use report::DemoReport;
pub use scenario::{Scenario, POOL_SIZE};

use db::Database;
use hopscope::config::Config;
use hopscope::daemon::{self, DaemonError, Running};
use scenario::{Hop, Plan};
use services::{Callee, InFlight, Service, Spec};

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
/// Statement shapes the report lists.
const TOP_QUERIES: usize = 10;

/// What a demo run does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// What goes wrong behind the gateway.
    pub scenario: Scenario,
    /// Requests sent through the gateway (`None`: the scenario's,
    /// [`Scenario::traffic`]).
    pub requests: Option<usize>,
    /// Requests in flight at once (`None`: the scenario's).
    pub concurrency: Option<usize>,
    /// Wall-clock seconds per scenario second (0.01: the gateway's 29 s limit
    /// lasts 290 ms; 1: real durations). Greater than 0, at most 10.
    pub time_scale: f64,
    /// Whether a request waiting for a database connection records it in a
    /// `pool.acquire` span; without, the wait is only the time before its
    /// first query.
    pub acquire_spans: bool,
    /// Listen address of the daemon's HTTP API (port 0: an ephemeral port).
    pub api_addr: SocketAddr,
    /// The OTLP/gRPC endpoint the services export to, when something stands
    /// between them and the daemon (a Collector, or the scale-out test's
    /// router), which must pass every span on to the daemon's OTLP receiver
    /// ([`Demo::otlp_http_endpoint`]); `None`: straight to the daemon.
    pub export_via: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            scenario: Scenario::CascadingTimeout,
            requests: None,
            concurrency: None,
            time_scale: 0.01,
            acquire_spans: true,
            api_addr: ([127, 0, 0, 1], 0).into(),
            export_via: None,
        }
    }
}

impl DemoOptions {
    /// The requests to send.
    pub fn requests(&self) -> usize {
        self.requests.unwrap_or(self.scenario.traffic().0)
    }

    /// The requests in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(self.scenario.traffic().1)
    }

    fn plan(&self) -> Plan {
        self.scenario.plan(self.time_scale, self.concurrency())
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
    /// A demo database could not be created or filled.
    #[error("the {database} database: {message}")]
    Database {
        /// The database (its `db.namespace`).
        database: &'static str,
        /// What failed.
        message: String,
    },
    /// The directory of the demo's databases could not be created or removed.
    #[error("the demo's data directory: {0}")]
    DataDir(std::io::Error),
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
    plan: Plan,
    daemon: Running,
    services: Vec<Service>,
    in_flight: InFlight,
    stop: CancellationToken,
    http: reqwest::Client,
    api: String,
    gateway: String,
    /// Where the databases live, removed on stop.
    data: Option<tempfile::TempDir>,
}

impl Demo {
    /// Starts the daemon (OTLP/gRPC on an ephemeral port, the API on
    /// `options.api_addr`) and the services of `options.scenario`.
    pub async fn start(options: &DemoOptions) -> Result<Demo, DemoError> {
        validate(options)?;
        let plan = options.plan();
        let trace_idle = plan.trace_idle;
        let daemon = daemon::start(Config {
            otlp_grpc_addr: ([127, 0, 0, 1], 0).into(),
            otlp_http_addr: ([127, 0, 0, 1], 0).into(),
            api_addr: options.api_addr,
            jaeger_addr: ([127, 0, 0, 1], 0).into(),
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
            plan,
            api: format!("http://{}", daemon.api_addr),
            daemon,
            services: Vec::new(),
            in_flight: InFlight::new(),
            stop: CancellationToken::new(),
            http,
            gateway: String::new(),
            data: None,
        };
        if let Err(e) = demo.start_services().await {
            // Stop what did start; the first error is the one to report.
            let _ = demo.stop().await;
            return Err(e);
        }
        Ok(demo)
    }

    /// Starts the plan's services in order, each after the ones it calls, and
    /// their databases.
    async fn start_services(&mut self) -> Result<(), DemoError> {
        let mut started: HashMap<&'static str, Callee> = HashMap::new();
        for hop in self.plan.hops.clone() {
            let callees = hop
                .calls
                .iter()
                .map(|c| {
                    started.get(c.service).cloned().ok_or_else(|| {
                        DemoError::Options(format!(
                            "{} calls {}, not started before it",
                            hop.name, c.service
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let (name, endpoint) = (hop.name, hop.serves.clone());
            let addr = if hop.up {
                let db = self.database(&hop).await?;
                self.start_service(Spec { hop, callees, db }).await?
            } else {
                // Down: a port nothing listens on, so callers' connections are refused.
                std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|source| DemoError::Bind {
                        service: name,
                        source,
                    })?
            };
            started.insert(name, Callee { addr, endpoint });
        }
        let entry = started
            .get(ENTRY_SERVICE)
            .ok_or_else(|| DemoError::Options(format!("the scenario has no {ENTRY_SERVICE}")))?;
        self.gateway = format!("http://{}{}", entry.addr, entry.endpoint.path);
        Ok(())
    }

    /// Creates and fills `hop`'s database, if it has one, in the demo's data
    /// directory (created with the first database).
    async fn database(&mut self, hop: &Hop) -> Result<Option<Arc<Database>>, DemoError> {
        let Some(plan) = hop.db else {
            return Ok(None);
        };
        let dir = match &self.data {
            Some(dir) => dir.path().to_owned(),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("hopscope-demo-")
                    .tempdir()
                    .map_err(DemoError::DataDir)?;
                self.data.insert(dir).path().to_owned()
            }
        };
        let acquire_spans = self.options.acquire_spans;
        let created =
            tokio::task::spawn_blocking(move || Database::create(&dir, plan, acquire_spans))
                .await
                .map_err(|e| DemoError::Database {
                    database: plan.data.namespace(),
                    message: e.to_string(),
                })??;
        Ok(Some(Arc::new(created)))
    }

    async fn start_service(&mut self, spec: Spec) -> Result<SocketAddr, DemoError> {
        let endpoint = match &self.options.export_via {
            Some(via) => via.clone(),
            None => format!("http://{}", self.daemon.otlp_grpc_addr),
        };
        let service = Service::start(
            spec,
            &endpoint,
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

    /// The daemon's OTLP/HTTP receiver, `http://host:port`.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}", self.daemon.otlp_http_addr)
    }

    /// The URL the requests are sent to (the gateway's `GET /checkout`).
    pub fn gateway_url(&self) -> &str {
        &self.gateway
    }

    /// The temporary directory holding the scenario's SQLite databases, if it
    /// has any; [`Demo::stop`] removes it.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data.as_ref().map(tempfile::TempDir::path)
    }

    /// Sends the requests, waits until every service finished its work, every
    /// span was exported and the daemon analyzed every trace, and reads the
    /// entry point's hops, the findings and the statement shapes from the
    /// daemon's API.
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
        let findings = self.get_ok("/api/v1/findings").await?;
        let queries = self
            .get_ok(&format!("/api/v1/queries?limit={TOP_QUERIES}"))
            .await?;
        Ok(DemoReport {
            scenario: o.scenario,
            requests: o.requests(),
            concurrency: o.concurrency(),
            time_scale: o.time_scale,
            acquire_spans: o.acquire_spans,
            elapsed,
            outcomes,
            failed,
            spans_exported,
            entry,
            hops: hops["entries"].get(0).cloned().unwrap_or(Value::Null),
            findings,
            queries,
            api: self.api.clone(),
        })
    }

    /// `requests` GETs of the gateway, `concurrency` at a time: how many got
    /// each status, and how many got no answer.
    async fn send_requests(&self) -> (BTreeMap<u16, usize>, usize) {
        let (requests, concurrency) = (self.options.requests(), self.options.concurrency());
        // The user waits longer than anyone behind the gateway does.
        let patience = self.plan.longest_timeout() * 2 + Duration::from_secs(1);
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = JoinSet::new();
        for _ in 0..concurrency.min(requests) {
            let (next, http, url) = (next.clone(), self.http.clone(), self.gateway.clone());
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
        let limit = self.plan.trace_idle + ANALYSIS_TIMEOUT;
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

    /// GETs an API path that must answer 200; its JSON body.
    async fn get_ok(&self, path: &str) -> Result<Value, DemoError> {
        let (status, body) = self.get(path).await?;
        if status != 200 {
            return Err(DemoError::Api {
                url: format!("{}{path}", self.api),
                message: format!("answered {status}: {body}"),
            });
        }
        Ok(body)
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

    /// Stops the services (exporting their last spans; their database pools
    /// close), removes the databases, then stops the daemon (which analyzes
    /// what is buffered).
    pub async fn stop(self) -> Result<(), DemoError> {
        self.stop.cancel();
        let mut first_error = None;
        for service in self.services {
            if let Err(e) = service.stop().await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(dir) = self.data {
            if let Err(e) = dir.close() {
                first_error.get_or_insert(DemoError::DataDir(e));
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
    if o.requests() == 0 {
        return invalid("requests must be at least 1");
    }
    if o.concurrency() == 0 {
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
