//! `hopscope-loadgen`: realistic OTLP traffic against a daemon, and what it cost.
//!
//! * [`generate`]: a deterministic [`Generator`] of realistic traces of a
//!   configurable [`Shape`] (also used by the pipeline benchmark).
//! * `template`: requests encoded once and stamped with fresh ids and "now"
//!   timestamps for each send, so the load generator costs little CPU.
//! * `send`: N connections (one HTTP/2 or HTTP/1.1 connection each, one request
//!   in flight), flat out or paced to a rate, retrying retryable refusals.
//! * `baseline`: how fast prost alone decodes the run's requests on one core,
//!   timed before sending: what the daemon's spans per CPU-second are compared
//!   with.
//! * `probe`: the daemon's CPU time and memory from `/proc`; its counters from
//!   its HTTP API (to detect spans acknowledged but lost, and to wait until
//!   everything sent was analyzed); the latency of API requests during the run.
//! * [`report`]: what [`run`] measured, printable, and the [`Problem`]s that
//!   should fail a load test.
//! * [`mod@soak`]: hours at half of the daemon's capacity with one row of
//!   measurements per interval and a [`Verdict`] on whether it held steady;
//!   `child` runs the daemon it soaks.
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

mod baseline;
mod child;
pub mod generate;
mod probe;
pub mod report;
mod send;
pub mod soak;
mod template;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use baseline::DecodeBaseline;
pub use generate::{Generator, Shape, ShapeError};
pub use probe::{AnalysisWait, ApiLatency, DaemonUsage};
pub use report::{Latency, Problem, Progress, Ratio, Report};
pub use soak::{soak, Row, SoakEvent, SoakOptions, SoakProblem, SoakReport, Verdict};

use generate::Rng;
use probe::ApiClient;
use send::{Counters, Plan};
use template::Template;

/// How much memory the request templates may take (fewer, larger requests
/// repeat sooner; their ids and times are always new).
const TEMPLATE_BUDGET_BYTES: usize = 32 << 20;
/// Distinct templates at least and at most (when the run needs that many).
const TEMPLATES: (usize, usize) = (4, 1024);

/// The wire protocol of the exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/gRPC: `TraceService/Export` over HTTP/2.
    Grpc,
    /// OTLP/HTTP: protobuf bodies posted to `/v1/traces` over HTTP/1.1.
    Http,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "OTLP/gRPC",
            Protocol::Http => "OTLP/HTTP",
        })
    }
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// After this long (requests in flight then still complete).
    Elapsed(Duration),
    /// Once at least this many spans were sent (in whole requests).
    Spans(u64),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host:port` of the daemon's OTLP receiver (for OTLP/HTTP, a
    /// trailing `/v1/traces` is added unless present).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// Spans per request, rounded up to whole traces.
    pub batch: usize,
    /// Target spans per second over all connections; `None` is flat out.
    pub rate: Option<f64>,
    pub until: Until,
    /// gzip every request.
    pub gzip: bool,
    pub shape: Shape,
    /// Seeds the traces and their ids.
    pub seed: u64,
    /// How often a request refused as retryable is sent again before its spans
    /// are given up.
    pub retries: u32,
    /// The daemon's process, to measure its CPU time and memory from `/proc`.
    pub daemon_pid: Option<u32>,
    /// The daemon's HTTP API (`http://host:port`), to compare its
    /// `spans_accepted` counter with what it acknowledged.
    pub api: Option<String>,
    /// Before connecting, time raw prost decoding of the run's requests on one
    /// thread for at least this long; `None`: no baseline.
    pub decode_baseline: Option<Duration>,
    /// After sending, wait at most this long for the daemon to have analyzed
    /// everything, and measure its CPU time until then (needs `api` and
    /// `daemon_pid`); `None`: do not wait.
    pub wait_analysis: Option<Duration>,
    /// API paths, with their query (`/api/v1/hops?since=5m`), to GET from `api`
    /// every `probe_interval` while sending, each on its own connection.
    pub probe_api: Vec<String>,
    /// Between the GETs of each probe (longer when an answer takes longer).
    pub probe_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            endpoint: "http://127.0.0.1:4317".into(),
            protocol: Protocol::Grpc,
            connections: 4,
            batch: 512,
            rate: None,
            until: Until::Elapsed(Duration::from_secs(10)),
            gzip: false,
            shape: Shape::default(),
            seed: 1,
            retries: 5,
            daemon_pid: None,
            api: None,
            decode_baseline: None,
            wait_analysis: None,
            probe_api: Vec::new(),
            probe_interval: Duration::from_millis(50),
        }
    }
}

