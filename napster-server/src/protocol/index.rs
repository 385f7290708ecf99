//! The server's file table and its inverted whole-word index (notes §2: matching is by whole word).
//!
//! Built for a million shared files in well under 100 bytes each:
//! - every file is one fixed 48-byte `Rec` in a slab indexed by its [`FileId`]; its path (and an md5
//!   token that is not 32 hex digits) live in one shared text arena, so a file costs no allocation of its
//!   own; the owner is a 32-bit slot, not the 64-bit connection id;
//! - each word's posting list ([`Postings`]) holds the ids of the files containing it as varint gaps with
//!   skip points. Ids grow monotonically, so lists stay sorted by construction;
//! - removal only tombstones the record (postings and arena text stay); once dead records are both
//!   numerous and at least as many as live ones, [`Index::compact`] renumbers the live files in order,
//!   rewrites the arena and re-encodes every list through the old-to-new map.
//!
//! A search walks the rarest included word's list and seeks the other lists' cursors (and the excluded
//! words') forward to each candidate, stopping as soon as it has `MAX_RESULTS` hits: its work and memory
//! depend on the rarest list and the result cap, not on the size of the index.

use std::collections::HashMap;

use super::postings::{Cursor, Postings};
use super::search::{path_words, words, Cmp, Kind, Query};
use super::ConnId;

/// Identifies one shared file inside the server; stable until the next [`Index::compact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// The md5 token of a share as the index returns it: 32 lower-case hex digits are kept in 16 bytes, any
/// other token (OpenNap accepts any) as text, so the value is returned byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Md5Field<'a> {
    /// 32 lower-case hex digits.
    Hex([u8; 16]),
    /// Any other token.
    Text(&'a str),
}

fn hex_decode(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = nib(b[2 * i])? << 4 | nib(b[2 * i + 1])?;
    }
    Some(out)
}

impl std::fmt::Display for Md5Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Md5Field::Hex(b) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut s = [0u8; 32];
                for (i, x) in b.iter().enumerate() {
                    s[2 * i] = HEX[usize::from(x >> 4)];
                    s[2 * i + 1] = HEX[usize::from(x & 15)];
                }
                f.write_str(std::str::from_utf8(&s).map_err(|_| std::fmt::Error)?)
            }
            Md5Field::Text(t) => f.write_str(t),
        }
    }
}

/// A file to add to the index.
#[derive(Debug, Clone, Copy)]
pub struct NewFile<'a> {
    /// The user sharing it.
    pub owner: ConnId,
    /// Path as shared.
    pub path: &'a str,
    /// MD5 token as shared.
    pub md5: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// Bitrate.
    pub bitrate: u32,
    /// Sample rate.
    pub freq: u32,
    /// Duration in seconds.
    pub secs: u32,
    /// Media kind.
    pub kind: Kind,
}

/// A shared file as the index returns it (borrowing its texts from the index).
#[derive(Debug, Clone, Copy)]
pub struct FileView<'a> {
    /// The user sharing it.
    pub owner: ConnId,
    /// Path as shared.
    pub path: &'a str,
    /// MD5 token as shared.
    pub md5: Md5Field<'a>,
    /// Size in bytes.
    pub size: u64,
    /// Bitrate.
    pub bitrate: u32,
    /// Sample rate.
    pub freq: u32,
    /// Duration in seconds.
    pub secs: u32,
    /// Media kind.
    pub kind: Kind,
}

/// Longest path (and md5 text) a record can hold; longer ones are refused. A client frame is at most
/// 2048 bytes, so no real share comes near it.
pub const MAX_TEXT_LEN: usize = u16::MAX as usize;

/// Dead records tolerated before [`Index::compact`] is worthwhile (and at least as many as live files).
pub const COMPACT_MIN_DEAD: usize = 65_536;

const FLAG_DEAD: u8 = 0x80;
const FLAG_MD5_TEXT: u8 = 0x40;
const KIND_MASK: u8 = 0x07;

const FLAG_WIDE: u8 = 0x20;

/// One file record: 40 bytes, no heap allocation of its own. Size (below 1 TiB), bitrate and sample rate
/// (below 65,536) are packed; a file whose values do not fit is flagged and keeps them in a side table.
#[derive(Debug, Clone, Copy)]
struct Rec {
    /// Hex md5 bytes, or for a text md5 its arena offset (bytes 0..4) and length (bytes 4..6).
    md5: [u8; 16],
    size_lo: u32,
    path_off: u32,
    owner: u32,
    secs: u32,
    freq: u16,
    bitrate: u16,
    path_len: u16,
    flags: u8,
    size_hi: u8,
}

