//! Query Routing Protocol (QRP 0.1, LimeWire's "Query Routing for the Gnutella Network" and the notes §4):
//! the keyword hash, building a table from file names and SHA-1s, encoding it as RESET + zlib PATCH chunks
//! (4- or 8-bit entries), and the receiving side that rebuilds a peer's table from those messages.

use std::io::Write;

use flate2::write::ZlibEncoder;

use super::ggep::inflate_bounded;
use super::message::{Extensions, Query, RouteTableUpdate};

/// The multiplier of the QRP hash.
pub const QRP_MULT: u32 = 0x4F1B_BCDC;
/// LimeWire's default table size (64 Ki slots).
pub const DEFAULT_TABLE_LEN: u32 = 1 << 16;
/// Smallest table accepted.
pub const MIN_TABLE_LEN: u32 = 8;
/// Largest table accepted (gtk-gnutella's maximum, 2^21 slots).
pub const MAX_TABLE_LEN: u32 = 1 << 21;
/// LimeWire's "infinity".
pub const DEFAULT_INFINITY: u8 = 7;
/// Data bytes per PATCH chunk: stays under 4 KiB of payload so tshark still decodes the descriptor.
pub const MAX_PATCH_DATA: usize = 4000;

/// The QRP hash of `word` into a table of `2^bits` slots.
pub fn hash(word: &str, bits: u32) -> u32 {
    let mut x: u32 = 0;
    for (i, b) in word.bytes().enumerate() {
        x ^= (b.to_ascii_lowercase() as u32) << ((i % 4) * 8);
    }
    hash_fast(x, bits)
}

fn hash_fast(x: u32, bits: u32) -> u32 {
    if bits == 0 {
        return 0;
    }
    x.wrapping_mul(QRP_MULT) >> (32 - bits.min(32))
}

/// Splits text into lower-case alphanumeric words.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The keywords a file name puts in a table: its words, plus (LimeWire) each word longer than 4 characters
/// with its last 1 and 2 characters cut off, so a query for a prefix still routes.
pub fn name_keywords(name: &str) -> Vec<String> {
    let mut v = Vec::new();
    for w in words(name) {
        let chars: Vec<char> = w.chars().collect();
        if chars.len() > 4 {
            v.push(chars[..chars.len() - 1].iter().collect());
            v.push(chars[..chars.len() - 2].iter().collect());
        }
        v.push(w);
    }
    v
}

/// Why a peer's route-table update was refused (answer BYE 413 and close).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QrpError {
    /// PATCH before any RESET.
    #[error("PATCH without a RESET")]
    NoReset,
    /// Table length not a power of two within limits.
    #[error("bad table length {0}")]
    BadTableLen(u32),
    /// Infinity of 0.
    #[error("bad infinity {0}")]
    BadInfinity(u8),
    /// Chunk out of order or sequence parameters changed.
    #[error("PATCH out of sequence: expected {expected}, got {got}")]
    BadSequence {
        /// Expected seq_no.
        expected: u8,
        /// Received seq_no.
        got: u8,
    },
    /// Entry bits not 1, 2, 4 or 8.
    #[error("bad entry bits {0}")]
    BadEntryBits(u8),
    /// Compressor not 0 or 1.
    #[error("bad compressor {0}")]
    BadCompressor(u8),
    /// The zlib stream is corrupt or too long.
    #[error("bad zlib stream")]
    Inflate,
    /// The patch stream did not have `table_len * bits / 8` bytes.
    #[error("patch has {got} bytes, table needs {want}")]
    WrongSize {
        /// Needed.
        want: usize,
        /// Got.
        got: usize,
    },
}

/// A QRP table: which slots are "present".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QrpTable {
    bits: u32,
    present: Vec<bool>,
}

