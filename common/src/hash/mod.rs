//! Hashes and their text forms.
//!
//! API CONTRACT (other modules and crates code against these names):
//! - digests: [`Sha1Digest`], [`Md5Digest`], [`UuHash`], [`KzHash`], each with hex helpers and serde as hex text;
//! - [`HashKinds`] says which hashes to compute, [`Hashes`] holds the results;
//! - [`MultiHasher`] computes several hashes in one pass over the bytes (the total length must be known up front,
//!   because UUHash samples depend on it); [`hash_file`] reads a file once.
//!
//! Submodules: [`uuhash`](mod@uuhash) (KaZaA ContentHash and file id, `kazaa.md` §3), [`md5tree`] (the MD5 tree of
//! `kzhash`), [`napster`] (the MD5 of Napster share messages, and which bytes it covers), [`text`]
//! (base32/base64, Gnutella URNs, `sig2dat` and kzhash magnet links), [`md5fast`] (MD5).
//!
//! SHA-1 comes from the `sha1` crate, which detects SHA-NI at run time (`cpufeatures`) and uses the x86 SHA
//! instructions when present (checked: the benchmark binary contains `sha1rnds4`, and runs at 1.14x
//! `openssl dgst -sha1`); MD5 from [`md5fast`] (why not `md-5`: see there); the CRC-32 of UUHash from
//! `crc32fast` (PCLMULQDQ when present). [`hash_file`] reads 1 MiB at a time; with several whole-file
//! hashes on a large file it puts SHA-1 and the MD5s on two threads ([`Parallelism`]). Callers that
//! already hash several files in parallel should pass [`Parallelism::SingleThread`] to
//! [`hash_file_with`].
//!
//! ```
//! use common::hash::{HashKinds, MultiHasher, Sha1Digest, Sig2Dat};
//!
//! let data = b"abc";
//! let mut h = MultiHasher::new(HashKinds::ALL, data.len() as u64);
//! h.update(&data[..1]);
//! h.update(&data[1..]);
//! let hashes = h.finish();
//! let sha1 = hashes.sha1.unwrap();
//! assert_eq!(sha1.to_urn(), "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5");
//! assert_eq!(Sha1Digest::parse_urn("urn:sha1:vgmt4nsha2awvor6evyxqugcnsonbwe5"), Some(sha1));
//! let uu = hashes.uuhash.unwrap();
//! assert_eq!(uu.to_sig2dat(), "=kAFQmDzST7DWlj99KOF/cvz///8=");
//! assert_eq!(uu.file_id(), 16118);
//! let link = Sig2Dat::parse("sig2dat:///|File: abc.txt|Length: 3Bytes|UUHash: =kAFQmDzST7DWlj99KOF/cvz///8=");
//! assert_eq!(link.unwrap().uuhash, uu);
//! ```

pub mod md5fast;
pub mod md5tree;
pub mod napster;
pub mod text;
pub mod uuhash;

pub use md5tree::{md5_tree, Md5TreeHasher};
pub use napster::{napster_md5, NapsterMd5Hasher, NAPSTER_MD5_LEN};
pub use text::{base32_decode, base32_encode, base64_decode, base64_encode, KzMagnet, Sig2Dat};
pub use uuhash::{uuhash, uuhash_seek, UuHasher};

use std::io::{self, Read};
use std::path::Path;

use md5fast::Md5;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// A SHA-1 digest (Gnutella `urn:sha1:`, BitTorrent pieces and info_hash).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha1Digest(pub [u8; 20]);

/// An MD5 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Md5Digest(pub [u8; 16]);

/// KaZaA's ContentHash (UUHash), 20 bytes: MD5 of the head, then a CRC-32 of samples and tail.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UuHash(pub [u8; 20]);

/// `kzhash`: UUHash followed by the MD5-tree root (36 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KzHash(pub [u8; 36]);

macro_rules! digest_common {
    ($t:ident, $n:expr) => {
        impl $t {
            /// Number of bytes in this digest.
            pub const LEN: usize = $n;

            /// Lower-case hex.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses hex (either case); `None` if it is not exactly `2 * LEN` hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; $n];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($t(out))
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $t::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("bad hex for ", stringify!($t)))
                })
            }
        }
    };
}

digest_common!(Sha1Digest, 20);
digest_common!(Md5Digest, 16);
digest_common!(UuHash, 20);
digest_common!(KzHash, 36);

