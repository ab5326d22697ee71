//! What `hopscope analyze` prints: a report for people ([`Text`]) or the
//! API's JSON shapes ([`Json`]). Both are written trace by trace as traces are
//! analyzed, then the findings once the cross-trace detectors have run.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::analyze::coverage::{blind, blind_by_service, Counts, Level};
use crate::analyze::{timeout, AnalyzedTrace, HopKey, HopKind, TimeoutCause};
use crate::api::{coverage_bodies, entry_body, rfc3339, trace_body, FindingBody};
use crate::model::StatusCode;
use crate::model::Sym;
use crate::store::{Finding, FindingFilter, Store};

use super::InputSummary;

/// Most findings listed.
const MAX_FINDINGS: usize = 1_000;

/// A report being written.
pub trait Report {
    /// One analyzed trace.
    fn trace(&mut self, store: &Store, t: &AnalyzedTrace) -> io::Result<()>;
    /// The end: what was read, and the findings.
    fn finish(&mut self, store: &Store, inputs: &[InputSummary]) -> io::Result<()>;
}

fn findings(store: &Store) -> Vec<Finding> {
    store.findings.list(&FindingFilter::default(), MAX_FINDINGS)
}

/// The API's JSON: `{"traces": [trace...], "inputs": [...], "findings":
/// [finding...], "entries": [entry...], "coverage": [service...]}`, with the
/// shapes of `GET /api/v1/traces/{id}`, `GET /api/v1/findings`,
/// `GET /api/v1/hops` and `GET /api/v1/coverage`.
pub struct Json<W: Write> {
    out: W,
    traces: usize,
}

impl<W: Write> Json<W> {
    pub fn new(out: W) -> Self {
        Json { out, traces: 0 }
    }
}

impl<W: Write> Report for Json<W> {
    fn trace(&mut self, store: &Store, t: &AnalyzedTrace) -> io::Result<()> {
        self.out.write_all(if self.traces == 0 {
            b"{\"traces\":["
        } else {
            b","
        })?;
        self.traces += 1;
        serde_json::to_writer(&mut self.out, &trace_body(t, &store.findings))?;
        Ok(())
    }

    fn finish(&mut self, store: &Store, inputs: &[InputSummary]) -> io::Result<()> {
        if self.traces == 0 {
            self.out.write_all(b"{\"traces\":[")?;
        }
        self.out.write_all(b"],\"inputs\":")?;
        serde_json::to_writer(&mut self.out, inputs)?;
        self.out.write_all(b",\"findings\":")?;
        let findings: Vec<FindingBody> = findings(store).into_iter().map(Into::into).collect();
        serde_json::to_writer(&mut self.out, &findings)?;
        self.out.write_all(b",\"entries\":")?;
        let entries: Vec<_> = store
            .aggregates
            .query(None, None, None)
            .iter()
            .map(entry_body)
            .collect();
        serde_json::to_writer(&mut self.out, &entries)?;
        self.out.write_all(b",\"coverage\":")?;
        serde_json::to_writer(&mut self.out, &coverage_bodies(store, None))?;
        self.out.write_all(b"}\n")?;
        self.out.flush()
    }
}

/// The report for people.
pub struct Text<W: Write> {
    out: W,
    traces: usize,
}

impl<W: Write> Text<W> {
    pub fn new(out: W) -> Self {
        Text { out, traces: 0 }
    }
}

/// Width of the waterfall's bars, in characters.
const BAR: usize = 40;
/// Width of the span column.
const NAME: usize = 52;
/// Most rows of a waterfall.
const MAX_ROWS: usize = 40;
/// Hops listed per trace.
const TOP_HOPS: usize = 5;
/// Spans whose log events are quoted, and events per span.
const NOTED_SPANS: usize = 3;
const NOTED_EVENTS: usize = 3;
/// Warnings listed per trace.
const MAX_WARNINGS: usize = 10;

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// `text` cut to `width` characters (with an ellipsis) or padded to it.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() > width {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        format!("{text:<width$}")
    }
}

fn hop_name(key: &HopKey) -> String {
    match (key.kind, key.peer) {
        (HopKind::Wire, Some(peer)) => {
            format!("{} → {}  {} (network)", key.service, peer, key.operation)
        }
        (HopKind::Queue, Some(peer)) => format!(
            "{} → {}  {} (queued before {peer} started it)",
            key.service, peer, key.operation
        ),
        _ => format!("{}  {}", key.service, key.operation),
    }
}

