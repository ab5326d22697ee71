//! Every knob, in two steps: raw [`Settings`] from flags, `HOPSCOPE_*` environment
//! variables and an optional TOML file (in that order of precedence), then one
//! validated, immutable [`Config`]. Only this module reads the environment
//! (through clap).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

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

/// Raw settings of `hopscope serve`. Each is a flag, an environment variable and
/// a key of the TOML file (same name, with underscores).
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
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
    pub trace_idle: Option<HumanDuration>,

    /// A trace is complete at this age even if spans still arrive [default: 5m]
    #[arg(long, env = "HOPSCOPE_TRACE_MAX_AGE", value_name = "DURATION")]
    pub trace_max_age: Option<HumanDuration>,

    /// Spans arriving this long after their trace was analyzed are merged and the
    /// trace analyzed again; later ones start a new partial trace [default: 60s]
    #[arg(long, env = "HOPSCOPE_LATE_GRACE", value_name = "DURATION")]
    pub late_grace: Option<HumanDuration>,

    /// Most spans held in the in-flight buffer; past it the oldest traces are
    /// analyzed early (and counted) [default: 1000000]
    #[arg(long, env = "HOPSCOPE_MAX_BUFFERED_SPANS", value_name = "N")]
    pub max_buffered_spans: Option<usize>,

    /// Memory budget for buffered spans and the requests being decoded, in
    /// MiB; past it exports are refused with a retryable answer (gRPC
    /// UNAVAILABLE with RetryInfo) and counted [default: 512]
    #[arg(long, env = "HOPSCOPE_MEMORY_LIMIT_MIB", value_name = "MIB")]
    pub memory_limit_mib: Option<usize>,

    /// Most completed traces kept for the API [default: 10000]
    #[arg(long, env = "HOPSCOPE_STORE_MAX_TRACES", value_name = "N")]
    pub store_max_traces: Option<usize>,

    /// Most memory (estimated) that completed traces may hold, in MiB [default: 512]
    #[arg(long, env = "HOPSCOPE_STORE_MAX_MIB", value_name = "MIB")]
    pub store_max_mib: Option<usize>,

    /// How long hop aggregates are kept, by trace start time [default: 24h]
    #[arg(long, env = "HOPSCOPE_AGGREGATE_RETENTION", value_name = "DURATION")]
    pub aggregate_retention: Option<HumanDuration>,

    /// Largest OTLP request accepted, in MiB: a gRPC message, or an HTTP body
    /// both as received and after decompression; larger ones are refused (gRPC
    /// OUT_OF_RANGE, HTTP 413) and counted [default: 4, as the OpenTelemetry
    /// Collector]
    #[arg(long, env = "HOPSCOPE_OTLP_MAX_MESSAGE_MIB", value_name = "MIB")]
    pub otlp_max_message_mib: Option<usize>,

    /// How often the cross-trace detectors (timeout inference, budgets, gateway
    /// limits, headroom) run over the call window [default: 5s]
    #[arg(long, env = "HOPSCOPE_DETECT_INTERVAL", value_name = "DURATION")]
    pub detect_interval: Option<HumanDuration>,

    /// How long shutdown may take to analyze what is buffered [default: 30s]
    #[arg(long, env = "HOPSCOPE_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    pub shutdown_timeout: Option<HumanDuration>,

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
}

impl Settings {
    /// Reads a TOML file of settings.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
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
            store_max_traces: self.store_max_traces.or(fallback.store_max_traces),
            store_max_mib: self.store_max_mib.or(fallback.store_max_mib),
            aggregate_retention: self.aggregate_retention.or(fallback.aggregate_retention),
            otlp_max_message_mib: self.otlp_max_message_mib.or(fallback.otlp_max_message_mib),
            detect_interval: self.detect_interval.or(fallback.detect_interval),
            shutdown_timeout: self.shutdown_timeout.or(fallback.shutdown_timeout),
            log: self.log.or(fallback.log),
            api_token: self.api_token.or(fallback.api_token),
            otlp_token: self.otlp_token.or(fallback.otlp_token),
            tls_cert: self.tls_cert.or(fallback.tls_cert),
            tls_key: self.tls_key.or(fallback.tls_key),
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
    pub store_max_traces: usize,
    pub store_max_bytes: usize,
    pub aggregate_retention: Duration,
    pub otlp_max_message_bytes: usize,
    pub detect_interval: Duration,
    pub shutdown_timeout: Duration,
    pub log: String,
    /// The API's bearer token, if it requires one.
    pub api_token: Option<String>,
    /// The OTLP receivers' bearer token, if they require one.
    pub otlp_token: Option<String>,
    /// PEM certificate chain and key files: every listener serves TLS.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
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
            store_max_traces: s.store_max_traces.unwrap_or(10_000),
            store_max_bytes: s.store_max_mib.unwrap_or(512).saturating_mul(MIB),
            aggregate_retention: d(s.aggregate_retention, 24 * 3600),
            otlp_max_message_bytes: s.otlp_max_message_mib.unwrap_or(4).saturating_mul(MIB),
            detect_interval: d(s.detect_interval, 5),
            shutdown_timeout: d(s.shutdown_timeout, 30),
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
        if config.max_buffered_spans == 0
            || config.store_max_traces == 0
            || config.memory_limit_bytes == 0
        {
            return invalid(
                "max_buffered_spans, memory_limit_mib and store_max_traces must be at least 1",
            );
        }
        if config.otlp_max_message_bytes == 0 {
            return invalid("otlp_max_message_mib must be at least 1");
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
        Ok(config)
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
    }
}
