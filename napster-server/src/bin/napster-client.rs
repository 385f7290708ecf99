//! `napster-client`: a scriptable Napster client for the lab.
//!
//! ```text
//! napster-client --server ADDR --nick N [--password P] [--register EMAIL] [--share DIR] [--firewalled] serve
//! napster-client --server ADDR --nick N search "hey jude" [--json]
//! napster-client --server ADDR --nick N browse alice [--json]
//! napster-client --server ADDR --nick N get "hey jude" [--out DIR] [--json]
//! napster-client --server ADDR --nick N [--share DIR] interactive [--out DIR]
//! ```
//! `serve` prints a readiness line once logged in and sharing (`"name":"data"` with the data port, or
//! `"name":"control"` with the control connection's local address when firewalled) and stays online until
//! SIGTERM/Ctrl-C. `get` searches, pings the sources (waiting up to `--ping-window-ms`), ranks them
//! (pongs within `--ping-tie-ms` of the fastest tie and the announced link speed decides, silent ones
//! last), tries the best three in turn (GET with resume from a `.part` file, or a push from a firewalled
//! uploader) and exits 0 on success. Uploads are served only for a 607 we answered, once, within two
//! minutes. `search` prints each result as its 201
//! arrives (`--json`: one `{"event":"hit",...}` line per result, then `{"event":"done",...}`).
//! `--upload-rate`/`--download-rate` cap the client's uploads and downloads (one limiter each, shared by
//! all its transfers). `interactive` (alias `shell`) stays online sharing and reads `search WORDS`,
//! `browse NICK`, `get WORDS` and `quit` from stdin. Not implemented yet: direct browse (640–642),
//! queue-full handling (619/620).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use common::daemon::{install_signals, write_stats, RateArgs};
use common::stats::Stats;
use common::telemetry::{announce_listening, init_tracing};
use napster_server::node::client::{Client, ClientConfig, SearchHit, PING_TIE, PING_WINDOW};

/// A Napster (OpenNap protocol) client.
#[derive(Parser, Debug)]
#[command(
    name = "napster-client",
    version,
    about = "A Napster client (OpenNap protocol): share a folder, search, browse, download",
    long_about = None,
    after_help = "Shares of .mp3 files announce the bitrate, sample rate and duration read from their \
                  frame headers (Xing/Info for VBR); other files announce 128 kbit/s, 44.1 kHz. \
                  --upload-rate caps all uploads together, --download-rate all downloads.\n\
                  `get` pings every source, ranks them by pong time (in --ping-tie-ms bands) and then \
                  announced link speed (silent ones last) and tries the best three; a .part file \
                  left by an earlier run is resumed. Uploads are served only for a 607 the client \
                  answered: once, for that nick and file, within 2 minutes (INVALID REQUEST \
                  otherwise).\n\
                  `interactive` reads search/browse/get commands from stdin while sharing.\n\
                  Not implemented yet: direct browse (640-642), queue-full handling (619/620)."
)]
struct Cli {
    /// Server address.
    #[arg(long, env = "P2PLAB_NAPSTER_SERVER", default_value = "127.0.0.1:8888")]
    server: SocketAddr,
    /// Nick.
    #[arg(long)]
    nick: String,
    /// Password.
    #[arg(long, default_value = "password")]
    password: String,
    /// Register the nick (type 6) with this email instead of logging in.
    #[arg(long, value_name = "EMAIL")]
    register: Option<String>,
    /// Link-speed code 0..=10 (7 = cable).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(0..=10))]
    speed: u8,
    /// Folder to share.
    #[arg(long)]
    share: Option<PathBuf>,
    /// Hash cache and state.
    #[arg(long, default_value = "p2p-lab-data/napster-client")]
    data_dir: PathBuf,
    /// Announce data port 0 (behind a firewall: uploads only by push).
    #[arg(long)]
    firewalled: bool,
    /// Address of the data port (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    data_listen: SocketAddr,
    /// `get`: how long to wait for the sources' pongs before ranking them; sources that have not
    /// answered by then rank last (0: no wait, the announced link speed alone decides).
    #[arg(long, value_name = "MS", default_value_t = PING_WINDOW.as_millis() as u64)]
    ping_window_ms: u64,
    /// `get`: pongs within this much of the fastest count as equally near (the higher announced link
    /// speed goes first among them).
    #[arg(long, value_name = "MS", default_value_t = PING_TIE.as_millis() as u64)]
    ping_tie_ms: u64,
    /// Machine-readable output on stdout.
    #[arg(long)]
    json: bool,
    /// Write stats JSON here on exit (and on SIGUSR1 while serving).
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Caps on this client's total upload (all peers it serves) and download rates.
    #[command(flatten)]
    rates: RateArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Stay online sharing until SIGTERM/Ctrl-C.
    Serve,
    /// Search; print each result as it arrives (--json: one "hit" line each, then a "done" line).
    Search {
        /// Words that must all appear (whole words).
        query: String,
        /// Most results.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// List a user's shared files.
    Browse {
        /// The user.
        nick: String,
    },
    /// Stay online sharing and read commands from stdin (search WORDS, browse NICK, get WORDS, quit).
    #[command(alias = "shell")]
    Interactive {
        /// Output folder for `get`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Search, pick the best source, download.
    Get {
        /// Words that must all appear.
        query: String,
        /// Output folder.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Only download from this user.
        #[arg(long)]
        from: Option<String>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(false);
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    common::daemon::exit_status("napster-client", result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let stats = Stats::new("napster", "client", &cli.nick);
    let cfg = ClientConfig {
        server: cli.server,
        nick: cli.nick.clone(),
        password: cli.password.clone(),
        register: cli.register.clone(),
        speed: cli.speed,
        share: cli.share.clone(),
        data_dir: cli.data_dir.clone(),
        firewalled: cli.firewalled,
        data_listen: cli.data_listen,
        ping_window: Duration::from_millis(cli.ping_window_ms),
        ping_tie: Duration::from_millis(cli.ping_tie_ms),
        upload_limit: cli.rates.upload_limiter(),
        download_limit: cli.rates.download_limiter(),
    };
    let mut client = Client::connect(cfg, stats.clone()).await?;
    let result = match cli.cmd {
        Cmd::Serve => {
            let stop = install_signals(stats.clone(), cli.stats_file.clone());
            match client.data_addr {
                Some(a) => announce_listening("tcp", a, Some("data")),
                None => announce_listening("tcp", client.control_addr, Some("control")),
            }
            tracing::info!(files = client.shared_files, "online and sharing");
            client.serve_until(stop.cancelled_owned()).await;
            Ok(())
        }
        Cmd::Search { query, max } => search(&mut client, &query, max, cli.json).await,
        Cmd::Browse { nick } => browse(&mut client, &nick, cli.json).await,
        Cmd::Get { query, out, from } => {
            get(&mut client, &query, &out, from.as_deref(), cli.json).await
        }
        Cmd::Interactive { out } => {
            match client.data_addr {
                Some(a) => announce_listening("tcp", a, Some("data")),
                None => announce_listening("tcp", client.control_addr, Some("control")),
            }
            interactive(&mut client, &out, cli.json).await
        }
    };
    if let Some(p) = &cli.stats_file {
        write_stats(&stats, p);
    }
    result
}

/// Prints each result as its 201 arrives: with `--json` one `{"event":"hit",...}` line per result
/// (the shape of `gnutella-node search --json`, plus `name`, the file name without its folders), then
/// `{"event":"done","hits":N,"results":N}`; otherwise a table whose rows appear as they arrive. Rust's
/// stdout is line-buffered even into a pipe, so a program reading it sees each hit at once: the lab
/// times "first result" from that line.
async fn search(client: &mut Client, query: &str, max: usize, json: bool) -> anyhow::Result<()> {
    if !json {
        println!("{:<12} {:>10} {:>5}  PATH", "USER", "SIZE", "KBPS");
    }
    let hits = client
        .search_each(query, max, |h| {
            if json {
                println!("{}", hit_line(h));
            } else {
                println!("{:<12} {:>10} {:>5}  {}", h.nick, h.size, h.bitrate, h.path);
            }
        })
        .await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "hits": hits.len(), "results": hits.len()})
        );
    } else {
        eprintln!("{} result(s)", hits.len());
    }
    Ok(())
}

