//! The Napster client's tokio shell: the control connection to the server, the data-port listener, and
//! the peer transfers of notes §3 (GET with resume, firewalled SEND push after a 501).
//!
//! Like TekNap, an upload is served only after the server's 607 for that nick and file was answered with
//! our 608, once per 607 and within [`GRANT_TTL`]; anything else gets `INVALID REQUEST` (notes §3). Shares
//! come from `common::library`, with the Napster MD5 of `common::hash`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::{Buf, BytesMut};
use common::hash::napster::{id3v2_tag_len, ID3V2_HEADER_LEN};
use common::hash::HashKinds;
use common::library::{Library, LibraryConfig, Progress, SharedFile};
use common::ratelimit::RateLimiter;
use common::stats::{LinkDir, LinkGuard, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn, Instrument};

use crate::codec::fields::{quote, Fields};
use crate::codec::mp3::{self, Mp3Info};
use crate::codec::msg::{ty, ClientMsg, Login, ShareInfo};
use crate::codec::peer::{
    encode_request, parse_request, PeerCommand, PeerRequest, FILE_NOT_FOUND, FILE_NOT_REQUESTED,
    FILE_NOT_SHARED, INVALID_REQUEST,
};
use crate::codec::{ip, Frame, MAX_PAYLOAD};

use super::type_name;

/// How long to wait for any one server reply or peer step.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long pings to candidate uploaders may take before the best answer so far is used.
pub const PING_WINDOW: Duration = Duration::from_secs(2);

/// Pongs are relayed through the server, so their times carry its and both clients' scheduling noise:
/// sources whose pong came within this much of the fastest one count as equally near, and the link speed
/// they announced decides among them.
pub const PING_TIE: Duration = Duration::from_millis(500);

/// How long an answered 607 waits for the downloader's `GET` (or the server's 501) before it lapses. A
/// downloader connects as soon as its 204 arrives (and gives up after its own step timeout), so an older
/// grant belongs to a download that is not coming.
pub const GRANT_TTL: Duration = Duration::from_secs(120);

/// Most answered 607s waiting for their `GET` at once. The server sends a 607 for every 203 anyone
/// makes, so without a cap a downloader that never connects would grow the set for as long as we are
/// online; past it the oldest grant lapses.
pub const MAX_GRANTS: usize = 256;

/// Bytes read from a shared file and written to a downloader at a time.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Frames from the server kept for the command that waits for them.
const EVENT_QUEUE: usize = 8192;

/// Audio fields announced for a shared file that is not a readable MP3: 128 kbit/s, 44.1 kHz (and a
/// duration derived from the size), what most 1999 rips were.
const ASSUMED_BITRATE: u32 = 128;
const ASSUMED_FREQ: u32 = 44_100;

/// What a client needs to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address.
    pub server: SocketAddr,
    /// Nick.
    pub nick: String,
    /// Password.
    pub password: String,
    /// Register (type 6) with this email instead of a plain login.
    pub register: Option<String>,
    /// Link-speed code 0..=10.
    pub speed: u8,
    /// Folder to share.
    pub share: Option<PathBuf>,
    /// Hash cache and partial downloads.
    pub data_dir: PathBuf,
    /// Announce data port 0 and never listen (uploads only by push).
    pub firewalled: bool,
    /// Where the data port listens when not firewalled.
    pub data_listen: SocketAddr,
    /// How long `get` waits for pongs before ranking (default [`PING_WINDOW`]).
    pub ping_window: Duration,
    /// Pong times this close to the fastest tie (default [`PING_TIE`]).
    pub ping_tie: Duration,
    /// Cap shared by all uploads (GET answers and pushes) of this client.
    pub upload_limit: Option<RateLimiter>,
    /// Cap shared by all downloads of this client.
    pub download_limit: Option<RateLimiter>,
}

/// One search result (201).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SearchHit {
    /// Path as shared.
    pub path: String,
    /// MD5 text.
    pub md5: String,
    /// Size in bytes.
    pub size: u64,
    /// Bitrate.
    pub bitrate: u32,
    /// Sample rate.
    pub freq: u32,
    /// Seconds.
    pub secs: u32,
    /// Uploader.
    pub nick: String,
    /// Uploader address.
    pub ip: Ipv4Addr,
    /// Uploader link speed.
    pub speed: u32,
}

impl SearchHit {
    /// Parses a 201 payload.
    pub fn parse(text: &str) -> anyhow::Result<SearchHit> {
        let mut f = Fields::new(text)?;
        Ok(SearchHit {
            path: f.str("path")?.to_owned(),
            md5: f.str("md5")?.to_owned(),
            size: f.num("size")?,
            bitrate: f.num("bitrate")?,
            freq: f.num("freq")?,
            secs: f.num("secs")?,
            nick: f.str("nick")?.to_owned(),
            ip: ip::from_wire(f.num("ip")?),
            speed: f.num("speed")?,
        })
    }
}

/// Result of a download.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Downloaded {
    /// Where the file was written.
    pub file: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes fetched in this run (less than `size` after a resume).
    pub fetched: u64,
    /// Uploader nick.
    pub from: String,
    /// `get` (we connected) or `push` (the firewalled uploader connected to us).
    pub method: &'static str,
    /// Offset the transfer started at.
    pub offset: u64,
    /// Seconds from contacting the uploader to the last byte.
    pub transfer_secs: f64,
}

/// Hands an incoming SEND connection to the download waiting for it.
type PushWaiter = oneshot::Sender<(TcpStream, PeerRequest)>;

