//! The shared-folder library: what a node shares, how peers find it, and how it is addressed.
//!
//! Every file-sharing protocol here needs the same view of a folder: Napster shares each file by path with
//! an MD5 (`100`, OpenNap `napster.txt`), Gnutella 0.6 answers Queries with `(index, size, name)` and
//! serves `GET /get/<index>/<name>` and `urn:sha1:` (Gnutella 0.6 draft §3.2.3 and HUGE), KaZaA addresses
//! content by UUHash (`/.hash=<hex>`). [`Library`] keeps, per regular file under the root:
//! relative path (forward slashes), size, mtime, keywords, the hashes asked for, and a stable index.
//!
//! # Scanning
//! The folder is walked recursively (walkdir, no symlink following). Skipped, each with a log line:
//! entries that cannot be read; names that are not valid UTF-8 or that [`SafeRelPath`] would refuse;
//! hidden entries (name starting with `.`) unless [`LibraryConfig::include_hidden`]; the data directory
//! if it lies inside the root; FIFOs, sockets and devices (hashing a FIFO would block for ever); symlinks
//! that lead outside the root or to a directory (following directory links invites loops and the same file
//! twice). A symlink to a file inside the root is shared under the link's own path. A file whose size or
//! mtime changes while it is hashed is skipped until a later scan, since it is still being written.
//!
//! # Keywords
//! [`tokenize`] is the one rule, used for file paths and for queries alike: apostrophes (`'`, `’`) are
//! dropped (so "Don't" and "dont" meet), then the text is split on every character that is not
//! alphanumeric (Unicode `char::is_alphanumeric`) and each word is lower-cased (Unicode). A file's keywords
//! are the words of every component of its relative path: the directories and the file name with its
//! extension (`Rock/AC-DC/Back In Black.mp3` gives `ac back black dc in mp3 rock`). A search matches whole
//! words only and ANDs them, as OpenNap does (`/work/shared/protocols/napster.md` §2: a search for `cow`
//! does not find "Cowboy"). Unlike OpenNap we split on `'`-free punctuation and keep all directory levels.
//!
//! # Index numbers
//! Each file gets a `u32` index, starting at [`FIRST_INDEX`]. A path keeps its index across rescans and
//! restarts (while it keeps existing); a new path takes the next number of a counter that only goes up and
//! is persisted, so a removed file's number is not handed out again until the counter wraps after 2³²
//! assignments. A file whose content changes keeps its index (its hashes are recomputed).
//!
//! # Hash cache
//! With a data directory, the library keeps `<data_dir>/`[`CACHE_FILE_NAME`], a JSON document:
//! ```text
//! { "version": 1, "root": "/canonical/share/root", "next_index": 7,
//!   "files": [ { "path": "dir/a.mp3", "index": 3, "size": 1234, "mtime_secs": 1700000000,
//!                "mtime_nanos": 12345, "hashes": { "sha1": "<hex>", "md5": null, ... } }, ... ] }
//! ```
//! A file whose (path, size, mtime) matches an entry that holds every hash kind asked for is not read at
//! all. The cache is rewritten after every scan through a temporary file and a rename, so a crash leaves
//! either the old or the new cache. A cache that cannot be parsed, has another version or belongs to
//! another root is ignored with a warning: everything is rehashed and indices start afresh. Two processes
//! must not share one data directory.
//!
//! # Hashing
//! Files to hash are shared out between [`LibraryConfig::hash_threads`] worker threads (default 2, never
//! more than the CPUs); results go back into path order, so the outcome does not depend on scheduling.
//! When stderr is a terminal (and [`Progress::Auto`]), an indicatif bar shows bytes hashed; otherwise
//! nothing is drawn.
//!
//! # Use from async code
//! [`Library::open`] and [`Library::rescan`] read the disk and may hash for minutes: call them from
//! `tokio::task::spawn_blocking`. The built library is plain data (`Send + Sync`); share it as
//! `Arc<RwLock<Library>>` or rescan into a new one and swap it in.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use crate::hash::{hash_file, HashKinds, Hashes, Sha1Digest, UuHash};
use crate::safe_path::{SafePathError, SafeRelPath, SharedRoot};

