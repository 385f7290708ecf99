//! Property tests for every decoder (kazaa.md §7 cases 4 and 5): round trips, and arbitrary bytes give
//! an error, never a panic.

use std::net::{Ipv4Addr, SocketAddrV4};

use common::hash::UuHash;
use kazaa_supernode::codec::message::{
    FileMeta, MediaStat, Neighbour, NodeEntry, Query, QueryTerm, Reply, SearchResult, Stats,
};
use kazaa_supernode::codec::tag::{decode_tags, encode_tags};
use kazaa_supernode::codec::{
    decode_dynint, dynint_bytes, frame, Frame, FrameDecoder, FrameEncoder, Message, Packet, Reader,
    Route, Tag,
};
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = SocketAddrV4> {
    (any::<u32>(), any::<u16>()).prop_map(|(ip, port)| SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

fn tag() -> impl Strategy<Value = Tag> {
    (0u32..0x20000, proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(kind, data)| Tag { kind, data })
}

fn tags() -> impl Strategy<Value = Vec<Tag>> {
    proptest::collection::vec(tag(), 0..6)
}

fn hash() -> impl Strategy<Value = UuHash> {
    any::<[u8; 20]>().prop_map(UuHash)
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_]{0,20}"
}

fn file(media: bool) -> impl Strategy<Value = FileMeta> {
    (any::<u8>(), hash(), 0u32..0x4000, any::<u64>(), tags()).prop_map(
        move |(m, hash, file_id, size, tags)| FileMeta {
            media: if media { m } else { 0 },
            hash,
            file_id,
            size,
            tags,
        },
    )
}

fn query(with_max: bool) -> impl Strategy<Value = Query> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u8>(),
        proptest::collection::vec(
            (
                any::<u8>(),
                any::<u8>(),
                proptest::collection::vec(any::<u8>(), 0..30),
            )
                .prop_map(|(cmp, field, value)| QueryTerm { cmp, field, value }),
            0..5,
        ),
    )
        .prop_map(move |(m, search_id, realm, terms)| Query {
            max_results: if with_max { m } else { 0 },
            search_id,
            realm,
            terms,
        })
}

fn result() -> impl Strategy<Value = SearchResult> {
    // Few distinct addresses so the `02` back-reference is exercised.
    (
        0u8..3,
        any::<u8>(),
        name(),
        name(),
        hash(),
        0u32..0x4000,
        any::<u32>(),
        tags(),
    )
        .prop_map(
            |(a, bandwidth, user, network, hash, file_id, size, tags)| SearchResult {
                addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, a), 1214),
                bandwidth,
                user,
                network,
                hash,
                file_id,
                size: u64::from(size),
                tags,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        proptest::collection::vec(
            (addr(), any::<u8>(), any::<u8>()).prop_map(|(addr, last_seen, load)| NodeEntry {
                addr,
                last_seen,
                load
            }),
            0..10
        )
        .prop_map(Message::NodeList),
        proptest::collection::vec(
            (addr(), any::<[u8; 19]>(), any::<u8>()).prop_map(|(addr, unknown, hops)| Neighbour {
                addr,
                unknown,
                hops
            }),
            0..5
        )
        .prop_map(Message::SnNeighbours),
        (addr(), any::<u8>(), name()).prop_map(|(addr, bandwidth, user)| Message::UserInfo {
            addr,
            bandwidth,
            user
        }),
        file(false).prop_map(Message::Unshare),
        file(true).prop_map(Message::Share),
        query(true).prop_map(Message::Query),
        (
            addr(),
            any::<u16>(),
            proptest::collection::vec(result(), 0..6)
        )
            .prop_map(|(sn, search_id, results)| Message::Reply(Reply {
                sn,
                search_id,
                results
            })),
        any::<u16>().prop_map(|search_id| Message::QueryEnd { search_id }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            any::<[(u32, u16, u16); 6]>(),
            proptest::collection::vec((name(), any::<u32>()), 0..3)
        )
            .prop_map(
                |(users, files, mantissa, exponent, media, networks)| Message::Stats(Stats {
                    users,
                    files,
                    mantissa,
                    exponent,
                    media: media.map(|(files, mantissa, exponent)| MediaStat {
                        files,
                        mantissa,
                        exponent
                    }),
                    networks,
                })
            ),
        (
            prop_oneof![Just(0x0Au8), Just(0x0B)],
            any::<[u8; 4]>(),
            query(false)
        )
            .prop_map(|(code, unknown, query)| Message::ForwardQuery {
                code,
                unknown,
                query
            }),
        (any::<u32>(), addr(), addr(), addr(), name()).prop_map(
            |(push_id, requester, target, target_sn, target_user)| {
                Message::PushRequest {
                    push_id,
                    requester,
                    target,
                    target_sn,
                    target_user,
                }
            }
        ),
        (any::<u32>(), addr())
            .prop_map(|(push_id, requester)| Message::PushRelay { push_id, requester }),
        name().prop_map(Message::NetworkName),
        any::<u32>().prop_map(Message::ProtocolVersion),
        any::<u32>().prop_map(|ip| Message::ExternalIp(Ipv4Addr::from(ip))),
        addr().prop_map(Message::Reachability),
        (0x30u8..0x50, proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(c, payload)| {
            Message::Unknown {
                msg_type: u16::from(c),
                payload,
            }
        }),
    ]
}

