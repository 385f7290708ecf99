//! GGEP 0.5 ("Gnutella Generic Extension Protocol") blocks.
//!
//! ```text
//! 0xC3 | flags | id (1..15 bytes) | length (1..3 bytes) | data | flags | id | ...
//! flags: 0x80 last extension, 0x40 COBS-encoded, 0x20 deflated, 0x10 reserved (0), low nibble = id length
//! length: 6-bit chunks, most significant first; 0x40 marks the last chunk, 0x80 the ones before it.
//! ```
//! To decode: undo COBS, then inflate (bounded by [`MAX_INFLATED`]). The encoder COBS-encodes any data that
//! contains a NUL byte, so a block never holds 0x00 and can sit in NUL-terminated areas (query, hit result).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// First byte of every GGEP block.
pub const GGEP_MAGIC: u8 = 0xC3;
/// Largest length the 3-chunk encoding can carry.
pub const MAX_EXT_LEN: usize = 262_143;
/// Cap on the inflated size of one deflated extension (compression bombs).
pub const MAX_INFLATED: usize = 64 * 1024;
/// Cap on the number of extensions read from one block.
pub const MAX_EXTENSIONS: usize = 64;

const F_LAST: u8 = 0x80;
const F_COBS: u8 = 0x40;
const F_DEFLATE: u8 = 0x20;
const F_RESERVED: u8 = 0x10;

/// One GGEP extension: id and (decoded) data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgepExt {
    /// Identifier, 1 to 15 bytes, never 0x00 (`H`, `LF`, `DU`, `GTKGV`...).
    pub id: Vec<u8>,
    /// Data after COBS decoding and inflating.
    pub data: Vec<u8>,
    /// Whether the data travels deflated.
    pub deflate: bool,
}

impl GgepExt {
    /// An uncompressed extension.
    pub fn new(id: &str, data: Vec<u8>) -> GgepExt {
        GgepExt {
            id: id.as_bytes().to_vec(),
            data,
            deflate: false,
        }
    }

    /// `H`: a SHA-1 (type 0x01 + 20 bytes).
    pub fn sha1(digest: &[u8; 20]) -> GgepExt {
        let mut d = vec![0x01];
        d.extend_from_slice(digest);
        GgepExt::new("H", d)
    }

    /// An integer extension (`LF`, `DU`): little-endian, fewest bytes (at least one).
    pub fn int(id: &str, v: u64) -> GgepExt {
        let b = v.to_le_bytes();
        let n = (8 - (v.leading_zeros() as usize) / 8).max(1);
        GgepExt::new(id, b[..n].to_vec())
    }

    /// `IPP`: packed IPv4 ip:port list (6 bytes each, port little-endian).
    pub fn ipp(addrs: &[SocketAddrV4]) -> GgepExt {
        let mut d = Vec::with_capacity(addrs.len() * 6);
        for a in addrs {
            d.extend_from_slice(&a.ip().octets());
            d.extend_from_slice(&a.port().to_le_bytes());
        }
        GgepExt::new("IPP", d)
    }

    /// Reads the data as a little-endian integer of 1 to 8 bytes.
    pub fn as_int(&self) -> Option<u64> {
        if self.data.is_empty() || self.data.len() > 8 {
            return None;
        }
        let mut b = [0u8; 8];
        b[..self.data.len()].copy_from_slice(&self.data);
        Some(u64::from_le_bytes(b))
    }

    /// Reads `H` data as a SHA-1 (type 0x01, or the SHA-1 half of a 0x02 bitprint).
    pub fn as_sha1(&self) -> Option<[u8; 20]> {
        match self.data.first()? {
            0x01 | 0x02 if self.data.len() >= 21 => {
                let mut d = [0u8; 20];
                d.copy_from_slice(&self.data[1..21]);
                Some(d)
            }
            _ => None,
        }
    }