impl QrpTable {
    /// An empty table of `len` slots (a power of two ≥ [`MIN_TABLE_LEN`]).
    pub fn new(len: u32) -> QrpTable {
        assert!(len.is_power_of_two() && len >= MIN_TABLE_LEN);
        QrpTable {
            bits: len.trailing_zeros(),
            present: vec![false; len as usize],
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// Always false (a table has at least [`MIN_TABLE_LEN`] slots); present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// Number of present slots.
    pub fn count(&self) -> usize {
        self.present.iter().filter(|&&p| p).count()
    }

    /// Marks `word` present.
    pub fn insert(&mut self, word: &str) {
        let i = hash(word, self.bits) as usize;
        self.present[i] = true;
    }

    /// Whether `word` hashes to a present slot.
    pub fn contains(&self, word: &str) -> bool {
        self.present[hash(word, self.bits) as usize]
    }

    /// A table holding the keywords of `names` and the `urn:sha1:` strings of `sha1s`.
    pub fn build<'a>(
        len: u32,
        names: impl IntoIterator<Item = &'a str>,
        sha1s: impl IntoIterator<Item = [u8; 20]>,
    ) -> QrpTable {
        let mut t = QrpTable::new(len);
        for n in names {
            for k in name_keywords(n) {
                t.insert(&k);
            }
        }
        for s in sha1s {
            t.insert(&super::message::sha1_urn(&s));
        }
        t
    }

    /// Marks every slot of `self` that `other` (of any size) has present. Indices are the top bits of the
    /// hash, so shrinking is exact and growing marks every slot the source slot covers.
    pub fn merge(&mut self, other: &QrpTable) {
        let (a, b) = (self.bits, other.bits);
        for (i, _) in other.present.iter().enumerate().filter(|(_, &p)| p) {
            if b >= a {
                self.present[i >> (b - a)] = true;
            } else {
                let span = 1usize << (a - b);
                self.present[i * span..(i + 1) * span].fill(true);
            }
        }
    }

    /// Whether a query may match: one URN hit is enough; otherwise every keyword must hit (LimeWire's rule).
    /// A query with neither keywords nor URNs matches nothing.
    pub fn matches(&self, q: &Query) -> bool {
        if self.matches_urns(&q.ext) {
            return true;
        }
        let ws = words(&q.criteria);
        !ws.is_empty() && ws.iter().all(|w| self.contains(w))
    }

    fn matches_urns(&self, ext: &Extensions) -> bool {
        ext.sha1s()
            .iter()
            .any(|s| self.contains(&super::message::sha1_urn(s)))
    }

    /// Encodes the table as RESET + zlib PATCH chunks with `entry_bits` (4 or 8) per slot.
    pub fn to_updates(&self, entry_bits: u8, infinity: u8) -> Vec<RouteTableUpdate> {
        assert!(entry_bits == 4 || entry_bits == 8);
        let delta = 1i16 - infinity as i16;
        let mut raw = Vec::with_capacity(self.len() * entry_bits as usize / 8);
        if entry_bits == 8 {
            raw.extend(
                self.present
                    .iter()
                    .map(|&p| if p { delta as u8 } else { 0 }),
            );
        } else {
            let nib = (delta as u8) & 0x0F;
            for pair in self.present.chunks(2) {
                let hi = if pair[0] { nib } else { 0 };
                let lo = if pair.get(1) == Some(&true) { nib } else { 0 };
                raw.push(hi << 4 | lo);
            }
        }
        let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).expect("writing to a Vec cannot fail");
        let z = z.finish().expect("writing to a Vec cannot fail");
        let chunk = MAX_PATCH_DATA.max(z.len().div_ceil(255));
        let chunks: Vec<&[u8]> = z.chunks(chunk).collect();
        let mut v = vec![RouteTableUpdate::Reset {
            table_len: self.len() as u32,
            infinity,
        }];
        for (i, c) in chunks.iter().enumerate() {
            v.push(RouteTableUpdate::Patch {
                seq_no: (i + 1) as u8,
                seq_size: chunks.len() as u8,
                compressor: 1,
                entry_bits,
                data: c.to_vec(),
            });
        }
        v
    }
}

#[derive(Debug)]
struct Sequence {
    seq_size: u8,
    next: u8,
    compressor: u8,
    bits: u8,
    buf: Vec<u8>,
}

/// Rebuilds a peer's table from its RESET/PATCH messages.
#[derive(Debug, Default)]
pub struct QrpReceiver {
    values: Vec<i8>,
    infinity: u8,
    seq: Option<Sequence>,
    table: Option<QrpTable>,
}

impl QrpReceiver {
    /// The last complete table, if a whole sequence has arrived.
    pub fn table(&self) -> Option<&QrpTable> {
        self.table.as_ref()
    }