/// Which hashes to compute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashKinds {
    /// SHA-1 of the whole file.
    pub sha1: bool,
    /// MD5 of the whole file.
    pub md5: bool,
    /// KaZaA UUHash.
    pub uuhash: bool,
    /// KaZaA kzhash (UUHash + MD5 tree).
    pub kzhash: bool,
    /// The MD5 form Napster clients put in share messages.
    pub napster_md5: bool,
}

/// Results of a hashing pass; a field is `Some` exactly when its kind was asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hashes {
    /// SHA-1 of the whole content.
    pub sha1: Option<Sha1Digest>,
    /// MD5 of the whole content.
    pub md5: Option<Md5Digest>,
    /// KaZaA ContentHash.
    pub uuhash: Option<UuHash>,
    /// KaZaA kzhash.
    pub kzhash: Option<KzHash>,
    /// Napster share-message MD5.
    pub napster_md5: Option<Md5Digest>,
}

impl HashKinds {
    /// Every kind.
    pub const ALL: HashKinds = HashKinds {
        sha1: true,
        md5: true,
        uuhash: true,
        kzhash: true,
        napster_md5: true,
    };

    /// True when no kind is asked for.
    pub fn is_empty(&self) -> bool {
        *self == HashKinds::default()
    }
}

/// SHA-1 of an in-memory buffer.
pub fn sha1(data: &[u8]) -> Sha1Digest {
    Sha1Digest(Sha1::digest(data).into())
}

/// MD5 of an in-memory buffer.
pub fn md5(data: &[u8]) -> Md5Digest {
    Md5Digest(Md5::digest(data))
}

/// Computes several hashes in a single pass over content of a known total length.
pub struct MultiHasher {
    total_len: u64,
    fed: u64,
    sha1: Option<Sha1>,
    md5: Option<Md5>,
    /// Shared by `uuhash` and `kzhash` (whose first 20 bytes are the UUHash).
    uu: Option<UuHasher>,
    want_uuhash: bool,
    tree: Option<Md5TreeHasher>,
    napster: Option<NapsterMd5Hasher>,
}

impl MultiHasher {
    /// A hasher for `total_len` bytes of content.
    pub fn new(kinds: HashKinds, total_len: u64) -> Self {
        MultiHasher {
            total_len,
            fed: 0,
            sha1: kinds.sha1.then(Sha1::new),
            md5: kinds.md5.then(Md5::new),
            uu: (kinds.uuhash || kinds.kzhash).then(|| UuHasher::new(total_len)),
            want_uuhash: kinds.uuhash,
            tree: kinds.kzhash.then(Md5TreeHasher::new),
            napster: kinds.napster_md5.then(NapsterMd5Hasher::new),
        }
    }

