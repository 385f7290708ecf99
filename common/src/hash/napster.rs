//! The MD5 Napster clients put in share messages (OpenNap `napster.txt`, messages 100 "client notification
//! of shared file" and 870 "share many files from one directory", and echoed back in 201/204/212/501).
//!
//! # Which bytes it covers, and why
//!
//! The field is not the MD5 of the whole file. Hashing whole MP3s on 1999 disks and CPUs was too slow, so
//! the clients hash only the beginning of the *audio*, and skip the ID3v2 tag at the front so that
//! re-tagging a song does not change its identity. OpenNap's `napster.txt` (§3 "MD5", drscholl, 2000)
//! records what was observed of the official Windows client:
//!
//! - "the vast majority of the files are hashed using the first 299,008 bytes" (292 KiB); some match at
//!   300,032 bytes, with no known pattern;
//! - "the current method seems to be: skip id3v2, seek to frame sync and hash";
//! - the Linux `nap` client 0.7–0.9 hashed exactly 300,000 bytes from the start, unlike Windows.
//!
//! Lincoln Stein's `MP3::Napster` (Perl, 2000) lists the same three lengths, all marked "(?)", and also
//! skips the ID3v2 tag. We follow the majority behaviour: skip a valid ID3v2 tag (header, body and
//! footer), then skip to the first valid MPEG audio frame header, then hash at most
//! [`NAPSTER_MD5_LEN`] bytes. If no frame header appears within [`FRAME_SYNC_SEARCH`] bytes after the tag
//! (not an MP3), the bytes after the tag are hashed as they are, so any file gets a stable value.
//!
//! OpenNap never checks the value: it stores and echoes it (only when built with its resume option;
//! otherwise it sends 32 zeros), so what matters is that our nodes agree, so that "resume by md5"
//! (215/216) finds the same song. An ID3v1 tag (the last 128 bytes) is not skipped by any recorded
//! client, so it is hashed like the rest when it falls inside the window.
//!
//! ID3v2 header (id3.org, ID3v2.4 §3.1): `"ID3"`, version (2 bytes, neither `0xFF`), flags (1 byte), size
//! (4 bytes of 7 bits, a "syncsafe" integer counting the bytes after the 10-byte header); flag `0x10`
//! announces a 10-byte footer. A header that breaks these rules is not a tag. MPEG audio frame header
//! (ISO 11172-3 §2.4.2.3): 11 set sync bits, then version, layer, bitrate and sample-rate fields of which
//! the reserved values (version `01`, layer `00`, bitrate `1111`, sample rate `11`) are refused, so stray
//! `FF Ex` bytes are not taken for a frame.

use super::md5fast::Md5;

use super::Md5Digest;

/// Number of bytes hashed after the ID3v2 tag (OpenNap's recommendation, 292 KiB).
pub const NAPSTER_MD5_LEN: u64 = 299_008;

/// Size of an ID3v2 header, and of its optional footer.
pub const ID3V2_HEADER_LEN: usize = 10;

/// How far past the ID3v2 tag we look for the first MPEG frame header before giving up (bounds the
/// buffering of the streaming hasher).
pub const FRAME_SYNC_SEARCH: usize = 64 * 1024;

/// True if the 4 bytes are a plausible MPEG audio frame header (sync and no reserved field values).
pub fn is_mpeg_frame_header(b: &[u8]) -> bool {
    b.len() >= 4
        && b[0] == 0xFF
        && b[1] & 0xE0 == 0xE0
        && (b[1] >> 3) & 0b11 != 0b01
        && (b[1] >> 1) & 0b11 != 0b00
        && b[2] >> 4 != 0b1111
        && (b[2] >> 2) & 0b11 != 0b11
}

/// If `header` is a valid ID3v2 header, the total number of bytes the tag occupies (header, body and
/// footer).
pub fn id3v2_tag_len(header: &[u8; ID3V2_HEADER_LEN]) -> Option<u64> {
    if &header[..3] != b"ID3" || header[3] == 0xFF || header[4] == 0xFF {
        return None;
    }
    if header[6..10].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let body = header[6..10]
        .iter()
        .fold(0u64, |acc, &b| (acc << 7) | u64::from(b));
    let footer = if header[5] & 0x10 != 0 {
        ID3V2_HEADER_LEN as u64
    } else {
        0
    };
    Some(ID3V2_HEADER_LEN as u64 + body + footer)
}

