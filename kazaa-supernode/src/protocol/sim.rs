//! In-memory simulator: several [`Supernode`]s and scripted children wired by fake connections. Every
//! packet goes through the codec (encode, frame, decode) on its way, so what the state machines emit is
//! wire-valid. Covers kazaa.md §7 cases 7, 8, 9, 13 (relay part) and 15 at the protocol level.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::hash::{uuhash, Sig2Dat, UuHash};

use super::matching::terms;
use super::ordinary::{
    choose_supernode, group_by_hash, is_firewalled, pinned_sources, NodeCache, Probe, PROBE_COUNT,
};
use super::supernode::{Action, Supernode, SupernodeConfig};
use super::ConnId;
use crate::codec::message::{FileMeta, NodeEntry, Query, Reply};
use crate::codec::tag::code;
use crate::codec::{Frame, FrameDecoder, FrameEncoder, MediaType, Message, Packet, Realm, Tag};

const MAX_STEPS: usize = 100_000;

fn sn_addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, i as u8 + 1), 1214)
}

fn wire(packet: &Packet) -> Packet {
    let (msg_type, payload) = packet.encode();
    let mut out = Vec::new();
    FrameEncoder::new()
        .encode(&Frame::Message { msg_type, payload }, &mut out)
        .unwrap();
    let (frame, n) = FrameDecoder::new().decode(&out).unwrap().unwrap();
    assert_eq!(n, out.len());
    let Frame::Message { msg_type, payload } = frame else {
        panic!("not a message")
    };
    Packet::decode(msg_type, &payload).unwrap()
}

#[derive(Default)]
struct Sim {
    sns: Vec<Supernode>,
    peer_of: HashMap<ConnId, ConnId>,
    sn_of: HashMap<ConnId, usize>,
    is_link: HashMap<ConnId, bool>,
    inbox: HashMap<ConnId, Vec<Packet>>,
    queue: VecDeque<(ConnId, Packet)>,
    next: u64,
    dead: Vec<ConnId>,
    /// Connect-backs the SNs asked for (SN-side connection, address), carried out by the test.
    connect_backs: Vec<(ConnId, SocketAddrV4)>,
}

impl Sim {
    fn new(n: usize, tweak: impl Fn(&mut SupernodeConfig)) -> Self {
        let mut s = Sim::default();
        for i in 0..n {
            let mut cfg = SupernodeConfig::new(sn_addr(i));
            cfg.seed = i as u64;
            tweak(&mut cfg);
            s.sns.push(Supernode::new(cfg));
        }
        s
    }

    fn pair(&mut self) -> (ConnId, ConnId) {
        self.next += 2;
        let (a, b) = (ConnId(self.next), ConnId(self.next + 1));
        self.peer_of.insert(a, b);
        self.peer_of.insert(b, a);
        (a, b)
    }

    fn link(&mut self, i: usize, j: usize) {
        let (a, b) = self.pair();
        self.sn_of.insert(a, i);
        self.sn_of.insert(b, j);
        self.is_link.insert(a, true);
        self.is_link.insert(b, true);
        self.sns[i].peer_connected(a, sn_addr(j));
        self.sns[j].peer_connected(b, sn_addr(i));
    }

    /// A child of SN `i` at `ip`; returns the child's end of the connection.
    fn child(&mut self, i: usize, ip: Ipv4Addr, user: &str, port: u16) -> ConnId {
        let (a, b) = self.pair();
        self.sn_of.insert(a, i);
        self.is_link.insert(a, false);
        self.inbox.insert(b, Vec::new());
        let acts = self.sns[i].child_connected(a, SocketAddrV4::new(ip, 40000));
        self.apply(acts);
        self.send(
            b,
            Message::UserInfo {
                addr: SocketAddrV4::new(ip, port),
                bandwidth: 0x60,
                user: user.into(),
            },
        );
        b
    }

