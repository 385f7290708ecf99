//! Fixed ports for third-party programs that cannot listen on port 0 and tell which port they got (aria2c,
//! transmission-cli, a libtorrent script). Ours always can: prefer `--listen 127.0.0.1:0` and
//! [`crate::Daemon::addr`].
//!
//! A port that was merely free a moment ago (bind port 0, note the port, close) comes from the kernel's
//! ephemeral range, so the next port-0 bind of any test running in parallel may be handed it before the
//! foreign program binds it. Instead each test process owns a [`PortBlock`] of [`PortBlock::SIZE`] ports
//! below the ephemeral range (32768 and up, Linux's default), which no port-0 bind is ever given. The block
//! is claimed by listening on its first port for the life of the process: another process trying the same
//! block fails that bind and takes the next. Ports inside the block are handed out in turn and checked free
//! (TCP and UDP, all addresses) before use.

use std::net::{TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

/// The block a test process owns, see the module docs.
#[derive(Debug)]
pub struct PortBlock {
    /// Listening on the first port is the claim on the block.
    _claim: TcpListener,
    base: u16,
    next: AtomicU16,
}

impl PortBlock {
    /// Ports in a block; the first is the claim, the others are handed out.
    pub const SIZE: u16 = 100;
    /// The first port of the first block.
    pub const FIRST_PORT: u16 = 20_000;
    /// Blocks between [`Self::FIRST_PORT`] and the ephemeral range: 20000..=31999.
    pub const BLOCKS: u16 = 120;

    /// This process's block, claimed on first use (panics when all [`Self::BLOCKS`] are taken).
    pub fn of_process() -> &'static PortBlock {
        static BLOCK: OnceLock<PortBlock> = OnceLock::new();
        BLOCK.get_or_init(|| {
            // Processes started together start at different blocks, so they rarely contend.
            let start = (std::process::id() % u32::from(Self::BLOCKS)) as u16;
            (0..Self::BLOCKS)
                .map(|i| Self::FIRST_PORT + (start + i) % Self::BLOCKS * Self::SIZE)
                .find_map(|base| Self::claim(base).ok())
                .unwrap_or_else(|| {
                    panic!(
                        "no free block of {} ports between {} and {}",
                        Self::SIZE,
                        Self::FIRST_PORT,
                        Self::FIRST_PORT + Self::BLOCKS * Self::SIZE - 1
                    )
                })
        })
    }

    /// Claims the block starting at `base`, failing when another process holds it.
    pub fn claim(base: u16) -> std::io::Result<PortBlock> {
        let claim = TcpListener::bind(("0.0.0.0", base))?;
        Ok(PortBlock {
            _claim: claim,
            base,
            next: AtomicU16::new(1),
        })
    }

    /// The block's ports, its claim included.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.base..=self.base + Self::SIZE - 1
    }

    /// `n` consecutive ports of the block (1 to `SIZE - 1`), free for TCP and UDP when checked. Ports are
    /// handed out in turn, wrapping around: a port comes back only after the rest of the block was
    /// offered, and only if it is free again. Panics when no `n` free ports are found.
    pub fn take(&self, n: u16) -> RangeInclusive<u16> {
        assert!(
            (1..Self::SIZE).contains(&n),
            "a block hands out 1 to {} ports at once, not {n}",
            Self::SIZE - 1
        );
        let free = |p: u16| {
            TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok()
        };
        for _ in 0..Self::SIZE {
            let off = self.next.fetch_add(n, Ordering::Relaxed) % (Self::SIZE - n) + 1;
            let (lo, hi) = (self.base + off, self.base + off + n - 1);
            if (lo..=hi).all(free) {
                return lo..=hi;
            }
        }
        panic!(
            "no {n} free ports left in this process's block {:?}",
            self.range()
        );
    }

    /// One port of the block, free for TCP and UDP when checked.
    pub fn port(&self) -> u16 {
        *self.take(1).start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_block_is_claimed_below_the_ephemeral_range_and_hands_out_free_ports() {
        let b = PortBlock::of_process();
        let r = b.range();
        assert!(
            *r.start() >= PortBlock::FIRST_PORT && *r.end() < 32_768,
            "{r:?}"
        );
        assert!(
            PortBlock::claim(*r.start()).is_err(),
            "a second claim on the block fails"
        );
        let four = b.take(4);
        assert_eq!(four.clone().count(), 4);
        assert!(
            four.start() > r.start() && four.end() <= r.end(),
            "{four:?}"
        );
        for p in four.clone() {
            TcpListener::bind(("127.0.0.1", p)).expect("handed out free");
        }
        // Held ports are not handed out again.
        let held: Vec<TcpListener> = four
            .clone()
            .map(|p| TcpListener::bind(("0.0.0.0", p)).unwrap())
            .collect();
        for _ in 0..PortBlock::SIZE {
            let p = b.port();
            assert!(r.contains(&p) && !four.contains(&p), "{p}");
        }
        drop(held);
    }
}
