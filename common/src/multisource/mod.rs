//! Multi-source parallel downloader: one content of known size and hash, fetched in blocks from several
//! HTTP/1.1 sources at once with byte ranges (RFC 9110 §14; Gnutella 0.6 "file transfer", KaZaA/FastTrack
//! HTTP downloads with `X-Kazaa-*` headers).
//!
//! # How it works
//! - The content is cut into blocks ([`DownloadConfig::block_size`]). Each source fetches one block at a time
//!   over a kept-alive connection (`source.rs`); the bytes of a block are checked (status, `Content-Range`,
//!   `Content-Length`, `X-Gnutella-Content-URN`, body length) and only then written at their offset in
//!   `<dest>.part`. At most `max_active_sources × 2` blocks are buffered, so memory does not grow with the file.
//! - The scheduler (`sched.rs`) moves work away from bad sources: a failed or stalled fetch puts its block back
//!   and the source backs off (and is dropped after [`DownloadConfig::max_source_failures`] in a row); a
//!   source that answers wrongly is dropped at once; a `503` with `Retry-After` keeps the source, remotely
//!   queued, until then; a source much slower than the best is kept off the last blocks; and in the endgame
//!   idle sources duplicate the blocks still in flight, the first copy to finish wins and the other is
//!   cancelled.
//! - Sources can be added while it runs ([`SourceAdder`]); [`Event::LowOnSources`] says when the caller should
//!   search again.
//! - Progress is persisted in `<dest>.state` (`state.rs`) so a killed download resumes where it was.
//! - The finished file is hashed once ([`crate::hash::MultiHasher`]) and compared with the expected
//!   [`ExpectedHash`]; on success `<dest>.part` is renamed to `<dest>` and the state file removed.
//!
//! # Policy when the finished file does not match its hash
//! Gnutella and KaZaA give only a whole-file hash, so a source that sent wrong bytes inside a well-formed
//! answer cannot be spotted block by block. We record which source supplied every block and then test
//! suppliers one at a time, cheapest first (fewest blocks): the suspect's blocks are fetched again from the
//! *other* sources (the suspect is suspended for that round) and the file is hashed again. If it now matches,
//! the suspect is proven bad: it is dropped and reported ([`Event::BadSource`], [`DownloadReport::bad_sources`]).
//! If not, the next supplier is tested. Each round costs only the suspect's share of the file. Blocks
//! resumed from an earlier run count as one more supplier. When every supplier has been tested (or only the
//! suspect itself could re-supply its blocks), the download fails with [`DownloadError::HashMismatch`], which
//! names the expected and actual hash and every contributing source: either several sources lie or the
//! expected hash is wrong. The state file is then removed so a retry starts clean.

mod sched;
mod source;
mod state;

mod download;

pub use download::{
    partial_path, state_path, Download, DownloadConfig, DownloadError, DownloadReport, Event,
    ExpectedHash, Progress, SourceAdder, SourceProgress, SourceReport, MAX_BLOCKS, MAX_BLOCK_SIZE,
    MAX_CONTENT_SIZE, MAX_SOURCES, MIN_BLOCK_SIZE,
};
pub use source::{
    BoxFuture, BoxStream, ChannelConnector, Connector, Source, SourceError, SourceStream,
    TcpConnector,
};
