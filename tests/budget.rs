//! The cross-trace timeout detectors end to end: traces with explicit
//! timestamps (a 100 s request takes no time to send) through the real OTLP
//! exporter, answers read from `/api/v1/timeouts` and `/api/v1/findings`.
//!
//! Each test sends the look-alikes first and waits until the window holds them,
//! then the culprit: the finding for the culprit comes from a detector run that
//! saw the look-alikes too, so their silence is checked, not assumed.

mod support;

use std::collections::BTreeMap;

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{sp, Sp, TestDaemon};

/// Waits until the detectors have run over a window of `traces` traces;
/// returns the budget map they computed.
async fn window_holds(d: &TestDaemon, traces: usize) -> Value {
    d.wait_for("/api/v1/timeouts", |status, body| {
        status == 200 && body["window"]["traces"] == traces
    })
    .await
}

fn entry<'a>(map: &'a Value, service: &str, operation: &str) -> &'a Value {
    map["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["entry"]["service"] == service && e["entry"]["operation"] == operation)
        .unwrap_or_else(|| panic!("no entry {service}:{operation} in {map}"))
}

fn edge<'a>(entry: &'a Value, caller: &str, callee: &str) -> &'a Value {
    entry["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["caller"] == caller && e["callee"] == callee)
        .unwrap_or_else(|| panic!("no edge {caller} → {callee} in {entry}"))
}

