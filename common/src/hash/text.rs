//! Text forms of hashes: hex, RFC 4648 base32 and base64, Gnutella URNs, KaZaA `sig2dat` links and
//! `magnet:?xt=urn:kzhash:` links.
//!
//! - Gnutella (`shared/protocols/gnutella.md` §5): `urn:sha1:` + 32 base32 characters (RFC 4648 alphabet
//!   `A–Z2–7`, no padding), compared case-insensitively; `urn:bitprint:<sha1>.<tiger>` reduces to the SHA-1.
//! - KaZaA (`shared/protocols/kazaa.md` §3): the UUHash as `=` + standard padded base64 (29 characters);
//!   `sig2dat:///|File:<name>|Length:<n>Bytes|UUHash:=<b64>|` (parsed leniently: spaces after the colons and a
//!   missing trailing `|` occur in the wild); `magnet:?xt=urn:kzhash:<72 hex>&dn=<name>`; and the HTTP path
//!   `/.hash=<40 lowercase hex>`.
//!
//! Every parser here takes untrusted text and returns `None` on anything malformed; none of them panics.

use data_encoding::{BASE32_NOPAD, BASE64};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::{KzHash, Md5Digest, Sha1Digest, UuHash};

/// Length of a SHA-1 in base32 (20 bytes → 32 characters).
pub const SHA1_BASE32_LEN: usize = 32;
/// Length of a Tiger digest in base32 (24 bytes → 39 characters), the second half of a bitprint.
pub const TIGER_BASE32_LEN: usize = 39;
/// Length of the `sig2dat` UUHash text (`=` + 28 base64 characters).
pub const SIG2DAT_HASH_LEN: usize = 29;
/// Longest link we agree to parse; real links are a few hundred bytes.
pub const MAX_LINK_LEN: usize = 64 * 1024;

/// RFC 4648 base32, upper case, no padding.
pub fn base32_encode(data: &[u8]) -> String {
    BASE32_NOPAD.encode(data)
}

/// Decodes unpadded RFC 4648 base32, either case. `None` for any other character, padding, or a length
/// that no byte string encodes to.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    if !s.is_ascii() {
        return None;
    }
    BASE32_NOPAD.decode(s.to_ascii_uppercase().as_bytes()).ok()
}

/// Standard RFC 4648 base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    BASE64.encode(data)
}

/// Decodes standard padded base64; `None` on any error.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    BASE64.decode(s.as_bytes()).ok()
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

impl Sha1Digest {
    /// The 32-character base32 form used in Gnutella URNs.
    pub fn to_base32(&self) -> String {
        base32_encode(&self.0)
    }

    /// Parses the 32-character base32 form, either case.
    pub fn from_base32(s: &str) -> Option<Self> {
        if s.len() != SHA1_BASE32_LEN {
            return None;
        }
        let v = base32_decode(s)?;
        Some(Sha1Digest(v.try_into().ok()?))
    }

    /// `urn:sha1:<BASE32>`.
    pub fn to_urn(&self) -> String {
        format!("urn:sha1:{}", self.to_base32())
    }

    /// Parses `urn:sha1:<base32>` or `urn:bitprint:<sha1 base32>.<tiger base32>` (reduced to its SHA-1),
    /// with any case in the prefix and the digits.
    pub fn parse_urn(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(rest) = strip_prefix_ci(s, "urn:sha1:") {
            return Self::from_base32(rest);
        }
        let rest = strip_prefix_ci(s, "urn:bitprint:")?;
        let (sha1, tiger) = rest.split_once('.')?;
        // The Tiger half is checked for shape so a truncated bitprint is not silently accepted.
        if tiger.len() != TIGER_BASE32_LEN || base32_decode(tiger)?.len() != 24 {
            return None;
        }
        Self::from_base32(sha1)
    }

    /// Base64 of the 20 bytes.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }
}

impl Md5Digest {
    /// Base64 of the 16 bytes.
    pub fn to_base64(&self) -> String {
        base64_encode(&self.0)
    }
}

impl UuHash {
    /// `=` + base64, the form used in `sig2dat` links (29 characters).
    pub fn to_sig2dat(&self) -> String {
        format!("={}", base64_encode(&self.0))
    }

    /// Parses the `=` + base64 form (the leading `=` is optional).
    pub fn from_sig2dat(s: &str) -> Option<Self> {
        let s = s.trim();
        let b64 = s.strip_prefix('=').unwrap_or(s);
        let v = base64_decode(b64)?;
        Some(UuHash(v.try_into().ok()?))
    }

    /// The HTTP request path Kazaa peers use to fetch by hash: `/.hash=<40 lowercase hex>`.
    pub fn http_path(&self) -> String {
        format!("/.hash={}", self.to_hex())
    }

    /// Parses `/.hash=<40 hex>` (either case).
    pub fn from_http_path(path: &str) -> Option<Self> {
        Self::from_hex(path.strip_prefix("/.hash=")?)
    }
}

