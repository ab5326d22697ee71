//! The request's own anti-patterns, found in one trace: the same call in a
//! loop (`n_plus_one`), independent calls made one after another
//! (`serial_calls`), the identical call made twice (`redundant_call`), a
//! service calling another dozens of times (`chatty_edge`) and a span
//! starting too many calls at once (`excessive_fanout`).
//!
//! Every detector reads one table of the trace's calls (`calls.rs`): each
//! CLIENT, PRODUCER or database span that is not a second instrumentation
//! layer of another ([`crate::analyze::layers`]) nor a connection checkout,
//! with what it called (its *shape*: the normalised statement, the cache
//! command, the callee's route, the URL template, the RPC method or the span
//! name), its visible arguments, the span it was made under (above
//! single-call wrapper spans such as HotROD's `HTTP GET: /route`) and its time
//! on the critical path. What a pattern costs is that critical time: a loop
//! off the critical path costs the user nothing, and is reported so.

mod calls;
mod chatty;
mod fanout;
mod n_plus_one;
mod redundant;
mod serial;
mod thresholds;

pub use thresholds::{
    ChattyEdgeThresholds, ExcessiveFanoutThresholds, NPlusOneThresholds, PatternSeverity,
    RedundantCallThresholds, SerialCallsThresholds,
};

use calls::{Call, CallKind, Calls};

use super::finding::ms;
use super::{
    AnalyzedTrace, ChainHop, CodeLocation, Crossed, Culprit, Evidence, FindingKind, Observation,
    Severity, Thresholds,
};

/// The kinds these detectors report; their summaries say what the pattern
/// costs on the critical path.
pub const KINDS: [FindingKind; 5] = [
    FindingKind::NPlusOne,
    FindingKind::SerialCalls,
    FindingKind::RedundantCall,
    FindingKind::ChattyEdge,
    FindingKind::ExcessiveFanout,
];

/// Runs the anti-pattern detectors over an analyzed trace.
pub fn detect(t: &AnalyzedTrace, limits: &Thresholds) -> Vec<Observation> {
    let calls = Calls::of(t);
    if calls.too_few() {
        return Vec::new();
    }
    let report = Report::new(t, &limits.pattern_severity);
    let loops = n_plus_one::find(&t.trace, &calls, &limits.n_plus_one);
    let mut out = Vec::new();
    out.extend(
        loops
            .iter()
            .filter_map(|l| n_plus_one::report(&report, &calls, l)),
    );
    out.extend(serial::find(&report, &calls, &loops, &limits.serial_calls));
    out.extend(redundant::find(&report, &calls, &limits.redundant_call));
    out.extend(chatty::find(&report, &calls, &loops, &limits.chatty_edge));
    out.extend(fanout::find(&report, &calls, &limits.excessive_fanout));
    // One observation per kind and culprit and trace: the costliest.
    out.sort_by(|a, b| {
        (a.kind, a.culprit)
            .cmp(&(b.kind, b.culprit))
            .then(critical_of(b).total_cmp(&critical_of(a)))
    });
    out.dedup_by(|b, a| a.kind == b.kind && a.culprit == b.culprit);
    out
}

fn critical_of(o: &Observation) -> f64 {
    o.evidence.critical_ms().unwrap_or(0.0)
}

/// What every pattern's observation shares: the trace, its entry point's
/// latency, and how its critical share maps to a severity.
struct Report<'a> {
    t: &'a AnalyzedTrace,
    duration_ns: u64,
    severity: &'a PatternSeverity,
}

impl<'a> Report<'a> {
    fn new(t: &'a AnalyzedTrace, severity: &'a PatternSeverity) -> Report<'a> {
        Report {
            t,
            duration_ns: t.duration_ns(),
            severity,
        }
    }

    /// `critical_ns` as a share of the entry point's latency.
    fn share(&self, critical_ns: u64) -> f64 {
        if self.duration_ns == 0 {
            0.0
        } else {
            (critical_ns as f64 / self.duration_ns as f64).min(1.0)
        }
    }

    /// Critical from `severity.critical_share` of the request's latency,
    /// warning from `severity.warning_share`, otherwise (or below
    /// `severity.warning_min_ms`) information: what the user does not wait on
    /// is reported with its small cost.
    fn severity(&self, critical_ns: u64) -> Severity {
        let share = self.share(critical_ns);
        if ms(critical_ns) < self.severity.warning_min_ms {
            Severity::Info
        } else if share >= self.severity.critical_share {
            Severity::Critical
        } else if share >= self.severity.warning_share {
            Severity::Warning
        } else {
            Severity::Info
        }
    }

    /// "190 ms of the 693 ms request (27 %)".
    fn cost(&self, critical_ns: u64) -> String {
        format!(
            "{:.0} ms of the {:.0} ms request ({:.0} %)",
            ms(critical_ns),
            ms(self.duration_ns),
            self.share(critical_ns) * 100.0
        )
    }

    /// The observation of a pattern in this trace: its severity by its cost,
    /// the chain from the entry point to `p.at`, the source location of the
    /// first call (or its wrapper's, or its parent's), and the spans of the
    /// calls and their wrappers.
    fn observe(&self, p: Pattern, calls: &[&Call]) -> Observation {
        let trace = &self.t.trace;
        let mut spans = Vec::new();
        for c in calls {
            let mut at = c.span;
            spans.push(trace.span(at).span_id);
            while at != c.top {
                match trace.parent[at as usize] {
                    Some(up) => at = up,
                    None => break,
                }
                spans.push(trace.span(at).span_id);
            }
        }
        Observation {
            kind: p.evidence.kind(),
            severity: self.severity(p.cost_ns),
            culprit: p.culprit,
            chain: ChainHop::path(trace, p.at, &self.t.timed_out),
            summary: p.summary,
            remedy: p.remedy,
            evidence: p.evidence,
            trace_ids: vec![trace.trace_id],
            count: 1,
            seen_ns: trace.end(trace.root),
            crossed: p.crossed,
            location: calls.first().and_then(|c| {
                [c.span, c.top, c.parent]
                    .into_iter()
                    .find_map(|s| CodeLocation::of(trace, s))
            }),
            spans,
        }
    }
}

