//! The guide's convention for every binary: on failure, exit non-zero with a **one-line** reason on stderr
//! (`<binary>: <what failed>: <why>`), not anyhow's `Error:` + "Caused by:" list or a backtrace.
//!
//! Each case below makes a real binary fail at run time (not a clap usage error) with logging off
//! (`RUST_LOG=off`) and backtraces on (`RUST_BACKTRACE=1`, so a `main` returning `anyhow::Result` would show
//! one), and checks the whole of stderr.

use std::path::Path;
use std::time::Duration;

use integration::{bin_path, free_port, run_program};

/// Runs `bin args` with logging off and backtraces requested; returns (exit success, stderr).
fn fail(bin: &str, args: &[&str]) -> (bool, String) {
    let exe = bin_path(bin);
    let exe = exe.to_str().expect("utf-8 path");
    let mut full = vec!["RUST_LOG=off", "RUST_BACKTRACE=1", exe];
    full.extend_from_slice(args);
    let out = run_program(Path::new("/usr/bin/env"), &full, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("running {bin}: {e:#}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts the failure is one line naming the binary and containing `expect`, with no cause repeated.
fn assert_one_line(bin: &str, args: &[&str], expect: &str) {
    let (ok, err) = fail(bin, args);
    assert!(!ok, "{bin} {args:?} succeeded; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{bin} {args:?}: stderr is not one line:\n{err}"
    );
    let line = lines[0];
    assert!(
        line.starts_with(&format!("{bin}: ")),
        "{bin} {args:?}: reason does not start with the binary's name: {line}"
    );
    assert!(
        line.contains(expect),
        "{bin} {args:?}: {line:?} lacks {expect:?}"
    );
    let parts: Vec<&str> = line.split(": ").collect();
    assert!(
        parts.windows(2).all(|w| w[0] != w[1]),
        "{bin} {args:?}: a cause is printed twice: {line}"
    );
}

#[test]
fn bittorrent_peer_fails_in_one_line() {
    assert_one_line(
        "bittorrent-peer",
        &["show", "/nonexistent/x.torrent"],
        "/nonexistent/x.torrent",
    );
}

#[test]
fn napster_binaries_fail_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let data_dir = file.join("data");
    assert_one_line(
        "napster-server",
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        "data directory",
    );
    let closed = format!("127.0.0.1:{}", free_port());
    assert_one_line(
        "napster-client",
        &["--nick", "lab", "--server", &closed, "search", "x"],
        &closed,
    );
}

#[test]
fn gnutella_node_fails_in_one_line() {
    assert_one_line(
        "gnutella-node",
        &["--listen", "127.0.0.1:0", "--share", "/nonexistent/share"],
        "/nonexistent/share",
    );
}

#[test]
fn kazaa_binaries_fail_in_one_line() {
    let closed = format!("127.0.0.1:{}", free_port());
    assert_one_line(
        "kazaa-supernode",
        &[
            "--listen",
            "127.0.0.1:0",
            "--role",
            "ordinary",
            "--peer",
            &closed,
            "--share",
            "/nonexistent/share",
        ],
        "/nonexistent/share",
    );
    // A supernode shares nothing: a --share it would ignore is refused rather than silently dropped.
    assert_one_line(
        "kazaa-supernode",
        &["--listen", "127.0.0.1:0", "--share", "/nonexistent/share"],
        "--share",
    );
    assert_one_line(
        "kazaa-supernode",
        &["search", "--peer", &closed, "x"],
        &closed,
    );
}

#[test]
fn tracker_fails_in_one_line() {
    assert_one_line(
        "tracker",
        &[
            "--listen",
            "127.0.0.1:0",
            "--allow-list",
            "/nonexistent/allow",
        ],
        "/nonexistent/allow",
    );
}

#[test]
fn swarm_fails_in_one_line() {
    assert_one_line(
        "swarm",
        &["run", "/nonexistent/scenario.toml"],
        "/nonexistent/scenario.toml",
    );
}
