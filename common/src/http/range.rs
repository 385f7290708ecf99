//! The `Range` request header for byte ranges (RFC 9110 §14.1.2, §14.2), reduced to what file sharing needs.
//!
//! Policy, as RFC 9110 §14.2 allows ("a server MAY ignore the Range header field"):
//! - exactly one satisfiable `bytes=` range (`a-b`, `a-`, `-n`) gives [`RangeOutcome::Partial`] (206);
//! - a syntactically valid single range that selects nothing (`a` at or past the end, `-0`, any range of an
//!   empty file) gives [`RangeOutcome::Unsatisfiable`] (416 with `Content-Range: bytes */total`);
//! - anything else (garbage, another unit, `b < a`, numbers too big for u64, **several ranges**) is ignored:
//!   [`RangeOutcome::Full`] (200 with the whole file). Every Gnutella and KaZaA downloader asks for one range,
//!   so multipart/byteranges replies would add code no peer uses.
//!
//! All arithmetic is overflow-checked: the parser never panics on any input (see the property tests).

/// Longest `Range` header value we look at; longer ones are garbage for our purposes and ignored.
pub const MAX_RANGE_HEADER: usize = 256;

/// What to send for a request, given its `Range` header and the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// 200 with the whole file (no `Range`, or one we ignore).
    Full,
    /// 206 with bytes `start..=end` (inclusive, `end < total`).
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// 416 with `Content-Range: bytes */total`.
    Unsatisfiable,
}

impl RangeOutcome {
    /// The `(offset, length)` of the bytes to send for a file of `total` bytes, or `None` for 416.
    pub fn span(self, total: u64) -> Option<(u64, u64)> {
        match self {
            RangeOutcome::Full => Some((0, total)),
            RangeOutcome::Partial { start, end } => Some((start, end - start + 1)),
            RangeOutcome::Unsatisfiable => None,
        }
    }
}

/// One parsed range spec, before it is checked against the file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-` (`end == None`).
    From { start: u64, end: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_spec(s: &str) -> Option<Spec> {
    let s = s.trim_matches([' ', '\t']);
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim_matches([' ', '\t']), b.trim_matches([' ', '\t']));
    if a.is_empty() {
        return Some(Spec::Suffix(parse_u64(b)?));
    }
    let start = parse_u64(a)?;
    let end = if b.is_empty() {
        None
    } else {
        Some(parse_u64(b)?)
    };
    if matches!(end, Some(e) if e < start) {
        return None;
    }
    Some(Spec::From { start, end })
}

/// Decides the reply for a `Range` header value `header` (raw bytes) on a file of `total` bytes.
pub fn evaluate(header: Option<&[u8]>, total: u64) -> RangeOutcome {
    let Some(raw) = header else {
        return RangeOutcome::Full;
    };
    if raw.len() > MAX_RANGE_HEADER {
        return RangeOutcome::Full;
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return RangeOutcome::Full;
    };
    let text = text.trim_matches([' ', '\t']);
    // The unit is case-insensitive (RFC 9110 §14.1); some old clients also put spaces around `=`.
    let Some((unit, set)) = text.split_once('=') else {
        return RangeOutcome::Full;
    };
    if !unit.trim_matches([' ', '\t']).eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeOutcome::Full;
    }
    let Some(spec) = parse_spec(set) else {
        return RangeOutcome::Full;
    };
    resolve(spec, total)
}

fn resolve(spec: Spec, total: u64) -> RangeOutcome {
    match spec {
        Spec::From { start, end } => {
            if start >= total {
                return RangeOutcome::Unsatisfiable;
            }
            let last = total - 1;
            let end = end.map_or(last, |e| e.min(last));
            RangeOutcome::Partial { start, end }
        }
        Spec::Suffix(n) => {
            if n == 0 || total == 0 {
                return RangeOutcome::Unsatisfiable;
            }
            RangeOutcome::Partial {
                start: total - n.min(total),
                end: total - 1,
            }
        }
    }
}

/// The `Content-Range` value of a 206: `bytes start-end/total`.
pub fn content_range(start: u64, end: u64, total: u64) -> String {
    format!("bytes {start}-{end}/{total}")
}

