//! The calls of one trace, as the anti-pattern detectors read them: one row
//! per logical call with what it called, its visible arguments, the span it
//! was made under and its time on the critical path.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use crate::analyze::saturation::{shape_of, DbTarget};
use crate::analyze::{remote_server, AnalyzedTrace};
use crate::model::{named_peer, url_host, AttrValue, Found, SpanKind, StatusCode, Sym, Trace};

/// What a call reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum CallKind {
    Db,
    /// A key-value store: redis, memcached (its command is its shape).
    Cache,
    Http,
    Rpc,
    Message,
    Other,
}

/// What a call reached: a service (its SERVER span's, its own tracer's, or
/// a named peer), or a database as the other detectors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Callee {
    Service(Sym),
    Db(DbTarget),
}

impl Callee {
    /// The callee as a culprit's peer (a database's label is interned only
    /// here, when a finding names it).
    pub fn peer(self) -> Sym {
        match self {
            Callee::Service(s) => s,
            Callee::Db(db) => Sym::new(&db.label()),
        }
    }
}

impl std::fmt::Display for Callee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Callee::Service(s) => f.write_str(s.as_str()),
            Callee::Db(db) => f.write_str(&db.label()),
        }
    }
}

/// One logical call; its text borrows from the trace (`'t`).
#[derive(Debug, Clone)]
pub(super) struct Call<'t> {
    /// The span that records the call.
    pub span: u32,
    /// The child of `parent` that holds it: the span itself, or the outermost
    /// wrapper that holds nothing else.
    pub top: u32,
    /// The span it was made under.
    pub parent: u32,
    /// The service that made it: `parent`'s.
    pub caller: Sym,
    /// The service, database or host it called.
    pub callee: Option<Callee>,
    pub kind: CallKind,
    /// What it called, without its arguments.
    pub shape: Arc<str>,
    /// Its arguments where the span shows them: a statement's literals, a
    /// URL with its query, a key; `None` when they are placeholders or absent.
    pub arguments: Option<Cow<'t, str>>,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The critical time of `top` and everything under it.
    pub critical_ns: u64,
    /// It ended in an error or a timeout.
    pub failed: bool,
    pub timed_out: bool,
    /// It changes something (a write statement, transaction control, a POST,
    /// a cache write, a message): calls around it may depend on its order.
    pub writes: bool,
    /// How finely its start was stamped: 1 ms for a start in whole
    /// milliseconds (Node's and browsers' SDKs take `Date.now()` and time the
    /// span with a finer clock), 1 µs in whole microseconds (Jaeger, Zipkin),
    /// else 0.
    pub resolution_ns: u64,
}

impl Call<'_> {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// The part of the call that surely overlaps whatever ran then: its
    /// stamped times with the end moved back by the stamps' resolution. Two
    /// calls stamped in whole milliseconds, one right after the other, both
    /// "start at 28 ms"; only a call that ran more than a millisecond past
    /// another's start surely ran beside it.
    pub fn sure(&self) -> (u64, u64) {
        (
            self.start_ns,
            self.end_ns
                .saturating_sub(self.resolution_ns)
                .max(self.start_ns),
        )
    }

    /// The callee as a culprit's peer.
    pub fn peer(&self) -> Option<Sym> {
        self.callee.map(Callee::peer)
    }

    /// "postgresql 10.0.0.5/shop", or "?" when nothing names the callee.
    pub fn callee_label(&self) -> String {
        self.callee
            .map_or_else(|| "?".to_owned(), |c| c.to_string())
    }

    /// Calls of one shape to one callee are the same call.
    pub fn same_call(&self, other: &Call<'_>) -> bool {
        self.caller == other.caller && self.callee == other.callee && self.shape == other.shape
    }
}

/// The calls of one trace, in span order.
pub(super) struct Calls<'t> {
    pub calls: Vec<Call<'t>>,
}

/// The keys every call's identity is read from, in the order [`Calls::of`]
/// reads them; the last five name a database (read in the same pass).
static KEYS: LazyLock<[Sym; 16]> = LazyLock::new(|| {
    [
        "db.query.text",
        "db.statement",
        "sql.query",
        "db.system.name",
        "db.system",
        "url.full",
        "http.url",
        "http.request.method",
        "http.method",
        "rpc.service",
        "rpc.method",
        "server.address",
        "net.peer.name",
        "peer.service",
        "db.namespace",
        "db.name",
    ]
    .map(Sym::new)
});

