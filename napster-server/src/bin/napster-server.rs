//! `napster-server`: OpenNap-compatible Napster directory server (and, later, the napster-client binary).

use clap::Parser;

/// OpenNap-compatible Napster directory server (and, later, the napster-client binary).
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "napster-server", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("napster-server is not implemented yet (see the project's open issues)")
}
