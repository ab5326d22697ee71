//! The `hopscope` command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hopscope::analyze::Severity;
use hopscope::config::{Config, HumanDuration, Settings};
use hopscope::demo::{Demo, DemoOptions, Scenario};
use hopscope::loadgen::{self, Protocol, Shape, Until};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hopscope",
    version,
    about = "OpenTelemetry trace analyzer: which hop each request waited on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP traces, analyze them, and serve the findings over HTTP.
    Serve {
        /// TOML file with any of the settings below (flags and environment
        /// win), and the detectors' thresholds in its [detectors] section
        /// (docs/DETECTORS.md)
        #[arg(long, env = "HOPSCOPE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the effective configuration as TOML (every setting, and every
        /// detector threshold with its default: docs/DETECTORS.md) and exit;
        /// the output is a config file
        #[arg(long)]
        print_config: bool,
        // Boxed: the settings dwarf the other commands' arguments.
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Send realistic traces over OTLP and report accepted and refused spans/s,
    /// export latency, the daemon's CPU time and memory, its spans per CPU-second
    /// against raw prost decoding, and API latency under load. Exits non-zero if
    /// the daemon refused or lost spans, did not finish analyzing, or an API
    /// probe failed.
    Loadgen(Box<LoadgenArgs>),
    /// Run the daemon with small instrumented services in process (gateway →
    /// frontend → orders → inventory, or services over real SQLite pools,
    /// exporting OTLP to it), drive a scenario's requests through them, and
    /// print the latency share per hop, the statement shapes and the findings
    /// the daemon produced.
    Demo(DemoArgs),
    /// Probe a running daemon's API: exit 0 if GET /healthz (or /readyz with
    /// --ready) answers 200, 1 with the reason otherwise. For container
    /// HEALTHCHECKs in images without curl.
    Healthcheck(HealthcheckArgs),
    /// Analyze exported trace files without a daemon: OTLP protobuf or JSON
    /// (one request or JSON Lines), Jaeger query-API JSON or Zipkin v2 JSON,
    /// detected from the content. Prints per trace its entry, duration, the
    /// critical path as a waterfall and the hops by share, then the findings
    /// with their remedies.
    Analyze(AnalyzeArgs),
}

/// Flags of `hopscope healthcheck`.
#[derive(clap::Args)]
struct HealthcheckArgs {
    /// The daemon's HTTP API address; a wildcard (0.0.0.0) is probed on
    /// loopback [default: the config file's api_addr, else 127.0.0.1:9980]
    #[arg(long, env = "HOPSCOPE_API_ADDR", value_name = "ADDR")]
    api_addr: Option<SocketAddr>,

    /// The daemon's TOML config file, read for api_addr
    #[arg(long, env = "HOPSCOPE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// Probe readiness (/readyz: every listener bound) instead of liveness
    #[arg(long)]
    ready: bool,

    /// Give up after this long
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    timeout: HumanDuration,
}

/// Flags of `hopscope analyze`.
#[derive(clap::Args)]
#[command(after_help = ANALYZE_EXIT_STATUS)]
struct AnalyzeArgs {
    /// Files to read, in order (`-` for stdin); spans of one trace may be spread over several
    #[arg(value_name = "FILE", required = true)]
    files: Vec<String>,

    /// A report for people, the API's JSON shapes (traces, findings,
    /// entries), or SARIF 2.1.0 for code scanning (the findings)
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,

    /// CI gate: exit 1 when a finding at or above this severity (info,
    /// warning, critical) is reported; with --baseline only new ones count
    #[arg(long, value_name = "SEVERITY", value_parser = severity)]
    fail_on: Option<Severity>,

    /// A previous `--format json` output: findings in it (same kind and
    /// culprit) are counted as known, not reported, and never fail the gate
    #[arg(long, value_name = "FINDINGS.json")]
    baseline: Option<PathBuf>,

    /// Most spans held at once: past it the oldest traces are analyzed early
    /// (spans of theirs read later are merged and the trace analyzed again)
    #[arg(long, value_name = "N", default_value_t = hopscope::offline::Options::default().max_buffered_spans)]
    max_buffered_spans: usize,