fn route() -> impl Strategy<Value = Option<Route>> {
    prop_oneof![
        Just(None),
        (addr(), addr(), any::<u8>()).prop_map(|(src, dst, hops)| Some(Route::Unicast {
            src,
            dst,
            hops
        })),
        (addr(), any::<[u8; 2]>(), any::<u8>())
            .prop_map(|(src, unknown, hops)| Some(Route::Broadcast { src, unknown, hops })),
    ]
}

proptest! {
    #[test]
    fn dynint_round_trip(v in any::<u64>()) {
        let b = dynint_bytes(v);
        prop_assert_eq!(decode_dynint(&b).unwrap(), (v, b.len()));
    }

    #[test]
    fn dynint_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..16)) {
        if let Ok((v, n)) = decode_dynint(&b) {
            prop_assert!(n <= b.len());
            prop_assert!(dynint_bytes(v).len() <= n);
        }
    }

    #[test]
    fn tags_round_trip(t in tags()) {
        let mut out = Vec::new();
        encode_tags(&t, &mut out);
        let mut r = Reader::new(&out);
        prop_assert_eq!(decode_tags(&mut r).unwrap(), t);
        prop_assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn tags_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_tags(&mut Reader::new(&b));
    }

    #[test]
    fn packet_round_trip(route in route(), message in message()) {
        let route = if matches!(message, Message::Unknown { .. }) { None } else { route };
        let p = Packet { route, message };
        let (ty, body) = p.encode();
        prop_assert_eq!(Packet::decode(ty, &body).unwrap(), p);
    }

    #[test]
    fn packet_arbitrary_bytes(ty in any::<u16>(), b in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(p) = Packet::decode(ty, &b) {
            // Whatever decodes re-encodes to a body that decodes again (names may be clipped).
            let (ty2, body2) = p.encode();
            prop_assert!(Packet::decode(ty2, &body2).is_ok());
        }
    }

    #[test]
    fn every_code_arbitrary_bytes(code in 0u8..0x30, b in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = Message::decode(code, &b);
    }

    /// kazaa.md §7 case 5: random message sequences survive the per-direction xinu rotation, fed to the
    /// decoder in arbitrary chunk sizes.
    #[test]
    fn frame_sequence_round_trip(
        frames in proptest::collection::vec(prop_oneof![
            Just(Frame::Ping),
            Just(Frame::Pong),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(msg_type, payload)| Frame::Message { msg_type, payload }),
        ], 0..20),
        chunk in 1usize..64,
    ) {
        let mut enc = FrameEncoder::new();
        let mut wire = Vec::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        let mut dec = FrameDecoder::new();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some((f, n)) = dec.decode(&buf).unwrap() {
                buf.drain(..n);
                got.push(f);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, frames);
        prop_assert_eq!(dec.xinu(), enc.xinu());
    }

    #[test]
    fn frame_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut dec = FrameDecoder::new();
        let mut rest = &b[..];
        while let Ok(Some((_, n))) = dec.decode(rest) {
            prop_assert!(n >= 1 && n <= rest.len());
            rest = &rest[n..];
        }
    }

    #[test]
    fn network_name_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..100)) {
        if let Ok(Some((_, n))) = frame::decode_network_name(&b) {
            prop_assert!(n <= b.len() && n <= frame::MAX_NETWORK_NAME_LEN + 1);
        }
    }
}

