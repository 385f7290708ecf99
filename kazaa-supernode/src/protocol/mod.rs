//! Sans-I/O state machines (in progress).
