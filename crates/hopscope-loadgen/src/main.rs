//! The `hopscope-loadgen` binary: the command line (`cli`) of
//! [`hopscope_loadgen`].
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

mod cli;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use cli::LoadgenArgs;
use hopscope::runtime;
use hopscope_loadgen::{self as loadgen, Until};

/// The daemon's allocator (jemalloc): the raw decode rate it measures before
/// sending is the one the daemon's spans per CPU-second are compared with,
/// and its own sending costs the cores it shares with the daemon no more than
/// when it was a subcommand of the daemon's binary.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    runtime::block_on(load(LoadgenArgs::parse()))?
}

/// Runs the load (or the soak) and fails on any problem it found.
async fn load(args: LoadgenArgs) -> anyhow::Result<()> {
    if args.soak {
        return soak(args).await;
    }
    let quiet = args.quiet;
    let report = loadgen::run(&args.options(), |progress| {
        if !quiet {
            eprintln!("{progress}");
        }
    })
    .await?;
    print!("{report}");
    let problems = report.problems(args.allow_refused);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}", list.join("; "));
    }
    Ok(())
}

/// `hopscope-loadgen --soak`: the rows as a Markdown table on stdout (and in
/// CSV to `--out`), the verdict last.
async fn soak(args: LoadgenArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let load = args.options();
    let Until::Elapsed(duration) = load.until else {
        anyhow::bail!("--soak runs for a --duration");
    };
    let opts = loadgen::SoakOptions {
        binary: daemon_binary(args.daemon.clone())?,
        memory_limit_mib: args.memory_limit_mib,
        duration,
        report_every: args.report_every.0,
        warm_up: args.warm_up.map(|w| w.0),
        rate: args.rate,
        capacity_for: args.capacity_for.0,
        load,
    };
    let mut out = match &args.out {
        Some(path) => {
            let mut file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(file, "{}", loadgen::Row::CSV_HEADER)?;
            Some((path, file))
        }
        None => None,
    };
    let mut written = Ok(());
    // On SIGTERM or Ctrl-C the soak is dropped: its daemon is killed and its
    // data directory removed.
    let interrupted = runtime::shutdown_signal()?;
    let soaked = loadgen::soak(&opts, |event| {
        match event {
        loadgen::SoakEvent::Started { pid, data_dir } => println!(
            "daemon: pid {pid}, data directory {}, memory limit {} MiB",
            data_dir.display(),
            opts.memory_limit_mib
        ),
        loadgen::SoakEvent::Capacity { report, capacity } => {
            print!("{report}");
            println!(
                "capacity: {:.0} spans/s (ingest and analysis on every core, at most the \
                 acknowledged rate)",
                capacity
            );
        }
        loadgen::SoakEvent::Soaking { rate, warm_up_rows } => println!(
            "soak: {rate:.0} spans/s for {} s, a row every {} s, warm-up {warm_up_rows} row(s)\n\n{}",
            duration.as_secs(),
            opts.report_every.as_secs(),
            loadgen::Row::HEADER
        ),
        loadgen::SoakEvent::Row(row) => {
            println!("{row}");
            if let Some((path, file)) = &mut out {
                if written.is_ok() {
                    written = writeln!(file, "{}", row.csv())
                        .with_context(|| format!("cannot write {}", path.display()));
                }
            }
        }
    }
    });
    let report = tokio::select! {
        report = soaked => report?,
        () = interrupted => anyhow::bail!("soak interrupted"),
    };
    written?;
    let verdict = &report.verdict;
    if let Some(warm) = report.rows.get(verdict.warm_up_row) {
        println!(
            "\nwarm-up: until minute {:.2} (row {})",
            warm.elapsed.as_secs_f64() / 60.0,
            verdict.warm_up_row + 1
        );
    }
    if verdict.passed() {
        println!(
            "verdict: passed (RSS after the warm-up within +{:.0} % + {} MiB, under {} MiB; \
             nothing dropped or refused; findings stable)",
            loadgen::soak::RSS_GROWTH_SHARE * 100.0,
            loadgen::soak::RSS_GROWTH_KIB / 1024,
            opts.memory_limit_mib
        );
        return Ok(());
    }
    let list: Vec<String> = verdict.problems.iter().map(ToString::to_string).collect();
    println!("verdict: FAILED");
    anyhow::bail!("soak failed: {}", list.join("; "));
}

/// The daemon a soak runs: `--daemon`, else `hopscope` in this binary's
/// directory (where Cargo puts the workspace's binaries side by side).
fn daemon_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match flag {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot find this binary's directory, where `hopscope` is looked for")?
            .with_file_name(format!("hopscope{}", std::env::consts::EXE_SUFFIX)),
    };
    if !path.is_file() {
        anyhow::bail!(
            "no hopscope binary at {} to soak: build it (`cargo build --workspace`, with \
             --release for a release soak) or name it with --daemon PATH",
            path.display()
        );
    }
    Ok(path)
}
