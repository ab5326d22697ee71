//! Replicas that answer as one (deploy/README.md, "Scaling out"), proved on
//! one machine: the Collector's `loadbalancing` exporter is emulated
//! ([`router`]: its consistent-hash ring, by trace id in front of
//! tier 1 and by `service.name` in front of tier 2), three assembling
//! replicas forward analyzed spans to two detect replicas, and one daemon
//! alone gets the same traffic: the demo's scenarios, and a load generator
//! run. Any replica's API must then answer as the daemon alone does: the same
//! findings (kinds, culprits, estimated pool sizes), hop shares within 1 %,
//! p95s within the sketch's error. Then a replica is removed in the middle of
//! traffic, and the answer says so.

mod support;
// Only this test emulates the Collector (the support module is shared with
// other crates' tests, which do not depend on crc32fast).
#[path = "support/router.rs"]
mod router;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hopscope::config::Settings;
use hopscope_demo::{Demo, DemoOptions, Scenario};
use hopscope_loadgen::{Options, Protocol, Shape, Until};
use router::{Key, Router};
use serde_json::Value;
use support::TestDaemon;

/// A free loopback port: replicas name each other in their settings before
/// they start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn settings(toml: &str) -> Settings {
    toml::from_str(toml).unwrap_or_else(|e| panic!("{e}: {toml}"))
}

/// `peers = [...]` of the replica at `me` among `apis`: every other one.
fn peers(apis: &[u16], me: u16) -> String {
    let others: Vec<String> = apis
        .iter()
        .filter(|&&p| p != me)
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    format!("peers = [{}]", others.join(", "))
}

/// Both tiers and the two routers in front of them, wired as
/// deploy/k8s/two-tier/ wires them, and the daemon alone, which the front
/// router also sends everything to.
struct System {
    alone: TestDaemon,
    assemble: Vec<TestDaemon>,
    detect: Vec<TestDaemon>,
    front: Router,
    _by_service: Router,
}

async fn system(trace_idle: &str) -> System {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (detect_ports, assemble_ports) = ports.split_at(2);
    // Peers get 10 s: a merged budget map fetches every peer's window, and
    // CI runs the whole suite of debug builds at once on two cores.
    let common = format!(
        "trace_idle = \"{trace_idle}\"\ndetect_interval = \"100ms\"\npeer_timeout = \"10s\"\n"
    );
    let mut detect = Vec::new();
    for &p in detect_ports {
        let toml = format!(
            "{common}role = \"detect\"\napi_addr = \"127.0.0.1:{p}\"\n{}",
            peers(&ports, p)
        );
        detect.push(support::start(settings(&toml)).await);
    }
    let by_service = Router::start(Key::Service, &endpoints(&detect)).await;
    let mut assemble = Vec::new();
    for &p in assemble_ports {
        let toml = format!(
            "{common}role = \"assemble\"\napi_addr = \"127.0.0.1:{p}\"\n\
             forward_otlp = \"{}\"\nforward_protocol = \"http\"\n{}",
            by_service.endpoint,
            peers(&ports, p)
        );
        assemble.push(support::start(settings(&toml)).await);
    }
    let alone = support::start(settings(&common)).await;
    let front = Router::start(Key::TraceId, &endpoints(&assemble)).await;
    front.set_tees(vec![alone.http_endpoint.clone()]);
    System {
        alone,
        assemble,
        detect,
        front,
        _by_service: by_service,
    }
}

/// The OTLP/HTTP endpoints of `daemons`.
fn endpoints(daemons: &[TestDaemon]) -> Vec<String> {
    daemons.iter().map(|d| d.http_endpoint.clone()).collect()
}

