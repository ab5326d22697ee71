//! `hopscope analyze` as a CI gate, as a pipeline runs it: the real binary,
//! its exit status (`--fail-on`), a baseline of known findings
//! (`--baseline`), and SARIF for code scanning (`--format sarif`), every
//! SARIF output validated against the SARIF 2.1.0 JSON schema
//! (tests/fixtures/sarif/, see its PROVENANCE.md).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::LazyLock;

use serde_json::{json, Value};

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hopscope"))
        .arg("analyze")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("hopscope runs")
}

/// The exit status, stdout and stderr of a run.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = analyze(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let code = out.status.code().expect("an exit status, not a signal");
    (code, String::from_utf8(out.stdout).expect("UTF-8"), stderr)
}

/// A directory of its own for a test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hopscope-ci-gate-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// One span of a test trace.
struct S {
    service: &'static str,
    id: u8,
    parent: Option<u8>,
    name: &'static str,
    /// OTLP's SpanKind: 2 SERVER, 3 CLIENT.
    kind: u8,
    start_ms: u64,
    end_ms: u64,
    /// A status message makes the span an error.
    error: Option<&'static str>,
    attrs: Value,
}

fn span(service: &'static str, id: u8, parent: Option<u8>, name: &'static str) -> S {
    S {
        service,
        id,
        parent,
        name,
        kind: 2,
        start_ms: 0,
        end_ms: 10,
        error: None,
        attrs: json!([]),
    }
}

impl S {
    fn client(mut self) -> S {
        self.kind = 3;
        self
    }
    fn at(mut self, start_ms: u64, end_ms: u64) -> S {
        (self.start_ms, self.end_ms) = (start_ms, end_ms);
        self
    }
    fn failed(mut self, message: &'static str) -> S {
        self.error = Some(message);
        self
    }
    fn attrs(mut self, attrs: &[(&str, Value)]) -> S {
        self.attrs = attrs
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::Number(n) => json!({ "intValue": n.to_string() }),
                    other => json!({ "stringValue": other.as_str().unwrap() }),
                };
                json!({ "key": k, "value": value })
            })
            .collect();
        self
    }
}