/// Name of the hash-cache file inside the data directory.
pub const CACHE_FILE_NAME: &str = "library-cache.json";
/// Version of the cache format; another version is ignored (and everything rehashed).
pub const CACHE_VERSION: u32 = 1;
/// The first index number handed out (0 is avoided: some clients treat it as "no index").
pub const FIRST_INDEX: u32 = 1;
/// Deepest directory level scanned below the root.
pub const MAX_SCAN_DEPTH: usize = 64;
/// Words of a query beyond this many are ignored (a query is peer input).
pub const MAX_QUERY_WORDS: usize = 32;
/// Default number of hashing threads.
pub const DEFAULT_HASH_THREADS: usize = 2;

/// Whether to draw a progress bar while hashing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// A bar on stderr when stderr is a terminal and there is something to hash.
    #[default]
    Auto,
    /// Never draw.
    Hidden,
}

/// How to build a [`Library`].
#[derive(Clone, Debug)]
pub struct LibraryConfig {
    /// The shared folder.
    pub root: PathBuf,
    /// Where the hash cache and index assignment live; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// Which hashes every file needs.
    pub kinds: HashKinds,
    /// Progress bar policy.
    pub progress: Progress,
    /// Hashing threads (at least 1; capped by the number of CPUs and of files to hash).
    pub hash_threads: usize,
    /// Share entries whose name starts with `.`.
    pub include_hidden: bool,
}

impl LibraryConfig {
    /// A configuration for `root` with no data directory, no hashes, automatic progress, two threads.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LibraryConfig {
            root: root.into(),
            data_dir: None,
            kinds: HashKinds::default(),
            progress: Progress::Auto,
            hash_threads: DEFAULT_HASH_THREADS,
            include_hidden: false,
        }
    }

    /// Persists the hash cache and indices under `dir` (created if missing).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Computes these hashes for every file.
    pub fn kinds(mut self, kinds: HashKinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// Sets the progress bar policy.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Sets the number of hashing threads.
    pub fn hash_threads(mut self, n: usize) -> Self {
        self.hash_threads = n;
        self
    }
}

/// One shared file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFile {
    /// Stable index number (see the module doc).
    pub index: u32,
    /// Path relative to the root, `/`-separated.
    pub path: SafeRelPath,
    /// Size in bytes when scanned.
    pub size: u64,
    /// Modification time when scanned.
    pub mtime: SystemTime,
    /// Keywords from [`keywords_for_path`], sorted and without duplicates.
    pub keywords: Vec<String>,
    /// The hashes asked for (cached entries may hold more).
    pub hashes: Hashes,
}

impl SharedFile {
    /// The file name (last path component).
    pub fn name(&self) -> &str {
        self.path.file_name()
    }

    /// True if the file has every one of `words` (already tokenised) as a keyword.
    pub fn has_keywords<S: AsRef<str>>(&self, words: &[S]) -> bool {
        words.iter().all(|w| {
            self.keywords
                .binary_search_by(|k| k.as_str().cmp(w.as_ref()))
                .is_ok()
        })
    }
}

/// What the cache file contributed to a scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheStatus {
    /// No data directory: nothing persisted.
    #[default]
    Disabled,
    /// No cache file yet.
    Missing,
    /// The cache was read.
    Loaded,
    /// The cache could not be parsed or had another version; it was ignored.
    Corrupt,
    /// The cache belonged to another root; it was ignored.
    OtherRoot,
    /// A rescan used the in-memory state of the previous scan.
    InMemory,
}

/// Figures of one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Files shared after the scan.
    pub files: usize,
    /// Files read and hashed in this scan.
    pub hashed: usize,
    /// Files whose hashes came from the cache (or were not needed).
    pub reused: usize,
    /// Bytes read for hashing.
    pub bytes_hashed: u64,
    /// Paths not known before this scan.
    pub added: usize,
    /// Paths known before and gone now.
    pub removed: usize,
    /// Entries skipped (unreadable, outside, special, changing, bad names).
    pub skipped: usize,
    /// Where the previous state came from.
    pub cache: CacheStatus,
}

