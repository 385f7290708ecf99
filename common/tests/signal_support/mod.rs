//! Signals a test process sends itself, for the tests of `common::daemon::install_signals` (each in its own
//! test binary: the signals go to the whole process).

/// Sends `sig` (a name such as `USR1`) to this process with kill(1) and waits for kill to exit: a blocking
/// call, so a current-thread runtime gets no chance to run a spawned task meanwhile, and the signal is
/// pending when it returns.
pub(crate) fn signal_self(sig: &str) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(std::process::id().to_string())
        .status()
        .expect("running kill");
    assert!(st.success(), "kill -{sig}: {st}");
}
