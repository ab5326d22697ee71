//! `hopscope analyze` as a user runs it: the real binary on public trace
//! files (tests/fixtures/), in every format it reads, from files and stdin.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hopscope::ingest::otlp::collector::trace::v1::ExportTraceServiceRequest;
use hopscope::ingest::otlp::common::v1::{any_value, AnyValue, KeyValue};
use hopscope::ingest::otlp::resource::v1::Resource;
use hopscope::ingest::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

const HOTROD: &str = "tests/fixtures/hotrod/opensearch-dashboards-observability/jaeger-api-json";
const SKEW: &str = "tests/fixtures/zipkin/skew.json";
const JSON_LINES: &str =
    "tests/fixtures/otlp-json/jaeger-ui-otlp2jaeger/otlp2jaeger-multi-in.json.txt";

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .arg("analyze")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hopscope runs")
}

/// Stdout of a run that must succeed.
fn report(args: &[&str]) -> String {
    let out = analyze(args);
    assert!(
        out.status.success(),
        "hopscope analyze {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 report")
}

/// The report's section of each trace, by trace id (as printed).
fn sections(report: &str) -> Vec<(String, String)> {
    report
        .split("\ntrace ")
        .map(|s| s.strip_prefix("trace ").unwrap_or(s))
        .filter(|s| s.len() > 32 && s.as_bytes()[..32].iter().all(u8::is_ascii_hexdigit))
        .map(|s| (s[..32].to_owned(), s.to_owned()))
        .collect()
}

/// A directory of its own for a test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopscope-analyze-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn hotrod_files() -> Vec<String> {
    let mut files: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(HOTROD))
            .expect("HotROD fixtures")
            .map(|e| {
                format!(
                    "{HOTROD}/{}",
                    e.expect("entry").file_name().to_string_lossy()
                )
            })
            .collect();
    files.sort();
    files
}

#[test]
fn hotrod_traces_show_the_mysql_lock_queue_and_the_redis_timeouts_with_retries() {
    let files = hotrod_files();
    assert_eq!(files.len(), 8);
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    let out = report(&args);
    let traces = sections(&out);
    assert_eq!(traces.len(), 8, "{out}");
    // Seven complete /dispatch traces; one lost its customer and driver subtrees.
    let complete: Vec<&(String, String)> = traces
        .iter()
        .filter(|(id, _)| !id.ends_with("67ff600cc7c84a67"))
        .collect();
    assert_eq!(complete.len(), 7);
    for (id, text) in &complete {
        assert!(
            text.starts_with(&format!("{id}  frontend  HTTP GET /dispatch")),
            "{text}"
        );
        // The mysql query is the hop the request waited on longest...
        let top = text
            .split("top hops by share of the request:\n")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default();
        assert!(top.ends_with("mysql  SQL SELECT"), "{id}: top hop {top:?}");
        let share: f64 = top.trim().split(' ').next().unwrap().parse().unwrap();
        assert!(share > 30.0, "{id}: mysql's share {share} %");
        // ...and on the waterfall it holds the critical path from its start to its end.
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("mysql  SQL SELECT"))
            .expect("the mysql span on the critical path");
        assert!(row.contains("████████████"), "{row}");
        // Redis timed out (two or three times) and each time the driver asked again.
        let timeouts = text
            .lines()
            .find(|l| l.contains("redis  GetDriver (redis timeout)"))
            .unwrap_or_else(|| panic!("{id}: no redis timeouts in\n{text}"));
        assert!(timeouts.ends_with("each retried"), "{timeouts}");
        let n: u32 = timeouts.trim().split(' ').next().unwrap().parse().unwrap();
        assert!((2..=3).contains(&n), "{timeouts}");
        assert!(
            text.contains(" · ok, "),
            "{id}: the request itself succeeded"
        );
    }
    // The two requests that queued behind another's transaction say so on the span
    // that held their critical path longest.
    let queued: Vec<&str> = complete
        .iter()
        .filter(|(_, text)| {
            text.lines().any(|l| {
                l.trim_start().starts_with("mysql  SQL SELECT (")
                    && l.contains("Waiting for lock behind 1 transactions")
            })
        })
        .map(|(id, _)| &id[16..])
        .collect();
    assert_eq!(queued, ["4675486d2742b7da", "516bb55b76860a26"]);
    // The incomplete trace: its root waited on children that never arrived.
    let (_, partial) = traces
        .iter()
        .find(|(id, _)| id.ends_with("67ff600cc7c84a67"))
        .unwrap();
    assert!(!partial.contains("mysql"), "{partial}");
    for file in &files {
        assert!(
            out.contains(&format!("read {file} (Jaeger JSON): 1 record(s)")),
            "{out}"
        );
    }
    assert!(out.contains("8 trace(s) analyzed"));
}

