//! The run: corpus, then per system the phases start → searches → flash crowd → churn → collect stats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::{Corpus, CorpusFile, Role};
use crate::drivers::{check_binaries, driver_for, Ctx, Driver, Pick};
use crate::results::{
    ChurnRecord, DownloadRecord, FloodPoint, NodeRecord, PollutionRecord, Results, RingRecord,
    SearchRecord, SystemResult,
};
use crate::scenario::Scenario;
use crate::supervisor::{register_temp, run_tool, ToolRun};

/// Options of one run beyond the scenario.
pub struct RunOptions {
    /// Folder of the workspace binaries.
    pub bins: PathBuf,
    /// Hide the progress display (tests, CI logs).
    pub quiet: bool,
}

/// The folder of the binaries next to the running executable (`target/<profile>/`).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    dir
}

/// Package of each binary the drivers start.
const PACKAGES: [(&str, &str); 6] = [
    ("napster-server", "napster-server"),
    ("napster-client", "napster-server"),
    ("gnutella-node", "gnutella-node"),
    ("kazaa-supernode", "kazaa-supernode"),
    ("tracker", "tracker"),
    ("bittorrent-peer", "bittorrent-peer"),
];

/// When the binaries live in a `target/debug` or `target/release` folder of this workspace, (re)builds them
/// with cargo in the same profile, so `cargo run --release -p swarm -- demo` works from a fresh checkout and never
/// runs protocol binaries older than their sources (cargo does nothing when they are up to date). `--bin-dir`
/// skips this. Returns what it did; a failed build is not fatal (the systems are then reported as not available).
pub fn ensure_binaries(bins: &Path) -> Option<String> {
    let packages: Vec<&str> = PACKAGES.iter().map(|(_, pkg)| *pkg).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let release = match bins.file_name()?.to_str()? {
        "release" => true,
        "debug" => false,
        _ => return None,
    };
    if !root.join("Cargo.toml").exists() || bins.parent()? != root.join("target") {
        return None;
    }
    let mut cmd =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root).args(["build", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    let mut pkgs = packages;
    pkgs.dedup();
    for p in &pkgs {
        cmd.args(["-p", p]);
    }
    eprintln!(
        "swarm: making sure the binaries of {} are built and up to date ...",
        pkgs.join(", ")
    );
    Some(match cmd.status() {
        Ok(s) if s.success() => format!("built or found up to date: {}", pkgs.join(", ")),
        Ok(s) => format!("cargo build failed ({s})"),
        Err(e) => format!("cannot run cargo: {e}"),
    })
}

fn spinner(quiet: bool, msg: String) -> ProgressBar {
    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}").expect("template"));
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg);
    pb
}

/// Runs the scenario and returns every figure. The temp folder is removed before returning.
pub fn run(scn: &Scenario, opts: &RunOptions) -> Result<Results> {
    let epoch = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("p2p-lab-swarm-")
        .tempdir()
        .context("creating the temporary folder")?;
    register_temp(tmp.path());
    let shares = tmp.path().join("shares");
    let corpus = Corpus::plan(scn);
    let pb = spinner(
        opts.quiet,
        format!("writing the corpus ({} files)", corpus.files.len()),
    );
    corpus.write(&shares).context("writing the corpus")?;
    pb.finish_and_clear();
    let lab = Lab {
        corpus: &corpus,
        shares: &shares,
        tmp: tmp.path(),
        opts,
        epoch,
    };
    let mut systems = Vec::new();
    for name in &scn.systems {
        systems.push(run_one(&lab, name, name, scn.for_system(name))?);
        if name == "gnutella" && scn.gnutella_classic_contrast && !scn.gnutella_classic {
            // The classic 0.4 flood over the same peers, searches only: its messages per search
            // beside the ultrapeer figure is the contrast the tutorial draws.
            let classic = Scenario {
                gnutella_classic: true,
                flash_crowd: 0,
                flash_sweep: Vec::new(),
                churn_downloads: 0,
                gnutella_ttl_sweep: Vec::new(),
                ring_searches: 0,
                pollution_downloads: 0,
                ..scn.for_system(name)
            };
            systems.push(run_one(&lab, name, CLASSIC_CONTRAST, classic)?);
        }
    }
    let temp_dir = tmp.path().display().to_string();
    tmp.close().context("removing the temporary folder")?;
    Ok(Results {
        scenario: scn.clone(),
        corpus: serde_json::to_value(&corpus)?,
        temp_dir,
        seconds: epoch.elapsed().as_secs_f64(),
        systems,
    })
}