/// Why a library could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// The shared folder does not exist or is not a directory.
    #[error("shared folder {path}: {source}")]
    Root {
        /// The folder given.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: SafePathError,
    },
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The cache could not be written.
    #[error("writing hash cache {path}: {source}")]
    CacheWrite {
        /// The cache file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Splits text into search words: apostrophes dropped, split on non-alphanumerics, lower-cased. Order is
/// kept and duplicates are not removed (see the module doc for the rule).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c == '\'' || c == '\u{2019}' {
            continue;
        }
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The keywords of a shared path: the words of every component, sorted, without duplicates.
pub fn keywords_for_path(path: &SafeRelPath) -> Vec<String> {
    let mut kw: Vec<String> = path.components().flat_map(tokenize).collect();
    kw.sort();
    kw.dedup();
    kw
}

/// The words of a peer's query: tokenised, duplicates removed, at most [`MAX_QUERY_WORDS`].
pub fn query_words(query: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    tokenize(query)
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .take(MAX_QUERY_WORDS)
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheEntry {
    path: String,
    index: u32,
    size: u64,
    mtime_secs: i64,
    mtime_nanos: u32,
    hashes: Hashes,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    root: PathBuf,
    next_index: u32,
    files: Vec<CacheEntry>,
}

fn mtime_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            // Before 1970: store as floor seconds plus positive nanoseconds.
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

#[cfg(test)]
fn mtime_from_parts(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
            + std::time::Duration::from_nanos(nanos as u64)
    }
}

fn covers(h: &Hashes, k: &HashKinds) -> bool {
    (!k.sha1 || h.sha1.is_some())
        && (!k.md5 || h.md5.is_some())
        && (!k.uuhash || h.uuhash.is_some())
        && (!k.kzhash || h.kzhash.is_some())
        && (!k.napster_md5 || h.napster_md5.is_some())
}

fn wants_any(k: &HashKinds) -> bool {
    k.sha1 || k.md5 || k.uuhash || k.kzhash || k.napster_md5
}

/// A file found by the walk.
struct Candidate {
    path: SafeRelPath,
    fs_path: PathBuf,
    size: u64,
    mtime: SystemTime,
}

/// The state a scan starts from: what was known about each path, and the index counter.
struct Previous {
    entries: HashMap<String, CacheEntry>,
    next_index: u32,
    status: CacheStatus,
}

/// The shared-folder library. Build it with [`Library::open`]; refresh it with [`Library::rescan`].
#[derive(Debug)]
pub struct Library {
    cfg: LibraryConfig,
    root: SharedRoot,
    data_dir: Option<PathBuf>,
    files: Vec<SharedFile>,
    next_index: u32,
    by_index: HashMap<u32, usize>,
    by_path: HashMap<String, usize>,
    by_sha1: HashMap<Sha1Digest, usize>,
    by_uuhash: HashMap<UuHash, usize>,
    by_keyword: HashMap<String, Vec<usize>>,
    report: ScanReport,
}

