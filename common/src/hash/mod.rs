//! Hashes and their text forms.
//!
//! API CONTRACT (other modules and crates code against these names; the bodies are being filled in):
//! - digests: [`Sha1Digest`], [`Md5Digest`], [`UuHash`], [`KzHash`], each with hex helpers and serde as hex text;
//! - [`HashKinds`] says which hashes to compute, [`Hashes`] holds the results;
//! - [`MultiHasher`] computes several hashes in one pass over the bytes (the total length must be known up front,
//!   because UUHash samples depend on it); [`hash_file`] reads a file once.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

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

/// Computes several hashes in a single pass over content of a known total length.
pub struct MultiHasher {
    _private: (),
}

impl MultiHasher {
    /// A hasher for `total_len` bytes of content.
    pub fn new(_kinds: HashKinds, _total_len: u64) -> Self {
        todo!("hash module being implemented")
    }

    /// Feeds the next bytes (any chunk size).
    pub fn update(&mut self, _data: &[u8]) {
        todo!("hash module being implemented")
    }

    /// Finishes. Panics in debug builds if fewer or more than `total_len` bytes were fed.
    pub fn finish(self) -> Hashes {
        todo!("hash module being implemented")
    }
}

/// Hashes a file in one read pass, calling `progress` with the bytes read so far.
pub fn hash_file(
    _path: &Path,
    _kinds: HashKinds,
    _progress: &mut dyn FnMut(u64),
) -> io::Result<Hashes> {
    todo!("hash module being implemented")
}