    fn send(&mut self, child: ConnId, m: Message) {
        let to = self.peer_of[&child];
        self.queue.push_back((to, wire(&Packet::plain(m))));
        self.run();
    }

    fn apply(&mut self, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Send { conn, packet } => {
                    let to = self.peer_of[&conn];
                    self.queue.push_back((to, wire(&packet)));
                }
                Action::Close { conn, .. } => self.dead.push(conn),
                Action::ConnectBack { conn, addr } => self.connect_backs.push((conn, addr)),
            }
        }
    }

    fn run(&mut self) {
        let now = Instant::now();
        let mut steps = 0;
        while let Some((to, packet)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < MAX_STEPS, "message storm");
            if let Some(inbox) = self.inbox.get_mut(&to) {
                inbox.push(packet);
                continue;
            }
            let Some(&i) = self.sn_of.get(&to) else {
                continue;
            };
            let acts = if self.is_link[&to] {
                self.sns[i].peer_message(to, packet, now)
            } else {
                self.sns[i].child_message(to, packet, now)
            };
            self.apply(acts);
        }
    }

    fn take(&mut self, child: ConnId) -> Vec<Message> {
        std::mem::take(self.inbox.get_mut(&child).unwrap())
            .into_iter()
            .map(|p| p.message)
            .collect()
    }
}

fn file(name: &str, artist: &str, seed: u8) -> FileMeta {
    let data = vec![seed; 1000 + seed as usize];
    let hash = uuhash(&data);
    FileMeta {
        media: MediaType::from_name(name).code(),
        hash,
        file_id: u32::from(hash.file_id()),
        size: data.len() as u64,
        tags: vec![
            Tag::string(code::FILENAME, name),
            Tag::string(code::ARTIST, artist),
            Tag::int(code::BITRATE, 128),
        ],
    }
}

fn query(id: u16, max: u16, words: &str) -> Message {
    Message::Query(Query {
        max_results: max,
        search_id: id,
        realm: Realm::All.code(),
        terms: vec![terms::keywords(words), terms::kazaa_extra()],
    })
}

fn replies(msgs: &[Message]) -> Vec<&Reply> {
    msgs.iter()
        .filter_map(|m| {
            if let Message::Reply(r) = m {
                Some(r)
            } else {
                None
            }
        })
        .collect()
}

fn ends(msgs: &[Message], id: u16) -> usize {
    msgs.iter()
        .filter(|m| **m == Message::QueryEnd { search_id: id })
        .count()
}

#[test]
fn on_login_case_7() {
    let mut sim = Sim::new(2, |_| {});
    sim.link(0, 1);
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let a = sim.child(0, ip, "alice", 1214);
    let got = sim.take(a);
    assert_eq!(
        got[0],
        Message::ProtocolVersion(super::supernode::PROTOCOL_VERSION)
    );
    let Message::NodeList(list) = &got[1] else {
        panic!("no node list: {got:?}")
    };
    assert!(list.len() <= 200);
    assert_eq!(list[0].addr, sn_addr(0));
    assert!(list.iter().any(|e| e.addr == sn_addr(1)));
    assert_eq!(got[2], Message::ExternalIp(ip));
    assert!(matches!(got[3], Message::Stats(_)));
    assert_eq!(got[4], Message::NetworkName("KaZaA".into()));

    let (f1, f2) = (
        file("Artist - Song.mp3", "Artist", 1),
        file("Other.avi", "X", 2),
    );
    sim.send(a, Message::Share(f1.clone()));
    sim.send(a, Message::Share(f2.clone()));
    let conn = sim.peer_of[&a];
    assert_eq!(sim.sns[0].index().files_of(conn), &[f1.clone(), f2.clone()]);
    assert_eq!(sim.sns[0].index().child(conn).unwrap().user, "alice");
    sim.send(
        a,
        Message::Unshare(FileMeta {
            media: 0,
            ..f1.clone()
        }),
    );
    assert_eq!(sim.sns[0].index().files_of(conn), &[f2]);
    assert_eq!(sim.sns[0].index().file_count(), 1);
    let acts = sim.sns[0].disconnected(conn);
    assert!(acts.is_empty());
    assert_eq!(sim.sns[0].index().file_count(), 0);
    assert_eq!(sim.sns[0].index().child_count(), 0);
}

