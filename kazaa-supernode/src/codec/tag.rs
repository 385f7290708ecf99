//! Tags and the code tables of `shared/protocols/kazaa.md` §1 and §2 (giFT `fst_meta.h`, MLDonkey
//! `fasttrack_proto.ml`): a tag is a dynint type, a dynint length and that many value bytes; integer
//! values are themselves dynints.

use super::{put_dynint, DecodeError, Reader};

/// Most tags one share, unshare or result may carry (giFT sends at most a dozen; this bounds a peer).
pub const MAX_TAGS: usize = 64;
/// Longest tag value we accept (a long comment or keywords list fits easily).
pub const MAX_TAG_LEN: usize = 4096;

/// Tag codes (the "field" byte of query terms uses the same numbers).
pub mod code {
    /// Query only: match any field.
    pub const ANY: u32 = 0x00;
    /// Year (int).
    pub const YEAR: u32 = 0x01;
    /// File name (string).
    pub const FILENAME: u32 = 0x02;
    /// Query only and in `X-KazaaTag`: the 20-byte ContentHash.
    pub const HASH: u32 = 0x03;
    /// Title (string).
    pub const TITLE: u32 = 0x04;
    /// Duration in seconds (int).
    pub const TIME: u32 = 0x05;
    /// Artist (string).
    pub const ARTIST: u32 = 0x06;
    /// Album (string).
    pub const ALBUM: u32 = 0x08;
    /// Language (string).
    pub const LANGUAGE: u32 = 0x0A;
    /// Keywords (string).
    pub const KEYWORDS: u32 = 0x0C;
    /// Resolution (two ints).
    pub const RESOLUTION: u32 = 0x0D;
    /// Genre (string).
    pub const GENRE: u32 = 0x0E;
    /// OS (string).
    pub const OS: u32 = 0x10;
    /// Bit depth (int).
    pub const BITDEPTH: u32 = 0x11;
    /// Type (string).
    pub const TYPE: u32 = 0x12;
    /// Bitrate in kbps (int).
    pub const BITRATE: u32 = 0x15;
    /// Version (string).
    pub const VERSION: u32 = 0x18;
    /// Comment (string).
    pub const COMMENT: u32 = 0x1A;
    /// Codec (string).
    pub const CODEC: u32 = 0x1C;
    /// Rating 0–4 (int).
    pub const RATING: u32 = 0x1D;
    /// Query only: file size (int).
    pub const SIZE: u32 = 0x21;
    /// The term Kazaa adds to every query (cmp 06, value 0 or 2).
    pub const KAZAA_EXTRA: u32 = 0x25;
    /// Query tag for the 36-byte kzhash (Kazaa ≥ 2.6).
    pub const KZHASH: u32 = 0x10003;
}

/// Whether a tag code carries dynint values rather than a string.
pub fn is_int_tag(kind: u32) -> bool {
    matches!(
        kind,
        code::YEAR
            | code::TIME
            | code::RESOLUTION
            | code::BITDEPTH
            | code::BITRATE
            | code::RATING
            | code::SIZE
    )
}

/// One tag, its value kept as the raw bytes so every tag round-trips byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The tag code ([`code`]).
    pub kind: u32,
    /// The value bytes.
    pub data: Vec<u8>,
}

impl Tag {
    /// A string tag.
    pub fn string(kind: u32, s: &str) -> Tag {
        Tag {
            kind,
            data: s.as_bytes().to_vec(),
        }
    }

    /// An integer tag (value as a dynint).
    pub fn int(kind: u32, v: u64) -> Tag {
        let mut data = Vec::with_capacity(5);
        put_dynint(&mut data, v);
        Tag { kind, data }
    }

    /// The value read as one dynint, if it is exactly one.
    pub fn as_int(&self) -> Option<u64> {
        let mut r = Reader::new(&self.data);
        let v = r.dynint("tag value").ok()?;
        r.finish().ok()?;
        Some(v)
    }

    /// The value as text (lossy: peers send Latin-1 as often as UTF-8).
    pub fn as_text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Appends type, length, value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_dynint(out, u64::from(self.kind));
        put_dynint(out, self.data.len() as u64);
        out.extend_from_slice(&self.data);
    }

    /// Reads one tag.
    pub fn decode(r: &mut Reader<'_>) -> Result<Tag, DecodeError> {
        let kind = r.dynint("tag type")?;
        let kind = u32::try_from(kind).map_err(|_| DecodeError::Invalid { what: "tag type" })?;
        let len = r.dynint_len("tag length", MAX_TAG_LEN)?;
        Ok(Tag {
            kind,
            data: r.bytes(len, "tag value")?.to_vec(),
        })
    }
}

/// Writes `ntags dyn, tags`.
pub fn encode_tags(tags: &[Tag], out: &mut Vec<u8>) {
    put_dynint(out, tags.len() as u64);
    for t in tags {
        t.encode(out);
    }
}

/// Reads `ntags dyn, tags`, refusing more than [`MAX_TAGS`].
pub fn decode_tags(r: &mut Reader<'_>) -> Result<Vec<Tag>, DecodeError> {
    let n = r.dynint_len("tag count", MAX_TAGS)?;
    // Each tag takes at least two bytes, so this capacity is bounded by the frame.
    let mut tags = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        tags.push(Tag::decode(r)?);
    }
    Ok(tags)
}

/// Media types of the share message 0x22.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaType {
    /// 0.
    Unknown,
    /// 1.
    Audio,
    /// 2.
    Video,
    /// 3.
    Image,
    /// 4.
    Document,
    /// 5.
    Software,
}

