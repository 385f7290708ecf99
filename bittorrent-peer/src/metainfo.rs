//! Metainfo (.torrent) files, BEP 3 "metainfo files", BEP 12 `announce-list`, and BEP 9 magnet links.
//!
//! Parsing keeps the raw bytes of the `info` dictionary: the info_hash is the SHA-1 of exactly those bytes,
//! so a torrent made by another tool (with keys we do not know) keeps its identity.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bendy::encoding::Encoder;
use bendy::value::Value;
use common::hash::Sha1Digest;
use sha1::{Digest, Sha1};

use crate::bencode::{self, as_dict, BencodeError};
use crate::types::InfoHash;

/// Largest .torrent we read (a 1 TiB torrent with 256 KiB pieces has 80 MB of hashes; we stop well
/// before that to bound memory).
pub const MAX_TORRENT_LEN: usize = 32 << 20;
/// Largest piece length we accept (libtorrent's limit is similar; larger pieces make blocks unverifiable
/// for too long).
pub const MAX_PIECE_LEN: u64 = 64 << 20;
/// Smallest piece length: one block (BEP 3 clients use 16 KiB blocks).
pub const MIN_PIECE_LEN: u64 = 16 << 10;
/// Most files in one torrent.
pub const MAX_FILES: usize = 100_000;
/// Default piece length for `create` (the classic 256 KiB), doubled for big payloads.
pub const DEFAULT_PIECE_LEN: u64 = 256 << 10;

/// Why a metainfo file or magnet link was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    /// Bencoding problem or a missing or malformed field.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// Fields are individually valid but do not agree (piece count, lengths...).
    #[error("inconsistent metainfo: {0}")]
    Inconsistent(&'static str),
    /// A file name would leave the download folder or is not a plain name.
    #[error("unsafe path component {0:?}")]
    UnsafePath(String),
    /// The file is bigger than [`MAX_TORRENT_LEN`].
    #[error("metainfo larger than {MAX_TORRENT_LEN} bytes")]
    TooLarge,
    /// Reading the content or the .torrent failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A magnet link without `xt=urn:btih:`.
    #[error("bad magnet link: {0}")]
    Magnet(&'static str),
}

/// One file of the torrent, placed in the concatenated byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components under the torrent's folder (for a single-file torrent: just the name).
    pub path: Vec<String>,
    /// Length in bytes.
    pub length: u64,
    /// Offset of the first byte in the concatenation of all files.
    pub offset: u64,
}

impl FileEntry {
    /// Relative path of this file under the download directory.
    pub fn rel_path(&self, info: &Info) -> PathBuf {
        let mut p = PathBuf::new();
        if info.multi_file {
            p.push(&info.name);
        }
        for c in &self.path {
            p.push(c);
        }
        p
    }
}

/// The `info` dictionary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Suggested file or folder name.
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u64,
    /// SHA-1 of each piece.
    pub pieces: Vec<Sha1Digest>,
    /// Files in order; one entry for a single-file torrent.
    pub files: Vec<FileEntry>,
    /// Whether the torrent has a `files` list (content lives in a folder named `name`).
    pub multi_file: bool,
    /// BEP 27 private flag.
    pub private: bool,
    /// Sum of file lengths.
    pub total_length: u64,
}

impl Info {
    /// Number of pieces.
    pub fn num_pieces(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length;
        (self.total_length.saturating_sub(start)).min(self.piece_length) as u32
    }
}

/// A parsed .torrent.
#[derive(Clone, Debug)]
pub struct Metainfo {
    /// SHA-1 of the raw `info` bytes.
    pub info_hash: InfoHash,
    /// The parsed `info` dictionary.
    pub info: Info,
    /// Raw bencoded `info` (served to BEP 9 peers as metadata).
    pub info_bytes: Vec<u8>,
    /// Tracker tiers (BEP 12); `announce` alone becomes one tier.
    pub trackers: Vec<Vec<String>>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Program that made the file.
    pub created_by: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub creation_date: Option<i64>,
}

fn check_component(c: &str) -> Result<(), MetainfoError> {
    if c.is_empty()
        || c == "."
        || c == ".."
        || c.contains(['/', '\\', '\0'])
        || (c.len() >= 2 && c.as_bytes()[1] == b':')
    {
        return Err(MetainfoError::UnsafePath(c.to_owned()));
    }
    Ok(())
}

