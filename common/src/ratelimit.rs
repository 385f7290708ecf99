//! Being implemented (see the workspace-foundation issue).
