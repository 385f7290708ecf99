//! Multi-process tests of `napster-server` over real sockets (notes §8 cases 1–7, 11–15).

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::Raw;

#[test]
fn s8_1_split_packed_zero_length_and_oversized_frames() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    let mut r = Raw::connect(d.addr());
    // A login split across two writes.
    let login = napster_server::codec::Frame::text(2, "alice pw 6699 \"raw\" 4")
        .to_bytes()
        .unwrap();
    r.s.write_all(&login[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    r.s.write_all(&login[3..]).unwrap();
    assert_eq!(r.until(214)[0], (3, "anon@p2p-lab".into()));
    // Three frames in one write, one of them empty.
    let mut packed = Vec::new();
    for (t, p) in [(214u16, ""), (750, ""), (214, "")] {
        packed.extend(napster_server::codec::Frame::text(t, p).to_bytes().unwrap());
    }
    r.s.write_all(&packed).unwrap();
    assert_eq!(r.recv().unwrap().0, 214);
    assert_eq!(r.recv().unwrap().0, 750);
    assert_eq!(r.recv().unwrap().0, 214);
    // A 5000-byte header: disconnected without a reply, and other clients are unaffected.
    let mut bad = Raw::connect(d.addr());
    bad.s.write_all(&[0x88, 0x13, 200, 0]).unwrap();
    assert_eq!(bad.recv(), None);
    r.send(214, "");
    assert_eq!(r.recv().unwrap().0, 214);
}

#[test]
fn s8_2_to_4_login_rules_accounts_persist_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = support::server(dir.path(), &[]);
        let mut r = Raw::connect(d.addr());
        r.send(200, "FILENAME CONTAINS \"x\"");
        assert_eq!(r.recv(), Some((0, "invalid command".into())));
        assert_eq!(r.recv(), None);

        let mut r = Raw::connect(d.addr());
        r.send(7, "teknap2");
        assert_eq!(r.recv(), Some((8, String::new())));
        r.send(6, "teknap2 pw2 6699 \"TekNap\" 0 blah@opennap");
        let g = r.until(214);
        assert_eq!(g[0], (3, "blah@opennap".into()));
        // At least one MOTD line, and nothing but MOTD lines between the ack and the 214.
        assert!(g.len() >= 3, "{g:?}");
        assert!(g[1..g.len() - 1].iter().all(|f| f.0 == 621), "{g:?}");
        r.send(9999, "");
        assert_eq!(r.recv(), Some((404, "Unknown command code 9999".into())));
    }
    // Restarted on the same data directory: the registration survived.
    let d = support::server(dir.path(), &["--ghost-kill-secs", "0"]);
    let mut r = Raw::connect(d.addr());
    r.send(2, "teknap2 wrong 6699 \"TekNap\" 0");
    assert_eq!(r.recv(), Some((0, "Invalid Password".into())));
    assert_eq!(r.recv(), None);
    let mut r = Raw::connect(d.addr());
    r.send(2, "teknap2 pw2 6699 \"TekNap\" 0");
    assert_eq!(r.until(214)[0], (3, "blah@opennap".into()));
    let mut r2 = Raw::connect(d.addr());
    r2.send(6, "teknap2 x 6699 \"TekNap\" 0 e@x");
    assert_eq!(
        r2.recv(),
        Some((0, "Nick registered to another user".into()))
    );
    let stored = std::fs::read_to_string(dir.path().join("accounts.json")).unwrap();
    assert!(
        stored.contains("$argon2id$") && !stored.contains("\"pw2\""),
        "{stored}"
    );
}

#[test]
fn corrupt_account_store_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("accounts.json"), b"{\"version\":1,\"acc").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_napster-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("accounts.json") && err.contains("corrupt"),
        "{err}"
    );
}

#[test]
fn lost_account_store_refuses_to_start_but_a_first_start_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nap");
    let store = data.join("accounts.json");
    // First start: the data directory does not exist yet, so the store and its marker are created.
    drop(support::server(&data, &[]));
    assert!(store.exists() && data.join("accounts.created").exists());
    std::fs::remove_file(&store).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_napster-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("accounts.json is missing") && err.contains("--new-account-store"),
        "{err}"
    );
    assert!(!store.exists());
    // Asked for explicitly, an empty store is created again.
    drop(support::server(&data, &["--new-account-store"]));
    assert!(store.exists());
}

