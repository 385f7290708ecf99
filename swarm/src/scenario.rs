//! The scenario: every knob of a lab run, read from TOML (`swarm run FILE.toml`) or built in (`swarm demo`).
//!
//! Unknown keys are refused and every error names the offending field, so a typo never silently runs the
//! default. `swarm example-scenario` prints [`EXAMPLE`], a commented file with the default values.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Systems the lab knows, in report order.
pub const SYSTEMS: [&str; 4] = ["napster", "gnutella", "kazaa", "bittorrent"];

/// Largest swarm a scenario may ask for: every peer is a process on this machine.
pub const MAX_PEERS: usize = 200;
/// Largest corpus (files), bounding the temp folder and the generation time.
pub const MAX_FILES: usize = 5_000;
/// Largest single file, in KiB (64 MiB): the whole corpus lives in a temp folder.
pub const MAX_FILE_KIB: u64 = 64 * 1024;

/// One lab run. Every field has a default (the demo), so a scenario file only lists what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice (corpus names, sizes, placement, search targets): same seed, same run.
    pub seed: u64,
    /// Systems to run, among "napster", "gnutella", "kazaa", "bittorrent".
    pub systems: Vec<String>,
    /// Sharing peers per system (Napster clients; BitTorrent uses one seeder plus the downloaders).
    pub peers: usize,
    /// Files in the corpus, shared across the peers with Zipf-like popularity.
    pub files: usize,
    /// Smallest corpus file, KiB.
    pub min_file_kib: u64,
    /// Largest corpus file, KiB.
    pub max_file_kib: u64,
    /// Zipf exponent of popularity: the file of rank r is held by about `peers * top_fraction / r^s` peers.
    pub zipf_exponent: f64,
    /// Fraction of the peers holding the most popular file (0 < f <= 1).
    pub top_fraction: f64,
    /// Fraction of Napster, Gnutella and KaZaA peers that are firewalled (uploads only by push).
    pub firewalled_fraction: f64,
    /// Searches for the rarest file and as many for the most popular one.
    pub searches_per_target: usize,
    /// Peers that download the same new file at once (the flash crowd); it starts on one peer only.
    pub flash_crowd: usize,
    /// Size of the flash-crowd file, KiB.
    pub flash_file_kib: u64,
    /// Extra flash crowds of these sizes, one after the other, for the "completion time against the number
    /// of downloaders" plot (empty: none).
    pub flash_sweep: Vec<usize>,
    /// Downloads of the churn file, `churn_leaving` of whose `churn_sources` leave while they run.
    pub churn_downloads: usize,
    /// Size of the churn file, KiB.
    pub churn_file_kib: u64,
    /// Spacing of the departures: churn source k leaves `(k + 1)` times this many milliseconds after the
    /// churn downloads start.
    pub churn_leave_after_ms: u64,
    /// BitTorrent piece size, KiB (a power of two, at least 16).
    pub bittorrent_piece_kib: u64,
    /// Tracker re-announce interval handed to BitTorrent peers, seconds.
    pub tracker_interval_secs: u32,
    /// Seconds a BitTorrent leecher keeps seeding after it completes (`download --seed-time`; 0: it
    /// leaves at once). Its completion time is still the moment it completed.
    pub bittorrent_seed_secs: u64,
    /// Gnutella in classic 0.4 mode: every node floods, no ultrapeers, no QRP (the flood for contrast).
    pub gnutella_classic: bool,
    /// When Gnutella runs with ultrapeers, also run the same searches (searches only: no flash crowd,
    /// sweep, churn, ring or pollution) over a classic 0.4 flood of the same peers, reported as the
    /// system "gnutella classic" (the flood for contrast).
    pub gnutella_classic_contrast: bool,
    /// TTL of Gnutella queries (1..=7).
    pub gnutella_ttl: u8,
    /// Most seconds any one search or download may take before it counts as failed.
    pub op_timeout_secs: u64,
    /// Upload cap of every sharing peer (Napster clients, Gnutella nodes, KaZaA ordinary nodes, BitTorrent
    /// seeders), bytes/s with k/M/G suffixes (`"512k"`) or a number; absent = unlimited.
    pub upload_rate: Option<RateSpec>,
    /// Download cap of every sharing peer (same syntax).
    pub download_rate: Option<RateSpec>,
    /// Upload cap of every downloader (flash crowd, sweep, churn, ring and pollution clients; BitTorrent
    /// leechers upload to each other).
    pub downloader_upload_rate: Option<RateSpec>,
    /// Download cap of every downloader.
    pub downloader_download_rate: Option<RateSpec>,
    /// Systems that run the `flash_sweep` (empty: every system of the run).
    pub flash_sweep_systems: Vec<String>,
    /// Peers holding the churn file (the last peers), all of them sources of the churn downloads.
    pub churn_sources: usize,
    /// How many of those sources leave: source k leaves `(k + 1) * churn_leave_after_ms` after the start.
    pub churn_leaving: usize,
    /// Sources leave gracefully (SIGTERM: goodbye, stats written) instead of being killed (SIGKILL, after
    /// a SIGUSR1 so their stats so far are still counted).
    pub churn_graceful: bool,
    /// Gnutella flood cost against TTL: for each TTL listed, `searches_per_target` searches that nobody can
    /// answer (so the flood is never cut short), counting the query messages every node sent (empty: none).
    pub gnutella_ttl_sweep: Vec<u8>,
    /// Expanding ring during a flash crowd (Gnutella only): this many one-after-the-other searches for the
    /// flash file with the fixed `gnutella_ttl`, then as many with an expanding ring (TTL 1, 2, ...); each
    /// searcher downloads it and stays online sharing it, so later searches find closer copies (0: none).
    pub ring_searches: usize,
    /// Pollution: peers holding a decoy (same name and size, other bytes) of a popular new file.
    pub decoys: usize,
    /// Pollution: peers holding the genuine file.
    pub pollution_genuine: usize,
    /// Pollution: downloads of that file per pick (by name, and by content hash where the system has one;
    /// 0: no pollution phase).
    pub pollution_downloads: usize,
    /// Gnutella ultrapeers, taken from the sharing peers (0: one per five peers, at least two).
    pub gnutella_ultrapeers: usize,
    /// Ultrapeers each Gnutella leaf connects to (1..=ultrapeers).
    pub gnutella_leaf_links: usize,
    /// KaZaA supernodes, started beside the ordinary nodes and linked to each other (0: one per five
    /// peers, at least two).
    pub kazaa_supernodes: usize,
    /// Supernode addresses each KaZaA ordinary node is given (`--peer`, 1..=supernodes). The node
    /// registers its shares with the best one of them only; the others are spares. This is not the fan-out.
    pub kazaa_links_per_node: usize,
    /// KaZaA supernode fan-out: linked supernodes each supernode forwards a query to
    /// (`kazaa-supernode --fanout`, 1..=MAX_PEERS; the binary's default is 6).
    pub kazaa_supernode_fanout: usize,
    /// Sharing peers of Napster only (0: `peers`).
    pub napster_peers: usize,
    /// Sharing peers of Gnutella only (0: `peers`).
    pub gnutella_peers: usize,
    /// Sharing peers of KaZaA only (0: `peers`).
    pub kazaa_peers: usize,
    /// Peers holding the corpus in BitTorrent only (0: `peers`).
    pub bittorrent_peers: usize,
    /// Initial seeders of each published BitTorrent file (0: one per holder of the file). Beyond the
    /// file's holders, extra seeders seed a copy of it.
    pub bittorrent_seeders: usize,
}

