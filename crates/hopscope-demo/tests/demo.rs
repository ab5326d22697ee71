//! `hopscope-demo` end to end, one test per scenario at the default time scale:
//! what a user notices (the gateway's status codes, which hop holds the latency
//! share, the traces the daemon assembled from four services' OTLP exports),
//! whichever findings the daemon's detectors produce, and the scenario's promise
//! about findings.

mod stored;

use std::collections::{BTreeSet, HashMap};

use hopscope_demo::{Demo, DemoOptions, DemoReport, Scenario};
use serde_json::Value;

/// Requests per scenario: enough for aggregates, few enough for a quick test.
const REQUESTS: usize = 12;

/// The scenarios are timing-sensitive (10 ms per scenario second): one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A scenario's report and the details of every trace the daemon stored.
async fn run(scenario: Scenario) -> (DemoReport, Vec<Value>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let demo = Demo::start(&DemoOptions {
        scenario,
        requests: Some(REQUESTS),
        ..DemoOptions::default()
    })
    .await
    .expect("the demo starts");
    let report = demo.drive().await.expect("the demo runs");
    let traces = stored::stored_traces(demo.api_url()).await;
    demo.stop().await.expect("the demo stops cleanly");
    (report, traces)
}

/// The entry point's hop with the largest share that is not a network edge.
fn largest_span_hop(report: &DemoReport) -> (String, String) {
    let hop = report
        .hops()
        .iter()
        .filter(|h| h["kind"] != "wire")
        .max_by(|a, b| {
            a["share"]
                .as_f64()
                .partial_cmp(&b["share"].as_f64())
                .unwrap()
        })
        .unwrap_or_else(|| panic!("no hops in {}", report.hops));
    (
        hop["service"].as_str().unwrap().to_owned(),
        hop["operation"].as_str().unwrap().to_owned(),
    )
}

/// Checks one trace's tree: the gateway's SERVER span is the only root, every
/// parent is in the trace, each CLIENT span is under a SERVER span of its own
/// service, and each other SERVER span is under a CLIENT span of its caller.
/// Returns the trace's spans by (service, kind).
fn check_tree(trace: &Value, services: &[&str]) -> HashMap<(String, String), Value> {
    let spans = trace["spans"].as_array().expect("spans");
    let by_id: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["span_id"].as_str().unwrap(), s))
        .collect();
    let caller = |service: &str| match service {
        "frontend" => "gateway",
        "orders" => "frontend",
        "inventory" => "orders",
        other => panic!("unexpected callee {other}"),
    };
    let mut roots = 0;
    for s in spans {
        let (service, kind) = (s["service"].as_str().unwrap(), s["kind"].as_str().unwrap());
        let Some(parent_id) = s["parent_span_id"].as_str() else {
            roots += 1;
            assert_eq!((service, kind), ("gateway", "server"), "{trace}");
            assert_eq!(s["operation"], "GET /checkout");
            continue;
        };
        let parent = by_id
            .get(parent_id)
            .unwrap_or_else(|| panic!("parent of {s} missing in {trace}"));
        let want = match kind {
            "client" => (service, "server"),
            "server" => (caller(service), "client"),
            other => panic!("unexpected span kind {other}"),
        };
        assert_eq!(
            (
                parent["service"].as_str().unwrap(),
                parent["kind"].as_str().unwrap()
            ),
            want,
            "parent of {s}"
        );
    }
    assert_eq!(roots, 1, "{trace}");
    let got: BTreeSet<&str> = spans
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(got, services.iter().copied().collect(), "{trace}");
    assert!(
        !trace["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "orphan"),
        "{trace}"
    );
    assert_eq!(trace["entry"]["service"], "gateway");
    spans
        .iter()
        .map(|s| {
            let key = (
                s["service"].as_str().unwrap().to_owned(),
                s["kind"].as_str().unwrap().to_owned(),
            );
            (key, s.clone())
        })
        .collect()
}

fn span<'a>(spans: &'a HashMap<(String, String), Value>, service: &str, kind: &str) -> &'a Value {
    &spans[&(service.to_owned(), kind.to_owned())]
}

fn error_type(span: &Value) -> Option<&str> {
    span["attributes"]["error.type"].as_str()
}

/// The findings of a kind.
fn findings_of<'a>(report: &'a DemoReport, kind: &str) -> Vec<&'a Value> {
    let findings = report.findings["findings"].as_array().expect("findings");
    findings.iter().filter(|f| f["kind"] == kind).collect()
}

