//! The timeout budget of each entry point, and what violates it.
//!
//! Two passes over the window. The first infers timeouts: per edge from the
//! durations of calls that gave up by themselves ([`CallRecord::gave_up`](super::CallRecord::gave_up)),
//! over every entry point (a client timeout is the caller's setting); per entry
//! point from its timed-out roots. The second walks each trace's calls, parents
//! first, carrying the tightest deadline above each call: the entry's timeout
//! from the root's start, and each enclosing call's inferred timeout from that
//! call's start. What is left for a call is that deadline minus the call's start.
//!
//! An entry point's timeout is a budget for the calls below only when it is the
//! limit of a layer in front (the root gave up while its calls still ran). When
//! most of its timeouts only relayed a call that gave up just before
//! ([`RootRecord::relayed_from`](super::RootRecord::relayed_from)), it is that call's timeout, not a deadline on
//! the others.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::calls::{EdgeKey, TraceCalls};
use super::infer::{infer_timeout, quantile, Inferred, Layer};
use super::report::{self, Examples, Headroom, Overruns, Support};
use crate::analyze::thresholds::{ns, DeadlineNotPropagated, TimeoutInversion};
use crate::analyze::{finding_id, EntryPoint, Observation, Thresholds};

/// What a call's budget is measured against: the tightest deadline above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outer {
    /// The timeout in front of the entry point, from the root's start.
    Entry { timeout_ns: u64 },
    /// The inferred timeout of an enclosing call, from that call's start.
    Edge { edge: EdgeKey, timeout_ns: u64 },
}

impl Outer {
    pub fn timeout_ns(&self) -> u64 {
        match *self {
            Outer::Entry { timeout_ns } | Outer::Edge { timeout_ns, .. } => timeout_ns,
        }
    }
}

/// What a budget detector reports on an entry point or an edge, with the id
/// of the finding it is merged into ([`finding_id`]), so whoever shows the
/// budget map can link each violation to its finding.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The id of the finding it is merged into.
    pub finding_id: u64,
    /// What the detector reports.
    pub observation: Observation,
}

impl From<Observation> for Violation {
    fn from(observation: Observation) -> Self {
        Violation {
            finding_id: finding_id(observation.kind, &observation.culprit),
            observation,
        }
    }
}

/// One edge under one entry point.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeBudget {
    pub edge: EdgeKey,
    /// The smallest depth it was called at.
    pub depth: u16,
    /// Inferred over every entry point in the window.
    pub timeout: Option<Inferred>,
    /// Calls under this entry point.
    pub calls: u64,
    /// Of them, those that ended in a timeout, their own or relayed.
    pub timed_out: u64,
    /// Of the calls that did not time out.
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// The median budget left when the call started (negative: the deadline above
    /// had already passed), and what it is measured against.
    pub budget_left_ns: Option<i64>,
    pub outer: Option<Outer>,
    /// Calls whose work went on after the side waiting for it timed out.
    pub overran: u64,
    pub max_overrun_ns: u64,
    pub violations: Vec<Violation>,
}

/// One entry point: its own timeout and the edges below it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryBudget {
    pub entry: EntryPoint,
    pub traces: u64,
    pub timed_out: u64,
    /// Where its timed-out roots' durations cluster.
    pub timeout: Option<Inferred>,
    pub layer: Option<Layer>,
    /// When the timeout only relays a call's: that call's edge.
    pub source: Option<EdgeKey>,
    /// Of the roots that did not time out.
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    /// By depth, then name.
    pub edges: Vec<EdgeBudget>,
    /// The entry point's own (gateway timeout, headroom).
    pub violations: Vec<Violation>,
}

impl EntryBudget {
    /// The deadline the calls below get from the entry point, if it has one.
    fn budget_ns(&self) -> Option<u64> {
        self.timeout
            .filter(|_| self.source.is_none())
            .map(|t| t.value_ns)
    }
}