/// Exact values of a flagged record.
#[derive(Debug, Clone, Copy)]
struct Wide {
    size: u64,
    bitrate: u32,
    freq: u32,
}

impl Rec {
    fn md5_text_span(&self) -> (usize, usize) {
        let m = &self.md5;
        let off = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize;
        (off, off + usize::from(u16::from_le_bytes([m[4], m[5]])))
    }

    fn path_span(&self) -> (usize, usize) {
        let off = self.path_off as usize;
        (off, off + usize::from(self.path_len))
    }

    fn is_dead(&self) -> bool {
        self.flags & FLAG_DEAD != 0
    }

    /// Packs the numbers; false (and the record flagged) when they need the side table.
    fn pack(&mut self, size: u64, bitrate: u32, freq: u32) -> bool {
        match (u16::try_from(bitrate), u16::try_from(freq), size >> 40) {
            (Ok(b), Ok(f), 0) => {
                self.size_lo = size as u32;
                self.size_hi = (size >> 32) as u8;
                self.bitrate = b;
                self.freq = f;
                true
            }
            _ => {
                self.flags |= FLAG_WIDE;
                false
            }
        }
    }
}

fn kind_code(k: Kind) -> u8 {
    match k {
        Kind::Mp3 => 0,
        Kind::Audio => 1,
        Kind::Video => 2,
        Kind::Image => 3,
        Kind::Text => 4,
        Kind::Application => 5,
    }
}

fn kind_of(flags: u8) -> Kind {
    match flags & KIND_MASK {
        0 => Kind::Mp3,
        1 => Kind::Audio,
        2 => Kind::Video,
        3 => Kind::Image,
        4 => Kind::Text,
        _ => Kind::Application,
    }
}

/// What [`Index::memory`] reports, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct IndexMemory {
    /// The fixed-size records.
    pub records: usize,
    /// Paths and non-hex md5 tokens.
    pub text: usize,
    /// Posting lists with their keys.
    pub postings: usize,
    /// Owner slots and the side table of unpackable numbers.
    pub other: usize,
}

impl IndexMemory {
    /// Sum of the parts.
    pub fn total(&self) -> usize {
        self.records + self.text + self.postings + self.other
    }
}

/// Owner slots: records store a 32-bit slot; a slot is freed when its last live file goes (dead records
/// may still name it, but dead records are never read back).
#[derive(Debug, Default)]
struct Owners {
    conn: Vec<ConnId>,
    live: Vec<u32>,
    by_conn: HashMap<ConnId, u32>,
    free: Vec<u32>,
}

impl Owners {
    fn take(&mut self, c: ConnId) -> u32 {
        if let Some(&s) = self.by_conn.get(&c) {
            self.live[s as usize] += 1;
            return s;
        }
        let s = match self.free.pop() {
            Some(s) => {
                self.conn[s as usize] = c;
                self.live[s as usize] = 1;
                s
            }
            None => {
                self.conn.push(c);
                self.live.push(1);
                (self.conn.len() - 1) as u32
            }
        };
        self.by_conn.insert(c, s);
        s
    }

    fn release(&mut self, s: u32) {
        let n = &mut self.live[s as usize];
        *n -= 1;
        if *n == 0 {
            self.by_conn.remove(&self.conn[s as usize]);
            self.free.push(s);
        }
    }
}

/// The file table plus postings.
#[derive(Debug, Default)]
pub struct Index {
    files: Vec<Rec>,
    text: String,
    live: usize,
    owners: Owners,
    postings: HashMap<Box<str>, Postings>,
    /// Numbers of records flagged `FLAG_WIDE`, by id.
    wide: HashMap<u32, Wide>,
    total_bytes: u64,
}

impl Index {
    /// Number of shared files.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Sum of shared sizes in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Size, bitrate and sample rate of record `id`.
    fn numbers(&self, id: u32, r: &Rec) -> (u64, u32, u32) {
        if r.flags & FLAG_WIDE != 0 {
            let w = self.wide.get(&id).copied().unwrap_or(Wide {
                size: 0,
                bitrate: 0,
                freq: 0,
            });
            (w.size, w.bitrate, w.freq)
        } else {
            (
                u64::from(r.size_hi) << 32 | u64::from(r.size_lo),
                r.bitrate.into(),
                r.freq.into(),
            )
        }
    }

