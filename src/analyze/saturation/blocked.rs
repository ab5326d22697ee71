//! `blocked_worker`: one instance serves its requests one at a time, as when
//! an event loop or a single worker thread is held by synchronous work. Three
//! shapes, from span boundaries alone ([`Serialized`]): requests in flight
//! together whose own time lines up in series; SERVER spans that never overlap
//! while their callers wait before each starts (the runtime starts the span
//! only when it gets to the request, so the wait shows as the caller's time
//! outside it: queueing, not network); requests begun together that end one
//! at a time with nothing inside them to explain it.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::lock::{bursts, staircase};
use super::records::{RequestRecord, SaturationRecords};
use super::timeline::Timeline;
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::evidence::{self, BlockedShape, Evidence, OtherInstance};
use crate::analyze::thresholds::{ns, BlockedWorker};
use crate::analyze::{Crossed, Culprit, FindingKind, Observation, Severity, Thresholds};
use crate::model::{Sym, TraceId};

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
    /// Requests lined up in series: enough of them in flight together
    /// (`min_in_flight`, for at least `min_contended_ms` with two or more),
    /// one working at a time (at most `max_overlap_share` of that time with
    /// two working), nearly always one (`min_busy_share`).
    pub fn serialized(&self, config: &BlockedWorker) -> bool {
        self.max_in_flight >= config.min_in_flight
            && self.contended_ns >= ns(config.min_contended_ms)
            && self.overlap_share() <= config.max_overlap_share
            && self.busy_share() >= config.min_busy_share
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

/// How an instance's requests were served one at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Serialized {
    /// In flight together, their own time in series ([`Contention`]).
    SelfTimeInSeries(Contention),
    /// The instance's SERVER spans never overlap while their callers wait
    /// before each starts ([`queued_before_server`]): an event loop or a
    /// single worker busy elsewhere, a full accept queue.
    QueuedBeforeServer(Queue),
    /// Begun together, ended one at a time at a steady pace with nothing
    /// inside them to explain it ([`staircase`]): a lock or a blocked loop
    /// held inside the handler.
    EndsInStaircase {
        step_ns: u64,
        in_flight: usize,
        wait_ns: Vec<u64>,
    },
}

/// The wait of requests in front of an instance, from their callers' spans.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Most callers waiting at once.
    pub max_callers: u32,
    /// The shortest time from a caller's start to the request's start, plus
    /// the shortest from the request's end to the caller's: what the network
    /// and the stack take when nothing queues.
    pub transport_ns: u64,
    /// Per request that queued, its time before its start over the shortest.
    pub queued_ns: Vec<u64>,
    /// Median request duration on the instance.
    pub served_p50_ns: u64,
}

/// A request's `[start, end)` and its caller's, if another service called it.
pub type Served = (u64, u64, Option<(u64, u64)>);

/// One instance's requests, with their trace's records.
type Request<'a> = (&'a RequestRecord, &'a SaturationRecords, TraceId);

