//! A network namespace of a test's own, joined to the host by a veth pair, for programs that will not talk
//! to peers on loopback (Transmission never dials a 127.x peer): inside, the program has the address
//! [`Netns::ns_ip`] and reaches our daemons listening on [`Netns::host_ip`], the host end of the pair.
//! Both are private addresses (`10.231.N.1` and `10.231.N.2`, a /24 per namespace) that exist only while
//! the [`Netns`] lives; dropping it deletes the pair and the namespace. Needs root (CAP_SYS_ADMIN and
//! CAP_NET_ADMIN) and `ip` from iproute2.
//!
//! The namespace's name, `p2plab-ns-N`, is the lock on N across every test process on the machine:
//! `ip netns add` fails when the name exists, and the next N is tried. A namespace left by a test that was
//! killed before its clean-up keeps its number taken; its veth pair, if left too, is deleted by the next
//! test that gets that number (the host end's name is derived from N).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, Context, Result};

/// How many namespace numbers there are (N runs from [`Netns::FIRST`]).
pub const SLOTS: usize = 200;

/// A network namespace with a veth pair to the host; see the module docs.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl Netns {
    /// The first namespace number (keeps clear of `10.231.0.x`/`10.231.1.x`, which setups often use).
    pub const FIRST: usize = 20;

    /// Creates a namespace with a free number, its veth pair and addresses, loopback up inside.
    pub fn create() -> Result<Netns> {
        // Namespaces are torn down asynchronously: a process's next namespace starts at another number.
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let start = std::process::id() as usize + 7 * CREATED.fetch_add(1, Ordering::Relaxed);
        for i in 0..SLOTS {
            let n = (start + i) % SLOTS + Self::FIRST;
            let name = format!("p2plab-ns-{n}");
            let out = ip_output(&["netns", "add", &name])?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                if err.contains("exists") {
                    continue;
                }
                bail!("ip netns add {name}: {} (needs root)", err.trim());
            }
            let n = u8::try_from(n).expect("namespace numbers fit an address byte");
            // From here on, dropping `ns` removes whatever was set up, also on an error.
            let ns = Netns {
                name,
                host_if: format!("p2pns{n}h"),
                host_ip: Ipv4Addr::new(10, 231, n, 1),
                ns_ip: Ipv4Addr::new(10, 231, n, 2),
            };
            ns.wire(&format!("p2pns{n}n"))?;
            return Ok(ns);
        }
        bail!(
            "no free namespace number (p2plab-ns-{}..{} all exist: `ip netns list`)",
            Self::FIRST,
            Self::FIRST + SLOTS - 1
        )
    }

    fn wire(&self, ns_if: &str) -> Result<()> {
        // A pair left by a test that was killed before its clean-up.
        let _ = ip_output(&["link", "delete", &self.host_if]);
        let host_cidr = format!("{}/24", self.host_ip);
        let ns_cidr = format!("{}/24", self.ns_ip);
        let host_if = self.host_if.as_str();
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", ns_if,
        ])?;
        ip(&["link", "set", ns_if, "netns", &self.name])?;
        ip(&["addr", "add", &host_cidr, "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &self.name, "ip"], args].concat());
        inside(&["addr", "add", &ns_cidr, "dev", ns_if])?;
        inside(&["link", "set", ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])
    }

    /// The namespace's name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end of the veth pair: listen here for programs inside the namespace.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The namespace's end of the pair: the address its programs have.
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Arguments for `ip` that run `program args...` inside the namespace: `netns exec NAME program
    /// args...` (start them with [`crate::Daemon::builder_path`]`("ip")` or [`std::process::Command`]).
    pub fn exec_args(&self, program: &str, args: &[&str]) -> Vec<String> {
        ["netns", "exec", &self.name, program]
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the host end deletes the pair at once (the namespace itself goes asynchronously).
        let _ = ip_output(&["link", "delete", &self.host_if]);
        let _ = ip_output(&["netns", "delete", &self.name]);
    }
}

fn ip_output(args: &[&str]) -> Result<std::process::Output> {
    Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")
}

fn ip(args: &[&str]) -> Result<()> {
    let out = ip_output(args)?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Duration;

    use super::*;

    /// A program inside reaches a listener on the host end, from the namespace's address; two namespaces
    /// at once get distinct numbers; dropping removes the namespace and the pair.
    #[test]
    fn a_program_inside_reaches_the_host_end_and_drop_removes_everything() {
        let ns = Netns::create().expect("a namespace (the tests run as root)");
        let other = Netns::create().expect("a second namespace");
        assert_ne!(ns.name(), other.name());
        assert_ne!(ns.host_ip(), other.host_ip());
        let l = TcpListener::bind((ns.host_ip(), 0)).unwrap();
        let to = format!(
            "/dev/tcp/{}/{}",
            ns.host_ip(),
            l.local_addr().unwrap().port()
        );
        let script = format!("echo hello > {to}");
        let out = crate::run_program(
            std::path::Path::new("ip"),
            &ns.exec_args("bash", &["-c", &script])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            Duration::from_secs(20),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (mut s, from) = l.accept().unwrap();
        assert_eq!(from.ip(), ns.ns_ip());
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");

        let (name, host_if) = (ns.name.clone(), ns.host_if.clone());
        drop(ns);
        let listed = ip_output(&["netns", "list"]).unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&name)),
            "{name} still listed: {listed}"
        );
        assert!(
            !ip_output(&["link", "show", &host_if])
                .unwrap()
                .status
                .success(),
            "{host_if} still exists"
        );
        drop(other);
    }
}
