//! Trace and span identifiers: fixed-size, `Copy`, rendered as lowercase hex.

use std::fmt;
use std::num::NonZeroU64;

/// Why bytes or text could not become an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be {expected} bytes, got {got}")]
    WrongLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} is all zeros, which OTLP defines as invalid")]
    AllZero { what: &'static str },
    #[error("{what} is not {expected} lowercase or uppercase hex digits")]
    NotHex { what: &'static str, expected: usize },
}

/// A 16-byte W3C trace id. Never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id. Never all zeros, so `Option<SpanId>` costs 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl TraceId {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 16] = bytes.try_into().map_err(|_| IdError::WrongLength {
            what: "trace id",
            expected: 16,
            got: bytes.len(),
        })?;
        if arr == [0; 16] {
            return Err(IdError::AllZero { what: "trace id" });
        }
        Ok(TraceId(arr))
    }

    pub fn parse_hex(text: &str) -> Result<Self, IdError> {
        let mut arr = [0u8; 16];
        hex::decode_to_slice(text, &mut arr).map_err(|_| IdError::NotHex {
            what: "trace id",
            expected: 32,
        })?;
        Self::from_bytes(&arr)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl SpanId {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| IdError::WrongLength {
            what: "span id",
            expected: 8,
            got: bytes.len(),
        })?;
        NonZeroU64::new(u64::from_be_bytes(arr))
            .map(SpanId)
            .ok_or(IdError::AllZero { what: "span id" })
    }

    pub fn parse_hex(text: &str) -> Result<Self, IdError> {
        let mut arr = [0u8; 8];
        hex::decode_to_slice(text, &mut arr).map_err(|_| IdError::NotHex {
            what: "span id",
            expected: 16,
        })?;
        Self::from_bytes(&arr)
    }

    /// Builds an id from its numeric value; `None` for zero.
    pub fn from_u64(value: u64) -> Option<Self> {
        NonZeroU64::new(value).map(SpanId)
    }

    pub fn to_bytes(self) -> [u8; 8] {
        self.0.get().to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0.get())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl serde::Serialize for TraceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl serde::Serialize for SpanId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TraceId::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}

impl<'de> serde::Deserialize<'de> for SpanId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        SpanId::parse_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_reject_bad_input() {
        let t = TraceId::parse_hex("5B8EFFF798038103D269B633813FC60C").unwrap();
        assert_eq!(t.to_string(), "5b8efff798038103d269b633813fc60c");
        let s = SpanId::parse_hex("eee19b7ec3c1b174").unwrap();
        assert_eq!(s.to_string(), "eee19b7ec3c1b174");
        assert_eq!(SpanId::from_bytes(&s.to_bytes()).unwrap(), s);
        assert!(matches!(
            TraceId::from_bytes(&[1; 15]),
            Err(IdError::WrongLength { got: 15, .. })
        ));
        assert!(matches!(
            SpanId::from_bytes(&[0; 8]),
            Err(IdError::AllZero { .. })
        ));
        assert!(TraceId::parse_hex("zz").is_err());
        assert!(TraceId::parse_hex(&"0".repeat(32)).is_err());
    }
}
