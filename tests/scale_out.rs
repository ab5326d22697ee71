//! Replicas that answer as one (deploy/README.md, "Two tiers"), proved on one
//! machine: the Collector's `loadbalancing` exporter is emulated
//! ([`support::router`]: its consistent-hash ring, by trace id in front of
//! tier 1 and by `service.name` in front of tier 2), three assembling
//! replicas forward analyzed spans to two detect replicas, and one daemon
//! alone gets the same traffic. Any replica's API must then answer as the
//! daemon alone does: the same findings (kinds, culprits, estimated pool
//! sizes), hop shares within 1 %, p95s within the sketch's error. Then a
//! replica is removed in the middle of traffic, and the answer says so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hopscope::config::Settings;
use hopscope_loadgen::{Options, Protocol, Shape, Until};
use serde_json::Value;
use support::router::{Key, Router};
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

/// `[peers]` of the replica at `me` among `apis`: every other one.
fn peers(apis: &[u16], me: u16) -> String {
    let others: Vec<String> = apis
        .iter()
        .filter(|&&p| p != me)
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    format!("peers = [{}]", others.join(", "))
}

struct System {
    alone: TestDaemon,
    assemble: Vec<TestDaemon>,
    detect: Vec<TestDaemon>,
    front: Router,
    _by_service: Router,
}

