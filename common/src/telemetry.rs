//! Logging and readiness, the same for every binary.
//!
//! - Logs go to **stderr** through `tracing`, filtered by `RUST_LOG` (default `info`), as text or as JSON
//!   lines. Stdout is kept for machine-readable output: the readiness line and `--json` results.
//! - The readiness line: as soon as a socket accepts, a daemon prints exactly one JSON object on its own line,
//!   e.g. `{"event":"listening","proto":"tcp","addr":"127.0.0.1:41234"}`, so tests and the lab can start
//!   daemons on port 0 and learn the port. A daemon with several sockets of the same protocol adds a `name`
//!   (`"name":"metaserver"`).

use std::io::Write;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: `RUST_LOG` (default `info`), to stderr, text or JSON lines.
///
/// Safe to call more than once (later calls do nothing), so tests may call it freely.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// [`init_tracing`] with a lighter filter, for daemons whose resident size is measured: `RUST_LOG` is read
/// as comma-separated `target=level` and `level` directives ([`tracing_subscriber::filter::Targets`]),
/// without `EnvFilter`'s span and field filters, whose regex engine is a large part of a small daemon's code.
/// A `RUST_LOG` it cannot read is reported on stderr and the default `info` applies.
pub fn init_tracing_lean(json: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, bad) = lean_filter(std::env::var("RUST_LOG").ok().as_deref());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if json {
        registry.with(layer.json().flatten_event(true)).try_init()
    } else {
        registry.with(layer).try_init()
    };
    if let Some(why) = bad {
        tracing::warn!(cause = %why, "RUST_LOG not understood (only target=level directives), logging at info");
    }
}

/// The filter of [`init_tracing_lean`] for a `RUST_LOG` value, and why the value was not usable, if so.
pub fn lean_filter(spec: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let default = || Targets::new().with_default(LevelFilter::INFO);
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        None => (default(), None),
        Some(s) => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (default(), Some(format!("{s:?}: {e}"))),
        },
    }
}

/// The readiness event a daemon prints on stdout once a socket accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    /// Always `"listening"`.
    pub event: String,
    /// `"tcp"` or `"udp"`.
    pub proto: String,
    /// The bound address, with the real port when port 0 was asked for.
    pub addr: SocketAddr,
    /// Which socket this is when a daemon has several of the same protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Listening {
    /// Parses one stdout line; `None` if it is not a readiness line.
    pub fn parse(line: &str) -> Option<Listening> {
        let l: Listening = serde_json::from_str(line.trim()).ok()?;
        (l.event == "listening").then_some(l)
    }
}

/// Prints the readiness line for a socket and flushes stdout at once.
pub fn announce_listening(proto: &str, addr: SocketAddr, name: Option<&str>) {
    let ev = Listening {
        event: "listening".into(),
        proto: proto.into(),
        addr,
        name: name.map(str::to_owned),
    };
    let line = serde_json::to_string(&ev).expect("readiness line serialises");
    let mut out = std::io::stdout().lock();
    // A closed stdout must not kill a daemon: the line is a courtesy to whoever started us.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lean_filter_reads_target_level_directives() {
        use tracing::Level;
        let (f, bad) = lean_filter(None);
        assert!(bad.is_none());
        assert!(f.would_enable("x", &Level::INFO) && !f.would_enable("x", &Level::DEBUG));
        let (f, bad) = lean_filter(Some("warn,tracker::node=debug"));
        assert!(bad.is_none());
        assert!(!f.would_enable("common", &Level::INFO));
        assert!(f.would_enable("common", &Level::WARN));
        assert!(f.would_enable("tracker::node::http", &Level::DEBUG));
        assert!(!f.would_enable("tracker::node::http", &Level::TRACE));
        let (f, bad) = lean_filter(Some("tracker=loud"));
        assert!(bad.is_some_and(|b| b.contains("tracker=loud")));
        assert!(
            f.would_enable("tracker", &Level::INFO) && !f.would_enable("tracker", &Level::DEBUG)
        );
    }

    #[test]
    fn readiness_line_round_trip() {
        let ev = Listening {
            event: "listening".into(),
            proto: "tcp".into(),
            addr: "127.0.0.1:41234".parse().unwrap(),
            name: None,
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            line,
            r#"{"event":"listening","proto":"tcp","addr":"127.0.0.1:41234"}"#
        );
        assert_eq!(Listening::parse(&line), Some(ev));
        assert_eq!(
            Listening::parse(r#"{"event":"stopped","proto":"tcp","addr":"1.2.3.4:5"}"#),
            None
        );
        assert_eq!(Listening::parse("hello"), None);
    }
}
