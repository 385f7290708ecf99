//! The hashing progress bar appears when stderr is a terminal and nothing is drawn when it is not.
//!
//! The test re-runs this test binary's ignored `progress_helper` in a child process: once with stderr on a
//! pipe, once inside a pseudo-terminal made by `script` (util-linux, in Debian's essential `bsdutils`).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::hash::HashKinds;
use common::library::{Library, LibraryConfig, Progress};

const SHARE_ENV: &str = "P2PLAB_TEST_PROGRESS_SHARE";

/// Run only as a child of the tests below: opens a library on `$P2PLAB_TEST_PROGRESS_SHARE` with the
/// automatic progress policy.
#[test]
#[ignore = "helper run in a child process by the tests in this file"]
fn progress_helper() {
    let share = std::env::var(SHARE_ENV).expect("run by the progress tests");
    let lib = Library::open(
        LibraryConfig::new(share)
            .kinds(HashKinds {
                sha1: true,
                ..HashKinds::default()
            })
            .progress(Progress::Auto),
    )
    .unwrap();
    assert_eq!(lib.last_report().hashed, 3);
}

fn share() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        fs::write(dir.path().join(format!("f{i}.bin")), vec![i as u8; 300_000]).unwrap();
    }
    dir
}

/// Kills the child if the test fails or times out.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits at most 60 s; returns (success, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "child did not finish in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(child.0.stdin.take());
    let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    (status.success(), out, err)
}

fn helper_args() -> [&'static str; 4] {
    ["--ignored", "--exact", "progress_helper", "--nocapture"]
}

#[test]
fn no_progress_output_when_stderr_is_not_a_terminal() {
    let dir = share();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(helper_args()).env(SHARE_ENV, dir.path());
    let (ok, out, err) = run(cmd);
    assert!(ok, "helper failed: {out}\n{err}");
    assert!(out.contains("1 passed"), "helper did not run: {out}");
    assert!(
        !err.contains("hashing"),
        "progress drawn on a pipe: {err:?}"
    );
    assert!(!err.contains('\u{1b}'), "escape codes on a pipe: {err:?}");
}

#[test]
fn progress_bar_is_drawn_on_a_terminal() {
    let dir = share();
    let exe = std::env::current_exe().unwrap();
    let line = format!("{} {}", quote(&exe), helper_args().join(" "));
    let mut cmd = Command::new("script");
    // -q: no banner; -e: child's exit status; -c: the command; /dev/null: no typescript file.
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env(SHARE_ENV, dir.path());
    let (ok, out, err) = run(cmd);
    assert!(ok, "helper under script failed: {out}\n{err}");
    assert!(out.contains("1 passed"), "helper did not run: {out}");
    assert!(
        out.contains("hashing 3 files"),
        "no progress bar on a terminal: {out:?}"
    );
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}
