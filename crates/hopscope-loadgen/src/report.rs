//! What a run measured, as the CLI prints it, and what should fail it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::baseline::DecodeBaseline;
use super::probe::{AnalysisWait, ApiLatency, DaemonUsage};
use super::send::Totals;
use super::Protocol;

/// Below this share of its wall time on a CPU, the decode baseline's thread was
/// crowded out and its rate is reported as too low.
const BASELINE_MIN_ON_CPU: f64 = 0.9;

/// The outcome of [`super::run`].
#[derive(Debug, Clone)]
pub struct Report {
    pub protocol: Protocol,
    pub endpoint: String,
    pub connections: usize,
    pub gzip: bool,
    /// The target rate in spans per second; `None`: flat out.
    pub rate: Option<f64>,
    /// Spans in each request (whole traces).
    pub spans_per_request: u64,
    pub spans_per_trace: usize,
    /// From the first request sent to the last answer.
    pub elapsed: Duration,
    /// Export requests sent (retries not counted).
    pub requests: u64,
    /// Spans sent (retries not counted).
    pub sent: u64,
    /// Spans the daemon acknowledged.
    pub accepted: u64,
    /// Spans refused: rejected through partial success, or in a failed attempt
    /// (counted again for each retry).
    pub refused: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// Spans of requests that still failed after the retries, or could not be retried.
    pub given_up: u64,
    /// Failed attempts by gRPC code, HTTP status or cause.
    pub failures: BTreeMap<String, u64>,
    /// Of the successful exports; `None` when there was none.
    pub latency: Option<Latency>,
    /// With the daemon's pid: its usage from the first request sent to the
    /// last answer.
    pub daemon: Option<DaemonUsage>,
    /// With the daemon's API: how much its `spans_accepted` counter grew.
    pub daemon_accepted: Option<u64>,
    /// When waiting for the daemon to analyze what it accepted.
    pub analysis: Option<AnalysisWait>,
    /// Raw prost decoding of the run's requests on one thread, before sending.
    pub decode: Option<DecodeBaseline>,
    /// Each API path requested during the run.
    pub api_latency: Vec<ApiLatency>,
}

/// The daemon's accepted spans per CPU-second over raw prost-decoded spans per
/// second on one core: how much of a core's decoding capacity is left after
/// everything else the daemon does with a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    pub value: f64,
    /// Whether the daemon's CPU time includes analyzing every trace it accepted
    /// (otherwise it is that of the sending window only).
    pub includes_analysis: bool,
}

/// Export latency quantiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// Nearest-rank quantiles of `samples`; `None` when empty.
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        samples.sort_unstable();
        let at = |q: f64| {
            samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        (!samples.is_empty()).then(|| Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// Why a load test failed although it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The daemon refused spans (backpressure, malformed, or unreachable).
    Refused { spans: u64, given_up: u64 },
    /// The daemon counted fewer accepted spans than it acknowledged.
    Lost { acknowledged: u64, counted: u64 },
    /// The daemon still held spans, or traces waiting for analysis, when the
    /// wait for analysis gave up.
    AnalysisTimedOut {
        waited: Duration,
        buffered_spans: u64,
        analysis_pending: u64,
    },
    /// An API path answered with a status outside 2xx, or not at all.
    ApiErrors {
        path: String,
        non_2xx: u64,
        failed: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Refused { spans, given_up } => write!(
                f,
                "the daemon refused {} spans ({} of them given up after retries)",
                thousands(*spans),
                thousands(*given_up)
            ),
            Problem::Lost {
                acknowledged,
                counted,
            } => write!(
                f,
                "the daemon acknowledged {} spans but its spans_accepted counter grew by {}: {} lost",
                thousands(*acknowledged),
                thousands(*counted),
                thousands(acknowledged - counted)
            ),
            Problem::AnalysisTimedOut {
                waited,
                buffered_spans,
                analysis_pending,
            } => write!(
                f,
                "after waiting {:.1} s for analysis the daemon still buffered {} spans and had {} \
                 traces waiting for analysis (is the wait shorter than its --trace-idle?)",
                waited.as_secs_f64(),
                thousands(*buffered_spans),
                thousands(*analysis_pending)
            ),
            Problem::ApiErrors {
                path,
                non_2xx,
                failed,
            } => write!(
                f,
                "GET {path}: {} answers outside 2xx, {} without an answer",
                thousands(*non_2xx),
                thousands(*failed)
            ),
        }
    }
}

