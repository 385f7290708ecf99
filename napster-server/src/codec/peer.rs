//! The client-to-client transfer exchange on the data port (notes §3), parsed as a stream.
//!
//! ```text
//! GET  (downloader connects):  uploader "1" | downloader "GET" <nick> "<path>" <offset>
//!                              uploader <size digits><bytes from offset...>   or an error text, then close
//! SEND (firewalled uploader connects to the downloader, after a 501):
//!                              downloader "1" | uploader "SEND" <nick> "<path>" <size>
//!                              downloader <offset digits>   then the uploader streams the bytes
//! ```
//! The command word and its request line may arrive in one read or several; there is no terminator, so
//! a request is complete once its last number has arrived and no more digits follow before the reader
//! decides to stop waiting ([`parse_request`] reports how far it got).

use super::fields::split;
use super::latin1_decode;

/// Longest request line accepted (a nick, a quoted path and a number).
pub const MAX_REQUEST: usize = 2048;

/// Refusal: no matching pending upload, or a malformed request.
pub const INVALID_REQUEST: &str = "INVALID REQUEST";
/// Refusal: the path is not in our share list.
pub const FILE_NOT_SHARED: &str = "FILE NOT SHARED";
/// Refusal: the file is shared but cannot be opened.
pub const FILE_NOT_FOUND: &str = "FILE NOT FOUND";
/// Refusal: a push (SEND) we did not ask for.
pub const FILE_NOT_REQUESTED: &str = "FILE NOT REQUESTED";

/// Which exchange the connecting side started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCommand {
    /// A downloader asks for a file.
    Get,
    /// A firewalled uploader pushes a file.
    Send,
}

/// A complete request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    /// GET or SEND.
    pub command: PeerCommand,
    /// The connecting peer's nick.
    pub nick: String,
    /// Path as the uploader shared it.
    pub path: String,
    /// GET: the start offset; SEND: the file size.
    pub number: u64,
}

/// Why a request cannot be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Not `GET`/`SEND`, or not `<nick> "<path>" <number>`.
    #[error("malformed peer request")]
    Malformed,
    /// Longer than [`MAX_REQUEST`].
    #[error("peer request too long")]
    TooLong,
}

/// Parses what the connecting peer has sent so far. `Ok(None)`: incomplete (read more). `Ok(Some(req))`:
/// complete as far as the bytes go (more digits may still follow in a later read).
pub fn parse_request(buf: &[u8]) -> Result<Option<PeerRequest>, PeerError> {
    if buf.len() > MAX_REQUEST {
        return Err(PeerError::TooLong);
    }
    let (command, rest) = if let Some(r) = buf.strip_prefix(b"GET") {
        (PeerCommand::Get, r)
    } else if let Some(r) = buf.strip_prefix(b"SEND") {
        (PeerCommand::Send, r)
    } else if b"GET".starts_with(buf) || b"SEND".starts_with(buf) {
        return Ok(None);
    } else {
        return Err(PeerError::Malformed);
    };
    let text = latin1_decode(rest);
    // Complete only when the line ends in a digit after a closing quote.
    if !text.ends_with(|c: char| c.is_ascii_digit()) {
        if text.matches('"').count() > 2 {
            return Err(PeerError::Malformed);
        }
        return Ok(None);
    }
    let Ok(f) = split(&text) else {
        return Ok(None);
    };
    if text.matches('"').count() < 2 {
        return Ok(None);
    }
    match f.as_slice() {
        [nick, path, n] => Ok(Some(PeerRequest {
            command,
            nick: (*nick).to_owned(),
            path: (*path).to_owned(),
            number: n.parse().map_err(|_| PeerError::Malformed)?,
        })),
        _ => Err(PeerError::Malformed),
    }
}

/// Encodes a request line (command word included), as a downloader or pushing uploader sends it.
pub fn encode_request(req: &PeerRequest) -> Vec<u8> {
    let cmd = match req.command {
        PeerCommand::Get => "GET",
        PeerCommand::Send => "SEND",
    };
    super::latin1_encode(&format!(
        "{cmd}{} \"{}\" {}",
        req.nick, req.path, req.number
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn get_and_request_in_one_read_or_split() {
        let whole = b"GETbob \"C:\\mp3\\hey jude.mp3\" 1234";
        for cut in 0..whole.len() - 1 {
            let r = parse_request(&whole[..cut]);
            assert!(matches!(r, Ok(None) | Ok(Some(_))), "cut {cut}: {r:?}");
        }
        let r = parse_request(whole).unwrap().unwrap();
        assert_eq!(r.command, PeerCommand::Get);
        assert_eq!(
            (r.nick.as_str(), r.path.as_str(), r.number),
            ("bob", "C:\\mp3\\hey jude.mp3", 1234)
        );
        assert_eq!(parse_request(b"GE").unwrap(), None);
        assert_eq!(parse_request(b"GETbob \"x").unwrap(), None);
        assert_eq!(parse_request(b"HEAD /"), Err(PeerError::Malformed));
    }

    proptest! {
        #[test]
        fn round_trip(nick in "[a-z0-9]{1,10}", path in "[a-zA-Z0-9 \\\\.]{0,30}", n in any::<u64>(), send in any::<bool>()) {
            let req = PeerRequest { command: if send { PeerCommand::Send } else { PeerCommand::Get }, nick, path, number: n };
            prop_assert_eq!(parse_request(&encode_request(&req)).unwrap(), Some(req));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&b);
        }
    }
}
