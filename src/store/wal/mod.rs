//! The write-ahead log: every accepted export request, as received, appended
//! before the exporter is answered, in numbered segment files
//! (`record.rs` has the format). A writer thread commits appends in groups
//! (one write per batch) and a sync thread makes them durable, pipelined
//! (`writer.rs`); an append resolves once its
//! batch is written and synced per the [`WalSync`] policy, with an [`Ack`] that
//! keeps its segment from deletion until the spans are in the buffer.
//! [`replay`] reads every segment back in order, cutting torn or corrupt tails.

mod record;
mod segment;
mod writer;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use segment::Damage;
use writer::{Msg, Shared, Writer};

/// The log segments holding a trace's spans, oldest and newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogRange {
    pub first: u64,
    pub last: u64,
}

impl LogRange {
    /// The segments of both.
    pub fn union(self, other: LogRange) -> LogRange {
        LogRange {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }
}

/// The segments the buffer saw a trace's spans logged in.
impl From<RangeInclusive<u64>> for LogRange {
    fn from(segments: RangeInclusive<u64>) -> LogRange {
        LogRange {
            first: *segments.start(),
            last: *segments.end(),
        }
    }
}

/// Appends waiting for the writer; past it, appends wait for room.
const CHANNEL: usize = 1024;

/// When the log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalSync {
    /// Before every answer (one sync per batch of concurrent requests).
    Always,
    /// At most this long after a write (and whenever the log goes idle):
    /// answers do not wait for the disk. A killed process loses nothing (the
    /// data is in the page cache); a power loss loses up to this long.
    Interval(Duration),
    /// Left to the operating system (and synced at shutdown).
    Never,
}

impl FromStr for WalSync {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(WalSync::Always),
            "none" => Ok(WalSync::Never),
            _ => match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(WalSync::Interval(d)),
                _ => Err(format!(
                    "`{s}` is not a sync policy: always, none, or an interval like 100ms"
                )),
            },
        }
    }
}