/// Whether an instance's requests (shape (a) of [`Serialized`]) queued in
/// front of it, by `config`: its SERVER spans never overlap (at most
/// `max_server_overlap_share` of their time: an answer written while the next
/// is read), at least `min_in_flight` callers waited at once, and at least
/// `min_queued` requests started `min_queue_ms` (and the median request over
/// `queue_to_served_factor`) later after their caller's start than the
/// quickest did, `min_total_wait_ms` in all.
pub fn queued_before_server(requests: &[Served], config: &BlockedWorker) -> Option<Queue> {
    let served = Timeline::of(requests.iter().map(|r| (r.0, r.1)));
    let total: u64 = requests.iter().map(|r| r.1 - r.0).sum();
    let (from, to) = (
        requests.iter().map(|r| r.0).min()?,
        requests.iter().map(|r| r.1).max()?,
    );
    if served.time_at_least(2, from, to) as f64 > config.max_server_overlap_share * total as f64 {
        return None;
    }
    let called: Vec<(u64, u64, (u64, u64))> = requests
        .iter()
        .filter_map(|&(s, e, c)| Some((s, e, c?)))
        .collect();
    let max_callers = Timeline::of(called.iter().map(|r| r.2)).max();
    if max_callers < config.min_in_flight {
        return None;
    }
    let before: Vec<u64> = called.iter().map(|r| r.0.saturating_sub(r.2 .0)).collect();
    let after = called.iter().map(|r| r.2 .1.saturating_sub(r.1)).min()?;
    let shortest = *before.iter().min()?;
    let mut durations: Vec<u64> = requests.iter().map(|r| r.1 - r.0).collect();
    durations.sort_unstable();
    let served_p50_ns = quantile(&durations, 0.5)?;
    let at_least =
        ns(config.min_queue_ms).max((served_p50_ns as f64 / config.queue_to_served_factor) as u64);
    let mut queued_ns: Vec<u64> = before
        .iter()
        .map(|b| b - shortest)
        .filter(|&q| q >= at_least)
        .collect();
    queued_ns.sort_unstable();
    (queued_ns.len() >= config.min_queued as usize
        && queued_ns.iter().sum::<u64>() >= ns(config.min_total_wait_ms))
    .then_some(Queue {
        max_callers,
        transport_ns: shortest + after,
        queued_ns,
        served_p50_ns,
    })
}

/// How `requests` (one instance's) were served one at a time, if they were:
/// the first of the three shapes of [`Serialized`] that fits. Requests whose
/// own time is at least `min_self_share` of their duration have nothing
/// inside them to explain a wait.
fn serialized(requests: &[Request], t: &Thresholds) -> Option<Serialized> {
    let config = &t.blocked_worker;
    let c = contention(
        requests
            .iter()
            .map(|(r, records, _)| ((r.start_ns, r.end_ns), records.busy(r))),
    );
    if c.serialized(config) {
        return Some(Serialized::SelfTimeInSeries(c));
    }
    let spans: Vec<Served> = requests
        .iter()
        .map(|(r, _, _)| (r.start_ns, r.end_ns, r.caller))
        .collect();
    if let Some(q) = queued_before_server(&spans, config) {
        return Some(Serialized::QueuedBeforeServer(q));
    }
    let mut own: Vec<(u64, u64)> = requests
        .iter()
        .filter(|(r, records, _)| r.self_share(records) >= config.min_self_share)
        .map(|(r, _, _)| (r.start_ns, r.end_ns))
        .collect();
    own.sort_unstable();
    let uncontended = own.iter().map(|r| r.1 - r.0).min().unwrap_or(0);
    let (mut steps, mut in_flight, mut wait_ns) = (Vec::new(), 0, Vec::new());
    for burst in bursts(&own) {
        if let Some(s) = staircase(&own[burst], uncontended, &t.lock_contention) {
            steps.push(s.step_ns);
            in_flight = in_flight.max(s.in_flight);
            wait_ns.extend(s.waits.iter().map(|w| w.1));
        }
    }
    steps.sort_unstable();
    wait_ns.sort_unstable();
    (wait_ns.iter().sum::<u64>() >= ns(config.min_total_wait_ms)).then(|| {
        Serialized::EndsInStaircase {
            step_ns: quantile(&steps, 0.5).unwrap_or(0),
            in_flight,
            wait_ns,
        }
    })
}

