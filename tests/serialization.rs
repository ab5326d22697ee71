//! Serialization and lock contention end to end, from span boundaries alone:
//! hand-built spans shaped as real runtimes record them, sent through the real
//! OTLP exporter, findings read from `/api/v1/findings`. Each test sends its
//! look-alikes with the culprit and checks that only the culprit is named.

mod support;

use opentelemetry::trace::SpanKind;
use serde_json::Value;
use support::{send, sp, Sp, TestDaemon};

/// Sends `traces` and returns the findings once the detectors have run over
/// all of them.
async fn sent_and_detected(d: &TestDaemon, traces: Vec<Vec<Sp>>) -> Vec<Value> {
    let sent = traces.len();
    send(d, traces).await;
    d.detected(sent).await;
    d.findings().await
}

fn kinds(found: &[Value]) -> Vec<(String, String)> {
    let mut k: Vec<(String, String)> = found
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["culprit"]["service"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    k.sort();
    k
}

/// A gateway request calling `callee` (instance `callee-1`): the gateway's
/// SERVER and CLIENT spans from `call.0` to `call.1`, the callee's SERVER span
/// over `served`.
fn called(callee: &'static str, call: (u64, u64), served: (u64, u64)) -> Vec<Sp> {
    vec![
        sp(
            "gateway",
            (1, 0),
            "GET /hash",
            SpanKind::Server,
            (0, call.1 + 1),
        ),
        sp("gateway", (2, 1), "GET", SpanKind::Client, call).attr("http.request.method", "GET"),
        sp(callee, (3, 2), "POST /hash", SpanKind::Server, served),
    ]
}

/// An event loop blocked by 200 ms of synchronous work per request, 8 requests
/// at once: Node starts the SERVER span only when the loop gets to the
/// request, so the spans run back to back and the wait is the callers' time
/// before each. The same service at a rate it keeps up with, and a service
/// that serves the 8 at once, are silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_event_loop_is_queueing_in_front_of_the_instance_not_network() {
    let d = support::start_detecting().await;
    let mut traces = Vec::new();
    for i in 0..8 {
        traces.push(called(
            "hasher",
            (1, 203 + 200 * i),
            (2 + 200 * i, 202 + 200 * i),
        ));
    }
    // Look-alikes: one request at a time, never waiting; eight at once, served
    // together.
    for i in 0..8 {
        let at = 5_000 + 1_000 * i;
        traces.push(called("signer", (at, at + 203), (at + 1, at + 202)));
        traces.push(called("minter", (1, 205 + i), (2, 203 + i)));
    }
    let found = sent_and_detected(&d, traces).await;
    assert_eq!(
        kinds(&found),
        [("blocked_worker".to_owned(), "hasher".to_owned())],
        "{found:#?}"
    );
    let f = &found[0];
    assert_eq!(f["culprit"]["peer"], "hasher-1");
    let e = &f["evidence"];
    assert_eq!(e["shape"], "queued_before_server", "{e:#}");
    assert_eq!(e["queued_requests"], 7);
    assert_eq!(e["max_in_flight"], 8);
    assert_eq!(e["queue_p95_ms"], 1_400.0);
    assert_eq!(e["transport_ms"], 2.0, "1 ms each way");
    let summary = f["summary"].as_str().unwrap();
    assert!(summary.contains("not on the network"), "{summary}");
    // The hops say the same: the gateway waited in front of hasher (200 ms
    // more for each request behind the first), not on the wire (1 ms each
    // way per call).
    let agg = d
        .get("/api/v1/hops?entry=gateway:GET%20/hash&since=1h")
        .await
        .1;
    let total = |kind: &str| -> f64 {
        support::hops(&agg["entries"][0])
            .iter()
            .filter(|h| h.2 == kind)
            .map(|h| h.3)
            .sum()
    };
    assert_eq!(
        total("queue"),
        200.0 * (1..8).sum::<u32>() as f64,
        "{agg:#}"
    );
    assert_eq!(total("wire"), 8.0 * (2.0 + 2.0 + 3.0), "{agg:#}");
    d.stop().await;
}

/// Eight requests begun together that end one at a time every 100 ms with
/// nothing inside them (a lock held in the handler); eight that take 300 ms
/// together are slow, not serialized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_ending_in_a_staircase_with_nothing_inside_are_serialized() {
    let d = support::start_detecting().await;
    let mut traces = Vec::new();
    for i in 0..8 {
        traces.push(vec![sp(
            "ledger",
            (1, 0),
            "POST /post",
            SpanKind::Server,
            (i, 100 * (i + 1)),
        )]);
        traces.push(vec![sp(
            "reports",
            (1, 0),
            "GET /report",
            SpanKind::Server,
            (i, 300 + i),
        )]);
    }
    let found = sent_and_detected(&d, traces).await;
    assert_eq!(
        kinds(&found),
        [("blocked_worker".to_owned(), "ledger".to_owned())],
        "{found:#?}"
    );
    let e = &found[0]["evidence"];
    assert_eq!(e["shape"], "ends_in_staircase", "{e:#}");
    assert_eq!(e["waited_requests"], 7);
    assert_eq!(e["step_ms"], 100.0);
    d.stop().await;
}