/// The name under which the default demo reports Gnutella's classic flood (searches only).
pub const CLASSIC_CONTRAST: &str = "gnutella classic";

/// What every system of one run shares: the corpus written once, the temp folder, the options, the clock.
struct Lab<'a> {
    corpus: &'a Corpus,
    shares: &'a Path,
    tmp: &'a Path,
    opts: &'a RunOptions,
    epoch: Instant,
}

/// Runs one system (`name` picks the driver, `label` names its results and work folder).
fn run_one(lab: &Lab<'_>, name: &str, label: &str, sys_scn: Scenario) -> Result<SystemResult> {
    let Lab {
        corpus,
        shares,
        tmp,
        opts,
        epoch,
    } = *lab;
    let res = match driver_for(name) {
        Ok(mut d) => match check_binaries(&opts.bins, d.binaries()) {
            Ok(()) => {
                // A system with its own peer count gets the same corpus placed on its peers.
                let (sys_corpus, sys_shares) = if sys_scn.peers == corpus.peers {
                    (corpus.clone(), shares.to_path_buf())
                } else {
                    let c = Corpus::plan(&sys_scn);
                    let dir = tmp.join(format!("shares-{}", label.replace(' ', "-")));
                    c.write(&dir)
                        .with_context(|| format!("writing the corpus of {label}"))?;
                    (c, dir)
                };
                let ctx = Ctx {
                    scn: sys_scn,
                    corpus: sys_corpus,
                    shares: sys_shares,
                    work: tmp.join(label.replace(' ', "-")),
                    bins: opts.bins.clone(),
                    epoch,
                };
                std::fs::create_dir_all(&ctx.work)?;
                let mut r = run_system(d.as_mut(), &ctx, opts.quiet);
                r.system = label.to_owned();
                r
            }
            Err(reason) => unavailable(label, reason),
        },
        // A placeholder binary is the more useful reason to show.
        Err(reason) => match check_binaries(&opts.bins, &["kazaa-supernode"]) {
            Err(why) if name == "kazaa" => unavailable(label, why),
            _ => unavailable(label, reason),
        },
    };
    if !opts.quiet {
        match &res.unavailable {
            Some(r) => eprintln!("{label}: not available yet: {r}"),
            None => eprintln!("{label}: done"),
        }
    }
    Ok(res)
}

fn unavailable(name: &str, reason: String) -> SystemResult {
    SystemResult {
        system: name.to_owned(),
        unavailable: Some(reason),
        ..Default::default()
    }
}

fn run_system(d: &mut dyn Driver, ctx: &Ctx, quiet: bool) -> SystemResult {
    let mut r = SystemResult {
        system: d.system().to_owned(),
        ..Default::default()
    };
    let pb = spinner(quiet, format!("{}: starting the infrastructure", r.system));
    if let Err(e) = phases(d, ctx, &mut r, &pb) {
        r.problems.push(format!("{e:#}"));
        if r.flash.is_empty() && r.searches.is_empty() {
            r.unavailable = Some(format!("could not run: {e:#}"));
        }
    }
    pb.set_message(format!(
        "{}: stopping nodes and reading their stats",
        r.system
    ));
    let (collected, problems) = d.finish();
    r.problems.extend(problems);
    r.rate_caps = d.rate_caps();
    r.stats_files_read = collected.len();
    // Nodes name themselves by their listening address (or nick): what others dialled or report.
    let mut by_addr = BTreeMap::new();
    for c in &collected {
        by_addr.insert(c.snapshot.node.clone(), c.name.clone());
    }
    r.bootstrap = d.edges();
    let churned = r.churn.iter().flat_map(|c| c.downloads.iter());
    for dl in r.flash.iter().chain(churned) {
        if let Some(src) = &dl.source {
            // Sources named by address are mapped to the lab's node names.
            let src = by_addr.get(src).unwrap_or(src).clone();
            r.transfer_edges
                .push((src, dl.node.clone(), "download".into()));
        }
    }
    for c in &collected {
        let s = &c.snapshot;
        r.nodes.push(NodeRecord {
            node: c.name.clone(),
            role: s.role.clone(),
            infrastructure: c.infrastructure,
            upload_bytes: s.transfers.upload_bytes,
            control_in: s.control.in_count,
            control_out: s.control.out_count,
            control_bytes: s.control.in_bytes + s.control.out_bytes,
            reported_as: s.node.clone(),
            neighbours: s.neighbours_seen.clone(),
            messages: s.messages.clone(),
        });
        // BitTorrent peers list whom they exchanged blocks with, keyed by address.
        if let Some(peers) = s.extra.get("peers").and_then(|v| v.as_object()) {
            for (addr, v) in peers {
                let moved =
                    v["bytes_down"].as_u64().unwrap_or(0) + v["bytes_up"].as_u64().unwrap_or(0);
                if let Some(other) = by_addr.get(addr) {
                    if moved > 0 && other != &c.name {
                        r.transfer_edges
                            .push((c.name.clone(), other.clone(), "blocks".into()));
                    }
                }
            }
        }
    }
    let g = crate::overlay::build(&r.nodes, &by_addr);
    r.edges = g.edges;
    r.overlay_out_links = g.out_links;
    r.overlay_unmapped = g.unmapped;
    pb.finish_and_clear();
    r
}