    fn view(&self, id: u32, r: &Rec) -> FileView<'_> {
        let (size, bitrate, freq) = self.numbers(id, r);
        let (a, b) = r.path_span();
        let md5 = if r.flags & FLAG_MD5_TEXT != 0 {
            let (m, n) = r.md5_text_span();
            Md5Field::Text(self.text.get(m..n).unwrap_or(""))
        } else {
            Md5Field::Hex(r.md5)
        };
        FileView {
            owner: self.owners.conn[r.owner as usize],
            path: self.text.get(a..b).unwrap_or(""),
            md5,
            size,
            bitrate,
            freq,
            secs: r.secs,
            kind: kind_of(r.flags),
        }
    }

    /// A live file by id.
    pub fn get(&self, id: FileId) -> Option<FileView<'_>> {
        let r = self.files.get(id.0 as usize)?;
        (!r.is_dead()).then(|| self.view(id.0, r))
    }

    /// The path of a live file.
    pub fn path(&self, id: FileId) -> Option<&str> {
        let r = self.files.get(id.0 as usize).filter(|r| !r.is_dead())?;
        let (a, b) = r.path_span();
        self.text.get(a..b)
    }

    /// Appends `s` to the arena; `None` when the arena would pass 4 GiB or `s` is too long.
    fn put_text(&mut self, s: &str) -> Option<(u32, u16)> {
        let off = u32::try_from(self.text.len()).ok()?;
        let len = u16::try_from(s.len()).ok()?;
        u32::try_from(self.text.len() + s.len()).ok()?;
        self.text.push_str(s);
        Some((off, len))
    }

    /// Adds a file and indexes its words; `None` when the id space or the text arena (4 GiB) is full, or
    /// a text is longer than [`MAX_TEXT_LEN`].
    pub fn insert(&mut self, f: NewFile<'_>) -> Option<FileId> {
        let id = u32::try_from(self.files.len())
            .ok()
            .filter(|n| *n < u32::MAX)?;
        let rollback = self.text.len();
        let (path_off, path_len) = self.put_text(f.path)?;
        let mut flags = kind_code(f.kind);
        let md5 = match hex_decode(f.md5) {
            Some(b) => b,
            None => {
                let Some((off, len)) = self.put_text(f.md5) else {
                    self.text.truncate(rollback);
                    return None;
                };
                flags |= FLAG_MD5_TEXT;
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&off.to_le_bytes());
                b[4..6].copy_from_slice(&len.to_le_bytes());
                b
            }
        };
        for w in path_words(f.path) {
            match self.postings.get_mut(w.as_str()) {
                Some(list) => {
                    list.push(id);
                }
                None => {
                    let mut list = Postings::default();
                    list.push(id);
                    self.postings.insert(w.into_boxed_str(), list);
                }
            }
        }
        let owner = self.owners.take(f.owner);
        let mut rec = Rec {
            md5,
            size_lo: 0,
            path_off,
            owner,
            secs: f.secs,
            freq: 0,
            bitrate: 0,
            path_len,
            flags,
            size_hi: 0,
        };
        if !rec.pack(f.size, f.bitrate, f.freq) {
            let wide = Wide {
                size: f.size,
                bitrate: f.bitrate,
                freq: f.freq,
            };
            self.wide.insert(id, wide);
        }
        self.files.push(rec);
        self.total_bytes += f.size;
        self.live += 1;
        Some(FileId(id))
    }

    /// Removes a file (tombstones it); returns whether it was live.
    pub fn remove(&mut self, id: FileId) -> bool {
        let Some(r) = self.files.get_mut(id.0 as usize).filter(|r| !r.is_dead()) else {
            return false;
        };
        r.flags |= FLAG_DEAD;
        let r = *r;
        let (size, _, _) = self.numbers(id.0, &r);
        if r.flags & FLAG_WIDE != 0 {
            self.wide.remove(&id.0);
        }
        let owner = r.owner;
        self.live -= 1;
        self.total_bytes -= size;
        self.owners.release(owner);
        true
    }

    /// True when enough records are dead that [`Index::compact`] should run.
    pub fn needs_compaction(&self) -> bool {
        let dead = self.files.len() - self.live;
        dead >= COMPACT_MIN_DEAD && dead >= self.live
    }

    /// Renumbers the live files densely, in their current order (so postings stay sorted), rewrites the
    /// text arena and the postings, and returns `remap[old id] = new id` (`u32::MAX` for dead records).
    pub fn compact(&mut self) -> Vec<u32> {
        let mut remap = vec![u32::MAX; self.files.len()];
        let old = std::mem::take(&mut self.files);
        let old_text = std::mem::take(&mut self.text);
        self.files = Vec::with_capacity(self.live);
        let mut wide = HashMap::with_capacity(self.wide.len());
        for (i, mut r) in old.into_iter().enumerate() {
            if r.is_dead() {
                continue;
            }
            remap[i] = self.files.len() as u32;
            if r.flags & FLAG_WIDE != 0 {
                if let Some(w) = self.wide.remove(&(i as u32)) {
                    wide.insert(remap[i], w);
                }
            }
            // Offsets only shrink, so they still fit in 32 bits.
            let (a, b) = r.path_span();
            r.path_off = self.text.len() as u32;
            self.text.push_str(old_text.get(a..b).unwrap_or(""));
            if r.flags & FLAG_MD5_TEXT != 0 {
                let (m, n) = r.md5_text_span();
                r.md5[..4].copy_from_slice(&(self.text.len() as u32).to_le_bytes());
                self.text.push_str(old_text.get(m..n).unwrap_or(""));
            }
            self.files.push(r);
        }
        self.text.shrink_to_fit();
        self.wide = wide;
        self.postings = std::mem::take(&mut self.postings)
            .into_iter()
            .filter_map(|(w, list)| {
                let list = list.rebuild(&remap);
                (!list.is_empty()).then_some((w, list))
            })
            .collect();
        remap
    }

    /// Files matching `q`'s words, kind and numeric filters, for which `accept` (owner-based rules: own
    /// files, firewall pairs, link speed) is true; at most `q.max_results`, oldest share first.
    pub fn search(
        &self,
        q: &Query,
        mut accept: impl FnMut(&FileView<'_>) -> bool,
    ) -> Vec<(FileId, FileView<'_>)> {
        let mut lists: Vec<&Postings> = Vec::with_capacity(q.include.len());
        for w in &q.include {
            match self.postings.get(w.as_str()) {
                Some(l) => lists.push(l),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|l| l.len());
        let Some((first, rest)) = lists.split_first() else {
            return Vec::new();
        };
        let mut others: Vec<Cursor<'_>> = rest.iter().map(|l| l.cursor()).collect();
        let mut excluded: Vec<Cursor<'_>> = q
            .exclude
            .iter()
            .filter_map(|w| self.postings.get(w.as_str()))
            .map(|l| l.cursor())
            .collect();
        let num_ok = |c: Option<(Cmp, u64)>, v: u64| c.is_none_or(|(c, n)| c.test(v, n));
        let mut out = Vec::new();
        let mut candidates = first.cursor();
        let mut target = 0u32;
        'search: while out.len() < q.max_results {
            let Some(id) = candidates.seek(target) else {
                break;
            };
            // Leapfrog: when another list has nothing at `id`, the next candidate is its next id.
            for c in others.iter_mut() {
                match c.seek(id) {
                    None => break 'search,
                    Some(x) if x != id => {
                        target = x;
                        continue 'search;
                    }
                    Some(_) => {}
                }
            }
            // Ids stay below u32::MAX (see `insert`).
            target = id + 1;
            if excluded.iter_mut().any(|c| c.seek(id) == Some(id)) {
                continue;
            }
            let Some(r) = self.files.get(id as usize).filter(|r| !r.is_dead()) else {
                continue;
            };
            let (size, bitrate, freq) = self.numbers(id, r);
            if !(q.kind.accepts(kind_of(r.flags))
                && num_ok(q.bitrate, bitrate.into())
                && num_ok(q.freq, freq.into())
                && num_ok(q.size, size)
                && num_ok(q.duration, r.secs.into()))
            {
                continue;
            }
            let f = self.view(id, r);
            if accept(&f) {
                out.push((FileId(id), f));
            }
        }
        out
    }

    /// Bytes the index uses, by part (for the benchmark's memory-per-file figure). The record table and
    /// the text arena count their used length: their unused capacity is never touched, so not resident.
    pub fn memory(&self) -> IndexMemory {
        IndexMemory {
            records: self.files.len() * size_of::<Rec>(),
            text: self.text.len(),
            postings: self
                .postings
                .iter()
                .map(|(k, v)| k.len() + v.heap_bytes() + size_of::<(Box<str>, Postings)>() + 1)
                .sum(),
            other: self.owners.conn.capacity() * 24 + self.wide.capacity() * 40,
        }
    }
}