fn cause(c: &TimeoutCause) -> String {
    match c {
        TimeoutCause::GrpcDeadlineExceeded => "gRPC DEADLINE_EXCEEDED".to_owned(),
        TimeoutCause::HttpStatus(code) => format!("HTTP {code}"),
        TimeoutCause::StatusMessage(m)
        | TimeoutCause::ErrorType(m)
        | TimeoutCause::Exception(m)
        | TimeoutCause::Event(m) => m.clone(),
    }
}

/// Spans of the trace in tree order with their depth (iterative).
fn tree_order(t: &AnalyzedTrace) -> Vec<(u32, usize)> {
    let trace = &t.trace;
    let mut out = Vec::with_capacity(trace.len());
    let mut stack = vec![(trace.root, 0usize)];
    while let Some((span, depth)) = stack.pop() {
        out.push((span, depth));
        for &c in trace.children(span).iter().rev() {
            stack.push((c, depth + 1));
        }
    }
    out
}

impl<W: Write> Text<W> {
    fn waterfall(&mut self, t: &AnalyzedTrace) -> io::Result<()> {
        let trace = &t.trace;
        let origin = trace.start(trace.root);
        let total = t.duration_ns().max(1);
        let cell = |ns: u64| {
            (((ns.saturating_sub(origin)) as u128 * BAR as u128) / total as u128)
                .min(BAR as u128 - 1) as usize
        };
        let mut segments: Vec<Vec<(u64, u64)>> = vec![Vec::new(); trace.len()];
        for seg in &t.path.segments {
            segments[seg.span as usize].push((seg.start_ns, seg.end_ns));
        }
        let rows: Vec<(u32, usize)> = tree_order(t)
            .into_iter()
            .filter(|&(i, _)| t.path.critical_ns[i as usize] > 0)
            .collect();
        writeln!(
            self.out,
            "  {}  {:>9} {:>9} {:>9}  |{}|",
            fit("critical path (indented by depth)", NAME),
            "start ms",
            "dur ms",
            "crit ms",
            fit(&format!("0 … {} ms  █ critical", ms(total)), BAR)
        )?;
        for &(i, depth) in rows.iter().take(MAX_ROWS) {
            let s = trace.span(i);
            let (start, end) = (trace.start(i), trace.end(i));
            let mut bar = vec![' '; BAR];
            for c in bar.iter_mut().take(cell(end) + 1).skip(cell(start)) {
                *c = '░';
            }
            for &(a, b) in &segments[i as usize] {
                for c in bar
                    .iter_mut()
                    .take(cell(b.saturating_sub(1).max(a)) + 1)
                    .skip(cell(a))
                {
                    *c = '█';
                }
            }
            let indent = "  ".repeat(depth.min(12));
            writeln!(
                self.out,
                "  {}  {:>9} {:>9} {:>9}  |{}|",
                fit(&format!("{indent}{}  {}", s.service, s.operation), NAME),
                ms(start.saturating_sub(origin)),
                ms(s.duration_ns()),
                ms(t.path.critical_ns[i as usize]),
                bar.into_iter().collect::<String>()
            )?;
        }
        if rows.len() > MAX_ROWS {
            writeln!(
                self.out,
                "  … {} more spans on the critical path (--format json has them all)",
                rows.len() - MAX_ROWS
            )?;
        }
        Ok(())
    }

    /// Spans that timed out, by service, operation and signal, and whether the
    /// caller tried again (a later sibling with the same service and operation).
    fn timeouts(&mut self, t: &AnalyzedTrace) -> io::Result<()> {
        let trace = &t.trace;
        let mut by: BTreeMap<(String, String, String), (usize, usize)> = BTreeMap::new();
        for i in 0..trace.len() as u32 {
            let s = trace.span(i);
            let Some(c) = timeout(s, &trace.arena) else {
                continue;
            };
            let retried = trace.parent[i as usize].is_some_and(|p| {
                trace.children(p).iter().any(|&o| {
                    let other = trace.span(o);
                    o != i
                        && other.service == s.service
                        && other.operation == s.operation
                        && trace.start(o) >= trace.end(i)
                })
            });
            let entry = by
                .entry((s.service.to_string(), s.operation.to_string(), cause(&c)))
                .or_default();
            entry.0 += 1;
            entry.1 += usize::from(retried);
        }
        if by.is_empty() {
            return Ok(());
        }
        writeln!(self.out, "  timeouts:")?;
        for ((service, operation, why), (n, retried)) in by {
            let retries = match retried {
                0 => "not retried".to_owned(),
                r if r == n => "each retried".to_owned(),
                r => format!("{r} retried"),
            };
            writeln!(
                self.out,
                "    {n} × {service}  {operation} ({why}), {retries}"
            )?;
        }
        Ok(())
    }

