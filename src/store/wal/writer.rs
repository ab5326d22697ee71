//! The writer thread: takes appends from a bounded channel, writes each batch
//! with one `write`, syncs once per the policy, then acknowledges every append
//! of the batch (group commit). It rolls to a new segment past the segment size,
//! and after a failed write or sync, so a torn record never has acknowledged
//! records behind it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{record, segment, WalSync};

/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// State shared by the writer and the handles.
#[derive(Default)]
pub(super) struct Shared {
    /// The segment being written.
    pub open: AtomicU64,
    /// Acknowledged appends whose spans are not yet in the buffer, by segment.
    pub pins: Mutex<BTreeMap<u64, usize>>,
    /// Bytes written since the start.
    pub written: AtomicU64,
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

pub(super) struct Writer {
    pub dir: PathBuf,
    pub sync: WalSync,
    pub segment_bytes: u64,
    pub shared: Arc<Shared>,
    pub file: Option<File>,
    pub written: u64,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        let mut dirty = false;
        let mut last_sync = Instant::now();
        loop {
            let first = match rx.try_recv() {
                Ok(m) => m,
                Err(_) => {
                    // Idle: what the interval policy left unsynced is synced now.
                    if dirty {
                        self.sync_now(&mut dirty, &mut last_sync);
                    }
                    match rx.blocking_recv() {
                        Some(m) => m,
                        None => return self.close(dirty),
                    }
                }
            };
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
                let result = self.write_batch(&batch, &mut buf, &mut dirty, &mut last_sync);
                self.acknowledge(&mut batch, result);
            }
            if let Some(done) = closing {
                self.close(dirty);
                let _ = done.send(());
                return;
            }
        }
    }

    fn write_batch(
        &mut self,
        batch: &[Pending],
        buf: &mut Vec<u8>,
        dirty: &mut bool,
        last_sync: &mut Instant,
    ) -> Result<u64, String> {
        if self.file.is_none() || self.written >= self.segment_bytes {
            self.roll(*dirty)
                .map_err(|e| format!("cannot start a new segment: {e}"))?;
            *dirty = false;
        }
        let segment = self.shared.open.load(Ordering::Relaxed);
        buf.clear();
        for (format, body, _) in batch {
            buf.extend_from_slice(&record::header(*format, body));
            buf.extend_from_slice(body);
        }
        let file = self.file.as_mut().ok_or("no open segment")?;
        let written = file.write_all(buf).and_then(|()| match self.sync {
            WalSync::Always => file.sync_data(),
            _ => Ok(()),
        });
        if let Err(e) = written {
            // The tail of this segment may be torn: acknowledged records must
            // not follow it, so the next batch starts a new segment.
            self.file = None;
            return Err(format!(
                "cannot write segment {}: {e}",
                segment::path(&self.dir, segment).display()
            ));
        }
        self.written += buf.len() as u64;
        self.shared
            .written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        match self.sync {
            WalSync::Always => *last_sync = Instant::now(),
            WalSync::Interval(every) => {
                *dirty = true;
                if last_sync.elapsed() >= every {
                    self.sync_now(dirty, last_sync);
                }
            }
            WalSync::Never => {}
        }
        if buf.capacity() > 2 * MAX_BATCH_BYTES {
            *buf = Vec::new();
        }
        Ok(segment)
    }

    /// Pins the segment for every append still waiting, then answers them.
    fn acknowledge(&self, batch: &mut Vec<Pending>, result: Result<u64, String>) {
        if let Ok(segment) = result {
            *self.shared.pins.lock().entry(segment).or_default() += batch.len();
        }
        for (_, _, done) in batch.drain(..) {
            if done.send(result.clone()).is_err() {
                if let Ok(segment) = result {
                    self.shared.unpin(segment);
                }
            }
        }
    }

    fn sync_now(&mut self, dirty: &mut bool, last_sync: &mut Instant) {
        if let Some(file) = &self.file {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "cannot sync the write-ahead log; starting a new segment");
                self.file = None;
            }
        }
        *dirty = false;
        *last_sync = Instant::now();
    }

    /// Seals the open segment (synced unless the policy is `none`) and starts
    /// the next one.
    fn roll(&mut self, dirty: bool) -> std::io::Result<()> {
        if let Some(file) = self.file.take() {
            if dirty {
                file.sync_data()?;
            }
        }
        let next = self.shared.open.load(Ordering::Relaxed) + 1;
        self.file = Some(segment::create(&self.dir, next)?);
        self.shared.open.store(next, Ordering::Release);
        self.written = record::MAGIC.len() as u64;
        Ok(())
    }

    fn close(&mut self, dirty: bool) {
        if let (true, Some(file)) = (dirty || self.sync != WalSync::Always, &self.file) {
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "cannot sync the write-ahead log at shutdown");
            }
        }
        self.file = None;
    }
}
