//! What the saturation detectors keep of one analyzed trace
//! ([`SaturationRecords`]): one [`QueryRecord`] per database call, and one
//! [`RequestRecord`] per SERVER span of a known `service.instance.id` with its
//! self time and, per downstream target (a named pool, a database, an HTTP
//! peer), its calls and the wait before the first.
//!
//! Everything comes out of one pass over each span's attributes, which
//! classifies the span ([`Class`]); the request records then walk each
//! request's own spans with those classes, no attribute read twice. The
//! records of a trace share three flat vectors instead of a vector per request.

use std::cell::RefCell;
use std::sync::{Arc, LazyLock};

use rustc_hash::FxHashMap;

use super::normalize::normalize;
use crate::analyze::AnalyzedTrace;
use crate::model::{Found, SpanKind, Sym, Trace};

/// Where a query ran: the database system, host and namespace (any may be
/// unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DbTarget {
    pub system: Option<Sym>,
    pub address: Option<Sym>,
    pub namespace: Option<Sym>,
}

impl DbTarget {
    /// `system address/namespace`, for culprits and sentences: unknown parts are
    /// left out (`sqlite orders`, `postgresql db/shop`), an unknown system is `?`.
    pub fn label(&self) -> String {
        let mut out = self.system.map_or("?", |s| s.as_str()).to_owned();
        if let Some(address) = self.address {
            out.push(' ');
            out.push_str(address.as_str());
        }
        if let Some(ns) = self.namespace {
            out.push(if self.address.is_some() { '/' } else { ' ' });
            out.push_str(ns.as_str());
        }
        out
    }

    /// An order that does not depend on interning order.
    pub fn sort_key(&self) -> [&'static str; 3] {
        [self.system, self.address, self.namespace].map(|s| s.map_or("", |s| s.as_str()))
    }
}

/// What a pool connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A named pool (`db.client.connection.pool.name`).
    Pool(Sym),
    Db(DbTarget),
    /// An HTTP (or RPC) peer: the callee service or host.
    Http(Sym),
}

impl Target {
    /// For culprits and sentences: `pool NAME`, [`DbTarget::label`] or
    /// `http PEER`.
    pub fn label(&self) -> String {
        match self {
            Target::Pool(name) => format!("pool {name}"),
            Target::Db(db) => db.label(),
            Target::Http(peer) => format!("http {peer}"),
        }
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

/// `start..start + len` in one of [`SaturationRecords`]' flat vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Slice {
    start: u32,
    len: u32,
}

impl Slice {
    fn of<T>(v: &[T], from: usize) -> Slice {
        Slice {
            start: from as u32,
            len: (v.len() - from) as u32,
        }
    }

    fn get<T>(self, v: &[T]) -> &[T] {
        &v[self.start as usize..(self.start + self.len) as usize]
    }
}

/// One request's use of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolUse {
    pub target: Target,
    /// Its calls ([`SaturationRecords::calls`]).
    calls: Slice,
    /// How long it waited before its first call: the explicit acquire spans
    /// before its calls, else the time between the request's start and its
    /// first call that no other span of the request covers ([`wait_before`]).
    pub wait_ns: u64,
    /// `wait_ns` comes from acquire/checkout/connect spans.
    pub explicit: bool,
}

/// One SERVER span of a service instance (`service.instance.id`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRecord {
    pub service: Sym,
    pub instance: Sym,
    pub operation: Sym,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Its self time ([`SaturationRecords::busy`]).
    busy: Slice,
    /// Its targets ([`SaturationRecords::uses`]).
    uses: Slice,
}

impl RequestRecord {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// The saturation records of one trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SaturationRecords {
    pub queries: Vec<QueryRecord>,
    pub requests: Vec<RequestRecord>,
    uses: Vec<PoolUse>,
    /// `[start, end)` in unix ns: self-time intervals and calls.
    intervals: Vec<(u64, u64)>,
}

impl SaturationRecords {
    /// The parts of a request's `[start, end)` no direct child covers, in order.
    pub fn busy(&self, r: &RequestRecord) -> &[(u64, u64)] {
        r.busy.get(&self.intervals)
    }

    /// A request's targets, in the order of their first calls.
    pub fn uses(&self, r: &RequestRecord) -> &[PoolUse] {
        r.uses.get(&self.uses)
    }

    /// A use's calls, `[start, end)` in unix ns, by start.
    pub fn calls(&self, u: &PoolUse) -> &[(u64, u64)] {
        u.calls.get(&self.intervals)
    }

