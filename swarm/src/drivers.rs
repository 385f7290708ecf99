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
use crate::scenario::Scenario;
use crate::supervisor::{run_tool, Daemon};

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
    /// Control messages and bytes sent so far by every live node (fresh stats on SIGUSR1) and every
    /// finished client.
    fn control_traffic(&mut self) -> Traffic;
    /// The command of search number `i` for `file`, or `None` when the system has no search.
    fn search_command(&mut self, ctx: &Ctx, file: &CorpusFile, i: usize)
        -> Result<Option<Command>>;
    /// Why the system has no search (shown instead of search figures).
    fn search_note(&self) -> Option<String> {
        None
    }
    /// From a search's stdout: did it find `file`, and how many results came back.
    fn parse_search(&self, stdout: &str, file: &CorpusFile) -> (bool, usize);
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
    /// Peer `peer` leaves abruptly (killed, as a user pulling the plug).
    fn leave(&mut self, peer: usize);
    /// Stops everything and reads every node's stats file.
    fn finish(&mut self) -> (Vec<Collected>, Vec<String>);
    /// Overlay edges known to the driver (logins, downloads), besides those in the stats files.
    fn edges(&self) -> Vec<(String, String, String)>;
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

fn sum_control(s: &StatsSnapshot) -> Traffic {
    Traffic {
        messages: s.control.out_count,
        bytes: s.control.out_bytes,
    }
}

fn add(a: &mut Traffic, b: Traffic) {
    a.messages += b.messages;
    a.bytes += b.bytes;
}

/// Daemons plus the stats files of one-shot clients: what every driver keeps.
#[derive(Default)]
struct Fleet {
    daemons: Vec<(Daemon, bool)>,
    tool_stats: Vec<(String, PathBuf)>,
}

impl Fleet {
    fn control_traffic(&mut self) -> Traffic {
        let mut t = Traffic::default();
        for (d, _) in &mut self.daemons {
            if d.running() {
                if let Some(s) = d.request_stats() {
                    add(&mut t, sum_control(&s));
                }
            }
        }
        for (_, p) in &self.tool_stats {
            if let Ok(s) = StatsSnapshot::read_json(p) {
                add(&mut t, sum_control(&s));
            }
        }
        t
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
    peers: BTreeMap<usize, usize>,
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
        let d = Daemon::spawn("server", c, &ctx.work.join("server.log"), stats, 1, READY)?;
        self.server = Some(d.addr());
        self.fleet.daemons.push((d, true));
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        let n = ctx.scn.peers;
        let firewalled = (n as f64 * ctx.scn.firewalled_fraction).round() as usize;
        for p in 0..n {
            let nick = format!("peer{p:03}");
            let (mut c, stats) = self.client(ctx, &nick)?;
            c.arg("--share").arg(Corpus::peer_dir(&ctx.shares, p));
            // Peers 1..=k are firewalled: the flash source (0) and the churn source (last) stay reachable.
            if p >= 1 && p <= firewalled && p != n - 1 {
                c.arg("--firewalled");
            }
            c.arg("serve");
            let d = Daemon::spawn(
                &nick,
                c,
                &ctx.work.join(format!("{nick}.log")),
                stats,
                1,
                READY,
            )?;
            self.peers.insert(p, self.fleet.daemons.len());
            self.fleet.daemons.push((d, false));
            self.nicks.push(nick);
        }
        Ok(n)
    }

    fn control_traffic(&mut self) -> Traffic {
        self.fleet.control_traffic()
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

    fn parse_search(&self, stdout: &str, file: &CorpusFile) -> (bool, usize) {
        let hits: Vec<serde_json::Value> = serde_json::from_str(stdout.trim()).unwrap_or_default();
        let found = hits
            .iter()
            .any(|h| h["path"].as_str().is_some_and(|p| p.ends_with(&file.name)));
        (found, hits.len())
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let (mut c, stats) = self.client(ctx, who)?;
        c.arg("get").arg(&file.query).arg("--out").arg(out);
        self.nicks.push(who.to_owned());
        self.fleet.tool_stats.push((who.to_owned(), stats));
        Ok(c)
    }

    fn parse_source(&self, stdout: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).ok()?;
        v["from"].as_str().map(str::to_owned)
    }

