//! Session handshake, framing and the cipher seam (`shared/protocols/kazaa.md` §2, "Handshake",
//! "Framing" and "The cipher"; giFT-FastTrack `fst_session.c`).
//!
//! Wire order on a fresh TCP session:
//! 1. client → SN, in clear: [`ClientHello`] (12 bytes);
//! 2. SN → client, in clear: [`ServerReply`] (8 bytes);
//! 3. from here everything passes through a [`StreamCipher`] per direction: the SN's NUL-terminated
//!    network name, the client's, then frames.
//!
//! A frame is one byte: `0x50` (ping) or `0x52` (pong), each standing alone, or `0x4B` followed by a
//! 4-byte header (16-bit type, 16-bit length) and the body. The header's byte order rotates with the
//! sender's `xinu` (see [`header_bytes`]).
//!
//! **The one documented deviation: the cipher.** FastTrack's cipher (≈7k lines of GPL C in giFT) is not
//! ported. [`StreamCipher`] is the seam, and [`PassThroughCipher`] is the shipped implementation: an
//! identity keystream, so the bytes after the handshake are the plaintext a real client would have
//! encrypted. The handshake keeps its layout (rand, seeds, enc types), but the *encoding* of the enc type
//! (XOR with word 7 of `enc_type_2` over the sender's seed) needs the unported mixer; the pass-through
//! uses the identity there too, see [`PassThroughCipher::encode_enc_type`]. No historical client can log
//! in to us, and we cannot log in to one.

use super::{DecodeError, Reader};

/// The "rand" word giFT always sends first (other values broke logins).
pub const HELLO_RAND: u32 = 0xFA00_B62B;
/// Length of the client hello.
pub const CLIENT_HELLO_LEN: usize = 12;
/// Length of the SN's reply.
pub const SERVER_REPLY_LEN: usize = 8;
/// Longest network name before its NUL ("KaZaA", "fileshare", "Grokster" are all short).
pub const MAX_NETWORK_NAME_LEN: usize = 64;
/// The network name Kazaa uses.
pub const NETWORK_KAZAA: &str = "KaZaA";
/// The enc type Kazaa clients request.
pub const DEFAULT_ENC_TYPE: u32 = 0x29;
/// Initial value of each direction's `xinu`.
pub const XINU_START: u32 = 0x51;
/// Ping byte.
pub const BYTE_PING: u8 = 0x50;
/// Pong byte.
pub const BYTE_PONG: u8 = 0x52;
/// Message frame byte.
pub const BYTE_MESSAGE: u8 = 0x4B;
/// Length of a message frame's header after the `0x4B`.
pub const HEADER_LEN: usize = 4;
/// Largest body a frame can carry: the length field is 16 bits.
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// The SN's choice of enc type given the client's request (giFT: `(requested & 0xBF) | 0x29`).
pub fn choose_enc_type(requested: u32) -> u32 {
    (requested & 0xBF) | 0x29
}

/// One direction's keystream. `apply` encrypts or decrypts in place (a stream cipher is its own inverse).
pub trait StreamCipher: Send {
    /// Transforms `data` in place and advances the keystream by `data.len()` bytes.
    fn apply(&mut self, data: &mut [u8]);
}

/// The documented stand-in for FastTrack's cipher: identity keystream (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassThroughCipher;

impl PassThroughCipher {
    /// The seeded constructor a faithful cipher would have; seed and enc type are ignored.
    pub fn new(_seed: u32, _enc_type: u32) -> Self {
        PassThroughCipher
    }

    /// Encodes an enc type for the handshake. Historically `enc_type ^ enc_type_2(seed)[7]`; the
    /// stand-in sends the enc type itself so hex dumps stay readable.
    pub fn encode_enc_type(_seed: u32, enc_type: u32) -> u32 {
        enc_type
    }

    /// Inverse of [`Self::encode_enc_type`].
    pub fn decode_enc_type(_seed: u32, encoded: u32) -> u32 {
        encoded
    }
}

impl StreamCipher for PassThroughCipher {
    fn apply(&mut self, _data: &mut [u8]) {}
}

/// The 12 bytes a client sends first, in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// Always [`HELLO_RAND`] from giFT.
    pub rand: u32,
    /// The client's cipher seed.
    pub seed: u32,
    /// The enc type as encoded on the wire.
    pub encoded_enc_type: u32,
}

impl ClientHello {
    /// The 12 wire bytes (three big-endian words).
    pub fn to_bytes(&self) -> [u8; CLIENT_HELLO_LEN] {
        let mut b = [0u8; CLIENT_HELLO_LEN];
        b[0..4].copy_from_slice(&self.rand.to_be_bytes());
        b[4..8].copy_from_slice(&self.seed.to_be_bytes());
        b[8..12].copy_from_slice(&self.encoded_enc_type.to_be_bytes());
        b
    }

    /// Parses the 12 wire bytes.
    pub fn from_bytes(b: &[u8; CLIENT_HELLO_LEN]) -> Self {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        ClientHello {
            rand: w(0),
            seed: w(4),
            encoded_enc_type: w(8),
        }
    }
}