struct Shared {
    nick: String,
    stats: Stats,
    ctl: mpsc::Sender<Frame>,
    library: Option<Library>,
    /// Wire path → library relative path.
    paths: HashMap<String, String>,
    /// Uploads we answered a 607 for, waiting for their GET or 501.
    allowed: Mutex<Grants>,
    /// Pushes we asked for with 500: (uploader nick lower-case, path) → the connection when it arrives.
    pushes: Mutex<HashMap<(String, String), PushWaiter>>,
    upload_limit: Option<RateLimiter>,
    download_limit: Option<RateLimiter>,
}

/// A logged-in client.
pub struct Client {
    shared: Arc<Shared>,
    events: mpsc::Receiver<(u16, String)>,
    ping_window: Duration,
    ping_tie: Duration,
    /// The data port listener's address (None when firewalled).
    pub data_addr: Option<SocketAddr>,
    /// Local address of the control connection.
    pub control_addr: SocketAddr,
    /// Files shared.
    pub shared_files: usize,
}

fn wire_path(rel: &str) -> String {
    rel.replace('/', "\\")
}

impl Client {
    /// Scans the share (if any), connects, logs in, shares and starts serving.
    pub async fn connect(cfg: ClientConfig, stats: Stats) -> anyhow::Result<Client> {
        let (library, paths) = match &cfg.share {
            Some(dir) => {
                let lcfg = LibraryConfig::new(dir)
                    .data_dir(cfg.data_dir.join("library"))
                    .kinds(HashKinds {
                        napster_md5: true,
                        ..HashKinds::default()
                    })
                    .progress(Progress::Auto);
                let lib = tokio::task::spawn_blocking(move || Library::open(lcfg))
                    .await?
                    .with_context(|| format!("cannot share {}", dir.display()))?;
                let paths = lib
                    .files()
                    .iter()
                    .filter(|f| !f.path.as_str().contains('"'))
                    .map(|f| (wire_path(f.path.as_str()), f.path.as_str().to_owned()))
                    .collect();
                (Some(lib), paths)
            }
            None => (None, HashMap::new()),
        };
        let data = if cfg.firewalled {
            None
        } else {
            Some(
                TcpListener::bind(cfg.data_listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", cfg.data_listen))?,
            )
        };
        let data_addr = data.as_ref().map(|l| l.local_addr()).transpose()?;
        let stream = timeout(STEP_TIMEOUT, TcpStream::connect(cfg.server))
            .await
            .map_err(|_| anyhow!("timed out connecting to {}", cfg.server))?
            .with_context(|| format!("cannot connect to {}", cfg.server))?;
        stream.set_nodelay(true)?;
        // The session with the server is the client's one overlay link; it lasts as long as the reader.
        let link = stats.link_guard(cfg.server, LinkDir::Out, "server");
        let control_addr = stream.local_addr()?;
        let (rd, mut wr) = stream.into_split();
        let (ctl, mut ctl_rx) = mpsc::channel::<Frame>(1024);
        let (ev_tx, events) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            nick: cfg.nick.clone(),
            stats: stats.clone(),
            ctl,
            library,
            paths,
            allowed: Mutex::new(Grants::default()),
            pushes: Mutex::new(HashMap::new()),
            upload_limit: cfg.upload_limit.clone(),
            download_limit: cfg.download_limit.clone(),
        });
        let wstats = stats.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::new();
            while let Some(f) = ctl_rx.recv().await {
                buf.clear();
                if f.encode(&mut buf).is_err() {
                    continue;
                }
                wstats.msg_out(type_name(f.ty), buf.len());
                if wr.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(control_reader(rd, shared.clone(), ev_tx, link).in_current_span());
        if let Some(l) = data {
            tokio::spawn(data_listener(l, shared.clone()).in_current_span());
        }
        let mut c = Client {
            shared,
            events,
            ping_window: cfg.ping_window,
            ping_tie: cfg.ping_tie,
            data_addr,
            control_addr,
            shared_files: 0,
        };
        let login = Login {
            nick: cfg.nick.clone(),
            password: cfg.password.clone(),
            port: data_addr.map_or(0, |a| a.port().into()),
            client: format!("p2p-lab napster-client {}", env!("CARGO_PKG_VERSION")),
            speed: cfg.speed.into(),
        };
        let msg = match cfg.register {
            Some(email) => ClientMsg::Register(login, email),
            None => ClientMsg::Login(login),
        };
        c.send(msg).await?;
        loop {
            let (t, text) = c.next_event().await?;
            match t {
                ty::LOGIN_ACK => break,
                ty::ERROR => bail!("login refused: {text}"),
                ty::NICK_INVALID => bail!("login refused: invalid nick ({text})"),
                ty::NOTICE => bail!("login refused: {text}"),
                _ => {}
            }
        }
        // The greeting ends with the 214 stats line.
        while c.next_event().await?.0 != ty::STATS {}
        c.shared_files = c.share_all().await?;
        if c.shared_files > 0 {
            // The shares only go into the control channel; a 214 round trip (answered in order) makes
            // "connected" mean "the server has indexed them", so a caller that announces readiness next
            // cannot be searched for before its files are there.
            c.settle().await?;
        }
        Ok(c)
    }

    async fn send(&self, m: ClientMsg) -> anyhow::Result<()> {
        self.shared
            .ctl
            .send(m.to_frame()?)
            .await
            .map_err(|_| anyhow!("connection to the server lost"))
    }

