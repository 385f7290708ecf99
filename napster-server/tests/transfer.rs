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

/// A sharing client whose stats go to `<dir>/<nick>-stats.json` on exit; its data folder is
/// `<dir>/<nick>`.
fn serve_stats(
    server: &Daemon,
    nick: &str,
    share: &Path,
    dir: &Path,
    extra: &[&str],
) -> (Daemon, std::path::PathBuf) {
    let stats = dir.join(format!("{nick}-stats.json"));
    let mut args = vec!["--stats-file", stats.to_str().unwrap()];
    args.extend_from_slice(extra);
    let d = serve_with(server, nick, share, &dir.join(nick), false, &args);
    (d, stats)
}

/// `<dir>/share` holding `files` (name, content).
fn share_folder(dir: &Path, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    for (name, data) in files {
        std::fs::write(share.join(name), data).unwrap();
    }
    share
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

/// `nick` gets `query` into a fresh folder that already holds the first `at` bytes of `data` as
/// `<name>.part` (left by an earlier attempt); the transfer must start there, by `method`, and end with
/// the whole file.
#[allow(clippy::too_many_arguments)]
fn resume(
    server: &Daemon,
    dir: &Path,
    nick: &str,
    query: &str,
    name: &str,
    data: &[u8],
    at: usize,
    method: &str,
) {
    let out = dir.join(format!("{nick}-out"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join(format!("{name}.part")), &data[..at]).unwrap();
    let (ok, v, err) = get(server, nick, query, &out, &dir.join(nick), &[]);
    assert!(ok, "{err}");
    assert_eq!(v["method"], method, "{v}");
    assert_eq!(v["offset"], at, "{v}");
    assert_eq!(v["fetched"], data.len() - at, "{v}");
    assert_eq!(std::fs::read(out.join(name)).unwrap(), data);
    assert!(!out.join(format!("{name}.part")).exists());
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
    let name = "Beatles - Hey Jude.mp3";
    resume(
        &server,
        dir.path(),
        "carol",
        "jude",
        name,
        &data,
        100_000,
        "get",
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
    assert_eq!(v["offset"], 0);
    assert_eq!(std::fs::read(out.join("Yesterday.mp3")).unwrap(), data);

    // Resume by push: the offset answering the SEND comes from the partial file.
    let name = "Yesterday.mp3";
    resume(
        &server,
        dir.path(),
        "carol",
        "yesterday",
        name,
        &data,
        60_000,
        "push",
    );

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

/// The 500/501 push at the byte level in both directions, with the test as the other peer (notes §3).
/// Our firewalled uploader `fw` and a raw downloader `dl`: 203 gets the port-0 204, 500 makes the server
/// send fw a 607 and then a 501, fw connects to dl's port, waits for `1`, sends `SENDfw "<path>" <size>`,
/// takes the offset dl answers (100) and sends exactly the bytes from there. Our downloader `bob` and a
/// raw firewalled uploader `fwraw`: bob's `get` sends the 500; the test answers the 607 with 608, reads
/// bob's address from the 501, connects, gets `1`, sends `SEND`, reads bob's offset `0` and sends the
/// file, which bob stores whole.
#[test]
fn firewalled_push_with_a_raw_peer_on_either_side() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(30_000);
    let share = share_folder(dir.path(), &[("Pushed.mp3", &data)]);
    let server = support::server(&dir.path().join("srv"), &[]);
    let _fw = serve(&server, "fw", &share, &dir.path().join("fw"), true);
    let dl_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut dl = Raw::login(server.addr(), "dl", dl_port.local_addr().unwrap().port());
    dl.send(203, "fw \"Pushed.mp3\"");
    assert_eq!(download_ack(&dl.until(204))[2], "0", "fw is firewalled");
    dl.send(500, "fw \"Pushed.mp3\"");
    let mut s = accept_within(&dl_port);
    s.write_all(b"1").unwrap();
    let req = read_peer_request(&mut s);
    assert_eq!(req.command, napster_server::codec::peer::PeerCommand::Send);
    assert_eq!(
        (req.nick.as_str(), req.path.as_str(), req.number),
        ("fw", "Pushed.mp3", data.len() as u64)
    );
    s.write_all(b"100").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, &data[100..]);

    let data = content(25_000);
    let mut fwraw = Raw::login(server.addr(), "fwraw", 0);
    let wire_path = r"C:\fw\Raw Push.mp3";
    raw_share(&mut fwraw, wire_path, data.len());
    let out = dir.path().join("bob-out");
    std::thread::scope(|scope| {
        let getter = scope.spawn(|| {
            let extra = ["--ping-window-ms", "0"];
            get(
                &server,
                "bob",
                "raw push",
                &out,
                &dir.path().join("bob"),
                &extra,
            )
        });
        fwraw.until(607);
        fwraw.send(608, &format!("bob \"{wire_path}\""));
        let r = fwraw.until(501);
        // 501 <downloader> <ip> <port> "<path>" <md5> <speed>
        let f = napster_server::codec::fields::split(&r.last().unwrap().1).unwrap();
        assert_eq!((f[0], f[3]), ("bob", wire_path), "{r:?}");
        let ip = napster_server::codec::ip::from_wire(f[1].parse().unwrap());
        let mut s = std::net::TcpStream::connect((ip, f[2].parse::<u16>().unwrap())).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"1");
        s.write_all(format!("SENDfwraw \"{wire_path}\" {}", data.len()).as_bytes())
            .unwrap();
        s.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"0", "bob starts at 0");
        s.write_all(&data).unwrap();
        drop(s);
        let (ok, v, err) = getter.join().unwrap();
        assert!(ok, "{err}");
        assert_eq!(
            (v["from"].as_str(), v["method"].as_str()),
            (Some("fwraw"), Some("push")),
            "{v}"
        );
    });
    assert_eq!(std::fs::read(out.join("Raw Push.mp3")).unwrap(), data);
}