fn phases(d: &mut dyn Driver, ctx: &Ctx, r: &mut SystemResult, pb: &ProgressBar) -> Result<()> {
    let sys = d.system();
    d.start_infrastructure(ctx)?;
    pb.set_message(format!("{sys}: starting the peers"));
    r.peers = d.start_peers(ctx)?;
    let timeout = Duration::from_secs(ctx.scn.op_timeout_secs);

    // Searches: the rarest and the most popular file, one client each time.
    let before = d.snapshots().control_sent();
    let targets = [
        ("rare", ctx.corpus.rare()),
        ("popular", ctx.corpus.popular()),
    ];
    let mut i = 0;
    'search: for (label, f) in targets {
        for _ in 0..ctx.scn.searches_per_target {
            pb.set_message(format!("{sys}: search {} ({label})", i + 1));
            let Some(cmd) = d.search_command(ctx, f, i)? else {
                r.search_note = d.search_note();
                break 'search;
            };
            let log = ctx.work.join(format!("search-{i}.log"));
            let run = run_tool(cmd, &log, timeout, ctx.epoch)?;
            let o = d.parse_search(&run, f);
            r.searches.push(SearchRecord {
                target: label.into(),
                file: f.name.clone(),
                holders: f.holders.len(),
                found: o.found,
                hits: o.hits,
                seconds: run.elapsed().as_secs_f64(),
                first_hit_s: o.first_hit_s,
                error: (!run.ok()).then(|| run.reason.clone()),
            });
            i += 1;
        }
    }
    if !r.searches.is_empty() {
        let after = d.snapshots().control_sent();
        r.search_traffic = Some(crate::results::Traffic {
            messages: after.messages.saturating_sub(before.messages),
            bytes: after.bytes.saturating_sub(before.bytes),
        });
    }

    if !ctx.scn.gnutella_ttl_sweep.is_empty() {
        flood_sweep(d, ctx, r, pb)?;
    }

    // Flash crowd: every downloader asks for the new release at once.
    let flash = ctx.corpus.by_role(Role::Flash).clone();
    if ctx.scn.flash_crowd > 0 {
        pb.set_message(format!(
            "{sys}: flash crowd of {} downloads",
            ctx.scn.flash_crowd
        ));
        r.flash = downloads(d, ctx, &flash, "flash", ctx.scn.flash_crowd, &[], pb)?.0;
    }
    if ctx.scn.sweeps(sys) {
        for (k, &n) in ctx.scn.flash_sweep.iter().enumerate() {
            pb.set_message(format!("{sys}: flash crowd sweep, {n} downloads"));
            let tag = format!("sweep{k}-");
            let recs = downloads(d, ctx, &flash, &tag, n, &[], pb)?.0;
            r.flash_sweep.push((n, recs));
        }
    }

    if ctx.scn.ring_searches > 0 {
        ring(d, ctx, r, &flash, pb)?;
    }

    if ctx.scn.pollution_downloads > 0 {
        if let Some(f) = ctx.corpus.polluted() {
            pollution(d, ctx, r, &f.clone(), pb)?;
        }
    }

    // Churn: the churn file's sources leave while its downloads run.
    if ctx.scn.churn_downloads > 0 {
        let churn = ctx.corpus.by_role(Role::Churn).clone();
        pb.set_message(format!("{sys}: churn, sources leave mid-download"));
        let every = Duration::from_millis(ctx.scn.churn_leave_after_ms);
        let leaving: Vec<(usize, Duration)> = churn
            .holders
            .iter()
            .take(ctx.scn.churn_leaving)
            .enumerate()
            .map(|(k, &p)| (p, every * (k as u32 + 1)))
            .collect();
        let (downloads, left) = downloads(
            d,
            ctx,
            &churn,
            "churn",
            ctx.scn.churn_downloads,
            &leaving,
            pb,
        )?;
        r.churn = Some(ChurnRecord {
            source_left_at: left.first().copied().unwrap_or(f64::INFINITY),
            departures: left,
            sources: churn.holders.len(),
            graceful: ctx.scn.churn_graceful,
            downloads,
        });
    }
    Ok(())
}

