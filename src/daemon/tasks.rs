//! The periodic tasks: the sweeper (completion, memory ceiling, checkpoints)
//! and the window detectors.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Core;
use crate::analyze;
use crate::analyze::budget::Timeouts;
use crate::assemble::Buffer;
use crate::config::{Config, Role};
use crate::forward::Forwarder;
use crate::memory::{self, Buffered, MemoryGuard};
use crate::peers::Peers;
use crate::pipeline;
use crate::stats::{LogEvery, Stats};
use crate::store::durable::Durable;
use crate::store::Store;

/// The sweeper and the detector, running until [`Tasks::stop`].
pub(super) struct Tasks {
    sweeper: JoinHandle<()>,
    detector: JoinHandle<()>,
    stop: CancellationToken,
}

impl Tasks {
    /// Starts the sweeper over `core`'s buffer (woken early by `full`) and
    /// the window detectors, both handing their results to its store.
    pub(super) fn start(
        config: &Config,
        core: &Core,
        full: Arc<Notify>,
        peers: Arc<Peers>,
    ) -> Tasks {
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(sweep(
            core.buffer.clone(),
            (
                core.store.clone(),
                core.analysis.clone(),
                core.forward.clone(),
            ),
            core.stats.clone(),
            full,
            MemoryGuard::new(config.memory_limit_bytes, config.max_buffered_spans),
            core.durable
                .clone()
                .map(|d| (d, config.checkpoint_interval)),
            stop.clone(),
        ));
        // An assembling replica leaves the cross-trace detectors to the
        // detect tier, which sees every call of the services it owns.
        let detector = match config.role {
            Role::All => tokio::spawn(detect(
                (core.store.clone(), core.analysis.clone()),
                None,
                config.detect_interval,
                stop.clone(),
            )),
            Role::Detect => tokio::spawn(detect(
                (core.store.clone(), core.analysis.clone()),
                Some(peers),
                config.detect_interval,
                stop.clone(),
            )),
            Role::Assemble => tokio::spawn(std::future::ready(())),
        };
        Tasks {
            sweeper,
            detector,
            stop,
        }
    }

    /// Asks both to stop after their current round.
    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops both and waits until they have.
    pub(super) async fn join(self) {
        self.stop();
        let _ = tokio::join!(self.sweeper, self.detector);
    }
}

/// Hands complete traces to analysis: on every tick (idle and max-age policy) and
/// whenever the buffer is over its span limit.
///
/// With a data directory, every `checkpoint_interval` (or sooner, when the log
/// grew by an eighth of the directory's bound) it also writes the state
/// file and deletes the log segments no longer needed: here, between two
/// analyses, so no trace is between the buffer and the store meanwhile.
async fn sweep(
    buffer: Arc<Buffer>,
    (store, analysis, forward): (Arc<Store>, Arc<analyze::Options>, Option<Arc<Forwarder>>),
    stats: Arc<Stats>,
    full: Arc<Notify>,
    mut memory: MemoryGuard,
    durable: Option<(Arc<Durable>, Duration)>,
    stop: CancellationToken,
) {
    let mut last_checkpoint = Instant::now();
    // A load above what the buffer holds for `trace_idle` keeps it full:
    // one line per period, with the running count, not one per sweep.
    let full_log = LogEvery::default();
    let memory_log = LogEvery::default();
    let period =
        (buffer.limits().idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = full.notified() => {}
        }
        // The buffer ages traces by the runtime's clock (paused in tests).
        let now = Instant::now().into_std();
        if let Some(resident) = memory::resident_bytes() {
            let buffered = Buffered {
                spans: buffer.span_count(),
                bytes: buffer.bytes(),
            };
            let ceiling = buffer.span_ceiling();
            let next = memory.next_ceiling(resident, buffered, ceiling, now);
            if next < ceiling && memory_log.ready() {
                tracing::warn!(
                    resident_mib = resident >> 20,
                    span_ceiling = next,
                    "memory short: analyzing the oldest traces early (logged once in a while)"
                );
            }
            buffer.set_span_ceiling(next);
        }
        let mut done = buffer.take_oldest(now);
        if !done.is_empty() && full_log.ready() {
            tracing::warn!(
                traces_evicted_early = stats.traces_evicted_early.load(Ordering::Relaxed),
                max_buffered_spans = buffer.limits().max_spans,
                "buffer full: analyzing the oldest traces early (logged once in a while)"
            );
        }
        done.extend(buffer.take_complete(now));
        if !done.is_empty() {
            let (store, analysis, forward) = (store.clone(), analysis.clone(), forward.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || {
                pipeline::finish(&store, &analysis, forward.as_deref(), done)
            })
            .await
            {
                tracing::error!(error = %e, "analysis task failed");
            }
        }
        if let Some((durable, every)) = &durable {
            if last_checkpoint.elapsed() >= *every || durable.checkpoint_due() {
                last_checkpoint = Instant::now();
                let (d, store, stats, buffer) = (
                    durable.clone(),
                    store.clone(),
                    stats.clone(),
                    buffer.clone(),
                );
                let _ = tokio::task::spawn_blocking(move || {
                    checkpoint(&d, &store, &stats, Some(&buffer))
                })
                .await;
            }
        }
    }
}

