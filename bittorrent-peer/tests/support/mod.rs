//! BitTorrent-specific test helpers: our binary started through the shared `integration` harness, a
//! tiny in-test HTTP tracker that records every announce, torrent creation and payload generation.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use integration::payload;
use integration::Daemon;

pub const BIN: &str = env!("CARGO_BIN_EXE_bittorrent-peer");

/// Starts our binary with `args` through the shared harness (waits for the readiness line, kills the
/// process group on drop).
pub fn start_peer(args: &[&str]) -> Daemon {
    Daemon::builder_path(BIN)
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("bittorrent-peer {args:?}: {e:#}"))
}

/// `bittorrent-peer seed T --dir DIR --listen 127.0.0.1:0 --quiet EXTRA...`
pub fn seeder(t: &str, dir: &str, extra: &[&str]) -> Daemon {
    let mut a = vec![
        "seed",
        t,
        "--dir",
        dir,
        "--listen",
        "127.0.0.1:0",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    start_peer(&a)
}

/// `bittorrent-peer download T --out OUT --peer PEER --listen 127.0.0.1:0 --quiet EXTRA...`
pub fn leecher(t: &str, out: &str, peer: &str, extra: &[&str]) -> Daemon {
    let mut a = vec!["download", t, "--out", out, "--peer", peer];
    a.extend_from_slice(&["--listen", "127.0.0.1:0", "--quiet"]);
    a.extend_from_slice(extra);
    start_peer(&a)
}

/// Runs `download T --out OUT --peer PEER --no-trackers --listen 127.0.0.1:0 --quiet --json EXTRA...` to
/// the end, checks it succeeded and returns its JSON summary (the last stdout line).
pub fn download_summary(t: &str, out: &str, peer: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["download", t, "--out", out, "--peer", peer, "--no-trackers"];
    a.extend_from_slice(&["--listen", "127.0.0.1:0", "--quiet", "--json"]);
    a.extend_from_slice(extra);
    let o = integration::run_program(Path::new(BIN), &a, Duration::from_secs(60)).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().expect("a summary line")).unwrap()
}

/// Runs `bittorrent-peer create` and returns the torrent path.
pub fn make_torrent(content: &Path, out: &Path, tracker: Option<&str>, piece: u64) -> PathBuf {
    let mut args = vec![
        "create".to_owned(),
        content.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.push("--piece-size".into());
    args.push(piece.to_string());
    if let Some(t) = tracker {
        args.push("--tracker".into());
        args.push(t.into());
    }
    let o = Command::new(BIN).args(&args).output().expect("run create");
    assert!(
        o.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.to_path_buf()
}

/// A one-file torrent under `dir`: `dir/src/NAME` holds `len` bytes of `payload(len, seed)` and
/// `dir/NAME.torrent` describes it. Returns (the content folder, the bytes, the torrent path).
pub fn one_file_torrent(
    dir: &Path,
    name: &str,
    len: usize,
    seed: u64,
    tracker: Option<&str>,
    piece: u64,
) -> (PathBuf, Vec<u8>, PathBuf) {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = payload(len, seed);
    std::fs::write(src.join(name), &data).unwrap();
    let t = make_torrent(
        &src.join(name),
        &dir.join(format!("{name}.torrent")),
        tracker,
        piece,
    );
    (src, data, t)
}

/// Announces a tiny HTTP tracker saw: (info_hash escaped, port, event).
pub type Announces = Arc<Mutex<Vec<(String, u16, String)>>>;

/// A minimal HTTP tracker for tests: remembers (info_hash, 127.0.0.1:port) and answers every
/// announce with the other peers of the torrent, compact. Runs until the test process ends.
pub fn mini_tracker() -> (String, Announces) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind tracker");
    let url = format!("http://{}/announce", l.local_addr().unwrap());
    let log: Announces = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut swarms: HashMap<String, Vec<u16>> = HashMap::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let query = target.split_once('?').map(|x| x.1).unwrap_or("");
            let mut ih = String::new();
            let mut port = 0u16;
            let mut event = String::new();
            for kv in query.split('&') {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                match k {
                    "info_hash" => ih = v.to_ascii_lowercase(),
                    "port" => port = v.parse().unwrap_or(0),
                    "event" => event = v.to_owned(),
                    _ => {}
                }
            }
            // Normalise the escaping: decode then re-encode as hex.
            let raw: Vec<u8> = percent_encoding::percent_decode_str(&ih).collect();
            let key = hex::encode(raw);
            seen.lock()
                .unwrap()
                .push((key.clone(), port, event.clone()));
            let list = swarms.entry(key).or_default();
            if event == "stopped" {
                list.retain(|p| *p != port);
            } else if !list.contains(&port) {
                list.push(port);
            }
            let mut peers = Vec::new();
            for p in list.iter().filter(|p| **p != port) {
                peers.extend_from_slice(&[127, 0, 0, 1]);
                peers.extend_from_slice(&p.to_be_bytes());
            }
            let mut body = format!(
                "d8:completei0e10:incompletei0e8:intervali20e5:peers{}:",
                peers.len()
            )
            .into_bytes();
            body.extend_from_slice(&peers);
            body.push(b'e');
            let mut resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            resp.extend_from_slice(&body);
            let _ = s.write_all(&resp);
        }
    });
    (url, log)
}
