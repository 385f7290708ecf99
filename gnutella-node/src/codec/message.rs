//! Descriptor payloads (Gnutella 0.6 draft §2.2 "Descriptors", plus the GDF-era extensions the notes list:
//! HUGE, GGEP, QueryHit trailer flags, Bye, QRP 0x30, vendor messages 0x31/0x32).

use std::net::Ipv4Addr;

use bytes::{BufMut, BytesMut};

use super::ggep::{self, GgepExt, GGEP_MAGIC};
use super::{DecodeError, Guid};

/// Ping.
pub const TYPE_PING: u8 = 0x00;
/// Pong.
pub const TYPE_PONG: u8 = 0x01;
/// Bye.
pub const TYPE_BYE: u8 = 0x02;
/// QRP route-table update.
pub const TYPE_QRP: u8 = 0x30;
/// Vendor message.
pub const TYPE_VENDOR: u8 = 0x31;
/// Standard vendor message.
pub const TYPE_VENDOR_STD: u8 = 0x32;
/// Push.
pub const TYPE_PUSH: u8 = 0x40;
/// Query.
pub const TYPE_QUERY: u8 = 0x80;
/// QueryHit.
pub const TYPE_QUERY_HIT: u8 = 0x81;

/// Separator between HUGE/GGEP items in an extension area.
pub const EXT_SEP: u8 = 0x1C;
/// Servents send at most this many results per QueryHit (LimeWire, gtk-gnutella).
pub const MAX_RESULTS_PER_HIT: usize = 10;

/// Query flags word bits (big-endian word, present when bit 15 is set).
pub mod qflags {
    /// The word holds flags, not a min speed.
    pub const PRESENT: u16 = 0x8000;
    /// The querier is firewalled: firewalled responders must not answer.
    pub const FIREWALLED: u16 = 0x4000;
    /// XML metadata wanted.
    pub const XML: u16 = 0x2000;
    /// Leaf-guided dynamic query.
    pub const LEAF_GUIDED: u16 = 0x1000;
    /// GGEP "H" understood.
    pub const GGEP_H: u16 = 0x0800;
    /// Out-of-band replies wanted.
    pub const OOB: u16 = 0x0400;
}

/// Name of a payload type, as used in the stats record.
pub type PayloadType = u8;

/// Short name of a payload type for logs and stats.
pub fn type_name(ptype: u8) -> &'static str {
    match ptype {
        TYPE_PING => "ping",
        TYPE_PONG => "pong",
        TYPE_BYE => "bye",
        TYPE_QRP => "qrp",
        TYPE_VENDOR | TYPE_VENDOR_STD => "vendor",
        TYPE_PUSH => "push",
        TYPE_QUERY => "query",
        TYPE_QUERY_HIT => "queryhit",
        _ => "unknown",
    }
}

/// A HUGE/GGEP extension area (in a Query, after the criteria; in a hit result, after the name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// HUGE text items, e.g. `urn:sha1:<base32>` or a bare `urn:`.
    pub huge: Vec<String>,
    /// GGEP extensions (all blocks merged).
    pub ggep: Vec<GgepExt>,
}

impl Extensions {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.huge.is_empty() && self.ggep.is_empty()
    }

    /// Parses an area. A malformed GGEP block ends the parse but is not an error (the notes, §9: ignore the
    /// block, not the message).
    pub fn parse(b: &[u8]) -> Extensions {
        let mut ext = Extensions::default();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                EXT_SEP | 0 => i += 1,
                GGEP_MAGIC => match ggep::decode_block(&b[i..]) {
                    Ok((exts, n)) => {
                        ext.ggep.extend(exts);
                        i += n;
                    }
                    Err(_) => break,
                },
                _ => {
                    let end = b[i..]
                        .iter()
                        .position(|&c| c == EXT_SEP || c == 0)
                        .map_or(b.len(), |p| i + p);
                    ext.huge
                        .push(String::from_utf8_lossy(&b[i..end]).into_owned());
                    i = end;
                }
            }
        }
        ext
    }

    /// Appends the area (HUGE items separated by 0x1C, then one GGEP block).
    pub fn encode(&self, dst: &mut BytesMut) {
        for (i, h) in self.huge.iter().enumerate() {
            if i > 0 {
                dst.put_u8(EXT_SEP);
            }
            dst.put_slice(h.as_bytes());
        }
        if !self.ggep.is_empty() {
            if !self.huge.is_empty() {
                dst.put_u8(EXT_SEP);
            }
            ggep::encode_block(&self.ggep, dst);
        }
    }

    /// Every SHA-1 named in the area (`urn:sha1:` text, case-insensitive, or GGEP `H`).
    pub fn sha1s(&self) -> Vec<[u8; 20]> {
        let mut v: Vec<[u8; 20]> = self.huge.iter().filter_map(|h| parse_sha1_urn(h)).collect();
        v.extend(
            self.ggep
                .iter()
                .filter(|e| e.id == b"H")
                .filter_map(GgepExt::as_sha1),
        );
        v
    }
}