/// A query no file name contains: the flood runs its full course (no early stop on hits).
const NO_MATCH_QUERY: &str = "xyzzy plugh";

/// Gnutella flood cost against TTL: query messages per search next to the tree formula.
fn flood_sweep(
    d: &mut dyn Driver,
    ctx: &Ctx,
    r: &mut SystemResult,
    pb: &ProgressBar,
) -> Result<()> {
    let sys = d.system();
    let timeout = Duration::from_secs(ctx.scn.op_timeout_secs);
    let n = ctx.scn.searches_per_target.max(1);
    let mut k = 0;
    for &ttl in &ctx.scn.gnutella_ttl_sweep {
        pb.set_message(format!("{sys}: flood cost at TTL {ttl}"));
        // Servents keep making links from pongs: the formula takes the overlay as it is now.
        let snap = d.snapshots();
        let overlay = snap.overlay();
        let before = snap.sent("query");
        let mut ran = 0;
        for _ in 0..n {
            let Some(cmd) = d.flood_command(ctx, NO_MATCH_QUERY, k, ttl)? else {
                return Ok(());
            };
            let log = ctx.work.join(format!("flood-{k}.log"));
            let run = run_tool(cmd, &log, timeout, ctx.epoch)?;
            if !run.ok() {
                r.problems
                    .push(format!("flood search at TTL {ttl}: {}", run.reason));
            }
            ran += 1;
            k += 1;
        }
        let after = d.snapshots().sent("query");
        r.flood.push(FloodPoint {
            ttl,
            searches: ran,
            measured: after.saturating_sub(before) as f64 / ran as f64,
            tree_formula: overlay.tree_formula(ttl),
            full_flood: overlay.full_flood(),
        });
        r.flood_overlay = Some(overlay);
    }
    Ok(())
}

