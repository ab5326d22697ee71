//! Every knob, in two steps: raw [`Settings`] from flags, `HOPSCOPE_*` environment
//! variables and an optional TOML file (in that order of precedence), then one
//! validated, immutable [`Config`]. Only this module reads the environment
//! (through clap).
//!
//! The detectors' thresholds are the file's `[detectors]` section
//! ([`Thresholds`], documented in `docs/DETECTORS.md`), file only: it is
//! nested, and a flag per threshold would be dozens of flags. The one
//! exception is the health routes, which predate it: `--health-routes`,
//! `HOPSCOPE_HEALTH_ROUTES` and the top-level `health_routes` key set
//! `detectors.slow_health_check.routes`, and win over it (a file may give one
//! of the two keys, not both). [`Config::to_toml`] prints the effective
//! configuration in the file's format.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analyze::{HealthRoutes, InvalidThreshold, Thresholds};
use crate::clock::{Clock, TimeBounds};
use crate::forward::{Compression, Options as ForwardOptions, Protocol};
use crate::listener::ConnLimits;
pub use crate::store::wal::WalSync;

/// What a daemon does among replicas (deploy/README.md, "Two tiers").
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in one process.
    #[default]
    All,
    /// Tier 1: assemble and analyze whole traces, forward them with their
    /// call records; no cross-trace detectors.
    Assemble,
    /// Tier 2: the cross-trace detectors over forwarded call records.
    Detect,
}

impl Role {
    /// Its name in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Assemble => "assemble",
            Role::Detect => "detect",
        }
    }

    /// Runs the cross-trace detectors.
    pub fn detects(self) -> bool {
        self != Role::Assemble
    }

    /// Assembles and analyzes traces.
    pub fn assembles(self) -> bool {
        self != Role::Detect
    }
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A `[detectors]` threshold out of its range.
    #[error(transparent)]
    Threshold(#[from] InvalidThreshold),
}

