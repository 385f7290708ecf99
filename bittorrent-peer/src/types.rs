//! Wire identifiers as newtypes (BEP 3 "info_hash" and "peer_id"), so a 20-byte id can never be mixed up
//! with a piece digest.

use std::fmt;

use rand::RngCore;

/// SHA-1 of the bencoded `info` dictionary: the name of a torrent everywhere on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// The 20-byte id a peer picks for itself (BEP 20 style prefix `-PL0001-`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

impl InfoHash {
    /// Lower-case hex (40 characters), as in magnet links.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 40 hex digits or 32 base32 characters (both forms appear in `xt=urn:btih:`).
    pub fn parse(s: &str) -> Option<InfoHash> {
        let mut out = [0u8; 20];
        if s.len() == 40 {
            hex::decode_to_slice(s, &mut out).ok()?;
            return Some(InfoHash(out));
        }
        if s.len() == 32 {
            let v = data_encoding::BASE32
                .decode(s.to_ascii_uppercase().as_bytes())
                .ok()?;
            out.copy_from_slice(v.get(..20)?);
            return Some(InfoHash(out));
        }
        None
    }
}

impl PeerId {
    /// A fresh id: our client prefix then random bytes.
    pub fn generate(rng: &mut impl RngCore) -> PeerId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-PL0001-");
        rng.fill_bytes(&mut id[8..]);
        PeerId(id)
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PeerId({})",
            String::from_utf8_lossy(&self.0).escape_debug()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_hash_hex_and_base32() {
        let h = InfoHash([0xab; 20]);
        assert_eq!(InfoHash::parse(&h.to_hex()), Some(h));
        let b32 = data_encoding::BASE32.encode(&h.0);
        assert_eq!(InfoHash::parse(&b32.to_ascii_lowercase()), Some(h));
        assert_eq!(InfoHash::parse("zz"), None);
    }
}
