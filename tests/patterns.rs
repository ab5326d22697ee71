//! The request's own anti-patterns end to end: hand-built traces shaped as
//! ORMs, HTTP clients and worker pools record them, sent through the real
//! OTLP exporter, findings read from `/api/v1/findings`; then the same
//! traces, exported from the daemon's Jaeger API to a file, through
//! `hopscope analyze`. Each test has the culprit, its look-alikes and
//! healthy traffic, and checks that only the culprit is named.

mod support;

use std::process::Command;

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{send, sp, Sp};

const MS: u64 = 1;

/// The findings of `traces` by both paths: the daemon's API, and `hopscope
/// analyze` on the traces as the daemon's Jaeger API exports them.
async fn found(traces: Vec<Vec<Sp>>) -> [Vec<Value>; 2] {
    let d = support::start_detecting().await;
    let sent = traces.len();
    let ids = send(&d, traces).await;
    d.detected(sent).await;
    let online = d.findings().await;
    // Each trace marks the spans of the patterns it showed, for the trace page.
    for id in &ids {
        let (_, trace) = d.get(&format!("/api/v1/traces/{id}")).await;
        for mark in trace["marks"].as_array().expect("marks") {
            let finding = online
                .iter()
                .find(|f| f["id"] == mark["finding_id"])
                .unwrap_or_else(|| panic!("{mark} names a finding the API lists"));
            assert!(
                finding["trace_ids"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(id.to_string())),
                "{mark}"
            );
            assert!(!mark["span_ids"].as_array().unwrap().is_empty(), "{mark}");
        }
        let marked = trace["marks"].as_array().unwrap().len();
        let found = online
            .iter()
            .filter(|f| {
                f["trace_ids"]
                    .as_array()
                    .unwrap()
                    .contains(&Value::from(id.to_string()))
            })
            .count();
        assert_eq!(marked, found, "every finding of the trace marks its spans");
    }
    let http = reqwest::Client::new();
    let dir = std::env::temp_dir().join(format!("hopscope-patterns-{}", ids[0]));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for id in &ids {
        let body = http
            .get(format!("{}/api/traces/{id}", d.jaeger))
            .send()
            .await
            .expect("Jaeger API")
            .bytes()
            .await
            .unwrap();
        let file = dir.join(format!("{id}.json"));
        std::fs::write(&file, body).unwrap();
        files.push(file);
    }
    d.stop().await;
    let out = Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .args(["analyze", "--format", "json"])
        .args(&files)
        .output()
        .expect("hopscope analyze runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    std::fs::remove_dir_all(&dir).ok();
    [online, report["findings"].as_array().unwrap().clone()]
}

/// (kind, service, operation, peer) of each finding, sorted.
fn named(found: &[Value]) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = found
        .iter()
        .map(|f| {
            let c = &f["culprit"];
            let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (
                text(&f["kind"]),
                text(&c["service"]),
                text(&c["operation"]),
                text(&c["peer"]),
            )
        })
        .collect();
    out.sort();
    out
}

fn only<'a>(found: &'a [Value], kind: &str) -> &'a Value {
    let [f] = found else {
        panic!("one finding, {kind}: {found:#?}")
    };
    assert_eq!(f["kind"], kind, "{f:#}");
    f
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// A database call of `service` under `parent`.
fn query(service: &'static str, id: u64, parent: u64, statement: &str, at: (u64, u64)) -> Sp {
    sp(service, (id, parent), "SELECT", SpanKind::Client, at)
        .attr("db.system", "postgresql")
        .attr("db.statement", statement.to_owned())
}

/// An HTTP call from `caller` (span `id`) to `callee`'s `route` (span
/// `id + 1`), answered inside the call.
fn call(
    caller: &'static str,
    (id, parent): (u64, u64),
    callee: &'static str,
    route: &'static str,
    url: &str,
    (start, end): (u64, u64),
) -> [Sp; 2] {
    [
        sp(caller, (id, parent), "GET", SpanKind::Client, (start, end))
            .attr("http.request.method", "GET")
            .attr("url.full", url.to_owned())
            .http(200),
        sp(
            callee,
            (id + 1, id),
            leak(format!("GET {route}")),
            SpanKind::Server,
            (start + 1, end - 1),
        )
        .attr("http.route", route)
        .http(200),
    ]
}