    /// Records held, as the window counts them: queries and requests (a
    /// request's intervals are part of it).
    pub fn len(&self) -> usize {
        self.queries.len() + self.requests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Attribute keys read in the one pass, in [`saturation_records`]' order.
static KEYS: LazyLock<[Sym; 11]> = LazyLock::new(|| {
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
        "db.client.connection.pool.name",
        "peer.service",
    ]
    .map(Sym::new)
});

/// Words in an operation name that make a span a wait for a connection or a lock.
const ACQUIRE_WORDS: [&str; 6] = [
    "acquire",
    "checkout",
    "get_connection",
    "connect",
    "pool",
    "wait",
];

/// Entries the per-thread caches hold before they are cleared.
const CACHE_LIMIT: usize = 1 << 14;

thread_local! {
    /// Normalised shapes of recent statement texts: repeated statements (the
    /// common case: parameterised queries) are normalised once per thread.
    static SHAPES: RefCell<FxHashMap<Box<str>, Arc<str>>> = RefCell::default();
    /// Whether an operation name says "acquire", per name.
    static ACQUIRE_NAMES: RefCell<FxHashMap<Sym, bool>> = RefCell::default();
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The shape of a statement, through the thread's cache.
fn shape(statement: Found<'_>) -> Option<Arc<str>> {
    let text = statement.text()?;
    Some(SHAPES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(shape) = cache.get(text) {
            return shape.clone();
        }
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        let shape: Arc<str> = normalize(text).into();
        cache.insert(text.into(), shape.clone());
        shape
    }))
}

fn names_acquire(operation: Sym) -> bool {
    ACQUIRE_NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if names.len() >= CACHE_LIMIT {
            names.clear();
        }
        *names.entry(operation).or_insert_with(|| {
            let name = operation.as_str().to_ascii_lowercase();
            ACQUIRE_WORDS.iter().any(|w| name.contains(w))
        })
    })
}

/// What a span is to the request that contains it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Work of the request: it covers time, it is not a wait.
    Work,
    /// A wait for a connection or a lock: named so, not SERVER, no statement,
    /// no SERVER child.
    Acquire,
    /// A call to a pooled target.
    Call(Target),
}

/// The callee of a CLIENT span: its SERVER child of another service, else the
/// named peer.
fn http_peer(trace: &Trace, span: u32, named: Option<Sym>) -> Option<Sym> {
    let s = trace.span(span);
    trace
        .children(span)
        .iter()
        .map(|&c| trace.span(c))
        .find(|c| c.kind == SpanKind::Server && c.service != s.service)
        .map(|c| c.service)
        .or(named)
}

/// Length of the union of `intervals` (sorted here) clipped to `[from, to)`.
fn covered(intervals: &mut [(u64, u64)], from: u64, to: u64) -> u64 {
    intervals.sort_unstable();
    let (mut total, mut reach) = (0, from);
    for &(s, e) in intervals.iter() {
        let (s, e) = (s.max(reach), e.min(to));
        if e > s {
            total += e - s;
            reach = e;
        }
    }
    total
}

/// The wait before a first call at `first_call` in a request that started at
/// `start`: the part of `[start, first_call)` that none of the request's other
/// spans (`others`, reordered here) covers.
pub fn wait_before(start: u64, first_call: u64, others: &mut [(u64, u64)]) -> u64 {
    first_call.saturating_sub(start) - covered(others, start, first_call)
}

/// Scratch space reused across traces (per thread): the records are built
/// here and copied out at their exact size.
#[derive(Default)]
struct Scratch {
    out: SaturationRecords,
    classes: Vec<Class>,
    /// SERVER spans of known instances.
    servers: Vec<(u32, Sym)>,
    /// (start, end, target) of the request's calls.
    calls: Vec<(u64, u64, Target)>,
    acquires: Vec<(u64, u64)>,
    others: Vec<(u64, u64)>,
    before: Vec<(u64, u64)>,
    stack: Vec<u32>,
}

/// The database calls of one trace and its SERVER spans of known instances
/// with their targets. A span is a database call when it names a database
/// system or carries a statement, is not a SERVER span and is not an acquire
/// span; asynchronous spans are not requests nor calls.
pub fn saturation_records(t: &AnalyzedTrace) -> SaturationRecords {
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        classify(t, scratch);
        let servers = std::mem::take(&mut scratch.servers);
        for &server in &servers {
            request(&t.trace, server, scratch);
        }
        scratch.servers = servers;
        let out = &mut scratch.out;
        SaturationRecords {
            queries: out.queries.drain(..).collect(),
            requests: out.requests.drain(..).collect(),
            uses: out.uses.drain(..).collect(),
            intervals: out.intervals.drain(..).collect(),
        }
    })
}

