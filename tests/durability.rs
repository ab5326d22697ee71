//! The write-ahead log as a user meets it: the real `hopscope serve` binary is
//! killed with SIGKILL mid-stream and restarted on the same data directory;
//! every span it acknowledged is in its trace afterwards, and the findings and
//! aggregates are those of a run that was never interrupted. A torn tail and a
//! corrupt record are cut, and the rest of the log recovered.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use serde_json::Value;
use support::process::Daemon;
use support::{base_time, random_trace_id, span_data, spec};

/// A data directory of this test process, removed when dropped (also when
/// the test fails).
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    let dir =
        std::env::temp_dir().join(format!("hopscope-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir(dir)
}

/// One trace of three spans in one request. Every third is a cascading
/// timeout (the entry point and its call time out; inventory is the slow leaf).
fn trace(n: usize, base: SystemTime) -> (TraceId, Vec<SpanData>) {
    let id = random_trace_id();
    let cascade = n % 3 == 0;
    let (root, call, leaf) = if cascade {
        ((0, 1000), (5, 1000), (10, 3000))
    } else {
        ((0, 100), (5, 95), (10, 90))
    };
    let mut spans = vec![
        span_data(
            id,
            base,
            &spec(1, 0, "POST /checkout", SpanKind::Server, root),
        ),
        span_data(
            id,
            base,
            &spec(2, 1, "GET /inventory", SpanKind::Client, call),
        ),
        span_data(
            id,
            base,
            &spec(3, 2, "GET /inventory", SpanKind::Server, leaf),
        ),
    ];
    if cascade {
        spans[0].status = Status::error("Endpoint request timed out");
        spans[0]
            .attributes
            .push(KeyValue::new("http.response.status_code", 504));
        spans[1].status = Status::error("context deadline exceeded");
    }
    (id, spans)
}

/// Exports the traces one request each, `concurrency` at a time; returns the
/// ids whose export was acknowledged, in order. `stop` is called after each
/// acknowledgement with the count so far and may end the run.
async fn export(
    endpoint: &str,
    traces: &[(TraceId, Vec<SpanData>)],
    concurrency: usize,
    on_ack: impl Fn(usize) + Send + Sync + 'static,
) -> Vec<TraceId> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let traces = Arc::new(traces.to_vec());
    let on_ack = Arc::new(on_ack);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (acked, next, traces, on_ack) =
            (acked.clone(), next.clone(), traces.clone(), on_ack.clone());
        let exporter = support::exporter(endpoint, "shop", false);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((id, spans)) = traces.get(i) else {
                    return;
                };
                if exporter.export(spans.clone()).await.is_err() {
                    return;
                }
                let count = {
                    let mut acked = acked.lock().unwrap();
                    acked.push(*id);
                    acked.len()
                };
                on_ack(count);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

/// (kind, culprit service, culprit operation, count) of every finding.
async fn findings(d: &Daemon) -> Vec<(String, String, String, u64)> {
    let (_, body) = d.get("/api/v1/findings?limit=1000").await;
    let mut out: Vec<_> = body["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["culprit"]["service"].as_str().unwrap().to_owned(),
                f["culprit"]["operation"].as_str().unwrap().to_owned(),
                f["count"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Traces counted by the hop aggregates.
async fn aggregated(d: &Daemon) -> u64 {
    let (_, body) = d.get("/api/v1/hops?since=1h").await;
    body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["traces"].as_u64().unwrap())
        .sum()
}

/// Spans the coverage counts, over every service.
async fn covered(d: &Daemon) -> u64 {
    let (_, body) = d.get("/api/v1/coverage").await;
    body["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s["spans"].as_u64().unwrap())
        .sum()
}

async fn span_count(d: &Daemon, id: TraceId) -> Option<u64> {
    let (status, body) = d.get(&format!("/api/v1/traces/{id}")).await;
    (status == 200).then(|| body["span_count"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_span_survives_sigkill_and_the_findings_match_an_uninterrupted_run() {
    const TRACES: usize = 600;
    let base = base_time();
    let traces: Vec<_> = (0..TRACES).map(|n| trace(n, base)).collect();

    // The uninterrupted run.
    let reference = Daemon::start(None, &[]);
    let all = export(&reference.grpc, &traces, 4, |_| {}).await;
    assert_eq!(all.len(), TRACES);
    reference.settled().await;
    let expected_findings = findings(&reference).await;
    assert_eq!(
        expected_findings.iter().map(|f| f.3).sum::<u64>(),
        (TRACES as u64).div_ceil(3),
        "a cascade per third trace: {expected_findings:?}"
    );
    assert_eq!(aggregated(&reference).await, TRACES as u64);
    assert_eq!(covered(&reference).await, TRACES as u64 * 3);
    reference.kill();

    // A third is analyzed and checkpointed; then the daemon is killed
    // mid-stream, after half of the rest is acknowledged, with more in flight.
    let dir = temp_dir("kill");
    let daemon = Daemon::start(Some(&dir), &[]);
    let (early, late) = traces.split_at(TRACES / 3);
    let mut acked = export(&daemon.grpc, early, 4, |_| {}).await;
    daemon.settled().await;
    let checkpoints = |s: &Value| s["counters"]["checkpoints"].as_u64().unwrap();
    let before = checkpoints(&daemon.get("/api/v1/stats").await.1);
    daemon
        .wait_for("/api/v1/stats", |_, s| checkpoints(s) > before)
        .await;
    let pid = daemon.child.id();
    let killed = Arc::new(std::sync::Once::new());
    let half = late.len() / 2;
    acked.extend({
        let killed = killed.clone();
        export(&daemon.grpc, late, 4, move |count| {
            if count == half {
                killed.call_once(|| {
                    // SAFETY: signalling a child process this test started.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid as i32, libc::SIGKILL)
                    };
                });
            }
        })
        .await
    });
    daemon.kill();
    assert!(
        acked.len() >= early.len() + late.len() / 2 && acked.len() < TRACES,
        "{}",
        acked.len()
    );

    let daemon = Daemon::start(Some(&dir), &[]);
    daemon.settled().await;
    let (_, stats) = daemon.get("/api/v1/stats").await;
    assert!(
        stats["counters"]["wal_records_replayed"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let mut lost = Vec::new();
    for id in &acked {
        if span_count(&daemon, *id).await != Some(3) {
            lost.push(*id);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged traces lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    eprintln!(
        "SIGKILL after {} of {TRACES} traces were acknowledged ({} spans): all {} spans in their traces after the restart ({} spans replayed from the log)",
        acked.len(),
        acked.len() * 3,
        (acked.len() - lost.len()) * 3,
        stats["counters"]["wal_spans_replayed"]
    );

    // The exporters retry what was not acknowledged.
    let rest: Vec<_> = traces
        .iter()
        .filter(|(id, _)| !acked.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        export(&daemon.grpc, &rest, 4, |_| {}).await.len(),
        rest.len()
    );
    daemon.settled().await;
    assert_eq!(findings(&daemon).await, expected_findings);
    assert_eq!(
        aggregated(&daemon).await,
        TRACES as u64,
        "no trace counted twice or lost"
    );
    assert_eq!(
        covered(&daemon).await,
        TRACES as u64 * 3,
        "no span's coverage counted twice or lost"
    );
    daemon.kill();
}

/// The log's segments, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

/// Where each record's body starts in a segment.
fn record_bodies(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 8;
    while at + 9 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push(at + 9);
        at += 9 + len;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_and_a_corrupt_record_are_cut_and_the_rest_recovered() {
    let base = base_time();
    let dir = temp_dir("damage");
    let first: Vec<_> = (1..=20).map(|n| trace(n, base)).collect();
    let second: Vec<_> = (21..=40).map(|n| trace(n, base)).collect();

    // Two lives, one segment each (a restart starts a new segment).
    let d = Daemon::start(Some(&dir), &[]);
    assert_eq!(export(&d.grpc, &first, 1, |_| {}).await.len(), 20);
    d.kill();
    let d = Daemon::start(Some(&dir), &[]);
    assert_eq!(export(&d.grpc, &second, 1, |_| {}).await.len(), 20);
    d.kill();

    let segs = segments(&dir);
    assert_eq!(segs.len(), 2, "{segs:?}");
    // A bit flipped in the 11th record of the first segment...
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    let bodies = record_bodies(&bytes);
    assert_eq!(bodies.len(), 20);
    bytes[bodies[10] + 20] ^= 0x10;
    std::fs::write(&segs[0], &bytes).unwrap();
    // ...and half a record at the end of the second (a crash mid-write).
    let mut bytes = std::fs::read(&segs[1]).unwrap();
    let torn = bytes[8..8 + 20].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&segs[1], &bytes).unwrap();

    let d = Daemon::start(Some(&dir), &[]);
    d.settled().await;
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["counters"]["wal_segments_damaged"], 2, "{stats}");
    assert_eq!(stats["counters"]["wal_records_replayed"], 30, "{stats}");
    for (i, (id, _)) in first.iter().enumerate() {
        let expected = (i < 10).then_some(3);
        assert_eq!(
            span_count(&d, *id).await,
            expected,
            "trace {i} of the first segment"
        );
    }
    for (id, _) in &second {
        assert_eq!(span_count(&d, *id).await, Some(3));
    }
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_json_export_is_logged_as_received_and_replayed() {
    let dir = temp_dir("json");
    // Killed buffered or analyzed, the trace's segment stays while it is in
    // the store, so the restart replays it either way.
    let d = Daemon::start(Some(&dir), &[]);
    // The specification's example, moved to now: the daemon refuses spans
    // that ended longer ago than its aggregates keep.
    let start = support::base_ns();
    let body = include_str!("fixtures/otlp-json/trace.json")
        .replace("1544712660000000000", &start.to_string())
        .replace("1544712661000000000", &(start + 1_000_000_000).to_string());
    let answer = d
        .http
        .post(&d.otlp_http)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the receiver answers");
    assert_eq!(answer.status().as_u16(), 200);
    d.kill();

    let d = Daemon::start(Some(&dir), &[]);
    d.settled().await;
    let (status, trace) = d
        .get("/api/v1/traces/5b8efff798038103d269b633813fc60c")
        .await;
    assert_eq!(
        status, 200,
        "the acknowledged JSON export is recovered: {trace}"
    );
    assert_eq!(trace["span_count"], 1);
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(stats["counters"]["wal_records_replayed"], 1, "{stats}");
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_goes_once_its_traces_left_the_store_and_its_counts_stay() {
    let base = base_time();
    let dir = temp_dir("delete");
    let old: Vec<_> = (0..30).map(|n| trace(n, base)).collect();
    let new: Vec<_> = (30..60).map(|n| trace(n, base)).collect();
    let small_store = ["--store-max-traces", "10"];

    let d = Daemon::start(Some(&dir), &small_store);
    assert_eq!(export(&d.grpc, &old, 2, |_| {}).await.len(), 30);
    d.kill();
    let first_segment = segments(&dir)[0].clone();

    // The old traces are replayed, analyzed and counted; once the new ones
    // push them out of the store, their segment is deleted.
    let d = Daemon::start(Some(&dir), &small_store);
    d.settled().await;
    assert!(first_segment.exists(), "still shown: kept");
    assert_eq!(export(&d.grpc, &new, 2, |_| {}).await.len(), 30);
    d.settled().await;
    d.wait_for("/api/v1/stats", |_, s| {
        s["counters"]["wal_segments_deleted"].as_u64() >= Some(1)
    })
    .await;
    assert!(!first_segment.exists());
    assert_eq!(aggregated(&d).await, 60);
    assert_eq!(covered(&d).await, 180);
    d.kill();

    // History stays; what is replayed is not counted twice.
    let d = Daemon::start(Some(&dir), &small_store);
    d.settled().await;
    assert_eq!(aggregated(&d).await, 60);
    assert_eq!(covered(&d).await, 180, "coverage is in the state file");
    let cascades: u64 = findings(&d).await.iter().map(|f| f.3).sum();
    assert_eq!(cascades, 20);
    assert_eq!(
        span_count(&d, old[0].0).await,
        None,
        "left the store, and the log"
    );
    let mut shown = 0;
    for (id, _) in &new {
        shown += usize::from(span_count(&d, *id).await == Some(3));
    }
    assert_eq!(
        shown, 10,
        "the store's worth of the replayed traces is shown"
    );
    d.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_is_a_retryable_refusal_never_a_success() {
    let base = base_time();
    let dir = temp_dir("failure");
    let d = Daemon::start(Some(&dir), &["--wal-segment-mib", "1"]);
    // One request over a segment's size, so the next one starts a segment.
    let big: Vec<SpanData> = (0..4000)
        .flat_map(|n| {
            let (_, mut spans) = trace(n, base);
            for s in &mut spans {
                s.attributes.push(KeyValue::new("padding", "x".repeat(100)));
            }
            spans
        })
        .collect();
    let exporter = support::exporter(&d.grpc, "shop", false);
    exporter.export(big).await.expect("first request logged");

    // The log's directory is gone: the new segment cannot be created.
    std::fs::remove_dir_all(dir.join("wal")).unwrap();
    let (id, spans) = trace(1, base);
    assert!(exporter.export(spans.clone()).await.is_err(), "refused");
    let (_, stats) = d.get("/api/v1/stats").await;
    let refusals = stats["counters"]["wal_write_errors"].as_u64().unwrap();
    assert!(
        refusals >= 2,
        "the exporter retried (UNAVAILABLE is retryable) before giving up: {stats}"
    );

    // Once the disk is back, the retry is accepted and the spans arrive.
    std::fs::create_dir_all(dir.join("wal")).unwrap();
    exporter.export(spans).await.expect("retry logged");
    d.settled().await;
    assert_eq!(span_count(&d, id).await, Some(3));
    d.kill();
}
