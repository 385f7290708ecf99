//! Multi-process tests of `napster-server` over real sockets (notes §8 cases 1–7, 11–15).

mod support;

use std::io::Write;
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
    let mut batch = Vec::new();
    for i in 0..5000 {
        batch.extend(
            napster_server::codec::Frame::text(
                100,
                &format!("\"C:\\mp3\\song {i}.mp3\" 0 1000 128 44100 60"),
            )
            .to_bytes()
            .unwrap(),
        );
    }
    a.s.write_all(&batch).unwrap();
    a.send(214, "");
    assert_eq!(a.recv(), Some((214, "1 5000 0".into())));
    // 60 stats requests against a limit of 20 per second: all answered, none lost, still connected.
    let mut burst = Vec::new();
    for _ in 0..60 {
        burst.extend(napster_server::codec::Frame::empty(214).to_bytes().unwrap());
    }
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
    let d = support::server(dir.path(), &["--flood-commands", "1000000"]);
    let mut bad = Raw::login(d.addr(), "bad", 6699);
    let mut good = Raw::login(d.addr(), "good", 6699);
    let long = "x".repeat(180);
    let mut wire = Vec::new();
    for i in 0..500 {
        wire.extend(
            napster_server::codec::Frame::text(
                100,
                &format!("\"C:\\mp3\\{long} {i}.mp3\" 0 1000 128 44100 60"),
            )
            .to_bytes()
            .unwrap(),
        );
    }
    // Ask for far more browse output (about 25 MB) than socket buffers and the 2048-frame queue hold, and
    // never read it.
    for _ in 0..100 {
        wire.extend(
            napster_server::codec::Frame::text(211, "bad")
                .to_bytes()
                .unwrap(),
        );
    }
    bad.s.write_all(&wire).unwrap();
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
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let mut c = Raw::connect(d.addr());
        c.send(2, "guest3 pw 0 \"x\" 2");
        match c.recv() {
            Some((3, _)) => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "never admitted: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