/// Expanding ring during a flash crowd: one searcher after the other downloads the flash file and stays
/// online sharing it, first with the fixed TTL, then (copies reset) with an expanding ring.
fn ring(
    d: &mut dyn Driver,
    ctx: &Ctx,
    r: &mut SystemResult,
    flash: &CorpusFile,
    pb: &ProgressBar,
) -> Result<()> {
    let sys = d.system();
    let timeout = Duration::from_secs(ctx.scn.op_timeout_secs);
    for expanding in [false, true] {
        let mode = if expanding { "x" } else { "f" };
        let mut copies = flash.holders.len();
        for k in 0..ctx.scn.ring_searches {
            pb.set_message(format!(
                "{sys}: {} search {} of {}",
                if expanding {
                    "expanding-ring"
                } else {
                    "fixed-TTL"
                },
                k + 1,
                ctx.scn.ring_searches
            ));
            let who = format!("ring{mode}{k:03}");
            let out = ctx.dir(&format!("dl-{who}"))?;
            let before = d.snapshots().sent("query");
            let Some(cmd) = d.ring_command(ctx, flash, &who, expanding)? else {
                return Ok(());
            };
            let run = run_tool(
                cmd,
                &ctx.work.join(format!("{who}.log")),
                timeout,
                ctx.epoch,
            )?;
            // The search's messages only; the download below goes straight to the host that answered.
            let after = d.snapshots().sent("query");
            let o = d.parse_search(&run, flash);
            let mut error = (!run.ok()).then(|| run.reason.clone());
            if let Some(cmd) = d.ring_fetch(ctx, flash, &who, &out, &run)? {
                let got = run_tool(
                    cmd,
                    &ctx.work.join(format!("{who}-get.log")),
                    timeout,
                    ctx.epoch,
                )?;
                if !got.ok() {
                    error.get_or_insert(got.reason);
                }
            }
            let verified =
                find_file(&out, &flash.name).is_some_and(|p| ctx.corpus.verify(flash, &p));
            r.ring.push(RingRecord {
                expanding,
                index: k,
                copies,
                found: o.found,
                verified,
                ttl: o.ttl,
                query_msgs: after.saturating_sub(before),
                first_hit_s: o.first_hit_s,
                seconds: run.elapsed().as_secs_f64(),
                error,
            });
            if verified {
                // The searcher stays online and shares what it got, as a servent of the era did.
                d.share_folder(ctx, &who, &out)?;
                copies += 1;
                std::thread::sleep(RING_SETTLE);
            }
        }
        d.stop_sharers();
    }
    Ok(())
}

/// Time a new sharer gets to link up (and send its QRP table) before the next search.
const RING_SETTLE: Duration = Duration::from_millis(800);

/// Downloads of the polluted file, picked by name and by content hash.
fn pollution(
    d: &mut dyn Driver,
    ctx: &Ctx,
    r: &mut SystemResult,
    f: &CorpusFile,
    pb: &ProgressBar,
) -> Result<()> {
    let sys = d.system();
    for (pick, label) in [(Pick::ByName, "name"), (Pick::ByHash, "hash")] {
        pb.set_message(format!("{sys}: pollution, downloads picked by {label}"));
        let mut jobs = Vec::new();
        for k in 0..ctx.scn.pollution_downloads {
            let who = format!("poll{label}{k:03}");
            let out = ctx.dir(&format!("dl-{who}"))?;
            match d.pollution_command(ctx, f, &who, &out, pick)? {
                Ok(cmd) => jobs.push((who, out, cmd)),
                Err(why) => {
                    r.pollution_notes.push(format!("by {label}: {why}"));
                    break;
                }
            }
        }
        let start = ctx.epoch.elapsed();
        let (runs, _) = run_jobs(
            d,
            ctx,
            &format!("pollution ({label})"),
            jobs,
            &[],
            start,
            pb,
        );
        for (who, out, run, _) in runs {
            let run = run?;
            let path = find_file(&out, &f.name);
            let outcome = match path {
                Some(p) if ctx.corpus.verify(f, &p) => "genuine",
                Some(p) if ctx.corpus.is_decoy(f, &p) => "decoy",
                _ => "failed",
            };
            r.pollution.push(PollutionRecord {
                pick: label.into(),
                node: who,
                outcome: outcome.into(),
                error: (outcome == "failed").then(|| {
                    if run.ok() {
                        "no file with the genuine or the decoy bytes".into()
                    } else {
                        run.reason.clone()
                    }
                }),
            });
        }
    }
    Ok(())
}

/// One finished job: who, its download folder, the run, sampled progress.
type JobRun = (String, PathBuf, Result<ToolRun>, Vec<(f64, u64)>);