    fn leave(&mut self, peer: usize) {
        if let Some(&i) = self.peers.get(&peer) {
            self.fleet.daemons[i].0.kill();
        }
    }

    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        self.fleet.finish()
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.nicks
            .iter()
            .map(|n| ("server".to_owned(), n.clone(), "login".to_owned()))
            .collect()
    }
}

/// A distinct, reproducible RNG seed per BitTorrent node: the peer id derives from it, and two nodes with
/// one peer id take each other for a connection to themselves.
fn node_seed(run_seed: u64, node: usize) -> u64 {
    run_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (node as u64 + 1)
}

/// BitTorrent: one `tracker`, a `bittorrent-peer seed` per published file, `download` leechers.
#[derive(Default)]
pub struct BitTorrent {
    fleet: Fleet,
    tracker: Option<std::net::SocketAddr>,
    torrents: BTreeMap<String, PathBuf>,
    seeders: BTreeMap<usize, usize>,
    peers: usize,
}

impl BitTorrent {
    /// Creates the .torrent of `file` and starts its seeder (once per file).
    fn publish(&mut self, ctx: &Ctx, file: &CorpusFile) -> Result<PathBuf> {
        if let Some(t) = self.torrents.get(&file.name) {
            return Ok(t.clone());
        }
        let tracker = self.tracker.context("tracker not started")?;
        let holder = file.holders[0];
        let src = Corpus::peer_dir(&ctx.shares, holder);
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
        let name = format!("seed{holder:03}");
        let stats = ctx.work.join(format!("stats-{name}.json"));
        let mut c = Command::new(ctx.bin("bittorrent-peer"));
        c.arg("seed")
            .arg(&torrent)
            .arg("--dir")
            .arg(&src)
            .args(["--listen", "127.0.0.1:0", "--quiet", "--rng-seed"])
            .arg(node_seed(ctx.scn.seed, self.peers).to_string())
            .arg("--data-dir")
            .arg(ctx.dir(&format!("data-{name}"))?)
            .arg("--stats-file")
            .arg(&stats);
        let d = Daemon::spawn(
            &name,
            c,
            &ctx.work.join(format!("{name}.log")),
            stats,
            1,
            READY,
        )?;
        self.seeders.insert(holder, self.fleet.daemons.len());
        self.fleet.daemons.push((d, false));
        self.peers += 1;
        self.torrents.insert(file.name.clone(), torrent.clone());
        Ok(torrent)
    }
}

impl Driver for BitTorrent {
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
        let d = Daemon::spawn("tracker", c, &ctx.work.join("tracker.log"), stats, 1, READY)?;
        self.tracker = Some(d.addr());
        self.fleet.daemons.push((d, true));
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        // A BitTorrent swarm exists per file: the seeders of the flash and churn files are its standing peers.
        self.publish(ctx, ctx.corpus.by_role(Role::Flash))?;
        if ctx.scn.churn_downloads > 0 {
            self.publish(ctx, ctx.corpus.by_role(Role::Churn))?;
        }
        Ok(self.peers)
    }

    fn control_traffic(&mut self) -> Traffic {
        self.fleet.control_traffic()
    }

    fn search_command(&mut self, _: &Ctx, _: &CorpusFile, _: usize) -> Result<Option<Command>> {
        Ok(None)
    }

    fn search_note(&self) -> Option<String> {
        Some("BitTorrent has no search: users find a .torrent on the web (BEP 3)".into())
    }

    fn parse_search(&self, _: &str, _: &CorpusFile) -> (bool, usize) {
        (false, 0)
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
        let mut c = Command::new(ctx.bin("bittorrent-peer"));
        c.arg("download")
            .arg(&torrent)
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

    fn leave(&mut self, peer: usize) {
        if let Some(&i) = self.seeders.get(&peer) {
            self.fleet.daemons[i].0.kill();
        }
    }

    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        self.fleet.finish()
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        Vec::new()
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
}

/// How long the overlay gets to settle (links, QRP tables sent up and merged) before the first search.
pub const GNUTELLA_SETTLE: Duration = Duration::from_millis(1500);

impl Gnutella {
    /// Ultrapeer count: one per five peers, at least two (the tutorial's ultrapeer/leaf split).
    pub fn ultrapeer_count(peers: usize) -> usize {
        (peers / 5).max(2).min(peers - 1)
    }

