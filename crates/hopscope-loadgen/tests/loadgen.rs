//! `hopscope-loadgen` against a daemon on ephemeral ports: every span sent is
//! acknowledged, counted and analyzed in traces of the generated shape; waiting
//! for analysis, the ratio to raw decoding and API latency probes; OTLP/HTTP
//! against a stand-in receiver that refuses once; the binary's flags; the soak
//! test against the daemon it starts, passing and failing.

#[path = "../../../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hopscope::config::Settings;
use hopscope::ingest::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use hopscope_loadgen::{
    self as loadgen, AnalysisWait, LoadgenError, Options, Problem, Protocol, Shape, Until,
};
use prost::Message;

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopscope-loadgen"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_sent_over_grpc_is_acknowledged_counted_and_analyzed() {
    let daemon = support::start(Settings::default()).await;
    let shape = Shape {
        error_fraction: 0.2,
        ..Shape::default()
    };
    let spans_per_trace = shape.spans_per_trace();
    let mut total = 0;
    for gzip in [false, true] {
        let opts = Options {
            endpoint: daemon.grpc_endpoint.clone(),
            connections: 2,
            until: Until::Spans(20_000),
            gzip,
            shape: shape.clone(),
            seed: u64::from(gzip),
            daemon_pid: Some(std::process::id()),
            api: Some(daemon.api.clone()),
            ..Options::default()
        };
        let mut ticks = 0;
        let report = loadgen::run(&opts, |_| ticks += 1).await.expect("run");
        assert!(
            (20_000..20_000 + report.spans_per_request).contains(&report.sent),
            "{report}"
        );
        assert_eq!(report.sent % spans_per_trace as u64, 0);
        assert_eq!(report.accepted, report.sent, "{report}");
        assert_eq!((report.refused, report.retries, report.given_up), (0, 0, 0));
        assert!(report.failures.is_empty(), "{report}");
        assert_eq!(report.daemon_accepted, Some(report.sent), "{report}");
        assert!(report.problems(false).is_empty());
        let latency = report.latency.expect("latencies");
        assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
        let usage = report.daemon.as_ref().expect("daemon usage");
        assert!(usage.peak_rss_kib >= usage.rss_kib && usage.rss_kib > 0);
        let text = report.to_string();
        assert!(text.contains("accepted") && text.contains("p99"), "{text}");
        total += report.sent;
    }

    let stats = daemon
        .wait_for("/api/v1/stats", |status, body| {
            status == 200 && body["buffered_spans"] == 0 && body["analysis_pending"] == 0
        })
        .await;
    assert_eq!(stats["counters"]["spans_accepted"], total);
    assert_eq!(stats["counters"]["spans_rejected"], 0);
    assert_eq!(stats["stored_traces"], total / spans_per_trace as u64);

    let list = daemon.get("/api/v1/traces?limit=1000").await.1;
    let traces = list["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), 1000);
    for t in traces {
        assert_eq!(t["span_count"], spans_per_trace, "{t}");
        assert_eq!(t["entry"]["service"], "frontend", "{t}");
    }
    let errors: Vec<_> = traces.iter().filter(|t| t["error"] == true).collect();
    assert!(
        (100..400).contains(&errors.len()),
        "{} of 1000 traces failed, expected about 200",
        errors.len()
    );
    // A timed-out trace waited for the 1 s deadline of its deepest call.
    assert!(errors
        .iter()
        .all(|t| t["duration_ms"].as_f64().unwrap() >= 1000.0));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_analysis_gives_the_ratio_to_raw_decode_and_probes_measure_the_api() {
    let daemon = support::start(Settings::default()).await;
    let bad_path = "/api/v1/traces/not-a-trace-id";
    let opts = Options {
        endpoint: daemon.grpc_endpoint.clone(),
        connections: 2,
        until: Until::Spans(20_000),
        rate: Some(40_000.0),
        // The in-process daemon's pid is this test's: acceptable for a test.
        daemon_pid: Some(std::process::id()),
        api: Some(daemon.api.clone()),
        decode_baseline: Some(Duration::from_millis(200)),
        wait_analysis: Some(Duration::from_secs(30)),
        probe_api: vec!["/api/v1/hops".into(), bad_path.into()],
        probe_interval: Duration::from_millis(20),
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).await.expect("run");
    assert_eq!(report.accepted, report.sent, "{report}");

    let [hops, bad] = &report.api_latency[..] else {
        panic!("two probes expected: {report}");
    };
    assert_eq!(hops.path, "/api/v1/hops");
    assert!(hops.requests > 0, "{report}");
    assert_eq!((hops.non_2xx, hops.failed), (0, 0), "{report}");
    let latency = hops.latency.expect("answered probes");
    assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    assert_eq!(bad.non_2xx, bad.requests, "{report}");
    assert!(bad.requests > 0 && bad.failed == 0, "{report}");
    assert_eq!(
        report.problems(false),
        vec![Problem::ApiErrors {
            path: bad_path.into(),
            non_2xx: bad.non_2xx,
            failed: 0
        }]
    );

    let Some(AnalysisWait::Done {
        waited,
        daemon: usage,
    }) = &report.analysis
    else {
        panic!("analysis did not complete: {report}");
    };
    let stats = daemon.get("/api/v1/stats").await.1;
    assert_eq!(stats["buffered_spans"], 0, "{stats}");
    assert!(
        matches!(stats["analysis_pending"].as_u64(), None | Some(0)),
        "{stats}"
    );
    assert_eq!(stats["counters"]["spans_accepted"], report.sent, "{stats}");
    assert!(*waited < Duration::from_secs(30));
    let sending = report.daemon.as_ref().expect("daemon usage");
    assert!(usage.cpu_seconds >= sending.cpu_seconds, "{report}");

    let decode = report.decode.as_ref().expect("decode baseline");
    assert!(decode.elapsed >= Duration::from_millis(200), "{report}");
    assert!(decode.spans_per_sec().is_finite() && decode.spans_per_sec() > 0.0);
    let ratio = report.ratio_to_raw_decode().expect("a ratio");
    assert!(ratio.includes_analysis, "{report}");
    assert!(ratio.value.is_finite() && ratio.value > 0.0, "{report}");
    let per_cpu = report
        .spans_per_daemon_cpu_second_with_analysis()
        .expect("spans per CPU second");
    assert!((ratio.value - per_cpu / decode.spans_per_sec()).abs() < 1e-9);

    let text = report.to_string();
    for line in [
        "API latency         GET /api/v1/hops: ",
        "daemon + analysis",
        "raw prost decode",
        "ratio to raw decode",
        "incl. analysis",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_analysis_that_runs_out_is_a_problem_and_the_ratio_is_ingest_only() {
    let daemon = support::start(Settings {
        trace_idle: Some("1h".parse().unwrap()),
        trace_max_age: Some("1h".parse().unwrap()),
        ..Settings::default()
    })
    .await;
    let opts = Options {
        endpoint: daemon.grpc_endpoint.clone(),
        connections: 1,
        until: Until::Spans(2_000),
        daemon_pid: Some(std::process::id()),
        api: Some(daemon.api.clone()),
        decode_baseline: Some(Duration::from_millis(50)),
        wait_analysis: Some(Duration::from_millis(300)),
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).await.expect("run");
    let Some(AnalysisWait::TimedOut {
        buffered_spans,
        analysis_pending,
        ..
    }) = report.analysis
    else {
        panic!("the traces cannot have been analyzed: {report}");
    };
    assert_eq!((buffered_spans, analysis_pending), (report.sent, 0));
    assert!(matches!(
        report.problems(false)[..],
        [Problem::AnalysisTimedOut { buffered_spans: n, .. }] if n == report.sent
    ));
    assert_eq!(report.spans_per_daemon_cpu_second_with_analysis(), None);
    if let Some(ratio) = report.ratio_to_raw_decode() {
        assert!(!ratio.includes_analysis);
        assert!(report.to_string().contains("ingest only"), "{report}");
    }
    assert!(report.to_string().contains("GAVE UP"), "{report}");
    daemon.stop().await;
}

#[tokio::test]
async fn waiting_and_probing_need_the_api() {
    let base = Options {
        until: Until::Spans(1),
        ..Options::default()
    };
    for opts in [
        Options {
            wait_analysis: Some(Duration::from_secs(1)),
            daemon_pid: Some(1),
            ..base.clone()
        },
        Options {
            wait_analysis: Some(Duration::from_secs(1)),
            api: Some("http://127.0.0.1:9".into()),
            ..base.clone()
        },
        Options {
            probe_api: vec!["/api/v1/hops".into()],
            ..base.clone()
        },
        Options {
            probe_api: vec!["api/v1/hops".into()],
            api: Some("http://127.0.0.1:9".into()),
            ..base.clone()
        },
        Options {
            probe_api: vec!["/api/v1/hops".into()],
            api: Some("http://127.0.0.1:9".into()),
            probe_interval: Duration::ZERO,
            ..base.clone()
        },
    ] {
        let err = loadgen::run(&opts, |_| {}).await.unwrap_err();
        assert!(matches!(err, LoadgenError::Invalid(_)), "{err}");
    }
}

/// A stand-in OTLP/HTTP receiver: refuses the first request with 503, then
/// counts the spans of the protobuf bodies it is posted.
#[derive(Default)]
struct Receiver {
    requests: AtomicU64,
    spans: AtomicU64,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the stand-in receiver inflates the load generator's own small exports"
)]
async fn receive(
    State(rx): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-protobuf");
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw).unwrap();
    let request = ExportTraceServiceRequest::decode(&raw[..]).expect("valid protobuf");
    if rx.requests.fetch_add(1, Ordering::SeqCst) == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, Vec::new());
    }
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum();
    rx.spans.fetch_add(spans, Ordering::SeqCst);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_posts_gzipped_protobuf_and_retries_a_refusal() {
    let rx = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let opts = Options {
        endpoint: format!("http://{addr}"),
        protocol: Protocol::Http,
        connections: 2,
        until: Until::Spans(5_000),
        gzip: true,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).await.expect("run");
    assert_eq!(report.accepted, report.sent, "{report}");
    assert_eq!(rx.spans.load(Ordering::SeqCst), report.sent);
    assert_eq!(report.refused, report.spans_per_request, "{report}");
    assert_eq!((report.retries, report.given_up), (1, 0));
    assert_eq!(report.failures.get("HTTP 503"), Some(&1));
    assert_eq!(
        report.problems(false),
        vec![Problem::Refused {
            spans: report.spans_per_request,
            given_up: 0
        }]
    );
    assert!(report.problems(true).is_empty());
}

