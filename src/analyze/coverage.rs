//! Instrumentation coverage: per service, how many spans carry what the
//! detectors read, and which detectors are blind (or weakened) for that
//! service and why. An empty findings list means health only where the
//! detectors could see.
//!
//! [`count`] is one pass over an assembled trace: one [`AttrArena::find`](crate::model::AttrArena::find)
//! over each span's attributes for every key below, no allocation per span.
//! Per service it counts ([`Counts`]):
//!
//! * `spans`, `server` and `client` spans (by kind), `error` spans (status
//!   ERROR);
//! * `database`: spans that are not SERVER and name a database system
//!   (`db.system.name`, `db.system`) or carry a statement, connection
//!   checkouts excepted (they are waits, not queries, as the saturation
//!   records treat them);
//! * `statement`: database spans with statement text (`db.query.text`, legacy
//!   `db.statement`, HotROD/OpenTracing `sql.query`);
//! * `peer_address`: CLIENT spans that name their peer (`server.address`,
//!   `net.peer.name`, `peer.service`, or the host of `url.full` / `http.url`)
//!   or are answered by a SERVER span of another service;
//! * `status_code`: SERVER and CLIENT spans with an HTTP or gRPC status code;
//! * `instance_id`: spans whose resource has `service.instance.id`;
//! * `connection_checkout`: spans that obtain a database connection
//!   ([`crate::analyze::checkouts`]);
//! * `timestamps_ms`: spans whose start and end are whole milliseconds (Node
//!   and browser SDKs);
//! * `ids_in_names`: spans whose names carry ids (`GET /users/48213`) that no
//!   `http.route` names, and `ids_in_statement_names`: those whose names read
//!   as statements (`SELECT users 48213`) with no `db.query.summary`
//!   ([`crate::analyze::names`]).
//!
//! [`Counts::blind`] turns a service's counts into the detectors it leaves blind or
//! weakened, each with a sentence saying what to add. The rules ([`RULES`]),
//! first match per detector, blind before weakened:
//!
//! | when | detectors | level |
//! |---|---|---|
//! | spans but no SERVER span | `pool_exhaustion`, `blocked_worker`, `cold_start` | blind |
//! | SERVER spans, none with `service.instance.id` | `pool_exhaustion`, `blocked_worker`, `cold_start` | blind |
//! | database spans, none with a statement | `slow_query`, `lock_contention` | blind |
//! | SERVER/CLIENT spans, none with a status code, no span with ERROR status | `cascading_timeout`, `deadline_not_propagated`, `timeout_inversion`, `gateway_timeout`, `timeout_headroom` | blind |
//! | CLIENT spans, none naming its peer nor answered by an instrumented server | `service_graph` (edges and wire hops) | blind |
//! | database spans, no connection checkout span | `pool_exhaustion` | weakened |
//! | SERVER/CLIENT spans, every span's timestamps whole milliseconds | `service_graph` | weakened |
//! | spans whose names carry ids without a route or query summary | `hops` (entry points and hops) | weakened |
//!
//! A rule needs the spans it speaks of: a service without database spans is
//! not blind to slow queries (nothing says it has any), and one whose spans
//! carry everything has no entry at all.

use std::sync::LazyLock;

use super::names::Fix;
use super::{remote_server, AnalyzedTrace, FindingKind};
use crate::model::{url_host, AttrValue, Found, SpanKind, StatusCode, Sym, Trace};

/// What one service's spans carry, counted over traces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counts {
    pub spans: u64,
    pub server: u64,
    pub client: u64,
    pub database: u64,
    pub statement: u64,
    pub peer_address: u64,
    pub status_code: u64,
    pub instance_id: u64,
    pub connection_checkout: u64,
    pub timestamps_ms: u64,
    pub error: u64,
    pub ids_in_names: u64,
    pub ids_in_statement_names: u64,
}

impl Counts {
    /// The detectors these counts leave blind or weakened, in [`RULES`] order.
    pub fn blind(&self) -> Vec<Blind> {
        let mut out: Vec<Blind> = Vec::new();
        for rule in RULES.iter().filter(|r| (r.applies)(self)) {
            for &detector in rule.detectors {
                if !out.iter().any(|b| b.detector == detector) {
                    out.push(Blind {
                        detector,
                        level: rule.level,
                        reason: rule.reason,
                    });
                }
            }
        }
        out
    }

