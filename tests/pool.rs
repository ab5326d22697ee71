//! `pool_exhaustion` and `blocked_worker` end to end: simulated loads turned
//! into hand-built spans, sent through the real OTLP exporter, findings read
//! from `/api/v1/findings`.
//!
//! Each test sends the look-alikes first and waits until the detectors have
//! run over them (`detectors_current`), checks their silence, then sends the
//! culprit.

mod support;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{send, sp, Sp, TestDaemon};

/// A span of the service instance `who` (service, instance).
fn of(
    who: (&'static str, &'static str),
    ids: (u64, u64),
    name: &'static str,
    kind: SpanKind,
    times: (u64, u64),
) -> Sp {
    sp(who.0, ids, name, kind, times).instance(who.1)
}

/// The statement of the fast queries.
const FAST: &str = "SELECT * FROM items WHERE id = $1";
/// The statement of the slow look-alike.
const REPORT: &str = "SELECT day, sum(total) FROM orders GROUP BY day";

/// What a request's calls are.
#[derive(Clone, Copy)]
enum Call {
    /// Queries to the shop database running this statement.
    Db(&'static str),
    /// HTTP requests to this peer service.
    Http(&'static str),
}

impl Call {
    fn on(self, s: Sp) -> Sp {
        match self {
            Call::Db(statement) => s
                .attr("db.system.name", "postgresql")
                .attr("server.address", "db.internal")
                .attr("db.namespace", "shop")
                .attr("db.query.text", statement),
            Call::Http(peer) => s
                .attr("peer.service", peer)
                .attr("http.request.method", "GET"),
        }
    }
}

async fn all_of(d: &TestDaemon, kind: &str) -> Vec<Value> {
    d.get(&format!("/api/v1/findings?kind={kind}")).await.1["findings"]
        .as_array()
        .unwrap()
        .clone()
}

/// A closed-loop load on a FIFO pool of `pool` connections: each client sends
/// its requests one after another (1 ms between them); a request parses for
/// 1 ms, waits for a connection, holds it for `calls` back-to-back queries of
/// `call_ms`, and answers 1 ms later. Returns `(arrival, acquired)` per request.
fn simulate(pool: usize, clients: &[(u64, usize)], calls: u64, call_ms: u64) -> Vec<(u64, u64)> {
    let mut free = vec![0u64; pool];
    let mut next: BinaryHeap<Reverse<(u64, usize, usize)>> = clients
        .iter()
        .enumerate()
        .map(|(c, &(at, n))| Reverse((at, c, n)))
        .collect();
    let mut out = Vec::new();
    while let Some(Reverse((arrive, client, left))) = next.pop() {
        let conn = (0..pool).min_by_key(|&i| free[i]).unwrap();
        let acquired = (arrive + 1).max(free[conn]);
        free[conn] = acquired + calls * call_ms;
        out.push((arrive, acquired));
        if left > 1 {
            next.push(Reverse((free[conn] + 2, client, left - 1)));
        }
    }
    out
}

/// The traces of a simulated load on `who`: a SERVER span per request, its
/// calls (`calls` of `call_ms`, what `call` says), and with `acquire` a
/// `connect` span for its wait.
fn requests(
    who: (&'static str, &'static str),
    load: &[(u64, u64)],
    (calls, call_ms, call): (u64, u64, Call),
    acquire: bool,
) -> Vec<Vec<Sp>> {
    load.iter()
        .map(|&(arrive, acquired)| {
            let end = acquired + calls * call_ms + 1;
            let mut spans = vec![of(
                who,
                (1, 0),
                "GET /items",
                SpanKind::Server,
                (arrive, end),
            )];
            if acquire {
                // As SQLAlchemy's instrumentation records a checkout: a
                // `connect` CLIENT span naming the database, no statement.
                spans.push(
                    of(
                        who,
                        (2, 1),
                        "connect",
                        SpanKind::Client,
                        (arrive + 1, acquired),
                    )
                    .attr("db.system.name", "postgresql"),
                );
            }
            for n in 0..calls {
                let at = acquired + n * call_ms;
                spans.push(call.on(of(
                    who,
                    (10 + n, 1),
                    "SELECT shop",
                    SpanKind::Client,
                    (at, at + call_ms),
                )));
            }
            spans
        })
        .collect()
}

/// 16 clients sending 4 requests each, all starting at once.
fn sixteen_clients() -> Vec<(u64, usize)> {
    vec![(0, 4); 16]
}

/// A pool of 4 under 16 concurrent requests (transactions of 5 queries of 20
/// ms) is named with acquire spans and without them; the same load on a pool
/// of 32, slow queries with no wait before them, and a short spike the pool
/// absorbs are not pool exhaustion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_names_the_starved_pool_and_not_its_look_alikes() {
    let d = support::start_detecting().await;
    let mut lookalikes = Vec::new();
    // Healthy: the same load, 32 connections, no wait.
    let healthy = simulate(32, &sixteen_clients(), 5, 20);
    assert!(healthy.iter().all(|(a, q)| q - a == 1));
    lookalikes.extend(requests(
        ("catalog", "catalog-1"),
        &healthy,
        (5, 20, Call::Db(FAST)),
        true,
    ));
    // Slow queries: 300 ms each, a connection always free.
    let slow = simulate(32, &sixteen_clients(), 1, 300);
    lookalikes.extend(requests(
        ("reports", "reports-1"),
        &slow,
        (1, 300, Call::Db(REPORT)),
        false,
    ));
    // A spike: 3 clients, and 3 more for one request each; waits of a query at most.
    let mut spike_clients = vec![(0, 20); 3];
    spike_clients.extend([(100, 1); 3]);
    let spike = simulate(4, &spike_clients, 1, 20);
    assert!(spike.iter().any(|(a, q)| q - a > 5), "the spike queues");
    assert!(spike.iter().all(|(a, q)| q - a <= 21));
    lookalikes.extend(requests(
        ("search", "search-1"),
        &spike,
        (1, 20, Call::Db(FAST)),
        false,
    ));
    let sent = lookalikes.len();
    send(&d, lookalikes).await;
    d.detected(sent).await;
    assert_eq!(all_of(&d, "pool_exhaustion").await, Vec::<Value>::new());

    // The culprits: 4 connections for 16 clients, with and without acquire spans.
    let starved = simulate(4, &sixteen_clients(), 5, 20);
    let waits: Vec<u64> = starved.iter().map(|(a, q)| q - a - 1).collect();
    assert_eq!(&waits[..8], &[0, 0, 0, 0, 100, 100, 100, 100]);
    assert!(waits.iter().max().unwrap() >= &300);
    let mut culprits = requests(
        ("orders", "orders-1"),
        &starved,
        (5, 20, Call::Db(FAST)),
        true,
    );
    culprits.extend(requests(
        ("payments", "payments-7"),
        &starved,
        (5, 20, Call::Db(FAST)),
        false,
    ));
    let culprit_traces = culprits.len();
    send(&d, culprits).await;
    d.detected(sent + culprit_traces).await;

    let found = all_of(&d, "pool_exhaustion").await;
    println!("pool_exhaustion findings: {found:#?}");
    assert_eq!(found.len(), 2, "{found:#?}");
    for (service, instance, wait_from) in [
        ("orders", "orders-1", "acquire_spans"),
        ("payments", "payments-7", "gap_before_first_call"),
    ] {
        let f = found
            .iter()
            .find(|f| f["culprit"]["service"] == service)
            .unwrap_or_else(|| panic!("{service} named: {found:#?}"));
        assert_eq!(f["culprit"]["operation"], "connection pool");
        assert_eq!(f["culprit"]["peer"], "postgresql db.internal/shop");
        let e = &f["evidence"];
        assert_eq!(e["instance"], instance);
        assert_eq!(e["wait_from"], wait_from);
        assert_eq!(e["estimated_pool_size"], 4);
        assert_eq!(e["call_p50_ms"], 20.0);
        assert_eq!(e["call_p95_ms"], 20.0);
        assert_eq!(e["requests"], 64);
        assert_eq!(e["queued_requests"], 60);
        assert_eq!(f["count"], 60);
        assert_eq!(
            f["crossed"][0],
            serde_json::json!({"threshold": "pool.min_queued", "limit": 5.0, "value": 60.0})
        );
        assert!(e["wait_p95_ms"].as_f64().unwrap() >= 300.0, "{e}");
        assert!(e["peak_queued"].as_u64().unwrap() >= 8, "{e}");
        assert!(e["wait_share"].as_f64().unwrap() > 0.5, "{e}");
        assert_eq!(e["suspected_leak"], false);
        assert!(f["summary"].as_str().unwrap().contains("ceiling of 4"));
        assert!(f["remedy"]
            .as_str()
            .unwrap()
            .contains("Release connections"));
        assert_eq!(f["trace_ids"].as_array().unwrap().len(), 10);
    }
    // The slow look-alike is a slow query, and the starved pools are not.
    let slow = all_of(&d, "slow_query").await;
    let [s] = slow.as_slice() else {
        panic!("one slow query: {slow:#?}")
    };
    assert_eq!(s["culprit"]["service"], "reports");
    assert_eq!(s["culprit"]["operation"], REPORT);
    assert_eq!(all_of(&d, "blocked_worker").await, Vec::<Value>::new());
    d.stop().await;
}

/// Requests of one instance whose own work lines up in series (an event loop
/// held by synchronous work: each request works 30 ms, waits 10 ms on the
/// database, works 30 ms more, one chunk at a time) are a blocked worker; the
/// same requests overlapping on another instance are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_worker_names_the_instance_whose_requests_run_in_series() {
    let d = support::start_detecting().await;
    let request = |who: (&'static str, &'static str),
                   (start, work_end, resume, end): (u64, u64, u64, u64)| {
        vec![
            of(who, (1, 0), "GET /render", SpanKind::Server, (start, end)),
            Call::Db(FAST).on(of(
                who,
                (2, 1),
                "SELECT shop",
                SpanKind::Client,
                (work_end, resume),
            )),
        ]
    };
    // Healthy: 8 requests at once, working in parallel.
    let healthy: Vec<Vec<Sp>> = (0..8)
        .map(|i| request(("render", "render-2"), (i, i + 30, i + 40, i + 70)))
        .collect();
    send(&d, healthy).await;
    d.detected(8).await;
    assert_eq!(all_of(&d, "blocked_worker").await, Vec::<Value>::new());

