//! The record format: `len: u32 LE | crc: u32 LE | format: u8 | body[len]`,
//! where `crc` is the CRC-32C of the format byte and the body. A segment file is
//! [`MAGIC`] followed by records back to back.

/// The first bytes of every segment file (the last byte is the format version).
pub const MAGIC: [u8; 8] = *b"HSWAL\0\0\x01";

/// Bytes before a record's body.
pub const HEADER: usize = 9;

/// Largest body a record may hold; a larger length is read as corruption.
pub const MAX_BODY: usize = 1 << 30;

/// The header of a record holding `body` in `format`.
pub fn header(format: u8, body: &[u8]) -> [u8; HEADER] {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[format]), body);
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h[8] = format;
    h
}

/// What is at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole record whose checksum matches; the next one starts at `next`.
    Record {
        format: u8,
        body: &'a [u8],
        next: usize,
    },
    /// The segment ends exactly here.
    End,
    /// A partial record (a write cut short by a crash) or a damaged one: what
    /// follows cannot be framed, so the segment is read up to here.
    Bad(&'static str),
}

/// Reads the record at `at` of a segment's bytes.
pub fn read(buf: &[u8], at: usize) -> Read<'_> {
    let rest = buf.get(at..).unwrap_or_default();
    if rest.is_empty() {
        return Read::End;
    }
    let Some(head) = rest.get(..HEADER) else {
        return Read::Bad("partial record header");
    };
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let format = head[8];
    if len > MAX_BODY {
        return Read::Bad("record length out of range");
    }
    let Some(body) = rest.get(HEADER..HEADER + len) else {
        return Read::Bad("partial record body");
    };
    if crc32c::crc32c_append(crc32c::crc32c(&[format]), body) != crc {
        return Read::Bad("checksum mismatch");
    }
    Read::Record {
        format,
        body,
        next: at + HEADER + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(format: u8, body: &[u8]) -> Vec<u8> {
        let mut out = header(format, body).to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn records_read_back_in_order_and_the_end_is_clean() {
        let mut buf = record(1, b"first");
        buf.extend(record(2, b""));
        buf.extend(record(1, &[7; 300]));
        let mut at = 0;
        let mut seen = Vec::new();
        while let Read::Record { format, body, next } = read(&buf, at) {
            seen.push((format, body.len()));
            at = next;
        }
        assert_eq!(seen, vec![(1, 5), (2, 0), (1, 300)]);
        assert_eq!(read(&buf, at), Read::End);
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_detected() {
        let buf = record(1, b"a body long enough to matter");
        for cut in 1..buf.len() {
            assert!(
                matches!(read(&buf[..cut], 0), Read::Bad(_)),
                "cut at {cut} not detected"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(read(&bad, 0), Read::Record { .. }),
                    "flip of bit {bit} of byte {byte} not detected"
                );
            }
        }
    }

    #[test]
    fn a_huge_length_is_corruption_not_an_allocation() {
        let mut buf = record(1, b"x");
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read(&buf, 0), Read::Bad("record length out of range"));
    }
}
