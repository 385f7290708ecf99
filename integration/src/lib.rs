//! Test harness for multi-process and interop tests.
//!
//! [`Daemon`] starts one of the workspace's binaries (or any program) in its own process group, waits for its
//! readiness line(s) (`{"event":"listening",...}`, see [`common::telemetry`]) with a deadline, exposes the bound
//! addresses, keeps its stdout lines, sends its stderr to a log file, and kills the whole process group on drop, so a
//! failing test never leaves a process behind. [`run_tool`] runs a client to completion with a timeout.
//!
//! Binaries are found with [`bin_path`]: the `target/<profile>/` directory this test executable was built into.
//! `scripts/test.sh` runs `cargo build --workspace --bins` before the tests so they exist and are fresh; when a binary
//! is missing, [`bin_path`] builds it once with `cargo build --bin` (works under nextest and when run by hand).
//!
//! [`Daemon::stats_now`] asks a daemon for a fresh stats snapshot (SIGUSR1, then its `--stats-file`).
//! [`ports::PortBlock`] hands out fixed ports to third-party programs that cannot listen on port 0, and
//! [`netns::Netns`] gives a test its own network namespace joined to the host by a veth pair.
//!
//! [`capture::Capture`] records loopback traffic with `dumpcap` and decodes it with `tshark` for the "Wireshark
//! decodes our traffic" tests.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub mod capture;
pub mod netns;
pub mod ports;
pub use common::stats::StatsSnapshot;
pub use common::telemetry::Listening;

/// Default time a daemon gets to print its readiness line(s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A generous time for [`Daemon::stats_now`]: a daemon answers SIGUSR1 in milliseconds, but a test machine
/// compiling in parallel can stall any process for seconds.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(10);

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration crate lives in the workspace root")
        .to_path_buf()
}

/// `target/<profile>` for the test executable that is running (tests live in `target/<profile>/deps/`).
pub fn target_profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = deps.parent() {
                    return profile.to_path_buf();
                }
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// Path of a workspace binary such as `"tracker"`, building it once if it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let dir = target_profile_dir();
    let path = dir.join(name);
    if path.exists() {
        return path;
    }
    let built = BUILT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(name) {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(workspace_root())
            .args(["build", "--quiet", "--bin", name]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "cargo build --bin {name} failed");
        built.insert(name.to_owned());
    }
    assert!(
        path.exists(),
        "{} does not exist after building",
        path.display()
    );
    path
}

/// How to start a daemon.
#[derive(Debug, Clone)]
pub struct DaemonBuilder {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    dir: Option<PathBuf>,
    expect: usize,
    timeout: Duration,
    label: String,
}

