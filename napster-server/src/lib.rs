//! OpenNap-compatible Napster directory server (and, later, the napster-client binary).
//!
//! Status: placeholder. The protocol implementation is tracked in its own issue; this crate exists so the
//! workspace layout (codec -> protocol -> node, see `../shared/STYLE.md`) is visible from day one.