    fn base(&self, ctx: &Ctx, name: &str) -> Result<(Command, PathBuf)> {
        let stats = ctx.work.join(format!("stats-{name}.json"));
        let mut c = Command::new(ctx.bin("gnutella-node"));
        c.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(ctx.dir(&format!("data-{name}"))?)
            .arg("--stats-file")
            .arg(&stats)
            .arg("--seed")
            .arg(node_seed(ctx.scn.seed, self.peers.len() + self.clients + 1000).to_string());
        Ok((c, stats))
    }

    fn client(&mut self, ctx: &Ctx, name: &str, query: &str) -> Result<Command> {
        if self.ultrapeers.is_empty() {
            bail!("no ultrapeer started");
        }
        let up = self.ultrapeers[self.clients % self.ultrapeers.len()];
        let (mut c, stats) = self.base(ctx, name)?;
        self.clients += 1;
        c.arg("--peer").arg(up.to_string());
        if ctx.scn.gnutella_classic {
            c.arg("--classic");
        }
        c.args([
            "search",
            query,
            "--json",
            "--min-hits",
            "1",
            "--timeout",
            "3",
            "--ttl",
        ])
        .arg(ctx.scn.gnutella_ttl.to_string());
        self.fleet.tool_stats.push((name.to_owned(), stats));
        Ok(c)
    }
}

impl Driver for Gnutella {
    fn system(&self) -> &'static str {
        "gnutella"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["gnutella-node"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        let n = ctx.scn.peers;
        for p in 1..=Self::ultrapeer_count(n) {
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
            let d = Daemon::spawn(
                &name,
                c,
                &ctx.work.join(format!("{name}.log")),
                stats,
                1,
                READY,
            )?;
            self.ultrapeers.push(d.addr());
            self.peers.insert(p, self.fleet.daemons.len());
            // In the classic flood every node is equal: no infrastructure.
            self.fleet.daemons.push((d, !ctx.scn.gnutella_classic));
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
            // Two ultrapeers per leaf, spread evenly, as leaves of the era kept.
            for k in 0..2.min(u) {
                let i = (p + k) % u;
                c.arg("--peer").arg(self.ultrapeers[i].to_string());
                self.links
                    .push((name.clone(), format!("up{:03}", i + 1), "bootstrap".into()));
            }
            if p > u && p <= u + firewalled && p != n - 1 {
                c.arg("--firewalled");
            }
            let d = Daemon::spawn(
                &name,
                c,
                &ctx.work.join(format!("{name}.log")),
                stats,
                1,
                READY,
            )?;
            self.peers.insert(p, self.fleet.daemons.len());
            self.fleet.daemons.push((d, false));
        }
        std::thread::sleep(GNUTELLA_SETTLE);
        Ok(n)
    }

    fn control_traffic(&mut self) -> Traffic {
        self.fleet.control_traffic()
    }

    fn search_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        i: usize,
    ) -> Result<Option<Command>> {
        self.client(ctx, &format!("search{i:03}"), &file.query)
            .map(Some)
    }

    fn parse_search(&self, stdout: &str, file: &CorpusFile) -> (bool, usize) {
        let hits: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "hit")
            .collect();
        let found = hits.iter().any(|h| h["name"] == file.name.as_str());
        (found, hits.len())
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let mut c = self.client(ctx, who, &file.query)?;
        c.arg("--download").arg(out);
        Ok(c)
    }

    fn parse_source(&self, stdout: &str) -> Option<String> {
        // The hit that named the file says which servent answered; the download may use several.
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "hit")
            .and_then(|v| Some(format!("{}:{}", v["ip"].as_str()?, v["port"].as_u64()?)))
    }

    fn leave(&mut self, peer: usize) {
        if let Some(&i) = self.peers.get(&peer) {
            self.fleet.daemons[i].0.kill();
        }
    }

    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        self.fleet.finish()
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.links.clone()
    }
}

/// KaZaA (FastTrack): supernodes (one per five peers, at least two, linked to each other) and ordinary
/// nodes registering their shares with two of them; `search` and `get` (by ContentHash) clients.
#[derive(Default)]
pub struct Kazaa {
    fleet: Fleet,
    supernodes: Vec<std::net::SocketAddr>,
    peers: BTreeMap<usize, usize>,
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
}

