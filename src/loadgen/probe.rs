//! What the load generator reads about the daemon: its CPU time and memory from
//! `/proc` (Linux), and its `spans_accepted` counter from its HTTP API.

use super::send::get_json;
use super::LoadgenError;

/// Clock ticks per second of `utime` and `stime` in `/proc/PID/stat`. It is
/// `sysconf(_SC_CLK_TCK)`, which needs libc; Linux has reported 100 on every
/// mainstream architecture for decades, so it is assumed.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// What the daemon's process used during a run.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonUsage {
    pub pid: u32,
    /// User and system CPU time consumed during the run.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process's life so far (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Resident memory at the end of the run (`VmRSS`), in KiB.
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
        let status = read(self.pid, "status")?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(DaemonUsage {
            pid: self.pid,
            cpu_seconds: ticks.saturating_sub(self.ticks) as f64 / CLOCK_TICKS_PER_SEC,
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
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
    let stat = read(pid, "stat")?;
    // The command name (field 2) is in parentheses and may hold spaces; utime and
    // stime are fields 14 and 15, the 12th and 13th after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (field(11), field(12)) {
        (Some(utime), Some(stime)) => Ok(utime + stime),
        _ => Err(LoadgenError::Proc {
            pid,
            file: "stat",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no utime and stime"),
        }),
    }
}

/// The daemon's `counters.spans_accepted` from `GET /api/v1/stats`.
pub(super) async fn spans_accepted(api: &str) -> Result<u64, LoadgenError> {
    let failed = |message: String| LoadgenError::Api {
        url: format!("{}/api/v1/stats", api.trim_end_matches('/')),
        message,
    };
    let stats = get_json(api, "/api/v1/stats").await.map_err(failed)?;
    stats["counters"]["spans_accepted"]
        .as_u64()
        .ok_or_else(|| failed("no counters.spans_accepted in the answer".into()))
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
}
