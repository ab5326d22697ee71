//! What the load generator reads about the daemon: its CPU time and memory from
//! `/proc` (Linux); its counters from its HTTP API (spans acknowledged but not
//! counted, and whether everything sent was analyzed); and the latency of API
//! requests while it ingests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::{StatusCode, Uri};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::Latency;
use super::send::{authority, chain, http1};
use super::LoadgenError;

/// Clock ticks per second of `utime` and `stime` in `/proc/PID/stat`. It is
/// `sysconf(_SC_CLK_TCK)`, which needs libc; Linux has reported 100 on every
/// mainstream architecture for decades, so it is assumed.
pub(super) const CLOCK_TICKS_PER_SEC: f64 = 100.0;
/// How long an API request may take before it counts as failed.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the daemon's counters are read while waiting for analysis.
const ANALYSIS_POLL: Duration = Duration::from_millis(100);

/// What the daemon's process used during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonUsage {
    pub pid: u32,
    /// User and system CPU time consumed since the run started sending.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process's life so far (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Resident memory when this was read (`VmRSS`), in KiB.
    pub rss_kib: u64,
}

/// The daemon's CPU time at the start of a run.
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSample {
    pid: u32,
    ticks: u64,
}

impl CpuSample {
    pub(super) fn read(pid: u32) -> Result<CpuSample, LoadgenError> {
        Ok(CpuSample {
            pid,
            ticks: cpu_ticks(pid)?,
        })
    }

    /// The usage since this sample.
    pub(super) fn usage(self) -> Result<DaemonUsage, LoadgenError> {
        let ticks = cpu_ticks(self.pid)?;
        let memory = Memory::read(self.pid)?;
        Ok(DaemonUsage {
            pid: self.pid,
            cpu_seconds: ticks.saturating_sub(self.ticks) as f64 / CLOCK_TICKS_PER_SEC,
            peak_rss_kib: memory.peak_rss_kib,
            rss_kib: memory.rss_kib,
        })
    }
}

/// A process's resident memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory {
    /// `VmRSS`, in KiB.
    pub(super) rss_kib: u64,
    /// `VmHWM`, in KiB.
    pub(super) peak_rss_kib: u64,
}

impl Memory {
    pub(super) fn read(pid: u32) -> Result<Memory, LoadgenError> {
        let status = read(pid, "status")?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: kib("VmRSS:"),
            peak_rss_kib: kib("VmHWM:"),
        })
    }
}

fn read(pid: u32, file: &'static str) -> Result<String, LoadgenError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| LoadgenError::Proc {
        pid,
        file,
        source,
    })
}

/// `utime + stime` of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, LoadgenError> {
    utime_stime(&read(pid, "stat")?).ok_or_else(|| LoadgenError::Proc {
        pid,
        file: "stat",
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no utime and stime"),
    })
}

/// `utime + stime` in clock ticks from the text of a `/proc/.../stat` file.
pub(super) fn utime_stime(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces; utime and
    // stime are fields 14 and 15, the 12th and 13th after it.
    let mut after_name = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = after_name.next()?.parse().ok()?;
    let stime: u64 = after_name.next()?.parse().ok()?;
    Some(utime + stime)
}

/// One keep-alive HTTP/1.1 connection to the daemon's API, opened again when it
/// breaks.
pub(super) struct ApiClient {
    uri: Uri,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl ApiClient {
    /// Connects to `base` (`http://host:port`).
    pub(super) async fn connect(base: &str) -> Result<ApiClient, LoadgenError> {
        let failed = |message: String| LoadgenError::Api {
            url: base.to_owned(),
            message,
        };
        let uri: Uri = base
            .parse()
            .map_err(|e| failed(format!("not a URL: {e}")))?;
        let sender = http1(&uri).await.map_err(failed)?;
        Ok(ApiClient {
            uri,
            sender: Some(sender),
        })
    }

    /// The full URL of `path`.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.uri.to_string().trim_end_matches('/'))
    }

