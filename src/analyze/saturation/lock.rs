//! `lock_contention`: calls of one statement wait inside the database for a
//! lock that one transaction at a time holds (a hot row under `SELECT ... FOR
//! UPDATE`, a table lock, HotROD's mysql mutex). From the outside it looks like
//! a slow query, a blocked worker (the lock holders' work lines up in series)
//! or a pool; the statement itself is instant and the fix is the transaction.
//!
//! Two kinds of evidence, either enough:
//! * **Lock events**: the span's events say it waited ([`super::lock_wait`]:
//!   HotROD's "Waiting for lock behind N transactions" to "Acquired lock").
//! * **A staircase** ([`staircase`]) of a statement that takes locks
//!   ([`takes_locks`]): concurrent calls of one shape on one target end one at
//!   a time at spaced intervals, each having waited for the one before, while
//!   the fastest of them is fast: the lock is handed over from one
//!   transaction to the next.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::queries::{culprit_statement, severity_by_share, statement_culprit};
use super::records::{DbTarget, QueryRecord};
use crate::analyze::budget::{quantile, TraceCalls};
use crate::analyze::evidence::{self, Evidence};
use crate::analyze::thresholds::{ns, LockContention};
use crate::analyze::{Crossed, FindingKind, Observation};
use crate::model::{Sym, TraceId};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// One call of a shape, with its trace.
struct Call<'a> {
    q: &'a QueryRecord,
    trace: &'a TraceCalls,
}

/// What a group of concurrent calls shows: each call's wait (index into the
/// group, ns), and the median interval between consecutive ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Staircase {
    pub waits: Vec<(usize, u64)>,
    pub step_ns: u64,
    pub in_flight: usize,
}

/// Whether `calls` (`[start, end)`, one burst of calls overlapping one after
/// another) end in a staircase, by `config`: at least `min_stair_calls`, and
/// that many in flight together at some point (three workers with calls of
/// random length end at spaced times too); at least `min_spaced_share` of the
/// consecutive ends at least `min_step_ms` apart (a lock handed over, not
/// calls that happened to end together), with each call already started when
/// the one before it ended, and as many within `even_factor` of the median
/// step (the lock changes hands at a steady pace); and the fastest call fast:
/// the fastest of the burst, or `uncontended` (the fastest call of its kind
/// seen at all: under sustained load every call of a burst waits), at most
/// `fast_ms` or twice the slowest over the calls' count (`n` calls handed one
/// lock last 1, 2, ... `n` holds). Also used for requests held inside their
/// handler ([`super::blocked_workers`]).
pub fn staircase(
    calls: &[(u64, u64)],
    uncontended: u64,
    config: &LockContention,
) -> Option<Staircase> {
    let (min_calls, min_step_ns) = (config.min_stair_calls as usize, ns(config.min_step_ms));
    if calls.len() < min_calls {
        return None;
    }
    let mut by_end: Vec<usize> = (0..calls.len()).collect();
    by_end.sort_unstable_by_key(|&i| (calls[i].1, calls[i].0));
    let fastest = calls.iter().map(|c| c.1 - c.0).min()?.min(uncontended);
    let slowest = calls.iter().map(|c| c.1 - c.0).max()?;
    if fastest > ns(config.fast_ms).max(2 * slowest / calls.len() as u64) {
        return None;
    }
    let mut steps: Vec<u64> = Vec::with_capacity(calls.len());
    let mut spaced = 0;
    for pair in by_end.windows(2) {
        let (before, after) = (calls[pair[0]], calls[pair[1]]);
        let step = after.1 - before.1;
        steps.push(step);
        if step >= min_step_ns && after.0 < before.1 {
            spaced += 1;
        }
    }
    let in_flight = super::Timeline::of(calls.iter().copied()).max() as usize;
    if in_flight < min_calls {
        return None;
    }
    steps.sort_unstable();
    let step_ns = quantile(&steps, 0.5)?;
    let even = steps
        .iter()
        .filter(|&&s| {
            let (s, step) = (s as f64, step_ns as f64);
            s * config.even_factor >= step && s <= step * config.even_factor
        })
        .count();
    let needed = config.min_spaced_share * steps.len() as f64;
    if (spaced as f64) < needed || (even as f64) < needed || step_ns < min_step_ns {
        return None;
    }
    let waits = (0..calls.len())
        .map(|i| (i, (calls[i].1 - calls[i].0) - fastest))
        .filter(|w| w.1 > 0)
        .collect();
    Some(Staircase {
        waits,
        step_ns,
        in_flight,
    })
}

