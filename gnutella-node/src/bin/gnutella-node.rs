//! `gnutella-node`: Gnutella 0.6 servent: TTL-scoped flooding, ultrapeer/leaf roles, QRP, and a classic 0.4 mode.

use clap::Parser;

/// Gnutella 0.6 servent: TTL-scoped flooding, ultrapeer/leaf roles, QRP, and a classic 0.4 mode.
///
/// NOT IMPLEMENTED YET: this binary only documents what it will be. It exits with a non-zero status.
#[derive(Parser, Debug)]
#[command(name = "gnutella-node", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("gnutella-node is not implemented yet (see the project's open issues)")
}
