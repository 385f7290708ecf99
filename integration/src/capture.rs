//! Packet captures for the "Wireshark decodes our traffic" tests: `dumpcap` on the loopback interface,
//! then Debian's `tshark` reading the file with a chosen dissector.
//!
//! dumpcap prints "Capturing on ..." before its capture filter is live, so [`Capture::start`] does not trust
//! that line: it opens probe connections to the port until one shows up in the file. The probes are bare TCP
//! connections (SYN, FIN, no payload), so they add no application message a test could miscount.
//! Needs `tshark` (which brings `dumpcap`) and capture rights (root in CI).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long [`Capture::start`] waits for its probe to appear in the file.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `dumpcap` capturing `tcp port P` on `lo` into a file; killed on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    port: u16,
}

impl Capture {
    /// Starts capturing the TCP traffic of `127.0.0.1:port` into `file` (pcapng) and returns once the
    /// capture is live.
    pub fn start(port: u16, file: &Path) -> Result<Capture> {
        let child = Command::new("dumpcap")
            .args(["-q", "-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("dumpcap runs (apt-get install tshark)")?;
        let mut cap = Capture {
            child: Some(child),
            file: file.to_owned(),
            port,
        };
        let probe = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("dumpcap exited at start ({status}); capture rights (root) are needed");
            }
            if let Ok(s) = TcpStream::connect_timeout(&probe, Duration::from_secs(1)) {
                drop(s);
            }
            // Until its first block is written the file may not parse: an error means "not yet".
            let syn = format!("tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == {port}");
            if cap
                .tshark(None, &syn, &["frame.number"])
                .is_ok_and(|rows| !rows.is_empty())
            {
                return Ok(cap);
            }
            if Instant::now() > deadline {
                bail!("dumpcap never captured a probe connection to port {port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The capture file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stops the capture cleanly (SIGINT, so dumpcap finishes the file) and waits for dumpcap to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Give packets still in flight on loopback a moment to be written.
            std::thread::sleep(Duration::from_millis(300));
            let pid = i32::try_from(child.id()).context("pid")?;
            crate::sys::kill(pid, libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
        Ok(())
    }

    /// `tshark -T fields` over the capture with the port decoded as `dissector` (`http`, `gnutella`,
    /// `bittorrent`, ...): one row per frame matching `filter`, one column per field, repeated
    /// occurrences joined with `,`.
    pub fn fields(
        &self,
        dissector: &str,
        filter: &str,
        fields: &[&str],
    ) -> Result<Vec<Vec<String>>> {
        self.tshark(Some(dissector), filter, fields)
    }

    fn tshark(
        &self,
        dissector: Option<&str>,
        filter: &str,
        fields: &[&str],
    ) -> Result<Vec<Vec<String>>> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-n").arg("-r").arg(&self.file);
        if let Some(d) = dissector {
            cmd.args(["-d", &format!("tcp.port=={},{d}", self.port)]);
        }
        cmd.args(["-Y", filter, "-T", "fields"]).args([
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd
            .output()
            .context("tshark runs (apt-get install tshark)")?;
        if !out.status.success() {
            bail!("tshark: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect())
    }

    /// How many frames match `filter` with the port decoded as `dissector`.
    pub fn count(&self, dissector: &str, filter: &str) -> Result<usize> {
        Ok(self.fields(dissector, filter, &["frame.number"])?.len())
    }

    /// Frames the dissector marks malformed or with an expert error (should be none).
    pub fn malformed(&self, dissector: &str) -> Result<Vec<String>> {
        Ok(self
            .fields(
                dissector,
                "_ws.malformed || _ws.expert.severity >= \"error\"",
                &["frame.number"],
            )?
            .into_iter()
            .map(|mut row| row.swap_remove(0))
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