/// A byte rate as written in a scenario: a number of bytes/s, or text with a k/M/G suffix (`"256k"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RateSpec {
    /// Bytes per second.
    Bytes(u64),
    /// Text such as `"256k"`, `"1.5M"` (powers of 1024, see `common::daemon::parse_rate`).
    Text(String),
}

impl RateSpec {
    /// Bytes per second, or why the value is not a rate.
    pub fn bytes_per_sec(&self) -> Result<u64, String> {
        match self {
            RateSpec::Bytes(0) => Err("must be at least 1 byte/s (leave it out for no cap)".into()),
            RateSpec::Bytes(n) => Ok(*n),
            RateSpec::Text(t) => common::daemon::parse_rate(t),
        }
    }
}

/// The caps of one role, in bytes per second (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caps {
    /// Upload cap.
    pub upload: Option<u64>,
    /// Download cap.
    pub download: Option<u64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            seed: 2001,
            systems: SYSTEMS.iter().map(|s| s.to_string()).collect(),
            peers: 20,
            files: 60,
            min_file_kib: 64,
            max_file_kib: 1024,
            zipf_exponent: 1.0,
            top_fraction: 0.5,
            firewalled_fraction: 0.1,
            searches_per_target: 5,
            flash_crowd: 19,
            flash_file_kib: 512,
            flash_sweep: vec![2, 4, 8],
            churn_downloads: 3,
            churn_file_kib: 1024,
            churn_leave_after_ms: 1000,
            bittorrent_piece_kib: 32,
            tracker_interval_secs: 5,
            bittorrent_seed_secs: 2,
            gnutella_classic: false,
            gnutella_classic_contrast: true,
            gnutella_ttl: 4,
            op_timeout_secs: 40,
            upload_rate: Some(RateSpec::Text("512k".into())),
            download_rate: Some(RateSpec::Text("2M".into())),
            downloader_upload_rate: Some(RateSpec::Text("512k".into())),
            downloader_download_rate: Some(RateSpec::Text("2M".into())),
            flash_sweep_systems: vec!["napster".into(), "bittorrent".into()],
            churn_sources: 3,
            churn_leaving: 2,
            churn_graceful: false,
            gnutella_ttl_sweep: Vec::new(),
            ring_searches: 0,
            decoys: 0,
            pollution_genuine: 2,
            pollution_downloads: 0,
            gnutella_ultrapeers: 0,
            gnutella_leaf_links: 2,
            kazaa_supernodes: 0,
            kazaa_links_per_node: 2,
            kazaa_supernode_fanout: 6,
            napster_peers: 0,
            gnutella_peers: 0,
            kazaa_peers: 0,
            bittorrent_peers: 0,
            bittorrent_seeders: 0,
        }
    }
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown field or a wrong type (the message names the field).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, naming the field.
        message: String,
    },
    /// A field has a value out of range.
    #[error("field `{field}`: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field,
        message: message.into(),
    }
}

