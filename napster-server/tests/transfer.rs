//! Multi-process transfer tests (notes §8 cases 8–10): a real server, sharing clients (one firewalled) and
//! downloading clients, all on loopback.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;

use support::{Daemon, Raw, DEADLINE};

/// Content that starts with digits, so a reader that takes "digits until a non-digit" as the size fails.
fn content(n: usize) -> Vec<u8> {
    let mut v = b"123456789".to_vec();
    v.extend((0..n).map(|i| (i * 31 % 251) as u8));
    v
}

fn serve(server: &Daemon, nick: &str, share: &Path, data: &Path, firewalled: bool) -> Daemon {
    serve_with(server, nick, share, data, firewalled, &[])
}

fn serve_with(
    server: &Daemon,
    nick: &str,
    share: &Path,
    data: &Path,
    firewalled: bool,
    extra: &[&str],
) -> Daemon {
    let addr = server.addr().to_string();
    let mut args = vec![
        "--server",
        addr.as_str(),
        "--nick",
        nick,
        "--share",
        share.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    if firewalled {
        args.push("--firewalled");
    }
    args.extend_from_slice(extra);
    args.push("serve");
    support::client(&args)
}

fn get(
    server: &Daemon,
    nick: &str,
    query: &str,
    out: &Path,
    data: &Path,
    extra: &[&str],
) -> (bool, serde_json::Value, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_napster-client"));
    cmd.args([
        "--server",
        &server.addr().to_string(),
        "--nick",
        nick,
        "--json",
        "--data-dir",
    ])
    .arg(data)
    .args(extra)
    .args(["get", query, "--out"])
    .arg(out)
    .env("RUST_LOG", "warn");
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(child);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_with_deadline(mut child: std::process::Child) -> std::process::Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > DEADLINE * 3 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("napster-client did not finish in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn s8_8_download_with_get_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(share.join("Beatles")).unwrap();
    let data = content(300_000);
    std::fs::write(share.join("Beatles").join("Beatles - Hey Jude.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let _alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);

    let out = dir.path().join("bob-out");
    let (ok, v, err) = get(
        &server,
        "bob",
        "hey jude",
        &out,
        &dir.path().join("bob"),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(v["method"], "get");
    assert_eq!(v["from"], "alice");
    assert_eq!(
        std::fs::read(out.join("Beatles - Hey Jude.mp3")).unwrap(),
        data
    );

    // Resume: a partial file from an earlier attempt is continued at its length.
    let out = dir.path().join("carol-out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("Beatles - Hey Jude.mp3.part"), &data[..100_000]).unwrap();
    let (ok, v, err) = get(
        &server,
        "carol",
        "jude",
        &out,
        &dir.path().join("carol"),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(v["offset"], 100_000);
    assert_eq!(v["fetched"], data.len() as u64 - 100_000);
    assert_eq!(
        std::fs::read(out.join("Beatles - Hey Jude.mp3")).unwrap(),
        data
    );

    // Counters back down once alice's 221s arrive (waited for: they race the watcher's whois). That they
    // go up at all is checked by `the_clients_report_218_to_221_while_a_transfer_runs`.
    let mut w = Raw::login(server.addr(), "watcher", 6699);
    wait_counts(&mut w, "alice", ("0", "0"));
}

#[test]
fn s8_9_firewalled_uploader_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let data = content(150_000);
    std::fs::write(share.join("Yesterday.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let _fw = serve(&server, "fw", &share, &dir.path().join("fw"), true);

    let out = dir.path().join("out");
    let (ok, v, err) = get(
        &server,
        "bob",
        "yesterday",
        &out,
        &dir.path().join("bob"),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(v["method"], "push");
    assert_eq!(std::fs::read(out.join("Yesterday.mp3")).unwrap(), data);

    // A firewalled downloader does not even see the firewalled uploader's file ...
    let (ok, _, err) = get(
        &server,
        "fw2",
        "yesterday",
        &dir.path().join("out2"),
        &dir.path().join("fw2"),
        &["--firewalled"],
    );
    assert!(!ok && err.contains("no results"), "{err}");
    // ... and a direct 203 gets the firewallerror 204.
    let mut raw = Raw::login(server.addr(), "fw3", 0);
    raw.send(203, "fw \"Yesterday.mp3\"");
    let r = raw.until(204);
    assert!(r.last().unwrap().1.contains(" firewallerror "), "{r:?}");
}

#[test]
fn s8_10_peer_errors() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("song.mp3"), content(1000)).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);
    let ask = |req: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(alice.addr()).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"1");
        // GET and its request line in one segment, as TekNap sends them.
        s.write_all(req).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        reply
    };
    assert_eq!(ask(b"GETbob \"nothere.mp3\" 0"), "FILE NOT SHARED");
    assert_eq!(
        ask(b"GETbob \"song.mp3\" 0"),
        "INVALID REQUEST",
        "no 607/608 came first"
    );
    assert_eq!(ask(b"SENDbob \"song.mp3\" 1000"), "FILE NOT REQUESTED");
    assert_eq!(ask(b"HELLO"), "INVALID REQUEST");
}

#[test]
fn upload_and_download_rate_caps_are_honoured() {
    const RATE: f64 = 32.0 * 1024.0;
    let dir = tempfile::tempdir().unwrap();
    let (share, share2) = (dir.path().join("share"), dir.path().join("share2"));
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(&share2).unwrap();
    let data = content(96 * 1024);
    std::fs::write(share.join("capped.mp3"), &data).unwrap();
    std::fs::write(share2.join("free.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    // At the cap, the file takes its size over the rate, less the limiter's initial burst (a tenth
    // of a second's worth); the bound below leaves that and some slack out. A lower bound only.
    let floor = (data.len() as f64 / RATE - 0.2) * 0.95;

    // Downloads `query` as `nick` and checks the file and the lower bound on its transfer time.
    let fetch = |nick: &str, query: &str, extra: &[&str], what: &str| {
        let out = dir.path().join(format!("{nick}-out"));
        let (ok, v, err) = get(&server, nick, query, &out, &dir.path().join(nick), extra);
        assert!(ok, "{err}");
        assert_eq!(
            std::fs::read(out.join(format!("{query}.mp3"))).unwrap(),
            data
        );
        let took = v["transfer_secs"].as_f64().unwrap();
        assert!(
            took >= floor,
            "{what} cap not honoured: {took} s < {floor} s"
        );
    };
    let _up = serve_with(
        &server,
        "slowup",
        &share,
        &dir.path().join("up"),
        false,
        &["--upload-rate", "32k"],
    );
    fetch("bob", "capped", &[], "upload");
    let _free = serve(&server, "freeup", &share2, &dir.path().join("free"), false);
    fetch("carol", "free", &["--download-rate", "32k"], "download");
}

/// An MP3 of `frames` MPEG-1 Layer III frames at 192 kbit/s, 48 kHz (576 bytes each) behind a 110-byte
/// ID3v2.3 tag.
fn mp3_file(frames: usize) -> Vec<u8> {
    let mut v = b"ID3\x03\x00\x00\x00\x00\x00\x64".to_vec();
    v.resize(110, 0);
    for i in 0..frames {
        v.extend_from_slice(&[0xFF, 0xFB, 0xB4, 0x00]);
        v.extend((0..572).map(|j| ((i + j) % 7) as u8));
    }
    v
}

#[test]
fn shares_announce_the_mp3_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("real song.mp3"), mp3_file(200)).unwrap();
    std::fs::write(share.join("fake song.mp3"), content(32_000)).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let _alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);
    let mut bob = Raw::login(server.addr(), "bob", 6699);
    let line = |bob: &mut Raw, word: &str| -> String {
        bob.send(200, &format!("FILENAME CONTAINS \"{word}\""));
        let r = bob.until(202);
        assert_eq!(r.len(), 2, "{r:?}");
        r[0].1.clone()
    };
    // 200 frames of 576 bytes at 192 kbit/s: 4.8 s of audio.
    let real = line(&mut bob, "real");
    assert!(real.contains(" 115310 192 48000 4 alice "), "{real}");
    // Not MP3 audio inside: the defaults, with a duration from the size at 128 kbit/s.
    let fake = line(&mut bob, "fake");
    assert!(fake.contains(" 32009 128 44100 2 alice "), "{fake}");
}

#[test]
fn interactive_shell_searches_browses_and_gets() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let data = content(20_000);
    std::fs::write(share.join("Hey Jude.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let _alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_napster-client"))
        .args([
            "--server",
            &server.addr().to_string(),
            "--nick",
            "shelly",
            "--json",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("shelly"))
        .args(["interactive", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"search jude\nbrowse alice\nbogus\nget nothing here\nget hey jude\nquit\n")
        .unwrap();
    let done = wait_with_deadline(child);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The readiness line, then one line per command that prints.
    assert!(lines[0].contains("\"listening\""), "{stdout}");
    let hits: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(hits[0]["nick"], "alice", "{stdout}");
    let files: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(files[0]["path"], "Hey Jude.mp3", "{stdout}");
    assert!(lines[3].starts_with("error: no results"), "{stdout}");
    let got: serde_json::Value = serde_json::from_str(lines[4]).unwrap();
    assert_eq!(got["from"], "alice");
    assert_eq!(std::fs::read(out.join("Hey Jude.mp3")).unwrap(), data);
}

#[test]
fn queued_unrelated_notices_do_not_fail_a_search_or_a_get() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let data = content(20_000);
    std::fs::write(share.join("Beatles - Hey Jude.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &["--max-shared", "1"]);
    let _alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);
    // Dave shares three files on a one-file server: two "You may not share more than 1 files" notices
    // are queued before his search and his 203 go out.
    let many = dir.path().join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..3 {
        std::fs::write(many.join(format!("song {i}.mp3")), b"x").unwrap();
    }
    let out = dir.path().join("dave-out");
    let share_arg = ["--share", many.to_str().unwrap()];
    let (ok, v, err) = get(
        &server,
        "dave",
        "hey jude",
        &out,
        &dir.path().join("dave"),
        &share_arg,
    );
    assert!(ok, "{err}");
    assert_eq!(v["from"], "alice");
    assert_eq!(
        std::fs::read(out.join("Beatles - Hey Jude.mp3")).unwrap(),
        data
    );
    // With no match the failure is "no results", not the share-cap notice.
    let (ok, _, err) = get(
        &server,
        "erin",
        "nothing matches this",
        &out,
        &dir.path().join("erin"),
        &share_arg,
    );
    assert!(!ok);
    assert!(
        err.contains("no results") && !err.contains("share more"),
        "{err}"
    );
}

/// Downloads and uploads (fields 6 and 7 of a 604) of `nick`, asked with a whois; None while not online.
fn transfer_counts(w: &mut Raw, nick: &str) -> Option<(String, String)> {
    w.send(603, nick);
    let r = w.recv().unwrap();
    if r.0 == 404 {
        return None;
    }
    assert_eq!(r.0, 604, "{r:?}");
    let f = napster_server::codec::fields::split(&r.1).unwrap();
    Some((f[6].to_owned(), f[7].to_owned()))
}

/// Waits until `nick`'s whois shows `want` (downloads, uploads).
fn wait_counts(w: &mut Raw, nick: &str, want: (&str, &str)) {
    let start = std::time::Instant::now();
    loop {
        let got = transfer_counts(w, nick);
        if got
            .as_ref()
            .is_some_and(|g| (g.0.as_str(), g.1.as_str()) == want)
        {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{nick}: whois shows {got:?}, never {want:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_clients_report_218_to_221_while_a_transfer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let data = content(64 * 1024);
    std::fs::write(share.join("slow song.mp3"), &data).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    // A capped upload keeps the transfer running for about two seconds.
    let _alice = serve_with(
        &server,
        "alice",
        &share,
        &dir.path().join("alice"),
        false,
        &["--upload-rate", "32k"],
    );
    let mut w = Raw::login(server.addr(), "watcher", 6699);
    let out = dir.path().join("bob-out");
    std::thread::scope(|s| {
        let getter = s.spawn(|| {
            get(
                &server,
                "bob",
                "slow song",
                &out,
                &dir.path().join("bob"),
                &[],
            )
        });
        // 218 from the downloader and 220 from the uploader while the bytes flow.
        wait_counts(&mut w, "bob", ("1", "0"));
        wait_counts(&mut w, "alice", ("0", "1"));
        let (ok, _, err) = getter.join().unwrap();
        assert!(ok, "{err}");
    });
    assert_eq!(std::fs::read(out.join("slow song.mp3")).unwrap(), data);
    // 221 brings alice back to zero (bob has logged off, so only alice can be asked).
    wait_counts(&mut w, "alice", ("0", "0"));
}

/// Runs a one-shot `napster-client` command as `nick` (`args` go between the global options and the
/// subcommand's end): success, stdout, stderr.
fn run_client(server: &Daemon, nick: &str, data: &Path, args: &[&str]) -> (bool, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_napster-client"))
        .args(["--server", &server.addr().to_string(), "--nick", nick])
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_deadline(child);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The stats JSON a client wrote on exit.
fn stats_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Count `dir` (`in_count`/`out_count`) of message type `t` in a stats record (0 when never seen).
fn msgs(stats: &serde_json::Value, t: &str, dir: &str) -> u64 {
    stats["messages"][t][dir].as_u64().unwrap_or(0)
}

/// §8.10: a file shared and then removed from disk gets TekNap's `FILE NOT FOUND`, the downloader fails
/// with it, and the uploader counts a refused upload (and starts none).
#[test]
fn a_shared_file_removed_from_disk_gets_file_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("Doomed Song.mp3"), content(10_000)).unwrap();
    std::fs::write(share.join("Kept Song.mp3"), content(500)).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let stats = dir.path().join("alice-stats.json");
    let mut alice = serve_with(
        &server,
        "alice",
        &share,
        &dir.path().join("alice"),
        false,
        &["--stats-file", stats.to_str().unwrap()],
    );
    std::fs::remove_file(share.join("Doomed Song.mp3")).unwrap();
    let out = dir.path().join("out");
    let (ok, _, err) = get(
        &server,
        "bob",
        "doomed song",
        &out,
        &dir.path().join("bob"),
        &[],
    );
    assert!(!ok, "{err}");
    assert!(err.contains("alice refused: FILE NOT FOUND"), "{err}");
    assert!(!out.join("Doomed Song.mp3").exists());
    // The other file is still served.
    let (ok, _, err) = get(
        &server,
        "carol",
        "kept song",
        &out,
        &dir.path().join("carol"),
        &[],
    );
    assert!(ok, "{err}");
    alice.terminate(DEADLINE).unwrap();
    let t = &stats_of(&stats)["transfers"];
    assert_eq!(t["uploads_refused"], 1, "{t}");
    assert_eq!(t["uploads_started"], 1, "{t}");
    assert_eq!(t["uploads_completed"], 1, "{t}");
}

/// "Pings the hosts that have the file and picks the best": four users share the same file. `mute`
/// (a raw connection announcing T3+) heads the search results but answers no ping; `slow` is capped and
/// announces a modem; `gone` announces T3+ but its data port is unreachable (it listens on 127.0.0.2
/// while the server hands out 127.0.0.1); `fast` announces DSL. The getter must ping all four, try
/// `gone` first (answered, fastest line), fail over to `fast`, and never ask `slow` or `mute`. The
/// uploaders' own stats say who was asked and who served.
#[test]
fn get_pings_ranks_and_fails_over_to_the_best_reachable_source() {
    const NAME: &str = "Common Song.mp3";
    let dir = tempfile::tempdir().unwrap();
    let data = content(20_000);
    let server = support::server(&dir.path().join("srv"), &[]);
    let mut mute = Raw::login_as(server.addr(), "mute", 6699, 10);
    mute.send(
        100,
        &format!(
            "\"C:\\share\\{NAME}\" 00000000000000000000000000000000 {} 128 44100 1",
            data.len()
        ),
    );
    assert_eq!(mute.drain(), vec![]);
    let sharer = |nick: &str, extra: &[&str]| {
        let share = dir.path().join(format!("{nick}-share"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join(NAME), &data).unwrap();
        let stats = dir.path().join(format!("{nick}-stats.json"));
        let mut args = vec!["--stats-file", stats.to_str().unwrap()];
        args.extend_from_slice(extra);
        let d = serve_with(&server, nick, &share, &dir.path().join(nick), false, &args);
        (d, stats)
    };
    let mut sharers = [
        sharer("slow", &["--speed", "3", "--upload-rate", "16k"]),
        sharer("gone", &["--speed", "10", "--data-listen", "127.0.0.2:0"]),
        sharer("fast", &["--speed", "8"]),
    ];
    let out = dir.path().join("out");
    let (ok, v, err) = get(
        &server,
        "getter",
        "common song",
        &out,
        &dir.path().join("getter"),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(v["from"], "fast", "{err}");
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
    // mute was pinged but never asked for the file.
    let seen = mute.drain();
    assert!(seen.contains(&(751, "getter".into())), "{seen:?}");
    assert!(!seen.iter().any(|f| f.0 == 607), "{seen:?}");
    let stats: Vec<serde_json::Value> = sharers
        .iter_mut()
        .map(|(d, path)| {
            d.terminate(DEADLINE).unwrap();
            stats_of(path)
        })
        .collect();
    let [slow, gone, fast] = &stats[..] else {
        unreachable!()
    };
    for s in [slow, gone, fast] {
        assert_eq!(msgs(s, "751", "in_count"), 1, "pinged once: {s}");
        assert_eq!(msgs(s, "752", "out_count"), 1, "answered: {s}");
    }
    assert_eq!(msgs(gone, "607", "in_count"), 1, "gone was asked first");
    assert_eq!(gone["transfers"]["uploads_started"], 0);
    assert_eq!(msgs(fast, "607", "in_count"), 1);
    assert_eq!(fast["transfers"]["uploads_completed"], 1);
    assert_eq!(fast["transfers"]["upload_bytes"], data.len() as u64);
    assert_eq!(msgs(slow, "607", "in_count"), 0, "slow was never asked");
    assert_eq!(slow["transfers"]["uploads_started"], 0);
}

/// The client's register path on a `--registered-only` server, and the search table: sharer and
/// searcher register with `--register EMAIL` (type 6), log in again later with their password (type 2),
/// a wrong password or a guest gets the server's reason as a one-line failure, and `search` without
/// `--json` prints the header and one aligned row per result.
#[test]
fn client_registers_on_a_registered_only_server_and_prints_a_search_table() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(share.join("Beatles")).unwrap();
    std::fs::write(share.join("Beatles").join("Hey Jude.mp3"), content(5000)).unwrap();
    std::fs::write(share.join("Hey Jude (live).mp3"), content(123_456)).unwrap();
    let server = support::server(
        &dir.path().join("srv"),
        &["--registered-only", "--ghost-kill-secs", "0"],
    );
    let _alice = serve_with(
        &server,
        "alice",
        &share,
        &dir.path().join("alice"),
        false,
        &["--register", "alice@lab"],
    );
    let bob_data = dir.path().join("bob");
    let (ok, stdout, err) = run_client(
        &server,
        "bob",
        &bob_data,
        &["--register", "bob@lab", "search", "hey jude"],
    );
    assert!(ok, "{err}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.remove(0),
        "USER               SIZE  KBPS  PATH",
        "{stdout}"
    );
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            r"alice              5009   128  Beatles\Hey Jude.mp3",
            r"alice            123465   128  Hey Jude (live).mp3",
        ],
        "{stdout}"
    );
    assert!(err.contains("2 result(s)"), "{err}");
    // Registered now: a plain login with the password works, a wrong one is refused.
    let (ok, stdout, err) = run_client(&server, "bob", &bob_data, &["search", "live"]);
    assert!(ok, "{err}");
    assert_eq!(stdout.lines().count(), 2, "header and one row: {stdout}");
    assert!(err.contains("1 result(s)"), "{err}");
    let (ok, _, err) = run_client(
        &server,
        "bob",
        &bob_data,
        &["--password", "nope", "search", "live"],
    );
    refused(ok, &err, "login refused: Invalid Password");
    let (ok, _, err) = run_client(&server, "stranger", &bob_data, &["search", "live"]);
    refused(
        ok,
        &err,
        "login refused: This server is for registered users only",
    );
    let (ok, _, err) = run_client(
        &server,
        "alice",
        &bob_data,
        &["--register", "x@y", "search", "live"],
    );
    refused(ok, &err, "login refused: Nick registered to another user");
}

/// A client run failed with one line on stderr that names `napster-client` and ends with `reason`.
fn refused(ok: bool, stderr: &str, reason: &str) {
    let line = stderr.trim();
    assert!(
        !ok && line.lines().count() == 1
            && line.starts_with("napster-client")
            && line.ends_with(reason),
        "want a one-line failure ending in {reason:?}, got {stderr:?}"
    );
}

/// The stats files list the overlay links (a client's session with the server): a sharing client lists
/// the server it dialled, the server lists the client's socket as incoming, and a download from the
/// client is a transfer, not a link. Once the client stops, the server's next snapshot no longer lists
/// it (the union `neighbours_seen` still does).
#[test]
fn stats_list_the_client_server_links_and_not_the_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("Linked - Song.mp3"), content(20_000)).unwrap();
    let (ss, cs) = (
        dir.path().join("server.json"),
        dir.path().join("alice.json"),
    );
    let server = support::server(
        &dir.path().join("srv"),
        &["--stats-file", ss.to_str().unwrap()],
    );
    let server_addr = server.addr().to_string();
    let mut alice = serve_with(
        &server,
        "alice",
        &share,
        &dir.path().join("alice"),
        false,
        &["--stats-file", cs.to_str().unwrap()],
    );
    let (ok, _, err) = get(
        &server,
        "bob",
        "linked song",
        &dir.path().join("bob-out"),
        &dir.path().join("bob"),
        &[],
    );
    assert!(ok, "{err}");
    // SIGUSR1 asks for a fresh file; the condition is polled until it holds.
    let now = |d: &Daemon, p: &Path| {
        d.signal(10).unwrap();
        common::stats::StatsSnapshot::read_json(p).ok()
    };
    let mut last = None;
    let alice_links = integration::eventually(DEADLINE, || {
        last = now(&alice, &cs);
        last.as_ref().is_some_and(|s| {
            s.transfers.uploads_completed == 1
                && s.neighbours_seen.len() == 1
                && s.neighbours == s.neighbours_seen
                && s.neighbours[0].addr == server_addr
                && s.neighbours[0].dir == "out"
                && s.neighbours[0].kind == "server"
        })
    });
    assert!(
        alice_links,
        "{:?}",
        last.as_ref().map(|s| &s.neighbours_seen)
    );
    let server_links = integration::eventually(DEADLINE, || {
        last = now(&server, &ss);
        // alice is still online; bob's session ended with his client.
        last.as_ref().is_some_and(|s| {
            s.neighbours.len() == 1
                && s.neighbours[0].dir == "in"
                && s.neighbours[0].kind == "client"
                && s.neighbours_seen.len() == 2
        })
    });
    assert!(
        server_links,
        "{:?}",
        last.as_ref().map(|s| &s.neighbours_seen)
    );
    alice.terminate(DEADLINE).unwrap();
    let gone = integration::eventually(DEADLINE, || {
        last = now(&server, &ss);
        last.as_ref().is_some_and(|s| s.neighbours.is_empty())
    });
    assert!(gone, "{:?}", last.as_ref().map(|s| &s.neighbours));
}