/// Classifies every span of the trace into `scratch.classes`, records its
/// queries into `scratch.out` and lists its SERVER spans of known instances.
fn classify(t: &AnalyzedTrace, scratch: &mut Scratch) {
    let trace = &t.trace;
    let Scratch {
        out,
        classes,
        servers,
        ..
    } = scratch;
    classes.clear();
    servers.clear();
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        if matches!(span.kind, SpanKind::Producer | SpanKind::Consumer) {
            classes.push(Class::Work);
            continue;
        }
        let [system, legacy_system, text, legacy_text, address, legacy_address, namespace, legacy_namespace, instance, pool, peer] =
            trace.arena.find(span.attrs, *KEYS);
        if span.kind == SpanKind::Server {
            if let Some(instance) = instance.and_then(Found::sym) {
                servers.push((i, instance));
            }
            classes.push(Class::Work);
            continue;
        }
        let statement = text.or(legacy_text);
        if statement.is_none()
            && !trace
                .children(i)
                .iter()
                .any(|&c| trace.span(c).kind == SpanKind::Server)
            && names_acquire(span.operation)
        {
            classes.push(Class::Acquire);
            continue;
        }
        let address = address.or(legacy_address).and_then(Found::sym);
        let pool = pool.and_then(Found::sym).map(Target::Pool);
        let system = system.or(legacy_system).and_then(Found::sym);
        if statement.is_some() || system.is_some() {
            let db = DbTarget {
                system,
                address,
                namespace: namespace.or(legacy_namespace).and_then(Found::sym),
            };
            out.queries.push(QueryRecord {
                service: span.service,
                statement: statement
                    .and_then(shape)
                    .unwrap_or_else(|| normalize(span.operation.as_str()).into()),
                target: db,
                duration_ns: trace.end(i) - trace.start(i),
                critical_ns: t.path.critical_ns[i as usize],
            });
            classes.push(Class::Call(pool.unwrap_or(Target::Db(db))));
            continue;
        }
        let http = (span.kind == SpanKind::Client)
            .then(|| http_peer(trace, i, peer.and_then(Found::sym).or(address)))
            .flatten()
            .map(Target::Http);
        classes.push(pool.or(http).map_or(Class::Work, Class::Call));
    }
}

