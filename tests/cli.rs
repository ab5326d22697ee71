//! The `hopscope` binary as a user runs it: flags, environment, config file,
//! the log line with the bound addresses, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn hopscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopscope"))
}

/// Reads the daemon's log until the line naming the bound addresses.
fn api_addr(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        if line.contains("hopscope listening") {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("api_addr="))
                .expect("api_addr in the log line");
            // Keep draining the log so the daemon never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return addr.to_owned();
        }
    }
    panic!("the daemon exited without logging its addresses");
}

#[tokio::test]
async fn serve_binds_logs_its_addresses_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("hopscope-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hopscope.toml");
    // The file sets the API address, the environment the gRPC one, a flag the
    // OTLP/HTTP one.
    std::fs::write(
        &config,
        "api_addr = \"127.0.0.1:0\"\njaeger_addr = \"127.0.0.1:0\"\ntrace_idle = \"250ms\"\n",
    )
    .unwrap();
    let mut child = hopscope()
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOPSCOPE_OTLP_GRPC_ADDR", "127.0.0.1:0")
        .args(["--otlp-http-addr", "127.0.0.1:0"])
        .env("HOPSCOPE_DATA_DIR", dir.join("data"))
        .env("HOPSCOPE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let addr = api_addr(&mut child);
    let ready = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("API up");
    assert_eq!(ready.status(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(Duration::from_secs(30), exit)
        .await
        .expect("the daemon exits within 30 s of SIGTERM")
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn help_documents_every_setting_with_its_environment_variable() {
    let out = hopscope().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--otlp-grpc-addr", "HOPSCOPE_OTLP_GRPC_ADDR"),
        ("--otlp-http-addr", "HOPSCOPE_OTLP_HTTP_ADDR"),
        ("--api-addr", "HOPSCOPE_API_ADDR"),
        ("--jaeger-addr", "HOPSCOPE_JAEGER_ADDR"),
        ("--trace-idle", "HOPSCOPE_TRACE_IDLE"),
        ("--trace-max-age", "HOPSCOPE_TRACE_MAX_AGE"),
        ("--late-grace", "HOPSCOPE_LATE_GRACE"),
        ("--max-buffered-spans", "HOPSCOPE_MAX_BUFFERED_SPANS"),
        ("--store-max-traces", "HOPSCOPE_STORE_MAX_TRACES"),
        ("--config", "HOPSCOPE_CONFIG"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing from:\n{help}"
        );
    }
    assert!(help.contains("default: 127.0.0.1:4317"));
    assert!(help.contains("default: 127.0.0.1:4318"));
}

#[test]
fn bad_settings_exit_non_zero_with_a_readable_reason() {
    let out = hopscope()
        .args(["serve", "--trace-idle", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a duration like 10s"), "{err}");

    let out = hopscope()
        .args(["serve", "--config", "/nonexistent/hopscope.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read config file /nonexistent/hopscope.toml"),
        "{err}"
    );
}

/// `hopscope healthcheck` as a container HEALTHCHECK runs it.
fn healthcheck(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = hopscope()
        .arg("healthcheck")
        .args(args)
        .env_remove("HOPSCOPE_API_ADDR")
        .env_remove("HOPSCOPE_CONFIG")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthcheck_exits_zero_while_the_api_answers_and_one_once_it_is_gone() {
    let mut child = hopscope()
        .args(["serve", "--api-addr", "127.0.0.1:0"])
        .args(["--otlp-grpc-addr", "127.0.0.1:0"])
        .env_remove("HOPSCOPE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let addr = api_addr(&mut child);
    let port = addr.rsplit(':').next().unwrap();

    let (ok, out, err) = healthcheck(&["--api-addr", &addr], &[]);
    assert!(ok, "{err}");
    assert!(out.contains("ok"), "{out}");
    let (ok, out, err) = healthcheck(&["--ready"], &[("HOPSCOPE_API_ADDR", &addr)]);
    assert!(ok && out.contains("ready"), "{out} {err}");
    // The address a container binds (0.0.0.0), as in its environment, is
    // probed on loopback.
    let wildcard = format!("0.0.0.0:{port}");
    let (ok, _, err) = healthcheck(&[], &[("HOPSCOPE_API_ADDR", &wildcard)]);
    assert!(ok, "{err}");
    // So is the config file's api_addr.
    let dir = std::env::temp_dir().join(format!("hopscope-healthcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("hopscope.toml");
    std::fs::write(&config, format!("api_addr = \"{wildcard}\"\n")).unwrap();
    let (ok, _, err) = healthcheck(&["--config", config.to_str().unwrap()], &[]);
    assert!(ok, "{err}");

    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, out, err) = healthcheck(&["--api-addr", &addr], &[]);
    assert!(!ok, "healthy after the daemon was killed: {out}");
    assert!(
        err.starts_with("unhealthy: cannot reach hopscope at") && err.contains(&addr),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn healthcheck_reports_a_non_200_answer() {
    // Something else on the port that answers, but not 200: a plain TCP
    // listener writing an HTTP 503.
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).unwrap();
        let body = r#"{"status":"starting"}"#;
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(format!("{head}{body}").as_bytes()).unwrap();
    });
    let (ok, _, err) = healthcheck(&["--ready", "--api-addr", &addr], &[]);
    server.join().unwrap();
    assert!(!ok);
    assert!(err.contains("/readyz answered 503"), "{err}");
}

/// Writes `text` to a config file of its own and returns its path.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hopscope-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hopscope.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `serve --print-config` prints the effective configuration, every detector
/// threshold included, and exits 0; what it prints is a config file that
/// prints back the same.
#[test]
fn print_config_shows_every_threshold_and_reads_back_as_itself() {
    let config = config_file(
        "print",
        "trace_idle = \"2s\"\n[detectors.slow_query]\nmin_ms = 20\n",
    );
    let print = |config: &std::path::Path| {
        let out = hopscope()
            .args(["serve", "--print-config", "--no-wal", "--config"])
            .arg(config)
            .args(["--api-addr", "127.0.0.1:9"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = print(&config);
    for line in [
        "api_addr = \"127.0.0.1:9\"",
        "trace_idle = \"2s\"",
        "no_wal = true",
        "[detectors.cascade]\nmin_calls = 2",
        "[detectors.slow_query]\nabsolute_ms = 500.0\nmin_ms = 20.0",
        "[detectors.pool]\nmin_requests = 8",
        "near_ceiling = 0.75",
        "[detectors.slow_health_check]\nroutes = [",
        "\"grpc.health.v1.Health/Check\"",
        "limit_ms = 500.0",
    ] {
        assert!(printed.contains(line), "{line:?} missing from:\n{printed}");
    }
    // Every threshold it prints is documented in docs/DETECTORS.md's table.
    let table = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DETECTORS.md"),
    )
    .unwrap();
    let mut section = None;
    for line in printed.lines() {
        if let Some(name) = line
            .strip_prefix("[detectors.")
            .and_then(|l| l.strip_suffix(']'))
        {
            section = Some(name);
        } else if line.starts_with('[') {
            section = None;
        } else if let (Some(section), Some((key, _))) = (section, line.split_once(" = ")) {
            let row = format!("| `{section}.{key}` |");
            assert!(table.contains(&row), "{row} missing from docs/DETECTORS.md");
        }
    }
    assert!(
        printed.contains("[detectors.n_plus_one]\nmin_calls = 5"),
        "{printed}"
    );
    let again = config_file("print-again", &printed);
    assert_eq!(print(&again), printed);
    for path in [config, again] {
        std::fs::remove_dir_all(path.parent().unwrap()).ok();
    }
}

/// A threshold out of range, an unknown key and a bad route stop `serve`
/// before it opens a listener, with the key and what it accepts.
#[test]
fn invalid_thresholds_are_refused_at_start_with_the_key() {
    for (name, text, message) in [
        (
            "fraction",
            "[detectors.pool]\nnear_ceiling = 1.5\n",
            "detectors.pool.near_ceiling = 1.5: must be a fraction in (0, 1]",
        ),
        (
            "count",
            "[detectors.cascade]\nmin_calls = 0\n",
            "detectors.cascade.min_calls = 0: must be a count of at least 1",
        ),
        (
            "negative",
            "[detectors.slow_health_check]\nlimit_ms = -5\n",
            "detectors.slow_health_check.limit_ms = -5: must be a duration in milliseconds",
        ),
        (
            "unknown",
            "[detectors.slow_query]\nmin_msec = 20\n",
            "unknown field `min_msec`",
        ),
        (
            "route",
            "[detectors.slow_health_check]\nroutes = [\"healthz\"]\n",
            "`healthz` is not a health route",
        ),
        (
            "twice",
            "health_routes = [\"/up\"]\n[detectors.slow_health_check]\nroutes = [\"/up\"]\n",
            "health_routes and detectors.slow_health_check.routes both set",
        ),
    ] {
        let config = config_file(name, text);
        let out = hopscope()
            .args(["serve", "--no-wal", "--config"])
            .arg(&config)
            .args([
                "--api-addr",
                "127.0.0.1:0",
                "--otlp-grpc-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--jaeger-addr",
                "127.0.0.1:0",
            ])
            .env("HOPSCOPE_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(err.contains(message), "{name}: {err}");
        assert!(!err.contains("hopscope listening"), "{name}: {err}");
        std::fs::remove_dir_all(config.parent().unwrap()).ok();
    }
}