    async fn next_event(&mut self) -> anyhow::Result<(u16, String)> {
        match timeout(STEP_TIMEOUT, self.events.recv()).await {
            Ok(Some(e)) => Ok(e),
            Ok(None) => bail!("connection to the server lost"),
            Err(_) => bail!("timed out waiting for the server"),
        }
    }

    async fn share_all(&self) -> anyhow::Result<usize> {
        let Some(lib) = &self.shared.library else {
            return Ok(0);
        };
        let shared = self.shared.clone();
        let audio: Vec<Option<Mp3Info>> = tokio::task::spawn_blocking(move || {
            let Some(lib) = &shared.library else {
                return Vec::new();
            };
            lib.files().iter().map(|f| mp3_info(lib, f)).collect()
        })
        .await?;
        let mut n = 0;
        for (i, f) in lib.files().iter().enumerate() {
            let wire = wire_path(f.path.as_str());
            if !self.shared.paths.contains_key(&wire) {
                continue;
            }
            let md5 = f
                .hashes
                .napster_md5
                .map(|d| d.to_hex())
                .unwrap_or_else(|| "0".repeat(32));
            let info = audio.get(i).copied().flatten().unwrap_or(Mp3Info {
                bitrate: ASSUMED_BITRATE,
                freq: ASSUMED_FREQ,
                secs: (f.size / (u64::from(ASSUMED_BITRATE) * 125)).min(u32::MAX.into()) as u32,
            });
            self.send(ClientMsg::Share(ShareInfo {
                path: wire,
                md5,
                size: f.size,
                bitrate: info.bitrate,
                freq: info.freq,
                secs: info.secs,
            }))
            .await?;
            n += 1;
        }
        Ok(n)
    }

    /// Consumes everything the server sent before now: a 214 goes out and every event up to its reply is
    /// dropped (notices logged). The server answers in order, so a 404 left over from earlier work (a
    /// share-cap notice, `user X is not online` after a 608) cannot be read as the reply to what comes next.
    async fn settle(&mut self) -> anyhow::Result<()> {
        self.send(ClientMsg::Stats).await?;
        loop {
            match self.next_event().await? {
                (ty::STATS, _) => return Ok(()),
                (ty::NOTICE, text) => info!(%text, "server notice"),
                _ => {}
            }
        }
    }

    /// Searches for `words` (at most `max` results).
    pub async fn search(&mut self, words: &str, max: usize) -> anyhow::Result<Vec<SearchHit>> {
        self.search_each(words, max, |_| {}).await
    }

    /// [`Client::search`], calling `on_hit` with each result as its 201 arrives (before the 202 ends
    /// the list), so a caller can show results while the server is still sending them.
    pub async fn search_each(
        &mut self,
        words: &str,
        max: usize,
        mut on_hit: impl FnMut(&SearchHit),
    ) -> anyhow::Result<Vec<SearchHit>> {
        let q = format!("FILENAME CONTAINS {} MAX_RESULTS {max}", quote(words)?);
        self.settle().await?;
        self.send(ClientMsg::Search(q)).await?;
        let mut hits = Vec::new();
        let mut last_notice = None;
        loop {
            let (t, text) = self.next_event().await?;
            match t {
                ty::SEARCH_RESULT => match SearchHit::parse(&text) {
                    Ok(h) => {
                        on_hit(&h);
                        hits.push(h);
                    }
                    Err(e) => warn!(cause = %e, "bad search result"),
                },
                ty::NOTICE => {
                    if let Some(old) = last_notice.replace(text) {
                        info!(text = %old, "server notice");
                    }
                }
                // OpenNap and this server refuse a search with a 404 right before its 202; a 404 followed
                // by results or other events belongs to something else.
                ty::SEARCH_END => {
                    return match last_notice {
                        Some(text) if hits.is_empty() => bail!("search refused: {text}"),
                        _ => Ok(hits),
                    };
                }
                _ => {}
            }
            if t != ty::NOTICE {
                if let Some(old) = last_notice.take() {
                    info!(text = %old, "server notice");
                }
            }
        }
    }

    /// Lists a user's files (211 → 212… → 213).
    pub async fn browse(&mut self, nick: &str) -> anyhow::Result<Vec<ShareInfo>> {
        // An unknown nick gets 210 and then 213; the 213 of an earlier such browse must not end this one.
        self.settle().await?;
        self.send(ClientMsg::Browse(nick.to_owned())).await?;
        let mut out = Vec::new();
        loop {
            let (t, text) = self.next_event().await?;
            match t {
                ty::BROWSE_ENTRY => {
                    let mut f = Fields::new(&text)?;
                    let _nick = f.str("nick")?;
                    out.push(ShareInfo {
                        path: f.str("path")?.to_owned(),
                        md5: f.str("md5")?.to_owned(),
                        size: f.num("size")?,
                        bitrate: f.num("bitrate")?,
                        freq: f.num("freq")?,
                        secs: f.num("secs")?,
                    });
                }
                ty::HOTLIST_OFF => bail!("{nick} is not online"),
                ty::BROWSE_END => return Ok(out),
                _ => {}
            }
        }
    }