/// A call's timeout exceeds what is left above it when it is longer by more
/// than this (`timeout_inversion`: 0.1 %, at least 2 ms): an inner deadline
/// set to exactly what is left is a propagated deadline, not an inversion.
fn slack_ns(left_ns: i64, config: &TimeoutInversion) -> i64 {
    ((left_ns as f64 * config.slack_share) as i64).max(ns(config.slack_ms) as i64)
}

/// Work counts as going on after its caller gave up from this overrun
/// (`deadline_not_propagated`: 1 % of the call, at least 1 ms).
fn overran(duration_ns: u64, overrun_ns: u64, config: &DeadlineNotPropagated) -> bool {
    let at_least =
        ((duration_ns as f64 * config.min_overrun_share) as u64).max(ns(config.min_overrun_ms));
    overrun_ns > 0 && overrun_ns >= at_least
}

#[derive(Default)]
struct EdgeAcc {
    depth: u16,
    calls: u64,
    timed_out: u64,
    ok_ns: Vec<u64>,
    lefts: Vec<(i64, Outer)>,
    over_budget: u64,
    over_budget_examples: Examples,
    overran: u64,
    max_overrun_ns: u64,
    total_overrun_ns: u64,
    overrun_examples: Examples,
    slow: u64,
    slow_examples: Examples,
}

#[derive(Default)]
struct EntryAcc {
    traces: u64,
    timed_out: u64,
    ok_ns: Vec<u64>,
    relays: FxHashMap<Option<EdgeKey>, u64>,
    timeout_examples: Examples,
    statuses: FxHashMap<Option<u16>, u64>,
    slow: u64,
    slow_examples: Examples,
    edges: FxHashMap<EdgeKey, EdgeAcc>,
}

/// Whether `ns` is above `share` of `timeout_ns` (`headroom.share`).
fn over_share(ns: u64, share: f64, timeout_ns: u64) -> bool {
    ns as f64 > share * timeout_ns as f64
}

/// Timeouts another window inferred: a detect replica's peers own the edges
/// and entry points of other services (`--role detect`), and the deadlines
/// above this window's calls may be theirs. Only the values a deadline
/// needs: an edge's inferred timeout, an entry point's budget for the calls
/// below.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timeouts {
    pub edges: Vec<(EdgeKey, u64)>,
    pub entries: Vec<(EntryPoint, u64)>,
}

impl Timeouts {
    /// What `map` inferred of its own: the timeouts of the edges and entry
    /// points whose calls and roots its window counts.
    pub fn of(map: &[EntryBudget]) -> Timeouts {
        let mut edges: Vec<(EdgeKey, u64)> = map
            .iter()
            .flat_map(|e| &e.edges)
            .filter_map(|b| b.timeout.map(|t| (b.edge, t.value_ns)))
            .collect();
        edges.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
        edges.dedup_by_key(|e| e.0);
        let entries = map
            .iter()
            .filter(|e| e.traces > 0)
            .filter_map(|e| e.budget_ns().map(|ns| (e.entry, ns)))
            .collect();
        Timeouts { edges, entries }
    }

    /// Adds `other`'s; where both name one, the first kept wins.
    pub fn extend(&mut self, other: Timeouts) {
        self.edges.extend(other.edges);
        self.entries.extend(other.entries);
    }
}

/// An inferred timeout known only by its value (from [`Timeouts`]).
fn known(value_ns: u64) -> Inferred {
    Inferred {
        value_ns,
        supporting: 0,
        considered: 0,
        lo_ns: value_ns,
        hi_ns: value_ns,
    }
}

