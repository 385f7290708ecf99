//! Multi-process transfer tests on 127.0.0.1 (real `gnutella-node` processes via `integration::Daemon`,
//! killed on drop):
//!
//! - alternate locations: a download that starts with one known source finishes with sources it learned
//!   only from that source's `X-Alt`, verified by SHA-1;
//! - `get` with no known source finds them with a `urn:sha1:` re-query through its ultrapeer;
//! - `--upload-rate` and `--download-rate` hold (a lower bound on the time of a capped transfer);
//! - a flash crowd: twelve leaves search for and download one file from one (capped) source at once, all
//!   finish and verify.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gnutella_node::codec::message::sha1_urn;
use integration::{payload, Daemon};

const BIN: &str = "gnutella-node";
/// Longest any client process in these tests may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn node(share: Option<&Path>, extra: &[&str]) -> Daemon {
    let mut a: Vec<String> = vec!["--listen".into(), "127.0.0.1:0".into()];
    if let Some(s) = share {
        a.push("--share".into());
        a.push(s.display().to_string());
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    Daemon::builder(BIN)
        .args(&a)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("gnutella-node starts")
}

fn share(root: &Path, dir: &str, name: &str, data: &[u8]) -> PathBuf {
    let d = root.join(dir);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), data).unwrap();
    d
}

fn urn_of(data: &[u8]) -> String {
    sha1_urn(&common::hash::sha1(data).0)
}

/// Runs the binary to completion; panics with its stderr when it fails. Returns the JSON lines of stdout.
fn run(args: &[String]) -> Vec<serde_json::Value> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = integration::run_tool(BIN, &a, TOOL_TIMEOUT).expect("gnutella-node runs");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        panic!(
            "gnutella-node {args:?} failed ({}): ...\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `get --urn ... --size ... --source ...` into `out`; returns its `downloaded` report.
fn get(
    urn: &str,
    size: usize,
    sources: &[SocketAddr],
    out: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    a.extend(["get", "--json", "--urn", urn, "--name", "f.bin"].map(String::from));
    a.extend([
        "--size".into(),
        size.to_string(),
        "--out".into(),
        out.display().to_string(),
    ]);
    for s in sources {
        a.extend(["--source".into(), s.to_string()]);
    }
    run(&a)
        .into_iter()
        .find(|v| v["event"] == "downloaded")
        .expect("a downloaded line")
}

fn head_of(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "HEAD {path} HTTP/1.0\r\n{headers}\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    all
}

/// Searches through `up` until a hit for `words` arrives (the leaf's QRP table has reached the ultrapeer).
fn wait_searchable(up: &str, words: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let lines = run(&[
            "--peer".into(),
            up.into(),
            "search".into(),
            words.into(),
            "--json".into(),
            "--timeout".into(),
            "1".into(),
        ]);
        if lines.iter().any(|h| h["event"] == "hit") {
            return;
        }
        assert!(Instant::now() < end, "{words:?} never became searchable");
    }
}

#[test]
fn a_download_finishes_with_sources_learned_only_from_x_alt() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(512 * 1024, 7);
    let urn = urn_of(&data);
    // A is slow (alone it would need about 4 s); B and C are fast. Nobody is linked to anybody.
    let a = node(
        Some(&share(tmp.path(), "a", "song.bin", &data)),
        &["--upload-rate", "128k"],
    );
    let b = node(Some(&share(tmp.path(), "b", "song.bin", &data)), &[]);
    let c = node(Some(&share(tmp.path(), "c", "song.bin", &data)), &[]);

    // A first downloader knows all three and, like gtk-gnutella, tells each source about the others.
    let first = get(
        &urn,
        data.len(),
        &[a.addr(), b.addr(), c.addr()],
        &tmp.path().join("d1"),
        &[],
    );
    assert_eq!(first["sources"], 3);
    assert_eq!(std::fs::read(tmp.path().join("d1/f.bin")).unwrap(), data);

    // A now names B and C in X-Alt on every reply for that file (and never itself).
    let head = head_of(a.addr(), &format!("/uri-res/N2R?{urn}"), "");
    let x_alt = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-alt:"))
        .unwrap_or_else(|| panic!("no X-Alt in {head}"));
    for s in [&b, &c] {
        assert!(x_alt.contains(&s.addr().to_string()), "{x_alt}");
    }
    assert!(!x_alt.contains(&a.addr().to_string()), "{x_alt}");

    // The second downloader is told only about A, joins no network (no re-query is possible), and still
    // ends up fetching from B and C.
    let second = get(&urn, data.len(), &[a.addr()], &tmp.path().join("d2"), &[]);
    assert_eq!(second["sources"], 1, "{second}");
    assert!(second["from_alt"].as_u64().unwrap() >= 2, "{second}");
    let learned_bytes: u64 = second["per_source"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| !s["url"].as_str().unwrap().contains(&a.addr().to_string()))
        .map(|s| s["bytes"].as_u64().unwrap())
        .sum();
    assert!(
        learned_bytes > 0,
        "nothing came from the X-Alt sources: {second}"
    );
    assert_eq!(second["sha1"], urn.as_str());
    let got = std::fs::read(tmp.path().join("d2/f.bin")).unwrap();
    assert_eq!(urn_of(&got), urn);
}

