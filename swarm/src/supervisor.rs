//! The process supervisor: every binary the lab starts runs in its own process group, is recorded in a
//! process-wide registry, and is stopped when its handle drops, when the run ends, or on Ctrl-C/SIGTERM
//! ([`install_interrupt_handler`]), which also removes the run's temporary folders. Nothing is left behind.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use common::telemetry::Listening;
use rustix::process::{kill_process_group, Pid, Signal};

/// Process groups alive right now (their leader's pid).
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Set once an interrupt began: no new process may start.
static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Temporary folders to remove on interrupt.
static TEMP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// How long a daemon gets to exit after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal_group(pgid: i32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        let _ = kill_process_group(pid, sig);
    }
}

/// Registers a temporary folder to remove on Ctrl-C/SIGTERM.
pub fn register_temp(dir: &Path) {
    lock(&TEMP).push(dir.to_path_buf());
}

/// Number of process groups the lab still runs (0 after a clean run).
pub fn live_groups() -> usize {
    lock(&LIVE).len()
}

/// Kills every process group and removes every temp folder: the interrupt path.
pub fn kill_everything() {
    let groups: Vec<i32> = {
        let live = lock(&LIVE);
        // Under the lock: no spawn can slip in between this list and the kill.
        STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
        live.iter().copied().collect()
    };
    for g in &groups {
        signal_group(*g, Signal::TERM);
    }
    std::thread::sleep(Duration::from_millis(300));
    for g in &groups {
        signal_group(*g, Signal::KILL);
    }
    for d in lock(&TEMP).drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// After an interrupt, the handler thread owns the exit (status 130, after cleaning up): the main thread
/// calls this before writing results or returning, and waits here instead of exiting 0 in the middle.
pub fn park_if_interrupted() {
    while STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// On SIGINT/SIGTERM: stop every child, remove temp folders, exit 130.
pub fn install_interrupt_handler() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("swarm-signals".into())
        .spawn(move || {
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            });
            eprintln!("\nswarm: interrupted, stopping every process and removing temporary files");
            kill_everything();
            std::process::exit(130);
        })?;
    Ok(())
}

fn spawn_grouped(cmd: &mut Command) -> Result<(Child, i32)> {
    cmd.process_group(0).stdin(Stdio::null());
    let mut live = lock(&LIVE);
    if STOPPING.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("the lab is stopping");
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pgid = child.id() as i32;
    live.insert(pgid);
    Ok((child, pgid))
}

fn forget(pgid: i32) {
    lock(&LIVE).remove(&pgid);
}

/// A long-running node (server, peer, tracker) started by the lab.
pub struct Daemon {
    /// Short name for logs and the report.
    pub name: String,
    /// Its readiness lines.
    pub listening: Vec<Listening>,
    /// Where it writes its stats JSON.
    pub stats_file: PathBuf,
    child: Child,
    pgid: i32,
    stopped: Option<ExitStatus>,
}

impl Daemon {
    /// Starts `cmd` (stderr to `log`), waits for `ready_lines` readiness lines within `deadline`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        stats_file: PathBuf,
        ready_lines: usize,
        deadline: Duration,
    ) -> Result<Daemon> {
        let err = std::fs::File::create(log)?;
        cmd.stdout(Stdio::piped()).stderr(err);
        let (mut child, pgid) = spawn_grouped(&mut cmd)?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after readiness so a chatty daemon never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(l) = Listening::parse(&line) {
                    let _ = tx.send(l);
                }
            }
        });
        let mut d = Daemon {
            name: name.to_owned(),
            listening: Vec::new(),
            stats_file,
            child,
            pgid,
            stopped: None,
        };
        let end = Instant::now() + deadline;
        while d.listening.len() < ready_lines {
            let left = end.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(l) => d.listening.push(l),
                Err(_) => {
                    if let Ok(Some(st)) = d.child.try_wait() {
                        let tail = tail_of(log);
                        bail!("{name} exited ({st}) before it was ready: {tail}");
                    }
                    if left.is_zero() {
                        bail!("{name} printed no readiness line within {deadline:?}");
                    }
                }
            }
        }
        Ok(d)
    }

    /// The first listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.listening[0].addr
    }

    /// Asks for a stats snapshot now (SIGUSR1) and waits until a fresh file is there.
    pub fn request_stats(&self) -> Option<common::stats::StatsSnapshot> {
        let asked = self.ask_stats();
        self.await_stats(asked, Instant::now() + Duration::from_secs(3))
    }

    /// Sends SIGUSR1; returns the stats file's modification time before, for [`Daemon::await_stats`].
    /// Asking every node first and then waiting for all takes one round trip, not one per node.
    pub fn ask_stats(&self) -> Option<std::time::SystemTime> {
        let before = std::fs::metadata(&self.stats_file)
            .and_then(|m| m.modified())
            .ok();
        signal_group(self.pgid, Signal::USR1);
        before
    }

    /// Waits until the stats file changed since `before` (or `deadline`) and reads it.
    pub fn await_stats(
        &self,
        before: Option<std::time::SystemTime>,
        deadline: Instant,
    ) -> Option<common::stats::StatsSnapshot> {
        loop {
            let now = std::fs::metadata(&self.stats_file)
                .and_then(|m| m.modified())
                .ok();
            if now.is_some() && now != before {
                // The writer may still be busy: a half-written file is read again shortly.
                if let Ok(s) = common::stats::StatsSnapshot::read_json(&self.stats_file) {
                    return Some(s);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.stopped.is_none() && matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, wait for the exit (it writes its stats file), SIGKILL after [`STOP_GRACE`].
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped.is_some() {
            return self.stopped;
        }
        signal_group(self.pgid, Signal::TERM);
        let end = Instant::now() + STOP_GRACE;
        let st = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    signal_group(self.pgid, Signal::KILL);
                    break self.child.wait().ok();
                }
            }
        };
        // The group may hold helpers the leader started: make sure none survive.
        signal_group(self.pgid, Signal::KILL);
        forget(self.pgid);
        self.stopped = st;
        st
    }

    /// Kills at once (a peer leaving abruptly, as churn does): no goodbye, no stats file.
    pub fn kill(&mut self) {
        signal_group(self.pgid, Signal::KILL);
        self.stopped = self.child.wait().ok();
        forget(self.pgid);
    }

    /// The peer leaves: gracefully (SIGTERM, it says goodbye and writes its stats) or abruptly (SIGKILL,
    /// as a user pulling the plug, right after a SIGUSR1 so its stats up to that moment are on disk).
    pub fn leave(&mut self, graceful: bool) {
        if graceful {
            self.stop();
        } else {
            if self.running() {
                let _ = self.request_stats();
            }
            self.kill();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stopped.is_none() {
            self.stop();
        }
    }
}

