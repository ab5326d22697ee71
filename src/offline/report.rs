//! What `hopscope analyze` prints: a report for people ([`Text`]), the
//! API's JSON shapes ([`Json`]) or SARIF for code scanning
//! ([`super::sarif::Sarif`]). Each is written trace by trace as traces are
//! analyzed, then the findings once the cross-trace detectors have run: the
//! same [`Findings`] selection for all three, those not in the [`Baseline`].

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use crate::analyze::coverage::{Counts, Level};
use crate::analyze::{
    finding_id, timeout, AnalyzedTrace, CodeLocation, Culprit, FindingKind, HopKey, HopKind,
    Severity, TimeoutCause,
};
use crate::api::{
    blind_by_service, coverage_bodies, crossed_text, entry_body, rfc3339, trace_body, FindingBody,
};
use crate::model::StatusCode;
use crate::model::Sym;
use crate::store::{Finding, FindingFilter, Store};

use super::{InputSummary, OfflineError, OutOfBounds};

/// Most findings listed.
const MAX_FINDINGS: usize = 1_000;

/// A report being written.
pub trait Report {
    /// One analyzed trace; `baseline` names the findings already known.
    fn trace(
        &mut self,
        store: &Store,
        t: &AnalyzedTrace,
        baseline: Option<&Baseline>,
    ) -> io::Result<()>;
    /// The end: what was read, and the findings.
    fn finish(
        &mut self,
        store: &Store,
        inputs: &[InputSummary],
        out_of_bounds: &OutOfBounds,
        findings: &Findings,
    ) -> io::Result<()>;
}

/// The findings of a previous run (`hopscope analyze --format json`): a run
/// against it reports, and fails the gate, only on findings not in it. A
/// finding is known when its kind and culprit (service, operation, peer)
/// are, whatever traces it was seen in: trace ids change every run, a
/// problem's kind and culprit do not (they make the finding's id).
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// The file, as named on the command line.
    pub name: String,
    ids: HashSet<u64>,
}

/// What a baseline needs of a `--format json` output.
#[derive(serde::Deserialize)]
struct BaselineDocument {
    findings: Vec<BaselineFinding>,
}

#[derive(serde::Deserialize)]
struct BaselineFinding {
    /// A kind this version does not know matches nothing here.
    kind: String,
    culprit: Culprit,
}

impl Baseline {
    /// Reads a `hopscope analyze --format json` output.
    pub fn read(path: &Path) -> Result<Baseline, OfflineError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| OfflineError::Io {
            input: name.clone(),
            source,
        })?;
        Baseline::parse(name, &bytes)
    }

    /// Parses the text of a `hopscope analyze --format json` output.
    pub fn parse(name: String, bytes: &[u8]) -> Result<Baseline, OfflineError> {
        let doc: BaselineDocument =
            serde_json::from_slice(bytes).map_err(|e| OfflineError::Baseline {
                input: name.clone(),
                why: e.to_string(),
            })?;
        let ids = doc
            .findings
            .iter()
            .filter_map(|f| Some(finding_id(FindingKind::parse(&f.kind)?, &f.culprit)))
            .collect();
        Ok(Baseline { name, ids })
    }

    /// Whether finding `id` (see [`finding_id`]) is known.
    pub fn knows(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }
}

/// The findings a report lists: worst first, without those the baseline
/// knows, which are only counted.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Findings not in the baseline (all of them without one).
    pub new: Vec<Finding>,
    /// With a baseline: its name and how many findings it held back.
    pub known: Option<(String, usize)>,
}

impl Findings {
    /// The store's findings, split by `baseline`.
    pub fn select(store: &Store, baseline: Option<&Baseline>) -> Findings {
        let all = store
            .findings()
            .list(&FindingFilter::default(), MAX_FINDINGS);
        let (known, new): (Vec<Finding>, Vec<Finding>) = all
            .into_iter()
            .partition(|f| baseline.is_some_and(|b| b.knows(f.id)));
        Findings {
            new,
            known: baseline.map(|b| (b.name.clone(), known.len())),
        }
    }

    /// New findings at least as severe as `severity`: those that fail the gate.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.new
            .iter()
            .filter(move |f| f.latest.severity >= severity)
    }

    /// The CI gate at `fail_on`: whether it passed, and the line that says
    /// so, naming each failing finding by kind and culprit.
    pub fn gate(&self, fail_on: Severity) -> (bool, String) {
        let failing: Vec<String> = self
            .at_least(fail_on)
            .map(|f| {
                let c = &f.latest.culprit;
                let peer = c.peer.map(|p| format!(" → {p}")).unwrap_or_default();
                let kind = f.latest.kind.as_str();
                format!("{kind} ({} {}{peer})", c.service, c.operation)
            })
            .collect();
        let new = if self.known.is_some() { "new " } else { "" };
        let level = fail_on.as_str();
        if failing.is_empty() {
            (
                true,
                format!("hopscope analyze: no {new}finding at or above {level}: passed"),
            )
        } else {
            let n = failing.len();
            let names = failing.join(", ");
            (
                false,
                format!(
                    "hopscope analyze: {n} {new}finding(s) at or above {level}: {names}: failed"
                ),
            )
        }
    }
}

/// `namespace.function`, or the function alone (also when it already
/// starts with its namespace).
pub fn qualified_function(l: &CodeLocation) -> Option<String> {
    let function = l.function.as_deref()?;
    Some(match l.namespace.as_deref() {
        Some(ns) if !function.starts_with(ns) => format!("{ns}.{function}"),
        _ => function.to_owned(),
    })
}

