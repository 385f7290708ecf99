//! The tokio shell around [`crate::protocol::service::Service`]: an HTTP/1.x front end for BEP 3
//! `/announce`, BEP 48 `/scrape` and a `/stats` page, a BEP 15 UDP socket, the expiry timer, the stats
//! record and the state file. Everything that decides anything lives in `protocol`; this module moves bytes.

pub mod files;
mod http;
mod sockopt;
mod udp;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::stats::Stats;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::protocol::service::{Outcome, Service};

/// Most HTTP connections served at once; more wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 4096;
/// Largest HTTP request head read; a bigger one gets a bencoded `failure reason`.
pub const MAX_HTTP_HEAD: usize = crate::codec::head::MAX_HEAD_LEN;
/// A client must send its request head within this time.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most torrents listed on the `/stats` page (the busiest first).
pub const MAX_STATS_ROWS: usize = 1000;
/// `TCP_DEFER_ACCEPT` on the HTTP port: a connection that sends nothing is handed over after this long.
pub const DEFER_ACCEPT_SECS: u16 = 1;
/// How often the state file is rewritten while running (it is also written on exit).
pub const STATE_SAVE_EVERY: Duration = Duration::from_secs(300);

/// What the node needs besides its sockets.
#[derive(Debug)]
pub struct NodeConfig {
    /// Rewrite this file with the torrent counters periodically and on exit.
    pub state_file: Option<PathBuf>,
    /// How often to expire peers.
    pub expire_every: Duration,
    /// The allow-list file, re-read on SIGHUP.
    pub allow_list: Option<PathBuf>,
}

/// State shared by the HTTP connections, the UDP loop and the timers.
#[derive(Debug)]
pub struct Shared {
    service: Mutex<Service>,
    /// The stats record (messages by type, errors by kind, gauges).
    pub stats: Stats,
}

impl Shared {
    /// Wraps a service and its stats record.
    pub fn new(service: Service, stats: Stats) -> Arc<Shared> {
        Arc::new(Shared {
            service: Mutex::new(service),
            stats,
        })
    }

    /// Locks the service. A panic while holding the lock cannot leave the swarm half-updated in a way
    /// that matters more than stopping would, so a poisoned lock is taken over.
    pub fn service(&self) -> MutexGuard<'_, Service> {
        self.service.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, o: Outcome, in_bytes: usize, out_bytes: usize) {
        self.stats.msg_in(o.kind, in_bytes);
        if out_bytes > 0 {
            self.stats.msg_out(reply_kind(o.kind), out_bytes);
        }
        if let Some(e) = o.error {
            self.stats.error(e);
        }
    }

    /// Refreshes the gauges (torrents, peers) from the swarm.
    pub fn update_gauges(&self) {
        let (t, p) = {
            let s = self.service();
            (s.tracker().torrent_count(), s.tracker().peer_count())
        };
        self.stats.set_gauge("torrents", t as i64);
        self.stats.set_gauge("peers", p as i64);
    }
}

