//! One driver per system behind the [`Driver`] trait: start the infrastructure, start the peers, search,
//! download, leave, and collect every node's stats file. Drivers only build command lines for the real
//! binaries of the other crates and read what those binaries print and write; nothing is simulated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::stats::StatsSnapshot;

use crate::corpus::{Corpus, CorpusFile, Role};
use crate::results::Traffic;
use crate::scenario::{Caps, Scenario};
use crate::supervisor::{run_tool, Daemon, ToolRun};

/// How long a daemon gets to print its readiness line.
pub const READY: Duration = Duration::from_secs(30);

/// What every driver gets.
pub struct Ctx {
    /// The scenario.
    pub scn: Scenario,
    /// The corpus plan.
    pub corpus: Corpus,
    /// Where the peers' share folders were written.
    pub shares: PathBuf,
    /// This system's working folder (data dirs, stats files, logs, downloads).
    pub work: PathBuf,
    /// Folder holding the workspace binaries.
    pub bins: PathBuf,
    /// Start of the run, for timestamps.
    pub epoch: std::time::Instant,
}

impl Ctx {
    /// Full path of a binary.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// A fresh sub-folder of the work folder.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.work.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    }
}

/// A node's final stats, as the lab reads them.
pub struct Collected {
    /// The lab's name for it.
    pub name: String,
    /// Infrastructure (server, tracker) rather than a peer.
    pub infrastructure: bool,
    /// Its stats file.
    pub snapshot: StatsSnapshot,
}

/// What a search client's output says.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SearchOutcome {
    /// A result names the file.
    pub found: bool,
    /// Results returned.
    pub hits: usize,
    /// Seconds from the client's start until the line with the first result naming the file arrived.
    pub first_hit_s: Option<f64>,
    /// TTL of the ring that found it (Gnutella expanding ring).
    pub ttl: Option<u8>,
}

/// A search client's output line as JSON when it is a `{"event":"hit",...}` line.
fn hit_json(line: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["event"] == "hit").then_some(v)
}

/// A search's outcome from its hit lines: the results are the hit lines, the file is found when one
/// names it, and its time is when that line arrived (stamped by [`run_tool`]), so "time to first
/// result" means the same for every system.
pub fn parse_hit_lines(run: &ToolRun, file: &CorpusFile) -> SearchOutcome {
    let mut o = SearchOutcome::default();
    for (at, line) in &run.lines {
        let Some(v) = hit_json(line) else {
            continue;
        };
        o.hits += 1;
        if v["name"] == file.name.as_str() && !o.found {
            o.found = true;
            o.first_hit_s = Some(at.as_secs_f64());
            o.ttl = v["ttl"].as_u64().and_then(|t| u8::try_from(t).ok());
        }
    }
    o
}

/// How a pollution download picks what to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Search by name and take what the client picks: the user cannot tell a decoy from the real file.
    ByName,
    /// Fetch by a content hash from a trusted link (urn:sha1, sig2dat UUHash, info_hash).
    ByHash,
}

/// One system, driven through its real binaries.
pub trait Driver {
    /// `napster`, `gnutella`, `kazaa`, `bittorrent`.
    fn system(&self) -> &'static str;
    /// The binaries it needs next to `swarm`.
    fn binaries(&self) -> &'static [&'static str];
    /// Starts the servers/trackers/supernodes.
    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()>;
    /// Starts the sharing peers; returns how many.
    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize>;
    /// The driver's nodes and clients.
    fn fleet(&self) -> &Fleet;
    /// The same, to change.
    fn fleet_mut(&mut self) -> &mut Fleet;
    /// Every live node's stats now (fresh on SIGUSR1) and every finished client's stats file.
    fn snapshots(&mut self) -> Snapshots {
        self.fleet_mut().snapshots()
    }
    /// The command of search number `i` for `file`, or `None` when the system has no search.
    fn search_command(&mut self, ctx: &Ctx, file: &CorpusFile, i: usize)
        -> Result<Option<Command>>;
    /// Why the system has no search (shown instead of search figures).
    fn search_note(&self) -> Option<String> {
        None
    }
    /// From a search's output: did it find `file`, how many results, when the first one came. Every
    /// search client (`napster-client search`, `gnutella-node search`, `kazaa-supernode search`) prints
    /// one `{"event":"hit","name":...}` line per result as it arrives, so one parser serves all.
    fn parse_search(&self, run: &ToolRun, file: &CorpusFile) -> SearchOutcome {
        parse_hit_lines(run, file)
    }
    /// The command that downloads `file` into `out` as node `who`.
    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command>;
    /// The source a download reports, from its stdout.
    fn parse_source(&self, stdout: &str) -> Option<String>;
    /// Peer `peer` leaves: gracefully (SIGTERM) or abruptly (SIGUSR1 for its stats, then SIGKILL).
    fn leave(&mut self, peer: usize, graceful: bool) {
        self.fleet_mut().leave(peer, graceful);
    }
    /// Stops everything and reads every node's stats file.
    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        self.fleet_mut().finish()
    }
    /// Overlay edges known to the driver (logins, downloads), besides those in the stats files.
    fn edges(&self) -> Vec<(String, String, String)>;
    /// Seconds from the client's start until its download completed, when the client says so and it
    /// ran on after completing (a BitTorrent leecher seeding); `None`: its exit is its completion.
    fn completed_after(&self, _run: &ToolRun) -> Option<f64> {
        None
    }
    /// True when a download's bytes on disk (allocated blocks) show how far it got; false for clients
    /// that reserve the whole file up front (`fallocate`).
    fn disk_shows_progress(&self) -> bool {
        true
    }
    /// Which rate caps were passed to which binary, and which binary had no option for one.
    fn rate_caps(&self) -> Vec<String> {
        self.fleet().opts.list()
    }
    /// A search with this TTL for `query` that nobody answers (Gnutella flood cost); `None` elsewhere.
    fn flood_command(
        &mut self,
        _ctx: &Ctx,
        _query: &str,
        _i: usize,
        _ttl: u8,
    ) -> Result<Option<Command>> {
        Ok(None)
    }
    /// A search for `file` with a fixed TTL or an expanding ring (Gnutella); `None` elsewhere.
    fn ring_command(
        &mut self,
        _ctx: &Ctx,
        _file: &CorpusFile,
        _who: &str,
        _expanding: bool,
    ) -> Result<Option<Command>> {
        Ok(None)
    }
    /// The download into `out` of the hit of a ring search (`run`) that named `file`, straight from
    /// the host that answered (no overlay traffic), or `None` when no hit named it.
    fn ring_fetch(
        &mut self,
        _ctx: &Ctx,
        _file: &CorpusFile,
        _who: &str,
        _out: &Path,
        _run: &ToolRun,
    ) -> Result<Option<Command>> {
        Ok(None)
    }
    /// A downloader stays online sharing `dir` (the ring phase); returns the new node's name.
    fn share_folder(&mut self, _ctx: &Ctx, _who: &str, _dir: &Path) -> Result<String> {
        bail!(
            "{} does not start sharers for the ring phase",
            self.system()
        )
    }
    /// Stops the nodes `share_folder` started (SIGTERM: their stats are kept).
    fn stop_sharers(&mut self) {}
    /// A download of the polluted `file` with this pick, or `None` with why the system cannot pick so.
    fn pollution_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        pick: Pick,
    ) -> Result<std::result::Result<Command, String>>;
}

