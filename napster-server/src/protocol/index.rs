//! The server's file table and its inverted whole-word index (notes §2: matching is by whole word).
//!
//! Every shared file gets a [`FileId`] that is never reused, so postings (the ids of the files holding a
//! word) stay sorted by construction: a search intersects them with binary searches, starting from the
//! shortest list, and a removal deletes the id from each of its words' lists.

use std::collections::HashMap;

use super::search::{path_words, words, Kind, Query};
use super::ConnId;

/// Identifies one shared file inside the server, unique for the server's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// The md5 token of a share. Clients almost always send 32 lower-case hex digits, kept here in 16 bytes;
/// anything else (OpenNap accepts any token) is kept as text, so the value is returned byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Md5Field {
    /// 32 lower-case hex digits.
    Hex([u8; 16]),
    /// Any other token.
    Text(Box<str>),
}

impl Md5Field {
    /// Stores `s` compactly when possible.
    pub fn new(s: &str) -> Md5Field {
        let lower_hex = s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut out = [0u8; 16];
        if lower_hex && hex_decode(s, &mut out) {
            Md5Field::Hex(out)
        } else {
            Md5Field::Text(s.into())
        }
    }

    /// Heap bytes used.
    pub fn heap_len(&self) -> usize {
        match self {
            Md5Field::Hex(_) => 0,
            Md5Field::Text(t) => t.len(),
        }
    }
}

