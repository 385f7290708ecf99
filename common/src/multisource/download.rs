//! The tokio driver: owns the partial file, the fetch tasks, the state file and the event channel, and
//! carries out the [`Scheduler`]'s decisions.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, info_span, warn, Instrument};

use super::sched::{Failure, SchedConfig, Scheduler, SourceId, Status, Supplier};
use super::source::{fetch_range, Conn, FetchError, FetchParams, ResponseInfo, Source};
use super::state::ResumeState;
use crate::hash::{HashKinds, Hashes, KzHash, MultiHasher, Sha1Digest, UuHash};
use crate::stats::Stats;

/// Smallest block size accepted (tests use small blocks; real downloads use the default).
pub const MIN_BLOCK_SIZE: u32 = 1024;
/// Largest block size accepted: a block is buffered whole before it is written, so this bounds memory.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;
/// Largest content accepted (1 TiB): sizes come from peers' search hits, so they are checked before any
/// per-block bookkeeping is allocated.
pub const MAX_CONTENT_SIZE: u64 = 1 << 40;
/// Most blocks in one download: with the size cap, this forces blocks of at least 1 MiB for the largest
/// files and keeps the per-block tables (a few bytes each) small.
pub const MAX_BLOCKS: u64 = 1 << 20;
/// Most sources one download keeps; more are ignored (sources come from peers' hits and alt-locs).
pub const MAX_SOURCES: usize = 256;
/// Buffered events before new progress events are dropped (progress is lossy; the result is not).
const EVENT_CAPACITY: usize = 256;
/// How often the driver wakes up to retry queued sources and check timers.
const TICK: Duration = Duration::from_millis(50);
/// Read size of the final hashing pass.
const VERIFY_CHUNK: usize = 1 << 20;
/// Upper bound on verification rounds (see the module docs for the policy).
const MAX_VERIFY_ROUNDS: u32 = 8;

/// Settings of one download. `Default` suits real peers; tests shrink the block size and timeouts.
#[derive(Clone, Debug)]
pub struct DownloadConfig {
    /// Bytes per block (one HTTP range request). Between [`MIN_BLOCK_SIZE`] and [`MAX_BLOCK_SIZE`].
    pub block_size: u32,
    /// Sources fetching at the same time.
    pub max_active_sources: usize,
    /// Connecting (or waiting for a pushed connection) gives up after this.
    pub connect_timeout: Duration,
    /// A response head or body that brings no bytes for this long is a stall: the block moves on.
    pub stall_timeout: Duration,
    /// Consecutive transient failures after which a source is dropped.
    pub max_source_failures: u32,
    /// First wait after a transient failure (doubles each time).
    pub retry_backoff: Duration,
    /// Wait after a `503` without a usable `Retry-After`.
    pub default_retry_after: Duration,
    /// Cap on `Retry-After`.
    pub max_retry_after: Duration,
    /// A source whose rate times this is below the best source's rate is "much slower".
    pub slow_factor: f64,
    /// [`Event::LowOnSources`] is sent when fewer live sources than this remain.
    pub low_sources: usize,
    /// With no live source left, wait this long for [`SourceAdder::add`] before failing.
    pub no_source_timeout: Duration,
    /// Least time between two state-file saves (each costs an `fsync` of the partial file).
    pub state_save_interval: Duration,
    /// Time between two [`Event::Progress`].
    pub progress_interval: Duration,
    /// Cap on the payload rate of this download (all sources together); share one limiter between
    /// downloads to cap a whole node (`--download-rate`). `None`: unlimited.
    pub rate_limit: Option<crate::ratelimit::RateLimiter>,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            block_size: 1 << 20,
            max_active_sources: 8,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(20),
            max_source_failures: 3,
            retry_backoff: Duration::from_secs(2),
            default_retry_after: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
            slow_factor: 8.0,
            low_sources: 2,
            no_source_timeout: Duration::from_secs(120),
            state_save_interval: Duration::from_secs(2),
            progress_interval: Duration::from_millis(250),
            rate_limit: None,
        }
    }
}

/// The hash the finished content must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedHash {
    /// Gnutella `urn:sha1:`.
    Sha1(Sha1Digest),
    /// KaZaA ContentHash.
    UuHash(UuHash),
    /// KaZaA kzhash (UUHash + MD5 tree).
    KzHash(KzHash),
}