/// Promotion's reachability input: the SN probes a child's advertised port and confirms with 0x15
/// only when the connect-back worked and the child still advertises that address.
#[test]
fn connect_back_confirms_reachability() {
    let mut sim = Sim::new(1, |_| {});
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let a = sim.child(0, ip, "alice", 1214);
    let _ = sim.take(a);
    let conn = sim.peer_of[&a];
    let at = SocketAddrV4::new(ip, 1214);
    assert_eq!(sim.connect_backs, vec![(conn, at)]);
    // A failed connect-back says nothing; a success is echoed as 0x15 with that address.
    let acts = sim.sns[0].connect_back_done(conn, at, false);
    assert!(acts.is_empty());
    let acts = sim.sns[0].connect_back_done(conn, at, true);
    sim.apply(acts);
    sim.run();
    assert_eq!(sim.take(a), vec![Message::Reachability(at)]);
    // A stale result (the child moved to another port meanwhile) is ignored.
    let acts = sim.sns[0].connect_back_done(conn, SocketAddrV4::new(ip, 9), true);
    assert!(acts.is_empty());
    // A firewalled child (port 0) is not probed.
    let _b = sim.child(0, Ipv4Addr::new(127, 0, 0, 10), "bob", 0);
    assert_eq!(sim.connect_backs.len(), 1);
}

#[test]
fn share_limit_and_full_supernode() {
    let mut sim = Sim::new(1, |c| {
        c.max_shares_per_child = 2;
        c.max_children = 1;
    });
    let a = sim.child(0, Ipv4Addr::new(127, 0, 0, 2), "a", 1214);
    for s in 0..5 {
        sim.send(a, Message::Share(file(&format!("f{s}.mp3"), "x", s)));
    }
    assert_eq!(sim.sns[0].index().file_count(), 2);
    let (c, _) = sim.pair();
    let acts = sim.sns[0].child_connected(c, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1));
    assert!(matches!(acts[..], [Action::Close { .. }]));
}

#[test]
fn search_local_case_8() {
    let mut sim = Sim::new(1, |_| {});
    let a = sim.child(0, Ipv4Addr::new(127, 0, 0, 2), "alice", 1214);
    let b = sim.child(0, Ipv4Addr::new(127, 0, 0, 3), "bob", 1214);
    let f = file("Artist - Song.mp3", "Artist", 1);
    sim.send(a, Message::Share(f.clone()));
    for s in 10..15 {
        sim.send(a, Message::Share(file(&format!("Song {s}.mp3"), "Y", s)));
    }
    sim.take(b);
    sim.send(b, query(42, 50, "artist - SONG"));
    let got = sim.take(b);
    let r = replies(&got);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].sn, sn_addr(0));
    assert_eq!(r[0].search_id, 42);
    let hit = &r[0].results[0];
    assert_eq!(r[0].results.len(), 1);
    assert_eq!(
        hit.addr,
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 1214)
    );
    assert_eq!(
        (hit.user.as_str(), hit.network.as_str()),
        ("alice", "KaZaA")
    );
    assert_eq!(
        (hit.hash, hit.file_id, hit.size, &hit.tags),
        (f.hash, f.file_id, f.size, &f.tags)
    );
    assert_eq!(got.last(), Some(&Message::QueryEnd { search_id: 42 }));
    let mut body = Vec::new();
    got[0].encode_body(&mut body);
    assert!(body.windows(12).any(|w| w == b"alice\x01KaZaA\x00"));

    // max_results is honoured; the asker's own files are not returned to it.
    sim.send(b, query(43, 3, "song"));
    let got = sim.take(b);
    assert_eq!(replies(&got)[0].results.len(), 3);
    assert_eq!(ends(&got, 43), 1);
    sim.send(a, query(44, 50, "song"));
    let got = sim.take(a);
    assert!(replies(&got).is_empty());
    assert_eq!(ends(&got, 44), 1);
    // Search by hash.
    sim.send(
        b,
        Message::Query(Query {
            max_results: 16,
            search_id: 45,
            realm: 0xBF,
            terms: vec![terms::hash(&f.hash)],
        }),
    );
    let got = sim.take(b);
    assert_eq!(replies(&got)[0].results.len(), 1);
    assert_eq!(replies(&got)[0].results[0].hash, f.hash);
}

