//! `gnutella-node`: a Gnutella 0.6 servent (ultrapeer or leaf, QRP, deflate links) with a classic 0.4
//! flooding mode, and a command-line search.
//!
//! ```text
//! gnutella-node --listen 127.0.0.1:0 --share ./music --peer 127.0.0.1:6346            # ultrapeer daemon
//! gnutella-node --leaf --peer 127.0.0.1:6346 --share ./music                           # leaf daemon
//! gnutella-node --classic --peer 127.0.0.1:6346                                        # 0.4 flooding
//! gnutella-node --peer 127.0.0.1:6346 search "hello world" --expanding --json          # search, print hits
//! ```
//! `search --download DIR` fetches the first result from every hit with the same SHA-1 (`common::multisource`),
//! reaching firewalled sources with PUSH/GIV, adding the alternate locations sources name (`X-Alt`) and
//! re-querying by `urn:sha1:` when short of sources. `get --urn ... --size ... --source ip:port` fetches a
//! file by SHA-1 from hosts known to have it (plus their `X-Alt`), with or without joining the network.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use common::stats::Stats;
use gnutella_node::codec::message::{parse_sha1_urn, sha1_urn};
use gnutella_node::node::{encode_name, HitSource, Node, NodeConfig, DEFAULT_PORT};
use gnutella_node::protocol::{Event, Role};
use tokio::net::TcpListener;

