//! Attributes packed into one arena per trace.
//!
//! OTLP attributes are key/value lists with tagged values. Keeping them as
//! `Vec<(String, Value)>` costs an allocation per key and per string; here every
//! attribute of every span, event and link of one trace lives in one [`AttrArena`]
//! and a span holds an 8-byte [`AttrRange`] into it:
//!
//! ```text
//! entry   := varint(key << 3 | tag) payload
//! payload := str: varint(len) bytes | sym: varint(sym) | int: zigzag varint
//!          | double: f64le | false | true | json: varint(len) bytes
//! ```
//!
//! Keys are interned [`Sym`]s (small numbers, so one or two bytes). Values the
//! decoder interned (semantic-convention values, and repeated short values) are
//! stored as a `sym` of a few bytes.

use std::sync::LazyLock;

use super::Sym;

/// The attribute under which ingest keeps the resource attributes of a span
/// other than `service.name` and `service.instance.id`: one interned JSON
/// text, `[[key, value], ...]`, shared by every span of the resource. An
/// internal key: the APIs show its contents as the resource's, never as a
/// span attribute.
pub static RESOURCE_ATTRS: LazyLock<Sym> = LazyLock::new(|| Sym::new("hopscope.resource"));

const TAG_STR: u64 = 0;
const TAG_SYM: u64 = 1;
const TAG_INT: u64 = 2;
const TAG_DOUBLE: u64 = 3;
const TAG_FALSE: u64 = 4;
const TAG_TRUE: u64 = 5;
const TAG_JSON: u64 = 6;

/// Where one attribute list sits in its trace's [`AttrArena`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrRange {
    start: u32,
    len: u32,
}

impl AttrRange {
    /// The same range after its arena was appended at `offset` of another.
    pub fn shifted(self, offset: u32) -> AttrRange {
        AttrRange {
            start: self.start + offset,
            len: self.len,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// The packed attributes of a set of spans.
#[derive(Clone, Default, PartialEq)]
pub struct AttrArena(Vec<u8>);

/// One decoded attribute value, borrowing from its arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Arrays, maps and bytes, rendered as JSON text at ingest.
    Json(&'a str),
}

/// Makes room for `more` elements with at most 25 % spare capacity, instead of
/// `Vec`'s doubling: sets waiting in the buffer should not carry half-empty
/// allocations, and growth stays amortized.
pub(crate) fn reserve_modestly<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 4));
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

impl AttrArena {
    /// Where the next attribute list starts; pass it to [`AttrArena::finish`].
    pub fn mark(&self) -> u32 {
        self.0.len() as u32
    }

    /// The attributes pushed since `mark`.
    pub fn finish(&self, mark: u32) -> AttrRange {
        AttrRange {
            start: mark,
            len: self.mark() - mark,
        }
    }

    fn key(&mut self, key: Sym, tag: u64) {
        put_varint(&mut self.0, (key.to_u32() as u64) << 3 | tag);
    }

    fn text(&mut self, text: &str) {
        put_varint(&mut self.0, text.len() as u64);
        self.0.extend_from_slice(text.as_bytes());
    }

    pub fn str(&mut self, key: Sym, value: &str) {
        self.key(key, TAG_STR);
        self.text(value);
    }

    pub fn sym(&mut self, key: Sym, value: Sym) {
        self.key(key, TAG_SYM);
        put_varint(&mut self.0, value.to_u32() as u64);
    }

    pub fn int(&mut self, key: Sym, value: i64) {
        self.key(key, TAG_INT);
        put_varint(&mut self.0, ((value << 1) ^ (value >> 63)) as u64);
    }