/// A counter of a daemon's `/api/v1/stats`.
async fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.get("/api/v1/stats").await.1["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until the daemon alone and tier 1 analyzed everything, tier 1
/// forwarded all of it, tier 2 received all of that and every detector ran
/// over what it holds.
async fn settle(s: &System) {
    s.alone.settled_and_detected().await;
    for a in &s.assemble {
        a.settled_and_detected().await;
    }
    // Everything analyzed was queued for forwarding (a trace analyzed again
    // after late spans is forwarded again, whole): once the queues are empty
    // and tier 2 received what was forwarded, it has every record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (mut queued, mut forwarded, mut received) = (0, 0, 0);
        for a in &s.assemble {
            let (_, stats) = a.get("/api/v1/stats").await;
            queued += stats["forward_spans_queued"].as_u64().expect("a gauge");
            forwarded += stats["counters"]["forward_spans"]
                .as_u64()
                .expect("a counter");
        }
        for d in &s.detect {
            received += counter(d, "spans_accepted").await;
        }
        if queued == 0 && received == forwarded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tier 1 has {queued} spans queued and forwarded {forwarded}; tier 2 received {received}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &s.detect {
        d.settled_and_detected().await;
    }
}

/// (kind, culprit) → the estimated pool size, if any, of a findings answer.
fn findings(body: &Value) -> BTreeMap<(String, String), Option<u64>> {
    body["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                (
                    f["kind"].as_str().expect("kind").to_owned(),
                    f["culprit"].to_string(),
                ),
                f["evidence"]["estimated_pool_size"].as_u64(),
            )
        })
        .collect()
}

/// One hop of a hops answer: (share p50, share p95, critical p95 ms, traces).
type HopFigures = (f64, f64, f64, u64);

/// (entry, hop) → its figures, of a hops answer.
fn hops(body: &Value) -> BTreeMap<(String, String), HopFigures> {
    let mut out = BTreeMap::new();
    for e in body["entries"].as_array().expect("entries") {
        let entry = format!("{}:{}", e["entry"]["service"], e["entry"]["operation"]);
        for h in e["hops"].as_array().expect("hops") {
            let hop = format!(
                "{} {} {} {}",
                h["service"], h["operation"], h["kind"], h["peer"]
            );
            let f = |k: &str| h[k].as_f64().unwrap_or_else(|| panic!("{k} in {h}"));
            out.insert(
                (entry.clone(), hop),
                (
                    f("share_p50"),
                    f("share_p95"),
                    f("critical_p95_ms"),
                    h["traces"].as_u64().expect("traces"),
                ),
            );
        }
    }
    out
}

/// The rows of a budget map: per entry point its timeout, traces and
/// timed-out ones, then per edge its timeout, budget left, calls and
/// timed-out ones.
fn budget_rows(body: &Value) -> BTreeSet<String> {
    let mut rows = BTreeSet::new();
    for e in body["entries"].as_array().expect("entries") {
        let entry = format!("{}:{}", e["entry"]["service"], e["entry"]["operation"]);
        rows.insert(format!(
            "{entry} {} {} {}",
            e["timeout_ms"], e["traces"], e["timed_out"]
        ));
        for edge in e["edges"].as_array().expect("edges") {
            rows.insert(format!(
                "{entry} {} {} {} {} {} {} {}",
                edge["caller"],
                edge["callee"],
                edge["operation"],
                edge["timeout_ms"],
                edge["budget_left_ms"],
                edge["calls"],
                edge["timed_out"]
            ));
        }
    }
    rows
}

/// The rows of a statement-shapes answer: statement, target, count, p95.
fn shape_rows(body: &Value) -> BTreeSet<String> {
    body["queries"]
        .as_array()
        .expect("queries")
        .iter()
        .map(|q| {
            format!(
                "{} {} {} {}",
                q["statement"], q["target"], q["count"], q["p95_ms"]
            )
        })
        .collect()
}

