//! Pure encode/decode of the Gnutella 0.4/0.6 wire formats (no I/O, no async runtime).
//!
//! - [`Header`] and [`Frame`]: the 23-byte descriptor header (Gnutella 0.6 draft §2.2, "Descriptor Header")
//!   and the framing of a byte stream into (header, payload) with per-type size caps checked *before* any
//!   allocation ([`max_payload`]).
//! - [`message`]: the payloads (Ping, Pong, Query, QueryHit, Push, Bye, QRP, vendor messages).
//! - [`ggep`]: GGEP 0.5 extension blocks (COBS, deflate with a bounded inflate, 6-bit length chunks).
//! - [`handshake`]: the 0.6 header blocks and the legacy 0.4 lines.
//! - [`altloc`]: alternate locations in HTTP headers (`X-Alt` compact form, old URL form).
//! - [`qrp`]: the QRP hash (LimeWire/0.6 QRP spec), table build, RESET/PATCH encoding and the receiver.
//!
//! Integers are little-endian except IPv4 addresses and the Query flags word (big-endian).

pub mod altloc;
pub mod ggep;
pub mod handshake;
pub mod message;
pub mod qrp;

use bytes::{BufMut, Bytes, BytesMut};

pub use message::{Message, PayloadType};

/// Length of the descriptor header.
pub const HEADER_LEN: usize = 23;
/// No payload may exceed 64 KiB (the high bit of the length field is reserved for flags).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Queries over 1 KiB are refused outright (gtk-gnutella kicks the sender).
pub const MAX_QUERY_PAYLOAD: usize = 1024;
/// Payload types other than Query and QueryHit are refused over this size.
pub const MAX_OTHER_PAYLOAD: usize = 40_960;
/// TTL/hops sum above which a descriptor is dropped instead of clamped.
pub const HARD_TTL_LIMIT: u8 = 15;

/// The largest payload accepted for `ptype`: checked before allocating the payload buffer.
pub fn max_payload(ptype: u8) -> usize {
    match ptype {
        message::TYPE_QUERY => MAX_QUERY_PAYLOAD,
        message::TYPE_QUERY_HIT => MAX_PAYLOAD,
        _ => MAX_OTHER_PAYLOAD,
    }
}

/// A 16-byte GUID: a descriptor id (MUID) or a servent id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A new random GUID with the "modern servent" marks: byte 8 = 0xFF, byte 15 = 0x00.
    pub fn random(rng: &mut impl rand::RngCore) -> Guid {
        let mut g = [0u8; 16];
        rng.fill_bytes(&mut g);
        g[8] = 0xFF;
        g[15] = 0x00;
        Guid(g)
    }

    /// Upper-case hex, the form used in `GIV` lines and the `GUID:` handshake header.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// Parses 32 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Guid> {
        let mut g = [0u8; 16];
        hex::decode_to_slice(s, &mut g).ok()?;
        Some(Guid(g))
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guid({})", hex::encode(self.0))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header announces a payload over the cap of its type. The stream cannot be resynchronised:
    /// answer BYE 400 and close.
    #[error("payload of type {ptype:#04x} too large: {len} > {max}")]
    TooLarge {
        /// Payload type.
        ptype: u8,
        /// The cap for that type.
        max: usize,
        /// The announced length.
        len: usize,
    },
    /// The payload ended before a field it must contain.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field holds a value the format forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl DecodeError {
    /// True when the connection must be closed (the framing is lost), false when only this message is bad.
    pub fn is_fatal(&self) -> bool {
        matches!(self, DecodeError::TooLarge { .. })
    }
}

/// The 23-byte descriptor header (without the length, which belongs to the payload).
///
/// ```text
///  0               16   17    18    19          23
///  | GUID (16)      |type| TTL | hops| length LE |
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Message id (MUID).
    pub guid: Guid,
    /// Payload type byte.
    pub ptype: u8,
    /// Time to live.
    pub ttl: u8,
    /// Hops so far.
    pub hops: u8,
}

/// One descriptor as it crosses the wire: header and raw payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: Header,
    /// The payload bytes (length taken from the header).
    pub payload: Bytes,
}