impl Library {
    /// Scans the folder (reusing the hash cache from the data directory if there is one), hashes what
    /// needs hashing and writes the cache back.
    pub fn open(cfg: LibraryConfig) -> Result<Self, LibraryError> {
        let root = SharedRoot::new(&cfg.root).map_err(|source| LibraryError::Root {
            path: cfg.root.clone(),
            source,
        })?;
        let data_dir = match &cfg.data_dir {
            Some(d) => Some(
                fs::create_dir_all(d)
                    .and_then(|_| d.canonicalize())
                    .map_err(|source| LibraryError::DataDir {
                        path: d.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let prev = match &data_dir {
            Some(d) => load_cache(&d.join(CACHE_FILE_NAME), root.path()),
            None => Previous {
                entries: HashMap::new(),
                next_index: FIRST_INDEX,
                status: CacheStatus::Disabled,
            },
        };
        let mut lib = Library {
            cfg,
            root,
            data_dir,
            files: Vec::new(),
            next_index: FIRST_INDEX,
            by_index: HashMap::new(),
            by_path: HashMap::new(),
            by_sha1: HashMap::new(),
            by_uuhash: HashMap::new(),
            by_keyword: HashMap::new(),
            report: ScanReport::default(),
        };
        lib.scan_from(prev)?;
        Ok(lib)
    }

    /// Scans the folder again: new files are hashed and numbered, changed files rehashed (keeping their
    /// index), removed files dropped. The cache is rewritten.
    pub fn rescan(&mut self) -> Result<&ScanReport, LibraryError> {
        let entries = self
            .files
            .iter()
            .map(|f| (f.path.as_str().to_owned(), entry_of(f)))
            .collect();
        let prev = Previous {
            entries,
            next_index: self.next_index,
            status: CacheStatus::InMemory,
        };
        self.scan_from(prev)?;
        Ok(&self.report)
    }

    fn scan_from(&mut self, prev: Previous) -> Result<(), LibraryError> {
        let span = info_span!("library", root = %self.root.path().display());
        let _g = span.enter();
        let kinds = self.cfg.kinds;
        let mut report = ScanReport {
            cache: prev.status,
            ..ScanReport::default()
        };
        let candidates = self.walk(&mut report.skipped);

        // Decide, in path order, which files can keep their cached hashes.
        let mut hashes: Vec<Option<Hashes>> = Vec::with_capacity(candidates.len());
        let mut jobs = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let (secs, nanos) = mtime_parts(c.mtime);
            let cached = prev
                .entries
                .get(c.path.as_str())
                .filter(|e| e.size == c.size && e.mtime_secs == secs && e.mtime_nanos == nanos);
            match cached {
                Some(e) if covers(&e.hashes, &kinds) => {
                    hashes.push(Some(e.hashes.clone()));
                    report.reused += 1;
                }
                _ if !wants_any(&kinds) => {
                    hashes.push(Some(Hashes::default()));
                    report.reused += 1;
                }
                _ => {
                    hashes.push(None);
                    jobs.push(i);
                }
            }
        }
        let results = hash_jobs(&candidates, &jobs, kinds, &self.cfg);
        for (&i, r) in jobs.iter().zip(results) {
            match r {
                Ok(h) => {
                    report.hashed += 1;
                    report.bytes_hashed += candidates[i].size;
                    hashes[i] = Some(h);
                }
                Err(e) => {
                    warn!(path = %candidates[i].path, error = %e, "skipping file: cannot hash");
                    report.skipped += 1;
                }
            }
        }

        // Number the files: known paths keep their index, new ones take the counter, in path order.
        let mut next_index = prev.next_index.max(FIRST_INDEX);
        let mut used: HashSet<u32> = HashSet::new();
        let mut files = Vec::with_capacity(candidates.len());
        let mut pending_new = Vec::new();
        for (c, h) in candidates.into_iter().zip(hashes) {
            let Some(h) = h else { continue };
            let known = prev
                .entries
                .get(c.path.as_str())
                .map(|e| e.index)
                .filter(|ix| used.insert(*ix));
            if known.is_none() {
                report.added += 1;
                pending_new.push(files.len());
            }
            files.push(SharedFile {
                index: known.unwrap_or(0),
                keywords: keywords_for_path(&c.path),
                path: c.path,
                size: c.size,
                mtime: c.mtime,
                hashes: h,
            });
        }
        for pos in pending_new {
            // A counter that never goes back: a removed file's number is not reused until it wraps.
            while used.contains(&next_index) || next_index < FIRST_INDEX {
                next_index = next_index.wrapping_add(1);
            }
            files[pos].index = next_index;
            used.insert(next_index);
            next_index = next_index.wrapping_add(1);
        }
        let present: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        report.removed = prev
            .entries
            .keys()
            .filter(|p| !present.contains(p.as_str()))
            .count();
        report.files = files.len();

        self.files = files;
        self.next_index = next_index;
        self.rebuild_indexes();
        self.report = report;
        info!(
            files = self.report.files,
            hashed = self.report.hashed,
            reused = self.report.reused,
            added = self.report.added,
            removed = self.report.removed,
            skipped = self.report.skipped,
            "library scanned"
        );
        self.save()
    }

    fn walk(&self, skipped: &mut usize) -> Vec<Candidate> {
        let root = self.root.path();
        let data_dir = self.data_dir.clone();
        let include_hidden = self.cfg.include_hidden;
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .max_depth(MAX_SCAN_DEPTH)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |e| {
                if e.depth() == 0 {
                    return true;
                }
                if data_dir.as_deref() == Some(e.path()) {
                    debug!(path = %e.path().display(), "not sharing the data directory");
                    return false;
                }
                include_hidden || !e.file_name().to_string_lossy().starts_with('.')
            });
        let mut out = Vec::new();
        for entry in walker {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "skipping unreadable entry");
                    *skipped += 1;
                    continue;
                }
            };
            let ft = entry.file_type();
            if ft.is_dir() {
                continue;
            }
            let fs_path = entry.path();
            let md = if ft.is_symlink() {
                match self.root.contains(fs_path) {
                    Ok(target) => match fs::metadata(&target) {
                        Ok(md) if md.is_file() => md,
                        Ok(_) => {
                            debug!(path = %fs_path.display(), "not following symlink to a non-file");
                            *skipped += 1;
                            continue;
                        }
                        Err(e) => {
                            warn!(path = %fs_path.display(), error = %e, "skipping unreadable symlink target");
                            *skipped += 1;
                            continue;
                        }
                    },
                    Err(e) => {
                        warn!(path = %fs_path.display(), error = %e, "skipping symlink");
                        *skipped += 1;
                        continue;
                    }
                }
            } else if ft.is_file() {
                match entry.metadata() {
                    Ok(md) => md,
                    Err(e) => {
                        warn!(path = %fs_path.display(), error = %e, "skipping unreadable file");
                        *skipped += 1;
                        continue;
                    }
                }
            } else {
                debug!(path = %fs_path.display(), "skipping special file");
                *skipped += 1;
                continue;
            };
            let rel = match SafeRelPath::from_fs_relative(root, fs_path) {
                Ok(r) => r,
                Err(e) => {
                    warn!(path = %fs_path.display(), error = %e, "skipping file with an unusable name");
                    *skipped += 1;
                    continue;
                }
            };
            let mtime = md.modified().unwrap_or(UNIX_EPOCH);
            out.push(Candidate {
                path: rel,
                fs_path: fs_path.to_path_buf(),
                size: md.len(),
                mtime,
            });
        }
        // Normalised paths compare like the walk order, but sort anyway: index numbering relies on it.
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    fn rebuild_indexes(&mut self) {
        self.by_index.clear();
        self.by_path.clear();
        self.by_sha1.clear();
        self.by_uuhash.clear();
        self.by_keyword.clear();
        for (pos, f) in self.files.iter().enumerate() {
            self.by_index.insert(f.index, pos);
            self.by_path.insert(f.path.as_str().to_owned(), pos);
            if let Some(h) = f.hashes.sha1 {
                self.by_sha1.entry(h).or_insert(pos);
            }
            if let Some(h) = f.hashes.uuhash {
                self.by_uuhash.entry(h).or_insert(pos);
            }
            for k in &f.keywords {
                self.by_keyword.entry(k.clone()).or_default().push(pos);
            }
        }
    }

