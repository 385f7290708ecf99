//! Alternate locations in HTTP headers (notes §5; HUGE 0.94 "Alternate-Location", gtk-gnutella/LimeWire
//! compact `X-Alt`).
//!
//! - Compact form, what gtk-gnutella and LimeWire send: `X-Alt: 1.2.3.4:6347, 5.6.7.8` (port 6346 may be
//!   left out), and `X-Nalt` with the same syntax for locations found not to have the file.
//! - Old form: `X-Gnutella-Alternate-Location: http://1.2.3.4:6346/uri-res/N2R?urn:sha1:... 2002-04-30T08:30Z,
//!   ...` (a full URL, optionally followed by an ISO 8601 time).
//!
//! Parsing is lenient per entry (an entry we cannot read is skipped, as servents do: gtk-gnutella appends
//! markers such as `tls=...` we do not use) and bounded: at most [`MAX_ALT_HEADER`] bytes of a value and
//! [`MAX_ALTS_PER_HEADER`] locations are looked at. Only IPv4 unicast addresses with a non-zero port are
//! kept; loopback is allowed (the lab runs on it), the caller decides whom to trust.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Port assumed when an `X-Alt` entry has none (the historical Gnutella port).
pub const DEFAULT_ALT_PORT: u16 = 6346;
/// Bytes of one header value that are parsed; the rest is ignored.
pub const MAX_ALT_HEADER: usize = 8192;
/// Locations taken from one header value.
pub const MAX_ALTS_PER_HEADER: usize = 100;
/// Locations we put in one `X-Alt` header (gtk-gnutella and LimeWire send about ten).
pub const MAX_ALTS_SENT: usize = 10;

/// Whether `a` can be a file source at all (unicast IPv4, port set).
pub fn usable(a: &SocketAddrV4) -> bool {
    let ip = a.ip();
    a.port() != 0 && !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast()
}

/// Reads `ip[:port]` (the compact form), or the host part of an `http://ip[:port]/...` URL.
fn parse_entry(entry: &str) -> Option<SocketAddrV4> {
    let e = entry.trim();
    // Old form: the URL, then optionally a space and a timestamp.
    let e = e.split_ascii_whitespace().next()?;
    let host = match e.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("http://") => e[7..].split('/').next()?,
        _ => e,
    };
    let (ip, port) = match host.split_once(':') {
        Some((ip, port)) => (ip, port.parse::<u16>().ok()?),
        None => (host, DEFAULT_ALT_PORT),
    };
    let a = SocketAddrV4::new(ip.parse::<Ipv4Addr>().ok()?, port);
    usable(&a).then_some(a)
}

/// The locations in one `X-Alt`, `X-Nalt` or `X-Gnutella-Alternate-Location` value (either form), in order,
/// without repeats.
pub fn parse_alt_locs(value: &str) -> Vec<SocketAddrV4> {
    let mut end = value.len().min(MAX_ALT_HEADER);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::new();
    for entry in value[..end].split(',') {
        if out.len() >= MAX_ALTS_PER_HEADER {
            break;
        }
        if let Some(a) = parse_entry(entry) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The compact `X-Alt` value for `alts` (at most [`MAX_ALTS_SENT`]; `:6346` left out as servents do).
pub fn format_x_alt(alts: &[SocketAddrV4]) -> String {
    alts.iter()
        .filter(|a| usable(a))
        .take(MAX_ALTS_SENT)
        .map(|a| {
            if a.port() == DEFAULT_ALT_PORT {
                a.ip().to_string()
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn compact_form_with_default_port() {
        assert_eq!(
            parse_alt_locs("1.2.3.4:6347, 5.6.7.8,127.0.0.1:40000"),
            vec![a("1.2.3.4:6347"), a("5.6.7.8:6346"), a("127.0.0.1:40000")]
        );
    }

    #[test]
    fn old_url_form_with_timestamps() {
        let v = "http://1.2.3.4:6348/uri-res/N2R?urn:sha1:PLSTHIPQGSSZTS5FJUPAKUZWUGYQYPFB 2002-04-30T08:30Z, \
                 HTTP://9.8.7.6/get/1/x.mp3";
        assert_eq!(
            parse_alt_locs(v),
            vec![a("1.2.3.4:6348"), a("9.8.7.6:6346")]
        );
    }

    #[test]
    fn junk_entries_are_skipped() {
        assert_eq!(
            parse_alt_locs("tls=0a, 0.0.0.0:1, 1.2.3.4:0, 224.0.0.1:5, 255.255.255.255:5, x:y, 1.2.3.4:99999, ,2.2.2.2:7"),
            vec![a("2.2.2.2:7")]
        );
        assert!(parse_alt_locs("").is_empty());
    }

    #[test]
    fn repeats_and_overlong_values_are_bounded() {
        let many: Vec<String> = (0..500)
            .map(|i| format!("10.0.{}.{}:1", i / 250, i % 250 + 1))
            .collect();
        assert_eq!(parse_alt_locs(&many.join(",")).len(), MAX_ALTS_PER_HEADER);
        assert_eq!(parse_alt_locs("1.1.1.1:2,1.1.1.1:2").len(), 1);
    }

    #[test]
    fn formatting_drops_the_default_port_and_caps_the_list() {
        let alts: Vec<SocketAddrV4> = (1..=20)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 6346 + i as u16 % 2))
            .collect();
        let v = format_x_alt(&alts);
        assert!(v.starts_with("10.0.0.1:6347, 10.0.0.2, "), "{v}");
        assert_eq!(parse_alt_locs(&v), alts[..MAX_ALTS_SENT].to_vec());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,300}") {
            let v = parse_alt_locs(&s);
            prop_assert!(v.len() <= MAX_ALTS_PER_HEADER);
            prop_assert!(v.iter().all(usable));
        }

        #[test]
        fn round_trip(raw in proptest::collection::vec((1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254, 1u16..), 0..MAX_ALTS_SENT)) {
            let mut alts: Vec<SocketAddrV4> = Vec::new();
            for (a, b, c, d, p) in raw {
                let s = SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), p);
                if usable(&s) && !alts.contains(&s) {
                    alts.push(s);
                }
            }
            prop_assert_eq!(parse_alt_locs(&format_x_alt(&alts)), alts);
        }
    }
}
