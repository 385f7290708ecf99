//! `bittorrent-peer`: BitTorrent metainfo tool, seeder and leecher: rarest-first and tit-for-tat.

use clap::Parser;

/// BitTorrent metainfo tool, seeder and leecher: rarest-first and tit-for-tat.
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "bittorrent-peer", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("bittorrent-peer is not implemented yet (see the project's open issues)")
}
