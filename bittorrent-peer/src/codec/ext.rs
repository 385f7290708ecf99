//! BEP 10 extension protocol handshake and BEP 9 `ut_metadata` messages (the payloads carried inside
//! [`super::peer::Msg::Extended`]). The BEP 11 `ut_pex` payload is in [`super::pex`].

use bendy::encoding::Encoder;
use bendy::value::Value;

use crate::bencode::{self, as_dict, BencodeError};

/// The id we assign to ut_metadata in our extension handshake.
pub const UT_METADATA_ID: u8 = 1;
/// The id we assign to ut_pex (BEP 11) in our extension handshake (absent for private torrents).
pub const UT_PEX_ID: u8 = 2;
/// BEP 9 metadata piece size.
pub const METADATA_PIECE: usize = 16 << 10;
/// Largest metadata (raw `info` dictionary) we fetch or serve.
pub const MAX_METADATA_SIZE: usize = 8 << 20;

/// The BEP 10 handshake (extended message id 0), reduced to what we use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// The peer's message id for ut_metadata (`m.ut_metadata`), if it supports it (0 = disabled).
    pub ut_metadata: Option<u8>,
    /// The peer's message id for ut_pex (`m.ut_pex`, BEP 11).
    pub ut_pex: Option<u8>,
    /// The sender's TCP listen port (`p`): what PEX must advertise for a peer that dialled us.
    pub port: Option<u16>,
    /// Size of the raw info dictionary (`metadata_size`).
    pub metadata_size: Option<usize>,
    /// Client name (`v`).
    pub client: Option<String>,
}

fn enc_err(e: bendy::encoding::Error) -> BencodeError {
    BencodeError::Syntax(e.to_string())
}

impl ExtHandshake {
    /// The bencoded payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.emit_dict(|mut d| {
            d.emit_pair_with(b"m", |e| {
                e.emit_dict(|mut m| {
                    if let Some(id) = self.ut_metadata {
                        m.emit_pair(b"ut_metadata", id as i64)?;
                    }
                    if let Some(id) = self.ut_pex {
                        m.emit_pair(b"ut_pex", id as i64)?;
                    }
                    Ok(())
                })
            })?;
            if let Some(n) = self.metadata_size {
                d.emit_pair(b"metadata_size", n as i64)?;
            }
            if let Some(p) = self.port {
                d.emit_pair(b"p", p as i64)?;
            }
            if let Some(v) = &self.client {
                d.emit_pair(b"v", v.as_str())?;
            }
            Ok(())
        })
        .map_err(enc_err)
        .expect("handshake encodes");
        e.get_output().expect("complete")
    }

    /// Parses a peer's handshake payload; unknown keys are ignored.
    pub fn parse(payload: &[u8]) -> Result<ExtHandshake, BencodeError> {
        let (v, _) = bencode::decode_prefix(payload)?;
        let d = as_dict(&v, "handshake")?;
        // An id of 0 disables the extension (BEP 10); ids above 255 cannot be sent.
        let id = |name: &[u8]| match bencode::get(d, "m") {
            Some(Value::Dict(m)) => match m.get(name) {
                Some(Value::Integer(i)) if (1..=255).contains(i) => Some(*i as u8),
                _ => None,
            },
            _ => None,
        };
        let port = match bencode::get(d, "p") {
            Some(Value::Integer(p)) if (1..=65535).contains(p) => Some(*p as u16),
            _ => None,
        };
        let metadata_size = match bencode::get(d, "metadata_size") {
            Some(Value::Integer(i)) if *i > 0 && (*i as usize) <= MAX_METADATA_SIZE => {
                Some(*i as usize)
            }
            _ => None,
        };
        Ok(ExtHandshake {
            ut_metadata: id(b"ut_metadata"),
            ut_pex: id(b"ut_pex"),
            port,
            metadata_size,
            client: bencode::opt_text(d, "v").ok().flatten(),
        })
    }
}

