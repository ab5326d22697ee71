//! Replicas that answer for the whole deployment (docs/FEDERATION.md): three
//! daemons on loopback, each fed its own traces over OTLP, the first with
//! the other two as `--peers`; a fourth fed every trace is what the merged
//! answers must equal.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hopscope::config::Settings;
use opentelemetry::trace::SpanKind;
use serde_json::{json, Value};
use support::{sp, Sp, TestDaemon};

/// Gateway requests that timed out behind it (a finding each), of
/// different lengths so the percentiles have something to tell apart.
fn traces(from: u64, to: u64) -> Vec<Vec<Sp>> {
    (from..to)
        .map(|i| {
            let end = 300 + i * 37;
            vec![
                sp("gateway", (1, 0), "GET /a", SpanKind::Server, (0, end))
                    .failed("timed out", 504),
                sp("gateway", (2, 1), "GET /b", SpanKind::Client, (5, end - 5)).deadline(),
                sp(
                    "backend",
                    (3, 2),
                    "GET /b",
                    SpanKind::Server,
                    (10, end + 600),
                ),
            ]
        })
        .collect()
}

/// Settings of every daemon here: the cross-trace detectors, whose counts
/// are per window rather than per trace, never run.
fn quiet(settings: Settings) -> Settings {
    Settings {
        detect_interval: Some("1h".parse().unwrap()),
        ..settings
    }
}

/// Waits until `d` has analyzed `n` traces of the entry point (its own).
async fn analyzed(d: &TestDaemon, n: u64) {
    d.wait_for("/api/v1/hops?local=true", |s, b| {
        s == 200 && b["entries"][0]["traces"] == n
    })
    .await;
}