/// Every replica of `s` answers as the daemon alone: the same findings
/// (polled: the detect replicas settle on them once they have their peers'
/// timeouts), the same hops within the sketch's error, and every peer
/// answering. Returns the findings.
async fn answers_as_one(s: &System) -> BTreeMap<(String, String), Option<u64>> {
    let (_, alone) = s.alone.get("/api/v1/findings").await;
    let one = findings(&alone);
    for replica in s.assemble.iter().chain(&s.detect) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = replica.get("/api/v1/findings").await;
            assert_eq!(status, 200);
            let peers = body["peers"]
                .as_array()
                .expect("the answer lists its peers");
            assert_eq!(peers.len(), 4, "{peers:?}");
            assert!(peers.iter().all(|p| p["ok"] == true), "{peers:?}");
            let all = findings(&body);
            if all == one {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let only = |a: &BTreeMap<_, _>, b: &BTreeMap<_, _>| -> Vec<String> {
                    a.iter()
                        .filter(|(k, v)| b.get(*k) != Some(*v))
                        .map(|(k, v)| format!("{k:?} {v:?}"))
                        .collect()
                };
                panic!(
                    "{} answers unlike the daemon alone:\nonly the replicas: {:#?}\nonly the daemon alone: {:#?}\n{body}",
                    replica.api,
                    only(&all, &one),
                    only(&one, &all),
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (_, alone_hops) = s.alone.get("/api/v1/hops").await;
    let alone_hops = hops(&alone_hops);
    assert!(!alone_hops.is_empty());
    let (mut share_diff, mut p95_diff) = (0f64, 0f64);
    for replica in [&s.assemble[1], &s.detect[0]] {
        let (_, all) = replica.get("/api/v1/hops").await;
        let all = hops(&all);
        assert_eq!(
            alone_hops.keys().collect::<BTreeSet<_>>(),
            all.keys().collect::<BTreeSet<_>>()
        );
        for (key, &(p50, p95, ms, traces)) in &alone_hops {
            let (p50_all, p95_all, ms_all, traces_all) = all[key];
            assert_eq!(traces, traces_all, "{key:?}");
            for (alone, merged) in [(p50, p50_all), (p95, p95_all)] {
                assert!(
                    (alone - merged).abs() <= 0.01,
                    "{key:?}: share {alone} alone, {merged} merged"
                );
                share_diff = share_diff.max((alone - merged).abs());
            }
            // Both sketches hold the same observations: within their 1 %.
            assert!(
                (ms - ms_all).abs() <= 0.01 * ms.max(ms_all),
                "{key:?}: critical p95 {ms} ms alone, {ms_all} ms merged"
            );
            p95_diff = p95_diff.max((ms - ms_all).abs() / ms.max(ms_all).max(f64::MIN_POSITIVE));
        }
    }
    // The budget map and the statement shapes: over every replica's window,
    // the same as over the daemon alone's.
    let (_, alone_budgets) = s.alone.get("/api/v1/timeouts").await;
    let (_, alone_shapes) = s.alone.get("/api/v1/queries").await;
    let (budgets, shapes) = (budget_rows(&alone_budgets), shape_rows(&alone_shapes));
    assert!(!budgets.is_empty(), "{alone_budgets}");
    for replica in [&s.assemble[0], &s.detect[1]] {
        let (_, all) = replica.get("/api/v1/timeouts").await;
        let peers = &all["peers"];
        assert!(
            peers
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["ok"] == true)),
            "{peers}"
        );
        assert_eq!(
            budget_rows(&all),
            budgets,
            "{}: the budget map",
            replica.api
        );
        assert!(all["peers"]
            .as_array()
            .is_some_and(|p| p.iter().all(|p| p["ok"] == true)));
        let (_, all) = replica.get("/api/v1/queries").await;
        assert_eq!(
            shape_rows(&all),
            shapes,
            "{}: the statement shapes",
            replica.api
        );
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for k in one.keys() {
        *kinds.entry(k.0.as_str()).or_default() += 1;
    }
    let pools: Vec<u64> = one.values().flatten().copied().collect();
    println!(
        "one daemon and 3+2 replicas agree: findings by kind {kinds:?}, estimated pool sizes \
         {pools:?}; {} hops, largest share difference {share_diff:.4}, largest critical p95 \
         difference {:.2} %; {} budget rows, {} statement shapes equal",
        alone_hops.len(),
        100.0 * p95_diff,
        budgets.len(),
        shapes.len()
    );
    one
}

/// Every scenario of the demo, its services exporting through the front
/// router, one after the other into the same replicas and daemon alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_s_scenarios_diagnosed_by_replicas_as_by_one_daemon() {
    let s = system("2s").await;
    for &scenario in <Scenario as clap::ValueEnum>::value_variants() {
        let demo = Demo::start(&DemoOptions {
            scenario,
            export_via: Some(s.front.grpc_endpoint.clone()),
            ..DemoOptions::default()
        })
        .await
        .expect("the demo starts");
        // The demo's own daemon gets everything too: it waits for its spans.
        s.front.set_tees(vec![
            s.alone.http_endpoint.clone(),
            demo.otlp_http_endpoint(),
        ]);
        demo.drive().await.expect("the demo runs");
        s.front.set_tees(vec![s.alone.http_endpoint.clone()]);
        demo.stop().await.expect("the demo stops");
    }
    settle(&s).await;
    let found = answers_as_one(&s).await;
    let kinds: BTreeSet<&str> = found.keys().map(|k| k.0.as_str()).collect();
    for kind in [
        "cascading_timeout",
        "pool_exhaustion",
        "slow_query",
        "blocked_worker",
        "timeout_inversion",
    ] {
        assert!(kinds.contains(kind), "the scenarios' {kind}: {kinds:?}");
    }
    assert!(
        found
            .iter()
            .any(|(k, pool)| k.0 == "pool_exhaustion" && pool.is_some()),
        "an estimated pool size to compare: {found:?}"
    );
}

