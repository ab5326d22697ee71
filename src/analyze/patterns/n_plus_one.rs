//! `n_plus_one`: under one parent, at least `min_calls` calls of one shape
//! to one callee — one after another as an ORM's lazy loading makes them, or
//! overlapping as a fan-out over a list does. A loop whose arguments are all
//! visibly the same is a [`super::redundant`] call instead. Calls made under a
//! span per item (`process item` spans, at least `min_calls` of one name
//! under one parent, each holding its own calls) are a loop under that
//! parent.

use rustc_hash::{FxHashMap, FxHashSet};

use super::calls::{Call, Callee, Calls};
use super::{batch_remedy, peak_in_flight, NPlusOneThresholds, Pattern, Report};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::finding::ms;
use crate::analyze::saturation::culprit_statement;
use crate::analyze::{Crossed, Culprit, Observation};
use crate::model::{SpanKind, Sym, Trace};

/// One loop: the indexes of its calls in [`Calls::calls`], in time order.
pub(super) struct Loop {
    pub members: Vec<usize>,
    /// The span the loop runs under.
    parent: u32,
    peak: usize,
    throttled_to: Option<usize>,
    distinct: Option<usize>,
    min_calls: usize,
}

/// The span a call's loop runs under: its parent, or its parent's parent when
/// the parent is one of at least `min_calls` INTERNAL spans of one name there
/// (a span per item).
fn loop_parent(
    trace: &Trace,
    call: &Call,
    min_calls: usize,
    items: &mut FxHashMap<u32, u32>,
) -> u32 {
    let p = call.parent;
    *items.entry(p).or_insert_with(|| {
        let span = trace.span(p);
        let Some(g) = trace.parent[p as usize] else {
            return p;
        };
        if !matches!(span.kind, SpanKind::Internal | SpanKind::Unspecified) {
            return p;
        }
        let same = trace
            .children(g)
            .iter()
            .filter(|&&s| trace.span(s).operation == span.operation)
            .take(min_calls)
            .count();
        if same >= min_calls {
            g
        } else {
            p
        }
    })
}

/// The loops of a trace.
pub(super) fn find(trace: &Trace, calls: &Calls, limits: &NPlusOneThresholds) -> Vec<Loop> {
    let mut items = FxHashMap::default();
    let mut groups: FxHashMap<(u32, Sym, Option<Callee>, &str), Vec<usize>> = FxHashMap::default();
    for (i, c) in calls.calls.iter().enumerate() {
        let parent = loop_parent(trace, c, limits.min_calls as usize, &mut items);
        groups
            .entry((parent, c.caller, c.callee, &*c.shape))
            .or_default()
            .push(i);
    }
    let mut out: Vec<Loop> = groups
        .into_iter()
        .filter(|(_, m)| m.len() >= (limits.min_calls as usize))
        .filter_map(|((parent, ..), mut members)| {
            members.sort_by_key(|&i| (calls.calls[i].start_ns, i));
            let of = |i: &usize| &calls.calls[*i];
            let distinct = members
                .iter()
                .map(|i| of(i).arguments.as_deref())
                .collect::<Option<FxHashSet<&str>>>()
                .map(|set| set.len());
            if distinct == Some(1) {
                return None;
            }
            let intervals = members.iter().map(|i| of(i).sure());
            let peak = peak_in_flight(intervals.clone());
            let throttled_to = (peak >= 2
                && peak as f64 <= limits.throttle_share * members.len() as f64
                && share_at(intervals, peak) >= 0.5)
                .then_some(peak);
            Some(Loop {
                parent,
                peak,
                throttled_to,
                distinct,
                min_calls: limits.min_calls as usize,
                members,
            })
        })
        .collect();
    out.sort_by_key(|l| l.members[0]);
    out
}

