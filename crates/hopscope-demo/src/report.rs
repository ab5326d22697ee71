//! What a demo run saw and what the daemon found, printable.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::Scenario;

/// Hops of the entry point printed, largest share first.
const TOP_HOPS: usize = 8;
/// Characters of a statement printed.
const STATEMENT_WIDTH: usize = 100;

/// The outcome of [`Demo::drive`](super::Demo::drive).
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The scenario run.
    pub scenario: Scenario,
    /// Requests sent through the gateway.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Wall-clock seconds per scenario second.
    pub time_scale: f64,
    /// Whether waits for a database connection had `pool.acquire` spans.
    pub acquire_spans: bool,
    /// How long sending the requests took.
    pub elapsed: Duration,
    /// How many requests got each HTTP status from the gateway.
    pub outcomes: BTreeMap<u16, usize>,
    /// Requests that got no HTTP answer at all.
    pub failed: usize,
    /// Spans the services exported to the daemon (and it accepted).
    pub spans_exported: u64,
    /// The entry point, `SERVICE:OPERATION` (`gateway:GET /checkout`).
    pub entry: String,
    /// The entry point's aggregate from `GET /api/v1/hops?entry=...`: `traces`,
    /// `total_root_ms` and `hops` (service, operation, kind, share, ...), largest
    /// share first; `null` if the daemon has no trace of it.
    pub hops: Value,
    /// The answer of `GET /api/v1/findings` (`{"findings": [...]}`).
    pub findings: Value,
    /// The answer of `GET /api/v1/queries` (`{"queries": [...]}`): the
    /// statement shapes by time on the critical path.
    pub queries: Value,
    /// The daemon's HTTP API, `http://host:port`.
    pub api: String,
}

impl DemoReport {
    /// How many requests got `status` from the gateway.
    pub fn count(&self, status: u16) -> usize {
        self.outcomes.get(&status).copied().unwrap_or(0)
    }