impl ExpectedHash {
    fn kinds(&self) -> HashKinds {
        let mut k = HashKinds::default();
        match self {
            ExpectedHash::Sha1(_) => k.sha1 = true,
            ExpectedHash::UuHash(_) => k.uuhash = true,
            ExpectedHash::KzHash(_) => k.kzhash = true,
        }
        k
    }

    /// The same kind of hash taken from `h`, as text (`kind:hex`); `None` if `h` lacks it.
    fn actual(&self, h: &Hashes) -> Option<String> {
        Some(match self {
            ExpectedHash::Sha1(_) => format!("sha1:{}", h.sha1?),
            ExpectedHash::UuHash(_) => format!("uuhash:{}", h.uuhash?),
            ExpectedHash::KzHash(_) => format!("kzhash:{}", h.kzhash?),
        })
    }

    /// The Gnutella URN, `urn:sha1:<BASE32>`, for SHA-1.
    pub fn urn(&self) -> Option<String> {
        match self {
            ExpectedHash::Sha1(d) => {
                Some(format!("urn:sha1:{}", data_encoding::BASE32.encode(&d.0)))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for ExpectedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedHash::Sha1(d) => write!(f, "sha1:{d}"),
            ExpectedHash::UuHash(d) => write!(f, "uuhash:{d}"),
            ExpectedHash::KzHash(d) => write!(f, "kzhash:{d}"),
        }
    }
}

/// Why a download ended without a verified file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The configuration cannot work (block size out of range...).
    #[error("bad download configuration: {0}")]
    Config(String),
    /// Local file trouble: the partial file, the state file, the final rename.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Every block arrived but the content's hash is not the expected one, and no supplier could be proven
    /// bad (see the module docs for the re-fetch policy).
    #[error(
        "downloaded content does not match: expected {expected}, got {actual} \
         (blocks came from: {})", contributors.join(", ")
    )]
    HashMismatch {
        /// Expected hash, `kind:hex`.
        expected: String,
        /// Hash of what we got, `kind:hex`.
        actual: String,
        /// Every source that supplied blocks of the file (`resumed` for blocks from an earlier run).
        contributors: Vec<String>,
    },
    /// No live source left and none added within the timeout.
    #[error("out of sources with {missing} of {total} blocks missing ({dead} sources dropped)")]
    OutOfSources {
        /// Blocks still missing.
        missing: usize,
        /// Blocks in the file.
        total: usize,
        /// Sources dropped as dead.
        dead: usize,
    },
}

/// One source in a [`Progress`] event.
#[derive(Clone, Debug, Serialize)]
pub struct SourceProgress {
    /// Source id (order of addition).
    pub id: usize,
    /// Its URL.
    pub url: String,
    /// `active`, `idle`, `queued`, `backoff` or `dead`.
    pub state: &'static str,
    /// Receive rate over the last interval, bytes per second.
    pub rate_bps: u64,
    /// Payload bytes received from it so far (this run).
    pub bytes: u64,
}

/// A progress snapshot, every [`DownloadConfig::progress_interval`].
#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    /// Bytes in finished blocks.
    pub bytes_done: u64,
    /// Content size.
    pub size: u64,
    /// Overall receive rate, bytes per second.
    pub rate_bps: u64,
    /// Estimated time left, from the overall rate.
    pub eta_ms: Option<u64>,
    /// Sources fetching now.
    pub active: usize,
    /// Sources waiting (remotely queued or backing off).
    pub queued: usize,
    /// Sources dropped.
    pub dead: usize,
    /// Sources with nothing to do.
    pub idle: usize,
    /// Per source.
    pub sources: Vec<SourceProgress>,
}

/// What the downloader tells its caller while it runs (serialises as `{"event":"progress",...}`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Periodic progress (lossy: dropped if the receiver lags).
    Progress(Progress),
    /// A source joined.
    SourceAdded {
        /// Source id.
        id: usize,
        /// URL.
        url: String,
    },
    /// A source answered `503`: it is kept and retried after `retry_after_ms`.
    SourceQueued {
        /// Source id.
        id: usize,
        /// URL.
        url: String,
        /// Wait before the next try.
        retry_after_ms: u64,
    },
    /// A fetch failed; `dead` says whether the source was dropped.
    SourceFailed {
        /// Source id.
        id: usize,
        /// URL.
        url: String,
        /// What went wrong.
        error: String,
        /// Dropped for good.
        dead: bool,
    },
    /// A source listed alternate locations (`X-Alt`, `X-Gnutella-Alternate-Location`) the caller may add; sent
    /// as soon as the response head arrives (with a matching content URN), before its body.
    AltLocations {
        /// Source id.
        id: usize,
        /// Raw header values.
        values: Vec<String>,
    },
    /// Fewer than [`DownloadConfig::low_sources`] live sources: time to search for more.
    LowOnSources {
        /// Live sources left.
        live: usize,
    },
    /// The finished file did not match; `suspect`'s blocks are being fetched again from other sources.
    VerifyFailed {
        /// Round number, from 1.
        round: u32,
        /// The supplier under test (a URL, or `resumed`).
        suspect: String,
        /// Blocks being re-fetched.
        blocks: usize,
    },
    /// A source was proven to have supplied wrong bytes and was dropped.
    BadSource {
        /// Source id.
        id: usize,
        /// URL.
        url: String,
    },
    /// Verified and renamed into place.
    Completed {
        /// Final path.
        path: PathBuf,
    },
}