impl Report {
    /// Accepted spans per second of the run.
    pub fn accepted_per_sec(&self) -> f64 {
        per_sec(self.accepted, self.elapsed)
    }

    /// Refused spans per second of the run.
    pub fn refused_per_sec(&self) -> f64 {
        per_sec(self.refused, self.elapsed)
    }

    /// Accepted spans per CPU-second of the daemon during the sending window;
    /// `None` without its pid or when it used no measurable CPU time.
    pub fn spans_per_daemon_cpu_second(&self) -> Option<f64> {
        self.daemon
            .as_ref()
            .and_then(|d| per_cpu_second(self.accepted, d.cpu_seconds))
    }

    /// Accepted spans per CPU-second of the daemon from the start of sending
    /// until it had analyzed them all; `None` unless the wait for analysis
    /// completed.
    pub fn spans_per_daemon_cpu_second_with_analysis(&self) -> Option<f64> {
        match &self.analysis {
            Some(AnalysisWait::Done { daemon, .. }) => {
                per_cpu_second(self.accepted, daemon.cpu_seconds)
            }
            _ => None,
        }
    }

    /// The daemon's spans per CPU-second (including analysis when the wait for
    /// it completed) over the raw prost decode rate; `None` without both.
    pub fn ratio_to_raw_decode(&self) -> Option<Ratio> {
        let decode = self.decode.as_ref()?.spans_per_sec();
        let (daemon, includes_analysis) = match self.spans_per_daemon_cpu_second_with_analysis() {
            Some(rate) => (rate, true),
            None => (self.spans_per_daemon_cpu_second()?, false),
        };
        Some(Ratio {
            value: daemon / decode,
            includes_analysis,
        })
    }

    /// What should fail the run: spans refused (unless `allow_refused`); and,
    /// always, spans acknowledged that the daemon did not count, a wait for
    /// analysis that gave up, and API probes that failed.
    pub fn problems(&self, allow_refused: bool) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.refused > 0 && !allow_refused {
            out.push(Problem::Refused {
                spans: self.refused,
                given_up: self.given_up,
            });
        }
        if let Some(counted) = self.daemon_accepted {
            if counted < self.accepted {
                out.push(Problem::Lost {
                    acknowledged: self.accepted,
                    counted,
                });
            }
        }
        if let Some(AnalysisWait::TimedOut {
            waited,
            buffered_spans,
            analysis_pending,
        }) = self.analysis
        {
            out.push(Problem::AnalysisTimedOut {
                waited,
                buffered_spans,
                analysis_pending,
            });
        }
        for probe in &self.api_latency {
            if probe.non_2xx > 0 || probe.failed > 0 {
                out.push(Problem::ApiErrors {
                    path: probe.path.clone(),
                    non_2xx: probe.non_2xx,
                    failed: probe.failed,
                });
            }
        }
        out
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// `None` when no CPU time was measured (the clock ticks are 10 ms).
fn per_cpu_second(spans: u64, cpu_seconds: f64) -> Option<f64> {
    (cpu_seconds > 0.0).then(|| spans as f64 / cpu_seconds)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(per_sec: f64) -> String {
    thousands(per_sec.round() as u64)
}

/// Width of the report's label column.
const LABEL: usize = 20;

/// `p50 …, p99 …, max …` in milliseconds.
fn quantiles(l: &Latency) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(l.p50),
        ms(l.p99),
        ms(l.max)
    )
}

/// `N spans per CPU second`, or why there is no such figure.
fn per_cpu(spans_per_cpu_second: Option<f64>) -> String {
    match spans_per_cpu_second {
        Some(r) => format!("{} spans per CPU second", rate(r)),
        None => "too little CPU time to measure".to_owned(),
    }
}