/// Bursts of `calls` (sorted by start): runs of calls each starting before the
/// latest end of the calls before it in the run.
pub fn bursts(calls: &[(u64, u64)]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut from, mut reach) = (0, 0);
    for (i, &(s, e)) in calls.iter().enumerate() {
        if i > from && s >= reach {
            out.push(from..i);
            from = i;
        }
        reach = if i == from { e } else { reach.max(e) };
    }
    if from < calls.len() {
        out.push(from..calls.len());
    }
    out
}

/// Whether a statement takes locks that other transactions wait for: `SELECT
/// ... FOR UPDATE` (or `FOR SHARE`, `FOR NO KEY UPDATE`, `FOR KEY SHARE`),
/// `UPDATE`, `DELETE`, `INSERT`, `MERGE`, `REPLACE`, `LOCK`, and the advisory
/// locks (`pg_advisory_lock`, MySQL's `GET_LOCK`, SQL Server's
/// `sp_getapplock`). A plain `SELECT` reads a snapshot and waits for no row
/// lock: when its calls end in a staircase, something else serializes them
/// (an event loop that resumes one caller at a time, see `blocked_worker`).
pub fn takes_locks(statement: &str) -> bool {
    let upper = statement.trim_start().to_ascii_uppercase();
    ["UPDATE", "DELETE", "INSERT", "MERGE", "REPLACE", "LOCK"]
        .iter()
        .any(|k| upper.starts_with(k))
        || [
            " FOR UPDATE",
            " FOR SHARE",
            " FOR NO KEY UPDATE",
            " FOR KEY SHARE",
            "PG_ADVISORY_LOCK",
            "PG_ADVISORY_XACT_LOCK",
            "GET_LOCK(",
            "SP_GETAPPLOCK",
        ]
        .iter()
        .any(|k| upper.contains(k))
}

/// The table a statement names first after `FROM`, `UPDATE`, `INTO` or `JOIN`.
pub fn table_of(statement: &str) -> Option<&str> {
    let mut words = statement.split_whitespace();
    while let Some(w) = words.next() {
        if ["from", "update", "into", "join"]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k))
        {
            let table = words
                .next()?
                .trim_matches(|c: char| matches!(c, '"' | '`' | '(' | ')' | ',' | ';'));
            if !table.is_empty() && table != "?" && !table.starts_with('$') {
                return Some(table);
            }
        }
    }
    None
}

/// What was found on one shape.
struct Contended<'a> {
    statement: &'a Arc<str>,
    target: DbTarget,
    /// (call, its wait) for every call that waited.
    waits: Vec<(&'a Call<'a>, u64)>,
    calls: usize,
    logged: usize,
    step_ns: Option<u64>,
    in_flight: usize,
    /// Waited in staircases in all.
    stair_wait_ns: u64,
    fastest_ns: u64,
    slowest_ns: u64,
}

/// What `lock_contention` found, and what it explains for the look-alikes.
#[derive(Debug, Default)]
pub struct Locks {
    pub observations: Vec<Observation>,
    /// Shapes whose slowness is lock waiting: not slow queries.
    pub shapes: FxHashSet<(Arc<str>, DbTarget)>,
    /// Services whose requests waited for those locks: their work lines up in
    /// series because the lock hands it out one at a time, not because a
    /// worker is blocked.
    pub services: FxHashSet<Sym>,
}

