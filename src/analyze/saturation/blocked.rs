//! `blocked_worker`: on one instance, requests in flight together make no
//! progress together: their self times line up in series, one at a time,
//! as when an event loop or a single worker thread is held by synchronous work.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_json::json;

use super::records::{RequestRecord, SaturationRecords};
use crate::analyze::budget::TraceCalls;
use crate::analyze::{Culprit, FindingKind, Observation, Severity};
use crate::model::{Sym, TraceId};

const MS: u64 = 1_000_000;
/// Requests in flight at once on the instance needed at some point.
const MIN_IN_FLIGHT: u32 = 4;
/// Time with at least two requests in flight needed to judge.
const MIN_CONTENDED_NS: u64 = 20 * MS;
/// At most this share of that time may see two requests working at once ...
const MAX_OVERLAP_SHARE: f64 = 0.05;
/// ... and at least this share must see one working.
const MIN_BUSY_SHARE: f64 = 0.8;

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// How requests shared an instance's time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Contention {
    /// Most requests in flight at once.
    pub max_in_flight: u32,
    /// Time with at least two requests in flight.
    pub contended_ns: u64,
    /// Of that, time with at least one request working (self time) ...
    pub busy_ns: u64,
    /// ... and with at least two working at once.
    pub overlap_ns: u64,
}

impl Contention {
    /// Requests lined up in series: enough of them in flight together, one
    /// working at a time, nearly always one.
    pub fn serialized(&self) -> bool {
        self.max_in_flight >= MIN_IN_FLIGHT
            && self.contended_ns >= MIN_CONTENDED_NS
            && self.overlap_share() <= MAX_OVERLAP_SHARE
            && self.busy_share() >= MIN_BUSY_SHARE
    }

    pub fn overlap_share(&self) -> f64 {
        self.overlap_ns as f64 / self.contended_ns.max(1) as f64
    }

    pub fn busy_share(&self) -> f64 {
        self.busy_ns as f64 / self.contended_ns.max(1) as f64
    }
}

/// Measures `requests` (`[start, end)` each, with its self-time intervals) in
/// one sweep over time.
pub fn contention<'a>(
    requests: impl IntoIterator<Item = ((u64, u64), &'a [(u64, u64)])>,
) -> Contention {
    // (time, change of requests in flight, change of requests working)
    let mut events: Vec<(u64, i32, i32)> = Vec::new();
    for ((start, end), busy) in requests {
        events.push((start, 1, 0));
        events.push((end, -1, 0));
        for &(s, e) in busy {
            events.push((s, 0, 1));
            events.push((e, 0, -1));
        }
    }
    events.sort_unstable();
    let mut c = Contention::default();
    let (mut in_flight, mut working, mut at) = (0i32, 0i32, 0u64);
    for (t, flight, work) in events {
        if in_flight >= 2 {
            let d = t - at;
            c.contended_ns += d;
            if working >= 1 {
                c.busy_ns += d;
            }
            if working >= 2 {
                c.overlap_ns += d;
            }
        }
        in_flight += flight;
        working += work;
        at = t;
        c.max_in_flight = c.max_in_flight.max(in_flight.max(0) as u32);
    }
    c
}