    // Blocked: one event loop runs the chunks in order of readiness.
    let mut ready: BinaryHeap<Reverse<(u64, usize, u8)>> =
        (0..8).map(|i| Reverse((i as u64, i, 0))).collect();
    let mut times = vec![(0, 0, 0, 0); 8];
    let mut now = 0;
    while let Some(Reverse((at, i, chunk))) = ready.pop() {
        now = now.max(at);
        if chunk == 0 {
            times[i].0 = now;
            times[i].1 = now + 30;
            ready.push(Reverse((now + 40, i, 1)));
        } else {
            times[i].2 = now;
            times[i].3 = now + 30;
        }
        now += 30;
    }
    let blocked: Vec<Vec<Sp>> = times
        .into_iter()
        .map(|t| request(("render", "render-1"), t))
        .collect();
    send(&d, blocked).await;
    d.detected(16).await;
    let found = all_of(&d, "blocked_worker").await;
    println!("blocked_worker findings: {found:#?}");
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "render");
    assert_eq!(f["culprit"]["operation"], "GET /render");
    assert_eq!(f["culprit"]["peer"], "render-1");
    let e = &f["evidence"];
    assert_eq!(e["requests"], 8);
    assert_eq!(e["max_in_flight"], 8);
    assert_eq!(e["overlap_share"], 0.0);
    assert_eq!(e["busy_share"], 1.0);
    assert_eq!(
        f["crossed"],
        serde_json::json!([
            {"threshold": "blocked_worker.min_in_flight", "limit": 4.0, "value": 8.0},
            {"threshold": "blocked_worker.min_busy_share", "limit": 0.8, "value": 1.0},
        ])
    );
    let other = &e["other_instances"][0];
    assert_eq!(other["instance"], "render-2");
    assert!(other["overlap_share"].as_f64().unwrap() > 0.5, "{other}");
    assert!(f["summary"].as_str().unwrap().contains("in series"));
    assert_eq!(all_of(&d, "pool_exhaustion").await, Vec::<Value>::new());
    // Its database calls end one at a time too (each await resumes when the
    // loop gets to it), but a plain SELECT waits for no lock.
    assert_eq!(all_of(&d, "lock_contention").await, Vec::<Value>::new());
    d.stop().await;
}

