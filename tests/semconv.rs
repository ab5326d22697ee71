//! Semantic conventions, old and new: spans shaped as the Python, Node, Java
//! and Go SDKs' auto-instrumentations and the OpenTelemetry Collector export
//! them, under the names of the HTTP, database and network conventions before
//! and after their stabilisation, exported over OTLP to two daemons (one per
//! naming). The timeout, cascade and health-check findings, the warnings, the
//! timeout budgets and the statement log must come out the same under either
//! naming. `docs/SEMANTIC_CONVENTIONS.md` lists what each detector reads.

mod support;

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::{json, Value};
use support::{sp, Sp, TestDaemon};

/// Which conventions the SDKs follow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Naming {
    /// Before the stable HTTP (1.23) and database (1.33) conventions: Python's
    /// and Node's default instrumentations, the Java agent 1.x, older Go.
    Old,
    /// The stable names: the Java agent 2.x, Go's current instrumentations,
    /// Python and Node with `OTEL_SEMCONV_STABILITY_OPT_IN=http,database`.
    New,
}

impl Naming {
    /// A SERVER span's request: method, path (without the query), route.
    fn http_server(self, s: Sp, path: &'static str, route: Option<&'static str>) -> Sp {
        let s = match self {
            Naming::Old => s.attr("http.method", "GET").attr("http.target", path),
            Naming::New => s.attr("http.request.method", "GET").attr("url.path", path),
        };
        match route {
            Some(route) => s.attr("http.route", route),
            None => s,
        }
    }

    /// An HTTP status code, as an int or (the Collector's Zipkin receiver,
    /// whose tags are text) as a string.
    fn status(self, s: Sp, code: i64, as_text: bool) -> Sp {
        let key = match self {
            Naming::Old => "http.status_code",
            Naming::New => "http.response.status_code",
        };
        if as_text {
            s.attr(key, code.to_string())
        } else {
            s.attr(key, code)
        }
    }

    /// An HTTP CLIENT span's request: Python's `requests` carries only the
    /// URL and the method under the old names; the new ones add the address.
    fn http_client(self, s: Sp, url: &'static str, host: &'static str) -> Sp {
        match self {
            Naming::Old => s.attr("http.method", "GET").attr("http.url", url),
            Naming::New => s
                .attr("http.request.method", "GET")
                .attr("url.full", url)
                .attr("server.address", host)
                .attr("server.port", 8080),
        }
    }

    /// A database CLIENT span: Java's JDBC (agent 1.x) and Go's `otelsql`
    /// before 1.33 wrote `db.statement` and `db.system`, after it
    /// `db.query.text` and `db.system.name`.
    fn db(self, s: Sp, statement: &'static str, namespace: &'static str, host: &'static str) -> Sp {
        match self {
            Naming::Old => s
                .attr("db.system", "postgresql")
                .attr("db.statement", statement)
                .attr("db.name", namespace)
                .attr("net.peer.name", host),
            Naming::New => s
                .attr("db.system.name", "postgresql")
                .attr("db.query.text", statement)
                .attr("db.namespace", namespace)
                .attr("server.address", host),
        }
    }

    /// A gRPC span (Go's `otelgrpc`): the status code as an int attribute
    /// (the Collector's Zipkin receiver: text), the peer under either name.
    fn grpc(self, s: Sp, code: i64, as_text: bool, peer: Option<&'static str>) -> Sp {
        let s = s.attr("rpc.system", "grpc");
        let s = if as_text {
            s.attr("rpc.grpc.status_code", code.to_string())
        } else {
            s.attr("rpc.grpc.status_code", code)
        };
        match (peer, self) {
            (None, _) => s,
            (Some(p), Naming::Old) => s.attr("net.peer.name", p),
            (Some(p), Naming::New) => s.attr("server.address", p),
        }
    }
}

/// Python (Flask + `requests`): shop → orders → inventory (not
/// instrumented). Both `requests` calls give up with a ReadTimeout: status
/// ERROR without a description, an `exception` event, no HTTP status; shop
/// and orders answer 504. A cascade whose culprit is orders' call, named by
/// the host of its URL.
fn python_cascade(n: Naming) -> Vec<Sp> {
    let read_timeout = |s: Sp, message: &'static str| {
        let s = s
            .error("")
            .exception("requests.exceptions.ReadTimeout", message);
        match n {
            Naming::Old => s,
            Naming::New => s.attr("error.type", "requests.exceptions.ReadTimeout"),
        }
    };
    vec![
        n.status(
            n.http_server(
                sp(
                    "shop",
                    (1, 0),
                    "GET /checkout",
                    SpanKind::Server,
                    (0, 2_100),
                )
                .error(""),
                "/checkout",
                Some("/checkout"),
            ),
            504,
            false,
        ),
        read_timeout(
            n.http_client(
                sp("shop", (2, 1), "GET", SpanKind::Client, (5, 2_005)),
                "http://orders:8080/orders?cart=7",
                "orders",
            ),
            "HTTPConnectionPool(host='orders', port=8080): Read timed out. (read timeout=2)",
        ),
        n.status(
            n.http_server(
                sp(
                    "orders",
                    (3, 2),
                    "GET /orders",
                    SpanKind::Server,
                    (10, 2_060),
                )
                .error(""),
                "/orders",
                Some("/orders"),
            ),
            504,
            false,
        ),
        read_timeout(
            n.http_client(
                sp("orders", (4, 3), "GET", SpanKind::Client, (15, 2_015)),
                "http://inventory:8080/stock/42",
                "inventory",
            ),
            "HTTPConnectionPool(host='inventory', port=8080): Read timed out. (read timeout=2)",
        ),
    ]
}

