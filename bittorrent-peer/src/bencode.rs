//! Small helpers over `bendy` values (BEP 3 "bencoding"): a depth-limited decode and typed field access
//! with errors that name the missing or malformed key.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bendy::decoding::{Decoder, FromBencode, Object};
use bendy::value::Value;

/// Deepest nesting any message we parse legitimately has (metainfo: dict/dict/list/dict/list = 5).
pub const MAX_DEPTH: usize = 16;

/// Why a bencoded document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BencodeError {
    /// Not valid bencoding (or nested deeper than [`MAX_DEPTH`]).
    #[error("malformed bencoding: {0}")]
    Syntax(String),
    /// A required key is absent.
    #[error("missing key {0:?}")]
    Missing(&'static str),
    /// A key holds the wrong kind of value or an out-of-range one.
    #[error("bad value for key {0:?}")]
    Bad(&'static str),
}

/// A bencode dictionary as `bendy` holds it.
pub type Dict<'a> = BTreeMap<Cow<'a, [u8]>, Value<'a>>;

/// Decodes one complete value; trailing bytes are an error.
pub fn decode(bytes: &[u8]) -> Result<Value<'_>, BencodeError> {
    let (v, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(BencodeError::Syntax("trailing bytes".into()));
    }
    Ok(v)
}

/// Decodes the value at the start of `bytes`; returns it and how many bytes it took (BEP 9 puts raw
/// metadata right after a bencoded dictionary).
pub fn decode_prefix(bytes: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    let mut d = Decoder::new(bytes).with_max_depth(MAX_DEPTH);
    let obj = d
        .next_object()
        .map_err(|e| BencodeError::Syntax(e.to_string()))?
        .ok_or_else(|| BencodeError::Syntax("empty input".into()))?;
    let (v, len) = match obj {
        Object::Dict(dd) => {
            let raw = dd
                .into_raw()
                .map_err(|e| BencodeError::Syntax(e.to_string()))?;
            (
                Value::from_bencode(raw).map_err(|e| BencodeError::Syntax(e.to_string()))?,
                raw.len(),
            )
        }
        Object::List(ld) => {
            let raw = ld
                .into_raw()
                .map_err(|e| BencodeError::Syntax(e.to_string()))?;
            (
                Value::from_bencode(raw).map_err(|e| BencodeError::Syntax(e.to_string()))?,
                raw.len(),
            )
        }
        other => {
            let v = Value::decode_bencode_object(other)
                .map_err(|e| BencodeError::Syntax(e.to_string()))?;
            let len = bendy::encoding::ToBencode::to_bencode(&v)
                .map_err(|e| BencodeError::Syntax(e.to_string()))?
                .len();
            (v, len)
        }
    };
    Ok((v, len))
}

/// Raw bytes of the value stored under `key` in the top-level dictionary of `bytes` (the info_hash is the
/// SHA-1 of exactly these bytes, so they must not be re-encoded).
pub fn raw_value_of<'a>(bytes: &'a [u8], key: &[u8]) -> Result<Option<&'a [u8]>, BencodeError> {
    let syn = |e: bendy::decoding::Error| BencodeError::Syntax(e.to_string());
    let mut d = Decoder::new(bytes).with_max_depth(MAX_DEPTH);
    let Some(Object::Dict(mut dict)) = d.next_object().map_err(syn)? else {
        return Err(BencodeError::Syntax("not a dictionary".into()));
    };
    while let Some((k, v)) = dict.next_pair().map_err(syn)? {
        if k == key {
            return match v {
                Object::Dict(dd) => Ok(Some(dd.into_raw().map_err(syn)?)),
                Object::List(ld) => Ok(Some(ld.into_raw().map_err(syn)?)),
                _ => Err(BencodeError::Bad("info")),
            };
        }
    }
    Ok(None)
}

/// The dictionary inside `v`.
pub fn as_dict<'v, 'a>(v: &'v Value<'a>, what: &'static str) -> Result<&'v Dict<'a>, BencodeError> {
    match v {
        Value::Dict(d) => Ok(d),
        _ => Err(BencodeError::Bad(what)),
    }
}

/// `d[key]` if present.
pub fn get<'v, 'a>(d: &'v Dict<'a>, key: &'static str) -> Option<&'v Value<'a>> {
    d.get(key.as_bytes())
}

/// `d[key]` as an integer.
pub fn int(d: &Dict<'_>, key: &'static str) -> Result<i64, BencodeError> {
    match get(d, key) {
        Some(Value::Integer(i)) => Ok(*i),
        Some(_) => Err(BencodeError::Bad(key)),
        None => Err(BencodeError::Missing(key)),
    }
}

/// `d[key]` as a byte string.
pub fn bytes<'v>(d: &'v Dict<'_>, key: &'static str) -> Result<&'v [u8], BencodeError> {
    match get(d, key) {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(BencodeError::Bad(key)),
        None => Err(BencodeError::Missing(key)),
    }
}

/// `d[key]` as UTF-8 text.
pub fn text(d: &Dict<'_>, key: &'static str) -> Result<String, BencodeError> {
    let b = bytes(d, key)?;
    String::from_utf8(b.to_vec()).map_err(|_| BencodeError::Bad(key))
}

/// Optional text: absent gives `None`, a non-text value an error.
pub fn opt_text(d: &Dict<'_>, key: &'static str) -> Result<Option<String>, BencodeError> {
    match get(d, key) {
        None => Ok(None),
        Some(_) => text(d, key).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_prefix_and_rejects_trailing() {
        let (v, n) = decode_prefix(b"d1:ai1ee rest").unwrap();
        assert_eq!(n, 8);
        assert_eq!(int(as_dict(&v, "x").unwrap(), "a"), Ok(1));
        assert!(decode(b"i1ex").is_err());
        assert!(decode(b"").is_err());
        let deep = format!("{}{}", "l".repeat(40), "e".repeat(40));
        assert!(decode(deep.as_bytes()).is_err(), "nesting is capped");
    }

    #[test]
    fn raw_value_keeps_original_bytes() {
        let doc = b"d4:infod1:xi1ee1:zi2ee";
        assert_eq!(raw_value_of(doc, b"info").unwrap(), Some(&b"d1:xi1ee"[..]));
        assert_eq!(raw_value_of(doc, b"nope").unwrap(), None);
    }
}
