//! What every daemon shares: the common command-line options and signal handling.
//!
//! - `--listen ADDR` (port 0 picks a free port), `--data-dir DIR`, `--stats-file PATH`, `--log-json`, each
//!   also settable through a `P2PLAB_*` environment variable.
//! - SIGTERM and Ctrl-C (SIGINT) cancel the returned [`CancellationToken`]: the daemon stops accepting,
//!   finishes or drops its connections and writes its stats file before exiting.
//! - SIGUSR1 writes the stats file at once ("stats on request") without stopping.
//! - [`RateArgs`]: `--upload-rate` / `--download-rate` for nodes that move files.
//! - [`exit_status`]: how every binary ends — exit 0, or a one-line reason on stderr and exit 1.

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

/// The transfer caps every node that moves files accepts (flatten it beside [`DaemonArgs`] in nodes that share;
/// directory servers and trackers do not take it). The lab uses it to give loopback peers realistic link speeds,
/// without which a flash crowd on one machine finishes before any design difference shows.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RateArgs {
    /// Cap on this node's total upload payload rate, bytes per second, shared by all its uploads
    /// (suffixes k, M, G are powers of 1024: `256k`, `1.5M`). Unlimited when absent.
    #[arg(long, env = "P2PLAB_UPLOAD_RATE", value_name = "BYTES_PER_SEC", value_parser = parse_rate)]
    pub upload_rate: Option<u64>,

    /// Cap on this node's total download payload rate, bytes per second (same syntax), shared by all its
    /// downloads. Unlimited when absent.
    #[arg(long, env = "P2PLAB_DOWNLOAD_RATE", value_name = "BYTES_PER_SEC", value_parser = parse_rate)]
    pub download_rate: Option<u64>,
}

impl RateArgs {
    /// One limiter shared by every upload of the node, or `None` when uploads are unlimited.
    pub fn upload_limiter(&self) -> Option<crate::ratelimit::RateLimiter> {
        self.upload_rate.map(crate::ratelimit::RateLimiter::new)
    }

    /// One limiter shared by every download of the node (`DownloadConfig::rate_limit` in
    /// [`crate::multisource`]), or `None` when downloads are unlimited.
    pub fn download_limiter(&self) -> Option<crate::ratelimit::RateLimiter> {
        self.download_rate.map(crate::ratelimit::RateLimiter::new)
    }
}

/// Parses a byte rate: a non-negative number with an optional `k`/`K`, `m`/`M` or `g`/`G` suffix (powers of
/// 1024) and an optional trailing `B`, `B/s` or `/s`. Zero is refused: it would stall every transfer forever.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024f64),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024f64 * 1024.0),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024f64 * 1024.0 * 1024.0),
        _ => (t, 1f64),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a byte rate: {text:?} (examples: 65536, 256k, 1.5M)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("not a byte rate: {text:?}"));
    }
    let bytes = (value * mult).round();
    if bytes < 1.0 {
        return Err(format!(
            "rate {text:?} is zero; leave the option out for no cap"
        ));
    }
    if bytes > u64::MAX as f64 {
        return Err(format!("rate {text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// Installs the signal handlers of a daemon (must be called inside a tokio runtime).
///
/// Returns a token cancelled on SIGTERM or SIGINT. SIGUSR1 writes `stats` to `stats_file` when one is set
/// (and is only logged otherwise).
/// The handlers are registered with the OS before this returns, not later in the tasks that serve them:
/// a daemon prints its readiness line right after, and a supervisor may signal it at once (the lab's
/// SIGUSR1 stats snapshot). A signal arriving before registration gets the default action, which for
/// SIGUSR1 and SIGTERM is to terminate the process without writing stats.
pub fn install_signals(stats: Stats, stats_file: Option<PathBuf>) -> CancellationToken {
    use tokio::signal::unix::{signal, SignalKind};
    let token = CancellationToken::new();
    let t = token.clone();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
                t.cancel();
            });
        }
        _ => tracing::error!("cannot install SIGTERM/SIGINT handlers"),
    }
    // SIGUSR1 is taken even without a stats file: a supervisor asking for stats must not kill the node
    // (SIGUSR1's default action is to terminate).
    match signal(SignalKind::user_defined1()) {
        Ok(mut usr1) => {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    match &stats_file {
                        Some(path) => write_stats(&stats, path),
                        None => tracing::info!("SIGUSR1: no --stats-file to write"),
                    }
                }
            });
        }
        Err(_) => tracing::error!("cannot install SIGUSR1 handler"),
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

/// The one-line failure reason a binary prints: `<bin>: <error and its causes, joined by ": ">`.
///
/// Errors from `anyhow` (and any error whose alternate `Display` prints its chain) come out on one line, so a
/// script or the lab can show the reason as it is. Newlines inside a message are flattened for the same reason,
/// and a cause repeated right after itself is printed once.
pub fn failure_line<E: std::fmt::Display>(bin: &str, error: &E) -> String {
    let text = format!("{error:#}");
    let flat: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    // Errors that print their source inside their own message and also return it from `source()` make
    // the chain say the same thing twice ("I/O: not found: not found"): keep one copy.
    let mut parts: Vec<&str> = Vec::new();
    let joined = flat.join(" ");
    for part in joined.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    format!("{bin}: {}", parts.join(": "))
}

/// Ends a binary the project's way: `Ok` exits 0; an error prints [`failure_line`] on stderr and exits 1.
///
/// `main` returning `anyhow::Result` would print `Error: ...` and a multi-line "Caused by:" list instead.
pub fn exit_status<E: std::fmt::Display>(
    bin: &str,
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", failure_line(bin, &e));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{failure_line, parse_rate};

    #[derive(Debug)]
    struct Chain;
    impl std::fmt::Display for Chain {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if f.alternate() {
                write!(
                    f,
                    "cannot open x.torrent: No such file or directory (os error 2)"
                )
            } else {
                write!(f, "cannot open x.torrent")
            }
        }
    }

    #[test]
    fn failure_line_is_one_line_with_the_whole_chain() {
        assert_eq!(
            failure_line("tool", &Chain),
            "tool: cannot open x.torrent: No such file or directory (os error 2)"
        );
        assert_eq!(
            failure_line("tool", &"first\n  second\n"),
            "tool: first second"
        );
        assert_eq!(
            failure_line(
                "tool",
                &"loading a: I/O: gone (os error 2): gone (os error 2)"
            ),
            "tool: loading a: I/O: gone (os error 2)"
        );
    }

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_rate("65536"), Ok(65536));
        assert_eq!(parse_rate("256k"), Ok(256 * 1024));
        assert_eq!(parse_rate("256KB/s"), Ok(256 * 1024));
        assert_eq!(parse_rate("1.5M"), Ok(1536 * 1024));
        assert_eq!(parse_rate("2G"), Ok(2 << 30));
        assert_eq!(parse_rate(" 10 "), Ok(10));
    }

    #[test]
    fn bad_rates_are_refused() {
        for bad in ["", "0", "0k", "-5", "fast", "1.5X", "NaN", "inf", "1e400"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rate_args_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            rates: super::RateArgs,
        }
        let cli = Cli::try_parse_from(["x", "--upload-rate", "64k"]).unwrap();
        assert_eq!(cli.rates.upload_rate, Some(65536));
        assert_eq!(cli.rates.download_rate, None);
        assert!(cli.rates.upload_limiter().is_some());
        assert!(Cli::try_parse_from(["x", "--upload-rate", "0"]).is_err());
    }
}
