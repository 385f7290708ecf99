//! Napster/OpenNap wire codec: pure encode/decode, no I/O (notes §1 "Framing and conventions", OpenNap
//! `napster.txt` "Message format").
//!
//! ```text
//!  0        2        4
//! +--------+--------+---------------------------+
//! | len LE | type LE| payload (len bytes, ASCII) |
//! +--------+--------+---------------------------+
//! ```
//!
//! `len` counts the payload only. Payloads are text without terminator; fields are separated by single spaces
//! and filenames, client names, reasons and topics are wrapped in double quotes without any escaping
//! ([`fields`]). Bytes above 127 (filenames in Latin-1 or UTF-8) are carried through unchanged: payload text
//! is mapped byte-for-char to Latin-1 ([`latin1_decode`]/[`latin1_encode`]), which round-trips every byte.
//! IP fields are decimal little-endian integers ([`ip`]).

pub mod fields;
pub mod ip;
pub mod mp3;
pub mod msg;
pub mod peer;

use bytes::{BufMut, BytesMut};

/// Bytes in a frame header (`len`, `type`).
pub const HEADER_LEN: usize = 4;

/// Largest payload a client may send (OpenNap's `max_command_length` default). A header announcing more
/// makes the server drop the connection before buffering anything.
pub const MAX_CLIENT_PAYLOAD: usize = 2048;

/// Largest payload any frame can carry (the `len` field is a u16); server replies may exceed
/// [`MAX_CLIENT_PAYLOAD`].
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// Why a byte stream is not a valid Napster frame stream. Every variant means "drop this connection":
/// the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header announces a payload above the receiver's limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Announced payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload does not fit the 16-bit length field.
    #[error("payload of {len} bytes does not fit a frame (max {MAX_PAYLOAD})")]
    TooLong {
        /// Payload length.
        len: usize,
    },
}

/// One message: its type number and raw payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message type (`2` login, `200` search, ...).
    pub ty: u16,
    /// Payload bytes, without header.
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} {:?})", self.ty, latin1_decode(&self.payload))
    }
}

impl Frame {
    /// A frame of type `ty` whose payload is `text` (Latin-1 mapped, see [`latin1_encode`]).
    pub fn text(ty: u16, text: &str) -> Frame {
        Frame {
            ty,
            payload: latin1_encode(text),
        }
    }

    /// A frame with an empty payload.
    pub fn empty(ty: u16) -> Frame {
        Frame {
            ty,
            payload: Vec::new(),
        }
    }

    /// The payload as text (lossless Latin-1 mapping).
    pub fn text_payload(&self) -> String {
        latin1_decode(&self.payload)
    }

    /// Bytes this frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Decodes one frame from the front of `buf`, accepting payloads up to `max_payload`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame (read more and call again), or the frame
    /// and the number of bytes it used. The length is checked against `max_payload` as soon as the header
    /// is complete, before the payload is buffered or allocated.
    pub fn decode_with_limit(
        buf: &[u8],
        max_payload: usize,
    ) -> Result<Option<(Frame, usize)>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u16::from_le_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_le_bytes([buf[2], buf[3]]);
        if len > max_payload {
            return Err(DecodeError::TooLong {
                len,
                max: max_payload,
            });
        }
        let total = HEADER_LEN + len;
        if buf.len() < total {
            return Ok(None);
        }
        Ok(Some((
            Frame {
                ty,
                payload: buf[HEADER_LEN..total].to_vec(),
            },
            total,
        )))
    }

    /// [`Frame::decode_with_limit`] with the client limit [`MAX_CLIENT_PAYLOAD`] (what a server accepts).
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, DecodeError> {
        Self::decode_with_limit(buf, MAX_CLIENT_PAYLOAD)
    }

    /// Appends the encoded frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.payload.len();
        if len > MAX_PAYLOAD {
            return Err(EncodeError::TooLong { len });
        }
        dst.reserve(HEADER_LEN + len);
        dst.put_u16_le(len as u16);
        dst.put_u16_le(self.ty);
        dst.put_slice(&self.payload);
        Ok(())
    }

    /// The encoded frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut b = BytesMut::with_capacity(self.wire_len());
        self.encode(&mut b)?;
        Ok(b.to_vec())
    }
}

/// Maps bytes to text one byte per char (Latin-1): lossless for every byte value.
pub fn latin1_decode(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Maps text back to bytes one char per byte; chars above U+00FF (which [`latin1_decode`] never produces)
/// become `?`.
pub fn latin1_encode(text: &str) -> Vec<u8> {
    text.chars().map(latin1_byte).collect()
}

fn latin1_byte(c: char) -> u8 {
    u8::try_from(u32::from(c)).unwrap_or(b'?')
}

/// Several frames for one connection encoded back to back, so they reach the socket as one queue item and
/// one write (a search's 201 results and its 202). Text is appended Latin-1 mapped like [`Frame::text`],
/// formatted in place: no payload is allocated on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameBatch {
    wire: Vec<u8>,
    frames: u32,
}

