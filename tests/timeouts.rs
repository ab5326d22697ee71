//! Timeout findings end to end: spans exported through the real OTLP exporter,
//! findings read from the HTTP API.

mod support;

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::scenarios::cascade;
use support::{sp, Sp, TestDaemon};

/// A span: `hop(service, id, parent, ...)` reads like the tables below.
fn hop(
    service: &'static str,
    id: u64,
    parent: u64,
    name: &'static str,
    kind: SpanKind,
    times: (u64, u64),
) -> Sp {
    sp(service, (id, parent), name, kind, times)
}

/// Exports one trace through the harness and waits for its analysis.
async fn send(d: &TestDaemon, hops: Vec<Sp>) -> Value {
    let n = hops.len();
    let ids = support::send(d, vec![hops]).await;
    d.wait_trace(ids[0], n).await
}

async fn findings(d: &TestDaemon, query: &str) -> Vec<Value> {
    let (status, body) = d.get(&format!("/api/v1/findings{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["findings"].as_array().expect("findings").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_names_the_slow_leaf_not_the_first_span_that_failed() {
    let d = support::start(Settings::default()).await;
    let trace = send(&d, cascade()).await;
    let trace_id = trace["trace_id"].as_str().unwrap().to_owned();

    let found = findings(&d, "?kind=cascading_timeout").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "inventory");
    assert_eq!(f["culprit"]["operation"], "GET /inventory");
    assert_eq!(
        f["severity"], "critical",
        "the entry point itself timed out"
    );
    assert_eq!(f["count"], 1);
    assert_eq!(f["trace_ids"][0], trace_id.as_str());
    assert_eq!(f["crossed"][0]["threshold"], "cascade.min_calls");
    assert_eq!(f["crossed"][0]["limit"], 2.0);
    let chain: Vec<&str> = f["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        chain,
        [
            "gateway",
            "gateway",
            "frontend",
            "frontend",
            "orders",
            "orders",
            "inventory"
        ]
    );
    assert_eq!(f["evidence"]["timed_out_spans"], 6);
    assert_eq!(
        f["evidence"]["wasted_ms"], 975.0,
        "inventory ran 975 ms after orders gave up"
    );
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("inventory GET /inventory took 3970 ms"),
        "{}",
        f["summary"]
    );
    assert!(f["remedy"]
        .as_str()
        .unwrap()
        .contains("propagate deadlines"));

    // The trace shows the finding it contributed to, and the finding stands alone.
    assert_eq!(trace["findings"][0]["id"], f["id"]);
    let (status, one) = d
        .get(&format!("/api/v1/findings/{}", f["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["culprit"], f["culprit"]);
    // The callers' overrun is the child-outlives-parent signature, not clock skew.
    let codes: Vec<&str> = trace["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"child_outlives_parent") && !codes.contains(&"clock_skew"),
        "{codes:?}"
    );

    // A second occurrence merges into the same finding.
    send(&d, cascade()).await;
    let again = findings(
        &d,
        "?kind=cascading_timeout&service=inventory&severity=critical&since=1h",
    )
    .await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["count"], 2);
    assert_eq!(again[0]["id"], f["id"]);
    assert_eq!(findings(&d, "?service=nobody").await.len(), 0);
    assert_eq!(findings(&d, "?until=2000-01-01T00:00:00Z").await.len(), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_traffic_and_a_slow_leaf_within_propagated_deadlines_raise_no_cascade() {
    let d = support::start(Settings::default()).await;
    // The same topology, everyone waiting for a slow inventory within budget.
    let slow_but_in_budget = vec![
        hop(
            "gateway",
            1,
            0,
            "POST /checkout",
            SpanKind::Server,
            (0, 2500),
        )
        .http(200),
        hop(
            "gateway",
            2,
            1,
            "POST /checkout",
            SpanKind::Client,
            (5, 2495),
        )
        .http(200),
        hop(
            "frontend",
            3,
            2,
            "POST /checkout",
            SpanKind::Server,
            (10, 2490),
        )
        .http(200),
        hop(
            "frontend",
            4,
            3,
            "POST /orders",
            SpanKind::Client,
            (15, 2485),
        )
        .http(200),
        hop("orders", 5, 4, "POST /orders", SpanKind::Server, (20, 2480)).http(200),
        hop(
            "orders",
            6,
            5,
            "GET /inventory",
            SpanKind::Client,
            (25, 2475),
        )
        .http(200),
        hop(
            "inventory",
            7,
            6,
            "GET /inventory",
            SpanKind::Server,
            (30, 2470),
        )
        .http(200),
    ];
    let t = send(&d, slow_but_in_budget).await;
    assert_eq!(t["findings"], Value::Array(vec![]));
    assert_eq!(
        t["hops"][0]["service"], "inventory",
        "the slow hop still leads the latency share"
    );

    let fast: Vec<Sp> = cascade()
        .into_iter()
        .map(|mut h| {
            h.spec.end_ms = h.spec.start_ms + 20 - h.spec.id;
            h.error = None;
            h.http_status = Some(200);
            h
        })
        .collect();
    send(&d, fast).await;
    assert_eq!(findings(&d, "?kind=cascading_timeout").await.len(), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_fast_502s_is_not_a_timeout() {
    let d = support::start(Settings::default()).await;
    for _ in 0..5 {
        let bad_gateway = vec![
            hop("gateway", 1, 0, "POST /checkout", SpanKind::Server, (0, 40))
                .failed("502 Bad Gateway", 502),
            hop("gateway", 2, 1, "POST /checkout", SpanKind::Client, (5, 35))
                .failed("502 Bad Gateway", 502),
            hop(
                "frontend",
                3,
                2,
                "POST /checkout",
                SpanKind::Server,
                (8, 32),
            )
            .failed("upstream orders: connection refused", 502),
            hop("frontend", 4, 3, "POST /orders", SpanKind::Client, (10, 30))
                .failed("dial tcp 10.0.0.9:8080: connect: connection refused", 502),
        ];
        let t = send(&d, bad_gateway).await;
        assert_eq!(t["error"], true);
        assert_eq!(t["findings"], Value::Array(vec![]));
    }
    assert_eq!(findings(&d, "?kind=cascading_timeout").await.len(), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_timeout_handled_by_its_caller_is_not_a_cascade() {
    let d = support::start(Settings::default()).await;
    // orders gives up on inventory and answers from a cache: one timeout, no cascade.
    let handled = vec![
        hop(
            "frontend",
            1,
            0,
            "GET /product",
            SpanKind::Server,
            (0, 1100),
        )
        .http(200),
        hop("frontend", 2, 1, "GET /orders", SpanKind::Client, (5, 1095)).http(200),
        hop("orders", 3, 2, "GET /orders", SpanKind::Server, (10, 1090)).http(200),
        hop(
            "orders",
            4,
            3,
            "GET /inventory",
            SpanKind::Client,
            (15, 1015),
        )
        .failed("context deadline exceeded", 504),
        hop(
            "inventory",
            5,
            4,
            "GET /inventory",
            SpanKind::Server,
            (20, 1500),
        )
        .http(200),
    ];
    let t = send(&d, handled).await;
    assert_eq!(t["findings"], Value::Array(vec![]));
    assert_eq!(findings(&d, "").await.len(), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_requests_with_bad_parameters_get_json_errors() {
    let d = support::start(Settings::default()).await;
    for (path, status, code) in [
        ("/api/v1/findings?kind=slowness", 400, "invalid_kind"),
        ("/api/v1/findings?severity=urgent", 400, "invalid_severity"),
        ("/api/v1/findings?since=last-tuesday", 400, "invalid_time"),
        ("/api/v1/findings/xyz", 400, "invalid_finding_id"),
        (
            "/api/v1/findings/0123456789abcdef",
            404,
            "finding_not_found",
        ),
    ] {
        let (got, body) = d.get(path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_the_slow_call_are_counted() {
    let d = support::start(Settings::default()).await;
    // orders calls inventory, times out after 1 s, and retries: both slow.
    let retried = vec![
        hop(
            "frontend",
            1,
            0,
            "POST /orders",
            SpanKind::Server,
            (0, 2100),
        )
        .failed("context deadline exceeded", 504),
        hop(
            "frontend",
            2,
            1,
            "POST /orders",
            SpanKind::Client,
            (5, 2095),
        )
        .failed("context deadline exceeded", 504),
        hop("orders", 3, 2, "POST /orders", SpanKind::Server, (10, 2200))
            .failed("upstream timed out", 504),
        hop(
            "orders",
            4,
            3,
            "GET /inventory",
            SpanKind::Client,
            (15, 1015),
        )
        .failed("context deadline exceeded", 504),
        hop(
            "inventory",
            5,
            4,
            "GET /inventory",
            SpanKind::Server,
            (20, 1800),
        )
        .http(200),
        hop(
            "orders",
            6,
            3,
            "GET /inventory",
            SpanKind::Client,
            (1020, 2020),
        )
        .failed("context deadline exceeded", 504),
        hop(
            "inventory",
            7,
            6,
            "GET /inventory",
            SpanKind::Server,
            (1025, 2600),
        )
        .http(200),
    ];
    send(&d, retried).await;
    let found = findings(&d, "?kind=cascading_timeout").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["culprit"]["service"], "inventory");
    assert_eq!(found[0]["evidence"]["retries"], 1);
    d.stop().await;
}

/// gRPC records a deadline at both ends of a call: the CLIENT span and the
/// SERVER span that saw it cancelled. Python's `requests` over `urllib3`, under
/// the app's own span, records one ReadTimeout on three spans. Each is one
/// timed-out call its caller handled (it answered 200): no cascade. Two calls
/// stacked, each with its two ends, still are one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ends_of_one_timed_out_call_are_one_timeout_not_a_cascade() {
    let d = support::start(Settings::default()).await;
    let grpc = |h: Sp| {
        h.attr("rpc.system", "grpc")
            .attr("rpc.grpc.status_code", 4)
            .error("DEADLINE_EXCEEDED")
    };
    // frontend → orders, the call timed out at both ends.
    let both_ends = || {
        vec![
            hop(
                "frontend",
                1,
                0,
                "GET /product",
                SpanKind::Server,
                (0, 1100),
            )
            .http(200),
            grpc(hop(
                "frontend",
                2,
                1,
                "orders.Orders/Get",
                SpanKind::Client,
                (5, 1005),
            )),
            grpc(hop(
                "orders",
                3,
                2,
                "orders.Orders/Get",
                SpanKind::Server,
                (10, 1010),
            )),
        ]
    };
    let read_timeout = |h: Sp| {
        h.error("").exception(
            "requests.exceptions.ReadTimeout",
            "HTTPConnectionPool(host='orders', port=80): Read timed out. (read timeout=1)",
        )
    };
    let nested = vec![
        hop("shop", 1, 0, "GET /product", SpanKind::Server, (0, 1100)).http(200),
        read_timeout(hop(
            "shop",
            2,
            1,
            "fetch_orders",
            SpanKind::Internal,
            (2, 1008),
        )),
        read_timeout(hop("shop", 3, 2, "GET", SpanKind::Client, (4, 1006))),
        read_timeout(hop("shop", 4, 3, "GET", SpanKind::Client, (5, 1005))),
        hop("orders", 5, 4, "GET /orders", SpanKind::Server, (10, 1500)).http(200),
    ];
    for trace in [both_ends(), nested] {
        let t = send(&d, trace).await;
        assert_eq!(t["findings"], Value::Array(vec![]), "{t:#}");
    }
    assert_eq!(findings(&d, "?kind=cascading_timeout").await.len(), 0);

    // frontend → orders → inventory, both calls timed out at both ends.
    let mut stacked = both_ends();
    stacked.extend([
        grpc(hop(
            "orders",
            4,
            3,
            "inventory.Stock/Get",
            SpanKind::Client,
            (15, 1008),
        )),
        grpc(hop(
            "inventory",
            5,
            4,
            "inventory.Stock/Get",
            SpanKind::Server,
            (20, 1009),
        )),
    ]);
    send(&d, stacked).await;
    let found = findings(&d, "?kind=cascading_timeout").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["culprit"]["service"], "inventory");
    assert_eq!(found[0]["evidence"]["timed_out_calls"], 2);
    assert_eq!(found[0]["evidence"]["timed_out_spans"], 4);
    d.stop().await;
}

/// A span that recorded a timeout exception and still succeeded handled it (a
/// retry, a fallback): no timeout, no cascade, no timed-out call in the
/// budgets. The same exception on a span that failed is a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_on_a_span_that_succeeded_is_not_a_timeout() {
    let d = support::start(support::detect_often(Settings::default())).await;
    let retried = |h: Sp| {
        h.exception(
            "requests.exceptions.ReadTimeout",
            "HTTPConnectionPool(host='orders', port=80): Read timed out. (read timeout=1)",
        )
    };
    let handled = vec![
        hop("shop", 1, 0, "GET /cart", SpanKind::Server, (0, 2100)).http(200),
        retried(hop("shop", 2, 1, "GET", SpanKind::Client, (5, 2095)).http(200)),
        retried(hop("orders", 3, 2, "GET /orders", SpanKind::Server, (10, 2090)).http(200)),
        retried(hop("orders", 4, 3, "GET", SpanKind::Client, (15, 2085)).http(200)),
        hop("stock", 5, 4, "GET /stock", SpanKind::Server, (20, 2080)).http(200),
    ];
    let t = send(&d, handled).await;
    assert_eq!(t["findings"], Value::Array(vec![]), "{t:#}");
    assert_eq!(t["error"], false);
    let timed_out = |budgets: &Value| -> u64 {
        budgets["entries"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["edges"].as_array().unwrap())
            .map(|e| e["timed_out"].as_u64().unwrap())
            .sum()
    };
    d.detected(1).await;
    let (status, budgets) = d.get("/api/v1/timeouts").await;
    assert_eq!(status, 200, "{budgets}");
    assert_eq!(timed_out(&budgets), 0, "{budgets:#}");

    // The call that gave up: status ERROR without a message, the same event,
    // no HTTP status.
    let failed = vec![
        hop("shop", 1, 0, "GET /cart", SpanKind::Server, (0, 1100)).http(200),
        retried(hop("shop", 2, 1, "GET", SpanKind::Client, (5, 1005)).error("")),
    ];
    send(&d, failed).await;
    d.detected(2).await;
    let (_, budgets) = d.get("/api/v1/timeouts").await;
    assert_eq!(timed_out(&budgets), 1, "{budgets:#}");
    assert_eq!(findings(&d, "?kind=cascading_timeout").await.len(), 0);
    d.stop().await;
}
