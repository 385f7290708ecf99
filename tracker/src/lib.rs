//! BitTorrent tracker: BEP 3 announce, BEP 23 compact peers, BEP 48 scrape, BEP 15 UDP.
//!
//! Status: placeholder. The protocol implementation is tracked in its own issue; this crate exists so the
//! workspace layout (codec -> protocol -> node, see `../shared/STYLE.md`) is visible from day one.