/// The sentence of a `--help` text that says what is not implemented yet, if any.
fn not_implemented_line(help: &str) -> Option<String> {
    let at = help.find("NOT IMPLEMENTED YET")?;
    let rest = &help[at..];
    let end = rest.find("\n\n").unwrap_or(rest.len()).min(400);
    Some(rest[..end].split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The binaries a system needs that are missing or are placeholders; `Err(reason)` when not usable.
pub fn check_binaries(bins: &Path, names: &[&str]) -> std::result::Result<(), String> {
    for n in names {
        let p = bins.join(n);
        if !p.exists() {
            return Err(format!("binary {n} not found in {}", bins.display()));
        }
        let help = Command::new(&p)
            .arg("--help")
            .output()
            .map_err(|e| format!("{n} --help cannot run: {e}"))?;
        let text = String::from_utf8_lossy(&help.stdout);
        // Placeholders say so in their --help; a binary that lists a few missing features still runs.
        match not_implemented_line(&text) {
            Some(line) if text.contains("only documents what it will be") => {
                return Err(format!("{n} is a placeholder, its --help says: {line}"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `--help` texts, read once per binary and subcommand.
static HELP: std::sync::Mutex<BTreeMap<(PathBuf, String), String>> =
    std::sync::Mutex::new(BTreeMap::new());

fn help_text(bin: &Path, sub: Option<&str>) -> String {
    let key = (bin.to_path_buf(), sub.unwrap_or("").to_owned());
    let mut cache = HELP.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key)
        .or_insert_with(|| {
            let mut c = Command::new(bin);
            if let Some(s) = sub {
                c.arg(s);
            }
            c.arg("--help")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        })
        .clone()
}

/// True if the help text lists `flag` as an option (not merely a longer flag starting with it).
fn lists_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_alphanumeric() || c == '-' || c == '_')
    })
}

/// Where a binary takes an option: before its subcommand, after it, or nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Top,
    Sub,
    Absent,
}

fn place_of(bin: &Path, sub: Option<&str>, flag: &str) -> Place {
    if lists_flag(&help_text(bin, None), flag) {
        Place::Top
    } else if sub.is_some() && lists_flag(&help_text(bin, sub), flag) {
        Place::Sub
    } else {
        Place::Absent
    }
}

/// Options a binary may or may not have yet, added where its `--help` lists them, and a record of
/// which were passed and which were missing (the report shows it: no figure pretends a cap it lacked).
#[derive(Default)]
struct Options {
    notes: std::collections::BTreeSet<String>,
}

impl Options {
    /// Pushes the top-level options, `sub` (when given), then the subcommand's own options.
    fn push(
        &mut self,
        c: &mut Command,
        bin: &Path,
        sub: Option<&str>,
        wanted: &[(&str, Option<String>)],
    ) {
        let name = bin
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let what = match sub {
            Some(s) => format!("{name} {s}"),
            None => name,
        };
        let mut after = Vec::new();
        for (flag, value) in wanted {
            let Some(v) = value else { continue };
            match place_of(bin, sub, flag) {
                Place::Top => {
                    c.arg(flag).arg(v);
                    self.notes.insert(format!("{what}: {flag} {v}"));
                }
                Place::Sub => after.push((flag, v)),
                Place::Absent => {
                    self.notes
                        .insert(format!("{what}: has no {flag} option yet (ran without it)"));
                }
            }
        }
        if let Some(s) = sub {
            c.arg(s);
        }
        for (flag, v) in after {
            c.arg(flag).arg(v);
            self.notes.insert(format!("{what}: {flag} {v}"));
        }
    }

    /// [`Options::push`] of the rate caps.
    fn caps(&mut self, c: &mut Command, bin: &Path, sub: Option<&str>, caps: Caps) {
        self.push(
            c,
            bin,
            sub,
            &[
                ("--upload-rate", caps.upload.map(|v| v.to_string())),
                ("--download-rate", caps.download.map(|v| v.to_string())),
            ],
        );
    }

    fn list(&self) -> Vec<String> {
        self.notes.iter().cloned().collect()
    }
}

/// Stats of every live node (fresh, on SIGUSR1) and of every client that finished.
#[derive(Clone, Debug, Default)]
pub struct Snapshots {
    /// The nodes still running.
    pub daemons: Vec<StatsSnapshot>,
    /// The one-shot clients' stats files.
    pub tools: Vec<StatsSnapshot>,
}

impl Snapshots {
    fn all(&self) -> impl Iterator<Item = &StatsSnapshot> {
        self.daemons.iter().chain(&self.tools)
    }

    /// Control messages and bytes sent (each message counted once, by its sender).
    pub fn control_sent(&self) -> Traffic {
        self.all().fold(Traffic::default(), |t, s| Traffic {
            messages: t.messages + s.control.out_count,
            bytes: t.bytes + s.control.out_bytes,
        })
    }

    /// Messages of one type sent by every node and client.
    pub fn sent(&self, kind: &str) -> u64 {
        self.all()
            .filter_map(|s| s.messages.get(kind))
            .map(|m| m.out_count)
            .sum()
    }

    /// The overlay of the running nodes, from their `connections` gauges.
    pub fn overlay(&self) -> crate::results::Overlay {
        let degrees: Vec<i64> = self
            .daemons
            .iter()
            .filter_map(|s| s.gauges.get("connections").copied())
            .collect();
        crate::results::Overlay {
            nodes: degrees.len(),
            edges: degrees.iter().sum::<i64>().max(0) as f64 / 2.0,
        }
    }
}

/// Daemons plus the stats files of one-shot clients: what every driver keeps.
#[derive(Default)]
pub struct Fleet {
    /// Every node started, and whether it is infrastructure.
    daemons: Vec<(Daemon, bool)>,
    /// Stats files of the one-shot clients, by client name.
    tool_stats: Vec<(String, PathBuf)>,
    /// Options passed and missing.
    opts: Options,
    /// The nodes each corpus peer runs (index in `daemons`), for churn.
    by_peer: BTreeMap<usize, Vec<usize>>,
}

impl Fleet {
    /// Starts node `name` (log `name.log`, waits for its readiness line), records it as infrastructure
    /// or as the node of corpus peer `peer`; returns its address.
    fn spawn(
        &mut self,
        ctx: &Ctx,
        name: &str,
        cmd: Command,
        stats: PathBuf,
        infra: bool,
        peer: Option<usize>,
    ) -> Result<std::net::SocketAddr> {
        let log = ctx.work.join(format!("{name}.log"));
        let d = Daemon::spawn(name, cmd, &log, stats, 1, READY)?;
        let addr = d.addr();
        if let Some(p) = peer {
            self.mark_peer(p, self.daemons.len());
        }
        self.daemons.push((d, infra));
        Ok(addr)
    }

    /// Records that node `i` runs for corpus peer `peer`.
    fn mark_peer(&mut self, peer: usize, i: usize) {
        self.by_peer.entry(peer).or_default().push(i);
    }

    fn leave(&mut self, peer: usize, graceful: bool) {
        for &i in self.by_peer.get(&peer).into_iter().flatten() {
            self.daemons[i].0.leave(graceful);
        }
    }

    fn snapshots(&mut self) -> Snapshots {
        let mut asked = Vec::new();
        for (i, (d, _)) in self.daemons.iter_mut().enumerate() {
            if d.running() {
                asked.push((i, d.ask_stats()));
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let daemons = asked
            .into_iter()
            .filter_map(|(i, before)| self.daemons[i].0.await_stats(before, deadline))
            .collect();
        let tools = self
            .tool_stats
            .iter()
            .filter_map(|(_, p)| StatsSnapshot::read_json(p).ok())
            .collect();
        Snapshots { daemons, tools }
    }

    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for (d, _) in &mut self.daemons {
            d.stop();
        }
        for (d, infra) in &self.daemons {
            match StatsSnapshot::read_json(&d.stats_file) {
                Ok(snapshot) => out.push(Collected {
                    name: d.name.clone(),
                    infrastructure: *infra,
                    snapshot,
                }),
                Err(e) => problems.push(format!("{}: no stats file ({e})", d.name)),
            }
        }
        for (name, p) in &self.tool_stats {
            match StatsSnapshot::read_json(p) {
                Ok(snapshot) => out.push(Collected {
                    name: name.clone(),
                    infrastructure: false,
                    snapshot,
                }),
                Err(e) => problems.push(format!("{name}: no stats file ({e})")),
            }
        }
        (out, problems)
    }
}

/// Napster: one `napster-server`, `napster-client serve` peers, one-shot `search`/`get` clients.
#[derive(Default)]
pub struct Napster {
    fleet: Fleet,
    server: Option<std::net::SocketAddr>,
    nicks: Vec<String>,
}

impl Napster {
    fn client(&self, ctx: &Ctx, nick: &str) -> Result<(Command, PathBuf)> {
        let server = self.server.context("napster server not started")?;
        let stats = ctx.work.join(format!("stats-{nick}.json"));
        let mut c = Command::new(ctx.bin("napster-client"));
        c.arg("--server")
            .arg(server.to_string())
            .args(["--nick", nick])
            .arg("--data-dir")
            .arg(ctx.dir(&format!("data-{nick}"))?)
            .arg("--stats-file")
            .arg(&stats)
            .arg("--json");
        Ok((c, stats))
    }
}

impl Driver for Napster {
    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    fn system(&self) -> &'static str {
        "napster"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["napster-server", "napster-client"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        let stats = ctx.work.join("stats-server.json");
        let mut c = Command::new(ctx.bin("napster-server"));
        c.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(ctx.dir("data-server")?)
            .arg("--stats-file")
            .arg(&stats);
        self.server = Some(self.fleet.spawn(ctx, "server", c, stats, true, None)?);
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        let n = ctx.scn.peers;
        let firewalled = (n as f64 * ctx.scn.firewalled_fraction).round() as usize;
        let bin = ctx.bin("napster-client");
        for p in 0..n {
            let nick = format!("peer{p:03}");
            let (mut c, stats) = self.client(ctx, &nick)?;
            c.arg("--share").arg(Corpus::peer_dir(&ctx.shares, p));
            // Peers 1..=k are firewalled; the flash, churn and pollution sources stay reachable.
            if p >= 1 && p <= firewalled && !ctx.corpus.is_special_source(p) {
                c.arg("--firewalled");
            }
            self.fleet
                .opts
                .caps(&mut c, &bin, Some("serve"), ctx.scn.sharing_caps());
            self.fleet.spawn(ctx, &nick, c, stats, false, Some(p))?;
            self.nicks.push(nick);
        }
        Ok(n)
    }

    fn search_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        i: usize,
    ) -> Result<Option<Command>> {
        let nick = format!("search{i:03}");
        let (mut c, stats) = self.client(ctx, &nick)?;
        c.arg("search").arg(&file.query);
        self.nicks.push(nick.clone());
        self.fleet.tool_stats.push((nick, stats));
        Ok(Some(c))
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let (mut c, stats) = self.client(ctx, who)?;
        let bin = ctx.bin("napster-client");
        self.fleet
            .opts
            .caps(&mut c, &bin, Some("get"), ctx.scn.downloader_caps());
        c.arg(&file.query).arg("--out").arg(out);
        self.nicks.push(who.to_owned());
        self.fleet.tool_stats.push((who.to_owned(), stats));
        Ok(c)
    }

    fn parse_source(&self, stdout: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
        v["from"].as_str().map(str::to_owned)
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.nicks
            .iter()
            .map(|n| ("server".to_owned(), n.clone(), "login".to_owned()))
            .collect()
    }

    fn pollution_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        pick: Pick,
    ) -> Result<std::result::Result<Command, String>> {
        Ok(match pick {
            Pick::ByName => Ok(self.download_command(ctx, file, who, out)?),
            Pick::ByHash => Err(
                "Napster's index knows names (and an MD5 of the first 300 KB), no content hash to ask for"
                    .into(),
            ),
        })
    }
}

/// A distinct, reproducible RNG seed per BitTorrent node: the peer id derives from it, and two nodes with
/// one peer id take each other for a connection to themselves.
fn node_seed(run_seed: u64, node: usize) -> u64 {
    run_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (node as u64 + 1)
}

/// BitTorrent: one `tracker`, a `bittorrent-peer seed` per holder of a published file, `download` leechers.
#[derive(Default)]
pub struct BitTorrent {
    fleet: Fleet,
    tracker: Option<std::net::SocketAddr>,
    torrents: BTreeMap<String, PathBuf>,
    peers: usize,
}

impl BitTorrent {
    /// Creates the .torrent of `file` and starts a seeder on each of its holders (once per file).
    fn publish(&mut self, ctx: &Ctx, file: &CorpusFile) -> Result<PathBuf> {
        if let Some(t) = self.torrents.get(&file.name) {
            return Ok(t.clone());
        }
        let tracker = self.tracker.context("tracker not started")?;
        let src = Corpus::peer_dir(&ctx.shares, file.holders[0]);
        let torrent = ctx.work.join(format!("{}.torrent", self.torrents.len()));
        let mut c = Command::new(ctx.bin("bittorrent-peer"));
        c.arg("create")
            .arg(src.join(&file.name))
            .arg("--tracker")
            .arg(format!("http://{tracker}/announce"))
            .arg("--piece-size")
            .arg((ctx.scn.bittorrent_piece_kib * 1024).to_string())
            .arg("-o")
            .arg(&torrent);
        let log = ctx.work.join(format!("create-{}.log", self.torrents.len()));
        let r = run_tool(
            c,
            &log,
            Duration::from_secs(ctx.scn.op_timeout_secs),
            ctx.epoch,
        )?;
        if !r.ok() {
            bail!("bittorrent-peer create failed: {}", r.reason);
        }
        let bin = ctx.bin("bittorrent-peer");
        let seeders = match ctx.scn.bittorrent_seeders {
            0 => file.holders.len(),
            n => n,
        };
        for k in 0..seeders {
            let holder = file.holders[k % file.holders.len()];
            let dir = if k < file.holders.len() {
                Corpus::peer_dir(&ctx.shares, holder)
            } else {
                // An extra seeder seeds its own copy, so no two processes share a folder.
                let dir = ctx.dir(&format!("seedcopy{k:03}-{}", self.torrents.len()))?;
                std::fs::copy(src.join(&file.name), dir.join(&file.name))
                    .context("copying the file for an extra seeder")?;
                dir
            };
            let name = if k < file.holders.len() {
                format!("seed{holder:03}-{}", self.torrents.len())
            } else {
                format!("seed{holder:03}x{k}-{}", self.torrents.len())
            };
            let stats = ctx.work.join(format!("stats-{name}.json"));
            let mut c = Command::new(&bin);
            self.fleet
                .opts
                .caps(&mut c, &bin, Some("seed"), ctx.scn.sharing_caps());
            c.arg(&torrent)
                .arg("--dir")
                .arg(&dir)
                .args(["--listen", "127.0.0.1:0", "--quiet", "--rng-seed"])
                .arg(node_seed(ctx.scn.seed, self.peers).to_string())
                .arg("--data-dir")
                .arg(ctx.dir(&format!("data-{name}"))?)
                .arg("--stats-file")
                .arg(&stats);
            self.fleet
                .spawn(ctx, &name, c, stats, false, Some(holder))?;
            self.peers += 1;
        }
        self.torrents.insert(file.name.clone(), torrent.clone());
        Ok(torrent)
    }
}

impl Driver for BitTorrent {
    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    fn system(&self) -> &'static str {
        "bittorrent"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["tracker", "bittorrent-peer"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        let stats = ctx.work.join("stats-tracker.json");
        let mut c = Command::new(ctx.bin("tracker"));
        c.args(["--listen", "127.0.0.1:0", "--interval"])
            .arg(ctx.scn.tracker_interval_secs.to_string())
            .arg("--seed")
            .arg(ctx.scn.seed.to_string())
            .arg("--data-dir")
            .arg(ctx.dir("data-tracker")?)
            .arg("--stats-file")
            .arg(&stats);
        self.tracker = Some(self.fleet.spawn(ctx, "tracker", c, stats, true, None)?);
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        // A BitTorrent swarm exists per file: the seeders of the published files are its standing peers.
        self.publish(ctx, ctx.corpus.by_role(Role::Flash))?;
        if ctx.scn.churn_downloads > 0 {
            self.publish(ctx, ctx.corpus.by_role(Role::Churn))?;
        }
        if ctx.scn.pollution_downloads > 0 {
            if let Some(f) = ctx.corpus.polluted() {
                self.publish(ctx, f)?;
            }
        }
        Ok(self.peers)
    }

    fn search_command(&mut self, _: &Ctx, _: &CorpusFile, _: usize) -> Result<Option<Command>> {
        Ok(None)
    }

    fn search_note(&self) -> Option<String> {
        Some("BitTorrent has no search: users find a .torrent on the web (BEP 3)".into())
    }

    fn disk_shows_progress(&self) -> bool {
        // bittorrent-peer fallocates the whole file when the download starts.
        false
    }

    fn completed_after(&self, run: &ToolRun) -> Option<f64> {
        // The summary's `seconds` run from the node's start (its readiness line) to completion.
        let listening = run
            .lines
            .iter()
            .find(|(_, l)| l.contains("\"listening\""))?;
        let summary = run
            .lines
            .iter()
            .rev()
            .find_map(|(_, l)| serde_json::from_str::<serde_json::Value>(l).ok())?;
        (summary["complete"] == true)
            .then(|| summary["seconds"].as_f64())
            .flatten()
            .map(|s| listening.0.as_secs_f64() + s)
    }

    fn parse_search(&self, _: &ToolRun, _: &CorpusFile) -> SearchOutcome {
        SearchOutcome::default()
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let torrent = self.publish(ctx, file)?;
        let stats = ctx.work.join(format!("stats-{who}.json"));
        let bin = ctx.bin("bittorrent-peer");
        let mut c = Command::new(&bin);
        let seed =
            (ctx.scn.bittorrent_seed_secs > 0).then(|| ctx.scn.bittorrent_seed_secs.to_string());
        let caps = ctx.scn.downloader_caps();
        self.fleet.opts.push(
            &mut c,
            &bin,
            Some("download"),
            &[
                ("--upload-rate", caps.upload.map(|v| v.to_string())),
                ("--download-rate", caps.download.map(|v| v.to_string())),
                ("--seed-time", seed),
            ],
        );
        c.arg(&torrent)
            .arg("--out")
            .arg(out)
            .args(["--listen", "127.0.0.1:0", "--quiet", "--json", "--rng-seed"])
            .arg(node_seed(ctx.scn.seed, self.peers).to_string())
            .arg("--data-dir")
            .arg(ctx.dir(&format!("data-{who}"))?)
            .arg("--stats-file")
            .arg(&stats);
        self.fleet.tool_stats.push((who.to_owned(), stats));
        self.peers += 1;
        Ok(c)
    }

    fn parse_source(&self, _: &str) -> Option<String> {
        None
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        Vec::new()
    }

    fn pollution_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        pick: Pick,
    ) -> Result<std::result::Result<Command, String>> {
        Ok(match pick {
            Pick::ByName => Err(
                "no search to pick by name from: the .torrent names its content by info_hash"
                    .into(),
            ),
            Pick::ByHash => Ok(self.download_command(ctx, file, who, out)?),
        })
    }
}

