//! Downloads by ContentHash (`shared/protocols/kazaa.md` §4 "Multi-source and recovery"): a hash query
//! (max 16, as Kazaa sends) through the ON's SN gives every source with that hash; `common::multisource`
//! fetches byte ranges from all of them in parallel, replaces dead or queued sources, resumes from its
//! state file, and checks the finished file against the UUHash. When it runs low on sources, the hash
//! query is sent again ("Find More Sources"; Kazaa's `DownloadSearchCount=12` bounds the re-searches)
//! and new sources join at once.

use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hash::{KzHash, UuHash};
use common::multisource::{
    BoxFuture, BoxStream, Connector, Download, DownloadConfig, DownloadReport, Event, ExpectedHash,
    Source,
};
use common::stats::{LinkDir, Stats};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::OnClient;
use crate::codec::message::{Query, SearchResult};
use crate::codec::{Message, Realm};
use crate::protocol::matching::terms;
use crate::protocol::ordinary::is_firewalled;

/// Results asked for by a hash query (Kazaa sends 16).
pub const HASH_QUERY_MAX: u16 = 16;
/// Re-searches per download (Kazaa's `DownloadSearchCount=12`).
pub const MAX_RESEARCHES: u32 = 12;
/// Least time between two re-searches.
pub const RESEARCH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a push waits for its `GIVE` connection.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `GIVE <id>\r\n` line.
pub const MAX_GIVE_LINE: usize = 32;

/// Why a download could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The SN could not be reached or the search failed.
    #[error("search through {sn} failed: {source}")]
    Search {
        /// The SN.
        sn: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Nobody (reachable) shares the hash.
    #[error("no reachable source shares {0}")]
    NoSource(String),
    /// The sources disagree with the expected length (a sig2dat link's `Length`).
    #[error("sources have {found} bytes, the link says {expected}")]
    WrongLength {
        /// Size in the results.
        found: u64,
        /// Size expected.
        expected: u64,
    },
    /// The transfer failed.
    #[error(transparent)]
    Download(#[from] common::multisource::DownloadError),
}

/// Options of [`get`].
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// The SN to search through.
    pub sn: SocketAddr,
    /// Network name.
    pub network: String,
    /// Username in requests.
    pub user: String,
    /// Where the file goes.
    pub dest: PathBuf,
    /// The length the file must have (from a sig2dat link), if known.
    pub length: Option<u64>,
    /// The kzhash of a `magnet:?xt=urn:kzhash:` link: the finished file must match it (UUHash and
    /// MD5 tree), so a same-UUHash copy corrupted outside the UUHash's samples is caught.
    pub kzhash: Option<KzHash>,
    /// Downloader settings.
    pub config: DownloadConfig,
    /// Seconds a search may take.
    pub search_timeout: Duration,
    /// Our participation level (0–1000), sent in `X-Kazaa-XferUid` for the uploaders' queues.
    pub participation: u16,
}

fn source_for(r: &SearchResult, user: &str, network: &str, level: u16) -> Option<Source> {
    let url = format!("http://{}{}", r.addr, r.hash.http_path());
    Source::http(&url)
        .ok()?
        .header("X-Kazaa-Username", user)
        .ok()?
        .header("X-Kazaa-Network", network)
        .ok()?
        .header(super::http::PARTICIPATION_HEADER, &level.to_string())
        .ok()
}

async fn hash_search(
    c: &mut OnClient,
    hash: &UuHash,
    timeout: Duration,
) -> std::io::Result<Vec<(SocketAddrV4, SearchResult)>> {
    let q = Query {
        max_results: HASH_QUERY_MAX,
        search_id: 0,
        realm: Realm::All.code(),
        terms: vec![terms::hash(hash)],
    };
    let waves = c.search(q, timeout).await?;
    // Only exact-hash results: a polluter's decoy has another hash and is never mixed in. Each result
    // keeps the SN that answered it: a push to a firewalled source goes to that SN.
    Ok(waves
        .into_iter()
        .flat_map(|w| {
            let sn = w.sn;
            w.results.into_iter().map(move |r| (sn, r))
        })
        .filter(|(_, r)| &r.hash == hash)
        .collect())
}