/// The budget map of every entry point in `traces`, with its violations, under
/// `thresholds`; `outside` fills in the timeouts of edges and entry points
/// this window does not own (calls kept as [`CallRecord::shadow`](super::CallRecord::shadow), roots
/// it does not own: [`TraceCalls::owns_root`]).
pub fn budget_map(
    traces: &[Arc<TraceCalls>],
    thresholds: &Thresholds,
    outside: &Timeouts,
) -> Vec<EntryBudget> {
    let inference = &thresholds.timeout_inference;
    let share = thresholds.headroom.share;
    // Pass 1: timeouts, per edge and per entry point.
    let mut edge_durations: FxHashMap<EdgeKey, Vec<u64>> = FxHashMap::default();
    let mut root_durations: FxHashMap<EntryPoint, Vec<u64>> = FxHashMap::default();
    for t in traces {
        if t.root.timed_out && t.owns_root {
            root_durations
                .entry(t.root.entry)
                .or_default()
                .push(t.root.duration_ns);
        }
        for c in t.calls.iter().filter(|c| c.gave_up() && !c.shadow) {
            edge_durations
                .entry(c.edge)
                .or_default()
                .push(c.duration_ns);
        }
    }
    let mut edge_timeouts: FxHashMap<EdgeKey, Inferred> = edge_durations
        .into_iter()
        .filter_map(|(k, mut d)| infer_timeout(&mut d, inference).map(|t| (k, t)))
        .collect();
    // Outside timeouts only for the shadows' edges: an edge this window counts
    // calls of is this window's to infer.
    let shadows: rustc_hash::FxHashSet<EdgeKey> = traces
        .iter()
        .flat_map(|t| t.calls.iter().filter(|c| c.shadow).map(|c| c.edge))
        .collect();
    for &(edge, ns) in &outside.edges {
        if shadows.contains(&edge) {
            edge_timeouts.entry(edge).or_insert_with(|| known(ns));
        }
    }
    let mut entries: FxHashMap<EntryPoint, EntryBudget> = root_durations
        .into_iter()
        .map(|(entry, mut d)| (entry, blank(entry, infer_timeout(&mut d, inference))))
        .collect();
    // Which of an entry's timeouts relay a call's (pass 1b: the entry budget
    // depends on it).
    let mut accs: FxHashMap<EntryPoint, EntryAcc> = FxHashMap::default();
    for t in traces.iter() {
        let acc = accs.entry(t.root.entry).or_default();
        if !t.owns_root {
            continue;
        }
        let clustered = entries
            .get(&t.root.entry)
            .and_then(|e| e.timeout)
            .is_some_and(|i| t.root.timed_out && i.contains(t.root.duration_ns));
        if clustered {
            *acc.relays.entry(t.root.relayed_from).or_default() += 1;
            *acc.statuses.entry(t.root.http_status).or_default() += 1;
            acc.timeout_examples.push(t.end_ns(), t.trace_id);
        }
    }
    for (entry, acc) in &accs {
        let e = entries.entry(*entry).or_insert_with(|| blank(*entry, None));
        // A relay when most clustered roots relayed some call's timeout; the
        // source is the edge most of them relayed.
        let supporting = e.timeout.map_or(0, |t| t.supporting);
        let relayed: u64 = acc
            .relays
            .iter()
            .filter(|(k, _)| k.is_some())
            .map(|(_, n)| n)
            .sum();
        e.source = acc
            .relays
            .iter()
            .filter_map(|(k, n)| k.map(|k| (k, *n)))
            .max_by_key(|&(k, n)| (n, std::cmp::Reverse(k.sort_key())))
            .filter(|_| relayed * 2 > supporting)
            .map(|(k, _)| k);
        e.layer = e.timeout.and_then(|t| Layer::of(t.value_ns));
    }

    // An entry point whose roots another window owns: its budget from outside.
    let owned: rustc_hash::FxHashSet<EntryPoint> = traces
        .iter()
        .filter(|t| t.owns_root)
        .map(|t| t.root.entry)
        .collect();
    let outside_entries: FxHashMap<EntryPoint, u64> = outside
        .entries
        .iter()
        .filter(|e| !owned.contains(&e.0))
        .copied()
        .collect();

    // Pass 2: the budget left for every call.
    for t in traces {
        let entry = &entries[&t.root.entry];
        let entry_deadline = entry
            .budget_ns()
            .or_else(|| outside_entries.get(&t.root.entry).copied())
            .map(|ns| (ns, Outer::Entry { timeout_ns: ns }));
        let acc = accs
            .get_mut(&t.root.entry)
            .expect("pass 1b saw every entry");
        let end = t.end_ns();
        // A root is counted by the window that owns it.
        if t.owns_root {
            acc.traces += 1;
            if t.root.timed_out {
                acc.timed_out += 1;
            } else {
                acc.ok_ns.push(t.root.duration_ns);
                if let Some(budget) = entry.budget_ns() {
                    if over_share(t.root.duration_ns, share, budget) {
                        acc.slow += 1;
                        acc.slow_examples.push(end, t.trace_id);
                    }
                }
            }
        }
        // Per call, the tightest deadline at or above it (offset from the root's start).
        let mut effective: Vec<Option<(u64, Outer)>> = Vec::with_capacity(t.calls.len());
        for c in &t.calls {
            let above = match c.parent {
                Some(p) => effective[p as usize],
                None => entry_deadline,
            };
            let timeout = edge_timeouts.get(&c.edge);
            let own = timeout.map(|i| {
                (
                    c.start_offset_ns + i.value_ns,
                    Outer::Edge {
                        edge: c.edge,
                        timeout_ns: i.value_ns,
                    },
                )
            });
            effective.push(match (above, own) {
                (Some(a), Some(o)) if o.0 < a.0 => Some(o),
                (a, o) => a.or(o),
            });
            if c.shadow {
                continue;
            }
            let e = acc.edges.entry(c.edge).or_insert_with(|| EdgeAcc {
                depth: c.depth,
                ..EdgeAcc::default()
            });
            e.depth = e.depth.min(c.depth);
            e.calls += 1;
            if c.timed_out {
                e.timed_out += 1;
            } else {
                e.ok_ns.push(c.duration_ns);
                if timeout.is_some_and(|i| over_share(c.duration_ns, share, i.value_ns)) {
                    e.slow += 1;
                    e.slow_examples.push(end, t.trace_id);
                }
            }
            if let Some((deadline, outer)) = above {
                let left = deadline as i64 - c.start_offset_ns as i64;
                e.lefts.push((left, outer));
                let slack = slack_ns(left, &thresholds.timeout_inversion);
                if timeout.is_some_and(|i| i.value_ns as i64 > left + slack) {
                    e.over_budget += 1;
                    e.over_budget_examples.push(end, t.trace_id);
                }
            }
            if overran(
                c.duration_ns,
                c.overrun_ns,
                &thresholds.deadline_not_propagated,
            ) {
                e.overran += 1;
                e.max_overrun_ns = e.max_overrun_ns.max(c.overrun_ns);
                e.total_overrun_ns += c.overrun_ns;
                e.overrun_examples.push(end, t.trace_id);
            }
        }
    }

    let mut out: Vec<EntryBudget> = accs
        .into_iter()
        .map(|(entry, acc)| {
            let e = entries.remove(&entry).expect("every entry has a budget");
            finish_entry(e, acc, &edge_timeouts, thresholds)
        })
        .collect();
    out.sort_by(|a, b| {
        b.traces.cmp(&a.traces).then_with(|| {
            (a.entry.service.as_str(), a.entry.operation.as_str())
                .cmp(&(b.entry.service.as_str(), b.entry.operation.as_str()))
        })
    });
    out
}

