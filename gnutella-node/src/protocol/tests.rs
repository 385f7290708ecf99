//! The notes' numbered test cases over the sans-I/O servent, and the 50-node flood in the simulator.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::codec::ggep::GgepExt;
use crate::codec::message::{self as m, hflags, sha1_urn, Bye, Message, Ping, Pong, Query};
use crate::codec::{DecodeError, Descriptor, Guid};

use super::handshake::{Link, PeerKind, Role};
use super::servent::{Config, ConnId, Event, Servent, SharedFile};
use super::sim::Net;

fn addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8),
        6346,
    )
}

fn guid(i: usize) -> Guid {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    g[8] = 0xFF;
    Guid(g)
}

fn file(index: u32, name: &str) -> SharedFile {
    SharedFile {
        index,
        name: name.into(),
        size: 1000 + index as u64,
        sha1: Some([index as u8; 20]),
    }
}

fn servent(i: usize, role: Role, classic: bool, shares: Vec<SharedFile>, now: Instant) -> Servent {
    Servent::new(
        Config::new(guid(i), addr(i), role, classic),
        shares,
        i as u64,
        now,
    )
}

fn link(peer: PeerKind) -> Link {
    Link {
        peer,
        become_leaf: false,
        deflate_in: false,
        deflate_out: false,
        user_agent: None,
        listen_addr: None,
        guid: None,
        try_hosts: Vec::new(),
        ggep: true,
        max_ttl: None,
        bye_packet: true,
        remote_ip: None,
    }
}

/// An ultrapeer with ultrapeer links 1..=n, their greeting pings drained.
fn ultrapeer_with_links(n: ConnId, now: Instant) -> Servent {
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    for c in 1..=n {
        s.add_connection(now, c, &link(PeerKind::Ultrapeer));
        drain(&mut s, c);
    }
    s
}

fn drain(s: &mut Servent, c: ConnId) -> Vec<Descriptor> {
    std::iter::from_fn(|| s.poll_transmit(c))
        .map(|o| o.desc)
        .collect()
}

fn query(g: u8, ttl: u8, hops: u8, q: Query) -> Descriptor {
    Descriptor {
        guid: Guid([g; 16]),
        ttl,
        hops,
        msg: Message::Query(q),
    }
}

fn hits(v: &[Descriptor]) -> Vec<&m::QueryHit> {
    v.iter()
        .filter_map(|d| match &d.msg {
            Message::QueryHit(h) => Some(h),
            _ => None,
        })
        .collect()
}

#[test]
fn case3_alive_ping_gets_our_pong_and_cache_is_bounded() {
    let now = Instant::now();
    let mut s = servent(
        1,
        Role::Ultrapeer,
        false,
        vec![file(1, "a.txt"), file(2, "b.txt")],
        now,
    );
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    s.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    drain(&mut s, 2);
    let ping = |ttl| Descriptor {
        guid: Guid([ttl; 16]),
        ttl,
        hops: 0,
        msg: Message::Ping(Ping::default()),
    };
    s.handle_descriptor(now, 1, ping(1));
    let out = drain(&mut s, 1);
    assert_eq!(out.len(), 1);
    let Message::Pong(p) = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(
        (p.ip, p.port, p.files, p.kbytes),
        (*addr(1).ip(), 6346, 2, 1)
    );
    let ids: Vec<&[u8]> = p.ggep.iter().map(|e| e.id.as_slice()).collect();
    assert_eq!(
        ids,
        vec![&b"DU"[..], b"VC", b"UP"],
        "GGEP for a peer that said GGEP:"
    );
    assert_eq!(p.ggep[1].data, b"P2PL\x01");
    assert_eq!(
        p.ggep[2].data,
        vec![0, 64, 14],
        "free leaf and ultrapeer slots"
    );
    assert_eq!(out[0].guid, Guid([1; 16]));
    // Feed 15 pongs from the other neighbour, then a crawler ping: at most 10 pongs come back.
    for i in 0..15u8 {
        let pong = Pong {
            port: 6346,
            ip: Ipv4Addr::new(10, 0, 0, i + 1),
            files: 0,
            kbytes: 0,
            ggep: vec![],
        };
        s.handle_descriptor(
            now,
            2,
            Descriptor {
                guid: Guid([0x50 + i; 16]),
                ttl: 1,
                hops: 0,
                msg: Message::Pong(pong),
            },
        );
    }
    let later = now + Duration::from_secs(2);
    s.handle_descriptor(later, 1, ping(2));
    let out = drain(&mut s, 1);
    assert_eq!(out.len(), super::servent::PONG_CACHE);
    assert!(out[1..]
        .iter()
        .all(|d| d.hops == 1 && matches!(d.msg, Message::Pong(_))));
    // A ping arriving faster than the interval is dropped.
    s.handle_descriptor(later, 1, ping(1));
    assert!(drain(&mut s, 1).is_empty());
    assert_eq!(s.hosts().count(), 15, "pongs feed the host cache");
}