/// `blocked_worker`: per service instance, the SERVER spans in the window
/// served one at a time in one of the shapes of [`Serialized`]. The culprit's
/// operation is the one with the most self time on that instance (the
/// likeliest holder); its peer is the instance. Services in `locked` are left
/// out: their requests waited for a database lock ([`super::lock_contention`]),
/// which hands their work out one at a time. Thresholds: `blocked_worker`, and
/// `lock_contention`'s staircase for requests that end in one.
pub fn blocked_workers(
    traces: &[Arc<TraceCalls>],
    locked: &FxHashSet<Sym>,
    thresholds: &Thresholds,
) -> Vec<Observation> {
    let mut by_instance: FxHashMap<(Sym, Sym), Vec<Request>> = FxHashMap::default();
    for t in traces {
        for r in &t.saturation.requests {
            by_instance
                .entry((r.service, r.instance))
                .or_default()
                .push((r, &t.saturation, t.trace_id));
        }
    }
    let mut out = Vec::new();
    for (&(service, instance), requests) in &by_instance {
        if locked.contains(&service) {
            continue;
        }
        let Some(shape) = serialized(requests, thresholds) else {
            continue;
        };
        let others: Vec<OtherInstance> = by_instance
            .iter()
            .filter(|(&(s, i), _)| s == service && i != instance)
            .map(|(&(_, i), rs)| {
                let c = contention(
                    rs.iter()
                        .map(|(r, records, _)| ((r.start_ns, r.end_ns), records.busy(r))),
                );
                OtherInstance {
                    instance: i,
                    requests: rs.len(),
                    max_in_flight: c.max_in_flight,
                    overlap_share: c.overlap_share(),
                }
            })
            .collect();
        let crossed = crossed(&shape, thresholds);
        out.push(report(service, instance, requests, &shape, others, crossed));
    }
    super::sort_by_culprit(&mut out);
    out
}

/// The thresholds a shape crossed.
fn crossed(shape: &Serialized, t: &Thresholds) -> Vec<Crossed> {
    let config = &t.blocked_worker;
    let total_wait = |waits: &[u64]| {
        Crossed::new(
            "blocked_worker.min_total_wait_ms",
            config.min_total_wait_ms,
            ms(waits.iter().sum()),
        )
    };
    match shape {
        Serialized::SelfTimeInSeries(c) => vec![
            Crossed::new(
                "blocked_worker.min_in_flight",
                config.min_in_flight,
                c.max_in_flight,
            ),
            Crossed::new(
                "blocked_worker.min_busy_share",
                config.min_busy_share,
                c.busy_share(),
            ),
        ],
        Serialized::QueuedBeforeServer(q) => vec![
            Crossed::new(
                "blocked_worker.min_queued",
                config.min_queued,
                q.queued_ns.len() as f64,
            ),
            total_wait(&q.queued_ns),
        ],
        Serialized::EndsInStaircase {
            in_flight, wait_ns, ..
        } => vec![
            Crossed::new(
                "lock_contention.min_stair_calls",
                t.lock_contention.min_stair_calls,
                *in_flight as f64,
            ),
            total_wait(wait_ns),
        ],
    }
}