/// Appends formatted text to a byte buffer, one byte per char (the [`latin1_encode`] mapping).
struct Latin1Sink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Latin1Sink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if s.is_ascii() {
            self.0.extend_from_slice(s.as_bytes());
        } else {
            self.0.extend(s.chars().map(latin1_byte));
        }
        Ok(())
    }
}

impl FrameBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `bytes` of frames (a search reply grows to ~11 KB; reserving once
    /// saves the reallocations on the way).
    pub fn with_capacity(bytes: usize) -> Self {
        FrameBatch {
            wire: Vec::with_capacity(bytes),
            frames: 0,
        }
    }

    /// Makes room for `bytes` more of frames.
    pub fn reserve(&mut self, bytes: usize) {
        self.wire.reserve(bytes);
    }

    /// Appends a frame of type `ty` whose payload is the formatted `text`. A payload above
    /// [`MAX_PAYLOAD`] is refused and leaves the batch as it was.
    pub fn push_fmt(&mut self, ty: u16, text: std::fmt::Arguments<'_>) -> Result<(), EncodeError> {
        self.push_with(ty, |w| {
            w.fmt(text);
        })
    }

    /// Appends a frame of type `ty` whose payload `write` puts in place through a [`PayloadWriter`]:
    /// no formatting machinery, for the hot search reply (52 results per search). A payload above
    /// [`MAX_PAYLOAD`] is refused and leaves the batch as it was.
    pub fn push_with(
        &mut self,
        ty: u16,
        write: impl FnOnce(&mut PayloadWriter<'_>),
    ) -> Result<(), EncodeError> {
        let start = self.wire.len();
        self.wire.extend_from_slice(&[0, 0]);
        self.wire.extend_from_slice(&ty.to_le_bytes());
        write(&mut PayloadWriter(&mut self.wire));
        let len = self.wire.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD {
            self.wire.truncate(start);
            return Err(EncodeError::TooLong { len });
        }
        self.wire[start..start + 2].copy_from_slice(&(len as u16).to_le_bytes());
        self.frames += 1;
        Ok(())
    }

    /// Number of frames in the batch.
    pub fn len(&self) -> usize {
        self.frames as usize
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The encoded frames, ready to write.
    pub fn as_bytes(&self) -> &[u8] {
        &self.wire
    }

    /// Type and wire length of every frame, in order (for per-type stats without decoding payloads).
    pub fn headers(&self) -> impl Iterator<Item = (u16, usize)> + '_ {
        let mut rest = &self.wire[..];
        std::iter::from_fn(move || {
            if rest.len() < HEADER_LEN {
                return None;
            }
            let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let ty = u16::from_le_bytes([rest[2], rest[3]]);
            let used = (HEADER_LEN + len).min(rest.len());
            rest = &rest[used..];
            Some((ty, used))
        })
    }

    /// The frames decoded back (for tests and tools; the node writes [`FrameBatch::as_bytes`]).
    pub fn frames(&self) -> Vec<Frame> {
        let mut out = Vec::with_capacity(self.len());
        let mut rest = &self.wire[..];
        while let Ok(Some((f, used))) = Frame::decode_with_limit(rest, MAX_PAYLOAD) {
            out.push(f);
            rest = &rest[used..];
        }
        out
    }
}

/// Appends payload text to a [`FrameBatch`] frame, Latin-1 mapped like [`Frame::text`].
pub struct PayloadWriter<'a>(&'a mut Vec<u8>);