    /// Reads `IPP` data; trailing bytes that do not make a whole entry are ignored.
    pub fn as_ipp(&self) -> Vec<SocketAddrV4> {
        self.data
            .chunks_exact(6)
            .map(|c| {
                SocketAddrV4::new(
                    Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                    u16::from_le_bytes([c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// Finds the first extension with `id`.
pub fn find<'a>(exts: &'a [GgepExt], id: &str) -> Option<&'a GgepExt> {
    exts.iter().find(|e| e.id == id.as_bytes())
}

/// Encodes a length in 6-bit chunks. Panics if over [`MAX_EXT_LEN`] (callers check).
pub fn encode_len(len: usize, dst: &mut BytesMut) {
    assert!(len <= MAX_EXT_LEN, "GGEP length over 262143");
    if len >= 1 << 12 {
        dst.put_u8(0x80 | ((len >> 12) & 0x3F) as u8);
    }
    if len >= 1 << 6 {
        dst.put_u8(0x80 | ((len >> 6) & 0x3F) as u8);
    }
    dst.put_u8(0x40 | (len & 0x3F) as u8);
}

/// Decodes a length; returns (length, bytes used).
pub fn decode_len(b: &[u8]) -> Result<(usize, usize), DecodeError> {
    let mut len = 0usize;
    for (i, &c) in b.iter().take(3).enumerate() {
        len = (len << 6) | (c & 0x3F) as usize;
        match c & 0xC0 {
            0x40 => return Ok((len, i + 1)),
            0x80 => continue,
            _ => return Err(DecodeError::Invalid("GGEP length chunk")),
        }
    }
    if b.len() < 3 {
        Err(DecodeError::Truncated("GGEP length"))
    } else {
        Err(DecodeError::Invalid("GGEP length over 3 chunks"))
    }
}

/// COBS-encodes `data` (no 0x00 in the output).
pub fn cobs_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 254 + 1);
    let mut code_pos = 0;
    out.push(0);
    let mut code = 1u8;
    for &b in data {
        if b == 0 {
            out[code_pos] = code;
            code_pos = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_pos] = code;
                code_pos = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    out
}

/// Undoes COBS; a zero code byte or a group running past the end is an error.
pub fn cobs_decode(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let code = data[i] as usize;
        if code == 0 {
            return Err(DecodeError::Invalid("COBS zero code"));
        }
        let end = i + code;
        if end > data.len() {
            return Err(DecodeError::Truncated("COBS group"));
        }
        out.extend_from_slice(&data[i + 1..end]);
        i = end;
        if code < 0xFF && i < data.len() {
            out.push(0);
        }
    }
    Ok(out)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to a Vec cannot fail");
    e.finish().expect("writing to a Vec cannot fail")
}

/// Inflates a zlib stream, refusing output over `max` bytes.
pub fn inflate_bounded(data: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut d = flate2::read::ZlibDecoder::new(data).take(max as u64 + 1);
    d.read_to_end(&mut out)
        .map_err(|_| DecodeError::Invalid("deflate stream"))?;
    if out.len() > max {
        return Err(DecodeError::Invalid("inflated data over the cap"));
    }
    Ok(out)
}

/// Appends a block holding `exts` (nothing if empty). Extensions whose wire data would exceed
/// [`MAX_EXT_LEN`] are left out.
pub fn encode_block(exts: &[GgepExt], dst: &mut BytesMut) {
    let exts: Vec<&GgepExt> = exts
        .iter()
        .filter(|e| !e.id.is_empty() && e.id.len() <= 15 && !e.id.contains(&0))
        .collect();
    if exts.is_empty() {
        return;
    }
    dst.put_u8(GGEP_MAGIC);
    let n = exts.len();
    for (i, e) in exts.into_iter().enumerate() {
        let mut data = if e.deflate {
            deflate(&e.data)
        } else {
            e.data.clone()
        };
        let mut flags = e.id.len() as u8;
        if e.deflate {
            flags |= F_DEFLATE;
        }
        if data.contains(&0) {
            data = cobs_encode(&data);
            flags |= F_COBS;
        }
        if data.len() > MAX_EXT_LEN {
            data.truncate(0);
        }
        if i + 1 == n {
            flags |= F_LAST;
        }
        dst.put_u8(flags);
        dst.put_slice(&e.id);
        encode_len(data.len(), dst);
        dst.put_slice(&data);
    }
}

/// Decodes one block starting at `b[0] == 0xC3`; returns the extensions and the bytes used.
pub fn decode_block(b: &[u8]) -> Result<(Vec<GgepExt>, usize), DecodeError> {
    if b.first() != Some(&GGEP_MAGIC) {
        return Err(DecodeError::Invalid("GGEP magic"));
    }
    let mut i = 1;
    let mut exts = Vec::new();
    loop {
        let flags = *b.get(i).ok_or(DecodeError::Truncated("GGEP flags"))?;
        i += 1;
        if flags & F_RESERVED != 0 {
            return Err(DecodeError::Invalid("GGEP reserved bit"));
        }
        let id_len = (flags & 0x0F) as usize;
        if id_len == 0 {
            return Err(DecodeError::Invalid("GGEP id length 0"));
        }
        let id = b
            .get(i..i + id_len)
            .ok_or(DecodeError::Truncated("GGEP id"))?;
        if id.contains(&0) {
            return Err(DecodeError::Invalid("GGEP id holds NUL"));
        }
        i += id_len;
        let (len, used) = decode_len(&b[i..])?;
        i += used;
        let raw = b
            .get(i..i + len)
            .ok_or(DecodeError::Truncated("GGEP data"))?;
        i += len;
        let mut data = if flags & F_COBS != 0 {
            cobs_decode(raw)?
        } else {
            raw.to_vec()
        };
        if flags & F_DEFLATE != 0 {
            data = inflate_bounded(&data, MAX_INFLATED)?;
        }
        if exts.len() >= MAX_EXTENSIONS {
            return Err(DecodeError::Invalid("too many GGEP extensions"));
        }
        exts.push(GgepExt {
            id: id.to_vec(),
            data,
            deflate: flags & F_DEFLATE != 0,
        });
        if flags & F_LAST != 0 {
            return Ok((exts, i));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_ext() -> impl Strategy<Value = GgepExt> {
        (
            proptest::collection::vec(1u8..=255, 1..=15),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        )
            .prop_map(|(id, data, deflate)| GgepExt { id, data, deflate })
    }

    #[test]
    fn length_edge_values() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x40]),
            (63, &[0x7F]),
            (64, &[0x81, 0x40]),
            (4095, &[0xBF, 0x7F]),
            (4096, &[0x81, 0x80, 0x40]),
            (262_143, &[0xBF, 0xBF, 0x7F]),
        ];
        for &(n, wire) in cases {
            let mut b = BytesMut::new();
            encode_len(n, &mut b);
            assert_eq!(&b[..], wire, "encoding {n}");
            assert_eq!(decode_len(wire).unwrap(), (n, wire.len()));
        }
        assert!(decode_len(&[0x80, 0x80, 0x80]).is_err());
        assert!(decode_len(&[0x00]).is_err());
        assert!(decode_len(&[0xC0]).is_err());
        assert!(decode_len(&[0x81]).is_err());
    }

    #[test]
    fn cobs_known_vectors() {
        assert_eq!(cobs_encode(&[]), vec![1]);
        assert_eq!(cobs_encode(&[0]), vec![1, 1]);
        assert_eq!(
            cobs_encode(&[0x11, 0x22, 0, 0x33]),
            vec![3, 0x11, 0x22, 2, 0x33]
        );
        let long: Vec<u8> = (1..=254).collect();
        let enc = cobs_encode(&long);
        assert_eq!(enc[0], 0xFF);
        assert!(!enc.contains(&0));
        assert_eq!(cobs_decode(&enc).unwrap(), long);
        assert!(cobs_decode(&[0]).is_err());
        assert!(cobs_decode(&[5, 1]).is_err());
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(decode_block(&[0xC3, 0x00]).is_err(), "id length 0");
        assert!(
            decode_block(&[0xC3, 0x91, b'H', 0x40]).is_err(),
            "reserved bit"
        );
        assert!(
            decode_block(&[0xC3, 0x81, b'H', 0x45, 1]).is_err(),
            "data overrun"
        );
        assert!(
            decode_block(&[0xC3, 0x01, b'H', 0x40]).is_err(),
            "no last flag"
        );
        assert!(
            decode_block(&[0xC3, 0xA1, b'H', 0x42, 1, 2]).is_err(),
            "bad deflate"
        );
    }

    #[test]
    fn deflate_bomb_is_refused() {
        let big = vec![b'a'; MAX_INFLATED + 10];
        let mut b = BytesMut::new();
        encode_block(
            &[GgepExt {
                id: b"Z".to_vec(),
                data: big,
                deflate: true,
            }],
            &mut b,
        );
        assert!(b.len() < 2000);
        assert!(decode_block(&b).is_err());
    }

    #[test]
    fn nul_data_is_cobs_encoded() {
        let mut b = BytesMut::new();
        encode_block(
            &[GgepExt::sha1(&[0; 20]), GgepExt::new("BH", vec![])],
            &mut b,
        );
        assert!(!b.contains(&0));
        let (exts, n) = decode_block(&b).unwrap();
        assert_eq!(n, b.len());
        assert_eq!(exts[0].as_sha1(), Some([0; 20]));
        assert_eq!(exts[1].id, b"BH");
    }

    #[test]
    fn int_and_ipp_helpers() {
        assert_eq!(GgepExt::int("LF", 0).data, vec![0]);
        assert_eq!(GgepExt::int("LF", 0x1_0000_0000).data, vec![0, 0, 0, 0, 1]);
        assert_eq!(GgepExt::int("DU", 300).as_int(), Some(300));
        let a: SocketAddrV4 = "10.0.0.1:6346".parse().unwrap();
        assert_eq!(GgepExt::ipp(&[a]).as_ipp(), vec![a]);
    }

    proptest! {
        #[test]
        fn block_round_trip(exts in proptest::collection::vec(arb_ext(), 1..5)) {
            let mut b = BytesMut::new();
            encode_block(&exts, &mut b);
            prop_assert!(!b.contains(&0));
            let (back, n) = decode_block(&b).unwrap();
            prop_assert_eq!(n, b.len());
            prop_assert_eq!(back, exts);
        }

        #[test]
        fn length_round_trip(n in 0usize..=MAX_EXT_LEN) {
            let mut b = BytesMut::new();
            encode_len(n, &mut b);
            prop_assert_eq!(decode_len(&b).unwrap(), (n, b.len()));
        }

        #[test]
        fn cobs_round_trip(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            let e = cobs_encode(&d);
            prop_assert!(!e.contains(&0));
            prop_assert_eq!(cobs_decode(&e).unwrap(), d);
        }

        #[test]
        fn arbitrary_blocks_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..200)) {
            b.insert(0, GGEP_MAGIC);
            let _ = decode_block(&b);
            let _ = cobs_decode(&b);
        }
    }
}
