//! The peer wire protocol: BEP 3 "peer protocol", BEP 6 fast extension messages and the BEP 10 extended
//! message frame.
//!
//! ```text
//! handshake: <19><"BitTorrent protocol"><reserved: 8><info_hash: 20><peer_id: 20>   (68 bytes)
//! message:   <length: u32 BE><id: u8><payload: length-1>   (length 0 = keep-alive)
//! ```
//! Every length is checked against the message's legal size *before* anything is allocated; piece and
//! bitfield payloads are borrowed from the input buffer, never copied by the decoder.

use bytes::{BufMut, BytesMut};

use crate::types::{InfoHash, PeerId};

/// `pstr` of the handshake.
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Bytes in a handshake.
pub const HANDSHAKE_LEN: usize = 68;
/// Largest block a request may ask for or a piece may carry. BEP 3 clients use 16 KiB; some send up to
/// 128 KiB, which we still accept.
pub const MAX_BLOCK_LEN: u32 = 128 << 10;
/// The block size we request.
pub const BLOCK_LEN: u32 = 16 << 10;
/// Most pieces a torrent may have here (bounds the bitfield).
pub const MAX_PIECES: u32 = 1 << 21;
/// Largest bitfield payload.
pub const MAX_BITFIELD_LEN: usize = (MAX_PIECES / 8) as usize;
/// Largest BEP 10 extended payload (a 16 KiB ut_metadata piece plus its dictionary, with room).
pub const MAX_EXTENDED_LEN: usize = 64 << 10;
/// Largest legal message length prefix: the biggest of bitfield, piece and extended messages.
pub const MAX_MSG_LEN: usize = max3(
    1 + MAX_BITFIELD_LEN,
    1 + 8 + MAX_BLOCK_LEN as usize,
    2 + MAX_EXTENDED_LEN,
);

const fn max3(a: usize, b: usize, c: usize) -> usize {
    let m = if a > b { a } else { b };
    if m > c {
        m
    } else {
        c
    }
}

/// Message ids (BEP 3, BEP 5 port, BEP 6 fast, BEP 10 extended).
pub mod id {
    #![allow(missing_docs)]
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 13;
    pub const HAVE_ALL: u8 = 14;
    pub const HAVE_NONE: u8 = 15;
    pub const REJECT: u8 = 16;
    pub const ALLOWED_FAST: u8 = 17;
    pub const EXTENDED: u8 = 20;
}

/// Reserved-byte flags we understand (BEP 6: byte 7 bit 0x04; BEP 10: byte 5 bit 0x10).
pub mod reserved {
    /// Fast extension (BEP 6).
    pub const FAST: (usize, u8) = (7, 0x04);
    /// Extension protocol (BEP 10).
    pub const EXTENSION: (usize, u8) = (5, 0x10);
}

/// Why bytes from a peer are not a valid message. Any of these ends the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The handshake does not start with `\x13BitTorrent protocol`.
    #[error("not a BitTorrent handshake")]
    BadHandshake,
    /// A length prefix larger than [`MAX_MSG_LEN`].
    #[error("message length {len} over the limit {max}")]
    TooLong {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A known message with a length its id does not allow.
    #[error("message id {id} with bad length {len}")]
    BadLength {
        /// Message id.
        id: u8,
        /// Length prefix.
        len: usize,
    },
    /// An id we do not know.
    #[error("unknown message id {0}")]
    UnknownId(u8),
    /// A request or piece bigger than [`MAX_BLOCK_LEN`].
    #[error("block of {0} bytes over the limit")]
    BlockTooLarge(u32),
}

/// The 68-byte opening of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits.
    pub reserved: [u8; 8],
    /// Torrent the connection is for.
    pub info_hash: InfoHash,
    /// Sender's id.
    pub peer_id: PeerId,
}