/// One sharing child per SN, each sharing "Song <i>" with its own bytes.
fn populated(
    n: usize,
    links: &[(usize, usize)],
    tweak: impl Fn(&mut SupernodeConfig),
) -> (Sim, ConnId) {
    let mut sim = Sim::new(n, tweak);
    for &(i, j) in links {
        sim.link(i, j);
    }
    for i in 0..n {
        let c = sim.child(
            i,
            Ipv4Addr::new(127, 0, 2, i as u8 + 1),
            &format!("u{i}"),
            1214,
        );
        sim.send(
            c,
            Message::Share(file(&format!("Song {i}.mp3"), "A", i as u8 + 1)),
        );
    }
    let b = sim.child(0, Ipv4Addr::new(127, 0, 3, 1), "asker", 1214);
    sim.take(b);
    (sim, b)
}

#[test]
fn search_waves_chain_case_9() {
    let (mut sim, b) = populated(3, &[(0, 1), (1, 2)], |_| {});
    sim.send(b, query(7, 50, "song"));
    let got = sim.take(b);
    let r = replies(&got);
    let heads: Vec<_> = r.iter().map(|r| r.sn).collect();
    assert_eq!(
        heads,
        vec![sn_addr(0), sn_addr(1), sn_addr(2)],
        "one wave per SN, headed by it"
    );
    assert!(r.iter().all(|r| r.search_id == 7 && r.results.len() == 1));
    assert_eq!(ends(&got, 7), 1);
    assert_eq!(got.last(), Some(&Message::QueryEnd { search_id: 7 }));
}

#[test]
fn search_waves_loop_has_no_duplicates() {
    // A full mesh of 4 SNs: every query reaches each SN along several paths.
    let links = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
    let (mut sim, b) = populated(4, &links, |_| {});
    sim.send(b, query(9, 50, "song"));
    let got = sim.take(b);
    let r = replies(&got);
    let mut heads: Vec<_> = r.iter().map(|r| r.sn).collect();
    heads.sort();
    assert_eq!(heads, (0..4).map(sn_addr).collect::<Vec<_>>());
    let total: usize = r.iter().map(|r| r.results.len()).sum();
    assert_eq!(total, 4);
    assert_eq!(ends(&got, 9), 1);
    let dups: u64 = sim.sns.iter().map(|s| s.counters().duplicates).sum();
    assert!(dups > 0, "the mesh must have produced duplicates to drop");
}

#[test]
fn hop_limit_holds() {
    let (mut sim, b) = populated(5, &[(0, 1), (1, 2), (2, 3), (3, 4)], |c| c.hop_limit = 2);
    sim.send(b, query(3, 50, "song"));
    let got = sim.take(b);
    let heads: Vec<_> = replies(&got).iter().map(|r| r.sn).collect();
    // Hop 1 reaches SN1, hop 2 reaches SN2, which may not forward further.
    assert_eq!(heads, vec![sn_addr(0), sn_addr(1), sn_addr(2)]);
    assert_eq!(ends(&got, 3), 1);
    assert_eq!(sim.sns[2].counters().hop_limited, 1);
}

