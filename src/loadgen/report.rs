//! What a run measured, as the CLI prints it, and what should fail it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::probe::DaemonUsage;
use super::send::Totals;
use super::Protocol;

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
    /// With the daemon's pid.
    pub daemon: Option<DaemonUsage>,
    /// With the daemon's API: how much its `spans_accepted` counter grew.
    pub daemon_accepted: Option<u64>,
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

    /// What should fail the run: spans refused (unless `allow_refused`), and
    /// spans acknowledged that the daemon did not count (always).
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
        out
    }
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
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

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target          {} {}, {} connection{}, {}, {} spans per request ({} spans per trace), gzip {}",
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
        )?;
        writeln!(f, "elapsed         {:.2} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "sent            {} spans in {} request{}",
            thousands(self.sent),
            thousands(self.requests),
            if self.requests == 1 { "" } else { "s" }
        )?;
        writeln!(
            f,
            "accepted        {} spans/s ({} spans)",
            rate(self.accepted_per_sec()),
            thousands(self.accepted)
        )?;
        writeln!(
            f,
            "refused         {} spans/s ({} spans; {} retries, {} spans given up)",
            rate(self.refused_per_sec()),
            thousands(self.refused),
            thousands(self.retries),
            thousands(self.given_up)
        )?;
        match &self.latency {
            Some(l) => writeln!(
                f,
                "export latency  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                ms(l.p50),
                ms(l.p99),
                ms(l.max)
            )?,
            None => writeln!(f, "export latency  no successful export")?,
        }
        if !self.failures.is_empty() {
            let list: Vec<String> = self
                .failures
                .iter()
                .map(|(code, n)| format!("{code} ×{}", thousands(*n)))
                .collect();
            writeln!(f, "failed attempts {}", list.join(", "))?;
        }
        if let Some(d) = &self.daemon {
            writeln!(
                f,
                "daemon          pid {}: {:.2} CPU s ({} accepted spans per CPU second), peak RSS {:.1} MiB, RSS {:.1} MiB",
                d.pid,
                d.cpu_seconds,
                rate(self.accepted as f64 / d.cpu_seconds.max(0.01)),
                mib(d.peak_rss_kib),
                mib(d.rss_kib)
            )?;
        }
        if let Some(counted) = self.daemon_accepted {
            writeln!(
                f,
                "daemon counter  spans_accepted grew by {} ({})",
                thousands(counted),
                if counted >= self.accepted {
                    "all acknowledged spans counted"
                } else {
                    "FEWER than acknowledged"
                }
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
}