/// Pushes waiting for their `GIVE` connection, by push id.
type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<BoxStream>>>>;

/// A firewalled source (§4 "Push"): every connection is a 0x0D through our SN, relayed by the source's
/// SN, answered by the source connecting to us and sending `GIVE <push id>\r\n`; the downloader then
/// writes its GET on that socket.
struct PushConnector {
    target: SocketAddrV4,
    target_sn: SocketAddrV4,
    target_user: String,
    requester: SocketAddrV4,
    pending: Pending,
    ids: Arc<AtomicU32>,
    out: mpsc::Sender<Message>,
}

impl std::fmt::Debug for PushConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConnector")
            .field("target", &self.target)
            .field("target_sn", &self.target_sn)
            .finish()
    }
}

impl Connector for PushConnector {
    fn connect(&self) -> BoxFuture<std::io::Result<BoxStream>> {
        let push_id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(push_id, tx);
        let m = Message::PushRequest {
            push_id,
            requester: self.requester,
            target: self.target,
            target_sn: self.target_sn,
            target_user: self.target_user.clone(),
        };
        let (out, pending) = (self.out.clone(), self.pending.clone());
        Box::pin(async move {
            let gone =
                || std::io::Error::new(std::io::ErrorKind::NotConnected, "push not answered");
            out.send(m).await.map_err(|_| gone())?;
            let r = tokio::time::timeout(PUSH_TIMEOUT, rx).await;
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&push_id);
            r.map_err(|_| gone())?.map_err(|_| gone())
        })
    }
}

/// Accepts `GIVE <id>\r\n` connections and hands each to the push waiting for it.
async fn give_listener(listener: TcpListener, pending: Pending) {
    loop {
        let Ok((mut s, from)) = listener.accept().await else {
            // Out of descriptors and the like: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let pending = pending.clone();
        tokio::spawn(async move {
            let mut line = Vec::new();
            let read = async {
                let mut b = [0u8; 1];
                while line.len() < MAX_GIVE_LINE && !line.ends_with(b"\r\n") {
                    s.read_exact(&mut b).await?;
                    line.push(b[0]);
                }
                Ok::<_, std::io::Error>(())
            };
            if tokio::time::timeout(PUSH_TIMEOUT, read).await.is_err() {
                return;
            }
            let id = std::str::from_utf8(&line)
                .ok()
                .and_then(|l| l.strip_prefix("GIVE "))
                .and_then(|l| l.trim_end().parse::<u32>().ok());
            let waiter = id.and_then(|id| {
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id)
            });
            match waiter {
                Some(tx) => {
                    tracing::debug!(%from, ?id, "GIVE received");
                    let _ = tx.send(Box::new(s));
                }
                None => tracing::info!(%from, "unexpected GIVE line dropped"),
            }
        });
    }
}