#[tokio::test]
async fn a_receiver_that_is_not_there_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let opts = Options {
            endpoint: format!("http://{addr}"),
            protocol,
            until: Until::Spans(1),
            ..Options::default()
        };
        let err = loadgen::run(&opts, |_| {}).await.unwrap_err();
        assert!(matches!(err, LoadgenError::Connect { .. }), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_and_exits_zero_when_nothing_is_refused() {
    let daemon = support::start(Settings::default()).await;
    let args = [
        "--endpoint",
        &daemon.grpc_endpoint,
        "--api",
        &daemon.api,
        "--daemon-pid",
        &std::process::id().to_string(),
        "--spans",
        "3000",
        "--connections",
        "2",
        "--rate",
        "20000",
        "--wait-analysis",
        "--wait-timeout",
        "30s",
        "--decode-baseline",
        "100ms",
        "--probe-api",
        "/api/v1/hops?since=5m",
    ]
    .map(String::from);
    let out = tokio::task::spawn_blocking(move || binary().args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "accepted",
        "refused",
        "export latency",
        "CPU s",
        "peak RSS",
        "spans_accepted grew by",
        "API latency         GET /api/v1/hops?since=5m: ",
        "daemon + analysis",
        "raw prost decode",
        "ratio to raw decode",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
    daemon.stop().await;

    // Nothing listens any more: a readable error and a failing exit code.
    let out = binary()
        .args(["--endpoint", "http://127.0.0.1:9", "--spans", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect to http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn help_documents_every_flag() {
    let out = binary().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--endpoint",
        "--protocol",
        "--connections",
        "--batch",
        "--rate",
        "--duration",
        "--spans",
        "--gzip",
        "--services",
        "--depth",
        "--fan-out",
        "--error-fraction",
        "--slow-db-fraction",
        "--seed",
        "--retries",
        "--daemon-pid",
        "--api",
        "--wait-analysis",
        "--wait-timeout",
        "--decode-baseline",
        "--probe-api",
        "--probe-interval",
        "--allow-refused",
        "--quiet",
        "--instances",
        "--soak",
        "--report-every",
        "--warm-up",
        "--capacity-for",
        "--memory-limit-mib",
        "--out",
        "--daemon",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for default in ["default: 512", "default: 60s", "default: 50ms"] {
        assert!(help.contains(default), "{default} missing from:\n{help}");
    }
    for needs_api in [
        &["--wait-analysis", "--daemon-pid", "1"][..],
        &["--wait-analysis", "--api", "http://127.0.0.1:9"],
        &["--probe-api", "/api/v1/hops"],
    ] {
        let out = binary()
            .args(["--spans", "1"])
            .args(needs_api)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{needs_api:?} should be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("required"), "{err}");
    }

    let out = binary()
        .args(["--spans", "10", "--duration", "5s"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--spans and --duration conflict");

    // A soak starts its own daemon; its flags need --soak.
    for conflict in [
        &["--soak", "--endpoint", "http://127.0.0.1:9"][..],
        &["--soak", "--spans", "10"],
        &["--out", "rows.csv"],
    ] {
        let out = binary().args(conflict).output().unwrap();
        assert!(!out.status.success(), "{conflict:?} should be refused");
    }
    let out = binary()
        .args(["--soak", "--duration", "60s", "--warm-up", "60s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must leave at least one report interval"),
        "{err}"
    );
}

/// Runs `hopscope-loadgen --soak` with `args` and CSV rows to a file: its
/// success, stdout and the CSV. The daemon is its default, the `hopscope`
/// binary beside it, which `cargo test --workspace` builds.
async fn soak(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("rows.csv");
    let mut command = binary();
    command
        .args(["--soak", "--connections", "2", "--out"])
        .arg(&csv)
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let rows = std::fs::read_to_string(&csv).unwrap_or_default();
    (out.status.success(), stdout, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_at_a_steady_rate_passes_and_reports_every_interval() {
    // Shorter than the daemon's 10 s trace idle: nothing is analyzed yet, so
    // the trace store is as full as it gets from the first row on.
    let (passed, stdout, csv) = soak(&[
        "--rate",
        "1000",
        "--duration",
        "8s",
        "--report-every",
        "2s",
        "--warm-up",
        "4s",
    ])
    .await;
    assert!(passed, "{stdout}");
    assert!(stdout.contains("soak: 1000 spans/s for 8 s, a row every 2 s, warm-up 2 row(s)"));
    assert!(
        stdout.contains("| minute | RSS MiB | buffered spans |"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: passed"), "{stdout}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(loadgen::Row::CSV_HEADER));
    let rows: Vec<Vec<f64>> = lines
        .map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for (i, row) in rows.iter().enumerate() {
        assert!((row[0] * 60.0 - 2.0 * (i + 1) as f64).abs() < 1.0, "{csv}");
        // The daemon's RSS, names, stored traces, the log on disk, the
        // acknowledged rate, both p99s; nothing dropped.
        assert!(row[1] > 1.0 && row[3] > 0.0 && row[5] > 0.0, "{csv}");
        assert!((500.0..1500.0).contains(&row[6]), "{csv}");
        assert!(row[7] > 0.0 && row[8] > 0.0, "{csv}");
        assert_eq!((row[9], row[10]), (0.0, 0.0), "{csv}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_fails_when_the_daemon_refuses_spans_or_outgrows_its_memory_limit() {
    // A 1 MiB budget: the daemon refuses exports (retryably) and its RSS is
    // over the limit from the start.
    let (passed, stdout, csv) = soak(&[
        "--rate",
        "2000",
        "--duration",
        "4s",
        "--report-every",
        "2s",
        "--memory-limit-mib",
        "1",
        "--retries",
        "0",
    ])
    .await;
    assert!(!passed, "{stdout}");
    assert!(stdout.contains("verdict: FAILED"), "{stdout}");
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let last: Vec<&str> = csv.lines().last().unwrap().split(',').collect();
    assert_ne!(last[10], "0", "dropped + refused: {csv}");
}

#[test]
fn a_soak_without_its_daemon_says_where_it_looked_and_how_to_name_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("hopscope");
    let out = binary()
        .args([
            "--soak",
            "--duration",
            "2s",
            "--report-every",
            "1s",
            "--daemon",
        ])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no hopscope binary at {}", missing.display())),
        "{err}"
    );
    assert!(err.contains("--daemon PATH"), "{err}");

    let help = binary().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("`hopscope` next to this binary"), "{help}");
}