    /// Adds `other`, or takes it away (`retract`; saturating at 0, so counts
    /// restored from an older state file never wrap).
    pub fn merge(&mut self, other: &Counts, retract: bool) {
        let apply = |a: &mut u64, b: u64| {
            *a = if retract {
                a.saturating_sub(b)
            } else {
                a.saturating_add(b)
            }
        };
        apply(&mut self.spans, other.spans);
        apply(&mut self.server, other.server);
        apply(&mut self.client, other.client);
        apply(&mut self.database, other.database);
        apply(&mut self.statement, other.statement);
        apply(&mut self.peer_address, other.peer_address);
        apply(&mut self.status_code, other.status_code);
        apply(&mut self.instance_id, other.instance_id);
        apply(&mut self.connection_checkout, other.connection_checkout);
        apply(&mut self.timestamps_ms, other.timestamps_ms);
        apply(&mut self.error, other.error);
        apply(&mut self.ids_in_names, other.ids_in_names);
        apply(
            &mut self.ids_in_statement_names,
            other.ids_in_statement_names,
        );
    }
}

/// A detector that coverage can leave blind: a finding kind, the service
/// graph (edges and wire hops), or the latency share per entry point and hop
/// (`GET /api/v1/hops`), which are no findings of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    Finding(FindingKind),
    ServiceGraph,
    Hops,
}

impl Detector {
    /// The finding kind's name, `service_graph` or `hops`.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Finding(kind) => kind.as_str(),
            Detector::ServiceGraph => "service_graph",
            Detector::Hops => "hops",
        }
    }
}

/// How much a detector loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// It works from weaker evidence (its reason says which).
    Weakened,
    /// It cannot report this service's problems at all.
    Blind,
}

impl Level {
    /// Both levels, the lesser loss first.
    pub const ALL: [Level; 2] = [Level::Weakened, Level::Blind];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Weakened => "weakened",
            Level::Blind => "blind",
        }
    }
}

/// One detector a service leaves blind or weakened, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blind {
    pub detector: Detector,
    pub level: Level,
    /// What is missing and what to add, for the engineer on call.
    pub reason: &'static str,
}

/// One coverage rule: when `applies` to a service's counts, each of
/// `detectors` not listed by an earlier rule is listed at `level`.
pub struct Rule {
    pub applies: fn(&Counts) -> bool,
    pub detectors: &'static [Detector],
    pub level: Level,
    pub reason: &'static str,
}

const POOL: Detector = Detector::Finding(FindingKind::PoolExhaustion);
const BLOCKED: Detector = Detector::Finding(FindingKind::BlockedWorker);
const COLD: Detector = Detector::Finding(FindingKind::ColdStart);
const TIMEOUTS: &[Detector] = &[
    Detector::Finding(FindingKind::CascadingTimeout),
    Detector::Finding(FindingKind::DeadlineNotPropagated),
    Detector::Finding(FindingKind::TimeoutInversion),
    Detector::Finding(FindingKind::GatewayTimeout),
    Detector::Finding(FindingKind::TimeoutHeadroom),
];

