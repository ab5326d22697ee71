//! The `hopscope-loadgen` command line: its flags (what `main.rs` runs).

use std::path::PathBuf;

use clap::Parser;
use hopscope::config::HumanDuration;
use hopscope_loadgen::{self as loadgen, Protocol, Shape, Until};

/// Send realistic traces over OTLP and report accepted and refused spans/s,
/// export latency, the daemon's CPU time and memory, its spans per CPU-second
/// against raw prost decoding, and API latency under load. Exits non-zero if
/// the daemon refused or lost spans, did not finish analyzing, or an API
/// probe failed.
#[derive(Parser)]
#[command(name = "hopscope-loadgen", version)]
pub struct LoadgenArgs {
    /// OTLP receiver to send to [default: http://127.0.0.1:4317 for grpc,
    /// http://127.0.0.1:4318 for http]
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// OTLP over gRPC, or over HTTP/1.1 (protobuf bodies POSTed to /v1/traces)
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,

    /// Concurrent connections, each with one export in flight
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub connections: usize,

    /// Spans per export request, rounded up to whole traces (the SDK batch
    /// processor's default is 512)
    #[arg(long, value_name = "SPANS", default_value_t = 512)]
    pub batch: usize,

    /// Target rate over all connections [default: as fast as the daemon
    /// answers; with --soak, half of its capacity measured first]
    #[arg(long, value_name = "SPANS_PER_SEC")]
    pub rate: Option<f64>,

    /// How long to send [default: 10s unless --spans is given; 60m with --soak]
    #[arg(long, value_name = "DURATION", conflicts_with = "spans")]
    pub duration: Option<HumanDuration>,

    /// Send this many spans (in whole requests, so a little more), then stop
    #[arg(long, value_name = "N")]
    pub spans: Option<u64>,

    /// Compress each request with gzip
    #[arg(long)]
    pub gzip: bool,

    /// Services the traces visit; the first is the entry point
    #[arg(long, value_name = "N", default_value_t = Shape::default().services)]
    pub services: usize,

    /// Levels of service calls below the entry span (1 to 8)
    #[arg(long, value_name = "N", default_value_t = Shape::default().depth)]
    pub depth: usize,

    /// Downstream calls per service above the deepest level (1 to 16); a trace
    /// has 1 + 3 × (f + f² + ... + f^depth) spans, one more with --entry-query
    #[arg(long, value_name = "N", default_value_t = Shape::default().fan_out)]
    pub fan_out: usize,

    /// Fraction of traces whose deepest call times out, failing every caller above
    #[arg(long, value_name = "F", default_value_t = Shape::default().error_fraction)]
    pub error_fraction: f64,

    /// Fraction of traces with one slow database call (500 ms to 2 s)
    #[arg(long, value_name = "F", default_value_t = Shape::default().slow_db_fraction)]
    pub slow_db_fraction: f64,

    /// Replicas of each service, each its own service.instance.id; every
    /// request carries one replica per service
    #[arg(long, value_name = "N", default_value_t = Shape::default().instances)]
    pub instances: usize,

    /// The entry span makes a database query of its own before its calls (one
    /// span more per trace: `--depth 1 --fan-out 2 --entry-query --batch 512`
    /// is 64 traces of 8 spans per request, the load docs/PERFORMANCE.md
    /// compares with other receivers)
    #[arg(long)]
    pub entry_query: bool,

