//! Statement shapes over the window (the slow-query log built from traces)
//! and `slow_query`: a shape whose calls are themselves slow.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::records::DbTarget;
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::thresholds::{ns, SlowQuery};
use crate::analyze::{Crossed, Culprit, EntryPoint, FindingKind, Observation, Severity};
use crate::model::{Sym, TraceId};
/// Longest statement in a culprit's operation.
const CULPRIT_CHARS: usize = 120;
/// Example traces per shape.
const EXAMPLES: usize = 10;

/// One statement shape on one target, over the traces given.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryShape {
    pub statement: Arc<str>,
    pub target: DbTarget,
    /// Calling services, most calls first.
    pub services: Vec<(Sym, u64)>,
    /// Call durations, ascending.
    pub durations_ns: Vec<u64>,
    pub total_ns: u64,
    pub critical_ns: u64,
    /// `critical_ns` over the summed root durations of every trace of the entry
    /// points that ran this shape.
    pub critical_share: f64,
    /// The most recent first.
    pub trace_ids: Vec<TraceId>,
    /// End of the latest trace that ran it (unix ns).
    pub last_end_ns: u64,
}

impl QueryShape {
    pub fn count(&self) -> u64 {
        self.durations_ns.len() as u64
    }

    pub fn p50_ns(&self) -> u64 {
        quantile(&self.durations_ns, 0.5).unwrap_or(0)
    }

    pub fn p95_ns(&self) -> u64 {
        quantile(&self.durations_ns, 0.95).unwrap_or(0)
    }

    pub fn max_ns(&self) -> u64 {
        self.durations_ns.last().copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct Acc {
    services: FxHashMap<Sym, u64>,
    durations: Vec<u64>,
    critical_ns: u64,
    entries: Vec<EntryPoint>,
    /// (trace end, id), in window order (oldest end first).
    traces: Vec<(u64, TraceId)>,
}

/// The statement shapes of `traces` (the window's, oldest end first), by
/// critical time, largest first.
pub fn query_shapes(traces: &[Arc<TraceCalls>]) -> Vec<QueryShape> {
    let mut entry_ns: FxHashMap<EntryPoint, u64> = FxHashMap::default();
    let mut acc: FxHashMap<(Arc<str>, DbTarget), Acc> = FxHashMap::default();
    for t in traces {
        *entry_ns.entry(t.root.entry).or_default() += t.root.duration_ns;
        for q in &t.saturation.queries {
            let a = acc.entry((q.statement.clone(), q.target)).or_default();
            *a.services.entry(q.service).or_default() += 1;
            a.durations.push(q.duration_ns);
            a.critical_ns += q.critical_ns;
            if !a.entries.contains(&t.root.entry) {
                a.entries.push(t.root.entry);
            }
            if a.traces.last().map(|l| l.1) != Some(t.trace_id) {
                a.traces.push((t.end_ns(), t.trace_id));
            }
        }
    }
    let mut shapes: Vec<QueryShape> = acc
        .into_iter()
        .map(|((statement, target), mut a)| {
            a.durations.sort_unstable();
            let mut services: Vec<(Sym, u64)> = a.services.into_iter().collect();
            services.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.as_str().cmp(y.0.as_str())));
            let entry_total: u64 = a.entries.iter().map(|e| entry_ns[e]).sum();
            let last_end_ns = a.traces.iter().map(|t| t.0).max().unwrap_or(0);
            QueryShape {
                statement,
                target,
                services,
                total_ns: a.durations.iter().sum(),
                durations_ns: a.durations,
                critical_ns: a.critical_ns,
                critical_share: if entry_total == 0 {
                    0.0
                } else {
                    a.critical_ns as f64 / entry_total as f64
                },
                trace_ids: a.traces.iter().rev().take(EXAMPLES).map(|t| t.1).collect(),
                last_end_ns,
            }
        })
        .collect();
    shapes.sort_by(|a, b| {
        b.critical_ns
            .cmp(&a.critical_ns)
            .then(b.total_ns.cmp(&a.total_ns))
            .then(a.target.sort_key().cmp(&b.target.sort_key()))
            .then(a.statement.cmp(&b.statement))
    });
    shapes
}

