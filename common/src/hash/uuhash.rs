//! KaZaA / FastTrack ContentHash ("UUHash") and its 14-bit file id.
//!
//! Implements `shared/protocols/kazaa.md` §3, which follows giFT-FastTrack's `fst_hash.c` (the only
//! description that reproduces the reference vectors):
//!
//! 1. bytes 0–15: MD5 of the first `min(n, 300 KiB)` bytes (the "head");
//! 2. a CRC-32 register (zlib's reflected polynomial, start `0xFFFFFFFF`, **no** final inversion) is fed,
//!    in file order, the 300 KiB samples at offsets 1, 2, 4, 8 … MiB that end at or before the tail starts,
//!    and then the tail (the last `min(n - 300 KiB, 300 KiB)` bytes, which never overlaps the head);
//! 3. the register XOR `n mod 2^32` is stored little-endian in bytes 16–19.
//!
//! A sample that would overlap the tail is dropped whole (giFT's code and vectors), not partly hashed
//! (the PROTOCOL prose); a sample ending exactly at the tail start is kept.
//!
//! The hasher is streaming: it is told `n` up front (the sample positions depend on it) and then fed the
//! whole content in any chunking; it only looks at the bytes it needs.

use std::io::{self, Read, Seek, SeekFrom};

use super::md5fast::Md5;

use super::UuHash;

/// Size of the head (MD5), of each sample and of the tail (CRC-32): 300 KiB.
pub const UUHASH_CHUNK: u64 = 307_200;

/// Offset of the first sample (1 MiB); later samples double the offset.
pub const UUHASH_FIRST_SAMPLE: u64 = 1 << 20;

/// Bits kept of the CRC-16 to make the FastTrack file id (14 bits).
pub const FILE_ID_MASK: u16 = 0x3FFF;

/// The byte ranges `[start, end)` whose bytes feed the CRC-32, in file order (samples, then the tail).
pub fn crc_ranges(total_len: u64) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    if total_len <= UUHASH_CHUNK {
        return ranges;
    }
    let tail_len = (total_len - UUHASH_CHUNK).min(UUHASH_CHUNK);
    let tail_start = total_len - tail_len;
    let mut off = UUHASH_FIRST_SAMPLE;
    // `checked_add` keeps absurd lengths near u64::MAX from wrapping into a bogus sample.
    while let Some(end) = off.checked_add(UUHASH_CHUNK) {
        if end > tail_start {
            break;
        }
        ranges.push((off, end));
        match off.checked_mul(2) {
            Some(next) => off = next,
            None => break,
        }
    }
    ranges.push((tail_start, total_len));
    ranges
}

/// Streaming UUHash over content of a length known up front.
#[derive(Clone)]
pub struct UuHasher {
    total_len: u64,
    pos: u64,
    head: Md5,
    crc: crc32fast::Hasher,
    /// Remaining CRC ranges, in order; `next_range` indexes the first one not fully consumed.
    ranges: Vec<(u64, u64)>,
    next_range: usize,
}

impl UuHasher {
    /// A hasher for exactly `total_len` bytes.
    pub fn new(total_len: u64) -> Self {
        UuHasher {
            total_len,
            pos: 0,
            head: Md5::new(),
            crc: crc32fast::Hasher::new(),
            ranges: crc_ranges(total_len),
            next_range: 0,
        }
    }

    /// Feeds the next bytes of the content.
    pub fn update(&mut self, data: &[u8]) {
        let start = self.pos;
        let end = start + data.len() as u64;
        self.pos = end;

        let head_end = self.total_len.min(UUHASH_CHUNK);
        if start < head_end {
            let stop = end.min(head_end);
            self.head.update(&data[..(stop - start) as usize]);
        }

        while let Some(&(r_start, r_end)) = self.ranges.get(self.next_range) {
            if r_start >= end {
                break;
            }
            let from = r_start.max(start);
            let to = r_end.min(end);
            if from < to {
                self.crc
                    .update(&data[(from - start) as usize..(to - start) as usize]);
            }
            if r_end <= end {
                self.next_range += 1;
            } else {
                break;
            }
        }
    }