/// `urn:sha1:<32 base32>` (also the SHA-1 half of `urn:bitprint:`) → 20 bytes.
pub fn parse_sha1_urn(s: &str) -> Option<[u8; 20]> {
    let lower = s.get(..9)?.to_ascii_lowercase();
    let b32 = match lower.as_str() {
        "urn:sha1:" => s.get(9..41)?,
        _ if s.len() >= 45 && s[..13].eq_ignore_ascii_case("urn:bitprint:") => s.get(13..45)?,
        _ => return None,
    };
    let v = data_encoding::BASE32_NOPAD
        .decode(b32.to_ascii_uppercase().as_bytes())
        .ok()?;
    v.try_into().ok()
}

/// 20 bytes → `urn:sha1:<32 base32>`.
pub fn sha1_urn(d: &[u8; 20]) -> String {
    format!("urn:sha1:{}", data_encoding::BASE32_NOPAD.encode(d))
}

/// Ping: usually empty; a GGEP block only toward peers that said `GGEP:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ping {
    /// GGEP extensions (e.g. `SCP`).
    pub ggep: Vec<GgepExt>,
}

/// Pong: who a host is and what it shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pong {
    /// Listening port.
    pub port: u16,
    /// IPv4 address.
    pub ip: Ipv4Addr,
    /// Number of files shared.
    pub files: u32,
    /// Kilobytes shared.
    pub kbytes: u32,
    /// GGEP extensions (`DU`, `UP`, `VC`, `IPP`...).
    pub ggep: Vec<GgepExt>,
}

/// Query: the search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The 2-byte min-speed/flags field as it was on the wire (see [`Query::flags`]).
    pub speed_flags: [u8; 2],
    /// Search criteria (keywords); may be empty for a URN query.
    pub criteria: String,
    /// HUGE/GGEP extension area.
    pub ext: Extensions,
}

impl Query {
    /// A query with the flags word "present | GGEP H understood" (and the firewalled bit when asked).
    pub fn new(criteria: &str, firewalled: bool) -> Query {
        let mut f = qflags::PRESENT | qflags::GGEP_H;
        if firewalled {
            f |= qflags::FIREWALLED;
        }
        Query {
            speed_flags: f.to_be_bytes(),
            criteria: criteria.to_owned(),
            ext: Extensions::default(),
        }
    }

    /// The flags word (read big-endian) if bit 15 is set, else `None` (then it is a legacy LE min speed).
    pub fn flags(&self) -> Option<u16> {
        let w = u16::from_be_bytes(self.speed_flags);
        (w & qflags::PRESENT != 0).then_some(w)
    }

    /// The payload size on the wire, computed without encoding the whole message.
    pub fn payload_len(&self) -> usize {
        let ext = if self.ext.is_empty() {
            0
        } else {
            let mut b = BytesMut::new();
            self.ext.encode(&mut b);
            b.len()
        };
        2 + self.criteria.len() + 1 + ext
    }

    /// Whether the querier says it is firewalled.
    pub fn querier_firewalled(&self) -> bool {
        self.flags().is_some_and(|f| f & qflags::FIREWALLED != 0)
    }
}