#[test]
fn zipkin_clock_skew_is_adjusted_and_said() {
    let out = report(&[SKEW]);
    let traces = sections(&out);
    assert_eq!(traces.len(), 1, "{out}");
    let text = &traces[0].1;
    assert!(
        text.contains("00000000000000001e223ff1f80f1c69  servicea  get"),
        "{text}"
    );
    // The shared span's server half is servicea's child, shifted into its client span.
    let warning = text
        .lines()
        .find(|l| l.contains("[clock_skew]"))
        .unwrap_or_else(|| panic!("no skew warning in\n{text}"));
    assert!(
        warning.contains("(serviceb)") && warning.contains("(servicea)"),
        "{warning}"
    );
    assert!(warning.contains("shifted by +65.922 ms"), "{warning}");
    assert!(
        text.contains("servicea → serviceb  post (network)"),
        "{text}"
    );

    let json: Value = serde_json::from_str(&report(&["--format", "json", SKEW])).expect("JSON");
    let spans = json["traces"][0]["spans"].as_array().expect("spans");
    let shifted: Vec<&Value> = spans
        .iter()
        .filter(|s| s["skew_adjustment_ms"].as_f64().is_some_and(|ms| ms > 65.0))
        .collect();
    // The server span and the span under it move together.
    assert_eq!(shifted.len(), 2, "{spans:?}");
    assert!(shifted.iter().all(|s| s["service"] == "serviceb"));
}

