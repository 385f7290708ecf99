//! Golden vectors (`shared/protocols/kazaa.md` §3 table and §7 cases 1, 2, 3 and 16), streaming-equals-one-shot
//! properties, and "arbitrary text never panics" properties for every parser.

use proptest::prelude::*;

use super::*;

/// Byte i is i mod 251.
fn mod251(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Every `mod251` file of at least 300 KiB starts with this UUHash head.
const MOD251_HEAD: &str = "b79ea70797fef4f144daad8687c5a2fd";

struct Golden {
    data: fn() -> Vec<u8>,
    uuhash: &'static str,
    sig2dat: &'static str,
    file_id: u16,
    md5_tree: &'static str,
}

/// Table of `kazaa.md` §3. A `…` in the notes stands for [`MOD251_HEAD`]; it is written out here.
fn golden() -> Vec<Golden> {
    macro_rules! row {
        ($data:expr, $uu:expr, $sig:expr, $chk:expr, $tree:expr) => {
            Golden {
                data: $data,
                uuhash: $uu,
                sig2dat: $sig,
                file_id: $chk,
                md5_tree: $tree,
            }
        };
    }
    vec![
        row!(
            Vec::new,
            "d41d8cd98f00b204e9800998ecf8427effffffff",
            "=1B2M2Y8AsgTpgAmY7PhCfv////8=",
            10881,
            "d41d8cd98f00b204e9800998ecf8427e"
        ),
        row!(
            || b"abc".to_vec(),
            "900150983cd24fb0d6963f7d28e17f72fcffffff",
            "=kAFQmDzST7DWlj99KOF/cvz///8=",
            16118,
            "af5da9f45af7a300e3aded972f8ff687"
        ),
        row!(
            || mod251(307_200),
            "b79ea70797fef4f144daad8687c5a2fdff4ffbff",
            "=t56nB5f+9PFE2q2Gh8Wi/f9P+/8=",
            7570,
            "41e885d52521f1a99ea67dcc9b9809a2"
        ),
        row!(
            || mod251(307_201),
            "b79ea70797fef4f144daad8687c5a2fdb113fa14",
            "=t56nB5f+9PFE2q2Gh8Wi/bET+hQ=",
            1423,
            "14a24a4567ba1caa497cdd3bf8fc2e1e"
        ),
        row!(
            || mod251(512_000),
            "b79ea70797fef4f144daad8687c5a2fda20bfd05",
            "=t56nB5f+9PFE2q2Gh8Wi/aIL/QU=",
            13489,
            "317a90104c53c4286c288e4d5851aaa4"
        ),
        row!(
            || mod251(1_048_576),
            "b79ea70797fef4f144daad8687c5a2fdc101b022",
            "=t56nB5f+9PFE2q2Gh8Wi/cEBsCI=",
            7787,
            "648d583a3aa8757a94fa94c521061073"
        ),
        row!(
            || vec![0u8; 1_048_576],
            "90aeded9922cf8946ea7858635493724693f037d",
            "=kK7e2ZIs+JRup4WGNUk3JGk/A30=",
            13364,
            "1d32d3ed315fa9fcb6a779a4c3b525c5"
        ),
        // The 1 MiB sample would overlap the tail: dropped whole.
        row!(
            || mod251(1_355_776),
            "b79ea70797fef4f144daad8687c5a2fdca24435e",
            "=t56nB5f+9PFE2q2Gh8Wi/cokQ14=",
            5323,
            "a4c29eaa4da1c68f03c1e105eb0bf763"
        ),
        // The sample ends exactly at the tail start: kept (giFT), not the strict rule's …958bd553.
        row!(
            || mod251(1_662_976),
            "b79ea70797fef4f144daad8687c5a2fd3b23abe4",
            "=t56nB5f+9PFE2q2Gh8Wi/Tsjq+Q=",
            10024,
            "00f6f7f1d1e87b204c2eb8a56fe1ced9"
        ),
        row!(
            || mod251(2_097_152),
            "b79ea70797fef4f144daad8687c5a2fdfd62b6f6",
            "=t56nB5f+9PFE2q2Gh8Wi/f1itvY=",
            7892,
            "8771d5364d0c57c035ed540957a62daf"
        ),
        // The 4 MiB sample would overlap the tail: dropped.
        row!(
            || mod251(4_706_304),
            "b79ea70797fef4f144daad8687c5a2fd64f1833c",
            "=t56nB5f+9PFE2q2Gh8Wi/WTxgzw=",
            2099,
            "745dcf304c33c65140c0fd54f1d53804"
        ),
        // Samples at 1, 2 and 4 MiB.
        row!(
            || mod251(5_242_880),
            "b79ea70797fef4f144daad8687c5a2fd3e137ce8",
            "=t56nB5f+9PFE2q2Gh8Wi/T4TfOg=",
            5108,
            "8f2abf951284191d8523655d92583666"
        ),
    ]
}

/// §7 case 1 (`uuhash_golden`) plus the md5-tree column: hex, sig2dat, checksum and kzhash of every row.
#[test]
fn uuhash_golden() {
    for g in golden() {
        let data = (g.data)();
        let n = data.len();
        let uu = uuhash(&data);
        assert_eq!(uu.to_hex(), g.uuhash, "uuhash hex, n = {n}");
        if n >= 307_200 && g.uuhash.starts_with(MOD251_HEAD) {
            assert_eq!(&uu.to_hex()[..32], MOD251_HEAD);
        }
        assert_eq!(uu.to_sig2dat(), g.sig2dat, "sig2dat, n = {n}");
        assert_eq!(UuHash::from_sig2dat(g.sig2dat), Some(uu));
        assert_eq!(uu.file_id(), g.file_id, "checksum, n = {n}");
        assert_eq!(
            hex::encode(md5_tree(&data)),
            g.md5_tree,
            "md5 tree, n = {n}"
        );

        let all = MultiHasher::new(HashKinds::ALL, n as u64);
        let mut all = all;
        all.update(&data);
        let h = all.finish();
        assert_eq!(h.uuhash, Some(uu));
        let kz = h.kzhash.expect("kzhash asked for");
        assert_eq!(kz.to_hex(), format!("{}{}", g.uuhash, g.md5_tree));
        assert_eq!(h.sha1, Some(sha1(&data)));
        assert_eq!(h.md5, Some(md5(&data)));
        assert_eq!(h.napster_md5, Some(napster_md5(&data)));
    }
}

/// The table's boundary row: a sample ending exactly where the tail starts is kept (giFT, Bitzi); the
/// "strict" reading that drops it would give …958bd553.
#[test]
fn boundary_sample_is_kept() {
    let data = mod251(1_662_976);
    let mut tail_only = crc32fast::Hasher::new();
    tail_only.update(&data[1_355_776..]);
    let strict = !tail_only.finalize() ^ (data.len() as u32);
    assert_eq!(hex::encode(strict.to_le_bytes()), "958bd553");
    assert_eq!(&uuhash(&data).to_hex()[32..], "3b23abe4");
}

#[test]
fn small_sizes_have_inverted_length_crc() {
    // For n <= 300 KiB bytes 16-19 are !n, little-endian.
    for n in [0usize, 1, 3, 1000, 307_200] {
        let uu = uuhash(&mod251(n));
        assert_eq!(uu.0[16..], (!(n as u32)).to_le_bytes());
    }
}

/// §7 case 3 (`uuhash_partial_coverage`): UUHash reads only head, samples and tail; kzhash reads everything.
#[test]
fn uuhash_partial_coverage() {
    let base = mod251(2_097_152);
    let base_uu = uuhash(&base);
    let base_tree = md5_tree(&base);

    let mut a = base.clone();
    a[400_000] ^= 0xFF;
    assert_eq!(
        uuhash(&a),
        base_uu,
        "byte 400,000 is outside every sampled range"
    );
    assert_ne!(md5_tree(&a), base_tree);

    let mut b = base.clone();
    b[1_048_581] ^= 0xFF;
    let uu_b = uuhash(&b);
    assert_ne!(uu_b, base_uu, "byte 1,048,581 is inside the 1 MiB sample");
    assert_eq!(&uu_b.to_hex()[32..], "fa1a62ef");
    assert_eq!(&uu_b.to_hex()[..32], MOD251_HEAD);
    assert_ne!(md5_tree(&b), base_tree);
}

/// §7 case 16 (`links_parse`): sig2dat variants and kzhash magnets round-trip.
#[test]
fn links_parse() {
    for g in golden() {
        let data = (g.data)();
        let uu = uuhash(&data);
        let link = Sig2Dat {
            name: format!("Artist - Title {}.mp3", data.len()),
            length: data.len() as u64,
            uuhash: uu,
        };
        let canonical = link.to_uri();
        assert_eq!(
            canonical,
            format!(
                "sig2dat:///|File:{}|Length:{}Bytes|UUHash:{}|",
                link.name,
                data.len(),
                g.sig2dat
            )
        );
        let spaced = format!(
            "sig2dat:///|File: {}|Length: {}Bytes|UUHash: {}",
            link.name,
            data.len(),
            g.sig2dat
        );
        assert_eq!(Sig2Dat::parse(&canonical).as_ref(), Some(&link));
        assert_eq!(Sig2Dat::parse(&spaced).as_ref(), Some(&link));

        let kz = KzHash::new(uu, md5_tree(&data));
        let magnet = KzMagnet {
            kzhash: kz,
            name: Some(link.name.clone()),
        };
        let uri = magnet.to_uri();
        assert!(uri.starts_with(&format!(
            "magnet:?xt=urn:kzhash:{}{}&dn=",
            g.uuhash, g.md5_tree
        )));
        assert_eq!(KzMagnet::parse(&uri), Some(magnet));
    }
}

/// Feeds `data` to a [`MultiHasher`] in the given chunk sizes (cycled).
fn hash_chunked(data: &[u8], kinds: HashKinds, sizes: &[usize]) -> Hashes {
    let mut h = MultiHasher::new(kinds, data.len() as u64);
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let take = sizes[i % sizes.len()].clamp(1, rest.len());
        h.update(&rest[..take]);
        rest = &rest[take..];
        i += 1;
    }
    h.finish()
}