impl KzHash {
    /// Joins a UUHash and an MD5-tree root.
    pub fn new(uuhash: UuHash, md5_tree_root: [u8; 16]) -> Self {
        let mut b = [0u8; 36];
        b[..20].copy_from_slice(&uuhash.0);
        b[20..].copy_from_slice(&md5_tree_root);
        KzHash(b)
    }

    /// The UUHash half (bytes 0–19).
    pub fn uuhash(&self) -> UuHash {
        let mut b = [0u8; 20];
        b.copy_from_slice(&self.0[..20]);
        UuHash(b)
    }

    /// The MD5-tree root (bytes 20–35).
    pub fn md5_tree_root(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.0[20..]);
        b
    }
}

/// A KaZaA `sig2dat` link: name, length and UUHash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sig2Dat {
    /// File name as shown to the user.
    pub name: String,
    /// Length in bytes.
    pub length: u64,
    /// The content hash.
    pub uuhash: UuHash,
}

impl Sig2Dat {
    /// The canonical form: `sig2dat:///|File:<name>|Length:<n>Bytes|UUHash:=<b64>|`. The format has no
    /// escaping, so a `|` in the name is written as `_`.
    pub fn to_uri(&self) -> String {
        format!(
            "sig2dat:///|File:{}|Length:{}Bytes|UUHash:{}|",
            self.name.replace('|', "_"),
            self.length,
            self.uuhash.to_sig2dat()
        )
    }

    /// Parses a `sig2dat` link leniently: any case in the scheme and keys, any number of `/` after the
    /// scheme, spaces after the colons, `Bytes` or ` Bytes` or nothing after the length, and an optional
    /// trailing `|`. All three fields must be present, once each.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_LINK_LEN {
            return None;
        }
        let rest = strip_prefix_ci(s.trim(), "sig2dat:")?;
        let rest = rest.trim_start_matches('/');
        let (mut name, mut length, mut uuhash) = (None, None, None);
        for field in rest.split('|') {
            if field.trim().is_empty() {
                continue;
            }
            let (key, value) = field.split_once(':')?;
            let value = value.trim_start();
            match key.trim().to_ascii_lowercase().as_str() {
                "file" if name.is_none() => name = Some(value.trim_end().to_string()),
                "length" if length.is_none() => {
                    let v = value.trim_end();
                    let digits = strip_suffix_ci(v, "bytes").unwrap_or(v).trim_end();
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    length = Some(digits.parse().ok()?);
                }
                "uuhash" if uuhash.is_none() => uuhash = Some(UuHash::from_sig2dat(value)?),
                _ => return None,
            }
        }
        Some(Sig2Dat {
            name: name?,
            length: length?,
            uuhash: uuhash?,
        })
    }
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

/// Characters escaped in a magnet's `dn`: controls, space and the URL delimiters.
const MAGNET_DN: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// A `magnet:?xt=urn:kzhash:<72 hex>&dn=<name>` link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KzMagnet {
    /// The 36-byte kzhash.
    pub kzhash: KzHash,
    /// Display name, if the link carries one.
    pub name: Option<String>,
}

impl KzMagnet {
    /// Builds the link; the name is percent-encoded.
    pub fn to_uri(&self) -> String {
        let mut s = format!("magnet:?xt=urn:kzhash:{}", self.kzhash.to_hex());
        if let Some(name) = &self.name {
            s.push_str("&dn=");
            s.extend(utf8_percent_encode(name, MAGNET_DN));
        }
        s
    }

