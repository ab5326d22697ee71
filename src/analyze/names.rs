//! The names spans are aggregated under: a span name that carries ids
//! (`GET /users/48213`, `SELECT users 48213`, a common instrumentation
//! mistake) would give every request its own entry point and hop, so ids
//! become placeholders before aggregating. The span keeps its raw name for
//! the trace view; only entry points, hops and call records use this one.
//!
//! In order, for a name with a digit in it (a name without one is kept):
//!
//! 1. the span's `http.route` when it has one (`GET /users/{id}` from `GET
//!    /users/48213` and the route `/users/{id}`, the method kept from the
//!    name), or its `db.query.summary` (the query's own low-cardinality
//!    name), when the name carries ids;
//! 2. a name that reads as a statement (its first word is `SELECT`,
//!    `INSERT`, `UPDATE`, `DELETE`, ...) becomes its statement shape, as the
//!    saturation detectors group statements ([`normalize`]): `SELECT users ?`;
//! 3. otherwise each word is read as a path: a segment of digits, or of six
//!    characters or more with a digit in them (`48213`, `5f3a9c`, a UUID),
//!    becomes `{id}` and a query string is dropped (`GET
//!    /users/48213?x=1` → `GET /users/{id}`), the same rule as the call
//!    shapes of the pattern detectors; a word without `/` becomes `{id}` only
//!    when it is all digits, a UUID or hex of eight digits or more, so
//!    `v2` or `SendEmailV2` stay.
//!
//! Names that still carry ids after this (words it cannot recognise) are
//! bounded by the aggregates' cardinality limits; [`aggregation_name`] says
//! which attribute would have named the span ([`Fix`]), for the coverage
//! entry of its service.

use std::cell::RefCell;
use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use super::saturation::normalize;
use crate::model::{Sym, Trace};

/// The attribute that would give a span whose name carries ids a
/// low-cardinality name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// `http.route` (the route template of an HTTP request).
    HttpRoute,
    /// `db.query.summary` (a database query's low-cardinality name).
    QuerySummary,
}

/// The first words that make a name read as a statement.
const STATEMENT_VERBS: &[&str] = &[
    "select", "insert", "update", "delete", "with", "merge", "upsert", "replace", "call", "exec",
];

/// Names a thread's cache holds before it is cleared.
const CACHE_LIMIT: usize = 1 << 16;

thread_local! {
    /// Raw name → its placeholder form and whether it read as a statement.
    static SHAPES: RefCell<FxHashMap<Sym, (Sym, bool)>> = RefCell::new(FxHashMap::default());
}

static KEYS: LazyLock<[Sym; 2]> =
    LazyLock::new(|| ["http.route", "db.query.summary"].map(Sym::new));

/// Whether a path segment is an id: digits, or six characters or more with
/// a digit in them (`42`, `5f3a9c`, a UUID); `v1` is not.
pub fn id_segment(segment: &str) -> bool {
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    digits > 0 && (digits == segment.len() || segment.len() >= 6)
}

/// Whether a word outside a path is an id: all digits, a UUID, or hex of
/// eight digits or more with a decimal digit in it.
fn id_word(word: &str) -> bool {
    let b = word.as_bytes();
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    let digit = b.iter().any(u8::is_ascii_digit);
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    !b.is_empty() && (b.iter().all(u8::is_ascii_digit) || uuid || (hex && digit && b.len() >= 8))
}