#[test]
fn case4_query_answered_with_urn_trailer_and_servent_guid() {
    let now = Instant::now();
    let shares: Vec<SharedFile> = (0..25)
        .map(|i| file(i, &format!("hello world {i}.txt")))
        .collect();
    let mut s = servent(7, Role::Ultrapeer, false, shares, now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    let mut q = Query::new("hello", false);
    q.ext.huge.push("urn:".into());
    s.handle_descriptor(now, 1, query(9, 3, 1, q));
    let out = drain(&mut s, 1);
    let hs = hits(&out);
    assert_eq!(
        hs.iter().map(|h| h.results.len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    for d in &out {
        assert_eq!(d.guid, Guid([9; 16]), "a hit carries the query's GUID");
        assert_eq!(d.ttl, 6, "hops + 5, like gtk-gnutella");
    }
    let h = hs[0];
    assert_eq!(h.servent, guid(7));
    assert_eq!(h.trailer.as_ref().unwrap().vendor, *b"P2PL");
    assert!(!h.firewalled());
    assert_eq!(h.results[0].ext.huge, vec![sha1_urn(&[0; 20])]);
    // Wire check: the servent GUID is the last 16 bytes.
    let wire = out[0].to_bytes();
    assert_eq!(&wire[wire.len() - 16..], &guid(7).0);

    // By SHA-1 only (empty criteria), then by GGEP H.
    let mut q = Query::new("", false);
    q.ext.huge.push(sha1_urn(&[3; 20]));
    s.handle_descriptor(now, 1, query(10, 3, 1, q));
    let out = drain(&mut s, 1);
    assert_eq!(hits(&out)[0].results[0].index, 3);
    let mut q = Query::new("", false);
    q.ext.ggep.push(GgepExt::sha1(&[4; 20]));
    s.handle_descriptor(now, 1, query(11, 3, 1, q));
    let out = drain(&mut s, 1);
    assert_eq!(hits(&out)[0].results[0].index, 4);
    // Nothing matches: no hit.
    s.handle_descriptor(now, 1, query(12, 3, 1, Query::new("zzz", false)));
    assert!(hits(&drain(&mut s, 1)).is_empty());
}

#[test]
fn case4_firewalled_servent_sets_push_and_ignores_firewalled_queriers() {
    let now = Instant::now();
    let mut cfg = Config::new(guid(1), addr(1), Role::Leaf, false);
    cfg.firewalled = true;
    let mut s = Servent::new(cfg, vec![file(1, "hello.txt")], 1, now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    s.handle_descriptor(now, 1, query(1, 1, 1, Query::new("hello", false)));
    let out = drain(&mut s, 1);
    assert!(hits(&out)[0].firewalled());
    assert!(hits(&out)[0].trailer.as_ref().unwrap().flag(hflags::PUSH));
    s.handle_descriptor(now, 1, query(2, 1, 1, Query::new("hello", true)));
    assert!(drain(&mut s, 1).is_empty());
}

#[test]
fn case5_duplicates_ttl_clamp_and_hard_limit() {
    let now = Instant::now();
    let mut s = ultrapeer_with_links(3, now);
    s.handle_descriptor(now, 1, query(1, 200, 0, Query::new("abc", false)));
    let fwd = drain(&mut s, 2);
    assert_eq!(fwd.len(), 1);
    assert_eq!(
        (fwd[0].ttl, fwd[0].hops),
        (3, 1),
        "TTL 200 trimmed to max_ttl 4, then relayed"
    );
    assert_eq!(s.counters().ttl_clamped, 1);
    drain(&mut s, 3);
    // The same GUID again, from another neighbour: dropped.
    s.handle_descriptor(now, 2, query(1, 3, 1, Query::new("abc", false)));
    assert!(drain(&mut s, 1).is_empty() && drain(&mut s, 3).is_empty());
    assert_eq!(s.counters().duplicates, 1);
    // Hops + TTL over 15: dropped, not even answered or counted as a route.
    s.handle_descriptor(now, 1, query(2, 1, 15, Query::new("abc", false)));
    assert!(drain(&mut s, 2).is_empty());
    assert_eq!(s.counters().ttl_dropped, 1);
}

#[test]
fn case5_bye_both_ways_and_oversized_message() {
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    s.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    drain(&mut s, 2);
    // A Bye with hops 1 is not a Bye for us.
    let bye = |ttl, hops| Descriptor {
        guid: Guid([5; 16]),
        ttl,
        hops,
        msg: Message::Bye(Bye {
            code: 200,
            reason: "bye".into(),
        }),
    };
    s.handle_descriptor(now, 1, bye(2, 1));
    assert_eq!(s.poll_event(), None);
    s.handle_descriptor(now, 1, bye(1, 0));
    assert!(matches!(s.poll_event(), Some(Event::Close { conn: 1, .. })));
    // Oversized frame: our Bye 400 with TTL 1 hops 0, then close.
    s.handle_decode_error(
        2,
        &DecodeError::TooLarge {
            ptype: 0x80,
            max: 1024,
            len: 5000,
        },
    );
    let out = drain(&mut s, 2);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].ttl, out[0].hops), (1, 0));
    let Message::Bye(b) = &out[0].msg else {
        panic!()
    };
    assert_eq!(
        (b.code, b.reason.as_str()),
        (400, "Too large query message")
    );
    assert!(matches!(s.poll_event(), Some(Event::Close { conn: 2, .. })));
}

/// UP `u` with leaf `l` (sharing hello.txt and probe.txt) and a second UP `x`.
fn up_with_leaf() -> (Net, usize, usize, usize) {
    let now = Instant::now();
    let mut net = Net::new(now);
    let u = net.add(servent(0, Role::Ultrapeer, false, vec![], now));
    let x = net.add(servent(1, Role::Ultrapeer, false, vec![], now));
    let l = net.add(servent(
        2,
        Role::Leaf,
        false,
        vec![file(1, "hello.txt"), file(2, "probe.txt")],
        now,
    ));
    net.connect(u, x);
    net.connect(l, u);
    net.run(20);
    net.reset_counters();
    (net, u, x, l)
}

#[test]
fn case5_and_6_ttl1_query_reaches_matching_leaf_only() {
    let (mut net, u, x, l) = up_with_leaf();
    let cx = net.conn_between(u, x).unwrap();
    let now = net.now;
    // The (V) scenario: a query for "hello" reaches the leaf (TTL 1, hops 1), "zzzunmatched" does not.
    net.nodes[u].handle_descriptor(now, cx, query(1, 1, 0, Query::new("hello", false)));
    net.nodes[u].handle_descriptor(now, cx, query(2, 1, 0, Query::new("zzzunmatched", false)));
    let cl = net.conn_between(u, l).unwrap();
    let to_leaf: Vec<Descriptor> = std::iter::from_fn(|| net.nodes[u].poll_transmit(cl))
        .map(|o| o.desc)
        .collect();
    assert_eq!(to_leaf.len(), 1);
    assert_eq!(
        (to_leaf[0].guid, to_leaf[0].ttl, to_leaf[0].hops),
        (Guid([1; 16]), 1, 1)
    );
    assert_eq!(net.nodes[u].counters().qrp_filtered, 1);
}

#[test]
fn case6_leaf_search_hits_come_back_through_the_ultrapeer() {
    let (mut net, u, x, l) = up_with_leaf();
    let now = net.now;
    let g = net.nodes[x].start_search(now, "probe", None, 3);
    net.run(20);
    let hits: Vec<&Event> = net.events[x]
        .iter()
        .filter(|e| matches!(e, Event::Hit { .. }))
        .collect();
    assert_eq!(hits.len(), 1);
    let Event::Hit { query, hit, hops } = hits[0] else {
        unreachable!()
    };
    assert_eq!((*query, hit.servent, *hops), (g, guid(2), 1));
    assert_eq!(hit.results[0].name, "probe.txt");
    let _ = (u, l);
}

#[test]
fn case6_bad_qrp_sequence_gets_bye_413() {
    use crate::codec::message::RouteTableUpdate;
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    s.add_connection(now, 1, &link(PeerKind::Leaf));
    drain(&mut s, 1);
    let qrp = |u| Descriptor {
        guid: Guid([1; 16]),
        ttl: 1,
        hops: 0,
        msg: Message::Qrp(u),
    };
    s.handle_descriptor(
        now,
        1,
        qrp(RouteTableUpdate::Reset {
            table_len: 64,
            infinity: 7,
        }),
    );
    s.handle_descriptor(
        now,
        1,
        qrp(RouteTableUpdate::Patch {
            seq_no: 2,
            seq_size: 3,
            compressor: 1,
            entry_bits: 4,
            data: vec![1],
        }),
    );
    let out = drain(&mut s, 1);
    let Message::Bye(b) = &out[0].msg else {
        panic!("{out:?}")
    };
    assert_eq!(b.code, 413);
}

#[test]
fn case7_reverse_path_across_three_nodes_and_dead_route() {
    let now = Instant::now();
    let mut net = Net::new(now);
    let a = net.add(servent(0, Role::Ultrapeer, false, vec![], now));
    let b = net.add(servent(1, Role::Ultrapeer, false, vec![], now));
    let mut cfg = Config::new(guid(2), addr(2), Role::Ultrapeer, false);
    cfg.firewalled = true;
    let c = net.add(Servent::new(cfg, vec![file(4, "rare tune.ogg")], 2, now));
    net.connect(a, b);
    net.connect(b, c);
    net.run(20);
    let g = net.nodes[a].start_search(net.now, "rare tune", None, 4);
    net.run(20);
    let Some(Event::Hit { query, hit, hops }) = net.events[a]
        .iter()
        .find(|e| matches!(e, Event::Hit { .. }))
    else {
        panic!("no hit at a: {:?}", net.events[a])
    };
    assert_eq!((*query, hit.servent, *hops), (g, guid(2), 1));
    assert!(hit.firewalled());
    // Push routed by servent GUID: a → b → c.
    let servent_c = hit.servent;
    assert!(net.nodes[a].send_push(servent_c, 4, Ipv4Addr::new(127, 0, 0, 1), 7000));
    net.run(20);
    let push = net.events[c].iter().find_map(|e| match e {
        Event::Push { push, .. } => Some(push),
        _ => None,
    });
    assert_eq!(push.map(|p| (p.index, p.port)), Some((4, 7000)));
    // Now cut a–b after the query passed b: c's hit finds no route at b and is dropped.
    let g2 = net.nodes[a].start_search(net.now, "rare", None, 4);
    net.step(); // the query reaches b
    net.step(); // ... and c, which answers
    let ab = net.conn_between(a, b).unwrap();
    net.disconnect(a, ab);
    net.run(20);
    assert!(!net.events[a]
        .iter()
        .any(|e| matches!(e, Event::Hit { query, .. } if *query == g2)));
    assert!(net.nodes[b].counters().no_route >= 1);
}

#[test]
fn leaf_guidance_changes_role_and_says_bye_203() {
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    let mut l = link(PeerKind::Ultrapeer);
    l.become_leaf = true;
    s.add_connection(now, 2, &l);
    assert_eq!(s.role(), Role::Leaf);
    let out = drain(&mut s, 1);
    let Message::Bye(b) = &out[0].msg else {
        panic!()
    };
    assert_eq!(b.code, 203);
    let evs: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(evs.contains(&Event::RoleChanged(Role::Leaf)));
    // As a leaf it sends its QRP table to the guiding ultrapeer.
    assert!(drain(&mut s, 2)
        .iter()
        .any(|d| d.msg.payload_type() == m::TYPE_QRP));
}

/// A connected random graph: a ring plus `extra` random chords per node.
pub(crate) fn random_overlay(net: &mut Net, nodes: &[usize], extra: usize, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = nodes.len();
    for i in 0..n {
        let (a, b) = (nodes[i], nodes[(i + 1) % n]);
        if !net.linked(a, b) {
            net.connect(a, b);
        }
    }
    for i in 0..n {
        for _ in 0..extra {
            let j = rng.gen_range(0..n);
            let (a, b) = (nodes[i], nodes[j]);
            if a != b && !net.linked(a, b) {
                net.connect(a, b);
            }
        }
    }
}

#[test]
fn flood_50_nodes_ttl7_routes_the_hit_back_on_the_reverse_path() {
    let now = Instant::now();
    let mut net = Net::new(now);
    let ids: Vec<usize> = (0..50)
        .map(|i| {
            let shares = if i == 37 {
                vec![file(1, "needle in a haystack.txt")]
            } else {
                vec![file(1, &format!("hay {i}.txt"))]
            };
            net.add(servent(i, Role::Ultrapeer, true, shares, now))
        })
        .collect();
    random_overlay(&mut net, &ids, 1, 42);
    net.run(100);
    net.reset_counters();
    let dist = net.distances(0)[37].expect("connected");
    let g = net.nodes[0].start_search(net.now, "needle", None, 7);
    let steps = net.run(100);
    assert!(steps > 0);
    let found: Vec<(&m::QueryHit, u8)> = net.events[0]
        .iter()
        .filter_map(|e| match e {
            Event::Hit { query, hit, hops } if *query == g => Some((hit, *hops)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "exactly one responder");
    let (hit, hops) = found[0];
    assert_eq!(hit.servent, guid(37));
    assert_eq!(hit.results[0].name, "needle in a haystack.txt");
    assert_eq!(
        hops as usize + 1,
        dist,
        "the hit came back along the shortest (first-arrival) path"
    );
    let queries = net.delivered[&m::TYPE_QUERY];
    assert!(
        queries >= 49,
        "every node saw the query at least once ({queries})"
    );
    assert!(
        net.nodes
            .iter()
            .map(|s| s.counters().duplicates)
            .sum::<u64>()
            > 0,
        "flooding makes duplicates"
    );
}

#[test]
fn last_hop_qrp_lets_queries_through_to_a_far_ultrapeers_leaves() {
    // u0 - u1 - u2 - u3 chain, the file on a leaf of u3; a TTL-4 query from a leaf of u0 reaches u3 on its
    // last hop, which is allowed because u3's table to u2 includes its leaf's keywords.
    let now = Instant::now();
    let mut net = Net::new(now);
    let ups: Vec<usize> = (0..4)
        .map(|i| net.add(servent(i, Role::Ultrapeer, false, vec![], now)))
        .collect();
    let searcher = net.add(servent(10, Role::Leaf, false, vec![], now));
    let owner = net.add(servent(
        11,
        Role::Leaf,
        false,
        vec![file(1, "needle far away.bin")],
        now,
    ));
    for w in ups.windows(2) {
        net.connect(w[0], w[1]);
    }
    net.connect(searcher, ups[0]);
    net.connect(owner, ups[3]);
    net.run(50);
    // The leaf table reached u3 after u3 sent its own table: the merged one goes out on the next tick.
    net.advance(Duration::from_secs(4));
    net.run(50);
    let g = net.nodes[searcher].start_search(net.now, "needle", None, 4);
    net.run(50);
    let hit = net.events[searcher].iter().find_map(|e| match e {
        Event::Hit { query, hit, hops } if *query == g => Some((hit.servent, *hops)),
        _ => None,
    });
    assert_eq!(hit, Some((guid(11), 4)));
    // And a query nobody can answer stops at u2 (last-hop filter), never reaching u3.
    net.reset_counters();
    let before = net.nodes[ups[2]].counters().qrp_filtered;
    net.nodes[searcher].start_search(net.now, "zzzunmatched", None, 4);
    net.run(50);
    assert_eq!(net.nodes[ups[2]].counters().qrp_filtered, before + 1);
}

#[test]
fn silent_link_gets_bye_406_and_big_queries_are_answered_not_relayed() {
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![file(1, "long.txt")], now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    s.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    drain(&mut s, 2);
    // A query of 300 bytes: answered, not relayed.
    let long = format!("long {}", "x".repeat(300));
    let mut q = Query::new(&long, false);
    q.criteria = long.clone();
    s.handle_descriptor(now, 1, query(1, 3, 0, Query::new("long", false)));
    assert_eq!(drain(&mut s, 2).len(), 1, "a small query is relayed");
    s.handle_descriptor(now, 1, query(2, 3, 0, q));
    assert!(drain(&mut s, 2).is_empty(), "a big query is not relayed");
    assert_eq!(s.counters().too_big_to_relay, 1);
    drain(&mut s, 1);
    // Link 1 keeps talking, link 2 stays silent past the idle timeout.
    let mut t = now;
    for _ in 0..12 {
        t += Duration::from_secs(3);
        s.handle_descriptor(
            t,
            1,
            Descriptor {
                guid: Guid::default(),
                ttl: 1,
                hops: 0,
                msg: Message::Pong(Pong {
                    port: 1,
                    ip: Ipv4Addr::new(10, 0, 0, 1),
                    files: 0,
                    kbytes: 0,
                    ggep: vec![],
                }),
            },
        );
        s.handle_timeout(t);
    }
    let out = drain(&mut s, 2);
    let Some(Message::Bye(b)) = out.last().map(|d| &d.msg) else {
        panic!("{out:?}")
    };
    assert_eq!(b.code, 406);
    assert!(!drain(&mut s, 1)
        .iter()
        .any(|d| matches!(d.msg, Message::Bye(_))));
    assert_eq!(s.counters().idle_closed, 1);
}

#[test]
fn vendor_and_unknown_messages_are_ignored_and_query_floods_rate_limited() {
    use crate::codec::message::Vendor;
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    s.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    s.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    drain(&mut s, 1);
    drain(&mut s, 2);
    let vendor = Message::Vendor(Vendor {
        standard: true,
        vendor: *b"LIME",
        selector: 4,
        version: 1,
        data: vec![1, 2, 3],
    });
    let unknown = Message::Unknown {
        ptype: 0xCD,
        payload: vec![0; 8],
    };
    for (i, msg) in [vendor, unknown].into_iter().enumerate() {
        s.handle_descriptor(
            now,
            1,
            Descriptor {
                guid: Guid([i as u8; 16]),
                ttl: 1,
                hops: 0,
                msg,
            },
        );
    }
    assert!(drain(&mut s, 1).is_empty() && drain(&mut s, 2).is_empty());
    assert_eq!(s.counters().ignored, 2);
    // A neighbour sending more than max_queries_per_sec distinct queries in one second: the excess is dropped.
    let max = s.config().max_queries_per_sec as usize;
    for i in 0..max + 50 {
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s.handle_descriptor(
            now,
            1,
            Descriptor {
                guid: Guid(g),
                ttl: 3,
                hops: 0,
                msg: Message::Query(Query::new("abc", false)),
            },
        );
    }
    assert_eq!(drain(&mut s, 2).len(), max);
    assert_eq!(s.counters().rate_limited, 50);
}

#[test]
fn a_leaf_never_relays_and_a_leaf_relaying_is_kicked_with_414() {
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    s.add_connection(now, 1, &link(PeerKind::Leaf));
    s.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    s.add_connection(now, 3, &link(PeerKind::Leaf));
    drain(&mut s, 1);
    drain(&mut s, 2);
    drain(&mut s, 3);
    // A leaf answering our ping from its pong cache sends pongs with hops: fine, not relayed, no kick.
    s.handle_descriptor(
        now,
        3,
        Descriptor {
            guid: Guid([9; 16]),
            ttl: 1,
            hops: 1,
            msg: Message::Pong(Pong {
                port: 1,
                ip: Ipv4Addr::new(10, 0, 0, 1),
                files: 0,
                kbytes: 0,
                ggep: vec![],
            }),
        },
    );
    assert_eq!(bye_code(&drain(&mut s, 3)), None);
    // A "leaf" passing on a query that already travelled (hops 2) is not believed, and is kicked.
    s.handle_descriptor(now, 1, query(1, 3, 2, Query::new("abc", false)));
    assert!(drain(&mut s, 2).is_empty());
    assert_eq!(bye_code(&drain(&mut s, 1)), Some(414));
    assert_eq!(s.counters().kicked, 1);
    // Another leaf's own query (hops 0) goes on.
    s.handle_descriptor(now, 3, query(2, 3, 0, Query::new("abc", false)));
    assert_eq!(drain(&mut s, 2).len(), 1);
    // And a leaf servent does not relay what its ultrapeer sends.
    let mut l = servent(2, Role::Leaf, false, vec![], now);
    l.add_connection(now, 1, &link(PeerKind::Ultrapeer));
    l.add_connection(now, 2, &link(PeerKind::Ultrapeer));
    drain(&mut l, 1);
    drain(&mut l, 2);
    l.handle_descriptor(now, 1, query(3, 3, 1, Query::new("abc", false)));
    assert!(drain(&mut l, 2).is_empty());
}

fn bye_code(out: &[Descriptor]) -> Option<u16> {
    out.iter().find_map(|d| match &d.msg {
        Message::Bye(b) => Some(b.code),
        _ => None,
    })
}

fn numbered_query(i: usize, ttl: u8, hops: u8) -> Descriptor {
    Descriptor {
        guid: guid(1000 + i),
        ttl,
        hops,
        msg: Message::Query(Query::new("abc", false)),
    }
}

#[test]
fn honest_duplicates_are_dropped_but_a_link_repeating_itself_gets_bye_401() {
    let now = Instant::now();
    let mut s = ultrapeer_with_links(3, now);
    // The same 100 queries over two links (a flood's normal duplicates): dropped, nobody kicked.
    for i in 0..100 {
        s.handle_descriptor(now, 1, numbered_query(i, 3, 0));
        s.handle_descriptor(now, 2, numbered_query(i, 3, 1));
    }
    assert_eq!(s.counters().duplicates, 100);
    assert_eq!(bye_code(&drain(&mut s, 1)), None);
    assert_eq!(bye_code(&drain(&mut s, 2)), None);
    // Link 1 sending one of its queries again and again: tolerated up to the limit, then BYE 401.
    let limit = s.config().max_dup_repeats as usize;
    for _ in 0..limit {
        s.handle_descriptor(now, 1, numbered_query(5, 3, 0));
    }
    assert_eq!(bye_code(&drain(&mut s, 1)), None);
    s.handle_descriptor(now, 1, numbered_query(5, 3, 0));
    assert_eq!(bye_code(&drain(&mut s, 1)), Some(401));
    // The count restarts every window: link 2 repeating slowly is never kicked.
    let w = s.config().kick_window;
    for k in 0..3u32 {
        for _ in 0..limit {
            s.handle_descriptor(now + w * (k + 1), 2, numbered_query(7, 3, 1));
        }
    }
    assert_eq!(bye_code(&drain(&mut s, 2)), None);
    assert_eq!(s.counters().kicked, 1);
}

#[test]
fn over_the_hard_ttl_limit_repeatedly_gets_bye_403_and_bad_queries_402() {
    let now = Instant::now();
    let mut s = ultrapeer_with_links(3, now);
    let over = s.config().max_over_ttl as usize;
    for i in 0..over {
        s.handle_descriptor(now, 1, numbered_query(i, 1, 15));
    }
    assert_eq!(s.counters().ttl_dropped, over as u64);
    assert_eq!(bye_code(&drain(&mut s, 1)), None);
    s.handle_descriptor(now, 1, numbered_query(over, 1, 15));
    assert_eq!(bye_code(&drain(&mut s, 1)), Some(403));

    let bad = s.config().max_bad_queries as usize;
    let e = DecodeError::Truncated("query criteria");
    // Malformed pongs are only ignored; malformed queries past the limit kick.
    for _ in 0..bad * 3 {
        s.handle_bad_payload(now, 3, m::TYPE_PONG, &e);
    }
    assert_eq!(bye_code(&drain(&mut s, 3)), None);
    for _ in 0..bad {
        s.handle_bad_payload(now, 2, m::TYPE_QUERY, &e);
    }
    assert_eq!(bye_code(&drain(&mut s, 2)), None);
    s.handle_bad_payload(now, 2, m::TYPE_QUERY, &e);
    assert_eq!(bye_code(&drain(&mut s, 2)), Some(402));
    assert_eq!(s.counters().kicked, 2);
}

#[test]
fn x_max_ttl_trims_what_we_send_and_bye_goes_only_to_peers_that_take_it() {
    let now = Instant::now();
    let mut s = servent(1, Role::Ultrapeer, false, vec![], now);
    let mut short = link(PeerKind::Ultrapeer);
    short.max_ttl = Some(2);
    let mut no_bye = link(PeerKind::Ultrapeer);
    no_bye.bye_packet = false;
    s.add_connection(now, 1, &short);
    s.add_connection(now, 2, &no_bye);
    drain(&mut s, 1);
    drain(&mut s, 2);
    s.start_search(now, "abc", None, 4);
    let to1 = drain(&mut s, 1);
    let to2 = drain(&mut s, 2);
    assert_eq!(to1.iter().map(|d| d.ttl).collect::<Vec<_>>(), vec![2]);
    assert_eq!(to2.iter().map(|d| d.ttl).collect::<Vec<_>>(), vec![4]);
    while s.poll_event().is_some() {}
    s.send_bye(1, 200, "Shutting down");
    s.send_bye(2, 200, "Shutting down");
    assert_eq!(bye_code(&drain(&mut s, 1)), Some(200));
    assert!(
        drain(&mut s, 2).is_empty(),
        "no Bye for a peer without Bye-Packet"
    );
    let closed: Vec<ConnId> = std::iter::from_fn(|| s.poll_event())
        .filter_map(|e| match e {
            Event::Close { conn, .. } => Some(conn),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![1, 2], "both links are closed all the same");
}

#[test]
fn duplicate_table_forgets_by_age_and_by_size() {
    let now = Instant::now();
    let mut cfg = Config::new(guid(1), addr(1), Role::Ultrapeer, false);
    cfg.route_lifetime = Duration::from_secs(60);
    cfg.max_routes = 8;
    let mut s = Servent::new(cfg, vec![], 1, now);
    for c in 1..=2 {
        s.add_connection(now, c, &link(PeerKind::Ultrapeer));
        drain(&mut s, c);
    }
    // Seen, then a duplicate (a second later): dropped.
    s.handle_descriptor(now, 1, numbered_query(0, 3, 0));
    assert_eq!(drain(&mut s, 2).len(), 1);
    let t = now + Duration::from_secs(1);
    s.handle_descriptor(t, 1, numbered_query(0, 3, 0));
    assert!(
        drain(&mut s, 2).is_empty(),
        "a duplicate within the lifetime"
    );
    // Past the lifetime the GUID is forgotten: relayed again.
    let t = now + Duration::from_secs(62);
    s.handle_descriptor(t, 1, numbered_query(0, 3, 0));
    assert_eq!(drain(&mut s, 2).len(), 1, "forgotten after the lifetime");
    // More distinct GUIDs than the table holds: the oldest is evicted (and relayed again), a recent one
    // is still a duplicate.
    for i in 1..=10 {
        s.handle_descriptor(
            t + Duration::from_secs(i),
            1,
            numbered_query(i as usize, 3, 0),
        );
    }
    assert_eq!(drain(&mut s, 2).len(), 10);
    let t = t + Duration::from_secs(11);
    s.handle_descriptor(t, 1, numbered_query(10, 3, 0));
    assert!(drain(&mut s, 2).is_empty(), "the newest is remembered");
    s.handle_descriptor(t, 1, numbered_query(1, 3, 0));
    assert_eq!(drain(&mut s, 2).len(), 1, "the oldest was evicted");
}

#[test]
fn a_ping_asking_for_hosts_gets_them_packed_in_ipp() {
    let now = Instant::now();
    let mut s = ultrapeer_with_links(2, now);
    let known: Vec<std::net::SocketAddr> = (0..15u8)
        .map(|i| std::net::SocketAddr::from(([10, 1, 0, i + 1], 6346 + u16::from(i))))
        .collect();
    s.add_hosts(known.clone());
    let ping = |g: u8, ggep: Vec<GgepExt>| Descriptor {
        guid: Guid([g; 16]),
        ttl: 1,
        hops: 0,
        msg: Message::Ping(Ping { ggep }),
    };
    let pong_ggep = |out: Vec<Descriptor>| match &out[..] {
        [Descriptor {
            msg: Message::Pong(p),
            ..
        }] => p.ggep.clone(),
        other => panic!("{other:?}"),
    };
    // A plain alive ping: no IPP.
    s.handle_descriptor(now, 1, ping(1, vec![]));
    let ggep = pong_ggep(drain(&mut s, 1));
    assert!(ggep.iter().all(|e| e.id != b"IPP"), "{ggep:?}");
    // SCP: the ten freshest hosts, packed, and they survive the wire.
    let later = now + Duration::from_secs(2);
    s.handle_descriptor(later, 1, ping(2, vec![GgepExt::new("SCP", vec![])]));
    let out = drain(&mut s, 1);
    let back = Descriptor::decode(&out[0].to_bytes()).unwrap().unwrap().0;
    assert_eq!(back, out[0]);
    let ggep = pong_ggep(out);
    let ipp = ggep.iter().find(|e| e.id == b"IPP").expect("IPP");
    let got: Vec<std::net::SocketAddr> = ipp.as_ipp().into_iter().map(Into::into).collect();
    let want: Vec<std::net::SocketAddr> = known.iter().rev().take(10).copied().collect();
    assert_eq!(got, want);
    // A peer that did not say GGEP: no GGEP at all.
    let mut plain = link(PeerKind::Ultrapeer);
    plain.ggep = false;
    s.add_connection(later, 3, &plain);
    drain(&mut s, 3);
    s.handle_descriptor(later, 3, ping(3, vec![GgepExt::new("SCP", vec![])]));
    assert!(pong_ggep(drain(&mut s, 3)).is_empty());
}

#[test]
fn case6_multi_chunk_leaf_tables_at_4_and_8_bits_route_queries() {
    use crate::codec::qrp::QrpTable;
    for bits in [4u8, 8] {
        let now = Instant::now();
        let mut s = ultrapeer_with_links(1, now);
        s.add_connection(now, 2, &link(PeerKind::Leaf));
        drain(&mut s, 2);
        // Enough pseudo-random words that the table needs several zlib PATCH chunks.
        let mut names: Vec<String> = (0..5_000u32)
            .map(|i| format!("w{}", i.wrapping_mul(2_654_435_761)))
            .collect();
        names.push("needle in the haystack.mp3".into());
        let t = QrpTable::build(1 << 16, names.iter().map(String::as_str), []);
        let ups = t.to_updates(bits, 7);
        assert!(ups.len() > 2, "{bits}-bit: RESET and several patches");
        for u in ups {
            s.handle_descriptor(
                now,
                2,
                Descriptor {
                    guid: Guid::random(&mut rand::rngs::StdRng::seed_from_u64(1)),
                    ttl: 1,
                    hops: 0,
                    msg: Message::Qrp(u),
                },
            );
        }
        assert_eq!(bye_code(&drain(&mut s, 2)), None, "{bits}-bit table taken");
        s.handle_descriptor(now, 1, query(1, 2, 0, Query::new("haystack needle", false)));
        // Every keyword must hit; three absent ones (in a table about a quarter full) do not.
        s.handle_descriptor(
            now,
            1,
            query(
                2,
                2,
                0,
                Query::new("zzzunmatched qqqnothing xxxabsent", false),
            ),
        );
        let to_leaf = drain(&mut s, 2);
        assert_eq!(
            to_leaf.iter().map(|d| d.guid).collect::<Vec<_>>(),
            vec![Guid([1; 16])],
            "{bits}-bit: only the matching query reaches the leaf"
        );
    }
}