/// The rules, in order: the first that lists a detector gives its entry.
pub const RULES: &[Rule] = &[
    Rule {
        applies: |c| c.spans > 0 && c.server == 0,
        detectors: &[POOL, BLOCKED, COLD],
        level: Level::Blind,
        reason:
            "no SERVER spans: hopscope sees no requests of this service, so it cannot tell \
                 waiting from working; add the server instrumentation of its HTTP or gRPC framework",
    },
    Rule {
        applies: |c| c.server > 0 && c.instance_id == 0,
        detectors: &[POOL, BLOCKED],
        level: Level::Blind,
        reason: "requests of different replicas cannot be told apart: set service.instance.id \
                 on the resource (e.g. OTEL_RESOURCE_ATTRIBUTES=service.instance.id=$HOSTNAME)",
    },
    Rule {
        applies: |c| c.server > 0 && c.instance_id == 0,
        detectors: &[COLD],
        level: Level::Blind,
        reason: "a new replica's first requests cannot be told from the others': set \
                 service.instance.id on the resource (e.g. \
                 OTEL_RESOURCE_ATTRIBUTES=service.instance.id=$HOSTNAME)",
    },
    Rule {
        applies: |c| c.database > 0 && c.statement == 0,
        detectors: &[
            Detector::Finding(FindingKind::SlowQuery),
            Detector::Finding(FindingKind::LockContention),
        ],
        level: Level::Blind,
        reason: "database spans carry no statement text, so a slow or contended statement \
                 cannot be told from the fast ones: enable statement capture in the database instrumentation \
                 (db.query.text, or legacy db.statement)",
    },
    Rule {
        applies: |c| c.server + c.client > 0 && c.status_code == 0 && c.error == 0,
        detectors: TIMEOUTS,
        level: Level::Blind,
        reason: "no SERVER or CLIENT span carries an HTTP or gRPC status code and no span has \
                 ERROR status, so timeouts (504, DEADLINE_EXCEEDED) cannot be seen: record \
                 http.response.status_code or rpc.grpc.status_code and set ERROR on failed spans",
    },
    Rule {
        applies: |c| c.client > 0 && c.peer_address == 0,
        detectors: &[Detector::ServiceGraph],
        level: Level::Blind,
        reason: "no CLIENT span names its peer and none is answered by an instrumented server, \
                 so its calls are on no service-graph edge and their wire time is unknown: set \
                 server.address or peer.service on client spans (or url.full)",
    },
    Rule {
        applies: |c| c.database > 0 && c.connection_checkout == 0,
        detectors: &[POOL],
        level: Level::Weakened,
        reason: "no span records obtaining a database connection, so the wait for one is \
                 guessed from the gap before a request's first statement: instrument the pool \
                 (a checkout span, or db.client.connection.pool.name / \
                 db.client.connection.state)",
    },
    Rule {
        applies: |c| c.server + c.client > 0 && c.timestamps_ms == c.spans,
        detectors: &[Detector::ServiceGraph],
        level: Level::Weakened,
        reason: "every span has whole-millisecond timestamps (as Node and browser SDKs record \
                 them), so wire times and gaps under a millisecond are rounding noise: judge \
                 this service's edges only by times well above 1 ms",
    },
    Rule {
        applies: |c| c.ids_in_names + c.ids_in_statement_names > 0,
        detectors: &[Detector::Hops],
        level: Level::Weakened,
        reason: "span names carry ids (GET /users/48213, SELECT users 48213), a name per \
                 request: hopscope folds numeric, UUID and hex ids into placeholders \
                 (GET /users/{id}) before aggregating, but ids it cannot recognise give each \
                 request an entry point or hop of its own, counted under (overflow) past the \
                 limits: set http.route on HTTP spans and name them after it (ids_in_names), \
                 and db.query.summary on database spans (ids_in_statement_names)",
    },
];

/// Attribute keys read in the one pass, in [`facts`]' order.
static KEYS: LazyLock<[Sym; 11]> = LazyLock::new(|| {
    [
        "db.system.name",
        "db.system",
        "db.query.text",
        "db.statement",
        "sql.query",
        "server.address",
        "net.peer.name",
        "peer.service",
        "url.full",
        "http.url",
        "service.instance.id",
    ]
    .map(Sym::new)
});

/// What one span's attributes say, from one scan.
#[derive(Debug, Clone, Copy)]
struct Facts {
    system: bool,
    statement: bool,
    /// Names its peer in attributes.
    peer: bool,
    instance: bool,
}

/// Present, and not blank text (an interned value is taken as is, unresolved).
fn carried(found: Option<Found<'_>>) -> bool {
    match found {
        None => false,
        Some(Found::Value(AttrValue::Str(text))) => !text.trim().is_empty(),
        Some(_) => true,
    }
}

fn facts(trace: &Trace, span: u32) -> Facts {
    let [system, legacy_system, text, legacy_text, sql, address, legacy_address, peer, url, legacy_url, instance] =
        trace.arena.find(trace.span(span).attrs, *KEYS);
    Facts {
        system: carried(system) || carried(legacy_system),
        statement: carried(text) || carried(legacy_text) || carried(sql),
        peer: carried(address)
            || carried(legacy_address)
            || carried(peer)
            || url
                .or(legacy_url)
                .and_then(Found::text)
                .and_then(url_host)
                .is_some(),
        instance: instance.is_some(),
    }
}

