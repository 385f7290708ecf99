//! BEP 11 peer exchange bookkeeping, without I/O: what each connected peer has been told (so every
//! message carries only the changes, added and dropped), how often it may be told (at most once a
//! minute), how often we listen to it, and a bounded queue of contacts learnt from others for the node
//! to dial. Private torrents (BEP 27) never reach this module: the torrent does not negotiate ut_pex.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::pex::{PexMsg, MAX_ADDED, MAX_DROPPED};

/// Shortest time between two messages we send to one peer (BEP 11: no more than once a minute).
pub const SEND_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest time between two messages we take from one peer. A little under a minute, so a peer whose
/// timer fires early is not punished; messages arriving faster are ignored (a flood cannot make us dial).
pub const RECV_INTERVAL: Duration = Duration::from_secs(45);
/// Most contacts waiting to be dialled.
pub const MAX_CANDIDATES: usize = 100;
/// Most contacts remembered as already queued (so one address is not queued again and again); the set is
/// forgotten when it fills up.
pub const MAX_SEEN: usize = 2000;

/// PEX state of one connection.
#[derive(Debug, Default)]
pub struct PexPeer {
    told: HashSet<SocketAddr>,
    last_sent: Option<Instant>,
    last_received: Option<Instant>,
}

impl PexPeer {
    /// The message to send this peer now, given our current contacts with their flags (`contacts` must
    /// not include the peer itself). `None` when the last message went out less than
    /// [`SEND_INTERVAL`] ago or nothing changed. The first message lists the current contacts
    /// (up to [`MAX_ADDED`]; the rest follow a minute later).
    pub fn poll(&mut self, now: Instant, contacts: &[(SocketAddr, u8)]) -> Option<PexMsg> {
        if self
            .last_sent
            .is_some_and(|t| now.saturating_duration_since(t) < SEND_INTERVAL)
        {
            return None;
        }
        let mut m = PexMsg::default();
        for &(a, f) in contacts {
            if m.added.len() == MAX_ADDED {
                break;
            }
            if !self.told.contains(&a) {
                m.added.push((a, f));
            }
        }
        let current: HashSet<SocketAddr> = contacts.iter().map(|c| c.0).collect();
        m.dropped = self
            .told
            .iter()
            .filter(|a| !current.contains(a))
            .take(MAX_DROPPED)
            .copied()
            .collect();
        if m.is_empty() {
            return None;
        }
        for (a, _) in &m.added {
            self.told.insert(*a);
        }
        for a in &m.dropped {
            self.told.remove(a);
        }
        self.last_sent = Some(now);
        Some(m)
    }

    /// Whether a message received now is taken (false: it came less than [`RECV_INTERVAL`] after the
    /// previous one and is ignored).
    pub fn accept(&mut self, now: Instant) -> bool {
        if self
            .last_received
            .is_some_and(|t| now.saturating_duration_since(t) < RECV_INTERVAL)
        {
            return false;
        }
        self.last_received = Some(now);
        true
    }
}

/// Contacts learnt by PEX, waiting to be dialled. Bounded: at most [`MAX_CANDIDATES`] wait, and an
/// address is queued once (until the seen set of [`MAX_SEEN`] is forgotten).
#[derive(Debug, Default)]
pub struct Candidates {
    queue: VecDeque<SocketAddr>,
    seen: HashSet<SocketAddr>,
}

impl Candidates {
    /// Queues the added contacts of `m` that are dialable (not port 0, not unspecified or multicast,
    /// not `ourselves`) and new; drops queued ones `m` says are gone. Returns how many were queued.
    pub fn learn(&mut self, m: &PexMsg, ourselves: SocketAddr) -> usize {
        let gone: HashSet<&SocketAddr> = m.dropped.iter().collect();
        self.queue.retain(|a| !gone.contains(a));
        let mut n = 0;
        for (a, _) in &m.added {
            if self.queue.len() >= MAX_CANDIDATES {
                break;
            }
            if a.port() == 0
                || a.ip().is_unspecified()
                || a.ip().is_multicast()
                || *a == ourselves
                || gone.contains(a)
            {
                continue;
            }
            if self.seen.len() >= MAX_SEEN {
                self.seen.clear();
            }
            if self.seen.insert(*a) {
                self.queue.push_back(*a);
                n += 1;
            }
        }
        n
    }