#[derive(Clone)]
enum State {
    /// Collecting the first bytes to see whether they are an ID3v2 header.
    Sniff {
        buf: [u8; ID3V2_HEADER_LEN],
        len: usize,
    },
    /// Inside the tag: this many bytes still to skip.
    Skip(u64),
    /// After the tag, looking for the first frame header; the bytes seen so far.
    Seek(Vec<u8>),
    /// Hashing: this many bytes still wanted.
    Hash(u64),
}

/// Streaming Napster share-message MD5.
#[derive(Clone)]
pub struct NapsterMd5Hasher {
    state: State,
    md5: Md5,
}

impl Default for NapsterMd5Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl NapsterMd5Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        NapsterMd5Hasher {
            state: State::Sniff {
                buf: [0; ID3V2_HEADER_LEN],
                len: 0,
            },
            md5: Md5::new(),
        }
    }

    fn hash(&mut self, data: &[u8]) {
        if let State::Hash(left) = &mut self.state {
            let take = (*left).min(data.len() as u64) as usize;
            self.md5.update(&data[..take]);
            *left -= take as u64;
        }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Sniff { buf, len } => {
                    let take = (ID3V2_HEADER_LEN - *len).min(data.len());
                    buf[*len..*len + take].copy_from_slice(&data[..take]);
                    *len += take;
                    data = &data[take..];
                    if *len == ID3V2_HEADER_LEN {
                        let header = *buf;
                        match id3v2_tag_len(&header) {
                            Some(tag) => {
                                self.state = State::Skip(tag - ID3V2_HEADER_LEN as u64);
                            }
                            None => self.state = State::Seek(header.to_vec()),
                        }
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Seek(Vec::new());
                    }
                }
                State::Seek(seen) => {
                    // Only the last 3 bytes of what was seen before can start a header that ends in `data`.
                    let from = seen.len().saturating_sub(3);
                    let take = (FRAME_SYNC_SEARCH + 3 - seen.len()).min(data.len());
                    seen.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    let found = (from..seen.len().saturating_sub(3))
                        .find(|&i| is_mpeg_frame_header(&seen[i..]));
                    let start = match found {
                        Some(i) => i,
                        None if seen.len() >= FRAME_SYNC_SEARCH + 3 => 0,
                        None => continue,
                    };
                    let seen = std::mem::take(seen);
                    self.state = State::Hash(NAPSTER_MD5_LEN);
                    self.hash(&seen[start..]);
                }
                State::Hash(0) => return,
                State::Hash(_) => {
                    self.hash(data);
                    return;
                }
            }
        }
    }

    /// Finishes. Content that ends before a frame header is found is hashed from the end of the tag (or
    /// from the start, without a tag); a tag that claims to run past the end of the content leaves
    /// nothing to hash (MD5 of no bytes).
    pub fn finish(mut self) -> Md5Digest {
        let rest = match std::mem::replace(&mut self.state, State::Hash(NAPSTER_MD5_LEN)) {
            State::Sniff { buf, len } => buf[..len].to_vec(),
            // `update` already looked at every position of `seen`: no frame header, so hash it all.
            State::Seek(seen) => seen,
            State::Skip(_) | State::Hash(_) => Vec::new(),
        };
        self.hash(&rest);
        Md5Digest(self.md5.finalize())
    }
}

