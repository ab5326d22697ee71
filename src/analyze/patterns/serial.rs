//! `serial_calls`: under one parent, at least `min_calls` different calls
//! (by callee and shape) made one after another — each starting after the
//! previous ended, within `max_gap_ms` — where making them together would
//! save at least `min_saved_ms` of critical time: their summed critical time
//! minus the longest one's. The calls of a loop are [`super::n_plus_one`]'s,
//! not this detector's; overlapping calls, calls far apart and writes (whose
//! order may matter: an INSERT after a SELECT, a transaction's statements, a
//! POST) break a run.

use rustc_hash::{FxHashMap, FxHashSet};

use super::calls::{Call, Callee, Calls};
use super::n_plus_one::Loop;
use super::{Pattern, Report, SerialCallsThresholds};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::finding::ms;
use crate::analyze::{Crossed, Culprit, Observation};

/// The serial runs of a trace.
pub(super) fn find(
    r: &Report<'_>,
    calls: &Calls,
    loops: &[Loop],
    limits: &SerialCallsThresholds,
) -> Vec<Observation> {
    let looped: FxHashSet<usize> = loops
        .iter()
        .flat_map(|l| l.members.iter().copied())
        .collect();
    let mut by_parent: FxHashMap<u32, Vec<&Call>> = FxHashMap::default();
    for (i, c) in calls.calls.iter().enumerate() {
        if !looped.contains(&i) {
            by_parent.entry(c.parent).or_default().push(c);
        }
    }
    let max_gap_ns = (limits.max_gap_ms * 1e6) as u64;
    let mut out = Vec::new();
    for mut siblings in by_parent.into_values() {
        if siblings.len() < (limits.min_calls as usize) {
            continue;
        }
        siblings.sort_by_key(|c| (c.start_ns, c.span));
        let mut run: Vec<&Call> = Vec::new();
        for c in siblings {
            let follows = run.last().is_some_and(|last| {
                c.start_ns >= last.sure().1 && c.start_ns.saturating_sub(last.end_ns) <= max_gap_ns
            });
            if !follows || c.writes {
                out.extend(judge(r, &run, limits));
                run.clear();
            }
            if !c.writes {
                run.push(c);
            }
        }
        out.extend(judge(r, &run, limits));
    }
    out
}

/// The observation of a run, if it is long and costly enough.
fn judge(r: &Report<'_>, run: &[&Call], limits: &SerialCallsThresholds) -> Option<Observation> {
    let distinct: FxHashSet<(Option<Callee>, &str)> =
        run.iter().map(|c| (c.callee, &*c.shape)).collect();
    if distinct.len() < (limits.min_calls as usize) {
        return None;
    }
    let critical: u64 = run.iter().map(|c| c.critical_ns).sum();
    let longest = run.iter().map(|c| c.critical_ns).max().unwrap_or(0);
    let saved = critical - longest;
    if ms(saved) < limits.min_saved_ms {
        return None;
    }
    let trace = &r.t.trace;
    let first = run[0];
    let parent = trace.span(first.parent);
    let t0 = trace.start(trace.root);
    let max_gap = run
        .windows(2)
        .map(|w| w[1].start_ns.saturating_sub(w[0].end_ns))
        .max()
        .unwrap_or(0);
    let targets: Vec<String> = run
        .iter()
        .map(|c| format!("{} `{}`", c.callee_label(), c.shape))
        .collect();
    Some(r.observe(Pattern {
        cost_ns: saved,
        culprit: Culprit {
            service: first.caller,
            operation: parent.operation,
            peer: None,
        },
        at: first.parent,
        summary: format!(
            "{} makes {} calls one after another under {} ({}); made together they would take the longest one's time and save {}.",
            first.caller,
            run.len(),
            parent.operation,
            targets.join(", "),
            r.cost(saved),
        ),
        remedy: "If the calls do not depend on each other's results, make them concurrently (asyncio.gather, Promise.all, a thread pool, futures) or fetch them in one call.".to_owned(),
        evidence: Evidence::SerialCalls(evidence::SerialCalls {
            calls: run.iter().map(|c| evidence::SerialCall {
                service: c.caller,
                operation: trace.span(c.span).operation,
                target: c.shape.to_string(),
                callee: c.peer(),
                start_ms: ms(c.start_ns.saturating_sub(t0)),
                duration_ms: ms(c.duration_ns()),
                critical_ms: ms(c.critical_ns),
            }).collect(),
            saved_ms: ms(saved),
            critical_ms: ms(critical),
            critical_share: r.share(critical),
            saved_share: r.share(saved),
            max_gap_ms: ms(max_gap),
        }),
        crossed: vec![
            Crossed::new("serial_calls.min_calls", limits.min_calls as f64, distinct.len() as f64),
            Crossed::new("serial_calls.min_saved_ms", limits.min_saved_ms, ms(saved)),
        ],
    }, run))
}