impl PayloadWriter<'_> {
    /// Text, one byte per char (the [`latin1_encode`] mapping).
    pub fn text(&mut self, s: &str) -> &mut Self {
        if s.is_ascii() {
            self.0.extend_from_slice(s.as_bytes());
        } else {
            self.0.extend(s.chars().map(latin1_byte));
        }
        self
    }

    /// Raw bytes (already ASCII or Latin-1).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }

    /// Formatted text, Latin-1 mapped (for the rare fields that only have a `Display`).
    pub fn fmt(&mut self, text: std::fmt::Arguments<'_>) -> &mut Self {
        // Writing into a Vec cannot fail.
        let _ = std::fmt::Write::write_fmt(&mut Latin1Sink(self.0), text);
        self
    }

    /// One byte.
    pub fn byte(&mut self, b: u8) -> &mut Self {
        self.0.push(b);
        self
    }

    /// A number in decimal, as `Display` writes it.
    pub fn num(&mut self, n: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&digits[i..]);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_length_frame_is_valid() {
        let (f, used) = Frame::decode(&[0, 0, 214, 0]).unwrap().unwrap();
        assert_eq!((f.ty, f.payload.len(), used), (214, 0, 4));
    }

    #[test]
    fn oversized_header_is_rejected_before_payload_arrives() {
        // 5000 = 0x1388 announced, nothing else buffered yet.
        let err = Frame::decode(&[0x88, 0x13, 2, 0]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLong {
                len: 5000,
                max: MAX_CLIENT_PAYLOAD
            }
        );
    }

    #[test]
    fn split_and_packed_frames() {
        let a = Frame::text(2, "nick pass 6699 \"client\" 4");
        let b = Frame::empty(214);
        let mut wire = a.to_bytes().unwrap();
        wire.extend(b.to_bytes().unwrap());
        // Every split point: the first part alone is incomplete or a whole first frame.
        for cut in 0..wire.len() {
            let first = Frame::decode(&wire[..cut]).unwrap();
            if cut < a.wire_len() {
                assert!(first.is_none(), "cut {cut}");
            }
        }
        let (f1, n1) = Frame::decode(&wire).unwrap().unwrap();
        let (f2, n2) = Frame::decode(&wire[n1..]).unwrap().unwrap();
        assert_eq!((f1, f2, n1 + n2), (a, b, wire.len()));
    }

    #[test]
    fn latin1_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(latin1_encode(&latin1_decode(&all)), all);
    }

    #[test]
    fn push_with_matches_push_fmt() {
        let mut a = FrameBatch::new();
        let mut b = FrameBatch::new();
        for n in [0u64, 7, 10, 99, 1_000_001, u64::MAX] {
            a.push_fmt(201, format_args!("\"caf\u{e9}\\x.mp3\" {n} z"))
                .unwrap();
            b.push_with(201, |w| {
                w.byte(b'"')
                    .text("caf\u{e9}\\x.mp3")
                    .bytes(b"\" ")
                    .num(n)
                    .text(" z");
            })
            .unwrap();
        }
        assert_eq!(a, b);
        let big = "x".repeat(MAX_PAYLOAD + 1);
        assert!(b
            .push_with(201, |w| {
                w.text(&big);
            })
            .is_err());
        assert_eq!(a, b);
    }

    proptest! {
        #[test]
        fn push_with_num_is_display(n in any::<u64>(), s in ".{0,40}") {
            let mut a = FrameBatch::new();
            let mut b = FrameBatch::new();
            a.push_fmt(201, format_args!("{s} {n}")).unwrap();
            b.push_with(201, |w| { w.text(&s).byte(b' ').num(n); }).unwrap();
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn batch_matches_frames_encoded_one_by_one() {
        let mut b = FrameBatch::new();
        b.push_fmt(201, format_args!("\"{}\" {}", "caf\u{e9}\\x.mp3", 7))
            .unwrap();
        b.push_fmt(202, format_args!("")).unwrap();
        let a = Frame::text(201, "\"caf\u{e9}\\x.mp3\" 7");
        let mut wire = a.to_bytes().unwrap();
        wire.extend(Frame::empty(202).to_bytes().unwrap());
        assert_eq!(b.as_bytes(), &wire[..]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.frames(), vec![a.clone(), Frame::empty(202)]);
        let heads: Vec<_> = b.headers().collect();
        assert_eq!(heads, vec![(201, a.wire_len()), (202, HEADER_LEN)]);
    }

    #[test]
    fn batch_refuses_oversized_payload_and_keeps_the_rest() {
        let mut b = FrameBatch::new();
        b.push_fmt(201, format_args!("ok")).unwrap();
        let big = "x".repeat(MAX_PAYLOAD + 1);
        assert_eq!(
            b.push_fmt(201, format_args!("{big}")),
            Err(EncodeError::TooLong {
                len: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(b.frames(), vec![Frame::text(201, "ok")]);
        assert_eq!(b.len(), 1);
    }

    proptest! {
        #[test]
        fn batch_round_trip(frames in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
            let mut b = FrameBatch::new();
            let want: Vec<Frame> = frames.into_iter().map(|(ty, payload)| Frame { ty, payload }).collect();
            for f in &want {
                b.push_fmt(f.ty, format_args!("{}", latin1_decode(&f.payload))).unwrap();
            }
            prop_assert_eq!(b.len(), want.len());
            prop_assert_eq!(b.headers().count(), want.len());
            prop_assert_eq!(b.frames(), want);
        }

        #[test]
        fn frame_round_trip(ty in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let f = Frame { ty, payload };
            let wire = f.to_bytes().unwrap();
            let (back, used) = Frame::decode_with_limit(&wire, MAX_PAYLOAD).unwrap().unwrap();
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(back, f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut rest = &bytes[..];
            // Walk the buffer the way the node does; every outcome must be Ok(None), a frame, or an error.
            while let Ok(Some((f, used))) = Frame::decode(rest) {
                prop_assert!(f.payload.len() <= MAX_CLIENT_PAYLOAD);
                prop_assert!(used >= HEADER_LEN);
                rest = &rest[used..];
            }
        }
    }
}