/// Connects to a client's data port, checks its `1`, sends `req` (GET and its request line in one
/// segment, as TekNap sends them) and returns everything the uploader sent until it closed.
fn peer_ask(data_port: std::net::SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(data_port).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"1");
    s.write_all(req).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    reply
}

/// [`peer_ask`] for a reply that is text (a refusal).
fn peer_text(data_port: std::net::SocketAddr, req: &[u8]) -> String {
    String::from_utf8_lossy(&peer_ask(data_port, req)).into_owned()
}

/// The fields of the 204 that ends `frames` (a `Raw::until(204)`).
fn download_ack(frames: &[(u16, String)]) -> Vec<String> {
    let (t, text) = frames.last().unwrap();
    assert_eq!(*t, 204, "{frames:?}");
    napster_server::codec::fields::split(text)
        .unwrap()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

/// Like TekNap, the uploader serves a GET only after the server's 607 for that nick and that file, and
/// once per 607 (notes §3): a raw downloader `bob` asks for one song with 203; alice's client answers the
/// 607 with 608 and the server's 204 gives bob her data port. A GET for that song from another nick, and
/// bob's GET for another song she shares, get `INVALID REQUEST` and nothing else; bob's own GET gets the
/// size and the bytes; a second GET reusing the same 607 is refused again. Her stats agree: one 607
/// answered, three refusals, one upload.
#[test]
fn uploads_need_the_607_for_that_nick_and_that_file_and_serve_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3000);
    let share = share_folder(
        dir.path(),
        &[("One Song.mp3", &data), ("Other Song.mp3", &content(500))],
    );
    let server = support::server(&dir.path().join("srv"), &[]);
    let (mut alice, stats) = serve_stats(&server, "alice", &share, dir.path(), &[]);
    let mut bob = Raw::login(server.addr(), "bob", 6699);
    bob.send(203, "alice \"One Song.mp3\"");
    // The 204 comes after alice's 608, which she sends once the grant is recorded.
    let ack = download_ack(&bob.until(204));
    assert_eq!(ack[0], "alice");
    assert_eq!(ack[2], alice.addr().port().to_string());
    assert_eq!(ack[3], "One Song.mp3");
    let at = alice.addr();
    assert_eq!(
        peer_text(at, b"GETmallory \"One Song.mp3\" 0"),
        "INVALID REQUEST",
        "the 607 was for bob"
    );
    assert_eq!(
        peer_text(at, b"GETbob \"Other Song.mp3\" 0"),
        "INVALID REQUEST",
        "the 607 was for the other file"
    );
    let mut want = data.len().to_string().into_bytes();
    want.extend_from_slice(&data);
    assert_eq!(peer_ask(at, b"GETbob \"One Song.mp3\" 0"), want);
    assert_eq!(
        peer_text(at, b"GETbob \"One Song.mp3\" 0"),
        "INVALID REQUEST",
        "one GET per 607"
    );
    alice.terminate(DEADLINE).unwrap();
    let st = stats_of(&stats);
    assert_eq!(msgs(&st, "607", "in_count"), 1, "{st}");
    assert_eq!(msgs(&st, "608", "out_count"), 1, "{st}");
    let t = &st["transfers"];
    assert_eq!(t["uploads_refused"], 3, "{t}");
    assert_eq!(t["uploads_started"], 1, "{t}");
    assert_eq!(t["uploads_completed"], 1, "{t}");
    assert_eq!(t["upload_bytes"], data.len() as u64, "{t}");
}