#[test]
fn s8_5_to_7_share_search_browse_over_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    let mut a = Raw::login(d.addr(), "alice", 6699);
    let mut b = Raw::login(d.addr(), "bob", 6699);
    a.send(
        100,
        r#""C:\mp3\Beatles - Hey Jude.mp3" 00000000000000000000000000000000 4000000 128 44100 240"#,
    );
    a.send(
        870,
        r#""C:\mp3" "Cowboy Junkies - Sweet Jane.mp3" 0 3000 192 44100 200"#,
    );
    a.send(214, "");
    assert_eq!(a.recv(), Some((214, "2 2 0".into())));
    b.send(200, r#"FILENAME CONTAINS "jude" MAX_RESULTS 100 "#);
    let r = b.until(202);
    assert_eq!(r.len(), 2);
    assert!(r[0].1.ends_with(" alice 16777343 4"), "{r:?}");
    b.send(200, r#"FILENAME CONTAINS "cow""#);
    assert_eq!(b.until(202).len(), 1);
    b.send(200, r#"FILENAME CONTAINS "x" SIZE "BIGGER" 3"#);
    assert_eq!(
        b.until(202),
        vec![
            (404, "BIGGER: invalid comparison for search".into()),
            (202, String::new())
        ]
    );
    b.send(211, "alice");
    let r = b.until(213);
    assert_eq!(r.len(), 3);
    assert_eq!(r[2], (213, "alice 16777343".into()));
    // 102 carries the raw path, spaces and all, as TekNap sends it to OpenNap.
    a.send(102, r"C:\mp3\Beatles - Hey Jude.mp3");
    a.send(102, r"C:\mp3\Beatles - Hey");
    assert_eq!(a.recv(), Some((404, "Not sharing that file".into())));
    b.send(200, r#"FILENAME CONTAINS "jude""#);
    assert_eq!(b.until(202), vec![(202, String::new())]);
    a.send(110, "");
    assert_eq!(a.recv(), Some((110, "1".into())));
}

#[test]
fn s8_11_to_14_whois_chat_ping_ghost_over_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &["--ghost-kill-secs", "0"]);
    let mut a = Raw::login(d.addr(), "alice", 6699);
    let mut b = Raw::login(d.addr(), "bob", 6699);
    a.send(218, "");
    a.send(220, "");
    // A round trip on alice's connection orders her counters before bob's whois.
    a.send(214, "");
    assert_eq!(a.recv().unwrap().0, 214);
    b.send(603, "alice");
    let w = b.recv().unwrap();
    assert_eq!(w.0, 604);
    assert!(w.1.ends_with(r#" "Active" 0 1 1 4 "raw-test""#), "{w:?}");
    a.send(400, "#lab");
    a.until(410);
    b.send(400, "#lab");
    b.until(410);
    assert_eq!(a.recv(), Some((406, "#lab bob 0 4".into())));
    b.send(402, "#lab hi");
    assert_eq!(a.recv(), Some((403, "#lab bob hi".into())));
    b.send(751, "alice");
    assert_eq!(a.recv(), Some((751, "bob".into())));
    a.send(205, "bob see you");
    assert_eq!(b.until(205).last().unwrap().1, "alice see you");
    // Ghost: same nick from the same IP after the (zero) timer kills the old session with 748.
    let _a2 = Raw::login(d.addr(), "alice", 6699);
    let rest = a.until(748);
    assert_eq!(rest.last().unwrap().0, 748);
    assert_eq!(a.recv(), None);
}

#[test]
fn s8_15_flood_is_throttled_not_disconnected_and_big_share_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &["--flood-commands", "20", "--flood-secs", "1"]);
    let mut a = Raw::login(d.addr(), "alice", 6699);
    let batch = support::frames(
        100,
        (0..5000).map(|i| format!("\"C:\\mp3\\song {i}.mp3\" 0 1000 128 44100 60")),
    );
    a.s.write_all(&batch).unwrap();
    a.send(214, "");
    assert_eq!(a.recv(), Some((214, "1 5000 0".into())));
    // 60 stats requests against a limit of 20 per second: all answered, none lost, still connected.
    let burst = support::frames(214, [""; 60]);
    let start = std::time::Instant::now();
    a.s.write_all(&burst).unwrap();
    for _ in 0..60 {
        assert_eq!(a.recv().unwrap().0, 214);
    }
    // Throttled means the reads were paused at least once for the rest of a window.
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "not throttled"
    );
    // Searches (answered under the shared lock, not by `handle_frame`) count too: 45 of them cannot fit
    // in two windows of 20, so at least one full pause comes between the first and the last answer.
    let burst = support::frames(200, [r#"FILENAME CONTAINS "nomatch""#; 45]);
    let start = std::time::Instant::now();
    a.s.write_all(&burst).unwrap();
    let mut ends = 0;
    while ends < 45 {
        // A search over the pending limit is refused (404) but still ends with its 202.
        match a.recv().unwrap() {
            (202, _) => ends += 1,
            (404, text) => assert_eq!(text, "search failed: too many pending searches"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "searches not throttled"
    );
}

#[test]
fn metaserver_redirects() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = support::server_ready(dir.path(), &["--metaserver", "127.0.0.1:0"], 2);
    let meta = d
        .addr_of("tcp", Some("metaserver"))
        .expect("metaserver readiness line");
    let mut s = std::net::TcpStream::connect(meta).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert_eq!(text, format!("{}\n", d.addr()));
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_others_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let d = support::server(
        dir.path(),
        &[
            "--flood-commands",
            "1000000",
            "--stats-file",
            stats.to_str().unwrap(),
        ],
    );
    // A small receive window keeps the kernel from absorbing what the server queued for this client.
    let mut bad = Raw::connect_small_window(d.addr(), 4096).logged_in("bad", 6699, 4);
    let mut good = Raw::login(d.addr(), "good", 6699);
    let long = "x".repeat(1800);
    let wire = support::frames(
        100,
        (0..500).map(|i| format!("\"C:\\mp3\\{long} {i}.mp3\" 0 1000 128 44100 60")),
    );
    bad.s.write_all(&wire).unwrap();
    // Ask for browse output (1 MB per browse, 100 MB in all) one request every 10 ms, and never read it:
    // the socket buffers fill first and the writer blocks, then the 2048-item queue fills behind it. The
    // ~3.9 MB queued at the drop cannot go anywhere, so the old writer stayed stuck on it for good. Once
    // the server closed the connection these writes may fail; that is expected.
    let browse = support::frames(211, ["bad"]);
    let mut asker = bad.s.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        for _ in 0..100 {
            if asker.write_all(&browse).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // The good client keeps getting prompt answers, and eventually sees the bad one gone.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        good.send(214, "");
        let (t, text) = good.recv().unwrap();
        assert_eq!(t, 214);
        if text.starts_with("1 ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bad client never dropped: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    good.send(603, "bad");
    assert_eq!(good.recv().unwrap().0, 404);
    // Dropped means closed, not only forgotten: the server lets go of the socket (its connection task
    // and link end) although the bad client has still read nothing, ...
    let links = || d.stats().neighbours.len();
    assert!(
        integration::eventually(support::DEADLINE, || links() == 1),
        "the dropped client's connection is still held: {} links",
        links()
    );
    // ... and the client sees the connection end (a reset, or EOF after what was in flight).
    flood.join().unwrap();
    bad.s.set_read_timeout(Some(support::DEADLINE)).unwrap();
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let mut sink = vec![0u8; 1 << 16];
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped client's socket stayed open"
        );
        match bad.s.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "the dropped client's socket stayed open"
                );
                break;
            }
        }
    }
}