/// A blog's page of 20 posts whose comments an ORM loads one post at a time,
/// each query 1 ms, 1 ms apart, after the query for the posts; and
/// `batched`, the same page with the comments in one `IN` query.
fn posts_page(batched: bool) -> Vec<Sp> {
    let mut t = vec![
        sp("blog", (1, 0), "GET /posts", SpanKind::Server, (0, 60 * MS))
            .http(200)
            .attr("code.function.name", "blog.views.posts")
            .attr("code.file.path", "blog/views.py")
            .attr("code.line.number", 42),
        query(
            "blog",
            2,
            1,
            "SELECT * FROM posts ORDER BY id LIMIT 20",
            (1, 3),
        ),
    ];
    if batched {
        t.push(query(
            "blog",
            3,
            1,
            "SELECT * FROM comments WHERE post_id IN ($1, $2, $3, $4, $5, $6)",
            (4, 9),
        ));
    } else {
        for k in 0..20 {
            t.push(
                query(
                    "blog",
                    3 + k,
                    1,
                    "SELECT * FROM comments WHERE %(param_1)s = comments.post_id",
                    (4 + 2 * k, 5 + 2 * k),
                )
                .attr("code.function", "blog.models.Post.comments")
                .attr("code.filepath", "blog/models.py")
                .attr("code.lineno", 17),
            );
        }
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orm_loop_is_n_plus_one_and_a_batched_in_query_is_not() {
    let healthy = posts_page(true);
    for found in found(vec![posts_page(false), healthy]).await {
        let f = only(&found, "n_plus_one");
        assert_eq!(f["culprit"]["service"], "blog");
        assert_eq!(
            f["culprit"]["operation"],
            "SELECT * FROM comments WHERE %(param_1)s = comments.post_id"
        );
        assert_eq!(f["culprit"]["peer"], "postgresql");
        let e = &f["evidence"];
        assert_eq!(e["calls"], 20, "{e}");
        assert_eq!(e["peak_in_flight"], 1, "one after another: {e}");
        assert_eq!(e["distinct_parameters"], Value::Null, "placeholders: {e}");
        assert_eq!(e["source"], "SELECT * FROM posts ORDER BY id LIMIT ?");
        assert!(
            (19.0..=21.0).contains(&e["critical_ms"].as_f64().unwrap()),
            "{e}"
        );
        // 20 ms of a 60 ms request: a third of what the user waits.
        assert_eq!(f["severity"], "warning");
        assert!(f["summary"].as_str().unwrap().contains("33 %"), "{f:#}");
        assert_eq!(
            f["crossed"],
            serde_json::json!([{"threshold": "n_plus_one.min_calls", "limit": 5.0, "value": 20.0}])
        );
        assert_eq!(
            f["location"],
            serde_json::json!({"file": "blog/models.py", "line": 17, "function": "blog.models.Post.comments", "namespace": null})
        );
        assert!(f["remedy"].as_str().unwrap().contains("IN (...)"), "{f:#}");
    }
    // The trace page marks the loop's twenty calls.
    let d = support::start_detecting().await;
    let ids = send(&d, vec![posts_page(false)]).await;
    let trace = d
        .wait_for(&format!("/api/v1/traces/{}", ids[0]), |s, b| {
            s == 200 && b["marks"].as_array().is_some_and(|m| !m.is_empty())
        })
        .await;
    assert_eq!(trace["marks"][0]["kind"], "n_plus_one");
    assert_eq!(trace["marks"][0]["span_ids"].as_array().unwrap().len(), 20);
    d.stop().await;
}

/// A request that waits 490 ms on a search call while a loop of six cache
/// reads runs beside it: the loop costs the user nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_off_the_critical_path_is_information_with_its_small_cost() {
    let mut t = vec![sp("shop", (1, 0), "GET /home", SpanKind::Server, (0, 500)).http(200)];
    t.extend(call(
        "shop",
        (2, 1),
        "search",
        "/search",
        "http://search/search?q=shoes",
        (5, 495),
    ));
    for k in 0..6 {
        t.push(
            sp(
                "shop",
                (10 + k, 1),
                "GET",
                SpanKind::Client,
                (10 + 6 * k, 15 + 6 * k),
            )
            .attr("db.system", "redis")
            .attr("db.statement", format!("GET banner:{k}")),
        );
    }
    for found in found(vec![t]).await {
        let f = only(&found, "n_plus_one");
        assert_eq!(f["culprit"]["operation"], "redis GET");
        assert_eq!(f["severity"], "info", "{f:#}");
        let e = &f["evidence"];
        assert_eq!(e["calls"], 6);
        assert_eq!(e["distinct_parameters"], 6);
        assert_eq!(e["critical_ms"], 0.0, "{e}");
        assert!(e["total_ms"].as_f64().unwrap() >= 30.0, "{e}");
        assert!(f["remedy"].as_str().unwrap().contains("MGET"), "{f:#}");
    }
}

/// A gateway calling users, orders and prefs (120 ms each) one after
/// another: made together they would take 120 ms, not 360.
fn dashboard(shape: &str) -> Vec<Sp> {
    let mut t = vec![sp(
        "gateway",
        (1, 0),
        "GET /dashboard",
        SpanKind::Server,
        (0, 400),
    )
    .http(200)];
    let starts: [u64; 3] = match shape {
        "serial" => [10, 131, 252],
        "parallel" => [10, 12, 14],
        // 50 ms between each call and the next: something else ran there.
        _ => [10, 180, 350],
    };
    for (k, (callee, start)) in ["users", "orders", "prefs"]
        .into_iter()
        .zip(starts)
        .enumerate()
    {
        let id = 10 * (k as u64 + 1);
        t.extend(call(
            "gateway",
            (id, 1),
            callee,
            leak(format!("/{callee}/{{id}}")),
            &format!("http://{callee}:8080/{callee}/42"),
            (start, start + 120),
        ));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_calls_one_after_another_are_serial_calls_and_parallel_or_spaced_ones_are_not() {
    let traces = vec![
        dashboard("serial"),
        dashboard("parallel"),
        dashboard("spaced"),
    ];
    for found in found(traces).await {
        let f = only(&found, "serial_calls");
        assert_eq!(f["culprit"]["service"], "gateway");
        assert_eq!(f["culprit"]["operation"], "GET /dashboard");
        let e = &f["evidence"];
        let targets: Vec<&str> = e["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            ["GET /users/{id}", "GET /orders/{id}", "GET /prefs/{id}"]
        );
        // 3 × 120 ms on the critical path, minus the longest.
        assert!(
            (238.0..=242.0).contains(&e["saved_ms"].as_f64().unwrap()),
            "{e}"
        );
        assert_eq!(f["severity"], "critical", "240 of 400 ms: {f:#}");
        assert_eq!(f["crossed"][1]["threshold"], "serial_calls.min_saved_ms");
    }
}

/// Three different queries, but fast: together they would save 20 ms, under
/// the 100 ms that is worth the change; a loop of the same call is not
/// serial; and neither are a transaction's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_different_queries_and_short_loops_raise_nothing() {
    let mut three = vec![sp("api", (1, 0), "GET /me", SpanKind::Server, (0, 40)).http(200)];
    for (k, table) in ["users", "orders", "prefs"].into_iter().enumerate() {
        let at = 5 + 10 * k as u64;
        three.push(query(
            "api",
            2 + k as u64,
            1,
            &format!("SELECT * FROM {table} WHERE user_id = $1"),
            (at, at + 9),
        ));
    }
    let mut short_loop = vec![sp("api", (1, 0), "GET /cart", SpanKind::Server, (0, 400)).http(200)];
    for k in 0..4 {
        short_loop.push(query(
            "api",
            2 + k,
            1,
            "SELECT * FROM items WHERE id = $1",
            (5 + 100 * k, 100 + 100 * k),
        ));
    }
    // Three slow writes of one transaction, one after another: their order
    // matters, so making them together is no advice.
    let mut writes = vec![sp("api", (1, 0), "POST /orders", SpanKind::Server, (0, 400)).http(201)];
    for (k, statement) in [
        "BEGIN",
        "INSERT INTO orders (user_id) VALUES ($1)",
        "UPDATE stock SET qty = qty - 1 WHERE id = $1",
        "INSERT INTO payments (order_id) VALUES ($1)",
        "COMMIT",
    ]
    .into_iter()
    .enumerate()
    {
        let at = 5 + 90 * k as u64;
        writes.push(query("api", 2 + k as u64, 1, statement, (at, at + 88)));
    }
    for found in found(vec![three, short_loop, writes]).await {
        assert_eq!(named(&found), [], "{found:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_twice_is_redundant_and_a_retry_after_a_failure_is_not() {
    let flags = "http://config:8080/v1/flags?env=prod";
    let mut twice = vec![sp("web", (1, 0), "GET /", SpanKind::Server, (0, 200)).http(200)];
    twice.extend(call("web", (2, 1), "config", "/v1/flags", flags, (5, 55)));
    twice.extend(call(
        "web",
        (4, 1),
        "config",
        "/v1/flags",
        flags,
        (100, 150),
    ));
    let mut retried = vec![sp("web", (1, 0), "GET /", SpanKind::Server, (0, 200)).http(200)];
    let [first, served] = call("web", (2, 1), "config", "/v1/flags", flags, (5, 55));
    retried.extend([
        first.error("503 Service Unavailable").http(503),
        served.http(503),
    ]);
    retried.extend(call(
        "web",
        (4, 1),
        "config",
        "/v1/flags",
        flags,
        (100, 150),
    ));
    for found in found(vec![twice, retried]).await {
        let f = only(&found, "redundant_call");
        assert_eq!(f["culprit"]["service"], "web");
        assert_eq!(f["culprit"]["peer"], "config");
        assert_eq!(f["count"], 1, "the retry is no redundant call");
        let e = &f["evidence"];
        assert_eq!(e["calls"], 2);
        assert_eq!(e["call"], flags);
        assert!(
            (49.0..=51.0).contains(&e["critical_ms"].as_f64().unwrap()),
            "{e}"
        );
    }
}

/// A product page calling inventory 25 times, each for something else
/// (no loop of one call) and one after another (so serial calls too), and a
/// report starting 60 calls of one endpoint at once (a loop, too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatty_edge_and_an_excessive_fanout() {
    let mut chatty = vec![sp("web", (1, 0), "GET /product", SpanKind::Server, (0, 300)).http(200)];
    for k in 0..25u64 {
        let route = leak(format!("/part{}", (b'a' + k as u8) as char));
        chatty.extend(call(
            "web",
            (10 + 2 * k, 1),
            "inventory",
            route,
            &format!("http://inventory{route}"),
            (2 + 10 * k, 10 + 10 * k),
        ));
    }
    let mut burst =
        vec![sp("report", (1, 0), "POST /export", SpanKind::Server, (0, 100)).http(202)];
    for k in 0..60u64 {
        burst.extend(call(
            "report",
            (10 + 2 * k, 1),
            "storage",
            "/blobs/{id}",
            &format!("http://storage/blobs/{k}x"),
            (5, 40 + k % 7),
        ));
    }
    for found in found(vec![chatty, burst]).await {
        let names = named(&found);
        assert_eq!(
            names,
            [
                (
                    "chatty_edge".into(),
                    "web".into(),
                    "GET /product".into(),
                    "inventory".into()
                ),
                (
                    "excessive_fanout".into(),
                    "report".into(),
                    "POST /export".into(),
                    "storage".into()
                ),
                (
                    "n_plus_one".into(),
                    "report".into(),
                    "GET /blobs/{id}".into(),
                    "storage".into()
                ),
                (
                    "serial_calls".into(),
                    "web".into(),
                    "GET /product".into(),
                    "-".into()
                ),
            ],
            "{found:#?}"
        );
        let fanout = found
            .iter()
            .find(|f| f["kind"] == "excessive_fanout")
            .unwrap();
        assert_eq!(fanout["evidence"]["peak_in_flight"], 60);
        let chatty = found.iter().find(|f| f["kind"] == "chatty_edge").unwrap();
        assert_eq!(chatty["evidence"]["calls"], 25);
        assert_eq!(chatty["evidence"]["operations"], 25);
    }
}

/// A job that processes eight items, each under its own span: one select
/// and one call to pricing per item are two loops of the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_under_a_span_per_item_are_loops_of_their_parent() {
    let mut job = vec![sp(
        "worker",
        (1, 0),
        "sync-catalog",
        SpanKind::Server,
        (0, 400),
    )];
    for k in 0..8u64 {
        let (item, at) = (10 + 5 * k, 5 + 45 * k);
        job.push(sp(
            "worker",
            (item, 1),
            "process item",
            SpanKind::Internal,
            (at, at + 44),
        ));
        job.push(query(
            "worker",
            item + 1,
            item,
            "SELECT * FROM products WHERE sku = $1",
            (at + 1, at + 10),
        ));
        job.extend(call(
            "worker",
            (item + 2, item),
            "pricing",
            "/prices/{sku}",
            &format!("http://pricing/prices/{k}00"),
            (at + 11, at + 43),
        ));
    }
    for found in found(vec![job]).await {
        let loops: Vec<(String, String, String, String)> = named(&found);
        assert_eq!(
            loops,
            [
                (
                    "n_plus_one".into(),
                    "worker".into(),
                    "GET /prices/{sku}".into(),
                    "pricing".into()
                ),
                (
                    "n_plus_one".into(),
                    "worker".into(),
                    "SELECT * FROM products WHERE sku = $1".into(),
                    "postgresql".into()
                ),
            ],
            "{found:#?}"
        );
        for f in &found {
            assert_eq!(f["evidence"]["calls"], 8, "{f:#}");
            assert_eq!(f["evidence"]["parent"]["operation"], "sync-catalog");
        }
    }
}