#[test]
fn up_to_x_stops_the_waves() {
    let (mut sim, b) = populated(4, &[(0, 1), (1, 2), (2, 3)], |_| {});
    sim.send(b, query(5, 2, "song"));
    let got = sim.take(b);
    let total: usize = replies(&got).iter().map(|r| r.results.len()).sum();
    assert_eq!(total, 2);
    assert_eq!(ends(&got, 5), 1);
    assert_eq!(got.last(), Some(&Message::QueryEnd { search_id: 5 }));
}

#[test]
fn silent_link_times_out_and_lost_link_ends() {
    let mut sim = Sim::new(2, |c| c.search_timeout = Duration::from_secs(5));
    // SN0's link goes to a connection nobody processes.
    let (a, _) = sim.pair();
    sim.sns[0].peer_connected(a, sn_addr(1));
    let b = sim.child(0, Ipv4Addr::new(127, 0, 3, 1), "asker", 1214);
    sim.take(b);
    sim.send(b, query(1, 50, "x"));
    assert_eq!(ends(&sim.take(b), 1), 0);
    let acts = sim.sns[0].tick(Instant::now() + Duration::from_secs(6));
    sim.apply(acts);
    sim.run();
    assert_eq!(ends(&sim.take(b), 1), 1);
    sim.send(b, query(2, 50, "x"));
    let acts = sim.sns[0].disconnected(a);
    sim.apply(acts);
    sim.run();
    assert_eq!(ends(&sim.take(b), 2), 1);
}

#[test]
fn push_is_relayed_through_both_supernodes() {
    let mut sim = Sim::new(2, |_| {});
    sim.link(0, 1);
    // The target announces port 0: firewalled.
    let target_addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, 4, 1), 0);
    let t = sim.child(1, *target_addr.ip(), "hidden", 0);
    let b = sim.child(0, Ipv4Addr::new(127, 0, 4, 2), "asker", 1214);
    sim.take(t);
    assert!(is_firewalled(&target_addr));
    let requester = SocketAddrV4::new(Ipv4Addr::new(127, 0, 4, 2), 1214);
    sim.send(
        b,
        Message::PushRequest {
            push_id: 77,
            requester,
            target: target_addr,
            target_sn: sn_addr(1),
            target_user: "hidden".into(),
        },
    );
    assert_eq!(
        sim.take(t),
        vec![Message::PushRelay {
            push_id: 77,
            requester
        }]
    );
}

/// Push beyond the directly linked SNs: in a chain SN0–SN1–SN2 the asker's SN (0) has no link to the
/// target's SN (2); the push follows the reverse path of SN2's result wave (SN0 → SN1 → SN2).
#[test]
fn push_follows_the_reverse_path_of_the_result_wave() {
    let mut sim = Sim::new(3, |_| {});
    sim.link(0, 1);
    sim.link(1, 2);
    let target_addr = SocketAddrV4::new(Ipv4Addr::new(127, 0, 5, 1), 0);
    let t = sim.child(2, *target_addr.ip(), "hidden", 0);
    sim.send(t, Message::Share(file("Far Away.mp3", "Far", 9)));
    let b = sim.child(0, Ipv4Addr::new(127, 0, 5, 2), "asker", 1214);
    sim.take(t);
    sim.take(b);
    let requester = SocketAddrV4::new(Ipv4Addr::new(127, 0, 5, 2), 1214);
    let push = Message::PushRequest {
        push_id: 78,
        requester,
        target: target_addr,
        target_sn: sn_addr(2),
        target_user: "hidden".into(),
    };
    // Before any wave came back from SN2, SN0 knows no way there: the push is dropped.
    sim.send(b, push.clone());
    assert!(sim.take(t).is_empty());
    sim.send(b, query(1, 50, "far away"));
    let got = sim.take(b);
    let waves = replies(&got);
    assert!(waves.iter().any(|r| r.sn == sn_addr(2)), "{got:?}");
    sim.send(b, push);
    assert_eq!(
        sim.take(t),
        vec![Message::PushRelay {
            push_id: 78,
            requester
        }]
    );
}