/// A duration in human units (`10s`, `500ms`, `5m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("`{s}` is not a duration like 10s, 500ms or 5m: {e}"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Writes a value the file gives as text (a duration, a sync policy) as its
/// text, which reads back as the same value.
fn as_text<T: fmt::Display, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Raw settings of `hopscope serve`. Each is a flag, an environment variable and
/// a key of the TOML file (same name, with underscores), except `detectors`
/// (the file's `[detectors]` section only).
#[derive(Debug, Clone, Default, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]
    #[arg(long, env = "HOPSCOPE_OTLP_GRPC_ADDR", value_name = "ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,

    /// OTLP/HTTP listen address (POST /v1/traces, protobuf or JSON)
    /// [default: 127.0.0.1:4318]
    #[arg(long, env = "HOPSCOPE_OTLP_HTTP_ADDR", value_name = "ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,

    /// HTTP API listen address [default: 127.0.0.1:9980]
    #[arg(long, env = "HOPSCOPE_API_ADDR", value_name = "ADDR")]
    pub api_addr: Option<SocketAddr>,

    /// Jaeger query API listen address, for Grafana's Jaeger datasource
    /// (GET /api/services, /api/traces, ...) [default: 127.0.0.1:16686]
    #[arg(long, env = "HOPSCOPE_JAEGER_ADDR", value_name = "ADDR")]
    pub jaeger_addr: Option<SocketAddr>,

    /// A trace is complete when no span arrived for this long [default: 10s]
    #[arg(long, env = "HOPSCOPE_TRACE_IDLE", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub trace_idle: Option<HumanDuration>,

    /// A trace is complete at this age even if spans still arrive [default: 5m]
    #[arg(long, env = "HOPSCOPE_TRACE_MAX_AGE", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub trace_max_age: Option<HumanDuration>,

    /// Spans arriving this long after their trace was analyzed are merged and the
    /// trace analyzed again; later ones start a new partial trace (at most
    /// max_buffered_spans completed ids are remembered) [default: 60s]
    #[arg(long, env = "HOPSCOPE_LATE_GRACE", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub late_grace: Option<HumanDuration>,

    /// Most spans held in the in-flight buffer; past it the oldest traces are
    /// analyzed early (and counted) [default: 1000000]
    #[arg(long, env = "HOPSCOPE_MAX_BUFFERED_SPANS", value_name = "N")]
    pub max_buffered_spans: Option<usize>,

    /// Memory limit, in MiB: the budget of buffered spans and the requests
    /// being decoded (past it exports are refused with a retryable answer,
    /// gRPC UNAVAILABLE with RetryInfo, and counted), and the process's
    /// resident memory, which past seven eighths of it lowers the buffer's
    /// span ceiling so the oldest traces are analyzed early [default: 512]
    #[arg(long, env = "HOPSCOPE_MEMORY_LIMIT_MIB", value_name = "MIB")]
    pub memory_limit_mib: Option<usize>,

    /// Memory for distinct names from the wire (services, operations,
    /// attribute keys, repeated values), in MiB; past it new names read as
    /// `hopscope.names_over_limit` and are counted [default: 64]
    #[arg(long, env = "HOPSCOPE_NAMES_MAX_MIB", value_name = "MIB")]
    pub names_max_mib: Option<usize>,

    /// Most completed traces kept for the API [default: 10000]
    #[arg(long, env = "HOPSCOPE_STORE_MAX_TRACES", value_name = "N")]
    pub store_max_traces: Option<usize>,

    /// Most memory (estimated) that completed traces may hold, in MiB [default: 512]
    #[arg(long, env = "HOPSCOPE_STORE_MAX_MIB", value_name = "MIB")]
    pub store_max_mib: Option<usize>,

    /// How long hop aggregates are kept, by trace start time [default: 24h]
    #[arg(long, env = "HOPSCOPE_AGGREGATE_RETENTION", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub aggregate_retention: Option<HumanDuration>,

    /// Most entry points with their own hop aggregates; traces of later ones
    /// are counted under the entry point `(overflow)` [default: 1000]
    #[arg(long, env = "HOPSCOPE_AGGREGATE_MAX_ENTRIES", value_name = "N")]
    pub aggregate_max_entries: Option<usize>,

    /// Most hops with their own aggregates per entry point; later ones are
    /// counted under the hop `(overflow)` [default: 100]
    #[arg(long, env = "HOPSCOPE_AGGREGATE_MAX_HOPS", value_name = "N")]
    pub aggregate_max_hops: Option<usize>,
    /// Spans ending more than this after the daemon's clock are refused
    /// through OTLP partial success and counted, as are spans ending more
    /// than `aggregate_retention` before it (`hopscope analyze --config`
    /// leaves such spans out by the files' own time) [default: 1h]
    #[arg(long, env = "HOPSCOPE_FUTURE_SKEW", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub future_skew: Option<HumanDuration>,

    /// Largest OTLP request accepted, in MiB: a gRPC message, or an HTTP body
    /// both as received and after decompression; larger ones are refused (gRPC
    /// OUT_OF_RANGE, HTTP 413) and counted [default: 4, as the OpenTelemetry
    /// Collector]
    #[arg(long, env = "HOPSCOPE_OTLP_MAX_MESSAGE_MIB", value_name = "MIB")]
    pub otlp_max_message_mib: Option<usize>,

    /// How often the cross-trace detectors (timeout inference, budgets, gateway
    /// limits, headroom) run over the call window [default: 5s]
    #[arg(long, env = "HOPSCOPE_DETECT_INTERVAL", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub detect_interval: Option<HumanDuration>,

    /// Routes that are health checks, compared exactly with a server span's
    /// http.route, url.path (or http.target) and the path of its name:
    /// paths (/healthz) or gRPC methods (grpc.health.v1.Health/Check),
    /// comma-separated; a health check slower than
    /// detectors.slow_health_check.limit_ms (500 ms) is a finding. Overrides
    /// the file's detectors.slow_health_check.routes [default: /health, /healthz, /healthcheck, /health/live,
    /// /health/liveness, /health/ready, /health/readiness, /livez, /readyz,
    /// /live, /ready, /ping, /status, /actuator/health,
    /// /actuator/health/liveness, /actuator/health/readiness,
    /// grpc.health.v1.Health/Check]
    #[arg(
        long,
        env = "HOPSCOPE_HEALTH_ROUTES",
        value_name = "ROUTES",
        value_delimiter = ','
    )]
    pub health_routes: Option<Vec<String>>,

    /// How long shutdown may take, from SIGTERM: the listeners' drain
    /// (requests in flight finish; connections still open at the deadline
    /// are closed) and then the analysis of what is buffered [default: 30s]
    #[arg(long, env = "HOPSCOPE_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub shutdown_timeout: Option<HumanDuration>,

    /// Connections each listener keeps open at once; a new one past it is
    /// closed as accepted and counted [default: 1024]
    #[arg(long, env = "HOPSCOPE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// How long an HTTP client may take to send a request's head (and an
    /// idle keep-alive connection may wait for the next); slower ones are
    /// disconnected and counted [default: 10s]
    #[arg(long, env = "HOPSCOPE_HEADER_READ_TIMEOUT", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub header_read_timeout: Option<HumanDuration>,

    /// How long an OTLP/HTTP body may take to arrive, whole; a slower one is
    /// refused retryably (503 with Retry-After) and counted [default: 30s]
    #[arg(long, env = "HOPSCOPE_BODY_READ_TIMEOUT", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub body_read_timeout: Option<HumanDuration>,

    /// Most bytes that OTLP/HTTP bodies still being received may hold, across
    /// all connections, in MiB; a request that would pass it is refused
    /// retryably (503 with Retry-After) and counted [default: 64]
    #[arg(long, env = "HOPSCOPE_OTLP_BODY_BUDGET_MIB", value_name = "MIB")]
    pub otlp_body_budget_mib: Option<usize>,

    /// How long an API or Jaeger API request may take before it is answered
    /// 503 and counted [default: 30s]
    #[arg(long, env = "HOPSCOPE_REQUEST_TIMEOUT", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub request_timeout: Option<HumanDuration>,

    /// Bearer token the HTTP API requires (`authorization: Bearer <token>`);
    /// /healthz and /readyz stay open for probes [default: none, no auth]
    #[arg(
        long,
        env = "HOPSCOPE_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Bearer token the OTLP receivers require (`authorization: Bearer
    /// <token>` header or gRPC metadata) [default: none, no auth]
    #[arg(
        long,
        env = "HOPSCOPE_OTLP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub otlp_token: Option<String>,

    /// PEM certificate chain: with --tls-key, the OTLP receivers and the API
    /// serve TLS only [default: none, plain text]
    #[arg(long, env = "HOPSCOPE_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert
    #[arg(long, env = "HOPSCOPE_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Log filter, in `tracing` EnvFilter syntax [default: info]
    #[arg(long, env = "HOPSCOPE_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Data directory: the write-ahead log of accepted spans and the state
    /// file of findings and hop aggregates [default for `serve`:
    /// $XDG_STATE_HOME/hopscope, else ~/.local/state/hopscope, else
    /// ./hopscope-data]
    #[arg(long, env = "HOPSCOPE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// What this daemon does among replicas (deploy/README.md, "Two
    /// tiers"): `all` (everything, alone), `assemble` (tier 1: assemble and
    /// analyze whole traces and forward them with their call records,
    /// --forward-otlp; the cross-trace detectors run in the detect tier) or
    /// `detect` (tier 2: the cross-trace detectors over the call records that
    /// forwarded spans carry, for the services routed to it; nothing to
    /// assemble, no log) [default: all]
    #[arg(long, env = "HOPSCOPE_ROLE", value_name = "ROLE")]
    pub role: Option<Role>,

    /// Keep nothing on disk: no write-ahead log, no state file (a restart
    /// forgets everything)
    #[arg(long, env = "HOPSCOPE_NO_WAL", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_wal: Option<bool>,

    /// When the write-ahead log is synced to disk: `always` (before every
    /// answer, in groups), an interval like `100ms` (answers do not wait; a
    /// power loss loses up to that long, a killed process nothing), or `none`
    /// [default: always]
    #[arg(long, env = "HOPSCOPE_WAL_SYNC", value_name = "POLICY")]
    #[serde(serialize_with = "as_text")]
    pub wal_sync: Option<WalSync>,

    /// Size at which a write-ahead log segment is closed and a new one begun,
    /// in MiB [default: 64]
    #[arg(long, env = "HOPSCOPE_WAL_SEGMENT_MIB", value_name = "MIB")]
    pub wal_segment_mib: Option<u64>,

    /// How often the state file is written and log segments no longer needed
    /// are deleted [default: 10s]
    #[arg(long, env = "HOPSCOPE_CHECKPOINT_INTERVAL", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub checkpoint_interval: Option<HumanDuration>,

    /// Findings not seen for this long (before the daemon's clock) are
    /// forgotten [default: 7d]
    #[arg(long, env = "HOPSCOPE_RETENTION", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub retention: Option<HumanDuration>,

    /// Most disk the data directory may use, in MiB; past it the log segments
    /// of already analyzed traces are deleted first [default: 2048]
    #[arg(long, env = "HOPSCOPE_RETENTION_MAX_MIB", value_name = "MIB")]
    pub retention_max_mib: Option<u64>,

    /// Other replicas' API base URLs (`http://hopscope-1.hopscope-headless:9980`),
    /// comma-separated: the findings, hops, Grafana and Jaeger answers merge
    /// theirs (docs/FEDERATION.md) [default: none]
    #[arg(
        long,
        env = "HOPSCOPE_PEERS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    pub peers: Option<Vec<String>>,

    /// A headless Service's DNS name and the API port, HOST:PORT: every
    /// address it resolves to is a peer, resolved again every 10 s
    /// [default: none]
    #[arg(long, env = "HOPSCOPE_PEERS_DNS", value_name = "HOST:PORT")]
    pub peers_dns: Option<String>,

    /// How long a merged answer waits for each peer; a later one is reported
    /// missing in the answer [default: 2s]
    #[arg(long, env = "HOPSCOPE_PEER_TIMEOUT", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub peer_timeout: Option<HumanDuration>,
    /// Forward every analyzed trace's spans, with hopscope.critical_ms,
    /// hopscope.self_ms, hopscope.on_critical_path and hopscope.findings
    /// added, to this OTLP receiver (http://host:port; docs/FORWARDING.md)
    /// [default: none, off]
    #[arg(long, env = "HOPSCOPE_FORWARD_OTLP", value_name = "URL")]
    pub forward_otlp: Option<String>,

    /// How to forward: `grpc`, or `http` (protobuf, POST to the URL, with
    /// /v1/traces added when it has no path) [default: grpc]
    #[arg(long, env = "HOPSCOPE_FORWARD_PROTOCOL", value_name = "PROTOCOL")]
    #[serde(serialize_with = "as_text")]
    pub forward_protocol: Option<Protocol>,

    /// Forwarded request bodies: `gzip` or `none` [default: gzip]
    #[arg(long, env = "HOPSCOPE_FORWARD_COMPRESSION", value_name = "COMPRESSION")]
    #[serde(serialize_with = "as_text")]
    pub forward_compression: Option<Compression>,

    /// Most spans waiting to be forwarded; when full the analysis waits
    /// (and exports are refused retryably), nothing is dropped [default: 200000]
    #[arg(long, env = "HOPSCOPE_FORWARD_QUEUE_SPANS", value_name = "N")]
    pub forward_queue_spans: Option<usize>,

    /// How long a forwarding request is retried before its spans are
    /// dropped and counted [default: 5m]
    #[arg(long, env = "HOPSCOPE_FORWARD_MAX_ELAPSED", value_name = "DURATION")]
    #[serde(serialize_with = "as_text")]
    pub forward_max_elapsed: Option<HumanDuration>,

    /// Every detector's thresholds: the file's `[detectors]` section
    /// (docs/DETECTORS.md); sections and keys left out keep their defaults.
    #[arg(skip)]
    pub detectors: Option<Thresholds>,
}