    /// Pings every distinct uploader in `hits` and returns them best first, as the tutorial's client does
    /// before picking a source: those that answered within the ping window ([`PING_WINDOW`] unless
    /// configured), in tie-wide bands ([`PING_TIE`]) of pong time after the fastest, highest announced
    /// link speed first within a band; those that never answered last, by link speed. (A cap an uploader
    /// does not announce through its link speed cannot be seen before the transfer.)
    pub async fn rank_sources(&mut self, hits: &[SearchHit]) -> anyhow::Result<Vec<SearchHit>> {
        let mut nicks: Vec<String> = hits.iter().map(|h| h.nick.clone()).collect();
        nicks.sort();
        nicks.dedup();
        let start = Instant::now();
        for n in &nicks {
            self.send(ClientMsg::Ping(n.clone())).await?;
        }
        let mut rtt: HashMap<String, Duration> = HashMap::new();
        let deadline = start + self.ping_window;
        while rtt.len() < nicks.len() {
            let Ok(ev) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                break;
            };
            let Some((t, text)) = ev else {
                bail!("connection to the server lost")
            };
            if t == ty::PONG {
                rtt.entry(text.to_ascii_lowercase())
                    .or_insert_with(|| start.elapsed());
            }
        }
        Ok(rank_by_pong(hits, &rtt, self.ping_tie))
    }

    /// Downloads `hit` into `out_dir` (resuming a `.part` file left by an earlier attempt).
    pub async fn download(
        &mut self,
        hit: &SearchHit,
        out_dir: &Path,
    ) -> anyhow::Result<Downloaded> {
        let name = hit
            .path
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or("download")
            .chars()
            .map(|c| if c.is_control() || c == ':' { '_' } else { c })
            .collect::<String>();
        let name = if name.is_empty() || name == "." || name == ".." {
            "download".to_owned()
        } else {
            name
        };
        tokio::fs::create_dir_all(out_dir).await?;
        let file = out_dir.join(&name);
        let part = out_dir.join(format!("{name}.part"));
        let offset = tokio::fs::metadata(&part)
            .await
            .map_or(0, |m| m.len())
            .min(hit.size);
        self.settle().await?;
        self.send(ClientMsg::Download(hit.nick.clone(), hit.path.clone()))
            .await?;
        let (port, md5) = loop {
            let (t, text) = self.next_event().await?;
            match t {
                ty::DOWNLOAD_ACK => {
                    let mut f = Fields::new(&text)?;
                    let nick = f.str("nick")?;
                    let _ip: u32 = f.num("ip")?;
                    let port: u16 = f.num("port")?;
                    let path = f.str("path")?;
                    let md5 = f.str("md5")?.to_owned();
                    if nick.eq_ignore_ascii_case(&hit.nick) && path == hit.path {
                        break (port, md5);
                    }
                }
                ty::DOWNLOAD_ERROR => bail!("{} is not online", hit.nick),
                ty::NOTICE if is_download_refusal(&text, hit) => {
                    bail!("download refused: {text}")
                }
                ty::NOTICE => info!(%text, "server notice"),
                _ => {}
            }
        };
        self.send(ClientMsg::DownloadStart).await?;
        self.shared.stats.transfers(|t| t.downloads_started += 1);
        let started = std::time::Instant::now();
        let result = if port != 0 {
            self.get_from(hit, port, offset, &part)
                .await
                .map(|n| (n, "get"))
        } else if md5 == "firewallerror" {
            Err(anyhow!(
                "both {} and we are firewalled: no transfer possible",
                hit.nick
            ))
        } else {
            self.push_from(hit, offset, &part)
                .await
                .map(|n| (n, "push"))
        };
        let transfer_secs = started.elapsed().as_secs_f64();
        self.send(ClientMsg::DownloadEnd).await?;
        // The 219 only sits in the writer task's queue here: a `get` that exits right away could lose it
        // (the server's download count for us would stay up, our stats would not count it). A 214 round
        // trip proves the server has it; a server that is gone by now does not fail the download.
        if let Err(e) = self.settle().await {
            warn!(cause = %e, "no reply from the server after the download");
        }
        let (fetched, method) = match result {
            Ok(x) => x,
            Err(e) => {
                self.shared.stats.transfers(|t| t.downloads_failed += 1);
                return Err(e);
            }
        };
        let len = tokio::fs::metadata(&part).await?.len();
        if len != hit.size {
            self.shared.stats.transfers(|t| t.downloads_failed += 1);
            bail!(
                "transfer ended at {len} of {} bytes (run again to resume)",
                hit.size
            );
        }
        tokio::fs::rename(&part, &file).await?;
        self.shared.stats.transfers(|t| t.downloads_completed += 1);
        Ok(Downloaded {
            file,
            size: hit.size,
            fetched,
            from: hit.nick.clone(),
            method,
            offset,
            transfer_secs,
        })
    }

    async fn get_from(
        &self,
        hit: &SearchHit,
        port: u16,
        offset: u64,
        part: &Path,
    ) -> anyhow::Result<u64> {
        let addr = SocketAddr::from((hit.ip, port));
        let mut s = timeout(STEP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("timed out connecting to {addr}"))??;
        let mut one = [0u8; 1];
        timeout(STEP_TIMEOUT, s.read_exact(&mut one)).await??;
        if one[0] != b'1' {
            bail!("peer did not greet with '1'");
        }
        let req = PeerRequest {
            command: PeerCommand::Get,
            nick: self.shared.nick.clone(),
            path: hit.path.clone(),
            number: offset,
        };
        s.write_all(&encode_request(&req)).await?;
        // Exactly as many digits as the expected size has: the data may itself start with a digit.
        let want = hit.size.to_string();
        let mut digits = vec![0u8; want.len()];
        let n = read_up_to(&mut s, &mut digits).await?;
        if digits[..n] != *want.as_bytes() {
            let mut rest = Vec::new();
            let _ = timeout(
                Duration::from_secs(2),
                (&mut s).take(256).read_to_end(&mut rest),
            )
            .await;
            let mut text = String::from_utf8_lossy(&digits[..n]).into_owned();
            text.push_str(&String::from_utf8_lossy(&rest));
            bail!("{} refused: {}", hit.nick, text.trim());
        }
        receive(s, part, offset, hit.size, &self.shared).await
    }

    async fn push_from(
        &mut self,
        hit: &SearchHit,
        offset: u64,
        part: &Path,
    ) -> anyhow::Result<u64> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((hit.nick.to_ascii_lowercase(), hit.path.clone()), tx);
        self.send(ClientMsg::PushRequest(hit.nick.clone(), hit.path.clone()))
            .await?;
        let pushed = timeout(STEP_TIMEOUT, rx).await;
        // A push that never came must not leave its waiter behind (a late SEND gets FILE NOT REQUESTED).
        self.shared
            .pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(hit.nick.to_ascii_lowercase(), hit.path.clone()));
        let (mut s, req) = pushed
            .map_err(|_| anyhow!("{} never pushed the file", hit.nick))?
            .map_err(|_| anyhow!("push listener gone"))?;
        if req.number != hit.size {
            bail!(
                "push announced {} bytes, search said {}",
                req.number,
                hit.size
            );
        }
        s.write_all(offset.to_string().as_bytes()).await?;
        receive(s, part, offset, hit.size, &self.shared).await
    }

    /// Stays online serving uploads until `stop` resolves.
    pub async fn serve_until(mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                e = self.events.recv() => match e {
                    Some((ty::NOTICE, text)) => info!(%text, "server notice"),
                    Some(_) => {}
                    None => { warn!("server closed the connection"); return; }
                },
            }
        }
    }
}