#[test]
fn fanout_picks_a_seeded_subset() {
    let run = || {
        let links: Vec<_> = (1..9).map(|j| (0, j)).collect();
        let (mut sim, b) = populated(9, &links, |c| c.fanout = 3);
        sim.send(b, query(1, 50, "song"));
        let got = sim.take(b);
        replies(&got).iter().map(|r| r.sn).collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first.len(), 4, "own wave plus three links");
    assert_eq!(first, run(), "same seed, same links");
}

#[test]
fn node_cache_probe_choose_failover_hop() {
    let now = Instant::now();
    let mut cache = NodeCache::new();
    let list: Vec<NodeEntry> = (0..250u32)
        .map(|i| NodeEntry {
            addr: SocketAddrV4::new(Ipv4Addr::from(0x7F00_0000 + i), 1214),
            last_seen: (i % 7) as u8,
            load: (i % 100) as u8,
        })
        .collect();
    cache.merge(&list, now);
    assert_eq!(cache.len(), 200);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let probes = cache.probe_candidates(now, None, &mut rng);
    assert_eq!(probes.len(), PROBE_COUNT);
    let results: Vec<Probe> = probes
        .iter()
        .enumerate()
        .map(|(i, &addr)| Probe {
            addr,
            rtt: Duration::from_millis(10 * i as u64),
            load: 90 - 10 * i as u8,
        })
        .collect();
    // Scores: 900, 810, 720, 630, 540: the last one wins despite the longest round trip.
    let best = choose_supernode(&results, None).unwrap();
    assert_eq!(best, probes[4]);
    // Failover: the failed SN is not probed again during its back-off.
    cache.mark_failed(best, now);
    let again = cache.probe_candidates(now, None, &mut rng);
    assert!(!again.contains(&best));
    // Hopping: the current SN is excluded.
    let cur = again[0];
    assert!(!cache
        .probe_candidates(now, Some(cur), &mut rng)
        .contains(&cur));
    // After the back-off it is eligible again.
    cache.mark_alive(best, 0, now);
    assert!(cache
        .probe_candidates(now + Duration::from_secs(61), None, &mut rng)
        .contains(&best));
}

#[test]
fn pollution_case_15() {
    let real = b"the real song bytes".repeat(100);
    let mut decoy = real.clone();
    decoy[5] ^= 0xFF;
    let (hr, hd) = (uuhash(&real), uuhash(&decoy));
    assert_ne!(hr, hd);
    let mk = |hash: UuHash, ip: u8| crate::codec::message::SearchResult {
        addr: SocketAddrV4::new(Ipv4Addr::new(127, 0, 5, ip), 1214),
        bandwidth: 0x60,
        user: format!("u{ip}"),
        network: "KaZaA".into(),
        hash,
        file_id: u32::from(hash.file_id()),
        size: real.len() as u64,
        tags: vec![Tag::string(code::FILENAME, "Hit Song.mp3")],
    };
    let results = vec![mk(hr, 1), mk(hd, 2), mk(hr, 3), mk(hd, 4), mk(hd, 5)];
    let versions = group_by_hash(&results);
    assert_eq!(versions.len(), 2, "same name, two hashes: two versions");
    assert!(versions
        .iter()
        .all(|v| v.names == vec!["Hit Song.mp3".to_owned()]));
    let link = Sig2Dat {
        name: "Hit Song.mp3".into(),
        length: real.len() as u64,
        uuhash: hr,
    }
    .to_uri();
    let trusted = Sig2Dat::parse(&link).unwrap();
    let srcs = pinned_sources(&results, &trusted.uuhash, Some(trusted.length));
    assert_eq!(srcs, vec![results[0].addr, results[2].addr]);
}
