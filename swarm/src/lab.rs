//! The run: corpus, then per system the phases start → searches → flash crowd → churn → collect stats.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::corpus::{Corpus, CorpusFile, Role};
use crate::drivers::{check_binaries, driver_for, Ctx, Driver};
use crate::results::{
    ChurnRecord, DownloadRecord, NodeRecord, Results, SearchRecord, SystemResult,
};
use crate::scenario::Scenario;
use crate::supervisor::{register_temp, run_tool};

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
    let mut systems = Vec::new();
    for name in &scn.systems {
        let res = match driver_for(name) {
            Ok(mut d) => match check_binaries(&opts.bins, d.binaries()) {
                Ok(()) => {
                    let ctx = Ctx {
                        scn: scn.clone(),
                        corpus: corpus.clone(),
                        shares: shares.clone(),
                        work: tmp.path().join(name),
                        bins: opts.bins.clone(),
                        epoch,
                    };
                    std::fs::create_dir_all(&ctx.work)?;
                    run_system(d.as_mut(), &ctx, opts.quiet)
                }
                Err(reason) => unavailable(name, reason),
            },
            // A placeholder binary is the more useful reason to show.
            Err(reason) => match check_binaries(&opts.bins, &["kazaa-supernode"]) {
                Err(why) if name == "kazaa" => unavailable(name, why),
                _ => unavailable(name, reason),
            },
        };
        if !opts.quiet {
            match &res.unavailable {
                Some(r) => eprintln!("{name}: not available yet: {r}"),
                None => eprintln!("{name}: done"),
            }
        }
        systems.push(res);
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
    r.stats_files_read = collected.len();
    let mut by_addr = BTreeMap::new();
    for c in &collected {
        by_addr.insert(c.snapshot.node.clone(), c.name.clone());
    }
    r.edges = d.edges();
    let churned = r.churn.iter().flat_map(|c| c.downloads.iter());
    for dl in r.flash.iter().chain(churned) {
        if let Some(src) = &dl.source {
            // Sources named by address are mapped to the lab's node names.
            let src = by_addr.get(src).unwrap_or(src).clone();
            r.edges.push((src, dl.node.clone(), "download".into()));
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
        });
        // BitTorrent peers list whom they exchanged blocks with, keyed by address.
        if let Some(peers) = s.extra.get("peers").and_then(|v| v.as_object()) {
            for (addr, v) in peers {
                let moved =
                    v["bytes_down"].as_u64().unwrap_or(0) + v["bytes_up"].as_u64().unwrap_or(0);
                if let Some(other) = by_addr.get(addr) {
                    if moved > 0 && other != &c.name {
                        r.edges
                            .push((c.name.clone(), other.clone(), "blocks".into()));
                    }
                }
            }
        }
    }
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
    let before = d.control_traffic();
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
            let (found, hits) = d.parse_search(&run.stdout, f);
            r.searches.push(SearchRecord {
                target: label.into(),
                file: f.name.clone(),
                holders: f.holders.len(),
                found,
                hits,
                seconds: run.elapsed().as_secs_f64(),
                error: (!run.ok()).then(|| run.reason.clone()),
            });
            i += 1;
        }
    }
    if !r.searches.is_empty() {
        let after = d.control_traffic();
        r.search_traffic = Some(crate::results::Traffic {
            messages: after.messages.saturating_sub(before.messages),
            bytes: after.bytes.saturating_sub(before.bytes),
        });
    }

    // Flash crowd: every downloader asks for the new release at once.
    let flash = ctx.corpus.by_role(Role::Flash).clone();
    pb.set_message(format!(
        "{sys}: flash crowd of {} downloads",
        ctx.scn.flash_crowd
    ));
    r.flash = downloads(d, ctx, &flash, "flash", ctx.scn.flash_crowd, None, pb)?.0;
    for (k, &n) in ctx.scn.flash_sweep.iter().enumerate() {
        pb.set_message(format!("{sys}: flash crowd sweep, {n} downloads"));
        let tag = format!("sweep{k}-");
        let recs = downloads(d, ctx, &flash, &tag, n, None, pb)?.0;
        r.flash_sweep.push((n, recs));
    }

    // Churn: the churn file's only source leaves while its downloads run.
    if ctx.scn.churn_downloads > 0 {
        let churn = ctx.corpus.by_role(Role::Churn).clone();
        pb.set_message(format!("{sys}: churn, the source leaves mid-download"));
        let leave = (
            churn.holders[0],
            Duration::from_millis(ctx.scn.churn_leave_after_ms),
        );
        let (downloads, left) = downloads(
            d,
            ctx,
            &churn,
            "churn",
            ctx.scn.churn_downloads,
            Some(leave),
            pb,
        )?;
        r.churn = Some(ChurnRecord {
            source_left_at: left.unwrap_or(f64::INFINITY),
            downloads,
        });
    }
    Ok(())
}

/// Starts `n` downloads of `file` at once; optionally kills a peer after a delay. Times are measured per
/// client process; success means the bytes on disk equal the corpus.
fn downloads(
    d: &mut dyn Driver,
    ctx: &Ctx,
    file: &CorpusFile,
    tag: &str,
    n: usize,
    leave: Option<(usize, Duration)>,
    pb: &ProgressBar,
) -> Result<(Vec<DownloadRecord>, Option<f64>)> {
    let timeout = Duration::from_secs(ctx.scn.op_timeout_secs);
    let mut jobs = Vec::new();
    for k in 0..n {
        let who = format!("{tag}{k:03}");
        let out = ctx.dir(&format!("dl-{who}"))?;
        let cmd = d.download_command(ctx, file, &who, &out)?;
        jobs.push((who, out, cmd));
    }
    let phase_start = ctx.epoch.elapsed();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut left_at = None;
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
        if let Some((peer, after)) = leave {
            std::thread::sleep(after);
            d.leave(peer);
            left_at = Some((ctx.epoch.elapsed() - phase_start).as_secs_f64());
        }
        while handles.iter().any(|h| !h.is_finished()) {
            let k = done.load(std::sync::atomic::Ordering::Relaxed);
            pb.set_message(format!("{}: {tag} downloads {k}/{n} finished", d.system()));
            std::thread::sleep(Duration::from_millis(50));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("download thread"))
            .collect::<Vec<_>>()
    });
    let mut recs = Vec::new();
    for (who, out, run) in runs {
        let run = run?;
        let found = find_file(&out, &file.name);
        let verified = found.as_deref().is_some_and(|p| ctx.corpus.verify(file, p));
        recs.push(DownloadRecord {
            node: who,
            file: file.name.clone(),
            ok: run.ok(),
            verified,
            seconds: run.elapsed().as_secs_f64(),
            ended_at: run.ended.saturating_sub(phase_start).as_secs_f64(),
            source: d.parse_source(&run.stdout),
            error: if run.ok() && verified {
                None
            } else if run.ok() {
                Some("client said done but the bytes differ from the corpus".into())
            } else {
                Some(run.reason)
            },
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
