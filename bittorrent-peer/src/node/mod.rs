//! The tokio shell: listener, outgoing connections, tracker announces, choke and peer-exchange timer
//! (BEP 11: contacts learnt by PEX are dialled, a bounded number per tick), seed time and progress. All
//! protocol decisions are made by the sans-I/O parts in [`crate::protocol`] through [`torrent::Torrent`].

pub mod metadata;
pub mod peer;
pub mod torrent;
pub mod tracker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ratelimit::RateLimiter;
use common::stats::Stats;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::tracker::{AnnounceRequest, Event};
use crate::metainfo::Metainfo;
use crate::storage::{load_or_recheck, resume_path, save_resume, OpenMode, Storage};
use crate::types::PeerId;
use torrent::{lock, Shared, Torrent};

/// Shortest re-announce interval we honour (a tracker saying 0 must not make us spin).
pub const MIN_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(15);
/// Longest wait between announces.
pub const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3600);
/// How often peers given with `--peer` are dialled again while not connected.
pub const REDIAL: Duration = Duration::from_secs(2);
/// How often the choker timer runs (rounds themselves happen every 10 s); PEX messages are
/// considered on the same tick (each peer still gets at most one a minute).
pub const CHOKE_TICK: Duration = Duration::from_secs(1);
/// With `--upload-rate`/`--download-rate`: how often paid-for blocks are released (requests sent,
/// writers woken). Short next to the limiter's burst (a tenth of a second of traffic).
pub const RATE_TICK: Duration = Duration::from_millis(20);
/// Most contacts learnt by PEX that are dialled per tick (the dialer also stops at
/// [`torrent::MAX_PEERS`] connections).
pub const PEX_DIALS_PER_TICK: usize = 8;

/// How a node runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to accept peers on (port 0: any).
    pub listen: SocketAddr,
    /// Peers to dial besides those from trackers.
    pub peers: Vec<SocketAddr>,
    /// Keep running (seeding) after the download completes.
    pub keep_seeding: bool,
    /// With `keep_seeding`: stop this long after the download completed (`None`: until shut down).
    pub seed_time: Option<Duration>,
    /// Cap on the payload sent, shared by all connections.
    pub upload_limit: Option<RateLimiter>,
    /// Cap on the payload received, shared by all connections.
    pub download_limit: Option<RateLimiter>,
    /// Use the torrent's trackers.
    pub use_trackers: bool,
    /// Directory for the resume file; `None` always re-checks.
    pub data_dir: Option<PathBuf>,
    /// Seed of the node's RNG (piece choice, optimistic unchoke); `None` = random.
    pub rng_seed: Option<u64>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// Every piece verified.
    pub complete: bool,
    /// Pieces verified.
    pub pieces: u32,
    /// Payload bytes received.
    pub downloaded: u64,
    /// Payload bytes sent.
    pub uploaded: u64,
    /// Seconds from start to completion (or to the stop).
    pub seconds: f64,
    /// Whether the resume file was trusted instead of re-hashing.
    pub resumed_from_file: bool,
}

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Files or sockets.
    #[error("{what}: {source}")]
    Io {
        /// Which step failed.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NodeError {
    move |source| NodeError::Io { what, source }
}

/// A bound listener plus what the node needs to run.
pub struct Node {
    listener: TcpListener,
    shared: Shared,
    complete: tokio::sync::watch::Receiver<bool>,
    cfg: Config,
    resumed: bool,
}

impl Node {
    /// Opens the content under `dir` (creating it when `mode` is [`OpenMode::Create`]), finds the pieces
    /// already there, and binds the listener. Call [`Node::local_addr`] for the readiness line.
    pub async fn bind(
        meta: Metainfo,
        dir: &Path,
        mode: OpenMode,
        cfg: Config,
        stats: Stats,
    ) -> Result<Node, NodeError> {
        let meta = Arc::new(meta);
        let storage =
            Storage::open(&meta.info, dir, mode).map_err(io("opening the torrent's files"))?;
        // Only a resume file needs the data on disk (it is synced first); flushing along the way
        // keeps that final sync short. Without one, writeback is left to the kernel.
        storage.set_background_writeback(cfg.data_dir.is_some());
        let rp = cfg
            .data_dir
            .as_ref()
            .map(|d| resume_path(d, meta.info_hash));
        let (have, resumed) = load_or_recheck(rp.as_deref(), &meta, &storage)
            .map_err(io("checking existing data"))?;
        tracing::info!(
            have = have.count(),
            of = have.len(),
            resumed,
            "existing data checked"
        );
        let mut rng = match cfg.rng_seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        let peer_id = PeerId::generate(&mut rng);
        stats.set_node(&String::from_utf8_lossy(&peer_id.0));
        stats.set_role(if have.is_full() { "seeder" } else { "leecher" });
        stats.transfers(|t| t.downloads_started += u64::from(!have.is_full()));
        let (mut t, complete) = Torrent::new(meta, Arc::new(storage), have, peer_id, stats, rng);
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(io("binding the listen address"))?;
        t.listen_port = listener.local_addr().ok().map(|a| a.port());
        t.upload_limit = cfg.upload_limit.clone();
        t.download_limit = cfg.download_limit.clone();
        Ok(Node {
            listener,
            shared: Arc::new(Mutex::new(t)),
            complete,
            cfg,
            resumed,
        })
    }