/// Gnutella 0.6: ultrapeers (peers 1..=U, sharing too) and leaves (every other peer), one-shot
/// `gnutella-node search` clients that join as leaves; downloads are `search --download`.
#[derive(Default)]
pub struct Gnutella {
    fleet: Fleet,
    ultrapeers: Vec<std::net::SocketAddr>,
    peers: BTreeMap<usize, usize>,
    links: Vec<(String, String, String)>,
    clients: usize,
    /// Daemons started by [`Driver::share_folder`] (index in the fleet).
    sharers: Vec<usize>,
    /// Every overlay node's name and address, in start order.
    nodes: Vec<(String, std::net::SocketAddr)>,
    /// Processes started so far, the index of each one's seed.
    started: std::cell::Cell<usize>,
}

/// How long the overlay gets to settle (links, QRP tables sent up and merged) before the first search.
pub const GNUTELLA_SETTLE: Duration = Duration::from_millis(1500);

/// Seconds a Gnutella search client waits for hits: on loopback every hit of a 20-node overlay is back
/// within milliseconds.
const GNUTELLA_HIT_WAIT: &str = "2";
/// The same per ring of an expanding ring, and for floods nobody answers: every round costs this long.
const GNUTELLA_RING_WAIT: &str = "1.5";

impl Gnutella {
    fn base(&self, ctx: &Ctx, name: &str) -> Result<(Command, PathBuf)> {
        let stats = ctx.work.join(format!("stats-{name}.json"));
        let mut c = Command::new(ctx.bin("gnutella-node"));
        c.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(ctx.dir(&format!("data-{name}"))?)
            .arg("--stats-file")
            .arg(&stats)
            .arg("--seed")
            .arg(node_seed(ctx.scn.seed, self.started.get() + 1000).to_string());
        // A seed per process, never reused: the GUIDs of a node's queries come from its seed, and a
        // searcher repeating an earlier one's GUIDs has its queries dropped as duplicates. (Counting
        // the live nodes reused seeds once the ring's sharers had stopped.)
        self.started.set(self.started.get() + 1);
        Ok((c, stats))
    }