impl Handshake {
    /// A handshake advertising what we implement: the fast extension (BEP 6) and the extension
    /// protocol (BEP 10, used for ut_metadata).
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        let mut reserved = [0u8; 8];
        reserved[reserved::FAST.0] |= reserved::FAST.1;
        reserved[reserved::EXTENSION.0] |= reserved::EXTENSION.1;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Whether a reserved flag is set.
    pub fn has(&self, flag: (usize, u8)) -> bool {
        self.reserved[flag.0] & flag.1 != 0
    }

    /// The 68 wire bytes.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0] = 19;
        b[1..20].copy_from_slice(PROTOCOL);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash.0);
        b[48..68].copy_from_slice(&self.peer_id.0);
        b
    }

    /// Decodes a handshake; `Ok(None)` while fewer than 68 bytes are buffered. The first byte is
    /// checked at once so that garbage is refused without waiting.
    pub fn decode(buf: &[u8]) -> Result<Option<(Handshake, usize)>, DecodeError> {
        let n = buf.len().min(20);
        if buf[..n] != [&[19u8][..], &PROTOCOL[..]].concat()[..n] {
            return Err(DecodeError::BadHandshake);
        }
        if buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        Ok(Some((
            Handshake {
                reserved,
                info_hash: InfoHash(buf[28..48].try_into().expect("20 bytes")),
                peer_id: PeerId(buf[48..68].try_into().expect("20 bytes")),
            },
            HANDSHAKE_LEN,
        )))
    }
}

/// A block address: piece index, offset in the piece, length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    /// Piece index.
    pub index: u32,
    /// Byte offset inside the piece.
    pub begin: u32,
    /// Length in bytes.
    pub len: u32,
}

