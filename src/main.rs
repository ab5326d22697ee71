//! The `hopscope` command line.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hopscope::config::{Config, Settings};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "hopscope",
    version,
    about = "OpenTelemetry trace analyzer: which hop each request waited on"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive OTLP traces, analyze them, and serve the findings over HTTP.
    Serve {
        /// TOML file with any of the settings below (flags and environment win)
        #[arg(long, env = "HOPSCOPE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, settings } => {
            let file = match config {
                Some(path) => Settings::from_file(&path)?,
                None => Settings::default(),
            };
            let config = Config::try_from(settings.or(file))?;
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_env_filter(
                    EnvFilter::try_new(&config.log)
                        .with_context(|| format!("invalid log filter `{}`", config.log))?,
                )
                .init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(serve(config))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = hopscope::daemon::start(config).await?;
    shutdown_signal().await;
    running.shutdown();
    running.wait().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