#[test]
fn bans_by_nick_and_by_ip_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &["--ban", "Mallory"]);
    let mut m = Raw::connect(d.addr());
    m.send(2, "mallory pw 0 \"x\" 2");
    assert_eq!(m.recv(), Some((0, "You are banned".into())));
    assert_eq!(m.recv(), None, "closed after the error");
    let _alice = Raw::login(d.addr(), "alice", 0);

    let dir2 = tempfile::tempdir().unwrap();
    let d2 = support::server(dir2.path(), &["--ban", "127.0.0.1"]);
    let mut c = Raw::connect(d2.addr());
    assert_eq!(c.recv(), Some((0, "You are banned".into())));
    assert_eq!(c.recv(), None);
}

#[test]
fn clone_and_registration_limits_per_ip() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(
        dir.path(),
        &["--max-clones", "2", "--max-registrations-per-ip", "1"],
    );
    let mut r1 = Raw::connect(d.addr());
    r1.send(6, "reg1 pw 0 \"x\" 2 r@x");
    assert_eq!(r1.until(214)[0].0, 3);
    let mut r2 = Raw::connect(d.addr());
    r2.send(6, "reg2 pw 0 \"x\" 2 r@x");
    assert_eq!(
        r2.recv(),
        Some((0, "Too many registrations from your IP".into()))
    );
    let _second = Raw::login(d.addr(), "guest2", 0);
    let mut third = Raw::connect(d.addr());
    third.send(2, "guest3 pw 0 \"x\" 2");
    assert_eq!(
        third.recv(),
        Some((0, "Too many connections from your IP (clones)".into()))
    );
    assert_eq!(third.recv(), None);
    // One clone leaving makes room again.
    drop(r1);
    support::until_admitted(d.addr(), 2, "guest3 pw 0 \"x\" 2", 3);
}