/// Per-source figures in a [`DownloadReport`].
#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    /// URL.
    pub url: String,
    /// Payload bytes received from it (including bytes thrown away).
    pub bytes: u64,
    /// Blocks it supplied to the final file.
    pub blocks: u64,
    /// Final state (`idle`, `dead`, ...).
    pub state: &'static str,
}

/// The result of a verified download.
#[derive(Clone, Debug, Serialize)]
pub struct DownloadReport {
    /// Final path.
    pub path: PathBuf,
    /// Content size.
    pub size: u64,
    /// The hashes computed over the finished file.
    pub hashes: Hashes,
    /// Blocks in the file.
    pub blocks: usize,
    /// Blocks already done in the state file when this run started.
    pub blocks_resumed: usize,
    /// Blocks fetched and written by this run (re-fetches included).
    pub blocks_fetched: u64,
    /// Payload bytes received by this run, including bytes thrown away.
    pub bytes_received: u64,
    /// Verification rounds that failed before the file matched.
    pub verify_rounds: u32,
    /// Sources proven to have supplied wrong bytes.
    pub bad_sources: Vec<String>,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Wall time of this run.
    pub elapsed_ms: u64,
}

/// Adds sources to a running download ("find more sources"). Cheap to clone; when every clone is dropped
/// and no source is left, the download fails at once instead of waiting.
#[derive(Clone, Debug)]
pub struct SourceAdder(mpsc::Sender<Source>);

impl SourceAdder {
    /// Adds a source; false if the download has ended.
    pub async fn add(&self, s: Source) -> bool {
        self.0.send(s).await.is_ok()
    }

    /// Adds a source without waiting; false if the download has ended or its queue is full.
    pub fn try_add(&self, s: Source) -> bool {
        self.0.try_send(s).is_ok()
    }
}

/// `<dest>.part`: where blocks are written until the file is verified.
pub fn partial_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".part")
}

/// `<dest>.state`: the resume state.
pub fn state_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".state")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// One download. Create with [`Download::new`], then `run` it; dropping the future stops it (the state file
/// lets a later run resume).
#[derive(Debug)]
pub struct Download {
    dest: PathBuf,
    size: u64,
    expected: ExpectedHash,
    cfg: DownloadConfig,
    stats: Stats,
    add_rx: mpsc::Receiver<Source>,
    events: mpsc::Sender<Event>,
}

/// Runtime side of one source.
struct SrcRt {
    source: Source,
    url: String,
    conn: Option<Conn>,
    /// Bytes received, updated by the fetch task as chunks arrive.
    live: Arc<AtomicU64>,
    last_live: u64,
    rate: f64,
}

struct Outcome {
    sid: SourceId,
    block: usize,
    conn: Option<Conn>,
    info: ResponseInfo,
    elapsed: Duration,
    result: Result<u64, TaskError>,
}

enum TaskError {
    Fetch(FetchError),
    /// The other endgame fetcher claimed the block first.
    LostRace,
    Write(std::io::Error),
}