fn hex_decode(s: &str, out: &mut [u8; 16]) -> bool {
    let b = s.as_bytes();
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (i, o) in out.iter_mut().enumerate() {
        match (nib(b[2 * i]), nib(b[2 * i + 1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

impl std::fmt::Display for Md5Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Md5Field::Hex(b) => b.iter().try_for_each(|x| write!(f, "{x:02x}")),
            Md5Field::Text(t) => f.write_str(t),
        }
    }
}

/// A shared file as the server keeps it.
#[derive(Debug, Clone)]
pub struct FileRec {
    /// The user sharing it.
    pub owner: ConnId,
    /// Path as shared.
    pub path: Box<str>,
    /// MD5 token as shared.
    pub md5: Md5Field,
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

/// Dead slots tolerated before [`Index::compact`] is worthwhile (and at least as many as live files).
pub const COMPACT_MIN_DEAD: usize = 65_536;

/// The file table plus postings.
///
/// Files live in a slab indexed by their id; ids grow monotonically so postings stay sorted by construction.
/// Removed files leave an empty slot until [`Index::compact`] renumbers the live ones (keeping their order)
/// and hands back the old-to-new mapping for the owners' tables.
#[derive(Debug, Default)]
pub struct Index {
    files: Vec<Option<FileRec>>,
    live: usize,
    postings: HashMap<Box<str>, Vec<FileId>>,
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

    /// A file by id.
    pub fn get(&self, id: FileId) -> Option<&FileRec> {
        self.files.get(id.0 as usize)?.as_ref()
    }

    /// Adds a file and indexes its words; `None` when the 32-bit id space is exhausted even after
    /// compaction (more than 4 billion slots).
    pub fn insert(&mut self, rec: FileRec) -> Option<FileId> {
        let id = FileId(
            u32::try_from(self.files.len())
                .ok()
                .filter(|n| *n < u32::MAX)?,
        );
        for w in path_words(&rec.path) {
            match self.postings.get_mut(w.as_str()) {
                Some(list) => list.push(id),
                None => {
                    self.postings.insert(w.into_boxed_str(), vec![id]);
                }
            }
        }
        self.total_bytes += rec.size;
        self.files.push(Some(rec));
        self.live += 1;
        Some(id)
    }

    /// Removes a file; returns it if it was present.
    pub fn remove(&mut self, id: FileId) -> Option<FileRec> {
        let rec = self.files.get_mut(id.0 as usize)?.take()?;
        self.live -= 1;
        self.total_bytes -= rec.size;
        for w in path_words(&rec.path) {
            if let Some(list) = self.postings.get_mut(w.as_str()) {
                if let Ok(pos) = list.binary_search(&id) {
                    list.remove(pos);
                }
                if list.is_empty() {
                    self.postings.remove(w.as_str());
                }
            }
        }
        Some(rec)
    }

    /// True when enough slots are dead that [`Index::compact`] should run.
    pub fn needs_compaction(&self) -> bool {
        let dead = self.files.len() - self.live;
        dead >= COMPACT_MIN_DEAD && dead >= self.live
    }

    /// Renumbers the live files densely, in their current order (so postings stay sorted), and returns
    /// `remap[old id] = new id` (`u32::MAX` for slots that were empty).
    pub fn compact(&mut self) -> Vec<u32> {
        let mut remap = vec![u32::MAX; self.files.len()];
        let old = std::mem::take(&mut self.files);
        self.files = Vec::with_capacity(self.live);
        for (i, slot) in old.into_iter().enumerate() {
            if let Some(rec) = slot {
                remap[i] = self.files.len() as u32;
                self.files.push(Some(rec));
            }
        }
        for list in self.postings.values_mut() {
            for id in list.iter_mut() {
                id.0 = remap[id.0 as usize];
            }
            list.shrink_to_fit();
        }
        remap
    }

    /// Files matching `q`'s words, kind and numeric filters, for which `accept` (owner-based rules: own
    /// files, firewall pairs, link speed) is true; at most `q.max_results`, oldest share first.
    pub fn search(
        &self,
        q: &Query,
        mut accept: impl FnMut(&FileRec) -> bool,
    ) -> Vec<(FileId, &FileRec)> {
        let mut lists: Vec<&Vec<FileId>> = Vec::with_capacity(q.include.len());
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
        let excluded: Vec<&Vec<FileId>> = q
            .exclude
            .iter()
            .filter_map(|w| self.postings.get(w.as_str()))
            .collect();
        let mut out = Vec::new();
        for &id in first.iter() {
            if out.len() >= q.max_results {
                break;
            }
            if !rest.iter().all(|l| l.binary_search(&id).is_ok())
                || excluded.iter().any(|l| l.binary_search(&id).is_ok())
            {
                continue;
            }
            let Some(f) = self.get(id) else {
                continue;
            };
            let num_ok =
                |c: Option<(super::search::Cmp, u64)>, v: u64| c.is_none_or(|(c, n)| c.test(v, n));
            if q.kind.accepts(f.kind)
                && num_ok(q.bitrate, f.bitrate.into())
                && num_ok(q.freq, f.freq.into())
                && num_ok(q.size, f.size)
                && num_ok(q.duration, f.secs.into())
                && accept(f)
            {
                out.push((id, f));
            }
        }
        out
    }

    /// Approximate heap bytes used by the index (for the benchmark's memory-per-file figure).
    pub fn heap_estimate(&self) -> usize {
        let file_bytes: usize = self
            .files
            .iter()
            .flatten()
            .map(|f| f.path.len() + f.md5.heap_len())
            .sum();
        let posting_bytes: usize = self
            .postings
            .iter()
            .map(|(k, v)| k.len() + v.capacity() * size_of::<FileId>() + 48)
            .sum();
        file_bytes + self.files.capacity() * size_of::<Option<FileRec>>() + posting_bytes
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

    fn rec(owner: u64, path: &str, bitrate: u32) -> FileRec {
        FileRec {
            owner: ConnId(owner),
            path: path.into(),
            md5: Md5Field::new(&"0".repeat(32)),
            size: 1000,
            bitrate,
            freq: 44100,
            secs: 200,
            kind: Kind::Mp3,
        }
    }

    #[test]
    fn whole_word_and_and_exclusion() {
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
        assert!(ix.remove(b).is_some());
        assert!(ix.remove(b).is_none());
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
            assert_eq!(Md5Field::new(m).to_string(), m);
        }
        assert_eq!(Md5Field::new(&"ab".repeat(16)).heap_len(), 0);
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
        assert_eq!(&*ix.get(new_id).unwrap().path, "song 3 common.mp3");
        assert!(ix.remove(new_id).is_some());
        assert_eq!(ix.insert(rec(1, "x.mp3", 1)), Some(FileId(5)));
    }
}