/// The 8 bytes the SN answers, in clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerReply {
    /// The SN's cipher seed.
    pub seed: u32,
    /// The chosen enc type as encoded on the wire.
    pub encoded_enc_type: u32,
}

impl ServerReply {
    /// The 8 wire bytes.
    pub fn to_bytes(&self) -> [u8; SERVER_REPLY_LEN] {
        let mut b = [0u8; SERVER_REPLY_LEN];
        b[0..4].copy_from_slice(&self.seed.to_be_bytes());
        b[4..8].copy_from_slice(&self.encoded_enc_type.to_be_bytes());
        b
    }

    /// Parses the 8 wire bytes.
    pub fn from_bytes(b: &[u8; SERVER_REPLY_LEN]) -> Self {
        let w = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        ServerReply {
            seed: w(0),
            encoded_enc_type: w(4),
        }
    }
}

/// The seeds each direction's cipher starts from: (client→SN, SN→client).
pub fn session_seeds(client_seed: u32, sn_seed: u32) -> (u32, u32) {
    (client_seed ^ sn_seed, sn_seed)
}

/// A network name with its terminating NUL.
pub fn encode_network_name(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 1);
    v.extend_from_slice(name.as_bytes());
    v.push(0);
    v
}

/// Reads a NUL-terminated network name from the start of `buf` (already deciphered).
/// `Ok(None)` means more bytes are needed; returns the name and the bytes consumed.
pub fn decode_network_name(buf: &[u8]) -> Result<Option<(String, usize)>, DecodeError> {
    let mut r = Reader::new(buf);
    match r.cstr("network name", MAX_NETWORK_NAME_LEN) {
        Ok(name) => Ok(Some((
            String::from_utf8_lossy(name).into_owned(),
            name.len() + 1,
        ))),
        Err(DecodeError::Truncated { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The 4 header bytes for `(msg_type, len)` under `xinu`.
pub fn header_bytes(xinu: u32, msg_type: u16, len: u16) -> [u8; HEADER_LEN] {
    let [th, tl] = msg_type.to_be_bytes();
    let [lh, ll] = len.to_be_bytes();
    match xinu % 3 {
        0 => [tl, th, lh, ll],
        1 => [th, lh, tl, ll],
        _ => [th, ll, lh, tl],
    }
}

/// Inverse of [`header_bytes`]: `(msg_type, len)`.
pub fn parse_header(xinu: u32, h: [u8; HEADER_LEN]) -> (u16, u16) {
    let (tl, th, lh, ll) = match xinu % 3 {
        0 => (h[0], h[1], h[2], h[3]),
        1 => (h[2], h[0], h[1], h[3]),
        _ => (h[3], h[0], h[2], h[1]),
    };
    (u16::from_be_bytes([th, tl]), u16::from_be_bytes([lh, ll]))
}

/// The `xinu` after a message of `(msg_type, len)`.
pub fn next_xinu(xinu: u32, msg_type: u16, len: u16) -> u32 {
    xinu ^ !(u32::from(msg_type) + u32::from(len))
}

/// One unit of the framed stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `0x50`.
    Ping,
    /// `0x52`.
    Pong,
    /// `0x4B` + header + body.
    Message {
        /// 16-bit type: low byte the code, high byte the routing flags.
        msg_type: u16,
        /// The body.
        payload: Vec<u8>,
    },
}

/// Writes frames for one direction, keeping that direction's `xinu`. Output is plaintext; the caller
/// passes it through its [`StreamCipher`].
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    xinu: u32,
}

impl Default for FrameEncoder {
    fn default() -> Self {
        FrameEncoder { xinu: XINU_START }
    }
}

impl FrameEncoder {
    /// A fresh encoder (`xinu` = 0x51).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current `xinu`.
    pub fn xinu(&self) -> u32 {
        self.xinu
    }

    /// Appends one frame. Bodies over [`MAX_PAYLOAD`] are refused (the caller split or clipped them).
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match frame {
            Frame::Ping => out.push(BYTE_PING),
            Frame::Pong => out.push(BYTE_PONG),
            Frame::Message { msg_type, payload } => {
                let len = u16::try_from(payload.len()).map_err(|_| DecodeError::TooLong {
                    what: "frame body",
                    len: payload.len(),
                    max: MAX_PAYLOAD,
                })?;
                out.push(BYTE_MESSAGE);
                out.extend_from_slice(&header_bytes(self.xinu, *msg_type, len));
                out.extend_from_slice(payload);
                self.xinu = next_xinu(self.xinu, *msg_type, len);
            }
        }
        Ok(())
    }
}

/// Splits one direction's (deciphered) byte stream into frames, keeping that direction's `xinu`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    xinu: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder { xinu: XINU_START }
    }
}

impl FrameDecoder {
    /// A fresh decoder (`xinu` = 0x51).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current `xinu`.
    pub fn xinu(&self) -> u32 {
        self.xinu
    }

