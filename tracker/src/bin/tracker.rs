//! `tracker`: BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 48 scrape, BEP 15 UDP.

use clap::Parser;

/// BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 48 scrape, BEP 15 UDP.
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "tracker", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("tracker is not implemented yet (see the project's open issues)")
}
