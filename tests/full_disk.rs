//! A full disk end to end: the data directory is on a size-limited tmpfs
//! (mounted by the test, which needs root; under `CI=true` a failed mount
//! fails the test rather than skipping it). While a filler file takes the
//! last byte, every export is refused retryably (OTLP/HTTP 503 with
//! `Retry-After: 1`, OTLP/gRPC `UNAVAILABLE` with a `RetryInfo` of 1 s), the
//! API keeps answering and the refusals are counted; once the filler is
//! deleted the next export is accepted without a restart, and a restart on
//! the same directory replays every acknowledged span and nothing else.
//!
//! Under a file size limit (the binary run by `prlimit --fsize`), a write
//! past it fails with EFBIG instead of killing the process with SIGXFSZ: the
//! export is refused retryably, the next one goes to a new segment, and
//! every acknowledged span is there after a kill and a restart.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::trace::v1::Span;
use opentelemetry::trace::TraceId;
use prost::Message;
use support::process::Daemon;
use support::wire::{export, text};
use tonic::Code;
use tonic_types::StatusExt;

/// Spans per exported trace.
const SPANS: usize = 5;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one, or says why it cannot (not root, no `mount`).
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("hopscope-full-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a daemon stopped by a failed assertion may hold files.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Writes `path` until the filesystem has no byte left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = file.sync_all();
}

/// Trace `n`'s id.
fn trace_id(n: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[0] = 0xd1;
    id[15] = n;
    id
}

fn hex(id: [u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// One trace of `SPANS` spans: a root and its children, with 16 KiB of
/// attributes, so that its record needs pages of its own (tmpfs allocates
/// whole pages: a small record could still fit in the segment's last one).
fn request(n: u8) -> ExportTraceServiceRequest {
    let start = support::base_ns();
    let spans = (0..SPANS as u64)
        .map(|s| Span {
            trace_id: trace_id(n).to_vec().into(),
            span_id: (s + 1).to_be_bytes().to_vec().into(),
            parent_span_id: if s == 0 {
                Default::default()
            } else {
                1u64.to_be_bytes().to_vec().into()
            },
            name: format!("op-{s}"),
            kind: 2,
            start_time_unix_nano: start + s * 1_000,
            end_time_unix_nano: start + 10_000_000 - s * 1_000,
            attributes: vec![text("payload", format!("{s}{}", "x".repeat(3 << 10)))],
            ..Default::default()
        })
        .collect();
    export("disk", spans)
}

/// One OTLP/HTTP export: the status and the `Retry-After` header.
async fn http_export(endpoint: &str, n: u8) -> (u16, Option<String>) {
    let answer = reqwest::Client::new()
        .post(format!("{endpoint}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request(n).encode_to_vec())
        .send()
        .await
        .expect("the receiver answers");
    let retry = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (answer.status().as_u16(), retry)
}

/// One OTLP/gRPC export.
async fn grpc_export(endpoint: &str, n: u8) -> Result<(), tonic::Status> {
    let mut client = TraceServiceClient::connect(endpoint.to_owned())
        .await
        .expect("connects");
    client.export(request(n)).await.map(|_| ())
}

fn settings(data: &Path) -> Settings {
    Settings {
        data_dir: Some(data.to_owned()),
        wal_sync: Some("always".parse().unwrap()),
        ..Settings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "CI=true makes a missing tmpfs a failure, not a skip"
)]
async fn a_full_disk_refuses_exports_retryably_and_recovers_without_a_restart() {
    let tmpfs = match Tmpfs::mount("4m") {
        Ok(t) => t,
        Err(why) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot mount a tmpfs (run as root): {why}");
            return;
        }
        Err(why) => panic!("cannot mount a tmpfs under CI=true: {why}"),
    };
    let data = tmpfs.0.join("data");
    let filler = tmpfs.0.join("filler");

    let d = support::start(settings(&data)).await;
    assert_eq!(http_export(&d.http_endpoint, 1).await.0, 200);
    grpc_export(&d.grpc_endpoint, 2).await.expect("accepted");

    fill(&filler);
    for n in 3..6 {
        let (status, retry) = http_export(&d.http_endpoint, n).await;
        assert_eq!(status, 503, "a full disk is a retryable refusal");
        assert_eq!(retry.as_deref(), Some("1"), "with Retry-After");
        let refused = grpc_export(&d.grpc_endpoint, n).await.expect_err("refused");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let retry = refused.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_secs(1)), "{refused:?}");
    }
    // The API still serves, and says what happened.
    let (status, stats) = d.get("/api/v1/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["counters"]["wal_write_errors"], 6, "{stats}");
    d.wait_trace(TraceId::from_bytes(trace_id(1)), SPANS).await;

    // Space returns: the next export is taken, no restart.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(http_export(&d.http_endpoint, 3).await.0, 200);
    grpc_export(&d.grpc_endpoint, 4)
        .await
        .expect("accepted once the disk has room");
    for n in [1, 2, 3, 4] {
        d.wait_trace(TraceId::from_bytes(trace_id(n)), SPANS).await;
    }
    d.stop().await;

    // Every acknowledged span is in the log, and nothing refused is.
    let d = support::start(settings(&data)).await;
    for n in [1, 2, 3, 4] {
        d.wait_trace(TraceId::from_bytes(trace_id(n)), SPANS).await;
    }
    let (status, _) = d.get(&format!("/api/v1/traces/{}", hex(trace_id(5)))).await;
    assert_eq!(status, 404, "a refused export was never stored");
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(
        stats["counters"]["wal_spans_replayed"],
        4 * SPANS,
        "{stats}"
    );
    assert_eq!(stats["counters"]["wal_segments_damaged"], 0, "{stats}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_refuses_exports_retryably_and_does_not_kill_the_daemon() {
    let dir = std::env::temp_dir().join(format!("hopscope-fsize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // About 16 KiB a request: a 128 KiB file takes seven or so.
    let limit = ["prlimit", "--fsize=131072", "--"];
    let mut d = Daemon::start_under(&limit, Some(&dir), &[]);
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for n in 1..=30 {
        match http_export(&d.otlp_http.replace("/v1/traces", ""), n).await {
            (200, _) => accepted.push(n),
            (status, retry) => {
                assert_eq!(status, 503, "a write past the limit is a retryable refusal");
                assert_eq!(retry.as_deref(), Some("1"));
                refused += 1;
            }
        }
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "SIGXFSZ did not kill it"
    );
    assert!(refused >= 2, "the limit was reached: {refused} refused");
    assert!(
        accepted.len() >= 20,
        "new segments take exports: {accepted:?}"
    );
    d.kill();

    let d = Daemon::start(Some(&dir), &[]);
    for n in &accepted {
        let path = format!("/api/v1/traces/{}", hex(trace_id(*n)));
        d.wait_for(&path, |status, body| {
            status == 200 && body["span_count"] == SPANS
        })
        .await;
    }
    let (_, stats) = d.get("/api/v1/stats").await;
    assert_eq!(
        stats["counters"]["wal_spans_replayed"],
        accepted.len() * SPANS,
        "{stats}"
    );
    assert_eq!(stats["counters"]["wal_segments_damaged"], 0, "{stats}");
    d.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