#[test]
fn s8_10_peer_errors() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("song.mp3"), content(1000)).unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let alice = serve(&server, "alice", &share, &dir.path().join("alice"), false);
    let ask = |req: &[u8]| peer_text(alice.addr(), req);
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
        .write_all(
            b"search jude\nbrowse nobody\nbrowse alice\nbogus\nget nothing here\nget hey jude\nquit\n",
        )
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
    // An unknown nick's browse (210, then 213) fails without ending the next browse early.
    assert_eq!(lines[2], "error: nobody is not online", "{stdout}");
    let files: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
    assert_eq!(files[0]["path"], "Hey Jude.mp3", "{stdout}");
    assert_eq!(files[0]["size"], data.len(), "{stdout}");
    assert!(lines[4].starts_with("error: no results"), "{stdout}");
    let got: serde_json::Value = serde_json::from_str(lines[5]).unwrap();
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

/// Shares `path` of `size` bytes on a raw connection (type 100) and waits until the server has it.
fn raw_share(r: &mut Raw, path: &str, size: usize) {
    r.send(
        100,
        &format!("\"{path}\" 00000000000000000000000000000000 {size} 128 44100 1"),
    );
    assert_eq!(r.drain(), vec![]);
}

/// Accepts one connection on `l` within the deadline.
fn accept_within(l: &std::net::TcpListener) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    let start = std::time::Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(start.elapsed() < DEADLINE, "nobody connected");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads a peer request (GET or SEND and its line) from `s` until it is complete.
fn read_peer_request(s: &mut std::net::TcpStream) -> napster_server::codec::peer::PeerRequest {
    let mut buf = Vec::new();
    loop {
        if let Some(req) = napster_server::codec::peer::parse_request(&buf).unwrap() {
            return req;
        }
        let mut chunk = [0u8; 512];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed mid-request: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// 218–221 as whois shows them, with no race against the transfer: the other end of each transfer is
/// the test, which holds it open until the counter has been seen.
///
/// Downloader: `bob` runs `get`, the uploader `tape` is a raw connection whose data port is the test's
/// listener. The test answers the 607 with 608, serves half the file, waits until whois shows bob
/// downloading (218), then sends the rest; bob's stats show his 218 and 219.
///
/// Uploader: alice's client serves a raw downloader capped at 8 KiB/s for a 512 KiB file (a minute
/// of sending); the test reads the size, waits until whois shows alice uploading (220), then hangs up,
/// and alice's 221 brings her back to 0 with the upload counted as failed.
#[test]
fn the_clients_report_218_to_221_while_a_transfer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = support::server(&dir.path().join("srv"), &[]);
    let mut w = Raw::login(server.addr(), "watcher", 6699);

    let data = content(40_000);
    let tape_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tape = Raw::login(
        server.addr(),
        "tape",
        tape_port.local_addr().unwrap().port(),
    );
    let wire_path = r"C:\tape\Slow Song.mp3";
    raw_share(&mut tape, wire_path, data.len());
    let out = dir.path().join("bob-out");
    let bob_stats = dir.path().join("bob-stats.json");
    std::thread::scope(|scope| {
        let getter = scope.spawn(|| {
            let stats = [
                "--ping-window-ms",
                "0",
                "--stats-file",
                bob_stats.to_str().unwrap(),
            ];
            get(
                &server,
                "bob",
                "slow song",
                &out,
                &dir.path().join("bob"),
                &stats,
            )
        });
        let r = tape.until(607);
        // 607 <downloader> "<path>" <downloader's link speed> (7, the client's default).
        assert_eq!(
            r.last().unwrap().1,
            format!("bob \"{wire_path}\" 7"),
            "{r:?}"
        );
        tape.send(608, &format!("bob \"{wire_path}\""));
        let mut s = accept_within(&tape_port);
        s.write_all(b"1").unwrap();
        let req = read_peer_request(&mut s);
        assert_eq!(
            (req.nick.as_str(), req.path.as_str(), req.number),
            ("bob", wire_path, 0)
        );
        s.write_all(data.len().to_string().as_bytes()).unwrap();
        s.write_all(&data[..20_000]).unwrap();
        wait_counts(&mut w, "bob", ("1", "0"));
        s.write_all(&data[20_000..]).unwrap();
        drop(s);
        let (ok, v, err) = getter.join().unwrap();
        assert!(ok, "{err}");
        assert_eq!(v["from"], "tape", "{v}");
    });
    assert_eq!(std::fs::read(out.join("Slow Song.mp3")).unwrap(), data);
    // Bob has logged off, so his 219 is read from his own stats.
    let st = stats_of(&bob_stats);
    assert_eq!(msgs(&st, "218", "out_count"), 1, "{st}");
    assert_eq!(msgs(&st, "219", "out_count"), 1, "{st}");

    let big = content(512 * 1024);
    let share = share_folder(dir.path(), &[("Long Song.mp3", &big)]);
    let (mut alice, stats) = serve_stats(
        &server,
        "alice",
        &share,
        dir.path(),
        &["--upload-rate", "8k"],
    );
    let mut carol = Raw::login(server.addr(), "carol", 6699);
    carol.send(203, "alice \"Long Song.mp3\"");
    download_ack(&carol.until(204));
    let mut s = std::net::TcpStream::connect(alice.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    s.write_all(b"GETcarol \"Long Song.mp3\" 0").unwrap();
    let size = big.len().to_string();
    let mut head = vec![0u8; size.len() + 1];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head[..size.len()], size.as_bytes());
    wait_counts(&mut w, "alice", ("0", "1"));
    drop(s);
    wait_counts(&mut w, "alice", ("0", "0"));
    alice.terminate(DEADLINE).unwrap();
    let t = &stats_of(&stats)["transfers"];
    assert_eq!(t["uploads_started"], 1, "{t}");
    assert_eq!(t["uploads_failed"], 1, "{t}");
    assert_eq!(t["uploads_completed"], 0, "{t}");
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
    let share = share_folder(
        dir.path(),
        &[
            ("Doomed Song.mp3", &content(10_000)),
            ("Kept Song.mp3", &content(500)),
        ],
    );
    let server = support::server(&dir.path().join("srv"), &[]);
    let (mut alice, stats) = serve_stats(&server, "alice", &share, dir.path(), &[]);
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

/// Starts a sharing client for each `(nick, extra args)`, every one sharing `name` with `data`, each
/// writing its stats to `<nick>-stats.json` on exit.
fn sharers_of(
    server: &Daemon,
    dir: &Path,
    name: &str,
    data: &[u8],
    who: &[(&str, &[&str])],
) -> Vec<(Daemon, std::path::PathBuf)> {
    who.iter()
        .map(|(nick, extra)| {
            let share = share_folder(&dir.join(format!("{nick}-files")), &[(name, data)]);
            serve_stats(server, nick, &share, dir, extra)
        })
        .collect()
}

/// Stops each sharer and returns the stats it wrote.
fn stop_all(sharers: &mut [(Daemon, std::path::PathBuf)]) -> Vec<serde_json::Value> {
    sharers
        .iter_mut()
        .map(|(d, path)| {
            d.terminate(DEADLINE).unwrap();
            stats_of(path)
        })
        .collect()
}

/// "Pings the hosts that have the file and picks the best", with the clock taken out: three users share
/// the same file. `slow` is capped and announces a modem; `gone` announces T3+ but its data port is
/// unreachable (it listens on 127.0.0.2 while the server hands out 127.0.0.1); `fast` announces DSL. The
/// getter's ping window and tie band are as long as the test's deadline, so every pong ties with the
/// fastest whatever the machine's load (all three answer, so the wait ends with the last pong) and the
/// announced link speed alone decides: the getter pings all three, tries `gone` first, fails over to
/// `fast`, and never asks `slow`. How pong times split into bands is `rank_by_pong`'s unit test. The
/// uploaders' own stats say who was asked and who served.
#[test]
fn get_pings_every_source_ranks_by_link_speed_and_fails_over() {
    const NAME: &str = "Common Song.mp3";
    let dir = tempfile::tempdir().unwrap();
    let data = content(20_000);
    let server = support::server(&dir.path().join("srv"), &[]);
    let mut sharers = sharers_of(
        &server,
        dir.path(),
        NAME,
        &data,
        &[
            ("slow", &["--speed", "3", "--upload-rate", "16k"]),
            ("gone", &["--speed", "10", "--data-listen", "127.0.0.2:0"]),
            ("fast", &["--speed", "8"]),
        ],
    );
    let out = dir.path().join("out");
    let wide = DEADLINE.as_millis().to_string();
    let (ok, v, err) = get(
        &server,
        "getter",
        "common song",
        &out,
        &dir.path().join("getter"),
        &["--ping-window-ms", &wide, "--ping-tie-ms", &wide],
    );
    assert!(ok, "{err}");
    assert_eq!(v["from"], "fast", "{err}");
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
    let stats = stop_all(&mut sharers);
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

/// A source that never answers its ping goes after one that did, however fast a line it announces:
/// `mute` (a raw connection announcing T3+) shares the file and answers no ping, `modem` (speed 1)
/// answers. The getter pings both, waits out its window for `mute`, and downloads from `modem`; `mute`
/// never gets a 607. The window is 5 s (the default is 2 s): only a pong relayed through the server
/// taking longer than that could change the order.
#[test]
fn a_source_that_never_answers_the_ping_is_tried_last() {
    const NAME: &str = "Quiet Song.mp3";
    let dir = tempfile::tempdir().unwrap();
    let data = content(5_000);
    let server = support::server(&dir.path().join("srv"), &[]);
    let mut mute = Raw::login_as(server.addr(), "mute", 6699, 10);
    raw_share(&mut mute, &format!(r"C:\share\{NAME}"), data.len());
    let mut sharers = sharers_of(
        &server,
        dir.path(),
        NAME,
        &data,
        &[("modem", &["--speed", "1"])],
    );
    let out = dir.path().join("out");
    let (ok, v, err) = get(
        &server,
        "getter",
        "quiet song",
        &out,
        &dir.path().join("getter"),
        &["--ping-window-ms", "5000"],
    );
    assert!(ok, "{err}");
    assert_eq!(v["from"], "modem", "{err}");
    assert_eq!(std::fs::read(out.join(NAME)).unwrap(), data);
    let seen = mute.drain();
    assert!(seen.contains(&(751, "getter".into())), "{seen:?}");
    assert!(!seen.iter().any(|f| f.0 == 607), "{seen:?}");
    let modem = &stop_all(&mut sharers)[0];
    assert_eq!(msgs(modem, "752", "out_count"), 1, "{modem}");
    assert_eq!(modem["transfers"]["uploads_completed"], 1, "{modem}");
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
    // The browse table: size and path of each file, and a one-line failure for a nick not online.
    let (ok, stdout, err) = run_client(&server, "bob", &bob_data, &["browse", "alice"]);
    assert!(ok, "{err}");
    let mut rows: Vec<&str> = stdout.lines().collect();
    rows.sort_unstable();
    assert_eq!(
        rows,
        [
            r"      5009  Beatles\Hey Jude.mp3",
            r"    123465  Hey Jude (live).mp3"
        ],
        "{stdout}"
    );
    let (ok, _, err) = run_client(&server, "bob", &bob_data, &["browse", "nobody"]);
    refused(ok, &err, "nobody is not online");
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