    /// The next contact to dial.
    pub fn pop(&mut self) -> Option<SocketAddr> {
        self.queue.pop_front()
    }

    /// Contacts waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::pex::flags;

    fn a(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 6881))
    }

    #[test]
    fn first_message_lists_everyone_then_only_changes_once_a_minute() {
        let t0 = Instant::now();
        let mut p = PexPeer::default();
        let c1 = [(a(1), flags::REACHABLE), (a(2), 0)];
        let m = p.poll(t0, &c1).expect("first message");
        assert_eq!(m.added, c1.to_vec());
        assert!(m.dropped.is_empty());
        // Nothing new: nothing sent, even after a minute.
        assert_eq!(p.poll(t0 + SEND_INTERVAL, &c1), None);
        // A change inside the minute waits for the minute.
        let c2 = [(a(2), 0), (a(3), flags::SEED)];
        assert_eq!(p.poll(t0 + Duration::from_secs(30), &c2), None);
        let m = p.poll(t0 + SEND_INTERVAL, &c2).expect("after a minute");
        assert_eq!(m.added, vec![(a(3), flags::SEED)]);
        assert_eq!(m.dropped, vec![a(1)]);
        // The next one is again a minute later.
        assert_eq!(p.poll(t0 + SEND_INTERVAL * 3 / 2, &[]), None);
        let m = p.poll(t0 + SEND_INTERVAL * 2, &[]).unwrap();
        assert_eq!(m.dropped.len(), 2);
    }

    #[test]
    fn at_most_fifty_added_per_message_the_rest_next_minute() {
        let t0 = Instant::now();
        let mut p = PexPeer::default();
        let many: Vec<(SocketAddr, u8)> = (0..120).map(|i| (a(i), 0)).collect();
        let m1 = p.poll(t0, &many).unwrap();
        assert_eq!(m1.added.len(), MAX_ADDED);
        let m2 = p.poll(t0 + SEND_INTERVAL, &many).unwrap();
        let m3 = p.poll(t0 + SEND_INTERVAL * 2, &many).unwrap();
        assert_eq!((m2.added.len(), m3.added.len()), (50, 20));
        let all: HashSet<SocketAddr> = [m1, m2, m3]
            .iter()
            .flat_map(|m| m.added.iter().map(|x| x.0))
            .collect();
        assert_eq!(all.len(), 120, "every contact told exactly once");
        // All 120 leave: dropped in batches of 50 too.
        let d = p.poll(t0 + SEND_INTERVAL * 3, &[]).unwrap();
        assert_eq!(d.dropped.len(), MAX_DROPPED);
    }

    #[test]
    fn received_messages_faster_than_the_interval_are_ignored() {
        let t0 = Instant::now();
        let mut p = PexPeer::default();
        assert!(p.accept(t0));
        assert!(!p.accept(t0 + Duration::from_secs(1)));
        assert!(!p.accept(t0 + Duration::from_secs(44)));
        assert!(p.accept(t0 + RECV_INTERVAL));
    }

    #[test]
    fn candidates_are_bounded_deduplicated_and_filtered() {
        let me = a(999);
        let mut c = Candidates::default();
        let m = PexMsg {
            added: vec![
                (a(1), 0),
                (a(1), 0),
                (me, 0),
                ("0.0.0.0:1".parse().unwrap(), 0),
                ("10.0.0.9:0".parse().unwrap(), 0),
                ("224.0.0.1:5".parse().unwrap(), 0),
                (a(2), 0),
            ],
            dropped: vec![],
        };
        assert_eq!(c.learn(&m, me), 2);
        // Seen before: not queued again.
        assert_eq!(c.learn(&m, me), 0);
        // A later `dropped` removes a waiting contact.
        let gone = PexMsg {
            added: vec![],
            dropped: vec![a(1)],
        };
        c.learn(&gone, me);
        assert_eq!(c.pop(), Some(a(2)));
        assert_eq!(c.pop(), None);
        let flood = PexMsg {
            added: (1000..1400).map(|i| (a(i), 0)).collect(),
            dropped: vec![],
        };
        assert_eq!(c.learn(&flood, me), MAX_CANDIDATES);
        assert_eq!(c.len(), MAX_CANDIDATES);
    }
}
