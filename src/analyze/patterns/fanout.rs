//! `excessive_fanout`: one span with more than `max_in_flight` calls in
//! flight at once — a burst that presses on the callee or the pool in front
//! of it, whatever the calls are.

use rustc_hash::FxHashMap;

use super::calls::{Call, Callee, Calls};
use super::{peak_in_flight, ExcessiveFanoutThresholds, Pattern, Report};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::finding::ms;
use crate::analyze::{Crossed, Culprit, Observation};

/// The bursts of a trace.
pub(super) fn find(
    r: &Report<'_>,
    calls: &Calls,
    limits: &ExcessiveFanoutThresholds,
) -> Vec<Observation> {
    let mut by_parent: FxHashMap<u32, Vec<&Call>> = FxHashMap::default();
    for c in &calls.calls {
        by_parent.entry(c.parent).or_default().push(c);
    }
    let trace = &r.t.trace;
    let mut out = Vec::new();
    for (parent, children) in by_parent {
        if children.len() <= (limits.max_in_flight as usize) {
            continue;
        }
        let peak = peak_in_flight(children.iter().map(|c| c.sure()));
        if peak <= (limits.max_in_flight as usize) {
            continue;
        }
        // What the burst presses on: the callee most of its calls reach.
        let mut callees: FxHashMap<Option<Callee>, usize> = FxHashMap::default();
        for c in &children {
            *callees.entry(c.callee).or_default() += 1;
        }
        let (presses_on, on_it) = callees
            .into_iter()
            .max_by_key(|&(callee, n)| (n, callee.map(|c| c.to_string())))
            .unwrap_or((None, 0));
        let presses_on = presses_on.map(Callee::peer);
        let presses_label = presses_on.map_or("?", |c| c.as_str());
        let span = trace.span(parent);
        let critical: u64 = children.iter().map(|c| c.critical_ns).sum();
        out.push(r.observe(Pattern {
            cost_ns: critical,
            culprit: Culprit {
                service: span.service,
                operation: span.operation,
                peer: presses_on,
            },
            at: parent,
            summary: format!(
                "{} {} has {peak} calls in flight at once ({} in all, {on_it} of them to {presses_label}): a burst that queues on {presses_label}'s connections or workers; {} waits on them.",
                span.service,
                span.operation,
                children.len(),
                r.cost(critical),
            ),
            remedy: format!(
                "Bound the concurrency (a semaphore or a worker pool sized to what {presses_label} can serve), or send the work as one batch."
            ),
            evidence: Evidence::ExcessiveFanout(evidence::ExcessiveFanout {
                children: children.len(),
                peak_in_flight: peak,
                presses_on,
                calls_to_it: on_it,
                critical_ms: ms(critical),
                critical_share: r.share(critical),
            }),
            crossed: vec![Crossed::new(
                "excessive_fanout.max_in_flight",
                limits.max_in_flight as f64,
                peak as f64,
            )],
        }, &children));
    }
    out
}
