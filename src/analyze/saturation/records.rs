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
use crate::model::{url_host, Found, SpanKind, Sym, Trace};

/// Where a query ran: the database system, host and namespace (any may be
/// unknown).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DbTarget {
    pub system: Option<Sym>,
    pub address: Option<Sym>,
    pub namespace: Option<Sym>,
}

impl DbTarget {
    /// `system address/namespace`, for culprits and sentences: unknown parts are
    /// left out (`sqlite orders`, `postgresql db/shop`, `mysql` for a peer
    /// named only by `peer.service`), an unknown system alone is `?`.
    pub fn label(&self) -> String {
        let mut out = match (self.system, self.address) {
            (Some(system), Some(address)) => format!("{system} {address}"),
            (Some(system), None) => system.as_str().to_owned(),
            (None, Some(address)) => address.as_str().to_owned(),
            (None, None) => "?".to_owned(),
        };
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
    /// The call's `[start, end)` in unix ns.
    pub start_ns: u64,
    pub duration_ns: u64,
    /// Its time on the trace's critical path.
    pub critical_ns: u64,
    /// Time its span's events say it waited for a lock ([`lock_wait`]): 0
    /// when they say nothing.
    pub lock_wait_ns: u64,
}

impl QueryRecord {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.duration_ns
    }
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
    /// How long it held a connection, `[start, end)` in unix ns: from the end
    /// of the wait (the last acquire span charged to its first call, else the
    /// first call's start) to the end of its last call.
    pub hold: (u64, u64),
}

/// One SERVER span of a service instance (`service.instance.id`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestRecord {
    pub service: Sym,
    pub instance: Sym,
    pub operation: Sym,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The `[start, end)` of the span of another service that waited for it
    /// (the caller's CLIENT span): the time before the request's start is
    /// the transport and any queue in front of the instance.
    pub caller: Option<(u64, u64)>,
    /// Its self time ([`SaturationRecords::busy`]).
    busy: Slice,
    /// Its targets ([`SaturationRecords::uses`]).
    uses: Slice,
}

