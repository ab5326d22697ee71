//! `cascading_timeout`: on one ancestor chain at least two calls
//! (`cascade.min_calls`, [`Cascade`]) timed out. The
//! culprit is the deepest hop whose own slowness explains it — the slow span its
//! callers waited on — not the first span that reported the failure.
//!
//! Calls are counted, not spans: the CLIENT span and the SERVER span of one
//! gRPC or HTTP call both record DEADLINE_EXCEEDED, and an exception goes up
//! through every span of the service it passes (a wrapper, an HTTP library
//! under another), yet it is one timeout ([`same_call`]).

use super::evidence::{self, Evidence};
use super::finding::{ChainHop, Crossed, Culprit, FindingKind, Observation, Severity};
use super::thresholds::Cascade;
use crate::model::{named_peer, SpanKind, Trace};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The span the caller at `span` was waiting on: when its synchronous children
/// cover most of its time (it was waiting, not working), the one that ended last
/// (what it was still waiting for when it finished or gave up). Most is
/// `waiting` (a share).
fn waited_on(trace: &Trace, span: u32, waiting: f64) -> Option<u32> {
    let (start, end) = (trace.start(span), trace.end(span));
    if end <= start {
        return None;
    }
    let producer = trace.span(span).kind == SpanKind::Producer;
    let sync = || {
        trace
            .children(span)
            .iter()
            .copied()
            .filter(move |&c| !producer && trace.span(c).kind != SpanKind::Consumer)
    };
    // Children are sorted by start: sweep their union, clipped to the caller.
    let (mut covered, mut reach) = (0, start);
    for c in sync() {
        let (cs, ce) = (trace.start(c).max(reach), trace.end(c).min(end));
        if ce > cs {
            covered += ce - cs;
            reach = ce;
        }
    }
    if (covered as f64) < waiting * (end - start) as f64 {
        return None;
    }
    sync().max_by_key(|&c| (trace.end(c), std::cmp::Reverse(trace.start(c))))
}

/// Whether `child`, which `parent` waited on, belongs to the same call as
/// `parent`: the SERVER end of a CLIENT span, or a span of the same service
/// under a CLIENT or INTERNAL one (an HTTP library's span under another's, the
/// app's span around its call, a connect under a call): one failure recorded
/// at each level it went through. A SERVER span not under a CLIENT span, a
/// span right under a SERVER span (the service's own work: a wait for a pool
/// can time out by itself) and a span of another service begin calls of their
/// own.
fn same_call(trace: &Trace, parent: u32, child: u32) -> bool {
    let (p, c) = (trace.span(parent), trace.span(child));
    match (p.kind, c.kind) {
        (SpanKind::Client, SpanKind::Server) => true,
        (SpanKind::Server, _) | (_, SpanKind::Server) => false,
        _ => p.service == c.service,
    }
}

/// Reports the trace's cascade, if it has one. `timed_out[i]` says whether span
/// `i` ended in a timeout (see [`super::timeout::timeout`]).
pub fn cascading_timeout(
    trace: &Trace,
    timed_out: &[bool],
    config: &Cascade,
) -> Option<Observation> {
    // The topmost timed-out span: walk down from the root along what it waited on.
    let mut path = vec![trace.root];
    let mut cur = trace.root;
    while let Some(next) = waited_on(trace, cur, config.waiting_share) {
        path.push(next);
        cur = next;
    }
    let failed = path.iter().filter(|&&s| timed_out[s as usize]).count();
    // Per span of the path, the call it belongs to; a call timed out when one
    // of its spans did.
    let mut call_of = vec![0usize; path.len()];
    for i in 1..path.len() {
        call_of[i] = call_of[i - 1] + usize::from(!same_call(trace, path[i - 1], path[i]));
    }
    let mut calls_timed_out: Vec<usize> = (0..path.len())
        .filter(|&i| timed_out[path[i] as usize])
        .map(|i| call_of[i])
        .collect();
    calls_timed_out.dedup();
    if calls_timed_out.len() < config.min_calls as usize {
        return None;
    }
    let culprit_idx = *path.last().expect("the root at least");
    let culprit = trace.span(culprit_idx);
    let peer = if culprit.kind == SpanKind::Client {
        named_peer(culprit, &trace.arena)
    } else {
        None
    };
    // The caller that gave up on the culprit: the nearest timed-out span above it.
    let gave_up = path[..path.len() - 1]
        .iter()
        .rev()
        .copied()
        .find(|&s| timed_out[s as usize]);
    let wasted_ns = gave_up.map_or(0, |g| trace.ran_past(culprit_idx, g));
    // Retries: calls with the culprit's operation made by the caller of the
    // culprit's call (a CLIENT span retried by its parent).
    let call = path
        .iter()
        .rev()
        .copied()
        .find(|&s| trace.span(s).kind == SpanKind::Client);
    let retries = call
        .and_then(|c| trace.parent[c as usize].map(|p| (c, p)))
        .map_or(0, |(c, p)| {
            let op = trace.span(c).operation;
            trace
                .children(p)
                .iter()
                .filter(|&&k| {
                    trace.span(k).operation == op && trace.span(k).kind == SpanKind::Client
                })
                .count()
                .saturating_sub(1)
        });
    let chain: Vec<ChainHop> = path
        .iter()
        .map(|&s| ChainHop::of(trace, s, timed_out[s as usize]))
        .collect();
    let root_timed_out = timed_out[trace.root as usize];
    let callers: Vec<&str> = chain[..chain.len() - 1]
        .iter()
        .filter(|h| h.timed_out)
        .map(|h| h.service.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let summary = format!(
        "{} {} took {:.0} ms and {} calls on the chain to it timed out waiting ({}); the slow hop is {}, not the first span that failed{}.",
        culprit.service,
        culprit.operation,
        ms(culprit.duration_ns()),
        calls_timed_out.len(),
        callers.join(", "),
        culprit.service,
        if wasted_ns > 0 {
            format!(", and it kept working {:.0} ms after its callers gave up", ms(wasted_ns))
        } else {
            String::new()
        }
    );
    Some(Observation {
        kind: FindingKind::CascadingTimeout,
        severity: if root_timed_out {
            Severity::Critical
        } else {
            Severity::Warning
        },
        culprit: Culprit {
            service: culprit.service,
            operation: culprit.operation,
            peer,
        },
        summary,
        remedy: format!(
            "Fix the slow {} call and propagate deadlines: pass the remaining budget down and subtract elapsed time at each hop, so callers stop early and {} stops work nobody waits for; raising timeouts only moves the 504.",
            culprit.operation, culprit.service
        ),
        evidence: Evidence::CascadingTimeout(evidence::Cascade {
            chain: chain.clone(),
            timed_out_calls: calls_timed_out.len(),
            timed_out_spans: failed,
            culprit_duration_ms: ms(culprit.duration_ns()),
            wasted_ms: ms(wasted_ns),
            retries,
            entry_timed_out: root_timed_out,
        }),
        chain,
        trace_ids: vec![trace.trace_id],
        count: 1,
        seen_ns: trace.end(trace.root),
        crossed: vec![Crossed::new(
            "cascade.min_calls",
            config.min_calls,
            calls_timed_out.len() as u32,
        )],
        location: super::finding::CodeLocation::of(trace, culprit_idx),
        spans: path
            .iter()
            .filter(|&&s| timed_out[s as usize] || s == culprit_idx)
            .map(|&s| trace.span(s).span_id)
            .collect(),
    })
}
