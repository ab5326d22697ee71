//! Segment files: `<number>.wal` in the log directory, numbered from 1 in the
//! order they were written. Reading one stops at the first record that cannot be
//! framed or fails its checksum; the file is truncated there, so a torn tail
//! left by a crash is cut once and never read again.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use super::record::{self, Read, MAGIC};

/// The file name of segment `n`.
pub fn path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.wal"))
}

/// The segments in `dir`, oldest first. Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// Where reading a segment stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first unreadable record (the file is cut there).
    pub offset: u64,
    /// The bytes that were skipped.
    pub skipped: u64,
    pub reason: &'static str,
}

/// A segment read back: its whole contents, the records' places in it, and
/// where it was damaged, if anywhere.
pub struct Contents {
    pub bytes: bytes::Bytes,
    /// (format, body range) of each whole record, in order.
    pub records: Vec<(u8, std::ops::Range<usize>)>,
    pub damage: Option<Damage>,
}

/// Reads segment `n`, cutting the file at the first damaged record.
pub fn read(dir: &Path, n: u64) -> io::Result<Contents> {
    let path = path(dir, n);
    let mut buf = Vec::new();
    File::open(&path)?.read_to_end(&mut buf)?;
    let mut records = Vec::new();
    let (good_end, damage) = if buf.len() < MAGIC.len() || buf[..MAGIC.len()] != MAGIC {
        (
            0,
            Some(Damage {
                offset: 0,
                skipped: buf.len() as u64,
                reason: "not a segment header",
            }),
        )
    } else {
        let mut at = MAGIC.len();
        loop {
            match record::read(&buf, at) {
                Read::Record { format, body, next } => {
                    let start = next - body.len();
                    records.push((format, start..next));
                    at = next;
                }
                Read::End => break (at, None),
                Read::Bad(reason) => {
                    break (
                        at,
                        Some(Damage {
                            offset: at as u64,
                            skipped: (buf.len() - at) as u64,
                            reason,
                        }),
                    )
                }
            }
        }
    };
    if damage.is_some() {
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(good_end as u64)?;
        file.sync_all()?;
        buf.truncate(good_end);
    }
    Ok(Contents {
        bytes: buf.into(),
        records,
        damage,
    })
}

/// Creates segment `n` with its header, durably (the file and its directory
/// entry are synced).
///
/// When the disk is full or failing, the half-made file is removed, so the
/// next attempt (after space returns) can create segment `n` again.
pub fn create(dir: &Path, n: u64) -> io::Result<File> {
    use std::io::Write as _;
    let path = path(dir, n);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let made = file
        .write_all(&MAGIC)
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(dir));
    if let Err(e) = made {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(file)
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hopscope-seg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn append(dir: &Path, n: u64, body: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path(dir, n)).unwrap();
        f.write_all(&record::header(1, body)).unwrap();
        f.write_all(body).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_records_before_it_survive() {
        let dir = temp_dir("torn");
        create(&dir, 3).unwrap();
        append(&dir, 3, b"one");
        append(&dir, 3, b"two");
        let whole = std::fs::metadata(path(&dir, 3)).unwrap().len();
        // A crash in the middle of the third write.
        let mut f = OpenOptions::new().append(true).open(path(&dir, 3)).unwrap();
        f.write_all(&record::header(1, b"three")[..5]).unwrap();

        let c = read(&dir, 3).unwrap();
        let bodies: Vec<&[u8]> = c.records.iter().map(|(_, r)| &c.bytes[r.clone()]).collect();
        assert_eq!(bodies, vec![&b"one"[..], b"two"]);
        assert_eq!(
            c.damage,
            Some(Damage {
                offset: whole,
                skipped: 5,
                reason: "partial record header"
            })
        );
        assert_eq!(std::fs::metadata(path(&dir, 3)).unwrap().len(), whole);
        // Cut once: the next read is clean.
        assert_eq!(read(&dir, 3).unwrap().damage, None);
        assert_eq!(list(&dir).unwrap(), vec![3]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_record_in_the_middle_skips_the_rest_of_its_segment() {
        let dir = temp_dir("corrupt");
        create(&dir, 1).unwrap();
        for body in [&b"aaaa"[..], b"bbbb", b"cccc"] {
            append(&dir, 1, body);
        }
        let mut bytes = std::fs::read(path(&dir, 1)).unwrap();
        let second_body = MAGIC.len() + 2 * record::HEADER + 4;
        bytes[second_body] ^= 0x40;
        std::fs::write(path(&dir, 1), &bytes).unwrap();

        let c = read(&dir, 1).unwrap();
        assert_eq!(c.records.len(), 1);
        let damage = c.damage.unwrap();
        assert_eq!(damage.reason, "checksum mismatch");
        assert_eq!(damage.offset as usize, MAGIC.len() + record::HEADER + 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