/// A BEP 9 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataMsg<'a> {
    /// Please send metadata piece `n`.
    Request(u32),
    /// Metadata piece `piece` of `total_size` bytes in all.
    Data {
        /// Piece number.
        piece: u32,
        /// Size of the whole metadata.
        total_size: usize,
        /// The piece's bytes.
        data: &'a [u8],
    },
    /// We will not send piece `n`.
    Reject(u32),
}

impl<'a> MetadataMsg<'a> {
    /// The payload (dictionary, then the raw bytes for `Data`).
    pub fn encode(&self) -> Vec<u8> {
        let (t, piece) = match self {
            MetadataMsg::Request(p) => (0, *p),
            MetadataMsg::Data { piece, .. } => (1, *piece),
            MetadataMsg::Reject(p) => (2, *p),
        };
        let mut e = Encoder::new();
        e.emit_dict(|mut d| {
            d.emit_pair(b"msg_type", t)?;
            d.emit_pair(b"piece", piece as i64)?;
            if let MetadataMsg::Data { total_size, .. } = self {
                d.emit_pair(b"total_size", *total_size as i64)?;
            }
            Ok(())
        })
        .map_err(enc_err)
        .expect("ut_metadata encodes");
        let mut out = e.get_output().expect("complete");
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Parses a ut_metadata payload.
    pub fn parse(payload: &'a [u8]) -> Result<MetadataMsg<'a>, BencodeError> {
        let (v, used) = bencode::decode_prefix(payload)?;
        let d = as_dict(&v, "ut_metadata")?;
        let piece =
            u32::try_from(bencode::int(d, "piece")?).map_err(|_| BencodeError::Bad("piece"))?;
        match bencode::int(d, "msg_type")? {
            0 => Ok(MetadataMsg::Request(piece)),
            1 => {
                let total = bencode::int(d, "total_size")?;
                if total <= 0 || total as usize > MAX_METADATA_SIZE {
                    return Err(BencodeError::Bad("total_size"));
                }
                let data = &payload[used..];
                if data.len() > METADATA_PIECE {
                    return Err(BencodeError::Bad("piece data"));
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size: total as usize,
                    data,
                })
            }
            2 => Ok(MetadataMsg::Reject(piece)),
            _ => Err(BencodeError::Bad("msg_type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn handshake_round_trip_and_known_bytes() {
        let h = ExtHandshake {
            ut_metadata: Some(3),
            ut_pex: Some(2),
            port: Some(6881),
            metadata_size: Some(1234),
            client: Some("x".into()),
        };
        let b = h.encode();
        assert_eq!(
            b,
            &b"d1:md11:ut_metadatai3e6:ut_pexi2ee13:metadata_sizei1234e1:pi6881e1:v1:xe"[..]
        );
        assert_eq!(ExtHandshake::parse(&b).unwrap(), h);
        let only_pex = ExtHandshake::parse(b"d1:md6:ut_pexi2eee").unwrap();
        assert_eq!((only_pex.ut_metadata, only_pex.ut_pex), (None, Some(2)));
        // 0 disables; out-of-range ports and ids are dropped, not trusted.
        let off = ExtHandshake::parse(b"d1:md6:ut_pexi0ee1:pi70000ee").unwrap();
        assert_eq!((off.ut_pex, off.port), (None, None));
    }

    #[test]
    fn metadata_messages() {
        let d = MetadataMsg::Data {
            piece: 1,
            total_size: 20000,
            data: b"abc",
        };
        let b = d.encode();
        assert!(b.starts_with(b"d8:msg_typei1e5:piecei1e10:total_sizei20000ee"));
        assert_eq!(MetadataMsg::parse(&b).unwrap(), d);
        assert_eq!(
            MetadataMsg::parse(&MetadataMsg::Request(4).encode()).unwrap(),
            MetadataMsg::Request(4)
        );
        assert_eq!(
            MetadataMsg::parse(&MetadataMsg::Reject(4).encode()).unwrap(),
            MetadataMsg::Reject(4)
        );
        assert!(MetadataMsg::parse(b"d8:msg_typei9e5:piecei0ee").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ExtHandshake::parse(&b);
            let _ = MetadataMsg::parse(&b);
        }
    }
}