/// One result inside a QueryHit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HitResult {
    /// File index on the responder.
    pub index: u32,
    /// Size (see [`HitResult::file_size`] for files over 4 GiB).
    pub size: u32,
    /// File name.
    pub name: String,
    /// HUGE/GGEP area (`urn:sha1:`, GGEP `H`, `LF`, `TT`...).
    pub ext: Extensions,
}

impl HitResult {
    /// The file size, from GGEP `LF` when present.
    pub fn file_size(&self) -> u64 {
        ggep::find(&self.ext.ggep, "LF")
            .and_then(GgepExt::as_int)
            .unwrap_or(self.size as u64)
    }
}

/// Trailer flag bits.
pub mod hflags {
    /// Firewalled: a Push is needed.
    pub const PUSH: u8 = 0x01;
    /// All upload slots busy.
    pub const BUSY: u8 = 0x04;
    /// Has uploaded at least one file.
    pub const UPLOADED: u8 = 0x08;
    /// The speed field was measured.
    pub const MEASURED: u8 = 0x10;
    /// The private area holds GGEP.
    pub const GGEP: u8 = 0x20;
}

/// The optional QueryHit trailer between the results and the servent GUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Vendor code (`GTKG`, `LIME`, `BEAR`, `RAZA`...).
    pub vendor: [u8; 4],
    /// Open data, normally the two flag bytes.
    pub open: Vec<u8>,
    /// Private area (a GGEP block when the GGEP flag is on).
    pub private: Vec<u8>,
}

impl Trailer {
    /// A trailer with the flag bytes written the way the historical quirk wants: PUSH has its value in the
    /// first byte and its "valid" bit in the second; every other bit the other way round.
    pub fn new(vendor: [u8; 4], flags: u8, ggep: &[GgepExt]) -> Trailer {
        let mut flags = flags;
        let mut private = BytesMut::new();
        if !ggep.is_empty() {
            flags |= hflags::GGEP;
            ggep::encode_block(ggep, &mut private);
        }
        let others = hflags::BUSY | hflags::UPLOADED | hflags::MEASURED | hflags::GGEP;
        let b1 = others | (flags & hflags::PUSH);
        let b2 = hflags::PUSH | (flags & others);
        Trailer {
            vendor,
            open: vec![b1, b2],
            private: private.to_vec(),
        }
    }

    /// Whether `bit` is on: set in both flag bytes (gtk-gnutella's robust reading).
    pub fn flag(&self, bit: u8) -> bool {
        self.open.len() >= 2 && self.open[0] & bit != 0 && self.open[1] & bit != 0
    }

    /// The GGEP extensions of the private area, if flagged and well-formed.
    pub fn ggep(&self) -> Vec<GgepExt> {
        if !self.flag(hflags::GGEP) {
            return Vec::new();
        }
        match self.private.iter().position(|&b| b == GGEP_MAGIC) {
            Some(p) => ggep::decode_block(&self.private[p..])
                .map(|(e, _)| e)
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

/// QueryHit: results from one servent, routed back along the query's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryHit {
    /// Responder's port.
    pub port: u16,
    /// Responder's IPv4 address.
    pub ip: Ipv4Addr,
    /// Speed in kbit/s.
    pub speed: u32,
    /// The results (at most 255; servents send at most 10).
    pub results: Vec<HitResult>,
    /// Optional vendor trailer.
    pub trailer: Option<Trailer>,
    /// Responder's servent GUID: always the last 16 bytes.
    pub servent: Guid,
}

impl QueryHit {
    /// Whether the responder says it is firewalled (needs a Push).
    pub fn firewalled(&self) -> bool {
        self.trailer.as_ref().is_some_and(|t| t.flag(hflags::PUSH))
    }
}

/// Push: ask a firewalled servent to connect back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The firewalled servent's GUID (the route key).
    pub servent: Guid,
    /// File index wanted.
    pub index: u32,
    /// Where to connect back.
    pub ip: Ipv4Addr,
    /// Port to connect back to.
    pub port: u16,
    /// GGEP extensions (`TLS`, `6`).
    pub ggep: Vec<GgepExt>,
}

/// Bye: the sender is closing; `code` says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bye {
    /// 200 shutdown, 400 too large, 401 dups, 413 QRP error, 502 queue full...
    pub code: u16,
    /// Reason, possibly followed by CRLF-separated HTTP-style headers.
    pub reason: String,
}