    /// Parses a magnet link with an `xt=urn:kzhash:` parameter (other parameters, such as other `xt`s,
    /// are ignored). `+` in `dn` means a space, as in form encoding.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_LINK_LEN {
            return None;
        }
        let query = strip_prefix_ci(s.trim(), "magnet:?")?;
        let (mut kzhash, mut name) = (None, None);
        for param in query.split('&') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.eq_ignore_ascii_case("xt") {
                if let Some(hex) = strip_prefix_ci(value, "urn:kzhash:") {
                    if kzhash.is_some() {
                        return None;
                    }
                    kzhash = Some(KzHash::from_hex(hex)?);
                }
            } else if key.eq_ignore_ascii_case("dn") && name.is_none() {
                let spaced = value.replace('+', " ");
                name = Some(percent_decode_str(&spaced).decode_utf8().ok()?.into_owned());
            }
        }
        Some(KzMagnet {
            kzhash: kzhash?,
            name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnutella_base32_vectors() {
        // gnutella.md §5: SHA-1("") and the two-byte example.
        let empty = Sha1Digest::from_hex("da39a3ee5e6b4b0d3255bfef95601890afd80709").unwrap();
        assert_eq!(empty.to_base32(), "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ");
        assert_eq!(base32_encode(&[0x0F, 0xF5]), "B72Q");
        assert_eq!(base32_decode("b72q").unwrap(), vec![0x0F, 0xF5]);
        assert_eq!(
            Sha1Digest::parse_urn("urn:sha1:3i42h3s6nnfq2msvx7xzkyayscx5qbyj"),
            Some(empty)
        );
        assert_eq!(
            Sha1Digest::parse_urn("URN:SHA1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"),
            Some(empty)
        );
        assert_eq!(empty.to_urn(), "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ");
    }

    #[test]
    fn bitprint_reduces_to_sha1() {
        let empty = Sha1Digest::from_hex("da39a3ee5e6b4b0d3255bfef95601890afd80709").unwrap();
        // Tiger("") in base32 (the THEX empty-file root is different, but any 24 bytes have this shape).
        let tiger = base32_encode(&[0x5a; 24]);
        assert_eq!(tiger.len(), TIGER_BASE32_LEN);
        let urn = format!("urn:bitprint:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ.{tiger}");
        assert_eq!(Sha1Digest::parse_urn(&urn), Some(empty));
        assert_eq!(
            Sha1Digest::parse_urn("urn:bitprint:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ.ABC"),
            None
        );
        assert_eq!(
            Sha1Digest::parse_urn("urn:bitprint:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"),
            None
        );
    }

    #[test]
    fn bad_urns() {
        for s in [
            "",
            "urn:sha1:",
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBY",
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJA",
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBY1",
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBY=",
            "urn:md5:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ",
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYÉ",
        ] {
            assert_eq!(Sha1Digest::parse_urn(s), None, "{s:?}");
        }
    }

    #[test]
    fn sig2dat_variants() {
        let h = UuHash::from_sig2dat("=kAFQmDzST7DWlj99KOF/cvz///8=").unwrap();
        let want = Sig2Dat {
            name: "abc.txt".into(),
            length: 3,
            uuhash: h,
        };
        let canonical = want.to_uri();
        assert_eq!(
            canonical,
            "sig2dat:///|File:abc.txt|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|"
        );
        for s in [
            canonical.as_str(),
            "sig2dat:///|File: abc.txt|Length: 3Bytes|UUHash: =kAFQmDzST7DWlj99KOF/cvz///8=|",
            "sig2dat:///|File:abc.txt|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=",
            "sig2dat:///|File: abc.txt|Length: 3 Bytes|UUHash: =kAFQmDzST7DWlj99KOF/cvz///8=",
            "SIG2DAT://|file:abc.txt|length:3|uuhash:kAFQmDzST7DWlj99KOF/cvz///8=|",
        ] {
            assert_eq!(Sig2Dat::parse(s).as_ref(), Some(&want), "{s}");
        }
        for s in [
            "sig2dat:///|File:abc.txt|Length:3Bytes|",
            "sig2dat:///|File:abc.txt|Length:xBytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|",
            "sig2dat:///|File:abc.txt|Length:-3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|",
            "sig2dat:///|File:abc.txt|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///|",
            "sig2dat:///|File:a|File:b|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|",
            "sig2dat:///|Nonsense|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|",
            "http:///|File:abc.txt|Length:3Bytes|UUHash:=kAFQmDzST7DWlj99KOF/cvz///8=|",
        ] {
            assert_eq!(Sig2Dat::parse(s), None, "{s}");
        }
    }

    #[test]
    fn kzhash_magnet_round_trip() {
        let kz = KzHash::from_hex(&format!(
            "{}{}",
            "900150983cd24fb0d6963f7d28e17f72fcffffff", "af5da9f45af7a300e3aded972f8ff687"
        ))
        .unwrap();
        let m = KzMagnet {
            kzhash: kz,
            name: Some("Artist - Song & more 100%.mp3".into()),
        };
        let uri = m.to_uri();
        assert!(uri.starts_with(
            "magnet:?xt=urn:kzhash:900150983cd24fb0d6963f7d28e17f72fcffffffaf5da9f45af7a300e3aded972f8ff687&dn="
        ));
        assert!(!uri.contains(' '));
        assert_eq!(KzMagnet::parse(&uri), Some(m));
        let upper = "MAGNET:?dn=a+b.mp3&xt=urn:btih:zzz&xt=URN:KZHASH:900150983CD24FB0D6963F7D28E17F72FCFFFFFFAF5DA9F45AF7A300E3ADED972F8FF687";
        let p = KzMagnet::parse(upper).unwrap();
        assert_eq!(p.kzhash, kz);
        assert_eq!(p.name.as_deref(), Some("a b.mp3"));
        assert_eq!(KzMagnet::parse("magnet:?xt=urn:kzhash:00"), None);
        assert_eq!(KzMagnet::parse("magnet:?dn=x"), None);
        assert_eq!(
            kz.uuhash().to_hex(),
            "900150983cd24fb0d6963f7d28e17f72fcffffff"
        );
        assert_eq!(KzHash::new(kz.uuhash(), kz.md5_tree_root()), kz);
    }

    #[test]
    fn http_path_form() {
        let h = UuHash::from_sig2dat("=kAFQmDzST7DWlj99KOF/cvz///8=").unwrap();
        assert_eq!(
            h.http_path(),
            "/.hash=900150983cd24fb0d6963f7d28e17f72fcffffff"
        );
        assert_eq!(UuHash::from_http_path(&h.http_path()), Some(h));
        assert_eq!(UuHash::from_http_path("/.hash=zz"), None);
    }
}
