//! The daemon a soak test runs: `hopscope serve` as a child process with the
//! defaults users run (the write-ahead log on, in a temporary data directory),
//! on free loopback ports, stopped with SIGTERM at the end.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::probe::ApiClient;
use super::LoadgenError;

/// How long the daemon may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long it may take to stop after SIGTERM: its own shutdown timeout (30 s
/// by default) and the final state file.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Between two looks at whether it is ready or has exited.
const POLL: Duration = Duration::from_millis(50);

/// A running `hopscope serve`, killed if dropped before [`ChildDaemon::stop`].
pub(super) struct ChildDaemon {
    child: Child,
    data_dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the OTLP/gRPC receiver.
    pub(super) grpc: String,
    /// `http://127.0.0.1:PORT` of the OTLP/HTTP receiver.
    pub(super) http: String,
    /// `http://127.0.0.1:PORT` of the API.
    pub(super) api: String,
}

impl ChildDaemon {
    /// Starts `binary serve` with `--memory-limit-mib` and otherwise the
    /// defaults (`HOPSCOPE_*` variables are not passed on), its log at `warn`
    /// on this process's stderr, and waits until `/readyz` answers 200.
    pub(super) async fn start(
        binary: &Path,
        memory_limit_mib: usize,
    ) -> Result<ChildDaemon, LoadgenError> {
        let failed = |message: String| LoadgenError::Daemon(message);
        let data_dir = tempfile::Builder::new()
            .prefix("hopscope-soak-")
            .tempdir()
            .map_err(|e| failed(format!("cannot make a data directory: {e}")))?;
        let [grpc, http, api, jaeger] = free_ports()
            .map_err(|e| failed(format!("cannot find free ports on 127.0.0.1: {e}")))?;
        let mut command = Command::new(binary);
        command.arg("serve");
        for (flag, port) in [
            ("--otlp-grpc-addr", grpc),
            ("--otlp-http-addr", http),
            ("--api-addr", api),
            ("--jaeger-addr", jaeger),
        ] {
            command.arg(flag).arg(format!("127.0.0.1:{port}"));
        }
        command
            .arg("--memory-limit-mib")
            .arg(memory_limit_mib.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--log", "warn"]);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOPSCOPE_") {
                command.env_remove(key);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(format!("cannot run `{} serve`: {e}", binary.display())))?;
        let mut daemon = ChildDaemon {
            child,
            data_dir,
            grpc: format!("http://127.0.0.1:{grpc}"),
            http: format!("http://127.0.0.1:{http}"),
            api: format!("http://127.0.0.1:{api}"),
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    async fn wait_ready(&mut self) -> Result<(), LoadgenError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            if let Ok(mut api) = ApiClient::connect(&self.api).await {
                if matches!(api.get("/readyz").await, Ok((status, _)) if status.is_success()) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(LoadgenError::Daemon(format!(
                    "not ready within {} s",
                    START_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An error if the daemon has exited.
    pub(super) fn check_running(&mut self) -> Result<(), LoadgenError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LoadgenError::Daemon(format!("exited: {status}"))),
            Err(e) => Err(LoadgenError::Daemon(format!("cannot wait for it: {e}"))),
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// SIGTERM, then waits for a clean exit (an error if it fails or takes
    /// longer than a minute, when it is killed).
    pub(super) async fn stop(mut self) -> Result<(), LoadgenError> {
        // SAFETY: kill(2) with the pid of a child not yet reaped.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM)
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(LoadgenError::Daemon(format!(
                        "did not stop cleanly on SIGTERM: {status}"
                    )))
                }
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
                Ok(None) => {
                    return Err(LoadgenError::Daemon(format!(
                        "still running {} s after SIGTERM (killed)",
                        STOP_TIMEOUT.as_secs()
                    )))
                }
                Err(e) => return Err(LoadgenError::Daemon(format!("cannot wait for it: {e}"))),
            }
        }
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Four ports free on 127.0.0.1 now (the kernel's ephemeral ports, released
/// for the daemon to bind).
fn free_ports() -> std::io::Result<[u16; 4]> {
    let listeners = [(); 4].map(|()| std::net::TcpListener::bind("127.0.0.1:0"));
    let mut ports = [0; 4];
    for (port, listener) in ports.iter_mut().zip(listeners) {
        *port = listener?.local_addr()?.port();
    }
    Ok(ports)
}
