//! Which spans record obtaining a database connection (a pool checkout): by
//! structure and the semantic conventions, never by words in a span name (a
//! business span called `checkout`, `await_payment` or `reconnect` is work).
//! Read once per trace by [`checkouts`]; the saturation records take the
//! checkouts' time as the wait for a connection, and coverage counts them.

use std::sync::LazyLock;

use rustc_hash::FxHashMap;

use crate::model::{Found, SpanKind, Sym, Trace};

/// Attribute keys read, in [`checkouts`]' order.
static KEYS: LazyLock<[Sym; 8]> = LazyLock::new(|| {
    [
        "db.query.text",
        "db.statement",
        "sql.query",
        "db.system.name",
        "db.system",
        "db.client.connection.pool.name",
        "db.client.connections.pool.name",
        "db.client.connection.state",
    ]
    .map(Sym::new)
});

/// Per span of `trace`, whether it obtains a database connection: a span that
/// is not SERVER (nor asynchronous), runs no statement and calls no SERVER
/// span, and either names a pool by the connection conventions
/// (`db.client.connection.pool.name` or `.state`, formerly
/// `db.client.connections.pool.name`), or names a database system and is
/// followed by statements of its service on that system (SQLAlchemy's
/// `connect`, node-postgres' `pg-pool.connect` and `pg.connect`). A database
/// span without a statement that no statement follows is a call of its own (a
/// Redis command).
pub fn checkouts(trace: &Trace) -> Vec<bool> {
    let mut out = vec![false; trace.len()];
    // Per (service, system): the latest start of a statement.
    let mut statements: FxHashMap<(Sym, Option<Sym>), u64> = FxHashMap::default();
    let mut candidates: Vec<(u32, Sym)> = Vec::new();
    for i in 0..trace.len() as u32 {
        let span = trace.span(i);
        if matches!(
            span.kind,
            SpanKind::Server | SpanKind::Producer | SpanKind::Consumer
        ) {
            continue;
        }
        // A call answered by a SERVER span is neither (and the common
        // CLIENT span: its attributes are not read).
        let calls_server = trace
            .children(i)
            .iter()
            .any(|&c| trace.span(c).kind == SpanKind::Server);
        if calls_server {
            continue;
        }
        let [text, legacy_text, sql, system, legacy_system, pool, legacy_pool, state] =
            trace.arena.find(span.attrs, *KEYS);
        let system = system.or(legacy_system).and_then(Found::sym);
        if text.or(legacy_text).or(sql).is_some() {
            let latest = statements.entry((span.service, system)).or_default();
            *latest = (*latest).max(trace.start(i));
            continue;
        }
        if pool.or(legacy_pool).or(state).is_some() {
            out[i as usize] = true;
        } else if let Some(system) = system {
            candidates.push((i, system));
        }
    }
    for (i, system) in candidates {
        let followed = statements
            .get(&(trace.span(i).service, Some(system)))
            .is_some_and(|&latest| latest >= trace.start(i));
        out[i as usize] = followed;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::testing::{span, trace};

    const MS: u64 = 1_000_000;

    /// A span of `api` (the first is the root, the others its children):
    /// name, kind, times in ms, attributes.
    type Spec<'a> = (&'a str, SpanKind, (u64, u64), Vec<(&'a str, &'a str)>);

    fn marked(spans: Vec<Spec>) -> Vec<&'static str> {
        let t = trace(
            spans
                .into_iter()
                .enumerate()
                .map(|(n, (name, kind, (s, e), attrs))| {
                    let parent = if n == 0 { 0 } else { 1 };
                    (
                        span("api", (n as u64 + 1, parent), name, kind, (s * MS, e * MS)),
                        attrs,
                    )
                })
                .collect(),
        );
        let c = checkouts(&t);
        (0..t.len())
            .filter(|&i| c[i])
            .map(|i| t.spans[i].operation.as_str())
            .collect()
    }

    #[test]
    fn a_checkout_is_known_by_its_attributes_and_the_statements_after_it() {
        let statement = || {
            vec![
                ("db.system", "postgresql"),
                ("db.statement", "SELECT * FROM items WHERE id = %(id_1)s"),
            ]
        };
        let root = || ("GET /", SpanKind::Server, (0, 100), vec![]);
        // SQLAlchemy: `connect` names the database, a statement follows.
        let found = marked(vec![
            root(),
            (
                "connect",
                SpanKind::Client,
                (1, 40),
                vec![("db.system", "postgresql")],
            ),
            ("SELECT shop", SpanKind::Client, (41, 42), statement()),
        ]);
        assert_eq!(found, ["connect"]);
        // The pool conventions, whatever the name.
        for key in [
            "db.client.connection.pool.name",
            "db.client.connection.state",
            "db.client.connections.pool.name",
        ] {
            let found = marked(vec![
                root(),
                ("wait", SpanKind::Internal, (1, 40), vec![(key, "main")]),
            ]);
            assert_eq!(found, ["wait"], "{key}");
        }
        // Look-alikes: names alone; a database span no statement follows (a
        // Redis command), or that a statement only precedes; a statement.
        let found = marked(vec![
            root(),
            ("checkout", SpanKind::Internal, (1, 10), vec![]),
            ("pool.acquire", SpanKind::Internal, (10, 20), vec![]),
            (
                "GET",
                SpanKind::Client,
                (20, 21),
                vec![("db.system", "redis")],
            ),
            ("SELECT shop", SpanKind::Client, (21, 22), statement()),
            (
                "connect",
                SpanKind::Client,
                (30, 40),
                vec![("db.system", "postgresql")],
            ),
        ]);
        assert!(found.is_empty(), "{found:?}");
    }
}
