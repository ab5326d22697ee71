//! The saturation detectors end to end: hand-built spans through the real OTLP
//! exporter, answers read from `/api/v1/findings` and `/api/v1/queries`.
//!
//! Each test sends the look-alikes first and waits until they are analyzed,
//! then the culprit: the finding for the culprit comes from a detector run (or
//! an analysis) that saw the look-alikes too, so their silence is checked.

mod support;

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::scenarios::db_request;
use support::{sp, Sp, TestDaemon};

/// Waits until the detectors have run over a window of `traces` traces.
async fn window_holds(d: &TestDaemon, traces: usize) {
    d.wait_for("/api/v1/timeouts", |status, body| {
        status == 200 && body["window"]["traces"] == traces
    })
    .await;
}

/// The findings of `kind` once at least one is there.
async fn findings_of(d: &TestDaemon, kind: &str) -> Vec<Value> {
    d.wait_for(&format!("/api/v1/findings?kind={kind}"), |status, body| {
        status == 200 && !body["findings"].as_array().unwrap().is_empty()
    })
    .await["findings"]
        .as_array()
        .unwrap()
        .clone()
}

/// Every finding of `kind` now.
async fn all_of(d: &TestDaemon, kind: &str) -> Vec<Value> {
    d.get(&format!("/api/v1/findings?kind={kind}")).await.1["findings"]
        .as_array()
        .unwrap()
        .clone()
}

/// A slow statement, with different literals in every call, is one shape and
/// one finding naming it; fast queries, a fast query after a long wait for a
/// connection, and one slow call of a fast shape are not slow queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_names_the_slow_statement_and_only_it() {
    let d = support::start_detecting().await;
    let mut lookalikes = Vec::new();
    for _ in 0..20 {
        lookalikes.push(db_request(
            "orders",
            "GET /items/{id}",
            "SELECT * FROM items WHERE id = $1".to_owned(),
            2,
            5,
        ));
    }
    // Pool exhaustion, not a slow query: 880 ms waiting, an 8 ms update.
    for n in 0..4 {
        lookalikes.push(db_request(
            "payments",
            "POST /pay",
            format!("UPDATE accounts SET balance = balance - {n}0 WHERE id = {n}"),
            880,
            8,
        ));
    }
    // One slow call among fast ones is an outlier.
    for n in 0..10 {
        let ms = if n == 0 { 2_000 } else { 4 };
        lookalikes.push(db_request(
            "orders",
            "GET /cart",
            format!("SELECT * FROM carts WHERE id = {n}"),
            1,
            ms,
        ));
    }
    support::send(&d, lookalikes).await;
    window_holds(&d, 34).await;

    let culprits = (0..4)
        .map(|n| {
            db_request(
                "orders",
                "GET /orders",
                format!(
                    "SELECT *  FROM orders\n WHERE customer_id = {n}{n} AND state IN ('new', 'paid', '{n}')"
                ),
                20,
                600 + n,
            )
        })
        .collect();
    support::send(&d, culprits).await;
    window_holds(&d, 38).await;

    let statement = "SELECT * FROM orders WHERE customer_id = ? AND state IN (?)";
    let found = d
        .wait_for("/api/v1/findings?kind=slow_query", |status, body| {
            status == 200 && body["findings"][0]["count"] == 4
        })
        .await;
    println!("slow_query finding: {:#}", found["findings"][0]);
    let found = found["findings"].as_array().unwrap();
    assert_eq!(found.len(), 1, "only the slow statement: {found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "orders");
    assert_eq!(f["culprit"]["operation"], statement);
    assert_eq!(f["culprit"]["peer"], "postgresql db.internal/shop");
    assert_eq!(f["evidence"]["calls"], 4);
    assert_eq!(f["evidence"]["p95_ms"], 603.0);
    assert_eq!(f["evidence"]["threshold_ms"], 100.0);
    assert!(f["summary"].as_str().unwrap().contains("p95 603 ms"));
    assert!(f["remedy"].as_str().unwrap().contains("index"));
    assert_eq!(f["trace_ids"].as_array().unwrap().len(), 4);

    let log = d.get("/api/v1/queries?target=db.internal").await.1;
    println!("/api/v1/queries: {log:#}");
    let rows = log["queries"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "one row per shape: {log:#}");
    let top = &rows[0];
    assert_eq!(top["statement"], statement, "the most critical time first");
    assert_eq!(top["count"], 4);
    assert_eq!(top["services"], serde_json::json!(["orders"]));
    assert_eq!(
        top["target"],
        serde_json::json!({"system": "postgresql", "address": "db.internal", "namespace": "shop"})
    );
    assert_eq!(
        (top["p50_ms"].as_f64(), top["max_ms"].as_f64()),
        (Some(601.0), Some(603.0))
    );
    assert_eq!(top["total_ms"], 2_406.0);
    assert_eq!(top["critical_ms"], 2_406.0);
    let share = top["critical_share"].as_f64().unwrap();
    assert!((share - 2_406.0 / 2_506.0).abs() < 1e-9, "{share}");
    let by_statement = |s: &str| rows.iter().find(|r| r["statement"] == s).unwrap().clone();
    assert_eq!(
        by_statement("SELECT * FROM carts WHERE id = ?")["count"],
        10
    );
    assert_eq!(
        by_statement("SELECT * FROM items WHERE id = $1")["count"],
        20
    );
    let update = by_statement("UPDATE accounts SET balance = balance - ? WHERE id = ?");
    assert_eq!(
        (update["count"].as_u64(), update["max_ms"].as_f64()),
        (Some(4), Some(8.0))
    );

    assert!(d.get("/api/v1/queries?target=mysql").await.1["queries"]
        .as_array()
        .unwrap()
        .is_empty());
    let limited = d.get("/api/v1/queries?limit=1").await.1;
    assert_eq!(limited["queries"].as_array().unwrap().len(), 1);
    d.stop().await;
}