impl Driver for Kazaa {
    fn system(&self) -> &'static str {
        "kazaa"
    }

    fn binaries(&self) -> &'static [&'static str] {
        &["kazaa-supernode"]
    }

    fn start_infrastructure(&mut self, ctx: &Ctx) -> Result<()> {
        for i in 0..Gnutella::ultrapeer_count(ctx.scn.peers) {
            let name = format!("sn{i:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.args(["--role", "supernode"]);
            for (k, a) in self.supernodes.iter().enumerate() {
                c.arg("--peer").arg(a.to_string());
                self.links
                    .push((name.clone(), format!("sn{k:03}"), "bootstrap".into()));
            }
            let d = Daemon::spawn(
                &name,
                c,
                &ctx.work.join(format!("{name}.log")),
                stats,
                1,
                READY,
            )?;
            self.supernodes.push(d.addr());
            self.fleet.daemons.push((d, true));
        }
        Ok(())
    }

    fn start_peers(&mut self, ctx: &Ctx) -> Result<usize> {
        let u = self.supernodes.len();
        for p in 0..ctx.scn.peers {
            let name = format!("on{p:03}");
            let (mut c, stats) = self.base(ctx, &name)?;
            c.args(["--role", "ordinary", "--share"])
                .arg(Corpus::peer_dir(&ctx.shares, p));
            for k in 0..2.min(u) {
                let i = (p + k) % u;
                c.arg("--peer").arg(self.supernodes[i].to_string());
                self.links
                    .push((name.clone(), format!("sn{i:03}"), "bootstrap".into()));
            }
            let d = Daemon::spawn(
                &name,
                c,
                &ctx.work.join(format!("{name}.log")),
                stats,
                1,
                READY,
            )?;
            self.peers.insert(p, self.fleet.daemons.len());
            self.fleet.daemons.push((d, false));
        }
        // Registration of the shares with the supernodes is asynchronous.
        std::thread::sleep(GNUTELLA_SETTLE);
        Ok(ctx.scn.peers)
    }

    fn control_traffic(&mut self) -> Traffic {
        self.fleet.control_traffic()
    }

    fn search_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        i: usize,
    ) -> Result<Option<Command>> {
        let sn = self.next_sn()?;
        let name = format!("search{i:03}");
        let (mut c, stats) = self.base(ctx, &name)?;
        c.args(["search", "--json", "--timeout", "3", "--peer"])
            .arg(sn.to_string())
            .args(file.query.split_whitespace());
        self.fleet.tool_stats.push((name, stats));
        Ok(Some(c))
    }

    fn parse_search(&self, stdout: &str, file: &CorpusFile) -> (bool, usize) {
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
        let results: Vec<&serde_json::Value> = v["waves"]
            .as_array()
            .map(|w| {
                w.iter()
                    .flat_map(|w| w["results"].as_array().into_iter().flatten())
                    .collect()
            })
            .unwrap_or_default();
        let found = results.iter().any(|r| r["name"] == file.name.as_str());
        (found, results.len())
    }

    fn download_command(
        &mut self,
        ctx: &Ctx,
        file: &CorpusFile,
        who: &str,
        out: &Path,
    ) -> Result<Command> {
        let sn = self.next_sn()?;
        // KaZaA downloads by ContentHash (UUHash), which the user got from a search or a sig2dat link.
        let hash = common::hash::uuhash(&ctx.corpus.content(file)).to_hex();
        let (mut c, stats) = self.base(ctx, who)?;
        c.args(["get", "--json", "--peer"])
            .arg(sn.to_string())
            .arg("--out")
            .arg(out.join(&file.name))
            .arg(hash);
        self.fleet.tool_stats.push((who.to_owned(), stats));
        Ok(c)
    }

    fn parse_source(&self, _: &str) -> Option<String> {
        None
    }

    fn leave(&mut self, peer: usize) {
        if let Some(&i) = self.peers.get(&peer) {
            self.fleet.daemons[i].0.kill();
        }
    }

    fn finish(&mut self) -> (Vec<Collected>, Vec<String>) {
        self.fleet.finish()
    }

    fn edges(&self) -> Vec<(String, String, String)> {
        self.links.clone()
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