/// The `Content-Range` value of a 416: `bytes */total`.
pub fn unsatisfied_range(total: u64) -> String {
    format!("bytes */{total}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(h: &str, total: u64) -> RangeOutcome {
        evaluate(Some(h.as_bytes()), total)
    }

    fn part(start: u64, end: u64) -> RangeOutcome {
        RangeOutcome::Partial { start, end }
    }

    #[test]
    fn the_three_single_range_forms() {
        assert_eq!(ev("bytes=100-199", 1000), part(100, 199));
        assert_eq!(ev("bytes=100-", 1000), part(100, 999));
        assert_eq!(ev("bytes=-100", 1000), part(900, 999));
        assert_eq!(ev("bytes=0-0", 1), part(0, 0));
        assert_eq!(evaluate(None, 10), RangeOutcome::Full);
    }

    #[test]
    fn ranges_are_clamped_to_the_file() {
        assert_eq!(ev("bytes=100-5000", 1000), part(100, 999));
        assert_eq!(ev("bytes=-5000", 1000), part(0, 999));
        assert_eq!(
            ev(&format!("bytes=0-{}", u64::MAX), 1000),
            part(0, 999),
            "u64::MAX as an end is fine"
        );
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(ev("bytes=1000-", 1000), RangeOutcome::Unsatisfiable);
        assert_eq!(ev("bytes=1000-2000", 1000), RangeOutcome::Unsatisfiable);
        assert_eq!(ev("bytes=-0", 1000), RangeOutcome::Unsatisfiable);
        assert_eq!(ev("bytes=0-", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(ev("bytes=-5", 0), RangeOutcome::Unsatisfiable);
        assert_eq!(
            ev(&format!("bytes={}-", u64::MAX), 1000),
            RangeOutcome::Unsatisfiable
        );
    }

    #[test]
    fn garbage_and_multi_ranges_are_ignored() {
        for h in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-4",
            "bytes=+1-2",
            "bytes=1-2-3",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=99999999999999999999999-",
            "bytes=-99999999999999999999999",
            "bytes=0x10-",
            "bytes=\u{0660}-",
        ] {
            assert_eq!(ev(h, 1000), RangeOutcome::Full, "{h:?}");
        }
        assert_eq!(evaluate(Some(&[0xff, 0xfe]), 10), RangeOutcome::Full);
        let long = format!("bytes=0-{}", "9".repeat(MAX_RANGE_HEADER));
        assert_eq!(ev(&long, 10), RangeOutcome::Full);
    }

    #[test]
    fn lenient_spelling_old_clients_use() {
        assert_eq!(ev("Bytes=1-2", 10), part(1, 2));
        assert_eq!(ev("bytes = 1 - 2 ", 10), part(1, 2));
    }

    #[test]
    fn header_values() {
        assert_eq!(content_range(100, 199, 1000), "bytes 100-199/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
        assert_eq!(part(100, 199).span(1000), Some((100, 100)));
        assert_eq!(RangeOutcome::Full.span(7), Some((0, 7)));
        assert_eq!(RangeOutcome::Unsatisfiable.span(7), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_in_bounds(raw in proptest::collection::vec(any::<u8>(), 0..64), total in any::<u64>()) {
            if let RangeOutcome::Partial { start, end } = evaluate(Some(&raw), total) {
                prop_assert!(start <= end && end < total);
            }
        }

        #[test]
        fn arbitrary_range_text_never_panics(s in "[bB]ytes ?= ?[-0-9, ]{0,30}", total in any::<u64>()) {
            if let RangeOutcome::Partial { start, end } = evaluate(Some(s.as_bytes()), total) {
                prop_assert!(start <= end && end < total);
            }
        }

        #[test]
        fn formatted_ranges_round_trip(total in 1u64..u64::MAX, a in any::<u64>(), b in any::<u64>()) {
            let (start, end) = (a % total, b % total);
            let (start, end) = (start.min(end), start.max(end));
            prop_assert_eq!(ev(&format!("bytes={start}-{end}"), total), part(start, end));
            prop_assert_eq!(ev(&format!("bytes={start}-"), total), part(start, total - 1));
            let n = end - start + 1;
            prop_assert_eq!(ev(&format!("bytes=-{n}"), total), part(total - n, total - 1));
        }
    }
}