/// True when `text` contains the whole word `w` (used by tests and by callers without an index).
pub fn has_word(text: &str, w: &str) -> bool {
    words(text).any(|x| x == w)
}

#[cfg(test)]
mod tests {
    use super::super::search::parse;
    use super::*;

    fn rec(owner: u64, path: &str, bitrate: u32) -> NewFile<'_> {
        NewFile {
            owner: ConnId(owner),
            path,
            md5: "00000000000000000000000000000000",
            size: 1000,
            bitrate,
            freq: 44100,
            secs: 200,
            kind: Kind::Mp3,
        }
    }

    #[test]
    fn whole_word_and_and_exclusion() {
        assert_eq!(size_of::<Rec>(), 40, "the record stays packed");
        let mut ix = Index::default();
        ix.insert(rec(1, r"C:\mp3\Beatles - Hey Jude.mp3", 128));
        ix.insert(rec(1, r"C:\mp3\Cowboy Junkies - Sweet Jane.mp3", 192));
        let b = ix
            .insert(rec(2, r"C:\mp3\Beatles - Let It Be (live).mp3", 320))
            .unwrap();
        fn names_in(ix: &Index, q: &str) -> Vec<String> {
            let q = parse(q, 100).unwrap();
            ix.search(&q, |_| true)
                .into_iter()
                .map(|(_, f)| f.path.to_string())
                .collect()
        }
        assert!(
            names_in(&ix, r#"FILENAME CONTAINS "cow""#).is_empty(),
            "no substring match"
        );
        assert_eq!(names_in(&ix, r#"FILENAME CONTAINS "cowboy""#).len(), 1);
        assert_eq!(
            names_in(
                &ix,
                r#"FILENAME CONTAINS "beatles" FILENAME CONTAINS "jude""#
            )
            .len(),
            1
        );
        assert_eq!(
            names_in(&ix, r#"FILENAME CONTAINS "beatles -live""#).len(),
            1
        );
        assert_eq!(
            names_in(
                &ix,
                r#"FILENAME CONTAINS "beatles" FILENAME EXCLUDES "jude""#
            )
            .len(),
            1
        );
        assert_eq!(
            names_in(&ix, r#"FILENAME CONTAINS "mp3" BITRATE "AT LEAST" 192"#).len(),
            2
        );
        assert_eq!(
            names_in(&ix, r#"FILENAME CONTAINS "mp3" MAX_RESULTS 1"#).len(),
            1
        );
        assert!(ix.remove(b));
        assert!(!ix.remove(b));
        assert!(names_in(&ix, r#"FILENAME CONTAINS "live""#).is_empty());
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.total_bytes(), 2000);
        assert!(has_word("Hey Jude", "jude"));
        for m in [
            "0123456789abcdef0123456789abcdef",
            "0123456789ABCDEF0123456789ABCDEF",
            "x-12",
            "",
        ] {
            let id = ix
                .insert(NewFile {
                    md5: m,
                    ..rec(3, "m.mp3", 1)
                })
                .unwrap();
            assert_eq!(ix.get(id).unwrap().md5.to_string(), m);
        }
        assert_eq!(ix.get(FileId(0)).unwrap().md5, Md5Field::Hex([0; 16]));
    }

    #[test]
    fn compaction_keeps_search_results_and_order() {
        let mut ix = Index::default();
        let ids: Vec<FileId> = (0..10)
            .map(|i| {
                ix.insert(rec(1, &format!("song {i} common.mp3"), 128))
                    .unwrap()
            })
            .collect();
        for id in ids.iter().step_by(2) {
            ix.remove(*id);
        }
        let remap = ix.compact();
        assert_eq!(remap[1], 0);
        assert_eq!(remap[0], u32::MAX);
        assert_eq!(ix.len(), 5);
        let q = parse(r#"FILENAME CONTAINS "common""#, 100).unwrap();
        let found: Vec<String> = ix
            .search(&q, |_| true)
            .into_iter()
            .map(|(_, f)| f.path.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "song 1 common.mp3",
                "song 3 common.mp3",
                "song 5 common.mp3",
                "song 7 common.mp3",
                "song 9 common.mp3"
            ]
        );
        let new_id = FileId(remap[3]);
        assert_eq!(ix.get(new_id).unwrap().path, "song 3 common.mp3");
        assert!(ix.remove(new_id));
        assert_eq!(ix.insert(rec(1, "x.mp3", 1)), Some(FileId(5)));
    }

    mod model {
        use super::super::super::search::parse;
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(u64, Vec<u8>, bool),
            Remove(usize),
            Compact,
            Search(u8, Option<u8>),
        }

        const WORDS: [&str; 6] = ["red", "blue", "green", "x1", "yy", "zed"];

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u64..4, proptest::collection::vec(0u8..6, 1..4), any::<bool>())
                    .prop_map(|(o, w, t)| Op::Insert(o, w, t)),
                2 => (0usize..64).prop_map(Op::Remove),
                1 => Just(Op::Compact),
                2 => (0u8..6, proptest::option::of(0u8..6)).prop_map(|(a, b)| Op::Search(a, b)),
            ]
        }

        proptest! {
            // The index agrees with a plain list of (owner, path, md5) under any mix of inserts,
            // removals, compactions and searches (ids are remapped like the server does).
            #[test]
            fn index_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..80)) {
                let mut ix = Index::default();
                let mut model: Vec<(FileId, u64, String, String, u64, u32)> = Vec::new();
                for (n, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Insert(owner, ws, text_md5) => {
                            let name: Vec<&str> = ws.iter().map(|&w| WORDS[w as usize]).collect();
                            let path = format!("d\\{} {n}.mp3", name.join(" "));
                            let md5 = if text_md5 { format!("m-{n}") } else { format!("{n:032x}") };
                            // Every third file has numbers too wide to pack.
                            let (size, freq) = if n % 3 == 0 { (1 << 41 | n as u64, 96_000) } else { (n as u64, 44_100) };
                            let id = ix.insert(NewFile { owner: ConnId(owner), path: &path, md5: &md5, size, freq, ..rec(0, "", 1) }).unwrap();
                            model.push((id, owner, path, md5, size, freq));
                        }
                        Op::Remove(i) => {
                            if !model.is_empty() {
                                let (id, ..) = model.remove(i % model.len());
                                prop_assert!(ix.remove(id));
                                prop_assert!(!ix.remove(id));
                            }
                        }
                        Op::Compact => {
                            let remap = ix.compact();
                            for m in model.iter_mut() {
                                m.0 = FileId(remap[m.0.0 as usize]);
                            }
                        }
                        Op::Search(a, b) => {
                            let mut q = format!("FILENAME CONTAINS \"{}\"", WORDS[a as usize]);
                            if let Some(b) = b {
                                q.push_str(&format!(" FILENAME EXCLUDES \"{}\"", WORDS[b as usize]));
                            }
                            let q = parse(&q, 5).unwrap();
                            let got: Vec<FileId> = ix.search(&q, |_| true).into_iter().map(|(id, _)| id).collect();
                            let want: Vec<FileId> = model
                                .iter()
                                .filter(|m| q.include.iter().all(|w| has_word(&m.2, w)))
                                .filter(|m| !q.exclude.iter().any(|w| has_word(&m.2, w)))
                                .map(|m| m.0)
                                .take(5)
                                .collect();
                            prop_assert_eq!(got, want);
                        }
                    }
                    prop_assert_eq!(ix.len(), model.len());
                    let total: u64 = model.iter().map(|m| m.4).sum();
                    prop_assert_eq!(ix.total_bytes(), total);
                    for (id, owner, path, md5, size, freq) in &model {
                        let f = ix.get(*id).unwrap();
                        prop_assert_eq!((f.size, f.freq, f.bitrate), (*size, *freq, 1));
                        prop_assert_eq!(f.owner, ConnId(*owner));
                        prop_assert_eq!(f.path, path.as_str());
                        prop_assert_eq!(f.md5.to_string(), md5.clone());
                    }
                }
            }
        }
    }
}
