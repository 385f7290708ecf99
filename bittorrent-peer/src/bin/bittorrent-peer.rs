//! `bittorrent-peer`: BitTorrent metainfo tool, seeder and leecher.
//!
//! ```text
//! bittorrent-peer create PATH --tracker URL [--tracker URL2] [--piece-size BYTES] [-o FILE.torrent]
//! bittorrent-peer show FILE.torrent [--json]
//! bittorrent-peer download FILE.torrent|MAGNET --out DIR [--listen ADDR] [--peer ADDR]... [--seed | --seed-time SECS]
//! bittorrent-peer seed FILE.torrent --dir DIR [--listen ADDR] [--peer ADDR]...
//!     both: [--upload-rate BYTES/S] [--download-rate BYTES/S] [--no-trackers] [--stats-file F] [--json]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bittorrent_peer::metainfo::{create, CreateOptions, Magnet, Metainfo};
use bittorrent_peer::node::{Config, Node};
use bittorrent_peer::storage::OpenMode;
use clap::{Args, Parser, Subcommand};
use common::daemon::{install_signals, write_stats, DaemonArgs, RateArgs};
use common::stats::Stats;
use common::telemetry::{announce_listening, init_tracing};

/// BitTorrent metainfo tool, seeder and leecher: rarest-first and tit-for-tat (BEP 3, BEP 6 fast
/// extension, BEP 9/10 magnet metadata, BEP 11 peer exchange, BEP 12 tiers, BEP 15 UDP trackers).
/// DHT (BEP 5) is NOT implemented: a magnet link needs `x.pe` peers, `--peer` or a tracker to find
/// its first peer (PEX then finds the others). Not done yet: sending BEP 6 allowed-fast sets (those
/// received are used), BEP 7 `ipv6` announce parameter, encryption (MSE), uTP.
#[derive(Parser, Debug)]
#[command(name = "bittorrent-peer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Hash a file or folder into a .torrent.
    Create {
        /// File or folder to share.
        path: PathBuf,
        /// Tracker announce URL; each --tracker is its own tier (BEP 12).
        #[arg(long)]
        tracker: Vec<String>,
        /// Piece size in bytes (default: 256 KiB, doubled for big payloads).
        #[arg(long)]
        piece_size: Option<u64>,
        /// Output file (default: NAME.torrent in the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Comment to embed.
        #[arg(long)]
        comment: Option<String>,
        /// Set the BEP 27 private flag.
        #[arg(long)]
        private: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a .torrent's name, size, files, pieces, info_hash, trackers and magnet link.
    Show {
        /// The .torrent file.
        torrent: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a torrent into DIR; exits 0 once every piece is verified.
    Download {
        /// A .torrent file or a magnet link (metadata fetched from peers with BEP 9).
        torrent: String,
        /// Folder to download into.
        #[arg(long)]
        out: PathBuf,
        /// Keep seeding after the download completes, until stopped.
        #[arg(long)]
        seed: bool,
        /// Keep seeding this many seconds after the download completes, then exit 0 (implies --seed).
        #[arg(long, value_name = "SECS")]
        seed_time: Option<u64>,
        #[command(flatten)]
        common: PeerArgs,
    },
    /// Seed the complete content found in DIR until stopped.
    Seed {
        /// The .torrent file.
        torrent: PathBuf,
        /// Folder holding the content (DIR/NAME).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        common: PeerArgs,
    },
}

#[derive(Args, Debug)]
struct PeerArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// `--upload-rate` / `--download-rate`: caps on piece payload for the whole node, shared by all
    /// its connections (control messages are not counted).
    #[command(flatten)]
    rate: RateArgs,
    /// Peer to connect to (repeatable), besides the trackers'.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// Do not announce to the torrent's trackers.
    #[arg(long)]
    no_trackers: bool,
    /// Seed of the random choices (piece order, optimistic unchoke), for reproducible runs.
    #[arg(long)]
    rng_seed: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn show(m: &Metainfo, json: bool) -> anyhow::Result<()> {
    if json {
        let files: Vec<_> = m
            .info
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.rel_path(&m.info), "length": f.length}))
            .collect();
        let v = serde_json::json!({
            "name": m.info.name,
            "info_hash": m.info_hash.to_hex(),
            "total_length": m.info.total_length,
            "piece_length": m.info.piece_length,
            "pieces": m.info.num_pieces(),
            "private": m.info.private,
            "files": files,
            "trackers": m.trackers,
            "magnet": m.magnet(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("name:       {}", m.info.name);
    println!("info_hash:  {}", m.info_hash);
    println!(
        "size:       {} ({} bytes)",
        human(m.info.total_length),
        m.info.total_length
    );
    println!(
        "pieces:     {} x {}",
        m.info.num_pieces(),
        human(m.info.piece_length)
    );
    if m.info.private {
        println!("private:    yes");
    }
    for (i, tier) in m.trackers.iter().enumerate() {
        println!("tier {i}:     {}", tier.join(" "));
    }
    if let Some(c) = &m.comment {
        println!("comment:    {c}");
    }
    if let Some(c) = &m.created_by {
        println!("created by: {c}");
    }
    println!("files:");
    for f in &m.info.files {
        println!("  {}  ({} bytes)", f.rel_path(&m.info).display(), f.length);
    }
    println!("magnet:     {}", m.magnet());
    Ok(())
}

/// Loads a .torrent, or for a magnet link fetches the metadata from peers (BEP 9) and adds the link's
/// `x.pe` peers to the ones to dial.
async fn load_torrent(arg: &str, a: &mut PeerArgs) -> anyhow::Result<Metainfo> {
    if arg.starts_with("magnet:") {
        init_tracing(a.daemon.log_json);
        let m = Magnet::parse(arg).context("parsing the magnet link")?;
        a.peers
            .extend(m.peers.iter().filter_map(|p| p.parse::<SocketAddr>().ok()));
        let port = a.daemon.listen.map(|l| l.port()).unwrap_or(6881);
        return bittorrent_peer::node::metadata::fetch(&m, &a.peers, port, !a.no_trackers)
            .await
            .with_context(|| format!("fetching the metadata of {}", m.info_hash));
    }
    Metainfo::load(std::path::Path::new(arg)).with_context(|| format!("loading {arg}"))
}

async fn run_node(
    meta: Metainfo,
    dir: PathBuf,
    mode: OpenMode,
    keep: bool,
    seed_time: Option<u64>,
    a: PeerArgs,
) -> anyhow::Result<()> {
    init_tracing(a.daemon.log_json);
    let stats = Stats::new("bittorrent", "leecher", "bittorrent-peer");
    let shutdown = install_signals(stats.clone(), a.daemon.stats_file.clone());
    // Let the signal tasks register their handlers before the readiness line: a SIGUSR1 sent as soon as
    // we are listening must dump stats, not kill us (its default action).
    tokio::task::yield_now().await;
    let cfg = Config {
        listen: a.daemon.listen_or(6881),
        peers: a.peers.clone(),
        keep_seeding: keep || seed_time.is_some(),
        seed_time: seed_time.map(std::time::Duration::from_secs),
        upload_limit: a.rate.upload_limiter(),
        download_limit: a.rate.download_limiter(),
        use_trackers: !a.no_trackers,
        data_dir: a.daemon.data_dir.clone(),
        rng_seed: a.rng_seed,
        progress: !a.quiet,
    };
    if let Some(d) = &cfg.data_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let name = meta.info.name.clone();
    let total = meta.info.total_length;
    let node = Node::bind(meta, &dir, mode, cfg, stats.clone()).await?;
    let addr = node.local_addr();
    stats.set_node(&addr.to_string());
    announce_listening("tcp", addr, None);
    let summary = node.run(shutdown).await?;
    if let Some(p) = &a.daemon.stats_file {
        write_stats(&stats, p);
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if mode == OpenMode::Create && !summary.complete {
        bail!(
            "stopped before completion: {} pieces verified of {name}",
            summary.pieces
        );
    }
    if mode == OpenMode::Create {
        eprintln!(
            "{name}: {} verified in {:.2} s ({:.1} MB/s)",
            human(total),
            summary.seconds,
            summary.downloaded as f64 / summary.seconds.max(1e-6) / 1e6
        );
    }
    Ok(())
}

/// Failures end with one line on stderr (the error and its causes, `: `-separated) and exit code 1.
fn main() -> std::process::ExitCode {
    common::daemon::exit_status("bittorrent-peer", run(Cli::parse()))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Create {
            path,
            tracker,
            piece_size,
            output,
            comment,
            private,
            json,
        } => {
            let opts = CreateOptions {
                trackers: tracker.into_iter().map(|t| vec![t]).collect(),
                piece_length: piece_size,
                comment,
                private,
                creation_date: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs() as i64),
            };
            let m = create(&path, &opts).with_context(|| format!("hashing {}", path.display()))?;
            let out = output.unwrap_or_else(|| PathBuf::from(format!("{}.torrent", m.info.name)));
            std::fs::write(&out, m.to_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"torrent": out, "info_hash": m.info_hash.to_hex(), "magnet": m.magnet()})
                );
            } else {
                println!("{}  {}", m.info_hash, out.display());
            }
            Ok(())
        }
        Cmd::Show { torrent, json } => {
            let m = Metainfo::load(&torrent)
                .with_context(|| format!("loading {}", torrent.display()))?;
            show(&m, json)
        }
        Cmd::Download {
            torrent,
            out,
            seed,
            seed_time,
            mut common,
        } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            runtime()?.block_on(async move {
                let meta = load_torrent(&torrent, &mut common).await?;
                run_node(meta, out, OpenMode::Create, seed, seed_time, common).await
            })
        }
        Cmd::Seed {
            torrent,
            dir,
            common,
        } => {
            let meta = Metainfo::load(&torrent)
                .with_context(|| format!("loading {}", torrent.display()))?;
            runtime()?.block_on(run_node(meta, dir, OpenMode::Existing, true, None, common))
        }
    }
}

/// One thread: every connection shares the torrent state, so a single core without lock contention is
/// the fastest layout (and leaves the other core to the peer on the same machine).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