#[test]
fn get_without_a_source_finds_them_by_urn_requery() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(200 * 1024, 5);
    let urn = urn_of(&data);
    let up = node(None, &[]);
    let up_addr = up.addr().to_string();
    let _src = node(
        Some(&share(tmp.path(), "src", "requeried thing.bin", &data)),
        &["--leaf", "--peer", &up_addr],
    );
    wait_searchable(&up_addr, "requeried thing");
    let r = get(
        &urn,
        data.len(),
        &[],
        &tmp.path().join("d"),
        &["--peer", &up_addr],
    );
    assert_eq!(r["sources"], 0, "{r}");
    assert!(r["requeries"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["from_requery"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(std::fs::read(tmp.path().join("d/f.bin")).unwrap(), data);
}

#[test]
fn upload_and_download_rate_caps_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(256 * 1024, 11);
    let urn = urn_of(&data);
    let rate = 128 * 1024;
    // 256 KiB at 128 KiB/s with a burst of a tenth of a second: at least about 1.9 s.
    let least = Duration::from_millis(1600);

    let capped = node(
        Some(&share(tmp.path(), "capped", "x.bin", &data)),
        &["--upload-rate", "128k"],
    );
    let t = Instant::now();
    get(
        &urn,
        data.len(),
        &[capped.addr()],
        &tmp.path().join("u"),
        &[],
    );
    let up = t.elapsed();
    assert!(up >= least, "an upload capped at {rate} B/s took {up:?}");

    let free = node(Some(&share(tmp.path(), "free", "x.bin", &data)), &[]);
    let t = Instant::now();
    get(
        &urn,
        data.len(),
        &[free.addr()],
        &tmp.path().join("d"),
        &["--download-rate", "128k"],
    );
    let down = t.elapsed();
    assert!(
        down >= least,
        "a download capped at {rate} B/s took {down:?}"
    );
    assert_eq!(std::fs::read(tmp.path().join("d/f.bin")).unwrap(), data);
}

#[test]
fn a_flash_crowd_of_twelve_leaves_all_finish_from_one_source() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(512 * 1024, 23);
    let urn = urn_of(&data);
    let up = node(None, &[]);
    let up_addr = up.addr().to_string();
    // One source, capped so the downloads overlap and its upload slots (4) run out.
    let src_dir = share(tmp.path(), "src", "release candidate.bin", &data);
    let _src = node(
        Some(&src_dir),
        &[
            "--leaf",
            "--peer",
            &up_addr,
            "--upload-rate",
            "2M",
            "--upload-slots",
            "4",
        ],
    );
    wait_searchable(&up_addr, "release candidate");
    let t = Instant::now();
    let crowd: Vec<_> = (0..12)
        .map(|i| {
            let out = tmp.path().join(format!("leaf{i}"));
            let up_addr = up_addr.clone();
            std::thread::spawn(move || {
                let lines = run(&[
                    "--peer".into(),
                    up_addr,
                    "search".into(),
                    "release candidate".into(),
                    "--json".into(),
                    "--timeout".into(),
                    "5".into(),
                    "--download".into(),
                    out.display().to_string(),
                ]);
                (out, lines)
            })
        })
        .collect();
    for h in crowd {
        let (out, lines) = h.join().expect("a crowd member");
        let done = lines
            .iter()
            .find(|v| v["event"] == "downloaded")
            .unwrap_or_else(|| panic!("no download in {lines:?}"));
        assert_eq!(done["sha1"], urn.as_str());
        let got = std::fs::read(out.join("release candidate.bin")).unwrap();
        assert_eq!(urn_of(&got), urn);
    }
    eprintln!("flash crowd of 12 done in {:?}", t.elapsed());
}
