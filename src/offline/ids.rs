//! Trace and span ids as Jaeger and Zipkin write them: lowercase hex without
//! leading zeros (Jaeger drops them), 64- or 128-bit trace ids. Ids that are
//! not hex at all, as hand-written fixtures have ("span-A"), get a stable
//! hashed id, so such files can be analyzed too.

use crate::model::{IdError, SpanId, TraceId};

/// 64-bit FNV-1a with a seed, so hashed ids are stable across runs and platforms.
fn fnv1a(seed: u64, text: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A span id: up to 16 hex digits (left-padded with zeros); other text by a
/// stable hash. Empty or all zeros is no id.
pub fn span_id(text: &str) -> Result<SpanId, IdError> {
    if text.is_empty() {
        return Err(IdError::WrongLength {
            what: "span id",
            expected: 8,
            got: 0,
        });
    }
    if is_hex(text) && text.len() <= 16 {
        return SpanId::parse_hex(&format!("{text:0>16}"));
    }
    SpanId::from_u64(fnv1a(0, text).max(1)).ok_or(IdError::AllZero { what: "span id" })
}

/// A trace id: up to 32 hex digits (left-padded with zeros); other text by a
/// stable hash. Empty or all zeros is no id.
pub fn trace_id(text: &str) -> Result<TraceId, IdError> {
    if text.is_empty() {
        return Err(IdError::WrongLength {
            what: "trace id",
            expected: 16,
            got: 0,
        });
    }
    if is_hex(text) && text.len() <= 32 {
        return TraceId::parse_hex(&format!("{text:0>32}"));
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv1a(1, text).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv1a(2, text).to_be_bytes());
    bytes[15] |= 1;
    TraceId::from_bytes(&bytes)
}

/// A second span id derived from `id`, for the server half of a Zipkin span
/// shared by client and server.
pub(super) fn derived_span_id(id: SpanId, salt: &str) -> SpanId {
    let h = fnv1a(3, &format!("{id}/{salt}")).max(1);
    SpanId::from_u64(h).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hex_is_padded_and_other_text_hashed_stably() {
        assert_eq!(span_id("1a").unwrap().to_string(), "000000000000001a");
        assert_eq!(
            trace_id("15b0b4004a651c4c").unwrap().to_string(),
            "000000000000000015b0b4004a651c4c"
        );
        assert_eq!(span_id("span-A").unwrap(), span_id("span-A").unwrap());
        assert_ne!(span_id("span-A").unwrap(), span_id("span-B").unwrap());
        assert!(span_id("").is_err());
        assert!(span_id("0000").is_err());
        assert!(trace_id("0").is_err());
    }
}
