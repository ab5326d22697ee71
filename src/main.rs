//! The `hopscope` binary: parses the command line (`cli`) and dispatches to
//! the library. The demo and the load generator are binaries of their own
//! (`crates/hopscope-demo`, `crates/hopscope-loadgen`).
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

mod cli;

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use cli::{AnalyzeArgs, Cli, Command, HealthcheckArgs, ReportFormat};
use hopscope::config::{Config, Settings};
use hopscope::runtime;

/// jemalloc rather than the system allocator: under sustained load glibc's
/// per-thread arenas held about a quarter more resident memory for the same
/// data (docs/PERFORMANCE.md, "Hours of load"), and resident memory is what
/// `memory_limit_mib` and a container's limit are judged by.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            print_config,
            settings,
        } => {
            let file = Settings::from_optional_file(config.as_deref())?;
            let config = Config::try_from((*settings).or(file).or(Settings::serve_defaults()))?;
            if print_config {
                let text = config
                    .to_toml()
                    .context("cannot write the configuration as TOML")?;
                print!("{text}");
                return Ok(());
            }
            runtime::init_logging(&config.log)?;
            runtime::block_on(serve(config))?
        }
        Command::Healthcheck(args) => healthcheck(args),
        Command::Analyze(args) => {
            // 1 is the gate's: every error is 2.
            let code = analyze(args).unwrap_or_else(|e| {
                eprintln!("Error: {e:?}");
                2
            });
            std::process::exit(code)
        }
    }
}

/// Runs `hopscope healthcheck`: exits 1 with the reason when the daemon is
/// not healthy.
fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    let file = Settings::from_optional_file(args.config.as_deref())?;
    let settings = Settings {
        api_addr: args.api_addr,
        ..Settings::default()
    };
    let addr = Config::try_from(settings.or(file))?.api_addr;
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let probe =
        runtime::block_on_current_thread(hopscope::healthcheck::probe(addr, path, args.timeout.0))?;
    match probe {
        Ok(body) => {
            println!("{}", body.trim());
            Ok(())
        }
        // One line, no backtrace: it ends up in `docker inspect`.
        Err(e) => {
            eprintln!("unhealthy: {e}");
            std::process::exit(1)
        }
    }
}

/// Inputs at least this large (in all) get a progress bar, on a terminal.
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

/// Runs `hopscope analyze`; the exit status is the gate's (0 or 1).
fn analyze(args: AnalyzeArgs) -> anyhow::Result<i32> {
    use hopscope::offline::{self, report, sarif, Input};
    let inputs: Vec<Input> = args.files.iter().map(|f| Input::parse(f)).collect();
    if inputs.iter().filter(|i| **i == Input::Stdin).count() > 1 {
        anyhow::bail!("`-` (stdin) can be read only once");
    }
    let total: u64 = inputs.iter().filter_map(Input::size).sum();
    let bar = (std::io::stderr().is_terminal() && total >= PROGRESS_MIN_BYTES).then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut report: Box<dyn report::Report> = match args.format {
        ReportFormat::Text => Box::new(report::Text::new(out)),
        ReportFormat::Json => Box::new(report::Json::new(out)),
        ReportFormat::Sarif => Box::new(sarif::Sarif::new(out)),
    };
    let mut options = offline::Options {
        max_buffered_spans: args.max_buffered_spans,
        baseline: args
            .baseline
            .as_deref()
            .map(report::Baseline::read)
            .transpose()?,
        ..offline::Options::default()
    };
    let file = Settings::from_optional_file(args.config.as_deref())?;
    let flags = Settings {
        health_routes: args.health_routes,
        ..Settings::default()
    };
    let config = Config::try_from(flags.or(file))?;
    options.bounds = config.time_bounds();
    options.analysis.thresholds = config.detectors;
    let result = offline::run(&inputs, options, report.as_mut(), &mut |read| {
        if let Some(bar) = &bar {
            bar.set_position(read);
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let findings = result?;
    let Some(fail_on) = args.fail_on else {
        return Ok(0);
    };
    let (passed, verdict) = findings.gate(fail_on);
    eprintln!("{verdict}");
    Ok(if passed { 0 } else { 1 })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    ignore_file_size_signal();
    // The handlers first: a SIGTERM right after the daemon is ready must drain
    // it, not kill it.
    let signal = runtime::shutdown_signal()?;
    let running = hopscope::daemon::start(config).await?;
    signal.await;
    running.shutdown();
    running.wait().await?;
    Ok(())
}

/// A write past the file size limit (`ulimit -f`, RLIMIT_FSIZE) raises
/// SIGXFSZ, which kills the process by default. Ignored, the write fails with
/// EFBIG instead, like a full disk: the export is refused (retryable), nothing
/// acknowledged is lost, and the daemon keeps serving.
#[allow(unsafe_code)]
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: SIG_IGN installs no handler and touches no memory; a signal's
    // disposition is process-wide and may be set from any thread.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