/// Half the connections of a pool of 4 never come back midway (a leak): the
/// calls in flight drop from a ceiling of 4 to 2 while requests keep queueing,
/// and the finding says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceiling_that_shrinks_while_requests_queue_is_a_suspected_leak() {
    let d = support::start_detecting().await;
    let before = simulate(4, &vec![(0, 2); 16], 5, 20);
    let leaked_at = before.iter().map(|&(_, q)| q + 5 * 20).max().unwrap();
    let after = simulate(2, &vec![(leaked_at, 2); 16], 5, 20);
    let mut traces = requests(
        ("orders", "orders-3"),
        &before,
        (5, 20, Call::Db(FAST)),
        false,
    );
    traces.extend(requests(
        ("orders", "orders-3"),
        &after,
        (5, 20, Call::Db(FAST)),
        false,
    ));
    // Judged over all of it: a pass between the two halves sees no leak yet.
    let sent = traces.len();
    send(&d, traces).await;
    d.detected(sent).await;
    let found = all_of(&d, "pool_exhaustion").await;
    println!("leak: {found:#?}");
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "orders");
    assert_eq!(f["severity"], "critical");
    let e = &f["evidence"];
    assert_eq!(e["suspected_leak"], true, "{e}");
    assert_eq!(e["estimated_pool_size"], 4);
    let slices: Vec<u64> = e["ceiling_by_slice"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(slices.first(), Some(&4), "{slices:?}");
    assert_eq!(slices.last(), Some(&2), "{slices:?}");
    assert!(f["summary"]
        .as_str()
        .unwrap()
        .contains("suspected connection leak"));
    d.stop().await;
}