/// `lock_contention` over the window's database calls ([`Locks`]): calls
/// whose logged lock waits are at least `min_logged_wait_ms`, or staircases
/// ([`staircase`]) of a statement that takes locks that waited at least
/// `min_stair_wait_ms` in all.
pub fn lock_contention(traces: &[Arc<TraceCalls>], config: &LockContention) -> Locks {
    let min_logged_ns = ns(config.min_logged_wait_ms);
    let mut groups: FxHashMap<(&Arc<str>, DbTarget), Vec<Call>> = FxHashMap::default();
    for t in traces {
        for q in &t.saturation.queries {
            groups
                .entry((&q.statement, q.target))
                .or_default()
                .push(Call { q, trace: t });
        }
    }
    let mut found: Vec<Contended> = Vec::new();
    for ((statement, target), calls) in &mut groups {
        calls.sort_unstable_by_key(|c| (c.q.start_ns, c.q.end_ns()));
        let mut waits: FxHashMap<usize, u64> = FxHashMap::default();
        let mut logged = 0;
        for (i, c) in calls.iter().enumerate() {
            if c.q.lock_wait_ns >= min_logged_ns {
                waits.insert(i, c.q.lock_wait_ns);
                logged += 1;
            }
        }
        // Only a statement that takes locks is judged by its staircase.
        let locking = takes_locks(statement);
        if logged == 0 && !locking {
            continue;
        }
        let intervals: Vec<(u64, u64)> =
            calls.iter().map(|c| (c.q.start_ns, c.q.end_ns())).collect();
        let (mut steps, mut in_flight, mut stair_wait) = (Vec::new(), 0, 0);
        let uncontended = intervals.iter().map(|c| c.1 - c.0).min().unwrap_or(0);
        let stair_bursts = if locking {
            bursts(&intervals)
        } else {
            Vec::new()
        };
        for burst in stair_bursts {
            let Some(s) = staircase(&intervals[burst.clone()], uncontended, config) else {
                continue;
            };
            steps.push(s.step_ns);
            in_flight = in_flight.max(s.in_flight);
            for (i, w) in s.waits {
                stair_wait += w;
                let w0 = waits.entry(burst.start + i).or_default();
                *w0 = (*w0).max(w);
            }
        }
        if logged == 0 && stair_wait < ns(config.min_stair_wait_ms) {
            continue;
        }
        let durations = intervals.iter().map(|c| c.1 - c.0);
        let mut waits: Vec<(&Call, u64)> = waits.into_iter().map(|(i, w)| (&calls[i], w)).collect();
        waits.sort_unstable_by_key(|w| std::cmp::Reverse(w.0.q.end_ns()));
        steps.sort_unstable();
        found.push(Contended {
            statement,
            target: *target,
            waits,
            calls: calls.len(),
            logged,
            step_ns: quantile(&steps, 0.5),
            in_flight,
            stair_wait_ns: stair_wait,
            fastest_ns: durations.clone().min().unwrap_or(0),
            slowest_ns: durations.max().unwrap_or(0),
        });
    }
    let mut observations: Vec<Observation> = found.iter().map(|c| report(c, config)).collect();
    observations.sort_by(|a, b| {
        (a.culprit.service.as_str(), a.culprit.operation.as_str())
            .cmp(&(b.culprit.service.as_str(), b.culprit.operation.as_str()))
    });
    Locks {
        observations,
        shapes: found
            .iter()
            .map(|c| (c.statement.clone(), c.target))
            .collect(),
        services: found
            .iter()
            .flat_map(|c| c.waits.iter().map(|w| w.0.q.service))
            .collect(),
    }
}

/// Whether the finding `other` is a look-alike that the `lock_contention`
/// observation `lock` explains: a `slow_query` of the same statement on the
/// same target, or a `blocked_worker` of a service whose calls waited for the
/// lock (its `waiting_services`).
pub fn explains(lock: &Observation, other: &Observation) -> bool {
    if lock.kind != FindingKind::LockContention {
        return false;
    }
    match other.kind {
        FindingKind::SlowQuery => {
            other.culprit.operation == lock.culprit.operation
                && other.culprit.peer == lock.culprit.peer
        }
        FindingKind::BlockedWorker => match &lock.evidence {
            Evidence::LockContention(e) => e
                .waiting_services
                .iter()
                .any(|s| s == other.culprit.service.as_str()),
            _ => false,
        },
        _ => false,
    }
}