fn blank(entry: EntryPoint, timeout: Option<Inferred>) -> EntryBudget {
    EntryBudget {
        entry,
        traces: 0,
        timed_out: 0,
        timeout,
        layer: None,
        source: None,
        p95_ns: None,
        p99_ns: None,
        edges: Vec::new(),
        violations: Vec::new(),
    }
}

fn finish_entry(
    mut e: EntryBudget,
    mut acc: EntryAcc,
    edge_timeouts: &FxHashMap<EdgeKey, Inferred>,
    thresholds: &Thresholds,
) -> EntryBudget {
    e.traces = acc.traces;
    e.timed_out = acc.timed_out;
    acc.ok_ns.sort_unstable();
    e.p95_ns = quantile(&acc.ok_ns, 0.95);
    e.p99_ns = quantile(&acc.ok_ns, 0.99);
    let mut edges: Vec<EdgeBudget> = std::mem::take(&mut acc.edges)
        .into_iter()
        .map(|(edge, a)| {
            let timeout = edge_timeouts.get(&edge).copied();
            finish_edge(&e, edge, a, timeout, thresholds)
        })
        .collect();
    edges.sort_by(|a, b| {
        a.depth
            .cmp(&b.depth)
            .then_with(|| a.edge.sort_key().cmp(&b.edge.sort_key()))
    });
    e.edges = edges;
    if let Some(timeout) = e.timeout {
        let status = acc
            .statuses
            .iter()
            .max_by_key(|&(s, n)| (*n, std::cmp::Reverse(*s)))
            .and_then(|(s, _)| *s);
        let source_timeout = e
            .source
            .and_then(|s| edge_timeouts.get(&s).map(|t| (s, t.value_ns)));
        let examples = std::mem::take(&mut acc.timeout_examples);
        let o = report::gateway_timeout(
            &e,
            timeout,
            status,
            source_timeout,
            examples,
            &thresholds.timeout_inference,
        );
        e.violations.push(o.into());
    }
    if let (Some(budget), Some(p95), Some(p99)) = (e.budget_ns(), e.p95_ns, e.p99_ns) {
        let headroom = &thresholds.headroom;
        if acc.ok_ns.len() >= headroom.min_samples as usize
            && over_share(p99, headroom.share, budget)
        {
            let h = Headroom {
                timeout_ns: budget,
                p95_ns: p95,
                p99_ns: p99,
                support: Support {
                    calls: acc.ok_ns.len() as u64,
                    count: acc.slow,
                    examples: acc.slow_examples,
                },
            };
            let o = report::headroom(&e, None, h, headroom);
            e.violations.push(o.into());
        }
    }
    e
}

