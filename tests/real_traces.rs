//! Diagnoses on traces real instrumentation recorded (tests/fixtures/), through
//! the daemon (OTLP/JSON over its OTLP/HTTP receiver, findings from the API)
//! and through `hopscope analyze`: the answer known, and the look-alikes
//! silent.

mod support;

use std::path::Path;
use std::process::Command;

use hopscope::clock::Clock;
use serde_json::Value;

const HOTROD: &str = "tests/fixtures/hotrod/opensearch-dashboards-observability/jaeger-api-json";
/// The two HotROD requests whose mysql query waited behind another's
/// transaction ("Waiting for lock behind 1 transactions").
const QUEUED: [&str; 2] = [
    "00000000000000004675486d2742b7da",
    "0000000000000000516bb55b76860a26",
];
const CUSTOMER_QUERY: &str = "SELECT * FROM customer WHERE customer_id=?";

fn fixture_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .expect("fixtures")
        .map(|e| format!("{dir}/{}", e.expect("entry").file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".json"))
        .collect();
    files.sort();
    files
}

/// The findings of `hopscope analyze --format json FILES`.
fn analyzed(files: &[String]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .arg("analyze")
        .args(["--format", "json"])
        .args(files)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hopscope runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    report["findings"].as_array().expect("findings").clone()
}

/// Sends the Jaeger JSON files to a fresh daemon as OTLP/JSON and returns its
/// findings once every trace is analyzed and the detectors have run.
async fn through_daemon(files: &[String]) -> Vec<Value> {
    let docs: Vec<Value> = files
        .iter()
        .map(|file| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("JSON")
        })
        .collect();
    // The daemon's clock when the traces were recorded (their last end), so
    // its windows hold them as they held them then.
    let recorded_us = docs
        .iter()
        .flat_map(|doc| doc["data"].as_array().into_iter().flatten())
        .flat_map(|t| t["spans"].as_array().into_iter().flatten())
        .map(|s| s["startTime"].as_u64().unwrap() + s["duration"].as_u64().unwrap())
        .max()
        .expect("spans");
    let d = support::start_at(support::detecting(), Clock::manual(recorded_us * 1_000)).await;
    let http = reqwest::Client::new();
    let mut traces = 0;
    for (file, doc) in files.iter().zip(&docs) {
        traces += doc["data"].as_array().map_or(1, Vec::len);
        let response = http
            .post(format!("{}/v1/traces", d.http_endpoint))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&support::jaeger::otlp_json(doc)).unwrap())
            .send()
            .await
            .expect("OTLP/HTTP export");
        assert_eq!(
            response.status(),
            200,
            "{file}: {:?}",
            response.text().await
        );
    }
    d.detected(traces).await;
    let found = d.findings().await;
    d.stop().await;
    found
}

fn of_kind<'a>(found: &'a [Value], kind: &str) -> Vec<&'a Value> {
    found.iter().filter(|f| f["kind"] == kind).collect()
}

