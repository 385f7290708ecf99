//! Query matching against one shared file (`shared/protocols/kazaa.md` §2 "Realms … Comparisons" and §6
//! "Matching"). FastTrack's SN matching rules were never published; the choices here are documented in
//! the crate README:
//! - a string term (field `any`, filename or a string tag) is split on whitespace and every word must be
//!   a case-insensitive substring of the named field (`any`: of the filename or any string tag);
//! - a hash term (field 0x03) matches on equality of the 20-byte ContentHash;
//! - integer fields (size 0x21, bitrate 0x15, and the other int tags) compare the dynint value with
//!   at-least / at-most / equals; "approx" means within 10 %;
//! - the realm byte keeps only files of that media type (0xBF: all);
//! - Kazaa's extra term (cmp 0x06, field 0x25) never filters; an unknown comparison never matches.

use crate::codec::message::{FileMeta, Query, QueryTerm};
use crate::codec::tag::{code, is_int_tag};
use crate::codec::{Comparison, MediaType, Reader, Realm};

/// Whether `file` answers `query`.
pub fn matches(query: &Query, file: &FileMeta) -> bool {
    let realm = Realm::from_code(query.realm).unwrap_or(Realm::All);
    if !realm.admits(MediaType::from_code(file.media)) {
        return false;
    }
    query.terms.iter().all(|t| term_matches(t, file))
}

fn int_value(bytes: &[u8]) -> Option<u64> {
    let mut r = Reader::new(bytes);
    let v = r.dynint("term").ok()?;
    r.finish().ok()?;
    Some(v)
}

fn compare_int(cmp: Comparison, have: u64, want: u64) -> bool {
    match cmp {
        Comparison::Equals => have == want,
        Comparison::AtLeast => have >= want,
        Comparison::AtMost => have <= want,
        Comparison::Approx => have.abs_diff(want) <= want / 10,
        Comparison::Substring | Comparison::KazaaExtra => false,
    }
}

fn contains_words(haystack: &str, words: &[String]) -> bool {
    let h = haystack.to_lowercase();
    words.iter().all(|w| h.contains(w.as_str()))
}

fn term_matches(t: &QueryTerm, file: &FileMeta) -> bool {
    let Some(cmp) = Comparison::from_code(t.cmp) else {
        return false;
    };
    if cmp == Comparison::KazaaExtra {
        return true;
    }
    let field = u32::from(t.field);
    match field {
        code::HASH => cmp == Comparison::Equals && t.value == file.hash.0,
        code::SIZE => int_value(&t.value).is_some_and(|want| compare_int(cmp, file.size, want)),
        f if is_int_tag(f) => {
            let Some(want) = int_value(&t.value) else {
                return false;
            };
            file.tags
                .iter()
                .filter(|tag| tag.kind == f)
                .filter_map(|tag| tag.as_int())
                .any(|have| compare_int(cmp, have, want))
        }
        _ => {
            if !matches!(
                cmp,
                Comparison::Substring | Comparison::Equals | Comparison::Approx
            ) {
                return false;
            }
            let value = String::from_utf8_lossy(&t.value).to_lowercase();
            let words: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
            if words.is_empty() {
                return true;
            }
            if cmp == Comparison::Equals {
                return file.tags.iter().any(|tag| {
                    (field == code::ANY || tag.kind == field)
                        && !is_int_tag(tag.kind)
                        && tag.as_text().to_lowercase() == value
                });
            }
            // `any` also looks across fields: each word may come from a different tag, so
            // "artist song" finds a file whose artist and title hold one word each.
            if field == code::ANY {
                let all: String = file
                    .tags
                    .iter()
                    .filter(|tag| !is_int_tag(tag.kind) && tag.kind != code::HASH)
                    .map(|tag| tag.as_text())
                    .collect::<Vec<_>>()
                    .join("\n");
                return contains_words(&all, &words);
            }
            file.tags
                .iter()
                .filter(|tag| tag.kind == field)
                .any(|tag| contains_words(&tag.as_text(), &words))
        }
    }
}

/// Builders for the query terms an ON sends.
pub mod terms {
    use crate::codec::dynint_bytes;
    use crate::codec::message::QueryTerm;
    use crate::codec::tag::code;
    use crate::codec::Comparison;
    use common::hash::UuHash;