/// The share of the time from the first start to the last end during which
/// at least `level` of `intervals` were in flight.
fn share_at(intervals: impl Iterator<Item = (u64, u64)>, level: usize) -> f64 {
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for (s, e) in intervals {
        edges.push((s, 1));
        edges.push((e.max(s), -1));
    }
    edges.sort_unstable();
    let (first, last) = match (edges.first(), edges.last()) {
        (Some(f), Some(l)) if l.0 > f.0 => (f.0, l.0),
        _ => return 0.0,
    };
    let (mut now, mut at, mut since) = (0i64, 0u64, first);
    for (t, d) in edges {
        if now >= level as i64 {
            at += t - since;
        }
        since = t;
        now += d;
    }
    at as f64 / (last - first) as f64
}

/// The observation of one loop.
pub(super) fn report(r: &Report<'_>, calls: &Calls, l: &Loop) -> Option<Observation> {
    let members: Vec<&Call> = l.members.iter().map(|&i| &calls.calls[i]).collect();
    let first = members[0];
    let trace = &r.t.trace;
    let n = members.len();
    let critical: u64 = members.iter().map(|c| c.critical_ns).sum();
    let total: u64 = members.iter().map(|c| c.duration_ns()).sum();
    let timeouts = members.iter().filter(|c| c.timed_out).count();
    let retried = members
        .iter()
        .enumerate()
        .filter(|(k, c)| {
            c.timed_out
                && members[k + 1..]
                    .iter()
                    .any(|later| c.arguments.is_none() || later.arguments == c.arguments)
        })
        .count();
    // The call that gave the loop its list: the last other call under the
    // same parent that ended before the loop began (as far as the stamps tell).
    let source = calls
        .calls
        .iter()
        .filter(|c| c.parent == l.parent && !c.same_call(first) && c.sure().1 <= first.start_ns)
        .max_by_key(|c| c.end_ns);
    let parent = trace.span(l.parent);
    let pace = match (l.peak, l.throttled_to) {
        (1, _) => "one after another".to_owned(),
        (_, Some(pool)) => {
            format!("at most {pool} at a time (a pool of {pool} throttles the loop)")
        }
        (peak, None) => format!("up to {peak} at once"),
    };
    let distinct = match l.distinct {
        Some(d) => format!(" with {d} distinct arguments"),
        None => String::new(),
    };
    let retries = if retried > 0 {
        format!(", {retried} of them retries after a timeout")
    } else {
        String::new()
    };
    let summary = format!(
        "{} calls {} `{}` {n} times in one request{distinct}, {pace}{retries}, under {}{}: {} waits on the loop.",
        first.caller,
        first.callee_label(),
        first.shape,
        parent.operation,
        source.map_or(String::new(), |s| format!(" after `{}`", s.shape)),
        r.cost(critical),
    );
    Some(r.observe(
        Pattern {
            cost_ns: critical,
            culprit: Culprit {
                service: first.caller,
                operation: Sym::new(&culprit_statement(&first.shape)),
                peer: first.peer(),
            },
            at: first.span,
            summary,
            remedy: batch_remedy(first.kind).to_owned(),
            evidence: Evidence::NPlusOne(evidence::NPlusOne {
                calls: n,
                shape: first.shape.to_string(),
                distinct_parameters: l.distinct,
                peak_in_flight: l.peak,
                throttled_to: l.throttled_to,
                source: source.map(|s| s.shape.to_string()),
                parent: evidence::Parent {
                    service: parent.service,
                    operation: parent.operation,
                },
                timeouts,
                retried_timeouts: retried,
                total_ms: ms(total),
                critical_ms: ms(critical),
                critical_share: r.share(critical),
            }),
            crossed: vec![Crossed::new(
                "n_plus_one.min_calls",
                l.min_calls as f64,
                n as f64,
            )],
        },
        &members,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_of_three_holds_three_in_flight_most_of_the_time() {
        // Ten 30 ms calls through three workers.
        let mut free = [0u64; 3];
        let mut calls = Vec::new();
        for _ in 0..10 {
            let w = (0..3).min_by_key(|&w| free[w]).unwrap();
            calls.push((free[w], free[w] + 30));
            free[w] += 30;
        }
        assert_eq!(peak_in_flight(calls.iter().copied()), 3);
        assert!(share_at(calls.into_iter(), 3) >= 0.7);
    }
}