impl RequestRecord {
    /// A request without self time or targets yet
    /// ([`SaturationRecords::push_request`] adds them).
    pub fn new(
        (service, instance, operation): (Sym, Sym, Sym),
        (start_ns, end_ns): (u64, u64),
        caller: Option<(u64, u64)>,
    ) -> RequestRecord {
        RequestRecord {
            service,
            instance,
            operation,
            start_ns,
            end_ns,
            caller,
            busy: Slice::default(),
            uses: Slice::default(),
        }
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// Share of its time that is its own (no child span covers it).
    pub fn self_share(&self, records: &SaturationRecords) -> f64 {
        let own: u64 = records.busy(self).iter().map(|b| b.1 - b.0).sum();
        own as f64 / self.duration_ns().max(1) as f64
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

    /// Appends a request recorded elsewhere (a detect replica decoding the
    /// records a forwarded trace carries): `head` with its self-time
    /// intervals `busy` and its `uses`, in the order of their first calls.
    pub fn push_request(
        &mut self,
        mut head: RequestRecord,
        busy: &[(u64, u64)],
        uses: &[UseParts],
    ) {
        let busy_from = self.intervals.len();
        self.intervals.extend_from_slice(busy);
        head.busy = Slice::of(&self.intervals, busy_from);
        let uses_from = self.uses.len();
        for u in uses {
            let calls_from = self.intervals.len();
            self.intervals.extend_from_slice(&u.calls);
            self.uses.push(PoolUse {
                target: u.target,
                calls: Slice::of(&self.intervals, calls_from),
                wait_ns: u.wait_ns,
                explicit: u.explicit,
                hold: u.hold,
            });
        }
        head.uses = Slice::of(&self.uses, uses_from);
        self.requests.push(head);
    }

    /// A request's targets as [`SaturationRecords::push_request`] takes them.
    pub fn use_parts(&self, r: &RequestRecord) -> Vec<UseParts> {
        self.uses(r)
            .iter()
            .map(|u| UseParts {
                target: u.target,
                calls: self.calls(u).to_vec(),
                wait_ns: u.wait_ns,
                explicit: u.explicit,
                hold: u.hold,
            })
            .collect()
    }

    /// Appends every record of `other`.
    pub fn append(&mut self, other: &SaturationRecords) {
        self.queries.extend_from_slice(&other.queries);
        for r in &other.requests {
            self.push_request(*r, other.busy(r), &other.use_parts(r));
        }
    }
}

/// One target of a request, owned: what [`SaturationRecords::push_request`]
/// takes.
#[derive(Debug, Clone, PartialEq)]
pub struct UseParts {
    pub target: Target,
    /// Its calls, `[start, end)` in unix ns, by start.
    pub calls: Vec<(u64, u64)>,
    pub wait_ns: u64,
    pub explicit: bool,
    pub hold: (u64, u64),
}

/// Attribute keys read in the one pass, in [`saturation_records`]' order.
static KEYS: LazyLock<[Sym; 15]> = LazyLock::new(|| {
    [
        "db.system.name",
        "db.system",
        "db.query.text",
        "db.statement",
        "sql.query",
        "server.address",
        "net.peer.name",
        "db.namespace",
        "db.name",
        "service.instance.id",
        "db.client.connection.pool.name",
        "db.client.connections.pool.name",
        "peer.service",
        "url.full",
        "http.url",
    ]
    .map(Sym::new)
});

/// Entries the per-thread caches hold before they are cleared.
const CACHE_LIMIT: usize = 1 << 14;

thread_local! {
    /// Normalised shapes of recent statement texts: repeated statements (the
    /// common case: parameterised queries) are normalised once per thread.
    static SHAPES: RefCell<FxHashMap<Box<str>, Arc<str>>> = RefCell::default();
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The shape of a statement ([`normalize()`]), through the thread's cache.
pub(crate) fn shape_of(text: &str) -> Arc<str> {
    SHAPES.with(|cache| {
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
    })
}

/// How long a span's events say it waited for a lock: from an event saying it
/// is waiting (`Waiting for lock behind 2 transactions`, as HotROD's mysql
/// logs, or `lock wait ...`) to the next saying it acquired the lock, else to
/// the span's end.
pub fn lock_wait(trace: &Trace, span: u32) -> u64 {
    let mut total = 0;
    let mut waiting_since: Option<u64> = None;
    for e in trace.span(span).events() {
        let name = e.name.as_str().to_ascii_lowercase();
        if name.contains("waiting for lock") || name.contains("lock wait") {
            waiting_since.get_or_insert(e.time_ns);
        } else if name.contains("acquired lock") {
            if let Some(since) = waiting_since.take() {
                total += e.time_ns.saturating_sub(since);
            }
        }
    }
    if let Some(since) = waiting_since {
        total += trace.span(span).end_ns.saturating_sub(since);
    }
    total
}

/// What a span is to the request that contains it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// Work of the request: it covers time, it is not a wait.
    Work,
    /// Obtaining a connection ([`crate::analyze::checkouts`]).
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
/// system or carries a statement, is not a SERVER span and is not a checkout
/// ([`crate::analyze::checkouts`]); asynchronous spans are not requests nor calls,
/// and a span that repeats another's call ([`crate::analyze::layers`]) is
/// neither.
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

/// Records the database call `i` of `t` into `out`.
fn query(
    t: &AnalyzedTrace,
    i: u32,
    statement: Option<Arc<str>>,
    target: DbTarget,
    out: &mut SaturationRecords,
) {
    let trace = &t.trace;
    let span = trace.span(i);
    out.queries.push(QueryRecord {
        service: span.service,
        statement: statement.unwrap_or_else(|| normalize(span.operation.as_str()).into()),
        target,
        start_ns: trace.start(i),
        duration_ns: trace.end(i) - trace.start(i),
        critical_ns: t.path.critical_ns[i as usize],
        lock_wait_ns: if span.events().is_empty() {
            0
        } else {
            lock_wait(trace, i)
        },
    });
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
        if matches!(span.kind, SpanKind::Producer | SpanKind::Consumer) || t.layered[i as usize] {
            classes.push(Class::Work);
            continue;
        }
        if t.checkouts[i as usize] {
            classes.push(Class::Acquire);
            continue;
        }
        let [system, legacy_system, text, legacy_text, sql, address, legacy_address, namespace, legacy_namespace, instance, pool, legacy_pool, peer, url, legacy_url] =
            trace.arena.find(span.attrs, *KEYS);
        if span.kind == SpanKind::Server {
            if let Some(instance) = instance.and_then(Found::sym) {
                servers.push((i, instance));
            }
            classes.push(Class::Work);
            continue;
        }
        let statement = text.or(legacy_text).or(sql).and_then(Found::text);
        let system = system.or(legacy_system).and_then(Found::sym);
        let address = address.or(legacy_address).and_then(Found::sym);
        let pool = pool.or(legacy_pool).and_then(Found::sym).map(Target::Pool);
        if statement.is_some() || system.is_some() {
            let db = DbTarget {
                system,
                // HotROD's mysql names only its peer service.
                address: address.or_else(|| peer.and_then(Found::sym)),
                namespace: namespace.or(legacy_namespace).and_then(Found::sym),
            };
            query(t, i, statement.map(shape_of), db, out);
            classes.push(Class::Call(pool.unwrap_or(Target::Db(db))));
            continue;
        }
        let http = (span.kind == SpanKind::Client)
            .then(|| {
                let named = peer.and_then(Found::sym).or(address).or_else(|| {
                    url_host(url.or(legacy_url)?.text()?)
                        .map(|h| Sym::from_utf8_lossy(h.as_bytes()))
                });
                http_peer(trace, i, named)
            })
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
        let mut held_from: Option<u64> = None;
        for &(a, b) in acquires.iter() {
            let charged = calls.partition_point(|c| c.0 < a);
            if charged < calls.len() && calls[charged].2 == target {
                *explicit.get_or_insert(0) += b.min(calls[charged].0).saturating_sub(a);
                if charged == n {
                    held_from = held_from.max(Some(b.min(s)));
                }
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
        let held_to = out.intervals[calls_from..]
            .iter()
            .map(|c| c.1)
            .max()
            .unwrap_or(s);
        out.uses.push(PoolUse {
            target,
            calls: Slice::of(&out.intervals, calls_from),
            wait_ns,
            explicit: explicit.is_some(),
            hold: (held_from.unwrap_or(s), held_to),
        });
    }
    out.requests.push(RequestRecord {
        service: span.service,
        instance,
        operation: span.operation,
        start_ns: start,
        end_ns: end,
        caller: trace.parent[server as usize]
            .filter(|&p| trace.span(p).service != span.service)
            .map(|p| (trace.start(p), trace.end(p))),
        busy,
        uses: Slice::of(&out.uses, uses_from),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{analyze, testing};
    use crate::model::Span;

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
        assert_eq!(unknown.label(), "db");
    }

    fn span(id: u64, parent: u64, op: &str, kind: SpanKind, (s, e): (u64, u64)) -> Span {
        testing::span("orders", (id, parent), op, kind, (s * MS, e * MS))
    }

    fn records(spans: Vec<(Span, Vec<(&str, &str)>)>) -> SaturationRecords {
        saturation_records(&analyze(testing::trace(spans)))
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

        // Explicit: a checkout span 1..38 (SQLAlchemy's `connect`: the
        // database named, no statement) before the statement at 40; it is not
        // a query, and the connection is held from 38 to the statement's end.
        let mut statement = db.clone();
        statement.push(("db.query.text", "SELECT * FROM o WHERE id = $1"));
        let checkout = || {
            (
                span(2, 1, "connect", SpanKind::Client, (1, 38)),
                vec![("db.system.name", "postgresql")],
            )
        };
        let r = records(vec![
            (
                span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
                vec![instance],
            ),
            checkout(),
            (span(3, 1, "SELECT", SpanKind::Client, (40, 60)), statement),
        ]);
        let p = &r.uses(&r.requests[0])[0];
        assert_eq!((p.wait_ns, p.explicit), (37 * MS, true));
        assert_eq!(p.hold, (38 * MS, 60 * MS));
        assert_eq!(r.queries.len(), 1, "{:?}", r.queries);

        // The same span followed by no statement is a call of its own (a
        // command of a database without statements, such as Redis).
        let r = records(vec![
            (
                span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
                vec![instance],
            ),
            checkout(),
        ]);
        assert_eq!(r.queries.len(), 1, "{:?}", r.queries);
        assert!(!r.uses(&r.requests[0])[0].explicit);

        // A business span named like a wait is work, never a wait: the
        // request's time under it is covered, not queued.
        let r = records(vec![
            (
                span(1, 0, "POST /o", SpanKind::Server, (0, 70)),
                vec![instance],
            ),
            (span(2, 1, "checkout", SpanKind::Internal, (1, 38)), vec![]),
            (
                span(3, 1, "await_payment", SpanKind::Internal, (38, 39)),
                vec![],
            ),
            (span(4, 1, "SELECT", SpanKind::Client, (40, 60)), db.clone()),
        ]);
        let p = &r.uses(&r.requests[0])[0];
        assert_eq!((p.wait_ns, p.explicit), (2 * MS, false));

        // A SERVER span without an instance is not recorded.
        let r = records(vec![(
            span(1, 0, "GET /o", SpanKind::Server, (0, 70)),
            vec![],
        )]);
        assert!(r.requests.is_empty());
    }
}