    /// Substring on any field (what a keyword search sends).
    pub fn keywords(words: &str) -> QueryTerm {
        QueryTerm {
            cmp: Comparison::Substring.code(),
            field: code::ANY as u8,
            value: words.as_bytes().to_vec(),
        }
    }

    /// Hash equality (`00 03 14 <hash20>`).
    pub fn hash(h: &UuHash) -> QueryTerm {
        QueryTerm {
            cmp: Comparison::Equals.code(),
            field: code::HASH as u8,
            value: h.0.to_vec(),
        }
    }

    /// An integer comparison on `field` (size, bitrate…).
    pub fn int(cmp: Comparison, field: u32, v: u64) -> QueryTerm {
        QueryTerm {
            cmp: cmp.code(),
            field: field as u8,
            value: dynint_bytes(v),
        }
    }

    /// Kazaa's extra term (cmp 06, field 0x25, value 0).
    pub fn kazaa_extra() -> QueryTerm {
        QueryTerm {
            cmp: Comparison::KazaaExtra.code(),
            field: code::KAZAA_EXTRA as u8,
            value: vec![0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Tag;
    use common::hash::UuHash;

    fn song() -> FileMeta {
        FileMeta {
            media: MediaType::Audio.code(),
            hash: UuHash([7; 20]),
            file_id: 1,
            size: 4_000_000,
            tags: vec![
                Tag::string(code::FILENAME, "Artist - Song.mp3"),
                Tag::string(code::ARTIST, "Artist"),
                Tag::string(code::TITLE, "Song"),
                Tag::int(code::BITRATE, 192),
            ],
        }
    }

    fn q(realm: Realm, t: Vec<QueryTerm>) -> Query {
        Query {
            max_results: 50,
            search_id: 1,
            realm: realm.code(),
            terms: t,
        }
    }

    #[test]
    fn substring_hash_size_bitrate_realm() {
        let f = song();
        assert!(matches(&q(Realm::All, vec![terms::keywords("song")]), &f));
        assert!(matches(
            &q(
                Realm::Audio,
                vec![terms::keywords("ARTIST son"), terms::kazaa_extra()]
            ),
            &f
        ));
        assert!(!matches(
            &q(Realm::Video, vec![terms::keywords("song")]),
            &f
        ));
        assert!(!matches(
            &q(Realm::All, vec![terms::keywords("missing")]),
            &f
        ));
        let title = QueryTerm {
            cmp: 5,
            field: code::TITLE as u8,
            value: b"ong".to_vec(),
        };
        assert!(matches(&q(Realm::All, vec![title]), &f));
        let title = QueryTerm {
            cmp: 5,
            field: code::TITLE as u8,
            value: b"artist".to_vec(),
        };
        assert!(!matches(&q(Realm::All, vec![title]), &f));
        assert!(matches(
            &q(Realm::All, vec![terms::hash(&UuHash([7; 20]))]),
            &f
        ));
        assert!(!matches(
            &q(Realm::All, vec![terms::hash(&UuHash([8; 20]))]),
            &f
        ));
        let at_least = |v| terms::int(Comparison::AtLeast, code::SIZE, v);
        assert!(matches(&q(Realm::All, vec![at_least(4_000_000)]), &f));
        assert!(!matches(&q(Realm::All, vec![at_least(4_000_001)]), &f));
        let at_most = |v| terms::int(Comparison::AtMost, code::BITRATE, v);
        assert!(matches(&q(Realm::All, vec![at_most(192)]), &f));
        assert!(!matches(&q(Realm::All, vec![at_most(191)]), &f));
        assert!(matches(
            &q(
                Realm::All,
                vec![terms::int(Comparison::AtLeast, code::BITRATE, 128)]
            ),
            &f
        ));
        assert!(matches(
            &q(
                Realm::All,
                vec![terms::int(Comparison::Approx, code::SIZE, 3_900_000)]
            ),
            &f
        ));
        let unknown_cmp = QueryTerm {
            cmp: 0x42,
            field: 0,
            value: vec![],
        };
        assert!(!matches(&q(Realm::All, vec![unknown_cmp]), &f));
        // A bitrate term against a file with no bitrate tag does not match.
        let mut nobr = f.clone();
        nobr.tags.pop();
        assert!(!matches(&q(Realm::All, vec![at_most(320)]), &nobr));
    }
}