    /// A one-shot `search` client: words (may be empty), then the options after the subcommand.
    fn client(
        &mut self,
        ctx: &Ctx,
        name: &str,
        words: &str,
        caps: Option<Caps>,
    ) -> Result<Command> {
        self.client_waiting(ctx, name, words, caps, GNUTELLA_HIT_WAIT)
    }

    fn client_waiting(
        &mut self,
        ctx: &Ctx,
        name: &str,
        words: &str,
        caps: Option<Caps>,
        wait: &str,
    ) -> Result<Command> {
        if self.ultrapeers.is_empty() {
            bail!("no ultrapeer started");
        }
        let up = self.entry(ctx, self.clients);
        let (mut c, stats) = self.base(ctx, name)?;
        self.clients += 1;
        c.arg("--peer").arg(up.to_string());
        // One link, as the per-search counts and the flood formula assume: a client that picked up a
        // second ultrapeer (X-Try-Ultrapeers) or classic neighbour (pongs) while it waits to search would
        // send its query twice, and how often that happens depends on timing.
        c.args([
            "--leaf-links",
            "1",
            "--up-links",
            "1",
            "--max-ultrapeers",
            "1",
        ]);
        if ctx.scn.gnutella_classic {
            c.arg("--classic");
        }
        let bin = ctx.bin("gnutella-node");
        self.fleet
            .opts
            .caps(&mut c, &bin, Some("search"), caps.unwrap_or_default());
        c.arg(words)
            .args(["--json", "--min-hits", "1", "--timeout", wait]);
        self.fleet.tool_stats.push((name.to_owned(), stats));
        Ok(c)
    }

