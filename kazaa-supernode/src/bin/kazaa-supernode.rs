//! `kazaa-supernode`: FastTrack-style KaZaA node (supernode or ordinary node) and a search client.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use common::hash::{HashKinds, Sig2Dat, UuHash};
use common::http::{HttpConfig, HttpServer};
use common::library::{Library, LibraryConfig};
use common::multisource::{DownloadConfig, Event};
use indicatif::{ProgressBar, ProgressStyle};
use kazaa_supernode::codec::message::{FileMeta, Query};
use kazaa_supernode::codec::tag::code;
use kazaa_supernode::codec::{MediaType, Realm, Tag};
use kazaa_supernode::node::get::{get, GetOptions};
use kazaa_supernode::node::http::KazaaRouter;
use kazaa_supernode::node::{run_supernode, OnClient};
use kazaa_supernode::protocol::matching::terms;
use kazaa_supernode::protocol::ordinary::{choose_supernode, NodeCache, Probe};
use kazaa_supernode::protocol::supernode::SupernodeConfig;

/// FastTrack-style KaZaA node: supernode or ordinary-node role, and a `search` client.
///
/// Works: the supernode role (index of children's shares, SN<->SN forwarding, result waves), the
/// ordinary role registering its shared folder with the best of its `--peer` SNs (with failover) and
/// serving it over HTTP (GET /.hash=, X-Kazaa-* headers, 503 when slots are full), `search`, and `get`
/// (multi-source download by hash with re-search, push + GIVE for firewalled sources), SN hopping.
/// NOT IMPLEMENTED YET: `--role auto`, HTTP on a supernode's port (501), an upload queue ordered by
/// participation level. The FastTrack cipher is replaced by a documented pass-through, so historical
/// clients cannot log in.
#[derive(Parser, Debug)]
#[command(name = "kazaa-supernode", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
    /// Role of this node.
    #[arg(long, value_enum, default_value_t = Role::Supernode)]
    role: Role,
    /// A supernode to link to (supernode role) or to choose from (ordinary role). Repeatable.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// Folder to share (ordinary role).
    #[arg(long, value_name = "DIR")]
    share: Option<PathBuf>,
    /// Username.
    #[arg(long, default_value = "kazaa-lab")]
    user: String,
    /// Network name exchanged at login.
    #[arg(long, default_value = "KaZaA")]
    network: String,
    /// Children a supernode accepts.
    #[arg(long, default_value_t = 100)]
    max_children: usize,
    /// Linked supernodes a query is forwarded to.
    #[arg(long, default_value_t = 6)]
    fanout: usize,
    /// Hops a forwarded query may travel (at most 6).
    #[arg(long, default_value_t = 6)]
    hop_limit: u8,
    /// Simultaneous uploads (ordinary role); more requests get 503 + Retry-After.
    #[arg(long, default_value_t = 4)]
    upload_slots: usize,
    /// Retry-After seconds sent with a 503 (giFT: 300).
    #[arg(long, default_value_t = 300)]
    retry_after: u64,
    /// Advertise port 0 (ordinary role), as an ON behind NAT: downloads reach it by push + GIVE.
    #[arg(long)]
    firewalled: bool,
    /// SN hopping (ordinary role): move to another cached supernode every this many seconds.
    #[arg(long, value_name = "SECS")]
    hop_every: Option<u64>,
    /// Cap on each upload's rate, bytes per second (ordinary role).
    #[arg(long, value_name = "BYTES_PER_SEC")]
    rate: Option<u64>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Supernode,
    Ordinary,
    /// Not implemented yet.
    Auto,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Log in to a supernode as an ordinary node, search, print the result waves.
    Search {
        /// The supernode.
        #[arg(long = "peer", value_name = "ADDR")]
        peer: SocketAddr,
        /// "Up to x" results.
        #[arg(long, default_value_t = 50)]
        max: u16,
        /// Search by ContentHash (40 hex digits) instead of keywords.
        #[arg(long)]
        hash: Option<String>,
        /// Seconds to wait for the end of results.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Keywords.
        words: Vec<String>,
        /// Network name.
        #[arg(long, default_value = "KaZaA")]
        network: String,
    },
    /// Download a file by ContentHash from every source the supernode finds, in parallel.
    Get {
        /// The supernode to search through.
        #[arg(long = "peer", value_name = "ADDR")]
        peer: SocketAddr,
        /// ContentHash (40 hex digits) or a `sig2dat://` link (pins the hash and length).
        target: String,
        /// Output file.
        #[arg(long, short)]
        out: PathBuf,
        /// Block size in bytes.
        #[arg(long, default_value_t = 256 * 1024)]
        block_size: u32,
        /// One JSON report on stdout instead of the progress bar.
        #[arg(long)]
        json: bool,
        /// Network name.
        #[arg(long, default_value = "KaZaA")]
        network: String,
    },
}

