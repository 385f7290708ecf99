//! The search request (type 200) syntax and OpenNap's whole-word tokenizer (notes §2 "Search (200) syntax").
//!
//! ```text
//! FILENAME CONTAINS "<words>"   (repeatable, ANDed; a word written -word is excluded)
//! FILENAME EXCLUDES "<words>"
//! MAX_RESULTS <n>               (0 or above the cap means the cap)
//! LINESPEED|BITRATE|FREQ|SIZE|DURATION "AT LEAST|AT BEST|EQUAL TO" <n>
//! TYPE mp3|audio|video|image|text|application|any      (default mp3)
//! LOCAL_ONLY | LOCAL | WMA-FILE                         (accepted, no effect on a lone server)
//! ```

use crate::codec::fields::split;

/// Most words one query may name (include plus exclude); more is refused as malformed. Bounds the work of
/// one search on postings.
pub const MAX_QUERY_WORDS: usize = 32;

/// Directory components (besides the file name) whose words are indexed: OpenNap indexes the file name and
/// the last directories, so "beatles" finds `C:\mp3\beatles\hey jude.mp3`.
pub const INDEXED_DIR_COMPONENTS: usize = 2;

/// A comparison in a numeric clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `AT LEAST`: value >= n.
    AtLeast,
    /// `AT BEST`: value <= n.
    AtBest,
    /// `EQUAL TO`: value == n.
    EqualTo,
}

impl Cmp {
    /// Does `v` satisfy `self n`?
    pub fn test(self, v: u64, n: u64) -> bool {
        match self {
            Cmp::AtLeast => v >= n,
            Cmp::AtBest => v <= n,
            Cmp::EqualTo => v == n,
        }
    }
}

/// Media-type filter of a search (`TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFilter {
    /// Only MP3 shares (the default).
    Mp3,
    /// MP3 and other audio.
    Audio,
    /// Exactly this media kind.
    Kind(Kind),
    /// Everything.
    Any,
}

/// Media kind of a shared file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared with 100/870 (always MP3 in the original protocol).
    Mp3,
    /// `audio` via 10300.
    Audio,
    /// `video`.
    Video,
    /// `image`.
    Image,
    /// `text`.
    Text,
    /// `application`.
    Application,
}

impl Kind {
    /// Parses the 10300 media-type word.
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "mp3" => Kind::Mp3,
            "audio" => Kind::Audio,
            "video" => Kind::Video,
            "image" => Kind::Image,
            "text" => Kind::Text,
            "application" => Kind::Application,
            _ => return None,
        })
    }
}

impl TypeFilter {
    /// Does a file of kind `k` pass?
    pub fn accepts(self, k: Kind) -> bool {
        match self {
            TypeFilter::Mp3 => k == Kind::Mp3,
            TypeFilter::Audio => matches!(k, Kind::Mp3 | Kind::Audio),
            TypeFilter::Kind(want) => want == k,
            TypeFilter::Any => true,
        }
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Words every result must contain (lower case).
    pub include: Vec<String>,
    /// Words no result may contain.
    pub exclude: Vec<String>,
    /// Result cap after applying the server maximum.
    pub max_results: usize,
    /// Uploader link speed.
    pub linespeed: Option<(Cmp, u64)>,
    /// Bitrate.
    pub bitrate: Option<(Cmp, u64)>,
    /// Sample rate.
    pub freq: Option<(Cmp, u64)>,
    /// File size.
    pub size: Option<(Cmp, u64)>,
    /// Duration in seconds.
    pub duration: Option<(Cmp, u64)>,
    /// Media type.
    pub kind: TypeFilter,
}

/// Why a search is refused; the `Display` text is what OpenNap sends in the 404 before the 202.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Unknown keyword, missing argument, or a non-number where a number is needed.
    #[error("invalid search request")]
    Invalid,
    /// No word to look up.
    #[error("search failed: request contained no valid words")]
    NoWords,
    /// An unknown comparison operator.
    #[error("{0}: invalid comparison for search")]
    BadComparison(String),
}

/// Splits text into OpenNap search words: runs of ASCII alphanumerics, `'` and bytes above 127, lower-cased.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '\'' || u32::from(c) > 127))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
}