/// What one pattern detector says of one trace; [`Report::observe`] adds what
/// every pattern's observation shares.
struct Pattern {
    /// The critical time its severity is judged by.
    cost_ns: u64,
    culprit: Culprit,
    /// The span the chain from the entry point leads to.
    at: u32,
    summary: String,
    remedy: String,
    /// What it measured; its kind is the pattern's.
    evidence: Evidence,
    crossed: Vec<Crossed>,
}

/// The peak number of `intervals` in flight at once: at least 1 when there
/// are any (a call whose sure part is empty still ran).
fn peak_in_flight(intervals: impl IntoIterator<Item = (u64, u64)>) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for (start, end) in intervals {
        edges.push((start, 1));
        edges.push((end.max(start), -1));
    }
    // Ends before starts at the same instant: back to back is not overlap.
    edges.sort_unstable();
    let (mut now, mut peak) = (0i32, 0i32);
    let any = !edges.is_empty();
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    (peak as usize).max(usize::from(any))
}

/// What to do about a repeated call, by what it calls.
fn batch_remedy(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Db => "Load the rows in one query: a join, `WHERE ... IN (...)`, or the ORM's eager loading (SQLAlchemy `selectinload`/`joinedload`, Django `prefetch_related`, ActiveRecord `includes`).",
        CallKind::Cache => "Fetch the keys in one round trip: `MGET`, a pipeline, or a multi-get.",
        CallKind::Http => "Call a bulk endpoint with all the ids at once, or prefetch what the loop needs before it starts.",
        CallKind::Rpc => "Add a batch method that takes all the keys, or prefetch them in one call.",
        CallKind::Message => "Publish the messages as one batch.",
        CallKind::Other => "Batch the calls into one, or prefetch what the loop needs before it starts.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::analyze::testing::{span, trace};
    use crate::model::SpanKind;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_loop_of_one_statement_with_inline_literals_counts_its_distinct_values() {
        // An ORM that inlines its values: six selects of three ids, twice.
        let statements: Vec<String> = (0..6)
            .map(|k| format!("SELECT name FROM items WHERE id = {}", 40 + k % 3))
            .collect();
        let mut spans = vec![(
            span("shop", (1, 0), "GET /cart", SpanKind::Server, (0, 100 * MS)),
            vec![],
        )];
        for (k, statement) in statements.iter().enumerate() {
            let at = (10 + 10 * k as u64) * MS;
            spans.push((
                span(
                    "shop",
                    (2 + k as u64, 1),
                    "SELECT",
                    SpanKind::Client,
                    (at, at + 9 * MS),
                ),
                vec![("db.system", "mysql"), ("db.statement", statement.as_str())],
            ));
        }
        let t = analyze(trace(spans));
        let [o, again] = t.observations.as_slice() else {
            panic!("a loop and its repeats: {:#?}", t.observations)
        };
        // Each id is fetched twice: three of the six calls are repeats.
        assert_eq!(again.kind, FindingKind::RedundantCall);
        let Evidence::RedundantCall(e) = &again.evidence else {
            panic!("{:?}", again.evidence)
        };
        assert_eq!((e.repeated_calls, e.repeats), (3, 3));
        assert_eq!(o.kind, FindingKind::NPlusOne);
        assert_eq!(
            o.culprit.operation.as_str(),
            "SELECT name FROM items WHERE id = ?"
        );
        let Evidence::NPlusOne(e) = &o.evidence else {
            panic!("{:?}", o.evidence)
        };
        assert_eq!(
            (e.calls, e.distinct_parameters, e.peak_in_flight),
            (6, Some(3), 1)
        );
        // 54 ms of a 100 ms request waits on it: critical.
        assert_eq!(o.severity, Severity::Critical);
        assert_eq!(o.spans.len(), 6);
    }

    #[test]
    fn back_to_back_calls_are_not_in_flight_together() {
        assert_eq!(peak_in_flight([(0, 10), (10, 20), (20, 30)]), 1);
        assert_eq!(peak_in_flight([(0, 10), (5, 20), (6, 30), (21, 40)]), 3);
        assert_eq!(peak_in_flight([]), 0);
        // Calls of under a millisecond stamped in whole milliseconds.
        assert_eq!(peak_in_flight([(28, 28), (28, 28), (29, 29)]), 1);
    }
}
