//! The MD5 Napster clients put in share messages (OpenNap `napster.txt`, messages 100 "client notification
//! of shared file" and 870 "share many files from one directory", and echoed back in 201/204/212/501).
//!
//! # Which bytes it covers, and why
//!
//! The field is not the MD5 of the whole file. Hashing whole MP3s over 1999 modems and disks was too slow,
//! so the clients hash only the beginning of the *audio*: the ID3v2 tag at the front (if any) is skipped, so
//! that re-tagging a song does not change its identity, and then at most a fixed number of bytes is hashed.
//! The exact count was never specified by Napster Inc.; what is on record:
//!
//! - the OpenNap protocol notes recommend **299,008 bytes** (292 KiB);
//! - Lincoln Stein's `MP3::Napster` (Perl, 2000) lists 299,008 ("recommended by the opennap spec"),
//!   300,032 (293 KiB, "the windows nap client") and 300,000 ("the Linux nap client"), all marked "(?)",
//!   and skips the ID3v2 tag before hashing.
//!
//! We follow the OpenNap figure, [`NAPSTER_MD5_LEN`]. Since OpenNap never verifies the value (it only stores
//! and echoes it, and only when built with its resume option; otherwise it sends 32 zeros), any fixed
//! choice interoperates; what matters is that all our nodes agree so "resume by md5" (215/216) finds
//! the same song. An ID3v1 tag (the last 128 bytes) only matters for files shorter than the window plus
//! 128 bytes, and no client is recorded skipping it, so it is hashed like the rest.
//!
//! ID3v2 header (id3.org, ID3v2.4 §3.1): `"ID3"`, version (2 bytes, neither `0xFF`), flags (1 byte), size
//! (4 bytes, 7 bits each: a "syncsafe" integer counting the bytes after the 10-byte header); flag `0x10`
//! announces a 10-byte footer after the tag. A header that breaks these rules is not a tag and is hashed.

use md5::{Digest, Md5};

use super::Md5Digest;

/// Number of bytes hashed after the ID3v2 tag (OpenNap's recommendation, 292 KiB).
pub const NAPSTER_MD5_LEN: u64 = 299_008;

/// Size of an ID3v2 header, and of its optional footer.
pub const ID3V2_HEADER_LEN: usize = 10;

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
                            None => {
                                self.state = State::Hash(NAPSTER_MD5_LEN);
                                self.hash(&header);
                            }
                        }
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Hash(NAPSTER_MD5_LEN);
                    }
                }
                State::Hash(0) => return,
                State::Hash(_) => {
                    self.hash(data);
                    return;
                }
            }
        }
    }

    /// Finishes. Content shorter than an ID3v2 header is hashed as is; a tag that claims to run past the end
    /// of the content leaves nothing to hash (MD5 of no bytes).
    pub fn finish(mut self) -> Md5Digest {
        if let State::Sniff { buf, len } = self.state {
            self.state = State::Hash(NAPSTER_MD5_LEN);
            self.hash(&buf[..len]);
        }
        Md5Digest(self.md5.finalize().into())
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
        Md5Digest(Md5::digest(data).into())
    }

    fn mp3_like(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn plain_file_hashes_the_first_window() {
        let data = mp3_like(400_000);
        assert_eq!(napster_md5(&data), md5(&data[..NAPSTER_MD5_LEN as usize]));
        assert_ne!(napster_md5(&data), md5(&data));
        // Shorter than the window: the whole file.
        assert_eq!(napster_md5(&data[..1000]), md5(&data[..1000]));
        assert_eq!(napster_md5(b"abc"), md5(b"abc"));
        assert_eq!(napster_md5(b""), md5(b""));
    }

    #[test]
    fn id3v2_tag_is_skipped() {
        let audio = mp3_like(350_000);
        // A v2.3 tag with a 1,000-byte body: size 1000 = 0b111_1101000 → syncsafe 00 00 07 68.
        let mut tagged = b"ID3\x03\x00\x00\x00\x00\x07\x68".to_vec();
        tagged.extend(std::iter::repeat_n(0xAB, 1000));
        tagged.extend_from_slice(&audio);
        let want = md5(&audio[..NAPSTER_MD5_LEN as usize]);
        assert_eq!(napster_md5(&tagged), want);
        // Re-tagging (a different, longer tag with a footer) keeps the identity.
        let mut retagged = b"ID3\x04\x00\x10\x00\x00\x10\x00".to_vec();
        retagged.extend(std::iter::repeat_n(0x11, 2048 + 10));
        retagged.extend_from_slice(&audio);
        assert_eq!(napster_md5(&retagged), want);
        // Streaming, byte by byte through the header.
        let mut h = NapsterMd5Hasher::new();
        for chunk in tagged.chunks(3) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), want);
    }

    #[test]
    fn broken_headers_are_hashed_as_data() {
        let mut not_tag = b"ID3\x03\x00\x00\x00\x80\x07\x68".to_vec(); // high bit in the size
        not_tag.extend_from_slice(&mp3_like(100));
        assert_eq!(napster_md5(&not_tag), md5(&not_tag));
        // A tag running past the end of the content leaves nothing.
        assert_eq!(napster_md5(b"ID3\x03\x00\x00\x00\x00\x07\x68abc"), md5(b""));
        assert_eq!(napster_md5(b"ID3"), md5(b"ID3"));
    }
}
