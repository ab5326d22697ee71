//! One logical call, recorded by several instrumentation layers: an ORM span
//! and a driver span for one statement (SQLAlchemy and psycopg2 both installed
//! by `opentelemetry-bootstrap`), an HTTP client span wrapped by a library's
//! own CLIENT span (`requests` over `urllib3`), a gRPC client span under an
//! HTTP one. [`layers`] marks every span that repeats another; the detectors
//! and the call records skip the marked ones, so each call counts once, while
//! the trace view still shows every span.
//!
//! Two CLIENT spans of one service are one call when what they name does not
//! disagree ([`Identity::agrees`]), and either
//! * one is the other's parent and their times are nearly the same
//!   ([`same_time`]; the inner layer is marked, unless it alone reaches the
//!   callee's SERVER span: then the outer one is), or
//! * they are siblings, one inside the other in time, naming the same call
//!   (at least one of statement, URL, RPC method in common) under different
//!   span names (a fan-out of the same query by one instrumentation has one
//!   name; two layers name it their own way). The inner one is marked, however
//!   much of the outer it covers: the ORM's span may add milliseconds of its
//!   own around a fast statement.

use std::sync::LazyLock;

use super::saturation::shape_of;
use crate::model::{Found, SpanKind, Sym, Trace};

const MS: u64 = 1_000_000;
/// Start and end may differ by this much and still be one call ...
const SAME_TIME_NS: u64 = MS;
/// ... or the shorter span may cover this share of the longer.
const SAME_TIME_SHARE: f64 = 0.8;

/// What names a call, in the order of [`IDENTITY_KEYS`].
static IDENTITY_KEYS: LazyLock<[Sym; 9]> = LazyLock::new(|| {
    [
        "db.query.text",
        "db.statement",
        "sql.query",
        "db.system.name",
        "db.system",
        "url.full",
        "http.url",
        "rpc.method",
        "rpc.service",
    ]
    .map(Sym::new)
});

/// What a CLIENT span says it called.
struct Identity<'a> {
    statement: Option<&'a str>,
    system: Option<&'a str>,
    url: Option<&'a str>,
    rpc: Option<&'a str>,
}

