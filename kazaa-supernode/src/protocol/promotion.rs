//! When an ordinary node promotes itself to supernode (`--role auto`; `shared/protocols/kazaa.md` §1
//! "Promotion", §6 "SN election"). FastTrack's criteria were never published: Kazaa's help says any
//! "modern PC on broadband" may become an SN, SNs are not behind NAT, and a box opts out. The rule
//! here is therefore **re-created** (crate README, "Promotion"); a node promotes itself once, and only
//! when all of these hold:
//!
//! 1. **reachable**: an SN confirmed it could open a TCP connection to the address the node advertises
//!    (0x15 echoed back after a connect-back), so other nodes can connect to it: a NATed or
//!    `--firewalled` node is never confirmed;
//! 2. **capacity**: its declared up-link (`--capacity-kbps`, else its `--upload-rate`, else unlimited)
//!    is at least [`PromotionConfig::min_capacity_kbps`] ("broadband");
//! 3. **uptime**: it has been up for [`PromotionConfig::min_uptime`] (an SN that leaves soon costs its
//!    children a failover, so short-lived nodes should not be SNs);
//! 4. **demand**: its SN reported a load of at least [`PromotionConfig::min_sn_load`] % in the node
//!    list (0 by default: any network accepts one more SN).
//!
//! Sans-I/O: the node layer feeds the confirmations and loads in, with the time, and asks
//! [`Promotion::check`].

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

/// Default least uptime before promotion.
pub const DEFAULT_MIN_UPTIME: Duration = Duration::from_secs(300);
/// Default least up-link, kbit/s: a 2003 cable/DSL line's upstream was 128–1000 kbit/s; we ask 1 Mbit/s.
pub const DEFAULT_MIN_CAPACITY_KBPS: u32 = 1000;

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromotionConfig {
    /// Least time up.
    pub min_uptime: Duration,
    /// Least declared up-link, kbit/s.
    pub min_capacity_kbps: u32,
    /// This node's declared up-link, kbit/s (`u32::MAX`: unlimited).
    pub capacity_kbps: u32,
    /// Least load (%) the node's SN must report.
    pub min_sn_load: u8,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        PromotionConfig {
            min_uptime: DEFAULT_MIN_UPTIME,
            min_capacity_kbps: DEFAULT_MIN_CAPACITY_KBPS,
            capacity_kbps: u32::MAX,
            min_sn_load: 0,
        }
    }
}

/// What [`Promotion::check`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Become an SN now (returned once).
    Promote,
    /// Already promoted.
    Promoted,
    /// Not yet, because of the first criterion that fails.
    Wait(Blocker),
}

/// The criterion that keeps a node ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// No SN confirmed a connect-back yet.
    NotReachable,
    /// The declared capacity is below the minimum (it never changes: the node stays ordinary).
    Capacity {
        /// Declared kbit/s.
        have: u32,
        /// Required kbit/s.
        need: u32,
    },
    /// Up for less than the minimum.
    Uptime {
        /// Time still to wait.
        left: Duration,
    },
    /// The SN is not busy enough (or its load is not known yet).
    Demand {
        /// Last load reported, if any.
        load: Option<u8>,
        /// Required load.
        need: u8,
    },
}

/// The promotion state of one node.
#[derive(Debug, Clone)]
pub struct Promotion {
    cfg: PromotionConfig,
    started: Instant,
    reachable_at: Option<SocketAddrV4>,
    sn_load: Option<u8>,
    promoted: bool,
}

impl Promotion {
    /// A node that started at `started`.
    pub fn new(cfg: PromotionConfig, started: Instant) -> Self {
        Promotion {
            cfg,
            started,
            reachable_at: None,
            sn_load: None,
            promoted: false,
        }
    }

    /// An SN confirmed (0x15) that it reached us at `addr`. Only a confirmation of the address we
    /// advertise counts: a confirmation of another address says nothing about ours.
    pub fn confirmed_reachable(&mut self, addr: SocketAddrV4, advertised: SocketAddrV4) {
        if addr == advertised && addr.port() != 0 {
            self.reachable_at = Some(addr);
        }
    }

    /// The load our SN reported for itself (first node-list entry).
    pub fn sn_load(&mut self, load: u8) {
        self.sn_load = Some(load);
    }

    /// Where an SN reached us, if one did.
    pub fn reachable_at(&self) -> Option<SocketAddrV4> {
        self.reachable_at
    }

    /// Whether the node is now an SN.
    pub fn is_promoted(&self) -> bool {
        self.promoted
    }