/// One peer-wire message. Payloads borrow from the decode buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// Zero-length message.
    KeepAlive,
    /// We will not serve your requests.
    Choke,
    /// We will serve your requests.
    Unchoke,
    /// We want something you have.
    Interested,
    /// We want nothing you have.
    NotInterested,
    /// We now have this piece.
    Have(u32),
    /// Pieces we have, high bit of byte 0 = piece 0.
    Bitfield(&'a [u8]),
    /// Please send this block.
    Request(BlockRef),
    /// A block of data.
    Piece {
        /// Piece index.
        index: u32,
        /// Offset inside the piece.
        begin: u32,
        /// The bytes.
        data: &'a [u8],
    },
    /// Forget that request.
    Cancel(BlockRef),
    /// DHT port (BEP 5).
    Port(u16),
    /// BEP 6: you might want this piece.
    Suggest(u32),
    /// BEP 6: I have every piece.
    HaveAll,
    /// BEP 6: I have no piece.
    HaveNone,
    /// BEP 6: your request will not be served.
    Reject(BlockRef),
    /// BEP 6: you may request this piece even while choked.
    AllowedFast(u32),
    /// BEP 10: extended message `ext_id` (0 = extension handshake).
    Extended {
        /// Extension message id.
        ext_id: u8,
        /// Bencoded dictionary, possibly followed by raw data.
        payload: &'a [u8],
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn block_at(b: &[u8]) -> BlockRef {
    BlockRef {
        index: u32_at(b, 0),
        begin: u32_at(b, 4),
        len: u32_at(b, 8),
    }
}

impl<'a> Msg<'a> {
    /// Decodes one message from the start of `buf`. `Ok(None)`: not all of it is buffered yet.
    /// On success returns the message and the bytes it used (length prefix included).
    pub fn decode(buf: &'a [u8]) -> Result<Option<(Msg<'a>, usize)>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32_at(buf, 0) as usize;
        if len == 0 {
            return Ok(Some((Msg::KeepAlive, 4)));
        }
        if len > MAX_MSG_LEN {
            return Err(DecodeError::TooLong {
                len,
                max: MAX_MSG_LEN,
            });
        }
        let msg_id = buf.get(4).copied();
        // The length is checked against the id before waiting for the body, so a peer cannot make us
        // buffer a large body for a message that is never that large.
        if let Some(mid) = msg_id {
            let ok = match mid {
                id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => len == 1,
                id::HAVE_ALL | id::HAVE_NONE => len == 1,
                id::HAVE | id::SUGGEST | id::ALLOWED_FAST => len == 5,
                id::REQUEST | id::CANCEL | id::REJECT => len == 13,
                id::PORT => len == 3,
                id::BITFIELD => len <= 1 + MAX_BITFIELD_LEN,
                id::PIECE => (9..=9 + MAX_BLOCK_LEN as usize).contains(&len),
                id::EXTENDED => (2..=2 + MAX_EXTENDED_LEN).contains(&len),
                other => return Err(DecodeError::UnknownId(other)),
            };
            if !ok {
                return Err(DecodeError::BadLength { id: mid, len });
            }
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let body = &buf[5..4 + len];
        let msg = match buf[4] {
            id::CHOKE => Msg::Choke,
            id::UNCHOKE => Msg::Unchoke,
            id::INTERESTED => Msg::Interested,
            id::NOT_INTERESTED => Msg::NotInterested,
            id::HAVE => Msg::Have(u32_at(body, 0)),
            id::BITFIELD => Msg::Bitfield(body),
            id::REQUEST | id::CANCEL | id::REJECT => {
                let b = block_at(body);
                if b.len > MAX_BLOCK_LEN {
                    return Err(DecodeError::BlockTooLarge(b.len));
                }
                match buf[4] {
                    id::REQUEST => Msg::Request(b),
                    id::CANCEL => Msg::Cancel(b),
                    _ => Msg::Reject(b),
                }
            }
            id::PIECE => Msg::Piece {
                index: u32_at(body, 0),
                begin: u32_at(body, 4),
                data: &body[8..],
            },
            id::PORT => Msg::Port(u16::from_be_bytes([body[0], body[1]])),
            id::SUGGEST => Msg::Suggest(u32_at(body, 0)),
            id::HAVE_ALL => Msg::HaveAll,
            id::HAVE_NONE => Msg::HaveNone,
            id::ALLOWED_FAST => Msg::AllowedFast(u32_at(body, 0)),
            id::EXTENDED => Msg::Extended {
                ext_id: body[0],
                payload: &body[1..],
            },
            other => return Err(DecodeError::UnknownId(other)),
        };
        Ok(Some((msg, 4 + len)))
    }

    /// The short name counted in stats (`"piece"`, `"have"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Msg::KeepAlive => "keepalive",
            Msg::Choke => "choke",
            Msg::Unchoke => "unchoke",
            Msg::Interested => "interested",
            Msg::NotInterested => "not_interested",
            Msg::Have(_) => "have",
            Msg::Bitfield(_) => "bitfield",
            Msg::Request(_) => "request",
            Msg::Piece { .. } => "piece",
            Msg::Cancel(_) => "cancel",
            Msg::Port(_) => "port",
            Msg::Suggest(_) => "suggest",
            Msg::HaveAll => "have_all",
            Msg::HaveNone => "have_none",
            Msg::Reject(_) => "reject",
            Msg::AllowedFast(_) => "allowed_fast",
            Msg::Extended { .. } => "extended",
        }
    }

    /// Bytes this message takes on the wire, length prefix included.
    pub fn wire_len(&self) -> usize {
        4 + match self {
            Msg::KeepAlive => 0,
            Msg::Choke | Msg::Unchoke | Msg::Interested | Msg::NotInterested => 1,
            Msg::HaveAll | Msg::HaveNone => 1,
            Msg::Have(_) | Msg::Suggest(_) | Msg::AllowedFast(_) => 5,
            Msg::Bitfield(b) => 1 + b.len(),
            Msg::Request(_) | Msg::Cancel(_) | Msg::Reject(_) => 13,
            Msg::Piece { data, .. } => 9 + data.len(),
            Msg::Port(_) => 3,
            Msg::Extended { payload, .. } => 2 + payload.len(),
        }
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.wire_len());
        out.put_u32(self.wire_len() as u32 - 4);
        let block = |out: &mut BytesMut, mid: u8, b: &BlockRef| {
            out.put_u8(mid);
            out.put_u32(b.index);
            out.put_u32(b.begin);
            out.put_u32(b.len);
        };
        match self {
            Msg::KeepAlive => {}
            Msg::Choke => out.put_u8(id::CHOKE),
            Msg::Unchoke => out.put_u8(id::UNCHOKE),
            Msg::Interested => out.put_u8(id::INTERESTED),
            Msg::NotInterested => out.put_u8(id::NOT_INTERESTED),
            Msg::HaveAll => out.put_u8(id::HAVE_ALL),
            Msg::HaveNone => out.put_u8(id::HAVE_NONE),
            Msg::Have(i) => {
                out.put_u8(id::HAVE);
                out.put_u32(*i);
            }
            Msg::Suggest(i) => {
                out.put_u8(id::SUGGEST);
                out.put_u32(*i);
            }
            Msg::AllowedFast(i) => {
                out.put_u8(id::ALLOWED_FAST);
                out.put_u32(*i);
            }
            Msg::Bitfield(b) => {
                out.put_u8(id::BITFIELD);
                out.put_slice(b);
            }
            Msg::Request(b) => block(out, id::REQUEST, b),
            Msg::Cancel(b) => block(out, id::CANCEL, b),
            Msg::Reject(b) => block(out, id::REJECT, b),
            Msg::Piece { index, begin, data } => {
                out.put_u8(id::PIECE);
                out.put_u32(*index);
                out.put_u32(*begin);
                out.put_slice(data);
            }
            Msg::Port(p) => {
                out.put_u8(id::PORT);
                out.put_u16(*p);
            }
            Msg::Extended { ext_id, payload } => {
                out.put_u8(id::EXTENDED);
                out.put_u8(*ext_id);
                out.put_slice(payload);
            }
        }
    }
}