/// Why a run could not be made or measured.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Shape(#[from] ShapeError),
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("cannot read /proc/{pid}/{file} (is the daemon's pid right?): {source}")]
    Proc {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("cannot use the daemon's API at {url}: {message}")]
    Api { url: String, message: String },
    /// The daemon a soak runs could not be started, stopped or measured.
    #[error("the soaked daemon: {0}")]
    Daemon(String),
}

impl Options {
    fn validate(&self) -> Result<(), LoadgenError> {
        let invalid = |m: String| Err(LoadgenError::Invalid(m));
        if !(1..=1024).contains(&self.connections) {
            return invalid(format!(
                "connections must be within 1 and 1024, not {}",
                self.connections
            ));
        }
        if !(1..=1_000_000).contains(&self.batch) {
            return invalid(format!(
                "batch must be within 1 and 1000000 spans, not {}",
                self.batch
            ));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid(format!(
                    "rate must be a positive number of spans per second, not {rate}"
                ));
            }
        }
        match self.until {
            Until::Elapsed(d) if d.is_zero() => invalid("duration must be more than zero".into()),
            Until::Spans(0) => invalid("spans must be more than zero".into()),
            _ => Ok(()),
        }?;
        if let Some(timeout) = self.wait_analysis {
            if self.api.is_none() || self.daemon_pid.is_none() {
                return invalid("waiting for analysis needs the daemon's API and pid".into());
            }
            if timeout.is_zero() {
                return invalid("the analysis wait's timeout must be more than zero".into());
            }
        }
        if !self.probe_api.is_empty() {
            if self.api.is_none() {
                return invalid("probing API latency needs the daemon's API".into());
            }
            if self.probe_interval.is_zero() {
                return invalid("the probe interval must be more than zero".into());
            }
        }
        for path in &self.probe_api {
            let valid = path.starts_with('/')
                && path
                    .parse::<hyper::Uri>()
                    .is_ok_and(|u| u.scheme().is_none() && u.authority().is_none());
            if !valid {
                return invalid(format!(
                    "API probe `{path}` is not a path like /api/v1/hops?since=5m"
                ));
            }
        }
        self.shape.validate()?;
        Ok(())
    }
}