impl Settings {
    /// Reads a TOML file of settings. Unknown keys, in `[detectors]` too, are
    /// refused; so is a file that gives the health routes twice (`health_routes`
    /// and `detectors.slow_health_check.routes`).
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parse_error = |source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        };
        let settings: Settings = toml::from_str(&text).map_err(parse_error)?;
        if settings.health_routes.is_some() {
            let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
            let nested = table
                .get("detectors")
                .and_then(|d| d.get("slow_health_check"))
                .and_then(|h| h.get("routes"));
            if nested.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "config file {}: health_routes and detectors.slow_health_check.routes \
                     both set the health routes; keep one",
                    path.display()
                )));
            }
        }
        Ok(settings)
    }

    /// The settings of the file at `path`, if one is given; none otherwise.
    pub fn from_optional_file(path: Option<&Path>) -> Result<Settings, ConfigError> {
        path.map_or_else(|| Ok(Settings::default()), Settings::from_file)
    }

    /// The detectors' thresholds these settings give, validated: the
    /// `[detectors]` section (defaults where it is silent) with
    /// `health_routes`, when set, as `slow_health_check.routes`.
    /// `hopscope analyze --config` reads this part of a file, and
    /// [`Config::time_bounds`].
    pub fn thresholds(&self) -> Result<Thresholds, ConfigError> {
        let mut thresholds = self.detectors.clone().unwrap_or_default();
        if let Some(routes) = &self.health_routes {
            thresholds.slow_health_check.routes = HealthRoutes::new(routes)
                .map_err(|e| ConfigError::Invalid(format!("health_routes: {e}")))?;
        }
        thresholds.validate()?;
        Ok(thresholds)
    }

    /// The defaults `hopscope serve` adds to the library's: a data directory
    /// ([`default_data_dir`]), so the write-ahead log is on unless `no_wal`.
    pub fn serve_defaults() -> Settings {
        Settings {
            data_dir: Some(default_data_dir()),
            ..Settings::default()
        }
    }

    /// These settings, with `fallback` filling what they leave unset.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            otlp_grpc_addr: self.otlp_grpc_addr.or(fallback.otlp_grpc_addr),
            otlp_http_addr: self.otlp_http_addr.or(fallback.otlp_http_addr),
            api_addr: self.api_addr.or(fallback.api_addr),
            jaeger_addr: self.jaeger_addr.or(fallback.jaeger_addr),
            trace_idle: self.trace_idle.or(fallback.trace_idle),
            trace_max_age: self.trace_max_age.or(fallback.trace_max_age),
            late_grace: self.late_grace.or(fallback.late_grace),
            max_buffered_spans: self.max_buffered_spans.or(fallback.max_buffered_spans),
            memory_limit_mib: self.memory_limit_mib.or(fallback.memory_limit_mib),
            names_max_mib: self.names_max_mib.or(fallback.names_max_mib),
            store_max_traces: self.store_max_traces.or(fallback.store_max_traces),
            store_max_mib: self.store_max_mib.or(fallback.store_max_mib),
            aggregate_retention: self.aggregate_retention.or(fallback.aggregate_retention),
            aggregate_max_entries: self
                .aggregate_max_entries
                .or(fallback.aggregate_max_entries),
            aggregate_max_hops: self.aggregate_max_hops.or(fallback.aggregate_max_hops),
            future_skew: self.future_skew.or(fallback.future_skew),
            otlp_max_message_mib: self.otlp_max_message_mib.or(fallback.otlp_max_message_mib),
            detect_interval: self.detect_interval.or(fallback.detect_interval),
            health_routes: self.health_routes.or(fallback.health_routes),
            shutdown_timeout: self.shutdown_timeout.or(fallback.shutdown_timeout),
            max_connections: self.max_connections.or(fallback.max_connections),
            header_read_timeout: self.header_read_timeout.or(fallback.header_read_timeout),
            body_read_timeout: self.body_read_timeout.or(fallback.body_read_timeout),
            otlp_body_budget_mib: self.otlp_body_budget_mib.or(fallback.otlp_body_budget_mib),
            request_timeout: self.request_timeout.or(fallback.request_timeout),
            log: self.log.or(fallback.log),
            api_token: self.api_token.or(fallback.api_token),
            otlp_token: self.otlp_token.or(fallback.otlp_token),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
            data_dir: self.data_dir.or(fallback.data_dir),
            role: self.role.or(fallback.role),
            no_wal: self.no_wal.or(fallback.no_wal),
            wal_sync: self.wal_sync.or(fallback.wal_sync),
            wal_segment_mib: self.wal_segment_mib.or(fallback.wal_segment_mib),
            checkpoint_interval: self.checkpoint_interval.or(fallback.checkpoint_interval),
            retention: self.retention.or(fallback.retention),
            retention_max_mib: self.retention_max_mib.or(fallback.retention_max_mib),
            forward_otlp: self.forward_otlp.or(fallback.forward_otlp),
            forward_protocol: self.forward_protocol.or(fallback.forward_protocol),
            forward_compression: self.forward_compression.or(fallback.forward_compression),
            forward_queue_spans: self.forward_queue_spans.or(fallback.forward_queue_spans),
            forward_max_elapsed: self.forward_max_elapsed.or(fallback.forward_max_elapsed),
            detectors: self.detectors.or(fallback.detectors),
            peers: self.peers.or(fallback.peers),
            peers_dns: self.peers_dns.or(fallback.peers_dns),
            peer_timeout: self.peer_timeout.or(fallback.peer_timeout),
        }
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub otlp_grpc_addr: SocketAddr,
    pub otlp_http_addr: SocketAddr,
    pub api_addr: SocketAddr,
    /// The Jaeger query API's listener.
    pub jaeger_addr: SocketAddr,
    pub trace_idle: Duration,
    pub trace_max_age: Duration,
    pub late_grace: Duration,
    pub max_buffered_spans: usize,
    pub memory_limit_bytes: usize,
    /// Bytes the interner may hold for names from the wire.
    pub names_max_bytes: usize,
    pub store_max_traces: usize,
    pub store_max_bytes: usize,
    pub aggregate_retention: Duration,
    /// Most entry points with aggregates of their own.
    pub aggregate_max_entries: usize,
    /// Most hops with aggregates of their own, per entry point.
    pub aggregate_max_hops: usize,
    /// How far after the daemon's clock a span may end (before it, as far as
    /// `aggregate_retention`): see [`crate::clock::TimeBounds`].
    pub future_skew: Duration,
    /// The daemon's clock: the system's, unless a test sets another (no
    /// setting reaches it).
    pub clock: Clock,
    pub otlp_max_message_bytes: usize,
    pub detect_interval: Duration,
    /// Every detector's thresholds, `slow_health_check`'s routes included.
    pub detectors: Thresholds,
    pub shutdown_timeout: Duration,
    /// What each listener allows its clients.
    pub conn_limits: ConnLimits,
    pub body_read_timeout: Duration,
    pub otlp_body_budget_bytes: usize,
    pub request_timeout: Duration,
    pub log: String,
    /// The API's bearer token, if it requires one.
    pub api_token: Option<String>,
    /// The OTLP receivers' bearer token, if they require one.
    pub otlp_token: Option<String>,
    /// PEM certificate chain and key files: every listener serves TLS.
    pub tls: Option<TlsFiles>,
    /// Where the write-ahead log and the state file live; `None`: nothing on disk.
    pub data_dir: Option<PathBuf>,
    pub wal_sync: WalSync,
    /// What this daemon does among replicas.
    pub role: Role,
    pub wal_segment_bytes: u64,
    pub checkpoint_interval: Duration,
    pub retention: Duration,
    pub retention_max_bytes: u64,
    /// Other replicas' API base URLs, without a trailing `/`.
    pub peers: Vec<String>,
    /// `HOST:PORT` whose addresses are peers.
    pub peers_dns: Option<String>,
    pub peer_timeout: Duration,
    /// Where analyzed traces are forwarded; `None`: nowhere.
    pub forward: Option<ForwardOptions>,
}

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The peer settings: plain `http://HOST[:PORT]` URLs (the client speaks no
/// TLS), `HOST:PORT` for discovery, a timeout above zero.
fn check_peers(config: &Config) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    for p in &config.peers {
        let host = p.strip_prefix("http://").unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return invalid(format!(
                "peers: `{p}` is not an http://HOST:PORT URL (peers are asked over plain HTTP)"
            ));
        }
    }
    if let Some(dns) = &config.peers_dns {
        let port = dns.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
        if !matches!(port, Some((h, Ok(_))) if !h.is_empty()) {
            return invalid(format!("peers_dns: `{dns}` is not HOST:PORT"));
        }
    }
    if config.peer_timeout.is_zero() {
        return invalid("peer_timeout must be greater than 0".to_owned());
    }
    if config.tls.is_some() && (!config.peers.is_empty() || config.peers_dns.is_some()) {
        return invalid(
            "peers and peers_dns ask peers over plain HTTP, which a replica serving TLS does not answer"
                .to_owned(),
        );
    }
    Ok(())
}

