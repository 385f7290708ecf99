//! The lab: starts a local multi-protocol swarm, runs the same downloads through each system, reports.
//!
//! Status: placeholder. The protocol implementation is tracked in its own issue; this crate exists so the
//! workspace layout (codec -> protocol -> node, see `../shared/STYLE.md`) is visible from day one.