/// Runs a load test: generates the requests, connects, sends until `opts.until`,
/// and measures. `progress` is called about every second with the rates of the
/// last second. Spans refused or lost are in the [`Report`] (see
/// [`Report::problems`]); an error means the run could not be made or measured.
pub async fn run(
    opts: &Options,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, LoadgenError> {
    opts.validate()?;
    let gen = Generator::new(opts.seed, opts.shape.clone())?;
    let spans_per_trace = gen.spans_per_trace();
    let (batch, until, at_least) = (opts.batch, opts.until, opts.decode_baseline);
    // Before anything else runs, so that the baseline has its core to itself.
    let (templates, decode) = tokio::task::spawn_blocking(move || {
        let templates = templates(gen, batch, until);
        let decode = at_least.map(|d| baseline::measure(&templates, d));
        (templates, decode)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let spans_per_request = templates[0].spans();

    let mut api = match &opts.api {
        Some(url) => Some(ApiClient::connect(url).await?),
        None => None,
    };
    let api_before = match &mut api {
        Some(api) => Some(api.spans_accepted().await?),
        None => None,
    };
    let mut probe_clients = Vec::with_capacity(opts.probe_api.len());
    if let Some(url) = &opts.api {
        for _ in &opts.probe_api {
            probe_clients.push(ApiClient::connect(url).await?);
        }
    }
    let cpu_before = opts.daemon_pid.map(probe::CpuSample::read).transpose()?;
    let mut senders = Senders::start(opts, templates).await?;
    let start = senders.plan.start;
    let stop_probes = CancellationToken::new();
    // Should the run end early (an error), the probes end with it.
    let _stop_probes_on_return = stop_probes.clone().drop_guard();
    let probes: Vec<_> = probe_clients
        .into_iter()
        .zip(&opts.probe_api)
        .map(|(client, path)| {
            tokio::spawn(probe::measure_latency(
                client,
                path.clone(),
                opts.probe_interval,
                stop_probes.clone(),
            ))
        })
        .collect();
    let second = Duration::from_secs(1);
    let mut last = (start, senders.plan.counters.snapshot());
    while !senders.run_until(last.0 + second).await {
        let now = (Instant::now(), senders.plan.counters.snapshot());
        progress(&Progress::between(start, &last, &now));
        last = now;
    }
    let elapsed = start.elapsed();
    let daemon = cpu_before.map(|before| before.usage()).transpose()?;
    stop_probes.cancel();

    let mut api_latency = Vec::with_capacity(probes.len());
    for probe in probes {
        api_latency.push(
            probe
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        );
    }
    let daemon_accepted = match (&mut api, api_before) {
        (Some(api), Some(before)) => Some(api.spans_accepted().await?.saturating_sub(before)),
        _ => None,
    };
    let analysis = match (opts.wait_analysis, &mut api, cpu_before) {
        (Some(timeout), Some(api), Some(since)) => {
            Some(probe::wait_for_analysis(api, since, timeout).await?)
        }
        _ => None,
    };
    let totals = senders.plan.counters.snapshot();
    let latencies = senders.plan.take_latencies();
    let failures = senders.failures();
    Ok(Report {
        protocol: opts.protocol,
        endpoint: opts.endpoint.clone(),
        connections: opts.connections,
        gzip: opts.gzip,
        rate: opts.rate,
        spans_per_request,
        spans_per_trace,
        elapsed,
        requests: totals.requests,
        sent: totals.sent,
        accepted: totals.accepted,
        refused: totals.refused,
        retries: totals.retries,
        given_up: totals.given_up,
        failures,
        latency: Latency::of(latencies),
        daemon,
        daemon_accepted,
        analysis,
        decode,
        api_latency,
    })
}

/// One task per connection sending the requests of one [`Plan`].
struct Senders {
    plan: Arc<Plan>,
    tasks: JoinSet<send::Finished>,
    done: Vec<send::Finished>,
}

impl Senders {
    /// Opens `opts.connections` connections and starts sending `templates`
    /// on them now, until `opts.until`, at `opts.rate`.
    async fn start(opts: &Options, templates: Vec<Template>) -> Result<Senders, LoadgenError> {
        let spans_per_request = templates[0].spans();
        let mut transports = Vec::with_capacity(opts.connections);
        for _ in 0..opts.connections {
            transports.push(send::connect(opts).await?);
        }
        let start = Instant::now();
        let plan = Arc::new(Plan {
            templates: templates.into(),
            start,
            deadline: match opts.until {
                Until::Elapsed(d) => Some(start + d),
                Until::Spans(_) => None,
            },
            max_requests: match opts.until {
                Until::Spans(n) => Some(n.div_ceil(spans_per_request)),
                Until::Elapsed(_) => None,
            },
            rate: opts.rate,
            retries: opts.retries,
            next_request: Default::default(),
            counters: Counters::default(),
            latencies: Default::default(),
        });
        let mut tasks = JoinSet::new();
        for (i, transport) in transports.into_iter().enumerate() {
            let rng = Rng::new(opts.seed ^ (0x5eed_0000 + i as u64));
            tasks.spawn(send::drive(transport, plan.clone(), rng));
        }
        Ok(Senders {
            done: Vec::with_capacity(opts.connections),
            plan,
            tasks,
        })
    }

    /// Waits until `at`, or less when every connection finishes first:
    /// whether they all have.
    async fn run_until(&mut self, at: Instant) -> bool {
        let deadline = tokio::time::sleep_until(at);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                finished = self.tasks.join_next() => match finished {
                    Some(finished) => self.done.push(
                        finished.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                    ),
                    None => return true,
                },
                _ = &mut deadline => return self.tasks.is_empty(),
            }
        }
    }

    /// Failed attempts of the finished connections, by code.
    fn failures(&self) -> std::collections::BTreeMap<String, u64> {
        let mut failures = std::collections::BTreeMap::new();
        for connection in &self.done {
            for (code, n) in &connection.failures {
                *failures.entry(code.clone()).or_insert(0) += n;
            }
        }
        failures
    }
}

/// The requests to cycle through: as many as the budget allows, no more than
/// the run sends.
fn templates(mut gen: Generator, batch: usize, until: Until) -> Vec<Template> {
    let first = Template::generate(&mut gen, batch);
    let affordable = (TEMPLATE_BUDGET_BYTES / first.len().max(1)).clamp(TEMPLATES.0, TEMPLATES.1);
    let needed = match until {
        Until::Spans(n) => usize::try_from(n.div_ceil(first.spans())).unwrap_or(usize::MAX),
        Until::Elapsed(_) => usize::MAX,
    };
    let count = affordable.min(needed).max(1);
    let mut out = Vec::with_capacity(count);
    out.push(first);
    while out.len() < count {
        out.push(Template::generate(&mut gen, batch));
    }
    out
}
