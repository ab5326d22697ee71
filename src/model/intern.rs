//! Process-wide string interning for the low-cardinality strings every span
//! repeats: service and operation names, attribute keys, and the values of the
//! semantic-convention attributes the detectors read (`db.system`, `http.route`...).
//!
//! A [`Sym`] is 4 bytes and compares in one instruction. The interner only grows;
//! high-cardinality text (statements, URLs, messages) is never interned but stored
//! inline in [`crate::model::AttrArena`].
//!
//! What the wire brings is bounded: names first seen through [`Sym::cached`]
//! (every name and value ingest interns) count against [`set_wire_limit`]'s
//! bytes, each at its length plus [`ENTRY_OVERHEAD`]. Past the limit a new
//! name reads as [`OVER_LIMIT`] and is counted ([`usage`]): a client that puts
//! ids in span names degrades its own names instead of growing the process.

use std::cell::RefCell;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;

use parking_lot::RwLock;
use rustc_hash::FxHashMap;

/// The names, and their symbols. Resolving a symbol is the hot operation
/// (every detector reads names): it is an index into an append-only vector,
/// lock-free. Finding a name's symbol takes a read lock on the map, behind
/// each thread's cache; a new name takes the write lock, under which it is
/// pushed, so a symbol's number is its index.
struct Interner {
    ids: RwLock<FxHashMap<&'static str, Sym>>,
    names: boxcar::Vec<&'static str>,
}

impl Interner {
    fn get(&self, text: &str) -> Option<Sym> {
        self.ids.read().get(text).copied()
    }

    fn get_or_intern(&self, text: &str) -> Sym {
        if let Some(sym) = self.get(text) {
            return sym;
        }
        let mut ids = self.ids.write();
        if let Some(&sym) = ids.get(text) {
            return sym;
        }
        // Names are never freed: the interner only grows, within its limit.
        let name: &'static str = Box::leak(text.into());
        let sym = Sym::from_u32(self.names.push(name) as u32);
        ids.insert(name, sym);
        sym
    }

    fn resolve(&self, sym: Sym) -> &'static str {
        self.names[sym.to_u32() as usize]
    }
}

static INTERNER: LazyLock<Interner> = LazyLock::new(|| Interner {
    ids: RwLock::new(FxHashMap::default()),
    names: boxcar::Vec::new(),
});

/// What a name from the wire reads as once the limit is reached.
pub const OVER_LIMIT: &str = "hopscope.names_over_limit";

/// The interner's cost per name beyond its bytes (map entry, span, key).
pub const ENTRY_OVERHEAD: usize = 32;

/// Bytes of names from the wire the interner may hold ([`set_wire_limit`]).
static WIRE_LIMIT: AtomicUsize = AtomicUsize::new(64 << 20);
static WIRE_BYTES: AtomicUsize = AtomicUsize::new(0);
static WIRE_NAMES: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);
static OVER: LazyLock<Sym> = LazyLock::new(|| Sym::new(OVER_LIMIT));

/// Sets the bytes the interner may hold for names from the wire (the daemon
/// does, from `names_max_mib`); names already held stay.
pub fn set_wire_limit(bytes: usize) {
    WIRE_LIMIT.store(bytes, Ordering::Relaxed);
}

/// How much of its limit the interner uses, and how many new names it refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct InternerUsage {
    /// Distinct names interned from the wire.
    pub names: usize,
    /// Their cost in bytes, overhead included.
    pub bytes: usize,
    /// The limit on `bytes`.
    pub limit_bytes: usize,
    /// New names read as [`OVER_LIMIT`] because the limit was reached.
    pub names_refused: u64,
}

pub fn usage() -> InternerUsage {
    InternerUsage {
        names: WIRE_NAMES.load(Ordering::Relaxed),
        bytes: WIRE_BYTES.load(Ordering::Relaxed),
        limit_bytes: WIRE_LIMIT.load(Ordering::Relaxed),
        names_refused: REFUSED.load(Ordering::Relaxed),
    }
}

/// Entries a thread's lookup cache holds before it is cleared.
const CACHE_LIMIT: usize = 1 << 16;

thread_local! {
    /// A per-thread cache in front of the shared interner: the hot path hashes the
    /// bytes once and takes no lock.
    static CACHE: RefCell<FxHashMap<Box<[u8]>, Sym>> = RefCell::new(FxHashMap::default());
}

/// An interned string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

impl Sym {
    pub fn new(text: &str) -> Sym {
        INTERNER.get_or_intern(text)
    }

    /// Interns UTF-8 bytes from the wire (invalid sequences become U+FFFD),
    /// through the calling thread's cache.
    pub fn from_utf8_lossy(bytes: &[u8]) -> Sym {
        Sym::cached(bytes).0
    }

    /// The symbol of bytes this thread's cache knows, without interning.
    pub(crate) fn cache_hit(bytes: &[u8]) -> Option<Sym> {
        CACHE.with(|cache| cache.borrow().get(bytes).copied())
    }

    /// Like [`Sym::from_utf8_lossy`]; also says whether the thread's cache knew
    /// the bytes already (a miss is a value not seen lately on this thread).
    pub fn cached(bytes: &[u8]) -> (Sym, bool) {
        CACHE.with(|cache| {
            if let Some(&sym) = cache.borrow().get(bytes) {
                return (sym, true);
            }
            let sym = match std::str::from_utf8(bytes) {
                Ok(text) => Sym::bounded(text),
                Err(_) => Sym::bounded(&String::from_utf8_lossy(bytes)),
            };
            let mut cache = cache.borrow_mut();
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(bytes.into(), sym);
            (sym, false)
        })
    }

    /// Interns a name from the wire within the limit, or reads it as
    /// [`OVER_LIMIT`]. (Concurrent first sightings of one name may both count
    /// it: the count errs high, never low.)
    fn bounded(text: &str) -> Sym {
        if let Some(sym) = INTERNER.get(text) {
            return sym;
        }
        let cost = text.len() + ENTRY_OVERHEAD;
        let held = WIRE_BYTES.fetch_add(cost, Ordering::Relaxed);
        if held + cost > WIRE_LIMIT.load(Ordering::Relaxed) {
            WIRE_BYTES.fetch_sub(cost, Ordering::Relaxed);
            REFUSED.fetch_add(1, Ordering::Relaxed);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    limit_bytes = WIRE_LIMIT.load(Ordering::Relaxed),
                    "too many distinct names (services, operations, attribute keys): new ones read as {OVER_LIMIT}; see names_max_mib"
                );
            }
            return *OVER;
        }
        WIRE_NAMES.fetch_add(1, Ordering::Relaxed);
        Sym::new(text)
    }

    /// The symbol for `text` if it was ever interned; never grows the interner,
    /// so user input (query strings) can be looked up safely.
    pub fn lookup(text: &str) -> Option<Sym> {
        INTERNER.get(text)
    }

    pub fn as_str(self) -> &'static str {
        INTERNER.resolve(self)
    }

    /// The raw key (the name's index), for compact encodings.
    pub(crate) fn to_u32(self) -> u32 {
        self.0.get() - 1
    }

    /// Inverse of [`Sym::to_u32`] for keys this process produced.
    pub(crate) fn from_u32(raw: u32) -> Sym {
        Sym(NonZeroU32::new(raw.wrapping_add(1)).expect("key produced by Sym::to_u32"))
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