/// `path/file.py:42 in module.func`, as much of it as is known.
pub fn location_text(l: &CodeLocation) -> String {
    let file = l.file.as_deref().map(|f| match l.line {
        Some(line) => format!("{f}:{line}"),
        None => f.to_owned(),
    });
    match (file, qualified_function(l)) {
        (Some(file), Some(function)) => format!("{file} in {function}"),
        (Some(file), None) => file,
        (None, Some(function)) => function,
        (None, None) => String::new(),
    }
}

/// The API's JSON: `{"traces": [trace...], "inputs": [...], "out_of_bounds":
/// {...}, "findings": [finding...], "entries": [entry...], "coverage":
/// [service...]}` (`out_of_bounds`: [`OutOfBounds`]), with the
/// shapes of `GET /api/v1/traces/{id}`, `GET /api/v1/findings`,
/// `GET /api/v1/hops` and `GET /api/v1/coverage`. With a baseline, `findings`
/// has the new ones and `baseline` says `{"file", "known"}`; a baseline for
/// the next run is the output of a run without one.
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
    fn trace(
        &mut self,
        store: &Store,
        t: &AnalyzedTrace,
        _baseline: Option<&Baseline>,
    ) -> io::Result<()> {
        self.out.write_all(if self.traces == 0 {
            b"{\"traces\":["
        } else {
            b","
        })?;
        self.traces += 1;
        serde_json::to_writer(&mut self.out, &trace_body(t, store.findings()))?;
        Ok(())
    }

    fn finish(
        &mut self,
        store: &Store,
        inputs: &[InputSummary],
        out_of_bounds: &OutOfBounds,
        findings: &Findings,
    ) -> io::Result<()> {
        if self.traces == 0 {
            self.out.write_all(b"{\"traces\":[")?;
        }
        self.out.write_all(b"],\"inputs\":")?;
        serde_json::to_writer(&mut self.out, inputs)?;
        self.out.write_all(b",\"out_of_bounds\":")?;
        serde_json::to_writer(&mut self.out, out_of_bounds)?;
        if let Some((file, known)) = &findings.known {
            self.out.write_all(b",\"baseline\":")?;
            let baseline = serde_json::json!({ "file": file, "known": known });
            serde_json::to_writer(&mut self.out, &baseline)?;
        }
        self.out.write_all(b",\"findings\":")?;
        let bodies: Vec<FindingBody> = findings.new.iter().cloned().map(Into::into).collect();
        serde_json::to_writer(&mut self.out, &bodies)?;
        self.out.write_all(b",\"entries\":")?;
        let entries: Vec<_> = store
            .aggregates()
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
            let entries = c.blind();
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
    fn trace(
        &mut self,
        store: &Store,
        t: &AnalyzedTrace,
        baseline: Option<&Baseline>,
    ) -> io::Result<()> {
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
        let own = store.findings().for_trace(trace.trace_id, &t.finding_ids);
        for f in own {
            let known = baseline.is_some_and(|b| b.knows(f.id));
            writeln!(
                self.out,
                "  finding: {} ({:016x}, {})",
                f.latest.kind.as_str(),
                f.id,
                if known {
                    "known: in the baseline"
                } else {
                    "below"
                }
            )?;
        }
        writeln!(self.out)
    }

    fn finish(
        &mut self,
        store: &Store,
        inputs: &[InputSummary],
        out_of_bounds: &OutOfBounds,
        findings: &Findings,
    ) -> io::Result<()> {
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
        if let Some(text) = out_of_bounds.text() {
            writeln!(self.out, "{text}")?;
        }
        writeln!(self.out, "{} trace(s) analyzed\n", self.traces)?;
        let coverage = store.coverage().services();
        let known = match &findings.known {
            Some((file, n)) => format!(
                "{n} known finding(s) in the baseline {file}, not listed: they do not fail the gate."
            ),
            None => String::new(),
        };
        if findings.new.is_empty() {
            match findings.known {
                Some((_, n)) if n > 0 => writeln!(self.out, "No new findings. {known}\n")?,
                _ => self.no_findings(&coverage)?,
            }
            self.coverage(&coverage)?;
            return self.out.flush();
        }
        match &findings.known {
            Some((file, _)) => writeln!(
                self.out,
                "New findings (not in the baseline {file}), worst first:\n"
            )?,
            None => writeln!(self.out, "Findings, worst first:\n")?,
        }
        for f in &findings.new {
            let o = &f.latest;
            let culprit = match o.culprit.peer {
                Some(peer) => format!("{}  {} → {}", o.culprit.service, o.culprit.operation, peer),
                None => format!("{}  {}", o.culprit.service, o.culprit.operation),
            };
            writeln!(
                self.out,
                "[{}] {} ({:016x}): {}",
                o.severity.as_str(),
                o.kind.as_str(),
                f.id,
                culprit,
            )?;
            if let Some(l) = &o.location {
                writeln!(self.out, "  at {}", location_text(l))?;
            }
            writeln!(self.out, "  {}\n  remedy: {}", o.summary, o.remedy)?;
            for c in &o.crossed {
                writeln!(self.out, "  {}", crossed_text(c))?;
            }
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
        if !known.is_empty() {
            writeln!(self.out, "{known}\n")?;
        }
        self.coverage(&coverage)?;
        self.out.flush()
    }
}