    pub fn double(&mut self, key: Sym, value: f64) {
        self.key(key, TAG_DOUBLE);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bool(&mut self, key: Sym, value: bool) {
        self.key(key, if value { TAG_TRUE } else { TAG_FALSE });
    }

    pub fn json(&mut self, key: Sym, value: &str) {
        self.key(key, TAG_JSON);
        self.text(value);
    }

    /// Appends another arena, growing by at most a quarter (an arena that
    /// waits in the buffer); ranges into it must be shifted by the returned
    /// offset.
    pub fn append(&mut self, other: &AttrArena) -> u32 {
        reserve_modestly(&mut self.0, other.0.len());
        self.extend(other)
    }

    /// [`AttrArena::append`] with `Vec`'s amortized growth, for an arena
    /// being built a list at a time.
    pub fn extend(&mut self, other: &AttrArena) -> u32 {
        let offset = self.mark();
        self.0.extend_from_slice(&other.0);
        offset
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.capacity()
    }

    /// The encoded bytes of one list (for ordering; keys are process-local).
    pub fn bytes(&self, range: AttrRange) -> &[u8] {
        let start = range.start as usize;
        self.0
            .get(start..start + range.len as usize)
            .unwrap_or_default()
    }

    pub fn iter(&self, range: AttrRange) -> AttrIter<'_> {
        AttrIter {
            rest: self.bytes(range),
        }
    }

    /// The values of several keys in one pass (the first entry of each key);
    /// values of other keys are skipped without being decoded, and interned
    /// values come back as symbols, unresolved.
    pub fn find<const N: usize>(&self, range: AttrRange, keys: [Sym; N]) -> [Option<Found<'_>>; N] {
        let want = keys.map(|k| k.to_u32() as u64);
        // Most entries are of keys not wanted: one bit test skips them.
        let mask = want.iter().fold(0u64, |m, &w| m | 1 << (w & 63));
        let mut out = [None; N];
        let mut it = self.iter(range);
        while !it.rest.is_empty() {
            let head = it.varint();
            let (key, tag) = (head >> 3, head & 7);
            if mask & 1 << (key & 63) == 0 {
                it.skip_value(tag);
                continue;
            }
            match want.iter().position(|&w| w == key) {
                Some(i) if out[i].is_none() => {
                    out[i] = Some(match tag {
                        TAG_SYM => Found::Sym(Sym::from_u32(it.varint() as u32)),
                        _ => Found::Value(it.value(tag)),
                    });
                }
                _ => it.skip_value(tag),
            }
        }
        out
    }

    /// The interned value of `key` (ingest interns semantic-convention values),
    /// without resolving it to text.
    pub fn get_sym(&self, range: AttrRange, key: Sym) -> Option<Sym> {
        let mut it = self.entry(range, key)?;
        match it.tag {
            TAG_SYM => Some(Sym::from_u32(it.iter.varint() as u32)),
            TAG_STR => Sym::lookup(it.iter.text()),
            _ => None,
        }
    }

    /// The value of `key`, decoding only that value: the others are skipped
    /// without resolving symbols or checking text.
    pub fn get(&self, range: AttrRange, key: Sym) -> Option<AttrValue<'_>> {
        let mut found = self.entry(range, key)?;
        Some(found.iter.value(found.tag))
    }

    /// Positions an iterator on the payload of `key`'s entry.
    fn entry(&self, range: AttrRange, key: Sym) -> Option<Entry<'_>> {
        let want = key.to_u32() as u64;
        let mut it = self.iter(range);
        while !it.rest.is_empty() {
            let head = it.varint();
            if head >> 3 == want {
                return Some(Entry {
                    iter: it,
                    tag: head & 7,
                });
            }
            it.skip_value(head & 7);
        }
        None
    }
}

impl std::fmt::Debug for AttrArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttrArena({} bytes)", self.0.len())
    }
}

/// A value found by [`AttrArena::find`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found<'a> {
    /// An interned string value.
    Sym(Sym),
    Value(AttrValue<'a>),
}

impl<'a> Found<'a> {
    /// The value as a symbol: interned as is, or looked up (never added).
    pub fn sym(self) -> Option<Sym> {
        match self {
            Found::Sym(s) => Some(s),
            Found::Value(AttrValue::Str(t)) => Sym::lookup(t),
            Found::Value(_) => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn text(self) -> Option<&'a str> {
        match self {
            Found::Sym(s) => Some(s.as_str()),
            Found::Value(AttrValue::Str(t)) => Some(t),
            Found::Value(_) => None,
        }
    }
}

/// An entry found by key: the iterator stands on its payload.
struct Entry<'a> {
    iter: AttrIter<'a>,
    tag: u64,
}

