//! The data directory: the write-ahead log (`wal/`), the state file (`state`)
//! and a lock file. [`Durable::open`] restores the state into the store and
//! starts the log after the existing segments; [`Durable::replay`] reads those
//! back; [`Durable::checkpoint`] writes the state and deletes the segments it
//! makes unnecessary.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::snapshot::{self, Snapshot, SnapshotError};
use super::wal::{self, Ack, Replayed, Wal, WalError, WalSync};
use super::{Ledger, Store};
use crate::stats::Stats;

/// How the data directory is used.
#[derive(Debug, Clone)]
pub struct DurableOptions {
    pub dir: PathBuf,
    pub sync: WalSync,
    pub segment_bytes: u64,
    /// Findings last seen longer ago than this (before the store's clock)
    /// are dropped.
    pub retention: Duration,
    /// On open, the restored state keeps nothing later than this after the
    /// store's clock (`future_skew`: a state file written before spans far in
    /// the future were refused, or under a clock that ran ahead).
    pub future_skew: Duration,
    /// Most bytes the directory may hold; past it the log segments of analyzed
    /// traces go first (those traces are then not shown after a restart).
    pub max_bytes: u64,
}

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    #[error("data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("data directory {0} is in use by another hopscope")]
    Locked(PathBuf),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What one checkpoint did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checkpoint {
    /// The first segment the state file needs replayed.
    pub log_start: u64,
    pub segments_deleted: u64,
    /// Segments of analyzed, still shown traces deleted to stay within the size.
    pub segments_dropped_for_size: u64,
    pub state_bytes: u64,
}

/// The open data directory.
pub struct Durable {
    options: DurableOptions,
    wal: Wal,
    /// Replay reads the segments before this one (the new log starts here).
    replay_until: u64,
    replay_from: u64,
    state_bytes: std::sync::atomic::AtomicU64,
    /// Log bytes written when the last checkpoint began.
    checkpointed: std::sync::atomic::AtomicU64,
    _lock: File,
}

impl Durable {
    /// Locks the directory, restores its state into `store` and starts a new
    /// log segment after the existing ones. A damaged state file is set aside
    /// (renamed `state.damaged`) and the whole log replayed instead: never fatal.
    pub fn open(options: DurableOptions, store: &Store) -> Result<Durable, DurableError> {
        let dir = &options.dir;
        let io = |source| DurableError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = lock(dir)?;
        let state = match snapshot::read(dir) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "state file unreadable: set aside; replaying the whole log");
                let _ = std::fs::rename(snapshot::path(dir), dir.join("state.damaged"));
                Snapshot::default()
            }
        };
        let wal_dir = wal_dir(dir);
        std::fs::create_dir_all(&wal_dir).map_err(io)?;
        let last = wal::sizes(&wal_dir)?.last().map_or(0, |s| s.0);
        let first_new = last.max(state.log_start) + 1;
        *store.ledger.lock() = Ledger::restore(state.counted, state.log_start);
        store.aggregates.import(state.aggregates);
        store.edges.import(state.edges);
        store.coverage.import(state.coverage);
        store.findings.import(state.findings);
        let latest = store
            .clock
            .now_ns()
            .saturating_add(options.future_skew.as_nanos() as u64);
        store.expire(latest);
        let ahead = store.findings.retain_seen_within(0, latest);
        Stats::add(&store.stats().findings_expired, ahead as u64);
        let wal = Wal::open(&wal_dir, first_new, options.sync, options.segment_bytes)?;
        Ok(Durable {
            replay_until: first_new,
            replay_from: state.log_start,
            state_bytes: Default::default(),
            checkpointed: Default::default(),
            options,
            wal,
            _lock: lock,
        })
    }

    /// Reads back the log segments written before this start (blocking),
    /// handing each record to `each` (segment, format, body).
    pub fn replay(&self, each: impl FnMut(u64, u8, Bytes)) -> Result<Replayed, DurableError> {
        let until = self.replay_until;
        Ok(wal::replay(
            &wal_dir(&self.options.dir),
            self.replay_from,
            until,
            each,
        )?)
    }

    /// Whether the log grew by an eighth of the directory's bound since the
    /// last checkpoint: under heavy load, checkpoints come that often, so
    /// deletable segments do not pile up between two intervals.
    pub fn checkpoint_due(&self) -> bool {
        let since =
            self.wal.written() - self.checkpointed.load(std::sync::atomic::Ordering::Relaxed);
        since > self.options.max_bytes / 8
    }

    /// Appends a request to the log (see [`Wal::append`]).
    pub async fn append(&self, format: u8, body: Bytes) -> Result<Ack, WalError> {
        self.wal.append(format, body).await
    }

    /// Writes the state file and deletes the log segments nothing needs any
    /// more (blocking). Must not run while traces move from the buffer to the
    /// store: `buffered` (the buffer's oldest segment) is read after the log's
    /// own pins, so an append acknowledged in between is seen in one or the
    /// other.
    pub fn checkpoint(
        &self,
        store: &Store,
        stats: &Stats,
        buffered: impl FnOnce() -> Option<u64>,
    ) -> Result<Checkpoint, DurableError> {
        self.checkpointed
            .store(self.wal.written(), std::sync::atomic::Ordering::Relaxed);
        let pinned = self.wal.oldest_pinned();
        let needed = buffered().map_or(pinned, |b| b.min(pinned));
        let shown = store.traces.oldest_log().unwrap_or(needed);
        let mut start = needed.min(shown);
        let mut out = Checkpoint::default();

        // Over the size bound: the oldest segments of analyzed traces go.
        let sizes = self.wal.sizes()?;
        let state_bytes = self.state_bytes.load(std::sync::atomic::Ordering::Relaxed);
        let mut total = state_bytes + sizes.iter().map(|s| s.1).sum::<u64>();
        for &(n, len) in &sizes {
            if total <= self.options.max_bytes || n >= needed {
                break;
            }
            if n >= start {
                start = n + 1;
                out.segments_dropped_for_size += 1;
            }
            total -= len;
        }
        if out.segments_dropped_for_size > 0 {
            tracing::warn!(
                segments = out.segments_dropped_for_size,
                max_mib = self.options.max_bytes >> 20,
                "data directory over its size bound: deleting log segments of analyzed traces (they will not be shown after a restart)"
            );
        }

        let cutoff = store
            .clock
            .now_ns()
            .saturating_sub(self.options.retention.as_nanos() as u64);
        let dropped = store.findings.retain_seen_within(cutoff, u64::MAX);
        Stats::add(&stats.findings_expired, dropped as u64);
        let counted = {
            let mut ledger = store.ledger.lock();
            ledger.prune(start);
            ledger.export()
        };
        let state = Snapshot {
            log_start: start,
            counted,
            findings: store.findings.export(),
            aggregates: store.aggregates.export(),
            edges: store.edges.export(),
            coverage: store.coverage.services(),
        };
        out.state_bytes = snapshot::write(&self.options.dir, &state)?;
        self.state_bytes
            .store(out.state_bytes, std::sync::atomic::Ordering::Relaxed);
        let (deleted, _) = self.wal.remove_below(start)?;
        out.segments_deleted = deleted;
        out.log_start = start;
        Stats::add(&stats.wal_segments_deleted, deleted);
        Stats::add(
            &stats.wal_segments_dropped_for_size,
            out.segments_dropped_for_size,
        );
        Ok(out)
    }

    /// Syncs and stops the log.
    pub async fn close(&self) {
        self.wal.close().await;
    }
}