    /// The entry point's hops, largest share first.
    pub fn hops(&self) -> &[Value] {
        self.hops["hops"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The findings, worst first.
    pub fn findings(&self) -> &[Value] {
        self.findings["findings"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// The findings of one kind (`pool_exhaustion`, `slow_query`...).
    pub fn findings_of(&self, kind: &str) -> Vec<&Value> {
        self.findings()
            .iter()
            .filter(|f| f["kind"] == kind)
            .collect()
    }

    /// The statement shapes, most critical time first.
    pub fn queries(&self) -> &[Value] {
        self.queries["queries"]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario: {}", self.scenario)?;
        writeln!(f, "  {}", self.scenario.describe())?;
        writeln!(
            f,
            "  time scale {}: a scenario second lasts {:?}",
            self.time_scale,
            Duration::from_secs_f64(self.time_scale)
        )?;
        if self.scenario.has_databases() && !self.acquire_spans {
            writeln!(
                f,
                "  no pool.acquire spans: the wait for a connection shows only as time \
                 before the first query"
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "requests: {} through the gateway, {} at a time, in {:.2} s",
            self.requests,
            self.concurrency,
            self.elapsed.as_secs_f64()
        )?;
        for (status, count) in &self.outcomes {
            let reason = StatusCode::from_u16(*status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            writeln!(f, "  {status} {reason:<20} {count:>5}")?;
        }
        if self.failed > 0 {
            writeln!(f, "  {:<24} {:>5}", "no answer", self.failed)?;
        }
        writeln!(
            f,
            "spans exported to the daemon: {} (its API: {})",
            self.spans_exported, self.api
        )?;
        writeln!(f)?;
        self.fmt_hops(f)?;
        writeln!(f)?;
        if !self.queries().is_empty() {
            self.fmt_queries(f)?;
            writeln!(f)?;
        }
        self.fmt_findings(f)
    }
}

impl DemoReport {
    fn fmt_hops(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hops = self.hops();
        if hops.is_empty() {
            return writeln!(f, "no analyzed trace of {} yet", self.entry);
        }
        writeln!(
            f,
            "what {} waited on ({} traces, {:.1} s in all; share of the critical path):",
            self.entry,
            self.hops["traces"],
            self.hops["total_root_ms"].as_f64().unwrap_or(0.0) / 1e3
        )?;
        let text = |h: &Value, key: &str| h[key].as_str().unwrap_or("").to_owned();
        let rows: Vec<(f64, String, String, String)> = hops
            .iter()
            .take(TOP_HOPS)
            .map(|h| {
                let mut kind = text(h, "kind");
                if let Some(peer) = h["peer"].as_str() {
                    kind = format!("{kind} → {peer}");
                }
                (
                    h["share"].as_f64().unwrap_or(0.0),
                    text(h, "service"),
                    text(h, "operation"),
                    kind,
                )
            })
            .collect();
        let width = |pick: fn(&(f64, String, String, String)) -> &String, title: &str| {
            rows.iter()
                .map(|r| pick(r).chars().count())
                .chain([title.len()])
                .max()
                .unwrap_or(0)
        };
        let ws = width(|r| &r.1, "service");
        let wo = width(|r| &r.2, "operation");
        writeln!(
            f,
            "  {:>6}  {:<ws$}  {:<wo$}  kind",
            "share", "service", "operation"
        )?;
        for (share, service, operation, kind) in &rows {
            writeln!(
                f,
                "  {:>5.1}%  {service:<ws$}  {operation:<wo$}  {kind}",
                share * 100.0
            )?;
        }
        if hops.len() > TOP_HOPS {
            writeln!(f, "  ... {} more", hops.len() - TOP_HOPS)?;
        }
        Ok(())
    }

    fn fmt_queries(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "statements by time on the critical path (GET {}/api/v1/queries):",
            self.api
        )?;
        let target = |q: &Value| {
            let t = &q["target"];
            ["system", "address", "namespace"]
                .iter()
                .filter_map(|k| t[k].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let targets: Vec<String> = self.queries().iter().map(target).collect();
        let wt = targets.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        writeln!(
            f,
            "  {:>5}  {:>8}  {:>8}  {:>6}  {:<wt$}  statement",
            "calls", "p50 ms", "p95 ms", "share", "target"
        )?;
        for (q, target) in self.queries().iter().zip(&targets) {
            let ms = |k: &str| q[k].as_f64().unwrap_or(0.0);
            let text = q["statement"].as_str().unwrap_or("?");
            let mut statement: String = text.chars().take(STATEMENT_WIDTH).collect();
            if statement.len() < text.len() {
                statement.push('…');
            }
            writeln!(
                f,
                "  {:>5}  {:>8.1}  {:>8.1}  {:>5.1}%  {target:<wt$}  {statement}",
                q["count"].as_u64().unwrap_or(0),
                ms("p50_ms"),
                ms("p95_ms"),
                ms("critical_share") * 100.0,
            )?;
        }
        Ok(())
    }

    fn fmt_findings(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "findings (GET {}/api/v1/findings):", self.api)?;
        let body = &self.findings;
        let pretty = serde_json::to_string_pretty(body).map_err(|_| fmt::Error)?;
        writeln!(f, "{pretty}")?;
        let findings = self.findings();
        writeln!(f)?;
        if findings.is_empty() {
            return writeln!(f, "no findings");
        }
        for finding in findings {
            let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
            let culprit = &finding["culprit"];
            let peer = culprit["peer"]
                .as_str()
                .map_or_else(String::new, |p| format!(" ({p})"));
            writeln!(
                f,
                "{} {} {} {}{peer}: {}",
                text(&finding["severity"]),
                text(&finding["kind"]),
                text(&culprit["service"]),
                text(&culprit["operation"]),
                text(&finding["summary"]),
            )?;
        }
        Ok(())
    }
}