    /// The address peers can reach us on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Runs until the download completes (unless `keep_seeding`) or `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Summary, NodeError> {
        let start = Instant::now();
        let local = self.local_addr();
        let Node {
            listener,
            shared,
            mut complete,
            cfg,
            resumed,
        } = self;
        let stop = shutdown.child_token();
        let (peer_tx, mut peer_rx) = mpsc::unbounded_channel::<SocketAddr>();
        // Peers given on the command line are dialled again while not connected: they may still be
        // starting (checking their files) when we first try.
        if !cfg.peers.is_empty() {
            let peers = cfg.peers.clone();
            let tx = peer_tx.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(REDIAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = iv.tick() => {}
                    }
                    for p in &peers {
                        let _ = tx.send(*p);
                    }
                }
            });
        }
        // Accept loop.
        {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let (s, addr) = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = listener.accept() => match r {
                            Ok(x) => x,
                            Err(e) => {
                                tracing::warn!(cause = %e, "accept failed");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                    };
                    // A banned IP is refused from any port, before the handshake.
                    if lock(&shared).banned.contains(&addr.ip()) {
                        tracing::debug!(%addr, "connection from a banned address refused");
                        drop(s);
                        continue;
                    }
                    let shared = shared.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = peer::incoming(shared, s, addr, stop).await {
                            tracing::debug!(%addr, cause = %e, "incoming connection refused");
                        }
                    });
                }
            });
        }
        // Dialer: one attempt per new address, again when the address comes back from a tracker.
        {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let addr = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = peer_rx.recv() => match a { Some(a) => a, None => return },
                    };
                    if addr == local {
                        continue;
                    }
                    {
                        // The torrent keeps the set of addresses being dialled: a connection from one
                        // of them is outgoing (PEX advertises it as reachable).
                        let mut t = lock(&shared);
                        if t.is_connected(addr)
                            || t.banned.contains(&addr.ip())
                            || t.num_peers() + t.dialing.len() >= torrent::MAX_PEERS
                            || !t.dialing.insert(addr)
                        {
                            continue;
                        }
                    }
                    let shared = shared.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        if let Err(e) = peer::outgoing(shared.clone(), addr, stop).await {
                            tracing::debug!(%addr, cause = %e, "outgoing connection failed");
                        }
                        lock(&shared).dialing.remove(&addr);
                    });
                }
            });
        }
        // Choke and PEX timer.
        {
            let shared = shared.clone();
            let stop = stop.clone();
            let tx = peer_tx.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(CHOKE_TICK);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = iv.tick() => {}
                    }
                    let now = Instant::now();
                    let mut t = lock(&shared);
                    t.run_choker(now);
                    t.pex_tick(now);
                    // Keeps the per-peer and PEX figures fresh for a SIGUSR1 stats dump.
                    t.publish_stats();
                    let room = torrent::MAX_PEERS.saturating_sub(t.num_peers() + t.dialing.len());
                    for _ in 0..room.min(PEX_DIALS_PER_TICK) {
                        let Some(a) = t.pex_candidates.pop() else {
                            break;
                        };
                        let _ = tx.send(a);
                    }
                }
            });
        }
        // Rate caps: release blocks as the limiters refill.
        if cfg.upload_limit.is_some() || cfg.download_limit.is_some() {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut iv = tokio::time::interval(RATE_TICK);
                iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = iv.tick() => lock(&shared).rate_tick(),
                    }
                }
            });
        }
        // Progress bar.
        if cfg.progress {
            let shared = shared.clone();
            let stop = stop.clone();
            tokio::spawn(progress(shared, stop));
        }
        // Trackers: BEP 12 shuffles each tier once, when the torrent loads (its own RNG stream, so
        // `--rng-seed` runs stay reproducible without shifting the piece choices).
        let mut tiers = lock(&shared).meta.trackers.clone();
        let mut tier_rng = match cfg.rng_seed {
            Some(s) => StdRng::seed_from_u64(s.wrapping_add(1)),
            None => StdRng::from_entropy(),
        };
        tracker::shuffle_tiers(&mut tiers, &mut tier_rng);
        let announcer = if cfg.use_trackers && !tiers.is_empty() {
            let shared = shared.clone();
            let stop = stop.clone();
            let complete = complete.clone();
            Some(tokio::spawn(announce_loop(
                shared,
                tiers,
                local.port(),
                peer_tx.clone(),
                complete,
                stop,
            )))
        } else {
            None
        };
        // Wait for completion or shutdown (or, with a seed time, for its end).
        let mut done_at = None;
        let mut seed_until: Option<tokio::time::Instant> = None;
        loop {
            if *complete.borrow() && done_at.is_none() {
                done_at = Some(start.elapsed());
                let t = lock(&shared);
                if let Some(d) = &cfg.data_dir {
                    let rp = resume_path(d, t.meta.info_hash);
                    if let Err(e) = save_resume(&rp, &t.meta, t.picker.have(), &t.storage) {
                        tracing::warn!(cause = %e, "cannot write the resume file");
                    }
                }
                if !cfg.keep_seeding {
                    break;
                }
                if let Some(d) = cfg.seed_time {
                    tracing::info!(
                        seconds = d.as_secs_f64(),
                        "complete; seeding for the seed time"
                    );
                    seed_until = Some(tokio::time::Instant::now() + d);
                }
            }
            let seed_end = async {
                match seed_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = seed_end => {
                    tracing::info!("seed time over");
                    break;
                }
                r = complete.changed() => if r.is_err() { break },
            }
        }
        stop.cancel();
        if let Some(a) = announcer {
            // The announcer sends `completed` (if not yet sent) and `stopped` on its way out, 2 s
            // at most each; give it that long.
            let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
        }
        let mut t = lock(&shared);
        if done_at.is_none() {
            if let Some(d) = &cfg.data_dir {
                let rp = resume_path(d, t.meta.info_hash);
                let _ = save_resume(&rp, &t.meta, t.picker.have(), &t.storage);
            }
        }
        t.publish_stats();
        Ok(Summary {
            complete: t.picker.is_complete(),
            pieces: t.picker.have().count(),
            downloaded: t.downloaded,
            uploaded: t.uploaded,
            seconds: done_at.unwrap_or_else(|| start.elapsed()).as_secs_f64(),
            resumed_from_file: resumed,
        })
    }
}

