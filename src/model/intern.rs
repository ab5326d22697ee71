//! Process-wide string interning for the low-cardinality strings every span
//! repeats: service and operation names, attribute keys, and the values of the
//! semantic-convention attributes the detectors read (`db.system`, `http.route`...).
//!
//! A [`Sym`] is 4 bytes and compares in one instruction. The interner only grows;
//! high-cardinality text (statements, URLs, messages) is never interned but stored
//! inline in [`crate::model::AttrArena`].

use std::cell::RefCell;
use std::fmt;
use std::sync::LazyLock;

use lasso::{Spur, ThreadedRodeo};
use rustc_hash::FxHashMap;

static INTERNER: LazyLock<ThreadedRodeo> = LazyLock::new(ThreadedRodeo::new);

/// Entries a thread's lookup cache holds before it is cleared.
const CACHE_LIMIT: usize = 1 << 16;

thread_local! {
    /// A per-thread cache in front of the shared interner: the hot path hashes the
    /// bytes once and takes no lock.
    static CACHE: RefCell<FxHashMap<Box<[u8]>, Sym>> = RefCell::new(FxHashMap::default());
}

/// An interned string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(Spur);

impl Sym {
    pub fn new(text: &str) -> Sym {
        Sym(INTERNER.get_or_intern(text))
    }

    /// Interns UTF-8 bytes from the wire (invalid sequences become U+FFFD),
    /// through the calling thread's cache.
    pub fn from_utf8_lossy(bytes: &[u8]) -> Sym {
        Sym::cached(bytes).0
    }

    /// Like [`Sym::from_utf8_lossy`]; also says whether the thread's cache knew
    /// the bytes already (a miss is a value not seen lately on this thread).
    pub fn cached(bytes: &[u8]) -> (Sym, bool) {
        CACHE.with(|cache| {
            if let Some(&sym) = cache.borrow().get(bytes) {
                return (sym, true);
            }
            let sym = match std::str::from_utf8(bytes) {
                Ok(text) => Sym::new(text),
                Err(_) => Sym::new(&String::from_utf8_lossy(bytes)),
            };
            let mut cache = cache.borrow_mut();
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(bytes.into(), sym);
            (sym, false)
        })
    }

    /// The symbol for `text` if it was ever interned; never grows the interner,
    /// so user input (query strings) can be looked up safely.
    pub fn lookup(text: &str) -> Option<Sym> {
        INTERNER.get(text).map(Sym)
    }

    pub fn as_str(self) -> &'static str {
        INTERNER.resolve(&self.0)
    }

    /// The raw key, for compact encodings.
    pub(crate) fn to_u32(self) -> u32 {
        lasso::Key::into_usize(self.0) as u32
    }

    /// Inverse of [`Sym::to_u32`] for keys this process produced.
    pub(crate) fn from_u32(raw: u32) -> Sym {
        Sym(lasso::Key::try_from_usize(raw as usize).expect("key produced by Sym::to_u32"))
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl serde::Serialize for Sym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Sym {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Sym::new(&text))
    }
}
