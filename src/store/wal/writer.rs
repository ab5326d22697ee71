//! The writer thread takes appends from a bounded channel and writes each batch
//! with one `writev` (headers and bodies in place); a second thread, the
//! syncer, makes them durable. Under `always` the syncer syncs each written
//! batch and then answers its appends, while the writer already writes the
//! next one (a two-stage pipeline: a sync covers every batch written before
//! it). Under an interval the writer answers at once and hands the syncer a
//! sync at most every interval and when idle. The writer rolls to a new
//! segment past the segment size, and after a failed write or sync, so a torn
//! record never has acknowledged records behind it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IoSlice, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{record, segment, WalSync};

/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// Written batches waiting for the syncer; past it, the writer waits.
const SYNC_QUEUE: usize = 2;

/// State shared by the writer, the syncer and the handles.
#[derive(Default)]
pub(super) struct Shared {
    /// The segment being written.
    pub open: AtomicU64,
    /// Appends written whose spans are not yet in the buffer, by segment.
    pub pins: Mutex<BTreeMap<u64, usize>>,
    /// Bytes written since the start.
    pub written: AtomicU64,
    /// A sync failed: the writer starts a new segment.
    broken: AtomicBool,
    /// Syncs to fail before syncing for real (tests inject a failing disk).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub fn unpin(&self, segment: u64) {
        let mut pins = self.pins.lock();
        if let Some(n) = pins.get_mut(&segment) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&segment);
            }
        }
    }
}

/// An append's answer: the segment it is in, or why it failed.
pub(super) type Done = oneshot::Sender<Result<u64, String>>;

/// An append waiting in a batch: format, body, answer.
type Pending = (u8, Bytes, Done);

pub(super) enum Msg {
    Append {
        format: u8,
        body: Bytes,
        done: Done,
    },
    /// Sync what is written and stop.
    Close(oneshot::Sender<()>),
}

/// A sync for the syncer, and the appends it answers (none under an interval).
struct SyncJob {
    file: Arc<File>,
    segment: u64,
    batch: Vec<Pending>,
}

/// Answers a batch. Its appends were pinned on `segment` when written; an
/// answer that is an error, or that nobody waits for any more, unpins.
fn answer(shared: &Shared, batch: Vec<Pending>, result: Result<u64, String>) {
    for (_, _, done) in batch {
        let delivered = done.send(result.clone()).is_ok();
        if let (false, Ok(segment)) = (delivered, &result) {
            shared.unpin(*segment);
        }
    }
}

/// Writes every byte of `slices` to `file`, as few `writev`s as it takes.
fn write_all(mut file: &File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes what is written to `file` durable.
fn sync(shared: &Shared, file: &File) -> std::io::Result<()> {
    #[cfg(test)]
    if shared
        .fail_syncs
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(std::io::Error::other("injected sync failure"));
    }
    let _ = shared;
    file.sync_data()
}

/// Syncs each job and answers its appends. Once a sync of a segment failed,
/// nothing more on that segment is acknowledged, even if a later sync of it
/// succeeds: after a failed `fsync` the kernel may have dropped the dirty
/// pages and report the next one clean, so records behind the lost ones are
/// no more durable than they were (the writer starts a new segment).
fn syncer(shared: Arc<Shared>, jobs: std::sync::mpsc::Receiver<SyncJob>) {
    let mut failed: Option<u64> = None;
    for job in jobs {
        let synced = if failed == Some(job.segment) {
            Err(format!(
                "segment {} lost an earlier sync; its later appends are refused",
                job.segment
            ))
        } else {
            sync(&shared, &job.file).map_err(|e| {
                // The refused appends' answers carry the cause; the daemon
                // logs it once in a while, not once per batch.
                tracing::debug!(error = %e, segment = job.segment, "cannot sync the write-ahead log; starting a new segment");
                shared.broken.store(true, Ordering::Release);
                failed = Some(job.segment);
                format!("cannot sync segment {}: {e}", job.segment)
            })
        };
        let result = match synced {
            Ok(()) => Ok(job.segment),
            Err(e) => {
                for _ in &job.batch {
                    shared.unpin(job.segment);
                }
                Err(e)
            }
        };
        answer(&shared, job.batch, result);
    }
}