impl Download {
    /// A download of `size` bytes with hash `expected` into `dest`, counting into `stats`. Returns the
    /// download, a handle to add sources while it runs, and its event stream.
    pub fn new(
        dest: impl Into<PathBuf>,
        size: u64,
        expected: ExpectedHash,
        cfg: DownloadConfig,
        stats: Stats,
    ) -> (Download, SourceAdder, mpsc::Receiver<Event>) {
        let (add_tx, add_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
        (
            Download {
                dest: dest.into(),
                size,
                expected,
                cfg,
                stats,
                add_rx,
                events: ev_tx,
            },
            SourceAdder(add_tx),
            ev_rx,
        )
    }

    /// Runs to a verified file (or an error), starting with `sources`.
    pub async fn run(self, sources: Vec<Source>) -> Result<DownloadReport, DownloadError> {
        let span = info_span!("download", dest = %self.dest.display(), size = self.size);
        let stats = self.stats.clone();
        stats.transfers(|t| t.downloads_started += 1);
        let r = Driver::start(self, sources).instrument(span.clone()).await;
        let r = match r {
            Ok(d) => d.run().instrument(span).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &r {
            stats.transfers(|t| t.downloads_failed += 1);
            if matches!(e, DownloadError::HashMismatch { .. }) {
                stats.error("hash_mismatch");
            }
            warn!(error = %e, "download failed");
        }
        r
    }
}

struct Driver {
    dl: Download,
    part: PathBuf,
    state_file: PathBuf,
    file: Arc<std::fs::File>,
    sched: Scheduler,
    srcs: Vec<SrcRt>,
    urls: HashSet<String>,
    claims: Arc<Vec<AtomicBool>>,
    tasks: JoinSet<Outcome>,
    running: HashMap<tokio::task::Id, (SourceId, usize)>,
    aborts: HashMap<(SourceId, usize), AbortHandle>,
    params: Arc<FetchParams>,
    started: Instant,
    blocks_resumed: usize,
    blocks_fetched: u64,
    dirty: bool,
    last_save: Instant,
    saving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    last_progress: Instant,
    last_progress_live: u64,
    low_reported: bool,
    no_source_since: Option<Instant>,
    adder_open: bool,
    rounds: u32,
    tested: BTreeSet<Supplier>,
    suspect: Option<Supplier>,
    bad_sources: Vec<String>,
}

impl Driver {
    async fn start(dl: Download, sources: Vec<Source>) -> Result<Driver, DownloadError> {
        let cfg = &dl.cfg;
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&cfg.block_size) {
            return Err(DownloadError::Config(format!(
                "block size {} not in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
                cfg.block_size
            )));
        }
        if dl.size > MAX_CONTENT_SIZE {
            return Err(DownloadError::Config(format!(
                "content size {} is over the {MAX_CONTENT_SIZE}-byte limit",
                dl.size
            )));
        }
        if dl.size.div_ceil(u64::from(cfg.block_size)) > MAX_BLOCKS {
            return Err(DownloadError::Config(format!(
                "{} bytes in {}-byte blocks is over {MAX_BLOCKS} blocks: use larger blocks",
                dl.size, cfg.block_size
            )));
        }
        if cfg.max_active_sources == 0 {
            return Err(DownloadError::Config("max_active_sources is 0".into()));
        }
        let part = partial_path(&dl.dest);
        let state_file = state_path(&dl.dest);
        let block_size = u64::from(cfg.block_size);
        let blocks = super::sched::block_count(dl.size, block_size);
        let expected = dl.expected.to_string();
        let (size, sf, pf) = (dl.size, state_file.clone(), part.clone());
        let (file, done) = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&pf)
                .map_err(|e| io_err("opening", &pf, e))?;
            let done = match ResumeState::load(&sf).map_err(|e| io_err("reading", &sf, e))? {
                Some(st) => match st.done_blocks(size, block_size, &expected, blocks) {
                    Some(d) => d,
                    None => {
                        warn!(state = %sf.display(), "state file is for other content; starting over");
                        vec![false; blocks]
                    }
                },
                None => vec![false; blocks],
            };
            // A partial file shorter than the state claims cannot hold those blocks: start over.
            let len = file.metadata().map_err(|e| io_err("reading", &pf, e))?.len();
            let done = if len != size { vec![false; blocks] } else { done };
            // Sparse: blocks land at their offsets in any order.
            file.set_len(size).map_err(|e| io_err("sizing", &pf, e))?;
            Ok::<_, DownloadError>((file, done))
        })
        .await
        .map_err(|e| io_err("opening", &part, std::io::Error::other(e)))??;
        let sched = Scheduler::new(
            dl.size,
            block_size,
            done,
            SchedConfig {
                max_active: cfg.max_active_sources,
                max_failures: cfg.max_source_failures.max(1),
                backoff: cfg.retry_backoff,
                slow_factor: cfg.slow_factor,
            },
        );
        let blocks_resumed = sched.done_count();
        if blocks_resumed > 0 {
            info!(blocks_resumed, blocks, "resuming from the state file");
        }
        let params = Arc::new(FetchParams {
            size: dl.size,
            connect_timeout: cfg.connect_timeout,
            stall_timeout: cfg.stall_timeout,
            default_retry_after: cfg.default_retry_after,
            max_retry_after: cfg.max_retry_after,
            urn: dl.expected.urn(),
            rate_limit: cfg.rate_limit.clone(),
        });
        let now = Instant::now();
        let mut d = Driver {
            part,
            state_file,
            file: Arc::new(file),
            sched,
            srcs: Vec::new(),
            urls: HashSet::new(),
            claims: Arc::new((0..blocks).map(|_| AtomicBool::new(false)).collect()),
            tasks: JoinSet::new(),
            running: HashMap::new(),
            aborts: HashMap::new(),
            params,
            started: now,
            blocks_resumed,
            blocks_fetched: 0,
            dirty: false,
            last_save: now,
            saving: None,
            last_progress: now,
            last_progress_live: 0,
            low_reported: false,
            no_source_since: None,
            adder_open: true,
            rounds: 0,
            tested: BTreeSet::new(),
            suspect: None,
            bad_sources: Vec::new(),
            dl,
        };
        for (b, done) in d.sched.done().iter().enumerate() {
            d.claims[b].store(*done, Ordering::Relaxed);
        }
        for s in sources {
            d.add_source(s);
        }
        Ok(d)
    }

    fn emit(&self, e: Event) {
        // Progress is lossy by design; a full queue means the consumer lags.
        let _ = self.dl.events.try_send(e);
    }

    fn add_source(&mut self, s: Source) {
        if self.srcs.len() >= MAX_SOURCES {
            debug!(url = %s.url, "source ignored: already at the maximum");
            return;
        }
        let url = s.url.to_string();
        // Pushed sources may share a URL (the path is all they have); dialled ones are unique by URL.
        if s.connector.is_none() && !self.urls.insert(url.clone()) {
            return;
        }
        let id = self.sched.add_source();
        debug!(id, %url, "source added");
        self.emit(Event::SourceAdded {
            id,
            url: url.clone(),
        });
        self.srcs.push(SrcRt {
            source: s,
            url,
            conn: None,
            live: Arc::new(AtomicU64::new(0)),
            last_live: 0,
            rate: 0.0,
        });
        self.no_source_since = None;
    }

    fn spawn_fetch(&mut self, sid: SourceId, block: usize) {
        let range = self.sched.range(block);
        let rt = &mut self.srcs[sid];
        let source = rt.source.clone();
        let conn = rt.conn.take();
        let live = rt.live.clone();
        let params = self.params.clone();
        let claims = self.claims.clone();
        let file = self.file.clone();
        let stats = self.dl.stats.clone();
        let alt_sink = Some((self.dl.events.clone(), sid));
        let span = info_span!("source", id = sid, url = %rt.url, block);
        let h = self.tasks.spawn(
            async move {
                let t0 = Instant::now();
                let len = (range.end - range.start) as usize;
                let mut buf = Vec::with_capacity(len);
                let mut info = ResponseInfo {
                    alt_sink,
                    ..Default::default()
                };
                let (conn, r) = fetch_range(
                    &source,
                    conn,
                    range.clone(),
                    &params,
                    &mut info,
                    &mut |d: &[u8]| {
                        buf.extend_from_slice(d);
                        live.fetch_add(d.len() as u64, Ordering::Relaxed);
                        stats.transfers(|t| t.download_bytes += d.len() as u64);
                    },
                )
                .await;
                let result = match r {
                    Err(e) => Err(TaskError::Fetch(e)),
                    Ok(()) if claims[block].swap(true, Ordering::AcqRel) => {
                        Err(TaskError::LostRace)
                    }
                    Ok(()) => {
                        let off = range.start;
                        match tokio::task::spawn_blocking(move || file.write_all_at(&buf, off))
                            .await
                        {
                            Ok(Ok(())) => Ok(len as u64),
                            Ok(Err(e)) => Err(TaskError::Write(e)),
                            Err(e) => Err(TaskError::Write(std::io::Error::other(e))),
                        }
                    }
                };
                Outcome {
                    sid,
                    block,
                    conn,
                    info,
                    elapsed: t0.elapsed(),
                    result,
                }
            }
            .instrument(span),
        );
        self.running.insert(h.id(), (sid, block));
        self.aborts.insert((sid, block), h);
    }

    async fn run(mut self) -> Result<DownloadReport, DownloadError> {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.sched.all_done() {
                // Cancelled endgame losers must be gone before the file is read.
                self.drain_tasks().await;
                if let Some(report) = self.verify().await? {
                    return Ok(report);
                }
                continue;
            }
            let now = Instant::now();
            for (sid, block) in self.sched.assign(now) {
                self.spawn_fetch(sid, block);
            }
            self.check_sources(now)?;
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match joined {
                        Ok((id, out)) => {
                            self.running.remove(&id);
                            self.finished(out)?;
                        }
                        Err(e) => {
                            if let Some((sid, block)) = self.running.remove(&e.id()) {
                                self.aborts.remove(&(sid, block));
                                self.sched.block_failed(sid, block, Failure::Cancelled, Instant::now());
                            }
                        }
                    }
                }
                s = self.dl.add_rx.recv(), if self.adder_open => match s {
                    Some(s) => self.add_source(s),
                    None => self.adder_open = false,
                },
                _ = tick.tick() => self.on_tick().await?,
            }
        }
    }

    /// Low-source warning and the out-of-sources deadline.
    fn check_sources(&mut self, now: Instant) -> Result<(), DownloadError> {
        let live = self.sched.usable_sources();
        if live < self.dl.cfg.low_sources {
            if !self.low_reported {
                info!(live, "low on sources");
                self.emit(Event::LowOnSources { live });
                self.low_reported = true;
            }
        } else {
            self.low_reported = false;
        }
        if live == 0 && self.tasks.is_empty() {
            let since = *self.no_source_since.get_or_insert(now);
            if !self.adder_open || now.duration_since(since) >= self.dl.cfg.no_source_timeout {
                let (_, _, dead, _) = self.sched.counts();
                return Err(DownloadError::OutOfSources {
                    missing: self.sched.block_count() - self.sched.done_count(),
                    total: self.sched.block_count(),
                    dead,
                });
            }
        }
        Ok(())
    }

    fn finished(&mut self, out: Outcome) -> Result<(), DownloadError> {
        let Outcome {
            sid,
            block,
            conn,
            info,
            elapsed,
            result,
        } = out;
        self.aborts.remove(&(sid, block));
        let stats = &self.dl.stats;
        if info.status != 0 {
            stats.msg_out("http_get", 64 + self.srcs[sid].url.len());
            stats.msg_in(format!("http_{}", info.status), info.head_bytes);
        }
        if !info.alt_locs.is_empty() {
            self.emit(Event::AltLocations {
                id: sid,
                values: info.alt_locs,
            });
        }
        self.srcs[sid].conn = conn;
        let now = Instant::now();
        match result {
            Ok(bytes) => {
                self.blocks_fetched += 1;
                self.dirty = true;
                for other in self.sched.block_done(sid, block, bytes, elapsed) {
                    if let Some(h) = self.aborts.get(&(other, block)) {
                        debug!(
                            block,
                            winner = sid,
                            loser = other,
                            "endgame: cancelling the slower copy"
                        );
                        h.abort();
                    }
                }
            }
            Err(TaskError::LostRace) => {
                self.sched.block_failed(sid, block, Failure::Cancelled, now);
            }
            Err(TaskError::Write(e)) => return Err(io_err("writing", &self.part, e)),
            Err(TaskError::Fetch(e)) => {
                stats.error(e.kind());
                let url = self.srcs[sid].url.clone();
                if let FetchError::Queued(d) = e {
                    debug!(id = sid, wait_ms = d.as_millis() as u64, "remotely queued");
                    self.sched.block_failed(sid, block, Failure::Queued(d), now);
                    self.emit(Event::SourceQueued {
                        id: sid,
                        url,
                        retry_after_ms: d.as_millis() as u64,
                    });
                } else {
                    let why = if e.is_fatal() {
                        Failure::Fatal
                    } else {
                        Failure::Transient
                    };
                    let dead = self.sched.block_failed(sid, block, why, now);
                    warn!(id = sid, %url, block, error = %e, dead, "fetch failed");
                    self.emit(Event::SourceFailed {
                        id: sid,
                        url,
                        error: e.to_string(),
                        dead,
                    });
                }
            }
        }
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<(), DownloadError> {
        let now = Instant::now();
        if let Some(h) = &self.saving {
            if h.is_finished() {
                let h = self.saving.take().expect("checked");
                match h.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(io_err("saving state to", &self.state_file, e)),
                    Err(e) => {
                        return Err(io_err(
                            "saving state to",
                            &self.state_file,
                            std::io::Error::other(e),
                        ))
                    }
                }
            }
        }
        if self.dirty
            && self.saving.is_none()
            && now.duration_since(self.last_save) >= self.dl.cfg.state_save_interval
        {
            self.saving = Some(self.save_state_in_background());
        }
        let dt = now.duration_since(self.last_progress);
        if dt >= self.dl.cfg.progress_interval {
            self.last_progress = now;
            let p = self.progress(dt);
            self.emit(Event::Progress(p));
        }
        Ok(())
    }

    /// Syncs the partial file, then writes the state naming only blocks written before the sync.
    fn save_state_in_background(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        self.dirty = false;
        self.last_save = Instant::now();
        let st = ResumeState::new(
            self.dl.size,
            u64::from(self.dl.cfg.block_size),
            self.dl.expected.to_string(),
            self.sched.done(),
        );
        let file = self.file.clone();
        let path = self.state_file.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            st.save(&path)
        })
    }

    async fn save_state_now(&mut self) -> Result<(), DownloadError> {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        let h = self.save_state_in_background();
        h.await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(|e| io_err("saving state to", &self.state_file, e))
    }

    fn progress(&mut self, dt: Duration) -> Progress {
        let secs = dt.as_secs_f64().max(1e-3);
        let mut total_live = 0;
        let mut sources = Vec::with_capacity(self.srcs.len());
        for (id, rt) in self.srcs.iter_mut().enumerate() {
            let live = rt.live.load(Ordering::Relaxed);
            total_live += live;
            let inst = (live - rt.last_live) as f64 / secs;
            rt.rate = 0.5 * rt.rate + 0.5 * inst;
            rt.last_live = live;
            sources.push(SourceProgress {
                id,
                url: rt.url.clone(),
                state: state_name(self.sched.sources[id].status),
                rate_bps: rt.rate as u64,
                bytes: live,
            });
        }
        let rate = (total_live - self.last_progress_live) as f64 / secs;
        self.last_progress_live = total_live;
        let bytes_done = self.sched.bytes_done();
        let (active, queued, dead, idle) = self.sched.counts();
        Progress {
            bytes_done,
            size: self.dl.size,
            rate_bps: rate as u64,
            eta_ms: (rate > 0.0)
                .then(|| ((self.dl.size - bytes_done) as f64 / rate * 1000.0) as u64),
            active,
            queued,
            dead,
            idle,
            sources,
        }
    }

    async fn drain_tasks(&mut self) {
        for h in self.aborts.values() {
            h.abort();
        }
        while let Some(j) = self.tasks.join_next_with_id().await {
            let key = match &j {
                Ok((id, _)) => self.running.remove(id),
                Err(e) => self.running.remove(&e.id()),
            };
            if let Some((sid, block)) = key {
                self.aborts.remove(&(sid, block));
                if let Ok((_, out)) = j {
                    self.srcs[sid].conn = out.conn;
                }
                self.sched
                    .block_failed(sid, block, Failure::Cancelled, Instant::now());
            }
        }
    }

    /// Hashes the finished file. `Ok(Some)` when it matches (file renamed into place), `Ok(None)` when a
    /// verification round was started (blocks reopened), `Err` when the mismatch is final.
    async fn verify(&mut self) -> Result<Option<DownloadReport>, DownloadError> {
        self.save_state_now().await?;
        let kinds = self.dl.expected.kinds();
        let (size, part) = (self.dl.size, self.part.clone());
        let hashes = tokio::task::spawn_blocking(move || hash_part(&part, size, kinds))
            .await
            .map_err(|e| io_err("hashing", &self.part, std::io::Error::other(e)))?
            .map_err(|e| io_err("hashing", &self.part, e))?;
        let expected = self.dl.expected.to_string();
        let actual = self
            .dl
            .expected
            .actual(&hashes)
            .unwrap_or_else(|| "none".into());
        self.sched.end_round();
        if actual == expected {
            if let Some(Supplier::Source(s)) = self.suspect.take() {
                let url = self.srcs[s].url.clone();
                warn!(id = s, %url, "source proven to have sent wrong bytes; dropped");
                self.dl.stats.error("download_bad_source");
                self.sched.kill(s);
                self.bad_sources.push(url.clone());
                self.emit(Event::BadSource { id: s, url });
            }
            return self.complete(hashes).await.map(Some);
        }
        warn!(%expected, %actual, round = self.rounds, "downloaded content does not match its hash");
        let suppliers = self.sched.suppliers();
        let contributors: Vec<String> = suppliers
            .iter()
            .map(|(s, _)| self.supplier_name(*s))
            .collect();
        if let Some(s) = self.suspect.take() {
            self.tested.insert(s);
        }
        let live = self.sched.live_sources();
        let next = suppliers.iter().map(|(s, _)| *s).find(|s| {
            !self.tested.contains(s)
                && match s {
                    Supplier::Resumed => live > 0,
                    Supplier::Source(id) => {
                        live - usize::from(self.sched.sources[*id].status != Status::Dead) > 0
                    }
                }
        });
        match next {
            Some(s) if self.rounds < MAX_VERIFY_ROUNDS => {
                self.rounds += 1;
                let reopened = self.sched.reopen(s);
                for &b in &reopened {
                    self.claims[b].store(false, Ordering::Release);
                }
                let name = self.supplier_name(s);
                info!(round = self.rounds, suspect = %name, blocks = reopened.len(), "re-fetching the suspect's blocks from other sources");
                self.emit(Event::VerifyFailed {
                    round: self.rounds,
                    suspect: name,
                    blocks: reopened.len(),
                });
                self.suspect = Some(s);
                self.dirty = true;
                Ok(None)
            }
            _ => {
                // Nothing trustworthy is left in the partial file's bookkeeping: a retry starts clean.
                let _ = std::fs::remove_file(&self.state_file);
                Err(DownloadError::HashMismatch {
                    expected,
                    actual,
                    contributors,
                })
            }
        }
    }

    fn supplier_name(&self, s: Supplier) -> String {
        match s {
            Supplier::Resumed => "resumed".into(),
            Supplier::Source(id) => self.srcs[id].url.clone(),
        }
    }

    async fn complete(&mut self, hashes: Hashes) -> Result<DownloadReport, DownloadError> {
        let (part, dest, state) = (
            self.part.clone(),
            self.dl.dest.clone(),
            self.state_file.clone(),
        );
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_all().map_err(|e| io_err("syncing", &part, e))?;
            std::fs::rename(&part, &dest).map_err(|e| io_err("renaming into place", &dest, e))?;
            let _ = std::fs::remove_file(&state);
            Ok::<_, DownloadError>(())
        })
        .await
        .map_err(|e| {
            io_err(
                "renaming into place",
                &self.dl.dest,
                std::io::Error::other(e),
            )
        })??;
        self.dl.stats.transfers(|t| t.downloads_completed += 1);
        info!(
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "download complete and verified"
        );
        self.emit(Event::Completed {
            path: self.dl.dest.clone(),
        });
        let mut supplied = vec![0u64; self.srcs.len()];
        for (s, n) in self.sched.suppliers() {
            if let Supplier::Source(id) = s {
                supplied[id] = n as u64;
            }
        }
        Ok(DownloadReport {
            path: self.dl.dest.clone(),
            size: self.dl.size,
            hashes,
            blocks: self.sched.block_count(),
            blocks_resumed: self.blocks_resumed,
            blocks_fetched: self.blocks_fetched,
            bytes_received: self
                .srcs
                .iter()
                .map(|s| s.live.load(Ordering::Relaxed))
                .sum(),
            verify_rounds: self.rounds,
            bad_sources: self.bad_sources.clone(),
            sources: self
                .srcs
                .iter()
                .enumerate()
                .map(|(id, s)| SourceReport {
                    url: s.url.clone(),
                    bytes: s.live.load(Ordering::Relaxed),
                    blocks: supplied[id],
                    state: state_name(self.sched.sources[id].status),
                })
                .collect(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        })
    }
}

fn state_name(s: Status) -> &'static str {
    match s {
        Status::Idle => "idle",
        Status::Busy { .. } => "active",
        Status::Waiting { queued: true, .. } => "queued",
        Status::Waiting { queued: false, .. } => "backoff",
        Status::Dead => "dead",
    }
}

fn io_err(what: &'static str, path: &Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// One sequential read of the partial file through the hasher, in fixed-size chunks.
fn hash_part(path: &Path, size: u64, kinds: HashKinds) -> std::io::Result<Hashes> {
    let mut f = std::fs::File::open(path)?;
    let mut h = MultiHasher::new(kinds, size);
    let mut buf = vec![0u8; VERIFY_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = buf.len().min(left as usize);
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finish())
}