/// Go (`otelhttp`, `otelgrpc`, `otelsql`): web → catalog over gRPC, whose
/// deadline both ends record (status code 4 as an int); web answers from a
/// fallback. One handled timeout: no cascade.
fn go_handled_deadline(n: Naming) -> Vec<Sp> {
    vec![
        n.status(
            n.http_server(
                sp("web", (1, 0), "GET /product", SpanKind::Server, (0, 1_100)),
                "/product",
                Some("/product"),
            ),
            200,
            false,
        ),
        n.grpc(
            sp(
                "web",
                (2, 1),
                "catalog.Catalog/Get",
                SpanKind::Client,
                (5, 1_005),
            )
            .error("context deadline exceeded"),
            4,
            false,
            Some("catalog"),
        ),
        n.grpc(
            sp(
                "catalog",
                (3, 2),
                "catalog.Catalog/Get",
                SpanKind::Server,
                (10, 1_010),
            )
            .error("context deadline exceeded"),
            4,
            false,
            None,
        ),
        n.db(
            sp(
                "catalog",
                (4, 3),
                "SELECT products",
                SpanKind::Client,
                (12, 1_009),
            )
            .error("context canceled"),
            "SELECT * FROM products WHERE id = $1",
            "catalog",
            "pg-catalog",
        ),
    ]
}

/// Java (agent, Spring Boot Actuator): a 900 ms health check whose JDBC
/// query timed out (an exception event on a failed span) and answered 503.
fn java_health_check(n: Naming) -> Vec<Sp> {
    vec![
        n.status(
            n.http_server(
                sp(
                    "billing",
                    (1, 0),
                    "GET /actuator/health",
                    SpanKind::Server,
                    (0, 900),
                )
                .error(""),
                "/actuator/health",
                Some("/actuator/health"),
            ),
            503,
            false,
        ),
        n.db(
            sp(
                "billing",
                (2, 1),
                "SELECT billing",
                SpanKind::Client,
                (5, 895),
            )
            .error("")
            .exception(
                "java.sql.SQLTimeoutException",
                "ERROR: canceling statement due to statement timeout",
            ),
            "SELECT 1",
            "billing",
            "pg-billing",
        ),
    ]
}

/// Node (`http` + `express`): start times from `Date.now()` (whole
/// milliseconds), ends from the monotonic clock, so the request handler seems
/// to end 0.2 ms after the request. A slow `/healthz` named only by its path,
/// and a slow `/order/status` that is no health check.
fn node_express(n: Naming, path: &'static str, route: Option<&'static str>) -> Vec<Sp> {
    vec![
        n.status(
            n.http_server(
                sp("api", (1, 0), "GET", SpanKind::Server, (0, 600)).end_extra_us(300),
                path,
                route,
            ),
            200,
            false,
        ),
        sp(
            "api",
            (2, 1),
            "middleware - query",
            SpanKind::Internal,
            (1, 1),
        )
        .end_extra_us(40),
        sp(
            "api",
            (3, 1),
            "request handler",
            SpanKind::Internal,
            (2, 600),
        )
        .end_extra_us(500),
    ]
}

/// Spans the Collector forwards from Zipkin instrumentations, tags as text:
/// nginx answers 504 ("504" as a string), search waits on index over gRPC,
/// whose deadline both ends record ("4"). Two timed-out calls: a cascade
/// whose culprit is index.
fn collector_cascade(n: Naming) -> Vec<Sp> {
    vec![
        n.status(
            n.http_server(
                sp("edge", (1, 0), "GET /search", SpanKind::Server, (0, 3_000))
                    .error("upstream timed out (110: Connection timed out)"),
                "/search",
                None,
            ),
            504,
            true,
        ),
        n.http_server(
            sp(
                "search",
                (2, 1),
                "GET /search",
                SpanKind::Server,
                (10, 3_500),
            ),
            "/search",
            Some("/search"),
        ),
        n.grpc(
            sp(
                "search",
                (3, 2),
                "index.Index/Query",
                SpanKind::Client,
                (20, 3_010),
            )
            .error("DEADLINE_EXCEEDED"),
            4,
            true,
            Some("index"),
        ),
        n.grpc(
            sp(
                "index",
                (4, 3),
                "index.Index/Query",
                SpanKind::Server,
                (25, 5_000),
            )
            .error("DEADLINE_EXCEEDED"),
            4,
            true,
            None,
        ),
    ]
}

