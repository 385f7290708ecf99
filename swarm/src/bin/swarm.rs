//! `swarm`: the lab's command line (see the crate README).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use swarm::lab::{default_bin_dir, RunOptions};
use swarm::scenario::{Scenario, EXAMPLE};

/// The lab: runs the same searches and downloads through Napster, Gnutella, KaZaA and BitTorrent (their
/// real binaries, on loopback) and writes a comparison table, results.json and report.html.
///
/// Wired: Napster, Gnutella (ultrapeers and leaves, or the classic flood), KaZaA (supernodes and ordinary
/// nodes) and BitTorrent. A system whose binary is missing or a placeholder is reported as "not available
/// yet" with the reason.
///
/// Per-peer rate caps (scenario `upload_rate`, `download_rate`, `downloader_upload_rate`,
/// `downloader_download_rate`) are passed as `--upload-rate`/`--download-rate` to every binary whose
/// `--help` lists them; the report's "rate caps" section says which binaries took them and which ran
/// uncapped. Scenarios in swarm/scenarios/: flash-crowd (client-server vs BitTorrent as downloaders grow),
/// gnutella-flood-ttl (flood cost vs TTL beside the tree formula), expanding-ring, kazaa-source-loss,
/// pollution, churn, gnutella-classic-flood, gnutella-ultrapeers.
///
/// Not done: the flood formula assumes an even degree (the measured overlay is not regular); each
/// scenario runs once (no repeated runs, no error bars).
#[derive(Parser, Debug)]
#[command(name = "swarm", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Where report.html and results.json go.
    #[arg(long, default_value = "swarm-report")]
    out: PathBuf,
    /// Folder of the workspace binaries (default: the folder of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the built-in demo scenario.
    Demo {
        /// A reduced swarm that runs in seconds.
        #[arg(long)]
        small: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Run a scenario file.
    Run {
        /// The TOML scenario (see `swarm example-scenario`).
        scenario: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Print a commented scenario with the demo's values.
    ExampleScenario,
    /// Write the table and report.html again from a results.json (no run).
    Report {
        /// A results.json written by `demo` or `run`.
        results: PathBuf,
        /// Where report.html goes.
        #[arg(long, default_value = "swarm-report")]
        out: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    common::telemetry::init_tracing(false);
    common::daemon::exit_status("swarm", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (scn, common) = match cli.cmd {
        Cmd::ExampleScenario => {
            print!("{EXAMPLE}");
            return Ok(());
        }
        Cmd::Demo { small, common } => (
            if small {
                Scenario::small()
            } else {
                Scenario::default()
            },
            common,
        ),
        Cmd::Run { scenario, common } => (Scenario::load(&scenario)?, common),
        Cmd::Report { results, out } => {
            let text = std::fs::read(&results)
                .with_context(|| format!("reading {}", results.display()))?;
            let res: swarm::results::Results = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a results.json", results.display()))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let html = out.join("report.html");
            std::fs::write(&html, swarm::report::html(&res))
                .with_context(|| format!("writing {}", html.display()))?;
            print!("{}", swarm::report::table(&res));
            println!("wrote {}", html.display());
            return Ok(());
        }
    };
    swarm::supervisor::install_interrupt_handler()?;
    let bins = match common.bin_dir {
        Some(b) => b,
        None => {
            let b = default_bin_dir();
            if let Some(what) = swarm::lab::ensure_binaries(&b) {
                eprintln!("swarm: {what}");
            }
            b
        }
    };
    let opts = RunOptions {
        bins,
        quiet: common.quiet,
    };
    let res = swarm::lab::run(&scn, &opts);
    swarm::supervisor::park_if_interrupted();
    let res = res?;
    std::fs::create_dir_all(&common.out)
        .with_context(|| format!("creating {}", common.out.display()))?;
    let json = common.out.join("results.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&res)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = common.out.join("report.html");
    std::fs::write(&html, swarm::report::html(&res))
        .with_context(|| format!("writing {}", html.display()))?;
    print!("{}", swarm::report::table(&res));
    println!("wrote {} and {}", json.display(), html.display());
    Ok(())
}
