//! What the saturation detectors keep of one analyzed trace: one
//! [`QueryRecord`] per database call and one [`ServerRecord`] per SERVER span of
//! a known instance.

use std::sync::{Arc, LazyLock};

use super::normalize::normalize;
use crate::analyze::AnalyzedTrace;
use crate::model::{Found, SpanKind, Sym};

/// Where a query ran: the database system, host and namespace (any may be
/// unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbTarget {
    pub system: Option<Sym>,
    pub address: Option<Sym>,
    pub namespace: Option<Sym>,
}

impl DbTarget {
    /// `system address/namespace`, for culprits and sentences (`?` for unknown
    /// parts).
    pub fn label(&self) -> String {
        let part = |s: Option<Sym>| s.map_or("?", |s| s.as_str());
        let mut out = format!("{} {}", part(self.system), part(self.address));
        if let Some(ns) = self.namespace {
            out.push('/');
            out.push_str(ns.as_str());
        }
        out
    }

    /// An order that does not depend on interning order.
    pub fn sort_key(&self) -> [&'static str; 3] {
        [self.system, self.address, self.namespace].map(|s| s.map_or("", |s| s.as_str()))
    }
}

/// One database call of one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryRecord {
    /// The calling service.
    pub service: Sym,
    /// The normalised statement ([`super::normalize()`]); the span's name when
    /// it carries no statement.
    pub statement: Arc<str>,
    pub target: DbTarget,
    pub duration_ns: u64,
    /// Its time on the trace's critical path.
    pub critical_ns: u64,
}

/// One SERVER span of a service instance (`service.instance.id`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerRecord {
    pub service: Sym,
    pub instance: Sym,
    pub start_ns: u64,
    pub duration_ns: u64,
}

static KEYS: LazyLock<[Sym; 9]> = LazyLock::new(|| {
    [
        "db.system.name",
        "db.system",
        "db.query.text",
        "db.statement",
        "server.address",
        "net.peer.name",
        "db.namespace",
        "db.name",
        "service.instance.id",
    ]
    .map(Sym::new)
});

/// Entries the per-thread statement cache holds before it is cleared.
const SHAPE_CACHE_LIMIT: usize = 1 << 14;

thread_local! {
    /// Normalised shapes of recent statement texts: repeated statements (the
    /// common case: parameterised queries) are normalised once per thread.
    static SHAPES: std::cell::RefCell<rustc_hash::FxHashMap<Box<str>, Arc<str>>> =
        std::cell::RefCell::new(rustc_hash::FxHashMap::default());
}

/// The shape of a statement, through the thread's cache.
fn shape(statement: Found<'_>) -> Option<Arc<str>> {
    let text = statement.text()?;
    Some(SHAPES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(shape) = cache.get(text) {
            return shape.clone();
        }
        if cache.len() >= SHAPE_CACHE_LIMIT {
            cache.clear();
        }
        let shape: Arc<str> = normalize(text).into();
        cache.insert(text.into(), shape.clone());
        shape
    }))
}

/// The database calls and instance-tagged SERVER spans of one trace. A span is
/// a database call when it names a database system or carries a statement and
/// is not a SERVER span; asynchronous spans are not requests. One pass over
/// each span's attributes reads everything needed.
pub fn saturation_records(t: &AnalyzedTrace) -> (Vec<QueryRecord>, Vec<ServerRecord>) {
    let trace = &t.trace;
    let (mut queries, mut servers) = (Vec::new(), Vec::new());
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        if matches!(span.kind, SpanKind::Producer | SpanKind::Consumer) {
            continue;
        }
        let [system, legacy_system, text, legacy_text, address, legacy_address, namespace, legacy_namespace, instance] =
            trace.arena.find(span.attrs, *KEYS);
        if span.kind == SpanKind::Server {
            if let Some(instance) = instance.and_then(Found::sym) {
                servers.push(ServerRecord {
                    service: span.service,
                    instance,
                    start_ns: trace.start(i),
                    duration_ns: trace.end(i) - trace.start(i),
                });
            }
            continue;
        }
        let statement = text.or(legacy_text).and_then(shape);
        let system = system.or(legacy_system).and_then(Found::sym);
        if statement.is_none() && system.is_none() {
            continue;
        }
        queries.push(QueryRecord {
            service: span.service,
            statement: statement.unwrap_or_else(|| normalize(span.operation.as_str()).into()),
            target: DbTarget {
                system,
                address: address.or(legacy_address).and_then(Found::sym),
                namespace: namespace.or(legacy_namespace).and_then(Found::sym),
            },
            duration_ns: trace.end(i) - trace.start(i),
            critical_ns: t.path.critical_ns[i as usize],
        });
    }
    (queries, servers)
}