fn report(
    service: Sym,
    instance: Sym,
    requests: &[Request],
    shape: &Serialized,
    others: Vec<OtherInstance>,
    crossed: Vec<Crossed>,
) -> Observation {
    let mut self_by_op: FxHashMap<Sym, u64> = FxHashMap::default();
    for (r, records, _) in requests {
        *self_by_op.entry(r.operation).or_default() +=
            records.busy(r).iter().map(|b| b.1 - b.0).sum::<u64>();
    }
    let (operation, _) = self_by_op
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.as_str().cmp(a.0.as_str())))
        .expect("an instance has requests");
    let mut latest: Vec<(u64, TraceId)> =
        requests.iter().map(|(r, _, id)| (r.end_ns, *id)).collect();
    latest.sort_unstable_by(|a, b| b.cmp(a));
    latest.dedup_by_key(|l| l.1);
    let (how, shape) = match shape {
        Serialized::SelfTimeInSeries(c) => (
            format!(
                "up to {} requests in flight, but their own time lines up in series ({:.0} % of \
                 {:.0} ms busy, {:.1} % overlapping)",
                c.max_in_flight,
                c.busy_share() * 100.0,
                ms(c.contended_ns),
                c.overlap_share() * 100.0,
            ),
            BlockedShape::SelfTimeInSeries {
                max_in_flight: c.max_in_flight,
                contended_ms: ms(c.contended_ns),
                busy_share: c.busy_share(),
                overlap_share: c.overlap_share(),
            },
        ),
        Serialized::QueuedBeforeServer(q) => {
            let p95 = quantile(&q.queued_ns, 0.95).unwrap_or(0);
            (
                format!(
                    "its requests never overlap while up to {} callers wait: {} requests queued \
                     before it started them (p95 {:.0} ms, {:.0} ms in all, each then served in \
                     p50 {:.0} ms); that wait is in front of the instance, not on the network \
                     (the quickest request spent {:.1} ms in transport)",
                    q.max_callers,
                    q.queued_ns.len(),
                    ms(p95),
                    ms(q.queued_ns.iter().sum()),
                    ms(q.served_p50_ns),
                    ms(q.transport_ns),
                ),
                BlockedShape::QueuedBeforeServer {
                    max_in_flight: q.max_callers,
                    queued_requests: q.queued_ns.len(),
                    queue_p50_ms: ms(quantile(&q.queued_ns, 0.5).unwrap_or(0)),
                    queue_p95_ms: ms(p95),
                    queue_total_ms: ms(q.queued_ns.iter().sum()),
                    transport_ms: ms(q.transport_ns),
                    served_p50_ms: ms(q.served_p50_ns),
                },
            )
        }
        Serialized::EndsInStaircase {
            step_ns,
            in_flight,
            wait_ns,
        } => (
            format!(
                "up to {in_flight} requests begun together ended one at a time about every \
                 {:.0} ms with nothing inside them to explain it ({} waited, {:.0} ms in all)",
                ms(*step_ns),
                wait_ns.len(),
                ms(wait_ns.iter().sum()),
            ),
            BlockedShape::EndsInStaircase {
                max_in_flight: *in_flight,
                step_ms: ms(*step_ns),
                waited_requests: wait_ns.len(),
                wait_p95_ms: ms(quantile(wait_ns, 0.95).unwrap_or(0)),
                wait_total_ms: ms(wait_ns.iter().sum()),
            },
        ),
    };
    Observation {
        kind: FindingKind::BlockedWorker,
        severity: Severity::Warning,
        culprit: Culprit {
            service,
            operation,
            peer: Some(instance),
        },
        chain: Vec::new(),
        summary: format!(
            "{service} instance {instance} works on one request at a time: {how}; synchronous \
             work (most in {operation}) or a lock holds its worker or event loop"
        ),
        remedy: "Move blocking or CPU-heavy work off the event loop or request thread (a \
                 worker pool, async I/O), or run more workers per instance."
            .to_owned(),
        evidence: Evidence::BlockedWorker(evidence::BlockedWorker {
            shape,
            instance,
            requests: requests.len(),
            other_instances: others,
        }),
        trace_ids: latest.iter().take(10).map(|l| l.1).collect(),
        count: requests.len() as u64,
        seen_ns: latest.first().map_or(0, |l| l.0),
        crossed,
        location: None,
        spans: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

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
        assert!(c.serialized(&BlockedWorker::default()));
        // The same four working at once.
        let parallel: Vec<Request> = (0..4).map(|_| request((0, 40), vec![(0, 40)])).collect();
        let c = contention(&parallel);
        assert_eq!(c.overlap_ns, 40 * MS);
        assert!(!c.serialized(&BlockedWorker::default()));
        // Mostly waiting on children: little self time.
        let waiting: Vec<Request> = (0..4).map(|i| request((0, 40), vec![(i, i + 1)])).collect();
        assert!(!contention(&waiting).serialized(&BlockedWorker::default()));
        // Two at a time is not enough to say.
        assert!(!contention(&series[..2]).serialized(&BlockedWorker::default()));
    }
}