impl MediaType {
    /// The wire byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From the wire byte; out-of-range values read as `Unknown`, as Kazaa shows them.
    pub fn from_code(b: u8) -> MediaType {
        match b {
            1 => MediaType::Audio,
            2 => MediaType::Video,
            3 => MediaType::Image,
            4 => MediaType::Document,
            5 => MediaType::Software,
            _ => MediaType::Unknown,
        }
    }

    /// The realm that selects this media type.
    pub fn realm(self) -> Realm {
        match self {
            MediaType::Audio => Realm::Audio,
            MediaType::Video => Realm::Video,
            MediaType::Image => Realm::Images,
            MediaType::Document => Realm::Documents,
            MediaType::Software => Realm::Software,
            MediaType::Unknown => Realm::All,
        }
    }

    /// A guess from the file extension, as Kazaa's library did.
    pub fn from_name(name: &str) -> MediaType {
        let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        match ext.as_str() {
            "mp3" | "ogg" | "wav" | "wma" | "flac" => MediaType::Audio,
            "avi" | "mpg" | "mpeg" | "mp4" | "mkv" | "wmv" | "mov" => MediaType::Video,
            "jpg" | "jpeg" | "png" | "gif" | "bmp" => MediaType::Image,
            "txt" | "pdf" | "doc" | "html" | "htm" => MediaType::Document,
            "exe" | "zip" | "msi" | "rar" => MediaType::Software,
            _ => MediaType::Unknown,
        }
    }
}

/// Query realms (0x06 `realm1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Realm {
    /// 0xBF: everything.
    All,
    /// 0xA1.
    Audio,
    /// 0xA2.
    Video,
    /// 0xA3.
    Images,
    /// 0xA4.
    Documents,
    /// 0xA5.
    Software,
}

impl Realm {
    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            Realm::All => 0xBF,
            Realm::Audio => 0xA1,
            Realm::Video => 0xA2,
            Realm::Images => 0xA3,
            Realm::Documents => 0xA4,
            Realm::Software => 0xA5,
        }
    }

    /// From the wire byte. MLDonkey writes the codes without the top bit, so both forms are accepted.
    pub fn from_code(b: u8) -> Option<Realm> {
        Some(match b | 0x80 {
            0xBF => Realm::All,
            0xA1 => Realm::Audio,
            0xA2 => Realm::Video,
            0xA3 => Realm::Images,
            0xA4 => Realm::Documents,
            0xA5 => Realm::Software,
            _ => return None,
        })
    }

    /// Whether a file of `media` is in this realm.
    pub fn admits(self, media: MediaType) -> bool {
        self == Realm::All || media.realm() == self
    }
}

/// Query term comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// 0x00.
    Equals,
    /// 0x02.
    AtMost,
    /// 0x03.
    Approx,
    /// 0x04.
    AtLeast,
    /// 0x05.
    Substring,
    /// 0x06: the extra term Kazaa adds to every query (meaning unknown; never filters here).
    KazaaExtra,
}

impl Comparison {
    /// The wire byte.
    pub fn code(self) -> u8 {
        match self {
            Comparison::Equals => 0x00,
            Comparison::AtMost => 0x02,
            Comparison::Approx => 0x03,
            Comparison::AtLeast => 0x04,
            Comparison::Substring => 0x05,
            Comparison::KazaaExtra => 0x06,
        }
    }

    /// From the wire byte.
    pub fn from_code(b: u8) -> Option<Comparison> {
        Some(match b {
            0x00 => Comparison::Equals,
            0x02 => Comparison::AtMost,
            0x03 => Comparison::Approx,
            0x04 => Comparison::AtLeast,
            0x05 => Comparison::Substring,
            0x06 => Comparison::KazaaExtra,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_layout() {
        let mut out = Vec::new();
        Tag::int(code::BITRATE, 192).encode(&mut out);
        assert_eq!(out, [0x15, 0x02, 0x81, 0x40]);
        out.clear();
        Tag::string(code::FILENAME, "a.mp3").encode(&mut out);
        assert_eq!(out, b"\x02\x05a.mp3");
        out.clear();
        Tag {
            kind: code::KZHASH,
            data: vec![],
        }
        .encode(&mut out);
        assert_eq!(out, [0x84, 0x80, 0x03, 0x00]);
        assert_eq!(Tag::int(code::SIZE, 1 << 20).as_int(), Some(1 << 20));
        assert_eq!(Tag::string(code::TITLE, "ab").as_int(), None);
    }

    #[test]
    fn codes_round_trip() {
        for b in 0..=255u8 {
            if let Some(r) = Realm::from_code(b) {
                assert_eq!(r.code(), b | 0x80);
            }
            if let Some(c) = Comparison::from_code(b) {
                assert_eq!(c.code(), b);
            }
        }
        assert_eq!(Realm::from_code(0x21), Some(Realm::Audio));
        assert!(Realm::Audio.admits(MediaType::Audio));
        assert!(!Realm::Audio.admits(MediaType::Video));
        assert!(Realm::All.admits(MediaType::Unknown));
    }

    #[test]
    fn tag_count_limit() {
        let mut out = Vec::new();
        put_dynint(&mut out, MAX_TAGS as u64 + 1);
        assert!(matches!(
            decode_tags(&mut Reader::new(&out)),
            Err(DecodeError::TooLong { .. })
        ));
        let mut out = Vec::new();
        put_dynint(&mut out, 1_000_000);
        assert!(decode_tags(&mut Reader::new(&out)).is_err());
    }
}