const ALL: [&str; 4] = ["gateway", "frontend", "orders", "inventory"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascading_timeout_every_caller_gives_up_and_inventory_holds_the_share() {
    let (report, traces) = run(Scenario::CascadingTimeout).await;
    assert_eq!(report.count(504), REQUESTS, "{report}");
    assert_eq!(report.failed, 0);
    assert_eq!(
        largest_span_hop(&report),
        ("inventory".to_owned(), "GET /stock/{sku}".to_owned()),
        "{report}"
    );
    assert_eq!(traces.len(), REQUESTS);
    for trace in &traces {
        assert_eq!(trace["span_count"], 7, "{trace}");
        let spans = check_tree(trace, &ALL);
        // Every caller timed out at its own limit...
        for service in ["gateway", "frontend", "orders"] {
            let client = span(&spans, service, "client");
            assert_eq!(error_type(client), Some("timeout"), "{client}");
            assert_eq!(client["status"]["code"], "error");
            let server = span(&spans, service, "server");
            assert_eq!(server["attributes"]["http.response.status_code"], 504);
        }
        assert_eq!(
            span(&spans, "gateway", "server")["status"]["message"],
            "Endpoint request timed out"
        );
        // ...and the slow inventory kept working after orders gave up on it.
        let inventory = span(&spans, "inventory", "server");
        assert_eq!(inventory["attributes"]["http.response.status_code"], 200);
        assert!(
            trace["warnings"].as_array().unwrap().iter().any(|w| {
                w["code"] == "child_outlives_parent" && w["span_id"] == inventory["span_id"]
            }),
            "{trace}"
        );
    }
    let cascades = findings_of(&report, "cascading_timeout");
    assert!(
        cascades
            .iter()
            .any(|f| f["culprit"]["service"] == "inventory"),
        "{report}"
    );
    let inversions = findings_of(&report, "timeout_inversion");
    assert!(
        !inversions.is_empty(),
        "stacked 30 s under a 29 s gateway: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_propagated_answers_in_time_and_the_slow_hop_still_shows() {
    let (report, traces) = run(Scenario::DeadlinePropagated).await;
    assert_eq!(report.count(200), REQUESTS, "{report}");
    assert_eq!(
        largest_span_hop(&report),
        ("inventory".to_owned(), "GET /stock/{sku}".to_owned()),
        "{report}"
    );
    assert_eq!(traces.len(), REQUESTS);
    for trace in &traces {
        assert_eq!(trace["span_count"], 7, "{trace}");
        let spans = check_tree(trace, &ALL);
        assert!(spans.values().all(|s| error_type(s).is_none()), "{trace}");
    }
    assert!(
        findings_of(&report, "cascading_timeout").is_empty(),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_traces_are_whole_and_without_errors() {
    let (report, traces) = run(Scenario::Healthy).await;
    assert_eq!(report.count(200), REQUESTS, "{report}");
    assert_eq!(report.hops["traces"], REQUESTS, "{report}");
    assert_eq!(report.spans_exported, 7 * REQUESTS as u64);
    assert_eq!(traces.len(), REQUESTS);
    for trace in &traces {
        assert_eq!(trace["span_count"], 7, "{trace}");
        let spans = check_tree(trace, &ALL);
        assert!(
            spans.values().all(|s| s["status"]["code"] != "error"),
            "{trace}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gateway_is_fast_502s_not_timeouts() {
    let (report, traces) = run(Scenario::BadGateway).await;
    assert_eq!(report.count(502), REQUESTS, "{report}");
    assert_eq!(traces.len(), REQUESTS);
    for trace in &traces {
        // inventory is down: no span of it.
        assert_eq!(trace["span_count"], 6, "{trace}");
        let spans = check_tree(trace, &["gateway", "frontend", "orders"]);
        assert_eq!(
            error_type(span(&spans, "orders", "client")),
            Some("connection_refused")
        );
        assert!(
            spans.values().all(|s| error_type(s) != Some("timeout")),
            "{trace}"
        );
        // Fast: far below the gateway's 29 s (290 ms) limit.
        assert!(trace["duration_ms"].as_f64().unwrap() < 145.0, "{trace}");
    }
    let findings = report.findings["findings"].as_array().expect("findings");
    assert!(
        !findings
            .iter()
            .any(|f| f["kind"].as_str().is_some_and(|k| k.contains("timeout"))),
        "{report}"
    );
}

/// The command line prints the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_outcomes_hops_and_findings() {
    let _one = ONE_AT_A_TIME.lock().await;
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hopscope-demo"))
            .args(["--scenario", "bad-gateway", "--requests", "4"])
            .output()
            .expect("hopscope-demo runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "scenario: bad-gateway",
        "requests: 4 through the gateway",
        "502 Bad Gateway",
        "what gateway:GET /checkout waited on (4 traces",
        "/api/v1/findings):",
    ] {
        assert!(stdout.contains(want), "`{want}` missing in:\n{stdout}");
    }
}