fn usage(d: &DaemonUsage) -> String {
    format!(
        "{:.2} CPU s, peak RSS {:.1} MiB, RSS {:.1} MiB",
        d.cpu_seconds,
        mib(d.peak_rss_kib),
        mib(d.rss_kib)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = |label: &str, text: fmt::Arguments<'_>| writeln!(f, "{label:<LABEL$}{text}");
        line(
            "target",
            format_args!(
                "{} {}, {} connection{}, {}, {} spans per request ({} spans per trace), gzip {}",
                self.protocol,
                self.endpoint,
                self.connections,
                if self.connections == 1 { "" } else { "s" },
                match self.rate {
                    Some(r) => format!("at {} spans/s", rate(r)),
                    None => "flat out".to_owned(),
                },
                thousands(self.spans_per_request),
                self.spans_per_trace,
                if self.gzip { "on" } else { "off" }
            ),
        )?;
        line(
            "elapsed",
            format_args!("{:.2} s", self.elapsed.as_secs_f64()),
        )?;
        line(
            "sent",
            format_args!(
                "{} spans in {} request{}",
                thousands(self.sent),
                thousands(self.requests),
                if self.requests == 1 { "" } else { "s" }
            ),
        )?;
        line(
            "accepted",
            format_args!(
                "{} spans/s ({} spans)",
                rate(self.accepted_per_sec()),
                thousands(self.accepted)
            ),
        )?;
        line(
            "refused",
            format_args!(
                "{} spans/s ({} spans; {} retries, {} spans given up)",
                rate(self.refused_per_sec()),
                thousands(self.refused),
                thousands(self.retries),
                thousands(self.given_up)
            ),
        )?;
        match &self.latency {
            Some(l) => line("export latency", format_args!("{}", quantiles(l)))?,
            None => line("export latency", format_args!("no successful export"))?,
        }
        if !self.failures.is_empty() {
            let list: Vec<String> = self
                .failures
                .iter()
                .map(|(code, n)| format!("{code} ×{}", thousands(*n)))
                .collect();
            line("failed attempts", format_args!("{}", list.join(", ")))?;
        }
        for p in &self.api_latency {
            line(
                "API latency",
                format_args!(
                    "GET {}: {} requests every {} ms, {}; {} non-2xx, {} failed",
                    p.path,
                    thousands(p.requests),
                    p.every.as_millis(),
                    p.latency
                        .as_ref()
                        .map_or_else(|| "no answer".to_owned(), quantiles),
                    thousands(p.non_2xx),
                    thousands(p.failed)
                ),
            )?;
        }
        if let Some(counted) = self.daemon_accepted {
            line(
                "daemon counter",
                format_args!(
                    "spans_accepted grew by {} ({})",
                    thousands(counted),
                    if counted >= self.accepted {
                        "all acknowledged spans counted"
                    } else {
                        "FEWER than acknowledged"
                    }
                ),
            )?;
        }
        if let Some(d) = &self.daemon {
            line(
                "daemon ingest",
                format_args!(
                    "pid {} while sending: {} ({})",
                    d.pid,
                    usage(d),
                    per_cpu(self.spans_per_daemon_cpu_second())
                ),
            )?;
        }
        match &self.analysis {
            Some(AnalysisWait::Done { waited, daemon }) => line(
                "daemon + analysis",
                format_args!(
                    "until all was analyzed, {:.2} s after the last answer: {} ({})",
                    waited.as_secs_f64(),
                    usage(daemon),
                    per_cpu(self.spans_per_daemon_cpu_second_with_analysis())
                ),
            )?,
            Some(AnalysisWait::TimedOut {
                waited,
                buffered_spans,
                analysis_pending,
            }) => line(
                "daemon + analysis",
                format_args!(
                    "GAVE UP after {:.2} s with {} spans buffered and {} traces waiting for analysis",
                    waited.as_secs_f64(),
                    thousands(*buffered_spans),
                    thousands(*analysis_pending)
                ),
            )?,
            None => {}
        }
        if let Some(b) = &self.decode {
            let crowded = match b.on_cpu {
                Some(share) if share < BASELINE_MIN_ON_CPU => format!(
                    "; its thread was on a CPU {:.0} % of the time, so this is too low",
                    share * 100.0
                ),
                _ => String::new(),
            };
            line(
                "raw prost decode",
                format_args!(
                    "{} spans/s (one core; {} distinct requests decoded {} times in {:.2} s before sending{crowded})",
                    rate(b.spans_per_sec()),
                    thousands(b.requests as u64),
                    thousands(b.decodes),
                    b.elapsed.as_secs_f64()
                ),
            )?;
        }
        if let Some(r) = self.ratio_to_raw_decode() {
            line(
                "ratio to raw decode",
                format_args!(
                    "{:.2} ({})",
                    r.value,
                    if r.includes_analysis {
                        "daemon spans per CPU-second incl. analysis / raw decoded spans per CPU-second"
                    } else {
                        "ingest only: daemon spans per CPU-second while sending / raw decoded spans \
                         per CPU-second; --wait-analysis includes analysis"
                    }
                ),
            )?;
        }
        Ok(())
    }
}