/// Every violation kind of an entry and of its edges.
fn violations(entry: &Value) -> Vec<String> {
    let mut out: Vec<String> = entry["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].as_str().unwrap().to_owned())
        .collect();
    for e in entry["edges"].as_array().unwrap() {
        for v in e["violations"].as_array().unwrap() {
            out.push(format!(
                "{} {}→{}",
                v["kind"].as_str().unwrap(),
                e["caller"].as_str().unwrap(),
                e["callee"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

fn findings(body: &Value) -> &Vec<Value> {
    body["findings"].as_array().unwrap()
}

fn approx(value: &Value, want: f64) -> bool {
    value.as_f64().is_some_and(|v| (v - want).abs() < 1e-6)
}

/// A gateway root that gave up at `limit_ms` with `code` while `backend` still
/// worked (to `limit_ms + 6 s`).
fn gave_up_at(
    gateway: &'static str,
    route: &'static str,
    backend: &'static str,
    limit_ms: u64,
    code: i64,
    message: &'static str,
) -> Vec<Sp> {
    vec![
        sp(gateway, (1, 0), route, SpanKind::Server, (0, limit_ms))
            .http(code)
            .error(message),
        sp(
            backend,
            (2, 1),
            route,
            SpanKind::Server,
            (5, limit_ms + 6_000),
        ),
    ]
}

/// A healthy request: the root calls a backend and both answer quickly.
fn healthy(service: &'static str, route: &'static str, ms: u64) -> Vec<Sp> {
    vec![
        sp(service, (1, 0), route, SpanKind::Server, (0, ms + 4)).http(200),
        sp(service, (2, 1), "GET", SpanKind::Client, (1, ms + 2)).http(200),
        sp("catalog", (3, 2), route, SpanKind::Server, (2, ms + 1)).http(200),
    ]
}

/// Roots that time out at exactly 29 s (504, "Endpoint request timed out") name
/// AWS API Gateway, at 60 s nginx or an ALB, at 100 s Cloudflare (524), at 10 s
/// a configured timeout of 10 s. One 30 s request is not a timeout cluster, a
/// storm of 502s is not a timeout even at 29 s, and fast traffic says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_limits_name_the_layer_that_gave_up() {
    let d = support::start_detecting().await;
    let mut lookalikes = vec![gave_up_at(
        "api",
        "GET /once",
        "worker",
        30_000,
        504,
        "upstream timed out",
    )];
    for _ in 0..5 {
        lookalikes.push(gave_up_at(
            "proxy",
            "GET /bad",
            "backend",
            29_000,
            502,
            "502 Bad Gateway",
        ));
    }
    for i in 0..20 {
        lookalikes.push(healthy("shop", "GET /", 100 + 10 * i));
    }
    support::send(&d, lookalikes).await;
    let map = window_holds(&d, 26).await;
    for (service, operation) in [
        ("api", "GET /once"),
        ("proxy", "GET /bad"),
        ("shop", "GET /"),
    ] {
        let e = entry(&map, service, operation);
        assert_eq!(violations(e), Vec::<String>::new(), "{e}");
        assert_eq!(e["timeout_ms"], Value::Null, "{e}");
    }
    assert_eq!(entry(&map, "api", "GET /once")["timed_out"], 1);
    assert_eq!(
        entry(&map, "proxy", "GET /bad")["timed_out"],
        0,
        "502 is not slow"
    );

    let mut culprits = Vec::new();
    for _ in 0..3 {
        culprits.push(gave_up_at(
            "apigw",
            "GET /report",
            "reports",
            29_000,
            504,
            "Endpoint request timed out",
        ));
        culprits.push(gave_up_at(
            "nginx",
            "GET /export",
            "exporter",
            60_000,
            504,
            "upstream timed out (110: Connection timed out) while reading response header from upstream",
        ));
        culprits.push(gave_up_at(
            "cdn",
            "GET /video",
            "origin",
            100_000,
            524,
            "A Timeout Occurred",
        ));
        culprits.push(gave_up_at(
            "lb",
            "GET /slow",
            "app",
            10_000,
            504,
            "Gateway Timeout",
        ));
    }
    support::send(&d, culprits).await;
    let body = d
        .wait_for("/api/v1/findings?kind=gateway_timeout", |status, body| {
            status == 200 && findings(body).len() == 4
        })
        .await;
    let by_service: BTreeMap<&str, &Value> = findings(&body)
        .iter()
        .map(|f| (f["culprit"]["service"].as_str().unwrap(), f))
        .collect();
    assert_eq!(
        by_service.keys().copied().collect::<Vec<_>>(),
        vec!["apigw", "cdn", "lb", "nginx"],
        "{body}"
    );

    let aws = by_service["apigw"];
    assert_eq!(aws["severity"], "critical");
    assert_eq!(aws["culprit"]["operation"], "GET /report");
    assert_eq!(aws["culprit"]["peer"], "AWS API Gateway");
    assert_eq!(aws["count"], 3);
    assert_eq!(aws["evidence"]["layer"], "aws_api_gateway");
    assert!(approx(&aws["evidence"]["timeout_ms"], 29_000.0), "{aws}");
    assert_eq!(aws["evidence"]["http_status"], 504);
    assert_eq!(aws["trace_ids"].as_array().unwrap().len(), 3);
    let summary = aws["summary"].as_str().unwrap();
    assert!(
        summary.contains("3 of 3 timed-out requests to apigw GET /report ended at 29 s (HTTP 504): AWS API Gateway's hard integration timeout"),
        "{summary}"
    );
    assert!(
        aws["remedy"].as_str().unwrap().contains("answer 202"),
        "{aws}"
    );

    let nginx = by_service["nginx"];
    assert_eq!(nginx["severity"], "warning");
    assert_eq!(nginx["culprit"]["peer"], "nginx / AWS ALB");
    assert_eq!(nginx["evidence"]["layer"], "nginx_or_alb");
    assert!(
        nginx["summary"]
            .as_str()
            .unwrap()
            .contains("proxy_read_timeout"),
        "{nginx}"
    );

    let cdn = by_service["cdn"];
    assert_eq!(cdn["culprit"]["peer"], "Cloudflare");
    assert_eq!(cdn["evidence"]["http_status"], 524);
    assert!(cdn["summary"].as_str().unwrap().contains("(524)"), "{cdn}");

    let lb = by_service["lb"];
    assert_eq!(lb["culprit"]["peer"], Value::Null);
    assert_eq!(lb["evidence"]["layer"], Value::Null);
    assert!(
        lb["summary"]
            .as_str()
            .unwrap()
            .contains("a configured timeout of 10 s"),
        "{lb}"
    );

    // The look-alikes stayed silent in the run that saw the culprits.
    let all = d.get("/api/v1/findings").await.1;
    for f in findings(&all) {
        let service = f["culprit"]["service"].as_str().unwrap();
        assert!(
            !["api", "proxy", "shop"].contains(&service),
            "a look-alike was reported: {f}"
        );
    }
    // The budget map says the same, per entry point.
    d.settled_and_detected().await;
    let map = d.get("/api/v1/timeouts?entry=apigw").await.1;
    assert_eq!(map["entries"].as_array().unwrap().len(), 1, "{map}");
    let e = entry(&map, "apigw", "GET /report");
    assert!(approx(&e["timeout_ms"], 29_000.0), "{e}");
    assert_eq!(e["supporting_calls"], 3);
    assert_eq!(e["layer"], "aws_api_gateway");
    assert_eq!(e["violations"][0]["id"], aws["id"]);
    d.stop().await;
}

/// gateway gives up at 29 s (API Gateway); api's call to reports starts 50 ms in
/// with a 30 s timeout: it can never fire before the gateway gives up, and
/// reports works on for 10 s after api stopped waiting.
fn inverted() -> Vec<Sp> {
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /report",
            SpanKind::Server,
            (0, 29_000),
        )
        .http(504)
        .error("Endpoint request timed out"),
        sp("api", (2, 1), "GET /report", SpanKind::Server, (2, 30_060)).http(504),
        sp("api", (3, 2), "GET", SpanKind::Client, (50, 30_050)).deadline(),
        sp(
            "reports",
            (4, 3),
            "GET /build",
            SpanKind::Server,
            (52, 40_050),
        ),
    ]
}

/// The same gateway's other route: quote is stuck past the gateway's 29 s in
/// `stuck` requests; in the others deadlines are propagated, each inner timeout
/// smaller than what is left (quote → pricing 25 s, pricing → rates 20 s) and
/// the callees stop when their caller gives up.
fn propagated(stuck: bool) -> Vec<Sp> {
    if stuck {
        return vec![
            sp(
                "gateway",
                (1, 0),
                "GET /quote",
                SpanKind::Server,
                (0, 29_000),
            )
            .http(504)
            .error("Endpoint request timed out"),
            sp("quote", (2, 1), "GET /quote", SpanKind::Server, (2, 29_001))
                .error("context canceled"),
        ];
    }
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /quote",
            SpanKind::Server,
            (0, 25_030),
        )
        .http(504),
        sp("quote", (2, 1), "GET /quote", SpanKind::Server, (2, 25_025)).http(504),
        sp("quote", (3, 2), "GET", SpanKind::Client, (10, 25_010)).deadline(),
        sp(
            "pricing",
            (4, 3),
            "GET /price",
            SpanKind::Server,
            (12, 25_011),
        )
        .error("context canceled"),
        sp("pricing", (5, 4), "GET", SpanKind::Client, (20, 20_020)).deadline(),
        sp(
            "rates",
            (6, 5),
            "GET /rates",
            SpanKind::Server,
            (21, 20_021),
        )
        .error("context canceled"),
    ]
}

/// web → orders 30 s, and orders → inventory 30 s too (100+ ms into its call):
/// equal stacked timeouts, inventory works on to 45 s.
fn stacked() -> Vec<Sp> {
    vec![
        sp("web", (1, 0), "GET /orders", SpanKind::Server, (0, 30_020)).http(504),
        sp("web", (2, 1), "GET", SpanKind::Client, (10, 30_010)).deadline(),
        sp(
            "orders",
            (3, 2),
            "GET /orders",
            SpanKind::Server,
            (12, 30_160),
        )
        .http(504),
        sp("orders", (4, 3), "GET", SpanKind::Client, (150, 30_150)).deadline(),
        sp(
            "inventory",
            (5, 4),
            "GET /stock",
            SpanKind::Server,
            (152, 45_000),
        ),
    ]
}

/// Inner timeouts not smaller than the budget left above them are inversions;
/// propagated deadlines (smaller than what is left, callees that stop) are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_timeout_longer_than_what_is_left_is_an_inversion() {
    let d = support::start_detecting().await;
    let mut lookalikes: Vec<Vec<Sp>> = (0..4).map(|_| propagated(true)).collect();
    lookalikes.extend((0..3).map(|_| propagated(false)));
    support::send(&d, lookalikes).await;
    let map = window_holds(&d, 7).await;
    let quote = entry(&map, "gateway", "GET /quote");
    assert!(approx(&quote["timeout_ms"], 29_000.0), "{quote}");
    let pricing = edge(quote, "quote", "pricing");
    assert!(approx(&pricing["timeout_ms"], 25_000.0), "{pricing}");
    assert!(approx(&pricing["budget_left_ms"], 28_990.0), "{pricing}");
    let rates = edge(quote, "pricing", "rates");
    assert!(approx(&rates["timeout_ms"], 20_000.0), "{rates}");
    assert!(approx(&rates["budget_left_ms"], 24_990.0), "{rates}");
    assert_eq!(rates["budget_from"]["kind"], "edge");
    assert_eq!(rates["budget_from"]["callee"], "pricing");
    let found = violations(quote);
    assert!(
        found.iter().all(|v| !v.starts_with("timeout_inversion")),
        "{found:?}"
    );

    let mut culprits: Vec<Vec<Sp>> = (0..4).map(|_| inverted()).collect();
    culprits.extend((0..3).map(|_| stacked()));
    support::send(&d, culprits).await;
    let body = d
        .wait_for("/api/v1/findings?kind=timeout_inversion", |status, body| {
            status == 200 && findings(body).len() == 2
        })
        .await;
    let inversion = findings(&body)
        .iter()
        .find(|f| f["culprit"]["service"] == "api")
        .unwrap_or_else(|| panic!("api → reports not reported: {body}"));
    assert_eq!(inversion["severity"], "warning");
    assert_eq!(inversion["culprit"]["operation"], "GET /build");
    assert_eq!(inversion["culprit"]["peer"], "reports");
    assert_eq!(inversion["count"], 4);
    let ev = &inversion["evidence"];
    assert!(approx(&ev["timeout_ms"], 30_000.0), "{ev}");
    assert!(approx(&ev["budget_left_ms"], 28_950.0), "{ev}");
    assert_eq!(ev["outer"]["kind"], "entry");
    assert!(approx(&ev["outer"]["timeout_ms"], 29_000.0), "{ev}");
    assert_eq!(ev["equal_to_outer"], false);
    assert!(
        inversion["summary"].as_str().unwrap().contains(
            "api → reports GET /build has a 30 s timeout, but only 28.95 s are left of the 29 s timeout in front of gateway GET /report"
        ),
        "{inversion}"
    );

    let web = d
        .wait_for(
            "/api/v1/findings?kind=gateway_timeout&service=web",
            |_, body| !findings(body).is_empty(),
        )
        .await;
    assert!(
        findings(&web)[0]["summary"].as_str().unwrap().contains(
            "ended at 30.02 s (HTTP 504): a configured timeout of 30 s on web → orders GET /orders, which the entry point only reported"
        ),
        "{web}"
    );

    let equal = findings(&body)
        .iter()
        .find(|f| f["culprit"]["service"] == "orders")
        .unwrap_or_else(|| panic!("orders → inventory not reported: {body}"));
    assert_eq!(equal["culprit"]["peer"], "inventory");
    assert_eq!(equal["evidence"]["equal_to_outer"], true);
    assert_eq!(equal["evidence"]["outer"]["kind"], "edge");
    assert_eq!(equal["evidence"]["outer"]["callee"], "orders");
    assert!(
        approx(&equal["evidence"]["budget_left_ms"], 29_860.0),
        "{equal}"
    );
    assert!(
        equal["summary"]
            .as_str()
            .unwrap()
            .contains("the same as the 30 s timeout of web → orders GET /orders"),
        "{equal}"
    );

    // Work that went on after its caller gave up, per edge.
    let dnp = d
        .wait_for(
            "/api/v1/findings?kind=deadline_not_propagated",
            |_, body| {
                findings(body)
                    .iter()
                    .any(|f| f["culprit"]["peer"] == "reports")
            },
        )
        .await;
    let reports = findings(&dnp)
        .iter()
        .find(|f| f["culprit"]["peer"] == "reports")
        .unwrap();
    assert_eq!(reports["count"], 4);
    assert!(
        approx(&reports["evidence"]["max_overrun_ms"], 10_000.0),
        "{reports}"
    );
    // Propagated: pricing and rates stopped within a millisecond or two.
    for f in findings(&dnp) {
        assert!(
            f["culprit"]["peer"] != "pricing" && f["culprit"]["peer"] != "rates",
            "{f}"
        );
    }

    d.settled_and_detected().await;
    let map = d
        .get("/api/v1/timeouts?entry=gateway:GET%20/report")
        .await
        .1;
    assert_eq!(map["entries"].as_array().unwrap().len(), 1, "{map}");
    let report = entry(&map, "gateway", "GET /report");
    let api = edge(report, "api", "reports");
    assert!(approx(&api["timeout_ms"], 30_000.0), "{api}");
    assert_eq!(api["supporting_calls"], 4);
    assert_eq!(api["depth"], 1);
    assert_eq!(api["overrunning_calls"], 4);
    assert_eq!(
        violations(report),
        vec![
            "gateway_timeout",
            "deadline_not_propagated gateway→api",
            "timeout_inversion api→reports",
            "deadline_not_propagated api→reports",
        ]
    );
    d.stop().await;
}

/// A call under the timeout in front of it: `n` of 28, the 3 first time out at
/// 2 s, the others take `ok_ms(i)`.
fn search(callee: &'static str, i: u64, ok_ms: impl Fn(u64) -> u64) -> Vec<Sp> {
    if i < 3 {
        return vec![
            sp("shop", (1, 0), "GET /search", SpanKind::Server, (0, 2_005)).http(504),
            sp("shop", (2, 1), "GET", SpanKind::Client, (2, 2_002)).deadline(),
            sp(callee, (3, 2), "GET /q", SpanKind::Server, (3, 2_001)),
        ];
    }
    let ms = ok_ms(i);
    vec![
        sp("shop", (1, 0), "GET /search", SpanKind::Server, (0, ms + 4)).http(200),
        sp("shop", (2, 1), "GET", SpanKind::Client, (2, ms + 2)).http(200),
        sp(callee, (3, 2), "GET /q", SpanKind::Server, (3, ms + 1)).http(200),
    ]
}

/// An edge whose p95/p99 is above half of its inferred timeout is about to time
/// out; one just below half, or one slow but with no timeout known in front of
/// it, is not. An entry point under API Gateway's 29 s with p95 of 17 s is too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p95_above_half_of_the_timeout_in_front_is_a_headroom_warning() {
    let d = support::start_detecting().await;
    // suggest: p99 900 ms under a 2 s timeout. catalog: 1.5–1.98 s, no timeout seen.
    let mut lookalikes: Vec<Vec<Sp>> = (0..28)
        .map(|i| search("suggest", i, |i| 100 + 32 * i))
        .collect();
    lookalikes.extend((3..28).map(|i| search("catalog", i, |i| 1_500 + 20 * (i - 3))));
    support::send(&d, lookalikes).await;
    let map = window_holds(&d, 53).await;
    let shop = entry(&map, "shop", "GET /search");
    assert_eq!(violations(shop), vec!["gateway_timeout"], "{shop}");
    assert_eq!(shop["timeout_relayed_from"]["callee"], "suggest", "{shop}");
    let suggest = edge(shop, "shop", "suggest");
    assert!(approx(&suggest["timeout_ms"], 2_000.0), "{suggest}");
    assert!(approx(&suggest["p99_ms"], 964.0), "{suggest}");
    let catalog = edge(shop, "shop", "catalog");
    assert_eq!(catalog["timeout_ms"], Value::Null);

    // search: 1.2–1.68 s under the same 2 s timeout.
    let mut culprits: Vec<Vec<Sp>> = (0..28)
        .map(|i| search("search", i, |i| 1_200 + 20 * (i - 3)))
        .collect();
    // An entry point behind API Gateway: 3 requests hit the 29 s limit, the
    // other 25 take 10–17.2 s.
    for i in 0..28u64 {
        culprits.push(if i < 3 {
            gave_up_at(
                "apigw",
                "GET /report",
                "reports",
                29_000,
                504,
                "Endpoint request timed out",
            )
        } else {
            vec![sp(
                "apigw",
                (1, 0),
                "GET /report",
                SpanKind::Server,
                (0, 10_000 + 300 * (i - 3)),
            )
            .http(200)]
        });
    }
    support::send(&d, culprits).await;
    let body = d
        .wait_for("/api/v1/findings?kind=timeout_headroom", |status, body| {
            status == 200 && findings(body).len() == 2
        })
        .await;
    let edge_warning = findings(&body)
        .iter()
        .find(|f| f["culprit"]["service"] == "shop")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(edge_warning["culprit"]["peer"], "search");
    assert_eq!(edge_warning["severity"], "warning");
    let ev = &edge_warning["evidence"];
    assert!(approx(&ev["timeout_ms"], 2_000.0), "{ev}");
    assert!(approx(&ev["p95_ms"], 1_660.0), "{ev}");
    assert!(approx(&ev["p99_ms"], 1_680.0), "{ev}");
    assert_eq!(ev["calls"], 25);
    assert_eq!(edge_warning["count"], 25, "every call took over 1 s");
    assert!(
        edge_warning["summary"].as_str().unwrap().contains(
            "p95 of shop → search GET /q is 1.66 s and p99 1.68 s, above half of the 2 s timeout in front of it"
        ),
        "{edge_warning}"
    );

    let entry_warning = findings(&body)
        .iter()
        .find(|f| f["culprit"]["service"] == "apigw")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(entry_warning["culprit"]["operation"], "GET /report");
    assert!(approx(&entry_warning["evidence"]["timeout_ms"], 29_000.0));
    assert!(
        approx(&entry_warning["evidence"]["p95_ms"], 16_900.0),
        "{entry_warning}"
    );
    assert_eq!(entry_warning["count"], 9, "over 14.5 s: 14.8 s to 17.2 s");

    let all = d.get("/api/v1/findings?kind=timeout_headroom").await.1;
    assert!(
        findings(&all)
            .iter()
            .all(|f| f["culprit"]["peer"] != "suggest" && f["culprit"]["peer"] != "catalog"),
        "{all}"
    );
    d.stop().await;
}

