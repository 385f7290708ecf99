//! The server's file table and its inverted whole-word index (notes §2: matching is by whole word).
//!
//! Built for a million shared files in well under 100 bytes each:
//! - every file is one fixed 48-byte `Rec` in a slab indexed by its [`FileId`]; its path (and an md5
//!   token that is not 32 hex digits) live in one shared text arena, so a file costs no allocation of its
//!   own; the owner is a 32-bit slot, not the 64-bit connection id;
//! - each word's posting list ([`Postings`]) holds the ids of the files containing it as varint gaps with
//!   skip points. Ids grow monotonically, so lists stay sorted by construction;
//! - removal only tombstones the record (postings and arena text stay); once dead records are both
//!   numerous and at least as many as live ones, a compaction renumbers the live files in order into a
//!   second generation (records, arena, every list re-encoded through the old-to-new map). It is
//!   incremental: each [`Index::compact_step`] does a bounded slice of the work while the current
//!   generation keeps serving searches, inserts and removals (removals are mirrored into the copy, shares
//!   made meanwhile are copied last), then one step switches generations; ids of the old one stay valid
//!   (translated) until their holders have replaced them, so no call ever pauses for the whole index.
//!
//! A search walks the rarest included word's list and seeks the other lists' cursors (and the excluded
//! words') forward to each candidate, stopping as soon as it has `MAX_RESULTS` hits: its work and memory
//! depend on the rarest list and the result cap, not on the size of the index.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::postings::{Cursor, Postings, RebuildPos};
use super::search::{path_words, words, Cmp, Kind, Query};
use super::ConnId;

/// Identifies one shared file inside the server: the top bit names the generation, the rest the record's
/// slot in it. Stable until a compaction switches generations; an id of the previous generation is
/// still accepted (translated) until [`Index::end_translation`].
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

/// Dead records tolerated before a compaction is worthwhile (and at least as many as live files).
pub const COMPACT_MIN_DEAD: usize = 65_536;

/// The bit of a [`FileId`] that names its generation; the other 31 bits are the record's slot.
const GEN_BIT: u32 = 1 << 31;

/// Records a generation holds at most.
const MAX_SLOTS: u32 = GEN_BIT - 1;

/// Bytes of a retired generation's text arena given back per unit of step budget (its records go
/// 1 per unit): big buffers shrink a slice at a time, so no step pays for unmapping them whole.
const FREE_TEXT_PER_UNIT: usize = 32;

/// Units charged for giving back one posting list of a retired generation (plus one per 64 entries):
/// two buffers freed at scattered addresses cost about as much as 6–8 records copied (measured at 1M
/// files: ~0.45 µs per list against ~0.07 µs per record). Charged 1 before, 4,096 of them made the longest
/// step of a compaction (1.5–3 ms of CPU).
const FREE_LIST_UNITS: usize = 8;

/// Units charged for freeing one word of a retired generation's word table.
const FREE_NAME_UNITS: usize = 2;

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
    /// Owner slots, the side table of unpackable numbers, and a compaction's id map.
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

/// One generation of the file table: records by slot, their text, and the words' posting lists (of slots).
#[derive(Debug, Default)]
struct Gen {
    files: Vec<Rec>,
    text: String,
    /// Word → its number, which indexes `names` and `lists` (numbers let a compaction walk the lists
    /// across steps without holding a borrow of the table).
    words: HashTable<u32>,
    names: Vec<Box<str>>,
    lists: Vec<Postings>,
    /// Numbers of records flagged `FLAG_WIDE`, by slot.
    wide: HashMap<u32, Wide>,
    hasher: RandomState,
}

impl Gen {
    fn list(&self, w: &str) -> Option<&Postings> {
        let h = self.hasher.hash_one(w);
        let i = *self.words.find(h, |&i| &*self.names[i as usize] == w)?;
        self.lists.get(i as usize)
    }

