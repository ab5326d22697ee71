//! What every binary of the workspace sets up before its work: the log on
//! stderr, the Tokio runtime and the shutdown signals (`hopscope`,
//! `hopscope-demo` and `hopscope-loadgen` share these, so they start, log and
//! stop alike).

use std::future::Future;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Why a binary could not set itself up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The log filter is not in EnvFilter syntax.
    #[error("invalid log filter `{filter}`")]
    LogFilter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The runtime's threads or its I/O driver could not be created.
    #[error("cannot start the async runtime")]
    Start(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("installing a {signal} handler")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Logs to stderr (in colour on a terminal) what `filter`, in `tracing`'s
/// EnvFilter syntax, lets through.
pub fn init_logging(filter: &str) -> Result<(), RuntimeError> {
    let filter = EnvFilter::try_new(filter).map_err(|source| RuntimeError::LogFilter {
        filter: filter.to_owned(),
        source,
    })?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    Ok(())
}

/// Runs `future` to completion on a runtime with a worker thread per core.
pub fn block_on<F: Future>(future: F) -> Result<F::Output, RuntimeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError::Start)?;
    Ok(runtime.block_on(future))
}

/// Runs `future` to completion on the calling thread alone (for a short
/// client such as `hopscope healthcheck`).
pub fn block_on_current_thread<F: Future>(future: F) -> Result<F::Output, RuntimeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RuntimeError::Start)?;
    Ok(runtime.block_on(future))
}

/// Installs the SIGTERM and Ctrl-C handlers now; the future resolves on
/// either. Call it within a runtime.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>, RuntimeError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |kind, name| {
            signal(kind).map_err(|source| RuntimeError::Signal {
                signal: name,
                source,
            })
        };
        let mut term = handler(SignalKind::terminate(), "SIGTERM")?;
        let mut int = handler(SignalKind::interrupt(), "SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
