//! `kazaa-supernode`: FastTrack-style KaZaA node (supernode or ordinary node) and a search client.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use common::hash::{HashKinds, KzMagnet, Sig2Dat, UuHash};
use common::http::{HttpConfig, HttpServer};
use common::library::{Library, LibraryConfig};
use common::multisource::{DownloadConfig, Event};
use common::stats::LinkDir;
use indicatif::{ProgressBar, ProgressStyle};
use kazaa_supernode::codec::message::{FileMeta, Query};
use kazaa_supernode::codec::tag::code;
use kazaa_supernode::codec::{MediaType, Realm, Tag};
use kazaa_supernode::node::get::{get, GetOptions};
use kazaa_supernode::node::http::{KazaaRouter, QueueGate};
use kazaa_supernode::node::{
    run_supernode, Keepalive, OnClient, OnEvent, PING_INTERVAL, PING_TIMEOUT,
};
use kazaa_supernode::protocol::matching::terms;
use kazaa_supernode::protocol::ordinary::{choose_supernode, NodeCache, Probe};
use kazaa_supernode::protocol::promotion::{bandwidth_byte, Promotion, PromotionConfig, Verdict};
use kazaa_supernode::protocol::supernode::SupernodeConfig;

/// FastTrack-style KaZaA node: supernode, ordinary or auto role, and `search`/`get` clients.
///
/// Works: the supernode role (index of children's shares, SN<->SN forwarding, result waves, connect-back
/// reachability probes), the ordinary role registering its shared folder with the best of its `--peer`
/// SNs (with failover, SN hopping, keep-alive pings) and serving it over HTTP (GET /.hash=, X-Kazaa-* headers, an upload
/// queue ordered by participation level behind 503 + Retry-After), the auto role (an ordinary node that
/// promotes itself to supernode once an SN confirmed it is reachable, its capacity is high enough and
/// it has been up long enough), `search`, and `get` (multi-source download by hash with re-search, push
/// and GIVE for firewalled sources, relayed along the reverse path of the result waves; by hash,
/// sig2dat link or kzhash magnet, resumable). --upload-rate
/// caps all uploads of a node together, --download-rate a `get` across all its sources. NOT
/// IMPLEMENTED: HTTP on a supernode's binary port (501), demotion (a promoted node stays a supernode
/// until it exits), the UDP side (0x27/0x28). The FastTrack cipher is replaced by a documented pass-through, so historical
/// clients cannot log in.
#[derive(Parser, Debug)]
#[command(name = "kazaa-supernode", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    daemon: common::daemon::DaemonArgs,
    #[command(flatten)]
    rates: common::daemon::RateArgs,
    /// Role of this node.
    #[arg(long, value_enum, default_value_t = Role::Supernode)]
    role: Role,
    /// A supernode to link to (supernode role) or to choose from (ordinary/auto role). Repeatable.
    #[arg(long = "peer", value_name = "ADDR")]
    peers: Vec<SocketAddr>,
    /// Folder to share (ordinary/auto role).
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
    /// Simultaneous uploads (ordinary/auto role); further requesters are queued by participation
    /// level (X-Kazaa-XferUid) and answered 503 + Retry-After + X-Kazaa-QueuePosition. 0: no limit.
    #[arg(long, default_value_t = 4)]
    upload_slots: usize,
    /// Retry-After seconds sent with a 503 (giFT: 300).
    #[arg(long, default_value_t = 300)]
    retry_after: u64,
    /// Advertise port 0 (ordinary/auto role; an auto node that is firewalled never promotes), as an ON behind NAT: downloads reach it by push + GIVE.
    #[arg(long)]
    firewalled: bool,
    /// SN hopping (ordinary/auto role): move to another cached supernode every this many seconds.
    #[arg(long, value_name = "SECS")]
    hop_every: Option<u64>,
    /// Keep-alive (ordinary/auto role): ping the supernode after this many quiet seconds (giFT: 120).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    ping_interval: f64,
    /// Keep-alive: no answer this many seconds after a ping means the supernode is gone and the node
    /// fails over (giFT: 20).
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    ping_timeout: f64,
    /// Cap on each upload connection's rate, bytes per second (ordinary/auto role); --upload-rate caps
    /// all uploads together.
    #[arg(long, value_name = "BYTES_PER_SEC")]
    rate: Option<u64>,
    /// Declared up-link in kbit/s (0x02 bandwidth byte, promotion's capacity test). Default: from
    /// --upload-rate, else unlimited.
    #[arg(long, value_name = "KBPS")]
    capacity_kbps: Option<u32>,
    /// Auto role: least uptime before promotion to supernode, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0)]
    promote_after: f64,
    /// Auto role: least declared up-link for promotion, kbit/s.
    #[arg(long, value_name = "KBPS", default_value_t = 1000)]
    promote_min_kbps: u32,
    /// Auto role: least load (%) our supernode must report before we promote (0: any).
    #[arg(long, value_name = "PERCENT", default_value_t = 0)]
    promote_min_sn_load: u8,
    /// Auto role: where the supernode port opens after promotion (default: our IP, a free port).
    #[arg(long, value_name = "ADDR")]
    sn_listen: Option<SocketAddr>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Role {
    Supernode,
    Ordinary,
    /// Start ordinary; become a supernode once reachable, capable and up long enough.
    Auto,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Log in to a supernode as an ordinary node, search, print each result wave as it arrives.
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
        /// JSON lines on stdout: one {"event":"hit",...} per result as its wave arrives, then
        /// {"event":"done",...} with the waves grouped by SN and the SN's node list.
        #[arg(long)]
        json: bool,
        /// Keywords.
        words: Vec<String>,
        /// Network name.
        #[arg(long, default_value = "KaZaA")]
        network: String,
    },
    /// Download a file by ContentHash from every source the supernode finds, in parallel.
    Get(GetArgs),
}