    /// Where client or sharer `k` joins: an ultrapeer, or in the classic flood any node, spread by a
    /// seeded hash so the entry points do not all sit on the first nodes.
    fn entry(&self, ctx: &Ctx, k: usize) -> std::net::SocketAddr {
        if ctx.scn.gnutella_classic && !self.nodes.is_empty() {
            let h = node_seed(ctx.scn.seed, k) as usize;
            self.nodes[h % self.nodes.len()].1
        } else {
            self.ultrapeers[k % self.ultrapeers.len()]
        }
    }

    fn spawn_node(
        &mut self,
        ctx: &Ctx,
        name: &str,
        mut c: Command,
        stats: PathBuf,
    ) -> Result<usize> {
        let bin = ctx.bin("gnutella-node");
        self.fleet
            .opts
            .caps(&mut c, &bin, None, ctx.scn.sharing_caps());
        let addr = self.fleet.spawn(ctx, name, c, stats, false, None)?;
        self.nodes.push((name.to_owned(), addr));
        Ok(self.fleet.daemons.len() - 1)
    }
}

impl Driver for Gnutella {
    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    fn system(&self) -> &'static str {
        "gnutella"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["gnutella-node"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        for p in 1..=ctx.scn.gnutella_ultrapeer_count() {
            let name = format!("up{p:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.arg(if ctx.scn.gnutella_classic {
                "--classic"
            } else {
                "--ultrapeer"
            })
            .arg("--share")
            .arg(Corpus::peer_dir(&ctx.shares, p));
            for (i, a) in self.ultrapeers.iter().enumerate() {
                c.arg("--peer").arg(a.to_string());
                self.links
                    .push((name.clone(), format!("up{:03}", i + 1), "bootstrap".into()));
            }
            let i = self.spawn_node(ctx, &name, c, stats)?;
            self.ultrapeers.push(self.fleet.daemons[i].0.addr());
            self.peers.insert(p, i);
            self.fleet.mark_peer(p, i);
            // In the classic flood every node is equal: no infrastructure.
            self.fleet.daemons[i].1 = !ctx.scn.gnutella_classic;
        }
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        let n = ctx.scn.peers;
        let u = self.ultrapeers.len();
        let firewalled = (n as f64 * ctx.scn.firewalled_fraction).round() as usize;
        let leaves: Vec<usize> = (0..n).filter(|p| !self.peers.contains_key(p)).collect();
        for p in leaves {
            let name = format!("leaf{p:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.arg(if ctx.scn.gnutella_classic {
                "--classic"
            } else {
                "--leaf"
            })
            .arg("--share")
            .arg(Corpus::peer_dir(&ctx.shares, p));
            if ctx.scn.gnutella_classic {
                // Gnutella 0.4 had no hubs: a new servent met two random servents already online (more
                // come from pongs), which keeps the degrees even, as the flood formula assumes.
                let known = self.nodes.len();
                let a = node_seed(ctx.scn.seed, p) as usize % known;
                let b = (a
                    + 1
                    + node_seed(ctx.scn.seed, p + 7919) as usize % known.max(2).saturating_sub(1))
                    % known;
                for i in if a == b { vec![a] } else { vec![a, b] } {
                    let (other, addr) = self.nodes[i].clone();
                    c.arg("--peer").arg(addr.to_string());
                    self.links.push((name.clone(), other, "bootstrap".into()));
                }
            } else {
                // Leaves of the era kept a few ultrapeers (2 by default), spread evenly.
                for k in 0..ctx.scn.gnutella_leaf_links.min(u) {
                    let i = (p + k) % u;
                    c.arg("--peer").arg(self.ultrapeers[i].to_string());
                    self.links
                        .push((name.clone(), format!("up{:03}", i + 1), "bootstrap".into()));
                }
            }
            if p > u && p <= u + firewalled && !ctx.corpus.is_special_source(p) {
                c.arg("--firewalled");
            }
            let i = self.spawn_node(ctx, &name, c, stats)?;
            self.peers.insert(p, i);
            self.fleet.mark_peer(p, i);
        }
        std::thread::sleep(GNUTELLA_SETTLE);
        Ok(n)
    }

    fn search_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        i: usize,
    ) -> Result<Option<Command>> {
        let mut c = self.client(ctx, &format!("search{i:03}"), &file.query, None)?;
        c.arg("--ttl").arg(ctx.scn.gnutella_ttl.to_string());
        Ok(Some(c))
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let mut c = self.client(ctx, who, &file.query, Some(ctx.scn.downloader_caps()))?;
        c.arg("--ttl")
            .arg(ctx.scn.gnutella_ttl.to_string())
            .arg("--download")
            .arg(out);
        Ok(c)
    }

    fn parse_source(&self, stdout: &str) -> Option<String> {
        // The hit that named the file says which servent answered; the download may use several.
        stdout
            .lines()
            .find_map(hit_json)
            .and_then(|v| Some(format!("{}:{}", v["ip"].as_str()?, v["port"].as_u64()?)))
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.links.clone()
    }

    fn flood_command(
        &mut self,
        ctx: &Ctx,
        query: &str,
        i: usize,
        ttl: u8,
    ) -> Result<Option<Command>> {
        let mut c = self.client_waiting(
            ctx,
            &format!("flood{i:03}"),
            query,
            None,
            GNUTELLA_RING_WAIT,
        )?;
        c.arg("--ttl").arg(ttl.to_string());
        Ok(Some(c))
    }

    fn ring_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        expanding: bool,
    ) -> Result<Option<Command>> {
        // The search alone: a `--download` here would add its re-queries for more sources (sent or
        // not depending on how fast the single source answers) to the search's query messages.
        let mut c = self.client_waiting(ctx, who, &file.query, None, GNUTELLA_RING_WAIT)?;
        c.arg("--ttl").arg(ctx.scn.gnutella_ttl.to_string());
        if expanding {
            c.arg("--expanding");
        }
        Ok(Some(c))
    }

    fn ring_fetch(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        run: &ToolRun,
    ) -> Result<Option<Command>> {
        let hit = run.stdout.lines().filter_map(hit_json).find(|v| {
            v["name"] == file.name.as_str() && v["sha1"].is_string() && v["size"].is_u64()
        });
        let Some(hit) = hit else {
            return Ok(None);
        };
        let name = format!("{who}-get");
        let (mut c, stats) = self.base(ctx, &name)?;
        let bin = ctx.bin("gnutella-node");
        self.fleet
            .opts
            .caps(&mut c, &bin, Some("get"), ctx.scn.downloader_caps());
        c.args(["--json", "--urn", hit["sha1"].as_str().unwrap_or_default()])
            .arg("--size")
            .arg(hit["size"].to_string())
            .arg("--source")
            .arg(format!(
                "{}:{}",
                hit["ip"].as_str().unwrap_or_default(),
                hit["port"]
            ))
            .arg("--name")
            .arg(&file.name)
            .arg("--out")
            .arg(out);
        self.fleet.tool_stats.push((name, stats));
        Ok(Some(c))
    }

    fn share_folder(&mut self, ctx: &Ctx, who: &str, dir: &Path) -> Result<String> {
        if self.ultrapeers.is_empty() {
            bail!("no ultrapeer started");
        }
        let name = format!("sharer-{who}");
        let (mut c, stats) = self.base(ctx, &name)?;
        c.arg(if ctx.scn.gnutella_classic {
            "--classic"
        } else {
            "--leaf"
        })
        .arg("--share")
        .arg(dir);
        // Spread over the overlay, as the searchers were.
        let up = self.entry(ctx, self.sharers.len() + 5000);
        c.arg("--peer").arg(up.to_string());
        let i = self.spawn_node(ctx, &name, c, stats)?;
        self.sharers.push(i);
        Ok(name)
    }

    fn stop_sharers(&mut self) {
        for i in self.sharers.drain(..) {
            self.fleet.daemons[i].0.stop();
        }
        // Gone nodes are no entry point for later clients.
        self.nodes.retain(|(n, _)| !n.starts_with("sharer-"));
    }

    fn pollution_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        pick: Pick,
    ) -> Result<std::result::Result<Command, String>> {
        Ok(Ok(match pick {
            Pick::ByName => self.download_command(ctx, file, who, out)?,
            Pick::ByHash => {
                // A URN-only query: no keywords, so only files with this SHA-1 answer (and QRP routes it).
                let urn = common::hash::sha1(&ctx.corpus.content(file)).to_urn();
                let mut c = self.client(ctx, who, "", Some(ctx.scn.downloader_caps()))?;
                c.args(["--urn", &urn, "--ttl"])
                    .arg(ctx.scn.gnutella_ttl.to_string())
                    .arg("--download")
                    .arg(out);
                c
            }
        }))
    }
}