/// `$XDG_STATE_HOME/hopscope`, else `$HOME/.local/state/hopscope` (the XDG
/// default), else `./hopscope-data`.
#[allow(
    clippy::disallowed_methods,
    reason = "config.rs is the one reader of the environment"
)]
pub fn default_data_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = var("XDG_STATE_HOME") {
        return PathBuf::from(state).join("hopscope");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home).join(".local/state/hopscope");
    }
    PathBuf::from("hopscope-data")
}

const MIB: usize = 1 << 20;

impl Default for Config {
    fn default() -> Self {
        Config::try_from(Settings::default()).expect("defaults are valid")
    }
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    fn try_from(s: Settings) -> Result<Config, ConfigError> {
        let d = |v: Option<HumanDuration>, default: u64| {
            v.map_or(Duration::from_secs(default), |h| h.0)
        };
        let detectors = s.thresholds()?;
        let config = Config {
            otlp_grpc_addr: s.otlp_grpc_addr.unwrap_or(([127, 0, 0, 1], 4317).into()),
            otlp_http_addr: s.otlp_http_addr.unwrap_or(([127, 0, 0, 1], 4318).into()),
            api_addr: s.api_addr.unwrap_or(([127, 0, 0, 1], 9980).into()),
            jaeger_addr: s.jaeger_addr.unwrap_or(([127, 0, 0, 1], 16686).into()),
            trace_idle: d(s.trace_idle, 10),
            trace_max_age: d(s.trace_max_age, 300),
            late_grace: d(s.late_grace, 60),
            max_buffered_spans: s.max_buffered_spans.unwrap_or(1_000_000),
            memory_limit_bytes: s.memory_limit_mib.unwrap_or(512).saturating_mul(MIB),
            names_max_bytes: s.names_max_mib.unwrap_or(64).saturating_mul(MIB),
            store_max_traces: s.store_max_traces.unwrap_or(10_000),
            store_max_bytes: s.store_max_mib.unwrap_or(512).saturating_mul(MIB),
            aggregate_retention: d(s.aggregate_retention, 24 * 3600),
            aggregate_max_entries: s
                .aggregate_max_entries
                .unwrap_or(crate::store::DEFAULT_MAX_ENTRIES),
            aggregate_max_hops: s
                .aggregate_max_hops
                .unwrap_or(crate::store::DEFAULT_MAX_HOPS),
            future_skew: d(s.future_skew, 3600),
            clock: Clock::System,
            otlp_max_message_bytes: s.otlp_max_message_mib.unwrap_or(4).saturating_mul(MIB),
            detect_interval: d(s.detect_interval, 5),
            detectors,
            shutdown_timeout: d(s.shutdown_timeout, 30),
            conn_limits: ConnLimits {
                max_connections: s.max_connections.unwrap_or(1024),
                header_read_timeout: d(s.header_read_timeout, 10),
            },
            body_read_timeout: d(s.body_read_timeout, 30),
            otlp_body_budget_bytes: s.otlp_body_budget_mib.unwrap_or(64).saturating_mul(MIB),
            request_timeout: d(s.request_timeout, 30),
            log: s.log.unwrap_or_else(|| "info".to_owned()),
            api_token: s.api_token,
            otlp_token: s.otlp_token,
            tls: match (s.tls_cert, s.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "tls_cert and tls_key must be given together".to_owned(),
                    ))
                }
            },
            role: s.role.unwrap_or_default(),
            // A detect replica keeps derived records only: tier 1 logs the spans.
            data_dir: s
                .data_dir
                .filter(|_| s.no_wal != Some(true) && s.role != Some(Role::Detect)),
            wal_sync: s.wal_sync.unwrap_or(WalSync::Always),
            wal_segment_bytes: s.wal_segment_mib.unwrap_or(64).saturating_mul(MIB as u64),
            checkpoint_interval: d(s.checkpoint_interval, 10),
            retention: d(s.retention, 7 * 24 * 3600),
            retention_max_bytes: s
                .retention_max_mib
                .unwrap_or(2048)
                .saturating_mul(MIB as u64),
            peers: s
                .peers
                .unwrap_or_default()
                .iter()
                .map(|p| p.trim().trim_end_matches('/').to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
            peers_dns: s.peers_dns.filter(|d| !d.trim().is_empty()),
            peer_timeout: d(s.peer_timeout, 2),
            forward: s
                .forward_otlp
                .as_deref()
                .map(|url| {
                    ForwardOptions::new(
                        url,
                        s.forward_protocol.unwrap_or(Protocol::Grpc),
                        s.forward_compression.unwrap_or(Compression::Gzip),
                        s.forward_queue_spans.unwrap_or(200_000),
                        d(s.forward_max_elapsed, 300),
                    )
                })
                .transpose()
                .map_err(ConfigError::Invalid)?,
        };
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if config.trace_idle.is_zero() {
            return invalid("trace_idle must be greater than 0");
        }
        if config.trace_max_age < config.trace_idle {
            return invalid("trace_max_age must be at least trace_idle");
        }
        if config.detect_interval.is_zero() {
            return invalid("detect_interval must be greater than 0");
        }
        match (config.role, &config.forward) {
            (Role::Assemble, None) => {
                return invalid(
                    "role = \"assemble\" hands its traces to the detect tier: set forward_otlp",
                )
            }
            (Role::Detect, Some(_)) => {
                return invalid("role = \"detect\" analyzes no trace: it has nothing to forward")
            }
            _ => {}
        }
        if config.max_buffered_spans == 0
            || config.store_max_traces == 0
            || config.memory_limit_bytes == 0
            || config.names_max_bytes == 0
        {
            return invalid(
                "max_buffered_spans, memory_limit_mib, names_max_mib and store_max_traces must be at least 1",
            );
        }
        if config.aggregate_max_entries == 0 || config.aggregate_max_hops == 0 {
            return invalid("aggregate_max_entries and aggregate_max_hops must be at least 1");
        }
        if config.otlp_max_message_bytes == 0 {
            return invalid("otlp_max_message_mib must be at least 1");
        }
        if config.conn_limits.max_connections == 0 || config.otlp_body_budget_bytes == 0 {
            return invalid("max_connections and otlp_body_budget_mib must be at least 1");
        }
        if config.otlp_body_budget_bytes < config.otlp_max_message_bytes {
            // A request of the largest size must fit, or it could never be taken.
            return invalid("otlp_body_budget_mib must be at least otlp_max_message_mib");
        }
        if config.conn_limits.header_read_timeout.is_zero()
            || config.body_read_timeout.is_zero()
            || config.request_timeout.is_zero()
        {
            return invalid(
                "header_read_timeout, body_read_timeout and request_timeout must be greater than 0",
            );
        }
        if [&config.api_token, &config.otlp_token]
            .into_iter()
            .flatten()
            .any(|t| !valid_token(t))
        {
            return invalid(
                "api_token and otlp_token must be non-empty visible ASCII without spaces",
            );
        }
        if config.wal_segment_bytes == 0 || config.retention_max_bytes == 0 {
            return invalid("wal_segment_mib and retention_max_mib must be at least 1");
        }
        if config.checkpoint_interval.is_zero() {
            return invalid("checkpoint_interval must be greater than 0");
        }
        check_peers(&config)?;
        Ok(config)
    }
}