fn reply_kind(kind: &'static str) -> &'static str {
    match kind {
        "announce" => "announce_reply",
        "scrape" => "scrape_reply",
        "connect" => "connect_reply",
        _ => "error_reply",
    }
}

/// Seconds since the Unix epoch (the clock BEP 15 connection ids are bucketed on).
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves until `shutdown` is cancelled: HTTP on `http`, BEP 15 on `udp` if given, plus the expiry and
/// state-file timers. Writes the state file once more before returning.
pub async fn run(
    http: TcpListener,
    udp: Option<UdpSocket>,
    shared: Arc<Shared>,
    cfg: NodeConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Before anything is served: a SIGHUP that arrives once clients can talk to us must not find the
    // default action (terminate) still in place.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    // Requests arrive right after the handshake: with the connection handed over only then, the accept
    // loop wakes once per connection and reads the request at once (`http` module doc). A client silent
    // for longer is accepted anyway after that many seconds and gets the usual header timeout.
    if let Err(e) = sockopt::defer_accept(&http, DEFER_ACCEPT_SECS) {
        tracing::warn!(cause = %e, "TCP_DEFER_ACCEPT not set: every connection wakes the accept loop");
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(http::serve(http, shared.clone(), shutdown.clone()));
    if let Some(sock) = udp {
        tasks.spawn(udp::serve(sock, shared.clone(), shutdown.clone()));
    }
    let mut expire = tokio::time::interval(cfg.expire_every);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut save = tokio::time::interval(STATE_SAVE_EVERY);
    save.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(()) = hangup.recv() => reload_allow_list(&shared, &cfg),
            _ = expire.tick() => {
                let removed = shared.service().tracker_mut().expire(Instant::now());
                if removed > 0 {
                    tracing::debug!(removed, "expired peers");
                }
                shared.update_gauges();
            }
            _ = save.tick() => save_state(&shared, &cfg),
            Some(r) = tasks.join_next() => {
                // A server loop only ends early on a socket error: stop the whole node, loudly.
                shutdown.cancel();
                match r {
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(anyhow::anyhow!("server task failed: {e}")),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!(cause = %e, "server loop ended with an error during shutdown");
        }
    }
    shared.update_gauges();
    save_state(&shared, &cfg);
    Ok(())
}

/// SIGHUP: re-reads the allow-list file. A file that cannot be read or parsed leaves the list in force
/// unchanged (a half-edited file must not open or empty the tracker).
fn reload_allow_list(shared: &Shared, cfg: &NodeConfig) {
    let Some(path) = &cfg.allow_list else {
        tracing::info!("SIGHUP: no allow-list file to reload (open mode)");
        return;
    };
    match files::read_allow_list(path) {
        Ok(list) => {
            let n = list.len();
            shared.service().tracker_mut().set_allow_list(Some(list));
            shared.update_gauges();
            shared.stats.msg_in("allow_list_reload", 0);
            tracing::info!(path = %path.display(), torrents = n, "allow-list reloaded");
        }
        Err(e) => {
            shared.stats.error("allow_list_reload");
            tracing::error!(cause = %e, "allow-list not reloaded, the previous one stays in force");
        }
    }
}

fn save_state(shared: &Shared, cfg: &NodeConfig) {
    let Some(path) = &cfg.state_file else { return };
    let counters: Vec<_> = shared.service().tracker().all().collect();
    match files::write_state(path, &counters) {
        Ok(()) => tracing::debug!(path = %path.display(), torrents = counters.len(), "state saved"),
        Err(e) => tracing::error!(path = %path.display(), cause = %e, "cannot write state file"),
    }
}

/// Where the stats page gets its figures.
pub(crate) fn stats_json(shared: &Shared) -> serde_json::Value {
    let (mut rows, torrents, peers) = {
        let s = shared.service();
        let t = s.tracker();
        (
            t.all().collect::<Vec<_>>(),
            t.torrent_count(),
            t.peer_count(),
        )
    };
    let seeders: u64 = rows.iter().map(|(_, c)| u64::from(c.complete)).sum();
    let leechers: u64 = rows.iter().map(|(_, c)| u64::from(c.incomplete)).sum();
    let downloaded: u64 = rows.iter().map(|(_, c)| c.downloaded).sum();
    rows.sort_by_key(|(h, c)| {
        (
            std::cmp::Reverse(u64::from(c.complete) + u64::from(c.incomplete)),
            std::cmp::Reverse(c.downloaded),
            *h,
        )
    });
    rows.truncate(MAX_STATS_ROWS);
    let snap = shared.stats.snapshot();
    serde_json::json!({
        "torrents": torrents,
        "peers": peers,
        "seeders": seeders,
        "leechers": leechers,
        "downloaded": downloaded,
        "messages": snap.messages,
        "errors": snap.errors,
        "uptime_ms": snap.uptime_ms,
        "list": rows.iter().map(|(h, c)| serde_json::json!({
            "info_hash": h.to_string(),
            "complete": c.complete,
            "incomplete": c.incomplete,
            "downloaded": c.downloaded,
        })).collect::<Vec<_>>(),
    })
}

/// The same figures as an HTML table for a browser.
pub(crate) fn stats_html(shared: &Shared) -> String {
    use std::fmt::Write as _;
    let v = stats_json(shared);
    let mut s = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>p2p-lab tracker</title></head><body>\
         <h1>p2p-lab tracker</h1>",
    );
    let _ = write!(
        s,
        "<p>{} torrents, {} peers ({} seeders, {} leechers), {} completed downloads</p>\
         <table border=\"1\"><tr><th>info_hash</th><th>seeders</th><th>leechers</th><th>completed</th></tr>",
        v["torrents"], v["peers"], v["seeders"], v["leechers"], v["downloaded"]
    );
    if let Some(list) = v["list"].as_array() {
        for r in list {
            // Every cell is a hex string or a number: nothing to escape.
            let _ = write!(
                s,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r["info_hash"].as_str().unwrap_or(""),
                r["complete"],
                r["incomplete"],
                r["downloaded"]
            );
        }
    }
    s.push_str("</table></body></html>\n");
    s
}