    /// Decides at `now`; [`Verdict::Promote`] is returned once, then [`Verdict::Promoted`].
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.promoted {
            return Verdict::Promoted;
        }
        if self.reachable_at.is_none() {
            return Verdict::Wait(Blocker::NotReachable);
        }
        if self.cfg.capacity_kbps < self.cfg.min_capacity_kbps {
            return Verdict::Wait(Blocker::Capacity {
                have: self.cfg.capacity_kbps,
                need: self.cfg.min_capacity_kbps,
            });
        }
        let up = now.saturating_duration_since(self.started);
        if up < self.cfg.min_uptime {
            return Verdict::Wait(Blocker::Uptime {
                left: self.cfg.min_uptime - up,
            });
        }
        let need = self.cfg.min_sn_load;
        if need > 0 && self.sn_load.is_none_or(|l| l < need) {
            return Verdict::Wait(Blocker::Demand {
                load: self.sn_load,
                need,
            });
        }
        self.promoted = true;
        Verdict::Promote
    }
}

/// The 0x02 bandwidth byte for an up-link of `kbps` (§2: ≈ 14·log2(kbps) + 59; 0xD1 = "infinite",
/// which is also the ceiling: 0xD1 is reached at about 1.5 Gbit/s).
pub fn bandwidth_byte(kbps: u32) -> u8 {
    if kbps == u32::MAX {
        return 0xD1;
    }
    let v = 14.0 * f64::from(kbps.max(1)).log2() + 59.0;
    v.round().clamp(0.0, f64::from(0xD1u8)) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    fn cfg() -> PromotionConfig {
        PromotionConfig {
            min_uptime: Duration::from_secs(10),
            min_capacity_kbps: 1000,
            capacity_kbps: 2000,
            min_sn_load: 0,
        }
    }

    #[test]
    fn promotes_once_when_reachable_capable_and_up_long_enough() {
        let t0 = Instant::now();
        let mut p = Promotion::new(cfg(), t0);
        assert_eq!(p.check(t0), Verdict::Wait(Blocker::NotReachable));
        p.confirmed_reachable(addr(1214), addr(1214));
        assert_eq!(
            p.check(t0 + Duration::from_secs(4)),
            Verdict::Wait(Blocker::Uptime {
                left: Duration::from_secs(6)
            })
        );
        assert!(!p.is_promoted());
        assert_eq!(p.check(t0 + Duration::from_secs(10)), Verdict::Promote);
        assert!(p.is_promoted());
        assert_eq!(p.check(t0 + Duration::from_secs(11)), Verdict::Promoted);
    }

    #[test]
    fn a_confirmation_of_another_address_or_port_zero_does_not_count() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut p = Promotion::new(cfg(), t0);
        p.confirmed_reachable(addr(9), addr(1214));
        assert_eq!(p.check(later), Verdict::Wait(Blocker::NotReachable));
        p.confirmed_reachable(addr(0), addr(0));
        assert_eq!(p.check(later), Verdict::Wait(Blocker::NotReachable));
        assert_eq!(p.reachable_at(), None);
    }

    #[test]
    fn low_capacity_never_promotes() {
        let t0 = Instant::now();
        let mut p = Promotion::new(
            PromotionConfig {
                capacity_kbps: 500,
                ..cfg()
            },
            t0,
        );
        p.confirmed_reachable(addr(1214), addr(1214));
        assert_eq!(
            p.check(t0 + Duration::from_secs(3600)),
            Verdict::Wait(Blocker::Capacity {
                have: 500,
                need: 1000
            })
        );
    }

    #[test]
    fn demand_waits_for_a_busy_supernode() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let mut p = Promotion::new(
            PromotionConfig {
                min_sn_load: 80,
                ..cfg()
            },
            t0,
        );
        p.confirmed_reachable(addr(1214), addr(1214));
        assert_eq!(
            p.check(later),
            Verdict::Wait(Blocker::Demand {
                load: None,
                need: 80
            })
        );
        p.sn_load(40);
        assert_eq!(
            p.check(later),
            Verdict::Wait(Blocker::Demand {
                load: Some(40),
                need: 80
            })
        );
        p.sn_load(90);
        assert_eq!(p.check(later), Verdict::Promote);
    }

    #[test]
    fn bandwidth_byte_follows_the_notes_formula() {
        assert_eq!(bandwidth_byte(1), 59);
        assert_eq!(bandwidth_byte(1024), 199);
        assert_eq!(bandwidth_byte(u32::MAX), 0xD1);
        assert_eq!(bandwidth_byte(u32::MAX - 1), 0xD1);
        assert_eq!(bandwidth_byte(0), 59);
    }
}