impl Frame {
    /// Decodes one frame from the start of `buf`. `Ok(None)` means more bytes are needed; the length is
    /// checked against [`max_payload`] as soon as the header is complete.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(len) = Frame::check(buf)? else {
            return Ok(None);
        };
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&buf[..16]);
        let header = Header {
            guid: Guid(guid),
            ptype: buf[16],
            ttl: buf[17],
            hops: buf[18],
        };
        let payload = Bytes::copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
        Ok(Some((Frame { header, payload }, HEADER_LEN + len)))
    }

    /// Is a whole frame buffered? Returns its payload length, `None` if incomplete.
    pub fn check(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes([buf[19], buf[20], buf[21], buf[22]]) as usize;
        let max = max_payload(buf[16]);
        if len > max {
            return Err(DecodeError::TooLarge {
                ptype: buf[16],
                max,
                len,
            });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// Appends the wire form.
    pub fn encode(&self, dst: &mut BytesMut) {
        encode_header(&self.header, self.payload.len(), dst);
        dst.put_slice(&self.payload);
    }

    /// Total size on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

fn encode_header(h: &Header, len: usize, dst: &mut BytesMut) {
    dst.reserve(HEADER_LEN + len);
    dst.put_slice(&h.guid.0);
    dst.put_u8(h.ptype);
    dst.put_u8(h.ttl);
    dst.put_u8(h.hops);
    dst.put_u32_le(len as u32);
}

/// A decoded descriptor: header fields and the parsed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Message id.
    pub guid: Guid,
    /// Time to live.
    pub ttl: u8,
    /// Hops so far.
    pub hops: u8,
    /// The message.
    pub msg: Message,
}

impl Descriptor {
    /// Parses the payload of a frame.
    pub fn from_frame(f: &Frame) -> Result<Descriptor, DecodeError> {
        Ok(Descriptor {
            guid: f.header.guid,
            ttl: f.header.ttl,
            hops: f.header.hops,
            msg: Message::parse(f.header.ptype, &f.payload)?,
        })
    }

    /// Decodes one descriptor from the start of `buf` (`Ok(None)`: need more bytes).
    pub fn decode(buf: &[u8]) -> Result<Option<(Descriptor, usize)>, DecodeError> {
        match Frame::decode(buf)? {
            None => Ok(None),
            Some((f, n)) => Ok(Some((Descriptor::from_frame(&f)?, n))),
        }
    }

    /// Appends the wire form (header + payload).
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut payload = BytesMut::new();
        self.msg.encode_payload(&mut payload);
        let h = Header {
            guid: self.guid,
            ptype: self.msg.payload_type(),
            ttl: self.ttl,
            hops: self.hops,
        };
        encode_header(&h, payload.len(), dst);
        dst.put_slice(&payload);
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_layout_is_little_endian_length() {
        let d = Descriptor {
            guid: Guid([7; 16]),
            ttl: 7,
            hops: 0,
            msg: Message::Ping(message::Ping::default()),
        };
        let b = d.to_bytes();
        assert_eq!(b.len(), 23);
        assert_eq!(&b[16..23], &[0, 7, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn oversized_query_is_refused_before_allocating() {
        let mut b = vec![0u8; 23];
        b[16] = message::TYPE_QUERY;
        b[19..23].copy_from_slice(&2000u32.to_le_bytes());
        let e = Frame::decode(&b).unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(
            e,
            DecodeError::TooLarge {
                ptype: 0x80,
                max: 1024,
                len: 2000
            }
        );
        // A length with the high "flags" bit set is refused too, whatever the type.
        b[16] = 0x81;
        b[19..23].copy_from_slice(&0x8000_0010u32.to_le_bytes());
        assert!(Frame::decode(&b).is_err());
    }

    #[test]
    fn partial_frames_ask_for_more() {
        for n in 0..23 {
            assert_eq!(Frame::decode(&vec![0u8; n]).unwrap(), None);
        }
        let mut b = vec![0u8; 23];
        b[19] = 5;
        assert_eq!(Frame::decode(&b).unwrap(), None);
    }

    #[test]
    fn random_guid_has_modern_marks() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let g = Guid::random(&mut rng);
        assert_eq!(g.0[8], 0xFF);
        assert_eq!(g.0[15], 0);
        assert_eq!(Guid::from_hex(&g.to_hex()), Some(g));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Descriptor::decode(&b);
        }

        #[test]
        fn every_prefix_length_never_panics(ptype in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut b = vec![1u8; 16];
            b.extend_from_slice(&[ptype, 1, 0]);
            b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            b.extend_from_slice(&payload);
            for n in 0..=b.len() {
                let _ = Descriptor::decode(&b[..n]);
            }
        }
    }
}
