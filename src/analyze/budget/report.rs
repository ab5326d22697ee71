//! What each window violation says: the observation (one plain sentence with the
//! numbers, one line of remedy, the evidence) built from the budget map's
//! arithmetic in `map.rs`.

use super::calls::EdgeKey;
use super::infer::{Inferred, Layer};
use super::map::{EntryBudget, Outer};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::thresholds::{
    Headroom as HeadroomThresholds, TimeoutInference, TimeoutInversion,
};
use crate::analyze::{
    finding_id, ChainHop, Crossed, Culprit, FindingKind, Observation, Severity, Thresholds,
};
use crate::model::{Sym, TraceId};

/// Example traces kept per violation.
const EXAMPLES: usize = 10;

/// Trace ids with the end of their trace; the most recent are kept.
#[derive(Default)]
pub(super) struct Examples(Vec<(u64, TraceId)>);

impl Examples {
    pub(super) fn push(&mut self, end_ns: u64, id: TraceId) {
        self.0.push((end_ns, id));
    }

    /// The most recent distinct ids, and the latest end (0 without any).
    fn take(mut self) -> (Vec<TraceId>, u64) {
        self.0.sort_unstable_by(|a, b| b.cmp(a));
        let seen = self.0.first().map_or(0, |e| e.0);
        let mut ids: Vec<TraceId> = Vec::new();
        for (_, id) in self.0 {
            if ids.len() == EXAMPLES {
                break;
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        (ids, seen)
    }
}

/// How many calls support a violation, of how many, and which.
pub(super) struct Support {
    pub calls: u64,
    pub count: u64,
    pub examples: Examples,
}

/// Work that went on after its caller gave up, on one edge.
pub(super) struct Overruns {
    pub support: Support,
    pub max_ns: u64,
    pub total_ns: u64,
}

/// Percentiles above `headroom.share` of the timeout in front.
pub(super) struct Headroom {
    pub timeout_ns: u64,
    pub p95_ns: u64,
    pub p99_ns: u64,
    /// `calls`: those that did not time out; `count`: those over that share of the timeout.
    pub support: Support,
}

/// The edge's caller configures the call: it is the culprit, the callee its peer.
/// The id of the `timeout_inversion` finding of `edge`.
pub(super) fn inversion_id(edge: EdgeKey) -> u64 {
    finding_id(FindingKind::TimeoutInversion, &edge_culprit(edge))
}

fn edge_culprit(edge: EdgeKey) -> Culprit {
    Culprit {
        service: edge.caller,
        operation: edge.operation,
        peer: edge.callee,
    }
}

fn entry_hop(e: &EntryBudget) -> ChainHop {
    ChainHop {
        span_id: None,
        service: e.entry.service,
        operation: e.entry.operation,
        duration_ms: e.timeout.map_or(0.0, |t| ms(t.value_ns)),
        timed_out: e.timed_out > 0,
    }
}

/// The callee of `edge` as a hop lasting `duration_ns`.
fn callee_hop(edge: EdgeKey, duration_ns: u64, timed_out: bool) -> ChainHop {
    ChainHop {
        span_id: None,
        service: edge.callee.unwrap_or(edge.caller),
        operation: edge.operation,
        duration_ms: ms(duration_ns),
        timed_out,
    }
}

/// `gateway_timeout`: the entry point's timed-out roots cluster at `t`.
/// `source_timeout` is the edge the entry's timeout relays, with its own timeout.
pub(super) fn gateway_timeout(
    e: &EntryBudget,
    t: Inferred,
    status: Option<u16>,
    source_timeout: Option<(EdgeKey, u64)>,
    examples: Examples,
    inference: &TimeoutInference,
) -> Observation {
    let what = format!("{} {}", e.entry.service, e.entry.operation);
    let status_text = status.map_or(String::new(), |s| format!(" (HTTP {s})"));
    let head = format!(
        "{} of {} timed-out requests to {what} ended at {}{status_text}",
        t.supporting,
        t.considered,
        human(t.value_ns)
    );
    let (summary, remedy) = match e.layer {
        Some(Layer::AwsApiGateway) => (
            format!("{head}: {}, which cannot be raised.", Layer::AwsApiGateway.name()),
            "Move work that can take over 25 s off the API Gateway request: enqueue it, answer 202 with a job id and let the client poll.".to_owned(),
        ),
        Some(layer @ Layer::NginxOrAlb) => (
            format!("{head}: {}.", layer.name()),
            "Fix the hop that ate the 60 s or move the work to a queue and answer 202; raise proxy_read_timeout or the ALB idle timeout only for this route, and only knowingly.".to_owned(),
        ),
        Some(layer @ Layer::Cloudflare) => (
            format!("{head}: {}.", layer.name()),
            "Speed up the origin or move the work to a queue and answer 202; keep the origin's own timeouts below 100 s so it fails first and says why.".to_owned(),
        ),
        None => {
            // A relayed timeout is the source edge's setting: say that one.
            let (value, whose) = match source_timeout {
                Some((edge, ns)) => (
                    ns,
                    format!(
                        " on {}, which the entry point only reported",
                        edge.describe()
                    ),
                ),
                None => (t.value_ns, String::new()),
            };
            (
                format!("{head}: a configured timeout of {}{whose}.", human(value)),
                format!(
                    "Find the hop that ate the {} budget (GET /api/v1/hops) and fix it; raise this timeout only knowingly, and keep every inner timeout smaller than it.",
                    human(value)
                ),
            )
        }
    };
    let (trace_ids, seen_ns) = examples.take();
    let mut chain = vec![entry_hop(e)];
    if let Some((s, ns)) = source_timeout {
        chain.push(callee_hop(s, ns, true));
    }
    Observation {
        kind: FindingKind::GatewayTimeout,
        severity: if e.layer == Some(Layer::AwsApiGateway) {
            Severity::Critical
        } else {
            Severity::Warning
        },
        culprit: Culprit {
            service: e.entry.service,
            operation: e.entry.operation,
            peer: e.layer.map(|l| Sym::new(l.peer())),
        },
        chain,
        summary,
        remedy,
        evidence: Evidence::GatewayTimeout(evidence::Gateway {
            timeout_ms: ms(t.value_ns),
            layer: e.layer,
            supporting_traces: t.supporting,
            timed_out_traces: t.considered,
            traces: e.traces,
            cluster_ms: [ms(t.lo_ns), ms(t.hi_ns)],
            http_status: status,
            relayed_from: e.source,
        }),
        trace_ids,
        count: t.supporting,
        seen_ns,
        crossed: vec![support_crossed(t, inference)],
        location: None,
        spans: Vec::new(),
    }
}

/// `timeout_inversion`: `edge` times out at `t` with only `left` of `outer` left.
pub(super) fn inversion(
    entry: &EntryBudget,
    edge: EdgeKey,
    t: Inferred,
    (left, outer): (i64, Outer),
    support: Support,
    thresholds: &Thresholds,
) -> Observation {
    let outer_timeout = outer.timeout_ns();
    let equal = t.value_ns.abs_diff(outer_timeout) <= outer_timeout / 100;
    let mut chain = vec![entry_hop(entry)];
    let outer_text = match outer {
        Outer::Entry { timeout_ns } => format!(
            "the {} timeout in front of {} {}",
            human(timeout_ns),
            entry.entry.service,
            entry.entry.operation
        ),
        Outer::Edge {
            edge: o,
            timeout_ns,
        } => {
            chain.push(callee_hop(o, timeout_ns, true));
            format!("the {} timeout of {}", human(timeout_ns), o.describe())
        }
    };
    chain.push(callee_hop(edge, t.value_ns, true));
    let summary = if equal {
        format!(
            "{} has a {} timeout, the same as {outer_text} above it: when {} is slow both give up together and a retry can never help ({} are left when the call starts).",
            edge.describe(),
            human(t.value_ns),
            edge.callee.map_or("the callee", |c| c.as_str()),
            human_signed(left)
        )
    } else {
        format!(
            "{} has a {} timeout, but only {} are left of {outer_text} when the call starts: {} keeps waiting after its caller has given up.",
            edge.describe(),
            human(t.value_ns),
            human_signed(left),
            edge.caller
        )
    };
    let (trace_ids, seen_ns) = support.examples.take();
    Observation {
        kind: FindingKind::TimeoutInversion,
        severity: Severity::Warning,
        culprit: edge_culprit(edge),
        chain,
        summary,
        remedy: format!(
            "Give the call from {} a timeout smaller than what is left above it: propagate the deadline and subtract elapsed time at each hop.",
            edge.caller
        ),
        evidence: Evidence::TimeoutInversion(evidence::Inversion {
            entry: entry.entry,
            edge,
            timeout_ms: ms(t.value_ns),
            supporting_calls: t.supporting,
            budget_left_ms: left as f64 / 1e6,
            outer: outer.into(),
            equal_to_outer: equal,
            calls: support.calls,
            calls_over_budget: support.count,
        }),
        trace_ids,
        count: support.count,
        seen_ns,
        crossed: vec![
            support_crossed(t, &thresholds.timeout_inference),
            slack_crossed(t.value_ns as i64 - left, left, &thresholds.timeout_inversion),
        ],
        location: None,
        spans: Vec::new(),
    }
}

/// `deadline_not_propagated`: calls of `edge` whose work went on after the
/// waiting side timed out.
pub(super) fn not_propagated(
    entry: &EntryBudget,
    edge: EdgeKey,
    timeout: Option<Inferred>,
    o: Overruns,
    min_calls: u32,
) -> Observation {
    let (trace_ids, seen_ns) = o.support.examples.take();
    let callee = edge.callee.map_or("the callee", |c| c.as_str());
    Observation {
        kind: FindingKind::DeadlineNotPropagated,
        severity: Severity::Warning,
        culprit: edge_culprit(edge),
        chain: vec![entry_hop(entry), callee_hop(edge, o.max_ns, false)],
        summary: format!(
            "In {} of {} calls of {}, work went on after the side waiting for it had timed out (up to {}, {} in all): the deadline does not travel with the request.",
            o.support.count,
            o.support.calls,
            edge.describe(),
            human(o.max_ns),
            human(o.total_ns)
        ),
        remedy: format!(
            "Propagate the deadline with the request (gRPC deadline, a deadline header) and subtract elapsed time at each hop, so {callee} stops work nobody waits for."
        ),
        evidence: Evidence::DeadlineNotPropagated(evidence::NotPropagated {
            entry: entry.entry,
            edge,
            calls: o.support.calls,
            calls_overrunning: o.support.count,
            max_overrun_ms: ms(o.max_ns),
            total_overrun_ms: ms(o.total_ns),
            timeout_ms: timeout.map(|t| ms(t.value_ns)),
        }),
        trace_ids,
        count: o.support.count,
        seen_ns,
        crossed: vec![Crossed::new(
            "deadline_not_propagated.min_calls",
            min_calls,
            o.support.count as f64,
        )],
        location: None,
        spans: Vec::new(),
    }
}

/// `timeout_headroom` of an edge, or of the entry point itself (`edge` `None`).
pub(super) fn headroom(
    entry: &EntryBudget,
    edge: Option<EdgeKey>,
    h: Headroom,
    config: &HeadroomThresholds,
) -> Observation {
    let (culprit, what, chain) = match edge {
        Some(edge) => (
            edge_culprit(edge),
            edge.describe(),
            vec![entry_hop(entry), callee_hop(edge, h.p99_ns, false)],
        ),
        None => (
            Culprit {
                service: entry.entry.service,
                operation: entry.entry.operation,
                peer: None,
            },
            format!("{} {}", entry.entry.service, entry.entry.operation),
            vec![ChainHop {
                duration_ms: ms(h.p99_ns),
                timed_out: false,
                ..entry_hop(entry)
            }],
        ),
    };
    let (trace_ids, seen_ns) = h.support.examples.take();
    Observation {
        kind: FindingKind::TimeoutHeadroom,
        severity: Severity::Warning,
        culprit,
        chain,
        summary: format!(
            "p95 of {what} is {} and p99 {}, above {} of the {} timeout in front of it: it will start timing out with a little more load.",
            human(h.p95_ns),
            human(h.p99_ns),
            if config.share == 0.5 {
                "half".to_owned()
            } else {
                format!("{:.0} %", config.share * 100.0)
            },
            human(h.timeout_ns)
        ),
        remedy: "Make it faster or move the slow part off the request path before it reaches the timeout; raising the timeout only hides the trend.".to_owned(),
        evidence: Evidence::TimeoutHeadroom(evidence::Headroom {
            entry: entry.entry,
            timeout_ms: ms(h.timeout_ns),
            headroom_share: config.share,
            limit_ms: ms(h.timeout_ns) * config.share,
            p95_ms: ms(h.p95_ns),
            p99_ms: ms(h.p99_ns),
            calls: h.support.calls,
            calls_over_limit: h.support.count,
        }),
        trace_ids,
        count: h.support.count,
        seen_ns,
        crossed: vec![
            Crossed::new(
                "headroom.share",
                config.share,
                h.p99_ns as f64 / h.timeout_ns.max(1) as f64,
            ),
            Crossed::new(
                "headroom.min_samples",
                config.min_samples,
                h.support.calls as f64,
            ),
        ],
        location: None,
        spans: Vec::new(),
    }
}

/// The support an inferred timeout crossed (`timeout_inference.min_calls`).
fn support_crossed(t: Inferred, inference: &TimeoutInference) -> Crossed {
    Crossed::new(
        "timeout_inference.min_calls",
        inference.min_calls,
        t.supporting as f64,
    )
}

/// The slack an inverted timeout exceeded (`excess_ns` over the `left_ns`
/// budget): its share of the budget when that is the larger slack, else its
/// milliseconds.
fn slack_crossed(excess_ns: i64, left_ns: i64, config: &TimeoutInversion) -> Crossed {
    let by_share = left_ns as f64 * config.slack_share;
    if by_share >= config.slack_ms * 1e6 && left_ns > 0 {
        Crossed::new(
            "timeout_inversion.slack_share",
            config.slack_share,
            excess_ns as f64 / left_ns as f64,
        )
    } else {
        Crossed::new(
            "timeout_inversion.slack_ms",
            config.slack_ms,
            excess_ns as f64 / 1e6,
        )
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// `29 s`, `28.95 s`, `350 ms`.
fn human(ns: u64) -> String {
    human_signed(ns as i64)
}

fn human_signed(ns: i64) -> String {
    if ns.unsigned_abs() >= 1_000_000_000 {
        let text = format!("{:.2}", ns as f64 / 1e9);
        format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let ms = ns as f64 / 1e6;
        if ms.abs() >= 10.0 {
            format!("{ms:.0} ms")
        } else {
            format!("{ms:.1} ms")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(29_000_000_000), "29 s");
        assert_eq!(human(28_950_000_000), "28.95 s");
        assert_eq!(human(1_060_000_000), "1.06 s");
        assert_eq!(human(350_000_000), "350 ms");
        assert_eq!(human(2_500_000), "2.5 ms");
        assert_eq!(human_signed(-1_500_000_000), "-1.5 s");
    }
}