/// The HotROD lock queue, as both paths must report it.
fn assert_hotrod_lock_queue(found: &[Value], queued: &[&str]) {
    let locks = of_kind(found, "lock_contention");
    let [lock] = locks.as_slice() else {
        panic!("one lock_contention finding: {found:#?}")
    };
    assert_eq!(lock["culprit"]["service"], "mysql");
    assert_eq!(lock["culprit"]["operation"], CUSTOMER_QUERY);
    assert_eq!(lock["culprit"]["peer"], "mysql");
    let e = &lock["evidence"];
    assert_eq!(e["table"], "customer");
    assert_eq!(e["wait_from"], "lock_events");
    assert_eq!(e["waited_calls"], queued.len());
    let mut ids: Vec<&str> = lock["trace_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, queued);
    assert!(e["wait_share"].as_f64().unwrap() > 0.0, "{e}");
    for other in ["slow_query", "pool_exhaustion", "blocked_worker"] {
        assert!(of_kind(found, other).is_empty(), "{other}: {found:#?}");
    }
}

#[test]
fn hotrod_mysql_lock_queue_is_lock_contention_in_hopscope_analyze() {
    let files = fixture_files(HOTROD);
    assert_eq!(files.len(), 8);
    assert_hotrod_lock_queue(&analyzed(&files), &QUEUED);
    // Each request that queued is named on its own ...
    for id in QUEUED {
        let file: Vec<String> = files
            .iter()
            .filter(|f| f.contains(&id[16..]))
            .cloned()
            .collect();
        assert_hotrod_lock_queue(&analyzed(&file), &[id]);
    }
    // ... and one whose query took the lock at once ("Acquired lock with 0
    // transactions waiting behind") is not contention, however long its query.
    let unqueued: Vec<String> = files
        .iter()
        .filter(|f| f.contains("15b0b4004a651c4c"))
        .cloned()
        .collect();
    let found = analyzed(&unqueued);
    assert!(of_kind(&found, "lock_contention").is_empty(), "{found:#?}");
    assert!(of_kind(&found, "slow_query").is_empty(), "{found:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotrod_mysql_lock_queue_is_lock_contention_through_the_daemon() {
    let files = fixture_files(HOTROD);
    assert_hotrod_lock_queue(&through_daemon(&files).await, &QUEUED);
}

/// HotROD's two loops, as both paths must report them: the driver fetching
/// each of ten drivers from redis with `GetDriver`, one after another, and
/// retrying the ones that time out (12–13 calls in each of the seven complete
/// requests); and the frontend asking route for ten routes through a pool of
/// three workers (every request; the partial one shows six). Nothing else
/// new fires: the retries are no redundant call, the customer and driver
/// calls are two, not a serial run, and ten calls are no chatty edge.
fn assert_hotrod_loops(found: &[Value], traces: usize) {
    for quiet in [
        "serial_calls",
        "redundant_call",
        "chatty_edge",
        "excessive_fanout",
    ] {
        assert!(of_kind(found, quiet).is_empty(), "{quiet}: {found:#?}");
    }
    let loops = of_kind(found, "n_plus_one");
    let by = |service: &str| -> &Value {
        let of: Vec<&&Value> = loops
            .iter()
            .filter(|f| f["culprit"]["service"] == service)
            .collect();
        let [f] = of.as_slice() else {
            panic!("one n_plus_one of {service}: {found:#?}")
        };
        f
    };
    assert_eq!(loops.len(), 2, "{found:#?}");
    let redis = by("driver");
    assert_eq!(redis["culprit"]["operation"], "GetDriver");
    assert_eq!(redis["culprit"]["peer"], "redis");
    assert!(
        redis["remedy"].as_str().unwrap().contains("MGET"),
        "{redis}"
    );
    let e = &redis["evidence"];
    assert!((12..=13).contains(&e["calls"].as_u64().unwrap()), "{e}");
    assert_eq!(e["peak_in_flight"], 1, "strictly sequential: {e}");
    assert_eq!(e["distinct_parameters"], 10, "{e}");
    assert_eq!(e["source"], "FindDriverIDs");
    let retried = e["retried_timeouts"].as_u64().unwrap();
    assert_eq!(
        e["calls"].as_u64().unwrap() - retried,
        10,
        "ten drivers, each timeout retried: {e}"
    );
    assert!(e["critical_ms"].as_f64().unwrap() > 150.0, "{e}");
    let route = by("frontend");
    assert_eq!(route["culprit"]["operation"], "HTTP GET /route");
    assert_eq!(route["culprit"]["peer"], "route");
    let e = &route["evidence"];
    assert_eq!(e["peak_in_flight"], 3, "{e}");
    assert!(e["critical_ms"].as_f64().unwrap() > 50.0, "{e}");
    if traces > 1 {
        assert_eq!(redis["count"], traces - 1, "every complete request");
        assert_eq!(route["count"], traces);
    } else {
        assert_eq!(e["calls"], 10, "{e}");
        assert_eq!(e["throttled_to"], 3, "{e}");
        assert_eq!(e["distinct_parameters"], 10, "{e}");
    }
    for f in [redis, route] {
        assert_eq!(f["severity"], "warning", "a quarter of the request: {f:#}");
    }
}

#[test]
fn hotrod_loops_are_n_plus_one_in_hopscope_analyze() {
    let files = fixture_files(HOTROD);
    assert_hotrod_loops(&analyzed(&files), files.len());
    // Each complete request on its own: both loops, with its own numbers.
    for file in files.iter().filter(|f| !f.contains("67ff600cc7c84a67")) {
        let found = analyzed(std::slice::from_ref(file));
        assert_hotrod_loops(&found, 1);
    }
}

/// `[detectors.n_plus_one] min_calls = 11`: the ten route calls are no
/// longer a loop, the 12–13 redis calls still are, and say so.
#[test]
fn the_loop_threshold_is_configuration() {
    let dir = std::env::temp_dir().join(format!("hopscope-loops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hopscope.toml");
    std::fs::write(&config, "[detectors.n_plus_one]\nmin_calls = 11\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .args(["analyze", "--format", "json", "--config"])
        .arg(&config)
        .args(fixture_files(HOTROD))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hopscope runs");
    std::fs::remove_dir_all(&dir).ok();
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let loops = of_kind(report["findings"].as_array().unwrap(), "n_plus_one")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    let [redis] = loops.as_slice() else {
        panic!("only the redis loop: {loops:#?}")
    };
    assert_eq!(redis["culprit"]["peer"], "redis");
    assert_eq!(redis["crossed"][0]["threshold"], "n_plus_one.min_calls");
    assert_eq!(redis["crossed"][0]["limit"], 11.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotrod_loops_are_n_plus_one_through_the_daemon() {
    let files = fixture_files(HOTROD);
    assert_hotrod_loops(&through_daemon(&files).await, files.len());
}

const REALAPP: &str = "tests/fixtures/realapp";

/// The one finding of a real-application recording, by both paths: its kind
/// and service, and nothing else.
async fn only_finding(file: &str, kind: &str, service: &str) -> [Value; 2] {
    let files = vec![format!("{REALAPP}/{file}")];
    let offline = analyzed(&files);
    let online = through_daemon(&files).await;
    [offline, online].map(|found| {
        let [f] = found.as_slice() else {
            panic!("{file}: one finding, {kind}: {found:#?}")
        };
        assert_eq!(f["kind"], kind, "{file}: {f:#}");
        assert_eq!(f["culprit"]["service"], service, "{file}: {f:#}");
        f.clone()
    })
}

/// Flask and SQLAlchemy over `QueuePool(pool_size=2, max_overflow=0)`, each
/// request holding its connection 100 ms in Python between two fast queries,
/// recorded by both the SQLAlchemy and the psycopg2 instrumentations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_pool_held_in_application_code_is_pool_exhaustion_of_two() {
    for f in only_finding("pool-held-in-app.json", "pool_exhaustion", "orders").await {
        let e = &f["evidence"];
        assert_eq!(e["estimated_pool_size"], 2, "{e:#}");
        assert_eq!(e["wait_from"], "acquire_spans");
        assert_eq!(e["requests"], 42);
        assert!(e["queued_requests"].as_u64().unwrap() >= 35, "{e}");
        assert!(e["call_p95_ms"].as_f64().unwrap() < 20.0, "{e}");
    }
}

/// express 5 running 200 ms of `pbkdf2Sync` per request behind a Flask
/// gateway: the wait is in front of the event loop, not on the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_blocked_event_loop_is_a_blocked_worker_queued_before_the_server() {
    for f in only_finding("blocked-event-loop.json", "blocked_worker", "hasher").await {
        assert_eq!(f["culprit"]["peer"], "hasher-1");
        let e = &f["evidence"];
        assert_eq!(e["shape"], "queued_before_server", "{e:#}");
        assert!(e["queued_requests"].as_u64().unwrap() >= 18, "{e}");
        assert!(e["transport_ms"].as_f64().unwrap() < 20.0, "{e}");
        assert!(e["queue_p95_ms"].as_f64().unwrap() > 1_000.0, "{e}");
    }
}

/// express 5 and pg: twelve requests at once lock one `stock` row with `FOR
/// UPDATE` and hold it 60 ms: lock contention, not a slow query, a blocked
/// worker or a pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_hot_row_is_lock_contention() {
    for f in only_finding("hot-row.json", "lock_contention", "warehouse").await {
        assert_eq!(
            f["culprit"]["operation"],
            "SELECT qty FROM stock WHERE id = $1 FOR UPDATE"
        );
        let e = &f["evidence"];
        assert_eq!(e["table"], "stock", "{e:#}");
        assert_eq!(e["wait_from"], "staircase");
        assert!(e["waited_calls"].as_u64().unwrap() >= 30, "{e}");
        let step = e["step_ms"].as_f64().unwrap();
        assert!(
            (55.0..80.0).contains(&step),
            "a handover every 60-odd ms: {step}"
        );
    }
}

/// Flask and SQLAlchemy rendering a page of 20 posts whose comments load
/// lazily, one `SELECT ... WHERE %(param_1)s = comments.post_id` per post,
/// each recorded by both the SQLAlchemy and the psycopg2 instrumentations:
/// one loop of 20, not 40, with no arguments visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_lazy_loaded_relationship_is_n_plus_one() {
    for f in only_finding("orm_n_plus_one.json", "n_plus_one", "blog").await {
        assert!(
            f["culprit"]["peer"]
                .as_str()
                .unwrap()
                .starts_with("postgresql"),
            "{f:#}"
        );
        let e = &f["evidence"];
        assert_eq!(e["calls"], 20, "{e:#}");
        assert_eq!(e["peak_in_flight"], 1, "{e:#}");
        assert_eq!(e["distinct_parameters"], Value::Null, "{e:#}");
        assert!(e["shape"]
            .as_str()
            .unwrap()
            .ends_with("WHERE %(param_1)s = comments.post_id"));
        assert!(e["source"].as_str().unwrap().contains("FROM posts"), "{e}");
        assert!(e["critical_ms"].as_f64().unwrap() > 5.0, "{e}");
    }
    // The same loop while the page waits 400 ms on another call: its cost to
    // the user is what is on the critical path, next to nothing.
    for f in only_finding(
        "orm_n_plus_one_off_critical_path.json",
        "n_plus_one",
        "feed",
    )
    .await
    {
        assert_eq!(f["severity"], "info", "{f:#}");
        let e = &f["evidence"];
        assert!(
            e["critical_ms"].as_f64().unwrap() <= e["total_ms"].as_f64().unwrap() / 4.0,
            "{e}"
        );
    }
}

/// express 5 and pg: the first ten stock ids, then one `pool.query` per id,
/// each awaited in turn, each with its `pg-pool.connect` checkout. Node
/// stamps starts in whole milliseconds, so two queries one after the other
/// both "start at 28 ms": still one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_loop_of_queries_is_n_plus_one_one_at_a_time() {
    for f in only_finding("node_n_plus_one.json", "n_plus_one", "inventory").await {
        assert_eq!(
            f["culprit"]["operation"],
            "SELECT id, sku, qty FROM stock WHERE id = $1"
        );
        let e = &f["evidence"];
        assert_eq!(e["calls"], 10, "{e:#}");
        assert_eq!(e["peak_in_flight"], 1, "{e:#}");
        assert_eq!(e["source"], "SELECT id FROM stock ORDER BY id LIMIT $1");
    }
}

/// A Flask handler calling three endpoints of another service with
/// `requests` (old HTTP conventions: spans named `GET`, only `http.url` tells
/// them apart) one after another; made together they would save ~150 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_requests_calls_one_after_another_are_serial_calls() {
    for f in only_finding("serial_requests.json", "serial_calls", "portal").await {
        let e = &f["evidence"];
        let targets: Vec<&str> = e["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["target"].as_str().unwrap())
            .collect();
        assert_eq!(
            targets,
            [
                "GET /profile/<int:user_id>",
                "GET /cart/<int:user_id>",
                "GET /recommendations/<int:user_id>"
            ]
        );
        assert!(e["saved_ms"].as_f64().unwrap() >= 100.0, "{e}");
    }
}

/// The look-alikes, recorded from the same services: the page with its
/// comments in one `IN` query (selectinload) or a join (joinedload), and the
/// three calls made at once from a thread pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_batched_queries_and_parallel_calls_raise_nothing() {
    for file in ["orm_batched.json", "parallel_requests.json"] {
        let files = vec![format!("{REALAPP}/{file}")];
        assert_eq!(analyzed(&files), Vec::<Value>::new(), "{file}");
        assert_eq!(through_daemon(&files).await, Vec::<Value>::new(), "{file}");
    }
}
