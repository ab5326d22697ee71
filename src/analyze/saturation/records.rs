//! What the saturation detectors keep of one analyzed trace: one
//! [`QueryRecord`] per database call and one [`ServerRecord`] per SERVER span of
//! a known instance.

use std::sync::{Arc, LazyLock};

use super::normalize::normalize;
use crate::analyze::AnalyzedTrace;
use crate::model::{AttrValue, Semantics, SpanKind, Sym};

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

static KEYS: LazyLock<[Sym; 5]> = LazyLock::new(|| {
    [
        "db.system.name",
        "db.system",
        "db.query.text",
        "db.statement",
        "service.instance.id",
    ]
    .map(Sym::new)
});

/// The database calls and instance-tagged SERVER spans of one trace. A span is
/// a database call when it names a database system or carries a statement and
/// is not a SERVER span; asynchronous spans are not requests.
pub fn saturation_records(t: &AnalyzedTrace) -> (Vec<QueryRecord>, Vec<ServerRecord>) {
    let trace = &t.trace;
    let [system, legacy_system, text, legacy_text, instance_key] = *KEYS;
    let (mut queries, mut servers) = (Vec::new(), Vec::new());
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        let range = span.attrs;
        if span.kind == SpanKind::Server {
            if let Some(instance) = trace.arena.get_sym(range, instance_key) {
                servers.push(ServerRecord {
                    service: span.service,
                    instance,
                    start_ns: trace.start(i),
                    duration_ns: trace.end(i) - trace.start(i),
                });
            }
            continue;
        }
        if matches!(span.kind, SpanKind::Producer | SpanKind::Consumer) {
            continue;
        }
        let statement =
            [text, legacy_text]
                .into_iter()
                .find_map(|k| match trace.arena.get(range, k) {
                    Some(AttrValue::Str(s)) => Some(s),
                    _ => None,
                });
        let has_system = trace.arena.get_sym(range, system).is_some()
            || trace.arena.get_sym(range, legacy_system).is_some();
        if statement.is_none() && !has_system {
            continue;
        }
        let sem = Semantics::of(span, &trace.arena);
        queries.push(QueryRecord {
            service: span.service,
            statement: normalize(statement.unwrap_or(span.operation.as_str())).into(),
            target: DbTarget {
                system: sem.db_system,
                address: sem.server_address,
                namespace: sem.db_namespace,
            },
            duration_ns: trace.end(i) - trace.start(i),
            critical_ns: t.path.critical_ns[i as usize],
        });
    }
    (queries, servers)
}