    /// Routes that are health checks, as `serve --health-routes`
    /// (comma-separated) [default: serve's]
    #[arg(
        long,
        env = "HOPSCOPE_HEALTH_ROUTES",
        value_name = "ROUTES",
        value_delimiter = ','
    )]
    health_routes: Option<Vec<String>>,

    /// The daemon's TOML config file: its [detectors] thresholds,
    /// health_routes, future_skew and aggregate_retention apply (spans ending
    /// that far from the files' own time are left out), its other keys are
    /// checked as `serve` does and ignored; --health-routes wins
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// How `hopscope analyze` exits, for CI.
const ANALYZE_EXIT_STATUS: &str =
    "Exit status: 0 when no reported finding is at or above --fail-on \
(always, without it); 1 when one is (the report is written in full first); \
2 when an input or the baseline cannot be read, or a flag is wrong.";

/// `--fail-on`'s value.
fn severity(text: &str) -> Result<Severity, String> {
    Severity::parse(text).ok_or_else(|| format!("`{text}`: one of info, warning, critical"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Sarif,
}

/// Flags of `hopscope demo`.
#[derive(clap::Args)]
struct DemoArgs {
    /// What goes wrong behind the gateway
    #[arg(long, value_enum, default_value_t = DemoOptions::default().scenario)]
    scenario: Scenario,

    /// Requests sent through the gateway [default: the scenario's]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,

    /// Requests in flight at once [default: the scenario's]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,

    /// Wall-clock seconds per scenario second: 0.01 makes the gateway's 29 s
    /// timeout last 290 ms; 1 runs real durations
    #[arg(long, value_name = "F", default_value_t = DemoOptions::default().time_scale)]
    time_scale: f64,

    /// Record no pool.acquire span while a request waits for a database
    /// connection: the wait is then only time before the request's first query
    #[arg(long)]
    no_acquire_spans: bool,

    /// Listen address of the daemon's HTTP API [default: an ephemeral port on
    /// 127.0.0.1, printed]
    #[arg(long, value_name = "ADDR")]
    api_addr: Option<SocketAddr>,

    /// After the report, keep the daemon and the services running (to explore
    /// the API with curl, or send more requests) until Ctrl-C
    #[arg(long)]
    keep_running: bool,

    /// Log filter of the daemon and the services, in `tracing` EnvFilter syntax
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log: String,
}

impl DemoArgs {
    fn options(&self) -> DemoOptions {
        let defaults = DemoOptions::default();
        DemoOptions {
            scenario: self.scenario,
            requests: self.requests,
            concurrency: self.concurrency,
            time_scale: self.time_scale,
            acquire_spans: !self.no_acquire_spans,
            api_addr: self.api_addr.unwrap_or(defaults.api_addr),
        }
    }
}

/// Flags of `hopscope loadgen`.
#[derive(clap::Args)]
struct LoadgenArgs {
    /// OTLP receiver to send to [default: http://127.0.0.1:4317 for grpc,
    /// http://127.0.0.1:4318 for http]
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,

    /// OTLP over gRPC, or over HTTP/1.1 (protobuf bodies POSTed to /v1/traces)
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,

    /// Concurrent connections, each with one export in flight
    #[arg(long, value_name = "N", default_value_t = 4)]
    connections: usize,

    /// Spans per export request, rounded up to whole traces (the SDK batch
    /// processor's default is 512)
    #[arg(long, value_name = "SPANS", default_value_t = 512)]
    batch: usize,

    /// Target rate over all connections [default: as fast as the daemon
    /// answers; with --soak, half of its capacity measured first]
    #[arg(long, value_name = "SPANS_PER_SEC")]
    rate: Option<f64>,

    /// How long to send [default: 10s unless --spans is given; 60m with --soak]
    #[arg(long, value_name = "DURATION", conflicts_with = "spans")]
    duration: Option<HumanDuration>,

    /// Send this many spans (in whole requests, so a little more), then stop
    #[arg(long, value_name = "N")]
    spans: Option<u64>,

    /// Compress each request with gzip
    #[arg(long)]
    gzip: bool,

    /// Services the traces visit; the first is the entry point
    #[arg(long, value_name = "N", default_value_t = Shape::default().services)]
    services: usize,

    /// Levels of service calls below the entry span (1 to 8)
    #[arg(long, value_name = "N", default_value_t = Shape::default().depth)]
    depth: usize,

    /// Downstream calls per service above the deepest level (1 to 16); a trace
    /// has 1 + 3 × (f + f² + ... + f^depth) spans
    #[arg(long, value_name = "N", default_value_t = Shape::default().fan_out)]
    fan_out: usize,

    /// Fraction of traces whose deepest call times out, failing every caller above
    #[arg(long, value_name = "F", default_value_t = Shape::default().error_fraction)]
    error_fraction: f64,

    /// Fraction of traces with one slow database call (500 ms to 2 s)
    #[arg(long, value_name = "F", default_value_t = Shape::default().slow_db_fraction)]
    slow_db_fraction: f64,

    /// Replicas of each service, each its own service.instance.id; every
    /// request carries one replica per service
    #[arg(long, value_name = "N", default_value_t = Shape::default().instances)]
    instances: usize,

    /// Seed of the generated traces and ids
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Retries of a request refused as retryable (UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// HTTP 429/503, ...), with exponential backoff from 50 ms
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,

    /// The daemon's pid: report the CPU seconds it used during the run and its
    /// peak and current RSS, from /proc
    #[arg(long, value_name = "PID")]
    daemon_pid: Option<u32>,

    /// The daemon's HTTP API (e.g. http://127.0.0.1:9980): fail if its
    /// spans_accepted counter grew less than the spans it acknowledged
    #[arg(long, value_name = "URL")]
    api: Option<String>,

    /// After sending, wait until the daemon has analyzed every trace (its
    /// buffered_spans and analysis_pending are 0) and report its CPU time for
    /// ingest plus analysis
    #[arg(long, requires_all = ["api", "daemon_pid"])]
    wait_analysis: bool,

    /// Give up --wait-analysis (and fail) after this long; it must cover the
    /// daemon's --trace-idle (10s by default) plus its analysis time
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "60s",
        requires = "wait_analysis"
    )]
    wait_timeout: HumanDuration,

    /// Before sending, time raw prost decoding of the run's requests on one
    /// thread for this long: the ratio's denominator [default: 1s with
    /// --daemon-pid, otherwise none; 0s: none]
    #[arg(long, value_name = "DURATION")]
    decode_baseline: Option<HumanDuration>,

    /// While sending, GET this API path (with its query, e.g.
    /// '/api/v1/hops?since=5m') every --probe-interval on a connection of its
    /// own, and report its latency; repeatable
    #[arg(long, value_name = "PATH", requires = "api")]
    probe_api: Vec<String>,

    /// Interval between the requests of each --probe-api
    #[arg(long, value_name = "DURATION", default_value = "50ms")]
    probe_interval: HumanDuration,

    /// Exit zero even if the daemon refused spans (lost spans still fail)
    #[arg(long)]
    allow_refused: bool,

    /// No progress line every second on stderr
    #[arg(long)]
    quiet: bool,

    /// Soak test: start `hopscope serve` (this binary, its defaults, the
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
    soak: bool,

    /// With --soak: one row per this long
    #[arg(long, value_name = "DURATION", default_value = "1m", requires = "soak")]
    report_every: HumanDuration,

    /// With --soak: the rows after which RSS must plateau and the findings
    /// stay as they are [default: a quarter of --duration]
    #[arg(long, value_name = "DURATION", requires = "soak")]
    warm_up: Option<HumanDuration>,

    /// With --soak and no --rate: how long capacity is measured flat out
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        requires = "soak"
    )]
    capacity_for: HumanDuration,

    /// With --soak: the daemon's --memory-limit-mib, which its RSS must stay
    /// under
    #[arg(long, value_name = "MIB", default_value_t = 512, requires = "soak")]
    memory_limit_mib: usize,

    /// With --soak: also write the rows to this CSV file
    #[arg(long, value_name = "FILE", requires = "soak")]
    out: Option<PathBuf>,
}