/// Appends the record of the SERVER span `server` of `instance` to
/// `scratch.out`: its self time, and its calls by target with the wait before
/// each target's first.
fn request(trace: &Trace, (server, instance): (u32, Sym), scratch: &mut Scratch) {
    let Scratch {
        out,
        classes,
        calls,
        acquires,
        others,
        before,
        stack,
        ..
    } = scratch;
    let span = trace.span(server);
    let (start, end) = (trace.start(server), trace.end(server));
    // Self time. Children are sorted by start, and clipping keeps that order.
    let busy_from = out.intervals.len();
    let mut cursor = start;
    for (s, e) in trace
        .children(server)
        .iter()
        .map(|&c| (trace.start(c).max(start), trace.end(c).min(end)))
    {
        if s > cursor {
            out.intervals.push((cursor, s));
        }
        cursor = cursor.max(e);
    }
    if end > cursor {
        out.intervals.push((cursor, end));
    }
    let busy = Slice::of(&out.intervals, busy_from);

    // The request's own spans below it: calls, acquire spans, other work.
    calls.clear();
    acquires.clear();
    others.clear();
    stack.clear();
    stack.extend_from_slice(trace.children(server));
    while let Some(c) = stack.pop() {
        let s = trace.span(c);
        if s.service != span.service || s.kind == SpanKind::Server {
            continue;
        }
        let interval = (trace.start(c), trace.end(c));
        match classes[c as usize] {
            Class::Call(target) => {
                calls.push((interval.0, interval.1, target));
                continue;
            }
            Class::Acquire => acquires.push(interval),
            Class::Work => others.push(interval),
        }
        stack.extend_from_slice(trace.children(c));
    }
    calls.sort_unstable_by_key(|c| (c.0, c.1));

    // Group the calls by target, in order of first call; explicit waits are
    // charged to the first call that starts at or after the acquire span.
    let uses_from = out.uses.len();
    for n in 0..calls.len() {
        let (s, _, target) = calls[n];
        if out.uses[uses_from..].iter().any(|u| u.target == target) {
            continue;
        }
        let mut explicit = None;
        for &(a, b) in acquires.iter() {
            let charged = calls.partition_point(|c| c.0 < a);
            if charged < calls.len() && calls[charged].2 == target {
                *explicit.get_or_insert(0) += b.min(calls[charged].0).saturating_sub(a);
            }
        }
        let wait_ns = explicit.unwrap_or_else(|| {
            before.clear();
            before.extend_from_slice(others);
            before.extend_from_slice(acquires);
            before.extend(calls[..n].iter().map(|c| (c.0, c.1)));
            wait_before(start, s, before)
        });
        let calls_from = out.intervals.len();
        out.intervals.extend(
            calls[n..]
                .iter()
                .filter(|c| c.2 == target)
                .map(|c| (c.0, c.1)),
        );
        out.uses.push(PoolUse {
            target,
            calls: Slice::of(&out.intervals, calls_from),
            wait_ns,
            explicit: explicit.is_some(),
        });
    }
    out.requests.push(RequestRecord {
        service: span.service,
        instance,
        operation: span.operation,
        start_ns: start,
        end_ns: end,
        busy,
        uses: Slice::of(&out.uses, uses_from),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{AttrArena, Span, SpanId, SpanSet, TraceId};

    const MS: u64 = 1_000_000;

    #[test]
    fn the_wait_is_the_time_before_the_first_call_no_other_span_covers() {
        // Request at 0; an auth call 2..10 ms; first DB call at 50 ms.
        assert_eq!(wait_before(0, 50 * MS, &mut [(2 * MS, 10 * MS)]), 42 * MS);
        // Overlapping others count once.
        assert_eq!(
            wait_before(0, 50, &mut [(40, 60), (0, 20), (10, 30)]),
            10,
            "30..40 is uncovered"
        );
        assert_eq!(
            wait_before(100, 90, &mut []),
            0,
            "a call before the request"
        );
    }

    #[test]
    fn db_targets_are_labelled_by_their_known_parts() {
        let sym = |s: &str| Some(Sym::new(s));
        let db = DbTarget {
            system: sym("postgresql"),
            address: sym("db"),
            namespace: sym("shop"),
        };
        assert_eq!(db.label(), "postgresql db/shop");
        let sqlite = DbTarget {
            address: None,
            system: sym("sqlite"),
            namespace: sym("orders"),
        };
        assert_eq!(sqlite.label(), "sqlite orders");
        let unknown = DbTarget {
            system: None,
            address: sym("db"),
            namespace: None,
        };
        assert_eq!(unknown.label(), "? db");
    }

    fn span(id: u64, parent: u64, op: &str, kind: SpanKind, (s, e): (u64, u64)) -> Span {
        Span::new(
            SpanId::from_u64(id).unwrap(),
            SpanId::from_u64(parent),
            "orders",
            op,
            kind,
            (s * MS, e * MS),
        )
    }

    fn records(spans: Vec<(Span, Vec<(&str, &str)>)>) -> SaturationRecords {
        let mut set = SpanSet::default();
        let mut scratch = AttrArena::default();
        for (mut s, attrs) in spans {
            let mark = scratch.mark();
            for (k, v) in attrs {
                scratch.sym(Sym::new(k), Sym::new(v));
            }
            s.attrs = scratch.finish(mark);
            set.push(s, &mut scratch);
            scratch.clear();
        }
        saturation_records(&analyze(
            assemble(TraceId::from_bytes(&[7; 16]).unwrap(), set).unwrap(),
        ))
    }

    #[test]
    fn a_request_waits_for_a_connection_explicitly_or_before_its_first_query() {
        let instance = ("service.instance.id", "orders-1");
        let db = vec![
            ("db.system.name", "postgresql"),
            ("server.address", "db"),
            ("db.namespace", "shop"),
        ];
        // Implicit: parse 0..2, auth span 2..5, nothing until the query at 40.
        let r = records(vec![
            (
                span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
                vec![instance],
            ),
            (span(2, 1, "auth", SpanKind::Internal, (2, 5)), vec![]),
            (span(3, 1, "SELECT", SpanKind::Client, (40, 60)), db.clone()),
            (span(4, 1, "SELECT", SpanKind::Client, (60, 65)), db.clone()),
        ]);
        let req = &r.requests[0];
        assert_eq!(
            r.busy(req),
            [(0, 2 * MS), (5 * MS, 40 * MS), (65 * MS, 70 * MS)]
        );
        let [p] = r.uses(req) else {
            panic!("one target: {:?}", r.uses(req))
        };
        assert_eq!(p.target.label(), "postgresql db/shop");
        assert_eq!(
            (p.wait_ns, p.explicit, r.calls(p).len()),
            (37 * MS, false, 2)
        );
        assert_eq!(r.queries.len(), 2);
        assert_eq!(r.len(), 2 + 1);

        // Explicit: a pool checkout span 1..38 before the query at 40; it is
        // not a query even though it names the database.
        let r = records(vec![
            (
                span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
                vec![instance],
            ),
            (
                span(2, 1, "pool.acquire", SpanKind::Internal, (1, 38)),
                vec![("db.system.name", "postgresql")],
            ),
            (span(3, 1, "SELECT", SpanKind::Client, (40, 60)), db),
        ]);
        let p = &r.uses(&r.requests[0])[0];
        assert_eq!((p.wait_ns, p.explicit), (37 * MS, true));
        assert_eq!(r.queries.len(), 1, "{:?}", r.queries);

        // A SERVER span without an instance is not recorded.
        let r = records(vec![(
            span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
            vec![],
        )]);
        assert!(r.requests.is_empty());
    }
}