/// An HTTP client pool of 4 connections per peer (frontend → inventory) under
/// 16 concurrent requests is named by its peer, from the gaps alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_pool_is_named_by_its_peer() {
    let d = support::start_detecting().await;
    let starved = simulate(4, &sixteen_clients(), 2, 20);
    let traces = requests(
        ("frontend", "frontend-2"),
        &starved,
        (2, 20, Call::Http("inventory")),
        false,
    );
    let sent = traces.len();
    send(&d, traces).await;
    d.detected(sent).await;
    let found = all_of(&d, "pool_exhaustion").await;
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f["culprit"]["service"], "frontend", "{f:#}");
    assert_eq!(f["culprit"]["peer"], "http inventory");
    assert_eq!(f["evidence"]["estimated_pool_size"], 4);
    assert_eq!(f["evidence"]["wait_from"], "gap_before_first_call");
    assert_eq!(all_of(&d, "slow_query").await, Vec::<Value>::new());
    d.stop().await;
}

/// The spans of requests that hold their connection across work in the
/// application (an ORM session kept open): a `connect` checkout span for the
/// wait, a fast statement, `work_ms` in the application with the connection
/// held, another fast statement. With `layers`, every statement is recorded
/// twice, as SQLAlchemy's and psycopg2's instrumentations both do when
/// `opentelemetry-bootstrap` installs them: overlapping sibling CLIENT spans
/// `select shop` (the ORM's) and `select` (the driver's).
fn held_in_app(
    who: (&'static str, &'static str),
    load: &[(u64, u64)],
    work_ms: u64,
    layers: bool,
) -> Vec<Vec<Sp>> {
    // Each service has a database of its own name.
    let statement = |s: Sp| {
        s.attr("db.system", "postgresql")
            .attr("net.peer.name", "db.internal")
            .attr("db.name", who.0)
            .attr(
                "db.statement",
                "SELECT items.id FROM items WHERE items.id = %(id_1)s",
            )
    };
    load.iter()
        .map(|&(arrive, acquired)| {
            let end = acquired + work_ms + 3;
            let mut spans = vec![
                of(who, (1, 0), "GET /items", SpanKind::Server, (arrive, end)),
                of(
                    who,
                    (2, 1),
                    "connect",
                    SpanKind::Client,
                    (arrive + 1, acquired),
                )
                .attr("db.system", "postgresql")
                .attr("net.peer.name", "db.internal"),
            ];
            for (n, at) in [acquired, acquired + 1 + work_ms].into_iter().enumerate() {
                let n = n as u64;
                spans.push(statement(of(
                    who,
                    (10 + n, 1),
                    "select shop",
                    SpanKind::Client,
                    (at, at + 2),
                )));
                if layers {
                    spans.push(statement(of(
                        who,
                        (20 + n, 1),
                        "select",
                        SpanKind::Client,
                        (at, at + 1),
                    )));
                }
            }
            spans
        })
        .collect()
}

