//! BEP 11 Peer Exchange: the `ut_pex` payload carried inside [`super::peer::Msg::Extended`].
//!
//! ```text
//! d
//!   5:added    <n x 6 bytes: IPv4 + port, compact as in BEP 23>
//!   7:added.f  <n bytes: one flag byte per added IPv4 peer>
//!   6:added6   <m x 18 bytes: IPv6 + port, BEP 7>
//!   8:added6.f <m bytes>
//!   7:dropped  <compact IPv4>
//!   8:dropped6 <compact IPv6>
//! e
//! ```
//! Every key is optional. A sender puts at most [`MAX_ADDED`] added and [`MAX_DROPPED`] dropped
//! contacts in one message (BEP 11); a receiver accepts a little more ([`MAX_ACCEPTED`]) since clients
//! differ, and refuses anything larger.

use std::net::SocketAddr;

use bendy::encoding::Encoder;
use bendy::value::Value;

use crate::bencode::{self, as_dict, BencodeError};
use crate::codec::tracker::{compact_peers_v4, compact_peers_v6, push_compact};

/// Most added contacts (IPv4 and IPv6 together) we put in one message (BEP 11: "up to 50").
pub const MAX_ADDED: usize = 50;
/// Most dropped contacts (IPv4 and IPv6 together) we put in one message.
pub const MAX_DROPPED: usize = 50;
/// Most contacts in one list of a message we accept; a peer sending more is ignored.
pub const MAX_ACCEPTED: usize = 200;
/// Bytes of an IPv4 compact contact.
pub const COMPACT_V4: usize = 6;
/// Bytes of an IPv6 compact contact.
pub const COMPACT_V6: usize = 18;

/// The BEP 11 flag bits of an added contact.
pub mod flags {
    /// Prefers encryption (BEP 11 0x01). We never set it: we do not implement MSE.
    pub const ENCRYPTION: u8 = 0x01;
    /// Seed / upload only (0x02).
    pub const SEED: u8 = 0x02;
    /// Supports uTP (0x04). Never set: TCP only.
    pub const UTP: u8 = 0x04;
    /// Supports ut_holepunch (0x08). Never set.
    pub const HOLEPUNCH: u8 = 0x08;
    /// Reachable: the sender made an outgoing connection to this contact (0x10).
    pub const REACHABLE: u8 = 0x10;
}

/// One `ut_pex` message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PexMsg {
    /// Contacts that joined the sender's connection set, with their flag byte.
    pub added: Vec<(SocketAddr, u8)>,
    /// Contacts the sender is no longer connected to.
    pub dropped: Vec<SocketAddr>,
}

/// Why a `ut_pex` payload was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PexError {
    /// Not a bencoded dictionary, or a key of the wrong type.
    #[error(transparent)]
    Bencode(#[from] BencodeError),
    /// A compact list whose length is not a multiple of the contact size.
    #[error("{key}: {len} bytes is not a whole number of contacts")]
    Ragged {
        /// The key.
        key: &'static str,
        /// Its length.
        len: usize,
    },
    /// More contacts than [`MAX_ACCEPTED`] in one list.
    #[error("{key}: {count} contacts, over the limit {max}")]
    TooMany {
        /// The key.
        key: &'static str,
        /// Contacts in the list.
        count: usize,
        /// [`MAX_ACCEPTED`].
        max: usize,
    },
}

fn contacts<'v>(
    d: &'v bencode::Dict<'_>,
    key: &'static str,
    size: usize,
) -> Result<&'v [u8], PexError> {
    let b: &[u8] = match bencode::get(d, key) {
        None => return Ok(&[]),
        Some(Value::Bytes(b)) => b,
        Some(_) => return Err(BencodeError::Bad(key).into()),
    };
    if b.len() % size != 0 {
        return Err(PexError::Ragged { key, len: b.len() });
    }
    if b.len() / size > MAX_ACCEPTED {
        return Err(PexError::TooMany {
            key,
            count: b.len() / size,
            max: MAX_ACCEPTED,
        });
    }
    Ok(b)
}

impl PexMsg {
    /// Whether there is nothing to say.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }

    /// The bencoded payload. IPv4 and IPv6 contacts go to their own keys; the caller keeps the lists
    /// within [`MAX_ADDED`] / [`MAX_DROPPED`].
    pub fn encode(&self) -> Vec<u8> {
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (a, f) in &self.added {
            if a.is_ipv4() {
                push_compact(&mut a4, a);
                f4.push(*f);
            } else {
                push_compact(&mut a6, a);
                f6.push(*f);
            }
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for a in &self.dropped {
            push_compact(if a.is_ipv4() { &mut d4 } else { &mut d6 }, a);
        }
        let mut e = Encoder::new();
        // Keys in bencode (byte) order: added < added.f < added6 < added6.f < dropped < dropped6.
        e.emit_dict(|mut d| {
            d.emit_pair(b"added", bendy::encoding::AsString(&a4))?;
            d.emit_pair(b"added.f", bendy::encoding::AsString(&f4))?;
            if !a6.is_empty() {
                d.emit_pair(b"added6", bendy::encoding::AsString(&a6))?;
                d.emit_pair(b"added6.f", bendy::encoding::AsString(&f6))?;
            }
            d.emit_pair(b"dropped", bendy::encoding::AsString(&d4))?;
            if !d6.is_empty() {
                d.emit_pair(b"dropped6", bendy::encoding::AsString(&d6))?;
            }
            Ok(())
        })
        .expect("ut_pex encodes");
        e.get_output().expect("complete")
    }

    /// Parses a `ut_pex` payload. Missing flags count as 0; a flag list of the wrong length is ignored
    /// (flags are advisory), but a ragged or oversized contact list refuses the message.
    pub fn parse(payload: &[u8]) -> Result<PexMsg, PexError> {
        let (v, _) = bencode::decode_prefix(payload)?;
        let d = as_dict(&v, "ut_pex")?;
        let mut m = PexMsg::default();
        type Decode = fn(&[u8]) -> Vec<SocketAddr>;
        let v4: Decode = compact_peers_v4;
        let v6: Decode = compact_peers_v6;
        for (key, fkey, size, decode) in [
            ("added", "added.f", COMPACT_V4, v4),
            ("added6", "added6.f", COMPACT_V6, v6),
        ] {
            let list = contacts(d, key, size)?;
            let fl: &[u8] = match bencode::get(d, fkey) {
                Some(Value::Bytes(b)) if b.len() == list.len() / size => b,
                _ => &[],
            };
            for (i, a) in decode(list).into_iter().enumerate() {
                m.added.push((a, fl.get(i).copied().unwrap_or(0)));
            }
        }
        for (key, size, decode) in [("dropped", COMPACT_V4, v4), ("dropped6", COMPACT_V6, v6)] {
            m.dropped.extend(decode(contacts(d, key, size)?));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        let m = PexMsg {
            added: vec![
                (
                    "10.0.0.1:6881".parse().unwrap(),
                    flags::SEED | flags::REACHABLE,
                ),
                ("[::1]:80".parse().unwrap(), 0),
            ],
            dropped: vec!["1.2.3.4:258".parse().unwrap()],
        };
        let b = m.encode();
        let mut want = b"d5:added6:\x0a\x00\x00\x01\x1a\xe17:added.f1:\x126:added618:".to_vec();
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(b"\x01\x00\x508:added6.f1:\x007:dropped6:\x01\x02\x03\x04\x01\x02e");
        assert_eq!(b, want);
        assert_eq!(PexMsg::parse(&b).unwrap(), m);
    }

    #[test]
    fn missing_keys_and_flags_are_tolerated() {
        assert_eq!(PexMsg::parse(b"de").unwrap(), PexMsg::default());
        // libtorrent-style message without added.f.
        let m = PexMsg::parse(b"d5:added6:\x7f\x00\x00\x01\x00\x50e").unwrap();
        assert_eq!(m.added, vec![("127.0.0.1:80".parse().unwrap(), 0)]);
    }

    #[test]
    fn ragged_and_oversized_lists_are_refused() {
        assert!(matches!(
            PexMsg::parse(b"d5:added5:12345e"),
            Err(PexError::Ragged { key: "added", .. })
        ));
        let big = vec![0u8; (MAX_ACCEPTED + 1) * COMPACT_V4];
        let mut b = format!("d7:dropped{}:", big.len()).into_bytes();
        b.extend_from_slice(&big);
        b.push(b'e');
        assert!(matches!(
            PexMsg::parse(&b),
            Err(PexError::TooMany { key: "dropped", .. })
        ));
        assert!(PexMsg::parse(b"d5:addedi3ee").is_err());
        assert!(PexMsg::parse(b"li1ee").is_err());
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(
            added in proptest::collection::vec((addr(), any::<u8>()), 0..MAX_ADDED),
            dropped in proptest::collection::vec(addr(), 0..MAX_DROPPED),
        ) {
            // The wire groups IPv4 before IPv6.
            let mut added = added;
            added.sort_by_key(|(a, _)| a.is_ipv6());
            let mut dropped = dropped;
            dropped.sort_by_key(|a| a.is_ipv6());
            let m = PexMsg { added, dropped };
            prop_assert_eq!(PexMsg::parse(&m.encode()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = PexMsg::parse(&b);
        }

        #[test]
        fn every_truncation_is_an_error_not_a_panic(
            added in proptest::collection::vec((addr(), any::<u8>()), 1..5),
        ) {
            let b = PexMsg { added, dropped: vec![] }.encode();
            for n in 0..b.len() {
                prop_assert!(PexMsg::parse(&b[..n]).is_err());
            }
        }
    }
}