fn bytes_to_text(v: &Value<'_>, what: &'static str) -> Result<String, MetainfoError> {
    match v {
        Value::Bytes(b) => Ok(String::from_utf8(b.to_vec()).map_err(|_| BencodeError::Bad(what))?),
        _ => Err(BencodeError::Bad(what).into()),
    }
}

/// Parses the bencoded `info` dictionary.
pub fn parse_info(raw: &[u8]) -> Result<Info, MetainfoError> {
    let v = bencode::decode(raw)?;
    let d = as_dict(&v, "info")?;
    let name = bencode::text(d, "name")?;
    check_component(&name)?;
    let piece_length = bencode::int(d, "piece length")?;
    if !(MIN_PIECE_LEN as i64..=MAX_PIECE_LEN as i64).contains(&piece_length) {
        return Err(BencodeError::Bad("piece length").into());
    }
    let piece_length = piece_length as u64;
    let pieces_raw = bencode::bytes(d, "pieces")?;
    if pieces_raw.len() % 20 != 0 {
        return Err(BencodeError::Bad("pieces").into());
    }
    let pieces: Vec<Sha1Digest> = pieces_raw
        .chunks_exact(20)
        .map(|c| Sha1Digest(c.try_into().expect("20-byte chunk")))
        .collect();
    let private = matches!(bencode::get(d, "private"), Some(Value::Integer(1)));
    let mut files = Vec::new();
    let mut offset = 0u64;
    let multi_file = match (bencode::get(d, "length"), bencode::get(d, "files")) {
        (Some(Value::Integer(len)), None) => {
            if *len < 0 {
                return Err(BencodeError::Bad("length").into());
            }
            files.push(FileEntry {
                path: vec![name.clone()],
                length: *len as u64,
                offset: 0,
            });
            offset = *len as u64;
            false
        }
        (None, Some(Value::List(list))) => {
            if list.is_empty() || list.len() > MAX_FILES {
                return Err(BencodeError::Bad("files").into());
            }
            for f in list {
                let fd = as_dict(f, "files")?;
                let length = bencode::int(fd, "length")?;
                if length < 0 {
                    return Err(BencodeError::Bad("length").into());
                }
                let Some(Value::List(parts)) = bencode::get(fd, "path") else {
                    return Err(BencodeError::Bad("path").into());
                };
                if parts.is_empty() {
                    return Err(BencodeError::Bad("path").into());
                }
                let mut path = Vec::with_capacity(parts.len());
                for p in parts {
                    let c = bytes_to_text(p, "path")?;
                    check_component(&c)?;
                    path.push(c);
                }
                files.push(FileEntry {
                    path,
                    length: length as u64,
                    offset,
                });
                offset = offset
                    .checked_add(length as u64)
                    .ok_or(MetainfoError::Inconsistent("total length overflows"))?;
            }
            true
        }
        _ => return Err(MetainfoError::Inconsistent("exactly one of length/files")),
    };
    let expected = offset.div_ceil(piece_length);
    if expected != pieces.len() as u64 {
        return Err(MetainfoError::Inconsistent(
            "piece count does not match length",
        ));
    }
    Ok(Info {
        name,
        piece_length,
        pieces,
        files,
        multi_file,
        private,
        total_length: offset,
    })
}

/// SHA-1 of a byte string, from `common` (the one SHA-1 of the workspace).
pub use common::hash::sha1;

impl Metainfo {
    /// Parses a .torrent file's bytes.
    pub fn from_bytes(data: &[u8]) -> Result<Metainfo, MetainfoError> {
        if data.len() > MAX_TORRENT_LEN {
            return Err(MetainfoError::TooLarge);
        }
        let raw_info =
            bencode::raw_value_of(data, b"info")?.ok_or(BencodeError::Missing("info"))?;
        let info = parse_info(raw_info)?;
        let v = bencode::decode(data)?;
        let d = as_dict(&v, "torrent")?;
        let mut trackers: Vec<Vec<String>> = Vec::new();
        if let Some(Value::List(tiers)) = bencode::get(d, "announce-list") {
            for tier in tiers {
                if let Value::List(urls) = tier {
                    let t: Vec<String> = urls
                        .iter()
                        .filter_map(|u| bytes_to_text(u, "announce-list").ok())
                        .filter(|u| !u.is_empty())
                        .collect();
                    if !t.is_empty() {
                        trackers.push(t);
                    }
                }
            }
        }
        if trackers.is_empty() {
            if let Some(a) = bencode::opt_text(d, "announce")? {
                if !a.is_empty() {
                    trackers.push(vec![a]);
                }
            }
        }
        let creation_date = match bencode::get(d, "creation date") {
            Some(Value::Integer(i)) => Some(*i),
            _ => None,
        };
        Ok(Metainfo {
            info_hash: InfoHash(sha1(raw_info).0),
            info,
            info_bytes: raw_info.to_vec(),
            trackers,
            comment: bencode::opt_text(d, "comment").ok().flatten(),
            created_by: bencode::opt_text(d, "created by").ok().flatten(),
            creation_date,
        })
    }

