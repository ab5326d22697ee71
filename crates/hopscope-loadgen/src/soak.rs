//! `hopscope-loadgen --soak`: a long run at half of the daemon's capacity that
//! shows whether it holds steady.
//!
//! The soak starts its own daemon (`child`: the defaults, the write-ahead log
//! in a temporary data directory), measures its capacity flat out unless a
//! rate is given, then sends the load generator's traffic (fresh ids, one of
//! [`super::Shape::instances`] replicas per service and request, the entry
//! routes and statements of the shape, literals drawn anew for every request)
//! at half of it. Every interval it reads one [`Row`]: the daemon's RSS, what
//! it buffers, interns and stores, its data directory's size, the p99 of the
//! exports and of a few API requests made every second, the dropped or
//! refused spans, and the findings. At the end, [`Verdict::of`] judges the
//! rows: RSS must plateau after the warm-up (at most
//! [`RSS_GROWTH_SHARE`] + [`RSS_GROWTH_KIB`] above its value then) and stay
//! under the memory limit; no span may be dropped or refused; the findings
//! must stay those of the warm-up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::child::ChildDaemon;
use super::probe::{ApiClient, Memory};
use super::report::{Latency, Report};
use super::{templates, Generator, LoadgenError, Options, Protocol, Senders, Until};

/// How much RSS may grow after the warm-up: this share of its value then...
pub const RSS_GROWTH_SHARE: f64 = 0.10;
/// ... plus this much (KiB): allocator noise on a small heap.
pub const RSS_GROWTH_KIB: u64 = 16 * 1024;
/// New findings the traffic may still explain after the warm-up: rare failure
/// paths of the generated traces can show late. At least this many...
pub const NEW_FINDINGS_MIN: usize = 2;
/// ... or this share of the findings at the end of the warm-up.
pub const NEW_FINDINGS_SHARE: f64 = 0.10;
/// The daemon's counters of spans dropped or refused (paths in
/// `GET /api/v1/stats`), none of which may grow under half load.
const DROPPED: [&str; 9] = [
    "/counters/spans_rejected",
    "/counters/export_requests_refused",
    "/counters/otlp_malformed",
    "/counters/otlp_too_large",
    "/counters/wal_write_errors",
    "/counters/checkpoint_errors",
    "/counters/analysis_panics",
    "/counters/detection_panics",
    "/interner/names_refused",
];
/// How long the capacity measurement may wait for the daemon to analyze
/// what it was sent.
const CAPACITY_WAIT: Duration = Duration::from_secs(300);
/// Between two rounds of API requests whose latency is measured.
const API_EVERY: Duration = Duration::from_secs(1);
/// Most findings read per row (the API's limit).
const FINDINGS_LIMIT: usize = 1000;

/// Everything a soak needs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `hopscope` binary whose `serve` is soaked.
    pub binary: PathBuf,
    /// The daemon's `--memory-limit-mib`, which its RSS must stay under.
    pub memory_limit_mib: usize,
    /// How long to send at the soak's rate.
    pub duration: Duration,
    /// One row per this long.
    pub report_every: Duration,
    /// The rows before the RSS plateau is judged; `None`: a quarter of the
    /// duration, rounded up to whole rows.
    pub warm_up: Option<Duration>,
    /// Spans per second; `None`: half of the capacity measured first.
    pub rate: Option<f64>,
    /// How long capacity is measured flat out.
    pub capacity_for: Duration,
    /// The traffic: protocol, connections, batch, shape, seed, retries, gzip
    /// (the endpoint, rate, duration and daemon are the soak's).
    pub load: Options,
}