/// Gnutella 0.6 servent (ultrapeer/leaf, QRP, deflate) with a classic 0.4 mode, and a CLI search.
#[derive(Parser, Debug)]
#[command(name = "gnutella-node", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,

    /// `--upload-rate` caps all HTTP uploads of the node together; `--download-rate` all its downloads
    /// (`search --download`, `get`) together.
    #[command(flatten)]
    rates: common::daemon::RateArgs,

    /// Files uploaded at once; beyond that a request gets `503 Busy` with `Retry-After: 1` and the `X-Alt`
    /// of other sources, and the downloader comes back (or goes to them).
    #[arg(long, default_value_t = gnutella_node::node::DEFAULT_UPLOAD_SLOTS, env = "P2PLAB_UPLOAD_SLOTS")]
    upload_slots: usize,

    /// Folder whose files we share (hashed with SHA-1, served over HTTP on the same port).
    #[arg(long, env = "P2PLAB_SHARE", value_name = "DIR")]
    share: Option<PathBuf>,

    /// Bootstrap peer ip:port (repeatable); kept connected while we are short of links.
    #[arg(
        long = "peer",
        env = "P2PLAB_PEERS",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    peers: Vec<SocketAddr>,

    /// Run as a shielded leaf (default for `search`; daemons default to ultrapeer).
    #[arg(long, env = "P2PLAB_LEAF", conflicts_with = "ultrapeer")]
    leaf: bool,

    /// Run as an ultrapeer.
    #[arg(long, env = "P2PLAB_ULTRAPEER")]
    ultrapeer: bool,

    /// Classic Gnutella 0.4: `GNUTELLA CONNECT/0.4` handshake, every node floods, TTL 7, no QRP.
    #[arg(long, env = "P2PLAB_CLASSIC")]
    classic: bool,

    /// Do not offer deflate on links (needed for the tshark check; leaves then get 403 from ultrapeers
    /// that insist on it, as with gtk-gnutella).
    #[arg(long, env = "P2PLAB_NO_DEFLATE")]
    no_deflate: bool,

    /// Maximum TTL of broadcasts (default 4, classic 7).
    #[arg(long, env = "P2PLAB_MAX_TTL")]
    max_ttl: Option<u8>,

    /// Ultrapeer (or classic) links to keep.
    #[arg(long, default_value_t = 3, env = "P2PLAB_UP_LINKS")]
    up_links: usize,

    /// Ultrapeers a leaf keeps.
    #[arg(long, default_value_t = 2, env = "P2PLAB_LEAF_LINKS")]
    leaf_links: usize,

    /// Most ultrapeer (or classic) links accepted.
    #[arg(long, default_value_t = 16, env = "P2PLAB_MAX_ULTRAPEERS")]
    max_ultrapeers: usize,

    /// Most leaves accepted by an ultrapeer.
    #[arg(long, default_value_t = 64, env = "P2PLAB_MAX_LEAVES")]
    max_leaves: usize,

    /// Behave as a firewalled servent (push flag in hits, no answers to firewalled queriers).
    #[arg(long, env = "P2PLAB_FIREWALLED")]
    firewalled: bool,

    /// Accept leaf guidance from a full ultrapeer (become a leaf).
    #[arg(long, env = "P2PLAB_ACCEPT_GUIDANCE")]
    accept_guidance: bool,

    /// Seed of the GUID generator (reproducible lab runs).
    #[arg(long, env = "P2PLAB_SEED")]
    seed: Option<u64>,

    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Join as a leaf, search, print hits as they arrive, exit.
    Search {
        /// Keywords.
        words: String,
        /// Also (or only) search by SHA-1: `urn:sha1:<base32>`.
        #[arg(long)]
        urn: Option<String>,
        /// TTL of the query (the largest ring with --expanding).
        #[arg(long, default_value_t = 4)]
        ttl: u8,
        /// Expanding ring: TTL 1, 2, 3, ... until --min-hits results or --ttl is reached.
        #[arg(long)]
        expanding: bool,
        /// Stop once this many results have arrived.
        #[arg(long, default_value_t = 1)]
        min_hits: usize,
        /// Seconds to wait for hits (per ring with --expanding).
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// Seconds to wait for the first link.
        #[arg(long, default_value_t = 10.0)]
        connect_timeout: f64,
        /// One JSON object per line on stdout.
        #[arg(long)]
        json: bool,
        /// Download the first result into DIR from every hit with the same SHA-1 (multi-source, verified;
        /// firewalled sources through PUSH/GIV), adding the alternate locations sources name (`X-Alt`) and
        /// re-querying by `urn:sha1:` when short of sources.
        #[arg(long, value_name = "DIR")]
        download: Option<PathBuf>,
    },
    /// Download a file by SHA-1 from hosts known to have it (`/uri-res/N2R?urn:sha1:...`), adding the
    /// alternate locations they name (`X-Alt`). With `--peer`, also joins as a leaf and queries by URN for
    /// sources (at the start when no `--source` is given, and whenever the download runs low).
    Get {
        /// The file: `urn:sha1:<32 base32>`.
        #[arg(long)]
        urn: String,
        /// Its size in bytes.
        #[arg(long)]
        size: u64,
        /// A host that has it, ip:port (repeatable).
        #[arg(long = "source", value_name = "ADDR")]
        sources: Vec<SocketAddrV4>,
        /// Save as this name (default: the base32 SHA-1).
        #[arg(long)]
        name: Option<String>,
        /// Directory to save into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seconds to wait for the first link (with --peer).
        #[arg(long, default_value_t = 10.0)]
        connect_timeout: f64,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn node_config(cli: &Cli, default_role: Role) -> NodeConfig {
    let role = if cli.leaf {
        Role::Leaf
    } else if cli.ultrapeer {
        Role::Ultrapeer
    } else {
        default_role
    };
    NodeConfig {
        role,
        classic: cli.classic,
        peers: cli.peers.clone(),
        share: cli.share.clone(),
        data_dir: cli.daemon.data_dir.clone(),
        deflate: !cli.no_deflate,
        max_ttl: cli.max_ttl,
        up_links: cli.up_links,
        leaf_links: cli.leaf_links,
        max_ultrapeers: cli.max_ultrapeers,
        max_leaves: cli.max_leaves,
        firewalled: cli.firewalled,
        accept_guidance: cli.accept_guidance,
        seed: cli.seed,
        upload_rate: cli.rates.upload_limiter(),
        download_rate: cli.rates.download_limiter(),
        upload_slots: cli.upload_slots,
        busy_retry_after: gnutella_node::node::DEFAULT_BUSY_RETRY_AFTER,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    common::telemetry::init_tracing(cli.daemon.log_json);
    let r = match &cli.cmd {
        None => daemon(&cli).await,
        Some(Cmd::Search { .. }) => search(&cli).await,
        Some(Cmd::Get { .. }) => get(&cli).await,
    };
    common::daemon::exit_status("gnutella-node", r)
}

async fn daemon(cli: &Cli) -> anyhow::Result<()> {
    let listen = cli.daemon.listen_or(DEFAULT_PORT);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let stats = Stats::new("gnutella", "ultrapeer", &addr.to_string());
    let shutdown = common::daemon::install_signals(stats.clone(), cli.daemon.stats_file.clone());
    // The node's tasks stop only after `close` has said BYE on every link.
    let tasks = tokio_util::sync::CancellationToken::new();
    let node = Node::start(
        listener,
        node_config(cli, Role::Ultrapeer),
        stats.clone(),
        tasks.clone(),
    )
    .await?;
    common::telemetry::announce_listening("tcp", addr, None);
    shutdown.cancelled().await;
    node.close().await;
    tasks.cancel();
    if let Some(p) = &cli.daemon.stats_file {
        common::daemon::write_stats(&stats, p);
    }
    Ok(())
}

async fn search(cli: &Cli) -> anyhow::Result<()> {
    let Some(Cmd::Search {
        words,
        urn,
        ttl,
        expanding,
        min_hits,
        timeout,
        connect_timeout,
        json,
        download,
    }) = &cli.cmd
    else {
        unreachable!()
    };
    if cli.peers.is_empty() {
        anyhow::bail!("search needs at least one --peer");
    }
    let sha1 = match urn {
        Some(u) => Some(parse_sha1_urn(u).context("--urn must be urn:sha1:<32 base32>")?),
        None => None,
    };
    let client = Client::start(cli, *connect_timeout).await?;
    let node = &client.node;
    // Give the ultrapeer a moment to take our QRP table before the query flows.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events = node.subscribe();
    let rings: Vec<u8> = if *expanding {
        (1..=*ttl).collect()
    } else {
        vec![*ttl]
    };
    let mut results = 0usize;
    let mut hit_count = 0usize;
    let mut found: Vec<(HitSource, u64, Option<[u8; 20]>)> = Vec::new();
    'rings: for ring_ttl in rings {
        let g = node.search(words, sha1, ring_ttl);
        let end = tokio::time::Instant::now() + Duration::from_secs_f64(*timeout);
        loop {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(end) => break,
                e = events.recv() => e,
            };
            let Ok(Event::Hit { query, hit, hops }) = ev else {
                continue;
            };
            if query != g {
                continue;
            }
            hit_count += 1;
            for r in &hit.results {
                results += 1;
                found.push((
                    HitSource {
                        addr: SocketAddrV4::new(hit.ip, hit.port),
                        index: r.index,
                        name: r.name.clone(),
                        servent: hit.servent,
                        firewalled: hit.firewalled(),
                    },
                    r.file_size(),
                    r.ext.sha1s().first().copied(),
                ));
                let urn = r.ext.sha1s().first().map(sha1_urn);
                if *json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "event": "hit",
                            "query": g.to_hex(),
                            "ttl": ring_ttl,
                            "hops": hops,
                            "ip": hit.ip.to_string(),
                            "port": hit.port,
                            "servent": hit.servent.to_hex(),
                            "firewalled": hit.firewalled(),
                            "index": r.index,
                            "size": r.file_size(),
                            "name": r.name,
                            "sha1": urn,
                        })
                    );
                } else {
                    println!(
                        "{}\t{}\thttp://{}:{}/get/{}/{}\t{}\thops={}{}",
                        r.name,
                        r.file_size(),
                        hit.ip,
                        hit.port,
                        r.index,
                        encode_name(&r.name),
                        urn.as_deref().unwrap_or("-"),
                        hops,
                        if hit.firewalled() { "\tfirewalled" } else { "" }
                    );
                }
            }
            if results >= *min_hits {
                break 'rings;
            }
        }
    }
    if *json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "hits": hit_count, "results": results})
        );
    } else {
        eprintln!("{results} result(s) in {hit_count} hit(s)");
    }
    let dl = match download {
        Some(dir) => fetch(node, &found, dir, *json).await,
        None => Ok(()),
    };
    client.stop(cli).await;
    dl
}