#[derive(clap::Args, Debug)]
struct GetArgs {
    /// The supernode to search through.
    #[arg(long = "peer", value_name = "ADDR")]
    peer: SocketAddr,
    /// ContentHash (40 hex digits), a `sig2dat://` link (pins the hash and length) or a
    /// `magnet:?xt=urn:kzhash:<72 hex>` link (searched by its UUHash; the finished file must also
    /// match the kzhash's MD5 tree).
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
    /// Our participation level (0-1000, Kazaa's uploaded MB / downloaded MB x 100), sent in
    /// X-Kazaa-XferUid: uploaders' queues serve higher levels first.
    #[arg(long, default_value_t = 10)]
    participation: u16,
    /// A source that sends nothing for this long is given up (its blocks move on), milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    stall_timeout_ms: u64,
    /// Connecting to a source (or waiting for its push) gives up after this, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    connect_timeout_ms: u64,
    /// Print every downloader event as a JSON line on stderr (with `unix_ms`).
    #[arg(long)]
    events: bool,
    /// Sources downloaded from at the same time (simultaneous transfers of this download).
    #[arg(long, default_value_t = 8)]
    max_sources: usize,
    /// Cap on this download's payload rate across all its sources, bytes per second (suffixes k, M, G
    /// are powers of 1024). Unlimited when absent.
    #[arg(long, env = "P2PLAB_DOWNLOAD_RATE", value_name = "BYTES_PER_SEC", value_parser = common::daemon::parse_rate)]
    download_rate: Option<u64>,
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

/// The declared up-link: `--capacity-kbps`, else `--upload-rate` in kbit/s, else unlimited.
fn capacity_kbps(cli: &Cli) -> u32 {
    cli.capacity_kbps.unwrap_or_else(|| {
        cli.rates.upload_rate.map_or(u32::MAX, |r| {
            u32::try_from(r.saturating_mul(8) / 1000).unwrap_or(u32::MAX - 1)
        })
    })
}

/// Ordinary role, and auto role (`auto`): an ordinary node that may promote itself to supernode.
async fn ordinary(cli: Cli, auto: bool) -> anyhow::Result<()> {
    if cli.peers.is_empty() {
        bail!(
            "--role {} needs at least one --peer supernode",
            if auto { "auto" } else { "ordinary" }
        );
    }
    let started = Instant::now();
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
    stats.set_extra("role", serde_json::Value::String("ordinary".into()));
    let shutdown = common::daemon::install_signals(stats.clone(), cli.daemon.stats_file.clone());
    let current_sn = Arc::new(Mutex::new(None));
    let retry_after = Duration::from_secs(cli.retry_after);
    let gate = QueueGate::new(retry_after, stats.clone());
    let router = KazaaRouter::new(lib, &cli.user, &cli.network, http, current_sn.clone())
        .with_queue(gate.clone());
    let http_cfg = HttpConfig {
        upload_slots: cli.upload_slots,
        retry_after,
        per_connection_rate: cli.rate,
        global_rate: cli.rates.upload_limiter(),
        ..HttpConfig::default()
    };
    common::telemetry::announce_listening("tcp", http.into(), None);
    let server = HttpServer::new(router, http_cfg, stats.clone());
    gate.attach(server.clone());
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
    let capacity = capacity_kbps(&cli);
    let bandwidth = bandwidth_byte(capacity);
    let mut promotion = Promotion::new(
        PromotionConfig {
            min_uptime: Duration::from_secs_f64(cli.promote_after.max(0.0)),
            min_capacity_kbps: cli.promote_min_kbps,
            capacity_kbps: capacity,
            min_sn_load: cli.promote_min_sn_load,
        },
        started,
    );
    let mut check = tokio::time::interval(PROMOTION_CHECK);
    let mut cache = NodeCache::new();
    let boot: Vec<SocketAddrV4> = cli.peers.iter().map(|p| v4(*p)).collect::<Result<_, _>>()?;
    cache.bootstrap(&boot, Instant::now());
    let mut rng = rand::thread_rng();
    let mut previous = None;
    let mut own_sn: Option<SocketAddrV4> = None;
    while !shutdown.is_cancelled() {
        // Probe up to 5 SNs, keep the best session, close the others.
        let mut sessions = Vec::new();
        for addr in cache.probe_candidates(Instant::now(), previous, &mut rng) {
            match OnClient::connect_with_bandwidth(
                addr.into(),
                &cli.network,
                http,
                &cli.user,
                bandwidth,
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
        let (probe, client) = sessions
            .into_iter()
            .find(|(p, _)| p.addr == best)
            .expect("chosen among probes");
        drop(client);
        promotion.sn_load(probe.load);
        // Register on a fresh session: probes registered nothing.
        let mut c = match OnClient::connect_with_bandwidth(
            best.into(),
            &cli.network,
            advertised,
            &cli.user,
            bandwidth,
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
        // NaN (clamp keeps it) fails the conversion and falls back to giFT's figures.
        let secs = |v: f64, dflt| Duration::try_from_secs_f64(v.clamp(0.05, 1e9)).unwrap_or(dflt);
        c.keepalive = Keepalive {
            interval: secs(cli.ping_interval, PING_INTERVAL),
            timeout: secs(cli.ping_timeout, PING_TIMEOUT),
        };
        tracing::info!(sn = %best, files = shares.len(), "registered with supernode");
        // Probes above were not links: this session is the ON's overlay link until it ends.
        let link = stats.link_guard(best, LinkDir::Out, "supernode");
        stats.set_extra("supernode", serde_json::Value::String(best.to_string()));
        *current_sn.lock().unwrap_or_else(|e| e.into_inner()) = Some(best);
        let hop = async {
            match cli.hop_every {
                Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(hop);
        // The session future lives across the timer wake-ups below (never cancelled mid-write);
        // its callback leaves what the promotion check needs in `events`.
        let events = std::cell::RefCell::new(Vec::new());
        let wants_events = auto && own_sn.is_none();
        let held = c.hold(&shutdown, |ev| match ev {
            // Pushes are answered at once; the rest feeds the promotion check below.
            OnEvent::Push { push_id, requester } => {
                let (server, shutdown, stats) = (server.clone(), shutdown.clone(), stats.clone());
                tokio::spawn(async move {
                    if let Err(e) = give(push_id, requester, server, shutdown).await {
                        stats.error("give");
                        tracing::info!(%requester, error = %e, "push connect-back failed");
                    }
                });
            }
            // Only an auto node still waiting to promote reads them; bounded against a chatty SN.
            other => {
                let mut evs = events.borrow_mut();
                if wants_events && evs.len() < MAX_PENDING_EVENTS {
                    evs.push(other);
                }
            }
        });
        tokio::pin!(held);
        let promoted_now = loop {
            let wake = tokio::select! {
                r = &mut held => Wake::Held(r),
                _ = &mut hop => Wake::Hop,
                _ = check.tick(), if wants_events => Wake::Tick,
            };
            for ev in events.borrow_mut().drain(..) {
                match ev {
                    OnEvent::Push { .. } => {}
                    OnEvent::Reachable(a) => {
                        tracing::info!(sn = %best, addr = %a, "supernode confirmed we are reachable");
                        promotion.confirmed_reachable(a, advertised);
                    }
                    OnEvent::NodeList(n) => {
                        if let Some(me) = n.first() {
                            promotion.sn_load(me.load);
                        }
                        cache.merge(&n, Instant::now());
                    }
                }
            }
            match wake {
                Wake::Hop => {
                    // SN hopping (K-Lite's KaZuperNodes, giFT's "dance"): leave this SN for another one,
                    // so the next searches see that SN's children.
                    tracing::info!(sn = %best, "hopping to another supernode");
                    previous = Some(best);
                    stats.add_gauge("sn_hops", 1);
                    break false;
                }
                Wake::Held(Err(e)) => {
                    tracing::info!(sn = %best, error = %e, "supernode lost; failing over");
                    cache.mark_failed(best, Instant::now());
                    previous = None;
                    break false;
                }
                // Shutdown.
                Wake::Held(Ok(())) => break false,
                Wake::Tick => match promotion.check(Instant::now()) {
                    Verdict::Promote => break true,
                    Verdict::Wait(why) => tracing::trace!(?why, "not promoting yet"),
                    Verdict::Promoted => {}
                },
            }
        };
        drop(link);
        if !promoted_now {
            continue;
        }
        // Promotion: open the SN port, link to the SN we were a child of (its 0x01 tells it we are an
        // SN now, and it lists us in its node lists) and to the other SNs we know, then register our
        // own shares with ourselves.
        let sn_addr = match start_supernode(
            &cli,
            http,
            &cache,
            best,
            stats.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "promotion failed; staying ordinary");
                stats.error("promotion");
                continue;
            }
        };
        tracing::info!(%sn_addr, after_ms = started.elapsed().as_millis() as u64, "promoted to supernode");
        common::telemetry::announce_listening("tcp", sn_addr.into(), Some("supernode"));
        stats.set_extra("role", serde_json::Value::String("supernode".into()));
        stats.set_extra(
            "promoted_after_ms",
            serde_json::Value::from(started.elapsed().as_millis() as u64),
        );
        own_sn = Some(sn_addr);
        cache = NodeCache::new();
        cache.bootstrap(&[sn_addr], Instant::now());
        previous = None;
    }
    if let Some(p) = &cli.daemon.stats_file {
        common::daemon::write_stats(&stats, p);
    }
    Ok(())
}

/// What woke the ON's session loop.
enum Wake {
    /// The session ended (shutdown: `Ok`; the SN went away: `Err`).
    Held(std::io::Result<()>),
    /// Time to hop to another SN.
    Hop,
    /// Time for the promotion check.
    Tick,
}

/// Session events an auto node buffers between two promotion checks.
const MAX_PENDING_EVENTS: usize = 64;
/// How often an auto node checks whether to promote itself.
const PROMOTION_CHECK: Duration = Duration::from_millis(250);
/// Most supernodes a promoted node links to.
const PROMOTED_LINKS: usize = 4;

/// Opens a promoted node's SN port and runs the SN on it, linked to `parent` and up to
/// `PROMOTED_LINKS - 1` other cached SNs.
async fn start_supernode(
    cli: &Cli,
    http: SocketAddrV4,
    cache: &NodeCache,
    parent: SocketAddrV4,
    stats: common::stats::Stats,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<SocketAddrV4> {
    let listen = cli
        .sn_listen
        .unwrap_or_else(|| SocketAddr::new((*http.ip()).into(), 0));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot open the supernode port {listen}"))?;
    let addr = v4(listener.local_addr()?)?;
    let mut links = vec![parent];
    links.extend(
        cache
            .addrs()
            .into_iter()
            .filter(|a| *a != parent && *a != addr)
            .take(PROMOTED_LINKS - 1),
    );
    let cfg = supernode_config(cli, addr);
    let peers = links.into_iter().map(SocketAddr::V4).collect();
    tokio::spawn(async move {
        if let Err(e) = run_supernode(listener, cfg, peers, stats, shutdown).await {
            tracing::warn!(error = %e, "promoted supernode stopped");
        }
    });
    Ok(addr)
}

fn supernode_config(cli: &Cli, addr: SocketAddrV4) -> SupernodeConfig {
    let mut cfg = SupernodeConfig::new(addr);
    cfg.network = cli.network.clone();
    cfg.max_children = cli.max_children;
    cfg.fanout = cli.fanout;
    cfg.hop_limit = cli.hop_limit.min(6);
    cfg.seed = rand::random();
    cfg
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
    if let Some(dir) = &cli.share {
        // Our supernodes index their children's files and share none of their own: refuse rather than
        // start with a folder that would silently be ignored.
        bail!(
            "--share {}: a supernode shares no files of its own (use --role ordinary or --role auto)",
            dir.display()
        );
    }
    let listen = cli.daemon.listen_or(1214);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = v4(listener.local_addr()?)?;
    let cfg = supernode_config(&cli, addr);
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
    let _link = stats.link_guard(peer, LinkDir::Out, "supernode");
    let q = Query {
        max_results: max,
        search_id: 0,
        realm: Realm::All.code(),
        terms: vec![term, terms::kazaa_extra()],
    };
    // Each wave is printed as it arrives (the local SN's at once, farther SNs' later); Rust's stdout
    // is line-buffered even into a pipe, so a program reading it sees every hit line at once.
    let mut results = 0usize;
    let waves = c
        .search_each(q, Duration::from_secs(timeout), |w| {
            if json {
                for r in &w.results {
                    results += 1;
                    let mut v = result_json(r);
                    v["event"] = "hit".into();
                    v["sn"] = w.sn.to_string().into();
                    println!("{v}");
                }
            } else {
                println!("-- from supernode {} ({} results)", w.sn, w.results.len());
                for r in &w.results {
                    println!(
                        "{}  {:>10}  {}@{}  {}",
                        r.hash.to_hex(),
                        r.size,
                        r.user,
                        r.addr,
                        file_name(r)
                    );
                }
            }
        })
        .await
        .context("search failed");
    let nodes: Vec<_> = c
        .login
        .nodes
        .iter()
        .map(|n| serde_json::json!({ "addr": n.addr.to_string(), "load": n.load }))
        .collect();
    if let Some(p) = &stats_file {
        common::daemon::write_stats(&stats, p);
    }
    let waves = waves?;
    if json {
        // The summary repeats the waves grouped by SN, for readers that want the whole list at once.
        let all: Vec<_> = waves
            .iter()
            .map(|w| {
                serde_json::json!({
                    "sn": w.sn.to_string(),
                    "results": w.results.iter().map(result_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "event": "done",
                "hits": waves.len(),
                "results": results,
                "waves": all,
                "nodes": nodes,
            })
        );
    }
    Ok(())
}

/// A result's file name (its FILENAME tag), empty when it has none.
fn file_name(r: &kazaa_supernode::codec::message::SearchResult) -> String {
    r.tags
        .iter()
        .find(|t| t.kind == code::FILENAME)
        .map(|t| t.as_text())
        .unwrap_or_default()
}

/// A result as JSON (a hit line without its `event` and `sn`, or an entry of the summary's waves).
fn result_json(r: &kazaa_supernode::codec::message::SearchResult) -> serde_json::Value {
    serde_json::json!({
        "addr": r.addr.to_string(),
        "user": r.user,
        "network": r.network,
        "hash": r.hash.to_hex(),
        "file_id": r.file_id,
        "size": r.size,
        "name": file_name(r),
    })
}

async fn fetch(
    g: GetArgs,
    download_limit: Option<common::ratelimit::RateLimiter>,
    user: String,
    stats_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (hash, length, kzhash) = if g.target.starts_with("sig2dat:") {
        let link = Sig2Dat::parse(&g.target).context("cannot parse the sig2dat link")?;
        (link.uuhash, Some(link.length), None)
    } else if g.target.starts_with("magnet:") {
        let link = KzMagnet::parse(&g.target).context("cannot parse the kzhash magnet link")?;
        (link.kzhash.uuhash(), None, Some(link.kzhash))
    } else {
        (
            UuHash::from_hex(&g.target)
                .context("want 40 hex digits, a sig2dat:// link or a kzhash magnet link")?,
            None,
            None,
        )
    };
    let config = DownloadConfig {
        block_size: g.block_size,
        max_active_sources: g.max_sources.max(1),
        stall_timeout: Duration::from_millis(g.stall_timeout_ms.max(1)),
        connect_timeout: Duration::from_millis(g.connect_timeout_ms.max(1)),
        rate_limit: download_limit,
        ..DownloadConfig::default()
    };
    let opts = GetOptions {
        sn: g.peer,
        network: g.network,
        user,
        dest: g.out,
        length,
        kzhash,
        config,
        search_timeout: Duration::from_secs(10),
        participation: g.participation,
    };
    let kz_checked = kzhash.is_some();
    let stats = common::stats::Stats::new("kazaa", "client", "get");
    let bar = (!g.json).then(|| {
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
    let events = g.events;
    let report = get(hash, opts, stats.clone(), move |ev| {
        if events {
            // One line per event, stamped with the wall clock so another process (the benchmark)
            // can line it up with what it did.
            let mut v = serde_json::to_value(ev).unwrap_or_default();
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            v["unix_ms"] = serde_json::Value::from(ms);
            eprintln!("{v}");
        }
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
    if g.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{}  {} bytes from {} sources, {} verified",
            report.path.display(),
            report.size,
            report.sources.len(),
            if kz_checked { "kzhash" } else { "UUHash" }
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    common::telemetry::init_tracing(cli.daemon.log_json);
    common::daemon::exit_status("kazaa-supernode", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Some(Cmd::Get(g)) => {
            let stats_file = cli.daemon.stats_file.clone();
            // The subcommand's own --download-rate wins over one given before `get`.
            let limit = g
                .download_rate
                .map(common::ratelimit::RateLimiter::new)
                .or_else(|| cli.rates.download_limiter());
            fetch(g, limit, cli.user.clone(), stats_file).await
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
            Role::Ordinary => ordinary(cli, false).await,
            Role::Auto => ordinary(cli, true).await,
        },
    }
}