    /// Feeds the next bytes (any chunk size).
    pub fn update(&mut self, data: &[u8]) {
        self.fed += data.len() as u64;
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        match (&mut self.md5, &mut self.tree) {
            // Both are MD5s over the same blocks: interleaved, the pair costs little more than one.
            (Some(md5), Some(tree)) => tree.update_with_md5(md5, data),
            (md5, tree) => {
                if let Some(h) = md5 {
                    h.update(data);
                }
                if let Some(h) = tree {
                    h.update(data);
                }
            }
        }
        if let Some(h) = &mut self.uu {
            h.update(data);
        }
        if let Some(h) = &mut self.napster {
            h.update(data);
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.fed
    }

    /// Finishes. Panics in debug builds if fewer or more than `total_len` bytes were fed.
    pub fn finish(self) -> Hashes {
        debug_assert_eq!(
            self.fed, self.total_len,
            "MultiHasher fed a different length than announced"
        );
        let uu = self.uu.map(UuHasher::finish);
        Hashes {
            sha1: self.sha1.map(|h| Sha1Digest(h.finalize().into())),
            md5: self.md5.map(|h| Md5Digest(h.finalize())),
            uuhash: if self.want_uuhash { uu } else { None },
            kzhash: self
                .tree
                .map(|t| KzHash::new(uu.expect("kzhash implies a UUHash"), t.finish())),
            napster_md5: self.napster.map(NapsterMd5Hasher::finish),
        }
    }
}

/// Size of the read buffer of [`hash_file`]: large enough that syscalls are noise, small enough for L2.
pub const HASH_FILE_BUF: usize = 1 << 20;

/// Files smaller than this are hashed on the calling thread only: a thread costs more than it saves.
pub const PARALLEL_MIN_LEN: u64 = 8 << 20;

/// The whole-file hashes in `kinds` as units that should stay on one thread, with their relative per-byte
/// cost: SHA-1 with SHA-NI is about 3x faster than MD5, and an MD5 with the kzhash tree (interleaved, see
/// [`md5fast::Md5::update_pair`]) costs about 1.15 MD5. UUHash and the Napster MD5 only read a few hundred
/// KiB and are not counted.
fn kind_costs(kinds: HashKinds) -> Vec<(HashKinds, u32)> {
    let mut units = Vec::new();
    if kinds.sha1 {
        units.push((
            HashKinds {
                sha1: true,
                ..HashKinds::default()
            },
            2,
        ));
    }
    match (kinds.md5, kinds.kzhash) {
        (true, true) => units.push((
            HashKinds {
                md5: true,
                kzhash: true,
                ..HashKinds::default()
            },
            7,
        )),
        (true, false) => units.push((
            HashKinds {
                md5: true,
                ..HashKinds::default()
            },
            6,
        )),
        (false, true) => units.push((
            HashKinds {
                kzhash: true,
                ..HashKinds::default()
            },
            6,
        )),
        (false, false) => {}
    }
    units
}

fn union(a: HashKinds, b: HashKinds) -> HashKinds {
    HashKinds {
        sha1: a.sha1 || b.sha1,
        md5: a.md5 || b.md5,
        uuhash: a.uuhash || b.uuhash,
        kzhash: a.kzhash || b.kzhash,
        napster_md5: a.napster_md5 || b.napster_md5,
    }
}

/// Splits `kinds` into (calling thread, helper thread) so the heavier side is as light as possible, or
/// `None` when only one whole-file hash is wanted (nothing to share).
fn split_kinds(kinds: HashKinds) -> Option<(HashKinds, HashKinds)> {
    let heavy = kind_costs(kinds);
    if heavy.len() < 2 {
        return None;
    }
    // At most 2 units: try every assignment.
    // Best = lightest heavier side; on a tie, the lighter side for the calling thread, which also reads.
    let mut best: Option<((u32, u32), HashKinds, HashKinds)> = None;
    for mask in 1..(1u32 << heavy.len()) - 1 {
        let (mut a, mut b) = (HashKinds::default(), HashKinds::default());
        let (mut ca, mut cb) = (0, 0);
        for (i, (k, c)) in heavy.iter().enumerate() {
            if mask & (1 << i) != 0 {
                b = union(b, *k);
                cb += c;
            } else {
                a = union(a, *k);
                ca += c;
            }
        }
        let key = (ca.max(cb), ca);
        if best.is_none_or(|(k, _, _)| key < k) {
            best = Some((key, a, b));
        }
    }
    let (_, mut a, b) = best?;
    // The cheap kinds ride along on the calling thread.
    a.uuhash = kinds.uuhash;
    a.napster_md5 = kinds.napster_md5;
    Some((a, b))
}

/// How [`hash_file_with`] may use the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    /// Everything on the calling thread.
    SingleThread,
    /// When two or more whole-file hashes are wanted on a large file, the heavier ones are split between the
    /// calling thread (which also reads) and one helper thread, fed the same buffers.
    Auto,
}

/// Hashes a file in one read pass, calling `progress` with the bytes read so far.
///
/// The length is taken from the file's metadata when it is opened, and exactly that many bytes are hashed:
/// a file that grows meanwhile is hashed up to its old length; one that shrinks gives `UnexpectedEof`.
/// Uses a second thread when that helps ([`Parallelism::Auto`]). When only the UUHash is wanted, only its
/// sampled ranges are read.
pub fn hash_file(
    path: &Path,
    kinds: HashKinds,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Hashes> {
    hash_file_with(path, kinds, Parallelism::Auto, progress)
}

/// [`hash_file`] with an explicit [`Parallelism`].
pub fn hash_file_with(
    path: &Path,
    kinds: HashKinds,
    parallelism: Parallelism,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Hashes> {
    let mut file = std::fs::File::open(path)?;
    let total_len = file.metadata()?.len();
    let uuhash_only = HashKinds {
        uuhash: true,
        ..HashKinds::default()
    };
    if kinds == uuhash_only {
        let uu = uuhash_seek(&mut file, total_len).map_err(|e| shrank(path, e))?;
        progress(total_len);
        return Ok(Hashes {
            uuhash: Some(uu),
            ..Hashes::default()
        });
    }
    let reader = ChunkReader {
        file: file.take(total_len),
        path,
        done: 0,
        total_len,
    };
    match split_kinds(kinds) {
        Some((mine, theirs))
            if parallelism == Parallelism::Auto && total_len >= PARALLEL_MIN_LEN =>
        {
            hash_two_threads(reader, mine, theirs, progress)
        }
        _ => {
            let mut hasher = MultiHasher::new(kinds, total_len);
            let mut reader = reader;
            let mut buf = vec![0u8; HASH_FILE_BUF.min(total_len.max(1) as usize)];
            while let Some(n) = reader.next_chunk(&mut buf)? {
                hasher.update(&buf[..n]);
                progress(reader.done);
            }
            Ok(hasher.finish())
        }
    }
}

fn shrank(path: &Path, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} shrank while being hashed", path.display()),
        )
    } else {
        e
    }
}