/// The words of a shared path that the index keys on: the file name and the last
/// [`INDEXED_DIR_COMPONENTS`] directories, deduplicated.
pub fn path_words(path: &str) -> Vec<String> {
    let mut out: Vec<String> = path
        .rsplit(['\\', '/'])
        .take(INDEXED_DIR_COMPONENTS + 1)
        .flat_map(words)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn cmp(op: &str) -> Result<Cmp, QueryError> {
    match op.to_ascii_uppercase().as_str() {
        "AT LEAST" => Ok(Cmp::AtLeast),
        "AT BEST" => Ok(Cmp::AtBest),
        "EQUAL TO" => Ok(Cmp::EqualTo),
        _ => Err(QueryError::BadComparison(op.to_owned())),
    }
}

/// Parses a 200 payload; `cap` is the server's `max_results`.
pub fn parse(payload: &str, cap: usize) -> Result<Query, QueryError> {
    let toks = split(payload).map_err(|_| QueryError::Invalid)?;
    let mut q = Query {
        include: Vec::new(),
        exclude: Vec::new(),
        max_results: cap,
        linespeed: None,
        bitrate: None,
        freq: None,
        size: None,
        duration: None,
        kind: TypeFilter::Mp3,
    };
    let mut i = 0;
    let next = |i: &mut usize| -> Result<&str, QueryError> {
        let t = toks.get(*i).copied().ok_or(QueryError::Invalid)?;
        *i += 1;
        Ok(t)
    };
    while i < toks.len() {
        let kw = next(&mut i)?.to_ascii_uppercase();
        match kw.as_str() {
            "FILENAME" => {
                let how = next(&mut i)?.to_ascii_uppercase();
                let text = next(&mut i)?;
                match how.as_str() {
                    "CONTAINS" => {
                        for piece in text.split(' ') {
                            if let Some(neg) = piece.strip_prefix('-') {
                                q.exclude.extend(words(neg));
                            } else {
                                q.include.extend(words(piece));
                            }
                        }
                    }
                    "EXCLUDES" => q.exclude.extend(words(text)),
                    _ => return Err(QueryError::Invalid),
                }
            }
            "MAX_RESULTS" => {
                let n: usize = next(&mut i)?.parse().map_err(|_| QueryError::Invalid)?;
                q.max_results = if n == 0 { cap } else { n.min(cap) };
            }
            "LINESPEED" | "BITRATE" | "FREQ" | "SIZE" | "DURATION" => {
                let mut op = next(&mut i)?.to_owned();
                // Unquoted operators arrive as two tokens ("AT", "LEAST").
                if !op.contains(' ') && matches!(op.to_ascii_uppercase().as_str(), "AT" | "EQUAL") {
                    op = format!("{op} {}", next(&mut i)?);
                }
                let c = cmp(&op)?;
                let n: u64 = next(&mut i)?
                    .trim()
                    .parse()
                    .map_err(|_| QueryError::Invalid)?;
                let slot = match kw.as_str() {
                    "LINESPEED" => &mut q.linespeed,
                    "BITRATE" => &mut q.bitrate,
                    "FREQ" => &mut q.freq,
                    "SIZE" => &mut q.size,
                    _ => &mut q.duration,
                };
                *slot = Some((c, n));
            }
            "TYPE" => {
                let t = next(&mut i)?.to_ascii_lowercase();
                q.kind = match t.as_str() {
                    "mp3" => TypeFilter::Mp3,
                    "audio" => TypeFilter::Audio,
                    "any" => TypeFilter::Any,
                    other => TypeFilter::Kind(Kind::parse(other).ok_or(QueryError::Invalid)?),
                };
            }
            "LOCAL_ONLY" | "LOCAL" | "WMA-FILE" => {}
            _ => return Err(QueryError::Invalid),
        }
    }
    q.include.sort_unstable();
    q.include.dedup();
    q.exclude.sort_unstable();
    q.exclude.dedup();
    if q.include.is_empty() {
        return Err(QueryError::NoWords);
    }
    if q.include.len() + q.exclude.len() > MAX_QUERY_WORDS {
        return Err(QueryError::Invalid);
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teknap_query_with_trailing_space() {
        let q = parse(
            r#"FILENAME CONTAINS "hey jude" MAX_RESULTS 100 BITRATE "AT LEAST" "128" "#,
            100,
        )
        .unwrap();
        assert_eq!(q.include, vec!["hey", "jude"]);
        assert_eq!(q.max_results, 100);
        assert_eq!(q.bitrate, Some((Cmp::AtLeast, 128)));
        assert_eq!(q.kind, TypeFilter::Mp3);
    }

    #[test]
    fn negated_words_and_excludes_and_cap() {
        let q = parse(
            r#"filename contains "beatles -live" FILENAME EXCLUDES "demo" MAX_RESULTS 5000 TYPE any"#,
            100,
        )
        .unwrap();
        assert_eq!(q.include, vec!["beatles"]);
        assert_eq!(q.exclude, vec!["demo", "live"]);
        assert_eq!(q.max_results, 100);
        assert_eq!(q.kind, TypeFilter::Any);
        assert_eq!(
            parse(r#"FILENAME CONTAINS "x" MAX_RESULTS 0"#, 100)
                .unwrap()
                .max_results,
            100
        );
    }

    #[test]
    fn malformed_queries_have_opennap_texts() {
        assert_eq!(
            parse("BOGUS 1", 100).unwrap_err().to_string(),
            "invalid search request"
        );
        assert_eq!(
            parse(r#"FILENAME CONTAINS "x" MAX_RESULTS abc"#, 100)
                .unwrap_err()
                .to_string(),
            "invalid search request"
        );
        assert_eq!(
            parse(r#"FILENAME CONTAINS "!!""#, 100)
                .unwrap_err()
                .to_string(),
            "search failed: request contained no valid words"
        );
        assert_eq!(
            parse(r#"FILENAME CONTAINS "x" BITRATE "ABOUT" 128"#, 100)
                .unwrap_err()
                .to_string(),
            "ABOUT: invalid comparison for search"
        );
        assert_eq!(parse(r#"FILENAME CONTAINS"#, 100), Err(QueryError::Invalid));
    }

    #[test]
    fn whole_words_from_name_and_last_directories() {
        assert_eq!(
            path_words(r"C:\music\mp3\Beatles\Hey Jude (Live).MP3"),
            vec!["beatles", "hey", "jude", "live", "mp3"]
        );
        assert_eq!(
            words("Cowboy don't").collect::<Vec<_>>(),
            vec!["cowboy", "don't"]
        );
    }
}