/// KaZaA (FastTrack): supernodes (`kazaa_supernodes`, by default one per five peers, at least two, linked
/// to each other, each forwarding a query to `kazaa_supernode_fanout` of its links) and ordinary nodes
/// given `kazaa_links_per_node` supernode addresses (registering with the best one); `search` and `get`
/// (by ContentHash) clients.
#[derive(Default)]
pub struct Kazaa {
    fleet: Fleet,
    supernodes: Vec<std::net::SocketAddr>,
    links: Vec<(String, String, String)>,
    clients: usize,
}

impl Kazaa {
    fn base(&self, ctx: &Ctx, name: &str) -> Result<(Command, PathBuf)> {
        let stats = ctx.work.join(format!("stats-{name}.json"));
        let mut c = Command::new(ctx.bin("kazaa-supernode"));
        c.args(["--listen", "127.0.0.1:0", "--user", name, "--data-dir"])
            .arg(ctx.dir(&format!("data-{name}"))?)
            .arg("--stats-file")
            .arg(&stats);
        Ok((c, stats))
    }

    fn next_sn(&mut self) -> Result<std::net::SocketAddr> {
        if self.supernodes.is_empty() {
            bail!("no supernode started");
        }
        self.clients += 1;
        Ok(self.supernodes[self.clients % self.supernodes.len()])
    }

