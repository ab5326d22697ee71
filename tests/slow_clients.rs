//! Slow and hostile clients over real loopback sockets: slowloris request
//! heads are cut off at `header_read_timeout`, connections past
//! `max_connections` are closed at once, a body that trickles is refused
//! retryably at `body_read_timeout`, bodies being received cannot hold more
//! than `otlp_body_budget_mib` together (503 with `Retry-After`), every cut
//! is counted, well-behaved exporters are served meanwhile, and shutdown
//! ends at `shutdown_timeout` even with clients still sending.

mod support;

use std::time::Duration;

use hopscope::config::Settings;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Slow clients in each test (bounded, loopback only).
const SLOW: usize = 40;

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// A valid, small OTLP/JSON export of one span of trace `n`.
fn export(n: u8) -> String {
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"good"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{:032x}","spanId":"00000000000000{:02x}","name":"op","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000010000000"}}]}}]}}]}}"#,
        0xa0_u128 << 120 | n as u128,
        n.max(1)
    )
}

/// A well-behaved exporter: posts `export(n)` and returns the status.
async fn post(http: &reqwest::Client, endpoint: &str, n: u8) -> u16 {
    http.post(format!("{endpoint}/v1/traces"))
        .header("content-type", "application/json")
        .body(export(n))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn counters(d: &support::TestDaemon) -> Value {
    d.get("/api/v1/stats").await.1["counters"].clone()
}

/// Whether the server closed the connection (reads to the end; a slow client
/// that never finished its request gets no answer, or a refusal).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_off_and_exporters_still_served() {
    let d = support::start(Settings {
        header_read_timeout: Some("500ms".parse().unwrap()),
        max_connections: Some(SLOW / 2),
        ..Settings::default()
    })
    .await;
    let http = reqwest::Client::new();
    // Half fill the limit, the rest are closed as they connect.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(addr(&d.http_endpoint)).await.unwrap();
        let _ = s
            .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
            .await;
        slow.push(s);
    }
    // A head that keeps trickling is cut all the same.
    let started = Instant::now();
    let mut closed = 0;
    for s in &mut slow {
        let _ = s.write_all(b"X-Slow: 1\r\n").await;
        closed += usize::from(closed_within(s, Duration::from_secs(5)).await);
    }
    assert_eq!(closed, SLOW, "every slow client is disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let c = counters(&d).await;
    assert!(
        c["http_header_timeouts"].as_u64().unwrap() >= (SLOW / 2) as u64,
        "{c}"
    );
    assert!(
        c["connections_refused"].as_u64().unwrap() >= (SLOW / 2) as u64,
        "{c}"
    );
    // Exporters and the API are served once the slow ones are gone.
    assert_eq!(post(&http, &d.http_endpoint, 1).await, 200);
    assert_eq!(d.get("/healthz").await.0, 200);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_are_limited_and_silent_ones_cut_off() {
    let d = support::start(Settings {
        header_read_timeout: Some("500ms".parse().unwrap()),
        max_connections: Some(SLOW / 2),
        ..Settings::default()
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..SLOW {
        silent.push(TcpStream::connect(addr(&d.grpc_endpoint)).await.unwrap());
    }
    let started = Instant::now();
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let c = counters(&d).await;
    assert_eq!(c["connections_refused"], SLOW / 2, "{c}");
    assert_eq!(c["http_header_timeouts"], SLOW / 2, "{c}");
    // A real exporter is served afterwards.
    let exporter = support::exporter(&d.grpc_endpoint, "good", false);
    let trace = support::random_trace_id();
    let span = support::span_data(
        trace,
        support::base_time(),
        &support::spec(
            1,
            0,
            "GET /",
            opentelemetry::trace::SpanKind::Server,
            (0, 10),
        ),
    );
    opentelemetry_sdk::trace::SpanExporter::export(&exporter, vec![span])
        .await
        .expect("exported");
    d.wait_trace(trace, 1).await;
    d.stop().await;
}

/// Opens a request with a declared body of `declared` bytes, sends `sent` of
/// them and stalls.
async fn stalled_upload(endpoint: &str, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr(endpoint)).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // A refused upload may be closed on while still sending.
    let _ = s.write_all(&vec![b' '; sent]).await;
    s
}

/// Reads the status line of the answer on `stream`.
async fn status(stream: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_refused_and_cannot_hold_more_than_the_budget() {
    let d = support::start(Settings {
        body_read_timeout: Some("1s".parse().unwrap()),
        otlp_max_message_mib: Some(1),
        otlp_body_budget_mib: Some(1),
        ..Settings::default()
    })
    .await;
    // Each sends 300 KiB of a 1 MiB body and stalls: 2.4 MiB in all, over
    // twice the budget. Those over it are refused at once, the others when
    // their time is up; both retryably, each saying why.
    let mut uploads = Vec::new();
    for _ in 0..8 {
        uploads.push(stalled_upload(&d.http_endpoint, 1 << 20, 300 << 10).await);
    }
    let (mut over_budget, mut too_slow) = (0, 0);
    for s in &mut uploads {
        let answer = status(s).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("retry-after: 1"),
            "{answer}"
        );
        if answer.contains("otlp_body_budget_mib") {
            over_budget += 1;
        } else {
            assert!(answer.contains("body_read_timeout"), "{answer}");
            too_slow += 1;
        }
    }
    assert!(
        over_budget >= 4 && too_slow >= 1,
        "{over_budget} {too_slow}"
    );
    let c = counters(&d).await;
    assert_eq!(c["otlp_body_timeouts"], too_slow, "{c}");
    assert_eq!(c["otlp_body_budget_refused"], over_budget, "{c}");
    // The budget is whole again: a body of all of it is read (and, blank,
    // refused as undecodable), and an exporter is served.
    let mut whole = stalled_upload(&d.http_endpoint, 1 << 20, 1 << 20).await;
    let answer = status(&mut whole).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        post(&reqwest::Client::new(), &d.http_endpoint, 2).await,
        200
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slow_uploads_keep_memory_bounded_and_exporters_get_in() {
    let d = support::start(Settings {
        memory_limit_mib: Some(64),
        body_read_timeout: Some("1s".parse().unwrap()),
        otlp_body_budget_mib: Some(8),
        ..Settings::default()
    })
    .await;
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            << 10
    };
    let before = rss();
    // Each would hold 1 MiB of a 4 MiB body: 40 MiB, five times the budget.
    let mut uploads = Vec::new();
    for _ in 0..SLOW {
        uploads.push(stalled_upload(&d.http_endpoint, 4 << 20, 1 << 20).await);
    }
    let after = rss();
    let grown = after.saturating_sub(before);
    eprintln!(
        "{SLOW} stalled 4 MiB uploads: RSS {} MiB before, {} MiB with them held",
        before >> 20,
        after >> 20
    );
    assert!(grown < 64 << 20, "RSS grew {grown} bytes");
    // An exporter retrying as told gets in once the slow ones are cut off.
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        match post(&http, &d.http_endpoint, 3).await {
            200 => break,
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("answered {other}"),
        }
        assert!(started.elapsed() < Duration::from_secs(15), "never served");
    }
    let c = counters(&d).await;
    assert!(
        c["otlp_body_budget_refused"].as_u64().unwrap() >= (SLOW - 8) as u64,
        "{c}"
    );
    drop(uploads);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_at_its_deadline_with_clients_still_sending() {
    let d = support::start(Settings {
        shutdown_timeout: Some("1s".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    let mut upload = stalled_upload(&d.http_endpoint, 1 << 20, 1 << 10).await;
    let api = reqwest::Client::new();
    let (status, _) = support::api_get(&api, &d.api, "/healthz").await;
    assert_eq!(status, 200);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), d.stop())
        .await
        .expect("shutdown is bounded");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(closed_within(&mut upload, Duration::from_secs(1)).await);
}