fn announce_request(t: &Torrent, port: u16, event: Event, key: u32) -> AnnounceRequest {
    let have = t.picker.have();
    let missing: u64 = (0..have.len())
        .filter(|&i| !have.get(i))
        .map(|i| t.meta.info.piece_len(i) as u64)
        .sum();
    AnnounceRequest {
        info_hash: t.meta.info_hash,
        peer_id: t.peer_id,
        port,
        uploaded: t.uploaded,
        downloaded: t.downloaded,
        left: missing,
        event,
        numwant: 50,
        key,
        ip: None,
    }
}

async fn announce_loop(
    shared: Shared,
    mut tiers: Vec<Vec<String>>,
    port: u16,
    peers: mpsc::UnboundedSender<SocketAddr>,
    mut complete: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let key: u32 = rand::thread_rng().gen();
    let mut event = Event::Started;
    let mut was_complete = *complete.borrow();
    // A torrent complete from the start never announces `completed` (BEP 3: only when the download
    // finishes); one that finishes here must, even when the node stops right after.
    let mut completed_announced = was_complete;
    let mut backoff = Duration::from_secs(5);
    loop {
        let req = announce_request(&lock(&shared), port, event, key);
        let wait = match tracker::announce_tiers(&mut tiers, &req).await {
            Ok(r) => {
                if event == Event::Completed {
                    completed_announced = true;
                }
                lock(&shared).stats.msg_in("announce", 0);
                tracing::info!(
                    peers = r.peers.len(),
                    interval = r.interval,
                    ?event,
                    "announced"
                );
                for p in r.peers {
                    let _ = peers.send(p);
                }
                event = Event::None;
                backoff = Duration::from_secs(5);
                Duration::from_secs(r.interval as u64)
                    .clamp(MIN_ANNOUNCE_INTERVAL, MAX_ANNOUNCE_INTERVAL)
            }
            Err(e) => {
                tracing::warn!(cause = %e, "every tracker failed");
                lock(&shared).stats.error("announce");
                backoff = (backoff * 2).min(Duration::from_secs(120));
                backoff / 2
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            r = complete.changed() => {
                if r.is_ok() && *complete.borrow() && !was_complete {
                    was_complete = true;
                    event = Event::Completed;
                }
            }
        }
    }
    // Without `--seed` the node stops as soon as the download completes, often before the
    // `select!` above saw the change: `completed` is then sent here, before `stopped`.
    if *complete.borrow() && !completed_announced {
        let req = announce_request(&lock(&shared), port, Event::Completed, key);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tracker::announce_tiers(&mut tiers, &req),
        )
        .await;
    }
    let req = announce_request(&lock(&shared), port, Event::Stopped, key);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        tracker::announce_tiers(&mut tiers, &req),
    )
    .await;
}

async fn progress(shared: Shared, stop: CancellationToken) {
    let total = lock(&shared).meta.info.num_pieces() as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} pieces {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last = (Instant::now(), 0u64);
    let mut iv = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = iv.tick() => {}
        }
        let (pieces, down, peers) = {
            let t = lock(&shared);
            (t.picker.have().count() as u64, t.downloaded, t.num_peers())
        };
        let now = Instant::now();
        let rate = (down - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, down);
        bar.set_position(pieces);
        bar.set_message(format!("{:.1} MB/s, {peers} peers", rate / 1e6));
    }
    bar.finish_and_clear();
}