    fn search(&mut self, ctx: &Ctx, name: &str, query: &str) -> Result<Command> {
        let sn = self.next_sn()?;
        let (mut c, stats) = self.base(ctx, name)?;
        c.args(["search", "--json", "--timeout", "3", "--peer"])
            .arg(sn.to_string())
            .args(query.split_whitespace());
        self.fleet.tool_stats.push((name.to_owned(), stats));
        Ok(c)
    }

    /// `get` of a ContentHash into `out/NAME`.
    fn get(&mut self, ctx: &Ctx, who: &str, hash: &str, out: &Path, name: &str) -> Result<Command> {
        let sn = self.next_sn()?;
        let (mut c, stats) = self.base(ctx, who)?;
        let bin = ctx.bin("kazaa-supernode");
        self.fleet
            .opts
            .caps(&mut c, &bin, Some("get"), ctx.scn.downloader_caps());
        c.args(["--json", "--peer"])
            .arg(sn.to_string())
            .arg("--out")
            .arg(out.join(name))
            .arg(hash);
        self.fleet.tool_stats.push((who.to_owned(), stats));
        Ok(c)
    }

    /// Results of a `search --json` output: `(name, hash)` in the order they arrived.
    fn results(stdout: &str) -> Vec<(String, String)> {
        stdout
            .lines()
            .filter_map(hit_json)
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_owned(),
                    v["hash"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// Role arguments of a KaZaA supernode: the scenario's fan-out (`--fanout`, the linked supernodes a query
/// is forwarded to) and a `--peer` link to every supernode started before it (a full mesh).
fn supernode_args(fanout: usize, earlier: &[std::net::SocketAddr]) -> Vec<String> {
    let mut a = vec![
        "--role".to_owned(),
        "supernode".to_owned(),
        "--fanout".to_owned(),
        fanout.to_string(),
    ];
    for sn in earlier {
        a.push("--peer".to_owned());
        a.push(sn.to_string());
    }
    a
}

impl Driver for Kazaa {
    fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    fn fleet_mut(&mut self) -> &mut Fleet {
        &mut self.fleet
    }

    fn system(&self) -> &'static str {
        "kazaa"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["kazaa-supernode"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        for i in 0..ctx.scn.kazaa_supernode_count() {
            let name = format!("sn{i:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.args(supernode_args(
                ctx.scn.kazaa_supernode_fanout,
                &self.supernodes,
            ));
            for k in 0..self.supernodes.len() {
                self.links
                    .push((name.clone(), format!("sn{k:03}"), "bootstrap".into()));
            }
            let addr = self.fleet.spawn(ctx, &name, c, stats, true, None)?;
            self.supernodes.push(addr);
        }
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        let u = self.supernodes.len();
        let bin = ctx.bin("kazaa-supernode");
        let caps = ctx.scn.sharing_caps();
        let firewalled = (ctx.scn.peers as f64 * ctx.scn.firewalled_fraction).round() as usize;
        for p in 0..ctx.scn.peers {
            let name = format!("on{p:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.args(["--role", "ordinary", "--share"])
                .arg(Corpus::peer_dir(&ctx.shares, p));
            // As with Napster: peers 1..=k behind NAT (reached by push + GIVE through the supernodes),
            // the flash, churn and pollution sources reachable.
            if p >= 1 && p <= firewalled && !ctx.corpus.is_special_source(p) {
                c.arg("--firewalled");
            }
            // A lab compresses time: a busy source asks to come back in seconds, not giFT's 5 minutes.
            self.fleet
                .opts
                .push(&mut c, &bin, None, &[("--retry-after", Some("2".into()))]);
            for k in 0..ctx.scn.kazaa_links_per_node.min(u) {
                let i = (p + k) % u;
                c.arg("--peer").arg(self.supernodes[i].to_string());
                self.links
                    .push((name.clone(), format!("sn{i:03}"), "bootstrap".into()));
            }
            self.fleet.opts.caps(&mut c, &bin, None, caps);
            // Before --upload-rate lands, the older per-upload cap is the closest thing there is.
            if caps.upload.is_some() && place_of(&bin, None, "--upload-rate") == Place::Absent {
                self.fleet.opts.push(
                    &mut c,
                    &bin,
                    None,
                    &[("--rate", caps.upload.map(|v| v.to_string()))],
                );
            }
            self.fleet.spawn(ctx, &name, c, stats, false, Some(p))?;
        }
        // Registration of the shares with the supernodes is asynchronous.
        std::thread::sleep(GNUTELLA_SETTLE);
        Ok(ctx.scn.peers)
    }

    fn search_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        i: usize,
    ) -> Result<Option<Command>> {
        self.search(ctx, &format!("search{i:03}"), &file.query)
            .map(Some)
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        // KaZaA downloads by ContentHash (UUHash), which the user got from a search or a sig2dat link.
        let hash = common::hash::uuhash(&ctx.corpus.content(file)).to_hex();
        self.get(ctx, who, &hash, out, &file.name)
    }

    fn parse_source(&self, _: &str) -> Option<String> {
        None
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.links.clone()
    }

    fn pollution_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
        pick: Pick,
    ) -> Result<std::result::Result<Command, String>> {
        match pick {
            Pick::ByHash => Ok(Ok(self.download_command(ctx, file, who, out)?)),
            Pick::ByName => {
                // The user searches by name and, as KaZaA's window groups results by hash, takes the line
                // with the most sources: the polluters' many nodes make it the decoy's.
                let cmd = self.search(ctx, &format!("pick-{who}"), &file.query)?;
                let run = run_tool(
                    cmd,
                    &ctx.work.join(format!("pick-{who}.log")),
                    Duration::from_secs(ctx.scn.op_timeout_secs),
                    ctx.epoch,
                )?;
                let mut sources: Vec<(String, usize)> = Vec::new();
                for (n, h) in Self::results(&run.stdout) {
                    if n != file.name {
                        continue;
                    }
                    match sources.iter_mut().find(|(x, _)| *x == h) {
                        Some(e) => e.1 += 1,
                        None => sources.push((h, 1)),
                    }
                }
                // The first listed wins a tie.
                let best = sources
                    .iter()
                    .rev()
                    .max_by_key(|(_, k)| *k)
                    .map(|(h, _)| h.clone());
                let Some(hash) = best else {
                    return Ok(Err(format!(
                        "the search for {:?} found nothing",
                        file.query
                    )));
                };
                Ok(Ok(self.get(ctx, who, &hash, out, &file.name)?))
            }
        }
    }
}

/// The driver of a system, or why there is none yet.
pub fn driver_for(system: &str) -> std::result::Result<Box<dyn Driver>, String> {
    match system {
        "napster" => Ok(Box::new(Napster::default())),
        "bittorrent" => Ok(Box::new(BitTorrent::default())),
        "gnutella" => Ok(Box::new(Gnutella::default())),
        "kazaa" => Ok(Box::new(Kazaa::default())),
        other => Err(format!("unknown system {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hit lines of the three search clients, as they print them: one parser, the time of the line
    /// that named the file, every hit counted, the summary line ignored.
    #[test]
    fn hit_lines_of_every_search_client_parse_alike() {
        let mut file = Corpus::plan(&Scenario::small()).files[0].clone();
        file.name = "Beatles - Hey Jude.mp3".into();
        let run = |lines: &[(u64, &str)]| ToolRun {
            status: None,
            stdout: lines.iter().map(|(_, l)| format!("{l}\n")).collect(),
            lines: lines
                .iter()
                .map(|(ms, l)| (Duration::from_millis(*ms), (*l).to_owned()))
                .collect(),
            reason: String::new(),
            started: Duration::ZERO,
            ended: Duration::from_secs(1),
        };
        let napster = run(&[
            (
                5,
                r#"{"event":"hit","name":"Other.mp3","path":"a\\Other.mp3","nick":"a"}"#,
            ),
            (
                9,
                r#"{"event":"hit","name":"Beatles - Hey Jude.mp3","path":"b\\Beatles - Hey Jude.mp3","nick":"b"}"#,
            ),
            (30, r#"{"event":"done","hits":2,"results":2}"#),
        ]);
        let gnutella = run(&[
            (
                1,
                r#"{"event":"listening","proto":"tcp","addr":"127.0.0.1:1"}"#,
            ),
            (
                40,
                r#"{"event":"hit","name":"Beatles - Hey Jude.mp3","ttl":2,"hops":1}"#,
            ),
            (50, r#"{"event":"done","hits":1,"results":1}"#),
        ]);
        let kazaa = run(&[
            (
                7,
                r#"{"event":"hit","name":"Beatles - Hey Jude.mp3","hash":"ab","sn":"127.0.0.1:2"}"#,
            ),
            (
                8,
                r#"{"event":"hit","name":"Beatles - Hey Jude.mp3","hash":"cd","sn":"127.0.0.1:3"}"#,
            ),
            (
                20,
                r#"{"event":"done","hits":2,"results":2,"waves":[],"nodes":[]}"#,
            ),
        ]);
        let at = |o: SearchOutcome| (o.found, o.hits, o.first_hit_s, o.ttl);
        assert_eq!(
            at(parse_hit_lines(&napster, &file)),
            (true, 2, Some(0.009), None)
        );
        assert_eq!(
            at(parse_hit_lines(&gnutella, &file)),
            (true, 1, Some(0.04), Some(2))
        );
        assert_eq!(
            at(parse_hit_lines(&kazaa, &file)),
            (true, 2, Some(0.007), None)
        );
        assert_eq!(
            Kazaa::results(&kazaa.stdout),
            [
                ("Beatles - Hey Jude.mp3".to_owned(), "ab".to_owned()),
                ("Beatles - Hey Jude.mp3".to_owned(), "cd".to_owned())
            ]
        );
        file.name = "Missing.mp3".into();
        assert_eq!(at(parse_hit_lines(&napster, &file)), (false, 2, None, None));
    }

    #[test]
    fn supernode_fanout_reaches_every_supernode_command_line() {
        let sns: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:4001".parse().unwrap(),
            "127.0.0.1:4002".parse().unwrap(),
        ];
        for (fanout, earlier) in [(6, &sns[..0]), (1, &sns[..1]), (3, &sns[..])] {
            let a = supernode_args(fanout, earlier);
            let at = a
                .iter()
                .position(|x| x == "--fanout")
                .expect("--fanout passed");
            assert_eq!(a[at + 1], fanout.to_string(), "{a:?}");
            assert_eq!(a.iter().filter(|x| *x == "--peer").count(), earlier.len());
        }
        let scn = Scenario::from_toml("kazaa_supernode_fanout = 2\n", "s").unwrap();
        let a = supernode_args(scn.kazaa_supernode_fanout, &sns);
        assert_eq!(&a[..4], ["--role", "supernode", "--fanout", "2"]);
    }

    #[test]
    fn not_implemented_sentence_is_quoted() {
        let help =
            "Node.\n\nWorks: search. NOT IMPLEMENTED YET: the HTTP side,\n  downloads.\n\nUsage: x";
        assert_eq!(
            not_implemented_line(help).unwrap(),
            "NOT IMPLEMENTED YET: the HTTP side, downloads."
        );
        assert_eq!(not_implemented_line("all fine"), None);
    }
}
