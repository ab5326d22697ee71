//! `chatty_edge`: one service calling one callee more than `max_calls` times
//! within one request (the caller's SERVER span, or the trace's root),
//! whatever the operations. When a loop ([`super::n_plus_one`]) makes all
//! but `max_calls` of them, the loop is the finding and the edge is not
//! reported again.

use rustc_hash::{FxHashMap, FxHashSet};

use super::calls::{Call, Callee, Calls};
use super::n_plus_one::Loop;
use super::{ChattyEdgeThresholds, Pattern, Report};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::finding::ms;
use crate::analyze::{Crossed, Culprit, Observation};
use crate::model::{SpanKind, Sym};

/// The chatty edges of a trace.
pub(super) fn find(
    r: &Report<'_>,
    calls: &Calls,
    loops: &[Loop],
    limits: &ChattyEdgeThresholds,
) -> Vec<Observation> {
    let trace = &r.t.trace;
    let looped: FxHashSet<usize> = loops
        .iter()
        .flat_map(|l| l.members.iter().copied())
        .collect();
    // The request a call was made in: the nearest SERVER span above it.
    let request_of = |mut at: u32| loop {
        if trace.span(at).kind == SpanKind::Server {
            return at;
        }
        match trace.parent[at as usize] {
            Some(p) => at = p,
            None => return at,
        }
    };
    // By (request, caller, callee): the calls, with their indexes.
    type Edge<'a> = Vec<(usize, &'a Call<'a>)>;
    let mut edges: FxHashMap<(u32, Sym, Callee), Edge<'_>> = FxHashMap::default();
    for (i, c) in calls.calls.iter().enumerate() {
        if let Some(callee) = c.callee {
            edges
                .entry((request_of(c.parent), c.caller, callee))
                .or_default()
                .push((i, c));
        }
    }
    let mut out = Vec::new();
    for ((request, caller, callee), edge) in edges {
        let outside_loops = edge.iter().filter(|(i, _)| !looped.contains(i)).count();
        if edge.len() <= (limits.max_calls as usize) || outside_loops <= (limits.max_calls as usize)
        {
            continue;
        }
        let edge: Vec<&Call> = edge.into_iter().map(|(_, c)| c).collect();
        let critical: u64 = edge.iter().map(|c| c.critical_ns).sum();
        let total: u64 = edge.iter().map(|c| c.duration_ns()).sum();
        let operations: FxHashSet<&str> = edge.iter().map(|c| &*c.shape).collect();
        let entry = trace.span(request).operation;
        out.push(r.observe(Pattern {
            cost_ns: critical,
            culprit: Culprit {
                service: caller,
                operation: entry,
                peer: Some(callee.peer()),
            },
            at: request,
            summary: format!(
                "{caller} calls {callee} {} times ({} different operations) while serving one {entry} request: {} waits on them.",
                edge.len(),
                operations.len(),
                r.cost(critical),
            ),
            remedy: format!(
                "Fetch what {caller} needs from {callee} in fewer, coarser calls: batch endpoints, one query per screen, or a cache in front of {callee}."
            ),
            evidence: Evidence::ChattyEdge(evidence::ChattyEdge {
                calls: edge.len(),
                operations: operations.len(),
                total_ms: ms(total),
                critical_ms: ms(critical),
                critical_share: r.share(critical),
            }),
            crossed: vec![Crossed::new(
                "chatty_edge.max_calls",
                limits.max_calls as f64,
                edge.len() as f64,
            )],
        }, &edge));
    }
    out
}