/// QRP ROUTE_TABLE_UPDATE (0x30).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTableUpdate {
    /// Variant 0x00: the table becomes all "infinity".
    Reset {
        /// Number of slots (a power of two).
        table_len: u32,
        /// The "absent" value.
        infinity: u8,
    },
    /// Variant 0x01: one chunk of the delta stream.
    Patch {
        /// Chunk number, from 1.
        seq_no: u8,
        /// Number of chunks in the sequence.
        seq_size: u8,
        /// 0 none, 1 zlib.
        compressor: u8,
        /// 1, 2, 4 or 8 bits per slot.
        entry_bits: u8,
        /// Chunk data.
        data: Vec<u8>,
    },
}

/// A vendor message (0x31, or 0x32 standard), kept only to be ignored safely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vendor {
    /// 0x32 rather than 0x31.
    pub standard: bool,
    /// Vendor id (case-sensitive).
    pub vendor: [u8; 4],
    /// Sub-selector.
    pub selector: u16,
    /// Version.
    pub version: u16,
    /// The rest.
    pub data: Vec<u8>,
}

/// A parsed payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// 0x00.
    Ping(Ping),
    /// 0x01.
    Pong(Pong),
    /// 0x02.
    Bye(Bye),
    /// 0x30.
    Qrp(RouteTableUpdate),
    /// 0x31/0x32.
    Vendor(Vendor),
    /// 0x40.
    Push(Push),
    /// 0x80.
    Query(Query),
    /// 0x81.
    QueryHit(QueryHit),
    /// Any other type (gtk-gnutella's RUDP, DHT, HSEP...): carried, never interpreted.
    Unknown {
        /// The payload type byte.
        ptype: u8,
        /// Raw payload.
        payload: Vec<u8>,
    },
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let s = self
            .b
            .get(self.i..self.i + n)
            .ok_or(DecodeError::Truncated(what))?;
        self.i += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn ip(&mut self) -> Result<Ipv4Addr, DecodeError> {
        let s = self.take(4, "IPv4 address")?;
        Ok(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
    }
    fn guid(&mut self, what: &'static str) -> Result<Guid, DecodeError> {
        let mut g = [0u8; 16];
        g.copy_from_slice(self.take(16, what)?);
        Ok(Guid(g))
    }
    /// Bytes up to a NUL (consumed), the NUL being required.
    fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.b[self.i..];
        let p = rest
            .iter()
            .position(|&c| c == 0)
            .ok_or(DecodeError::Truncated(what))?;
        self.i += p + 1;
        Ok(&rest[..p])
    }
    fn rest(&mut self) -> &'a [u8] {
        let r = &self.b[self.i..];
        self.i = self.b.len();
        r
    }
}