/// Reads exactly `total_len` bytes in large chunks.
struct ChunkReader<'a> {
    file: io::Take<std::fs::File>,
    path: &'a Path,
    done: u64,
    total_len: u64,
}

impl ChunkReader<'_> {
    /// Fills `buf` (fully, unless the end comes first); `None` once `total_len` bytes were read.
    fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let want = (self.total_len - self.done).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(None);
        }
        let mut got = 0;
        while got < want {
            match self.file.read(&mut buf[got..want]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} shrank while being hashed ({} of {} bytes)",
                            self.path.display(),
                            self.done + got as u64,
                            self.total_len
                        ),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.done += got as u64;
        Ok(Some(got))
    }
}

/// Buffers queued for the helper thread.
const IN_FLIGHT: usize = 4;

/// The calling thread reads and hashes `mine`; a helper hashes `theirs` from the same buffers, shared by
/// `Arc` and recycled once both sides are done with them.
fn hash_two_threads(
    mut reader: ChunkReader<'_>,
    mine: HashKinds,
    theirs: HashKinds,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Hashes> {
    use std::sync::{mpsc, Arc};

    let total_len = reader.total_len;
    std::thread::scope(|scope| {
        let (to_helper, from_main) = mpsc::sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
        // Unbounded, so the helper never waits on the main thread; buffers only come from the main thread, which
        // allocates one only when none is spare, so at most about IN_FLIGHT + 3 exist.
        let (to_main, recycled) = mpsc::channel::<Arc<Vec<u8>>>();
        let helper = scope.spawn(move || {
            let mut hasher = MultiHasher::new(theirs, total_len);
            for buf in from_main {
                hasher.update(&buf);
                // The main thread may be gone (error path); then the buffer is simply dropped.
                let _ = to_main.send(buf);
            }
            hasher
        });

        let mut hasher = MultiHasher::new(mine, total_len);
        let mut spare: Vec<Vec<u8>> = Vec::new();
        let result = (|| {
            loop {
                let mut buf = spare
                    .pop()
                    .or_else(|| {
                        recycled
                            .try_recv()
                            .ok()
                            .and_then(|a| Arc::try_unwrap(a).ok())
                    })
                    .unwrap_or_else(|| vec![0u8; HASH_FILE_BUF]);
                buf.resize(HASH_FILE_BUF, 0);
                let Some(n) = reader.next_chunk(&mut buf)? else {
                    return Ok(());
                };
                buf.truncate(n);
                let shared = Arc::new(buf);
                if to_helper.send(Arc::clone(&shared)).is_err() {
                    return Err(io::Error::other("hash helper thread stopped"));
                }
                hasher.update(&shared);
                progress(reader.done);
                // Our clone is dropped here; the helper hands the buffer back when it is done.
                drop(shared);
                while let Ok(a) = recycled.try_recv() {
                    if let Ok(v) = Arc::try_unwrap(a) {
                        spare.push(v);
                    }
                }
            }
        })();
        drop(to_helper);
        let theirs = helper
            .join()
            .map_err(|_| io::Error::other("hash helper thread panicked"))?;
        result?;
        let (a, b) = (hasher.finish(), theirs.finish());
        Ok(Hashes {
            sha1: a.sha1.or(b.sha1),
            md5: a.md5.or(b.md5),
            uuhash: a.uuhash.or(b.uuhash),
            kzhash: a.kzhash.or(b.kzhash),
            napster_md5: a.napster_md5.or(b.napster_md5),
        })
    })
}

#[cfg(test)]
mod tests;
