//! Pure encode/decode of the FastTrack wire formats (no I/O, no tokio).
//!
//! Layout follows `shared/protocols/kazaa.md` §2 (giFT-FastTrack's reverse engineering, its `PROTOCOL`
//! file and `fst_packet.c`/`fst_session.c`):
//! - this module: big-endian integers, the BER base-128 "dynint", the bounded [`Reader`] every decoder uses,
//!   and the [`DecodeError`] all of them return;
//! - [`tag`]: tags (type, length, value) and the tag, media, realm and comparison codes;
//! - [`frame`]: the 12-byte hello, the 8-byte reply, the NUL-terminated network names, the
//!   `0x50`/`0x52`/`0x4B` framing with the per-direction `xinu` header rotation, and the cipher seam;
//! - [`message`]: the message bodies (0x00, 0x01, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A/0x0B, 0x0D,
//!   0x15, 0x1D, 0x22, 0x26, 0x2C) and the routed SN↔SN headers (0x80xx unicast, 0xC0xx broadcast).
//!
//! Every size limit is a named constant, and every count read from the wire is checked against the bytes
//! that remain before anything is allocated, so peer input can never make a decoder allocate more than
//! the frame it came in (at most [`frame::MAX_PAYLOAD`] bytes).

pub mod frame;
pub mod message;
pub mod tag;

use std::net::Ipv4Addr;

pub use frame::{
    ClientHello, Frame, FrameDecoder, FrameEncoder, PassThroughCipher, ServerReply, StreamCipher,
};
pub use message::{Message, Packet, Route};
pub use tag::{Comparison, MediaType, Realm, Tag};

/// The longest dynint we accept: 10 groups of 7 bits cover a u64 (FastTrack itself never sends more than 5).
pub const MAX_DYNINT_LEN: usize = 10;

/// Why a decoder refused its input. Peer input only ever produces one of these, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of `what`.
    #[error("truncated {what}")]
    Truncated {
        /// The field being read.
        what: &'static str,
    },
    /// A length or count is over its named limit.
    #[error("{what} too long: {len} > {max}")]
    TooLong {
        /// The field being read.
        what: &'static str,
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field holds a value the layout does not allow.
    #[error("invalid {what}")]
    Invalid {
        /// The field being read.
        what: &'static str,
    },
    /// Bytes were left over after a complete message body.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Appends `v` as a dynint: base-128, most significant group first, high bit on every byte but the last.
pub fn put_dynint(out: &mut Vec<u8>, v: u64) {
    let mut groups = [0u8; MAX_DYNINT_LEN];
    let mut n = 0;
    let mut x = v;
    loop {
        groups[n] = (x & 0x7F) as u8;
        n += 1;
        x >>= 7;
        if x == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(if i == 0 { groups[i] } else { groups[i] | 0x80 });
    }
}

/// The dynint encoding of `v` as a fresh vector.
pub fn dynint_bytes(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    put_dynint(&mut out, v);
    out
}

/// A bounds-checked cursor over a message body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N, what)?);
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// An IPv4 address, 4 bytes in dotted order.
    pub fn ip4(&mut self, what: &'static str) -> Result<Ipv4Addr, DecodeError> {
        Ok(Ipv4Addr::from(self.array::<4>(what)?))
    }

    /// A dynint. Non-minimal encodings (leading `0x80` groups) are accepted, as giFT does; values over
    /// 64 bits are an error.
    pub fn dynint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for _ in 0..MAX_DYNINT_LEN {
            let b = self.u8(what)?;
            if v >> 57 != 0 {
                return Err(DecodeError::Invalid { what });
            }
            v = (v << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::TooLong {
            what,
            len: MAX_DYNINT_LEN + 1,
            max: MAX_DYNINT_LEN,
        })
    }

    /// A dynint that must fit `max` (used for lengths and counts before allocating).
    pub fn dynint_len(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let v = self.dynint(what)?;
        if v > max as u64 {
            return Err(DecodeError::TooLong {
                what,
                len: usize::try_from(v).unwrap_or(usize::MAX),
                max,
            });
        }
        Ok(v as usize)
    }

    /// Bytes up to (not including) a NUL, which is consumed. At most `max` bytes before the NUL.
    pub fn cstr(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        self.until(0, what, max)
    }

    /// Bytes up to (not including) `end`, which is consumed. At most `max` bytes before it.
    pub fn until(
        &mut self,
        end: u8,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().take(max + 1).position(|&b| b == end) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None if rest.len() > max => Err(DecodeError::TooLong {
                what,
                len: rest.len(),
                max,
            }),
            None => Err(DecodeError::Truncated { what }),
        }
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// Errors unless the whole body was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Reads one dynint from the start of `buf`, returning the value and the bytes it took.
pub fn decode_dynint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let v = r.dynint("dynint")?;
    Ok((v, r.pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynint_vectors_from_section_7_case_4() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x81, 0x00]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x81, 0x80, 0x00]),
            (u32::MAX as u64, &[0x8f, 0xff, 0xff, 0xff, 0x7f]),
        ];
        for (v, bytes) in cases {
            assert_eq!(dynint_bytes(*v), *bytes, "encode {v}");
            assert_eq!(
                decode_dynint(bytes).unwrap(),
                (*v, bytes.len()),
                "decode {v}"
            );
        }
        assert_eq!(
            decode_dynint(&[0x81]),
            Err(DecodeError::Truncated { what: "dynint" })
        );
        assert!(decode_dynint(&[0xff; 11]).is_err());
        assert_eq!(decode_dynint(&dynint_bytes(u64::MAX)).unwrap().0, u64::MAX);
    }

    #[test]
    fn cstr_is_bounded() {
        let mut r = Reader::new(b"KaZaA\0x");
        assert_eq!(r.cstr("name", 8).unwrap(), b"KaZaA");
        assert_eq!(r.remaining(), 1);
        let mut r = Reader::new(b"abcdefgh");
        assert!(matches!(
            r.cstr("name", 4),
            Err(DecodeError::TooLong { .. })
        ));
        let mut r = Reader::new(b"abc");
        assert!(matches!(
            r.cstr("name", 4),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