/// One OTLP request with spans of the JSON Lines fixture's trace, built with
/// the generated protobuf types.
fn protobuf_request(spans: &[(u8, Option<u8>, &str, u64, u64)]) -> ExportTraceServiceRequest {
    let trace_id: Vec<u8> = (1..=16).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .map(|&(id, parent, name, start_ms, end_ms)| Span {
                        trace_id: trace_id.clone().into(),
                        span_id: vec![0, 0, 0, 0, 0, 0, 0, id].into(),
                        parent_span_id: parent
                            .map(|p| vec![0, 0, 0, 0, 0, 0, 0, p].into())
                            .unwrap_or_default(),
                        name: name.into(),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
                        end_time_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn formats_are_detected_from_the_content_not_the_name() {
    let dir = scratch("formats");
    let first = protobuf_request(&[
        (1, None, "GET /cart", 0, 100),
        (2, Some(1), "load cart", 10, 90),
    ]);
    let second = protobuf_request(&[(3, Some(1), "price cart", 90, 99)]);
    let single = dir.join("request.json");
    std::fs::write(&single, first.encode_to_vec()).unwrap();
    // The Collector's file exporter: each request behind its 4-byte length.
    let stream = dir.join("export.txt");
    let mut bytes = Vec::new();
    for r in [&first, &second] {
        let body = r.encode_to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
    }
    std::fs::write(&stream, bytes).unwrap();
    let zipkin_named_otlp = dir.join("trace.otlp.pb");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SKEW),
        &zipkin_named_otlp,
    )
    .unwrap();
    let jaeger_named_zipkin = dir.join("zipkin.json");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{HOTROD}/15b0b4004a651c4c.json")),
        &jaeger_named_zipkin,
    )
    .unwrap();
    let cases: [(&Path, &str, &str); 6] = [
        (&single, "OTLP protobuf", "1 record(s), 2 spans"),
        (&stream, "OTLP protobuf", "2 record(s), 3 spans"),
        (
            Path::new("tests/fixtures/otlp-json/trace.json"),
            "OTLP/JSON",
            "1 record(s), 1 spans",
        ),
        (Path::new(JSON_LINES), "OTLP/JSON", "4 record(s), 4 spans"),
        (&zipkin_named_otlp, "Zipkin v2 JSON", "1 record(s), 4 spans"),
        (&jaeger_named_zipkin, "Jaeger JSON", "1 record(s), 50 spans"),
    ];
    for (path, format, counts) in cases {
        let name = path.to_str().unwrap();
        let out = report(&[name]);
        assert!(
            out.contains(&format!("read {name} ({format}): {counts}\n")),
            "{name}:\n{out}"
        );
        assert!(out.contains("1 trace(s) analyzed"), "{name}:\n{out}");
    }
    // The stream's two requests are one trace.
    let out = report(&[stream.to_str().unwrap()]);
    assert!(
        out.contains("checkout  GET /cart\n  100.00 ms · 3 spans"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stdin_is_read_for_a_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .args(["analyze", "-"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hopscope runs");
    let lines = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(JSON_LINES)).unwrap();
    child.stdin.take().unwrap().write_all(&lines).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.contains("read <stdin> (OTLP/JSON): 4 record(s), 4 spans"),
        "{out}"
    );
    assert!(
        out.contains("c620759e5d60fafb8ee0922b30e06bc6  example-trace  main"),
        "{out}"
    );
}

#[test]
fn a_trace_spread_over_several_files_is_one_trace_even_past_the_span_limit() {
    let dir = scratch("spread");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(JSON_LINES)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    std::fs::write(&a, lines[..2].join("\n")).unwrap();
    std::fs::write(&b, lines[2..].join("\n")).unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let out = report(&[a, b]);
    assert!(
        out.contains("example-trace  main\n  176.32 ms · 4 spans"),
        "{out}"
    );
    assert!(out.contains("1 trace(s) analyzed"), "{out}");
    assert!(!out.contains("late_spans"), "{out}");

    // With room for one span only, the first file's part is analyzed early and
    // the rest merged into it: the same trace, analyzed again, and said so.
    let out = report(&["--max-buffered-spans", "1", a, b]);
    let traces = sections(&out);
    let last = &traces.last().expect("a trace").1;
    assert!(
        last.contains("example-trace  main\n  176.32 ms · 4 spans"),
        "{out}"
    );
    assert!(last.contains("[late_spans]"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_output_has_the_api_shapes_and_a_slow_first_endpoint_is_no_cold_start() {
    let file = "tests/fixtures/zipkin/smartthings-mobile-web-install.json";
    let json: Value =
        serde_json::from_str(&report(&["--format", "json", file])).expect("one JSON document");
    let traces = json["traces"].as_array().expect("traces");
    assert_eq!(traces.len(), 1);
    let trace = &traces[0];
    // GET /api/v1/traces/{id}'s shape: shares of the hops sum to 1.
    let shares: f64 = trace["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    assert!(trace["critical_path"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    assert_eq!(json["inputs"][0]["format"], "zipkin");
    assert_eq!(
        json["inputs"][0]["rejected"], 84,
        "spans without a timestamp"
    );
    // GET /api/v1/hops' shape, per entry point.
    assert!(json["entries"][0]["hops"]
        .as_array()
        .is_some_and(|h| !h.is_empty()));
    // platformapi's new instances begin with `put installedapps/{id}/configs`,
    // which takes 140-270 ms on every instance (its `get devices` take 50):
    // the slow endpoint, not a cold start. What the trace does show are its
    // loops: stLogin fetching 52 devices from platformapi one call each, up
    // to 32 at once and off the critical path, and auth's six Cassandra
    // selects by id, one after another (6 ms): information, with their cost.
    let findings: Vec<(&str, &str, &str, &str)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                f["culprit"]["service"].as_str().unwrap(),
                f["culprit"]["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        findings,
        [
            ("n_plus_one", "info", "auth", "client-select-by-id"),
            ("n_plus_one", "info", "stLogin", "get devices/_deviceid_/"),
        ],
        "{json}"
    );
    let devices = &json["findings"][1]["evidence"];
    assert_eq!(
        (
            devices["calls"].as_u64(),
            devices["peak_in_flight"].as_u64()
        ),
        (Some(52), Some(32))
    );
    assert!(devices["critical_ms"].as_f64().unwrap() < 1.0, "{devices}");
}

/// A finding in the JSON and text reports, and `--health-routes` as the
/// daemon's setting: the routes it names replace the defaults.
#[test]
fn findings_carry_their_remedy_and_health_routes_are_configurable() {
    let dir = scratch("health");
    let file = dir.join("probes.pb");
    let probes = protobuf_request(&[
        (1, None, "GET /internal/up", 0, 900),
        (2, Some(1), "GET /healthz", 10, 810),
    ]);
    std::fs::write(&file, probes.encode_to_vec()).unwrap();
    let file = file.to_str().unwrap();
    let slow_checks = |args: &[&str]| -> Vec<Value> {
        let json: Value = serde_json::from_str(&report(args)).expect("one JSON document");
        let findings = json["findings"].as_array().expect("findings").clone();
        for f in &findings {
            assert_eq!(f["kind"], "slow_health_check", "{f}");
            assert!(f["remedy"].as_str().is_some_and(|r| !r.is_empty()));
            assert!(f["id"].as_str().is_some_and(|id| id.len() == 16));
        }
        findings
    };
    let default = slow_checks(&["--format", "json", file]);
    assert_eq!(default.len(), 1, "{default:?}");
    assert_eq!(default[0]["culprit"]["operation"], "/healthz");
    let configured = slow_checks(&["--format", "json", "--health-routes", "/internal/up", file]);
    assert_eq!(configured.len(), 1, "{configured:?}");
    assert_eq!(configured[0]["culprit"]["operation"], "/internal/up");

    // The text report lists the same findings with their remedies.
    let text = report(&[file]);
    assert!(text.contains("Findings, worst first:"), "{text}");
    assert!(
        text.contains("[warning] slow_health_check") && text.contains("/healthz"),
        "{text}"
    );
    assert!(text.contains("remedy: Keep health checks cheap"), "{text}");

    let out = analyze(&["--health-routes", "healthz", file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("health_routes: `healthz` is not a health route"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_malformed_input_is_a_clear_error_not_a_panic() {
    let dir = scratch("malformed");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(SKEW)).unwrap();
    let cut = dir.join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, [0xffu8, 0x13, 0x37, 0x00, 0x42, 0x99]).unwrap();
    let other = dir.join("other.json");
    std::fs::write(&other, "{\"hello\": \"world\"}\n").unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "  \n").unwrap();
    let bad_line = dir.join("lines.jsonl");
    let lines =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(JSON_LINES)).unwrap();
    let mut lines: Vec<&str> = lines.lines().collect();
    lines[2] = "{\"resourceSpans\": [{\"scopeSpans\": 7}]}";
    std::fs::write(&bad_line, lines.join("\n")).unwrap();
    let missing = dir.join("missing.json");
    let cases: [(&Path, &str); 6] = [
        (&cut, "cut.json: malformed JSON: EOF while parsing"),
        (&garbage, "garbage.bin: malformed OTLP protobuf"),
        (&other, "other.json:1: not a trace format hopscope reads"),
        (&empty, "empty.json: empty input, no spans"),
        (&bad_line, "lines.jsonl:3: malformed OTLP/JSON"),
        (&missing, "missing.json: No such file or directory"),
    ];
    for (path, message) in cases {
        // Also after a good file: the error names the bad one.
        let out = analyze(&[SKEW, path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path:?} was accepted");
        assert!(stderr.contains(message), "{path:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_report_says_which_detectors_the_instrumentation_leaves_blind() {
    // No findings, but not because all is well: the customers service's
    // spans carry no service.instance.id, so nothing can tell its requests'
    // waiting from working.
    let quiet = report(&["tests/fixtures/jaeger-ui-critical-path/test1.json"]);
    assert!(
        quiet.contains(
            "No findings — but these detectors are blind for these services (coverage below says why):\n  customers-service: pool_exhaustion, blocked_worker, cold_start\n"
        ),
        "{quiet}"
    );
    // A HotROD request whose mysql query did not queue: its loops are found,
    // and the coverage still says what redis' spans leave blind (they name no
    // peer and none of them is a request).
    let file = format!("{HOTROD}/15b0b4004a651c4c.json");
    let text = report(&[&file]);
    assert!(text.contains("] n_plus_one ("), "{text}");
    // Each finding says which threshold it crossed.
    assert!(
        text.contains("  crossed n_plus_one.min_calls: 12 ≥ 5\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  redis:\n    pool_exhaustion, blocked_worker, cold_start blind: no SERVER spans"
        ),
        "{text}"
    );
    let coverage = text
        .split("Instrumentation coverage: ")
        .nth(1)
        .expect("a coverage section");
    let counts = |service: &str| -> Vec<u64> {
        let row = coverage
            .lines()
            .find(|l| l.split_whitespace().next() == Some(service))
            .unwrap_or_else(|| panic!("no {service} row in {coverage}"));
        row.split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    // spans, SERVER, CLIENT, db, statement (HotROD's sql.query), peer, status,
    // instance, checkout, whole ms, error
    assert_eq!(counts("mysql"), [1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0]);
    assert_eq!(counts("redis"), [13, 0, 13, 0, 0, 0, 0, 13, 0, 0, 2]);
    assert!(
        coverage.contains("    service_graph blind: no CLIENT span names its peer"),
        "{coverage}"
    );

    // The JSON has the same in GET /api/v1/coverage's shape.
    let json: Value =
        serde_json::from_str(&report(&["--format", "json", &file])).expect("one JSON document");
    let services = json["coverage"].as_array().expect("coverage");
    let of = |name: &str| services.iter().find(|s| s["service"] == name).unwrap();
    assert_eq!(of("frontend")["blind"], serde_json::json!([]));
    assert_eq!(
        (
            of("frontend")["spans"].as_u64(),
            of("frontend")["peer_address"].as_u64()
        ),
        (Some(24), Some(12))
    );
    let redis: Vec<&str> = of("redis")["blind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["detector"].as_str().unwrap())
        .collect();
    assert_eq!(
        redis,
        [
            "pool_exhaustion",
            "blocked_worker",
            "cold_start",
            "service_graph"
        ]
    );
}

/// `--config` reads the daemon's file: its `[detectors]` thresholds apply (the
/// daemon-only keys are ignored), `--health-routes` wins over its routes, and
/// a bad threshold is refused with its key.
#[test]
fn the_daemons_config_file_sets_the_thresholds() {
    let dir = scratch("config");
    let file = dir.join("probes.pb");
    let probes = protobuf_request(&[
        (1, None, "GET /internal/up", 0, 900),
        (2, Some(1), "GET /healthz", 10, 810),
    ]);
    std::fs::write(&file, probes.encode_to_vec()).unwrap();
    let config = dir.join("hopscope.toml");
    std::fs::write(
        &config,
        "api_addr = \"0.0.0.0:9980\"\ndata_dir = \"/nonexistent\"\n\
         [detectors.slow_health_check]\nroutes = [\"/healthz\", \"/internal/up\"]\nlimit_ms = 850\n",
    )
    .unwrap();
    let (file, config) = (file.to_str().unwrap(), config.to_str().unwrap());
    let findings = |args: &[&str]| -> Vec<Value> {
        let json: Value = serde_json::from_str(&report(args)).expect("one JSON document");
        json["findings"].as_array().expect("findings").clone()
    };
    let found = findings(&["--format", "json", "--config", config, file]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["culprit"]["operation"], "/internal/up");
    assert_eq!(
        found[0]["crossed"],
        serde_json::json!([{"threshold": "slow_health_check.limit_ms", "limit": 850.0, "value": 900.0}])
    );
    let flag = ["--format", "json", "--config", config];
    let found = findings(&[&flag[..], &["--health-routes", "/healthz", file]].concat());
    assert_eq!(
        found,
        Vec::<Value>::new(),
        "/healthz took 800 ms, under 850"
    );

    std::fs::write(config, "[detectors.headroom]\nshare = 2\n").unwrap();
    let out = analyze(&["--config", config, file]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("detectors.headroom.share = 2: must be a fraction in (0, 1]"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A Jaeger JSON export of two stray spans: one stamped in the year 2500 in
/// a HotROD trace (under its root), one at the epoch in a trace of its own.
fn stray_spans() -> Value {
    let span = |trace: &str, id: &str, parent: Option<&str>, name: &str, start_us: u64| {
        let references: Vec<Value> = parent
            .map(|p| serde_json::json!({"refType": "CHILD_OF", "traceID": trace, "spanID": p}))
            .into_iter()
            .collect();
        serde_json::json!({
            "traceID": trace, "spanID": id, "operationName": name,
            "references": references, "startTime": start_us, "duration": 1_000,
            "processID": "p1", "tags": [],
        })
    };
    let trace = |id: &str, span: Value| {
        serde_json::json!({
            "traceID": id, "spans": [span],
            "processes": {"p1": {"serviceName": "frontend", "tags": []}},
        })
    };
    let (hotrod, epoch) = ("15b0b4004a651c4c", "00000000000000e0");
    let year_2500_us = 16_725_225_600_000_000;
    serde_json::json!({"data": [
        trace(hotrod, span(hotrod, "ff00000000000001", Some(hotrod), "stray future", year_2500_us)),
        trace(epoch, span(epoch, "ff00000000000002", None, "stray epoch", 1)),
    ]})
}

/// "Now" for a run is the files' own time: a span stamped in 2500 or at the
/// epoch among HotROD's traffic is left out and reported, as the daemon
/// refuses it, and every finding (per-trace and cross-trace) stays.
#[test]
fn spans_far_from_the_files_own_time_are_left_out_and_the_findings_stay() {
    let dir = scratch("out-of-bounds");
    let stray = dir.join("stray.json");
    std::fs::write(&stray, stray_spans().to_string()).unwrap();
    let stray = stray.to_str().unwrap();
    let files = hotrod_files();
    let hotrod: Vec<&str> = files.iter().map(String::as_str).collect();
    let json = |extra: &[&str]| -> Value {
        let args = [&["--format", "json"], extra, &hotrod[..]].concat();
        serde_json::from_str(&report(&args)).expect("one JSON document")
    };
    let findings = |run: &Value| -> Vec<(String, String, u64)> {
        let mut found: Vec<_> = run["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| {
                let kind = f["kind"].as_str().unwrap().to_owned();
                let operation = f["culprit"]["operation"].as_str().unwrap().to_owned();
                (kind, operation, f["count"].as_u64().unwrap())
            })
            .collect();
        found.sort();
        found
    };
    let spans_of = |run: &Value, id: &str| -> u64 {
        let t = run["traces"].as_array().unwrap().iter();
        let t = t
            .clone()
            .find(|t| t["trace_id"].as_str().unwrap().ends_with(id));
        t.map_or(0, |t| t["span_count"].as_u64().unwrap())
    };

    let clean = json(&[]);
    let kinds: Vec<String> = findings(&clean).into_iter().map(|f| f.0).collect();
    assert!(kinds.contains(&"lock_contention".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"n_plus_one".to_owned()), "{kinds:?}");
    assert_eq!(
        clean["out_of_bounds"],
        serde_json::json!({"future": 0, "past": 0})
    );

    let run = json(&[stray]);
    assert_eq!(findings(&run), findings(&clean));
    assert_eq!(run["out_of_bounds"]["future"], 1);
    assert_eq!(run["out_of_bounds"]["past"], 1);
    let reasons = run["out_of_bounds"]["reasons"].to_string();
    assert!(
        reasons.contains("span ff00000000000001: ends at 2500-01-01T00:00:00Z, more than 1h after"),
        "{reasons}"
    );
    assert!(
        reasons.contains("span ff00000000000002: ends at 1970-01-01T00:00:00Z, more than 1day"),
        "{reasons}"
    );
    // The trace straddling the bound keeps its other spans; the epoch's is gone.
    assert_eq!(spans_of(&run, "15b0b4004a651c4c"), 50);
    assert_eq!(run["traces"].as_array().unwrap().len(), 8);

    let text = report(&[&hotrod[..], &[stray]].concat());
    assert!(
        text.contains("2 span(s) left out for ending far from the files' own time (1 too far after it, 1 too far before it): "),
        "{text}"
    );
    // The daemon's config file moves the bounds for analyze too.
    let config = dir.join("hopscope.toml");
    std::fs::write(&config, "future_skew = \"500years\"\n").unwrap();
    let run = json(&["--config", config.to_str().unwrap(), stray]);
    assert_eq!(run["out_of_bounds"]["future"], 0);
    assert_eq!(spans_of(&run, "15b0b4004a651c4c"), 51);
    std::fs::remove_dir_all(&dir).ok();
}
