//! `kazaa-supernode`: FastTrack-style KaZaA node: supernode or ordinary-node role, ContentHash downloads.

use clap::Parser;

/// FastTrack-style KaZaA node: supernode or ordinary-node role, ContentHash downloads.
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "kazaa-supernode", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("kazaa-supernode is not implemented yet (see the project's open issues)")
}