/// One OTLP/JSON request with trace `trace` (1-255) made of `spans`.
fn otlp(trace: u8, spans: Vec<S>) -> Value {
    const T0: u64 = 1_700_000_000_000_000_000;
    let mut services: Vec<&str> = spans.iter().map(|s| s.service).collect();
    services.dedup();
    let resource_spans: Vec<Value> = services
        .iter()
        .map(|&service| {
            let spans: Vec<Value> = spans
                .iter()
                .filter(|s| s.service == service)
                .map(|s| {
                    let mut span = json!({
                        "traceId": format!("{trace:032x}"),
                        "spanId": format!("{:016x}", s.id),
                        "name": s.name,
                        "kind": s.kind,
                        "startTimeUnixNano": (T0 + s.start_ms * 1_000_000).to_string(),
                        "endTimeUnixNano": (T0 + s.end_ms * 1_000_000).to_string(),
                        "attributes": s.attrs,
                    });
                    if let Some(p) = s.parent {
                        span["parentSpanId"] = json!(format!("{p:016x}"));
                    }
                    if let Some(message) = s.error {
                        span["status"] = json!({ "code": 2, "message": message });
                    }
                    span
                })
                .collect();
            json!({
                "resource": { "attributes": [
                    { "key": "service.name", "value": { "stringValue": service } }
                ] },
                "scopeSpans": [{ "spans": spans }],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
}

/// A slow health check (a warning) of `service`, its span carrying `attrs`.
fn slow_health_check(trace: u8, service: &'static str, attrs: &[(&str, Value)]) -> Value {
    otlp(
        trace,
        vec![span(service, 1, None, "GET /healthz")
            .at(0, 900)
            .attrs(attrs)],
    )
}

/// A request that timed out at the gateway because stock was slow: a
/// cascading timeout (critical: the entry itself timed out).
fn cascade(trace: u8) -> Value {
    otlp(
        trace,
        vec![
            span("gateway", 1, None, "GET /checkout")
                .at(0, 1000)
                .failed("request timeout"),
            span("gateway", 2, Some(1), "POST /orders")
                .client()
                .at(5, 1000)
                .failed("timeout awaiting response"),
            span("orders", 3, Some(2), "POST /orders")
                .at(10, 1000)
                .failed("request timeout"),
            span("orders", 4, Some(3), "GET /stock")
                .client()
                .at(15, 998)
                .failed("timeout awaiting response"),
            span("stock", 5, Some(4), "GET /stock")
                .at(20, 2500)
                .attrs(&[
                    ("code.filepath", json!("/srv/stock/app/views.py")),
                    ("code.lineno", json!(88)),
                ]),
        ],
    )
}

/// A quick, healthy request: no finding.
fn healthy(trace: u8) -> Value {
    otlp(
        trace,
        vec![
            span("shop", 1, None, "GET /cart").at(0, 40),
            span("shop", 2, Some(1), "GET /items").client().at(5, 30),
            span("items", 3, Some(2), "GET /items").at(8, 28),
        ],
    )
}

/// `requests` as a JSON Lines file named `name` in `dir`.
fn write(dir: &Path, name: &str, requests: &[Value]) -> String {
    let path = dir.join(name);
    let lines: Vec<String> = requests.iter().map(Value::to_string).collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the traces");
    path.to_str().unwrap().to_owned()
}

/// The SARIF 2.1.0 schema, compiled once, formats checked too (`uri`,
/// `uri-reference`, `date-time`). The file is the published one; its
/// `language` patterns (of `run` and `toolComponent`) have a lone `]`,
/// which ECMA-262 reads as a literal only in its legacy grammar and the
/// validator's meta-schema check refuses, so it is escaped here (the same
/// language codes match).
static SARIF_SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sarif/sarif-schema-2.1.0.json");
    let mut schema: Value =
        serde_json::from_slice(&std::fs::read(path).expect("the vendored schema")).unwrap();
    for definition in ["run", "toolComponent"] {
        let language = &mut schema["definitions"][definition]["properties"]["language"]["pattern"];
        assert_eq!(language, "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$");
        *language = json!(r"^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}\]?$");
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the SARIF schema compiles")
});

/// `text` parsed as a SARIF log, which must be valid against the schema.
fn sarif(text: &str) -> Value {
    let log: Value = serde_json::from_str(text).expect("SARIF is one JSON document");
    let errors: Vec<String> = SARIF_SCHEMA
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "invalid SARIF: {errors:#?}\n{text}");
    assert_eq!(log["version"], "2.1.0");
    log
}

#[test]
fn fail_on_exits_1_on_a_finding_at_or_above_the_severity_and_0_otherwise() {
    let dir = scratch("fail-on");
    let warning = write(&dir, "warning.jsonl", &[slow_health_check(1, "probe", &[])]);
    let critical = write(&dir, "critical.jsonl", &[cascade(2), healthy(3)]);
    let clean = write(&dir, "clean.jsonl", &[healthy(4), healthy(5)]);

    // A warning fails `--fail-on warning` (and info), not `--fail-on critical`.
    let (code, report, stderr) = run(&["--fail-on", "warning", &warning]);
    assert_eq!(code, 1, "{stderr}");
    // The report is written in full first.
    assert!(report.contains("[warning] slow_health_check"), "{report}");
    assert!(report.contains("Instrumentation coverage"), "{report}");
    assert!(
        stderr.contains("1 finding(s) at or above warning: slow_health_check (probe /healthz)"),
        "{stderr}"
    );
    assert_eq!(run(&["--fail-on", "info", &warning]).0, 1);
    let (code, _, stderr) = run(&["--fail-on", "critical", &warning]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("no finding at or above critical: passed"),
        "{stderr}"
    );

    // A critical cascade fails both.
    let (code, report, stderr) = run(&["--fail-on", "critical", &critical]);
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert!(report.contains("[critical] cascading_timeout"), "{report}");
    assert!(
        stderr.contains("cascading_timeout (stock GET /stock)"),
        "{stderr}"
    );

    // Healthy traces pass even `--fail-on info`; without --fail-on nothing fails.
    let (code, report, _) = run(&["--fail-on", "info", &clean]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("No findings"), "{report}");
    assert_eq!(run(&[&critical]).0, 0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unreadable_input_or_a_wrong_flag_exits_2_even_with_findings_to_fail_on() {
    let dir = scratch("unreadable");
    let critical = write(&dir, "critical.jsonl", &[cascade(1)]);
    let garbage = dir.join("garbage.bin");
    std::fs::write(&garbage, [0xffu8, 0x13, 0x37]).unwrap();
    let missing = dir.join("missing.json");
    for (file, message) in [
        (&garbage, "garbage.bin: malformed OTLP protobuf"),
        (&missing, "missing.json: No such file or directory"),
    ] {
        let file = file.to_str().unwrap();
        // After a file with a critical finding: the unreadable one wins.
        for format in ["text", "json", "sarif"] {
            let (code, _, stderr) =
                run(&["--fail-on", "warning", "--format", format, &critical, file]);
            assert_eq!(code, 2, "{file} as {format}: {stderr}");
            assert!(stderr.contains(message), "{stderr}");
        }
    }
    let (code, _, stderr) = run(&["--fail-on", "severe", &critical]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("one of info, warning, critical"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["--fail-on", "info", "--health-routes", "healthz", &critical]);
    assert_eq!(code, 2, "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_baseline_holds_back_known_findings_and_only_new_ones_fail() {
    let dir = scratch("baseline");
    let before = [slow_health_check(1, "probe", &[]), cascade(2)];
    let old = write(&dir, "old.jsonl", &before);
    // The same problems in other traces, and one more.
    let now = write(
        &dir,
        "new.jsonl",
        &[
            slow_health_check(11, "probe", &[]),
            cascade(12),
            slow_health_check(13, "billing", &[]),
        ],
    );
    let (code, json, _) = run(&["--format", "json", &old]);
    assert_eq!(code, 0);
    let baseline = dir.join("baseline.json");
    std::fs::write(&baseline, &json).unwrap();
    let baseline = baseline.to_str().unwrap();

    // The same traces against their own baseline: nothing new, 0.
    let (code, report, stderr) = run(&["--fail-on", "info", "--baseline", baseline, &old]);
    assert_eq!(code, 0, "{report}\n{stderr}");
    assert!(
        report.contains(&format!(
            "No new findings. 2 known finding(s) in the baseline {baseline}, not listed"
        )),
        "{report}"
    );
    assert!(report.contains("known: in the baseline)"), "{report}");
    assert!(
        stderr.contains("no new finding at or above info: passed"),
        "{stderr}"
    );

    // New traces of the same problems are known too (matched by kind and
    // culprit, not trace ids); the new health check alone fails.
    let (code, report, stderr) = run(&["--fail-on", "warning", "--baseline", baseline, &now]);
    assert_eq!(code, 1, "{report}\n{stderr}");
    let listed = report
        .split(&format!(
            "New findings (not in the baseline {baseline}), worst first:"
        ))
        .nth(1)
        .and_then(|rest| rest.split("Instrumentation coverage").next())
        .expect("new findings listed");
    assert!(listed.contains("[warning] slow_health_check"), "{listed}");
    assert!(listed.contains("billing  /healthz"), "{listed}");
    assert!(!listed.contains("probe  /healthz"), "{listed}");
    assert!(!listed.contains("cascading_timeout"), "{listed}");
    assert!(
        listed.contains("2 known finding(s) in the baseline"),
        "{listed}"
    );
    assert!(
        stderr
            .contains("1 new finding(s) at or above warning: slow_health_check (billing /healthz)"),
        "{stderr}"
    );

    // JSON and SARIF list the new one, and say how many the baseline held back.
    let (code, json, _) = run(&["--format", "json", "--baseline", baseline, &now]);
    assert_eq!(code, 0);
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["baseline"], json!({ "file": baseline, "known": 2 }));
    let kinds: Vec<(&str, &str)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap(),
                f["culprit"]["service"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, [("slow_health_check", "billing")]);
    let (code, text, _) = run(&[
        "--format",
        "sarif",
        "--fail-on",
        "warning",
        "--baseline",
        baseline,
        &now,
    ]);
    assert_eq!(code, 1);
    let log = sarif(&text);
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{text}");
    assert_eq!(results[0]["properties"]["culprit"]["service"], "billing");
    assert_eq!(results[0]["baselineState"], "new");
    assert_eq!(log["runs"][0]["properties"]["baseline"]["known"], 2);

    // A baseline that cannot be read is 2, whatever the findings.
    let malformed = dir.join("malformed.json");
    std::fs::write(&malformed, "{\"findings\": [{\"kind\": 7}]}").unwrap();
    let report_not_findings = dir.join("sarif.json");
    std::fs::write(&report_not_findings, &text).unwrap();
    let missing = dir.join("missing.json");
    for (file, message) in [
        (&malformed, "malformed.json: not a baseline (the findings of `hopscope analyze --format json`): invalid type"),
        (&report_not_findings, "sarif.json: not a baseline (the findings of `hopscope analyze --format json`): missing field `findings`"),
        (&missing, "missing.json: No such file or directory"),
    ] {
        let (code, _, stderr) =
            run(&["--fail-on", "critical", "--baseline", file.to_str().unwrap(), &old]);
        assert_eq!(code, 2, "{file:?}: {stderr}");
        assert!(stderr.contains(message), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sarif_locates_findings_in_source_code_or_on_the_service() {
    let dir = scratch("sarif");
    let file = write(
        &dir,
        "findings.jsonl",
        &[
            // The current code.* names...
            slow_health_check(
                1,
                "probe",
                &[
                    ("code.file.path", json!("src/probe/health.py")),
                    ("code.line.number", json!(42)),
                    ("code.function.name", json!("check")),
                    ("code.namespace", json!("probe.health")),
                ],
            ),
            // ...the older ones...
            slow_health_check(
                2,
                "billing",
                &[
                    ("code.filepath", json!("./billing/Health.java")),
                    ("code.lineno", json!(17)),
                    ("code.function", json!("healthz")),
                ],
            ),
            // ...and none.
            slow_health_check(3, "ledger", &[]),
            cascade(4),
        ],
    );
    let (code, text, stderr) = run(&["--format", "sarif", "--fail-on", "warning", &file]);
    assert_eq!(code, 1, "{stderr}");
    let log = sarif(&text);
    let run0 = &log["runs"][0];
    assert_eq!(run0["tool"]["driver"]["name"], "hopscope");
    let rules = run0["tool"]["driver"]["rules"].as_array().unwrap();
    let rule_ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(rule_ids, ["cascading_timeout", "slow_health_check"]);
    assert_eq!(rules[0]["defaultConfiguration"]["level"], "error");
    assert!(rules[1]["help"]["text"]
        .as_str()
        .unwrap()
        .starts_with("Keep health checks cheap"));
    let results = run0["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{text}");
    let of = |service: &str| -> &Value {
        results
            .iter()
            .find(|r| r["properties"]["culprit"]["service"] == service)
            .unwrap_or_else(|| panic!("no result for {service}: {text}"))
    };
    let physical = |service: &str| -> (String, u64) {
        let p = &of(service)["locations"][0]["physicalLocation"];
        (
            p["artifactLocation"]["uri"].as_str().unwrap().to_owned(),
            p["region"]["startLine"].as_u64().unwrap(),
        )
    };
    assert_eq!(physical("probe"), ("src/probe/health.py".to_owned(), 42));
    assert_eq!(physical("billing"), ("billing/Health.java".to_owned(), 17));
    assert_eq!(
        physical("stock"),
        ("file:///srv/stock/app/views.py".to_owned(), 88)
    );
    // Without code.* attributes: on the service.
    assert_eq!(physical("ledger"), ("ledger".to_owned(), 1));
    assert_eq!(
        of("ledger")["locations"][0]["logicalLocations"],
        json!([{ "name": "ledger", "kind": "module" }])
    );
    assert_eq!(
        of("probe")["locations"][0]["logicalLocations"][0],
        json!({ "name": "check", "fullyQualifiedName": "probe.health.check", "kind": "function" })
    );
    let cascade = of("stock");
    assert_eq!(cascade["level"], "error");
    assert_eq!(cascade["ruleId"], "cascading_timeout");
    assert_eq!(of("probe")["level"], "warning");
    assert_eq!(cascade["properties"]["count"], 1);
    assert_eq!(
        cascade["properties"]["traceIds"],
        json!([format!("{:032x}", 4)])
    );
    // A stable fingerprint per problem: the finding's id, as in the JSON report.
    let (_, json, _) = run(&["--format", "json", &file]);
    let json: Value = serde_json::from_str(&json).unwrap();
    let id = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "cascading_timeout")
        .unwrap()["id"]
        .clone();
    assert_eq!(cascade["partialFingerprints"]["hopscopeFindingId/v1"], id);

    // The text report says where, too.
    let (_, report, _) = run(&[&file]);
    assert!(
        report.contains("  at src/probe/health.py:42 in probe.health.check\n"),
        "{report}"
    );
    assert!(
        report.contains("  at ./billing/Health.java:17 in healthz\n"),
        "{report}"
    );

    // A passing run writes a valid, empty log and exits 0.
    let clean = write(&dir, "clean.jsonl", &[healthy(9)]);
    let (code, text, stderr) = run(&["--format", "sarif", "--fail-on", "warning", &clean]);
    assert_eq!(code, 0, "{stderr}");
    let log = sarif(&text);
    assert_eq!(log["runs"][0]["results"], json!([]));
    assert_eq!(log["runs"][0]["tool"]["driver"]["rules"], json!([]));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_documents_the_exit_status() {
    let (code, help, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for text in [
        "--fail-on <SEVERITY>",
        "--baseline <FINDINGS.json>",
        "sarif",
        "Exit status: 0",
        "1 when one is",
        "2 when an input or the baseline cannot be read",
    ] {
        assert!(help.contains(text), "{text:?} not in\n{help}");
    }
}

/// A span stamped in the year 2500 is left out of the run, and the SARIF log
/// says so where run-level problems go (the invocation's notifications),
/// valid against the schema; the findings stay.
#[test]
fn sarif_notes_spans_left_out_for_their_times() {
    let dir = scratch("sarif-out-of-bounds");
    // 2500-01-01T00:00:00Z, as milliseconds after the requests' start.
    let year_2500 = 15_025_225_600_000;
    let stray = span("clock", 1, None, "GET /stray").at(year_2500, year_2500 + 1);
    let file = write(
        &dir,
        "stray.jsonl",
        &[cascade(1), healthy(2), otlp(3, vec![stray])],
    );
    let (code, out, err) = run(&["--format", "sarif", &file]);
    assert_eq!(code, 0, "{err}");
    let log = sarif(&out);
    let run = &log["runs"][0];
    assert_eq!(run["results"][0]["ruleId"], "cascading_timeout", "{out}");
    let notes = &run["invocations"][0]["toolExecutionNotifications"];
    assert_eq!(notes[0]["level"], "warning", "{out}");
    let text = notes[0]["message"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("1 span(s) left out for ending far from the files' own time (1 too far after it, 0 too far before it): ")
            && text.contains("ends at 2500-01-01T00:00:00Z"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
