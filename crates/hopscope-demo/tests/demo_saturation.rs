//! `hopscope-demo`'s saturation scenarios end to end, at the default time
//! scale: the traces the services exported (a real pool that really saturates,
//! the span conventions the detectors read), and what a user notices in the
//! findings: the right kind naming the right service and target, and the
//! look-alikes absent.

mod stored;

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use hopscope_demo::{Demo, DemoOptions, DemoReport, Scenario, POOL_SIZE};
use serde_json::Value;

/// The scenarios are timing-sensitive: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A scenario's report and the details of every trace the daemon stored.
async fn run(options: DemoOptions) -> (DemoReport, Vec<Value>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&options).await.expect("the demo starts");
    let data = demo.data_dir().map(ToOwned::to_owned);
    if let Some(dir) = &data {
        assert!(dir.is_dir(), "{dir:?}");
    }
    let report = demo.drive().await.expect("the demo runs");
    let traces = stored::stored_traces(demo.api_url()).await;
    demo.stop().await.expect("the demo stops cleanly");
    if let Some(dir) = &data {
        assert!(!dir.exists(), "{dir:?} is left behind");
    }
    assert_eq!(report.count(200), report.requests, "{report}");
    assert_eq!(traces.len(), report.requests, "{report}");
    (report, traces)
}

fn options(scenario: Scenario) -> DemoOptions {
    DemoOptions {
        scenario,
        ..DemoOptions::default()
    }
}

/// A span of a stored trace, with its times in microseconds since the epoch.
struct Span<'a> {
    json: &'a Value,
    start: u64,
    end: u64,
}

impl Span<'_> {
    fn is(&self, service: &str, kind: &str) -> bool {
        self.json["service"] == service && self.json["kind"] == kind
    }

    fn attr(&self, key: &str) -> &Value {
        &self.json["attributes"][key]
    }

    fn is_query(&self) -> bool {
        self.json["kind"] == "client" && self.attr("db.system.name") == "sqlite"
    }
}

fn spans(trace: &Value) -> Vec<Span<'_>> {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|json| {
            let start = humantime::parse_rfc3339(json["start_time"].as_str().unwrap())
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let end = start + (json["duration_ms"].as_f64().unwrap() * 1e3).round() as u64;
            Span { json, start, end }
        })
        .collect()
}

/// Most intervals open at once (an interval ending where another starts does
/// not overlap it).
fn peak(intervals: &[(u64, u64)]) -> usize {
    let mut events: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|&(s, e)| [(s, 1), (e, -1)])
        .collect();
    events.sort_unstable();
    let (mut open, mut most) = (0, 0);
    for (_, change) in events {
        open += change;
        most = most.max(open);
    }
    most as usize
}

/// Checks a service's database calls in one trace: CLIENT spans under its
/// SERVER span named `SELECT table`, with the target and the statement (its
/// literals inline) but no pool name. Returns them in time order.
fn queries<'a>(trace: &'a Value, service: &str, namespace: &str) -> Vec<Span<'a>> {
    let all = spans(trace);
    let server = all
        .iter()
        .find(|s| s.is(service, "server"))
        .unwrap_or_else(|| panic!("no {service} server span in {trace}"))
        .json;
    let mut queries: Vec<Span> = all
        .into_iter()
        .filter(|s| s.is(service, "client") && s.is_query())
        .collect();
    assert!(!queries.is_empty(), "no query of {service} in {trace}");
    for q in &queries {
        assert_eq!(q.json["parent_span_id"], server["span_id"], "{}", q.json);
        assert_eq!(q.attr("db.namespace"), namespace, "{}", q.json);
        assert_eq!(q.attr("db.operation.name"), "SELECT", "{}", q.json);
        let text = q.attr("db.query.text").as_str().expect("a statement");
        assert!(text.starts_with("SELECT "), "{text}");
        assert_eq!(
            q.json["operation"],
            format!("SELECT {}", q.attr("db.collection.name").as_str().unwrap())
        );
        assert!(
            q.attr("db.client.connection.pool.name").is_null(),
            "{}",
            q.json
        );
    }
    queries.sort_by_key(|q| q.start);
    queries
}