pub(super) struct Writer {
    pub dir: PathBuf,
    pub sync: WalSync,
    pub segment_bytes: u64,
    pub shared: Arc<Shared>,
    pub file: Option<Arc<File>>,
    pub written: u64,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let (jobs, queue) = std::sync::mpsc::sync_channel(SYNC_QUEUE);
        let shared = self.shared.clone();
        let syncer = std::thread::Builder::new()
            .name("hopscope-wal-sync".into())
            .spawn(move || syncer(shared, queue));
        let syncer = match syncer {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the write-ahead log's sync thread");
                return;
            }
        };
        let mut dirty = false;
        let mut last_sync = Instant::now();
        let closing = loop {
            let first = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    // Idle: what the interval policy left unsynced is synced now.
                    if dirty {
                        self.request_sync(&jobs, true);
                        dirty = false;
                        last_sync = Instant::now();
                    }
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => break None,
                    }
                }
            };
            let mut batch = Vec::new();
            let mut closing = None;
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append { format, body, done } => {
                        bytes += body.len() + record::HEADER;
                        batch.push((format, body, done));
                    }
                    Msg::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if bytes < MAX_BATCH_BYTES {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                match self.write_batch(&batch, &jobs, dirty) {
                    Err(e) => answer(&self.shared, batch, Err(e)),
                    Ok((segment, file)) => {
                        *self.shared.pins.lock().entry(segment).or_default() += batch.len();
                        match self.sync {
                            WalSync::Always => {
                                let _ = jobs.send(SyncJob {
                                    file,
                                    segment,
                                    batch,
                                });
                            }
                            WalSync::Interval(every) => {
                                answer(&self.shared, batch, Ok(segment));
                                dirty = true;
                                if last_sync.elapsed() >= every && self.request_sync(&jobs, false) {
                                    dirty = false;
                                    last_sync = Instant::now();
                                }
                            }
                            WalSync::Never => answer(&self.shared, batch, Ok(segment)),
                        }
                    }
                }
            }
            if closing.is_some() {
                break closing;
            }
        };
        if self.sync != WalSync::Always {
            self.request_sync(&jobs, true);
        }
        drop(jobs);
        let _ = syncer.join();
        self.file = None;
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Hands the open segment to the syncer (`wait`: even if it is busy).
    /// Returns whether it was handed over.
    fn request_sync(&self, jobs: &std::sync::mpsc::SyncSender<SyncJob>, wait: bool) -> bool {
        let Some(file) = self.file.clone() else {
            return false;
        };
        let job = SyncJob {
            file,
            segment: self.shared.open.load(Ordering::Relaxed),
            batch: Vec::new(),
        };
        if wait {
            jobs.send(job).is_ok()
        } else {
            jobs.try_send(job).is_ok()
        }
    }

    /// Writes a batch with one `writev` (the bodies go from the receivers'
    /// buffers to the file, not through a copy of their own); returns its
    /// segment and file.
    fn write_batch(
        &mut self,
        batch: &[Pending],
        jobs: &std::sync::mpsc::SyncSender<SyncJob>,
        dirty: bool,
    ) -> Result<(u64, Arc<File>), String> {
        let broken = self.shared.broken.swap(false, Ordering::AcqRel);
        if broken || self.file.is_none() || self.written >= self.segment_bytes {
            if dirty && !broken {
                // The sealed segment is synced in the background.
                self.request_sync(jobs, true);
            }
            self.roll()
                .map_err(|e| format!("cannot start a new segment: {e}"))?;
        }
        let segment = self.shared.open.load(Ordering::Relaxed);
        let headers: Vec<[u8; record::HEADER]> = batch
            .iter()
            .map(|(format, body, _)| record::header(*format, body))
            .collect();
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(batch)
            .flat_map(|(header, (_, body, _))| [IoSlice::new(header), IoSlice::new(body)])
            .collect();
        let bytes: usize = slices.iter().map(|s| s.len()).sum();
        let file = self.file.clone().ok_or("no open segment")?;
        if let Err(e) = write_all(&file, &mut slices) {
            // The tail of this segment may be torn (a full disk takes part of
            // a write): it is cut back to the last whole batch when the disk
            // allows (else replay cuts it), and acknowledged records must not
            // follow it, so the next batch starts a new segment.
            let _ = file.set_len(self.written);
            self.file = None;
            return Err(format!(
                "cannot write segment {}: {e}",
                segment::path(&self.dir, segment).display()
            ));
        }
        self.written += bytes as u64;
        self.shared
            .written
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok((segment, file))
    }

    /// Starts the next segment.
    fn roll(&mut self) -> std::io::Result<()> {
        self.file = None;
        let next = self.shared.open.load(Ordering::Relaxed) + 1;
        self.file = Some(Arc::new(segment::create(&self.dir, next)?));
        self.shared.open.store(next, Ordering::Release);
        self.written = record::MAGIC.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of one append on `segment` of `file`, and its answer.
    fn job(file: &Arc<File>, segment: u64) -> (SyncJob, oneshot::Receiver<Result<u64, String>>) {
        let (done, answer) = oneshot::channel();
        let job = SyncJob {
            file: file.clone(),
            segment,
            batch: vec![(1, Bytes::from_static(b"span"), done)],
        };
        (job, answer)
    }

    #[test]
    fn after_a_failed_sync_nothing_more_on_that_segment_is_acknowledged() {
        let dir = std::env::temp_dir().join(format!("hopscope-wal-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = Arc::new(File::create(dir.join("segment")).unwrap());
        let shared = Arc::new(Shared::default());
        shared.fail_syncs.store(1, Ordering::Release);
        // Batches a and b were both written to segment 7 before a's sync ran
        // (the writer does not wait for the syncer under `always`); c went to
        // the segment the writer rolled to.
        let (a, a_answer) = job(&file, 7);
        let (b, b_answer) = job(&file, 7);
        let (c, c_answer) = job(&file, 8);
        for n in [7, 7, 8] {
            *shared.pins.lock().entry(n).or_default() += 1;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(3);
        for j in [a, b, c] {
            tx.send(j).unwrap();
        }
        drop(tx);
        syncer(shared.clone(), rx);
        let answer = |r: oneshot::Receiver<Result<u64, String>>| r.blocking_recv().unwrap();
        assert!(answer(a_answer)
            .unwrap_err()
            .contains("injected sync failure"));
        // b's own sync succeeded, but it sits behind what a lost.
        assert!(answer(b_answer)
            .unwrap_err()
            .contains("lost an earlier sync"));
        assert_eq!(answer(c_answer), Ok(8));
        assert!(shared.broken.load(Ordering::Acquire), "the writer rolls");
        assert_eq!(
            shared.pins.lock().keys().copied().collect::<Vec<_>>(),
            [8],
            "refused appends are unpinned"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
