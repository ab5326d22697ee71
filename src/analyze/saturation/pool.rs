//! `pool_exhaustion`: requests of one instance queue for a connection to one
//! target while the calls themselves stay fast.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::records::Target;
use super::timeline::Timeline;
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::thresholds::{ns, Pool};
use crate::analyze::{Crossed, Culprit, FindingKind, Observation, Severity};
use crate::model::{Sym, TraceId};

const MS: u64 = 1_000_000;
/// Slices of the target's time range in which the ceiling is measured to see it
/// shrink.
const SLICES: usize = 4;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// One request's use of a target, with where it came from.
struct Use {
    trace_id: TraceId,
    request_ns: u64,
    end_ns: u64,
    /// Its trace's critical path: the root's duration.
    trace_ns: u64,
    first_call: u64,
    wait_ns: u64,
    explicit: bool,
    /// When it held a connection ([`super::PoolUse::hold`]).
    hold: (u64, u64),
}

/// The ceiling of connections held (`calls`) in each of `slices` equal slices of
/// `[from, to)`, for slices where `waiting` (wait intervals) has any time; `None`
/// for the others.
pub fn ceilings(
    calls: &Timeline,
    waiting: &Timeline,
    (from, to): (u64, u64),
    slices: usize,
) -> Vec<Option<u32>> {
    let len = (to.saturating_sub(from))
        .div_ceil(slices.max(1) as u64)
        .max(1);
    (0..slices as u64)
        .map(|i| {
            let (a, b) = (from + i * len, from + (i + 1) * len);
            (waiting.time_at_least(1, a, b) > 0).then(|| calls.max_within(a, b))
        })
        .collect()
}

/// Whether the ceiling shrank while requests were queueing: the last slice
/// with waits has a lower ceiling than an earlier one (connections that were
/// never given back).
pub fn shrinking(ceilings: &[Option<u32>]) -> bool {
    let seen: Vec<u32> = ceilings.iter().flatten().copied().collect();
    match seen.split_last() {
        Some((&last, earlier)) => earlier.iter().any(|&c| c > last),
        None => false,
    }
}

/// What one instance's use of one target shows.
struct Exhausted {
    instance: Sym,
    queued: Vec<(TraceId, u64)>,
    pool_size: u32,
    wait_p50: u64,
    wait_p95: u64,
    call_p50: u64,
    call_p95: u64,
    peak_queued: u32,
    window: (u64, u64),
    /// Share of the queued requests' traces' critical path spent waiting.
    wait_share: f64,
    saturated_share: f64,
    explicit: bool,
    ceilings: Vec<Option<u32>>,
    leak: bool,
    requests: usize,
}