impl DaemonBuilder {
    /// Names the daemon in its log folder and in error messages (defaults to the binary's name); useful when a
    /// test starts several daemons of one binary.
    pub fn label(mut self, label: &str) -> Self {
        self.label = label.to_owned();
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Working directory of the child.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// How many readiness lines to wait for (default 1; 0 = do not wait).
    pub fn expect_listening(mut self, n: usize) -> Self {
        self.expect = n;
        self
    }

    /// Deadline for the readiness lines.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the process and waits for its readiness lines.
    pub fn spawn(self) -> Result<Daemon> {
        let logdir = tempfile::Builder::new()
            .prefix(&format!("p2plab-{}-", self.label))
            .tempdir()?;
        let log_path = logdir.path().join("stderr.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(d) = &self.dir {
            cmd.current_dir(d);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(ev) = Listening::parse(&line) {
                        let _ = tx.send(ev);
                    }
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let stats_file = stats_file_of(&self.args, &self.envs).map(|p| match &self.dir {
            Some(d) if p.is_relative() => d.join(p),
            _ => p,
        });
        let mut daemon = Daemon {
            child,
            label: self.label,
            stats_file,
            listening: Vec::new(),
            stdout: lines,
            log_path,
            _logdir: logdir,
        };
        let deadline = Instant::now() + self.timeout;
        while daemon.listening.len() < self.expect {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(ev) => daemon.listening.push(ev),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = daemon.child.try_wait()? {
                        bail!(
                            "{} exited ({status}) before it was ready; stderr:\n{}",
                            daemon.label,
                            daemon.log_tail(40)
                        );
                    }
                    if left.is_zero() {
                        bail!(
                            "{} printed {} of {} readiness lines within {:?}; stderr:\n{}",
                            daemon.label,
                            daemon.listening.len(),
                            self.expect,
                            self.timeout,
                            daemon.log_tail(40)
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = daemon.child.wait()?;
                    bail!(
                        "{} closed stdout ({status}) before it was ready; stderr:\n{}",
                        daemon.label,
                        daemon.log_tail(40)
                    );
                }
            }
        }
        Ok(daemon)
    }
}

/// A running daemon; killed with its process group on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    label: String,
    stats_file: Option<PathBuf>,
    /// The readiness lines seen so far, in order.
    pub listening: Vec<Listening>,
    stdout: Arc<Mutex<Vec<String>>>,
    log_path: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Daemon {
    /// A builder for a workspace binary (see [`bin_path`]).
    pub fn builder(bin: &str) -> DaemonBuilder {
        Self::builder_path(bin_path(bin))
    }

    /// A builder for any program.
    pub fn builder_path(program: impl Into<PathBuf>) -> DaemonBuilder {
        let program = program.into();
        let label = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "daemon".into());
        DaemonBuilder {
            program,
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            expect: 1,
            timeout: READY_TIMEOUT,
            label,
        }
    }

    /// Starts workspace binary `bin` with `args` and waits for one readiness line.
    pub fn spawn(bin: &str, args: &[&str]) -> Result<Daemon> {
        Self::builder(bin).args(args).spawn()
    }

    /// The first listening address.
    pub fn addr(&self) -> SocketAddr {
        self.listening
            .first()
            .expect("daemon printed a readiness line")
            .addr
    }

    /// The address of the socket with protocol `proto` (`"tcp"`/`"udp"`) and, if given, name `name`.
    pub fn addr_of(&self, proto: &str, name: Option<&str>) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|l| l.proto == proto && (name.is_none() || l.name.as_deref() == name))
            .map(|l| l.addr)
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stdout lines printed so far (readiness lines included).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Path of the file collecting the daemon's stderr (its logs).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `n` lines of the daemon's stderr.
    pub fn log_tail(&self, n: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends a signal to the daemon (not its group).
    pub fn signal(&self, sig: i32) -> Result<()> {
        let pid = i32::try_from(self.child.id())?;
        let rc = sys::kill(pid, sig);
        if rc != 0 {
            return Err(anyhow!(
                "kill({pid}, {sig}) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; SIGKILL after that. Returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.child.try_wait()? {
            return Ok(st);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill_group();
                let st = self.child.wait()?;
                bail!(
                    "{} did not stop within {timeout:?} of SIGTERM (killed: {st})",
                    self.label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.label);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The stats file the daemon was started with: the value of its `--stats-file` argument (as
    /// [`common::daemon::DaemonArgs`] takes it, `--stats-file PATH` or `--stats-file=PATH`), else of
    /// `P2PLAB_STATS_FILE` set with [`DaemonBuilder::env`]; relative to [`DaemonBuilder::current_dir`].
    pub fn stats_file(&self) -> Option<&Path> {
        self.stats_file.as_deref()
    }

    /// A stats snapshot taken now: removes the daemon's [stats file](Self::stats_file), sends SIGUSR1
    /// ([`common::daemon::install_signals`] writes the file on it) and waits up to `timeout` for the file
    /// to come back. The file is written atomically (temporary file + rename), so one that is there parses
    /// whole; it must also say it was taken after the signal (its `started_unix_ms + uptime_ms`), so an
    /// earlier snapshot never passes for a fresh one.
    ///
    /// Fails when the daemon has no stats file, has exited, or writes none in time (with its last log
    /// lines).
    pub fn stats_now(&self, timeout: Duration) -> Result<StatsSnapshot> {
        let path = self.stats_file.as_deref().ok_or_else(|| {
            anyhow!(
                "{} was started without --stats-file: it has no stats to ask for",
                self.label
            )
        })?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => {}
        }
        // Both clocks are read to whole milliseconds on each side (the daemon's start and uptime, our
        // signal time): a snapshot taken just after the signal can read up to 2 ms before it.
        let asked_ms = unix_ms().saturating_sub(2);
        self.signal(libc::SIGUSR1)?;
        let deadline = Instant::now() + timeout;
        let mut stale = None;
        loop {
            match StatsSnapshot::read_json(path) {
                Ok(snap) if snap.started_unix_ms + snap.uptime_ms >= asked_ms => return Ok(snap),
                // A write begun before the signal (someone else's SIGUSR1) landed after the removal:
                // ours follows it.
                Ok(snap) => stale = Some(asked_ms - (snap.started_unix_ms + snap.uptime_ms)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Written with a rename, a file that is there is whole: this is not a race.
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("{}: reading its stats file {}", self.label, path.display())
                    })
                }
            }
            if self.has_exited() {
                bail!(
                    "{} exited before writing {}; stderr:\n{}",
                    self.label,
                    path.display(),
                    self.log_tail(40)
                );
            }
            if Instant::now() >= deadline {
                let found = match stale {
                    Some(ms) => format!(" (only a snapshot taken {ms} ms before the signal)"),
                    None => String::new(),
                };
                bail!(
                    "{} wrote no {} within {timeout:?} of SIGUSR1{found}; stderr:\n{}",
                    self.label,
                    path.display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Self::stats_now`] with [`STATS_TIMEOUT`], panicking with the reason: what a test wants.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats_now(STATS_TIMEOUT)
            .unwrap_or_else(|e| panic!("asking for stats: {e:#}"))
    }

    /// Whether the process has ended (a zombie not yet reaped), seen through `/proc` so that `&self`
    /// suffices: reaping it needs `&mut` ([`Child::try_wait`]).
    fn has_exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) {
            // `pid (comm) STATE ...`: comm may hold spaces and parentheses, the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
            Err(_) => true,
        }
    }

    fn kill_group(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            sys::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last stderr lines of {} ---\n{}",
                self.label,
                self.log_tail(40)
            );
        }
        self.kill_group();
        let _ = self.child.wait();
    }
}

/// The stats file a daemon's command line names: the last `--stats-file PATH` / `--stats-file=PATH` in
/// `args`, else `P2PLAB_STATS_FILE` in `envs` (clap's precedence: the command line wins).
fn stats_file_of(args: &[String], envs: &[(String, String)]) -> Option<PathBuf> {
    const FLAG: &str = "--stats-file";
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == FLAG {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(FLAG).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
        .or_else(|| {
            envs.iter()
                .rev()
                .find(|(k, _)| k == "P2PLAB_STATS_FILE")
                .map(|(_, v)| v.clone())
        })
        .map(PathBuf::from)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The one system call the harness needs that std does not offer: signalling a process group.
#[allow(unsafe_code)]
mod sys {
    pub(crate) fn kill(pid: i32, sig: i32) -> i32 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) }
    }
}

/// Polls `f` every 50 ms until it returns true or `limit` has passed (then asks once more); returns the last
/// answer. For waiting on a condition with a deadline instead of sleeping a fixed time.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Waits until the file at `path` holds exactly `want` (a download compared byte for byte with the
/// original), reading it every 100 ms; panics naming `what` when it does not within `limit`.
pub fn wait_for_file(path: &Path, want: &[u8], limit: Duration, what: &str) {
    let end = Instant::now() + limit;
    while std::fs::read(path).ok().as_deref() != Some(want) {
        assert!(
            Instant::now() < end,
            "{what}: {} never matched the original within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deterministic pseudo-random test content (xorshift64 seeded from `seed`): the same `(len, seed)` always gives
/// the same bytes, and different seeds give unrelated bytes (distinct hashes for distinct files).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A port free for TCP and UDP, for third-party programs that cannot listen on port 0 and report the port
/// they got (ours always can: prefer `--listen 127.0.0.1:0` and [`Daemon::addr`]). It comes from this
/// process's [`ports::PortBlock`], below the ephemeral range, so no port-0 bind of a parallel test takes it
/// before the program binds it.
pub fn free_port() -> u16 {
    ports::PortBlock::of_process().port()
}

/// A blocking TCP connection to `to` from the loopback address `from` (`127.0.0.2`, ...), for tests of
/// per-IP rules (bans, clone limits): the socket is bound to `from` before it connects, which std's
/// `TcpStream` cannot do, so tokio's `TcpSocket` does it on a throwaway current-thread runtime.
pub fn connect_from(
    to: SocketAddr,
    from: std::net::Ipv4Addr,
) -> std::io::Result<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let s = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::from((from, 0)))?;
        sock.connect(to).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Runs a workspace binary to completion with a timeout (killing it after), capturing its output.
pub fn run_tool(bin: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    run_program(&bin_path(bin), args, timeout)
}

/// Runs any program to completion with a timeout (killing its process group after), capturing its output.
pub fn run_program(program: &Path, args: &[&str], timeout: Duration) -> Result<Output> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(timeout).is_err() {
            sys::kill(-pid, libc::SIGKILL);
        }
    });
    let out = child.wait_with_output()?;
    let _ = tx.send(());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_readiness_and_kills_on_drop() {
        // A shell pretending to be a daemon: prints a readiness line, then sleeps.
        let d = Daemon::builder_path("/bin/sh")
            .args([
                "-c",
                r#"echo '{"event":"listening","proto":"udp","addr":"127.0.0.1:9","name":"x"}'; echo hello; exec sleep 60"#,
            ])
            .spawn()
            .unwrap();
        assert_eq!(d.addr(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(d.addr_of("udp", Some("x")), Some(d.addr()));
        assert_eq!(d.addr_of("tcp", None), None);
        let pid = d.pid() as i32;
        drop(d);
        assert_ne!(sys::kill(pid, 0), 0, "process group was killed");
    }

    #[test]
    fn early_exit_is_reported_with_stderr() {
        let err = Daemon::builder_path("/bin/sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .spawn()
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn missing_readiness_times_out() {
        let err = Daemon::builder_path("/bin/sh")
            .args(["-c", "exec sleep 30"])
            .timeout(Duration::from_millis(300))
            .spawn()
            .unwrap_err();
        assert!(format!("{err:#}").contains("readiness"), "{err:#}");
    }

    /// A shell standing in for a daemon with `--stats-file`: on SIGUSR1 it writes (temporary file and
    /// rename, as `Stats::write_json` does) a snapshot whose time is its clock now minus `age_ms`.
    fn stats_daemon(dir: &Path, age_ms: u64) -> Daemon {
        let mut snap =
            serde_json::to_value(common::stats::Stats::new("test", "node", "sh").snapshot())
                .unwrap();
        snap["started_unix_ms"] = 0.into();
        snap["uptime_ms"] = 0.into();
        let json = snap.to_string();
        let (pre, post) = json.split_once(r#""uptime_ms":0"#).expect("the field");
        let script = r#"
            trap 'printf "%s\"uptime_ms\":%s%s" "$PRE" $(( $(date +%s%3N) - AGE )) "$POST" > "$2.tmp" && mv "$2.tmp" "$2"' USR1
            echo '{"event":"listening","proto":"tcp","addr":"127.0.0.1:9"}'
            while :; do sleep 1 & wait $!; done"#
            .replace("AGE", &age_ms.to_string());
        let file = dir.join("stats.json");
        Daemon::builder_path("/bin/sh")
            .args(["-c", &script, "sh", "--stats-file", file.to_str().unwrap()])
            .env("PRE", pre)
            .env("POST", post)
            .spawn()
            .unwrap()
    }

    #[test]
    fn stats_now_reads_a_snapshot_written_after_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let d = stats_daemon(dir.path(), 0);
        assert_eq!(
            d.stats_file(),
            Some(dir.path().join("stats.json").as_path())
        );
        let first = d.stats_now(STATS_TIMEOUT).unwrap();
        assert_eq!((first.proto.as_str(), first.node.as_str()), ("test", "sh"));
        let second = d.stats_now(STATS_TIMEOUT).unwrap();
        assert!(second.uptime_ms >= first.uptime_ms);
    }

    #[test]
    fn stats_now_refuses_a_snapshot_older_than_the_signal() {
        let dir = tempfile::tempdir().unwrap();
        let d = stats_daemon(dir.path(), 60_000);
        let err = d.stats_now(Duration::from_millis(500)).unwrap_err();
        assert!(format!("{err:#}").contains("before the signal"), "{err:#}");
    }

    #[test]
    fn stats_now_fails_without_a_stats_file_or_once_the_daemon_is_gone() {
        let d = Daemon::builder_path("/bin/sh")
            .args([
                "-c",
                r#"echo '{"event":"listening","proto":"tcp","addr":"127.0.0.1:9"}'; exec sleep 60"#,
            ])
            .spawn()
            .unwrap();
        let err = d.stats_now(STATS_TIMEOUT).unwrap_err();
        assert!(
            format!("{err:#}").contains("without --stats-file"),
            "{err:#}"
        );
        // SIGUSR1's default action ends this one: reported as an exit, not after the whole timeout.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.json");
        let d = Daemon::builder_path("/bin/sh")
            .args([
                "-c",
                r#"echo '{"event":"listening","proto":"tcp","addr":"127.0.0.1:9"}'; exec sleep 60"#,
            ])
            .args(["sh", "--stats-file", file.to_str().unwrap()])
            .spawn()
            .unwrap();
        let err = d.stats_now(Duration::from_secs(600)).unwrap_err();
        assert!(format!("{err:#}").contains("exited"), "{err:#}");
    }

    #[test]
    fn the_stats_file_comes_from_the_arguments_then_the_environment() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let env = vec![("P2PLAB_STATS_FILE".to_owned(), "env.json".to_owned())];
        let of = |a: &[&str], e: &[(String, String)]| stats_file_of(&args(a), e);
        assert_eq!(
            of(&["seed", "--stats-file", "a.json"], &[]),
            Some("a.json".into())
        );
        assert_eq!(
            of(&["--stats-file=b.json", "-q"], &env),
            Some("b.json".into())
        );
        assert_eq!(of(&["--listen", "x"], &env), Some("env.json".into()));
        assert_eq!(of(&["--", "--stats-file", "c.json"], &[]), None);
        assert_eq!(of(&["--stats-file"], &[]), None);
        assert_eq!(of(&["--stats-filex", "d"], &[]), None);
    }

    #[test]
    fn wait_for_file_waits_for_the_exact_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"partial").unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(path, b"complete").unwrap();
            })
        };
        wait_for_file(&path, b"complete", STATS_TIMEOUT, "the writer");
        writer.join().unwrap();
        let other = std::panic::catch_unwind(|| {
            wait_for_file(&path, b"other", Duration::from_millis(200), "nobody")
        });
        assert!(
            other.is_err(),
            "a content never written is not waited for forever"
        );
    }

    #[test]
    fn run_program_times_out_and_kills() {
        let t = Instant::now();
        let out =
            run_program(Path::new("/bin/sleep"), &["30"], Duration::from_millis(200)).unwrap();
        assert!(!out.status.success());
        assert!(t.elapsed() < Duration::from_secs(20));
    }
}