/// The (service, peer) of each finding of a kind.
fn culprits(report: &DemoReport, kind: &str) -> Vec<(String, String)> {
    report
        .findings_of(kind)
        .iter()
        .map(|f| {
            let c = &f["culprit"];
            (
                c["service"].as_str().unwrap_or("").to_owned(),
                c["peer"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// pool-exhaustion with or without `pool.acquire` spans: the pool of orders
/// really saturates and the finding says so, from whichever evidence the
/// traces carry.
async fn pool_exhaustion(acquire_spans: bool) {
    let (report, traces) = run(DemoOptions {
        acquire_spans,
        ..options(Scenario::PoolExhaustion)
    })
    .await;
    let (mut held, mut waits) = (Vec::new(), Vec::new());
    for trace in &traces {
        let all = spans(trace);
        let server = all
            .iter()
            .find(|s| s.is("orders", "server"))
            .expect("orders served");
        let calls = queries(trace, "orders", "orders");
        assert_eq!(calls.len(), 3, "{trace}");
        assert!(
            calls[0]
                .attr("db.query.text")
                .as_str()
                .unwrap()
                .contains("'A-"),
            "literals inline"
        );
        let acquire: Vec<&Span> = all
            .iter()
            .filter(|s| s.json["operation"] == "pool.acquire")
            .collect();
        let wait = if acquire_spans {
            let [acquire] = acquire[..] else {
                panic!("one pool.acquire span per request: {trace}")
            };
            assert_eq!(acquire.json["kind"], "internal");
            assert_eq!(acquire.json["parent_span_id"], server.json["span_id"]);
            assert_eq!(
                acquire.attr("db.client.connection.pool.name"),
                "orders-pool"
            );
            assert!(acquire.attr("db.query.text").is_null(), "{}", acquire.json);
            // Times are in whole microseconds: allow for the rounding.
            assert!(
                acquire.end <= calls[0].start + 2,
                "the wait is before the first query"
            );
            acquire.end - acquire.start
        } else {
            assert!(acquire.is_empty(), "{trace}");
            calls[0].start.saturating_sub(server.start)
        };
        waits.push(wait);
        held.push((calls[0].start, calls[2].end));
    }
    // The pool is real: never more connections in use than it holds, and all
    // of them at once while requests queue.
    assert_eq!(peak(&held), POOL_SIZE as usize);
    let queued = waits.iter().filter(|&&w| w >= 5_000).count();
    assert!(
        queued >= 12,
        "{queued} requests waited 5 ms or more: {waits:?}"
    );

    let pools = report.findings_of("pool_exhaustion");
    let [pool] = pools[..] else {
        panic!("one pool_exhaustion finding: {report}")
    };
    assert_eq!(pool["culprit"]["service"], "orders", "{report}");
    assert_eq!(pool["culprit"]["operation"], "connection pool");
    assert_eq!(pool["culprit"]["peer"], "sqlite orders");
    let evidence = &pool["evidence"];
    assert_eq!(evidence["estimated_pool_size"], POOL_SIZE, "{report}");
    let from = if acquire_spans {
        "acquire_spans"
    } else {
        "gap_before_first_call"
    };
    assert_eq!(evidence["wait_from"], from, "{report}");
    assert!(evidence["queued_requests"].as_u64() >= Some(12), "{report}");
    // Waiting for a connection is not a slow query, nor a blocked worker.
    assert!(report.findings_of("slow_query").is_empty(), "{report}");
    assert!(report.findings_of("blocked_worker").is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_with_acquire_spans_names_the_pool_of_orders() {
    pool_exhaustion(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_without_acquire_spans_is_found_from_the_gap_before_the_first_query() {
    pool_exhaustion(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_query_names_the_report_of_catalog_and_no_pool() {
    let (report, traces) = run(options(Scenario::SlowQuery)).await;
    let mut reports = 0;
    for trace in &traces {
        let calls = queries(trace, "catalog", "catalog");
        assert!(
            calls[0]
                .attr("db.query.text")
                .as_str()
                .unwrap()
                .contains("'P-"),
            "literals inline"
        );
        reports += calls
            .iter()
            .filter(|q| {
                q.attr("db.query.text")
                    .as_str()
                    .unwrap()
                    .contains("COUNT(DISTINCT")
            })
            .count();
    }
    assert!(reports >= 5, "{reports} slow statements");

    assert_eq!(
        culprits(&report, "slow_query"),
        [("catalog".to_owned(), "sqlite catalog".to_owned())],
        "{report}"
    );
    let slow = report.findings_of("slow_query")[0];
    let statement = slow["culprit"]["operation"].as_str().unwrap();
    assert!(
        statement.starts_with("SELECT category, COUNT(DISTINCT description)"),
        "{statement}"
    );
    assert!(statement.contains(">= ?"), "literals folded: {statement}");
    assert!(report.findings_of("pool_exhaustion").is_empty(), "{report}");
    assert!(report.findings_of("blocked_worker").is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_worker_names_the_one_thread_of_orders() {
    let (report, traces) = run(options(Scenario::BlockedWorker)).await;
    let mut orders = Vec::new();
    let mut instances = Vec::new();
    for trace in &traces {
        let all = spans(trace);
        let server = all
            .iter()
            .find(|s| s.is("orders", "server"))
            .expect("orders served");
        // It waits on inventory inside a CLIENT span, then works with no span.
        let children: Vec<&Span> = all
            .iter()
            .filter(|s| s.json["parent_span_id"] == server.json["span_id"])
            .collect();
        let [call] = children[..] else {
            panic!("orders has one child span: {trace}")
        };
        assert!(call.is("orders", "client"), "{}", call.json);
        assert!(
            server.end - call.end >= 50_000,
            "the blocking work after the call"
        );
        orders.push((server.start, server.end));
        instances.push(
            server.json["service_instance_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    instances.sort();
    instances.dedup();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert!(peak(&orders) >= 4, "requests in flight together");

    assert_eq!(
        culprits(&report, "blocked_worker"),
        [("orders".to_owned(), instances[0].clone())],
        "{report}"
    );
    assert!(report.findings_of("pool_exhaustion").is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_names_the_slow_query_of_catalog_and_the_pool_of_orders() {
    let (report, traces) = run(options(Scenario::Mixed)).await;
    for trace in &traces {
        queries(trace, "orders", "orders");
        queries(trace, "catalog", "catalog");
    }
    assert_eq!(
        culprits(&report, "pool_exhaustion"),
        [("orders".to_owned(), "sqlite orders".to_owned())],
        "{report}"
    );
    assert_eq!(
        report.findings_of("pool_exhaustion")[0]["evidence"]["estimated_pool_size"],
        POOL_SIZE
    );
    assert_eq!(
        culprits(&report, "slow_query"),
        [("catalog".to_owned(), "sqlite catalog".to_owned())],
        "{report}"
    );
    assert!(report.findings_of("blocked_worker").is_empty(), "{report}");
}

/// The command line lists the scenarios and the acquire-span switch.
#[test]
fn the_command_lists_the_saturation_scenarios() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopscope-demo"))
        .arg("--help")
        .output()
        .expect("hopscope-demo runs");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for want in [
        "pool-exhaustion",
        "slow-query",
        "blocked-worker",
        "mixed",
        "--no-acquire-spans",
    ] {
        assert!(help.contains(want), "`{want}` missing in:\n{help}");
    }
}

/// The saturation scenarios' default traffic is enough for their detectors.
#[test]
fn saturation_scenarios_default_to_enough_traffic() {
    let by_name: HashMap<&str, (usize, usize)> = [
        Scenario::PoolExhaustion,
        Scenario::SlowQuery,
        Scenario::BlockedWorker,
        Scenario::Mixed,
    ]
    .into_iter()
    .map(|s| {
        assert_eq!(s.has_databases(), s != Scenario::BlockedWorker, "{s}");
        (s.name(), s.traffic())
    })
    .collect();
    assert!(by_name["pool-exhaustion"].0 >= 30);
    assert!(by_name["pool-exhaustion"].1 as u32 >= POOL_SIZE + 12);
    assert!(by_name["blocked-worker"].0 >= 20 && by_name["blocked-worker"].1 >= 6);
}