impl<'a> Identity<'a> {
    fn of(trace: &'a Trace, span: u32) -> Identity<'a> {
        let [text, statement, sql, system, legacy_system, url, legacy_url, method, _] = trace
            .arena
            .find(trace.span(span).attrs, *IDENTITY_KEYS)
            .map(|f| f.and_then(Found::text));
        Identity {
            statement: text.or(statement).or(sql),
            system: system.or(legacy_system),
            url: url.or(legacy_url),
            rpc: method,
        }
    }

    /// No field present in both differs; statements compare by shape (a layer
    /// may add a comment or normalise whitespace). With `common`, at least one
    /// of statement, URL and RPC method must be present in both.
    fn agrees(&self, other: &Identity<'_>, common: bool) -> bool {
        fn same<T: PartialEq>(a: Option<T>, b: Option<T>) -> Option<bool> {
            Some(a? == b?)
        }
        let statement = match (self.statement, other.statement) {
            (Some(a), Some(b)) => Some(a == b || shape_of(a) == shape_of(b)),
            _ => None,
        };
        let fields = [
            statement,
            same(self.url, other.url),
            same(self.rpc, other.rpc),
        ];
        let system = same(self.system, other.system);
        fields.iter().chain([&system]).all(|f| f.unwrap_or(true))
            && (!common || fields.contains(&Some(true)))
    }
}

/// Whether two spans' `[start, end)` are nearly the same interval.
fn same_time((s1, e1): (u64, u64), (s2, e2): (u64, u64)) -> bool {
    if s1.abs_diff(s2) <= SAME_TIME_NS && e1.abs_diff(e2) <= SAME_TIME_NS {
        return true;
    }
    let overlap = e1.min(e2).saturating_sub(s1.max(s2));
    let longer = (e1 - s1).max(e2 - s2);
    longer > 0 && overlap as f64 >= SAME_TIME_SHARE * longer as f64
}

fn reaches_server(trace: &Trace, span: u32) -> bool {
    let service = trace.span(span).service;
    trace.children(span).iter().any(|&c| {
        let child = trace.span(c);
        child.kind == SpanKind::Server && child.service != service
    })
}

/// Per span of `trace`, whether it repeats a call another span records (see
/// the module's doc). A marked span's own marked layers are marked too, so a
/// call recorded three times counts once.
pub fn layers(trace: &Trace) -> Vec<bool> {
    let mut layered = vec![false; trace.len()];
    let client = |i: u32| trace.span(i).kind == SpanKind::Client;
    let times = |i: u32| (trace.start(i), trace.end(i));
    for parent in 0..trace.len() as u32 {
        let children = trace.children(parent);
        for (n, &child) in children.iter().enumerate() {
            if !client(child) {
                continue;
            }
            let (s, e) = times(child);
            // Nested: this CLIENT span inside a CLIENT parent of its service.
            if client(parent)
                && trace.span(parent).service == trace.span(child).service
                && same_time(times(parent), (s, e))
                && Identity::of(trace, parent).agrees(&Identity::of(trace, child), false)
            {
                let inner_reaches = reaches_server(trace, child);
                let marked = if inner_reaches && !reaches_server(trace, parent) {
                    parent
                } else {
                    child
                };
                layered[marked as usize] = true;
                continue;
            }
            // Siblings: a later sibling inside this one's time.
            if layered[child as usize] {
                continue;
            }
            for &other in &children[n + 1..] {
                let (s2, e2) = times(other);
                if s2 > e {
                    break;
                }
                if !client(other)
                    || layered[other as usize]
                    || e2 > e
                    || trace.span(other).service != trace.span(child).service
                    || trace.span(other).operation == trace.span(child).operation
                    || reaches_server(trace, other)
                {
                    continue;
                }
                if Identity::of(trace, child).agrees(&Identity::of(trace, other), true) {
                    layered[other as usize] = true;
                    break;
                }
            }
        }
    }
    layered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::{span, trace};
    use crate::model::Span;

    type Attrs = &'static [(&'static str, &'static str)];

    /// A span of service `shop` (µs), or of `callee` for SERVER spans named so.
    fn at(id: u64, parent: u64, name: &str, kind: SpanKind, (s, e): (u64, u64)) -> Span {
        let service = if name == "callee" { "callee" } else { "shop" };
        span(service, (id, parent), name, kind, (s * 1_000, e * 1_000))
    }

    fn marked(specs: Vec<(Span, Attrs)>) -> Vec<&'static str> {
        let t = trace(specs.into_iter().map(|(s, a)| (s, a.to_vec())).collect());
        let l = layers(&t);
        let mut out: Vec<&'static str> = (0..t.len() as u32)
            .filter(|&i| l[i as usize])
            .map(|i| t.span(i).operation.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    const SELECT: Attrs = &[
        ("db.system", "postgresql"),
        ("db.statement", "SELECT * FROM shop WHERE id = %(id_1)s"),
    ];
    const ROOT: (u64, u64) = (0, 10_000);

    #[test]
    fn an_orm_span_and_its_driver_span_are_one_statement() {
        // SQLAlchemy's `select shop` and psycopg2's `select`, overlapping siblings.
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (
                at(2, 1, "select shop", SpanKind::Client, (100, 700)),
                SELECT,
            ),
            (at(3, 1, "select", SpanKind::Client, (150, 650)), SELECT),
            (
                at(4, 1, "select shop", SpanKind::Client, (800, 1_400)),
                SELECT,
            ),
            (at(5, 1, "select", SpanKind::Client, (850, 1_350)), SELECT),
        ]);
        assert_eq!(found, ["select", "select"]);
        // The driver's span 2 ms into a 4 ms ORM span, covering half of it.
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (
                at(2, 1, "SELECT shop", SpanKind::Client, (100, 4_060)),
                SELECT,
            ),
            (at(3, 1, "SELECT", SpanKind::Client, (2_160, 4_000)), SELECT),
        ]);
        assert_eq!(found, ["SELECT"]);
    }

    #[test]
    fn a_fan_out_of_one_query_and_different_statements_are_not_layers() {
        // Five identical queries at once, from one instrumentation: one name.
        let mut specs = vec![(at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[][..])];
        for i in 0..5 {
            specs.push((at(2 + i, 1, "select", SpanKind::Client, (100, 700)), SELECT));
        }
        assert!(marked(specs).is_empty());
        // Two different statements at the same time under different names.
        let other: Attrs = &[
            ("db.system", "postgresql"),
            ("db.statement", "SELECT * FROM stock WHERE id = %(id_1)s"),
        ];
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (
                at(2, 1, "select shop", SpanKind::Client, (100, 700)),
                SELECT,
            ),
            (
                at(3, 1, "select stock", SpanKind::Client, (150, 650)),
                other,
            ),
        ]);
        assert!(found.is_empty());
        // A CLIENT span much longer than its CLIENT children (a retry wrapper
        // with two attempts) is not one call.
        let url: Attrs = &[("http.url", "http://a/x")];
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (at(2, 1, "GET", SpanKind::Client, (0, 9_000)), url),
            (at(3, 2, "GET", SpanKind::Client, (0, 4_000)), url),
            (at(4, 2, "GET", SpanKind::Client, (5_000, 9_000)), url),
        ]);
        assert!(found.is_empty());
    }

    #[test]
    fn a_wrapped_http_client_span_counts_once_and_keeps_its_callee() {
        // `requests` over `urllib3`: the inner span reaches the callee, so the
        // outer one is the layer.
        let url: Attrs = &[("http.url", "http://inventory/items")];
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (at(2, 1, "GET", SpanKind::Client, (100, 5_000)), url),
            (at(3, 2, "HTTP GET", SpanKind::Client, (120, 4_990)), url),
            (at(4, 3, "callee", SpanKind::Server, (200, 4_900)), &[]),
        ]);
        assert_eq!(found, ["GET"]);
        // Different URLs: two calls.
        let found = marked(vec![
            (at(1, 0, "GET /shop", SpanKind::Server, ROOT), &[]),
            (at(2, 1, "GET", SpanKind::Client, (100, 5_000)), url),
            (
                at(3, 2, "HTTP GET", SpanKind::Client, (120, 4_990)),
                &[("http.url", "http://auth/check")],
            ),
        ]);
        assert!(found.is_empty());
    }
}
