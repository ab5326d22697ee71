//! Attributes in one packed allocation.
//!
//! OTLP attributes are a list of key/value pairs with a tagged value. Keeping them
//! as `Vec<(String, Value)>` costs an allocation per key and per string value; here a
//! span's attributes are one `Box<[u8]>`:
//!
//! ```text
//! entry := key:u32le tag:u8 payload
//! payload := str: len:varint bytes | sym: u32le | int: i64le | double: f64le | bool: u8
//!          | json: len:varint bytes   (arrays, maps and bytes values, rendered as JSON)
//! ```
//!
//! Keys are interned [`Sym`]s. Values of the semantic-convention attributes that the
//! detectors read are interned too (tag `sym`) so the typed field in
//! [`crate::model::Semantics`] and the attribute share one copy.

use super::Sym;

const TAG_STR: u8 = 0;
const TAG_SYM: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_DOUBLE: u8 = 3;
const TAG_BOOL: u8 = 4;
const TAG_JSON: u8 = 5;

/// A packed, immutable attribute list.
#[derive(Clone, Default, PartialEq)]
pub struct Attrs(Box<[u8]>);

/// One decoded attribute value, borrowing from [`Attrs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrValue<'a> {
    Str(&'a str),
    Int(i64),
    Double(f64),
    Bool(bool),
    /// Arrays, maps and bytes, rendered as JSON text at ingest.
    Json(&'a str),
}

/// Builds an [`Attrs`]; reuse one builder across spans to keep its buffer.
#[derive(Default)]
pub struct AttrsBuilder {
    buf: Vec<u8>,
}

impl AttrsBuilder {
    fn key(&mut self, key: Sym, tag: u8) {
        self.buf.extend_from_slice(&key.to_u32().to_le_bytes());
        self.buf.push(tag);
    }

    fn text(&mut self, text: &str) {
        let mut len = text.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                self.buf.push(byte);
                break;
            }
            self.buf.push(byte | 0x80);
        }
        self.buf.extend_from_slice(text.as_bytes());
    }

    pub fn str(&mut self, key: Sym, value: &str) {
        self.key(key, TAG_STR);
        self.text(value);
    }

    pub fn sym(&mut self, key: Sym, value: Sym) {
        self.key(key, TAG_SYM);
        self.buf.extend_from_slice(&value.to_u32().to_le_bytes());
    }

    pub fn int(&mut self, key: Sym, value: i64) {
        self.key(key, TAG_INT);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn double(&mut self, key: Sym, value: f64) {
        self.key(key, TAG_DOUBLE);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bool(&mut self, key: Sym, value: bool) {
        self.key(key, TAG_BOOL);
        self.buf.push(value as u8);
    }

    pub fn json(&mut self, key: Sym, value: &str) {
        self.key(key, TAG_JSON);
        self.text(value);
    }

    /// Takes what was pushed since the last call; the builder is empty again.
    pub fn finish(&mut self) -> Attrs {
        let attrs = Attrs(self.buf.as_slice().into());
        self.buf.clear();
        attrs
    }
}

impl Attrs {
    pub fn iter(&self) -> AttrIter<'_> {
        AttrIter { rest: &self.0 }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The packed encoding (for ordering and hashing; keys are process-local).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: Sym) -> Option<AttrValue<'_>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl std::fmt::Debug for Attrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

pub struct AttrIter<'a> {
    rest: &'a [u8],
}

impl<'a> AttrIter<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        head
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }

    fn text(&mut self) -> &'a str {
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let byte = self.take(1)[0];
            len |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        // Only `AttrsBuilder` writes these bytes, from `&str`s.
        std::str::from_utf8(self.take(len)).expect("attribute text written from a str")
    }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = (Sym, AttrValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let key = Sym::from_u32(self.u32());
        let tag = self.take(1)[0];
        let value = match tag {
            TAG_STR => AttrValue::Str(self.text()),
            TAG_SYM => AttrValue::Str(Sym::from_u32(self.u32()).as_str()),
            TAG_INT => AttrValue::Int(self.u64() as i64),
            TAG_DOUBLE => AttrValue::Double(f64::from_bits(self.u64())),
            TAG_BOOL => AttrValue::Bool(self.take(1)[0] != 0),
            _ => AttrValue::Json(self.text()),
        };
        Some((key, value))
    }
}

impl AttrValue<'_> {
    /// The value as JSON for the trace view.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            AttrValue::Str(s) => s.into(),
            AttrValue::Int(i) => i.into(),
            AttrValue::Double(d) => d.into(),
            AttrValue::Bool(b) => b.into(),
            AttrValue::Json(text) => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_round_trips() {
        let mut b = AttrsBuilder::default();
        let long = "x".repeat(300);
        b.str(Sym::new("url.full"), &long);
        b.sym(Sym::new("db.system"), Sym::new("postgresql"));
        b.int(Sym::new("http.response.status_code"), -504);
        b.double(Sym::new("ratio"), 0.25);
        b.bool(Sym::new("flag"), true);
        b.json(Sym::new("list"), "[1,2]");
        let attrs = b.finish();
        let got: Vec<_> = attrs.iter().collect();
        assert_eq!(got.len(), 6);
        assert_eq!(got[0].1, AttrValue::Str(&long));
        assert_eq!(got[1].1, AttrValue::Str("postgresql"));
        assert_eq!(got[2].1, AttrValue::Int(-504));
        assert_eq!(got[3].1, AttrValue::Double(0.25));
        assert_eq!(got[4].1, AttrValue::Bool(true));
        assert_eq!(got[5].1.to_json(), serde_json::json!([1, 2]));
        assert_eq!(
            attrs.get(Sym::new("db.system")),
            Some(AttrValue::Str("postgresql"))
        );
        assert!(b.finish().is_empty());
    }
}
