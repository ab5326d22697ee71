//! The state file: findings, hop aggregates, the service graph, coverage per
//! service and the ledger of counted traces, written whole and atomically
//! (temporary file, sync, rename, sync of the directory), so a crash leaves
//! the previous state or the new one, never a mix. Layout: the magic
//! `HSSTATE1`, the CRC-32C of the body (u32 LE), the body's length (u64 LE),
//! then the body as JSON.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::wal::LogRange;
use super::{BucketState, EdgeBucketState, Finding};
use crate::analyze::coverage::Counts;
use crate::model::{Sym, TraceId};

const MAGIC: [u8; 8] = *b"HSSTATE1";
const HEAD: usize = 20;
const FILE: &str = "state";
const TEMP: &str = "state.tmp";

/// What a restart restores.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Log segments before this one are covered: never replayed.
    pub log_start: u64,
    /// Traces counted in the findings and aggregates whose spans a replay can read.
    pub counted: Vec<(TraceId, LogRange)>,
    pub findings: Vec<Finding>,
    pub aggregates: Vec<BucketState>,
    /// The service graph's buckets (absent from older state files).
    #[serde(default)]
    pub edges: Vec<EdgeBucketState>,
    /// Instrumentation coverage per service (absent from older state files).
    #[serde(default)]
    pub coverage: Vec<(Sym, Counts)>,
}

/// Why the state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// The state file's path in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `snapshot` as the state of `dir`; returns the file's size.
pub fn write(dir: &Path, snapshot: &Snapshot) -> Result<u64, SnapshotError> {
    let temp = dir.join(TEMP);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SnapshotError::Io { path, source }
    };
    let body = serde_json::to_vec(snapshot).map_err(|e| SnapshotError::Io {
        path: temp.clone(),
        source: e.into(),
    })?;
    let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
    file.write_all(&MAGIC)
        .and_then(|()| file.write_all(&crc32c::crc32c(&body).to_le_bytes()))
        .and_then(|()| file.write_all(&(body.len() as u64).to_le_bytes()))
        .and_then(|()| file.write_all(&body))
        .and_then(|()| file.sync_all())
        .map_err(io(&temp))?;
    let target = path(dir);
    std::fs::rename(&temp, &target).map_err(io(&target))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok((HEAD + body.len()) as u64)
}

/// Reads the state of `dir`; `None` when there is none yet.
pub fn read(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let damaged = |reason: &str| SnapshotError::Damaged {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    if bytes.len() < HEAD || bytes[..8] != MAGIC {
        return Err(damaged("no state header"));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..HEAD]);
    let body = &bytes[HEAD..];
    if u64::from_le_bytes(len) != body.len() as u64 {
        return Err(damaged("length does not match"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(damaged("checksum mismatch"));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| damaged(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_state_reads_back_and_damage_is_detected() {
        let dir = std::env::temp_dir().join(format!("hopscope-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(read(&dir).unwrap().is_none());

        let id = TraceId::from_bytes(&[3; 16]).unwrap();
        let snapshot = Snapshot {
            log_start: 7,
            counted: vec![(id, LogRange { first: 7, last: 9 })],
            ..Snapshot::default()
        };
        let size = write(&dir, &snapshot).unwrap();
        assert_eq!(std::fs::metadata(path(&dir)).unwrap().len(), size);
        let back = read(&dir).unwrap().unwrap();
        assert_eq!((back.log_start, back.counted), (7, snapshot.counted));

        let mut bytes = std::fs::read(path(&dir)).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(path(&dir), &bytes).unwrap();
        assert!(matches!(read(&dir), Err(SnapshotError::Damaged { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
