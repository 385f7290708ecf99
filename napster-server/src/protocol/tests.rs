//! Protocol stories on the sans-I/O server (notes §8), with a virtual clock.

use super::*;
use accounts::AccountLog;
use rand::SeedableRng;

struct Sim {
    s: Server,
    /// The account store's disk side, written inline by [`Sim::pump`].
    log: AccountLog,
    /// Makes every account write fail (a full or broken disk).
    fail_writes: bool,
    now: Instant,
    next: u64,
    closed: Vec<ConnId>,
    inbox: HashMap<ConnId, Vec<Frame>>,
}

impl Sim {
    fn new(cfg: Config) -> Sim {
        Sim::with_store(cfg, AccountLog::in_memory(), Accounts::default())
    }

    fn with_store(cfg: Config, log: AccountLog, accounts: Accounts) -> Sim {
        let now = Instant::now();
        Sim {
            s: Server::new(cfg, accounts, StdRng::seed_from_u64(7), now, 1_000_000),
            log,
            fail_writes: false,
            now,
            next: 1,
            closed: Vec::new(),
            inbox: HashMap::new(),
        }
    }

    fn pump(&mut self) {
        // Password and persist jobs run inline here; the node runs them on blocking threads.
        loop {
            let mut busy = false;
            while let Some(job) = self.s.poll_password_job() {
                let outcome = job.run();
                self.s.password_done(self.now, job.conn(), outcome);
                busy = true;
            }
            if let Some(job) = self.s.poll_persist() {
                self.write(job);
                busy = true;
            }
            if !busy {
                break;
            }
        }
        while let Some(t) = self.s.poll_transmit() {
            match t {
                Transmit::Frame(c, f) => self.deliver(c, f),
                Transmit::Batch(c, b) => {
                    for f in b.frames() {
                        self.deliver(c, f);
                    }
                }
                Transmit::Close(c) => self.closed.push(c),
            }
        }
    }

    fn write(&mut self, job: PersistJob) {
        let outcome = if self.fail_writes {
            Err("disk full".to_string())
        } else {
            self.log.write(&job.records).map_err(|e| e.to_string())
        };
        self.s.persist_done(self.now, job, outcome);
    }

    fn deliver(&mut self, c: ConnId, f: Frame) {
        if f.ty == ty::SEARCH_END {
            self.s.search_delivered(c);
        }
        self.inbox.entry(c).or_default().push(f)
    }

    fn connect_from(&mut self, ip: Ipv4Addr) -> ConnId {
        let c = ConnId(self.next);
        self.next += 1;
        self.s.on_connect(self.now, c, ip);
        self.pump();
        c
    }

    fn connect(&mut self) -> ConnId {
        self.connect_from(Ipv4Addr::LOCALHOST)
    }

    fn send(&mut self, c: ConnId, t: u16, text: &str) -> Vec<(u16, String)> {
        self.s.handle_frame(self.now, c, Frame::text(t, text));
        self.pump();
        self.take(c)
    }

    fn take(&mut self, c: ConnId) -> Vec<(u16, String)> {
        self.inbox
            .remove(&c)
            .unwrap_or_default()
            .into_iter()
            .map(|f| (f.ty, f.text_payload()))
            .collect()
    }

    fn login(&mut self, nick: &str, port: u16) -> ConnId {
        let c = self.connect();
        let r = self.send(c, 2, &format!("{nick} pw {port} \"test 1.0\" 7"));
        assert_eq!(r[0].0, ty::LOGIN_ACK, "{r:?}");
        c
    }

    fn share(&mut self, c: ConnId, path: &str, bitrate: u32) {
        let r = self.send(
            c,
            100,
            &format!("\"{path}\" 0123456789abcdef0123456789abcdef 5000 {bitrate} 44100 180"),
        );
        assert!(r.is_empty(), "{r:?}");
    }

    fn results(&mut self, c: ConnId, query: &str) -> (Vec<String>, Vec<String>) {
        let r = self.send(c, 200, query);
        assert_eq!(
            r.last().map(|x| x.0),
            Some(ty::SEARCH_END),
            "202 always ends: {r:?}"
        );
        let hits = r
            .iter()
            .filter(|x| x.0 == 201)
            .map(|x| x.1.clone())
            .collect();
        let errs = r
            .iter()
            .filter(|x| x.0 == 404)
            .map(|x| x.1.clone())
            .collect();
        (hits, errs)
    }
}

#[test]
fn s8_2_non_login_before_login_is_refused_and_closed() {
    let mut sim = Sim::new(Config::default());
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 200, "FILENAME CONTAINS \"x\""),
        vec![(0, "invalid command".into())]
    );
    assert_eq!(sim.closed, vec![c]);
    let c = sim.login("alice", 6699);
    assert_eq!(
        sim.send(c, 9999, ""),
        vec![(404, "Unknown command code 9999".into())]
    );
    assert!(!sim.closed.contains(&c));
}

#[test]
fn s8_3_nick_check_register_login_wrong_password() {
    let mut sim = Sim::new(Config::default());
    let c = sim.connect();
    assert_eq!(sim.send(c, 7, "bob"), vec![(8, String::new())]);
    assert_eq!(sim.send(c, 7, "bad.nick"), vec![(10, String::new())]);
    assert_eq!(sim.send(c, 7, "operserv"), vec![(10, String::new())]);
    let r = sim.send(c, 6, "bob secret 6699 \"TekNap\" 0 bob@example.org");
    assert_eq!(r[0], (3, "bob@example.org".into()));
    sim.s.on_disconnect(sim.now, c);
    let c = sim.connect();
    assert_eq!(sim.send(c, 7, "BOB"), vec![(9, String::new())]);
    sim.now += Duration::from_secs(10);
    let r = sim.send(c, 2, "bob secret 6699 \"TekNap\" 0");
    assert_eq!(r[0], (3, "bob@example.org".into()));
    sim.s.on_disconnect(sim.now, c);
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 2, "bob nope 6699 \"TekNap\" 0"),
        vec![(0, "Invalid Password".into())]
    );
    assert!(sim.closed.contains(&c));
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 6, "bob other 6699 \"TekNap\" 0 x@y"),
        vec![(0, "Nick registered to another user".into())]
    );
    let c = sim.connect();
    assert_eq!(sim.send(c, 2, "-bad pw 0 \"x\" 0")[0].0, 10);
    assert!(sim.closed.contains(&c));
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 2, "carol pw 0 \"x\" 11"),
        vec![(0, "11: invalid speed".into())]
    );
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 2, "carol pw 0"),
        vec![(404, "Too few parameters for login.".into())]
    );
}