impl LoadgenArgs {
    fn options(&self) -> loadgen::Options {
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

/// jemalloc rather than the system allocator: under sustained load glibc's
/// per-thread arenas held about a quarter more resident memory for the same
/// data (docs/PERFORMANCE.md, "Hours of load"), and resident memory is what
/// `memory_limit_mib` and a container's limit are judged by.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            print_config,
            settings,
        } => {
            let file = Settings::from_optional_file(config.as_deref())?;
            let config = Config::try_from((*settings).or(file).or(Settings::serve_defaults()))?;
            if print_config {
                let text = config
                    .to_toml()
                    .context("cannot write the configuration as TOML")?;
                print!("{text}");
                return Ok(());
            }
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(
                    EnvFilter::try_new(&config.log)
                        .with_context(|| format!("invalid log filter `{}`", config.log))?,
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
        Command::Loadgen(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(load(*args)),
        Command::Healthcheck(args) => {
            let file = Settings::from_optional_file(args.config.as_deref())?;
            let settings = Settings {
                api_addr: args.api_addr,
                ..Settings::default()
            };
            let addr = Config::try_from(settings.or(file))?.api_addr;
            let path = if args.ready { "/readyz" } else { "/healthz" };
            let probe = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(hopscope::healthcheck::probe(addr, path, args.timeout.0));
            match probe {
                Ok(body) => {
                    println!("{}", body.trim());
                    Ok(())
                }
                // One line, no backtrace: it ends up in `docker inspect`.
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    std::process::exit(1)
                }
            }
        }
        Command::Analyze(args) => {
            // 1 is the gate's: every error is 2.
            let code = analyze(args).unwrap_or_else(|e| {
                eprintln!("Error: {e:?}");
                2
            });
            std::process::exit(code)
        }
        Command::Demo(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(
                    EnvFilter::try_new(&args.log)
                        .with_context(|| format!("invalid log filter `{}`", args.log))?,
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(demo(args))
        }
    }
}

/// Inputs at least this large (in all) get a progress bar, on a terminal.
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

/// Runs `hopscope analyze`; the exit status is the gate's (0 or 1).
fn analyze(args: AnalyzeArgs) -> anyhow::Result<i32> {
    use hopscope::offline::{self, report, sarif, Input};
    let inputs: Vec<Input> = args.files.iter().map(|f| Input::parse(f)).collect();
    if inputs.iter().filter(|i| **i == Input::Stdin).count() > 1 {
        anyhow::bail!("`-` (stdin) can be read only once");
    }
    let total: u64 = inputs.iter().filter_map(Input::size).sum();
    let bar = (std::io::stderr().is_terminal() && total >= PROGRESS_MIN_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut report: Box<dyn report::Report> = match args.format {
        ReportFormat::Text => Box::new(report::Text::new(out)),
        ReportFormat::Json => Box::new(report::Json::new(out)),
        ReportFormat::Sarif => Box::new(sarif::Sarif::new(out)),
    };
    let mut options = offline::Options {
        max_buffered_spans: args.max_buffered_spans,
        baseline: args
            .baseline
            .as_deref()
            .map(report::Baseline::read)
            .transpose()?,
        ..offline::Options::default()
    };
    let file = Settings::from_optional_file(args.config.as_deref())?;
    let flags = Settings {
        health_routes: args.health_routes,
        ..Settings::default()
    };
    let config = Config::try_from(flags.or(file))?;
    options.bounds = config.time_bounds();
    options.analysis.thresholds = config.detectors;
    let result = offline::run(&inputs, options, report.as_mut(), &mut |read| {
        if let Some(bar) = &bar {
            bar.set_position(read);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let findings = result?;
    let Some(fail_on) = args.fail_on else {
        return Ok(0);
    };
    let failing: Vec<String> = findings
        .at_least(fail_on)
        .map(|f| {
            let c = &f.latest.culprit;
            let peer = c.peer.map(|p| format!(" → {p}")).unwrap_or_default();
            let kind = f.latest.kind.as_str();
            format!("{kind} ({} {}{peer})", c.service, c.operation)
        })
        .collect();
    let new = if findings.known.is_some() { "new " } else { "" };
    if failing.is_empty() {
        eprintln!(
            "hopscope analyze: no {new}finding at or above {}: passed",
            fail_on.as_str()
        );
        return Ok(0);
    }
    eprintln!(
        "hopscope analyze: {} {new}finding(s) at or above {}: {}: failed",
        failing.len(),
        fail_on.as_str(),
        failing.join(", ")
    );
    Ok(1)
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = args.options();
    let demo = Demo::start(&options).await?;
    eprintln!(
        "hopscope API on {}; sending {} requests to {} ({})",
        demo.api_url(),
        options.requests(),
        demo.gateway_url(),
        options.scenario
    );
    if let Some(dir) = demo.data_dir() {
        eprintln!(
            "the SQLite databases are in {} until the demo stops",
            dir.display()
        );
    }
    let report = match demo.drive().await {
        Ok(report) => report,
        Err(e) => {
            let _ = demo.stop().await;
            return Err(e.into());
        }
    };
    print!("{report}");
    if args.keep_running {
        println!(
            "\nStill running until Ctrl-C: the daemon's API on {}, the gateway on {}",
            demo.api_url(),
            demo.gateway_url()
        );
        shutdown_signal()?.await;
    }
    demo.stop().await?;
    Ok(())
}

async fn load(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.soak {
        return soak(args).await;
    }
    let quiet = args.quiet;
    let report = loadgen::run(&args.options(), |progress| {
        if !quiet {
            eprintln!("{progress}");
        }
    })
    .await?;
    print!("{report}");
    let problems = report.problems(args.allow_refused);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}", list.join("; "));
    }
    Ok(())
}

/// `hopscope loadgen --soak`: the rows as a Markdown table on stdout (and in
/// CSV to `--out`), the verdict last.
async fn soak(args: LoadgenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let load = args.options();
    let Until::Elapsed(duration) = load.until else {
        anyhow::bail!("--soak runs for a --duration");
    };
    let opts = loadgen::SoakOptions {
        binary: std::env::current_exe().context("cannot find this binary to run its `serve`")?,
        memory_limit_mib: args.memory_limit_mib,
        duration,
        report_every: args.report_every.0,
        warm_up: args.warm_up.map(|w| w.0),
        rate: args.rate,
        capacity_for: args.capacity_for.0,
        load,
    };
    let mut out = match &args.out {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(file, "{}", loadgen::Row::CSV_HEADER)?;
            Some((path, file))
        }
        None => None,
    };
    let mut written = Ok(());
    // On SIGTERM or Ctrl-C the soak is dropped: its daemon is killed and its
    // data directory removed.
    let interrupted = shutdown_signal()?;
    let soaked = loadgen::soak(&opts, |event| {
        match event {
        loadgen::SoakEvent::Started { pid, data_dir } => println!(
            "daemon: pid {pid}, data directory {}, memory limit {} MiB",
            data_dir.display(),
            opts.memory_limit_mib
        ),
        loadgen::SoakEvent::Capacity { report, capacity } => {
            print!("{report}");
            println!(
                "capacity: {:.0} spans/s (ingest and analysis on every core, at most the \
                 acknowledged rate)",
                capacity
            );
        }
        loadgen::SoakEvent::Soaking { rate, warm_up_rows } => println!(
            "soak: {rate:.0} spans/s for {} s, a row every {} s, warm-up {warm_up_rows} row(s)\n\n{}",
            duration.as_secs(),
            opts.report_every.as_secs(),
            loadgen::Row::HEADER
        ),
        loadgen::SoakEvent::Row(row) => {
            println!("{row}");
            if let Some((path, file)) = &mut out {
                if written.is_ok() {
                    written = writeln!(file, "{}", row.csv())
                        .with_context(|| format!("cannot write {}", path.display()));
                }
            }
        }
    }
    });
    let report = tokio::select! {
        report = soaked => report?,
        () = interrupted => anyhow::bail!("soak interrupted"),
    };
    written?;
    let verdict = &report.verdict;
    if let Some(warm) = report.rows.get(verdict.warm_up_row) {
        println!(
            "\nwarm-up: until minute {:.2} (row {})",
            warm.elapsed.as_secs_f64() / 60.0,
            verdict.warm_up_row + 1
        );
    }
    if verdict.passed() {
        println!(
            "verdict: passed (RSS after the warm-up within +{:.0} % + {} MiB, under {} MiB; \
             nothing dropped or refused; findings stable)",
            loadgen::soak::RSS_GROWTH_SHARE * 100.0,
            loadgen::soak::RSS_GROWTH_KIB / 1024,
            opts.memory_limit_mib
        );
        return Ok(());
    }
    let list: Vec<String> = verdict.problems.iter().map(ToString::to_string).collect();
    println!("verdict: FAILED");
    anyhow::bail!("soak failed: {}", list.join("; "));
}

async fn serve(config: Config) -> anyhow::Result<()> {
    ignore_file_size_signal();
    // The handlers first: a SIGTERM right after the daemon is ready must drain
    // it, not kill it.
    let signal = shutdown_signal()?;
    let running = hopscope::daemon::start(config).await?;
    signal.await;
    running.shutdown();
    running.wait().await?;
    Ok(())
}

/// A write past the file size limit (`ulimit -f`, RLIMIT_FSIZE) raises
/// SIGXFSZ, which kills the process by default. Ignored, the write fails with
/// EFBIG instead, like a full disk: the export is refused (retryable), nothing
/// acknowledged is lost, and the daemon keeps serving.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: SIG_IGN installs no handler and touches no memory; a signal's
    // disposition is process-wide and may be set from any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Installs the SIGTERM and Ctrl-C handlers now; the future resolves on either.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