    /// GETs `path` (with its query): the answer's status and body.
    pub(super) async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            slot => slot.insert(http1(&self.uri).await?),
        };
        let request =
            hyper::Request::get(format!("{}{path}", self.uri.path().trim_end_matches('/')))
                .header(HOST, authority(&self.uri))
                .body(Full::new(Bytes::new()))
                .map_err(|e| format!("cannot GET `{path}`: {e}"))?;
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            Ok::<_, hyper::Error>((status, response.into_body().collect().await?.to_bytes()))
        };
        match tokio::time::timeout(API_TIMEOUT, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(chain(&e))
            }
            Err(_) => {
                self.sender = None;
                Err("timed out".to_owned())
            }
        }
    }

    /// `GET /api/v1/stats`, parsed.
    pub(super) async fn stats(&mut self) -> Result<Value, LoadgenError> {
        self.json("/api/v1/stats").await
    }

    /// GETs `path`: its JSON answer, or an error unless it is a 2xx with JSON.
    pub(super) async fn json(&mut self, path: &str) -> Result<Value, LoadgenError> {
        let url = self.url(path);
        let failed = |message: String| LoadgenError::Api {
            url: url.clone(),
            message,
        };
        let (status, body) = self.get(path).await.map_err(failed)?;
        if !status.is_success() {
            return Err(failed(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|e| failed(format!("not JSON: {e}")))
    }

    /// A number in the stats, or an error naming it.
    pub(super) fn number(&self, stats: &Value, pointer: &str) -> Result<u64, LoadgenError> {
        stats
            .pointer(pointer)
            .and_then(Value::as_u64)
            .ok_or_else(|| LoadgenError::Api {
                url: self.url("/api/v1/stats"),
                message: format!("no number at {pointer} in the answer"),
            })
    }

    /// The daemon's `counters.spans_accepted`.
    pub(super) async fn spans_accepted(&mut self) -> Result<u64, LoadgenError> {
        let stats = self.stats().await?;
        self.number(&stats, "/counters/spans_accepted")
    }
}

/// What waiting for the daemon to analyze everything it accepted found.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalysisWait {
    /// The daemon's buffer was empty and every trace taken out of it analyzed.
    Done {
        /// From the last answer to the run's requests until then.
        waited: Duration,
        /// From the start of sending until then: ingest and analysis.
        daemon: DaemonUsage,
    },
    /// Spans were still buffered, or traces waiting for analysis, when the wait
    /// gave up.
    TimedOut {
        waited: Duration,
        buffered_spans: u64,
        /// Traces out of the buffer but not analyzed yet (0 where the daemon
        /// does not report it).
        analysis_pending: u64,
    },
}

/// Polls the daemon's stats until two polls in a row find its buffer empty
/// (every span accepted has left for analysis), no trace waiting for analysis
/// (`analysis_pending`, where the daemon reports it) and the same count of
/// analyzed traces; or until `timeout`. The CPU time is counted from `since`.
///
/// Two polls, because a trace leaving the buffer may be counted in neither
/// the buffer nor the pending analyses for an instant, and older daemons do not
/// report `analysis_pending`: their count of analyzed traces must stand still.
pub(super) async fn wait_for_analysis(
    api: &mut ApiClient,
    since: CpuSample,
    timeout: Duration,
) -> Result<AnalysisWait, LoadgenError> {
    let start = Instant::now();
    // The analyzed-trace count at the previous poll, if that poll found nothing
    // buffered or pending.
    let mut idle_at: Option<u64> = None;
    loop {
        let stats = api.stats().await?;
        let buffered_spans = api.number(&stats, "/buffered_spans")?;
        let analysis_pending = stats
            .pointer("/analysis_pending")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        // Each trace analyzed counts in one of these (whichever the daemon has):
        // analyzed; stored, or replacing a stored one, or stored and evicted.
        let analyzed: u64 = [
            "/counters/traces_analyzed",
            "/stored_traces",
            "/counters/store_traces_evicted",
            "/counters/traces_reanalyzed",
        ]
        .iter()
        .filter_map(|p| stats.pointer(p).and_then(Value::as_u64))
        .sum();
        if buffered_spans == 0 && analysis_pending == 0 {
            if idle_at == Some(analyzed) {
                return Ok(AnalysisWait::Done {
                    waited: start.elapsed(),
                    daemon: since.usage()?,
                });
            }
            idle_at = Some(analyzed);
        } else {
            idle_at = None;
        }
        if start.elapsed() >= timeout {
            return Ok(AnalysisWait::TimedOut {
                waited: start.elapsed(),
                buffered_spans,
                analysis_pending,
            });
        }
        tokio::time::sleep(ANALYSIS_POLL).await;
    }
}

/// The latency of one API path, requested at a fixed interval during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiLatency {
    /// The path and query requested.
    pub path: String,
    /// The interval between requests (longer when an answer took longer).
    pub every: Duration,
    pub requests: u64,
    /// Answers with a status outside 2xx.
    pub non_2xx: u64,
    /// Requests without an answer (connection error, or none within 10 s).
    pub failed: u64,
    /// Of the answered requests, from sending to the last byte of the body;
    /// `None` without any answer.
    pub latency: Option<Latency>,
}

/// GETs `path` every `every` on its own connection until `stop`; a request in
/// flight when it is cancelled still completes and counts.
pub(super) async fn measure_latency(
    mut api: ApiClient,
    path: String,
    every: Duration,
    stop: CancellationToken,
) -> ApiLatency {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut requests, mut non_2xx, mut failed) = (0, 0, 0);
    let mut latencies = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        requests += 1;
        match api.get(&path).await {
            Ok((status, _)) => {
                latencies.push(sent.elapsed());
                if !status.is_success() {
                    non_2xx += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    ApiLatency {
        path,
        every,
        requests,
        non_2xx,
        failed,
        latency: Latency::of(latencies),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_s_cpu_time_and_memory() {
        let before = CpuSample::read(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let usage = before.usage().unwrap();
        assert!(usage.cpu_seconds >= 0.0);
        assert!(usage.peak_rss_kib >= usage.rss_kib && usage.rss_kib > 0);
        assert!(matches!(
            CpuSample::read(u32::MAX),
            Err(LoadgenError::Proc { .. })
        ));
    }

    #[test]
    fn utime_and_stime_follow_the_last_parenthesis() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(utime_stime(stat), Some(281));
        assert_eq!(utime_stime("42 (x) S 1"), None);
        assert_eq!(utime_stime("no parenthesis"), None);
    }
}
