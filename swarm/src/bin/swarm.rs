//! `swarm`: The lab: starts a local multi-protocol swarm, runs the same downloads through each system, reports.

use clap::Parser;

/// The lab: starts a local multi-protocol swarm, runs the same downloads through each system, reports.
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "swarm", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("swarm is not implemented yet (see the project's open issues)")
}