/// A slow `/healthz` is a finding naming the service and route; a fast
/// readiness check and slow endpoints whose paths only end in a health word
/// (`status`, `live`) are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_health_check_is_named_and_look_alikes_are_not() {
    let d = support::start_detecting().await;
    let server = |route: &'static str, ms: u64| {
        vec![sp("api", (1, 0), route, SpanKind::Server, (0, ms)).attr("http.route", route)]
    };
    // Old HTTP conventions, no route: the path is `http.target`.
    let target = |path: &'static str, ms: u64| {
        vec![sp("api", (1, 0), "GET", SpanKind::Server, (0, ms)).attr("http.target", path)]
    };
    support::send(
        &d,
        vec![
            server("/readyz", 20),
            server("/orders/{id}/status", 900),
            server("/order/status", 900),
            server("/deliver", 900),
            server("/livez", 499),
            target("/api/v1/orders/123/status", 900),
            target("/order/status?id=7", 900),
        ],
    )
    .await;
    window_holds(&d, 7).await;
    support::send(&d, vec![server("/healthz", 800)]).await;
    let found = findings_of(&d, "slow_health_check").await;
    window_holds(&d, 8).await;
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "api");
    assert_eq!(f["culprit"]["operation"], "/healthz");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["evidence"]["duration_ms"], 800.0);
    assert!(f["summary"].as_str().unwrap().contains("800 ms"));
    assert!(f["remedy"]
        .as_str()
        .unwrap()
        .contains("independent of dependencies"));
    assert_eq!(all_of(&d, "slow_health_check").await.len(), 1);
    d.stop().await;
}

/// `health_routes` replaces the list: a slow `/internal/up` is a health check
/// of this deployment, and `/healthz`, no longer listed, is an endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_health_routes_replace_the_defaults() {
    let d = support::start(hopscope::config::Settings {
        health_routes: Some(vec!["/internal/up".to_owned()]),
        ..hopscope::config::Settings::default()
    })
    .await;
    let server = |route: &'static str| {
        vec![sp("api", (1, 0), route, SpanKind::Server, (0, 900)).attr("http.route", route)]
    };
    let ids = support::send(&d, vec![server("/healthz"), server("/internal/up")]).await;
    for id in ids {
        d.wait_trace(id, 1).await;
    }
    let found = all_of(&d, "slow_health_check").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["culprit"]["operation"], "/internal/up");
    d.stop().await;
}

/// A new instance whose first requests take 600 ms against 20 ms once warm is
/// a cold start of its service; a new instance that is fast from the start,
/// and one whose very first request alone is slow, are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_names_the_service_of_the_slow_new_instance() {
    let d = support::start_detecting().await;
    let request = |service: &'static str, instance: &str, at: u64, ms: u64| {
        vec![sp(
            service,
            (1, 0),
            "GET /search",
            SpanKind::Server,
            (at, at + ms),
        )
        .attr("http.route", "/search")
        .instance(instance)]
    };
    let mut lookalikes = Vec::new();
    for n in 0..12 {
        lookalikes.push(request("search", "search-a", n * 100, 20 + n % 3));
        lookalikes.push(request("search", "search-b", 5_000 + n * 100, 21));
        let first = if n == 0 { 900 } else { 20 };
        lookalikes.push(request("search", "search-c", 9_000 + n * 100, first));
        lookalikes.push(request("checkout", "checkout-a", n * 100, 20 + n % 3));
    }
    support::send(&d, lookalikes).await;
    window_holds(&d, 48).await;
    let cold: Vec<Vec<Sp>> = (0..10)
        .map(|n| {
            let ms = if n < 3 { 600 + n } else { 20 };
            request("checkout", "checkout-b", 5_000 + n * 1_000, ms)
        })
        .collect();
    support::send(&d, cold).await;
    window_holds(&d, 58).await;
    let found = d
        .wait_for("/api/v1/findings?kind=cold_start", |status, body| {
            status == 200 && body["findings"][0]["count"] == 3
        })
        .await;
    let found = found["findings"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "checkout");
    let instances = f["evidence"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["instance"], "checkout-b");
    assert_eq!(
        instances[0]["first_ms"],
        serde_json::json!([600.0, 601.0, 602.0])
    );
    assert_eq!(instances[0]["steady_median_ms"], 20.0);
    assert_eq!(
        f["crossed"],
        serde_json::json!([
            {"threshold": "cold_start.factor", "limit": 3.0, "value": 30.05},
            {"threshold": "cold_start.min_extra_ms", "limit": 100.0, "value": 581.0},
        ])
    );
    assert!(f["summary"].as_str().unwrap().contains("checkout-b"));
    assert_eq!(f["trace_ids"].as_array().unwrap().len(), 3);
    d.stop().await;
}