fn finish_edge(
    entry: &EntryBudget,
    edge: EdgeKey,
    mut a: EdgeAcc,
    timeout: Option<Inferred>,
    thresholds: &Thresholds,
) -> EdgeBudget {
    a.ok_ns.sort_unstable();
    a.lefts.sort_by_key(|l| l.0);
    let median = a.lefts.get(a.lefts.len() / 2).copied();
    let mut b = EdgeBudget {
        edge,
        depth: a.depth,
        timeout,
        calls: a.calls,
        timed_out: a.timed_out,
        p95_ns: quantile(&a.ok_ns, 0.95),
        p99_ns: quantile(&a.ok_ns, 0.99),
        budget_left_ns: median.map(|m| m.0),
        outer: median.map(|m| m.1),
        overran: a.overran,
        max_overrun_ns: a.max_overrun_ns,
        violations: Vec::new(),
    };
    if let (Some(t), Some((left, outer))) = (timeout, median) {
        if t.value_ns as i64 > left + slack_ns(left, &thresholds.timeout_inversion) {
            let support = Support {
                calls: a.calls,
                count: a.over_budget,
                examples: a.over_budget_examples,
            };
            let o = report::inversion(entry, edge, t, (left, outer), support, thresholds);
            b.violations.push(o.into());
        }
    }
    let min_overruns = thresholds.deadline_not_propagated.min_calls;
    if a.overran >= u64::from(min_overruns) {
        let overruns = Overruns {
            support: Support {
                calls: a.calls,
                count: a.overran,
                examples: a.overrun_examples,
            },
            max_ns: a.max_overrun_ns,
            total_ns: a.total_overrun_ns,
        };
        let o = report::not_propagated(entry, edge, timeout, overruns, min_overruns);
        b.violations.push(o.into());
    }
    if let (Some(t), Some(p95), Some(p99)) = (timeout, b.p95_ns, b.p99_ns) {
        let headroom = &thresholds.headroom;
        if a.ok_ns.len() >= headroom.min_samples as usize
            && over_share(p99, headroom.share, t.value_ns)
        {
            let h = Headroom {
                timeout_ns: t.value_ns,
                p95_ns: p95,
                p99_ns: p99,
                support: Support {
                    calls: a.ok_ns.len() as u64,
                    count: a.slow,
                    examples: a.slow_examples,
                },
            };
            let o = report::headroom(entry, Some(edge), h, headroom);
            b.violations.push(o.into());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::budget::{CallRecord, RootRecord};
    use crate::analyze::{Evidence, FindingKind, Severity};
    use crate::model::{SpanKind, Sym, TraceId};

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn edge(caller: &str, callee: &str, op: &str) -> EdgeKey {
        EdgeKey {
            caller: Sym::new(caller),
            callee: Some(Sym::new(callee)),
            operation: Sym::new(op),
        }
    }

    fn call(edge: EdgeKey, parent: Option<u32>, (start, duration): (u64, u64)) -> CallRecord {
        CallRecord {
            edge,
            start_offset_ns: start,
            duration_ns: duration,
            timed_out: false,
            relayed: false,
            overrun_ns: 0,
            depth: parent.map_or(0, |_| 1),
            parent,
            root_span: false,
            shadow: false,
        }
    }

    fn timed_out(mut c: CallRecord) -> CallRecord {
        c.timed_out = true;
        c
    }

    /// Trace `n` of entry `svc:GET /`, `duration` long.
    fn trace(
        n: u64,
        svc: &str,
        duration: u64,
        root_timed_out: bool,
        calls: Vec<CallRecord>,
    ) -> Arc<TraceCalls> {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(n + 1).to_be_bytes());
        Arc::new(TraceCalls {
            trace_id: TraceId::from_bytes(&id).unwrap(),
            root: RootRecord {
                entry: EntryPoint {
                    service: Sym::new(svc),
                    operation: Sym::new("GET /"),
                },
                start_ns: 1_000 * S + n * 100 * S,
                duration_ns: duration,
                timed_out: root_timed_out,
                kind: SpanKind::Server,
                http_status: None,
                relayed_from: None,
            },
            calls,
            saturation: Default::default(),
            owns_root: true,
        })
    }

    fn edge_of<'a>(e: &'a EntryBudget, caller: &str) -> &'a EdgeBudget {
        e.edges
            .iter()
            .find(|b| b.edge.caller.as_str() == caller)
            .unwrap()
    }

    #[test]
    fn an_inner_timeout_longer_than_what_the_gateway_leaves_is_an_inversion() {
        // gateway gives up at 29 s; api's call to reports starts 50 ms in and
        // gives up at 30 s.
        let (gw, api) = (
            edge("gateway", "api", "GET /r"),
            edge("api", "reports", "GET /b"),
        );
        let traces: Vec<_> = (0..4)
            .map(|n| {
                let mut root = timed_out(call(gw, None, (0, 29 * S)));
                root.root_span = true;
                trace(
                    n,
                    "gateway",
                    29 * S,
                    true,
                    vec![root, timed_out(call(api, Some(0), (50 * MS, 30 * S)))],
                )
            })
            .collect();
        let map = budget_map(&traces, &Thresholds::default(), &Timeouts::default());
        let e = &map[0];
        assert_eq!(e.timeout.unwrap().value_ns, 29 * S);
        assert_eq!(e.layer, Some(Layer::AwsApiGateway));
        assert_eq!(e.source, None);
        assert_eq!(
            e.violations[0].observation.kind,
            FindingKind::GatewayTimeout
        );
        assert_eq!(e.violations[0].observation.severity, Severity::Critical);
        assert_eq!(e.violations[0].observation.count, 4);

        let g = edge_of(e, "gateway");
        assert_eq!(g.budget_left_ns, Some(29 * S as i64));
        assert!(
            g.violations.is_empty(),
            "the gateway's own wait is its budget"
        );
        let a = edge_of(e, "api");
        assert_eq!(a.timeout.unwrap().value_ns, 30 * S);
        assert_eq!(a.budget_left_ns, Some((29 * S - 50 * MS) as i64));
        assert_eq!(a.outer, Some(Outer::Entry { timeout_ns: 29 * S }));
        let v = &a.violations[0].observation;
        assert_eq!(v.kind, FindingKind::TimeoutInversion);
        assert_eq!(v.count, 4);
        let Evidence::TimeoutInversion(e) = &v.evidence else {
            panic!("{:?}", v.evidence)
        };
        assert_eq!((e.budget_left_ms, e.equal_to_outer), (28_950.0, false));
        let crossed: Vec<(&str, f64)> = v
            .crossed
            .iter()
            .map(|c| (c.threshold.as_str(), c.limit))
            .collect();
        assert_eq!(
            crossed,
            [
                ("timeout_inference.min_calls", 3.0),
                ("timeout_inversion.slack_share", 0.001)
            ]
        );
        let excess = v.crossed[1].value;
        assert!(excess > 0.001 && excess < 0.1, "{excess}");
        assert!(
            v.summary
                .contains("only 28.95 s are left of the 29 s timeout in front of gateway GET /"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn equal_stacked_timeouts_are_an_inversion_and_the_root_relaying_one_is_no_budget() {
        // api → b 30 s; b → c 30 s, 100 ms into b's call. api's root returns the
        // 504 of its own call to b: that is b's timeout, not a budget for api's
        // other call (to audit, 40 s, which is fine).
        let (ab, bc, audit) = (
            edge("api", "b", "GET /b"),
            edge("b", "c", "GET /c"),
            edge("api", "audit", "POST /a"),
        );
        let traces: Vec<_> = (0..3)
            .map(|n| {
                let mut t = trace(
                    n,
                    "api",
                    30 * S + 20 * MS,
                    true,
                    vec![
                        call(audit, None, (MS, 10 * MS)),
                        timed_out(call(ab, None, (15 * MS, 30 * S))),
                        timed_out(call(bc, Some(1), (115 * MS, 30 * S))),
                    ],
                );
                Arc::get_mut(&mut t).unwrap().root.relayed_from = Some(ab);
                t
            })
            .chain((3..6).map(|n| {
                trace(
                    n,
                    "other",
                    S,
                    false,
                    vec![timed_out(call(audit, None, (0, 40 * S)))],
                )
            }))
            .collect();
        let map = budget_map(&traces, &Thresholds::default(), &Timeouts::default());
        let e = map
            .iter()
            .find(|e| e.entry.service.as_str() == "api")
            .unwrap();
        assert_eq!(e.source, Some(ab));
        assert_eq!(e.layer, None);
        assert!(
            e.violations[0]
                .observation
                .summary
                .contains("a configured timeout of 30 s on api → b GET /b, which the entry point only reported"),
            "{}",
            e.violations[0].observation.summary
        );
        let a = edge_of(e, "api");
        assert_eq!(a.edge, audit, "depth 0 sorted by name");
        assert_eq!(a.timeout.unwrap().value_ns, 40 * S);
        assert_eq!(a.budget_left_ns, None, "a relayed timeout is no deadline");
        assert!(a.violations.is_empty());
        let b = edge_of(e, "b");
        assert_eq!(
            b.outer,
            Some(Outer::Edge {
                edge: ab,
                timeout_ns: 30 * S
            })
        );
        assert_eq!(b.budget_left_ns, Some((30 * S - 100 * MS) as i64));
        let v = &b.violations[0].observation;
        assert_eq!(v.kind, FindingKind::TimeoutInversion);
        let Evidence::TimeoutInversion(e) = &v.evidence else {
            panic!("{:?}", v.evidence)
        };
        assert!(e.equal_to_outer);
        assert!(
            v.summary
                .contains("the same as the 30 s timeout of api → b GET /b"),
            "{}",
            v.summary
        );
    }

    #[test]
    fn propagated_deadlines_are_not_inversions() {
        // Under a 29 s gateway: a → b 25 s; b → c 20 s (smaller than what is
        // left); b → d given exactly what is left of a → b's deadline.
        let (gw, ab, bc, bd) = (
            edge("gw", "a", "GET /"),
            edge("a", "b", "GET /b"),
            edge("b", "c", "GET /c"),
            edge("b", "d", "GET /d"),
        );
        let traces: Vec<_> = (0..5)
            .map(|n| {
                let mut root = timed_out(call(gw, None, (0, 29 * S)));
                root.root_span = true;
                let d_start = 3 * S + n * 100 * MS;
                trace(
                    n,
                    "gw",
                    29 * S,
                    true,
                    vec![
                        root,
                        timed_out(call(ab, Some(0), (10 * MS, 25 * S))),
                        timed_out(call(bc, Some(1), (20 * MS, 20 * S))),
                        timed_out(call(bd, Some(1), (d_start, 25 * S + 10 * MS - d_start))),
                    ],
                )
            })
            .collect();
        let map = budget_map(&traces, &Thresholds::default(), &Timeouts::default());
        for edge in &map[0].edges {
            assert!(edge.violations.is_empty(), "{:?}", edge.violations);
        }
        let c = map[0].edges.iter().find(|e| e.edge == bc).unwrap();
        assert_eq!(c.budget_left_ns, Some((25 * S - 10 * MS) as i64));
        assert_eq!(
            c.outer,
            Some(Outer::Edge {
                edge: ab,
                timeout_ns: 25 * S
            })
        );
    }

    #[test]
    fn headroom_and_overruns_are_counted_with_their_numbers() {
        // shop → search gives up at 2 s three times; 20 other calls take
        // 0.5–1.45 s (p95 1.4 s, p99 1.45 s: above 1 s). search keeps working
        // 300 ms after each timeout.
        let e = edge("shop", "search", "GET /q");
        let traces: Vec<_> = (0..23)
            .map(|n| {
                let c = if n < 3 {
                    let mut c = timed_out(call(e, None, (MS, 2 * S)));
                    c.overrun_ns = 300 * MS;
                    c
                } else {
                    call(e, None, (MS, 500 * MS + (n - 3) * 50 * MS))
                };
                trace(n, "shop", c.duration_ns + 2 * MS, false, vec![c])
            })
            .collect();
        let map = budget_map(&traces, &Thresholds::default(), &Timeouts::default());
        let s = &map[0].edges[0];
        assert_eq!((s.p95_ns, s.p99_ns), (Some(1_400 * MS), Some(1_450 * MS)));
        let kinds: Vec<_> = s.violations.iter().map(|v| v.observation.kind).collect();
        assert_eq!(
            kinds,
            vec![
                FindingKind::DeadlineNotPropagated,
                FindingKind::TimeoutHeadroom
            ]
        );
        let dnp = &s.violations[0].observation;
        let Evidence::DeadlineNotPropagated(e) = &dnp.evidence else {
            panic!("{:?}", dnp.evidence)
        };
        assert_eq!((dnp.count, e.max_overrun_ms), (3, 300.0));
        let h = &s.violations[1].observation;
        assert_eq!(h.count, 9, "calls over 1 s: 1.05 s to 1.45 s");
        let Evidence::TimeoutHeadroom(e) = &h.evidence else {
            panic!("{:?}", h.evidence)
        };
        assert_eq!(e.p99_ms, 1_450.0);
        assert!(h.summary.contains("p95 of shop → search GET /q is 1.4 s and p99 1.45 s, above half of the 2 s timeout"), "{}", h.summary);
        assert!(map[0].violations.is_empty(), "the roots never timed out");

        // Faster traffic under the same timeout leaves headroom: silence.
        let fast: Vec<_> = traces
            .iter()
            .map(|t| {
                let mut t = (**t).clone();
                t.calls[0].overrun_ns = 0;
                if !t.calls[0].timed_out {
                    t.calls[0].duration_ns /= 3;
                }
                Arc::new(t)
            })
            .collect();
        assert!(
            budget_map(&fast, &Thresholds::default(), &Timeouts::default())[0].edges[0]
                .violations
                .is_empty()
        );
    }

    #[test]
    fn detect_merges_an_edge_seen_under_several_entry_points() {
        let e = edge("api", "db", "query");
        let traces: Vec<_> = (0..6)
            .map(|n| {
                let mut c = timed_out(call(e, None, (0, 5 * S)));
                c.overrun_ns = S;
                trace(
                    n,
                    if n % 2 == 0 { "a" } else { "b" },
                    5 * S + MS,
                    false,
                    vec![c],
                )
            })
            .collect();
        let (_, found) =
            super::super::detect(&traces, &Thresholds::default(), &Timeouts::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, FindingKind::DeadlineNotPropagated);
        assert_eq!(found[0].count, 6);
        assert_eq!(found[0].trace_ids.len(), 6);
    }
}
