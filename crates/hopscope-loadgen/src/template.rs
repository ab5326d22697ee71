//! Encoded export requests made fresh for each send without re-encoding.
//!
//! A [`Template`] is one generated request encoded once, with the byte offsets of
//! every trace id, span id, parent span id and timestamp in it. Those fields have
//! a fixed size on the wire (ids are 16 or 8 bytes, times are `fixed64`), so
//! [`Template::stamp`] copies the bytes and rewrites them in place: ids XORed
//! with a random mask (the tree stays intact; every trace gets new ids), times
//! shifted so that the last span ends now, and the literal numbers of the
//! statements (`db.query.text`, always [`LITERAL_DIGITS`] digits) drawn anew,
//! as an application's queries differ per request. A send costs a copy and a
//! few thousand small writes instead of building and encoding ~500 spans.

use std::ops::Range;

use bytes::Bytes;
use prost::Message;

use super::generate::{literal, Generator, Rng, LITERAL_DIGITS};

/// Where generated traces start before they are shifted to "now" (2020-09-13).
const BASE_NS: u64 = 1_600_000_000_000_000_000;

/// One encoded request and the places to rewrite in it.
pub(super) struct Template {
    bytes: Bytes,
    trace_ids: Vec<usize>,
    span_ids: Vec<usize>,
    times: Vec<usize>,
    /// Where each statement's literal numbers start.
    literals: Vec<usize>,
    last_end: u64,
    spans: u64,
}

impl Template {
    /// Generates and encodes one request of about `spans` spans.
    pub(super) fn generate(gen: &mut Generator, spans: usize) -> Template {
        Template::new(gen.request(spans, BASE_NS).encode_to_vec())
    }

    fn new(bytes: Vec<u8>) -> Template {
        let mut t = Template {
            trace_ids: Vec::new(),
            span_ids: Vec::new(),
            times: Vec::new(),
            literals: Vec::new(),
            last_end: 0,
            spans: 0,
            bytes: Bytes::new(),
        };
        // ExportTraceServiceRequest.resource_spans = 1, ResourceSpans.scope_spans = 2,
        // ScopeSpans.spans = 2; a Span's trace_id = 1, span_id = 2,
        // parent_span_id = 4, start and end time = 7 and 8, attributes = 9.
        for (_, rs) in fields(&bytes, 0..bytes.len()).filter(|f| f.0 == 1) {
            for (_, ss) in fields(&bytes, rs).filter(|f| f.0 == 2) {
                for (_, span) in fields(&bytes, ss).filter(|f| f.0 == 2) {
                    t.spans += 1;
                    for (field, at) in fields(&bytes, span) {
                        let (start, end) = (at.start, at.end);
                        match (field, end - start) {
                            (1, 16) => t.trace_ids.push(start),
                            (2 | 4, 8) => t.span_ids.push(start),
                            (7 | 8, 8) => {
                                t.times.push(start);
                                let time = u64::from_le_bytes(
                                    bytes[start..end].try_into().expect("a fixed64 is 8 bytes"),
                                );
                                t.last_end = t.last_end.max(time);
                            }
                            (9, _) => t.literals.extend(statement_literals(&bytes, at)),
                            _ => {}
                        }
                    }
                }
            }
        }
        t.bytes = bytes.into();
        t
    }

    /// Spans in the request.
    pub(super) fn spans(&self) -> u64 {
        self.spans
    }

    /// Encoded size in bytes.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The request as generated (shared, not copied).
    pub(super) fn encoded(&self) -> Bytes {
        self.bytes.clone()
    }

    /// A copy with new ids (from `rng`) whose last span ends at `now_ns`.
    pub(super) fn stamp(&self, rng: &mut Rng, now_ns: u64) -> Bytes {
        // Ids end in an odd byte per 8 (see `Rng::id8`); masks keep that bit, so
        // no id becomes all zero.
        let mask = |rng: &mut Rng| (rng.next() & !1).to_be_bytes();
        let trace_mask = [mask(rng), mask(rng)].concat();
        let span_mask = mask(rng);
        let shift = now_ns.wrapping_sub(self.last_end);
        let mut out = self.bytes.to_vec();
        for &at in &self.trace_ids {
            for (b, m) in out[at..at + 16].iter_mut().zip(&trace_mask) {
                *b ^= m;
            }
        }
        for &at in &self.span_ids {
            for (b, m) in out[at..at + 8].iter_mut().zip(&span_mask) {
                *b ^= m;
            }
        }
        for &at in &self.times {
            let slot = &mut out[at..at + 8];
            let time = u64::from_le_bytes((&*slot).try_into().expect("a slot of 8 bytes"));
            slot.copy_from_slice(&time.wrapping_add(shift).to_le_bytes());
        }
        for &at in &self.literals {
            let digits = literal(rng).to_string();
            out[at..at + LITERAL_DIGITS].copy_from_slice(digits.as_bytes());
        }
        out.into()
    }
}