    /// What the spans that held the critical path longest logged.
    fn notes(&mut self, t: &AnalyzedTrace) -> io::Result<()> {
        let trace = &t.trace;
        let mut spans: Vec<u32> = (0..trace.len() as u32)
            .filter(|&i| t.path.critical_ns[i as usize] > 0 && !trace.span(i).events().is_empty())
            .collect();
        spans.sort_by_key(|&i| std::cmp::Reverse(t.path.critical_ns[i as usize]));
        if spans.is_empty() {
            return Ok(());
        }
        writeln!(
            self.out,
            "  logged by the spans longest on the critical path:"
        )?;
        for i in spans.into_iter().take(NOTED_SPANS) {
            let s = trace.span(i);
            let events: Vec<&str> = s
                .events()
                .iter()
                .take(NOTED_EVENTS)
                .map(|e| e.name.as_str())
                .collect();
            writeln!(
                self.out,
                "    {}  {} ({} ms critical): {}",
                s.service,
                s.operation,
                ms(t.path.critical_ns[i as usize]),
                events.join("; ")
            )?;
        }
        Ok(())
    }
}

/// A column of the coverage table: heading and count.
type Column = (&'static str, fn(&Counts) -> u64);

const COVERAGE_COLUMNS: [Column; 11] = [
    ("spans", |c| c.spans),
    ("SERVER", |c| c.server),
    ("CLIENT", |c| c.client),
    ("db", |c| c.database),
    ("statement", |c| c.statement),
    ("peer", |c| c.peer_address),
    ("status", |c| c.status_code),
    ("instance", |c| c.instance_id),
    ("checkout", |c| c.connection_checkout),
    ("whole ms", |c| c.timestamps_ms),
    ("error", |c| c.error),
];

impl<W: Write> Text<W> {
    /// "No findings", and the detectors that could not have found any.
    fn no_findings(&mut self, coverage: &[(Sym, Counts)]) -> io::Result<()> {
        let blind = blind_by_service(coverage);
        if blind.is_empty() {
            return writeln!(self.out, "No findings.\n");
        }
        writeln!(
            self.out,
            "No findings — but these detectors are blind for these services (coverage below says why):"
        )?;
        for (service, names) in blind {
            writeln!(self.out, "  {service}: {}", names.join(", "))?;
        }
        writeln!(self.out)
    }

    /// Per service, how many spans carry what the detectors read, and the
    /// detectors that leaves blind or weakened.
    fn coverage(&mut self, coverage: &[(Sym, Counts)]) -> io::Result<()> {
        if coverage.is_empty() {
            return Ok(());
        }
        let width = coverage
            .iter()
            .map(|(s, _)| s.as_str().chars().count())
            .max()
            .unwrap_or(0)
            .clamp(7, 32);
        writeln!(
            self.out,
            "Instrumentation coverage: spans of each service carrying what the detectors read\n"
        )?;
        write!(self.out, "  {}", fit("service", width))?;
        for (heading, _) in COVERAGE_COLUMNS {
            write!(self.out, "  {heading:>9}")?;
        }
        writeln!(self.out)?;
        for (service, c) in coverage {
            write!(self.out, "  {}", fit(service.as_str(), width))?;
            for (_, value) in COVERAGE_COLUMNS {
                write!(self.out, "  {:>9}", value(c))?;
            }
            writeln!(self.out)?;
        }
        for (service, c) in coverage {
            let entries = blind(c);
            if entries.is_empty() {
                continue;
            }
            writeln!(self.out, "\n  {service}:")?;
            // Detectors that share a reason on one line.
            let mut lines: Vec<(Level, &str, Vec<&str>)> = Vec::new();
            for b in entries {
                match lines
                    .iter_mut()
                    .find(|(level, reason, _)| (*level, *reason) == (b.level, b.reason))
                {
                    Some(line) => line.2.push(b.detector.as_str()),
                    None => lines.push((b.level, b.reason, vec![b.detector.as_str()])),
                }
            }
            for (level, reason, detectors) in lines {
                writeln!(
                    self.out,
                    "    {} {}: {reason}",
                    detectors.join(", "),
                    level.as_str()
                )?;
            }
        }
        writeln!(self.out)
    }
}

impl<W: Write> Report for Text<W> {
    fn trace(&mut self, store: &Store, t: &AnalyzedTrace) -> io::Result<()> {
        self.traces += 1;
        let trace = &t.trace;
        let root = trace.root_span();
        let failed = trace
            .spans
            .iter()
            .filter(|s| s.status == StatusCode::Error)
            .count();
        let status = match (root.status, failed) {
            (StatusCode::Error, _) => "failed".to_owned(),
            (_, 0) => "ok".to_owned(),
            (_, n) => format!("ok, {n} span(s) failed below"),
        };
        writeln!(
            self.out,
            "trace {}  {}  {}\n  {} ms · {} spans · {} · started {}\n",
            trace.trace_id,
            t.entry.service,
            t.entry.operation,
            ms(t.duration_ns()),
            trace.len(),
            status,
            rfc3339(root.start_ns)
        )?;
        self.waterfall(t)?;
        writeln!(self.out, "\n  top hops by share of the request:")?;
        for h in t.hops.iter().take(TOP_HOPS) {
            writeln!(
                self.out,
                "    {:>5.1} %  {:>9} ms  {}",
                h.share * 100.0,
                ms(h.critical_ns),
                hop_name(&h.key)
            )?;
        }
        self.timeouts(t)?;
        self.notes(t)?;
        if !t.warnings.is_empty() {
            writeln!(self.out, "  warnings:")?;
            for w in t.warnings.iter().take(MAX_WARNINGS) {
                let code = serde_json::to_value(w.code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                writeln!(self.out, "    [{code}] {}", w.message)?;
            }
            if t.warnings.len() > MAX_WARNINGS {
                writeln!(
                    self.out,
                    "    … {} more (--format json has them all)",
                    t.warnings.len() - MAX_WARNINGS
                )?;
            }
        }
        let own = store.findings.for_trace(trace.trace_id, &t.finding_ids);
        for f in own {
            writeln!(
                self.out,
                "  finding: {} ({:016x}, below)",
                f.latest.kind.as_str(),
                f.id
            )?;
        }
        writeln!(self.out)
    }

    fn finish(&mut self, store: &Store, inputs: &[InputSummary]) -> io::Result<()> {
        for i in inputs {
            write!(
                self.out,
                "read {} ({}): {} record(s), {} spans",
                i.input, i.format, i.records, i.spans
            )?;
            if i.rejected > 0 {
                write!(
                    self.out,
                    ", {} refused ({})",
                    i.rejected,
                    i.errors.join("; ")
                )?;
            }
            writeln!(self.out)?;
        }
        writeln!(self.out, "{} trace(s) analyzed\n", self.traces)?;
        let coverage = store.coverage.services();
        let findings = findings(store);
        if findings.is_empty() {
            self.no_findings(&coverage)?;
            self.coverage(&coverage)?;
            return self.out.flush();
        }
        writeln!(self.out, "Findings, worst first:\n")?;
        for f in findings {
            let o = &f.latest;
            let culprit = match o.culprit.peer {
                Some(peer) => format!("{}  {} → {}", o.culprit.service, o.culprit.operation, peer),
                None => format!("{}  {}", o.culprit.service, o.culprit.operation),
            };
            writeln!(
                self.out,
                "[{}] {} ({:016x}): {}\n  {}\n  remedy: {}",
                o.severity.as_str(),
                o.kind.as_str(),
                f.id,
                culprit,
                o.summary,
                o.remedy
            )?;
            let mut examples: Vec<String> = Vec::new();
            for id in &o.trace_ids {
                let id = id.to_string();
                if examples.len() < 3 && !examples.contains(&id) {
                    examples.push(id);
                }
            }
            writeln!(
                self.out,
                "  seen {} time(s); traces: {}\n",
                o.count,
                examples.join(", ")
            )?;
        }
        self.coverage(&coverage)?;
        self.out.flush()
    }
}
