//! The `hopscope-demo` binary: the command line of [`hopscope_demo`].
#![deny(clippy::unwrap_used)] // return an error, or `expect` the invariant that holds

use std::net::SocketAddr;

use clap::Parser;
use hopscope::runtime;
use hopscope_demo::{Demo, DemoOptions, Scenario};

/// Run the daemon with small instrumented services in process (gateway →
/// frontend → orders → inventory, or services over real SQLite pools,
/// exporting OTLP to it), drive a scenario's requests through them, and
/// print the latency share per hop, the statement shapes and the findings
/// the daemon produced.
#[derive(Parser)]
#[command(name = "hopscope-demo", version)]
struct DemoArgs {
    /// What goes wrong behind the gateway
    #[arg(long, value_enum, default_value_t = DemoOptions::default().scenario)]
    scenario: Scenario,

    /// Requests sent through the gateway [default: the scenario's]
    #[arg(long, value_name = "N")]
    requests: Option<usize>,

    /// Requests in flight at once [default: the scenario's]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,

    /// Wall-clock seconds per scenario second: 0.01 makes the gateway's 29 s
    /// timeout last 290 ms; 1 runs real durations
    #[arg(long, value_name = "F", default_value_t = DemoOptions::default().time_scale)]
    time_scale: f64,

    /// Record no pool.acquire span while a request waits for a database
    /// connection: the wait is then only time before the request's first query
    #[arg(long)]
    no_acquire_spans: bool,

    /// Listen address of the daemon's HTTP API [default: an ephemeral port on
    /// 127.0.0.1, printed]
    #[arg(long, value_name = "ADDR")]
    api_addr: Option<SocketAddr>,

    /// After the report, keep the daemon and the services running (to explore
    /// the API with curl, or send more requests) until Ctrl-C
    #[arg(long)]
    keep_running: bool,

    /// Log filter of the daemon and the services, in `tracing` EnvFilter syntax
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    log: String,
}

impl DemoArgs {
    fn options(&self) -> DemoOptions {
        let defaults = DemoOptions::default();
        DemoOptions {
            scenario: self.scenario,
            requests: self.requests,
            concurrency: self.concurrency,
            time_scale: self.time_scale,
            acquire_spans: !self.no_acquire_spans,
            api_addr: self.api_addr.unwrap_or(defaults.api_addr),
            export_via: None,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = DemoArgs::parse();
    runtime::init_logging(&args.log)?;
    runtime::block_on(demo(args))?
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = args.options();
    let demo = Demo::start(&options).await?;
    eprintln!(
        "hopscope API on {}; sending {} requests to {} ({})",
        demo.api_url(),
        options.requests(),
        demo.gateway_url(),
        options.scenario
    );
    if let Some(dir) = demo.data_dir() {
        eprintln!(
            "the SQLite databases are in {} until the demo stops",
            dir.display()
        );
    }
    let report = match demo.drive().await {
        Ok(report) => report,
        Err(e) => {
            let _ = demo.stop().await;
            return Err(e.into());
        }
    };
    print!("{report}");
    if args.keep_running {
        println!(
            "\nStill running until Ctrl-C: the daemon's API on {}, the gateway on {}",
            demo.api_url(),
            demo.gateway_url()
        );
        runtime::shutdown_signal()?.await;
    }
    demo.stop().await?;
    Ok(())
}