/// The 13-byte header of a `piece` message carrying `len` bytes: the node writes it and then the block
/// straight from storage, so block data is never copied into a message buffer.
pub fn piece_header(index: u32, begin: u32, len: u32) -> [u8; 13] {
    let mut h = [0u8; 13];
    h[..4].copy_from_slice(&(9 + len).to_be_bytes());
    h[4] = id::PIECE;
    h[5..9].copy_from_slice(&index.to_be_bytes());
    h[9..13].copy_from_slice(&begin.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(m: &Msg<'_>) -> Vec<u8> {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn known_bytes() {
        assert_eq!(enc(&Msg::Have(258)), [0, 0, 0, 5, 4, 0, 0, 1, 2]);
        assert_eq!(enc(&Msg::KeepAlive), [0, 0, 0, 0]);
        let r = BlockRef {
            index: 1,
            begin: 16384,
            len: 16384,
        };
        assert_eq!(
            enc(&Msg::Request(r)),
            [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 64, 0, 0, 0, 64, 0]
        );
        let p = enc(&Msg::Piece {
            index: 1,
            begin: 2,
            data: b"xyz",
        });
        assert_eq!(p[..13], piece_header(1, 2, 3));
        assert_eq!(MAX_MSG_LEN, 1 + MAX_BITFIELD_LEN);
    }

    #[test]
    fn handshake_round_trip_and_early_reject() {
        let h = Handshake::new(InfoHash([1; 20]), PeerId([2; 20]));
        assert!(h.has(reserved::FAST) && h.has(reserved::EXTENSION));
        let b = h.to_bytes();
        assert_eq!(Handshake::decode(&b).unwrap(), Some((h, 68)));
        assert_eq!(Handshake::decode(&b[..30]).unwrap(), None);
        assert_eq!(
            Handshake::decode(b"GET / HTTP/1.1"),
            Err(DecodeError::BadHandshake)
        );
    }

    #[test]
    fn lengths_checked_before_body_arrives() {
        // A "have" claiming 64 KiB is refused from its first five bytes.
        assert_eq!(
            Msg::decode(&[0, 1, 0, 0, 4]),
            Err(DecodeError::BadLength {
                id: 4,
                len: 1 << 16
            })
        );
        assert!(matches!(
            Msg::decode(&[0xff, 0, 0, 0]),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(Msg::decode(&[0, 0, 0, 5, 4, 0]), Ok(None));
        assert_eq!(
            Msg::decode(&[0, 0, 0, 1, 99]),
            Err(DecodeError::UnknownId(99))
        );
        let big = BlockRef {
            index: 0,
            begin: 0,
            len: MAX_BLOCK_LEN + 1,
        };
        assert_eq!(
            Msg::decode(&enc(&Msg::Request(big))),
            Err(DecodeError::BlockTooLarge(MAX_BLOCK_LEN + 1))
        );
    }

    fn arb_block() -> impl Strategy<Value = BlockRef> {
        (any::<u32>(), any::<u32>(), 0..=MAX_BLOCK_LEN).prop_map(|(index, begin, len)| BlockRef {
            index,
            begin,
            len,
        })
    }

    #[derive(Debug, Clone)]
    enum Owned {
        Simple(u8),
        Have(u32),
        Bitfield(Vec<u8>),
        Req(u8, BlockRef),
        Piece(u32, u32, Vec<u8>),
        Port(u16),
        Ext(u8, Vec<u8>),
    }

    fn as_msg(o: &Owned) -> Msg<'_> {
        match o {
            Owned::Simple(k) => [
                Msg::KeepAlive,
                Msg::Choke,
                Msg::Unchoke,
                Msg::Interested,
                Msg::NotInterested,
                Msg::HaveAll,
                Msg::HaveNone,
            ][*k as usize % 7],
            Owned::Have(i) => Msg::Have(*i),
            Owned::Bitfield(b) => Msg::Bitfield(b),
            Owned::Req(k, b) => {
                [Msg::Request(*b), Msg::Cancel(*b), Msg::Reject(*b)][*k as usize % 3]
            }
            Owned::Piece(i, b, d) => Msg::Piece {
                index: *i,
                begin: *b,
                data: d,
            },
            Owned::Port(p) => Msg::Port(*p),
            Owned::Ext(e, p) => Msg::Extended {
                ext_id: *e,
                payload: p,
            },
        }
    }

    fn arb_msg() -> impl Strategy<Value = Owned> {
        prop_oneof![
            any::<u8>().prop_map(Owned::Simple),
            any::<u32>().prop_map(Owned::Have),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(Owned::Bitfield),
            (any::<u8>(), arb_block()).prop_map(|(k, b)| Owned::Req(k, b)),
            (
                any::<u32>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(i, b, d)| Owned::Piece(i, b, d)),
            any::<u16>().prop_map(Owned::Port),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(e, p)| Owned::Ext(e, p)),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(o in arb_msg()) {
            let m = as_msg(&o);
            let bytes = enc(&m);
            prop_assert_eq!(bytes.len(), m.wire_len());
            prop_assert_eq!(Msg::decode(&bytes), Ok(Some((m, bytes.len()))));
            // Every strict prefix asks for more bytes.
            for cut in 0..bytes.len() {
                prop_assert_eq!(Msg::decode(&bytes[..cut]), Ok(None));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Some((m, used))) = Msg::decode(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(m.wire_len(), used);
            }
            let _ = Handshake::decode(&bytes);
        }
    }

    #[test]
    fn every_id_and_length_is_safe() {
        for mid in 0..=255u8 {
            for len in 0..64u32 {
                let mut b = (len).to_be_bytes().to_vec();
                b.push(mid);
                b.extend(std::iter::repeat_n(0u8, len as usize));
                let _ = Msg::decode(&b);
            }
        }
    }
}