/// What the soak reports while it runs.
#[derive(Debug)]
pub enum SoakEvent<'a> {
    /// The daemon is ready.
    Started { pid: u32, data_dir: &'a Path },
    /// The flat-out run that measured capacity, and the capacity taken from it.
    Capacity { report: &'a Report, capacity: f64 },
    /// Sending at `rate` begins; the warm-up is the first `warm_up_rows` rows.
    Soaking { rate: f64, warm_up_rows: usize },
    /// An interval ended.
    Row(&'a Row),
}

/// One interval of the soak.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Since sending at the soak's rate began.
    pub elapsed: Duration,
    /// The daemon's resident memory.
    pub rss_kib: u64,
    pub buffered_spans: u64,
    /// Distinct names the daemon interned.
    pub interned_names: u64,
    pub stored_traces: u64,
    /// The data directory's files.
    pub disk_bytes: u64,
    /// Spans acknowledged per second during the interval.
    pub accepted_per_sec: f64,
    /// Of the exports answered during the interval.
    pub export_p99: Option<Duration>,
    /// Of the API requests answered during the interval.
    pub api_p99: Option<Duration>,
    /// API requests that failed or answered outside 2xx, since the start.
    pub api_errors: u64,
    /// Growth since the start of each counter of dropped or refused spans
    /// that grew (the daemon's, and `loadgen.refused` for the spans it saw
    /// refused).
    pub dropped: BTreeMap<String, u64>,
    /// The findings' ids by kind.
    pub findings: BTreeMap<String, BTreeSet<String>>,
}

impl Row {
    /// The Markdown table's header (with its rule line), matching
    /// [`Row`]'s `Display`.
    pub const HEADER: &'static str = "| minute | RSS MiB | buffered spans | interned names | stored traces | disk MiB | accepted spans/s | export p99 ms | API p99 ms | dropped + refused | findings |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";
    /// The CSV header, matching [`Row::csv`].
    pub const CSV_HEADER: &'static str = "minute,rss_mib,buffered_spans,interned_names,stored_traces,disk_mib,accepted_spans_per_sec,export_p99_ms,api_p99_ms,api_errors,dropped_refused,findings";

    /// Spans dropped or refused since the start, all counters together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Distinct findings.
    pub fn findings_count(&self) -> usize {
        self.findings.values().map(BTreeSet::len).sum()
    }

    /// One CSV line (no newline); a p99 without samples is empty.
    pub fn csv(&self) -> String {
        let ms = |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.1}", millis(d)));
        format!(
            "{:.2},{:.1},{},{},{},{:.1},{:.0},{},{},{},{},{}",
            minutes(self.elapsed),
            mib(self.rss_kib),
            self.buffered_spans,
            self.interned_names,
            self.stored_traces,
            self.disk_bytes as f64 / (1 << 20) as f64,
            self.accepted_per_sec,
            ms(self.export_p99),
            ms(self.api_p99),
            self.api_errors,
            self.dropped_total(),
            self.findings_count()
        )
    }
}

impl fmt::Display for Row {
    /// One Markdown table row (see [`Row::HEADER`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Option<Duration>| d.map_or("–".to_owned(), |d| format!("{:.1}", millis(d)));
        write!(
            f,
            "| {:.2} | {:.1} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
            minutes(self.elapsed),
            mib(self.rss_kib),
            self.buffered_spans,
            self.interned_names,
            self.stored_traces,
            self.disk_bytes as f64 / (1 << 20) as f64,
            self.accepted_per_sec,
            ms(self.export_p99),
            ms(self.api_p99),
            self.dropped_total(),
            self.findings_count()
        )
    }
}

fn minutes(d: Duration) -> f64 {
    d.as_secs_f64() / 60.0
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Why a soak failed although it ran.
#[derive(Debug, Clone, PartialEq)]
pub enum SoakProblem {
    /// RSS at the end is above what the warm-up's RSS allows.
    RssGrew {
        warm_up_kib: u64,
        last_kib: u64,
        allowed_kib: u64,
    },
    /// No row is left after the warm-up (the trace store was still filling).
    NoRowAfterWarmUp,
    /// RSS went over the daemon's memory limit.
    RssOverLimit {
        elapsed: Duration,
        rss_kib: u64,
        limit_mib: usize,
    },
    /// A counter of dropped or refused spans grew.
    Dropped { counter: String, by: u64 },
    /// API requests failed or answered outside 2xx.
    ApiErrors { count: u64 },
    /// Findings of the warm-up vanished, or more new ones appeared than the
    /// traffic explains (with the kinds the warm-up did not have).
    FindingsChanged {
        gone: usize,
        new_kinds: Vec<String>,
        new: usize,
        allowed: usize,
    },
}

impl fmt::Display for SoakProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SoakProblem::RssGrew {
                warm_up_kib,
                last_kib,
                allowed_kib,
            } => write!(
                f,
                "RSS grew after the warm-up: {:.1} MiB at its end, {:.1} MiB at the last row \
                 (at most {:.1} MiB allowed: +{:.0} % + {} MiB)",
                mib(*warm_up_kib),
                mib(*last_kib),
                mib(*allowed_kib),
                RSS_GROWTH_SHARE * 100.0,
                RSS_GROWTH_KIB / 1024
            ),
            SoakProblem::RssOverLimit {
                elapsed,
                rss_kib,
                limit_mib,
            } => write!(
                f,
                "RSS {:.1} MiB at minute {:.2} is over the memory limit of {limit_mib} MiB",
                mib(*rss_kib),
                minutes(*elapsed)
            ),
            SoakProblem::NoRowAfterWarmUp => f.write_str(
                "no row after the warm-up to judge (the trace store was still filling: run longer)",
            ),
            SoakProblem::Dropped { counter, by } => {
                write!(f, "{counter} grew by {by} under half load")
            }
            SoakProblem::ApiErrors { count } => {
                write!(f, "{count} API requests failed or answered outside 2xx")
            }
            SoakProblem::FindingsChanged {
                gone,
                new_kinds,
                new,
                allowed,
            } => write!(
                f,
                "the findings changed after the warm-up: {gone} of its findings gone, {new} new \
                 (at most {allowed} explained by rare failure paths), new kinds: [{}]",
                new_kinds.join(", ")
            ),
        }
    }
}