impl Config {
    /// How far from the clock a span may end and still be taken
    /// (`future_skew`, `aggregate_retention`).
    pub fn time_bounds(&self) -> TimeBounds {
        TimeBounds {
            future: self.future_skew,
            past: self.aggregate_retention,
        }
    }

    /// The configuration as a TOML file that `serve --config` reads back to
    /// the same configuration: every setting, the `[detectors]` section with
    /// every threshold. The bearer tokens are not written (a line says
    /// which are set); routes are written as the detector compares them
    /// (without a trailing `/`). Fails only on a path TOML cannot hold (not
    /// UTF-8).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        let mib = |bytes: usize| Some(bytes / MIB);
        let duration = |d: Duration| Some(HumanDuration(d));
        let settings = Settings {
            otlp_grpc_addr: Some(self.otlp_grpc_addr),
            otlp_http_addr: Some(self.otlp_http_addr),
            api_addr: Some(self.api_addr),
            jaeger_addr: Some(self.jaeger_addr),
            trace_idle: duration(self.trace_idle),
            trace_max_age: duration(self.trace_max_age),
            late_grace: duration(self.late_grace),
            max_buffered_spans: Some(self.max_buffered_spans),
            memory_limit_mib: mib(self.memory_limit_bytes),
            names_max_mib: mib(self.names_max_bytes),
            store_max_traces: Some(self.store_max_traces),
            store_max_mib: mib(self.store_max_bytes),
            aggregate_retention: duration(self.aggregate_retention),
            aggregate_max_entries: Some(self.aggregate_max_entries),
            aggregate_max_hops: Some(self.aggregate_max_hops),
            future_skew: duration(self.future_skew),
            otlp_max_message_mib: mib(self.otlp_max_message_bytes),
            detect_interval: duration(self.detect_interval),
            health_routes: None,
            shutdown_timeout: duration(self.shutdown_timeout),
            max_connections: Some(self.conn_limits.max_connections),
            header_read_timeout: duration(self.conn_limits.header_read_timeout),
            body_read_timeout: duration(self.body_read_timeout),
            otlp_body_budget_mib: mib(self.otlp_body_budget_bytes),
            request_timeout: duration(self.request_timeout),
            api_token: None,
            otlp_token: None,
            tls_cert: self.tls.as_ref().map(|t| t.cert.clone()),
            tls_key: self.tls.as_ref().map(|t| t.key.clone()),
            log: Some(self.log.clone()),
            role: Some(self.role),
            data_dir: self.data_dir.clone(),
            no_wal: Some(self.data_dir.is_none()),
            wal_sync: Some(self.wal_sync),
            wal_segment_mib: Some(self.wal_segment_bytes / MIB as u64),
            checkpoint_interval: duration(self.checkpoint_interval),
            retention: duration(self.retention),
            retention_max_mib: Some(self.retention_max_bytes / MIB as u64),
            forward_otlp: self.forward.as_ref().map(|f| f.url.to_string()),
            forward_protocol: self.forward.as_ref().map(|f| f.protocol),
            forward_compression: self.forward.as_ref().map(|f| f.compression),
            forward_queue_spans: self.forward.as_ref().map(|f| f.queue_spans as usize),
            forward_max_elapsed: self.forward.as_ref().map(|f| HumanDuration(f.max_elapsed)),
            detectors: Some(self.detectors.clone()),
            peers: Some(self.peers.clone()),
            peers_dns: self.peers_dns.clone(),
            peer_timeout: duration(self.peer_timeout),
        };
        let mut out = String::from(
            "# hopscope's effective configuration (defaults, the file, the environment and\n\
             # the flags); `hopscope serve --config` reads it back. The [detectors] keys\n\
             # are described in docs/DETECTORS.md.\n",
        );
        for (name, token) in [
            ("api_token", &self.api_token),
            ("otlp_token", &self.otlp_token),
        ] {
            if token.is_some() {
                out.push_str(&format!("# {name} is set (not shown)\n"));
            }
        }
        out.push('\n');
        out.push_str(&toml::to_string(&settings)?);
        Ok(out)
    }
}

