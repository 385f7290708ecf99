//! BitTorrent metainfo tool, seeder and leecher: rarest-first and tit-for-tat.
//!
//! Status: placeholder. The protocol implementation is tracked in its own issue; this crate exists so the
//! workspace layout (codec -> protocol -> node, see `../shared/STYLE.md`) is visible from day one.
