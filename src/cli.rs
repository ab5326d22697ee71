//! The `hopscope` command line: its subcommands and their flags (what
//! `main.rs` dispatches on).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hopscope::analyze::Severity;
use hopscope::config::{HumanDuration, Settings};

// The command line, parsed. (Plain comments on the clap types: doc comments
// would become their help text.)
#[derive(Parser)]
#[command(
    name = "hopscope",
    version,
    about = "OpenTelemetry trace analyzer: which hop each request waited on",
    after_help = TOOLS
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// The subcommands.
#[derive(Subcommand)]
pub enum Command {
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

/// Where the tools went: crates of their own, so the daemon links none of
/// their dependencies.
const TOOLS: &str = "The demo and the load generator are binaries of their own: \
hopscope-demo (cargo run --release -p hopscope-demo) and hopscope-loadgen \
(cargo run --release -p hopscope-loadgen).";

/// Flags of `hopscope healthcheck`.
#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// The daemon's HTTP API address; a wildcard (0.0.0.0) is probed on
    /// loopback [default: the config file's api_addr, else 127.0.0.1:9980]
    #[arg(long, env = "HOPSCOPE_API_ADDR", value_name = "ADDR")]
    pub api_addr: Option<SocketAddr>,

    /// The daemon's TOML config file, read for api_addr
    #[arg(long, env = "HOPSCOPE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Probe readiness (/readyz: every listener bound) instead of liveness
    #[arg(long)]
    pub ready: bool,

    /// Give up after this long
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub timeout: HumanDuration,
}

/// Flags of `hopscope analyze`.
#[derive(clap::Args)]
#[command(after_help = ANALYZE_EXIT_STATUS)]
pub struct AnalyzeArgs {
    /// Files to read, in order (`-` for stdin); spans of one trace may be spread over several
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<String>,

    /// A report for people, the API's JSON shapes (traces, findings,
    /// entries), or SARIF 2.1.0 for code scanning (the findings)
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,

    /// CI gate: exit 1 when a finding at or above this severity (info,
    /// warning, critical) is reported; with --baseline only new ones count
    #[arg(long, value_name = "SEVERITY", value_parser = severity)]
    pub fail_on: Option<Severity>,

    /// A previous `--format json` output: findings in it (same kind and
    /// culprit) are counted as known, not reported, and never fail the gate
    #[arg(long, value_name = "FINDINGS.json")]
    pub baseline: Option<PathBuf>,

    /// Most spans held at once: past it the oldest traces are analyzed early
    /// (spans of theirs read later are merged and the trace analyzed again)
    #[arg(long, value_name = "N", default_value_t = hopscope::offline::Options::default().max_buffered_spans)]
    pub max_buffered_spans: usize,

    /// Routes that are health checks, as `serve --health-routes`
    /// (comma-separated) [default: serve's]
    #[arg(
        long,
        env = "HOPSCOPE_HEALTH_ROUTES",
        value_name = "ROUTES",
        value_delimiter = ','
    )]
    pub health_routes: Option<Vec<String>>,

    /// The daemon's TOML config file: its [detectors] thresholds,
    /// health_routes, future_skew and aggregate_retention apply (spans ending
    /// that far from the files' own time are left out), its other keys are
    /// checked as `serve` does and ignored; --health-routes wins
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
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

// `hopscope analyze --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Sarif,
}