#[test]
fn password_work_is_capped_and_a_full_queue_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(
        dir.path(),
        &["--max-password-jobs", "1", "--password-queue", "1"],
    );
    // Twelve registrations at once: one hashes, one waits, the rest are refused without any hashing.
    let mut conns: Vec<Raw> = (0..12).map(|_| Raw::connect(d.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.send(6, &format!("flood{i} pw 0 \"x\" 2 r@x"));
    }
    let (mut ok, mut busy) = (0, 0);
    for c in conns.iter_mut() {
        match c.recv() {
            Some((3, _)) => ok += 1,
            Some((0, t)) if t == "Server busy, try again later" => busy += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(
        ok >= 2,
        "the running and the queued login succeed ({ok} ok)"
    );
    assert!(busy >= 1, "a full queue refuses ({busy} busy, {ok} ok)");
    assert_eq!(ok + busy, 12);
}

/// The §8 cases 3, 5–7 and 11–14 that need only one server, over real sockets in one start.
#[test]
fn s8_3_to_14_remaining_cases_on_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    // §8.3: nick check answers 10 for bad or reserved nicks; a login with one gets 10 and is closed.
    let mut r = Raw::connect(d.addr());
    for (nick, want) in [("bad.nick", 10), ("operserv", 10), ("free", 8)] {
        r.send(7, nick);
        assert_eq!(r.recv(), Some((want, String::new())), "{nick}");
    }
    let mut r = Raw::connect(d.addr());
    r.send(2, "-bad pw 0 \"x\" 0");
    assert_eq!(r.recv().map(|f| f.0), Some(10));
    assert_eq!(r.recv(), None);
    // A registered user who leaves, for whowas (605) below.
    let mut reg = Raw::connect(d.addr());
    reg.send(6, "reg pw 0 \"x\" 2 r@x");
    assert_eq!(reg.until(214)[0], (3, "r@x".into()));
    drop(reg);

    let mut a = Raw::login(d.addr(), "alice", 6699);
    let mut b = Raw::login(d.addr(), "bob", 6699);
    const MD5: &str = "0123456789abcdef0123456789abcdef";
    for (name, bitrate, secs) in [
        ("Beatles - Hey Jude", 128, 180),
        ("Beatles - Let It Be (live)", 320, 180),
        ("Cowboy Junkies - Sweet Jane", 192, 240),
    ] {
        a.send(
            100,
            &format!(r#""C:\mp3\{name}.mp3" {MD5} 5000 {bitrate} 44100 {secs}"#),
        );
    }
    // §8.5: 10300 (any media type) is counted with the others.
    a.send(10300, r#""C:\vid\holiday.avi" 100 0 video"#);
    // The server handles each connection in order: once alice's 214 is answered, her shares are in.
    a.send(214, "");
    a.until(214);
    // §8.6 over sockets: the number of 201s before the 202.
    let mut count = |q: &str| {
        b.send(200, q);
        let r = b.until(202);
        assert!(r[..r.len() - 1].iter().all(|f| f.0 == 201), "{q}: {r:?}");
        r.len() - 1
    };
    for (q, n) in [
        (r#"FILENAME CONTAINS "beatles" FILENAME CONTAINS "live""#, 1),
        (r#"FILENAME CONTAINS "beatles -live""#, 1),
        (r#"FILENAME CONTAINS "beatles""#, 2),
        (r#"FILENAME CONTAINS "beatles" FILENAME EXCLUDES "jude""#, 1),
        (r#"FILENAME CONTAINS "mp3" MAX_RESULTS 2"#, 2),
        (r#"FILENAME CONTAINS "mp3" BITRATE "AT LEAST" "192""#, 2),
        (r#"FILENAME CONTAINS "mp3" BITRATE "EQUAL TO" 128"#, 1),
        (r#"FILENAME CONTAINS "mp3" SIZE "AT LEAST" 5001"#, 0),
        (r#"FILENAME CONTAINS "mp3" FREQ "EQUAL TO" 44100"#, 3),
        (r#"FILENAME CONTAINS "mp3" LINESPEED "AT BEST" 3"#, 0),
        (r#"FILENAME CONTAINS "mp3" DURATION "AT LEAST" 200"#, 1),
    ] {
        assert_eq!(count(q), n, "{q}");
    }
    // §8.7: browsing an unknown nick.
    b.send(211, "nobody");
    assert_eq!(
        b.until(213),
        vec![(210, "nobody".into()), (213, "nobody".into())]
    );
    // §8.11: whowas for a registered nick that left.
    b.send(603, "reg");
    let w = b.recv().unwrap();
    assert!(w.0 == 605 && w.1.starts_with(r#"reg "User" "#), "{w:?}");
    // §8.12: join, channel list, part.
    a.send(400, "#music");
    a.until(410);
    b.send(400, "#music");
    assert_eq!(b.until(410)[0], (405, "#music".into()));
    assert_eq!(a.recv(), Some((406, "#music bob 0 4".into())));
    b.send(617, "");
    assert_eq!(
        b.until(617),
        vec![
            (618, "#music 2 Welcome to the #music channel.".into()),
            (617, String::new())
        ]
    );
    b.send(401, "#music");
    assert_eq!(b.recv(), Some((401, "#music".into())));
    assert_eq!(a.recv(), Some((407, "#music bob 0 4".into())));
    // §8.13: a ping relayed there and its pong relayed back.
    a.send(751, "bob");
    assert_eq!(b.recv(), Some((751, "alice".into())));
    b.send(752, "alice");
    assert_eq!(a.recv(), Some((752, "bob".into())));
    // §8.14: the same nick again right away.
    let mut again = Raw::connect(d.addr());
    again.send(2, "alice pw 6699 \"x\" 1");
    assert_eq!(again.recv(), Some((0, "Connecting too fast".into())));
    // An unregistered nick that is online cannot be taken from another address.
    let mut other = Raw::connect_from(d.addr(), std::net::Ipv4Addr::new(127, 0, 0, 2));
    other.send(2, "alice pw 6699 \"x\" 1");
    assert_eq!(other.recv(), Some((0, "alice is already active".into())));
    // Everything alice shared, the 10300 file included, is still there.
    a.send(110, "");
    assert_eq!(a.recv(), Some((110, "4".into())));
}

/// §8.6 over sockets with two sharers at different link speeds: TYPE picks media kinds (the default is
/// mp3 only, 10300 shares are found with their kind), and every numeric comparison keeps exactly the
/// files it should.
#[test]
fn search_type_filter_and_comparisons_across_two_sharers() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    let mut alice = Raw::login_as(d.addr(), "alice", 6699, 2);
    let mut carol = Raw::login_as(d.addr(), "carol", 6699, 8);
    let mut bob = Raw::login(d.addr(), "bob", 6699);
    const MD5: &str = "0123456789abcdef0123456789abcdef";
    alice.send(
        100,
        &format!(r#""C:\mp3\holiday song.mp3" {MD5} 3000000 128 44100 180"#),
    );
    alice.send(
        10300,
        &format!(r#""C:\vid\holiday.avi" 50000000 {MD5} video"#),
    );
    alice.send(
        10300,
        &format!(r#""C:\img\holiday.jpg" 200000 {MD5} image"#),
    );
    alice.send(
        10300,
        &format!(r#""C:\snd\holiday chant.ogg" 400000 {MD5} audio"#),
    );
    carol.send(
        100,
        &format!(r#""D:\music\holiday mix.mp3" {MD5} 9000000 320 48000 600"#),
    );
    assert_eq!(alice.drain(), vec![]);
    assert_eq!(carol.drain(), vec![]);

    // The file names (last path component) of the results, sorted; every result checked for its owner.
    let mut names = |rest: &str| -> Vec<String> {
        bob.send(200, &format!(r#"FILENAME CONTAINS "holiday" {rest}"#));
        let r = bob.until(202);
        let mut v: Vec<String> = r[..r.len() - 1]
            .iter()
            .map(|(t, text)| {
                assert_eq!(*t, 201, "{rest}: {r:?}");
                let f = napster_server::codec::fields::split(text).unwrap();
                let name = f[0].rsplit('\\').next().unwrap().to_owned();
                let owner = if name.contains("mix") {
                    " carol 16777343 8"
                } else {
                    " alice 16777343 2"
                };
                assert!(text.ends_with(owner), "{rest}: {text}");
                name
            })
            .collect();
        v.sort();
        v
    };
    let mp3s = ["holiday mix.mp3", "holiday song.mp3"];
    for (rest, want) in [
        ("", &mp3s[..]),
        ("TYPE mp3", &mp3s[..]),
        (
            "TYPE audio",
            &["holiday chant.ogg", "holiday mix.mp3", "holiday song.mp3"][..],
        ),
        ("TYPE video", &["holiday.avi"][..]),
        ("TYPE image", &["holiday.jpg"][..]),
        ("TYPE text", &[][..]),
        (
            "TYPE any",
            &[
                "holiday chant.ogg",
                "holiday mix.mp3",
                "holiday song.mp3",
                "holiday.avi",
                "holiday.jpg",
            ][..],
        ),
        (
            r#"TYPE any SIZE "AT LEAST" 3000000"#,
            &["holiday mix.mp3", "holiday song.mp3", "holiday.avi"][..],
        ),
        (r#"LINESPEED "AT LEAST" 5"#, &["holiday mix.mp3"][..]),
        (r#"LINESPEED "AT BEST" 2"#, &["holiday song.mp3"][..]),
        (r#"LINESPEED "EQUAL TO" 8"#, &["holiday mix.mp3"][..]),
        (r#"BITRATE "AT BEST" 128"#, &["holiday song.mp3"][..]),
        (r#"FREQ "AT LEAST" 48000"#, &["holiday mix.mp3"][..]),
        (r#"SIZE "AT BEST" 3000000"#, &["holiday song.mp3"][..]),
        (r#"DURATION "EQUAL TO" 600"#, &["holiday mix.mp3"][..]),
        (r#"DURATION "AT BEST" 179"#, &[][..]),
        (
            r#"BITRATE "AT LEAST" 128 FREQ "EQUAL TO" 44100 LINESPEED "AT BEST" 2"#,
            &["holiday song.mp3"][..],
        ),
    ] {
        assert_eq!(names(rest), want, "{rest}");
    }
    // Non-mp3 media report OpenNap's fixed audio fields.
    bob.send(200, r#"FILENAME CONTAINS "holiday" TYPE video"#);
    let r = bob.until(202);
    assert!(r[0].1.contains(" 50000000 8 16000 0 alice "), "{r:?}");
    // An unknown media type is a malformed search: 404, then the 202 that always closes it.
    bob.send(200, r#"FILENAME CONTAINS "holiday" TYPE movie"#);
    assert_eq!(
        bob.until(202),
        vec![(404, "invalid search request".into()), (202, String::new())]
    );
}

/// `--registered-only`: a guest login gets OpenNap's type-0 refusal and is closed; registering (6) still
/// works, and the registered nick can then log in with 2 (and not with a wrong password).
#[test]
fn registered_only_refuses_guests_and_admits_registered_nicks() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &["--registered-only", "--ghost-kill-secs", "0"]);
    let mut guest = Raw::connect(d.addr());
    guest.send(2, "guest pw 6699 \"x\" 4");
    assert_eq!(
        guest.recv(),
        Some((0, "This server is for registered users only".into()))
    );
    assert_eq!(guest.recv(), None, "closed after the refusal");
    let mut reg = Raw::connect(d.addr());
    reg.send(6, "member pw 6699 \"x\" 4 m@x");
    assert_eq!(reg.until(214)[0], (3, "m@x".into()));
    let mut wrong = Raw::connect(d.addr());
    wrong.send(2, "member nope 6699 \"x\" 4");
    assert_eq!(wrong.recv(), Some((0, "Invalid Password".into())));
    // The right password logs in (the first session is a ghost by then: it gets 748).
    let mut again = Raw::connect(d.addr());
    again.send(2, "member pw 6699 \"x\" 4");
    assert_eq!(again.until(214)[0], (3, "m@x".into()));
    assert_eq!(reg.until(748).last().unwrap().0, 748);
    // Guests are still refused while registered users are online.
    let mut guest = Raw::connect(d.addr());
    guest.send(2, "guest2 pw 6699 \"x\" 4");
    assert_eq!(guest.recv().map(|f| f.0), Some(0));
}

/// Link speed 600 → 601 (following a 700 change), hotlist 208 at login / 207 while running → 301 and
/// 209 sign-on, 210 sign-off, 303 removal (no more notices), 302 for a bad nick; version 4 before and
/// after login; 5 and 900/901 are unknown commands; a client string is cut to 32 characters, also when a
/// Latin-1 character sits at the cut.
#[test]
fn link_speed_hotlist_and_version_over_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    // Version 4 is allowed before login and answered with an empty 4; the connection stays usable.
    let mut bob = Raw::connect(d.addr());
    bob.send(4, "v2.0 BETA 8");
    assert_eq!(bob.recv(), Some((4, String::new())));
    let client = format!("{}\u{e9}tail beyond the cut", "a".repeat(31));
    bob.send(2, &format!("bob pw 6699 \"{client}\" 4"));
    assert_eq!(bob.until(214)[0].0, 3);
    bob.send(4, "");
    assert_eq!(bob.recv(), Some((4, String::new())));
    // Auto-upgrade (5) and the connect/listen tests (900/901) are never implemented: unknown commands.
    for t in [5u16, 900, 901] {
        bob.send(t, "127.0.0.1 6699");
        assert_eq!(bob.recv(), Some((404, format!("Unknown command code {t}"))));
    }
    // 208 (the list a client sends at login) for someone offline: ack only.
    bob.send(208, "carol");
    assert_eq!(bob.drain(), vec![(301, "carol".into())]);
    // 207 for someone online: ack and an immediate 209 with the link speed.
    let mut alice = Raw::login_as(d.addr(), "alice", 6699, 9);
    bob.send(207, "alice");
    assert_eq!(
        bob.drain(),
        vec![(301, "alice".into()), (209, "alice 9".into())]
    );
    bob.send(207, "bad.nick");
    assert_eq!(bob.drain(), vec![(302, "bad.nick".into())]);
    // carol signs on: bob's hotlist hears it.
    let mut carol = Raw::login_as(d.addr(), "carol", 0, 2);
    assert_eq!(bob.recv(), Some((209, "carol 2".into())));
    // 600 → 601 with the current speed, also after a 700 change; unknown nicks get a 404.
    bob.send(600, "carol");
    assert_eq!(bob.recv(), Some((601, "carol 2".into())));
    carol.send(700, "8");
    assert_eq!(carol.drain(), vec![]);
    bob.send(600, "CAROL");
    assert_eq!(bob.recv(), Some((601, "carol 8".into())));
    bob.send(600, "nobody");
    assert_eq!(bob.recv(), Some((404, "user nobody is not online".into())));
    // carol signs off: 210.
    drop(carol);
    assert_eq!(bob.recv(), Some((210, "carol".into())));
    // 303 takes alice off bob's hotlist: when she leaves, dave (still watching) hears it and bob does not.
    let mut dave = Raw::login(d.addr(), "dave", 6699);
    dave.send(207, "alice");
    assert_eq!(
        dave.drain(),
        vec![(301, "alice".into()), (209, "alice 9".into())]
    );
    bob.send(303, "alice");
    assert_eq!(bob.drain(), vec![]);
    alice.send(603, "bob");
    let w = alice.recv().unwrap();
    // The client string was cut to 32 characters (OpenNap's limit), the Latin-1 one included.
    assert!(
        w.0 == 604 && w.1.ends_with(&format!("\"{}\u{e9}\"", "a".repeat(31))),
        "{w:?}"
    );
    drop(alice);
    assert_eq!(dave.recv(), Some((210, "alice".into())));
    assert_eq!(bob.drain(), vec![], "no sign-off after 303");
}

/// The per-client pending-search limit over sockets: a client that keeps searching without reading
/// gets `search failed: too many pending searches` (each closed by its 202), every search is closed
/// exactly once, and once it has read everything its searches are answered again.
#[test]
fn pending_search_limit_over_sockets() {
    const SEARCHES: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &["--flood-commands", "1000000"]);
    let mut alice = Raw::login(d.addr(), "alice", 6699);
    // 100 results of about 1.9 KB each: 190 KB per search, so 100 unread searches (19 MB) are far more
    // than the socket buffers hold and the server's writes must stall.
    let long = "x".repeat(1800);
    let wire = support::frames(
        100,
        (0..100).map(|i| format!("\"C:\\mp3\\big {i} {long}.mp3\" 0 1000 128 44100 60")),
    );
    alice.s.write_all(&wire).unwrap();
    assert_eq!(alice.drain(), vec![]);
    let mut bob = Raw::login(d.addr(), "bob", 6699);
    let wire = support::frames(200, [r#"FILENAME CONTAINS "big""#; SEARCHES]);
    bob.s.write_all(&wire).unwrap();
    let (mut ends, mut refused, mut results) = (0, 0, 0);
    let mut last = None;
    while ends < SEARCHES {
        let (t, text) = bob.recv().expect("connection stays open");
        match t {
            201 => results += 1,
            202 => ends += 1,
            404 => {
                assert_eq!(text, "search failed: too many pending searches");
                refused += 1;
            }
            _ => panic!("unexpected {t} {text}"),
        }
        if last == Some(404) {
            assert_eq!(t, 202, "a refusal is closed by its 202 at once");
        }
        last = Some(t);
    }
    assert!(refused > 0, "no search was refused");
    assert_eq!(results, (SEARCHES - refused) * 100);
    // Everything has been read: the searches are no longer pending.
    bob.send(200, r#"FILENAME CONTAINS "big" MAX_RESULTS 3"#);
    assert_eq!(bob.until(202).len(), 4);
}

/// Leech level (an account marked `Leech` in `accounts.json`): whois shows it, searches get only the
/// 202, and downloads are refused both by 203 and by 500 (a push request), as OpenNap's `download.c`
/// does; the uploaders never hear of it. An ordinary user sees the same files.
#[test]
fn a_leech_gets_empty_searches_and_no_downloads_by_203_or_500() {
    let dir = tempfile::tempdir().unwrap();
    {
        let d = support::server(dir.path(), &[]);
        let mut r = Raw::connect(d.addr());
        r.send(6, "leechy pw 6699 \"x\" 4 l@x");
        assert_eq!(r.until(214)[0], (3, "l@x".into()));
        // A clean stop folds the account log into accounts.json, the file an operator edits.
        let mut d = d;
        assert!(d.terminate(support::DEADLINE).unwrap().success());
    }
    let store = dir.path().join("accounts.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    v["accounts"][0]["level"] = "Leech".into();
    std::fs::write(&store, serde_json::to_vec(&v).unwrap()).unwrap();

    let d = support::server(dir.path(), &[]);
    let mut alice = Raw::login(d.addr(), "alice", 6699);
    let mut fw = Raw::login(d.addr(), "fw", 0);
    alice.send(100, r#""C:\mp3\leech song.mp3" 0 1000 128 44100 60"#);
    fw.send(100, r#""C:\fw\leech song.mp3" 0 1000 128 44100 60"#);
    assert_eq!(alice.drain(), vec![]);
    assert_eq!(fw.drain(), vec![]);
    let mut leech = Raw::connect(d.addr());
    leech.send(2, "leechy pw 6699 \"x\" 4");
    assert_eq!(leech.until(214)[0], (3, "l@x".into()));
    leech.send(603, "leechy");
    let w = leech.recv().unwrap();
    assert!(w.0 == 604 && w.1.starts_with(r#"leechy "Leech" "#), "{w:?}");
    leech.send(200, r#"FILENAME CONTAINS "leech song""#);
    assert_eq!(leech.until(202), vec![(202, String::new())]);
    let refusal = (404, "permission denied: you are a leech".to_owned());
    leech.send(203, r#"alice "C:\mp3\leech song.mp3""#);
    assert_eq!(leech.recv(), Some(refusal.clone()));
    leech.send(500, r#"fw "C:\fw\leech song.mp3""#);
    assert_eq!(leech.recv(), Some(refusal));
    assert_eq!(alice.drain(), vec![], "no 607 for a leech");
    assert_eq!(fw.drain(), vec![], "no 607 for a leech's push");
    let mut bob = Raw::login(d.addr(), "bob", 6699);
    bob.send(200, r#"FILENAME CONTAINS "leech song""#);
    assert_eq!(bob.until(202).len(), 3);
}

/// Over sockets: `--motd` lines follow the server's own 621 lines in the greeting; `--max-connections`
/// refuses the next socket with OpenNap's type-0 "server is full" and a close; a socket that never logs
/// in is closed (no message) after `--login-timeout-secs`, which frees its place.
#[test]
fn motd_lines_connection_cap_and_login_timeout_over_sockets() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(
        dir.path(),
        &[
            "--max-connections",
            "2",
            "--login-timeout-secs",
            "1",
            "--motd",
            "Welcome to the lab",
            "--motd",
            "Be nice",
        ],
    );
    let mut a = Raw::connect(d.addr());
    a.send(2, "alice pw 6699 \"x\" 4");
    let g = a.until(214);
    let motd: Vec<&str> = g[1..g.len() - 1]
        .iter()
        .map(|(t, text)| {
            assert_eq!(*t, 621, "{g:?}");
            text.as_str()
        })
        .collect();
    assert!(motd[0].starts_with("VERSION "), "{motd:?}");
    assert_eq!(motd[motd.len() - 2..], ["Welcome to the lab", "Be nice"]);
    // A second socket that only checks a nick (allowed before login) holds the last place.
    let mut idle = Raw::connect(d.addr());
    idle.send(7, "someone");
    assert_eq!(idle.recv(), Some((8, String::new())));
    let mut third = Raw::connect(d.addr());
    assert_eq!(
        third.recv(),
        Some((0, "This server is full (2 connections)".into()))
    );
    assert_eq!(third.recv(), None);
    // The idle socket is closed by the server (EOF, not our read timeout) with no message.
    let mut byte = [0u8; 1];
    assert_eq!(idle.s.read(&mut byte).expect("closed, not timed out"), 0);
    // Its place is free again once the server has let it go.
    support::until_admitted(d.addr(), 7, "someone", 8);
    a.send(214, "");
    assert_eq!(a.recv().map(|f| f.0), Some(214), "alice is unaffected");
}

/// Over sockets: a duplicate share gets `404 "duplicate file"`; browse stops at OpenNap's 500 entries
/// (`max_browse_result`) and still ends with `213 <nick> <ip>`; 703 changes the data port, so after
/// `703 0` a 203 for the user's file is answered at once with the firewalled 204 (port 0), and an
/// out-of-range port is refused.
#[test]
fn duplicate_share_browse_cap_and_data_port_change_over_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let d = support::server(dir.path(), &[]);
    let mut alice = Raw::login(d.addr(), "alice", 6699);
    let md5 = "0123456789abcdef0123456789abcdef";
    let wire = support::frames(
        100,
        (0..501).map(|i| format!("\"C:\\mp3\\track {i}.mp3\" {md5} 1000 128 44100 60")),
    );
    alice.s.write_all(&wire).unwrap();
    alice.send(
        100,
        &format!("\"C:\\mp3\\track 7.mp3\" {md5} 1000 128 44100 60"),
    );
    assert_eq!(alice.drain(), vec![(404, "duplicate file".into())]);
    let mut bob = Raw::login(d.addr(), "bob", 6699);
    bob.send(211, "alice");
    let b = bob.until(213);
    assert_eq!(b.len(), 501, "500 entries and the end");
    assert!(b[..500].iter().all(|f| f.0 == 212), "{:?}", &b[..3]);
    assert_eq!(b[500], (213, "alice 16777343".into()));
    // Still listening: a 203 goes to alice as a 607.
    bob.send(203, r#"alice "C:\mp3\track 7.mp3""#);
    assert_eq!(
        alice.recv(),
        Some((607, r#"bob "C:\mp3\track 7.mp3" 4"#.into()))
    );
    alice.send(703, "70000");
    alice.send(703, "0");
    assert_eq!(
        alice.drain(),
        vec![(404, "70000: invalid data port".into())]
    );
    bob.send(203, r#"alice "C:\mp3\track 7.mp3""#);
    assert_eq!(
        bob.recv(),
        Some((
            204,
            format!(r#"alice 16777343 0 "C:\mp3\track 7.mp3" {md5} 4"#)
        ))
    );
    assert_eq!(alice.drain(), vec![], "no 607 before the push request");
}

#[test]
fn a_client_registering_in_a_loop_does_not_hold_up_a_searcher_and_its_accounts_survive_a_kill() {
    const REGISTRATIONS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let acked = {
        let d = support::server(dir.path(), &[]);
        let addr = d.addr();
        let mut sharer = Raw::login(addr, "sharer", 6699);
        sharer.send(
            100,
            "\"music\\hey jude.mp3\" 0123456789abcdef0123456789abcdef 5000 128 44100 180",
        );
        assert!(sharer.drain().is_empty());
        let mut seeker = Raw::login(addr, "seeker", 6699);
        // One client registers nick after nick, each on a fresh connection, as fast as it is answered.
        let registrar = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..REGISTRATIONS {
                let nick = format!("loop{i}");
                let mut r = Raw::connect(addr);
                r.send(6, &format!("{nick} pw{i} 0 \"raw\" 2 {nick}@x"));
                let first = r.recv();
                assert_eq!(first, Some((3, format!("{nick}@x"))), "registration {i}");
                acked.push(nick);
            }
            acked
        });
        // Meanwhile every search gets its result and its 202 (bounded: the registrations end the loop).
        let mut searches = 0;
        while !registrar.is_finished() && searches < 2000 {
            seeker.send(200, "FILENAME CONTAINS \"jude\" MAX_RESULTS 10");
            let reply = seeker.until(202);
            assert_eq!(reply.len(), 2, "{reply:?}");
            assert!(
                reply[0].0 == 201 && reply[0].1.contains("hey jude.mp3"),
                "{reply:?}"
            );
            searches += 1;
        }
        assert!(searches > 0);
        registrar.join().unwrap()
        // The server is killed (SIGKILL, no clean shutdown) here.
    };
    assert_eq!(acked.len(), REGISTRATIONS);
    let d = support::server(dir.path(), &[]);
    let mut r = Raw::connect(d.addr());
    for nick in &acked {
        r.send(7, nick);
        assert_eq!(r.recv(), Some((9, String::new())), "{nick} survived");
    }
    r.send(2, &format!("{} pw{} 0 \"raw\" 2", acked[5], 5));
    assert_eq!(r.until(214)[0], (3, format!("{}@x", acked[5])));
}