/// What a user sees of one daemon after it analyzed every trace.
#[derive(Debug, PartialEq)]
struct Seen {
    /// (kind, service, operation, peer, severity, count), sorted.
    findings: Vec<Value>,
    /// Per trace, its warning codes (sorted).
    warnings: Vec<Vec<String>>,
    /// Per entry and edge: caller, callee, operation, calls, timed out.
    budgets: Vec<Value>,
    /// The statement log: statement, target, count.
    queries: Vec<Value>,
}

async fn run(naming: Naming) -> Seen {
    let d = support::start(support::detect_often(Settings::default())).await;
    let traces = vec![
        python_cascade(naming),
        go_handled_deadline(naming),
        java_health_check(naming),
        node_express(naming, "/healthz", None),
        node_express(naming, "/order/status", Some("/order/status")),
        collector_cascade(naming),
    ];
    let sizes: Vec<usize> = traces.iter().map(Vec::len).collect();
    let sent = traces.len();
    let ids = support::send(&d, traces).await;
    let mut warnings = Vec::new();
    for (id, n) in ids.into_iter().zip(sizes) {
        let t = d.wait_trace(id, n).await;
        let mut codes: Vec<String> = t["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["code"].as_str().unwrap().to_owned())
            .collect();
        codes.sort();
        warnings.push(codes);
    }
    d.detected(sent).await;
    let seen = collect(&d, warnings).await;
    d.stop().await;
    seen
}

async fn collect(d: &TestDaemon, warnings: Vec<Vec<String>>) -> Seen {
    let (_, body) = d.get("/api/v1/findings").await;
    let mut findings: Vec<Value> = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            json!([
                f["kind"],
                f["culprit"]["service"],
                f["culprit"]["operation"],
                f["culprit"]["peer"],
                f["severity"],
                f["count"]
            ])
        })
        .collect();
    findings.sort_by_key(|f| f.to_string());
    let (_, body) = d.get("/api/v1/timeouts").await;
    let mut budgets: Vec<Value> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            e["edges"].as_array().unwrap().iter().map(move |g| {
                json!([
                    e["entry"],
                    e["timed_out"],
                    g["caller"],
                    g["callee"],
                    g["operation"],
                    g["calls"],
                    g["timed_out"]
                ])
            })
        })
        .collect();
    budgets.sort_by_key(|b| b.to_string());
    let (_, body) = d.get("/api/v1/queries").await;
    let mut queries: Vec<Value> = body["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| json!([q["statement"], q["target"], q["count"]]))
        .collect();
    queries.sort_by_key(|q| q.to_string());
    Seen {
        findings,
        warnings,
        budgets,
        queries,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_conventions_give_the_same_findings_and_warnings() {
    let (old, new) = (run(Naming::Old).await, run(Naming::New).await);
    assert_eq!(old, new);

    // What both said, so neither can agree by saying nothing.
    assert_eq!(
        old.findings,
        [
            json!([
                "cascading_timeout",
                "index",
                "index.Index/Query",
                null,
                "critical",
                1
            ]),
            json!([
                "cascading_timeout",
                "orders",
                "GET",
                "inventory",
                "critical",
                1
            ]),
            json!(["slow_health_check", "api", "/healthz", null, "warning", 1]),
            json!([
                "slow_health_check",
                "billing",
                "/actuator/health",
                null,
                "warning",
                1
            ]),
        ]
    );
    let [python, go, java, node_health, node_status, collector] = &old.warnings[..] else {
        panic!("six traces: {:?}", old.warnings);
    };
    // Work that went on after the caller gave up is wasted, and said so:
    // orders 55 ms after shop's call, catalog 5 ms after web's, search and
    // index after edge and search.
    assert_eq!(python, &["child_outlives_parent"]);
    assert_eq!(go, &["child_outlives_parent"]);
    assert_eq!(collector, &["child_outlives_parent"; 2]);
    assert!(java.is_empty(), "{java:?}");
    // The express handler's 0.2 ms is the timestamps' millisecond, not work.
    assert!(node_health.is_empty(), "{node_health:?}");
    assert!(node_status.is_empty(), "{node_status:?}");

    let edge = |caller: &str, callee: &str| {
        old.budgets
            .iter()
            .find(|b| b[2] == caller && b[3] == callee)
            .unwrap_or_else(|| panic!("{caller} → {callee}: {:#?}", old.budgets))
            .clone()
    };
    // Python's call, named by its URL's host; its ReadTimeout counted.
    assert_eq!(edge("orders", "inventory")[6], 1);
    // One gRPC deadline recorded at both ends: one timed-out call.
    assert_eq!(edge("web", "catalog")[6], 1);
    // The JDBC timeout, named by the database's address.
    assert_eq!(edge("billing", "pg-billing")[6], 1);

    let statements: Vec<&Value> = old.queries.iter().map(|q| &q[0]).collect();
    assert_eq!(
        statements,
        [
            &json!("SELECT * FROM products WHERE id = $1"),
            &json!("SELECT ?")
        ]
    );
}