/// §2's message layouts, byte for byte, for the messages whose layout a reader can check by eye.
#[test]
fn golden_layouts() {
    let sn = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 1214);
    let hash = UuHash([0xAB; 20]);
    let body = |m: &Message| {
        let mut v = Vec::new();
        m.encode_body(&mut v);
        v
    };
    assert_eq!(
        body(&Message::NodeList(vec![NodeEntry {
            addr: sn,
            last_seen: 3,
            load: 40
        }])),
        [127, 0, 0, 1, 0x04, 0xBE, 3, 40]
    );
    assert_eq!(
        body(&Message::UserInfo {
            addr: sn,
            bandwidth: 0xD1,
            user: "bob".into()
        }),
        [127, 0, 0, 1, 0x04, 0xBE, 0xD1, 0, b'b', b'o', b'b']
    );
    assert_eq!(body(&Message::Reachability(sn)), [127, 0, 0, 1, 0x04, 0xBE]);
    assert_eq!(Message::Reachability(sn).code(), 0x15);
    let hq = Query {
        max_results: 16,
        search_id: 7,
        realm: 0xBF,
        terms: vec![QueryTerm {
            cmp: 0,
            field: 3,
            value: hash.0.to_vec(),
        }],
    };
    let mut expect = vec![
        0x00, 0x01, 0x00, 0x10, 0x00, 0x07, 0x01, 0xBF, 0x01, 0x00, 0x03, 0x14,
    ];
    expect.extend_from_slice(&hash.0);
    assert_eq!(body(&Message::Query(hq)), expect);
    let share = FileMeta {
        media: 1,
        hash,
        file_id: 0x1234,
        size: 128,
        tags: vec![Tag::string(2, "a.mp3")],
    };
    let mut expect = vec![0x00, 0x01, 0x00, 0x00];
    expect.extend_from_slice(&hash.0);
    expect.extend_from_slice(&[
        0xA4, 0x34, 0x81, 0x00, 0x01, 0x02, 0x05, b'a', b'.', b'm', b'p', b'3',
    ]);
    assert_eq!(body(&Message::Share(share.clone())), expect);
    let r = SearchResult {
        addr: sn,
        bandwidth: 0x60,
        user: "u".into(),
        network: "KaZaA".into(),
        hash,
        file_id: 1,
        size: 2,
        tags: vec![],
    };
    let reply = Message::Reply(Reply {
        sn,
        search_id: 9,
        results: vec![r.clone(), r],
    });
    let b = body(&reply);
    assert_eq!(&b[..10], &[127, 0, 0, 1, 0x04, 0xBE, 0, 9, 0, 2]);
    assert_eq!(
        &b[10..24],
        &[127, 0, 0, 1, 0x04, 0xBE, 0x60, b'u', 1, b'K', b'a', b'Z', b'a', b'A']
    );
    assert_eq!(b[24], 0);
    // Second result from the same user: the `02` back-reference.
    let second = 24 + 1 + 20 + 3;
    assert_eq!(
        &b[second..second + 8],
        &[127, 0, 0, 1, 0x04, 0xBE, 0x60, 0x02]
    );
    assert_eq!(Packet::decode(0x07, &b).unwrap().message, reply);
    // A dangling back-reference is an error.
    let mut bad = b[..10].to_vec();
    bad[9] = 1;
    bad.extend_from_slice(&b[second..]);
    assert!(Message::decode(0x07, &bad).is_err());
    // Routed broadcast query: 0xC00A with the 9-byte header.
    let p = Packet {
        route: Some(Route::Broadcast {
            src: sn,
            unknown: [0, 0],
            hops: 1,
        }),
        message: Message::QueryEnd { search_id: 1 },
    };
    let (ty, b) = p.encode();
    assert_eq!(ty, 0xC008);
    assert_eq!(b, [127, 0, 0, 1, 0x04, 0xBE, 0, 0, 1, 0, 1]);
    // The two push forms are told apart by length.
    let relay = Message::PushRelay {
        push_id: 5,
        requester: sn,
    };
    assert_eq!(body(&relay), [0, 0, 0, 5, 127, 0, 0, 1, 0x04, 0xBE]);
    assert_eq!(Message::decode(0x0D, &body(&relay)).unwrap(), relay);
    assert!(Message::decode(0x0D, &[0; 11]).is_err());
}