/// Orders `hits` by the pong times in `rtt` (lower-case nick → time; absent = never answered) in
/// `tie`-wide bands, as [`Client::rank_sources`] describes. The sort is stable: equal sources keep the
/// server's order.
fn rank_by_pong(
    hits: &[SearchHit],
    rtt: &HashMap<String, Duration>,
    tie: Duration,
) -> Vec<SearchHit> {
    let best = rtt.values().min().copied().unwrap_or_default();
    let tie = tie.as_millis().max(1);
    let band = |h: &SearchHit| {
        rtt.get(&h.nick.to_ascii_lowercase())
            .map_or(u128::MAX, |t| t.saturating_sub(best).as_millis() / tie)
    };
    let mut ranked = hits.to_vec();
    ranked.sort_by_key(|h| {
        (
            band(h),
            std::cmp::Reverse(h.speed),
            rtt.get(&h.nick.to_ascii_lowercase()).copied(),
        )
    });
    ranked
}

/// The uploads we agreed to with a 608, waiting for their `GET` (or the 501 that starts a push): one per
/// (downloader nick, path), used once, lapsing after [`GRANT_TTL`] or when [`MAX_GRANTS`] newer ones
/// came. Time is passed in.
#[derive(Debug, Default)]
struct Grants {
    /// (downloader nick lower-case, wire path) → when the 607 was answered.
    pending: HashMap<(String, String), std::time::Instant>,
}

impl Grants {
    /// Records a 607 we answered at `now` (a repeated one restarts its time). Returns the grant that had
    /// to lapse to stay within [`MAX_GRANTS`], if any.
    fn grant(
        &mut self,
        nick: &str,
        path: &str,
        now: std::time::Instant,
    ) -> Option<(String, String)> {
        self.pending
            .retain(|_, at| now.saturating_duration_since(*at) < GRANT_TTL);
        let key = (nick.to_ascii_lowercase(), path.to_owned());
        let mut lapsed = None;
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_GRANTS {
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.pending.remove(&k);
                lapsed = Some(k);
            }
        }
        self.pending.insert(key, now);
        lapsed
    }

    /// Uses up the grant for `nick` and `path`: true when one was made less than [`GRANT_TTL`] before `now`.
    fn take(&mut self, nick: &str, path: &str, now: std::time::Instant) -> bool {
        self.pending
            .remove(&(nick.to_ascii_lowercase(), path.to_owned()))
            .is_some_and(|at| now.saturating_duration_since(at) < GRANT_TTL)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.len()
    }
}

/// The 404s a 203 can earn: `permission denied…` (leech) or one that names the uploader or the file. Anything
/// else (share cap, a 608 to someone who left) is about other work.
fn is_download_refusal(text: &str, hit: &SearchHit) -> bool {
    text.starts_with("permission denied")
        || text.contains(hit.path.as_str())
        || text.split(' ').any(|w| w.eq_ignore_ascii_case(&hit.nick))
}

async fn read_up_to(s: &mut TcpStream, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = timeout(STEP_TIMEOUT, s.read(&mut buf[n..])).await??;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

async fn receive(
    mut s: TcpStream,
    part: &Path,
    offset: u64,
    size: u64,
    shared: &Shared,
) -> anyhow::Result<u64> {
    let stats = &shared.stats;
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .await?;
    f.set_len(offset).await?;
    let mut f = tokio::io::BufWriter::new(f);
    tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(offset)).await?;
    let bar = progress_bar(size, offset);
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while offset + got < size {
        let want = ((size - offset - got) as usize).min(buf.len());
        let n = timeout(STEP_TIMEOUT, s.read(&mut buf[..want])).await??;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n]).await?;
        got += n as u64;
        stats.transfers(|t| t.download_bytes += n as u64);
        if let Some(l) = &shared.download_limit {
            // Not reading until the cap allows it lets TCP flow control slow the uploader.
            l.acquire(n as u64).await;
        }
        if let Some(b) = &bar {
            b.inc(n as u64);
        }
    }
    f.flush().await?;
    f.get_ref().sync_all().await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(got)
}