    fn save(&self) -> Result<(), LibraryError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        let path = dir.join(CACHE_FILE_NAME);
        let doc = CacheFile {
            version: CACHE_VERSION,
            root: self.root.path().to_path_buf(),
            next_index: self.next_index,
            files: self.files.iter().map(entry_of).collect(),
        };
        write_atomically(&path, &doc).map_err(|source| LibraryError::CacheWrite { path, source })
    }

    /// The shared root (canonical).
    pub fn root(&self) -> &SharedRoot {
        &self.root
    }

    /// Every shared file, in path order.
    pub fn files(&self) -> &[SharedFile] {
        &self.files
    }

    /// Number of shared files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sum of the shared files' sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Figures of the last scan.
    pub fn last_report(&self) -> &ScanReport {
        &self.report
    }

    /// The file with this index.
    pub fn get(&self, index: u32) -> Option<&SharedFile> {
        self.by_index.get(&index).map(|&p| &self.files[p])
    }

    /// The file at this relative path (decoded; normalised as [`SafeRelPath::parse`] does, so `a//b`
    /// finds `a/b`). Invalid or hostile names find nothing.
    pub fn by_path(&self, path: &str) -> Option<&SharedFile> {
        let rel = SafeRelPath::parse(path).ok()?;
        self.by_path.get(rel.as_str()).map(|&p| &self.files[p])
    }

    /// A file with this SHA-1 (the first in path order if several share the content).
    pub fn by_sha1(&self, h: &Sha1Digest) -> Option<&SharedFile> {
        self.by_sha1.get(h).map(|&p| &self.files[p])
    }

    /// A file with this UUHash (the first in path order if several share the content).
    pub fn by_uuhash(&self, h: &UuHash) -> Option<&SharedFile> {
        self.by_uuhash.get(h).map(|&p| &self.files[p])
    }

    /// Files having every word of `query` as a keyword (whole words, AND), in path order. A query with
    /// no words finds nothing.
    pub fn search(&self, query: &str) -> Vec<&SharedFile> {
        self.search_words(&query_words(query))
    }

    /// Like [`Library::search`] with words already split (each is tokenised again, so `"Rock"` and
    /// `"rock"` are the same word and `"ac-dc"` means `ac` AND `dc`).
    pub fn search_words<S: AsRef<str>>(&self, words: &[S]) -> Vec<&SharedFile> {
        let mut seen = HashSet::new();
        let words: Vec<String> = words
            .iter()
            .flat_map(|w| tokenize(w.as_ref()))
            .filter(|w| seen.insert(w.clone()))
            .take(MAX_QUERY_WORDS)
            .collect();
        if words.is_empty() {
            return Vec::new();
        }
        let mut lists = Vec::with_capacity(words.len());
        for w in &words {
            match self.by_keyword.get(w) {
                Some(l) => lists.push(l.as_slice()),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let (first, rest) = lists.split_first().expect("at least one word");
        first
            .iter()
            .filter(|p| rest.iter().all(|l| l.binary_search(p).is_ok()))
            .map(|&p| &self.files[p])
            .collect()
    }

    /// The canonical path of a shared file, checked again against the root (the folder may have changed
    /// since the scan, e.g. a file replaced by a symlink leading out).
    pub fn resolve(&self, file: &SharedFile) -> Result<PathBuf, SafePathError> {
        self.root.resolve_file(&file.path)
    }

    /// Opens a shared file for reading through [`SharedRoot::open_file`].
    pub fn open_file(&self, file: &SharedFile) -> Result<(fs::File, PathBuf), SafePathError> {
        self.root.open_file(&file.path)
    }
}

fn entry_of(f: &SharedFile) -> CacheEntry {
    let (mtime_secs, mtime_nanos) = mtime_parts(f.mtime);
    CacheEntry {
        path: f.path.as_str().to_owned(),
        index: f.index,
        size: f.size,
        mtime_secs,
        mtime_nanos,
        hashes: f.hashes.clone(),
    }
}

fn load_cache(path: &Path, root: &Path) -> Previous {
    let fresh = |status| Previous {
        entries: HashMap::new(),
        next_index: FIRST_INDEX,
        status,
    };
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return fresh(CacheStatus::Missing),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read hash cache; rehashing everything");
            return fresh(CacheStatus::Corrupt);
        }
    };
    let doc: CacheFile = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "hash cache is corrupt; rehashing everything");
            return fresh(CacheStatus::Corrupt);
        }
    };
    if doc.version != CACHE_VERSION {
        warn!(path = %path.display(), version = doc.version, "hash cache has another version; rehashing everything");
        return fresh(CacheStatus::Corrupt);
    }
    if doc.root != root {
        warn!(
            path = %path.display(),
            cached_root = %doc.root.display(),
            "hash cache belongs to another shared folder; rehashing everything"
        );
        return fresh(CacheStatus::OtherRoot);
    }
    let mut entries = HashMap::with_capacity(doc.files.len());
    let mut max_index = None;
    for e in doc.files {
        // Entries are re-checked: the file may have been edited by hand.
        if !SafeRelPath::parse(&e.path).is_ok_and(|p| p.as_str() == e.path) {
            warn!(path = %e.path, "dropping bad entry from hash cache");
            continue;
        }
        max_index = max_index.max(Some(e.index));
        entries.insert(e.path.clone(), e);
    }
    let floor = max_index.map_or(FIRST_INDEX, |m: u32| m.wrapping_add(1).max(FIRST_INDEX));
    let next_index =
        if doc.next_index >= FIRST_INDEX && max_index.is_none_or(|m| doc.next_index > m) {
            doc.next_index
        } else {
            floor
        };
    Previous {
        entries,
        next_index,
        status: CacheStatus::Loaded,
    }
}

