//! `cold_start`: the first requests of a service instance are much slower than
//! the service's steady state (caches, JIT, connection pools still warming up).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::json;

use super::records::RequestRecord;
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::{Culprit, FindingKind, Observation, Severity};
use crate::model::{Sym, TraceId};

const MS: u64 = 1_000_000;
/// The requests of an instance that count as its first.
pub const COLD_REQUESTS: usize = 3;
/// Their median must be at least this many times the steady median ...
pub const COLD_FACTOR: u64 = 3;
/// ... and at least this much more.
pub const COLD_MIN_EXTRA_NS: u64 = 100 * MS;
/// Steady requests (other instances', and this one's later ones) needed to say
/// what normal is.
pub const MIN_STEADY: usize = 10;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    quantile(&v, 0.5)
}

/// Whether a cold median is a cold start against a steady one.
pub fn is_cold(cold_median_ns: u64, steady_median_ns: u64) -> bool {
    cold_median_ns >= steady_median_ns.saturating_mul(COLD_FACTOR)
        && cold_median_ns >= steady_median_ns.saturating_add(COLD_MIN_EXTRA_NS)
}

/// Per service, the instances that joined while another instance was serving
/// (one had a request that started earlier) and whose first [`COLD_REQUESTS`]
/// SERVER spans in the window (by start) have a median that [`is_cold`]
/// against the median of every other SERVER span of the service, when there
/// are at least [`MIN_STEADY`] of those. More requests than the first must
/// have been seen. One observation per service, counting the cold requests of
/// every such instance.
///
/// An instance is new as far as the window can see: the first instance of a
/// service is never judged, and one that started before the window's oldest
/// trace is judged by its first requests in the window, which are reported
/// only if they are slow.
pub fn cold_starts(traces: &[Arc<TraceCalls>]) -> Vec<Observation> {
    type Instances = FxHashMap<Sym, Vec<(RequestRecord, TraceId)>>;
    let mut by_service: FxHashMap<Sym, Instances> = FxHashMap::default();
    for t in traces {
        for s in &t.saturation.requests {
            by_service
                .entry(s.service)
                .or_default()
                .entry(s.instance)
                .or_default()
                .push((*s, t.trace_id));
        }
    }
    let mut out = Vec::new();
    for (service, mut instances) in by_service {
        for v in instances.values_mut() {
            v.sort_by_key(|(s, id)| (s.start_ns, *id));
        }
        let mut cold = Vec::new();
        for (&instance, requests) in &instances {
            let joined = instances
                .iter()
                .any(|(&i, r)| i != instance && r[0].0.start_ns < requests[0].0.start_ns);
            if requests.len() <= COLD_REQUESTS || !joined {
                continue;
            }
            let steady: Vec<u64> = instances
                .iter()
                .flat_map(|(&i, r)| {
                    let skip = if i == instance { COLD_REQUESTS } else { 0 };
                    r[skip..].iter().map(|(s, _)| s.duration_ns())
                })
                .collect();
            if steady.len() < MIN_STEADY {
                continue;
            }
            let first = &requests[..COLD_REQUESTS];
            let (Some(cold_median), Some(steady_median)) = (
                median(first.iter().map(|(s, _)| s.duration_ns()).collect()),
                median(steady),
            ) else {
                continue;
            };
            if is_cold(cold_median, steady_median) {
                cold.push((instance, first, cold_median, steady_median));
            }
        }
        if cold.is_empty() {
            continue;
        }
        cold.sort_by_key(|c| std::cmp::Reverse(c.1[0].0.start_ns));
        let (latest, _, cold_ms, steady_ms) = (cold[0].0, cold[0].1, ms(cold[0].2), ms(cold[0].3));
        let count = (cold.len() * COLD_REQUESTS) as u64;
        out.push(Observation {
            kind: FindingKind::ColdStart,
            severity: Severity::Warning,
            culprit: Culprit {
                service,
                operation: Sym::new("first requests of an instance"),
                peer: None,
            },
            chain: Vec::new(),
            summary: format!(
                "The first {COLD_REQUESTS} requests of {} new {service} instance(s) \
                 (latest {latest}) take a median {cold_ms:.0} ms against {steady_ms:.0} ms \
                 once warm",
                cold.len()
            ),
            remedy: "Warm instances up before they take traffic: a readiness check that \
                     passes only after caches, connection pools and JIT are warm, or a \
                     slow-start ramp on the balancer."
                .to_owned(),
            evidence: json!({
                "instances": cold.iter().map(|(i, first, c, s)| json!({
                    "instance": i,
                    "first_ms": first.iter().map(|(r, _)| ms(r.duration_ns())).collect::<Vec<_>>(),
                    "cold_median_ms": ms(*c),
                    "steady_median_ms": ms(*s),
                })).collect::<Vec<_>>(),
                "cold_requests": COLD_REQUESTS,
            }),
            trace_ids: cold
                .iter()
                .flat_map(|c| c.1.iter().map(|(_, id)| *id))
                .take(10)
                .collect(),
            count,
            seen_ns: cold
                .iter()
                .flat_map(|c| c.1.iter().map(|(r, _)| r.end_ns))
                .max()
                .unwrap_or(0),
        });
    }
    out.sort_by_key(|o| o.culprit.service.as_str());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_is_three_times_and_100_ms_slower() {
        assert!(is_cold(400 * MS, 20 * MS));
        assert!(!is_cold(110 * MS, 20 * MS), "5.5× but only 90 ms more");
        assert!(!is_cold(500 * MS, 200 * MS), "300 ms more but 2.5×");
        assert!(is_cold(600 * MS, 200 * MS));
    }
}