/// Every replica and both routers, wired as deploy/k8s/two-tier/ wires them.
async fn system() -> System {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (detect_ports, assemble_ports) = ports.split_at(2);
    let common = "trace_idle = \"1s\"\ndetect_interval = \"100ms\"\npeer_timeout = \"2s\"\n";
    let mut detect = Vec::new();
    for &p in detect_ports {
        let toml = format!(
            "{common}role = \"detect\"\napi_addr = \"127.0.0.1:{p}\"\n{}",
            peers(&ports, p)
        );
        detect.push(support::start(settings(&toml)).await);
    }
    let by_service = Router::start(
        Key::Service,
        &detect
            .iter()
            .map(|d| d.http_endpoint.clone())
            .collect::<Vec<_>>(),
        None,
    )
    .await;
    let mut assemble = Vec::new();
    for &p in assemble_ports {
        let toml = format!(
            "{common}role = \"assemble\"\napi_addr = \"127.0.0.1:{p}\"\nforward_otlp = \"{}\"\nforward_protocol = \"http\"\n{}",
            by_service.endpoint,
            peers(&ports, p)
        );
        assemble.push(support::start(settings(&toml)).await);
    }
    let alone = support::start(settings(common)).await;
    let front = Router::start(
        Key::TraceId,
        &assemble
            .iter()
            .map(|d| d.http_endpoint.clone())
            .collect::<Vec<_>>(),
        Some(alone.http_endpoint.clone()),
    )
    .await;
    System {
        alone,
        assemble,
        detect,
        front,
        _by_service: by_service,
    }
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

/// A stat of a daemon's `/api/v1/stats` counters.
async fn counter(d: &TestDaemon, name: &str) -> u64 {
    d.get("/api/v1/stats").await.1["counters"][name]
        .as_u64()
        .unwrap_or(0)
}

/// Waits until every daemon has analyzed (tier 1 and alone) or merged (tier
/// 2) everything and the detectors ran over it.
async fn settle(s: &System, spans: u64) {
    s.alone.settled_and_detected().await;
    for a in &s.assemble {
        a.settled_and_detected().await;
    }
    // Everything tier 1 analyzed was forwarded and reached tier 2 (the
    // routers answer only once delivered).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut accepted = 0;
        let mut forwarded = 0;
        for a in &s.assemble {
            accepted += counter(a, "spans_accepted").await;
            forwarded += counter(a, "forward_spans").await;
        }
        let mut merged = 0;
        for d in &s.detect {
            merged += counter(d, "spans_accepted").await;
        }
        if accepted >= spans && forwarded == accepted && merged == forwarded {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "tier 1 accepted {accepted} of {spans} spans, forwarded {forwarded}; tier 2 received {merged}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &s.detect {
        d.settled_and_detected().await;
    }
}

/// (kind, culprit) → (estimated pool size, if any), of a findings answer.
fn findings(body: &Value) -> BTreeMap<(String, String), Option<u64>> {
    body["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                (f["kind"].to_string(), f["culprit"].to_string()),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_behind_the_collector_answer_as_one_daemon_and_say_what_they_lost() {
    let s = system().await;
    let report =
        hopscope_loadgen::run(&traffic(&s.front.endpoint, Until::Spans(60_000), 7), |_| {})
            .await
            .expect("traffic runs");
    assert_eq!(report.accepted, report.sent, "{report:?}");
    settle(&s, report.sent).await;

    // Any replica answers for all: an assembling one and a detect one.
    let (_, alone) = s.alone.get("/api/v1/findings").await;
    let one = findings(&alone);
    // Per-trace findings (tier 1's) and cross-trace ones (tier 2's) to compare.
    for kind in ["cascading_timeout", "gateway_timeout", "timeout_headroom"] {
        assert!(
            one.keys().any(|k| k.0.contains(kind)),
            "the traffic has a {kind} to find: {one:?}"
        );
    }
    for replica in [&s.assemble[0], &s.detect[1]] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, all) = replica.get("/api/v1/findings").await;
            assert_eq!(status, 200);
            let peers = all["peers"].as_array().expect("the answer lists its peers");
            assert_eq!(peers.len(), 4, "{peers:?}");
            assert!(peers.iter().all(|p| p["ok"] == true), "{peers:?}");
            // The detect replicas exchange their timeouts each pass: wait
            // until their findings settled on what one window finds.
            if findings(&all) == one {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                println!("{all}");
                let all = findings(&all);
                let only = |a: &BTreeMap<_, _>, b: &BTreeMap<_, _>| -> Vec<String> {
                    a.iter()
                        .filter(|(k, v)| b.get(*k) != Some(*v))
                        .map(|(k, v)| format!("{k:?} {v:?}"))
                        .collect()
                };
                panic!(
                    "{} answers unlike the daemon alone:\nonly the replicas: {:#?}\nonly the daemon alone: {:#?}",
                    replica.api,
                    only(&all, &one),
                    only(&one, &all)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let (_, alone_hops) = s.alone.get("/api/v1/hops").await;
    let (_, all_hops) = s.assemble[1].get("/api/v1/hops").await;
    let (one, all) = (hops(&alone_hops), hops(&all_hops));
    assert!(!one.is_empty());
    assert_eq!(
        one.keys().collect::<BTreeSet<_>>(),
        all.keys().collect::<BTreeSet<_>>()
    );
    for (key, &(p50, p95, ms, traces)) in &one {
        let (p50_all, p95_all, ms_all, traces_all) = all[key];
        assert_eq!(traces, traces_all, "{key:?}");
        for (alone, merged) in [(p50, p50_all), (p95, p95_all)] {
            assert!(
                (alone - merged).abs() <= 0.01,
                "{key:?}: share {alone} alone, {merged} merged"
            );
        }
        // Both sketches hold the same observations: within their 1 %.
        assert!(
            (ms - ms_all).abs() <= 0.01 * ms.max(ms_all),
            "{key:?}: critical p95 {ms} ms alone, {ms_all} ms merged"
        );
    }

    // A replica leaves in the middle of traffic: the Collector's resolver
    // drops it from the ring, its traces in flight are split or lost.
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
    front.set_members(
        &assemble
            .iter()
            .map(|d| d.http_endpoint.clone())
            .collect::<Vec<_>>(),
    );
    gone.stop().await;
    let second = sending.await.unwrap().expect("traffic runs");
    assert_eq!(second.accepted, second.sent);
    alone.settled_and_detected().await;
    for a in &assemble {
        a.settled_and_detected().await;
    }
    for d in &detect {
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
        "a replica removed mid-traffic: the others answer for {kept} of {all} traces ({:.1} % lost with it), and name it missing",
        100.0 * (all - kept) as f64 / all as f64
    );
}