    /// Applies one update. Returns `Ok(true)` when it completed a table.
    pub fn handle(&mut self, upd: &RouteTableUpdate) -> Result<bool, QrpError> {
        match upd {
            RouteTableUpdate::Reset {
                table_len,
                infinity,
            } => {
                let len = *table_len;
                if !len.is_power_of_two() || !(MIN_TABLE_LEN..=MAX_TABLE_LEN).contains(&len) {
                    return Err(QrpError::BadTableLen(len));
                }
                if *infinity == 0 || *infinity > 127 {
                    return Err(QrpError::BadInfinity(*infinity));
                }
                self.values = vec![*infinity as i8; len as usize];
                self.infinity = *infinity;
                self.seq = None;
                self.table = Some(QrpTable::new(len));
                Ok(false)
            }
            RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            } => {
                if self.values.is_empty() {
                    return Err(QrpError::NoReset);
                }
                if ![1, 2, 4, 8].contains(entry_bits) {
                    return Err(QrpError::BadEntryBits(*entry_bits));
                }
                if *compressor > 1 {
                    return Err(QrpError::BadCompressor(*compressor));
                }
                let want = self.values.len() * *entry_bits as usize / 8;
                if *seq_no == 1 {
                    self.seq = Some(Sequence {
                        seq_size: *seq_size,
                        next: 1,
                        compressor: *compressor,
                        bits: *entry_bits,
                        buf: Vec::new(),
                    });
                }
                let expected = self.seq.as_ref().map_or(1, |s| s.next);
                let seq = match self.seq.as_mut() {
                    Some(s)
                        if s.next == *seq_no
                            && s.seq_size == *seq_size
                            && s.compressor == *compressor
                            && s.bits == *entry_bits
                            && *seq_no <= *seq_size =>
                    {
                        s
                    }
                    _ => {
                        self.seq = None;
                        return Err(QrpError::BadSequence {
                            expected,
                            got: *seq_no,
                        });
                    }
                };
                // Bound what we buffer: a compressed stream is never much larger than the raw table.
                if seq.buf.len() + data.len() > want + 64 * 1024 {
                    self.seq = None;
                    return Err(QrpError::WrongSize {
                        want,
                        got: usize::MAX,
                    });
                }
                seq.buf.extend_from_slice(data);
                seq.next = seq.next.wrapping_add(1);
                if *seq_no < *seq_size {
                    return Ok(false);
                }
                let seq = self.seq.take().expect("checked above");
                let raw = if seq.compressor == 1 {
                    inflate_bounded(&seq.buf, want).map_err(|_| QrpError::Inflate)?
                } else {
                    seq.buf
                };
                if raw.len() != want {
                    return Err(QrpError::WrongSize {
                        want,
                        got: raw.len(),
                    });
                }
                self.apply(&raw, seq.bits);
                Ok(true)
            }
        }
    }

    fn apply(&mut self, raw: &[u8], bits: u8) {
        let per_byte = 8 / bits as usize;
        let mask = (1u16 << bits) - 1;
        let sign = 1u16 << (bits - 1);
        for (i, v) in self.values.iter_mut().enumerate() {
            let byte = raw[i / per_byte] as u16;
            let shift = 8 - bits as usize * (i % per_byte + 1);
            let e = (byte >> shift) & mask;
            let d = if e & sign != 0 {
                e as i16 - (1i16 << bits)
            } else {
                e as i16
            };
            *v = (*v as i16 + d).clamp(-128, 127) as i8;
        }
        let inf = self.infinity as i8;
        let mut t = QrpTable::new(self.values.len() as u32);
        for (p, v) in t.present.iter_mut().zip(&self.values) {
            *p = *v < inf;
        }
        self.table = Some(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_vectors_from_the_spec() {
        assert_eq!(hash("", 13), 0);
        assert_eq!(hash("eb", 13), 6791);
        assert_eq!(hash("ebcklmenq", 13), 3527);
        assert_eq!(hash("n", 16), 65003);
        assert_eq!(hash("ndflaleme", 16), 45559);
        assert_eq!(hash("ol2j34lj", 10), 318);
        assert_eq!(hash("3NJA9", 10), 581);
        assert_eq!(hash("test", 3), 2);
        assert_eq!(hash("qrp", 3), 7);
    }

    #[test]
    fn spec_example_eight_slots_four_bits() {
        let mut t = QrpTable::new(8);
        t.insert("test");
        let u = t.to_updates(4, 7);
        assert_eq!(
            u[0],
            RouteTableUpdate::Reset {
                table_len: 8,
                infinity: 7
            }
        );
        let RouteTableUpdate::Patch { data, .. } = &u[1] else {
            panic!()
        };
        assert_eq!(
            inflate_bounded(data, 4).unwrap(),
            vec![0x00, 0xa0, 0x00, 0x00]
        );
        // The notes' zlib form decodes to the same table.
        let mut r = QrpReceiver::default();
        r.handle(&u[0]).unwrap();
        let spec = RouteTableUpdate::Patch {
            seq_no: 1,
            seq_size: 1,
            compressor: 1,
            entry_bits: 4,
            data: vec![
                0x78, 0x9c, 0x63, 0x58, 0xc0, 0xc0, 0x00, 0x00, 0x01, 0xe4, 0x00, 0xa1,
            ],
        };
        assert!(r.handle(&spec).unwrap());
        assert_eq!(r.table(), Some(&t));
    }

    fn round_trip(t: &QrpTable, bits: u8) -> QrpTable {
        let mut r = QrpReceiver::default();
        let ups = t.to_updates(bits, DEFAULT_INFINITY);
        let n = ups.len();
        for (i, u) in ups.iter().enumerate() {
            assert_eq!(r.handle(u).unwrap(), i + 1 == n && n > 1);
        }
        r.table().unwrap().clone()
    }

    #[test]
    fn multi_chunk_tables_at_4_and_8_bits() {
        // A big table of pseudo-random words compresses badly enough to need several chunks.
        let names: Vec<String> = (0..20_000u32)
            .map(|i| format!("w{}", i.wrapping_mul(2654435761)))
            .collect();
        let t = QrpTable::build(1 << 16, names.iter().map(String::as_str), []);
        for bits in [4, 8] {
            let ups = t.to_updates(bits, 7);
            assert!(ups.len() > 2, "{bits}-bit table should need several chunks");
            assert_eq!(round_trip(&t, bits), t);
        }
    }

    #[test]
    fn merging_tables_of_other_sizes_keeps_every_word() {
        let small = QrpTable::build(1 << 10, ["alpha beta"], []);
        let big = QrpTable::build(1 << 16, ["gamma delta"], []);
        let mut m = QrpTable::new(1 << 13);
        m.merge(&small);
        m.merge(&big);
        for w in ["alpha", "beta", "gamma", "delta"] {
            assert!(m.contains(w), "{w}");
        }
    }

    #[test]
    fn matching_rules() {
        let sha = [5u8; 20];
        let t = QrpTable::build(DEFAULT_TABLE_LEN, ["Hello World.mp3", "probe.txt"], [sha]);
        assert!(t.matches(&Query::new("hello", false)));
        assert!(t.matches(&Query::new("world hello", false)));
        assert!(t.matches(&Query::new("hell", false)), "LimeWire truncation");
        assert!(!t.matches(&Query::new("zzzunmatched", false)));
        assert!(!t.matches(&Query::new("hello zzzunmatched", false)));
        assert!(!t.matches(&Query::new("", false)));
        let mut q = Query::new("", false);
        q.ext.huge.push(super::super::message::sha1_urn(&sha));
        assert!(t.matches(&q));
    }

    #[test]
    fn receiver_refuses_bad_input() {
        let mut r = QrpReceiver::default();
        let patch =
            |seq_no, seq_size, compressor, entry_bits, data: Vec<u8>| RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            };
        assert_eq!(
            r.handle(&patch(1, 1, 0, 8, vec![0; 8])),
            Err(QrpError::NoReset)
        );
        for len in [0, 6, 4, 1 << 22] {
            assert!(r
                .handle(&RouteTableUpdate::Reset {
                    table_len: len,
                    infinity: 7
                })
                .is_err());
        }
        r.handle(&RouteTableUpdate::Reset {
            table_len: 8,
            infinity: 7,
        })
        .unwrap();
        assert_eq!(
            r.handle(&patch(2, 2, 0, 8, vec![0; 4])),
            Err(QrpError::BadSequence {
                expected: 1,
                got: 2
            })
        );
        assert!(r.handle(&patch(1, 2, 0, 8, vec![0; 4])).is_ok());
        assert_eq!(
            r.handle(&patch(3, 2, 0, 8, vec![0; 4])),
            Err(QrpError::BadSequence {
                expected: 2,
                got: 3
            })
        );
        assert_eq!(
            r.handle(&patch(1, 1, 0, 3, vec![0; 3])),
            Err(QrpError::BadEntryBits(3))
        );
        assert_eq!(
            r.handle(&patch(1, 1, 2, 8, vec![0; 8])),
            Err(QrpError::BadCompressor(2))
        );
        assert_eq!(
            r.handle(&patch(1, 1, 0, 8, vec![0; 7])),
            Err(QrpError::WrongSize { want: 8, got: 7 })
        );
        assert_eq!(
            r.handle(&patch(1, 1, 1, 8, vec![1, 2, 3])),
            Err(QrpError::Inflate)
        );
        // Uncompressed 8-bit patch marking slot 2.
        assert_eq!(
            r.handle(&patch(1, 1, 0, 8, vec![0, 0, 0xFA, 0, 0, 0, 0, 0])),
            Ok(true)
        );
        assert_eq!(r.table().unwrap().count(), 1);
    }

    proptest! {
        #[test]
        fn table_round_trip(words in proptest::collection::vec("[a-z0-9]{1,12}", 0..60), bits in prop_oneof![Just(4u8), Just(8u8)], lg in 3u32..12) {
            let t = QrpTable::build(1 << lg, words.iter().map(String::as_str), []);
            prop_assert_eq!(round_trip(&t, bits), t);
        }

        #[test]
        fn arbitrary_patches_never_panic(data in proptest::collection::vec(any::<u8>(), 0..100), h in any::<[u8; 4]>()) {
            let mut r = QrpReceiver::default();
            r.handle(&RouteTableUpdate::Reset { table_len: 64, infinity: 7 }).unwrap();
            let _ = r.handle(&RouteTableUpdate::Patch { seq_no: h[0], seq_size: h[1], compressor: h[2] % 3, entry_bits: h[3] % 9, data });
        }
    }
}
