//! A protobuf wire-format reader over a borrowed buffer: no allocation, every
//! read bounds-checked. The decoder in [`super::convert`] walks OTLP messages with
//! it instead of building prost's owned structs.

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf: {what} at byte {offset}")]
pub struct DecodeError {
    pub what: &'static str,
    pub offset: usize,
}

/// One field's value, borrowed from the buffer.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    pub fn varint(self) -> u64 {
        match self {
            Value::Varint(v) | Value::Fixed64(v) => v,
            Value::Fixed32(v) => v as u64,
            Value::Len(_) => 0,
        }
    }

    pub fn fixed64(self) -> u64 {
        self.varint()
    }

    /// Bytes of a length-delimited field; empty for other wire types.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Value::Len(b) => b,
            _ => &[],
        }
    }
}

/// Reads the fields of one message in order.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` in the outermost message, for error positions.
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// A reader over a nested message found by this one.
    pub fn nested(&self, inner: &'a [u8]) -> Reader<'a> {
        let base = self.base + (inner.as_ptr() as usize).saturating_sub(self.buf.as_ptr() as usize);
        Reader {
            buf: inner,
            pos: 0,
            base,
        }
    }

    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError {
            what,
            offset: self.base + self.pos,
        }
    }

    fn read_varint(&mut self) -> Result<u64, DecodeError> {
        // Field keys and most lengths fit in one byte.
        if let Some(&byte) = self.buf.get(self.pos).filter(|&&b| b < 0x80) {
            self.pos += 1;
            return Ok(byte as u64);
        }
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            value |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| self.error("field runs past the end of its message"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next field number and value, or `None` at the end of the message.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.read_varint()?;
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(self.error("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.read_varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let len = self.read_varint()?;
                let len = usize::try_from(len).map_err(|_| self.error("length overflows"))?;
                Value::Len(self.take(len)?)
            }
            5 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            _ => return Err(self.error("unsupported wire type (groups are not used by OTLP)")),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_rejects_truncation() {
        // field 1 varint 300, field 2 len "hi", field 3 fixed64 7, field 4 fixed32 9
        let buf = [
            0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x19, 7, 0, 0, 0, 0, 0, 0, 0, 0x25, 9, 0, 0, 0,
        ];
        let mut r = Reader::new(&buf);
        let mut got = Vec::new();
        while let Some((f, v)) = r.next().unwrap() {
            got.push((f, v.varint(), v.bytes().to_vec()));
        }
        assert_eq!(
            got,
            vec![
                (1, 300, vec![]),
                (2, 0, b"hi".to_vec()),
                (3, 7, vec![]),
                (4, 9, vec![])
            ]
        );
        for cut in 1..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            let mut result = Ok(Some((0, Value::Varint(0))));
            while let Ok(Some(_)) = result {
                result = r.next();
            }
            // Either a clean end at a field boundary or an error, never a panic.
            if let Err(e) = result {
                assert!(e.offset <= cut);
            }
        }
        assert!(Reader::new(&[0x12, 5, b'a']).next().is_err());
        assert!(Reader::new(&[0x0b]).next().is_err());
    }
}