/// One hit as a JSON line: the 201's fields, `"event":"hit"` and `name`.
fn hit_line(h: &SearchHit) -> serde_json::Value {
    let mut v = serde_json::to_value(h).unwrap_or_default();
    v["event"] = "hit".into();
    v["name"] = h.path.rsplit(['\\', '/']).next().unwrap_or_default().into();
    v
}

/// The shell's `search`: one line per command, so with `--json` the whole list as one array once the
/// 202 came.
async fn search_list(
    client: &mut Client,
    query: &str,
    max: usize,
    json: bool,
) -> anyhow::Result<()> {
    if !json {
        return search(client, query, max, json).await;
    }
    let hits = client.search(query, max).await?;
    println!("{}", serde_json::to_string(&hits)?);
    Ok(())
}

async fn browse(client: &mut Client, nick: &str, json: bool) -> anyhow::Result<()> {
    let files = client.browse(nick).await?;
    if json {
        let v: Vec<_> = files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "md5": f.md5, "size": f.size, "bitrate": f.bitrate, "freq": f.freq, "secs": f.secs}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        for f in &files {
            println!("{:>10}  {}", f.size, f.path);
        }
    }
    Ok(())
}

async fn get(
    client: &mut Client,
    query: &str,
    out: &Path,
    from: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let mut hits = client.search(query, 100).await?;
    if let Some(n) = from {
        hits.retain(|h| h.nick.eq_ignore_ascii_case(n));
    }
    if hits.is_empty() {
        bail!("no results for {query:?}");
    }
    let ranked = client.rank_sources(&hits).await?;
    let mut last = None;
    for hit in ranked.iter().take(3) {
        match client.download(hit, out).await {
            Ok(d) => {
                if json {
                    println!("{}", serde_json::to_string(&d)?);
                } else {
                    println!(
                        "{} ({} bytes from {} by {})",
                        d.file.display(),
                        d.size,
                        d.from,
                        d.method
                    );
                }
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(from = %hit.nick, cause = %e, "download failed, trying the next source");
                last = Some(e);
            }
        }
    }
    match last {
        Some(e) => Err(e).context("download failed"),
        None => bail!("no source"),
    }
}

const SHELL_HELP: &str = "commands: search WORDS | browse NICK | get WORDS | help | quit";

/// Reads commands from stdin until `quit` or end of input, sharing (and serving uploads) meanwhile. A
/// failed command prints its reason and the shell goes on.
async fn interactive(client: &mut Client, out: &Path, json: bool) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    eprintln!("{SHELL_HELP}");
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        let r = match cmd {
            "" => Ok(()),
            "search" | "s" if !arg.is_empty() => search_list(client, arg, 100, json).await,
            "browse" | "b" if !arg.is_empty() => browse(client, arg, json).await,
            "get" | "g" if !arg.is_empty() => get(client, arg, out, None, json).await,
            "quit" | "exit" | "q" => break,
            _ => {
                eprintln!("{SHELL_HELP}");
                Ok(())
            }
        };
        if let Err(e) = r {
            println!("error: {e:#}");
        }
    }
    Ok(())
}