/// A pool of 2 under 14 concurrent requests that each hold their connection
/// for 100 ms of application work between two 2 ms statements: the
/// statements never pile up at the ceiling, the connections held do, and the
/// wait in the checkout span is the evidence. Recorded by one database
/// instrumentation or by two, the pool is 2 and each statement counts once;
/// the same requests under a pool big enough are silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_held_in_application_code_is_sized_by_connections_held_counted_once() {
    let d = support::start_detecting().await;
    let clients = vec![(0, 5); 14];
    let roomy = simulate(14, &clients, 1, 103);
    assert!(roomy.iter().all(|(a, q)| q - a == 1));
    let lookalike = held_in_app(("catalog", "catalog-1"), &roomy, 100, true);
    let sent = lookalike.len();
    send(&d, lookalike).await;
    d.detected(sent).await;
    assert_eq!(all_of(&d, "pool_exhaustion").await, Vec::<Value>::new());

    let starved = simulate(2, &clients, 1, 103);
    let mut culprits = held_in_app(("orders", "orders-1"), &starved, 100, false);
    culprits.extend(held_in_app(("billing", "billing-1"), &starved, 100, true));
    let total = sent + culprits.len();
    send(&d, culprits).await;
    d.detected(total).await;
    let found = all_of(&d, "pool_exhaustion").await;
    assert_eq!(found.len(), 2, "{found:#?}");
    for service in ["orders", "billing"] {
        let f = found
            .iter()
            .find(|f| f["culprit"]["service"] == service)
            .unwrap_or_else(|| panic!("{service} named: {found:#?}"));
        let e = &f["evidence"];
        let peer = format!("postgresql db.internal/{service}");
        assert_eq!(f["culprit"]["peer"], peer.as_str(), "{f:#}");
        assert_eq!(e["estimated_pool_size"], 2, "{service}: {e:#}");
        assert_eq!(e["wait_from"], "acquire_spans");
        assert_eq!(e["requests"], 70);
        assert!(e["queued_requests"].as_u64().unwrap() >= 60, "{e}");
        assert!(e["call_p95_ms"].as_f64().unwrap() <= 2.0, "{e}");
    }
    // The statement ran twice per request: 140 times per service, whether one
    // instrumentation or two recorded it.
    let (_, queries) = d.get("/api/v1/queries").await;
    let shapes = queries["queries"].as_array().unwrap();
    for service in ["catalog", "orders", "billing"] {
        let s = shapes
            .iter()
            .find(|s| s["services"][0] == service)
            .unwrap_or_else(|| panic!("{service}'s statement: {queries:#}"));
        assert_eq!(s["count"], 140, "{service}: {s:#}");
    }
    assert_eq!(all_of(&d, "slow_query").await, Vec::<Value>::new());
    assert_eq!(all_of(&d, "blocked_worker").await, Vec::<Value>::new());
    assert_eq!(all_of(&d, "lock_contention").await, Vec::<Value>::new());
    d.stop().await;
}