impl fmt::Display for WalSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalSync::Always => f.write_str("always"),
            WalSync::Never => f.write_str("none"),
            WalSync::Interval(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for WalSync {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why an append or a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log in {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Write(String),
    #[error("the write-ahead log is closed")]
    Closed,
}

/// An append that is durable. Its segment is kept until the ack is dropped
/// (once the spans are in the buffer, which then keeps it).
pub struct Ack {
    segment: u64,
    shared: Arc<Shared>,
}

impl Ack {
    /// The segment the record is in.
    pub fn segment(&self) -> u64 {
        self.segment
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.shared.unpin(self.segment);
    }
}

/// The log's writing side.
pub struct Wal {
    dir: PathBuf,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Starts a log in `dir` whose first new segment is `first` (after every
    /// existing one: a restarted log never appends to an old segment).
    pub fn open(
        dir: &Path,
        first: u64,
        sync: WalSync,
        segment_bytes: u64,
    ) -> Result<Wal, WalError> {
        let io = |source| WalError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = segment::create(dir, first).map_err(io)?;
        let shared = Arc::new(Shared::default());
        shared.open.store(first, Ordering::Release);
        let (tx, rx) = mpsc::channel(CHANNEL);
        let writer = Writer {
            dir: dir.to_owned(),
            sync,
            segment_bytes,
            shared: shared.clone(),
            file: Some(Arc::new(file)),
            written: record::MAGIC.len() as u64,
        };
        let thread = std::thread::Builder::new()
            .name("hopscope-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok(Wal {
            dir: dir.to_owned(),
            tx,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one record; resolves once it is written (and synced, per the
    /// policy). Waits for room when the writer is behind.
    pub async fn append(&self, format: u8, body: Bytes) -> Result<Ack, WalError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Msg::Append { format, body, done })
            .await
            .map_err(|_| WalError::Closed)?;
        let segment = answer
            .await
            .map_err(|_| WalError::Closed)?
            .map_err(WalError::Write)?;
        Ok(Ack {
            segment,
            shared: self.shared.clone(),
        })
    }

    /// The oldest segment still needed by the log itself: the one being
    /// written, or an older one with acknowledged appends not yet buffered.
    pub fn oldest_pinned(&self) -> u64 {
        // Read `open` first: a pin taken after this read is on `open` or later.
        let open = self.shared.open.load(Ordering::Acquire);
        let pinned = self.shared.pins.lock().keys().next().copied();
        pinned.map_or(open, |p| p.min(open))
    }

    /// Bytes written since the start.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Deletes the segments older than `segment` (never the open one);
    /// returns how many and their bytes.
    pub fn remove_below(&self, segment: u64) -> Result<(u64, u64), WalError> {
        let io = |source| WalError::Io {
            dir: self.dir.clone(),
            source,
        };
        let below = segment.min(self.shared.open.load(Ordering::Acquire));
        let (mut count, mut bytes) = (0, 0);
        for n in segment::list(&self.dir).map_err(io)? {
            if n >= below {
                break;
            }
            let path = segment::path(&self.dir, n);
            bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path).map_err(io)?;
            count += 1;
        }
        if count > 0 {
            segment::sync_dir(&self.dir).map_err(io)?;
        }
        Ok((count, bytes))
    }

    /// Bytes in the log's segments, oldest first: (segment, bytes).
    pub fn sizes(&self) -> Result<Vec<(u64, u64)>, WalError> {
        sizes(&self.dir)
    }

    /// Syncs what is written and stops the writer; later appends fail.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
        let thread = self.thread.lock().take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// The segments in `dir` with their sizes, oldest first.
pub fn sizes(dir: &Path) -> Result<Vec<(u64, u64)>, WalError> {
    let io = |source| WalError::Io {
        dir: dir.to_owned(),
        source,
    };
    segment::list(dir)
        .map_err(io)?
        .into_iter()
        .map(|n| {
            let len = std::fs::metadata(segment::path(dir, n)).map_err(io)?.len();
            Ok((n, len))
        })
        .collect()
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    pub segments: u64,
    pub records: u64,
    pub bytes: u64,
    /// Segments cut short (torn or corrupt), with where.
    pub damaged: Vec<(u64, Damage)>,
    /// The newest segment on disk (0 when there is none).
    pub last: u64,
}

/// Reads every segment from `from` up to `until` (excluded), oldest first,
/// handing each whole record to `each` (segment, format, body); deletes the
/// segments before `from`. A
/// damaged segment is cut at the damage (logged with the segment and offset)
/// and the replay goes on with the next one.
pub fn replay(
    dir: &Path,
    from: u64,
    until: u64,
    mut each: impl FnMut(u64, u8, Bytes),
) -> Result<Replayed, WalError> {
    let io = |source| WalError::Io {
        dir: dir.to_owned(),
        source,
    };
    let mut out = Replayed::default();
    if !dir.exists() {
        return Ok(out);
    }
    for n in segment::list(dir).map_err(io)? {
        if n >= until {
            break;
        }
        out.last = n;
        if n < from {
            // Covered by the state file: its traces are counted there.
            std::fs::remove_file(segment::path(dir, n)).map_err(io)?;
            continue;
        }
        let contents = segment::read(dir, n).map_err(io)?;
        if let Some(d) = contents.damage {
            tracing::warn!(
                segment = %segment::path(dir, n).display(),
                offset = d.offset,
                skipped_bytes = d.skipped,
                reason = d.reason,
                "write-ahead log segment damaged (a crash mid-write, or disk corruption): replaying what precedes it"
            );
            out.damaged.push((n, d));
        }
        out.segments += 1;
        out.bytes += contents.bytes.len() as u64;
        for (format, range) in contents.records {
            out.records += 1;
            each(n, format, contents.bytes.slice(range));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hopscope-wal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn replayed(dir: &Path, from: u64) -> (Vec<(u64, Vec<u8>)>, Replayed) {
        let mut got = Vec::new();
        let r = replay(dir, from, u64::MAX, |n, format, body| {
            assert_eq!(format, 1);
            got.push((n, body.to_vec()));
        })
        .unwrap();
        (got, r)
    }

    #[tokio::test]
    async fn concurrent_appends_are_replayed_in_order_across_rolled_segments() {
        for sync in [
            WalSync::Always,
            WalSync::Interval(Duration::from_millis(5)),
            WalSync::Never,
        ] {
            let dir = temp_dir(&format!("roll-{sync}"));
            let wal = Arc::new(Wal::open(&dir, 1, sync, 256).unwrap());
            let mut tasks = Vec::new();
            for t in 0..4u8 {
                let wal = wal.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..50u8 {
                        let ack = wal.append(1, Bytes::from(vec![t, i, 0, 0])).await.unwrap();
                        assert!(ack.segment() >= 1);
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            wal.close().await;
            assert!(wal.append(1, Bytes::from_static(b"late")).await.is_err());

            let (got, r) = replayed(&dir, 0);
            assert_eq!(got.len(), 200, "{sync}");
            assert!(r.segments > 3, "rolled by size ({sync}): {r:?}");
            assert!(r.damaged.is_empty());
            for t in 0..4u8 {
                let order: Vec<u8> = got.iter().filter(|g| g.1[0] == t).map(|g| g.1[1]).collect();
                assert_eq!(
                    order,
                    (0..50).collect::<Vec<_>>(),
                    "per-writer order ({sync})"
                );
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[tokio::test]
    async fn acks_pin_their_segment_and_old_segments_are_removed() {
        let dir = temp_dir("pins");
        let wal = Wal::open(&dir, 5, WalSync::Always, 64).unwrap();
        let held = wal.append(1, Bytes::from(vec![1; 100])).await.unwrap();
        assert_eq!(held.segment(), 5);
        for _ in 0..3 {
            drop(wal.append(1, Bytes::from(vec![2; 100])).await.unwrap());
        }
        assert_eq!(wal.oldest_pinned(), 5);
        drop(held);
        let open = wal.oldest_pinned();
        assert!(open > 5);
        let (removed, _) = wal.remove_below(open).unwrap();
        assert_eq!(removed, open - 5);
        assert_eq!(
            wal.sizes().unwrap().first().map(|s| s.0),
            Some(open),
            "the open segment stays"
        );
        wal.close().await;

        // A replay from a later segment deletes the ones before it.
        let (got, r) = replayed(&dir, open + 1);
        assert!(got.is_empty());
        assert_eq!(r.last, open);
        assert!(sizes(&dir).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