/// Finding id → count.
fn counts(body: &Value) -> BTreeMap<String, u64> {
    body["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Entry point and hop → (traces, critical p95 ms, share).
fn hop_table(body: &Value) -> BTreeMap<String, (u64, f64, f64)> {
    let mut out = BTreeMap::new();
    for e in body["entries"].as_array().expect("entries") {
        let entry = format!("{}:{}", e["entry"]["service"], e["entry"]["operation"]);
        out.insert(
            entry.clone(),
            (
                e["traces"].as_u64().unwrap(),
                0.0,
                e["total_root_ms"].as_f64().unwrap(),
            ),
        );
        for h in e["hops"].as_array().unwrap() {
            out.insert(
                format!("{entry} {} {} {}", h["kind"], h["service"], h["operation"]),
                (
                    h["traces"].as_u64().unwrap(),
                    h["critical_p95_ms"].as_f64().unwrap(),
                    h["share"].as_f64().unwrap(),
                ),
            );
        }
    }
    out
}

async fn jaeger_get(d: &TestDaemon, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("{}{path}", d.jaeger))
        .await
        .expect("Jaeger API answers");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

#[tokio::test]
async fn any_replica_answers_for_all_and_reports_a_missing_peer() {
    let one = support::start(quiet(Settings::default())).await;
    let two = support::start(quiet(Settings::default())).await;
    let all = support::start(quiet(Settings::default())).await;
    let zero = support::start(quiet(Settings {
        peers: Some(vec![one.api.clone(), format!("{}/", two.api)]),
        ..Settings::default()
    }))
    .await;

    support::send(&zero, traces(0, 4)).await;
    support::send(&one, traces(4, 9)).await;
    let held_by_two = support::send(&two, traces(9, 15)).await;
    support::send(&all, traces(0, 15)).await;
    for (d, n) in [(&zero, 4), (&one, 5), (&two, 6), (&all, 15)] {
        analyzed(d, n).await;
    }

    // Findings: the union, counts added, as one daemon fed everything counts.
    let (status, merged) = zero.get("/api/v1/findings").await;
    assert_eq!(status, 200, "{merged}");
    let mut summed: BTreeMap<String, u64> = BTreeMap::new();
    for d in [&zero, &one, &two] {
        for (id, n) in counts(&d.get("/api/v1/findings?local=true").await.1) {
            *summed.entry(id).or_default() += n;
        }
    }
    assert!(!summed.is_empty());
    assert_eq!(counts(&merged), summed, "{merged}");
    assert_eq!(
        counts(&merged),
        counts(&all.get("/api/v1/findings").await.1)
    );
    let peers = merged["peers"].as_array().expect("peers reported");
    assert_eq!(peers.len(), 2, "{merged}");
    for p in peers {
        assert_eq!(p["ok"], true, "{p}");
        assert!(p["node"].as_str().is_some_and(|n| n.len() == 16), "{p}");
    }
    assert_eq!(peers[1]["peer"], two.api.as_str());

    // Local only: this replica's own share, without a `peers` field.
    let (_, local) = zero.get("/api/v1/findings?local=true").await;
    assert!(local.get("peers").is_none(), "{local}");
    let (_, local_hops) = zero.get("/api/v1/hops?local=true").await;
    assert_eq!(local_hops["entries"][0]["traces"], 4);
    assert_eq!(zero.get("/api/v1/hops?local=maybe").await.0, 400);
    assert_eq!(zero.get("/api/v1/hops?local=").await.0, 400);

    // Hops: the counts of one daemon fed everything, p95 within the sketch's error.
    let (_, hops) = zero.get("/api/v1/hops").await;
    let (merged, whole) = (
        hop_table(&hops),
        hop_table(&all.get("/api/v1/hops").await.1),
    );
    assert_eq!(
        merged.keys().collect::<Vec<_>>(),
        whole.keys().collect::<Vec<_>>()
    );
    for (key, (traces, p95, share)) in &merged {
        let (t, q, s) = whole[key];
        assert_eq!(*traces, t, "{key}");
        assert!((p95 - q).abs() <= 0.01 * q.abs(), "{key}: p95 {p95} vs {q}");
        assert!((share - s).abs() < 1e-9, "{key}: share {share} vs {s}");
    }
    assert_eq!(hops["peers"].as_array().map(Vec::len), Some(2));

    // Jaeger: a trace held by the third replica, asked of the first.
    let id = held_by_two[0].to_string();
    let (status, body) = jaeger_get(&zero, &format!("/api/traces/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["traceID"], id.as_str());
    let (_, found) = jaeger_get(&zero, "/api/traces?service=gateway&limit=20").await;
    assert_eq!(found["data"].as_array().map(Vec::len), Some(15));
    let (_, found) = jaeger_get(&zero, "/api/traces?service=gateway&limit=5").await;
    let starts: Vec<u64> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["spans"][0]["startTime"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(starts.len(), 5);
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let (_, services) = jaeger_get(&zero, "/api/services").await;
    assert_eq!(services["data"], json!(["backend", "gateway"]));
    assert!(services["errors"].is_null(), "{services}");

    // One peer stops: the answer still comes, in time, saying who is missing.
    let two_api = two.api.clone();
    two.stop().await;
    let asked = Instant::now();
    let (status, partial) = zero.get("/api/v1/findings").await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(status, 200);
    let peers = partial["peers"].as_array().unwrap();
    assert_eq!(peers[0]["ok"], true);
    assert_eq!(peers[1]["peer"], two_api.as_str());
    assert_eq!(peers[1]["ok"], false);
    assert!(peers[1]["error"].as_str().is_some(), "{partial}");
    let total: u64 = counts(&partial).values().sum();
    assert_eq!(total, 9, "the stopped peer's six are missing: {partial}");

    let (status, body) = jaeger_get(&zero, &format!("/api/traces/{id}")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["errors"].to_string().contains(&two_api), "{body}");

    let grafana = reqwest::Client::new()
        .post(format!("{}/grafana/variable", zero.api))
        .json(&json!({"payload": {"target": "entries"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(grafana.status(), 200);
    let missing = grafana.headers()[hopscope::api::MISSING_PEERS_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(missing, two_api);
    let entries: Value = grafana.json().await.unwrap();
    assert_eq!(
        entries,
        json!([{"__text": "gateway:GET /a", "__value": "gateway:GET /a"}])
    );

    for d in [zero, one, all] {
        d.stop().await;
    }
}

/// A peer that answers garbage and one that never answers are reported,
/// each as its own error, within the peer timeout.
#[tokio::test]
async fn garbage_and_silence_from_peers_are_errors_not_failures() {
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let urls = [
        format!("http://{}", garbage.local_addr().unwrap()),
        format!("http://{}", silent.local_addr().unwrap()),
    ];
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = garbage.accept().await {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nnope!")
                .await;
        }
    });
    // Accepted, never answered.
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            open.push(c);
        }
    });
    let d = support::start(Settings {
        peers: Some(urls.to_vec()),
        peer_timeout: Some("300ms".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    let asked = Instant::now();
    let (status, body) = d.get("/api/v1/hops").await;
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(status, 200, "{body}");
    let peers = body["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p["ok"] == false), "{body}");
    assert!(
        peers[0]["error"].as_str().unwrap().contains("JSON"),
        "{body}"
    );
    assert!(
        peers[1]["error"].as_str().unwrap().contains("no answer"),
        "{body}"
    );
    d.stop().await;
    held.abort();
}

/// A replica listed among its own peers (as it finds itself in the headless
/// Service's DNS answer) recognises its node id and leaves itself out: its
/// findings are not counted twice.
#[tokio::test]
async fn a_replica_that_finds_itself_among_its_peers_leaves_itself_out() {
    // A free port, so the daemon can be told its own URL before it starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = support::start(quiet(Settings {
        api_addr: Some(([127, 0, 0, 1], port).into()),
        peers: Some(vec![format!("http://127.0.0.1:{port}")]),
        ..Settings::default()
    }))
    .await;
    support::send(&d, traces(0, 3)).await;
    analyzed(&d, 3).await;
    for _ in 0..2 {
        let (status, body) = d.get("/api/v1/findings").await;
        assert_eq!(status, 200);
        assert_eq!(body["peers"], json!([]), "{body}");
        assert_eq!(counts(&body).values().sum::<u64>(), 3, "{body}");
        let (_, state) = d.get("/api/v1/peer/state").await;
        assert_eq!(state["role"], "all");
        assert_eq!(state["node"].as_str().map(str::len), Some(16), "{state}");
    }
    d.stop().await;
}

/// Replicas share the API token: a replica sends it to its peers.
#[tokio::test]
async fn peers_are_asked_with_the_shared_api_token() {
    let token = || Settings {
        api_token: Some("s3cret".to_owned()),
        ..Settings::default()
    };
    let one = support::start(quiet(token())).await;
    let zero = support::start(quiet(Settings {
        peers: Some(vec![one.api.clone()]),
        ..token()
    }))
    .await;
    assert_eq!(zero.get("/api/v1/peer/state").await.0, 401);
    let body: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/hops", zero.api))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["peers"][0]["ok"], true, "{body}");
    zero.stop().await;
    one.stop().await;
}