/// Per service of the trace (in order of first span), what its spans carry.
pub fn count(t: &AnalyzedTrace) -> Vec<(Sym, Counts)> {
    let trace = &t.trace;
    let mut out: Vec<(Sym, Counts)> = Vec::new();
    let mut at = 0;
    for i in 0..trace.len() {
        let id = i as u32;
        let span = trace.span(id);
        let f = facts(trace, id);
        if out.get(at).is_none_or(|(s, _)| *s != span.service) {
            at = match out.iter().position(|(s, _)| *s == span.service) {
                Some(at) => at,
                None => {
                    out.push((span.service, Counts::default()));
                    out.len() - 1
                }
            };
        }
        let checkout = t.checkouts[i];
        let server = span.kind == SpanKind::Server;
        let client = span.kind == SpanKind::Client;
        let database = !server && !checkout && (f.system || f.statement);
        let c = &mut out[at].1;
        c.spans += 1;
        c.server += u64::from(server);
        c.client += u64::from(client);
        c.database += u64::from(database);
        c.statement += u64::from(database && f.statement);
        c.peer_address += u64::from(client && (f.peer || remote_server(trace, id).is_some()));
        c.status_code += u64::from(
            (server || client) && (span.http_status.is_some() || span.grpc_status.is_some()),
        );
        c.instance_id += u64::from(f.instance);
        c.connection_checkout += u64::from(checkout);
        c.timestamps_ms +=
            u64::from(span.start_ns % 1_000_000 == 0 && span.end_ns % 1_000_000 == 0);
        c.error += u64::from(span.status == StatusCode::Error);
        match t.names[i].1 {
            Some(Fix::HttpRoute) => c.ids_in_names += 1,
            Some(Fix::QuerySummary) => c.ids_in_statement_names += 1,
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use super::*;
    use crate::analyze::analyze;
    use crate::assemble::assemble;
    use crate::model::{field, AttrArena, Span, SpanId, SpanSet, TraceId};

    const MS: u64 = 1_000_000;
    /// Off whole milliseconds, as most SDKs' clocks are.
    const US: u64 = 1_000;

    type Attrs = Vec<(&'static str, &'static str)>;

    fn span(service: &str, (id, parent): (u64, u64), op: &str, kind: SpanKind) -> Span {
        // Span n runs from n × 10 ms to (100 - n) × 10 ms, 37 µs off the millisecond.
        Span::new(
            SpanId::from_u64(id).unwrap(),
            SpanId::from_u64(parent),
            service,
            op,
            kind,
            (id * 10 * MS + 37 * US, (100 - id) * 10 * MS + 37 * US),
        )
    }

    /// The analyzed trace of `spans`, their attributes stored as ingest
    /// stores them: semantic-convention values interned (the detectors look
    /// them up as symbols), other values as text. Storing a convention value
    /// as text would make the count depend on whether another test happened
    /// to intern the same value first.
    fn trace(spans: Vec<(Span, Attrs)>) -> AnalyzedTrace {
        let mut set = SpanSet::default();
        let mut scratch = AttrArena::default();
        for (mut s, attrs) in spans {
            let mark = scratch.mark();
            for (k, v) in attrs {
                if k == "http.response.status_code" {
                    s.http_status = NonZeroU16::new(v.parse().unwrap());
                }
                let key = Sym::new(k);
                if field(key).is_some() {
                    scratch.sym(key, Sym::new(v));
                } else {
                    scratch.str(key, v);
                }
            }
            s.attrs = scratch.finish(mark);
            set.push(s, &mut scratch);
        }
        analyze(assemble(TraceId::from_bytes(&[5; 16]).unwrap(), set).unwrap())
    }

    fn of(counts: &[(Sym, Counts)], service: &str) -> Counts {
        counts
            .iter()
            .find(|(s, _)| s.as_str() == service)
            .unwrap_or_else(|| panic!("no {service} in {counts:?}"))
            .1
    }

    fn detectors(counts: &Counts) -> Vec<(&'static str, Level)> {
        counts
            .blind()
            .into_iter()
            .map(|b| (b.detector.as_str(), b.level))
            .collect()
    }

    const INSTANCE: (&str, &str) = ("service.instance.id", "orders-1");

    /// orders serves a request, checks out a connection, queries, and calls
    /// inventory; everything a detector reads is there.
    fn instrumented() -> Vec<(Span, Attrs)> {
        vec![
            (
                span("orders", (1, 0), "GET /orders", SpanKind::Server),
                vec![INSTANCE, ("http.response.status_code", "200")],
            ),
            (
                span("orders", (2, 1), "connect", SpanKind::Client),
                vec![
                    INSTANCE,
                    ("db.system", "postgresql"),
                    ("net.peer.name", "db"),
                ],
            ),
            (
                span("orders", (3, 1), "SELECT", SpanKind::Client),
                vec![
                    INSTANCE,
                    ("db.system.name", "postgresql"),
                    ("server.address", "db"),
                    ("db.query.text", "SELECT 1"),
                ],
            ),
            (
                span("orders", (4, 1), "GET", SpanKind::Client),
                vec![
                    INSTANCE,
                    ("url.full", "http://user@inventory:8080/stock?id=1"),
                    ("http.response.status_code", "200"),
                ],
            ),
        ]
    }

    #[test]
    fn names_carrying_ids_weaken_the_hops_and_say_which_attribute_names_them() {
        let t = trace(vec![
            (
                span("users", (1, 0), "GET /users/48213", SpanKind::Server),
                vec![INSTANCE, ("http.response.status_code", "200")],
            ),
            (
                span("users", (2, 1), "SELECT users 48213", SpanKind::Client),
                vec![INSTANCE, ("db.system", "postgresql")],
            ),
            (
                span("users", (3, 1), "GET /users/7", SpanKind::Internal),
                vec![INSTANCE, ("http.route", "/users/{id}")],
            ),
        ]);
        let c = of(&count(&t), "users");
        assert_eq!((c.ids_in_names, c.ids_in_statement_names), (1, 1));
        let hops: Vec<Blind> = c
            .blind()
            .into_iter()
            .filter(|b| b.detector == Detector::Hops)
            .collect();
        assert_eq!(hops.len(), 1);
        assert_eq!(hops[0].level, Level::Weakened);
        assert!(
            hops[0].reason.contains("http.route") && hops[0].reason.contains("db.query.summary")
        );
    }

    #[test]
    fn a_fully_instrumented_service_is_counted_and_blind_to_nothing() {
        let t = trace(instrumented());
        let counts = count(&t);
        let c = of(&counts, "orders");
        assert_eq!(
            c,
            Counts {
                spans: 4,
                server: 1,
                client: 3,
                database: 1,
                statement: 1,
                peer_address: 3,
                status_code: 2,
                instance_id: 4,
                connection_checkout: 1,
                timestamps_ms: 0,
                error: 0,
                ids_in_names: 0,
                ids_in_statement_names: 0,
            },
            "connect is a checkout, not a query; every client names its peer"
        );
        assert_eq!(detectors(&c), []);
        assert_eq!(
            t.checkouts,
            [false, true, false, false],
            "connect, not the query"
        );
    }

    #[test]
    fn no_instance_ids_and_no_statements_blind_the_saturation_detectors() {
        let t = trace(vec![
            (
                span("orders", (1, 0), "GET /orders", SpanKind::Server),
                vec![("http.response.status_code", "200")],
            ),
            (
                span("orders", (2, 1), "SELECT", SpanKind::Client),
                vec![("db.system", "mysql"), ("server.address", "db")],
            ),
        ]);
        let c = of(&count(&t), "orders");
        assert_eq!(
            (c.database, c.statement, c.instance_id, c.peer_address),
            (1, 0, 0, 1)
        );
        assert_eq!(
            detectors(&c),
            [
                ("pool_exhaustion", Level::Blind),
                ("blocked_worker", Level::Blind),
                ("cold_start", Level::Blind),
                ("slow_query", Level::Blind),
                ("lock_contention", Level::Blind),
            ],
            "pool_exhaustion is listed once, blind"
        );
        let reason = c.blind()[0].reason;
        assert!(reason.contains("service.instance.id"), "{reason}");
    }

    #[test]
    fn a_legacy_or_hotrod_statement_is_a_statement() {
        for key in ["db.statement", "sql.query"] {
            let t = trace(vec![(
                span("mysql", (1, 0), "SQL SELECT", SpanKind::Client),
                vec![(key, "select * from customer")],
            )]);
            let c = of(&count(&t), "mysql");
            assert_eq!((c.database, c.statement), (1, 1), "{key}");
        }
    }

    #[test]
    fn connection_checkouts_are_counted_by_attribute_or_by_the_statements_after_them() {
        let t = |checkout: (&'static str, Attrs), query: bool| {
            let mut spans = vec![
                (span("api", (1, 0), "GET /", SpanKind::Server), vec![]),
                (
                    span("api", (2, 1), checkout.0, SpanKind::Internal),
                    checkout.1,
                ),
            ];
            if query {
                spans.push((
                    span("api", (3, 1), "SELECT", SpanKind::Client),
                    vec![("db.system", "postgresql"), ("db.statement", "SELECT 1")],
                ));
            }
            of(&count(&trace(spans)), "api").connection_checkout
        };
        for key in [
            "db.client.connection.pool.name",
            "db.client.connection.state",
            "db.client.connections.pool.name",
        ] {
            assert_eq!(t(("wait", vec![(key, "main")]), false), 1, "{key}");
        }
        assert_eq!(t(("connect", vec![("db.system", "postgresql")]), true), 1);
        // Names are no evidence; nor is a database span no statement follows.
        assert_eq!(t(("pool.acquire", vec![]), true), 0);
        assert_eq!(t(("connect", vec![("db.system", "postgresql")]), false), 0);
    }

    #[test]
    fn without_status_codes_or_errors_the_timeout_detectors_are_blind() {
        let spans = |status: Option<StatusCode>| {
            let mut root = span("worker", (1, 0), "handle", SpanKind::Server);
            if let Some(s) = status {
                root.status = s;
            }
            vec![(root, vec![("service.instance.id", "w-1")])]
        };
        let c = of(&count(&trace(spans(None))), "worker");
        assert_eq!(
            detectors(&c),
            [
                ("cascading_timeout", Level::Blind),
                ("deadline_not_propagated", Level::Blind),
                ("timeout_inversion", Level::Blind),
                ("gateway_timeout", Level::Blind),
                ("timeout_headroom", Level::Blind),
            ]
        );
        let c = of(&count(&trace(spans(Some(StatusCode::Error)))), "worker");
        assert_eq!(c.error, 1);
        assert_eq!(detectors(&c), [], "an ERROR status is a timeout signal");
    }

    #[test]
    fn clients_that_name_no_peer_leave_the_service_graph_blind() {
        let t = trace(vec![
            (
                span("batch", (1, 0), "run", SpanKind::Server),
                vec![("service.instance.id", "b-1")],
            ),
            (
                span("batch", (2, 1), "POST", SpanKind::Client),
                vec![("http.response.status_code", "200"), ("url.full", "/rel")],
            ),
            (
                span("batch", (3, 1), "GET", SpanKind::Client),
                vec![("http.response.status_code", "200")],
            ),
        ]);
        let c = of(&count(&t), "batch");
        assert_eq!((c.client, c.peer_address), (2, 0));
        assert_eq!(detectors(&c), [("service_graph", Level::Blind)]);

        // Answered by an instrumented server of another service: a peer.
        let t = trace(vec![
            (
                span("batch", (1, 0), "GET", SpanKind::Client),
                vec![("http.response.status_code", "200")],
            ),
            (
                span("api", (2, 1), "GET /", SpanKind::Server),
                vec![("http.response.status_code", "200")],
            ),
        ]);
        assert_eq!(of(&count(&t), "batch").peer_address, 1);
    }

    #[test]
    fn whole_millisecond_timestamps_weaken_the_service_graph() {
        let mut s = span("web", (1, 0), "GET /", SpanKind::Server);
        (s.start_ns, s.end_ns) = (3 * MS, 40 * MS);
        let t = trace(vec![(
            s,
            vec![
                ("service.instance.id", "w-1"),
                ("http.response.status_code", "200"),
            ],
        )]);
        let c = of(&count(&t), "web");
        assert_eq!(c.timestamps_ms, 1);
        assert_eq!(detectors(&c), [("service_graph", Level::Weakened)]);
    }

    #[test]
    fn counts_are_per_service_and_retract_exactly() {
        let mut spans = instrumented();
        spans.push((
            span("inventory", (5, 4), "GET /stock", SpanKind::Server),
            vec![],
        ));
        let counts = count(&trace(spans));
        assert_eq!(
            counts.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
            ["orders", "inventory"]
        );
        let mut total = Counts::default();
        total.merge(&counts[0].1, false);
        total.merge(&counts[0].1, false);
        total.merge(&counts[0].1, true);
        assert_eq!(total, counts[0].1);
        total.merge(&counts[1].1, true);
        assert_eq!(total.server, 0, "saturates at zero");
    }

    #[test]
    fn url_hosts() {
        for (url, host) in [
            ("https://api.example.com/a?b", Some("api.example.com")),
            ("http://user:pw@db:5432", Some("db")),
            ("http://[::1]:8080/x", Some("::1")),
            ("http:///path", None),
            ("/relative", None),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }
}