fn write_atomically<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let file = fs::File::create(&tmp)?;
        let mut w = io::BufWriter::new(file);
        serde_json::to_writer(&mut w, value)?;
        w.write_all(b"\n")?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Hashes `candidates[jobs[..]]` on worker threads; results come back in `jobs` order.
fn hash_jobs(
    candidates: &[Candidate],
    jobs: &[usize],
    kinds: HashKinds,
    cfg: &LibraryConfig,
) -> Vec<io::Result<Hashes>> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let total: u64 = jobs.iter().map(|&i| candidates[i].size).sum();
    let bar = progress_bar(cfg.progress, total, jobs.len());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cfg.hash_threads.max(1).min(cpus).min(jobs.len());
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<io::Result<Hashes>>>> =
        jobs.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let j = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = jobs.get(j) else { break };
        let r = hash_one(&candidates[i], kinds, &bar);
        *slots[j].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    if threads == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
    }
    bar.finish_and_clear();
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_else(|| Err(io::Error::other("hash worker did not run")))
        })
        .collect()
}

fn hash_one(c: &Candidate, kinds: HashKinds, bar: &indicatif::ProgressBar) -> io::Result<Hashes> {
    let mut last = 0u64;
    let h = hash_file(&c.fs_path, kinds, &mut |done| {
        bar.inc(done.saturating_sub(last));
        last = done;
    })?;
    bar.inc(c.size.saturating_sub(last));
    // A file still being written would get a hash of bytes that no longer exist: leave it for later.
    let md = fs::metadata(&c.fs_path)?;
    if md.len() != c.size || md.modified().ok() != Some(c.mtime) {
        return Err(io::Error::other("file changed while being hashed"));
    }
    Ok(h)
}