fn wal_dir(dir: &Path) -> PathBuf {
    dir.join("wal")
}

/// Takes an exclusive lock on `dir/lock` for the life of the process.
fn lock(dir: &Path) -> Result<File, DurableError> {
    let path = dir.join("lock");
    let file = File::create(&path).map_err(|source| DurableError::Io {
        dir: dir.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        #[allow(unsafe_code)]
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            return Err(DurableError::Locked(dir.to_owned()));
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::Clock;
    use crate::pipeline::keep;
    use crate::store::tests::trace;
    use crate::store::{Aggregates, FindingStore, TraceStore};

    const MIN: u64 = 60_000_000_000;

    fn store(clock: Clock) -> Store {
        Store::new(
            TraceStore::new(100, 1 << 20),
            Aggregates::new(Duration::from_secs(3_600)),
            FindingStore::new(100),
            Arc::new(Stats::default()),
            clock,
        )
    }

    #[test]
    fn a_state_file_written_under_a_clock_that_ran_ahead_keeps_nothing_past_the_bound() {
        let dir =
            std::env::temp_dir().join(format!("hopscope-durable-clock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = DurableOptions {
            dir: dir.clone(),
            sync: WalSync::Never,
            segment_bytes: 1 << 20,
            retention: Duration::from_secs(7 * 24 * 3_600),
            future_skew: Duration::from_secs(3_600),
            max_bytes: 1 << 30,
        };
        let now = 30_000_000 * MIN;
        // Written by a daemon whose clock read the year 2500, with a trace
        // of then in its aggregates.
        let year_2500 = 16_725_225_600_000_000_000;
        let ahead = store(Clock::manual(year_2500));
        let durable = Durable::open(options.clone(), &ahead).unwrap();
        keep(&ahead, trace(1, year_2500 - MIN), (false, None), None);
        assert_eq!(ahead.aggregates.query(None, None, None).len(), 1);
        durable.checkpoint(&ahead, ahead.stats(), || None).unwrap();
        drop(durable);

        // Restored by a daemon whose clock reads now: nothing of 2500 is kept.
        let restored = store(Clock::manual(now));
        let _durable = Durable::open(options, &restored).unwrap();
        let entries = restored.aggregates.query(None, None, None);
        assert!(entries.is_empty(), "{entries:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