/// Judges one instance's requests to one target (see [`pool_exhaustion`]).
fn judge(instance: Sym, uses: &[Use], calls: &[(u64, u64)], config: &Pool) -> Option<Exhausted> {
    if uses.len() < config.min_requests as usize {
        return None;
    }
    let mut durations: Vec<u64> = calls.iter().map(|c| c.1 - c.0).collect();
    durations.sort_unstable();
    let call_p50 = quantile(&durations, 0.5)?;
    let call_p95 = quantile(&durations, 0.95)?;
    let explicit = uses.iter().any(|u| u.explicit);
    // Without acquire spans, the shortest gap before a first call is the work a
    // request does before it, not waiting.
    let baseline = if explicit {
        0
    } else {
        uses.iter().map(|u| u.wait_ns).min()?
    };
    let queued_at = ns(config.min_queued_wait_ms).max(call_p50 / 2);
    let queued: Vec<(&Use, u64)> = uses
        .iter()
        .map(|u| (u, u.wait_ns - baseline.min(u.wait_ns)))
        .filter(|&(_, w)| w >= queued_at)
        .collect();
    if queued.len() < config.min_queued as usize {
        return None;
    }
    let mut waits: Vec<u64> = queued.iter().map(|q| q.1).collect();
    waits.sort_unstable();
    let wait_p95 = quantile(&waits, 0.95)?;
    if wait_p95
        < ns(config.min_p95_wait_ms).max((config.wait_to_call_factor * call_p95 as f64) as u64)
    {
        return None;
    }
    // Connections held, not statements in flight: a request that keeps its
    // connection across work in the application holds it between statements.
    let in_flight = Timeline::of(uses.iter().map(|u| u.hold));
    let pool_size = in_flight.max();
    let wait_intervals: Vec<(u64, u64)> = queued
        .iter()
        .map(|(u, w)| (u.first_call - w, u.first_call))
        .collect();
    let waiting = Timeline::of(wait_intervals.iter().copied());
    let from = uses
        .iter()
        .map(|u| u.hold.0)
        .min()?
        .min(waiting_start(&wait_intervals));
    let to = uses.iter().map(|u| u.hold.1).max()?;
    let ceilings = ceilings(&in_flight, &waiting, (from, to), SLICES);
    // A wait is measured against the ceiling of its time (a leaked connection
    // lowers it), near it (rounded up: a connection is briefly free between
    // two requests) counts.
    let slice_len = (to - from).div_ceil(SLICES as u64).max(1);
    let saturated: u64 = wait_intervals
        .iter()
        .map(|&(a, b)| {
            let slice = ((b.saturating_sub(from)) / slice_len).min(SLICES as u64 - 1);
            let ceiling = ceilings[slice as usize].unwrap_or(pool_size);
            let near = ((ceiling as f64) * config.near_ceiling).ceil() as u32;
            in_flight.time_at_least(near.max(1), a, b)
        })
        .sum();
    let total_wait: u64 = waits.iter().sum();
    let saturated_share = saturated as f64 / total_wait as f64;
    if saturated_share < config.min_saturated_share {
        return None;
    }
    let critical_ns: u64 = queued.iter().map(|(u, _)| u.trace_ns).sum();
    let window = (
        queued.iter().map(|(u, _)| u.request_ns).min()?,
        queued.iter().map(|(u, _)| u.end_ns).max()?,
    );
    let mut latest: Vec<(u64, TraceId)> =
        queued.iter().map(|(u, _)| (u.end_ns, u.trace_id)).collect();
    latest.sort_unstable_by(|a, b| b.cmp(a));
    Some(Exhausted {
        instance,
        queued: latest.into_iter().map(|(end, id)| (id, end)).collect(),
        pool_size,
        wait_p50: quantile(&waits, 0.5)?,
        wait_p95,
        call_p50,
        call_p95,
        peak_queued: waiting.max(),
        window,
        wait_share: total_wait as f64 / critical_ns.max(1) as f64,
        saturated_share,
        explicit,
        leak: shrinking(&ceilings),
        ceilings,
        requests: uses.len(),
    })
}

fn waiting_start(intervals: &[(u64, u64)]) -> u64 {
    intervals.iter().map(|w| w.0).min().unwrap_or(u64::MAX)
}

/// `pool_exhaustion`: per service instance and target (a named pool, a
/// database, an HTTP peer), by `config`: at least `min_queued` of at least
/// `min_requests` requests waited before their first call (explicit acquire
/// spans, else the uncovered gap over the shortest one) by at least
/// `min_queued_wait_ms` (and half a median call); their p95 wait is at least
/// `min_p95_wait_ms` and `wait_to_call_factor` times the p95 call (the calls
/// are not what is slow); and for at least `min_saturated_share` of that
/// waiting, the connections the instance's requests held ([`super::PoolUse::hold`]: from the end of the
/// wait to the end of the last call, whether or not a statement was running)
/// were near (`near_ceiling`) the ceiling of that quarter of the time ([`ceilings`]); the
/// highest ceiling is the estimated pool size. A ceiling
/// that shrinks while requests queue is a suspected leak. One
/// observation per service and target: the instance with the most queued
/// requests speaks for it, the count is every instance's queued requests.
pub fn pool_exhaustion(traces: &[Arc<TraceCalls>], config: &Pool) -> Vec<Observation> {
    type Key = (Sym, Target);
    // Per (service, instance, target): its requests' uses and all their calls.
    type Group = (Vec<Use>, Vec<(u64, u64)>);
    let mut groups: FxHashMap<(Sym, Sym, Target), Group> = FxHashMap::default();
    for t in traces {
        let records = &t.saturation;
        for r in &records.requests {
            for p in records.uses(r) {
                let calls = records.calls(p);
                let g = groups.entry((r.service, r.instance, p.target)).or_default();
                g.0.push(Use {
                    trace_id: t.trace_id,
                    request_ns: r.start_ns,
                    end_ns: r.end_ns,
                    trace_ns: t.root.duration_ns,
                    first_call: calls[0].0,
                    wait_ns: p.wait_ns,
                    explicit: p.explicit,
                    hold: p.hold,
                });
                g.1.extend_from_slice(calls);
            }
        }
    }
    let mut by_target: FxHashMap<Key, Vec<Exhausted>> = FxHashMap::default();
    for ((service, instance, target), (uses, calls)) in &groups {
        if let Some(e) = judge(*instance, uses, calls, config) {
            by_target.entry((*service, *target)).or_default().push(e);
        }
    }
    let mut out: Vec<Observation> = by_target
        .into_iter()
        .map(|((service, target), mut found)| {
            found.sort_by(|a, b| {
                b.queued
                    .len()
                    .cmp(&a.queued.len())
                    .then(a.instance.as_str().cmp(b.instance.as_str()))
            });
            report(service, target, &found, config)
        })
        .collect();
    super::sort_by_culprit(&mut out);
    out
}