fn progress_bar(policy: Progress, total_bytes: u64, files: usize) -> indicatif::ProgressBar {
    if policy == Progress::Hidden || !io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("hashing {files} files"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn library_can_be_shared_between_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Library>();
    }

    #[test]
    fn tokenize_rule() {
        assert_eq!(
            tokenize("Back In Black.mp3"),
            ["back", "in", "black", "mp3"]
        );
        assert_eq!(tokenize("Don't Stop"), ["dont", "stop"]);
        assert_eq!(tokenize("AC/DC - ÉTÉ_2001"), ["ac", "dc", "été", "2001"]);
        assert!(tokenize("  -- ").is_empty());
    }

    #[test]
    fn keywords_include_directories() {
        let p = SafeRelPath::parse("Rock/AC-DC/Back In Black.mp3").unwrap();
        assert_eq!(
            keywords_for_path(&p),
            ["ac", "back", "black", "dc", "in", "mp3", "rock"]
        );
    }

    #[test]
    fn query_words_dedup_and_cap() {
        assert_eq!(query_words("a A b a"), ["a", "b"]);
        let long: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_words(&long).len(), MAX_QUERY_WORDS);
    }

    #[test]
    fn mtime_round_trip() {
        for t in [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(5, 250_000_000),
            UNIX_EPOCH - Duration::from_secs(7),
        ] {
            let (s, n) = mtime_parts(t);
            assert!(n < 1_000_000_000);
            assert_eq!(mtime_from_parts(s, n), t);
        }
    }
}
