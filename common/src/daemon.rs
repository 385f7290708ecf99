//! What every daemon shares: the common command-line options and signal handling.
//!
//! - `--listen ADDR` (port 0 picks a free port), `--data-dir DIR`, `--stats-file PATH`, `--log-json`, each
//!   also settable through a `P2PLAB_*` environment variable.
//! - SIGTERM and Ctrl-C (SIGINT) cancel the returned [`CancellationToken`]: the daemon stops accepting,
//!   finishes or drops its connections and writes its stats file before exiting.
//! - SIGUSR1 writes the stats file at once ("stats on request") without stopping.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Options every daemon accepts. Flatten it into the binary's clap `Parser`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DaemonArgs {
    /// Address to listen on; port 0 picks a free port (printed in the readiness line on stdout).
    /// Defaults to 127.0.0.1 and the protocol's historical port.
    #[arg(long, env = "P2PLAB_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Directory for state that must survive a restart (accounts, caches, download progress).
    #[arg(long, env = "P2PLAB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write the stats JSON here on exit and on SIGUSR1.
    #[arg(long, env = "P2PLAB_STATS_FILE", value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// Log JSON lines on stderr instead of text (RUST_LOG still filters).
    #[arg(long, env = "P2PLAB_LOG_JSON")]
    pub log_json: bool,
}

impl DaemonArgs {
    /// The listen address, or `127.0.0.1:default_port`.
    pub fn listen_or(&self, default_port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)))
    }

    /// The data directory, created if missing; defaults to `./p2p-lab-data/<name>`.
    pub fn data_dir_or(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("p2p-lab-data").join(name));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// Installs the signal handlers of a daemon (must be called inside a tokio runtime).
///
/// Returns a token cancelled on SIGTERM or SIGINT. SIGUSR1 writes `stats` to `stats_file` when one is set.
pub fn install_signals(stats: Stats, stats_file: Option<PathBuf>) -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGTERM/SIGINT handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    if let Some(path) = stats_file {
        tokio::spawn(async move {
            let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
                tracing::error!("cannot install SIGUSR1 handler");
                return;
            };
            while usr1.recv().await.is_some() {
                write_stats(&stats, &path);
            }
        });
    }
    token
}

/// Writes the stats file, logging (not failing) on error: losing a stats file must not kill a node.
pub fn write_stats(stats: &Stats, path: &Path) {
    match stats.write_json(path) {
        Ok(()) => tracing::debug!(path = %path.display(), "stats written"),
        Err(e) => tracing::error!(path = %path.display(), cause = %e, "cannot write stats"),
    }
}