    /// Adds list `list` for the new word `w`.
    fn add_word(&mut self, w: &str, list: Postings) -> &mut Postings {
        let i = self.lists.len() as u32;
        self.names.push(w.into());
        self.lists.push(list);
        let (names, hasher) = (&self.names, &self.hasher);
        self.words.insert_unique(hasher.hash_one(w), i, |&j| {
            hasher.hash_one(&*names[j as usize])
        });
        &mut self.lists[i as usize]
    }

    fn list_mut(&mut self, w: &str) -> &mut Postings {
        let h = self.hasher.hash_one(w);
        let names = &self.names;
        match self.words.find(h, |&i| &*names[i as usize] == w) {
            Some(&i) => &mut self.lists[i as usize],
            None => self.add_word(w, Postings::default()),
        }
    }

    /// Size, bitrate and sample rate of the record in `slot`.
    fn numbers(&self, slot: u32, r: &Rec) -> (u64, u32, u32) {
        if r.flags & FLAG_WIDE != 0 {
            let w = self.wide.get(&slot).copied().unwrap_or(Wide {
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

    /// Appends `s` to the arena; `None` when the arena would pass 4 GiB or `s` is too long.
    fn put_text(&mut self, s: &str) -> Option<(u32, u16)> {
        let off = u32::try_from(self.text.len()).ok()?;
        let len = u16::try_from(s.len()).ok()?;
        u32::try_from(self.text.len() + s.len()).ok()?;
        self.text.push_str(s);
        Some((off, len))
    }

    /// Copies record `r` of generation `from` (texts and side-table numbers included) to the end of this
    /// one; returns its new slot. Offsets only shrink in a compaction, so they still fit in 32 bits.
    fn copy_from(&mut self, from: &Gen, slot: u32, mut r: Rec) -> u32 {
        let new = self.files.len() as u32;
        let (a, b) = r.path_span();
        r.path_off = self.text.len() as u32;
        self.text.push_str(from.text.get(a..b).unwrap_or(""));
        if r.flags & FLAG_MD5_TEXT != 0 {
            let (m, n) = r.md5_text_span();
            r.md5[..4].copy_from_slice(&(self.text.len() as u32).to_le_bytes());
            self.text.push_str(from.text.get(m..n).unwrap_or(""));
        }
        if r.flags & FLAG_WIDE != 0 {
            if let Some(w) = from.wide.get(&slot) {
                self.wide.insert(new, *w);
            }
        }
        self.files.push(r);
        new
    }

    fn path_of(&self, r: &Rec) -> &str {
        let (a, b) = r.path_span();
        self.text.get(a..b).unwrap_or("")
    }

    fn memory(&self) -> IndexMemory {
        IndexMemory {
            records: self.files.len() * size_of::<Rec>(),
            text: self.text.len(),
            postings: self
                .names
                .iter()
                .zip(&self.lists)
                .map(|(k, v)| k.len() + v.heap_bytes() + size_of::<(Box<str>, Postings, u32)>() + 1)
                .sum(),
            other: self.wide.capacity() * 40,
        }
    }
}

/// Where a compaction stands.
#[derive(Debug)]
enum Phase {
    /// Copying the live records below `Build::end`, slot by slot.
    Records,
    /// Re-encoding list `next` (of those that existed when this phase began, `lists_end`) through the
    /// remap, `at` being the position reached in it and `out` the part written.
    Postings {
        next: usize,
        lists_end: usize,
        at: RebuildPos,
        out: Postings,
    },
    /// Copying the records shared since the compaction began, with their words.
    Tail,
}

/// A compaction in progress: the next generation, built a bounded slice per step while the current one
/// keeps serving every search, insert and removal.
#[derive(Debug)]
struct Build {
    next: Gen,
    /// Current slot → next slot (`u32::MAX` for records already dead when copied), for the slots copied.
    remap: Vec<u32>,
    /// Slots below it existed when the compaction began; later ones are copied in the tail phase.
    end: u32,
    phase: Phase,
}

/// A replaced generation (and a finished translation's remap), given back a slice per step.
#[derive(Debug, Default)]
struct Garbage(Gen, Vec<u32>);

impl Garbage {
    /// Frees about `budget` units of it; returns the unused budget. A piece that costs more than what is
    /// left waits for the next step unless nothing was freed yet in this one (so every step progresses).
    fn free_some(&mut self, mut budget: usize) -> usize {
        let full = budget;
        let g = &mut self.0;
        while budget > 0 {
            if let Some(l) = g.lists.last() {
                let cost = FREE_LIST_UNITS + l.len() / 64;
                if cost > budget && budget < full {
                    return 0;
                }
                g.lists.pop();
                budget -= cost.min(budget);
                continue;
            }
            if !g.names.is_empty() {
                if FREE_NAME_UNITS > budget && budget < full {
                    return 0;
                }
                g.names.pop();
                budget -= FREE_NAME_UNITS.min(budget);
                continue;
            }
            if !g.files.is_empty() {
                let keep = g.files.len().saturating_sub(budget);
                budget -= g.files.len() - keep;
                g.files.truncate(keep);
                g.files.shrink_to_fit();
                continue;
            }
            if !self.1.is_empty() {
                let keep = self.1.len().saturating_sub(budget.saturating_mul(16));
                budget -= (self.1.len() - keep).div_ceil(16).min(budget);
                self.1.truncate(keep);
                self.1.shrink_to_fit();
                continue;
            }
            if !g.text.is_empty() {
                let keep = g
                    .text
                    .len()
                    .saturating_sub(budget.saturating_mul(FREE_TEXT_PER_UNIT));
                budget -= (g.text.len() - keep)
                    .div_ceil(FREE_TEXT_PER_UNIT)
                    .min(budget);
                // Arena text is cut at a byte that starts a character (paths may be any UTF-8).
                let mut keep = keep;
                while !g.text.is_char_boundary(keep) {
                    keep -= 1;
                }
                g.text.truncate(keep);
                g.text.shrink_to_fit();
                continue;
            }
            *g = Gen::default();
            break;
        }
        budget
    }

    fn is_empty(&self) -> bool {
        self.1.is_empty()
            && self.0.lists.is_empty()
            && self.0.names.is_empty()
            && self.0.files.is_empty()
            && self.0.text.is_empty()
    }
}

/// The file table plus postings.
///
/// Compaction is incremental: [`Index::start_compaction`] begins building the next generation and every
/// [`Index::compact_step`] does a bounded amount of that work, so no single call holds the server for
/// long. When a step switches to the new generation, ids of the old one stay valid (they are
/// translated through the remap) until the caller has replaced the ids it holds with
/// [`Index::current_id`] and calls [`Index::end_translation`].
#[derive(Debug, Default)]
pub struct Index {
    cur: Gen,
    /// [`GEN_BIT`] or 0: the generation bit of the ids handed out now.
    gen: u32,
    live: usize,
    owners: Owners,
    total_bytes: u64,
    build: Option<Box<Build>>,
    /// After a switch: previous slot → current slot (`u32::MAX` for dropped records), until
    /// [`Index::end_translation`].
    retired: Option<Vec<u32>>,
    garbage: Option<Box<Garbage>>,
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

    /// The current slot of `id` (ids of the previous generation are translated while allowed).
    fn slot(&self, id: FileId) -> Option<u32> {
        let s = id.0 & MAX_SLOTS;
        if id.0 & GEN_BIT == self.gen {
            return Some(s);
        }
        let m = *self.retired.as_ref()?.get(s as usize)?;
        (m != u32::MAX).then_some(m)
    }

    fn id_of(&self, slot: u32) -> FileId {
        FileId(slot | self.gen)
    }

    fn view(&self, slot: u32, r: &Rec) -> FileView<'_> {
        let (size, bitrate, freq) = self.cur.numbers(slot, r);
        let md5 = if r.flags & FLAG_MD5_TEXT != 0 {
            let (m, n) = r.md5_text_span();
            Md5Field::Text(self.cur.text.get(m..n).unwrap_or(""))
        } else {
            Md5Field::Hex(r.md5)
        };
        FileView {
            owner: self.owners.conn[r.owner as usize],
            path: self.cur.path_of(r),
            md5,
            size,
            bitrate,
            freq,
            secs: r.secs,
            kind: kind_of(r.flags),
        }
    }

    fn live_rec(&self, id: FileId) -> Option<(u32, &Rec)> {
        let s = self.slot(id)?;
        let r = self.cur.files.get(s as usize).filter(|r| !r.is_dead())?;
        Some((s, r))
    }

    /// A live file by id.
    pub fn get(&self, id: FileId) -> Option<FileView<'_>> {
        let (s, r) = self.live_rec(id)?;
        Some(self.view(s, r))
    }

    /// The path of a live file.
    pub fn path(&self, id: FileId) -> Option<&str> {
        let (_, r) = self.live_rec(id)?;
        Some(self.cur.path_of(r))
    }

    /// The id a live file has in the current generation (`id` itself unless it is from the previous
    /// one); `None` when the file is gone.
    pub fn current_id(&self, id: FileId) -> Option<FileId> {
        let (s, _) = self.live_rec(id)?;
        Some(self.id_of(s))
    }

    /// Adds a file and indexes its words; `None` when the id space or the text arena (4 GiB) is full, or
    /// a text is longer than [`MAX_TEXT_LEN`].
    pub fn insert(&mut self, f: NewFile<'_>) -> Option<FileId> {
        let slot = u32::try_from(self.cur.files.len())
            .ok()
            .filter(|n| *n < MAX_SLOTS)?;
        let g = &mut self.cur;
        let rollback = g.text.len();
        let (path_off, path_len) = g.put_text(f.path)?;
        let mut flags = kind_code(f.kind);
        let md5 = match hex_decode(f.md5) {
            Some(b) => b,
            None => {
                let Some((off, len)) = g.put_text(f.md5) else {
                    g.text.truncate(rollback);
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
            g.list_mut(&w).push(slot);
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
            g.wide.insert(slot, wide);
        }
        g.files.push(rec);
        self.total_bytes += f.size;
        self.live += 1;
        Some(self.id_of(slot))
    }

    /// Removes a file (tombstones it, in the generation being built too); returns whether it was live.
    pub fn remove(&mut self, id: FileId) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let Some(r) = self
            .cur
            .files
            .get_mut(slot as usize)
            .filter(|r| !r.is_dead())
        else {
            return false;
        };
        r.flags |= FLAG_DEAD;
        let r = *r;
        let (size, _, _) = self.cur.numbers(slot, &r);
        if r.flags & FLAG_WIDE != 0 {
            self.cur.wide.remove(&slot);
        }
        if let Some(b) = self.build.as_mut() {
            if let Some(&n) = b.remap.get(slot as usize).filter(|n| **n != u32::MAX) {
                if let Some(nr) = b.next.files.get_mut(n as usize) {
                    nr.flags |= FLAG_DEAD;
                }
                b.next.wide.remove(&n);
            }
        }
        self.live -= 1;
        self.total_bytes -= size;
        self.owners.release(r.owner);
        true
    }

    /// True when enough records are dead that a compaction should run.
    pub fn needs_compaction(&self) -> bool {
        let dead = self.cur.files.len() - self.live;
        dead >= COMPACT_MIN_DEAD && dead >= self.live
    }

    /// True while there is compaction work left for [`Index::compact_step`] (building the next
    /// generation or giving back the replaced one).
    pub fn compacting(&self) -> bool {
        self.build.is_some() || self.garbage.is_some()
    }

    /// True after a switch until [`Index::end_translation`]: ids of the previous generation are still
    /// accepted and no new compaction starts.
    pub fn translating(&self) -> bool {
        self.retired.is_some()
    }

    /// The caller holds no id of the previous generation any more (it replaced them all with
    /// [`Index::current_id`]); they stop being accepted.
    pub fn end_translation(&mut self) {
        // Megabytes at 1M files: given back in slices by later steps, not unmapped whole here.
        if let Some(r) = self.retired.take().filter(|r| !r.is_empty()) {
            self.garbage.get_or_insert_with(Box::default).1 = r;
        }
    }

    /// Begins a compaction (work is then done by [`Index::compact_step`]); false when one is running, the
    /// previous one's ids are still being translated, or its garbage is not given back yet.
    pub fn start_compaction(&mut self) -> bool {
        if self.build.is_some() || self.retired.is_some() || self.garbage.is_some() {
            return false;
        }
        let end = self.cur.files.len() as u32;
        // Capacities are upper bounds for what is copied below `end` plus an eighth for shares made
        // meanwhile: a reallocation of these tens of megabytes would be one long step (they are only
        // reserved, and pages never touched are never resident).
        let slack = |n: usize| n + n / 8 + 1024;
        let words = self.cur.names.len();
        let next = Gen {
            files: Vec::with_capacity(slack(self.live)),
            text: String::with_capacity(slack(self.cur.text.len())),
            words: HashTable::with_capacity(slack(words)),
            names: Vec::with_capacity(slack(words)),
            lists: Vec::with_capacity(slack(words)),
            ..Gen::default()
        };
        self.build = Some(Box::new(Build {
            next,
            remap: Vec::with_capacity(slack(end as usize)),
            end,
            phase: Phase::Records,
        }));
        true
    }

    /// Does at most about `budget` units of compaction work (a unit is one record copied, one posting
    /// entry re-encoded, or a small piece of the replaced generation given back). Returns true when this
    /// step switched to the new generation: from then on new ids are handed out, and the caller must
    /// translate the ids it holds with [`Index::current_id`], then call [`Index::end_translation`].
    pub fn compact_step(&mut self, budget: usize) -> bool {
        let mut budget = budget.max(1);
        if let Some(g) = self.garbage.as_mut() {
            budget = g.free_some(budget);
            if g.is_empty() {
                self.garbage = None;
            }
        }
        let Some(b) = self.build.as_mut() else {
            return false;
        };
        let cur = &self.cur;
        while budget > 0 {
            match &mut b.phase {
                Phase::Records => {
                    let from = b.remap.len();
                    let to = (from + budget).min(b.end as usize);
                    for (slot, r) in cur.files[from..to].iter().enumerate() {
                        let slot = (from + slot) as u32;
                        let n = if r.is_dead() {
                            u32::MAX
                        } else {
                            b.next.copy_from(cur, slot, *r)
                        };
                        b.remap.push(n);
                    }
                    budget -= to - from;
                    if to == b.end as usize {
                        b.phase = Phase::Postings {
                            next: 0,
                            lists_end: cur.lists.len(),
                            at: RebuildPos::default(),
                            out: Postings::default(),
                        };
                    }
                }
                Phase::Postings {
                    next,
                    lists_end,
                    at,
                    out,
                } => {
                    if *next >= *lists_end {
                        b.phase = Phase::Tail;
                        continue;
                    }
                    let (n, done) =
                        cur.lists[*next].rebuild_chunk(at, &b.remap, b.end, budget, out);
                    budget -= n.max(1).min(budget);
                    if done {
                        let mut list = std::mem::take(out);
                        if !list.is_empty() {
                            list.shrink_to_fit();
                            b.next.add_word(&cur.names[*next], list);
                        }
                        *next += 1;
                        *at = RebuildPos::default();
                    }
                }
                Phase::Tail => {
                    let from = b.remap.len();
                    if from == cur.files.len() {
                        break;
                    }
                    let slot = from as u32;
                    let r = cur.files[from];
                    let n = if r.is_dead() {
                        u32::MAX
                    } else {
                        let n = b.next.copy_from(cur, slot, r);
                        for w in path_words(cur.path_of(&r)) {
                            b.next.list_mut(&w).push(n);
                            budget = budget.saturating_sub(1);
                        }
                        n
                    };
                    b.remap.push(n);
                    budget = budget.saturating_sub(1);
                }
            }
        }
        if !matches!(b.phase, Phase::Tail) || b.remap.len() < self.cur.files.len() {
            return false;
        }
        let Some(b) = self.build.take() else {
            return false;
        };
        let Build { next, remap, .. } = *b;
        let old = std::mem::replace(&mut self.cur, next);
        self.garbage = Some(Box::new(Garbage(old, Vec::new())));
        self.retired = Some(remap);
        self.gen ^= GEN_BIT;
        true
    }

    /// Runs a whole compaction at once (tests and the benchmark's one-pass figure). The ids the caller
    /// holds must then be translated with [`Index::current_id`] before [`Index::end_translation`]; false
    /// when a compaction or a translation was already under way (nothing is done then).
    pub fn compact_now(&mut self) -> bool {
        if !self.start_compaction() {
            return false;
        }
        while !self.compact_step(usize::MAX) {}
        while self.compacting() {
            self.compact_step(usize::MAX);
        }
        true
    }

    /// Files matching `q`'s words, kind and numeric filters, for which `accept` (owner-based rules: own
    /// files, firewall pairs, link speed) is true; at most `q.max_results`, oldest share first.
    pub fn search(
        &self,
        q: &Query,
        mut accept: impl FnMut(&FileView<'_>) -> bool,
    ) -> Vec<(FileId, FileView<'_>)> {
        let g = &self.cur;
        let mut lists: Vec<&Postings> = Vec::with_capacity(q.include.len());
        for w in &q.include {
            match g.list(w) {
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
            .filter_map(|w| g.list(w))
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
            // Slots stay below MAX_SLOTS (see `insert`).
            target = id + 1;
            if excluded.iter_mut().any(|c| c.seek(id) == Some(id)) {
                continue;
            }
            let Some(r) = g.files.get(id as usize).filter(|r| !r.is_dead()) else {
                continue;
            };
            let (size, bitrate, freq) = g.numbers(id, r);
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
                out.push((self.id_of(id), f));
            }
        }
        out
    }

    /// Bytes the index uses, by part (for the benchmark's memory-per-file figure), a compaction's second
    /// generation included. The record table and the text arena count their used length: their unused
    /// capacity is never touched, so not resident.
    pub fn memory(&self) -> IndexMemory {
        let mut m = self.cur.memory();
        for g in self
            .build
            .as_ref()
            .map(|b| &b.next)
            .into_iter()
            .chain(self.garbage.as_ref().map(|g| &g.0))
        {
            let x = g.memory();
            m.records += x.records;
            m.text += x.text;
            m.postings += x.postings;
            m.other += x.other;
        }
        m.other += self.owners.conn.capacity() * 24
            + self.build.as_ref().map_or(0, |b| b.remap.capacity() * 4)
            + self.retired.as_ref().map_or(0, |r| r.capacity() * 4);
        m
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
        assert!(ix.compact_now());
        assert!(ix.translating());
        assert!(
            !ix.compact_now(),
            "no new compaction before the old ids are translated"
        );
        // Old ids still name the same files until the translation ends.
        assert_eq!(ix.get(ids[3]).unwrap().path, "song 3 common.mp3");
        assert_eq!(ix.get(ids[2]).map(|f| f.path), None);
        assert_eq!(ix.current_id(ids[2]), None);
        let new_id = ix.current_id(ids[3]).unwrap();
        assert_eq!(new_id.0 & MAX_SLOTS, 1, "renumbered densely in order");
        assert_ne!(new_id, ids[3]);
        ix.end_translation();
        assert_eq!(ix.get(ids[3]).map(|f| f.path), None, "old ids are gone");
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
        assert_eq!(ix.get(new_id).unwrap().path, "song 3 common.mp3");
        assert!(ix.remove(new_id));
        assert_eq!(
            ix.insert(rec(1, "x.mp3", 1)).map(|i| i.0 & MAX_SLOTS),
            Some(5)
        );
        assert!(ix.compacting(), "the remap is given back by a later step");
        ix.compact_step(usize::MAX);
        assert!(!ix.compacting());
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
            Start,
            Step(usize),
            Translate(usize),
            Search(u8, Option<u8>),
        }

        const WORDS: [&str; 6] = ["red", "blue", "green", "x1", "yy", "zed"];

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u64..4, proptest::collection::vec(0u8..6, 1..4), any::<bool>())
                    .prop_map(|(o, w, t)| Op::Insert(o, w, t)),
                2 => (0usize..64).prop_map(Op::Remove),
                1 => Just(Op::Compact),
                1 => Just(Op::Start),
                4 => (1usize..12).prop_map(Op::Step),
                2 => (1usize..8).prop_map(Op::Translate),
                2 => (0u8..6, proptest::option::of(0u8..6)).prop_map(|(a, b)| Op::Search(a, b)),
            ]
        }

        proptest! {
            // The index agrees with a plain list of (owner, path, md5) under any mix of inserts,
            // removals, searches and compactions: whole ones, and incremental ones whose small steps
            // interleave with everything else. Like the server, the model holds ids; after a switch it
            // translates them a few at a time (old and new ids mixed meanwhile) before ending the
            // translation.
            #[test]
            fn index_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..120)) {
                let mut ix = Index::default();
                let mut model: Vec<(FileId, u64, String, String, u64, u32)> = Vec::new();
                // Model entries not yet translated after the last switch.
                let mut untranslated: Vec<usize> = Vec::new();
                let translate = |ix: &Index, model: &mut Vec<(FileId, u64, String, String, u64, u32)>, i: usize| {
                    model[i].0 = ix.current_id(model[i].0).expect("a live file keeps an id");
                };
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
                                let i = i % model.len();
                                let (id, ..) = model.remove(i);
                                untranslated.retain(|&j| j != i);
                                for j in untranslated.iter_mut() {
                                    if *j > i {
                                        *j -= 1;
                                    }
                                }
                                prop_assert!(ix.remove(id));
                                prop_assert!(!ix.remove(id));
                            }
                        }
                        Op::Compact => {
                            if ix.compact_now() {
                                for i in 0..model.len() {
                                    translate(&ix, &mut model, i);
                                }
                                untranslated.clear();
                                ix.end_translation();
                            }
                        }
                        Op::Start => {
                            let busy = ix.compacting() || ix.translating();
                            prop_assert_eq!(ix.start_compaction(), !busy);
                        }
                        Op::Step(budget) => {
                            if ix.compact_step(budget) {
                                prop_assert!(untranslated.is_empty());
                                untranslated = (0..model.len()).collect();
                            }
                        }
                        Op::Translate(k) => {
                            if ix.translating() {
                                for _ in 0..k {
                                    if let Some(i) = untranslated.pop() {
                                        translate(&ix, &mut model, i);
                                    }
                                }
                                if untranslated.is_empty() {
                                    ix.end_translation();
                                }
                            }
                        }
                        Op::Search(a, b) => {
                            let mut q = format!("FILENAME CONTAINS \"{}\"", WORDS[a as usize]);
                            if let Some(b) = b {
                                q.push_str(&format!(" FILENAME EXCLUDES \"{}\"", WORDS[b as usize]));
                            }
                            let q = parse(&q, 5).unwrap();
                            let got: Vec<FileView<'_>> = ix.search(&q, |_| true).into_iter().map(|(_, f)| f).collect();
                            let want: Vec<&str> = model
                                .iter()
                                .filter(|m| q.include.iter().all(|w| has_word(&m.2, w)))
                                .filter(|m| !q.exclude.iter().any(|w| has_word(&m.2, w)))
                                .map(|m| m.2.as_str())
                                .take(5)
                                .collect();
                            prop_assert_eq!(got.iter().map(|f| f.path).collect::<Vec<_>>(), want);
                            // A result's id names the same file.
                            for (id, f) in ix.search(&q, |_| true) {
                                prop_assert_eq!(ix.path(id), Some(f.path));
                            }
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
                // Whatever was left running finishes, and everything still agrees afterwards.
                while ix.compacting() {
                    if ix.compact_step(7) {
                        untranslated = (0..model.len()).collect();
                    }
                }
                for i in untranslated {
                    translate(&ix, &mut model, i);
                }
                ix.end_translation();
                while ix.compacting() {
                    ix.compact_step(5);
                }
                prop_assert!(ix.start_compaction());
                while !ix.compact_step(3) {}
                for i in 0..model.len() {
                    translate(&ix, &mut model, i);
                }
                ix.end_translation();
                for (id, _, path, ..) in &model {
                    prop_assert_eq!(ix.path(*id), Some(path.as_str()));
                }
            }
        }
    }
}
