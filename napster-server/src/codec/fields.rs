//! The field tokenizer of Napster payloads (notes §1): fields are separated by spaces; a field that starts
//! with `"` runs to the next `"` and may contain spaces. There is no escaping, so a quote can never appear
//! inside a quoted field. Runs of spaces and trailing spaces (TekNap sends `MAX_RESULTS 100 `) are tolerated.

/// Most fields one payload can hold: a 2048-byte payload has at most 1025 single-byte fields. The bound
/// keeps a server reply (which may be longer) from building an unbounded vector either.
pub const MAX_FIELDS: usize = 4096;

/// Why a payload does not split into the fields a message needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A `"` opened a field that never closed.
    #[error("unterminated quoted field")]
    Unterminated,
    /// More than [`MAX_FIELDS`] fields.
    #[error("too many fields")]
    TooMany,
    /// A required field is absent.
    #[error("missing field: {0}")]
    Missing(&'static str),
    /// A field that must be a number is not one (or is out of range).
    #[error("{0}: not a valid number")]
    NotANumber(&'static str),
    /// A value that will be written inside quotes contains a quote.
    #[error("a quoted field cannot contain '\"'")]
    QuoteInField,
}

/// Splits `s` into fields, removing the quotes of quoted fields.
pub fn split(s: &str) -> Result<Vec<&str>, FieldError> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return Ok(out);
        }
        if out.len() == MAX_FIELDS {
            return Err(FieldError::TooMany);
        }
        if let Some(after) = rest.strip_prefix('"') {
            let end = after.find('"').ok_or(FieldError::Unterminated)?;
            out.push(&after[..end]);
            rest = &after[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
}

/// Splits off the first space-separated word; the rest (after one space) is returned untouched, as used by
/// messages whose last field is free text (`205 <nick> <text>`, `402 <chan> <text>`).
pub fn split_first(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches(' ');
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// Wraps `s` in quotes, refusing a value that contains a quote (it could not be parsed back).
pub fn quote(s: &str) -> Result<String, FieldError> {
    if s.contains('"') {
        return Err(FieldError::QuoteInField);
    }
    Ok(format!("\"{s}\""))
}

/// A cursor over split fields with typed, named accessors for clear error messages.
#[derive(Debug)]
pub struct Fields<'a> {
    items: Vec<&'a str>,
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Splits `s` (see [`split`]).
    pub fn new(s: &'a str) -> Result<Self, FieldError> {
        Ok(Fields {
            items: split(s)?,
            pos: 0,
        })
    }

    /// Number of fields in total.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the payload had no fields.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Fields not consumed yet.
    pub fn remaining(&self) -> usize {
        self.items.len() - self.pos
    }

    /// The next field as text.
    pub fn str(&mut self, name: &'static str) -> Result<&'a str, FieldError> {
        let v = self
            .items
            .get(self.pos)
            .copied()
            .ok_or(FieldError::Missing(name))?;
        self.pos += 1;
        Ok(v)
    }

    /// The next field, if any.
    pub fn opt_str(&mut self) -> Option<&'a str> {
        let v = self.items.get(self.pos).copied();
        if v.is_some() {
            self.pos += 1;
        }
        v
    }

    /// The next field as an unsigned number.
    pub fn num<T: std::str::FromStr>(&mut self, name: &'static str) -> Result<T, FieldError> {
        self.str(name)?
            .parse()
            .map_err(|_| FieldError::NotANumber(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quoted_fields_keep_spaces_and_trailing_spaces_are_ignored() {
        assert_eq!(
            split(r#""C:\mp3\hey jude.mp3" 00112233 123  128 "#).unwrap(),
            vec![r"C:\mp3\hey jude.mp3", "00112233", "123", "128"]
        );
        assert_eq!(split(r#""" x"#).unwrap(), vec!["", "x"]);
        assert_eq!(split("").unwrap(), Vec::<&str>::new());
        assert_eq!(split(r#"a "b"#), Err(FieldError::Unterminated));
    }

    #[test]
    fn free_text_tail() {
        assert_eq!(split_first("bob hello  there "), ("bob", "hello  there "));
        assert_eq!(split_first("bob"), ("bob", ""));
    }

    #[test]
    fn typed_cursor_names_the_missing_field() {
        let mut f = Fields::new("nick x").unwrap();
        assert_eq!(f.str("nick").unwrap(), "nick");
        assert_eq!(f.num::<u16>("port"), Err(FieldError::NotANumber("port")));
        assert_eq!(f.str("speed"), Err(FieldError::Missing("speed")));
    }

    proptest! {
        #[test]
        fn quote_then_split_round_trips(words in proptest::collection::vec("[^\" ]{1,8}|[^\"]{0,12}", 0..20)) {
            let text: Vec<String> = words.iter().map(|w| quote(w).unwrap()).collect();
            let joined = text.join(" ");
            let back = split(&joined).unwrap();
            prop_assert_eq!(back, words.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn split_never_panics(s in "\\PC{0,200}") {
            let _ = split(&s);
            let _ = split_first(&s);
        }
    }
}
