//! Hashes and their text forms.
//!
//! API CONTRACT (other modules and crates code against these names; the bodies are being filled in):
//! - digests: [`Sha1Digest`], [`Md5Digest`], [`UuHash`], [`KzHash`], each with hex helpers and serde as hex text;
//! - [`HashKinds`] says which hashes to compute, [`Hashes`] holds the results;
//! - [`MultiHasher`] computes several hashes in one pass over the bytes (the total length must be known up front,
//!   because UUHash samples depend on it); [`hash_file`] reads a file once.
//!
//! Submodules: [`uuhash`] (KaZaA ContentHash and file id, `kazaa.md` §3), [`md5tree`] (the MD5 tree of
//! `kzhash`), [`napster`] (the MD5 of Napster share messages), [`text`] (base32/base64, Gnutella URNs,
//! `sig2dat` and kzhash magnet links).
//!
//! SHA-1 comes from the `sha1` crate, which detects SHA-NI at run time (`cpufeatures`) and uses the x86 SHA
//! instructions when present; MD5 from `md-5`; the CRC-32 of UUHash from `crc32fast` (PCLMULQDQ when present).

pub mod md5tree;
pub mod napster;
pub mod text;
pub mod uuhash;

pub use md5tree::{md5_tree, Md5TreeHasher};
pub use napster::{napster_md5, NapsterMd5Hasher, NAPSTER_MD5_LEN};
pub use text::{base32_decode, base32_encode, base64_decode, base64_encode, KzMagnet, Sig2Dat};
pub use uuhash::{uuhash, UuHasher};

use std::io::{self, Read};
use std::path::Path;

use md5::Md5;
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
    Md5Digest(Md5::digest(data).into())
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
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        if let Some(h) = &mut self.uu {
            h.update(data);
        }
        if let Some(h) = &mut self.tree {
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
            md5: self.md5.map(|h| Md5Digest(h.finalize().into())),
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

/// Hashes a file in one read pass, calling `progress` with the bytes read so far.
///
/// The length is taken from the file's metadata when it is opened, and exactly that many bytes are hashed:
/// a file that grows meanwhile is hashed up to its old length; one that shrinks gives `UnexpectedEof`.
pub fn hash_file(
    path: &Path,
    kinds: HashKinds,
    progress: &mut dyn FnMut(u64),
) -> io::Result<Hashes> {
    let file = std::fs::File::open(path)?;
    let total_len = file.metadata()?.len();
    let mut hasher = MultiHasher::new(kinds, total_len);
    let mut reader = file.take(total_len);
    let mut buf = vec![0u8; HASH_FILE_BUF.min(total_len.max(1) as usize)];
    while hasher.position() < total_len {
        let n = match reader.read(&mut buf) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} shrank while being hashed ({} of {} bytes)",
                        path.display(),
                        hasher.position(),
                        total_len
                    ),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        progress(hasher.position());
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests;