#[test]
fn s8_4_login_sends_ack_motd_then_stats() {
    let mut sim = Sim::new(Config::default());
    let c = sim.connect();
    let r = sim.send(c, 2, "dave pw 6699 \"x\" 3");
    assert_eq!(r[0], (3, "anon@p2p-lab".into()));
    let motd = r.iter().skip(1).take_while(|x| x.0 == 621).count();
    assert!(motd >= 3, "{r:?}");
    assert_eq!(r[1 + motd], (214, "1 0 0".into()));
    assert_eq!(r.len(), 2 + motd);
}

#[test]
fn s8_5_share_unshare_counts() {
    let mut sim = Sim::new(Config::default());
    let c = sim.login("alice", 6699);
    sim.share(c, r"C:\mp3\a b.mp3", 128);
    assert_eq!(
        sim.send(c, 100, "\"C:\\mp3\\a b.mp3\" 0 1 128 44100 1"),
        vec![(404, "duplicate file".into())]
    );
    assert_eq!(
        sim.send(
            c,
            870,
            r#""C:\mp3" "c.mp3" 0 10 128 44100 1 "d.mp3" 0 10 128 44100 1"#
        ),
        vec![]
    );
    assert_eq!(sim.send(c, 10300, r#""C:\vid\e.avi" 100 0 video"#), vec![]);
    assert_eq!(sim.send(c, 214, ""), vec![(214, "1 4 0".into())]);
    assert_eq!(sim.send(c, 102, r#""C:\mp3\c.mp3""#), vec![]);
    assert_eq!(
        sim.send(c, 102, r#""C:\mp3\zzz.mp3""#),
        vec![(404, "Not sharing that file".into())]
    );
    assert_eq!(sim.send(c, 110, ""), vec![(110, "3".into())]);
    assert_eq!(sim.send(c, 214, ""), vec![(214, "1 0 0".into())]);
}

#[test]
fn share_cap_per_user() {
    let mut sim = Sim::new(Config {
        max_shared: 2,
        ..Config::default()
    });
    let c = sim.login("alice", 6699);
    sim.share(c, "a.mp3", 128);
    sim.share(c, "b.mp3", 128);
    assert_eq!(sim.send(c, 100, "\"c.mp3\" 0 1 1 1 1")[0].0, 404);
    assert_eq!(sim.s.files(), 2);
}

#[test]
fn s8_6_search_rules() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    let fw = sim.login("fw", 0);
    let fw2 = sim.login("fw2", 0);
    sim.share(a, r"C:\mp3\Beatles - Hey Jude.mp3", 128);
    sim.share(a, r"C:\mp3\Beatles - Let It Be (live).mp3", 320);
    sim.share(a, r"C:\mp3\Cowboy Junkies - Sweet Jane.mp3", 192);
    sim.share(fw, r"C:\mp3\Beatles - Yesterday.mp3", 128);
    let (h, e) = sim.results(b, r#"FILENAME CONTAINS "hey jude""#);
    assert_eq!((h.len(), e.len()), (1, 0));
    assert_eq!(
        h[0],
        r#""C:\mp3\Beatles - Hey Jude.mp3" 0123456789abcdef0123456789abcdef 5000 128 44100 180 alice 16777343 7"#
    );
    assert!(
        sim.results(b, r#"FILENAME CONTAINS "cow""#).0.is_empty(),
        "partial word"
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "beatles" FILENAME CONTAINS "live""#)
            .0
            .len(),
        1
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "beatles -live""#)
            .0
            .len(),
        2
    );
    assert_eq!(
        sim.results(
            b,
            r#"FILENAME CONTAINS "beatles" FILENAME EXCLUDES "jude yesterday""#
        )
        .0
        .len(),
        1
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" MAX_RESULTS 2"#)
            .0
            .len(),
        2
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" BITRATE "AT LEAST" "192""#)
            .0
            .len(),
        2
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" BITRATE "EQUAL TO" 128"#)
            .0
            .len(),
        2
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" LINESPEED "AT BEST" 6"#)
            .0
            .len(),
        0
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" SIZE "AT LEAST" 5001"#)
            .0
            .len(),
        0
    );
    assert_eq!(
        sim.results(b, r#"FILENAME CONTAINS "mp3" FREQ "EQUAL TO" 44100"#)
            .0
            .len(),
        4
    );
    // Own files are never returned; firewalled to firewalled is left out.
    assert_eq!(sim.results(a, r#"FILENAME CONTAINS "beatles""#).0.len(), 1);
    assert_eq!(
        sim.results(fw2, r#"FILENAME CONTAINS "beatles""#).0.len(),
        2
    );
    // Malformed: 404 then 202.
    assert_eq!(
        sim.results(b, "FOO").1,
        vec!["invalid search request".to_string()]
    );
    assert_eq!(sim.results(b, r#"FILENAME CONTAINS "-x""#).1.len(), 1);
}

#[test]
fn a_search_reply_is_one_batch_of_results_then_202() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    for i in 0..3 {
        sim.share(a, &format!("C:\\mp3\\song {i}.mp3"), 128);
    }
    let b = sim.login("bob", 6699);
    sim.s
        .handle_frame(sim.now, b, Frame::text(200, r#"FILENAME CONTAINS "song""#));
    let mut items = Vec::new();
    while let Some(t) = sim.s.poll_transmit() {
        items.push(t);
    }
    // One item for the whole reply, so the node queues it once and writes it with one call.
    let [Transmit::Batch(to, batch)] = &items[..] else {
        panic!("expected one batch, got {items:?}");
    };
    assert_eq!(*to, b);
    let frames = batch.frames();
    let types: Vec<u16> = frames.iter().map(|f| f.ty).collect();
    assert_eq!(types, vec![201, 201, 201, 202]);
    assert_eq!(
        frames[0].text_payload(),
        "\"C:\\mp3\\song 0.mp3\" 0123456789abcdef0123456789abcdef 5000 128 44100 180 alice 16777343 7"
    );
}

#[test]
fn pending_search_limit_until_results_are_delivered() {
    let mut sim = Sim::new(Config::default());
    let b = sim.login("bob", 6699);
    for _ in 0..3 {
        sim.s
            .handle_frame(sim.now, b, Frame::text(200, r#"FILENAME CONTAINS "x""#));
    }
    sim.s
        .handle_frame(sim.now, b, Frame::text(200, r#"FILENAME CONTAINS "x""#));
    // Nothing delivered yet: the fourth is refused.
    let mut texts = Vec::new();
    while let Some(t) = sim.s.poll_transmit() {
        let frames = match t {
            Transmit::Frame(_, f) => vec![f],
            Transmit::Batch(_, b) => b.frames(),
            Transmit::Close(_) => break,
        };
        texts.extend(frames.iter().map(|f| (f.ty, f.text_payload())));
    }
    assert_eq!(
        texts[3],
        (404, "search failed: too many pending searches".into())
    );
    assert_eq!(texts[4].0, 202);
    for _ in 0..5 {
        sim.s.search_delivered(b);
    }
    assert_eq!(sim.results(b, r#"FILENAME CONTAINS "x""#).1.len(), 0);
}

#[test]
fn s8_7_browse() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    sim.share(a, r"C:\mp3\one.mp3", 128);
    sim.share(a, r"C:\mp3\two.mp3", 128);
    let r = sim.send(b, 211, "alice");
    assert_eq!(r.len(), 3);
    assert!(r[0].1.starts_with(r#"alice "C:\mp3\one.mp3" "#), "{r:?}");
    assert_eq!(r[2], (213, "alice 16777343".into()));
    assert_eq!(
        sim.send(b, 211, "nobody"),
        vec![(210, "nobody".into()), (213, "nobody".into())]
    );
}

#[test]
fn s8_8_download_brokering() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 5555);
    sim.share(b, r"C:\mp3\song.mp3", 128);
    assert!(sim.send(a, 203, r#"bob "C:\mp3\song.mp3""#).is_empty());
    assert_eq!(
        sim.take(b),
        vec![(607, r#"alice "C:\mp3\song.mp3" 7"#.into())]
    );
    assert!(sim.send(b, 608, r#"alice "C:\mp3\song.mp3""#).is_empty());
    assert_eq!(
        sim.take(a),
        vec![(
            204,
            r#"bob 16777343 5555 "C:\mp3\song.mp3" 0123456789abcdef0123456789abcdef 7"#.into()
        )]
    );
    assert_eq!(
        sim.send(b, 608, r#"alice "C:\mp3\other.mp3""#),
        vec![(404, "Not sharing that file".into())]
    );
    assert_eq!(
        sim.send(a, 203, r#"ghost "x.mp3""#),
        vec![(206, r#"ghost "x.mp3""#.into())]
    );
    assert_eq!(
        sim.send(a, 500, r#"bob "x.mp3""#),
        vec![(404, "bob is not firewalled".into())]
    );
}

#[test]
fn s8_9_firewalled_push_brokering() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let f = sim.login("fw", 0);
    let f2 = sim.login("fw2", 0);
    sim.share(f, r"C:\mp3\song.mp3", 128);
    let r = sim.send(a, 203, r#"fw "C:\mp3\song.mp3""#);
    assert_eq!(
        r,
        vec![(
            204,
            r#"fw 16777343 0 "C:\mp3\song.mp3" 0123456789abcdef0123456789abcdef 7"#.into()
        )]
    );
    assert!(sim.send(a, 500, r#"fw "C:\mp3\song.mp3""#).is_empty());
    assert_eq!(
        sim.take(f),
        vec![(607, r#"alice "C:\mp3\song.mp3" 7"#.into())]
    );
    let r = sim.send(f, 608, r#"alice "C:\mp3\song.mp3""#);
    assert_eq!(
        r,
        vec![(
            501,
            r#"alice 16777343 6699 "C:\mp3\song.mp3" 0123456789abcdef0123456789abcdef 7"#.into()
        )]
    );
    assert!(sim.take(a).is_empty());
    let r = sim.send(f2, 203, r#"fw "C:\mp3\song.mp3""#);
    assert_eq!(
        r,
        vec![(
            204,
            r#"fw 16777343 0 "C:\mp3\song.mp3" firewallerror 7"#.into()
        )]
    );
}

#[test]
fn s8_11_counters_in_whois_whowas() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let c = sim.connect();
    sim.send(c, 6, "reg pw 0 \"x\" 2 r@x");
    for t in [218, 218, 220] {
        assert!(sim.send(a, t, "").is_empty());
    }
    sim.send(a, 219, "");
    sim.share(a, "x.mp3", 128);
    sim.now += Duration::from_secs(3);
    let r = sim.send(c, 603, "alice");
    assert_eq!(
        r,
        vec![(
            604,
            r#"alice "User" 3 "" "Active" 1 1 1 7 "test 1.0""#.into()
        )]
    );
    sim.s.on_disconnect(sim.now, c);
    let r = sim.send(a, 603, "reg");
    assert_eq!(r, vec![(605, r#"reg "User" 1000003"#.into())]);
    assert_eq!(sim.send(a, 603, "nobody")[0].0, 404);
}

#[test]
fn s8_12_chat() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    sim.send(a, 400, "#music");
    let r = sim.send(b, 400, "#music");
    assert_eq!(
        r,
        vec![
            (405, "#music".into()),
            (408, "#music alice 0 7".into()),
            (408, "#music bob 0 7".into()),
            (409, "#music".into()),
            (410, "#music Welcome to the #music channel.".into())
        ]
    );
    assert_eq!(sim.take(a), vec![(406, "#music bob 0 7".into())]);
    let echo = sim.send(b, 402, "#music hello all");
    assert_eq!(sim.take(a), vec![(403, "#music bob hello all".into())]);
    assert_eq!(echo, vec![(403, "#music bob hello all".into())]);
    assert_eq!(
        sim.send(a, 617, ""),
        vec![
            (618, "#music 2 Welcome to the #music channel.".into()),
            (617, String::new())
        ]
    );
    assert_eq!(sim.send(b, 401, "#music"), vec![(401, "#music".into())]);
    assert_eq!(sim.take(a), vec![(407, "#music bob 0 7".into())]);
    assert_eq!(sim.send(b, 402, "#music hi")[0].0, 404);
}

#[test]
fn s8_13_private_message_and_ping_relay() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    sim.send(a, 205, "bob hi there");
    assert_eq!(sim.take(b), vec![(205, "alice hi there".into())]);
    sim.send(a, 751, "bob");
    assert_eq!(sim.take(b), vec![(751, "alice".into())]);
    sim.send(b, 752, "alice");
    assert_eq!(sim.take(a), vec![(752, "bob".into())]);
    assert_eq!(sim.send(a, 205, "nobody hi")[0].0, 404);
    assert_eq!(sim.send(a, 750, ""), vec![(750, "p2p-lab ".into())]);
}

#[test]
fn s8_14_ghosts() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 2, "alice pw 6699 \"x\" 1"),
        vec![(0, "Connecting too fast".into())]
    );
    sim.now += Duration::from_secs(6);
    let c = sim.connect();
    assert_eq!(sim.send(c, 2, "alice pw 6699 \"x\" 1")[0].0, 3);
    assert_eq!(sim.take(a), vec![(748, String::new())]);
    assert!(sim.closed.contains(&a));
    // Another IP cannot take an unregistered active nick.
    let d = sim.connect_from(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(
        sim.send(d, 2, "alice pw 6699 \"x\" 1"),
        vec![(0, "alice is already active".into())]
    );
    assert_eq!(sim.s.users(), 1);
}

#[test]
fn s8_15_flood_throttles_but_shares_are_exempt() {
    let mut sim = Sim::new(Config {
        flood_commands: 5,
        ..Config::default()
    });
    let a = sim.login("alice", 6699);
    for i in 0..5000 {
        sim.s.handle_frame(
            sim.now,
            a,
            Frame::text(100, &format!("\"f{i}.mp3\" 0 1 128 44100 1")),
        );
    }
    assert_eq!(sim.s.read_pause(a, sim.now), None);
    assert_eq!(sim.s.files(), 5000);
    for _ in 0..6 {
        sim.send(a, 214, "");
    }
    let until = sim.s.read_pause(a, sim.now).expect("throttled");
    assert!(until > sim.now);
    // Still answered correctly while throttled.
    assert_eq!(sim.send(a, 214, ""), vec![(214, "1 5000 0".into())]);
    sim.now = until;
    assert_eq!(sim.s.read_pause(a, sim.now), None);
}

/// Since searches run under the shared lock they never reach `handle_frame`: `search_shared` must count
/// them against flood control itself.
#[test]
fn searches_on_the_shared_path_count_against_flood_control() {
    let mut sim = Sim::new(Config {
        flood_commands: 5,
        ..Config::default()
    });
    let a = sim.login("alice", 6699);
    // A fresh flood window, so only the searches count in it.
    sim.now += Config::default().flood_time;
    let search = Frame::text(200, "FILENAME CONTAINS \"x\"");
    let one = |sim: &mut Sim| {
        let batch = sim
            .s
            .search_shared(sim.now, a, &search)
            .expect("a logged-in user's search takes the shared path");
        assert_eq!(batch.frames().last().map(|f| f.ty), Some(ty::SEARCH_END));
        sim.s.search_delivered(a);
    };
    for _ in 0..5 {
        one(&mut sim);
    }
    assert_eq!(sim.s.read_pause(a, sim.now), None, "5 searches are allowed");
    one(&mut sim);
    let until = sim
        .s
        .read_pause(a, sim.now)
        .expect("the sixth search throttles reading");
    assert!(until > sim.now);
    sim.now = until;
    assert_eq!(sim.s.read_pause(a, sim.now), None);
}

#[test]
fn hotlist_sign_on_and_off() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    assert_eq!(sim.send(a, 207, "bob"), vec![(301, "bob".into())]);
    let b = sim.login("bob", 6699);
    assert_eq!(sim.take(a), vec![(209, "bob 7".into())]);
    sim.s.on_disconnect(sim.now, b);
    sim.pump();
    assert_eq!(sim.take(a), vec![(210, "bob".into())]);
    assert_eq!(sim.send(a, 207, "bad.nick"), vec![(302, "bad.nick".into())]);
}

#[test]
fn login_timeout_connection_cap_and_bans() {
    let mut sim = Sim::new(Config {
        max_connections: 2,
        bans: vec!["127.0.0.9".into(), "evil".into()],
        ..Config::default()
    });
    let idle = sim.connect();
    assert_eq!(
        sim.s.poll_timeout(),
        Some(sim.now + Duration::from_secs(60))
    );
    sim.now += Duration::from_secs(61);
    sim.s.handle_timeout(sim.now);
    sim.pump();
    assert!(sim.closed.contains(&idle));
    assert_eq!(sim.s.connections(), 0);
    let banned = sim.connect_from(Ipv4Addr::new(127, 0, 0, 9));
    assert_eq!(sim.take(banned), vec![(0, "You are banned".into())]);
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 2, "evil pw 0 \"x\" 1"),
        vec![(0, "You are banned".into())]
    );
    sim.connect();
    sim.connect();
    let full = sim.connect();
    assert_eq!(
        sim.take(full),
        vec![(0, "This server is full (2 connections)".into())]
    );
    assert!(sim.closed.contains(&full));
}

#[test]
fn disconnect_removes_files_from_the_index() {
    let mut sim = Sim::new(Config::default());
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    sim.share(a, "x.mp3", 128);
    assert_eq!(sim.results(b, r#"FILENAME CONTAINS "x""#).0.len(), 1);
    sim.s.on_disconnect(sim.now, a);
    assert_eq!(sim.results(b, r#"FILENAME CONTAINS "x""#).0.len(), 0);
    assert_eq!(sim.s.files(), 0);
}

#[test]
fn index_compaction_keeps_other_users_files_reachable() {
    let mut sim = Sim::new(Config {
        max_shared: 100_000,
        ..Config::default()
    });
    let a = sim.login("alice", 6699);
    let b = sim.login("bob", 6699);
    let c = sim.login("carol", 6699);
    let n = index::COMPACT_MIN_DEAD + 10;
    for i in 0..n {
        sim.s.handle_frame(
            sim.now,
            a,
            Frame::text(100, &format!("\"a{i}.mp3\" 0 1 128 44100 1")),
        );
    }
    sim.share(b, "keep me.mp3", 128);
    sim.share(b, "and me.mp3", 128);
    sim.pump();
    sim.s.on_disconnect(sim.now, a);
    sim.pump();
    assert_eq!(sim.s.files(), 2);
    // The compaction runs a bounded step per timer tick; searches, shares and browses in between see
    // every file.
    assert!(sim.s.index_busy(), "compaction started");
    let tick = sim.s.poll_timeout().expect("a compaction tick is due");
    assert!(tick <= sim.now + COMPACT_TICK);
    let mut steps = 0;
    while sim.s.index_busy() {
        sim.now += COMPACT_TICK;
        sim.s.handle_timeout(sim.now);
        sim.pump();
        steps += 1;
        assert!(steps < 1000, "compaction never finished");
        assert_eq!(sim.results(c, r#"FILENAME CONTAINS "keep""#).0.len(), 1);
        if steps == 3 {
            sim.share(b, "mid compaction.mp3", 128);
        }
        assert_eq!(
            sim.results(c, r#"FILENAME CONTAINS "compaction""#).0.len(),
            usize::from(steps >= 3)
        );
    }
    assert!(
        steps > 3,
        "the work was spread over several steps ({steps})"
    );
    assert_eq!(sim.s.files(), 3);
    assert_eq!(sim.send(c, 211, "bob").len(), 4);
    assert_eq!(sim.send(b, 102, "mid compaction.mp3"), vec![]);
    assert_eq!(sim.results(c, r#"FILENAME CONTAINS "keep""#).0.len(), 1);
    assert_eq!(sim.send(b, 102, "\"keep me.mp3\""), vec![]);
    assert_eq!(sim.results(c, r#"FILENAME CONTAINS "keep""#).0.len(), 0);
    assert_eq!(sim.send(c, 211, "bob").len(), 2);
    sim.send(c, 203, "bob \"and me.mp3\"");
    assert_eq!(sim.take(b)[0].0, 607);
    assert_eq!(sim.send(b, 608, "carol \"and me.mp3\"").len(), 0);
    assert_eq!(sim.take(c)[0].0, 204);
}

#[test]
fn password_work_is_handed_out_and_a_closed_connection_is_ignored() {
    let mut sim = Sim::new(Config::default());
    let c = sim.connect();
    sim.send(c, 6, "reg pw 0 \"x\" 2 r@x");
    sim.s.on_disconnect(sim.now, c);
    let c = sim.connect();
    sim.s
        .handle_frame(sim.now, c, Frame::text(2, "reg pw 0 \"x\" 2"));
    let job = sim.s.poll_password_job().expect("verification is deferred");
    assert!(matches!(job, PasswordJob::Verify { .. }));
    // Nothing was sent yet: the login waits for the job.
    assert_eq!(sim.s.poll_transmit(), None);
    sim.s
        .handle_frame(sim.now, c, Frame::text(2, "reg pw 0 \"x\" 2"));
    sim.pump();
    assert_eq!(sim.take(c), vec![(404, "login already in progress".into())]);
    sim.s.on_disconnect(sim.now, c);
    sim.s.password_done(sim.now, c, job.run());
    sim.pump();
    assert!(sim.take(c).is_empty());
    assert_eq!(sim.s.users(), 0);
}

/// Hands out pending password jobs without running them (the node's blocking pool, paused).
fn held_jobs(sim: &mut Sim) -> Vec<PasswordJob> {
    std::iter::from_fn(|| sim.s.poll_password_job()).collect()
}

/// Opens `n` connections and sends each a registration of `reg<i>` with `email(i)`, handing nothing out.
fn send_registrations(sim: &mut Sim, n: usize, email: impl Fn(usize) -> String) -> Vec<ConnId> {
    let conns: Vec<ConnId> = (0..n).map(|_| sim.connect()).collect();
    for (i, c) in conns.iter().enumerate() {
        let payload = format!("reg{i} pw 0 \"x\" 2 {}", email(i));
        sim.s.handle_frame(sim.now, *c, Frame::text(6, &payload));
    }
    conns
}

/// Runs the pending password jobs but not the account writes they lead to (the disk, paused).
fn run_held_jobs(sim: &mut Sim) {
    for job in held_jobs(sim) {
        sim.s.password_done(sim.now, job.conn(), job.run());
    }
}

#[test]
fn password_jobs_are_capped_queued_and_refused_when_the_queue_is_full() {
    let mut sim = Sim::new(Config {
        max_password_jobs: 1,
        password_queue: 1,
        ..Config::default()
    });
    let conns = send_registrations(&mut sim, 4, |_| "r@x".into());
    // One job runs, one waits, the other two are refused at once.
    let first = held_jobs(&mut sim);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].conn(), conns[0]);
    for c in &conns[2..] {
        assert!(!sim.s.conns.contains_key(c), "refused and closed");
    }
    // The first finishing frees the slot for the waiting one.
    sim.s.password_done(sim.now, conns[0], first[0].run());
    let second = held_jobs(&mut sim);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].conn(), conns[1]);
    sim.s.password_done(sim.now, conns[1], second[0].run());
    sim.pump();
    assert_eq!(sim.take(conns[0])[0].0, ty::LOGIN_ACK);
    assert_eq!(sim.take(conns[1])[0].0, ty::LOGIN_ACK);
    assert_eq!(
        sim.take(conns[2]),
        vec![(0, "Server busy, try again later".into())]
    );
    // A waiting login whose connection went away gives its place back.
    let a = sim.connect();
    let b = sim.connect();
    sim.s
        .handle_frame(sim.now, a, Frame::text(2, "reg0 pw 0 \"x\" 2"));
    sim.s
        .handle_frame(sim.now, b, Frame::text(2, "reg1 pw 0 \"x\" 2"));
    let running = held_jobs(&mut sim);
    assert_eq!(running.len(), 1);
    sim.s.on_disconnect(sim.now, b);
    let c = sim.connect();
    sim.s
        .handle_frame(sim.now, c, Frame::text(2, "reg1 pw 0 \"x\" 2"));
    sim.s.password_done(sim.now, a, running[0].run());
    let next = held_jobs(&mut sim);
    assert_eq!(next.iter().map(|j| j.conn()).collect::<Vec<_>>(), vec![c]);
}

#[test]
fn a_flooding_ip_queues_only_behind_itself_and_a_login_from_another_ip_gets_the_next_slot() {
    let mut sim = Sim::new(Config {
        max_password_jobs: 2,
        password_queue: 64,
        ..Config::default()
    });
    let a = Ipv4Addr::new(10, 0, 0, 1);
    let b = Ipv4Addr::new(10, 0, 0, 2);
    let bob0 = sim.connect_from(b);
    assert_eq!(
        sim.send(bob0, 6, "bob pw 0 \"x\" 2 b@x")[0].0,
        ty::LOGIN_ACK
    );
    sim.s.on_disconnect(sim.now, bob0);
    sim.pump();
    // IP A keeps 2 registrations running, 64 waiting and 2 more; then bob logs in from IP B.
    let flood: Vec<ConnId> = (0..68).map(|_| sim.connect_from(a)).collect();
    let bob = sim.connect_from(b);
    for (i, c) in flood.iter().enumerate() {
        let payload = format!("a{i} pw 0 \"x\" 2 a@x");
        sim.s.handle_frame(sim.now, *c, Frame::text(6, &payload));
    }
    sim.s
        .handle_frame(sim.now, bob, Frame::text(2, "bob pw 0 \"x\" 2"));
    let running = held_jobs(&mut sim);
    assert_eq!(
        running.iter().map(|j| j.conn()).collect::<Vec<_>>(),
        flood[..2]
    );
    for c in &flood[2..66] {
        assert!(sim.s.conns.contains_key(c), "A's own 64 wait");
    }
    for c in &flood[66..] {
        assert!(!sim.s.conns.contains_key(c), "A's excess is refused");
    }
    assert!(sim.s.conns.contains_key(&bob), "bob waits too");
    // The first free slot goes to bob, not to the 64 that A queued before him.
    sim.s
        .password_done(sim.now, running[0].conn(), running[0].run());
    let next = held_jobs(&mut sim);
    assert_eq!(next.iter().map(|j| j.conn()).collect::<Vec<_>>(), vec![bob]);
    sim.s.password_done(sim.now, bob, next[0].run());
    // Leave A's waiting ones out of the rest (each would run a real Argon2 hash).
    for c in &flood[2..66] {
        sim.s.on_disconnect(sim.now, *c);
    }
    sim.s
        .password_done(sim.now, running[1].conn(), running[1].run());
    sim.pump();
    assert_eq!(sim.take(bob)[0].0, ty::LOGIN_ACK);
    for c in &flood[66..] {
        assert_eq!(
            sim.take(*c),
            vec![(0, "Server busy, try again later".into())]
        );
    }
}

#[test]
fn clones_and_registrations_are_limited_per_ip() {
    let mut sim = Sim::new(Config {
        max_clones: 2,
        max_registrations_per_ip: 1,
        registration_window: Duration::from_secs(60),
        ..Config::default()
    });
    let ip = Ipv4Addr::new(10, 0, 0, 1);
    let other = Ipv4Addr::new(10, 0, 0, 2);
    let login = |sim: &mut Sim, ip: Ipv4Addr, nick: &str| {
        let c = sim.connect_from(ip);
        (c, sim.send(c, 2, &format!("{nick} pw 0 \"x\" 2")))
    };
    assert_eq!(login(&mut sim, ip, "a1").1[0].0, ty::LOGIN_ACK);
    let (a2, r) = login(&mut sim, ip, "a2");
    assert_eq!(r[0].0, ty::LOGIN_ACK);
    let (_, r) = login(&mut sim, ip, "a3");
    assert_eq!(
        r,
        vec![(0, "Too many connections from your IP (clones)".into())]
    );
    assert_eq!(login(&mut sim, other, "b1").1[0].0, ty::LOGIN_ACK);
    // A clone leaving frees its place.
    sim.s.on_disconnect(sim.now, a2);
    assert_eq!(login(&mut sim, ip, "a3").1[0].0, ty::LOGIN_ACK);

    let register = |sim: &mut Sim, ip: Ipv4Addr, nick: &str| {
        let c = sim.connect_from(ip);
        sim.send(c, 6, &format!("{nick} pw 0 \"x\" 2 r@x"))
    };
    let ip3 = Ipv4Addr::new(10, 0, 0, 3);
    assert_eq!(register(&mut sim, ip3, "r1")[0].0, ty::LOGIN_ACK);
    assert_eq!(
        register(&mut sim, ip3, "r2"),
        vec![(0, "Too many registrations from your IP".into())]
    );
    assert_eq!(register(&mut sim, other, "r3")[0].0, ty::LOGIN_ACK);
    sim.now += Duration::from_secs(61);
    assert_eq!(register(&mut sim, ip3, "r2")[0].0, ty::LOGIN_ACK);
}

#[test]
fn a_registration_is_acknowledged_only_once_durable_and_writes_coalesce() {
    let mut sim = Sim::new(Config {
        max_password_jobs: 8,
        ..Config::default()
    });
    let regs = send_registrations(&mut sim, 3, |i| format!("r{i}@x"));
    run_held_jobs(&mut sim);
    // Hashed, but not durable: no ack yet, and the nicks are taken.
    let job = sim.s.poll_persist().expect("records to persist");
    assert_eq!(
        job.records.len(),
        3,
        "the three registrations share one write"
    );
    assert!(sim.s.poll_persist().is_none(), "one write out at a time");
    while let Some(t) = sim.s.poll_transmit() {
        assert!(
            !matches!(t, Transmit::Frame(_, ref f) if f.ty == ty::LOGIN_ACK),
            "{t:?}"
        );
    }
    let other = sim.connect();
    assert_eq!(sim.send(other, 7, "reg0"), vec![(9, String::new())]);
    assert_eq!(
        sim.send(other, 6, "REG1 pw2 0 \"x\" 2 y@x"),
        vec![(0, "Nick registered to another user".into())]
    );
    let guest = sim.connect();
    assert_eq!(
        sim.send(guest, 2, "reg2 pw 0 \"x\" 2"),
        vec![(0, "Nick registered to another user".into())]
    );
    // A fourth registration while the write is out waits for the next one.
    let late = sim.connect();
    sim.s
        .handle_frame(sim.now, late, Frame::text(6, "reg3 pw 0 \"x\" 2 r3@x"));
    run_held_jobs(&mut sim);
    assert!(sim.s.poll_persist().is_none());
    sim.write(job);
    sim.pump();
    for (i, c) in regs.iter().enumerate() {
        assert_eq!(sim.take(*c)[0], (ty::LOGIN_ACK, format!("r{i}@x")));
    }
    assert_eq!(sim.take(late)[0], (ty::LOGIN_ACK, "r3@x".into()));
    assert_eq!(sim.s.accounts().len(), 4);
    assert!(sim.s.persist_idle());
}

#[test]
fn a_failed_write_refuses_the_registration_and_frees_the_nick() {
    let mut sim = Sim::new(Config::default());
    sim.fail_writes = true;
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 6, "bob pw 0 \"x\" 2 b@x"),
        vec![(0, "registration failed: account store unavailable".into())]
    );
    assert!(sim.closed.contains(&c));
    assert!(sim.s.accounts().get("bob").is_none());
    let c = sim.connect();
    assert_eq!(
        sim.send(c, 7, "bob"),
        vec![(8, String::new())],
        "the nick is free again"
    );
    sim.fail_writes = false;
    assert_eq!(sim.send(c, 6, "bob pw 0 \"x\" 2 b@x")[0], (3, "b@x".into()));
    // A registration whose client left before the write still becomes an account (it is durable).
    let gone = sim.connect();
    sim.s
        .handle_frame(sim.now, gone, Frame::text(6, "ann pw 0 \"x\" 2 a@x"));
    run_held_jobs(&mut sim);
    sim.s.on_disconnect(sim.now, gone);
    sim.pump();
    assert!(sim.take(gone).is_empty());
    assert!(sim.s.accounts().get("ann").is_some());
}

#[test]
fn restart_keeps_every_acknowledged_account_and_logout_time() {
    let dir = tempfile::tempdir().unwrap();
    let (log, acc) = AccountLog::open(dir.path(), false).unwrap();
    let mut sim = Sim::with_store(Config::default(), log, acc);
    let mut acked = Vec::new();
    for i in 0..4 {
        let c = sim.connect();
        let r = sim.send(c, 6, &format!("n{i} pw{i} 0 \"x\" 2 n{i}@x"));
        assert_eq!(r[0].0, ty::LOGIN_ACK);
        acked.push(format!("n{i}"));
        if i == 0 {
            sim.now += Duration::from_secs(42);
            sim.s.on_disconnect(sim.now, c);
            sim.pump();
        }
    }
    // A registration hashed but not yet written when the "crash" happens was never acknowledged.
    let c = sim.connect();
    sim.s
        .handle_frame(sim.now, c, Frame::text(6, "lost pw 0 \"x\" 2 l@x"));
    run_held_jobs(&mut sim);
    drop(sim);
    let (log, acc) = AccountLog::open(dir.path(), false).unwrap();
    let mut sim = Sim::with_store(Config::default(), log, acc);
    for (i, nick) in acked.iter().enumerate() {
        let c = sim.connect();
        let r = sim.send(c, 2, &format!("{nick} pw{i} 0 \"x\" 2"));
        assert_eq!(r[0], (ty::LOGIN_ACK, format!("{nick}@x")));
    }
    let c = sim.connect();
    assert_eq!(sim.send(c, 7, "lost"), vec![(8, String::new())]);
    assert_eq!(sim.s.accounts().get("n0").unwrap().last_seen, 1_000_042);
}

/// Fuzzing `handle_frame`: arbitrary frame types and payloads (arbitrary bytes, and well-formed commands
/// over a few nicks, words and channels so that logins, shares, searches and chat really happen), on several
/// connections in any login state, with disconnects, time passing and failing account writes between them.
/// Nothing may panic, every search by a logged-in user is closed by exactly one 202, and the server's
/// bookkeeping stays consistent ([`Server::check_invariants`]) after every step.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [u16; 44] = [
        0, 2, 4, 5, 6, 7, 11, 100, 102, 110, 200, 203, 205, 207, 208, 211, 214, 218, 219, 220, 221,
        300, 303, 400, 401, 402, 403, 500, 600, 603, 608, 617, 700, 703, 750, 751, 752, 870, 900,
        901, 920, 10300, 9999, 65535,
    ];

    fn command() -> impl Strategy<Value = String> {
        let nick = prop::sample::select(vec!["al", "bo", "Al", "cy", "operserv", "x y"]);
        let word = prop::sample::select(vec!["jude", "hey", "rock", "-jude", "a\"b", ""]);
        prop_oneof![
            (nick.clone(), 0u32..12, prop::sample::select(vec![0u32, 6699]))
                .prop_map(|(n, s, p)| format!("{n} pw {p} \"c 1\" {s} {n}@x")),
            (word.clone(), word.clone(), 0u32..400).prop_map(|(a, b, r)| format!(
                "\"d\\\\{a} {b}.mp3\" 0123456789abcdef0123456789abcdef 5000 {r} 44100 60"
            )),
            (word.clone(), word.clone(), 0u32..9).prop_map(|(a, b, m)| format!(
                "FILENAME CONTAINS \"{a}\" FILENAME EXCLUDES \"{b}\" MAX_RESULTS {m} BITRATE \"AT LEAST\" \"128\""
            )),
            (nick.clone(), word.clone()).prop_map(|(n, w)| format!("{n} \"d\\\\{w} {w}.mp3\"")),
            (nick, word).prop_map(|(n, w)| format!("#{w} {n}")),
            "[ -~]{0,40}",
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        Connect(u8),
        Frame(usize, u16, Vec<u8>),
        Disconnect(usize),
        Wait(u16),
        FailWrites(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let payload = prop_oneof![
            3 => command().prop_map(String::into_bytes),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ];
        let common = vec![
            2u16, 6, 7, 100, 102, 200, 200, 203, 211, 400, 402, 500, 603, 608,
        ];
        let ty = prop_oneof![
            4 => prop::sample::select(common),
            3 => prop::sample::select(TYPES.to_vec()),
            1 => any::<u16>(),
        ];
        prop_oneof![
            2 => (0u8..3).prop_map(Op::Connect),
            40 => (0usize..6, ty, payload).prop_map(|(c, t, p)| Op::Frame(c, t, p)),
            1 => (0usize..6).prop_map(Op::Disconnect),
            1 => any::<u16>().prop_map(Op::Wait),
            1 => any::<bool>().prop_map(Op::FailWrites),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn handle_frame_never_panics_and_keeps_the_server_consistent(
            ops in prop::collection::vec(op(), 1..150)
        ) {
            let mut sim = Sim::new(Config {
                flood_commands: 20,
                max_shared: 4,
                max_clones: 3,
                ..Config::default()
            });
            // Two users online and sharing from the start, so searches, browses and downloads find
            // something whatever the random steps do.
            let mut conns = vec![sim.login("seed1", 6699), sim.login("seed2", 0)];
            sim.share(conns[0], "d\\hey jude.mp3", 128);
            sim.share(conns[1], "d\\rock jude.mp3", 320);
            let mut searched = 0;
            for op in ops {
                match op {
                    Op::Connect(ip) => conns.push(sim.connect_from(Ipv4Addr::new(10, 0, 0, ip))),
                    Op::Frame(i, t, payload) => {
                        let Some(&c) = conns.get(i % conns.len().max(1)) else { continue };
                        let searching = t == ty::SEARCH && sim.s.user(c).is_some();
                        sim.take(c);
                        sim.s.handle_frame(sim.now, c, Frame { ty: t, payload });
                        sim.pump();
                        let ends = sim.take(c).iter().filter(|f| f.0 == ty::SEARCH_END).count();
                        prop_assert_eq!(ends, usize::from(searching), "one 202 per search");
                        searched += usize::from(searching);
                    }
                    Op::Disconnect(i) => {
                        if let Some(&c) = conns.get(i % conns.len().max(1)) {
                            sim.s.on_disconnect(sim.now, c);
                            sim.pump();
                        }
                    }
                    Op::Wait(ms) => {
                        sim.now += Duration::from_millis(u64::from(ms) * 4);
                        sim.s.handle_timeout(sim.now);
                        sim.pump();
                    }
                    Op::FailWrites(f) => sim.fail_writes = f,
                }
                for c in std::mem::take(&mut sim.closed) {
                    sim.s.on_disconnect(sim.now, c);
                }
                sim.pump();
                sim.s.check_invariants();
            }
            if std::env::var_os("NAPSTER_FUZZ_DEBUG").is_some() {
                eprintln!("searches {searched}, users {}, files {}", sim.s.users(), sim.s.files());
            }
        }
    }
}
