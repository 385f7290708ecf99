//! `tracker`: BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 7 IPv6, BEP 48 scrape, BEP 15 UDP.
//!
//! ```text
//! tracker --listen 127.0.0.1:0 --udp 127.0.0.1:0 [--interval 1800] [--max-peers 50] [--allow-list FILE]
//!         [--peer-ids on-demand|always] [--state-file FILE] [--stats-file FILE]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use common::daemon::{install_signals, write_stats, DaemonArgs};
use common::stats::Stats;
use common::telemetry::{announce_listening, init_tracing_lean};
use tracker::node::{self, files, NodeConfig, Shared};
use tracker::protocol::service::{Service, ServiceOptions};
use tracker::protocol::swarm::{Config, PeerIds};

/// BitTorrent tracker: BEP 3 announce (`/announce`), BEP 48 scrape (`/scrape`), BEP 23 compact and BEP 7
/// IPv6 peer lists, BEP 15 UDP, and a `/stats` page (JSON; HTML with `?format=html`).
///
/// HTTP listens on --listen (default 127.0.0.1:6969); UDP only with --udp. Each socket prints a readiness
/// line on stdout. State is in memory (peers re-announce); --state-file keeps the completed counters.
#[derive(Parser, Debug)]
#[command(
    name = "tracker",
    version,
    about,
    long_about = None,
    after_help = "Signals: SIGTERM/Ctrl-C stop cleanly (stats and state files written), SIGUSR1 writes the \
                  stats file, SIGHUP re-reads --allow-list.\n\
                  No file transfers here, so no --upload-rate/--download-rate.\n\
                  Not done: BEP 41 UDP extensions are ignored; no BEP 31 `retry in`.\n\
                  Linked as a static PIE with its hot code first (README: \"Why the binary is static and \
                  ordered\")."
)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,

    /// Serve the BEP 15 UDP protocol on this address (port 0 picks a free port).
    #[arg(long, env = "P2PLAB_UDP", value_name = "ADDR")]
    udp: Option<std::net::SocketAddr>,

    /// Seconds between re-announces, sent to clients as `interval`.
    #[arg(long, env = "P2PLAB_INTERVAL", default_value_t = 1800, value_parser = clap::value_parser!(u32).range(1..))]
    interval: u32,

    /// Seconds sent as `min interval` (default: half the interval).
    #[arg(long, env = "P2PLAB_MIN_INTERVAL")]
    min_interval: Option<u32>,

    /// Seconds after which a silent peer is dropped (default: two intervals plus a minute).
    #[arg(long, env = "P2PLAB_PEER_TIMEOUT")]
    peer_timeout: Option<u64>,

    /// Most peers in one reply, whatever numwant asks.
    #[arg(long, env = "P2PLAB_MAX_PEERS", default_value_t = 50)]
    max_peers: u32,

    /// Most torrents held; new torrents are refused beyond it (see the README's eviction policy).
    #[arg(long, env = "P2PLAB_MAX_TORRENTS", default_value_t = 500_000)]
    max_torrents: usize,

    /// Most peers held over all torrents (8 bytes each for IPv4, 20 for IPv6, plus 21 for a kept peer id,
    /// see --peer-ids); beyond it announces of peers not held yet are refused with "tracker is full" until
    /// peers stop or expire (README).
    #[arg(long, env = "P2PLAB_MAX_PEERS_TOTAL", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_peers_total: u64,

    /// When torrents keep the 20-byte peer ids listed as `peer id` in the (non-compact) dictionary form.
    /// on-demand: from a torrent's first dictionary request on, so compact-only swarms pay nothing, but
    /// peers not heard from since then are listed without `peer id` for up to one interval. always: every
    /// torrent from its first announce (complete dictionary replies; 21 bytes more per peer and about 96
    /// per torrent), for trackers serving legacy non-compact clients.
    #[arg(long, env = "P2PLAB_PEER_IDS", value_enum, default_value_t = PeerIdsArg::OnDemand)]
    peer_ids: PeerIdsArg,

    /// Allow-list mode: only these info-hashes (one in hex per line, `#` comments), re-read on SIGHUP
    /// (a file that does not parse leaves the previous list in force). Default: open mode.
    #[arg(long, env = "P2PLAB_ALLOW_LIST", value_name = "FILE")]
    allow_list: Option<PathBuf>,

    /// Keep the per-torrent completed counters in this file across restarts.
    #[arg(long, env = "P2PLAB_STATE_FILE", value_name = "FILE")]
    state_file: Option<PathBuf>,

    /// Refuse scrapes without info_hash (a full scrape lists every torrent).
    #[arg(long, env = "P2PLAB_NO_SCRAPE_ALL")]
    no_scrape_all: bool,

    /// Believe the `ip` a client announces instead of its source address (only behind a trusted NAT).
    #[arg(long, env = "P2PLAB_TRUST_IP")]
    trust_ip: bool,

    /// Ignore BEP 7 `ipv4=`/`ipv6=` (by default a peer is also listed under the address of the other
    /// family it names there; BEP 7 now discourages them as they let anyone add an address to a swarm).
    #[arg(long, env = "P2PLAB_NO_BEP7_ADDRESSES")]
    no_bep7_addresses: bool,

    /// Worker threads (1 = a single-threaded runtime, the most efficient per CPU-second).
    #[arg(long, env = "P2PLAB_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,

    /// Seed of the random peer selection and connection-id key (default: from the clock).
    #[arg(long, env = "P2PLAB_SEED")]
    seed: Option<u64>,
}