/// The layouts of kazaa.md §2's table not pinned above (0x01, 0x05, 0x09, 0x0A/0x0B, the long 0x0D,
/// 0x1D, 0x26, 0x2C) and the 13-byte unicast header, byte for byte, each decoded back.
#[test]
fn golden_layouts_of_the_other_messages() {
    let a = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1214); // 04 BE
    let b = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 0x1234);
    let c = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 9), 80);
    let hash = UuHash([0xCD; 20]);
    let check = |m: Message, code: u8, expect: &[u8]| {
        let mut v = Vec::new();
        m.encode_body(&mut v);
        assert_eq!(v, expect, "layout of {m:?}");
        assert_eq!(m.code(), code);
        assert_eq!(Message::decode(code, &v).unwrap(), m);
    };
    // 0x01: ip4, port2, 19 unknown bytes, hops1 (26 bytes).
    let mut e = vec![10, 0, 0, 1, 0x04, 0xBE];
    e.extend_from_slice(&[7; 19]);
    e.push(2);
    check(
        Message::SnNeighbours(vec![Neighbour {
            addr: a,
            unknown: [7; 19],
            hops: 2,
        }]),
        0x01,
        &e,
    );
    // 0x05: hash20, file_id dyn, size dyn, ntags dyn, tags (no media byte, no pad).
    let mut e = hash.0.to_vec();
    // file_id 128 = 81 00, size 32768 = 82 80 00, 1 tag: bitrate (0x15), 2 bytes, dynint 128.
    e.extend_from_slice(&[0x81, 0x00, 0x82, 0x80, 0x00, 0x01, 0x15, 0x02, 0x81, 0x00]);
    check(
        Message::Unshare(FileMeta {
            media: 0,
            hash,
            file_id: 128,
            size: 32768,
            tags: vec![Tag {
                kind: 0x15,
                data: vec![0x81, 0x00],
            }],
        }),
        0x05,
        &e,
    );
    // 0x09: users4, files4, m2, e2, 6 × (files4, m2, e2), then (net\0, users4).
    let mut e = vec![0, 0, 0, 5, 0, 0, 0, 9, 0, 3, 0, 30];
    for i in 0..6u8 {
        e.extend_from_slice(&[0, 0, 0, i, 0, 1, 0, 31]);
    }
    e.extend_from_slice(b"KaZaA\0");
    e.extend_from_slice(&[0, 0, 1, 0]);
    check(
        Message::Stats(Stats {
            users: 5,
            files: 9,
            mantissa: 3,
            exponent: 30,
            media: std::array::from_fn(|i| MediaStat {
                files: i as u32,
                mantissa: 1,
                exponent: 31,
            }),
            networks: vec![("KaZaA".into(), 256)],
        }),
        0x09,
        &e,
    );
    // 0x0A/0x0B: 4 unknown bytes, then the query from its search id on: id2, `01`, realm1, nterms1,
    // (cmp1, field1, len dyn, value).
    for code in [0x0A, 0x0B] {
        check(
            Message::ForwardQuery {
                code,
                unknown: [0, 3, 0, 0],
                query: Query {
                    max_results: 0,
                    search_id: 0x0102,
                    realm: 0xA1,
                    terms: vec![QueryTerm {
                        cmp: 5,
                        field: 2,
                        value: b"song".to_vec(),
                    }],
                },
            },
            code,
            &[
                0, 3, 0, 0, 0x01, 0x02, 0x01, 0xA1, 1, 5, 2, 4, b's', b'o', b'n', b'g',
            ],
        );
    }
    // Long 0x0D: push_id4, requester ip4+port2, target ip4+port2, target's SN ip4+port2, username.
    check(
        Message::PushRequest {
            push_id: 0x01020304,
            requester: a,
            target: c,
            target_sn: b,
            target_user: "bob".into(),
        },
        0x0D,
        &[
            1, 2, 3, 4, 10, 0, 0, 1, 0x04, 0xBE, 192, 168, 1, 9, 0, 80, 10, 0, 0, 2, 0x12, 0x34,
            b'b', b'o', b'b',
        ],
    );
    // 0x1D network name (no NUL), 0x26 protocol version u32 (Kazaa 2.6 = 0x22), 0x2C external IP.
    check(Message::NetworkName("KaZaA".into()), 0x1D, b"KaZaA");
    check(Message::ProtocolVersion(0x22), 0x26, &[0, 0, 0, 0x22]);
    check(
        Message::ExternalIp(Ipv4Addr::new(192, 168, 1, 9)),
        0x2C,
        &[192, 168, 1, 9],
    );
    // 0x80xx unicast: src ip:port, dst ip:port, hops (13 bytes), then the body.
    let p = Packet {
        route: Some(Route::Unicast {
            src: a,
            dst: b,
            hops: 1,
        }),
        message: Message::QueryEnd { search_id: 7 },
    };
    let (ty, bytes) = p.encode();
    assert_eq!(ty, 0x8008);
    assert_eq!(
        bytes,
        [10, 0, 0, 1, 0x04, 0xBE, 10, 0, 0, 2, 0x12, 0x34, 1, 0, 7]
    );
    assert_eq!(Packet::decode(ty, &bytes).unwrap(), p);
}