/// Each first request is compared with its own operation: a new instance
/// whose first requests are reports, as slow as reports always are, is not
/// cold, though the service's other requests (searches) are fast; one whose
/// first searches take 600 ms is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_compares_first_requests_with_the_same_operation() {
    let d = support::start_detecting().await;
    let request = |instance: &str, route: &'static str, at: u64, ms: u64| {
        vec![
            sp("reports", (1, 0), route, SpanKind::Server, (at, at + ms))
                .attr("http.route", route)
                .instance(instance),
        ]
    };
    let mut lookalikes = Vec::new();
    for n in 0..12 {
        lookalikes.push(request("reports-a", "GET /search", n * 100, 20));
        lookalikes.push(request("reports-a", "GET /report", n * 100 + 50, 800 + n));
    }
    for n in 0..10 {
        let (route, ms) = if n < 3 {
            ("GET /report", 790 + n)
        } else {
            ("GET /search", 21)
        };
        lookalikes.push(request("reports-b", route, 5_000 + n * 1_000, ms));
    }
    support::send(&d, lookalikes).await;
    window_holds(&d, 34).await;
    let cold: Vec<Vec<Sp>> = (0..10)
        .map(|n| {
            let ms = if n < 3 { 600 + n } else { 20 };
            request("reports-c", "GET /search", 20_000 + n * 1_000, ms)
        })
        .collect();
    support::send(&d, cold).await;
    window_holds(&d, 44).await;
    let found = d
        .wait_for("/api/v1/findings?kind=cold_start", |status, body| {
            status == 200 && body.to_string().contains("reports-c")
        })
        .await;
    let found = found["findings"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["count"], 3, "reports-c's first three only: {f:#}");
    let instances = f["evidence"]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{f:#}");
    assert_eq!(instances[0]["instance"], "reports-c");
    assert_eq!(
        instances[0]["operations"],
        serde_json::json!(["GET /search", "GET /search", "GET /search"])
    );
    assert_eq!(instances[0]["steady_median_ms"], 20.0);
    d.stop().await;
}

/// The `[detectors]` section of the config file: with `slow_query.absolute_ms`
/// and `slow_health_check.limit_ms` lowered below what the spans take, a
/// 200 ms statement and a 300 ms health check are findings that the defaults
/// (500 ms each) do not make, and each names the key and the configured limit
/// it crossed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowered_thresholds_make_findings_the_defaults_do_not_and_say_so() {
    let configured: hopscope::config::Settings = toml::from_str(
        "detect_interval = \"50ms\"\ntrace_idle = \"1s\"\n\
         [detectors.slow_query]\nabsolute_ms = 150\n\
         [detectors.slow_health_check]\nlimit_ms = 200\n",
    )
    .unwrap();
    let traces = || {
        let mut traces: Vec<Vec<Sp>> = (0..4)
            .map(|n| {
                let statement = format!("SELECT * FROM sales WHERE day = {n}");
                db_request("reports", "GET /report", statement, 1, 200)
            })
            .collect();
        traces.push(vec![sp(
            "api",
            (1, 0),
            "GET /healthz",
            SpanKind::Server,
            (0, 300),
        )
        .attr("http.route", "/healthz")]);
        traces
    };
    // The defaults: every trace analyzed and the window detectors current.
    let d = support::start_detecting().await;
    let spans: Vec<usize> = traces().iter().map(Vec::len).collect();
    for (id, spans) in support::send(&d, traces()).await.into_iter().zip(spans) {
        d.wait_trace(id, spans).await;
    }
    d.wait_for("/api/v1/stats", |status, body| {
        status == 200 && body["detectors_current"] == true
    })
    .await;
    assert_eq!(all_of(&d, "slow_query").await, Vec::<Value>::new());
    assert_eq!(all_of(&d, "slow_health_check").await, Vec::<Value>::new());
    d.stop().await;

    let d = support::start(configured).await;
    support::send(&d, traces()).await;
    let slow = findings_of(&d, "slow_query").await;
    assert_eq!(
        slow[0]["crossed"][0],
        serde_json::json!({"threshold": "slow_query.absolute_ms", "limit": 150.0, "value": 200.0}),
        "{slow:#?}"
    );
    assert_eq!(slow[0]["evidence"]["threshold_ms"], 150.0);
    let health = findings_of(&d, "slow_health_check").await;
    assert_eq!(
        health[0]["crossed"],
        serde_json::json!([{"threshold": "slow_health_check.limit_ms", "limit": 200.0, "value": 300.0}])
    );
    assert!(health[0]["summary"]
        .as_str()
        .unwrap()
        .contains("(over 200 ms)"));
    d.stop().await;
}