/// The window's count replaces, not adds: runs over the same traces do not
/// count them again, and a bad query is a JSON error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_findings_count_each_call_once_across_runs() {
    let d = support::start_detecting().await;
    support::send(
        &d,
        (0..3)
            .map(|_| gave_up_at("lb", "GET /slow", "app", 10_000, 504, "Gateway Timeout"))
            .collect(),
    )
    .await;
    let first = d
        .wait_for("/api/v1/findings?kind=gateway_timeout", |_, body| {
            findings(body).first().is_some_and(|f| f["count"] == 3)
        })
        .await;
    let id = findings(&first)[0]["id"].as_str().unwrap().to_owned();
    support::send(
        &d,
        vec![gave_up_at(
            "lb",
            "GET /slow",
            "app",
            10_000,
            504,
            "Gateway Timeout",
        )],
    )
    .await;
    let f = d
        .wait_for(&format!("/api/v1/findings/{id}"), |_, body| {
            body["count"] != 3
        })
        .await;
    assert_eq!(f["count"], 4, "{f}");
    assert_eq!(f["trace_ids"].as_array().unwrap().len(), 4);

    let (status, err) = d.get("/api/v1/timeouts?since=last-tuesday").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_time");
    d.settled_and_detected().await;
    let none = d.get("/api/v1/timeouts?entry=nobody").await.1;
    assert_eq!(none["entries"], Value::Array(Vec::new()));
    assert_eq!(none["window"]["traces"], 4);
    d.stop().await;
}