fn one_shot(data: &[u8], kinds: HashKinds) -> Hashes {
    let mut h = MultiHasher::new(kinds, data.len() as u64);
    h.update(data);
    h.finish()
}

/// §7 case 2 (`uuhash_streaming`) for every size in the table: random chunk sizes from 1 B to 64 KiB give
/// the one-shot result. Sizes near the sample edges are the interesting ones, so every table size is hit.
#[test]
fn uuhash_streaming_table_sizes() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for g in golden() {
        let data = (g.data)();
        let want = one_shot(&data, HashKinds::ALL);
        assert_eq!(want.uuhash.unwrap().to_hex(), g.uuhash);
        for _ in 0..2 {
            let sizes: Vec<usize> = (0..64).map(|_| rng.gen_range(1..=65_536)).collect();
            assert_eq!(
                hash_chunked(&data, HashKinds::ALL, &sizes),
                want,
                "n = {}",
                data.len()
            );
        }
    }
}

#[test]
fn empty_kinds_give_empty_hashes() {
    assert_eq!(one_shot(b"abc", HashKinds::default()), Hashes::default());
    let only = one_shot(
        b"abc",
        HashKinds {
            kzhash: true,
            ..Default::default()
        },
    );
    assert!(only.uuhash.is_none(), "uuhash only when asked for");
    assert_eq!(
        only.kzhash.unwrap().to_hex(),
        "900150983cd24fb0d6963f7d28e17f72fcffffffaf5da9f45af7a300e3aded972f8ff687"
    );
}