/// What the rows show.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The row that ends the warm-up (index into the rows).
    pub warm_up_row: usize,
    pub problems: Vec<SoakProblem>,
}

impl Verdict {
    /// Judges `rows` against a daemon memory limit of `limit_mib`. The
    /// warm-up is the first `warm_up_rows` rows, and lasts at least until the
    /// trace store reached the level it keeps (99 % of its last row's
    /// traces): until then RSS grows with it by design. A warm-up that never
    /// ends (the store still filling at the last row) is itself a problem:
    /// nothing can be judged.
    pub fn of(rows: &[Row], warm_up_rows: usize, limit_mib: usize) -> Verdict {
        let filled = rows.last().and_then(|last| {
            rows.iter()
                .position(|r| r.stored_traces as f64 >= last.stored_traces as f64 * 0.99)
        });
        let warm_up_row = (warm_up_rows.max(1) - 1).max(filled.unwrap_or(0));
        let mut problems = Vec::new();
        let (Some(warm), Some(last)) = (rows.get(warm_up_row), rows.last()) else {
            return Verdict {
                warm_up_row,
                problems,
            };
        };
        if warm_up_row + 1 >= rows.len() {
            problems.push(SoakProblem::NoRowAfterWarmUp);
        }
        let allowed_kib = (warm.rss_kib as f64 * (1.0 + RSS_GROWTH_SHARE)) as u64 + RSS_GROWTH_KIB;
        if last.rss_kib > allowed_kib {
            problems.push(SoakProblem::RssGrew {
                warm_up_kib: warm.rss_kib,
                last_kib: last.rss_kib,
                allowed_kib,
            });
        }
        if let Some(over) = rows
            .iter()
            .find(|r| r.rss_kib > (limit_mib as u64).saturating_mul(1024))
        {
            problems.push(SoakProblem::RssOverLimit {
                elapsed: over.elapsed,
                rss_kib: over.rss_kib,
                limit_mib,
            });
        }
        for (counter, &by) in &last.dropped {
            problems.push(SoakProblem::Dropped {
                counter: counter.clone(),
                by,
            });
        }
        if last.api_errors > 0 {
            problems.push(SoakProblem::ApiErrors {
                count: last.api_errors,
            });
        }
        let ids =
            |row: &Row| -> BTreeSet<String> { row.findings.values().flatten().cloned().collect() };
        let (before, after) = (ids(warm), ids(last));
        let gone = before.difference(&after).count();
        let new = after.difference(&before).count();
        let new_kinds: Vec<String> = last
            .findings
            .keys()
            .filter(|k| !warm.findings.contains_key(*k))
            .cloned()
            .collect();
        let allowed =
            NEW_FINDINGS_MIN.max((before.len() as f64 * NEW_FINDINGS_SHARE).floor() as usize);
        // A new kind counts as one of the new findings allowed: a rare path
        // can be the first of its kind (a 2-minute debug run saw its first
        // timeout_inversion after the warm-up).
        if gone > 0 || new > allowed {
            problems.push(SoakProblem::FindingsChanged {
                gone,
                new_kinds,
                new,
                allowed,
            });
        }
        Verdict {
            warm_up_row,
            problems,
        }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a soak measured.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// Spans per second sent.
    pub rate: f64,
    pub rows: Vec<Row>,
    pub verdict: Verdict,
}

impl SoakOptions {
    fn validate(&self) -> Result<usize, LoadgenError> {
        let invalid = |m: String| Err(LoadgenError::Invalid(m));
        if self.report_every.is_zero() || self.report_every > self.duration {
            return invalid(format!(
                "the report interval ({} s) must be more than zero and at most the duration ({} s)",
                self.report_every.as_secs_f64(),
                self.duration.as_secs_f64()
            ));
        }
        if self.capacity_for.is_zero() && self.rate.is_none() {
            return invalid("measuring capacity needs more than zero seconds".into());
        }
        let rows = rows_in(self.duration, self.report_every);
        let warm_up = self.warm_up.unwrap_or(self.duration / 4);
        let warm_up_rows = rows_in(warm_up, self.report_every).max(1);
        if warm_up_rows >= rows {
            return invalid(format!(
                "the warm-up ({} s) must leave at least one report interval ({} s) of the \
                 duration ({} s)",
                warm_up.as_secs_f64(),
                self.report_every.as_secs_f64(),
                self.duration.as_secs_f64()
            ));
        }
        let mut load = self.load.clone();
        load.rate = self.rate;
        load.validate()?;
        Ok(warm_up_rows)
    }
}

/// Intervals of `every` in `d`, the last one possibly partial.
fn rows_in(d: Duration, every: Duration) -> usize {
    (d.as_secs_f64() / every.as_secs_f64()).ceil() as usize
}

/// Runs a soak (see the module documentation). An error means it could not be
/// run or measured; the verdict says whether the daemon held steady.
pub async fn soak(
    opts: &SoakOptions,
    mut event: impl FnMut(SoakEvent<'_>),
) -> Result<SoakReport, LoadgenError> {
    let warm_up_rows = opts.validate()?;
    let mut daemon = ChildDaemon::start(&opts.binary, opts.memory_limit_mib).await?;
    event(SoakEvent::Started {
        pid: daemon.pid(),
        data_dir: daemon.data_dir(),
    });
    let load = Options {
        endpoint: match opts.load.protocol {
            Protocol::Grpc => daemon.grpc.clone(),
            Protocol::Http => daemon.http.clone(),
        },
        api: Some(daemon.api.clone()),
        daemon_pid: Some(daemon.pid()),
        decode_baseline: None,
        wait_analysis: None,
        probe_api: Vec::new(),
        ..opts.load.clone()
    };
    let rate = match opts.rate {
        Some(rate) => rate,
        None => {
            let (report, capacity) = capacity(&load, opts.capacity_for).await?;
            event(SoakEvent::Capacity {
                report: &report,
                capacity,
            });
            capacity / 2.0
        }
    };
    event(SoakEvent::Soaking { rate, warm_up_rows });
    // Other ids than the capacity run's (the senders' masks follow the seed).
    let seed = load.seed.wrapping_add(1);
    let load = Options {
        rate: Some(rate),
        until: Until::Elapsed(opts.duration),
        seed,
        ..load
    };
    let gen = Generator::new(seed, load.shape.clone())?;
    let (batch, until) = (load.batch, load.until);
    let templates = tokio::task::spawn_blocking(move || templates(gen, batch, until))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let mut api = ApiClient::connect(&daemon.api).await?;
    let start_stats = api.stats().await?;
    let api_samples = Arc::new(parking_lot::Mutex::new(ApiSamples::default()));
    let stop_probe = CancellationToken::new();
    let _stop_probe_on_return = stop_probe.clone().drop_guard();
    tokio::spawn(probe_api(
        ApiClient::connect(&daemon.api).await?,
        api_samples.clone(),
        stop_probe.clone(),
    ));
    let mut senders = Senders::start(&load, templates).await?;
    let start = senders.plan.start;
    let mut rows = Vec::new();
    let mut last = (start, senders.plan.counters.snapshot().accepted);
    for k in 1..=rows_in(opts.duration, opts.report_every) {
        let at = (start + opts.report_every * k as u32).min(start + opts.duration);
        if senders.run_until(at).await {
            tokio::time::sleep_until(at).await;
        }
        daemon.check_running()?;
        let now = Instant::now();
        let totals = senders.plan.counters.snapshot();
        let stats = api.stats().await?;
        let mut dropped = BTreeMap::new();
        for pointer in DROPPED {
            let grew = api
                .number(&stats, pointer)?
                .saturating_sub(api.number(&start_stats, pointer)?);
            if grew > 0 {
                dropped.insert(
                    pointer.rsplit('/').next().unwrap_or(pointer).to_owned(),
                    grew,
                );
            }
        }
        if totals.refused > 0 {
            dropped.insert("loadgen.refused".to_owned(), totals.refused);
        }
        let (api_sampled, api_errors) = {
            let mut samples = api_samples.lock();
            (std::mem::take(&mut samples.latencies), samples.errors)
        };
        let row = Row {
            elapsed: now - start,
            rss_kib: Memory::read(daemon.pid())?.rss_kib,
            buffered_spans: api.number(&stats, "/buffered_spans")?,
            interned_names: api.number(&stats, "/interner/names")?,
            stored_traces: api.number(&stats, "/stored_traces")?,
            disk_bytes: dir_bytes(daemon.data_dir()),
            accepted_per_sec: (totals.accepted - last.1) as f64
                / (now - last.0).as_secs_f64().max(1e-9),
            export_p99: Latency::of(senders.plan.take_latencies()).map(|l| l.p99),
            api_p99: Latency::of(api_sampled).map(|l| l.p99),
            api_errors,
            dropped,
            findings: findings(&mut api).await?,
        };
        last = (now, totals.accepted);
        event(SoakEvent::Row(&row));
        rows.push(row);
    }
    stop_probe.cancel();
    daemon.stop().await?;
    Ok(SoakReport {
        rate,
        verdict: Verdict::of(&rows, warm_up_rows, opts.memory_limit_mib),
        rows,
    })
}

/// Sends flat out for `how_long`, waits until everything was analyzed, and
/// takes as capacity the rate at which the daemon ingests and analyzes with
/// every core of the machine: its spans per CPU-second including analysis
/// times the cores, at most the rate at which it acknowledged them.
async fn capacity(load: &Options, how_long: Duration) -> Result<(Report, f64), LoadgenError> {
    let opts = Options {
        rate: None,
        until: Until::Elapsed(how_long),
        wait_analysis: Some(CAPACITY_WAIT),
        ..load.clone()
    };
    let report = super::run(&opts, |_| {}).await?;
    // Refusals are the daemon's answer to flat out; anything else is not.
    let problems: Vec<String> = report
        .problems(true)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !problems.is_empty() {
        return Err(LoadgenError::Daemon(format!(
            "measuring capacity: {}",
            problems.join("; ")
        )));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let capacity = report
        .spans_per_daemon_cpu_second_with_analysis()
        .map_or(report.accepted_per_sec(), |per_cpu| {
            (per_cpu * cores).min(report.accepted_per_sec())
        });
    if capacity <= 0.0 {
        return Err(LoadgenError::Daemon(
            "measuring capacity: no span was accepted".into(),
        ));
    }
    Ok((report, capacity))
}

/// The API requests' latencies not yet reported, and the failures so far.
#[derive(Default)]
struct ApiSamples {
    latencies: Vec<Duration>,
    errors: u64,
}

/// Every [`API_EVERY`] until `stop`: `GET /api/v1/findings`, `/api/v1/hops`,
/// the newest trace's id from `/api/v1/traces?limit=1` and that trace; each
/// answered request's latency, each failure or non-2xx counted.
async fn probe_api(
    mut api: ApiClient,
    samples: Arc<parking_lot::Mutex<ApiSamples>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(API_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut trace = None;
        for path in [
            "/api/v1/findings",
            "/api/v1/hops?since=5m",
            "/api/v1/traces?limit=1",
        ] {
            let sent = Instant::now();
            let answer = api.get(path).await;
            let mut samples = samples.lock();
            match answer {
                Ok((status, body)) if status.is_success() => {
                    samples.latencies.push(sent.elapsed());
                    trace = trace.or_else(|| newest_trace(&body));
                }
                _ => samples.errors += 1,
            }
        }
        if let Some(id) = trace {
            let sent = Instant::now();
            let answer = api.get(&format!("/api/v1/traces/{id}")).await;
            let mut samples = samples.lock();
            match answer {
                Ok((status, _)) if status.is_success() => samples.latencies.push(sent.elapsed()),
                _ => samples.errors += 1,
            }
        }
    }
}

/// The first trace id in a `GET /api/v1/traces` answer.
fn newest_trace(body: &[u8]) -> Option<String> {
    let list: Value = serde_json::from_slice(body).ok()?;
    Some(list.pointer("/traces/0/trace_id")?.as_str()?.to_owned())
}

/// The daemon's findings' ids by kind.
async fn findings(api: &mut ApiClient) -> Result<BTreeMap<String, BTreeSet<String>>, LoadgenError> {
    let list = api
        .json(&format!("/api/v1/findings?limit={FINDINGS_LIMIT}"))
        .await?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in list["findings"].as_array().into_iter().flatten() {
        if let (Some(kind), Some(id)) = (f["kind"].as_str(), f["id"].as_str()) {
            out.entry(kind.to_owned())
                .or_default()
                .insert(id.to_owned());
        }
    }
    Ok(out)
}

/// The bytes of the files under `dir` (files removed while it is read are
/// left out).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: u64, rss_mib: u64, findings: &[(&str, &str)]) -> Row {
        let mut by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (kind, id) in findings {
            by_kind
                .entry((*kind).to_owned())
                .or_default()
                .insert((*id).to_owned());
        }
        Row {
            elapsed: Duration::from_secs(60 * minute),
            rss_kib: rss_mib * 1024,
            buffered_spans: 1000,
            interned_names: 500,
            stored_traces: 10_000,
            disk_bytes: 64 << 20,
            accepted_per_sec: 20_000.0,
            export_p99: Some(Duration::from_millis(12)),
            api_p99: None,
            api_errors: 0,
            dropped: BTreeMap::new(),
            findings: by_kind,
        }
    }

    const WARM: [(&str, &str); 3] = [
        ("cascading_timeout", "a1"),
        ("cascading_timeout", "a2"),
        ("gateway_timeout", "b1"),
    ];

    #[test]
    fn a_plateau_passes_and_growth_beyond_the_tolerance_fails() {
        // RSS climbs during the warm-up (2 rows), then holds within 10 % + 16 MiB.
        let rows = [
            row(1, 100, &WARM),
            row(2, 200, &WARM),
            row(3, 215, &WARM),
            row(4, 236, &WARM),
        ];
        let verdict = Verdict::of(&rows, 2, 512);
        assert_eq!(verdict.warm_up_row, 1);
        assert!(verdict.passed(), "{:?}", verdict.problems);
        assert_eq!(
            rows[3].to_string(),
            "| 4.00 | 236.0 | 1000 | 500 | 10000 | 64.0 | 20000 | 12.0 | – | 0 | 3 |"
        );
        assert_eq!(
            rows[3].csv(),
            "4.00,236.0,1000,500,10000,64.0,20000,12.0,,0,0,3"
        );

        let grown = [row(1, 200, &WARM), row(2, 200, &WARM), row(3, 237, &WARM)];
        let verdict = Verdict::of(&grown, 2, 512);
        assert_eq!(
            verdict.problems,
            vec![SoakProblem::RssGrew {
                warm_up_kib: 200 * 1024,
                last_kib: 237 * 1024,
                allowed_kib: 236 * 1024,
            }]
        );
        assert!(verdict.problems[0]
            .to_string()
            .starts_with("RSS grew after the warm-up: 200.0 MiB at its end, 237.0 MiB"));
    }

    #[test]
    fn the_warm_up_lasts_until_the_trace_store_is_full() {
        let filling = |stored: &[u64]| -> Vec<Row> {
            stored
                .iter()
                .enumerate()
                .map(|(i, &n)| Row {
                    stored_traces: n,
                    // RSS grows with the store, then holds.
                    rss_kib: (100 + n / 100) * 1024,
                    ..row(i as u64 + 1, 0, &WARM)
                })
                .collect()
        };
        let rows = filling(&[2_000, 6_000, 10_000, 10_000, 9_990]);
        let verdict = Verdict::of(&rows, 1, 512);
        assert_eq!(verdict.warm_up_row, 2);
        assert!(verdict.passed(), "{:?}", verdict.problems);

        let rows = filling(&[2_000, 6_000, 10_000]);
        let verdict = Verdict::of(&rows, 1, 512);
        assert_eq!(verdict.problems, vec![SoakProblem::NoRowAfterWarmUp]);
        assert!(verdict.problems[0].to_string().contains("run longer"));
    }

    #[test]
    fn rss_over_the_memory_limit_dropped_spans_and_api_errors_fail() {
        let mut rows = [row(1, 100, &WARM), row(2, 520, &WARM), row(3, 100, &WARM)];
        rows[2].dropped.insert("export_requests_refused".into(), 3);
        rows[2].api_errors = 2;
        let problems = Verdict::of(&rows, 1, 512).problems;
        assert_eq!(
            problems,
            vec![
                SoakProblem::RssOverLimit {
                    elapsed: Duration::from_secs(120),
                    rss_kib: 520 * 1024,
                    limit_mib: 512,
                },
                SoakProblem::Dropped {
                    counter: "export_requests_refused".into(),
                    by: 3
                },
                SoakProblem::ApiErrors { count: 2 },
            ]
        );
        assert_eq!(rows[2].dropped_total(), 3);
    }

    #[test]
    fn findings_must_stay_those_of_the_warm_up() {
        let mut late = WARM.to_vec();
        late.extend([("cascading_timeout", "a3"), ("gateway_timeout", "b2")]);
        // Two new findings of known kinds: rare paths, explained.
        let rows = [row(1, 100, &WARM), row(2, 100, &late)];
        assert!(Verdict::of(&rows, 1, 512).passed());
        // One of a kind the warm-up did not see: a rare path too.
        let first_of_its_kind = [WARM[0], WARM[1], WARM[2], ("timeout_inversion", "t1")];
        let rows = [row(1, 100, &WARM), row(2, 100, &first_of_its_kind)];
        assert!(Verdict::of(&rows, 1, 512).passed());

        // A third is more than the traffic explains; a finding gone always
        // fails, and says which kinds are new.
        late.push(("cascading_timeout", "a4"));
        let rows = [row(1, 100, &WARM), row(2, 100, &late)];
        let expect = |gone, new_kinds: &[&str], new| SoakProblem::FindingsChanged {
            gone,
            new_kinds: new_kinds.iter().map(|k| (*k).to_owned()).collect(),
            new,
            allowed: 2,
        };
        assert_eq!(Verdict::of(&rows, 1, 512).problems, vec![expect(0, &[], 3)]);
        let rows = [
            row(1, 100, &WARM),
            row(2, 100, &[WARM[0], WARM[1], ("slow_query", "c1")]),
        ];
        assert_eq!(
            Verdict::of(&rows, 1, 512).problems,
            vec![expect(1, &["slow_query"], 1)]
        );
    }

    #[test]
    fn the_warm_up_must_leave_a_row_and_the_interval_fit_the_duration() {
        let opts = |duration: u64, every: u64, warm_up: Option<u64>| SoakOptions {
            binary: PathBuf::from("hopscope"),
            memory_limit_mib: 512,
            duration: Duration::from_secs(duration),
            report_every: Duration::from_secs(every),
            warm_up: warm_up.map(Duration::from_secs),
            rate: Some(1000.0),
            capacity_for: Duration::from_secs(10),
            load: Options::default(),
        };
        // A quarter of 120 s is 30 s: two rows of 15 s.
        assert_eq!(opts(120, 15, None).validate().unwrap(), 2);
        assert_eq!(opts(120, 50, Some(10)).validate().unwrap(), 1);
        for (bad, message) in [
            (opts(120, 0, None), "more than zero"),
            (opts(60, 120, None), "at most the duration"),
            (
                opts(120, 60, Some(90)),
                "must leave at least one report interval",
            ),
        ] {
            let error = bad.validate().unwrap_err().to_string();
            assert!(error.contains(message), "{error}");
        }
    }

    #[test]
    fn the_data_directory_s_size_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), [0; 100]).unwrap();
        std::fs::create_dir(dir.path().join("wal")).unwrap();
        std::fs::write(dir.path().join("wal/00000001.log"), [0; 1000]).unwrap();
        assert_eq!(dir_bytes(dir.path()), 1100);
        assert_eq!(dir_bytes(&dir.path().join("missing")), 0);
    }
}