fn open_library(dir: &PathBuf, data_dir: Option<&PathBuf>) -> anyhow::Result<Library> {
    let mut cfg = LibraryConfig::new(dir).kinds(HashKinds {
        uuhash: true,
        ..Default::default()
    });
    if let Some(d) = data_dir {
        cfg = cfg.data_dir(d);
    }
    Library::open(cfg).with_context(|| format!("cannot scan {}", dir.display()))
}

fn shares_of(lib: &Library) -> Vec<FileMeta> {
    lib.files()
        .iter()
        .filter_map(|f| {
            let hash = f.hashes.uuhash?;
            Some(FileMeta {
                media: MediaType::from_name(f.name()).code(),
                hash,
                file_id: u32::from(hash.file_id()),
                size: f.size,
                tags: vec![Tag::string(code::FILENAME, f.name())],
            })
        })
        .collect()
}

fn v4(a: SocketAddr) -> anyhow::Result<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(_) => bail!("FastTrack carries IPv4 addresses only: {a}"),
    }
}

async fn ordinary(cli: Cli) -> anyhow::Result<()> {
    if cli.peers.is_empty() {
        bail!("--role ordinary needs at least one --peer supernode");
    }
    let listen = cli.daemon.listen_or(1214);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let http = v4(listener.local_addr()?)?;
    let lib = match &cli.share {
        Some(d) => Some(Arc::new(open_library(d, cli.daemon.data_dir.as_ref())?)),
        None => None,
    };
    let shares = lib.as_deref().map(shares_of).unwrap_or_default();
    let stats = common::stats::Stats::new("kazaa", "ordinary", &http.to_string());
    let shutdown = common::daemon::install_signals(stats.clone(), cli.daemon.stats_file.clone());
    let current_sn = Arc::new(Mutex::new(None));
    let router = KazaaRouter::new(lib, &cli.user, &cli.network, http, current_sn.clone());
    let http_cfg = HttpConfig {
        upload_slots: cli.upload_slots,
        retry_after: Duration::from_secs(cli.retry_after),
        per_connection_rate: cli.rate,
        ..HttpConfig::default()
    };
    common::telemetry::announce_listening("tcp", http.into(), None);
    let server = HttpServer::new(router, http_cfg, stats.clone());
    {
        let (server, shutdown) = (server.clone(), shutdown.clone());
        tokio::spawn(async move { server.serve(listener, shutdown).await });
    }
    // A firewalled ON advertises port 0: downloaders must push (0x0D) and it connects back with GIVE.
    let advertised = if cli.firewalled {
        SocketAddrV4::new(*http.ip(), 0)
    } else {
        http
    };
    let mut cache = NodeCache::new();
    let boot: Vec<SocketAddrV4> = cli.peers.iter().map(|p| v4(*p)).collect::<Result<_, _>>()?;
    cache.bootstrap(&boot, Instant::now());
    let mut rng = rand::thread_rng();
    let mut previous = None;
    while !shutdown.is_cancelled() {
        // Probe up to 5 SNs, keep the best session, close the others.
        let mut sessions = Vec::new();
        for addr in cache.probe_candidates(Instant::now(), previous, &mut rng) {
            match OnClient::connect(
                addr.into(),
                &cli.network,
                http,
                &cli.user,
                &[],
                Some(&stats),
            )
            .await
            {
                Ok(mut c) => {
                    let _ = c.wait_login(Duration::from_secs(5)).await;
                    let load = c.login.nodes.first().map(|n| n.load).unwrap_or(50);
                    cache.merge(&c.login.nodes, Instant::now());
                    sessions.push((
                        Probe {
                            addr,
                            rtt: c.rtt,
                            load,
                        },
                        c,
                    ));
                }
                Err(e) => {
                    tracing::info!(sn = %addr, error = %e, "probe failed");
                    cache.mark_failed(addr, Instant::now());
                }
            }
        }
        let probes: Vec<Probe> = sessions.iter().map(|(p, _)| *p).collect();
        let Some(best) = choose_supernode(&probes, Some(http)) else {
            tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(Duration::from_secs(1)) => continue }
        };
        drop(probes);
        let (_, client) = sessions
            .into_iter()
            .find(|(p, _)| p.addr == best)
            .expect("chosen among probes");
        drop(client);
        // Register on a fresh session: probes registered nothing.
        let mut c = match OnClient::connect(
            best.into(),
            &cli.network,
            advertised,
            &cli.user,
            &shares,
            Some(&stats),
        )
        .await
        {
            Ok(c) => c,
            Err(_) => {
                cache.mark_failed(best, Instant::now());
                continue;
            }
        };
        tracing::info!(sn = %best, files = shares.len(), "registered with supernode");
        stats.set_extra("supernode", serde_json::Value::String(best.to_string()));
        *current_sn.lock().unwrap_or_else(|e| e.into_inner()) = Some(best);
        let hop = async {
            match cli.hop_every {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = c.hold(&shutdown, |push_id, requester| {
                let (server, shutdown, stats) = (server.clone(), shutdown.clone(), stats.clone());
                tokio::spawn(async move {
                    if let Err(e) = give(push_id, requester, server, shutdown).await {
                        stats.error("give");
                        tracing::info!(%requester, error = %e, "push connect-back failed");
                    }
                });
            }) => if let Err(e) = r {
                tracing::info!(sn = %best, error = %e, "supernode lost; failing over");
                cache.mark_failed(best, Instant::now());
            },
            _ = hop => {
                // SN hopping (K-Lite's KaZuperNodes, giFT's "dance"): leave this SN for another one, so
                // the next searches see that SN's children.
                tracing::info!(sn = %best, "hopping to another supernode");
                previous = Some(best);
                stats.add_gauge("sn_hops", 1);
                continue;
            }
        }
        previous = None;
    }
    if let Some(p) = &cli.daemon.stats_file {
        common::daemon::write_stats(&stats, p);
    }
    Ok(())
}