/// The short-lived leaf behind `search` and `get`: listens (for GIV and uploads), joins the `--peer`s if any.
struct Client {
    node: Node,
    stats: Stats,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Client {
    /// Starts the node; with `--peer`s, waits up to `connect_timeout` seconds for the first link.
    async fn start(cli: &Cli, connect_timeout: f64) -> anyhow::Result<Client> {
        let listen = cli
            .daemon
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stats = Stats::new("gnutella", "leaf", &addr.to_string());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let node = Node::start(
            listener,
            node_config(cli, Role::Leaf),
            stats.clone(),
            shutdown.clone(),
        )
        .await?;
        if !cli.peers.is_empty()
            && !node
                .wait_connected(1, Duration::from_secs_f64(connect_timeout))
                .await
        {
            anyhow::bail!("could not connect to any peer");
        }
        Ok(Client {
            node,
            stats,
            shutdown,
        })
    }

    /// Says Bye, stops the node's tasks and writes `--stats-file`.
    async fn stop(self, cli: &Cli) {
        self.node.close().await;
        self.shutdown.cancel();
        if let Some(p) = &cli.daemon.stats_file {
            common::daemon::write_stats(&self.stats, p);
        }
    }
}

/// A peer-supplied file name made safe as one path component.
fn safe_name(name: &str) -> String {
    let n: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c == '\0' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    match n.as_str() {
        "" | "." | ".." => "download.bin".into(),
        _ => n,
    }
}

async fn fetch(
    node: &Node,
    found: &[(HitSource, u64, Option<[u8; 20]>)],
    dir: &std::path::Path,
    json: bool,
) -> anyhow::Result<()> {
    let Some((first, size, Some(sha1))) = found.iter().find(|f| f.2.is_some()).cloned() else {
        anyhow::bail!("no result with a SHA-1 to download");
    };
    let mut sources: Vec<HitSource> = Vec::new();
    for (s, sz, h) in found {
        if *h == Some(sha1)
            && *sz == size
            && !sources
                .iter()
                .any(|o| o.addr == s.addr && o.index == s.index)
        {
            sources.push(s.clone());
        }
    }
    std::fs::create_dir_all(dir)?;
    let dest = dir.join(safe_name(&first.name));
    let out = node
        .download(&sources, &[], size, sha1, dest, true)
        .await
        .context("download failed")?;
    print_download(
        &out,
        &sha1,
        sources.iter().filter(|s| s.firewalled).count(),
        json,
    );
    Ok(())
}

fn print_download(
    out: &gnutella_node::node::DownloadOutcome,
    sha1: &[u8; 20],
    pushed: usize,
    json: bool,
) {
    let r = &out.report;
    let used = r.sources.iter().filter(|s| s.bytes > 0).count();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "downloaded",
                "path": r.path,
                "size": r.size,
                "sha1": sha1_urn(sha1),
                "sources": out.initial_sources,
                "pushed": pushed,
                "from_alt": out.from_alt,
                "from_requery": out.from_requery,
                "requeries": out.requeries,
                "sources_used": used,
                "elapsed_ms": r.elapsed_ms,
                "per_source": r.sources,
            })
        );
    } else {
        eprintln!(
            "downloaded {} ({} bytes, {} source(s) at start, {} from X-Alt, {} from re-queries, {} used, verified {})",
            r.path.display(),
            r.size,
            out.initial_sources,
            out.from_alt,
            out.from_requery,
            used,
            sha1_urn(sha1)
        );
    }
}

async fn get(cli: &Cli) -> anyhow::Result<()> {
    let Some(Cmd::Get {
        urn,
        size,
        sources,
        name,
        out,
        connect_timeout,
        json,
    }) = &cli.cmd
    else {
        unreachable!()
    };
    let sha1 = parse_sha1_urn(urn).context("--urn must be urn:sha1:<32 base32>")?;
    if sources.is_empty() && cli.peers.is_empty() {
        anyhow::bail!("get needs a --source or a --peer to search");
    }
    let joined = !cli.peers.is_empty();
    let client = Client::start(cli, *connect_timeout).await?;
    let node = &client.node;
    let file_name = name
        .clone()
        .unwrap_or_else(|| sha1_urn(&sha1)["urn:sha1:".len()..].to_owned());
    let r = async {
        std::fs::create_dir_all(out)?;
        let o = node
            .download(
                &[],
                sources,
                *size,
                sha1,
                out.join(safe_name(&file_name)),
                joined,
            )
            .await
            .context("download failed")?;
        print_download(&o, &sha1, 0, *json);
        anyhow::Ok(())
    }
    .await;
    client.stop(cli).await;
    r
}
