//! Gnutella 0.6 servent: TTL-scoped flooding, ultrapeer/leaf roles, QRP, and a classic 0.4 mode.
//!
//! Status: placeholder. The protocol implementation is tracked in its own issue; this crate exists so the
//! workspace layout (codec -> protocol -> node, see `../shared/STYLE.md`) is visible from day one.