    /// Decodes the first frame of `buf`: `Ok(None)` if it is not complete yet, else the frame and the
    /// bytes it took. Nothing is allocated until the whole body is buffered.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        match first {
            BYTE_PING => Ok(Some((Frame::Ping, 1))),
            BYTE_PONG => Ok(Some((Frame::Pong, 1))),
            BYTE_MESSAGE => {
                if buf.len() < 1 + HEADER_LEN {
                    return Ok(None);
                }
                let h = [buf[1], buf[2], buf[3], buf[4]];
                let (msg_type, len) = parse_header(self.xinu, h);
                let total = 1 + HEADER_LEN + usize::from(len);
                if buf.len() < total {
                    return Ok(None);
                }
                self.xinu = next_xinu(self.xinu, msg_type, len);
                Ok(Some((
                    Frame::Message {
                        msg_type,
                        payload: buf[1 + HEADER_LEN..total].to_vec(),
                    },
                    total,
                )))
            }
            _ => Err(DecodeError::Invalid { what: "frame byte" }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xinu_example_from_section_2() {
        let mut enc = FrameEncoder::new();
        let mut out = Vec::new();
        enc.encode(
            &Frame::Message {
                msg_type: 0x02,
                payload: vec![0; 13],
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[..5], &[0x4B, 0x02, 0x00, 0x00, 0x0d]);
        assert_eq!(enc.xinu(), 0xFFFF_FFA1);
        assert_eq!(enc.xinu() % 3, 2);
        let start = out.len();
        enc.encode(
            &Frame::Message {
                msg_type: 0x22,
                payload: vec![0; 60],
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(&out[start..start + 5], &[0x4B, 0x00, 0x3c, 0x00, 0x22]);

        let mut dec = FrameDecoder::new();
        let (f1, n1) = dec.decode(&out).unwrap().unwrap();
        assert_eq!(
            f1,
            Frame::Message {
                msg_type: 0x02,
                payload: vec![0; 13]
            }
        );
        let (f2, n2) = dec.decode(&out[n1..]).unwrap().unwrap();
        assert_eq!(
            f2,
            Frame::Message {
                msg_type: 0x22,
                payload: vec![0; 60]
            }
        );
        assert_eq!(n1 + n2, out.len());
    }

    #[test]
    fn header_orders_invert() {
        for xinu in 0..3u32 {
            let h = header_bytes(xinu, 0xC00A, 0x1234);
            assert_eq!(parse_header(xinu, h), (0xC00A, 0x1234));
        }
        assert_eq!(header_bytes(1, 0xAABB, 0xCCDD), [0xAA, 0xCC, 0xBB, 0xDD]);
        assert_eq!(header_bytes(2, 0xAABB, 0xCCDD), [0xAA, 0xDD, 0xCC, 0xBB]);
    }

    #[test]
    fn handshake_layout() {
        let hello = ClientHello {
            rand: HELLO_RAND,
            seed: 0xFACB_1238,
            encoded_enc_type: PassThroughCipher::encode_enc_type(0xFACB_1238, DEFAULT_ENC_TYPE),
        };
        let b = hello.to_bytes();
        assert_eq!(
            b,
            [0xFA, 0x00, 0xB6, 0x2B, 0xFA, 0xCB, 0x12, 0x38, 0, 0, 0, 0x29]
        );
        assert_eq!(ClientHello::from_bytes(&b), hello);
        let reply = ServerReply {
            seed: 0x1122_3344,
            encoded_enc_type: choose_enc_type(0x29),
        };
        assert_eq!(reply.to_bytes(), [0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0x29]);
        assert_eq!(ServerReply::from_bytes(&reply.to_bytes()), reply);
        assert_eq!(choose_enc_type(0x00), 0x29);
        assert_eq!(choose_enc_type(0xFF), 0xBF);
        assert_eq!(
            session_seeds(0xFACB_1238, 0x1122_3344),
            (0xFACB_1238 ^ 0x1122_3344, 0x1122_3344)
        );
    }

    #[test]
    fn network_name() {
        assert_eq!(encode_network_name("KaZaA"), b"KaZaA\0");
        assert_eq!(
            decode_network_name(b"KaZaA\0\x4b").unwrap(),
            Some(("KaZaA".into(), 6))
        );
        assert_eq!(decode_network_name(b"KaZ").unwrap(), None);
        assert!(decode_network_name(&[b'a'; 100]).is_err());
    }

    #[test]
    fn ping_pong_and_partial() {
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.decode(&[0x50]).unwrap(), Some((Frame::Ping, 1)));
        assert_eq!(dec.decode(&[0x52, 0x4B]).unwrap(), Some((Frame::Pong, 1)));
        assert_eq!(dec.decode(&[0x4B, 0x00]).unwrap(), None);
        assert_eq!(
            dec.decode(&[0x4B, 0x02, 0x00, 0x00, 0x02, 0xAA]).unwrap(),
            None
        );
        assert_eq!(
            dec.xinu(),
            XINU_START,
            "a partial frame must not advance xinu"
        );
        assert!(dec.decode(&[0x00]).is_err());
    }
}