    /// Number of bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Finishes; the caller must have fed exactly `total_len` bytes.
    pub fn finish(self) -> UuHash {
        debug_assert_eq!(self.pos, self.total_len, "UUHash fed a different length");
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(&self.head.finalize());
        // crc32fast computes zlib's crc32 (init and final inversion); giFT's register skips the final
        // inversion, which is the same as complementing zlib's chained result.
        let reg = !self.crc.finalize() ^ (self.total_len as u32);
        out[16..].copy_from_slice(&reg.to_le_bytes());
        UuHash(out)
    }
}

/// UUHash of `total_len` bytes of a seekable source, reading only the head, the samples and the tail
/// (at most 300 KiB × (2 + log2(n / 1 MiB)) bytes: 0.5% of a 700 MiB file).
pub fn uuhash_seek<R: Read + Seek>(reader: &mut R, total_len: u64) -> io::Result<UuHash> {
    let mut h = UuHasher::new(total_len);
    let head_len = total_len.min(UUHASH_CHUNK);
    let mut buf = vec![0u8; UUHASH_CHUNK as usize];
    reader.seek(SeekFrom::Start(0))?;
    reader.read_exact(&mut buf[..head_len as usize])?;
    h.head.update(&buf[..head_len as usize]);
    for &(start, end) in &h.ranges {
        let chunk = &mut buf[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(chunk)?;
        h.crc.update(chunk);
    }
    h.next_range = h.ranges.len();
    h.pos = total_len;
    Ok(h.finish())
}

/// UUHash of an in-memory buffer.
pub fn uuhash(data: &[u8]) -> UuHash {
    let mut h = UuHasher::new(data.len() as u64);
    h.update(data);
    h.finish()
}

/// CRC-16/XMODEM (poly 0x1021, init 0, not reflected, no final XOR). Twenty bytes at a time, so a
/// bitwise loop is plenty.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl UuHash {
    /// The 14-bit FastTrack file id sent beside the hash in messages 0x22/0x07 and legacy
    /// `GET /<id>/<name>` URLs: CRC-16/XMODEM of the 20 bytes, masked to 14 bits.
    pub fn file_id(&self) -> u16 {
        crc16_xmodem(&self.0) & FILE_ID_MASK
    }

    /// The 16-byte MD5 of the head.
    pub fn head_md5(&self) -> [u8; 16] {
        let mut h = [0u8; 16];
        h.copy_from_slice(&self.0[..16]);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_reader_equals_streaming() {
        for n in [0usize, 3, 307_200, 307_201, 1_662_976, 2_097_152 + 5] {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut cur = io::Cursor::new(&data);
            assert_eq!(
                uuhash_seek(&mut cur, n as u64).unwrap(),
                uuhash(&data),
                "n = {n}"
            );
        }
        let mut short = io::Cursor::new(vec![0u8; 10]);
        assert!(uuhash_seek(&mut short, 400_000).is_err());
    }

    #[test]
    fn crc16_xmodem_check_value() {
        // The catalogue check value of CRC-16/XMODEM.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    #[test]
    fn ranges_follow_the_notes() {
        assert!(crc_ranges(0).is_empty());
        assert!(crc_ranges(UUHASH_CHUNK).is_empty());
        assert_eq!(crc_ranges(307_201), vec![(307_200, 307_201)]);
        // 1,355,776 = 1 MiB + 300 KiB - 1024: the 1 MiB sample would overlap the tail, so it is dropped.
        assert_eq!(crc_ranges(1_355_776), vec![(1_048_576, 1_355_776)]);
        // Boundary: 2^0 MiB + 600 KiB: the sample ends exactly at the tail start and is kept.
        assert_eq!(
            crc_ranges(1_662_976),
            vec![(1_048_576, 1_355_776), (1_355_776, 1_662_976)]
        );
        let r = crc_ranges(5 << 20);
        assert_eq!(r.len(), 4);
        assert_eq!(r[2], (4 << 20, (4 << 20) + UUHASH_CHUNK));
        // Huge lengths terminate and stay sorted and disjoint.
        let r = crc_ranges(u64::MAX);
        assert!(r.windows(2).all(|w| w[0].1 <= w[1].0));
    }
}