/// Push connect-back (§4 "Push"): connect to the requester, send `GIVE <push id>\r\n`, then serve its
/// GET on that socket.
async fn give(
    push_id: u32,
    requester: SocketAddrV4,
    server: HttpServer,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(requester),
    )
    .await??;
    s.write_all(format!("GIVE {push_id}\r\n").as_bytes())
        .await?;
    server
        .serve_connection(s, requester.into(), shutdown)
        .await?;
    Ok(())
}

async fn supernode(cli: Cli) -> anyhow::Result<()> {
    let listen = cli.daemon.listen_or(1214);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = v4(listener.local_addr()?)?;
    let mut cfg = SupernodeConfig::new(addr);
    cfg.network = cli.network.clone();
    cfg.max_children = cli.max_children;
    cfg.fanout = cli.fanout;
    cfg.hop_limit = cli.hop_limit.min(6);
    cfg.seed = rand::random();
    let stats = common::stats::Stats::new("kazaa", "supernode", &addr.to_string());
    let shutdown = common::daemon::install_signals(stats.clone(), cli.daemon.stats_file.clone());
    common::telemetry::announce_listening("tcp", addr.into(), None);
    run_supernode(listener, cfg, cli.peers.clone(), stats.clone(), shutdown).await?;
    if let Some(p) = &cli.daemon.stats_file {
        common::daemon::write_stats(&stats, p);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per CLI option of the subcommand
async fn search(
    peer: SocketAddr,
    max: u16,
    hash: Option<String>,
    timeout: u64,
    json: bool,
    words: Vec<String>,
    network: String,
    stats_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let stats = common::stats::Stats::new("kazaa", "client", "search");
    let term = match &hash {
        Some(h) => terms::hash(&UuHash::from_hex(h).context("--hash wants 40 hex digits")?),
        None if words.is_empty() => bail!("give keywords or --hash"),
        None => terms::keywords(&words.join(" ")),
    };
    let mut c = OnClient::connect(
        peer,
        &network,
        SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        "search",
        &[],
        Some(&stats),
    )
    .await
    .with_context(|| format!("cannot log in to {peer}"))?;
    let q = Query {
        max_results: max,
        search_id: 0,
        realm: Realm::All.code(),
        terms: vec![term, terms::kazaa_extra()],
    };
    let waves = c
        .search(q, Duration::from_secs(timeout))
        .await
        .context("search failed");
    if let Some(p) = &stats_file {
        common::daemon::write_stats(&stats, p);
    }
    let waves = waves?;
    if json {
        let waves: Vec<_> = waves
            .iter()
            .map(|w| {
                serde_json::json!({
                    "sn": w.sn.to_string(),
                    "results": w.results.iter().map(|r| serde_json::json!({
                        "addr": r.addr.to_string(),
                        "user": r.user,
                        "network": r.network,
                        "hash": r.hash.to_hex(),
                        "file_id": r.file_id,
                        "size": r.size,
                        "name": r.tags.iter().find(|t| t.kind == code::FILENAME).map(|t| t.as_text()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "waves": waves }));
    } else {
        for w in &waves {
            println!("-- from supernode {} ({} results)", w.sn, w.results.len());
            for r in &w.results {
                let name = r
                    .tags
                    .iter()
                    .find(|t| t.kind == code::FILENAME)
                    .map(|t| t.as_text())
                    .unwrap_or_default();
                println!(
                    "{}  {:>10}  {}@{}  {}",
                    r.hash.to_hex(),
                    r.size,
                    r.user,
                    r.addr,
                    name
                );
            }
        }
    }
    Ok(())
}

async fn fetch(
    peer: SocketAddr,
    target: String,
    out: PathBuf,
    block_size: u32,
    json: bool,
    network: String,
    stats_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (hash, length) = if target.starts_with("sig2dat:") {
        let link = Sig2Dat::parse(&target).context("cannot parse the sig2dat link")?;
        (link.uuhash, Some(link.length))
    } else {
        (
            UuHash::from_hex(&target).context("want 40 hex digits or a sig2dat:// link")?,
            None,
        )
    };
    let config = DownloadConfig {
        block_size,
        ..DownloadConfig::default()
    };
    let opts = GetOptions {
        sn: peer,
        network,
        user: "kazaa-lab".into(),
        dest: out,
        length,
        config,
        search_timeout: Duration::from_secs(10),
    };
    let stats = common::stats::Stats::new("kazaa", "client", "get");
    let bar = (!json).then(|| {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let b2 = bar.clone();
    let report = get(hash, opts, stats.clone(), move |ev| {
        if let (Some(b), Event::Progress(p)) = (&b2, ev) {
            b.set_length(p.size);
            b.set_position(p.bytes_done);
            b.set_message(format!("{} sources", p.active));
        }
    })
    .await;
    if let Some(p) = &stats_file {
        common::daemon::write_stats(&stats, p);
    }
    let report = report?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}  {} bytes from {} sources, UUHash verified",
            report.path.display(),
            report.size,
            report.sources.len()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::telemetry::init_tracing(cli.daemon.log_json);
    match cli.cmd {
        Some(Cmd::Get {
            peer,
            target,
            out,
            block_size,
            json,
            network,
        }) => {
            let stats_file = cli.daemon.stats_file.clone();
            fetch(peer, target, out, block_size, json, network, stats_file).await
        }
        Some(Cmd::Search {
            peer,
            max,
            hash,
            timeout,
            json,
            words,
            network,
        }) => {
            let stats_file = cli.daemon.stats_file.clone();
            search(peer, max, hash, timeout, json, words, network, stats_file).await
        }
        None => match cli.role {
            Role::Supernode => supernode(cli).await,
            Role::Ordinary => ordinary(cli).await,
            Role::Auto => bail!("--role auto is not implemented yet (use supernode or ordinary)"),
        },
    }
}