    /// Seed of the generated traces and ids
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Retries of a request refused as retryable (UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// HTTP 429/503, ...), with exponential backoff from 50 ms
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// The daemon's pid: report the CPU seconds it used during the run and its
    /// peak and current RSS, from /proc
    #[arg(long, value_name = "PID")]
    pub daemon_pid: Option<u32>,

    /// The daemon's HTTP API (e.g. http://127.0.0.1:9980): fail if its
    /// spans_accepted counter grew less than the spans it acknowledged
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,

    /// After sending, wait until the daemon has analyzed every trace (its
    /// buffered_spans and analysis_pending are 0) and report its CPU time for
    /// ingest plus analysis
    #[arg(long, requires_all = ["api", "daemon_pid"])]
    pub wait_analysis: bool,

    /// Give up --wait-analysis (and fail) after this long; it must cover the
    /// daemon's --trace-idle (10s by default) plus its analysis time
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        requires = "wait_analysis"
    )]
    pub wait_timeout: HumanDuration,

    /// Before sending, time raw prost decoding of the run's requests on one
    /// thread for this long: the ratio's denominator [default: 1s with
    /// --daemon-pid, otherwise none; 0s: none]
    #[arg(long, value_name = "DURATION")]
    pub decode_baseline: Option<HumanDuration>,

    /// While sending, GET this API path (with its query, e.g.
    /// '/api/v1/hops?since=5m') every --probe-interval on a connection of its
    /// own, and report its latency; repeatable
    #[arg(long, value_name = "PATH", requires = "api")]
    pub probe_api: Vec<String>,

    /// Interval between the requests of each --probe-api
    #[arg(long, value_name = "DURATION", default_value = "50ms")]
    pub probe_interval: HumanDuration,

    /// Exit zero even if the daemon refused spans (lost spans still fail)
    #[arg(long)]
    pub allow_refused: bool,

    /// No progress line every second on stderr
    #[arg(long)]
    pub quiet: bool,

    /// Soak test: start `hopscope serve` (--daemon, its defaults, the
    /// write-ahead log in a temporary data directory), measure its capacity
    /// flat out (unless --rate), send at half of it for --duration, print a
    /// row of measurements every --report-every, and fail if RSS grows after
    /// --warm-up by more than 10 % + 16 MiB or exceeds --memory-limit-mib, if
    /// any span is dropped or refused, or if the findings change
    #[arg(
        long,
        conflicts_with_all = [
            "endpoint", "spans", "daemon_pid", "api", "wait_analysis",
            "decode_baseline", "probe_api", "allow_refused",
        ]
    )]
    pub soak: bool,

    /// With --soak: the `hopscope` binary whose `serve` is soaked [default:
    /// `hopscope` next to this binary, as `cargo build --workspace` leaves it]
    #[arg(long, value_name = "PATH", requires = "soak")]
    pub daemon: Option<PathBuf>,

    /// With --soak: one row per this long
    #[arg(long, value_name = "DURATION", default_value = "1m", requires = "soak")]
    pub report_every: HumanDuration,

    /// With --soak: the rows after which RSS must plateau and the findings
    /// stay as they are [default: a quarter of --duration]
    #[arg(long, value_name = "DURATION", requires = "soak")]
    pub warm_up: Option<HumanDuration>,

    /// With --soak and no --rate: how long capacity is measured flat out
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "soak"
    )]
    pub capacity_for: HumanDuration,

    /// With --soak: the daemon's --memory-limit-mib, which its RSS must stay
    /// under
    #[arg(long, value_name = "MIB", default_value_t = 512, requires = "soak")]
    pub memory_limit_mib: usize,

    /// With --soak: also write the rows to this CSV file
    #[arg(long, value_name = "FILE", requires = "soak")]
    pub out: Option<PathBuf>,
}

impl LoadgenArgs {
    /// The load these flags describe.
    pub fn options(&self) -> loadgen::Options {
        let endpoint = self.endpoint.clone().unwrap_or_else(|| {
            match self.protocol {
                Protocol::Grpc => "http://127.0.0.1:4317",
                Protocol::Http => "http://127.0.0.1:4318",
            }
            .to_owned()
        });
        let until = match (self.spans, self.duration) {
            (Some(spans), _) => Until::Spans(spans),
            (None, Some(HumanDuration(d))) => Until::Elapsed(d),
            (None, None) => Until::Elapsed(std::time::Duration::from_secs(if self.soak {
                3600
            } else {
                10
            })),
        };
        loadgen::Options {
            endpoint,
            protocol: self.protocol,
            connections: self.connections,
            batch: self.batch,
            rate: self.rate,
            until,
            gzip: self.gzip,
            shape: Shape {
                services: self.services,
                depth: self.depth,
                fan_out: self.fan_out,
                error_fraction: self.error_fraction,
                slow_db_fraction: self.slow_db_fraction,
                instances: self.instances,
                entry_query: self.entry_query,
            },
            seed: self.seed,
            retries: self.retries,
            daemon_pid: self.daemon_pid,
            api: self.api.clone(),
            decode_baseline: match self.decode_baseline {
                Some(HumanDuration(d)) => Some(d).filter(|d| !d.is_zero()),
                None => self.daemon_pid.map(|_| std::time::Duration::from_secs(1)),
            },
            wait_analysis: self.wait_analysis.then_some(self.wait_timeout.0),
            probe_api: self.probe_api.clone(),
            probe_interval: self.probe_interval.0,
        }
    }
}
