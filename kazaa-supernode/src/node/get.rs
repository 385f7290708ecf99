//! Downloads by ContentHash (`shared/protocols/kazaa.md` §4 "Multi-source and recovery"): a hash query
//! (max 16, as Kazaa sends) through the ON's SN gives every source with that hash; `common::multisource`
//! fetches byte ranges from all of them in parallel, replaces dead or queued sources, resumes from its
//! state file, and checks the finished file against the UUHash. When it runs low on sources, the hash
//! query is sent again ("Find More Sources"; Kazaa's `DownloadSearchCount=12` bounds the re-searches)
//! and new sources join at once.

use std::collections::HashSet;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use common::hash::UuHash;
use common::multisource::{Download, DownloadConfig, DownloadReport, Event, ExpectedHash, Source};
use common::stats::Stats;
use tokio::sync::watch;

use super::OnClient;
use crate::codec::message::{Query, SearchResult};
use crate::codec::Realm;
use crate::protocol::matching::terms;
use crate::protocol::ordinary::is_firewalled;

/// Results asked for by a hash query (Kazaa sends 16).
pub const HASH_QUERY_MAX: u16 = 16;
/// Re-searches per download (Kazaa's `DownloadSearchCount=12`).
pub const MAX_RESEARCHES: u32 = 12;
/// Least time between two re-searches.
pub const RESEARCH_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Downloader settings.
    pub config: DownloadConfig,
    /// Seconds a search may take.
    pub search_timeout: Duration,
}

fn source_for(r: &SearchResult, user: &str, network: &str) -> Option<Source> {
    let url = format!("http://{}{}", r.addr, r.hash.http_path());
    Source::http(&url)
        .ok()?
        .header("X-Kazaa-Username", user)
        .ok()?
        .header("X-Kazaa-Network", network)
        .ok()
}

async fn hash_search(
    c: &mut OnClient,
    hash: &UuHash,
    timeout: Duration,
) -> std::io::Result<Vec<SearchResult>> {
    let q = Query {
        max_results: HASH_QUERY_MAX,
        search_id: 0,
        realm: Realm::All.code(),
        terms: vec![terms::hash(hash)],
    };
    let waves = c.search(q, timeout).await?;
    // Only exact-hash results: a polluter's decoy has another hash and is never mixed in.
    Ok(waves
        .into_iter()
        .flat_map(|w| w.results)
        .filter(|r| &r.hash == hash)
        .collect())
}

/// Downloads `hash` from every source the SN knows; `progress` sees each [`Event`].
pub async fn get(
    hash: UuHash,
    opts: GetOptions,
    stats: Stats,
    mut progress: impl FnMut(&Event) + Send,
) -> Result<DownloadReport, GetError> {
    let anon = SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    let mut client = OnClient::connect(opts.sn, &opts.network, anon, &opts.user, &[])
        .await
        .map_err(|source| GetError::Search {
            sn: opts.sn,
            source,
        })?;
    let found = hash_search(&mut client, &hash, opts.search_timeout)
        .await
        .map_err(|source| GetError::Search {
            sn: opts.sn,
            source,
        })?;
    let reachable: Vec<&SearchResult> = found.iter().filter(|r| !is_firewalled(&r.addr)).collect();
    let Some(first) = reachable.first() else {
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
    let mut seen: HashSet<SocketAddrV4> = HashSet::new();
    let sources: Vec<Source> = reachable
        .iter()
        .filter(|r| r.size == size && seen.insert(r.addr))
        .filter_map(|r| source_for(r, &opts.user, &opts.network))
        .collect();
    tracing::info!(sources = sources.len(), size, "starting download");
    let (dl, adder, mut events) = Download::new(
        &opts.dest,
        size,
        ExpectedHash::UuHash(hash),
        opts.config.clone(),
        stats,
    );
    let run = tokio::spawn(dl.run(sources));
    // "Low on sources" is a level, not an edge: re-search every RESEARCH_INTERVAL while it lasts.
    let (low_tx, mut low_rx) = watch::channel(false);
    let (user, network, timeout) = (opts.user.clone(), opts.network.clone(), opts.search_timeout);
    let low_mark = opts.config.low_sources;
    let researcher = tokio::spawn(async move {
        let mut done = 0;
        while done < MAX_RESEARCHES {
            if low_rx.wait_for(|low| *low).await.is_err() {
                return;
            }
            done += 1;
            match hash_search(&mut client, &hash, timeout).await {
                Ok(rs) => {
                    for r in rs
                        .iter()
                        .filter(|r| r.size == size && !is_firewalled(&r.addr))
                    {
                        if seen.insert(r.addr) {
                            if let Some(s) = source_for(r, &user, &network) {
                                tracing::info!(source = %r.addr, "new source from a re-search by hash");
                                adder.add(s).await;
                            }
                        }
                    }
                }
                Err(e) => tracing::info!(error = %e, "re-search failed"),
            }
            tokio::time::sleep(RESEARCH_INTERVAL).await;
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
    let report = run.await.map_err(|e| GetError::Search {
        sn: opts.sn,
        source: std::io::Error::other(e.to_string()),
    })??;
    Ok(report)
}