/// Napster share MD5 of an in-memory buffer.
pub fn napster_md5(data: &[u8]) -> Md5Digest {
    let mut h = NapsterMd5Hasher::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5(data: &[u8]) -> Md5Digest {
        Md5Digest(<::md5::Md5 as ::md5::Digest>::digest(data).into())
    }

    /// Bytes that never contain 0xFF, so no accidental frame header.
    fn filler(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
    }

    /// MPEG-1 Layer III, 128 kbit/s, 44.1 kHz frame header, then audio-like bytes.
    fn mp3_audio(len: usize) -> Vec<u8> {
        let mut v = vec![0xFF, 0xFB, 0x90, 0x64];
        v.extend(filler(len - 4, 1));
        v
    }

    fn streamed(data: &[u8], chunk: usize) -> Md5Digest {
        let mut h = NapsterMd5Hasher::new();
        for c in data.chunks(chunk) {
            h.update(c);
        }
        h.finish()
    }

    #[test]
    fn frame_header_check() {
        assert!(is_mpeg_frame_header(&[0xFF, 0xFB, 0x90, 0x64]));
        assert!(is_mpeg_frame_header(&[0xFF, 0xF3, 0x40, 0xC4])); // MPEG-2 Layer III
        assert!(!is_mpeg_frame_header(&[0xFF, 0xFB, 0xF0, 0x64])); // bitrate 1111
        assert!(!is_mpeg_frame_header(&[0xFF, 0xFB, 0x9C, 0x64])); // sample rate 11
        assert!(!is_mpeg_frame_header(&[0xFF, 0xE9, 0x90, 0x64])); // version 01
        assert!(!is_mpeg_frame_header(&[0xFF, 0xF9, 0x90, 0x64])); // layer 00
        assert!(!is_mpeg_frame_header(&[0xFF, 0xFB, 0x90]));
    }

    #[test]
    fn plain_mp3_hashes_the_first_window() {
        let data = mp3_audio(400_000);
        let want = md5(&data[..NAPSTER_MD5_LEN as usize]);
        assert_eq!(napster_md5(&data), want);
        assert_ne!(want, md5(&data));
        assert_eq!(streamed(&data, 1), want);
        assert_eq!(streamed(&data, 4097), want);
        // Shorter than the window: everything.
        assert_eq!(napster_md5(&data[..1000]), md5(&data[..1000]));
    }

    #[test]
    fn junk_before_the_first_frame_is_skipped() {
        let audio = mp3_audio(350_000);
        let mut data = vec![0u8; 1234];
        data.extend_from_slice(&audio);
        let want = md5(&audio[..NAPSTER_MD5_LEN as usize]);
        assert_eq!(napster_md5(&data), want);
        assert_eq!(streamed(&data, 7), want);
    }

    #[test]
    fn id3v2_tag_is_skipped() {
        let audio = mp3_audio(350_000);
        // A v2.3 tag with a 1,000-byte body: size 1000 = 0b111_1101000 → syncsafe 00 00 07 68.
        let mut tagged = b"ID3\x03\x00\x00\x00\x00\x07\x68".to_vec();
        tagged.extend(std::iter::repeat_n(0xFF, 1000)); // frame-like bytes inside the tag do not count
        tagged.extend_from_slice(&audio);
        let want = md5(&audio[..NAPSTER_MD5_LEN as usize]);
        assert_eq!(napster_md5(&tagged), want);
        assert_eq!(streamed(&tagged, 3), want);
        // Re-tagging (a v2.4 tag of another size, with a footer, and padding) keeps the identity.
        let mut retagged = b"ID3\x04\x00\x10\x00\x00\x10\x00".to_vec();
        retagged.extend(std::iter::repeat_n(0x11, 2048 + 10));
        retagged.extend_from_slice(&[0; 300]);
        retagged.extend_from_slice(&audio);
        assert_eq!(napster_md5(&retagged), want);
    }

    #[test]
    fn files_without_frames_hash_from_the_start() {
        let data = filler(400_000, 3);
        assert_eq!(napster_md5(&data), md5(&data[..NAPSTER_MD5_LEN as usize]));
        assert_eq!(streamed(&data, 999), napster_md5(&data));
        // A frame header beyond the search window does not count.
        let mut late = filler(FRAME_SYNC_SEARCH + 100, 5);
        late.extend(mp3_audio(1000));
        assert_eq!(napster_md5(&late), md5(&late));
        assert_eq!(napster_md5(b"abc"), md5(b"abc"));
        assert_eq!(napster_md5(b""), md5(b""));
        assert_eq!(napster_md5(b"ID3"), md5(b"ID3"));
    }

    #[test]
    fn broken_headers_are_data() {
        let mut not_tag = b"ID3\x03\x00\x00\x00\x80\x07\x68".to_vec(); // high bit in the size
        not_tag.extend(filler(100, 0));
        assert_eq!(napster_md5(&not_tag), md5(&not_tag));
        // A tag running past the end of the content leaves nothing.
        assert_eq!(napster_md5(b"ID3\x03\x00\x00\x00\x00\x07\x68abc"), md5(b""));
    }
}