/// `word` with its id segments as `{id}` and its query string dropped.
pub(crate) fn path_word(word: &str) -> String {
    let path = word.split(['?', '#']).next().unwrap_or(word);
    path.split('/')
        .enumerate()
        .map(|(i, seg)| {
            if i > 0 && id_segment(seg) {
                "{id}"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The placeholder form of a name, and whether it read as a statement.
fn shape(name: &str) -> (String, bool) {
    let first = name.split_whitespace().next().unwrap_or("");
    if STATEMENT_VERBS
        .iter()
        .any(|v| first.eq_ignore_ascii_case(v))
    {
        return (normalize(name), true);
    }
    let words: Vec<String> = name
        .split(' ')
        .map(|w| {
            if w.contains('/') {
                path_word(w)
            } else if id_word(w) {
                "{id}".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    (words.join(" "), false)
}

/// [`shape`] through the thread's cache, interned within the names' limit.
fn cached_shape(name: Sym) -> (Sym, bool) {
    SHAPES.with(|cache| {
        if let Some(&hit) = cache.borrow().get(&name) {
            return hit;
        }
        let (text, statement) = shape(name.as_str());
        let sym = if text == name.as_str() {
            name
        } else {
            Sym::from_utf8_lossy(text.as_bytes())
        };
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(name, (sym, statement));
        (sym, statement)
    })
}

/// The name `span` is aggregated under (module doc), and, when its own name
/// carries ids that neither `http.route` nor `db.query.summary` replaced,
/// the attribute that would have.
pub fn aggregation_name(trace: &Trace, span: u32) -> (Sym, Option<Fix>) {
    let raw = trace.span(span).operation;
    if !raw.as_str().bytes().any(|b| b.is_ascii_digit()) {
        return (raw, None);
    }
    let (shaped, statement) = cached_shape(raw);
    if shaped == raw {
        return (raw, None);
    }
    let [route, summary] = trace.arena.find(trace.span(span).attrs, *KEYS);
    if let Some(route) = route.and_then(|r| r.text()).filter(|r| !r.is_empty()) {
        let name = match raw.as_str().split_once(' ') {
            Some((method, _)) if method.bytes().all(|b| b.is_ascii_uppercase()) => {
                format!("{method} {route}")
            }
            _ => route.to_owned(),
        };
        return (Sym::from_utf8_lossy(name.as_bytes()), None);
    }
    if let Some(summary) = summary.and_then(|s| s.text()).filter(|s| !s.is_empty()) {
        return (Sym::from_utf8_lossy(summary.as_bytes()), None);
    }
    let fix = if statement {
        Fix::QuerySummary
    } else {
        Fix::HttpRoute
    };
    (shaped, Some(fix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::{span, trace};
    use crate::model::SpanKind;

    fn named(name: &str, attrs: Vec<(&str, &str)>) -> (String, Option<Fix>) {
        let t = trace(vec![(
            span("api", (1, 0), name, SpanKind::Server, (0, 10)),
            attrs,
        )]);
        let (sym, fix) = aggregation_name(&t, t.root);
        (sym.as_str().to_owned(), fix)
    }

    #[test]
    fn ids_become_placeholders_and_the_fix_is_named() {
        for (raw, want, fix) in [
            ("GET /users/48213", "GET /users/{id}", Some(Fix::HttpRoute)),
            (
                "GET /orders/5f3a9c21/items?page=2",
                "GET /orders/{id}/items",
                Some(Fix::HttpRoute),
            ),
            (
                "process 0b7e2a6c-1d3f-4e5a-9b8c-7d6e5f4a3b2c",
                "process {id}",
                Some(Fix::HttpRoute),
            ),
            (
                "SELECT users 48213",
                "SELECT users ?",
                Some(Fix::QuerySummary),
            ),
            ("GET /api/v2/users", "GET /api/v2/users", None),
            ("SendEmailV2", "SendEmailV2", None),
            ("HTTP GET", "HTTP GET", None),
        ] {
            assert_eq!(named(raw, vec![]), (want.to_owned(), fix), "{raw}");
        }
    }

    #[test]
    fn a_route_or_a_query_summary_names_the_span_when_its_name_carries_ids() {
        assert_eq!(
            named("GET /users/48213", vec![("http.route", "/users/:id")]),
            ("GET /users/:id".to_owned(), None)
        );
        assert_eq!(
            named(
                "SELECT users 48213",
                vec![("db.query.summary", "SELECT users")]
            ),
            ("SELECT users".to_owned(), None)
        );
        // A name without ids is kept whatever the route says.
        assert_eq!(
            named("HTTP GET", vec![("http.route", "/users/:id")]),
            ("HTTP GET".to_owned(), None)
        );
    }
}