    /// Reads and parses a .torrent file.
    pub fn load(path: &Path) -> Result<Metainfo, MetainfoError> {
        let f = File::open(path)?;
        let mut data = Vec::new();
        f.take(MAX_TORRENT_LEN as u64 + 1).read_to_end(&mut data)?;
        Metainfo::from_bytes(&data)
    }

    /// Builds a metainfo from raw `info` bytes (e.g. fetched with BEP 9) and tracker tiers.
    pub fn from_info_bytes(
        raw: &[u8],
        trackers: Vec<Vec<String>>,
    ) -> Result<Metainfo, MetainfoError> {
        let info = parse_info(raw)?;
        Ok(Metainfo {
            info_hash: InfoHash(sha1(raw).0),
            info,
            info_bytes: raw.to_vec(),
            trackers,
            comment: None,
            created_by: None,
            creation_date: None,
        })
    }

    /// Encodes the whole .torrent (the `info` bytes are copied verbatim).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new().with_max_depth(bencode::MAX_DEPTH);
        let r = e.emit_dict(|mut d| {
            if let Some(first) = self.trackers.first().and_then(|t| t.first()) {
                d.emit_pair(b"announce", first.as_str())?;
            }
            if self.trackers.len() > 1 || self.trackers.first().is_some_and(|t| t.len() > 1) {
                d.emit_pair_with(b"announce-list", |e| {
                    e.emit_list(|e| {
                        for tier in &self.trackers {
                            e.emit_list(|e| {
                                for u in tier {
                                    e.emit_str(u)?;
                                }
                                Ok(())
                            })?;
                        }
                        Ok(())
                    })
                })?;
            }
            if let Some(c) = &self.comment {
                d.emit_pair(b"comment", c.as_str())?;
            }
            if let Some(c) = &self.created_by {
                d.emit_pair(b"created by", c.as_str())?;
            }
            if let Some(t) = self.creation_date {
                d.emit_pair(b"creation date", t)?;
            }
            Ok(())
        });
        r.expect("encoding a well-formed metainfo cannot fail");
        let mut out = e.get_output().expect("complete document");
        // "info" sorts after every other key we write, so the raw info bytes (whose SHA-1 is the
        // info_hash) are spliced in last, byte for byte, instead of being re-encoded.
        out.pop();
        out.extend_from_slice(b"4:info");
        out.extend_from_slice(&self.info_bytes);
        out.push(b'e');
        out
    }

    /// A BEP 9 magnet link with the display name and every tracker.
    pub fn magnet(&self) -> String {
        let mut s = format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex());
        s.push_str("&dn=");
        s.push_str(&pct(&self.info.name));
        for t in self.trackers.iter().flatten() {
            s.push_str("&tr=");
            s.push_str(&pct(t));
        }
        s
    }
}

fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A parsed magnet link (BEP 9 `magnet:?xt=urn:btih:...&dn=...&tr=...&x.pe=...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The torrent's info_hash.
    pub info_hash: InfoHash,
    /// Display name, if given.
    pub name: Option<String>,
    /// Trackers, each its own tier.
    pub trackers: Vec<String>,
    /// Peer addresses given with `x.pe`.
    pub peers: Vec<String>,
}

impl Magnet {
    /// Parses a magnet URI.
    pub fn parse(uri: &str) -> Result<Magnet, MetainfoError> {
        let q = uri
            .strip_prefix("magnet:?")
            .ok_or(MetainfoError::Magnet("not a magnet: URI"))?;
        let mut hash = None;
        let mut name = None;
        let mut trackers = Vec::new();
        let mut peers = Vec::new();
        for kv in q.split('&') {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned();
            match k {
                "xt" => {
                    if let Some(h) = v.strip_prefix("urn:btih:") {
                        hash =
                            Some(InfoHash::parse(h).ok_or(MetainfoError::Magnet("bad btih hash"))?);
                    }
                }
                "dn" => name = Some(v),
                "tr" => trackers.push(v),
                "x.pe" => peers.push(v),
                _ => {}
            }
        }
        Ok(Magnet {
            info_hash: hash.ok_or(MetainfoError::Magnet("no xt=urn:btih:"))?,
            name,
            trackers,
            peers,
        })
    }
}

/// Options for [`create`].
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Tracker tiers; each inner list is one tier.
    pub trackers: Vec<Vec<String>>,
    /// Piece length; `None` picks one from the size.
    pub piece_length: Option<u64>,
    /// Comment to embed.
    pub comment: Option<String>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Creation date to write (seconds since the epoch); `None` writes none, for reproducible output.
    pub creation_date: Option<i64>,
}

/// Piece length `create` picks for `total` bytes: 256 KiB, doubled until there are at most ~4096 pieces.
pub fn auto_piece_length(total: u64) -> u64 {
    let mut p = DEFAULT_PIECE_LEN;
    while total / p > 4096 && p < (16 << 20) {
        p *= 2;
    }
    p
}

fn collect_files(
    root: &Path,
    rel: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, PathBuf)>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> =
        std::fs::read_dir(root.join(rel.iter().collect::<PathBuf>()))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let ft = e.file_type()?;
        rel.push(name);
        if ft.is_dir() {
            collect_files(root, rel, out)?;
        } else if ft.is_file() {
            out.push((rel.clone(), e.path()));
        }
        rel.pop();
        if out.len() > MAX_FILES {
            return Err(std::io::Error::other("too many files"));
        }
    }
    Ok(())
}

/// Hashes `path` (a file or a folder, walked in name order) into a new metainfo.
pub fn create(path: &Path, opts: &CreateOptions) -> Result<Metainfo, MetainfoError> {
    let name = path
        .file_name()
        .ok_or(MetainfoError::Inconsistent("path has no file name"))?
        .to_string_lossy()
        .into_owned();
    check_component(&name)?;
    let meta = std::fs::metadata(path)?;
    let mut sources: Vec<(Vec<String>, PathBuf)> = Vec::new();
    let multi = meta.is_dir();
    if multi {
        collect_files(path, &mut Vec::new(), &mut sources)?;
        if sources.is_empty() {
            return Err(MetainfoError::Inconsistent("folder holds no files"));
        }
    } else {
        sources.push((vec![name.clone()], path.to_path_buf()));
    }
    let mut lengths = Vec::with_capacity(sources.len());
    let mut total = 0u64;
    for (_, p) in &sources {
        let l = std::fs::metadata(p)?.len();
        lengths.push(l);
        total += l;
    }
    let piece_length = opts
        .piece_length
        .unwrap_or_else(|| auto_piece_length(total));
    if !(MIN_PIECE_LEN..=MAX_PIECE_LEN).contains(&piece_length) {
        return Err(MetainfoError::Inconsistent("piece length out of range"));
    }
    // Stream every file through one piece-sized buffer: pieces span file boundaries.
    let mut pieces: Vec<u8> = Vec::with_capacity(total.div_ceil(piece_length) as usize * 20);
    let mut buf = vec![0u8; piece_length as usize];
    let mut fill = 0usize;
    for ((_, p), &len) in sources.iter().zip(&lengths) {
        let mut f = File::open(p)?.take(len);
        loop {
            let n = f.read(&mut buf[fill..])?;
            if n == 0 {
                break;
            }
            fill += n;
            if fill == buf.len() {
                pieces.extend_from_slice(&Sha1::digest(&buf));
                fill = 0;
            }
        }
    }
    if fill > 0 {
        pieces.extend_from_slice(&Sha1::digest(&buf[..fill]));
    }
    let mut e = Encoder::new().with_max_depth(bencode::MAX_DEPTH);
    e.emit_dict(|mut d| {
        if multi {
            d.emit_pair_with(b"files", |e| {
                e.emit_list(|e| {
                    for ((rel, _), &len) in sources.iter().zip(&lengths) {
                        e.emit_dict(|mut f| {
                            f.emit_pair(b"length", len)?;
                            f.emit_pair_with(b"path", |e| {
                                e.emit_list(|e| {
                                    for c in rel {
                                        e.emit_str(c)?;
                                    }
                                    Ok(())
                                })
                            })
                        })?;
                    }
                    Ok(())
                })
            })?;
        } else {
            d.emit_pair(b"length", total)?;
        }
        d.emit_pair(b"name", name.as_str())?;
        d.emit_pair(b"piece length", piece_length)?;
        d.emit_pair_with(b"pieces", |e| e.emit_bytes(&pieces))?;
        if opts.private {
            d.emit_pair(b"private", 1)?;
        }
        Ok(())
    })
    .expect("info dictionary encodes");
    let raw = e.get_output().expect("complete info");
    let mut m = Metainfo::from_info_bytes(&raw, opts.trackers.clone())?;
    m.comment = opts.comment.clone();
    m.created_by = Some(concat!("p2p-lab bittorrent-peer ", env!("CARGO_PKG_VERSION")).into());
    m.creation_date = opts.creation_date;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, len: usize, seed: u8) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn single_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.bin");
        write(&f, 100_000, 1);
        let m = create(
            &f,
            &CreateOptions {
                trackers: vec![vec!["http://127.0.0.1:1/announce".into()]],
                piece_length: Some(32 << 10),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.info.num_pieces(), 4);
        assert_eq!(m.info.piece_len(3), 100_000 - 3 * 32768);
        assert!(!m.info.multi_file);
        let back = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back.info_hash, m.info_hash);
        assert_eq!(back.info, m.info);
        assert_eq!(back.trackers, m.trackers);
        let data = std::fs::read(&f).unwrap();
        assert_eq!(m.info.pieces[1], sha1(&data[32768..65536]));
    }

    #[test]
    fn multi_file_pieces_span_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("album");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        write(&root.join("b.bin"), 20_000, 2);
        write(&root.join("sub/c.bin"), 30_000, 3);
        write(&root.join("a.bin"), 10_000, 1);
        let m = create(
            &root,
            &CreateOptions {
                piece_length: Some(16384),
                ..Default::default()
            },
        )
        .unwrap();
        let names: Vec<_> = m.info.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(names, ["a.bin", "b.bin", "sub/c.bin"]);
        assert_eq!(m.info.files[2].offset, 30_000);
        assert_eq!(m.info.total_length, 60_000);
        let mut all = std::fs::read(root.join("a.bin")).unwrap();
        all.extend(std::fs::read(root.join("b.bin")).unwrap());
        all.extend(std::fs::read(root.join("sub/c.bin")).unwrap());
        assert_eq!(m.info.pieces[0], sha1(&all[..16384]));
        assert_eq!(m.info.pieces[3], sha1(&all[49152..]));
        assert_eq!(
            m.info.files[2].rel_path(&m.info),
            PathBuf::from("album/sub/c.bin")
        );
    }

    #[test]
    fn rejects_traversal_and_bad_counts() {
        let bad = b"d4:infod5:filesld6:lengthi1e4:pathl2:..1:xeee4:name1:x12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        assert!(matches!(
            Metainfo::from_bytes(bad),
            Err(MetainfoError::UnsafePath(_))
        ));
        let count = b"d4:infod6:lengthi1e4:name1:x12:piece lengthi16384e6:pieces0:ee";
        assert!(matches!(
            Metainfo::from_bytes(count),
            Err(MetainfoError::Inconsistent(_))
        ));
        assert!(Metainfo::from_bytes(b"d4:infoi1ee").is_err());
    }

    #[test]
    fn magnet_round_trip() {
        let m = Magnet::parse("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=a%20b&tr=http%3A%2F%2Fx%2Fa&tr=udp://y:1").unwrap();
        assert_eq!(m.name.as_deref(), Some("a b"));
        assert_eq!(m.trackers, ["http://x/a", "udp://y:1"]);
        assert_eq!(
            m.info_hash.to_hex(),
            "0123456789abcdef0123456789abcdef01234567"
        );
        assert!(Magnet::parse("magnet:?dn=x").is_err());
        assert!(Magnet::parse("http://x").is_err());
    }
}