fn progress_bar(size: u64, offset: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(size);
    b.set_position(offset);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

async fn control_reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    shared: Arc<Shared>,
    events: mpsc::Sender<(u16, String)>,
    _link: LinkGuard,
) {
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        loop {
            match Frame::decode_with_limit(&buf, MAX_PAYLOAD) {
                Ok(Some((f, used))) => {
                    buf.advance(used);
                    shared.stats.msg_in(type_name(f.ty), used);
                    let text = f.text_payload();
                    match f.ty {
                        ty::UPLOAD_REQUEST => accept_upload(&shared, &text).await,
                        ty::PUSH => {
                            let sh = shared.clone();
                            tokio::spawn(push_upload(sh, text).in_current_span());
                        }
                        ty::PING => {
                            // Answer user pings so downloaders can rank us.
                            if let Ok(m) = ClientMsg::Pong(text.trim().to_owned()).to_frame() {
                                let _ = shared.ctl.send(m).await;
                            }
                        }
                        ty::GHOST => warn!("server: someone logged in with our nick"),
                        _ => {
                            if events.try_send((f.ty, text)).is_err() {
                                shared.stats.error("event_queue_full");
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(cause = %e, "bad frame from server");
                    return;
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn accept_upload(shared: &Shared, text: &str) {
    let Ok(mut f) = Fields::new(text) else { return };
    let (Ok(nick), Ok(path)) = (f.str("nick"), f.str("path")) else {
        return;
    };
    if !shared.paths.contains_key(path) {
        debug!(%nick, %path, "607 for a file we do not share; not accepting");
        return;
    }
    let lapsed = shared
        .allowed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .grant(nick, path, std::time::Instant::now());
    if let Some((who, what)) = lapsed {
        shared.stats.error("upload_grant_dropped");
        warn!(nick = %who, path = %what, "too many answered 607s waiting; the oldest lapses");
    }
    if let Ok(m) = ClientMsg::UploadAccept(nick.to_owned(), path.to_owned()).to_frame() {
        let _ = shared.ctl.send(m).await;
    }
}

async fn data_listener(l: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((s, peer)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sh = shared.clone();
        let span = tracing::info_span!("peer", %peer);
        tokio::spawn(
            async move {
                if let Err(e) = incoming(s, sh).await {
                    debug!(cause = %e, "peer connection ended");
                }
            }
            .instrument(span),
        );
    }
}

/// Reads a GET/SEND request after our `1`, as a stream.
async fn read_request(s: &mut TcpStream) -> anyhow::Result<Option<PeerRequest>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = timeout(STEP_TIMEOUT, s.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_request(&buf) {
            Ok(Some(_)) => {
                // The number has no terminator: give trailing digits a moment to arrive.
                if let Ok(Ok(n)) = timeout(DIGITS_GRACE, s.read(&mut chunk)).await {
                    buf.extend_from_slice(&chunk[..n]);
                }
                return Ok(parse_request(&buf).ok().flatten());
            }
            Ok(None) => {}
            Err(_) => return Ok(None),
        }
    }
}

async fn incoming(mut s: TcpStream, shared: Arc<Shared>) -> anyhow::Result<()> {
    s.write_all(b"1").await?;
    let Some(req) = read_request(&mut s).await? else {
        s.write_all(INVALID_REQUEST.as_bytes()).await?;
        return Ok(());
    };
    match req.command {
        PeerCommand::Get => {
            if !shared.paths.contains_key(&req.path) {
                shared.stats.transfers(|t| t.uploads_refused += 1);
                s.write_all(FILE_NOT_SHARED.as_bytes()).await?;
                return Ok(());
            }
            let ok = shared
                .allowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(&req.nick, &req.path, std::time::Instant::now());
            if !ok {
                shared.stats.transfers(|t| t.uploads_refused += 1);
                s.write_all(INVALID_REQUEST.as_bytes()).await?;
                return Ok(());
            }
            upload(s, &shared, &req.path, req.number, true).await
        }
        PeerCommand::Send => {
            let waiter = shared
                .pushes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(req.nick.to_ascii_lowercase(), req.path.clone()));
            match waiter {
                Some(tx) => {
                    let _ = tx.send((s, req));
                }
                None => s.write_all(FILE_NOT_REQUESTED.as_bytes()).await?,
            }
            Ok(())
        }
    }
}

/// Serves `path` from `offset` on `s`; `announce_size` writes the size digits first (GET).
async fn upload(
    mut s: TcpStream,
    shared: &Shared,
    path: &str,
    offset: u64,
    announce_size: bool,
) -> anyhow::Result<()> {
    let refuse = |why: &'static str| {
        shared.stats.transfers(|t| t.uploads_refused += 1);
        why.as_bytes()
    };
    let (Some(lib), Some(rel)) = (&shared.library, shared.paths.get(path)) else {
        s.write_all(refuse(FILE_NOT_SHARED)).await?;
        return Ok(());
    };
    let Some(file) = lib.by_path(rel) else {
        s.write_all(refuse(FILE_NOT_SHARED)).await?;
        return Ok(());
    };
    // Shared but gone from disk (or unreadable) since the scan: TekNap's answer.
    let std_file = match lib.open_file(file) {
        Ok((f, _)) => f,
        Err(e) => {
            debug!(%path, cause = %e, "shared file cannot be opened");
            s.write_all(refuse(FILE_NOT_FOUND)).await?;
            return Ok(());
        }
    };
    let size = std_file.metadata()?.len();
    if offset > size {
        s.write_all(INVALID_REQUEST.as_bytes()).await?;
        return Ok(());
    }
    if announce_size {
        s.write_all(size.to_string().as_bytes()).await?;
    }
    let _ = shared.ctl.send(Frame::empty(ty::UPLOAD_START)).await;
    shared.stats.transfers(|t| t.uploads_started += 1);
    let mut f = tokio::fs::File::from_std(std_file);
    tokio::io::AsyncSeekExt::seek(&mut f, std::io::SeekFrom::Start(offset)).await?;
    let r = send_file(&mut f, &mut s, size - offset, shared.upload_limit.as_ref()).await;
    let _ = s.shutdown().await;
    let _ = shared.ctl.send(Frame::empty(ty::UPLOAD_END)).await;
    match r {
        Ok(n) => {
            shared.stats.transfers(|t| {
                t.upload_bytes += n;
                if n == size - offset {
                    t.uploads_completed += 1;
                } else {
                    t.uploads_failed += 1;
                }
            });
            Ok(())
        }
        Err(e) => {
            shared.stats.transfers(|t| t.uploads_failed += 1);
            Err(e.into())
        }
    }
}

/// The bitrate, sample rate and duration of a shared `.mp3` from its frame headers (blocking reads: call
/// off the runtime); `None` for other files and for files whose headers cannot be read.
fn mp3_info(lib: &Library, f: &SharedFile) -> Option<Mp3Info> {
    use std::io::{Read, Seek};
    if !f.path.as_str().to_ascii_lowercase().ends_with(".mp3") {
        return None;
    }
    let (mut file, _) = lib.open_file(f).ok()?;
    let mut head = [0u8; ID3V2_HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    let skip = id3v2_tag_len(&head).unwrap_or(0);
    file.seek(std::io::SeekFrom::Start(skip)).ok()?;
    let mut audio = Vec::with_capacity(mp3::READ_LEN);
    file.take(mp3::READ_LEN as u64)
        .read_to_end(&mut audio)
        .ok()?;
    mp3::parse(&audio, f.size.saturating_sub(skip))
}

/// Copies `len` bytes of `f` to `s`, taking each piece from `limit` (when capped) before reading it.
async fn send_file(
    f: &mut tokio::fs::File,
    s: &mut TcpStream,
    len: u64,
    limit: Option<&RateLimiter>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    let mut sent = 0u64;
    while sent < len {
        let mut want = (len - sent).min(UPLOAD_CHUNK as u64);
        if let Some(l) = limit {
            want = l.acquire_up_to(want).await;
        }
        let n = f.read(&mut buf[..want as usize]).await?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    Ok(sent)
}

/// How long a number with no terminator (the GET line's offset, the offset answering a SEND) may take to
/// finish arriving once its first digits are in.
const DIGITS_GRACE: Duration = Duration::from_millis(100);

/// Reads the downloader's answer to our `SEND`: the start offset as digits with no terminator, or an
/// error text. The digits may come in more than one segment, so while all that came is digits (and fewer
/// than a u64 can have), more get [`DIGITS_GRACE`] to arrive; the downloader sends nothing else before
/// the data.
async fn read_offset<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    let n = timeout(STEP_TIMEOUT, s.read(&mut chunk)).await??;
    buf.extend_from_slice(&chunk[..n]);
    while n > 0 && buf.len() < 20 && buf.iter().all(u8::is_ascii_digit) {
        match timeout(DIGITS_GRACE, s.read(&mut chunk)).await {
            Ok(Ok(m)) if m > 0 => buf.extend_from_slice(&chunk[..m]),
            _ => break,
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A 501 arrived: connect to the downloader and push (`SEND`).
async fn push_upload(shared: Arc<Shared>, text: String) {
    let r: anyhow::Result<()> = async {
        let mut f = Fields::new(&text)?;
        let nick = f.str("nick")?.to_owned();
        let ipn: u32 = f.num("ip")?;
        let port: u16 = f.num("port")?;
        let path = f.str("path")?.to_owned();
        let ok = shared
            .allowed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&nick, &path, std::time::Instant::now());
        if !ok {
            bail!("501 without our 608 for {nick} {path}");
        }
        let size = shared
            .paths
            .get(&path)
            .and_then(|rel| shared.library.as_ref()?.by_path(rel))
            .map(|f| f.size)
            .ok_or_else(|| anyhow!("not sharing {path}"))?;
        let addr = SocketAddr::from((ip::from_wire(ipn), port));
        let mut s = timeout(STEP_TIMEOUT, TcpStream::connect(addr)).await??;
        let mut one = [0u8; 1];
        timeout(STEP_TIMEOUT, s.read_exact(&mut one)).await??;
        let req = PeerRequest {
            command: PeerCommand::Send,
            nick: shared.nick.clone(),
            path: path.clone(),
            number: size,
        };
        s.write_all(&encode_request(&req)).await?;
        let text = read_offset(&mut s).await?;
        let offset: u64 = text
            .trim()
            .parse()
            .map_err(|_| anyhow!("{nick} refused the push: {text}"))?;
        upload(s, &shared, &path, offset, false).await
    }
    .await;
    if let Err(e) = r {
        warn!(cause = %e, "push upload failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(nick: &str, speed: u32) -> SearchHit {
        SearchHit {
            path: "song.mp3".into(),
            md5: "0".repeat(32),
            size: 1,
            bitrate: 128,
            freq: 44_100,
            secs: 1,
            nick: nick.into(),
            ip: Ipv4Addr::LOCALHOST,
            speed,
        }
    }

    fn order(hits: &[SearchHit], rtt: &[(&str, u64)]) -> Vec<String> {
        let rtt = rtt
            .iter()
            .map(|(n, ms)| (n.to_string(), Duration::from_millis(*ms)))
            .collect();
        rank_by_pong(hits, &rtt, PING_TIE)
            .into_iter()
            .map(|h| h.nick)
            .collect()
    }

    #[test]
    fn near_pongs_tie_and_link_speed_decides_silent_sources_last() {
        let hits = [
            hit("mute", 10),
            hit("slow", 3),
            hit("gone", 10),
            hit("fast", 8),
        ];
        assert_eq!(
            order(&hits, &[("slow", 3), ("gone", 5), ("fast", 1)]),
            ["gone", "fast", "slow", "mute"]
        );
        // A pong a band or more behind the fastest ranks after it, whatever the link speed.
        assert_eq!(
            order(&hits, &[("slow", 1), ("gone", 1200), ("fast", 700)]),
            ["slow", "fast", "gone", "mute"]
        );
        // Nobody answered: link speed, then the server's order.
        assert_eq!(order(&hits, &[]), ["mute", "gone", "fast", "slow"]);
        // A tie as wide as the ping window: every answer is as good as the fastest, link speed decides.
        let rtt = [("slow", 1), ("gone", 1900), ("fast", 900)]
            .iter()
            .map(|(n, ms)| (n.to_string(), Duration::from_millis(*ms)))
            .collect();
        let wide: Vec<_> = rank_by_pong(&hits, &rtt, PING_WINDOW)
            .into_iter()
            .map(|h| h.nick)
            .collect();
        assert_eq!(wide, ["gone", "fast", "slow", "mute"]);
    }

    #[test]
    fn an_answered_607_allows_one_get_for_that_nick_and_file_until_it_lapses() {
        let t0 = std::time::Instant::now();
        let mut g = Grants::default();
        assert_eq!(g.grant("Bob", "a.mp3", t0), None);
        assert!(!g.take("carol", "a.mp3", t0), "another nick");
        assert!(!g.take("bob", "b.mp3", t0), "another file");
        assert!(g.take("BOB", "a.mp3", t0), "nicks compare without case");
        assert!(!g.take("bob", "a.mp3", t0), "used once");
        // Lapses after GRANT_TTL, whether asked for or swept by a later grant.
        g.grant("bob", "a.mp3", t0);
        assert!(!g.take("bob", "a.mp3", t0 + GRANT_TTL));
        g.grant("bob", "a.mp3", t0);
        g.grant("bob", "b.mp3", t0 + GRANT_TTL / 2);
        assert!(g.take("bob", "a.mp3", t0 + GRANT_TTL / 2), "still fresh");
        g.grant("bob", "a.mp3", t0);
        g.grant("dave", "c.mp3", t0 + GRANT_TTL);
        assert_eq!(g.len(), 2, "a.mp3 swept, b.mp3 and c.mp3 remain");
        // A repeated 607 restarts the time of its grant.
        g.grant("bob", "b.mp3", t0 + GRANT_TTL * 2);
        assert!(g.take("bob", "b.mp3", t0 + GRANT_TTL * 2 + GRANT_TTL / 2));
    }

    /// The downloader's offset split over two writes: the reader has taken the first digit and is
    /// waiting for more when the rest comes (the writer yields to the reader in between; a read that is
    /// ready wins over the grace timeout, so this does not depend on the clock).
    #[tokio::test]
    async fn the_offset_answering_a_send_may_come_in_pieces() {
        let (mut down, mut up) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move { read_offset(&mut up).await.unwrap() });
        down.write_all(b"1").await.unwrap();
        tokio::task::yield_now().await;
        down.write_all(b"00").await.unwrap();
        assert_eq!(reader.await.unwrap(), "100");
        let (mut down, mut up) = tokio::io::duplex(64);
        down.write_all(b"FILE NOT REQUESTED").await.unwrap();
        assert_eq!(read_offset(&mut up).await.unwrap(), "FILE NOT REQUESTED");
    }

    #[test]
    fn grants_are_capped_and_the_oldest_lapses_first() {
        let t0 = std::time::Instant::now();
        let mut g = Grants::default();
        let at = |i: usize| t0 + Duration::from_millis(i as u64);
        for i in 0..MAX_GRANTS {
            assert_eq!(g.grant("bob", &format!("{i}.mp3"), at(i)), None);
        }
        // Granting an already waiting pair again takes no new place.
        assert_eq!(g.grant("bob", "7.mp3", at(MAX_GRANTS)), None);
        assert_eq!(
            g.grant("eve", "x.mp3", at(MAX_GRANTS + 1)),
            Some(("bob".into(), "0.mp3".into()))
        );
        assert_eq!(g.len(), MAX_GRANTS);
        assert!(!g.take("bob", "0.mp3", at(MAX_GRANTS + 2)));
        assert!(g.take("bob", "1.mp3", at(MAX_GRANTS + 2)));
        assert!(g.take("eve", "x.mp3", at(MAX_GRANTS + 2)));
    }
}
