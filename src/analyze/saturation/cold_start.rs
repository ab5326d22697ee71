//! `cold_start`: the first requests of a service instance are much slower than
//! the same operations once warm (caches, JIT, connection pools still warming
//! up). Each first request is compared with its own operation: a new instance
//! whose first requests happen to be a slow endpoint is not cold.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::records::RequestRecord;
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::thresholds::{ns, ColdStart};
use crate::analyze::{finding_id, Crossed, Culprit, FindingKind, Observation, Severity};
use crate::model::{Sym, TraceId};

/// The culprit of `service`'s `cold_start` finding.
fn culprit(service: Sym) -> Culprit {
    Culprit {
        service,
        operation: Sym::new("first requests of an instance"),
        peer: None,
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    quantile(&v, 0.5)
}

/// Whether a request (or a median of requests) is cold against a steady
/// median: at least `factor` times it and `min_extra_ms` over it.
pub fn is_cold(cold_ns: u64, steady_median_ns: u64, config: &ColdStart) -> bool {
    cold_ns as f64 >= steady_median_ns as f64 * config.factor
        && cold_ns >= steady_median_ns.saturating_add(ns(config.min_extra_ms))
}

/// One of an instance's first requests, judged against its operation.
struct First {
    operation: Sym,
    duration_ns: u64,
    /// The median of the operation's steady requests, when there are at least
    /// `min_steady_requests` of them.
    steady_median_ns: Option<u64>,
    trace_id: TraceId,
    end_ns: u64,
}

impl First {
    fn cold(&self, config: &ColdStart) -> bool {
        self.steady_median_ns
            .is_some_and(|steady| is_cold(self.duration_ns, steady, config))
    }
}

/// Per service, the instances that joined while another instance was serving
/// (one had a request that started earlier) and most of whose first
/// `first_requests` (3) SERVER spans in the window (by start) [`is_cold`]
/// against the median of the steady requests of their own operation: every
/// other SERVER span of the service with that operation, when there are at
/// least `min_steady_requests` (10) of those (a first request of an operation without them is
/// not cold). For first requests of one operation this is their median
/// against its steady median. More requests than the first must have been
/// seen. One observation per service, counting the first requests of every
/// such instance.
///
/// An instance is new as far as the window can see: the first instance of a
/// service is never judged, and one that started before the window's oldest
/// trace is judged by its first requests in the window, which are reported
/// only if they are slow.
///
/// Also returns the ids of the `cold_start` findings of every service it
/// judged (an instance that joined, with first requests to compare with
/// steady ones), reported or not.
pub fn cold_starts(traces: &[Arc<TraceCalls>], config: &ColdStart) -> (Vec<Observation>, Vec<u64>) {
    let first_requests = config.first_requests as usize;
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
    let mut judged = Vec::new();
    for (service, mut instances) in by_service {
        for v in instances.values_mut() {
            v.sort_by_key(|(s, id)| (s.start_ns, *id));
        }
        let mut cold = Vec::new();
        for (&instance, requests) in &instances {
            let joined = instances
                .iter()
                .any(|(&i, r)| i != instance && r[0].0.start_ns < requests[0].0.start_ns);
            if requests.len() <= first_requests || !joined {
                continue;
            }
            let steady_median = |operation: Sym| {
                let steady: Vec<u64> = instances
                    .iter()
                    .flat_map(|(&i, r)| {
                        let skip = if i == instance { first_requests } else { 0 };
                        r[skip..]
                            .iter()
                            .filter(|(s, _)| s.operation == operation)
                            .map(|(s, _)| s.duration_ns())
                    })
                    .collect();
                (steady.len() >= config.min_steady_requests as usize)
                    .then(|| median(steady))
                    .flatten()
            };
            let first: Vec<First> = requests[..first_requests]
                .iter()
                .map(|(r, id)| First {
                    operation: r.operation,
                    duration_ns: r.duration_ns(),
                    steady_median_ns: steady_median(r.operation),
                    trace_id: *id,
                    end_ns: r.end_ns,
                })
                .collect();
            if first.iter().any(|f| f.steady_median_ns.is_some()) {
                judged.push(service);
            }
            if first.iter().filter(|f| f.cold(config)).count() * 2 > first_requests {
                cold.push((instance, requests[0].0.start_ns, first));
            }
        }
        if cold.is_empty() {
            continue;
        }
        cold.sort_by_key(|c| std::cmp::Reverse(c.1));
        let medians = |first: &[First]| {
            (
                median(first.iter().map(|f| f.duration_ns).collect()).unwrap_or(0),
                median(first.iter().filter_map(|f| f.steady_median_ns).collect()).unwrap_or(0),
            )
        };
        let latest = cold[0].0;
        let (cold_ns, steady_ns) = medians(&cold[0].2);
        let count = (cold.len() * first_requests) as u64;
        out.push(Observation {
            kind: FindingKind::ColdStart,
            severity: Severity::Warning,
            culprit: culprit(service),
            chain: Vec::new(),
            summary: format!(
                "The first {first_requests} requests of {} new {service} instance(s) \
                 (latest {latest}) take a median {:.0} ms against {:.0} ms for the same \
                 operations once warm",
                cold.len(),
                ms(cold_ns),
                ms(steady_ns),
            ),
            remedy: "Warm instances up before they take traffic: a readiness check that \
                     passes only after caches, connection pools and JIT are warm, or a \
                     slow-start ramp on the balancer."
                .to_owned(),
            evidence: Evidence::ColdStart(evidence::ColdStart {
                instances: cold
                    .iter()
                    .map(|(i, _, first)| {
                        let (c, s) = medians(first);
                        evidence::ColdInstance {
                            instance: *i,
                            first_ms: first.iter().map(|f| ms(f.duration_ns)).collect(),
                            operations: first.iter().map(|f| f.operation).collect(),
                            steady_ms: first.iter().map(|f| f.steady_median_ns.map(ms)).collect(),
                            cold_median_ms: ms(c),
                            steady_median_ms: ms(s),
                        }
                    })
                    .collect(),
                cold_requests: first_requests,
            }),
            trace_ids: cold
                .iter()
                .flat_map(|c| c.2.iter().map(|f| f.trace_id))
                .take(10)
                .collect(),
            count,
            seen_ns: cold
                .iter()
                .flat_map(|c| c.2.iter().map(|f| f.end_ns))
                .max()
                .unwrap_or(0),
            crossed: vec![
                Crossed::new(
                    "cold_start.factor",
                    config.factor,
                    cold_ns as f64 / steady_ns.max(1) as f64,
                ),
                Crossed::new(
                    "cold_start.min_extra_ms",
                    config.min_extra_ms,
                    ms(cold_ns.saturating_sub(steady_ns)),
                ),
            ],
            location: None,
            spans: Vec::new(),
        });
    }
    out.sort_by_key(|o| o.culprit.service.as_str());
    let mut judged: Vec<u64> = judged
        .into_iter()
        .map(|s| finding_id(FindingKind::ColdStart, &culprit(s)))
        .collect();
    judged.sort_unstable();
    judged.dedup();
    (out, judged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn cold_is_three_times_and_100_ms_slower() {
        let d = ColdStart::default();
        assert!(is_cold(400 * MS, 20 * MS, &d));
        assert!(!is_cold(110 * MS, 20 * MS, &d), "5.5× but only 90 ms more");
        assert!(!is_cold(500 * MS, 200 * MS, &d), "300 ms more but 2.5×");
        assert!(is_cold(600 * MS, 200 * MS, &d));
        let looser = ColdStart {
            factor: 2.0,
            ..ColdStart::default()
        };
        assert!(is_cold(500 * MS, 200 * MS, &looser), "2.5× is over 2×");
    }
}