/// A token a client can send in an `authorization: Bearer` header (RFC 6750's
/// token characters, loosely: visible ASCII, no spaces).
fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_fill_the_rest() {
        let file: Settings = toml::from_str(
            "trace_idle = \"2s\"\nmax_buffered_spans = 50\napi_addr = \"127.0.0.1:1234\"",
        )
        .unwrap();
        let flags = Settings {
            trace_idle: Some("500ms".parse().unwrap()),
            ..Settings::default()
        };
        let c = Config::try_from(flags.or(file)).unwrap();
        assert_eq!(c.trace_idle, Duration::from_millis(500));
        assert_eq!(c.max_buffered_spans, 50);
        assert_eq!(c.api_addr.port(), 1234);
        assert_eq!(c.otlp_grpc_addr.port(), 4317);
        assert_eq!(c.otlp_http_addr.port(), 4318);
        assert_eq!(c.jaeger_addr.port(), 16686, "Jaeger query's own port");
        assert_eq!(c.trace_max_age, Duration::from_secs(300));
        assert_eq!(c.detect_interval, Duration::from_secs(5));
        assert_eq!(c.otlp_max_message_bytes, 4 << 20, "the Collector's default");
        assert_eq!((c.api_token.as_deref(), c.tls.as_ref()), (None, None));
    }

    #[test]
    fn tokens_and_tls_files_come_from_the_file_and_are_checked() {
        let file: Settings = toml::from_str(
            "api_token = \"s3cret\"\notlp_token = \"t0ken\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
        )
        .unwrap();
        let c = Config::try_from(file).unwrap();
        assert_eq!(c.api_token.as_deref(), Some("s3cret"));
        assert_eq!(c.otlp_token.as_deref(), Some("t0ken"));
        assert_eq!(c.tls.unwrap().key, PathBuf::from("k.pem"));
        for bad in [
            "api_token = \"\"",
            "otlp_token = \"two words\"",
            "tls_cert = \"c.pem\"",
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            assert!(
                matches!(Config::try_from(s), Err(ConfigError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn forwarding_is_off_by_default_and_its_url_is_checked_at_start() {
        assert_eq!(Config::default().forward, None);
        let s: Settings = toml::from_str(
            "forward_otlp = \"http://collector:4318\"\nforward_protocol = \"http\"\nforward_max_elapsed = \"1m\"",
        )
        .unwrap();
        let f = Config::try_from(s).unwrap().forward.unwrap();
        assert_eq!(
            f.url.as_str(),
            "http://collector:4318/v1/traces",
            "the OTLP rule for a URL without a path"
        );
        assert_eq!((f.compression, f.queue_spans), (Compression::Gzip, 200_000));
        assert_eq!(f.max_elapsed, Duration::from_secs(60));
        for (bad, says) in [
            ("forward_otlp = \"collector:4317\"", "http:// URL"),
            (
                "forward_otlp = \"https://tempo:4317\"",
                "https is not supported",
            ),
            ("forward_otlp = \"http://\"", "not a URL"),
            (
                "forward_otlp = \"http://a:1\"\nforward_queue_spans = 0",
                "forward_queue_spans",
            ),
        ] {
            let s: Settings = toml::from_str(bad).unwrap();
            match Config::try_from(s) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(says), "{bad}: {m}"),
                other => panic!("{bad}: accepted {:?}", other.map(|c| c.forward)),
            }
        }
        assert!(toml::from_str::<Settings>("forward_protocol = \"udp\"").is_err());
    }

    #[test]
    fn bad_values_are_reported_not_defaulted() {
        assert!(toml::from_str::<Settings>("trace_idle = \"ten\"").is_err());
        assert!(toml::from_str::<Settings>("trace_idel = \"1s\"").is_err());
        let s = Settings {
            trace_idle: Some("10s".parse().unwrap()),
            trace_max_age: Some("1s".parse().unwrap()),
            ..Settings::default()
        };
        assert!(matches!(Config::try_from(s), Err(ConfigError::Invalid(_))));
        let s = Settings {
            detect_interval: Some("0s".parse().unwrap()),
            ..Settings::default()
        };
        assert!(matches!(Config::try_from(s), Err(ConfigError::Invalid(_))));
        let s: Settings = toml::from_str("aggregate_max_hops = 0").unwrap();
        match Config::try_from(s) {
            Err(ConfigError::Invalid(m)) => assert!(m.contains("aggregate_max_hops"), "{m}"),
            other => panic!("accepted: {:?}", other.map(|c| c.aggregate_max_hops)),
        }
    }

    #[test]
    fn peers_are_plain_http_urls_and_discovery_is_host_and_port() {
        let file: Settings = toml::from_str(
            "peers = [\"http://hopscope-1.hopscope-headless:9980/\", \" \"]\n\
             peers_dns = \"hopscope-headless:9980\"\npeer_timeout = \"500ms\"",
        )
        .unwrap();
        let c = Config::try_from(file).unwrap();
        assert_eq!(c.peers, ["http://hopscope-1.hopscope-headless:9980"]);
        assert_eq!(c.peers_dns.as_deref(), Some("hopscope-headless:9980"));
        assert_eq!(c.peer_timeout, Duration::from_millis(500));
        assert_eq!(Config::default().peer_timeout, Duration::from_secs(2));
        let back: Settings = toml::from_str(&c.to_toml().unwrap()).unwrap();
        assert_eq!(Config::try_from(back).unwrap().peers, c.peers);
        for (bad, key) in [
            ("peers = [\"https://a:9980\"]", "peers"),
            ("peers = [\"a:9980\"]", "peers"),
            ("peers_dns = \"headless\"", "peers_dns"),
            ("peers_dns = \":9980\"", "peers_dns"),
            ("peer_timeout = \"0s\"", "peer_timeout"),
            (
                "peers = [\"http://a:1\"]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
                "plain HTTP",
            ),
        ] {
            match Config::try_from(toml::from_str::<Settings>(bad).unwrap()) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(key), "{bad}: {m}"),
                other => panic!("{bad} accepted: {:?}", other.map(|c| c.peers)),
            }
        }
    }

    #[test]
    fn health_routes_replace_the_defaults_and_bad_ones_are_explained() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            settings: Settings,
        }
        let flags = Cli::parse_from(["hopscope", "--health-routes", "/internal/up,/api/status"]);
        let file: Settings = toml::from_str("health_routes = [\"/healthz\"]").unwrap();
        let c = Config::try_from(flags.settings.or(file.clone())).unwrap();
        assert_eq!(
            c.detectors.slow_health_check.routes,
            HealthRoutes::new(["/internal/up", "/api/status"]).unwrap()
        );
        let c = Config::try_from(file).unwrap();
        assert_eq!(
            c.detectors.slow_health_check.routes,
            HealthRoutes::new(["/healthz"]).unwrap()
        );
        assert_eq!(
            Config::default().detectors.slow_health_check.routes,
            HealthRoutes::default()
        );
        let off: Settings = toml::from_str("health_routes = []").unwrap();
        assert_eq!(
            Config::try_from(off)
                .unwrap()
                .detectors
                .slow_health_check
                .routes,
            HealthRoutes::new([""; 0]).unwrap()
        );
        let bad: Settings = toml::from_str("health_routes = [\"/healthz\", \"readyz\"]").unwrap();
        let message = Config::try_from(bad).unwrap_err().to_string();
        assert!(
            message.starts_with("health_routes: `readyz` is not a health route"),
            "{message}"
        );
    }

    #[test]
    fn client_limits_must_leave_room_for_the_largest_request() {
        let c = Config::default();
        assert_eq!(c.conn_limits.max_connections, 1024);
        assert_eq!(c.otlp_body_budget_bytes, 64 << 20);
        for bad in [
            "otlp_body_budget_mib = 2\notlp_max_message_mib = 4",
            "max_connections = 0",
            "header_read_timeout = \"0s\"",
        ] {
            let settings: Settings = toml::from_str(bad).unwrap();
            assert!(Config::try_from(settings).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_detectors_section_sets_thresholds_and_bad_ones_are_refused() {
        let file: Settings = toml::from_str(
            "[detectors.slow_query]\nmin_ms = 20\n[detectors.slow_health_check]\nroutes = [\"/up\"]\nlimit_ms = 50",
        )
        .unwrap();
        let c = Config::try_from(file.clone()).unwrap();
        assert_eq!(c.detectors.slow_query.min_ms, 20.0);
        assert_eq!(
            c.detectors.slow_query.absolute_ms, 500.0,
            "the rest default"
        );
        assert_eq!(c.detectors.slow_health_check.limit_ms, 50.0);
        assert_eq!(
            c.detectors.slow_health_check.routes,
            HealthRoutes::new(["/up"]).unwrap()
        );
        // The flag's routes win over the section's.
        let flags = Settings {
            health_routes: Some(vec!["/flag".to_owned()]),
            ..Settings::default()
        };
        let c = Config::try_from(flags.or(file)).unwrap();
        assert_eq!(
            c.detectors.slow_health_check.routes,
            HealthRoutes::new(["/flag"]).unwrap()
        );
        let bad: Settings = toml::from_str("[detectors.pool]\nnear_ceiling = 1.5").unwrap();
        assert_eq!(
            Config::try_from(bad).unwrap_err().to_string(),
            "detectors.pool.near_ceiling = 1.5: must be a fraction in (0, 1]"
        );
        let unknown = toml::from_str::<Settings>("[detectors.pool]\nnear_ceilling = 0.5");
        assert!(unknown.unwrap_err().to_string().contains("near_ceilling"));
        let route = toml::from_str::<Settings>("[detectors.slow_health_check]\nroutes = [\"up\"]");
        assert!(route
            .unwrap_err()
            .to_string()
            .contains("`up` is not a health route"));
    }

    #[test]
    fn the_effective_configuration_reads_back_as_itself() {
        let file: Settings = toml::from_str(
            "trace_idle = \"2s\"\nwal_sync = \"250ms\"\ndata_dir = \"/srv/h\"\napi_token = \"s3cret\"\n\
             [detectors.cold_start]\nfactor = 2.5",
        )
        .unwrap();
        let c = Config::try_from(file).unwrap();
        let text = c.to_toml().unwrap();
        assert!(text.contains("# api_token is set (not shown)"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("[detectors.cold_start]\nfirst_requests = 3\nfactor = 2.5"),
            "{text}"
        );
        let back = Config::try_from(toml::from_str::<Settings>(&text).unwrap()).unwrap();
        assert_eq!(
            back.to_toml().unwrap(),
            text.replace("# api_token is set (not shown)\n", "")
        );
        assert_eq!(back.detectors, c.detectors);
        assert_eq!(
            (back.trace_idle, back.wal_sync, back.data_dir),
            (c.trace_idle, c.wal_sync, c.data_dir)
        );
    }

    #[test]
    fn the_log_is_off_unless_a_data_dir_is_given_and_no_wal_wins() {
        assert!(Config::default().data_dir.is_none(), "library default: off");
        let with_dir = Settings {
            data_dir: Some("/srv/hopscope".into()),
            ..Settings::default()
        };
        assert_eq!(
            Config::try_from(with_dir.clone()).unwrap().data_dir,
            Some(PathBuf::from("/srv/hopscope"))
        );
        let off = Settings {
            no_wal: Some(true),
            ..Settings::default()
        };
        assert!(Config::try_from(off.or(with_dir))
            .unwrap()
            .data_dir
            .is_none());
        let file: Settings = toml::from_str("wal_sync = \"250ms\"\nno_wal = false").unwrap();
        let c = Config::try_from(file).unwrap();
        assert_eq!(c.wal_sync, WalSync::Interval(Duration::from_millis(250)));
        assert_eq!(Config::default().wal_sync, WalSync::Always);
        assert!(toml::from_str::<Settings>("wal_sync = \"sometimes\"").is_err());
        assert!(Settings::serve_defaults().data_dir.is_some());
    }

    #[test]
    fn an_assembling_replica_needs_somewhere_to_forward_and_a_detect_one_forwards_nothing() {
        let parse = |text: &str| Config::try_from(toml::from_str::<Settings>(text).unwrap());
        let err = parse("role = \"assemble\"").unwrap_err().to_string();
        assert!(err.contains("forward_otlp"), "{err}");
        let c = parse("role = \"assemble\"\nforward_otlp = \"http://127.0.0.1:4317\"").unwrap();
        assert_eq!(c.role, Role::Assemble);
        assert!(!c.role.detects() && c.role.assembles());
        let err = parse("role = \"detect\"\nforward_otlp = \"http://127.0.0.1:4317\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nothing to forward"), "{err}");
        let c = parse("role = \"detect\"\ndata_dir = \"/tmp/x\"").unwrap();
        assert_eq!(c.data_dir, None, "a detect replica keeps no log");
        let unknown = toml::from_str::<Settings>("role = \"both\"").unwrap_err();
        assert!(unknown
            .to_string()
            .contains("expected one of `all`, `assemble`, `detect`"));
    }
}