/// Downloads `hash` from every source the SN knows; `progress` sees each [`Event`].
pub async fn get(
    hash: UuHash,
    opts: GetOptions,
    stats: Stats,
    mut progress: impl FnMut(&Event) + Send,
) -> Result<DownloadReport, GetError> {
    let search_err = |source| GetError::Search {
        sn: opts.sn,
        source,
    };
    let anon = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    let mut client = OnClient::connect(opts.sn, &opts.network, anon, &opts.user, &[], Some(&stats))
        .await
        .map_err(search_err)?;
    // The session to the SN is this client's overlay link for the whole download (re-searches).
    let _link = stats.link_guard(opts.sn, LinkDir::Out, "supernode");
    let found = hash_search(&mut client, &hash, opts.search_timeout)
        .await
        .map_err(search_err)?;
    let Some((_, first)) = found.first() else {
        return Err(GetError::NoSource(hash.to_hex()));
    };
    let size = first.size;
    if let Some(expected) = opts.length {
        if expected != size {
            return Err(GetError::WrongLength {
                found: size,
                expected,
            });
        }
    }
    // Where firewalled sources connect back: loopback, as everything in the lab.
    let give = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(search_err)?;
    let requester = match give.local_addr().map_err(search_err)? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => return Err(GetError::NoSource(hash.to_hex())),
    };
    let pending: Pending = Arc::default();
    let give_task = tokio::spawn(give_listener(give, pending.clone()));
    let (push_tx, mut push_rx) = mpsc::channel::<Message>(64);
    let ids = Arc::new(AtomicU32::new(1));
    let mk = {
        let level = opts.participation;
        let (user, network, pending, ids, push_tx) = (
            opts.user.clone(),
            opts.network.clone(),
            pending.clone(),
            ids.clone(),
            push_tx.clone(),
        );
        move |sn: SocketAddrV4, r: &SearchResult| -> Option<Source> {
            let plain = source_for(r, &user, &network, level)?;
            if !is_firewalled(&r.addr) {
                return Some(plain);
            }
            let c = PushConnector {
                target: r.addr,
                target_sn: sn,
                target_user: r.user.clone(),
                requester,
                pending: pending.clone(),
                ids: ids.clone(),
                out: push_tx.clone(),
            };
            Some(Source {
                connector: Some(Arc::new(c)),
                ..plain
            })
        }
    };
    let mut seen: HashSet<(SocketAddrV4, String)> = HashSet::new();
    let sources: Vec<Source> = found
        .iter()
        .filter(|(_, r)| r.size == size && seen.insert((r.addr, r.user.clone())))
        .filter_map(|(sn, r)| mk(*sn, r))
        .collect();
    drop(push_tx);
    tracing::info!(sources = sources.len(), size, "starting download");
    let (dl, adder, mut events) = Download::new(
        &opts.dest,
        size,
        match opts.kzhash {
            Some(kz) => ExpectedHash::KzHash(kz),
            None => ExpectedHash::UuHash(hash),
        },
        opts.config.clone(),
        stats,
    );
    let run = tokio::spawn(dl.run(sources));
    // "Low on sources" is a level, not an edge: re-search every RESEARCH_INTERVAL while it lasts. The
    // same task owns the SN session, so it also sends the pushes.
    let (low_tx, mut low_rx) = watch::channel(false);
    let timeout = opts.search_timeout;
    let low_mark = opts.config.low_sources;
    let researcher = tokio::spawn(async move {
        let mut done = 0;
        let mut push_open = true;
        let mut next_search = tokio::time::Instant::now();
        loop {
            tokio::select! {
                m = push_rx.recv(), if push_open => match m {
                    Some(m) => {
                        if let Err(e) = client.push_request(m).await {
                            tracing::info!(error = %e, "push request failed");
                        }
                    }
                    None => push_open = false,
                },
                r = async { low_rx.wait_for(|low| *low).await.map(|_| ()) }, if done < MAX_RESEARCHES => {
                    if r.is_err() {
                        return;
                    }
                    tokio::time::sleep_until(next_search).await;
                    done += 1;
                    next_search = tokio::time::Instant::now() + RESEARCH_INTERVAL;
                    match hash_search(&mut client, &hash, timeout).await {
                        Ok(rs) => {
                            for (sn, r) in rs.iter().filter(|(_, r)| r.size == size) {
                                if seen.insert((r.addr, r.user.clone())) {
                                    if let Some(s) = mk(*sn, r) {
                                        tracing::info!(source = %r.addr, "new source from a re-search by hash");
                                        adder.add(s).await;
                                    }
                                }
                            }
                        }
                        Err(e) => tracing::info!(error = %e, "re-search failed"),
                    }
                }
                // Re-search budget spent and no pushes to send: nothing left to do.
                else => return,
            }
        }
    });
    while let Some(ev) = events.recv().await {
        match &ev {
            Event::LowOnSources { .. } => {
                let _ = low_tx.send(true);
            }
            Event::Progress(p) => {
                let _ = low_tx.send(p.active + p.queued + p.idle < low_mark);
            }
            _ => {}
        }
        progress(&ev);
    }
    researcher.abort();
    give_task.abort();
    let report = run.await.map_err(|e| GetError::Search {
        sn: opts.sn,
        source: std::io::Error::other(e.to_string()),
    })??;
    Ok(report)
}