fn trailing_ggep(b: &[u8]) -> Vec<GgepExt> {
    match b.first() {
        Some(&GGEP_MAGIC) => ggep::decode_block(b).map(|(e, _)| e).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Message {
    /// The payload type byte.
    pub fn payload_type(&self) -> u8 {
        match self {
            Message::Ping(_) => TYPE_PING,
            Message::Pong(_) => TYPE_PONG,
            Message::Bye(_) => TYPE_BYE,
            Message::Qrp(_) => TYPE_QRP,
            Message::Vendor(v) if v.standard => TYPE_VENDOR_STD,
            Message::Vendor(_) => TYPE_VENDOR,
            Message::Push(_) => TYPE_PUSH,
            Message::Query(_) => TYPE_QUERY,
            Message::QueryHit(_) => TYPE_QUERY_HIT,
            Message::Unknown { ptype, .. } => *ptype,
        }
    }

    /// Parses a payload of type `ptype` (already size-checked by [`super::Frame::decode`]).
    pub fn parse(ptype: u8, b: &[u8]) -> Result<Message, DecodeError> {
        let mut c = Cur { b, i: 0 };
        Ok(match ptype {
            TYPE_PING => Message::Ping(Ping {
                ggep: trailing_ggep(b),
            }),
            TYPE_PONG => Message::Pong(Pong {
                port: c.u16("pong port")?,
                ip: c.ip()?,
                files: c.u32("pong files")?,
                kbytes: c.u32("pong kbytes")?,
                ggep: trailing_ggep(c.rest()),
            }),
            TYPE_BYE => {
                let code = c.u16("bye code")?;
                let rest = c.rest();
                let end = rest.iter().position(|&x| x == 0).unwrap_or(rest.len());
                Message::Bye(Bye {
                    code,
                    reason: lossy(&rest[..end]),
                })
            }
            TYPE_QRP => Message::Qrp(match c.u8("qrp variant")? {
                0 => RouteTableUpdate::Reset {
                    table_len: c.u32("qrp table length")?,
                    infinity: c.u8("qrp infinity")?,
                },
                1 => RouteTableUpdate::Patch {
                    seq_no: c.u8("qrp seq_no")?,
                    seq_size: c.u8("qrp seq_size")?,
                    compressor: c.u8("qrp compressor")?,
                    entry_bits: c.u8("qrp entry bits")?,
                    data: c.rest().to_vec(),
                },
                _ => return Err(DecodeError::Invalid("qrp variant")),
            }),
            TYPE_VENDOR | TYPE_VENDOR_STD => {
                let mut vendor = [0u8; 4];
                vendor.copy_from_slice(c.take(4, "vendor id")?);
                Message::Vendor(Vendor {
                    standard: ptype == TYPE_VENDOR_STD,
                    vendor,
                    selector: c.u16("vendor selector")?,
                    version: c.u16("vendor version")?,
                    data: c.rest().to_vec(),
                })
            }
            TYPE_PUSH => Message::Push(Push {
                servent: c.guid("push servent id")?,
                index: c.u32("push index")?,
                ip: c.ip()?,
                port: c.u16("push port")?,
                ggep: trailing_ggep(c.rest()),
            }),
            TYPE_QUERY => {
                let mut speed_flags = [0u8; 2];
                speed_flags.copy_from_slice(c.take(2, "query min speed")?);
                let criteria = lossy(c.cstr("query criteria")?);
                Message::Query(Query {
                    speed_flags,
                    criteria,
                    ext: Extensions::parse(c.rest()),
                })
            }
            TYPE_QUERY_HIT => Message::QueryHit(parse_hit(b)?),
            _ => Message::Unknown {
                ptype,
                payload: b.to_vec(),
            },
        })
    }

    /// Appends the payload bytes.
    pub fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            Message::Ping(p) => ggep::encode_block(&p.ggep, dst),
            Message::Pong(p) => {
                dst.put_u16_le(p.port);
                dst.put_slice(&p.ip.octets());
                dst.put_u32_le(p.files);
                dst.put_u32_le(p.kbytes);
                ggep::encode_block(&p.ggep, dst);
            }
            Message::Bye(b) => {
                dst.put_u16_le(b.code);
                dst.put_slice(b.reason.as_bytes());
                dst.put_u8(0);
            }
            Message::Qrp(RouteTableUpdate::Reset {
                table_len,
                infinity,
            }) => {
                dst.put_u8(0);
                dst.put_u32_le(*table_len);
                dst.put_u8(*infinity);
            }
            Message::Qrp(RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            }) => {
                dst.put_slice(&[1, *seq_no, *seq_size, *compressor, *entry_bits]);
                dst.put_slice(data);
            }
            Message::Vendor(v) => {
                dst.put_slice(&v.vendor);
                dst.put_u16_le(v.selector);
                dst.put_u16_le(v.version);
                dst.put_slice(&v.data);
            }
            Message::Push(p) => {
                dst.put_slice(&p.servent.0);
                dst.put_u32_le(p.index);
                dst.put_slice(&p.ip.octets());
                dst.put_u16_le(p.port);
                ggep::encode_block(&p.ggep, dst);
            }
            Message::Query(q) => {
                dst.put_slice(&q.speed_flags);
                dst.put_slice(q.criteria.as_bytes());
                dst.put_u8(0);
                q.ext.encode(dst);
            }
            Message::QueryHit(h) => {
                dst.put_u8(h.results.len().min(255) as u8);
                dst.put_u16_le(h.port);
                dst.put_slice(&h.ip.octets());
                dst.put_u32_le(h.speed);
                for r in h.results.iter().take(255) {
                    dst.put_u32_le(r.index);
                    dst.put_u32_le(r.size);
                    dst.put_slice(r.name.as_bytes());
                    dst.put_u8(0);
                    r.ext.encode(dst);
                    dst.put_u8(0);
                }
                if let Some(t) = &h.trailer {
                    dst.put_slice(&t.vendor);
                    dst.put_u8(t.open.len().min(255) as u8);
                    dst.put_slice(&t.open[..t.open.len().min(255)]);
                    dst.put_slice(&t.private);
                }
                dst.put_slice(&h.servent.0);
            }
            Message::Unknown { payload, .. } => dst.put_slice(payload),
        }
    }
}