/// The p95 over which a shape is slow, given the median of the other shapes'
/// medians on its target, and the key of [`SlowQuery`] that set it:
/// `absolute_ms`, or less when other shapes are known: `factor` × their
/// median, at least `min_ms`.
pub fn slow_threshold_ns(others_median_ns: Option<u64>, config: &SlowQuery) -> (u64, &'static str) {
    let (absolute, min) = (ns(config.absolute_ms), ns(config.min_ms));
    match others_median_ns.map(|m| (m as f64 * config.factor) as u64) {
        None => (absolute, "absolute_ms"),
        Some(t) if t >= absolute => (absolute, "absolute_ms"),
        Some(t) if t <= min => (min, "min_ms"),
        Some(t) => (t, "factor"),
    }
}

/// The median (nearest rank) of `sorted` without one occurrence of `own`
/// (which it holds): no new list per shape.
fn median_without(sorted: &[u64], own: u64) -> Option<u64> {
    let m = sorted.len().checked_sub(1).filter(|&m| m > 0)?;
    let k = (m.div_ceil(2)).clamp(1, m) - 1;
    let p = sorted.partition_point(|&x| x < own);
    Some(if k < p { sorted[k] } else { sorted[k + 1] })
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The culprit of a finding about a statement: the calling service, the
/// statement ([`culprit_statement`]) and its target's label.
pub(super) fn statement_culprit(service: Sym, operation: &str, target: &str) -> Culprit {
    Culprit {
        service,
        operation: Sym::new(operation),
        peer: Some(Sym::new(target)),
    }
}

/// Critical when what the finding describes holds at least half of its
/// requests' critical path.
pub(super) fn severity_by_share(share: f64) -> Severity {
    if share >= 0.5 {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

/// A statement as a culprit's operation: cut at [`CULPRIT_CHARS`] characters.
pub(crate) fn culprit_statement(statement: &str) -> String {
    match statement.char_indices().nth(CULPRIT_CHARS) {
        Some((cut, _)) => format!("{}…", &statement[..cut]),
        None => statement.to_owned(),
    }
}

/// `slow_query` over the shapes ([`query_shapes`]): a shape whose p95 is over
/// its threshold ([`slow_threshold_ns`]) with at least `min_calls` calls over
/// it (one slow request is an outlier, not a slow query). Critical when its calls are at least half of the critical
/// path of the entry points that run it.
pub fn slow_queries(shapes: &[&QueryShape], config: &SlowQuery) -> Vec<Observation> {
    let mut medians: FxHashMap<DbTarget, Vec<u64>> = FxHashMap::default();
    for s in shapes {
        medians.entry(s.target).or_default().push(s.p50_ns());
    }
    for m in medians.values_mut() {
        m.sort_unstable();
    }
    let mut out = Vec::new();
    for s in shapes {
        let others_median = median_without(&medians[&s.target], s.p50_ns());
        let (threshold, key) = slow_threshold_ns(others_median, config);
        let slow = s.durations_ns.iter().filter(|&&d| d >= threshold).count();
        let p95 = s.p95_ns();
        if p95 < threshold || slow < config.min_calls as usize {
            continue;
        }
        let over = match (key, others_median) {
            ("factor", Some(m)) => Crossed::new(
                "slow_query.factor",
                config.factor,
                p95 as f64 / m.max(1) as f64,
            ),
            _ => Crossed::new(&format!("slow_query.{key}"), ms(threshold), ms(p95)),
        };
        let service = s
            .services
            .first()
            .map_or(Sym::new("unknown_service"), |x| x.0);
        let operation = culprit_statement(&s.statement);
        let target = s.target.label();
        out.push(Observation {
            kind: FindingKind::SlowQuery,
            severity: severity_by_share(s.critical_share),
            culprit: statement_culprit(service, &operation, &target),
            chain: Vec::new(),
            summary: format!(
                "{service} runs `{operation}` on {target} {} times with p95 {:.0} ms \
                 (p50 {:.0} ms, max {:.0} ms; {slow} calls at or over {:.0} ms); \
                 it holds {:.0} % of its requests' critical path",
                s.count(),
                ms(p95),
                ms(s.p50_ns()),
                ms(s.max_ns()),
                ms(threshold),
                s.critical_share * 100.0
            ),
            remedy: "Fix or index the query: EXPLAIN it, add an index on the columns it filters \
                     and joins on, fetch only what is needed, and batch N+1 calls into one."
                .to_owned(),
            evidence: Evidence::SlowQuery(evidence::SlowQuery {
                statement: s.statement.to_string(),
                target: s.target,
                services: s.services.iter().map(|x| x.0).collect(),
                calls: s.count(),
                slow_calls: slow,
                p50_ms: ms(s.p50_ns()),
                p95_ms: ms(p95),
                max_ms: ms(s.max_ns()),
                threshold_ms: ms(threshold),
                other_shapes_median_ms: others_median.map(ms),
                total_ms: ms(s.total_ns),
                critical_ms: ms(s.critical_ns),
                critical_share: s.critical_share,
            }),
            trace_ids: s.trace_ids.clone(),
            count: slow as u64,
            seen_ns: s.last_end_ns,
            crossed: vec![
                over,
                Crossed::new("slow_query.min_calls", config.min_calls, slow as f64),
            ],
            location: None,
            spans: Vec::new(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(statement: &str, durations_ms: &[u64]) -> QueryShape {
        let mut durations_ns: Vec<u64> = durations_ms.iter().map(|d| d * MS).collect();
        durations_ns.sort_unstable();
        QueryShape {
            statement: statement.into(),
            target: DbTarget {
                system: Some(Sym::new("postgresql")),
                address: Some(Sym::new("db")),
                namespace: None,
            },
            services: vec![(Sym::new("orders"), durations_ms.len() as u64)],
            total_ns: durations_ns.iter().sum(),
            critical_ns: durations_ns.iter().sum(),
            durations_ns,
            critical_share: 0.2,
            trace_ids: Vec::new(),
            last_end_ns: 1,
        }
    }

    const MS: u64 = 1_000_000;

    fn slow_queries(shapes: &[QueryShape]) -> Vec<Observation> {
        super::slow_queries(&shapes.iter().collect::<Vec<_>>(), &SlowQuery::default())
    }

    #[test]
    fn thresholds() {
        let d = SlowQuery::default();
        assert_eq!(slow_threshold_ns(None, &d), (500 * MS, "absolute_ms"));
        assert_eq!(slow_threshold_ns(Some(3 * MS), &d), (100 * MS, "min_ms"));
        assert_eq!(
            slow_threshold_ns(Some(30 * MS), &d),
            (150 * MS, "factor"),
            "5 × 30 ms"
        );
        assert_eq!(
            slow_threshold_ns(Some(300 * MS), &d),
            (500 * MS, "absolute_ms")
        );
        // The others' median, without the shape itself.
        let sorted = [2, 3, 5, 160];
        assert_eq!(median_without(&sorted, 160), Some(3));
        assert_eq!(median_without(&sorted, 2), Some(5));
        assert_eq!(median_without(&sorted, 3), Some(5));
        assert_eq!(median_without(&[7, 7], 7), Some(7));
        assert_eq!(median_without(&[7], 7), None);
    }

    #[test]
    fn a_shape_slow_against_its_neighbours_is_reported_and_an_outlier_is_not() {
        let shapes = vec![
            shape("SELECT a", &[150, 160, 170, 180]),
            shape("SELECT b", &[5; 20]),
            shape("SELECT c", &[[3; 19].as_slice(), &[2_000]].concat()),
            shape("SELECT d", &[400, 2]),
        ];
        let found = slow_queries(&shapes);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].culprit.operation.as_str(), "SELECT a");
        assert_eq!(found[0].culprit.peer.unwrap().as_str(), "postgresql db");
        assert_eq!(found[0].count, 4);
        assert_eq!(
            found[0].crossed[0],
            Crossed::new("slow_query.min_ms", 100.0, 180.0),
            "the others' median is 5 ms: 25 ms is under the floor"
        );
        // Alone on its target, 180 ms is not slow; 600 ms is.
        assert!(slow_queries(&shapes[..1]).is_empty());
        assert_eq!(
            slow_queries(&[shape("SELECT a", &[600, 700, 800])]).len(),
            1
        );
        // A lower absolute limit makes 180 ms alone slow, and says so.
        let config = SlowQuery {
            absolute_ms: 150.0,
            ..SlowQuery::default()
        };
        let found = super::slow_queries(&[&shapes[0]], &config);
        assert_eq!(
            found[0].crossed[0],
            Crossed::new("slow_query.absolute_ms", 150.0, 180.0)
        );
    }
}