/// Loadgen traffic through the front router: 8 services of 3 instances,
/// timeouts and slow queries.
fn traffic(endpoint: &str, until: Until, seed: u64) -> Options {
    Options {
        endpoint: endpoint.to_owned(),
        protocol: Protocol::Http,
        connections: 2,
        batch: 200,
        until,
        seed,
        shape: Shape {
            error_fraction: 0.05,
            slow_db_fraction: 0.05,
            ..Shape::default()
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_through_replicas_answered_as_by_one_daemon_and_a_lost_replica_named() {
    let s = system("1s").await;
    let report =
        hopscope_loadgen::run(&traffic(&s.front.endpoint, Until::Spans(60_000), 7), |_| {})
            .await
            .expect("traffic runs");
    assert_eq!(report.accepted, report.sent, "{report:?}");
    settle(&s).await;
    let found = answers_as_one(&s).await;
    // Per-trace findings (tier 1's) and cross-trace ones (tier 2's).
    for kind in ["cascading_timeout", "gateway_timeout", "timeout_headroom"] {
        assert!(
            found.keys().any(|k| k.0 == kind),
            "the traffic has a {kind} to find: {found:?}"
        );
    }

    // A replica leaves in the middle of traffic: the Collector's resolver
    // drops it from the ring; the traces it held are no longer answered for.
    let before = counter(&s.assemble[2], "spans_accepted").await;
    let options = traffic(&s.front.endpoint, Until::Elapsed(Duration::from_secs(3)), 8);
    let sending = tokio::spawn(async move { hopscope_loadgen::run(&options, |_| {}).await });
    s.assemble[2]
        .wait_for("/api/v1/stats", |_, b| {
            b["counters"]["spans_accepted"].as_u64() > Some(before)
        })
        .await;
    let System {
        alone,
        mut assemble,
        detect,
        front,
        _by_service,
    } = s;
    let gone = assemble.pop().expect("three");
    let gone_api = gone.api.clone();
    front.set_members(&endpoints(&assemble));
    gone.stop().await;
    let second = sending.await.unwrap().expect("traffic runs");
    assert_eq!(second.accepted, second.sent);
    for d in assemble.iter().chain(&detect).chain([&alone]) {
        d.settled_and_detected().await;
    }
    let (status, answer) = assemble[0].get("/api/v1/hops").await;
    assert_eq!(status, 200);
    let missing: Vec<&Value> = answer["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter(|p| p["ok"] != true)
        .collect();
    assert_eq!(missing.len(), 1, "{answer}");
    assert_eq!(missing[0]["peer"], gone_api.as_str());
    assert!(missing[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
    let traces = |b: &Value| -> u64 {
        b["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["traces"].as_u64().unwrap_or(0))
            .sum()
    };
    let (_, alone_hops) = alone.get("/api/v1/hops").await;
    let (kept, all) = (traces(&answer), traces(&alone_hops));
    assert!(kept < all, "the gone replica's traces are not answered for");
    println!(
        "a replica removed mid-traffic: the others answer for {kept} of {all} traces \
         ({:.1} % lost with it), and name it missing",
        100.0 * (all - kept) as f64 / all as f64
    );
}