pub struct AttrIter<'a> {
    rest: &'a [u8],
}

impl<'a> AttrIter<'a> {
    fn take_bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    fn varint(&mut self) -> u64 {
        // Short lengths and small numbers fit in one byte, keys in two.
        match *self.rest {
            [b0, ..] if b0 < 0x80 => {
                self.rest = &self.rest[1..];
                return b0 as u64;
            }
            [b0, b1, ..] if b1 < 0x80 => {
                self.rest = &self.rest[2..];
                return (b0 & 0x7f) as u64 | (b1 as u64) << 7;
            }
            _ => {}
        }
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.take_bytes(1)[0];
            value |= ((byte & 0x7f) as u64) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return value;
            }
        }
    }

    fn text(&mut self) -> &'a str {
        let len = self.varint() as usize;
        // Only `AttrArena` writes these bytes, from `&str`s.
        std::str::from_utf8(self.take_bytes(len)).expect("attribute text written from a str")
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (Sym, AttrValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let head = self.varint();
        let key = Sym::from_u32((head >> 3) as u32);
        Some((key, self.value(head & 7)))
    }
}

impl<'a> AttrIter<'a> {
    /// Skips the payload of an entry with tag `tag`.
    fn skip_value(&mut self, tag: u64) {
        match tag {
            TAG_STR | TAG_JSON => {
                let len = self.varint() as usize;
                self.take_bytes(len);
            }
            TAG_SYM | TAG_INT => {
                self.varint();
            }
            TAG_DOUBLE => {
                self.take_bytes(8);
            }
            _ => {}
        }
    }

    /// Decodes the payload of an entry with tag `tag`.
    fn value(&mut self, tag: u64) -> AttrValue<'a> {
        match tag {
            TAG_STR => AttrValue::Str(self.text()),
            TAG_SYM => AttrValue::Str(Sym::from_u32(self.varint() as u32).as_str()),
            TAG_INT => {
                let z = self.varint();
                AttrValue::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            TAG_DOUBLE => AttrValue::Double(f64::from_le_bytes(
                self.take_bytes(8).try_into().expect("8 bytes"),
            )),
            TAG_FALSE => AttrValue::Bool(false),
            TAG_TRUE => AttrValue::Bool(true),
            _ => AttrValue::Json(self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_round_trips_and_ranges_survive_appending() {
        let mut a = AttrArena::default();
        let long = "x".repeat(300);
        let first = a.mark();
        a.str(Sym::new("url.full"), &long);
        a.sym(Sym::new("db.system"), Sym::new("postgresql"));
        a.int(Sym::new("http.response.status_code"), -504);
        a.int(Sym::new("big"), i64::MAX);
        a.double(Sym::new("ratio"), 0.25);
        a.bool(Sym::new("flag"), true);
        a.bool(Sym::new("other"), false);
        a.json(Sym::new("list"), "[1,2]");
        let r1 = a.finish(first);
        let second = a.mark();
        a.int(Sym::new("n"), 7);
        let r2 = a.finish(second);

        let got: Vec<_> = a.iter(r1).collect();
        assert_eq!(got.len(), 8);
        assert_eq!(got[0].1, AttrValue::Str(&long));
        assert_eq!(got[1].1, AttrValue::Str("postgresql"));
        assert_eq!(got[2].1, AttrValue::Int(-504));
        assert_eq!(got[3].1, AttrValue::Int(i64::MAX));
        assert_eq!(got[4].1, AttrValue::Double(0.25));
        assert_eq!(got[5].1, AttrValue::Bool(true));
        assert_eq!(got[6].1, AttrValue::Bool(false));
        assert_eq!(got[7].1, AttrValue::Json("[1,2]"));
        assert_eq!(a.get(r2, Sym::new("n")), Some(AttrValue::Int(7)));

        let mut b = AttrArena::default();
        b.int(Sym::new("before"), 1);
        let offset = b.append(&a);
        assert_eq!(b.iter(r1.shifted(offset)).count(), 8);
        assert_eq!(
            b.get(r2.shifted(offset), Sym::new("n")),
            Some(AttrValue::Int(7))
        );
        assert!(AttrRange::default().is_empty());
    }
}