#[test]
fn hash_file_matches_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 307_201, HASH_FILE_BUF + 17] {
        let data = mod251(n);
        let path = dir.path().join(format!("f{n}"));
        std::fs::write(&path, &data).unwrap();
        let mut seen = Vec::new();
        let h = hash_file(&path, HashKinds::ALL, &mut |p| seen.push(p)).unwrap();
        assert_eq!(h, one_shot(&data, HashKinds::ALL));
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(seen.last().copied().unwrap_or(0), n as u64);
    }
    let err = hash_file(&dir.path().join("missing"), HashKinds::ALL, &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn two_threads_equal_one() {
    let dir = tempfile::tempdir().unwrap();
    let n = PARALLEL_MIN_LEN as usize + 307_201;
    let data = mod251(n);
    let path = dir.path().join("big");
    std::fs::write(&path, &data).unwrap();
    let want = hash_file_with(
        &path,
        HashKinds::ALL,
        Parallelism::SingleThread,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(want, one_shot(&data, HashKinds::ALL));
    for kinds in [
        HashKinds::ALL,
        HashKinds {
            sha1: true,
            md5: true,
            ..Default::default()
        },
        HashKinds {
            md5: true,
            kzhash: true,
            ..Default::default()
        },
        HashKinds {
            sha1: true,
            uuhash: true,
            napster_md5: true,
            ..Default::default()
        },
        HashKinds {
            uuhash: true,
            ..Default::default()
        },
    ] {
        let mut last = 0;
        let got = hash_file_with(&path, kinds, Parallelism::Auto, &mut |p| last = p).unwrap();
        assert_eq!(got, one_shot(&data, kinds), "{kinds:?}");
        assert_eq!(last, n as u64);
    }
}

#[test]
fn split_balances_heavy_kinds() {
    assert_eq!(
        split_kinds(HashKinds {
            sha1: true,
            ..Default::default()
        }),
        None
    );
    assert_eq!(
        split_kinds(HashKinds {
            sha1: true,
            uuhash: true,
            ..Default::default()
        }),
        None
    );
    let (a, b) = split_kinds(HashKinds::ALL).unwrap();
    // SHA-1 against the interleaved MD5 + tree; the cheap kinds stay on the reading thread.
    assert_eq!(union(a, b), HashKinds::ALL);
    assert!(a.sha1 && a.uuhash && a.napster_md5 && !a.md5 && !a.kzhash);
    assert!(b.md5 && b.kzhash && !b.sha1 && !b.uuhash && !b.napster_md5);
    let (a, b) = split_kinds(HashKinds {
        sha1: true,
        kzhash: true,
        ..Default::default()
    })
    .unwrap();
    assert!(a.sha1 != b.sha1 && a.kzhash != b.kzhash);
}

#[test]
fn known_sha1_md5() {
    assert_eq!(
        sha1(b"abc").to_hex(),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(md5(b"abc").to_hex(), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(sha1(b"abc").to_base64(), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
}

#[test]
fn serde_is_hex_text() {
    let h = one_shot(b"abc", HashKinds::ALL);
    let json = serde_json::to_string(&h).unwrap();
    assert!(json.contains("\"a9993e364706816aba3e25717850c26c9cd0d89d\""));
    let back: Hashes = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h);
    assert!(serde_json::from_str::<Sha1Digest>("\"zz\"").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random sizes around the UUHash boundaries and random chunkings: streaming equals one shot.
    #[test]
    fn streaming_equals_one_shot(
        n in prop_oneof![0usize..70_000, 300_000usize..320_000, 1_040_000usize..1_400_000],
        sizes in proptest::collection::vec(1usize..=65_536, 1..16),
    ) {
        let data = mod251(n);
        prop_assert_eq!(hash_chunked(&data, HashKinds::ALL, &sizes), one_shot(&data, HashKinds::ALL));
    }

    /// Napster MD5 over byte soup with tags, frame headers and junk: streaming equals one shot.
    #[test]
    fn napster_streaming_equals_one_shot(
        tag in prop_oneof![
            Just(Vec::new()),
            Just(b"ID3\x03\x00\x00\x00\x00\x01\x00".to_vec()),
            Just(b"ID3\x04\x00\x10\x00\x00\x00\x20".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ],
        body in proptest::collection::vec(prop_oneof![any::<u8>(), Just(0xFF), Just(0xFB)], 0..4000),
        chunk in 1usize..600,
    ) {
        let mut data = tag;
        data.extend_from_slice(&body);
        let mut h = NapsterMd5Hasher::new();
        for c in data.chunks(chunk) {
            h.update(c);
        }
        prop_assert_eq!(h.finish(), napster_md5(&data));
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,200}") {
        let _ = Sha1Digest::parse_urn(&s);
        let _ = Sha1Digest::from_base32(&s);
        let _ = Sha1Digest::from_hex(&s);
        let _ = UuHash::from_sig2dat(&s);
        let _ = UuHash::from_http_path(&s);
        let _ = KzHash::from_hex(&s);
        let _ = base32_decode(&s);
        let _ = base64_decode(&s);
        let _ = Sig2Dat::parse(&s);
        let _ = KzMagnet::parse(&s);
        let _ = Sig2Dat::parse(&format!("sig2dat:///|File:{s}|Length:{s}|UUHash:{s}"));
        let _ = KzMagnet::parse(&format!("magnet:?xt=urn:kzhash:{s}&dn={s}"));
    }

    #[test]
    fn sha1_text_round_trips(bytes in proptest::array::uniform20(any::<u8>()), lower in any::<bool>()) {
        let d = Sha1Digest(bytes);
        let b32 = if lower { d.to_base32().to_lowercase() } else { d.to_base32() };
        prop_assert_eq!(Sha1Digest::from_base32(&b32), Some(d));
        prop_assert_eq!(Sha1Digest::parse_urn(&d.to_urn()), Some(d));
        prop_assert_eq!(Sha1Digest::from_hex(&d.to_hex().to_uppercase()), Some(d));
        prop_assert_eq!(base64_decode(&d.to_base64()), Some(bytes.to_vec()));
    }

    #[test]
    fn kazaa_links_round_trip(
        bytes in proptest::collection::vec(any::<u8>(), 36),
        name in "[^|\\x00-\\x1f]{1,40}",
        length in any::<u64>(),
    ) {
        let kz = KzHash(bytes.try_into().unwrap());
        // The parser trims the name, so generate names without outer blanks.
        let name = name.trim().to_string();
        prop_assume!(!name.is_empty());
        let link = Sig2Dat { name: name.clone(), length, uuhash: kz.uuhash() };
        prop_assert_eq!(Sig2Dat::parse(&link.to_uri()), Some(link));
        let m = KzMagnet { kzhash: kz, name: Some(name) };
        prop_assert_eq!(KzMagnet::parse(&m.to_uri()), Some(m));
    }
}