/// `blocked_worker`: per service instance, the SERVER spans in the window
/// whose self times are [`Contention::serialized`]. The culprit's operation is
/// the one with the most self time on that instance (the likeliest holder);
/// its peer is the instance. Other instances of the service are measured too,
/// for contrast.
pub fn blocked_workers(traces: &[Arc<TraceCalls>]) -> Vec<Observation> {
    type Request<'a> = (&'a RequestRecord, &'a SaturationRecords, TraceId);
    let mut by_instance: FxHashMap<(Sym, Sym), Vec<Request>> = FxHashMap::default();
    for t in traces {
        for r in &t.saturation.requests {
            by_instance
                .entry((r.service, r.instance))
                .or_default()
                .push((r, &t.saturation, t.trace_id));
        }
    }
    let measured: FxHashMap<(Sym, Sym), Contention> = by_instance
        .iter()
        .map(|(&k, rs)| {
            let requests = rs
                .iter()
                .map(|(r, records, _)| ((r.start_ns, r.end_ns), records.busy(r)));
            (k, contention(requests))
        })
        .collect();
    let mut out = Vec::new();
    for (&(service, instance), requests) in &by_instance {
        let c = measured[&(service, instance)];
        if !c.serialized() {
            continue;
        }
        let mut self_by_op: FxHashMap<Sym, u64> = FxHashMap::default();
        for (r, records, _) in requests {
            *self_by_op.entry(r.operation).or_default() +=
                records.busy(r).iter().map(|b| b.1 - b.0).sum::<u64>();
        }
        let (operation, _) = self_by_op
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.as_str().cmp(a.0.as_str())))
            .expect("an instance has requests");
        let others: Vec<serde_json::Value> = measured
            .iter()
            .filter(|(&(s, i), o)| s == service && i != instance && o.contended_ns > 0)
            .map(|(&(_, i), o)| {
                json!({"instance": i, "max_in_flight": o.max_in_flight, "overlap_share": o.overlap_share()})
            })
            .collect();
        let mut latest: Vec<(u64, TraceId)> =
            requests.iter().map(|(r, _, id)| (r.end_ns, *id)).collect();
        latest.sort_unstable_by(|a, b| b.cmp(a));
        latest.dedup_by_key(|l| l.1);
        out.push(Observation {
            kind: FindingKind::BlockedWorker,
            severity: Severity::Warning,
            culprit: Culprit {
                service,
                operation,
                peer: Some(instance),
            },
            chain: Vec::new(),
            summary: format!(
                "{service} instance {instance} works on one request at a time: up to {} requests \
                 in flight, but their own time lines up in series ({:.0} % of {:.0} ms busy, {:.1} % \
                 overlapping); synchronous work (most in {operation}) holds its worker or event loop",
                c.max_in_flight,
                c.busy_share() * 100.0,
                ms(c.contended_ns),
                c.overlap_share() * 100.0,
            ),
            remedy: "Move blocking or CPU-heavy work off the event loop or request thread (a \
                     worker pool, async I/O), or run more workers per instance."
                .to_owned(),
            evidence: json!({
                "instance": instance,
                "requests": requests.len(),
                "max_in_flight": c.max_in_flight,
                "contended_ms": ms(c.contended_ns),
                "busy_share": c.busy_share(),
                "overlap_share": c.overlap_share(),
                "other_instances": others,
            }),
            trace_ids: latest.iter().take(10).map(|l| l.1).collect(),
            count: requests.len() as u64,
            seen_ns: latest.first().map_or(0, |l| l.0),
        });
    }
    out.sort_by(|a, b| {
        (
            a.culprit.service.as_str(),
            a.culprit.peer.map(|p| p.as_str()),
        )
            .cmp(&(
                b.culprit.service.as_str(),
                b.culprit.peer.map(|p| p.as_str()),
            ))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Request = ((u64, u64), Vec<(u64, u64)>);

    fn request(span: (u64, u64), busy: Vec<(u64, u64)>) -> Request {
        (
            (span.0 * MS, span.1 * MS),
            busy.into_iter().map(|(s, e)| (s * MS, e * MS)).collect(),
        )
    }

    fn contention(requests: &[Request]) -> Contention {
        super::contention(requests.iter().map(|(span, busy)| (*span, busy.as_slice())))
    }

    #[test]
    fn self_times_in_series_are_serialized_and_overlapping_ones_are_not() {
        // Four requests in flight 0..40; each works 10 ms, one after another.
        let series: Vec<Request> = (0..4)
            .map(|i| request((0, 40), vec![(i * 10, i * 10 + 10)]))
            .collect();
        let c = contention(&series);
        assert_eq!(
            c,
            Contention {
                max_in_flight: 4,
                contended_ns: 40 * MS,
                busy_ns: 40 * MS,
                overlap_ns: 0
            }
        );
        assert!(c.serialized());
        // The same four working at once.
        let parallel: Vec<Request> = (0..4).map(|_| request((0, 40), vec![(0, 40)])).collect();
        let c = contention(&parallel);
        assert_eq!(c.overlap_ns, 40 * MS);
        assert!(!c.serialized());
        // Mostly waiting on children: little self time.
        let waiting: Vec<Request> = (0..4).map(|i| request((0, 40), vec![(i, i + 1)])).collect();
        assert!(!contention(&waiting).serialized());
        // Two at a time is not enough to say.
        assert!(!contention(&series[..2]).serialized());
    }
}