fn parse_hit(b: &[u8]) -> Result<QueryHit, DecodeError> {
    if b.len() < 11 + 16 {
        return Err(DecodeError::Truncated("query hit"));
    }
    let (body, guid) = b.split_at(b.len() - 16);
    let mut c = Cur { b: body, i: 0 };
    let count = c.u8("hit count")?;
    let port = c.u16("hit port")?;
    let ip = c.ip()?;
    let speed = c.u32("hit speed")?;
    let mut results = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let index = c.u32("result index")?;
        let size = c.u32("result size")?;
        let name = lossy(c.cstr("result name")?);
        let ext = Extensions::parse(c.cstr("result extension")?);
        results.push(HitResult {
            index,
            size,
            name,
            ext,
        });
    }
    let rest = c.rest();
    let trailer = match rest.len() {
        0 => None,
        1..=4 => return Err(DecodeError::Truncated("hit trailer")),
        _ => {
            let open_len = rest[4] as usize;
            let open = rest
                .get(5..5 + open_len)
                .ok_or(DecodeError::Truncated("hit trailer open data"))?;
            Some(Trailer {
                vendor: [rest[0], rest[1], rest[2], rest[3]],
                open: open.to_vec(),
                private: rest[5 + open_len..].to_vec(),
            })
        }
    };
    let mut g = [0u8; 16];
    g.copy_from_slice(guid);
    Ok(QueryHit {
        port,
        ip,
        speed,
        results,
        trailer,
        servent: Guid(g),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::ggep::tests::arb_ext;
    use super::super::Descriptor;
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ._-]{0,20}"
    }

    fn huge_item() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9:._-]{1,40}"
    }

    fn arb_ext_area() -> impl Strategy<Value = Extensions> {
        (
            proptest::collection::vec(huge_item(), 0..3),
            proptest::collection::vec(arb_ext(), 0..3),
        )
            .prop_map(|(huge, ggep)| Extensions { huge, ggep })
    }

    fn arb_ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<[u8; 4]>().prop_map(Ipv4Addr::from)
    }

    fn arb_guid() -> impl Strategy<Value = Guid> {
        any::<[u8; 16]>().prop_map(Guid)
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = Message> {
        let ggeps = || proptest::collection::vec(arb_ext(), 0..2);
        prop_oneof![
            ggeps().prop_map(|ggep| Message::Ping(Ping { ggep })),
            (any::<u16>(), arb_ip(), any::<u32>(), any::<u32>(), ggeps()).prop_map(
                |(port, ip, files, kbytes, ggep)| Message::Pong(Pong {
                    port,
                    ip,
                    files,
                    kbytes,
                    ggep
                })
            ),
            (any::<u16>(), text()).prop_map(|(code, reason)| Message::Bye(Bye { code, reason })),
            (any::<u32>(), any::<u8>()).prop_map(|(table_len, infinity)| Message::Qrp(
                RouteTableUpdate::Reset {
                    table_len,
                    infinity
                }
            )),
            (
                any::<[u8; 4]>(),
                proptest::collection::vec(any::<u8>(), 0..50)
            )
                .prop_map(|(h, data)| Message::Qrp(RouteTableUpdate::Patch {
                    seq_no: h[0],
                    seq_size: h[1],
                    compressor: h[2],
                    entry_bits: h[3],
                    data
                })),
            (
                any::<bool>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u16>(),
                proptest::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(standard, vendor, selector, version, data)| {
                    Message::Vendor(Vendor {
                        standard,
                        vendor,
                        selector,
                        version,
                        data,
                    })
                }),
            (arb_guid(), any::<u32>(), arb_ip(), any::<u16>(), ggeps()).prop_map(
                |(servent, index, ip, port, ggep)| Message::Push(Push {
                    servent,
                    index,
                    ip,
                    port,
                    ggep
                })
            ),
            (any::<[u8; 2]>(), text(), arb_ext_area()).prop_map(|(speed_flags, criteria, ext)| {
                Message::Query(Query {
                    speed_flags,
                    criteria,
                    ext,
                })
            }),
            (
                any::<u16>(),
                arb_ip(),
                any::<u32>(),
                proptest::collection::vec(
                    (any::<u32>(), any::<u32>(), text(), arb_ext_area()),
                    0..4
                ),
                proptest::option::of((
                    any::<[u8; 4]>(),
                    any::<u8>(),
                    proptest::collection::vec(arb_ext(), 0..2)
                )),
                arb_guid()
            )
                .prop_map(|(port, ip, speed, rs, tr, servent)| {
                    Message::QueryHit(QueryHit {
                        port,
                        ip,
                        speed,
                        results: rs
                            .into_iter()
                            .map(|(index, size, name, ext)| HitResult {
                                index,
                                size,
                                name,
                                ext,
                            })
                            .collect(),
                        trailer: tr.map(|(v, f, g)| Trailer::new(v, f, &g)),
                        servent,
                    })
                }),
            (
                prop_oneof![Just(0x41u8), Just(0x44), Just(0xCD)],
                proptest::collection::vec(any::<u8>(), 0..40)
            )
                .prop_map(|(ptype, payload)| Message::Unknown { ptype, payload }),
        ]
    }

    fn round(m: &Message) -> Message {
        let mut b = BytesMut::new();
        m.encode_payload(&mut b);
        Message::parse(m.payload_type(), &b).unwrap()
    }

    #[test]
    fn trailer_flags_follow_the_both_bytes_rule() {
        // Seen from gtk-gnutella: `GTKG 02 2d 21` firewalled, `2c 21` reachable.
        let fw = Trailer {
            vendor: *b"GTKG",
            open: vec![0x2d, 0x21],
            private: vec![],
        };
        assert!(fw.flag(hflags::PUSH));
        assert!(fw.flag(hflags::GGEP));
        assert!(!fw.flag(hflags::BUSY));
        assert!(!fw.flag(hflags::UPLOADED));
        let open = Trailer {
            open: vec![0x2c, 0x21],
            ..fw.clone()
        };
        assert!(!open.flag(hflags::PUSH));
        let t = Trailer::new(*b"P2PL", hflags::PUSH | hflags::BUSY, &[]);
        assert!(t.flag(hflags::PUSH) && t.flag(hflags::BUSY));
        assert!(!t.flag(hflags::UPLOADED) && !t.flag(hflags::GGEP));
        let t = Trailer::new(*b"P2PL", 0, &[GgepExt::new("BH", vec![])]);
        assert!(!t.flag(hflags::PUSH));
        assert_eq!(t.ggep()[0].id, b"BH");
    }

    #[test]
    fn query_flags_word_is_big_endian() {
        let q = Query::new("hello", true);
        assert_eq!(q.speed_flags, [0xC8, 0x00]);
        assert!(q.querier_firewalled());
        let legacy = Query {
            speed_flags: [0x10, 0x00],
            criteria: String::new(),
            ext: Extensions::default(),
        };
        assert_eq!(legacy.flags(), None);
    }

    #[test]
    fn query_with_huge_and_ggep_h() {
        let sha = [0xABu8; 20];
        let mut q = Query::new("", false);
        q.ext.huge.push(sha1_urn(&sha));
        q.ext.ggep.push(GgepExt::sha1(&[1; 20]));
        let m = Message::Query(q);
        let back = round(&m);
        assert_eq!(back, m);
        let Message::Query(q) = back else { panic!() };
        assert_eq!(q.ext.sha1s(), vec![sha, [1; 20]]);
        let mut b = BytesMut::new();
        Message::Query(q.clone()).encode_payload(&mut b);
        assert_eq!(q.payload_len(), b.len());
    }

    #[test]
    fn sha1_urn_base32_vectors() {
        // SHA-1("") in base32, from the notes §5.
        let d = hex::decode("da39a3ee5e6b4b0d3255bfef95601890afd80709").unwrap();
        let d: [u8; 20] = d.try_into().unwrap();
        assert_eq!(sha1_urn(&d), "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ");
        assert_eq!(
            parse_sha1_urn("URN:SHA1:3i42h3s6nnfq2msvx7xzkyayscx5qbyj"),
            Some(d)
        );
        assert_eq!(parse_sha1_urn("urn:sha1:short"), None);
        assert_eq!(data_encoding::BASE32_NOPAD.encode(&[0x0F, 0xF5]), "B72Q");
    }

    #[test]
    fn hit_layout_matches_the_draft() {
        let h = QueryHit {
            port: 6346,
            ip: Ipv4Addr::new(127, 0, 0, 1),
            speed: 1000,
            results: vec![HitResult {
                index: 3,
                size: 5,
                name: "hello.txt".into(),
                ext: Extensions {
                    huge: vec!["urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ".into()],
                    ggep: vec![],
                },
            }],
            trailer: Some(Trailer::new(*b"P2PL", 0, &[])),
            servent: Guid([9; 16]),
        };
        let mut b = BytesMut::new();
        Message::QueryHit(h.clone()).encode_payload(&mut b);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..3], &6346u16.to_le_bytes());
        assert_eq!(&b[3..7], &[127, 0, 0, 1]);
        assert_eq!(&b[b.len() - 16..], &[9; 16]);
        assert_eq!(&b[b.len() - 16 - 7..b.len() - 16 - 3], b"P2PL");
        assert_eq!(
            Message::parse(TYPE_QUERY_HIT, &b).unwrap(),
            Message::QueryHit(h)
        );
    }

    #[test]
    fn bye_and_bad_ggep_are_tolerated() {
        let m = Message::parse(
            TYPE_BYE,
            b"\xcb\x00Becoming a leaf node\r\nServer: x\r\n\r\n\x00",
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Bye(Bye {
                code: 203,
                reason: "Becoming a leaf node\r\nServer: x\r\n\r\n".into()
            })
        );
        // A GGEP block whose length overruns the payload is ignored, the query kept (notes §9).
        let m = Message::parse(TYPE_QUERY, b"\x00\x00hello\x00\xc3\x81H\x7f\x01").unwrap();
        let Message::Query(q) = m else { panic!() };
        assert_eq!(q.criteria, "hello");
        assert!(q.ext.ggep.is_empty());
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in arb_message(), ttl in any::<u8>(), hops in any::<u8>()) {
            prop_assert_eq!(round(&m), m.clone());
            let d = Descriptor { guid: Guid([3; 16]), ttl, hops, msg: m };
            let b = d.to_bytes();
            if b.len() - 23 <= super::super::max_payload(d.msg.payload_type()) {
                let (back, n) = Descriptor::decode(&b).unwrap().unwrap();
                prop_assert_eq!(n, b.len());
                prop_assert_eq!(back, d);
            }
        }

        #[test]
        fn arbitrary_payloads_never_panic(ptype in prop_oneof![Just(0u8), Just(1), Just(2), Just(0x30), Just(0x31), Just(0x40), Just(0x80), Just(0x81)],
                                          b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Message::parse(ptype, &b);
            for n in 0..b.len().min(40) {
                let _ = Message::parse(ptype, &b[..n]);
            }
        }
    }
}