/// Runs the jobs at once; the peers in `leave` leave at their times after `phase_start` (always, even
/// if every job ended first). Returns the runs and the departure times (seconds since the phase began).
fn run_jobs(
    d: &mut dyn Driver,
    ctx: &Ctx,
    what: &str,
    jobs: Vec<(String, PathBuf, std::process::Command)>,
    leave: &[(usize, Duration)],
    phase_start: Duration,
    pb: &ProgressBar,
) -> (Vec<JobRun>, Vec<f64>) {
    let timeout = Duration::from_secs(ctx.scn.op_timeout_secs);
    let n = jobs.len();
    let since = |ctx: &Ctx| (ctx.epoch.elapsed().saturating_sub(phase_start)).as_secs_f64();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut left_at = Vec::new();
    let sample = !leave.is_empty() && d.disk_shows_progress();
    let dirs: Vec<PathBuf> = jobs.iter().map(|j| j.1.clone()).collect();
    let mut progress: Vec<Vec<(f64, u64)>> = vec![Vec::new(); n];
    let runs = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(who, out, cmd)| {
                let log = ctx.work.join(format!("{who}.log"));
                let done = &done;
                s.spawn(move || {
                    let r = run_tool(cmd, &log, timeout, ctx.epoch);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    (who, out, r)
                })
            })
            .collect();
        let mut pending = leave.iter().peekable();
        while handles.iter().any(|h| !h.is_finished()) {
            if let Some((peer, at)) = pending.peek() {
                if ctx.epoch.elapsed().saturating_sub(phase_start) >= *at {
                    d.leave(*peer, ctx.scn.churn_graceful);
                    left_at.push(since(ctx));
                    pending.next();
                }
            }
            if sample {
                let t = since(ctx);
                for (k, dir) in dirs.iter().enumerate() {
                    if !handles[k].is_finished() {
                        progress[k].push((t, bytes_on_disk(dir)));
                    }
                }
            }
            let k = done.load(std::sync::atomic::Ordering::Relaxed);
            pb.set_message(format!("{}: {what} {k}/{n} finished", d.system()));
            std::thread::sleep(Duration::from_millis(50));
        }
        for (peer, _) in pending {
            d.leave(*peer, ctx.scn.churn_graceful);
            left_at.push(since(ctx));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("download thread"))
            .collect::<Vec<_>>()
    });
    let runs = runs
        .into_iter()
        .zip(progress)
        .map(|((who, out, run), mut prog)| {
            if sample {
                if let Ok(r) = &run {
                    prog.push((
                        r.ended.saturating_sub(phase_start).as_secs_f64(),
                        bytes_on_disk(&out),
                    ));
                }
            }
            (who, out, run, prog)
        })
        .collect();
    (runs, left_at)
}

/// Bytes actually written under `dir` (allocated blocks, so a preallocated sparse file counts only what
/// arrived), capped by each file's length.
fn bytes_on_disk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_on_disk(&e.path()),
            Ok(m) => (m.blocks() * 512).min(m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Starts `n` downloads of `file` at once; the peers in `leave` leave at their times. Times are measured
/// per client process; success means the bytes on disk equal the corpus.
fn downloads(
    d: &mut dyn Driver,
    ctx: &Ctx,
    file: &CorpusFile,
    tag: &str,
    n: usize,
    leave: &[(usize, Duration)],
    pb: &ProgressBar,
) -> Result<(Vec<DownloadRecord>, Vec<f64>)> {
    let mut jobs = Vec::new();
    for k in 0..n {
        let who = format!("{tag}{k:03}");
        let out = ctx.dir(&format!("dl-{who}"))?;
        let cmd = d.download_command(ctx, file, &who, &out)?;
        jobs.push((who, out, cmd));
    }
    let phase_start = ctx.epoch.elapsed();
    let (runs, left_at) = run_jobs(
        d,
        ctx,
        &format!("{tag} downloads"),
        jobs,
        leave,
        phase_start,
        pb,
    );
    let mut recs = Vec::new();
    for (who, out, run, progress) in runs {
        let run = run?;
        let found = find_file(&out, &file.name);
        let verified = found.as_deref().is_some_and(|p| ctx.corpus.verify(file, p));
        // A client that stays to seed completed before it exited.
        let seconds = d
            .completed_after(&run)
            .unwrap_or_else(|| run.elapsed().as_secs_f64());
        recs.push(DownloadRecord {
            node: who,
            file: file.name.clone(),
            ok: run.ok(),
            verified,
            seconds,
            ended_at: (run.started + Duration::from_secs_f64(seconds))
                .saturating_sub(phase_start)
                .as_secs_f64(),
            source: d.parse_source(&run.stdout),
            error: if run.ok() && verified {
                None
            } else if run.ok() {
                Some("client said done but the bytes differ from the corpus".into())
            } else {
                Some(run.reason)
            },
            progress,
        });
    }
    Ok((recs, left_at))
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let direct = dir.join(name);
    if direct.is_file() {
        return Some(direct);
    }
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}