/// Writes the state file and deletes unneeded log segments, logging failures
/// (the log is kept, so nothing is lost; the next checkpoint tries again).
pub(super) fn checkpoint(durable: &Durable, store: &Store, stats: &Stats, buffer: Option<&Buffer>) {
    match durable.checkpoint(store, stats, || buffer.and_then(Buffer::oldest_log)) {
        Ok(c) => {
            Stats::add(&stats.checkpoints, 1);
            tracing::debug!(
                log_start = c.log_start,
                segments_deleted = c.segments_deleted,
                state_bytes = c.state_bytes,
                "checkpoint written"
            );
        }
        Err(e) => {
            Stats::add(&stats.checkpoint_errors, 1);
            tracing::error!(error = %e, "checkpoint failed; the log is kept");
        }
    }
}

/// Runs the cross-trace detectors over the call window every `every`, when it
/// changed since the last run, and merges what they report into the findings,
/// replacing their counts ([`crate::store::FindingStore::set`]).
///
/// A detect replica (`peers`: `--role detect`) first asks its peers for the
/// timeouts they inferred ([`outside_timeouts`]), and runs again when those
/// changed: a deadline above its calls may be one another replica owns.
async fn detect(
    (store, analysis): (Arc<Store>, Arc<analyze::Options>),
    peers: Option<Arc<Peers>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // The window ages by the clock even when no trace comes.
        store.expire(u64::MAX);
        let outside = match &peers {
            Some(peers) => outside_timeouts(peers).await,
            None => Timeouts::default(),
        };
        let now = (store.window_generation(), outside);
        if last.as_ref() == Some(&now) {
            continue;
        }
        let outside = now.1.clone();
        last = Some(now);
        let (window, analysis) = (store.clone(), analysis.clone());
        let run = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            pipeline::detect_window(&window, &analysis.thresholds, outside);
            window.stats().detection.observe(started.elapsed());
        });
        if let Err(e) = run.await {
            if e.is_panic() {
                Stats::add(&store.stats().detection_panics, 1);
            }
            tracing::error!(error = %e, "window detectors failed; the next run starts afresh");
        }
    }
}

/// The timeouts a detect replica's peers inferred of the edges and entry
/// points they own, in a stable order; a peer that does not answer adds none
/// (its deadlines are missing from this pass's budgets, as its calls are from
/// a merged answer).
async fn outside_timeouts(peers: &Peers) -> Timeouts {
    let mut all = Timeouts::default();
    for fetched in peers.fetch_all::<Timeouts>("/api/v1/peer/timeouts").await {
        if let Ok(t) = fetched.result {
            all.extend(t);
        }
    }
    all.edges
        .sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()).then(a.1.cmp(&b.1)));
    all.entries.sort_by(|a, b| {
        (a.0.service.as_str(), a.0.operation.as_str(), a.1).cmp(&(
            b.0.service.as_str(),
            b.0.operation.as_str(),
            b.1,
        ))
    });
    all
}