fn report(service: Sym, target: Target, found: &[Exhausted], config: &Pool) -> Observation {
    let e = &found[0];
    let label = target.label();
    let count: usize = found.iter().map(|f| f.queued.len()).sum();
    let leak = found.iter().any(|f| f.leak);
    let ceilings: Vec<Option<u32>> = e.ceilings.clone();
    let mut summary = format!(
        "{service} instance {} waits for a connection to {label}: {} of {} requests queued \
         (wait p95 {:.0} ms, {:.0} % of their critical path) while the connections it held stayed at a \
         ceiling of {} (the pool size) and its calls took p50 {:.0} ms",
        e.instance,
        e.queued.len(),
        e.requests,
        ms(e.wait_p95),
        e.wait_share * 100.0,
        e.pool_size,
        ms(e.call_p50),
    );
    if leak {
        summary.push_str("; the ceiling shrank over time: suspected connection leak");
    }
    Observation {
        kind: FindingKind::PoolExhaustion,
        severity: if leak || e.wait_share >= 0.5 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        culprit: Culprit {
            service,
            operation: Sym::new("connection pool"),
            peer: Some(Sym::new(&label)),
        },
        chain: Vec::new(),
        summary,
        remedy: "Release connections on every path, errors included; size the pool for the \
                 concurrency the instance takes; bound the wait for a connection and fail fast."
            .to_owned(),
        evidence: Evidence::PoolExhaustion(evidence::PoolExhaustion {
            instance: e.instance,
            target: label,
            estimated_pool_size: e.pool_size,
            wait_p50_ms: ms(e.wait_p50),
            wait_p95_ms: ms(e.wait_p95),
            call_p50_ms: ms(e.call_p50),
            call_p95_ms: ms(e.call_p95),
            peak_queued: e.peak_queued,
            requests: e.requests,
            queued_requests: e.queued.len(),
            wait_share: e.wait_share,
            saturated_share: e.saturated_share,
            wait_from: if e.explicit {
                "acquire_spans"
            } else {
                "gap_before_first_call"
            }
            .to_owned(),
            ceiling_by_slice: ceilings,
            suspected_leak: leak,
            window: evidence::PoolWindow {
                start_unix_ms: e.window.0 / MS,
                end_unix_ms: e.window.1 / MS,
                duration_ms: ms(e.window.1 - e.window.0),
            },
            instances: found
                .iter()
                .map(|f| evidence::PoolInstance {
                    instance: f.instance,
                    queued_requests: f.queued.len(),
                    estimated_pool_size: f.pool_size,
                    wait_p95_ms: ms(f.wait_p95),
                })
                .collect(),
        }),
        trace_ids: e.queued.iter().take(10).map(|q| q.0).collect(),
        count: count as u64,
        seen_ns: found
            .iter()
            .filter_map(|f| f.queued.first().map(|q| q.1))
            .max()
            .unwrap_or(0),
        crossed: vec![
            Crossed::new("pool.min_queued", config.min_queued, e.queued.len() as f64),
            Crossed::new(
                "pool.wait_to_call_factor",
                config.wait_to_call_factor,
                e.wait_p95 as f64 / e.call_p95.max(1) as f64,
            ),
            Crossed::new(
                "pool.min_saturated_share",
                config.min_saturated_share,
                e.saturated_share,
            ),
        ],
        location: None,
        spans: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_measured_where_requests_wait_and_a_shrinking_one_is_a_leak() {
        // Four connections busy in the first half, two in the second; waits all along.
        let mut calls = Vec::new();
        for i in 0..4 {
            calls.push((0, 50 - i));
        }
        for i in 0..2 {
            calls.push((50, 100 - i));
        }
        let calls = Timeline::of(calls);
        let waiting = Timeline::of([(10, 90)]);
        let c = ceilings(&calls, &waiting, (0, 100), 4);
        assert_eq!(c, vec![Some(4), Some(4), Some(2), Some(2)]);
        assert!(shrinking(&c));
        // Waits only in the first half: no judgement on the second.
        let c = ceilings(&calls, &Timeline::of([(0, 40)]), (0, 100), 4);
        assert_eq!(c, vec![Some(4), Some(4), None, None]);
        assert!(!shrinking(&c));
        assert!(!shrinking(&[Some(3), None, Some(4)]));
        assert!(!shrinking(&[]));
    }
}