impl Scenario {
    /// The reduced swarm of `--small`: the same phases in a few seconds.
    pub fn small() -> Self {
        Scenario {
            peers: 6,
            files: 12,
            min_file_kib: 4,
            max_file_kib: 64,
            searches_per_target: 2,
            flash_crowd: 4,
            flash_file_kib: 512,
            flash_sweep: vec![1, 3],
            churn_downloads: 2,
            churn_file_kib: 1024,
            churn_leave_after_ms: 500,
            churn_sources: 2,
            churn_leaving: 1,
            bittorrent_piece_kib: 32,
            tracker_interval_secs: 2,
            bittorrent_seed_secs: 1,
            op_timeout_secs: 15,
            upload_rate: Some(RateSpec::Text("1M".into())),
            download_rate: Some(RateSpec::Text("8M".into())),
            downloader_upload_rate: Some(RateSpec::Text("1M".into())),
            downloader_download_rate: Some(RateSpec::Text("8M".into())),
            flash_sweep_systems: Vec::new(),
            ..Scenario::default()
        }
    }

    /// Parses TOML text; `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ScenarioError> {
        // serde_path_to_error keeps the key a wrong-typed value sits under; toml's own message drops it.
        let s: Scenario =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
                let field = match e.path().to_string() {
                    p if p.is_empty() || p == "." => String::new(),
                    p => format!("field `{p}`: "),
                };
                let e = e.into_inner();
                ScenarioError::Parse {
                    path: origin.to_owned(),
                    message: field + e.message() + &span_hint(text, e.span()),
                }
            })?;
        s.validate()?;
        Ok(s)
    }

    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The per-system peer-count fields, with the system each one sets.
    fn per_system_peers(&self) -> [(&'static str, &'static str, usize); 4] {
        [
            ("napster", "napster_peers", self.napster_peers),
            ("gnutella", "gnutella_peers", self.gnutella_peers),
            ("kazaa", "kazaa_peers", self.kazaa_peers),
            ("bittorrent", "bittorrent_peers", self.bittorrent_peers),
        ]
    }

    /// Sharing peers of `system`: its own count, or `peers`.
    pub fn peers_of(&self, system: &str) -> usize {
        self.per_system_peers()
            .iter()
            .find(|(s, _, n)| *s == system && *n != 0)
            .map_or(self.peers, |&(_, _, n)| n)
    }

    /// The scenario one system runs: `peers` replaced by that system's count.
    pub fn for_system(&self, system: &str) -> Scenario {
        Scenario {
            peers: self.peers_of(system),
            ..self.clone()
        }
    }

    /// Range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        self.validate_counts()?;
        for (system, field, n) in self.per_system_peers() {
            if n == 0 {
                continue;
            }
            if !(2..=MAX_PEERS).contains(&n) {
                return Err(invalid(
                    field,
                    format!("must be 0 (use `peers`) or 2..={MAX_PEERS}"),
                ));
            }
            // The other counts (churn sources, decoys, hubs) must fit this system's peers too.
            if let Err(e) = self.for_system(system).validate_counts() {
                return Err(invalid(
                    field,
                    format!("{n} peers are too few for the other fields: {e}"),
                ));
            }
        }
        if self.bittorrent_seeders > MAX_PEERS {
            return Err(invalid(
                "bittorrent_seeders",
                format!("must be 0..={MAX_PEERS} (0: every holder of the file)"),
            ));
        }
        Ok(())
    }

    fn validate_counts(&self) -> Result<(), ScenarioError> {
        for s in &self.systems {
            if !SYSTEMS.contains(&s.as_str()) {
                return Err(invalid(
                    "systems",
                    format!("unknown system {s:?} (known: {})", SYSTEMS.join(", ")),
                ));
            }
        }
        if self.peers < 2 || self.peers > MAX_PEERS {
            return Err(invalid("peers", format!("must be 2..={MAX_PEERS}")));
        }
        if self.files == 0 || self.files > MAX_FILES {
            return Err(invalid("files", format!("must be 1..={MAX_FILES}")));
        }
        if self.min_file_kib == 0 || self.min_file_kib > self.max_file_kib {
            return Err(invalid("min_file_kib", "must be 1..=max_file_kib"));
        }
        for (field, v) in [
            ("max_file_kib", self.max_file_kib),
            ("flash_file_kib", self.flash_file_kib),
            ("churn_file_kib", self.churn_file_kib),
        ] {
            if v == 0 || v > MAX_FILE_KIB {
                return Err(invalid(field, format!("must be 1..={MAX_FILE_KIB}")));
            }
        }
        if !(self.zipf_exponent >= 0.0 && self.zipf_exponent <= 4.0) {
            return Err(invalid("zipf_exponent", "must be within 0..=4"));
        }
        if !(self.top_fraction > 0.0 && self.top_fraction <= 1.0) {
            return Err(invalid("top_fraction", "must be within (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.firewalled_fraction) {
            return Err(invalid("firewalled_fraction", "must be within [0, 1]"));
        }
        if self.flash_crowd > MAX_PEERS {
            return Err(invalid("flash_crowd", format!("must be 0..={MAX_PEERS}")));
        }
        if self.flash_sweep.iter().any(|&n| n == 0 || n > MAX_PEERS) || self.flash_sweep.len() > 16
        {
            return Err(invalid(
                "flash_sweep",
                format!("at most 16 sizes, each 1..={MAX_PEERS}"),
            ));
        }
        if self.churn_downloads > MAX_PEERS {
            return Err(invalid(
                "churn_downloads",
                format!("must be 0..={MAX_PEERS}"),
            ));
        }
        if self.searches_per_target > 1000 {
            return Err(invalid("searches_per_target", "must be 0..=1000"));
        }
        if self.bittorrent_piece_kib < 16 || !self.bittorrent_piece_kib.is_power_of_two() {
            return Err(invalid(
                "bittorrent_piece_kib",
                "must be a power of two >= 16",
            ));
        }
        if self.bittorrent_seed_secs > 600 {
            return Err(invalid("bittorrent_seed_secs", "must be 0..=600"));
        }
        if self.tracker_interval_secs == 0 {
            return Err(invalid("tracker_interval_secs", "must be at least 1"));
        }
        if !(1..=7).contains(&self.gnutella_ttl) {
            return Err(invalid("gnutella_ttl", "must be 1..=7"));
        }
        if self.op_timeout_secs == 0 || self.op_timeout_secs > 3600 {
            return Err(invalid("op_timeout_secs", "must be 1..=3600"));
        }
        for (field, v) in [
            ("upload_rate", &self.upload_rate),
            ("download_rate", &self.download_rate),
            ("downloader_upload_rate", &self.downloader_upload_rate),
            ("downloader_download_rate", &self.downloader_download_rate),
        ] {
            if let Some(r) = v {
                r.bytes_per_sec().map_err(|m| invalid(field, m))?;
            }
        }
        for s in &self.flash_sweep_systems {
            if !SYSTEMS.contains(&s.as_str()) {
                return Err(invalid(
                    "flash_sweep_systems",
                    format!("unknown system {s:?} (known: {})", SYSTEMS.join(", ")),
                ));
            }
        }
        if self.churn_sources == 0 || self.churn_sources > self.peers - 1 {
            return Err(invalid(
                "churn_sources",
                "must be 1..=peers-1 (peer 0 holds the flash-crowd file)",
            ));
        }
        if self.churn_leaving > self.churn_sources {
            return Err(invalid("churn_leaving", "must be 0..=churn_sources"));
        }
        if self.gnutella_ttl_sweep.len() > 16
            || self.gnutella_ttl_sweep.iter().any(|t| !(1..=7).contains(t))
        {
            return Err(invalid("gnutella_ttl_sweep", "at most 16 TTLs, each 1..=7"));
        }
        if self.ring_searches > MAX_PEERS {
            return Err(invalid("ring_searches", format!("must be 0..={MAX_PEERS}")));
        }
        if self.pollution_downloads > MAX_PEERS {
            return Err(invalid(
                "pollution_downloads",
                format!("must be 0..={MAX_PEERS}"),
            ));
        }
        if self.pollution_downloads > 0 && (self.decoys == 0 || self.pollution_genuine == 0) {
            return Err(invalid(
                "decoys",
                "a pollution phase needs at least 1 decoy and 1 pollution_genuine peer",
            ));
        }
        if (self.decoys > 0 || self.pollution_downloads > 0)
            && self.decoys + self.pollution_genuine
                > self.peers.saturating_sub(1 + self.churn_sources)
        {
            return Err(invalid(
                "decoys",
                "decoys + pollution_genuine must leave peer 0 and the churn sources free (at most peers - 1 - churn_sources)",
            ));
        }
        if self.gnutella_ultrapeers > self.peers - 1 {
            return Err(invalid(
                "gnutella_ultrapeers",
                "must be 0..=peers-1 (0: one per five peers; peer 0 stays a leaf)",
            ));
        }
        if self.kazaa_supernodes > MAX_PEERS {
            return Err(invalid(
                "kazaa_supernodes",
                format!("must be 0..={MAX_PEERS} (0: one per five peers)"),
            ));
        }
        if !(1..=MAX_PEERS).contains(&self.kazaa_supernode_fanout) {
            return Err(invalid(
                "kazaa_supernode_fanout",
                format!("must be 1..={MAX_PEERS} (linked supernodes a query is forwarded to)"),
            ));
        }
        for (field, links, hubs, what) in [
            (
                "gnutella_leaf_links",
                self.gnutella_leaf_links,
                self.gnutella_ultrapeer_count(),
                "ultrapeers",
            ),
            (
                "kazaa_links_per_node",
                self.kazaa_links_per_node,
                self.kazaa_supernode_count(),
                "supernodes",
            ),
        ] {
            if links == 0 || links > hubs {
                return Err(invalid(
                    field,
                    format!("must be 1..={hubs} (the {what} of this scenario)"),
                ));
            }
        }
        Ok(())
    }

    /// Gnutella ultrapeers of this run: `gnutella_ultrapeers`, or one per five peers (at least two) as in
    /// the tutorial's ultrapeer/leaf split.
    pub fn gnutella_ultrapeer_count(&self) -> usize {
        match self.gnutella_ultrapeers {
            0 => (self.peers / 5).max(2).min(self.peers - 1),
            n => n,
        }
    }

    /// KaZaA supernodes of this run: `kazaa_supernodes`, or one per five peers (at least two).
    pub fn kazaa_supernode_count(&self) -> usize {
        match self.kazaa_supernodes {
            0 => (self.peers / 5).max(2),
            n => n,
        }
    }

    /// The caps of the sharing peers.
    pub fn sharing_caps(&self) -> Caps {
        Caps {
            upload: rate(&self.upload_rate),
            download: rate(&self.download_rate),
        }
    }

    /// The caps of the downloaders.
    pub fn downloader_caps(&self) -> Caps {
        Caps {
            upload: rate(&self.downloader_upload_rate),
            download: rate(&self.downloader_download_rate),
        }
    }

    /// True when `system` runs the flash-crowd sweep.
    pub fn sweeps(&self, system: &str) -> bool {
        self.flash_sweep_systems.is_empty() || self.flash_sweep_systems.iter().any(|s| s == system)
    }
}

fn rate(r: &Option<RateSpec>) -> Option<u64> {
    r.as_ref().and_then(|r| r.bytes_per_sec().ok())
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) if r.start <= text.len() => {
            let line = text[..r.start].bytes().filter(|&b| b == b'\n').count() + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

/// The commented scenario printed by `swarm example-scenario` (the demo's values).
pub const EXAMPLE: &str = r#"# p2p-lab scenario: every knob of `swarm demo`. Every field is optional; missing ones take these defaults.
# Run it with: swarm run this-file.toml --out results/

# Seed of every random choice (corpus names, sizes, placement, search targets): same seed, same run.
seed = 2001
# Systems to run, among "napster", "gnutella", "kazaa", "bittorrent".
systems = ["napster", "gnutella", "kazaa", "bittorrent"]
# Sharing peers per system (Napster clients; BitTorrent uses one seeder plus the downloaders).
peers = 20
# Files in the corpus, shared across the peers with Zipf-like popularity.
files = 60
# Smallest and largest corpus file, KiB.
min_file_kib = 64
max_file_kib = 1024
# Zipf exponent of popularity: the file of rank r is held by about peers * top_fraction / r^s peers.
zipf_exponent = 1.0
# Fraction of the peers holding the most popular file (0 < f <= 1).
top_fraction = 0.5
# Fraction of Napster, Gnutella and KaZaA peers that are firewalled (uploads only by push).
firewalled_fraction = 0.1
# Searches for the rarest file and as many for the most popular one.
searches_per_target = 5
# Peers that download the same new file at once (the flash crowd); it starts on one peer only.
flash_crowd = 19
# Size of the flash-crowd file, KiB.
flash_file_kib = 512
# Extra flash crowds of these sizes, one after the other, for the "completion time against the number of
# downloaders" plot (the flash crowd above is its last point; empty: none), and the systems that run them
# (empty: every system).
flash_sweep = [2, 4, 8]
flash_sweep_systems = ["napster", "bittorrent"]
# Per-peer rate caps, bytes/s: a number or text with a k/M/G suffix (powers of 1024). Leave a line out for
# no cap. Passed as --upload-rate/--download-rate to every node binary that accepts them (the report says
# which did). Sharing peers (Napster clients, Gnutella nodes, KaZaA ordinary nodes, BitTorrent seeders):
upload_rate = "512k"
download_rate = "2M"
# Downloaders (flash crowd, sweep, churn, ring and pollution clients; BitTorrent leechers upload too):
downloader_upload_rate = "512k"
downloader_download_rate = "2M"
# Churn: downloads of a file held by `churn_sources` peers (the last ones), `churn_leaving` of which leave
# while the downloads run: source k leaves (k + 1) * churn_leave_after_ms milliseconds after the start.
# churn_graceful = true sends SIGTERM (a goodbye); false kills them (SIGKILL, after a SIGUSR1 so their
# stats so far are counted).
churn_downloads = 3
churn_file_kib = 1024
churn_leave_after_ms = 1000
churn_sources = 3
churn_leaving = 2
churn_graceful = false
# BitTorrent piece size, KiB (a power of two, at least 16).
bittorrent_piece_kib = 32
# Tracker re-announce interval handed to BitTorrent peers, seconds.
tracker_interval_secs = 5
# Seconds a BitTorrent leecher keeps seeding after it completes (0: it leaves at once); its completion
# time is still the moment it completed (the client's own figure).
bittorrent_seed_secs = 2
# Gnutella in classic 0.4 mode: every node floods, no ultrapeers, no QRP (the flood for contrast).
gnutella_classic = false
# With ultrapeers, also run the same searches (searches only) over a classic flood of the same peers,
# reported as "gnutella classic" beside "gnutella" (the flood for contrast).
gnutella_classic_contrast = true
# TTL of Gnutella queries (1..=7).
gnutella_ttl = 4
# Gnutella flood cost against TTL: for each TTL, searches_per_target searches nobody can answer, counting
# the query messages all nodes sent, plotted beside the tutorial's expected transmissions (empty: none).
gnutella_ttl_sweep = []
# Expanding ring during a flash crowd (Gnutella): this many one-after-the-other searches for the flash file
# with the fixed gnutella_ttl, then as many with an expanding ring (TTL 1, 2, ...); every searcher
# downloads the file and stays online sharing it (0: none).
ring_searches = 0
# Pollution: `decoys` peers share a decoy (same name and size, other bytes) of a popular new file that
# `pollution_genuine` peers share for real; pollution_downloads downloads per pick (by name, and by content
# hash where the system has one: Gnutella urn:sha1, KaZaA UUHash, BitTorrent info_hash). 0: no phase.
decoys = 0
pollution_genuine = 2
pollution_downloads = 0
# Most seconds any one search or download may take before it counts as failed.
op_timeout_secs = 40
# Roles per system. Gnutella: ultrapeers taken from the sharing peers (0: one per five peers, at least
# two; peer 0 stays a leaf) and the ultrapeers each leaf connects to. KaZaA: supernodes started beside the
# ordinary nodes, linked to each other (0: one per five peers, at least two), and the supernode addresses
# each ordinary node is given (it registers its shares with the best one only; the rest are spares).
# Links must not exceed the hubs there are. kazaa_supernode_fanout: the supernode fan-out, the linked
# supernodes each supernode forwards a query to (`kazaa-supernode --fanout`, 1..=200, its default 6).
gnutella_ultrapeers = 0
gnutella_leaf_links = 2
kazaa_supernodes = 0
kazaa_links_per_node = 2
kazaa_supernode_fanout = 6
# Sharing peers of one system only (0: `peers`); the corpus is placed on that many peers for it.
napster_peers = 0
gnutella_peers = 0
kazaa_peers = 0
bittorrent_peers = 0
# Initial seeders of each published BitTorrent file (0: one per holder; more than the holders: the extra
# seeders seed a copy).
bittorrent_seeders = 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The error message of a scenario text that must be refused.
    fn err(text: &str) -> String {
        Scenario::from_toml(text, "s.toml").unwrap_err().to_string()
    }

    #[test]
    fn per_system_peers_default_to_peers_and_are_validated_by_name() {
        let s = Scenario::from_toml("peers = 8\nnapster_peers = 30\n", "s").unwrap();
        assert_eq!(s.peers_of("napster"), 30);
        assert_eq!(s.peers_of("gnutella"), 8);
        assert_eq!(s.for_system("napster").peers, 30);
        assert_eq!(s.for_system("kazaa").peers, 8);
        let m = err("kazaa_peers = 1\n");
        assert!(m.contains("`kazaa_peers`") && m.contains("2..="), "{m}");
        // Churn sources and decoys must fit the smaller system, and its field is the one named.
        let m = err("decoys = 10\nbittorrent_peers = 5\n");
        assert!(
            m.contains("`bittorrent_peers`") && m.contains("decoys"),
            "{m}"
        );
        let m = err("bittorrent_seeders = 100000\n");
        assert!(m.contains("`bittorrent_seeders`"), "{m}");
    }

    #[test]
    fn example_is_the_default() {
        let s = Scenario::from_toml(EXAMPLE, "example").unwrap();
        assert_eq!(s, Scenario::default());
    }

    #[test]
    fn empty_file_is_the_default_and_small_is_valid() {
        assert_eq!(Scenario::from_toml("", "x").unwrap(), Scenario::default());
        Scenario::small().validate().unwrap();
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 4);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Scenario::from_toml("peers = 4\nflash_crowed = 3\n", "s.toml").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("flash_crowed"), "{m}");
        assert!(m.contains("s.toml"), "{m}");
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn wrong_type_is_named() {
        let m = err("peers = \"many\"\n");
        assert!(m.contains("field `peers`"), "{m}");
        assert!(m.contains("invalid type") && m.contains("line 1"), "{m}");
        let m = err("seed = 1\nsystems = \"napster\"\n");
        assert!(m.contains("field `systems`") && m.contains("line 2"), "{m}");
        let m = err("flash_sweep = [2, \"x\"]\n");
        assert!(m.contains("field `flash_sweep[1]`"), "{m}");
    }

    #[test]
    fn role_counts_resolve_and_links_are_checked() {
        let s =
            Scenario::from_toml("kazaa_supernodes = 3\nkazaa_links_per_node = 3\n", "s").unwrap();
        assert_eq!(
            (s.kazaa_supernode_count(), s.gnutella_ultrapeer_count()),
            (3, 4)
        );
        let m = err("kazaa_supernodes = 3\nkazaa_links_per_node = 4\n");
        assert!(
            m.contains("`kazaa_links_per_node`") && m.contains("1..=3"),
            "{m}"
        );
        let m = err("kazaa_supernode_fanout = 0\n");
        assert!(m.contains("`kazaa_supernode_fanout`"), "{m}");
        let m = err("kazaa_supernode_fanout = 201\n");
        assert!(m.contains("`kazaa_supernode_fanout`"), "{m}");
        let s = Scenario::from_toml("kazaa_supernode_fanout = 1\n", "s").unwrap();
        assert_eq!(s.kazaa_supernode_fanout, 1);
        let m = err("kazaa_links_per_node = 0\n");
        assert!(m.contains("`kazaa_links_per_node`"), "{m}");
        let m = err("peers = 6\ngnutella_ultrapeers = 6\n");
        assert!(m.contains("`gnutella_ultrapeers`"), "{m}");
        let m = err("gnutella_ultrapeers = 1\n");
        assert!(
            m.contains("`gnutella_leaf_links`") && m.contains("1..=1"),
            "{m}"
        );
        let s = Scenario::from_toml("gnutella_ultrapeers = 1\ngnutella_leaf_links = 1\n", "s");
        assert_eq!(s.unwrap().gnutella_ultrapeer_count(), 1);
        assert_eq!(Scenario::small().kazaa_supernode_count(), 2);
    }

    #[test]
    fn out_of_range_is_named() {
        let m = err("bittorrent_piece_kib = 20\n");
        assert!(m.contains("bittorrent_piece_kib"), "{m}");
        let m = err("systems = [\"edonkey\"]\n");
        assert!(m.contains("systems") && m.contains("edonkey"), "{m}");
        let m = err("peers = 100000\n");
        assert!(m.contains("`peers`"), "{m}");
    }
}