/// `--peer-ids` (clap's side of [`PeerIds`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum PeerIdsArg {
    OnDemand,
    Always,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // RUST_LOG as target=level directives: EnvFilter's regex engine was a sixth of the resident code.
    init_tracing_lean(cli.daemon.log_json);
    common::daemon::exit_status("tracker", start(cli))
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let rt = if cli.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(cli.threads))
            .enable_all()
            .build()?
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let allow_list = match &cli.allow_list {
        Some(p) => Some(files::read_allow_list(p)?),
        None => None,
    };
    let peer_timeout =
        Duration::from_secs(cli.peer_timeout.unwrap_or(2 * u64::from(cli.interval) + 60));
    let cfg = Config {
        interval: cli.interval,
        min_interval: cli.min_interval.unwrap_or(cli.interval / 2).max(1),
        peer_timeout,
        max_peers: cli.max_peers,
        default_numwant: cli.max_peers.min(50),
        max_torrents: cli.max_torrents,
        max_peers_total: usize::try_from(cli.max_peers_total).unwrap_or(usize::MAX),
        allow_list,
        scrape_all: !cli.no_scrape_all,
        peer_ids: match cli.peer_ids {
            PeerIdsArg::OnDemand => PeerIds::OnDemand,
            PeerIdsArg::Always => PeerIds::Always,
        },
        ..Config::default()
    };
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id()) << 32
    });
    let mut service = Service::new(
        cfg,
        ServiceOptions {
            trust_ip_param: cli.trust_ip,
            tracker_id: None,
            bep7_alt_addresses: !cli.no_bep7_addresses,
        },
        seed,
    );
    if let Some(p) = &cli.state_file {
        let restored = files::read_state(p)?;
        let now = Instant::now();
        for (h, d) in &restored {
            service.tracker_mut().restore_downloaded(now, *h, *d);
        }
        tracing::info!(path = %p.display(), torrents = restored.len(), "state restored");
    }

    let http_addr = cli.daemon.listen_or(6969);
    let http = tokio::net::TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen on {http_addr}"))?;
    let http_local = http.local_addr()?;
    let udp = match cli.udp {
        Some(a) => Some(
            tokio::net::UdpSocket::bind(a)
                .await
                .with_context(|| format!("cannot bind UDP {a}"))?,
        ),
        None => None,
    };
    let stats = Stats::new("tracker", "server", &http_local.to_string());
    let shared = Shared::new(service, stats.clone());
    let shutdown = install_signals(stats.clone(), cli.daemon.stats_file.clone());
    announce_listening("tcp", http_local, None);
    if let Some(u) = &udp {
        announce_listening("udp", u.local_addr()?, None);
    }
    tracing::info!(http = %http_local, udp = ?udp.as_ref().and_then(|u| u.local_addr().ok()), "tracker ready");
    let expire_every =
        (peer_timeout / 4).clamp(Duration::from_millis(500), Duration::from_secs(60));
    let r = node::run(
        http,
        udp,
        shared.clone(),
        NodeConfig {
            state_file: cli.state_file.clone(),
            expire_every,
            allow_list: cli.allow_list.clone(),
        },
        shutdown,
    )
    .await;
    shared.update_gauges();
    if let Some(p) = &cli.daemon.stats_file {
        write_stats(&stats, p);
    }
    tracing::info!("stopped");
    r
}