/// What a finished tool run gave.
#[derive(Debug)]
pub struct ToolRun {
    /// Exit status; `None` when it was killed for taking too long.
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Each stdout line with the time it arrived, counted from the client's start (its first result's
    /// arrival, for clients that print results as they come).
    pub lines: Vec<(Duration, String)>,
    /// The last line of its stderr (the one-line reason on failure).
    pub reason: String,
    /// When it started and ended, relative to `epoch`.
    pub started: Duration,
    /// End time relative to `epoch`.
    pub ended: Duration,
}

impl ToolRun {
    /// True on exit status 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Wall time of the run.
    pub fn elapsed(&self) -> Duration {
        self.ended.saturating_sub(self.started)
    }
}

/// Runs a client to completion (own process group), killing it after `timeout`.
pub fn run_tool(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    epoch: Instant,
) -> Result<ToolRun> {
    let out_path = log.with_extension("out");
    let mut out_file = std::fs::File::create(&out_path)?;
    cmd.stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?);
    let started = epoch.elapsed();
    let t0 = Instant::now();
    let (mut child, pgid) = spawn_grouped(&mut cmd)?;
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines are stamped as they arrive: a client that prints each hit when it comes tells us when the
    // user would have seen it. A copy goes to the `.out` file for debugging.
    let reader = std::thread::spawn(move || {
        use std::io::Write;
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(out_file, "{line}");
            lines.push((t0.elapsed(), line));
        }
        lines
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // SIGTERM first: a client stopped this way still writes its stats file.
                signal_group(pgid, Signal::TERM);
                let grace = Instant::now() + Duration::from_secs(2);
                while Instant::now() < grace && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                signal_group(pgid, Signal::KILL);
                let _ = child.wait();
                break None;
            }
            Err(e) => {
                signal_group(pgid, Signal::KILL);
                let _ = child.wait();
                forget(pgid);
                let _ = reader.join();
                return Err(anyhow!("waiting for {:?}: {e}", cmd.get_program()));
            }
        }
    };
    let ended = epoch.elapsed();
    signal_group(pgid, Signal::KILL);
    forget(pgid);
    let lines = reader.join().unwrap_or_default();
    let reason = if status.is_none() {
        format!("timed out after {timeout:?}")
    } else {
        tail_of(log)
    };
    let stdout = lines.iter().fold(String::new(), |mut acc, (_, l)| {
        acc.push_str(l);
        acc.push('\n');
        acc
    });
    Ok(ToolRun {
        status,
        stdout,
        lines,
        reason,
        started,
        ended,
    })
}

/// Last non-empty line of a log file.
fn tail_of(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_timeout_kills_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30"]);
        let r = run_tool(
            cmd,
            &dir.path().join("t.log"),
            Duration::from_millis(100),
            Instant::now(),
        )
        .unwrap();
        assert!(r.status.is_none());
        assert!(r.reason.contains("timed out"));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hi; echo oops >&2; exit 3"]);
        let r = run_tool(
            cmd,
            &dir.path().join("u.log"),
            Duration::from_secs(10),
            Instant::now(),
        )
        .unwrap();
        assert!(!r.ok());
        assert_eq!(r.stdout, "hi\n");
        assert_eq!(r.reason, "oops");
        // Lines are stamped on arrival: the second comes after the pause.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; sleep 0.3; echo two"]);
        let r = run_tool(
            cmd,
            &dir.path().join("v.log"),
            Duration::from_secs(10),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(r.lines.len(), 2);
        assert_eq!(r.lines[1].1, "two");
        assert!(
            r.lines[1].0 >= r.lines[0].0 + Duration::from_millis(250),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn daemon_readiness_and_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"echo '{"event":"listening","proto":"tcp","addr":"127.0.0.1:9"}'; exec sleep 30"#,
        ]);
        let mut d = Daemon::spawn(
            "sleeper",
            cmd,
            &dir.path().join("d.log"),
            dir.path().join("s.json"),
            1,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(d.addr().port(), 9);
        assert!(d.running());
        d.stop();
        assert!(!d.running());

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo dying >&2; exit 4"]);
        let e = Daemon::spawn(
            "dier",
            cmd,
            &dir.path().join("e.log"),
            dir.path().join("s.json"),
            1,
            Duration::from_secs(10),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("dier exited") && e.contains("dying"), "{e}");
    }
}
