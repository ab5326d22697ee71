//! The `hopscope serve` binary as a child process on ephemeral ports, for
//! tests that kill it, restart it or run it under resource limits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A `hopscope serve` process on ephemeral ports.
pub struct Daemon {
    pub child: Child,
    pub grpc: String,
    /// The OTLP/HTTP receiver's `/v1/traces`.
    pub otlp_http: String,
    pub api: String,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Starts the binary on `data_dir` (or without a log) with `extra` flags
    /// and waits until it has replayed its log and listens.
    pub fn start(data_dir: Option<&Path>, extra: &[&str]) -> Daemon {
        Daemon::start_under(&[], data_dir, extra)
    }

    /// As [`Daemon::start`], run by the command `wrapper` (such as
    /// `prlimit --fsize=N --`) when it is not empty.
    pub fn start_under(wrapper: &[&str], data_dir: Option<&Path>, extra: &[&str]) -> Daemon {
        let bin = binary();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--jaeger-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--trace-idle",
            "300ms",
            "--checkpoint-interval",
            "100ms",
            "--log",
            "info",
        ]);
        cmd.args(extra);
        match data_dir {
            Some(dir) => cmd.arg("--data-dir").arg(dir),
            None => cmd.arg("--no-wal"),
        };
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
        let field = |line: &str, name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        for line in lines.by_ref() {
            let line = line.expect("log line");
            if line.contains("hopscope listening") {
                let grpc = field(&line, "otlp_grpc_addr=").expect("gRPC address logged");
                let otlp_http = field(&line, "otlp_http_addr=").expect("HTTP address logged");
                let api = field(&line, "api_addr=").expect("API address logged");
                std::thread::spawn(move || lines.for_each(drop));
                return Daemon {
                    child,
                    grpc: format!("http://{grpc}"),
                    otlp_http: format!("http://{otlp_http}/v1/traces"),
                    api: format!("http://{api}"),
                    http: reqwest::Client::new(),
                };
            }
        }
        let status = child.wait().expect("reaped");
        panic!("the daemon exited before listening: {status}");
    }

    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        super::api_get(&self.http, &self.api, path).await
    }

    /// Polls until `check` accepts the answer (at most 30 s).
    pub async fn wait_for(&self, path: &str, check: impl Fn(u16, &Value) -> bool) -> Value {
        super::api_wait_for(&self.http, &self.api, path, check).await
    }

    /// Waits until nothing is buffered or being analyzed.
    pub async fn settled(&self) -> Value {
        self.wait_for("/api/v1/stats", |_, s| {
            s["buffered_spans"] == 0 && s["analysis_pending"] == 0
        })
        .await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `hopscope` binary: Cargo names it to the daemon package's tests; the
/// tools' tests (which share this module) find it beside their own binaries,
/// in the target directory `cargo test --workspace` builds it into.
fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_hopscope") {
        Some(path) => path.into(),
        None => std::env::current_exe()
            .expect("the test's own path")
            .parent()
            .and_then(Path::parent)
            .expect("tests run from the target directory's deps/")
            .join(format!("hopscope{}", std::env::consts::EXE_SUFFIX)),
    }
}