fn report(c: &Contended, config: &LockContention) -> Observation {
    let mut services: FxHashMap<Sym, usize> = FxHashMap::default();
    for (call, _) in &c.waits {
        *services.entry(call.q.service).or_default() += 1;
    }
    let mut waiting: Vec<&str> = services.keys().map(|s| s.as_str()).collect();
    waiting.sort_unstable();
    let service = services
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.as_str().cmp(a.0.as_str())))
        .map_or(Sym::new("unknown_service"), |s| s.0);
    let operation = culprit_statement(c.statement);
    let target = c.target.label();
    let table = table_of(c.statement);
    let mut waits: Vec<u64> = c.waits.iter().map(|w| w.1).collect();
    waits.sort_unstable();
    let wait_p50 = quantile(&waits, 0.5).unwrap_or(0);
    let wait_p95 = quantile(&waits, 0.95).unwrap_or(0);
    // The waits' time on the critical path, over the requests that waited.
    let mut traces: FxHashMap<TraceId, (u64, u64, u64)> = FxHashMap::default();
    for (call, wait) in &c.waits {
        let t = traces.entry(call.trace.trace_id).or_insert((
            call.trace.root.duration_ns,
            0,
            call.trace.end_ns(),
        ));
        t.1 += (*wait).min(call.q.critical_ns);
    }
    let root_ns: u64 = traces.values().map(|t| t.0).sum();
    let critical_ns: u64 = traces.values().map(|t| t.1).sum();
    let share = critical_ns as f64 / root_ns.max(1) as f64;
    let mut latest: Vec<(u64, TraceId)> = traces.iter().map(|(id, t)| (t.2, *id)).collect();
    latest.sort_unstable_by(|a, b| b.cmp(a));
    let on = table.map_or_else(|| target.clone(), |t| format!("table {t} on {target}"));
    let how = match c.step_ns {
        Some(step) => format!(
            "up to {} calls in flight finished one at a time about every {:.0} ms (fastest {:.0} ms, \
             slowest {:.0} ms)",
            c.in_flight,
            ms(step),
            ms(c.fastest_ns),
            ms(c.slowest_ns)
        ),
        None => format!(
            "its spans logged waiting for the lock {} time{}",
            c.logged,
            if c.logged == 1 { "" } else { "s" }
        ),
    };
    let fast = if c.step_ns.is_some() {
        format!(
            "the statement itself takes {:.0} ms when nobody holds the lock",
            ms(c.fastest_ns)
        )
    } else {
        "the wait is for the lock, not for the statement".to_owned()
    };
    Observation {
        kind: FindingKind::LockContention,
        severity: severity_by_share(share),
        culprit: statement_culprit(service, &operation, &target),
        chain: Vec::new(),
        summary: format!(
            "{service}'s `{operation}` waits for a lock held by one transaction at a time ({on}): \
             {how}; {} of {} calls waited (p95 {:.0} ms), {:.0} % of their requests' critical path; \
             {fast}",
            c.waits.len(),
            c.calls,
            ms(wait_p95),
            share * 100.0
        ),
        remedy: "Hold the lock for less time: do the work before taking it and commit right \
                 after, lock rows in one order, use SKIP LOCKED or optimistic concurrency (a \
                 version column), or split the hot row (a counter per shard)."
            .to_owned(),
        evidence: Evidence::LockContention(evidence::LockContention {
            statement: c.statement.to_string(),
            table: table.map(str::to_owned),
            target: c.target,
            calls: c.calls,
            waited_calls: c.waits.len(),
            logged_waits: c.logged,
            wait_from: if c.logged > 0 { "lock_events" } else { "staircase" }.to_owned(),
            step_ms: c.step_ns.map(ms),
            max_in_flight: c.step_ns.map(|_| c.in_flight),
            fastest_ms: ms(c.fastest_ns),
            slowest_ms: ms(c.slowest_ns),
            wait_p50_ms: ms(wait_p50),
            wait_p95_ms: ms(wait_p95),
            wait_critical_ms: ms(critical_ns),
            wait_share: share,
            waiting_services: waiting.iter().map(|s| s.to_string()).collect(),
        }),
        trace_ids: latest.iter().take(10).map(|l| l.1).collect(),
        count: c.waits.len() as u64,
        seen_ns: latest.first().map_or(0, |l| l.0),
        crossed: if c.logged > 0 {
            vec![Crossed::new(
                "lock_contention.min_logged_wait_ms",
                config.min_logged_wait_ms,
                ms(wait_p95),
            )]
        } else {
            vec![
                Crossed::new(
                    "lock_contention.min_stair_calls",
                    config.min_stair_calls,
                    c.in_flight as f64,
                ),
                Crossed::new(
                    "lock_contention.min_stair_wait_ms",
                    config.min_stair_wait_ms,
                    ms(c.stair_wait_ns),
                ),
            ]
        },
        location: None,
        spans: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ms_pairs(calls: &[(u64, u64)]) -> Vec<(u64, u64)> {
        calls.iter().map(|&(s, e)| (s * MS, e * MS)).collect()
    }

    #[test]
    fn a_lock_handed_over_is_a_staircase_and_its_look_alikes_are_not() {
        // Twelve calls begun within 11 ms; the lock passes on every 63 ms.
        let stairs: Vec<(u64, u64)> = (0..12).map(|i| (i, 2 + i * 63)).collect();
        let s = staircase(&ms_pairs(&stairs), u64::MAX, &LockContention::default())
            .expect("a staircase");
        assert_eq!(s.step_ns, 63 * MS);
        assert_eq!(s.waits.len(), 11, "all but the first waited");
        assert_eq!(s.in_flight, 11, "the first was done before the last began");
        // A slow statement: concurrent calls all slow, ending together.
        let slow: Vec<(u64, u64)> = (0..6).map(|i| (i, 300 + i)).collect();
        assert!(staircase(&ms_pairs(&slow), u64::MAX, &LockContention::default()).is_none());
        // Slow calls one after another (a pool of 2 running `pg_sleep`): never
        // fast, each ends 100 ms after its start.
        let pool: Vec<(u64, u64)> = (0..8).map(|i| (i * 50, i * 50 + 100)).collect();
        assert!(staircase(&ms_pairs(&pool), u64::MAX, &LockContention::default()).is_none());
        // Fast calls that overlap a little: their ends are not spaced.
        let fast: Vec<(u64, u64)> = (0..8).map(|i| (i, i + 1)).collect();
        assert!(staircase(&ms_pairs(&fast), u64::MAX, &LockContention::default()).is_none());
        // Sustained load: every call of the burst waited (the one that found
        // the lock free ended before it began), and the statement's own time
        // is known from that one.
        // Each arrives with ten ahead of it and waits 630 ms.
        let sustained: Vec<(u64, u64)> = (1..40).map(|i| (i * 63, i * 63 + 632)).collect();
        assert!(staircase(&ms_pairs(&sustained), u64::MAX, &LockContention::default()).is_none());
        let s = staircase(&ms_pairs(&sustained), 2 * MS, &LockContention::default())
            .expect("a staircase");
        assert_eq!(s.waits.len(), 39);
        assert_eq!(s.step_ns, 63 * MS);
        // Three are not enough to say.
        assert!(staircase(
            &ms_pairs(&stairs[..3]),
            u64::MAX,
            &LockContention::default()
        )
        .is_none());
    }

    #[test]
    fn bursts_split_where_nothing_is_in_flight() {
        let calls = [(0, 10), (5, 20), (19, 30), (30, 40), (50, 60)];
        assert_eq!(bursts(&calls), vec![0..3, 3..4, 4..5]);
        assert!(bursts(&[]).is_empty());
    }

    #[test]
    fn statements_that_take_locks() {
        for locking in [
            "SELECT qty FROM stock WHERE id = $1 FOR UPDATE",
            "select * from t where id = ? for no key update",
            "UPDATE stock SET qty = qty - ?",
            "  delete from sessions where id = ?",
            "INSERT INTO orders VALUES (?)",
            "SELECT pg_advisory_xact_lock(?)",
            "SELECT GET_LOCK(?, ?)",
        ] {
            assert!(takes_locks(locking), "{locking}");
        }
        for reading in [
            "SELECT * FROM items WHERE id = $1",
            "select updated_at from t",
        ] {
            assert!(!takes_locks(reading), "{reading}");
        }
    }

    #[test]
    fn the_table_is_the_first_after_from_update_into_or_join() {
        assert_eq!(
            table_of("SELECT stock.id FROM stock WHERE stock.id = %(id_1)s FOR UPDATE"),
            Some("stock")
        );
        assert_eq!(
            table_of("UPDATE \"stock\" SET qty = qty - ?"),
            Some("stock")
        );
        assert_eq!(
            table_of("SELECT * FROM customer WHERE customer_id=?"),
            Some("customer")
        );
        assert_eq!(table_of("SELECT pg_sleep(?)"), None);
    }
}