/// Rates over the last interval of a running load test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the run started.
    pub elapsed: Duration,
    /// Spans sent so far.
    pub sent: u64,
    pub accepted_per_sec: f64,
    pub refused_per_sec: f64,
}

impl Progress {
    pub(super) fn between(
        start: Instant,
        last: &(Instant, Totals),
        now: &(Instant, Totals),
    ) -> Progress {
        let interval = now.0 - last.0;
        Progress {
            elapsed: now.0 - start,
            sent: now.1.sent,
            accepted_per_sec: per_sec(now.1.accepted - last.1.accepted, interval),
            refused_per_sec: per_sec(now.1.refused - last.1.refused, interval),
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>6.1} s  sent {:>12}  accepted {:>10} spans/s  refused {:>8} spans/s",
            self.elapsed.as_secs_f64(),
            thousands(self.sent),
            rate(self.accepted_per_sec),
            rate(self.refused_per_sec)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_thousands() {
        let samples = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(samples).unwrap();
        assert_eq!(
            (l.p50, l.p99, l.max),
            (
                Duration::from_millis(50),
                Duration::from_millis(99),
                Duration::from_millis(100)
            )
        );
        assert_eq!(Latency::of(Vec::new()), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    fn usage(cpu_seconds: f64) -> DaemonUsage {
        DaemonUsage {
            pid: 7,
            cpu_seconds,
            peak_rss_kib: 2048,
            rss_kib: 1024,
        }
    }

    fn report() -> Report {
        Report {
            protocol: Protocol::Grpc,
            endpoint: "http://127.0.0.1:4317".into(),
            connections: 4,
            gzip: false,
            rate: None,
            spans_per_request: 518,
            spans_per_trace: 37,
            elapsed: Duration::from_secs(2),
            requests: 1_000,
            sent: 518_000,
            accepted: 518_000,
            refused: 0,
            retries: 0,
            given_up: 0,
            failures: BTreeMap::new(),
            latency: None,
            daemon: Some(usage(2.0)),
            daemon_accepted: Some(518_000),
            analysis: None,
            decode: Some(DecodeBaseline {
                requests: 100,
                decodes: 2_000,
                spans: 1_036_000,
                elapsed: Duration::from_secs(1),
                on_cpu: Some(1.0),
            }),
            api_latency: Vec::new(),
        }
    }

    #[test]
    fn the_ratio_includes_analysis_when_the_wait_completed_and_says_so() {
        let mut r = report();
        let ingest = r.ratio_to_raw_decode().unwrap();
        assert_eq!((ingest.value, ingest.includes_analysis), (0.25, false));
        assert!(
            r.to_string()
                .contains("ratio to raw decode 0.25 (ingest only"),
            "{r}"
        );

        r.analysis = Some(AnalysisWait::Done {
            waited: Duration::from_secs(3),
            daemon: usage(2.5),
        });
        let total = r.ratio_to_raw_decode().unwrap();
        assert_eq!((total.value, total.includes_analysis), (0.2, true));
        let text = r.to_string();
        for line in [
            "daemon ingest       pid 7 while sending: 2.00 CPU s, peak RSS 2.0 MiB, RSS 1.0 MiB (259,000 spans per CPU second)",
            "daemon + analysis   until all was analyzed, 3.00 s after the last answer: 2.50 CPU s",
            "(207,200 spans per CPU second)",
            "raw prost decode    1,036,000 spans/s (one core; 100 distinct requests decoded 2,000 times in 1.00 s before sending)",
            "ratio to raw decode 0.20 (daemon spans per CPU-second incl. analysis / raw decoded spans per CPU-second)",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }

        // No CPU time measured: no ratio rather than an infinite one.
        r.analysis = Some(AnalysisWait::Done {
            waited: Duration::from_secs(3),
            daemon: usage(0.0),
        });
        r.daemon = Some(usage(0.0));
        assert_eq!(r.ratio_to_raw_decode(), None);
        assert!(r.to_string().contains("too little CPU time to measure"));

        // A crowded-out baseline is flagged.
        r.decode.as_mut().unwrap().on_cpu = Some(0.5);
        assert!(r.to_string().contains("on a CPU 50 % of the time"), "{r}");
    }
}