const FOR_UPDATE: &str =
    "SELECT stock.id, stock.qty FROM stock WHERE stock.id = %(id_1)s FOR UPDATE";
const AGGREGATE: &str = "SELECT category, count(*) FROM items GROUP BY category";

/// A statement on the shop database.
fn statement(s: Sp, text: &'static str) -> Sp {
    s.attr("db.system", "postgresql")
        .attr("net.peer.name", "db")
        .attr("db.name", "shop")
        .attr("db.statement", text)
}

/// Twelve requests at once each lock one `stock` row (`SELECT ... FOR
/// UPDATE`), hold the transaction 60 ms in the application, update and commit:
/// the lock changes hands every 63 ms, so the `FOR UPDATE` calls end in a
/// staircase while the lock holders' work lines up in series. That is lock
/// contention, not a slow query nor a blocked worker nor a pool; next to it a
/// slow aggregate is a slow query and not lock contention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_row_is_lock_contention_not_a_slow_query_or_a_blocked_worker() {
    let d = support::start_detecting().await;
    let mut traces = Vec::new();
    for i in 0..12u64 {
        let locked = 2 + 63 * i;
        let who = ("orders", "orders-1");
        traces.push(vec![
            sp(
                who.0,
                (1, 0),
                "POST /order",
                SpanKind::Server,
                (0, locked + 64),
            )
            .instance(who.1),
            statement(
                sp(who.0, (2, 1), "select shop", SpanKind::Client, (1, locked)).instance(who.1),
                FOR_UPDATE,
            ),
            statement(
                sp(
                    who.0,
                    (3, 1),
                    "update shop",
                    SpanKind::Client,
                    (locked + 60, locked + 61),
                )
                .instance(who.1),
                "UPDATE stock SET qty=(stock.qty - %(qty_1)s) WHERE stock.id = %(id_1)s",
            ),
            statement(
                sp(
                    who.0,
                    (4, 1),
                    "COMMIT",
                    SpanKind::Client,
                    (locked + 61, locked + 62),
                )
                .instance(who.1),
                "COMMIT",
            ),
        ]);
    }
    // The slow aggregate: six at once, each 400 ms, next to fast lookups.
    for i in 0..6u64 {
        let who = ("reports", "reports-1");
        traces.push(vec![
            sp(who.0, (1, 0), "GET /report", SpanKind::Server, (i, 420 + i)).instance(who.1),
            statement(
                sp(
                    who.0,
                    (2, 1),
                    "select shop",
                    SpanKind::Client,
                    (i + 1, 401 + i),
                )
                .instance(who.1),
                AGGREGATE,
            ),
            statement(
                sp(
                    who.0,
                    (3, 1),
                    "select shop",
                    SpanKind::Client,
                    (405 + i, 406 + i),
                )
                .instance(who.1),
                "SELECT * FROM items WHERE id = %(id_1)s",
            ),
        ]);
    }
    let found = sent_and_detected(&d, traces).await;
    assert_eq!(
        kinds(&found),
        [
            ("lock_contention".to_owned(), "orders".to_owned()),
            ("slow_query".to_owned(), "reports".to_owned())
        ],
        "{found:#?}"
    );
    let lock = found
        .iter()
        .find(|f| f["kind"] == "lock_contention")
        .unwrap();
    assert_eq!(lock["culprit"]["operation"], FOR_UPDATE);
    assert_eq!(lock["culprit"]["peer"], "postgresql db/shop");
    let e = &lock["evidence"];
    assert_eq!(e["table"], "stock", "{e:#}");
    assert_eq!(e["wait_from"], "staircase");
    assert_eq!(e["calls"], 12);
    assert_eq!(e["waited_calls"], 11);
    assert_eq!(e["step_ms"], 63.0);
    assert_eq!(e["fastest_ms"], 1.0);
    let share = e["wait_share"].as_f64().unwrap();
    assert!(
        share > 0.5,
        "most of the requests' time is the wait: {share}"
    );
    assert_eq!(lock["severity"], "critical");
    let slow = found.iter().find(|f| f["kind"] == "slow_query").unwrap();
    assert_eq!(slow["culprit"]["operation"], AGGREGATE);
    d.stop().await;
}