/// A client's own URL template (read for an HTTP call without a SERVER span).
static TEMPLATE_KEYS: LazyLock<[Sym; 2]> =
    LazyLock::new(|| ["url.template", "http.route"].map(Sym::new));

/// A message's destination (read for PRODUCER spans).
static DESTINATION_KEYS: LazyLock<[Sym; 2]> =
    LazyLock::new(|| ["messaging.destination.name", "messaging.destination"].map(Sym::new));

/// Where a SERVER span says what it served.
static SERVER_KEYS: LazyLock<[Sym; 5]> = LazyLock::new(|| {
    [
        "http.route",
        "url.full",
        "http.url",
        "http.target",
        "url.path",
    ]
    .map(Sym::new)
});

/// Key-value stores: a command is their shape, its key their argument.
const CACHES: [&str; 4] = ["redis", "memcached", "valkey", "aerospike"];

/// Attribute keys whose values are a call's arguments where no statement or
/// URL carries them (HotROD's `param.driverID`, `db.query.parameter.*`).
const ARGUMENT_PREFIXES: [&str; 2] = ["param.", "db.query.parameter."];

impl<'t> Calls<'t> {
    pub fn of(t: &'t AnalyzedTrace) -> Calls<'t> {
        let trace = &t.trace;
        let mut calls = Vec::new();
        let mut subtree: Option<Vec<u64>> = None;
        for i in 0..trace.len() as u32 {
            let span = trace.span(i);
            if i == trace.root
                || t.layered[i as usize]
                || t.checkouts[i as usize]
                || matches!(span.kind, SpanKind::Server | SpanKind::Consumer)
            {
                continue;
            }
            let [text, statement, sql, system, legacy_system, url, legacy_url, method, legacy_method, rpc_service, rpc_method, address, peer_name, peer_service, namespace, name] =
                trace.arena.find(span.attrs, *KEYS);
            let statement = text.or(statement).or(sql).and_then(Found::text);
            let system = system.or(legacy_system);
            let is_call = matches!(span.kind, SpanKind::Client | SpanKind::Producer)
                || statement.is_some()
                || system.is_some();
            if !is_call {
                continue;
            }
            let system_name = system.and_then(Found::text);
            let (top, parent) = made_under(t, i);
            let server = remote_server(trace, i);
            let caller = trace.span(parent).service;
            // A database is named as the other detectors name it:
            // `postgresql 10.0.0.5/shop`, HotROD's `mysql`.
            let database = (statement.is_some() || system.is_some()).then(|| {
                Callee::Db(DbTarget {
                    system: system.and_then(Found::sym),
                    address: address.or(peer_name).or(peer_service).and_then(Found::sym),
                    namespace: namespace.or(name).and_then(Found::sym),
                })
            });
            let callee = server
                .map(|s| Callee::Service(trace.span(s).service))
                .or(database)
                .or_else(|| (span.service != caller).then_some(Callee::Service(span.service)))
                .or_else(|| named_peer(span, &trace.arena).map(Callee::Service));
            let url = url.or(legacy_url).and_then(Found::text);
            let method = method.or(legacy_method).and_then(Found::text);
            let cache = system_name.is_some_and(|s| CACHES.contains(&s));
            let (kind, shape, arguments): (CallKind, Arc<str>, Option<Cow<'t, str>>) =
                if let Some(statement) = statement {
                    if cache {
                        let command = statement.split_whitespace().next().unwrap_or("");
                        (
                            CallKind::Cache,
                            format!(
                                "{} {}",
                                system_name.unwrap_or(""),
                                command.to_ascii_uppercase()
                            )
                            .into(),
                            Some(Cow::Borrowed(statement)),
                        )
                    } else {
                        (
                            CallKind::Db,
                            shape_of(statement),
                            sql_arguments(statement).map(Cow::Borrowed),
                        )
                    }
                } else if let Some(server) = server {
                    let [route, full, legacy, target, path] =
                        trace.arena.find(trace.span(server).attrs, *SERVER_KEYS);
                    let served: Arc<str> = match route.and_then(Found::text) {
                        Some(r) => format!("{} {r}", method.unwrap_or("")).trim().into(),
                        None => trace.span(server).operation.as_str().into(),
                    };
                    let target = [full, legacy, target, path]
                        .into_iter()
                        .find_map(|f| f.and_then(Found::text))
                        .or(url);
                    (
                        CallKind::Http,
                        served,
                        target.filter(|_| idempotent(method)).map(Cow::Borrowed),
                    )
                } else if let Some(url) = url {
                    let [template, route] = trace.arena.find(span.attrs, *TEMPLATE_KEYS);
                    let template = template.or(route).and_then(Found::text).map_or_else(
                        || url_template(url),
                        |t| {
                            format!("{} {t}", url_host(url).unwrap_or(""))
                                .trim()
                                .to_owned()
                        },
                    );
                    (
                        CallKind::Http,
                        format!("{} {template}", method.unwrap_or("")).trim().into(),
                        idempotent(method).then_some(Cow::Borrowed(url)),
                    )
                } else if let Some(rpc) = rpc_method.and_then(Found::text) {
                    let service = rpc_service
                        .and_then(Found::text)
                        .map_or(String::new(), |s| format!("{s}/"));
                    (
                        CallKind::Rpc,
                        format!("{service}{rpc}").into(),
                        params(trace, i).map(Cow::Owned),
                    )
                } else if span.kind == SpanKind::Producer {
                    let [name, legacy] = trace.arena.find(span.attrs, *DESTINATION_KEYS);
                    let destination = name
                        .or(legacy)
                        .and_then(Found::text)
                        .unwrap_or(span.operation.as_str());
                    (CallKind::Message, destination.into(), None)
                } else {
                    // A span named by a key-value store's own tracer (HotROD's
                    // `redis` service) is a cache call too.
                    let named_cache = callee.is_some_and(|c| {
                        let c = c.to_string().to_ascii_lowercase();
                        CACHES.iter().any(|k| c.contains(k))
                    });
                    let kind = match (system.is_some(), cache || named_cache) {
                        (_, true) => CallKind::Cache,
                        (true, false) => CallKind::Db,
                        (false, false) => CallKind::Other,
                    };
                    (
                        kind,
                        span.operation.as_str().into(),
                        params(trace, i).map(Cow::Owned),
                    )
                };
            let subtree = subtree.get_or_insert_with(|| subtree_critical(t));
            calls.push(Call {
                span: i,
                top,
                parent,
                caller,
                callee,
                kind,
                shape,
                arguments,
                start_ns: trace.start(i),
                end_ns: trace.end(i),
                critical_ns: subtree[top as usize],
                failed: span.status == StatusCode::Error || t.timed_out[i as usize],
                timed_out: t.timed_out[i as usize],
                writes: match kind {
                    CallKind::Db => !first_word_in(statement, SQL_READS),
                    CallKind::Cache => !first_word_in(statement, CACHE_READS),
                    CallKind::Http => !idempotent(method),
                    CallKind::Message => true,
                    CallKind::Rpc | CallKind::Other => false,
                },
                resolution_ns: [1_000_000, 1_000]
                    .into_iter()
                    .find(|r| span.start_ns % r == 0)
                    .unwrap_or(0),
            });
        }
        Calls { calls }
    }

    /// Fewer than two calls make no pattern.
    pub fn too_few(&self) -> bool {
        self.calls.len() < 2
    }
}

/// The span call `span` was made under, and the child of it that holds the
/// call: above the wrappers that hold nothing but it (an INTERNAL span with
/// one child, HotROD's `HTTP GET: /route` around its `HTTP GET`) and above
/// other instrumentation layers of the same call.
fn made_under(t: &AnalyzedTrace, span: u32) -> (u32, u32) {
    let trace = &t.trace;
    let mut top = span;
    while let Some(parent) = trace.parent[top as usize] {
        let p = trace.span(parent);
        let wrapper = parent != trace.root
            && (t.layered[parent as usize]
                || (matches!(p.kind, SpanKind::Internal | SpanKind::Unspecified)
                    && trace.children(parent).len() == 1
                    && p.service == trace.span(top).service));
        if !wrapper {
            return (top, parent);
        }
        top = parent;
    }
    (top, top)
}

/// Per span, the critical time of it and all its descendants.
fn subtree_critical(t: &AnalyzedTrace) -> Vec<u64> {
    let trace = &t.trace;
    let mut sum = t.path.critical_ns.clone();
    // Parents before children in a pre-order walk; summing it backwards
    // adds every child into its parent after the child's own subtree.
    let mut order = Vec::with_capacity(trace.len());
    let mut stack = vec![trace.root];
    while let Some(s) = stack.pop() {
        order.push(s);
        stack.extend_from_slice(trace.children(s));
    }
    for &s in order.iter().rev() {
        if let Some(p) = trace.parent[s as usize] {
            sum[p as usize] += sum[s as usize];
        }
    }
    sum
}

/// A statement's arguments when they are visible: the statement itself when
/// it carries inline literals or none at all; `None` when its values are
/// placeholders (`?`, `$1`, `%s`, `%(name)s`, `:name`) sent apart from it.
fn sql_arguments(statement: &str) -> Option<&str> {
    let bytes = statement.as_bytes();
    let placeholder = bytes.iter().enumerate().any(|(i, &b)| {
        let next = bytes.get(i + 1).copied().unwrap_or(b' ');
        match b {
            b'?' => true,
            b'$' => next.is_ascii_digit(),
            b'%' => next == b's' || next == b'(',
            b':' => {
                let prev = if i > 0 { bytes[i - 1] } else { b' ' };
                (next.is_ascii_alphabetic() || next == b'_')
                    && (prev.is_ascii_whitespace() || matches!(prev, b'(' | b',' | b'='))
            }
            _ => false,
        }
    });
    (!placeholder).then_some(statement)
}

/// Statements that only read.
const SQL_READS: &[&str] = &["SELECT", "SHOW", "EXPLAIN", "DESCRIBE", "VALUES"];
/// Key-value commands that only read.
const CACHE_READS: &[&str] = &[
    "GET",
    "MGET",
    "HGET",
    "HMGET",
    "HGETALL",
    "EXISTS",
    "TTL",
    "STRLEN",
    "TYPE",
    "SMEMBERS",
    "SISMEMBER",
    "SCARD",
    "LRANGE",
    "LLEN",
    "ZRANGE",
    "ZSCORE",
    "ZCARD",
    "SCAN",
    "KEYS",
];

/// Whether `text`'s first word is one of `words` (any case); a missing text
/// (a database span without a statement) reads.
fn first_word_in(text: Option<&str>, words: &[&str]) -> bool {
    text.and_then(|t| t.split_whitespace().next())
        .is_none_or(|w| words.iter().any(|r| w.eq_ignore_ascii_case(r)))
}

/// Only reads repeat identically: a repeated POST may carry another body.
fn idempotent(method: Option<&str>) -> bool {
    method.is_none_or(|m| m.eq_ignore_ascii_case("GET") || m.eq_ignore_ascii_case("HEAD"))
}

/// The values of `param.*` and `db.query.parameter.*` attributes, as
/// `key=value` pairs; `None` without any.
fn params(trace: &Trace, span: u32) -> Option<String> {
    let mut out = String::new();
    for (key, value) in trace.attrs(span) {
        let key = key.as_str();
        if !ARGUMENT_PREFIXES.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        match value {
            AttrValue::Str(s) | AttrValue::Json(s) => out.push_str(s),
            AttrValue::Int(n) => out.push_str(&n.to_string()),
            AttrValue::Double(d) => out.push_str(&d.to_string()),
            AttrValue::Bool(b) => out.push_str(&b.to_string()),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A URL without its query, its scheme and its ids: path segments that are
/// ids (`names::id_segment`: `42`, `5f3a9c`, a UUID) become `{id}`; `v1` stays
/// (`http://inventory:8080/items/42?x=1` → `inventory:8080/items/{id}`).
fn url_template(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    crate::analyze::names::path_word(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_hide_the_arguments_and_literals_show_them() {
        for hidden in [
            "SELECT * FROM comments WHERE %(param_1)s = comments.post_id",
            "SELECT * FROM t WHERE id = $1",
            "SELECT * FROM t WHERE id = ?",
            "SELECT * FROM t WHERE id = %s",
            "SELECT * FROM t WHERE id = :id",
        ] {
            assert_eq!(sql_arguments(hidden), None, "{hidden}");
        }
        for shown in [
            "SELECT * FROM customer WHERE customer_id=567",
            "SELECT * FROM config",
            "SELECT '10:30'::time FROM t",
        ] {
            assert_eq!(sql_arguments(shown), Some(shown), "{shown}");
        }
    }

    #[test]
    fn urls_lose_their_ids_and_queries() {
        assert_eq!(
            url_template("http://inventory:8080/items/42?x=1"),
            "inventory:8080/items/{id}"
        );
        assert_eq!(
            url_template("https://api/v1/users/5f3a9c/orders"),
            "api/v1/users/{id}/orders"
        );
        assert_eq!(url_template("0.0.0.0:8083"), "0.0.0.0:8083");
    }
}