/// The start of every literal number in the value of a `db.query.text`
/// attribute (a `KeyValue` at `kv`: key = 1, value = 2; `AnyValue`'s
/// string = 1): each run of exactly [`LITERAL_DIGITS`] digits.
fn statement_literals(buf: &[u8], kv: Range<usize>) -> Vec<usize> {
    let mut parts = fields(buf, kv);
    let Some((1, key)) = parts.next() else {
        return Vec::new();
    };
    if &buf[key] != b"db.query.text" {
        return Vec::new();
    }
    let Some(text) = parts
        .find(|f| f.0 == 2)
        .and_then(|(_, value)| fields(buf, value).find(|f| f.0 == 1))
        .map(|(_, text)| text)
    else {
        return Vec::new();
    };
    let digits = &buf[text.clone()];
    let mut out = Vec::new();
    let mut i = 0;
    while i < digits.len() {
        let run = digits[i..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if run == LITERAL_DIGITS {
            out.push(text.start + i);
        }
        i += run.max(1);
    }
    out
}

/// The fields of the message at `range` of `buf`: field number and the range of
/// its payload (the bytes of a length-delimited field, the 8 bytes of a
/// `fixed64`, the 4 of a `fixed32`, the bytes of a varint).
fn fields(buf: &[u8], range: Range<usize>) -> impl Iterator<Item = (u32, Range<usize>)> + '_ {
    let mut pos = range.start;
    let end = range.end;
    std::iter::from_fn(move || {
        if pos >= end {
            return None;
        }
        let tag = varint(buf, &mut pos);
        let start = pos;
        match tag & 7 {
            0 => {
                varint(buf, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let len = varint(buf, &mut pos) as usize;
                let start = pos;
                pos += len;
                return Some(((tag >> 3) as u32, start..pos));
            }
            5 => pos += 4,
            other => unreachable!("wire type {other} in a message prost encoded"),
        }
        Some(((tag >> 3) as u32, start..pos))
    })
}

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Shape;
    use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn stamping_renews_ids_keeps_the_tree_and_ends_now() {
        let mut gen = Generator::new(5, Shape::default()).unwrap();
        let template = Template::generate(&mut gen, 512);
        let original = ExportTraceServiceRequest::decode(&template.bytes[..]).unwrap();
        let mut rng = Rng::new(9);
        let now = 1_764_000_000_000_000_000;
        let stamped = ExportTraceServiceRequest::decode(template.stamp(&mut rng, now)).unwrap();
        let spans = |r: &ExportTraceServiceRequest| {
            r.resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| ss.spans.clone())
                .collect::<Vec<_>>()
        };
        let (before, after) = (spans(&original), spans(&stamped));
        let statement = |s: &hopscope::ingest::otlp::trace::v1::Span| {
            s.attributes
                .iter()
                .find(|kv| kv.key == "db.query.text")
                .map(|kv| format!("{:?}", kv.value))
        };
        assert_eq!(before.len() as u64, template.spans());
        assert_eq!(before.len(), after.len());
        assert_eq!(after.iter().map(|s| s.end_time_unix_nano).max(), Some(now));
        let ids: std::collections::HashSet<_> = after.iter().map(|s| s.span_id.clone()).collect();
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(a.trace_id, b.trace_id);
            assert_ne!(a.span_id, b.span_id);
            assert!(a.parent_span_id.is_empty() || ids.contains(&a.parent_span_id));
            assert_eq!(a.parent_span_id.is_empty(), b.parent_span_id.is_empty());
            assert_eq!(
                a.end_time_unix_nano - a.start_time_unix_nano,
                b.end_time_unix_nano - b.start_time_unix_nano
            );
            assert_eq!(a.name, b.name);
            // Statements keep their text but for new literals.
            let (sa, sb) = (statement(a), statement(b));
            let literal_free = |s: &Option<String>| {
                s.as_ref()
                    .map(|s| s.replace(|c: char| c.is_ascii_digit(), "#"))
            };
            assert_eq!(literal_free(&sa), literal_free(&sb));
            let others = |s: &hopscope::ingest::otlp::trace::v1::Span| {
                s.attributes
                    .iter()
                    .filter(|kv| kv.key != "db.query.text")
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(others(a), others(b));
        }
        let changed = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| statement(a) != statement(b))
            .count();
        assert!(
            changed == template.literals.len() && changed > 10,
            "{changed} of {} literals renewed",
            template.literals.len()
        );
    }
}
