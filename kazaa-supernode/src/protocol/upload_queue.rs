//! Who gets the next free upload slot (`shared/protocols/kazaa.md` §4: `503` + `Retry-After` when
//! slots are full, the downloader shows "Remotely queued" and retries; `X-Kazaa-XferUid` is "a
//! participation-level token used to order queues"). The queue policy is **re-created** (crate
//! README, "Upload queue"):
//!
//! - a requester is a (peer IP, `X-Kazaa-Username`) pair; its participation level is the number it
//!   sends in `X-Kazaa-XferUid` (0–1000, Kazaa's scale: uploaded MB / downloaded MB × 100), or
//!   [`DEFAULT_LEVEL`] (a new user's 10) when absent or not a number;
//! - when every slot is busy, or free slots are owed to better-placed waiters, the request is queued
//!   and answered `503` with its place in line (`X-Kazaa-QueuePosition`) and `Retry-After`;
//! - the line is ordered by level, highest first, then by arrival: the next free slot goes to the
//!   waiting requester with the highest level when it asks again;
//! - a waiter that did not ask again within `stale_after` has gone away and loses its place (so a
//!   vanished waiter cannot hold a free slot for longer than that);
//! - at most [`MAX_QUEUE`] waiters; beyond that a request gets a plain `503` without a place.
//!
//! The level is self-reported and so forgeable (Kazaa Lite shipped with it pinned at 1000); Kazaa
//! trusted it the same way. Sans-I/O: time is passed in.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Participation level assumed when a requester sends none (Kazaa's starting level).
pub const DEFAULT_LEVEL: u16 = 10;
/// Highest participation level (Kazaa's scale).
pub const MAX_LEVEL: u16 = 1000;
/// Most requesters waiting at once.
pub const MAX_QUEUE: usize = 256;
/// Longest username kept as part of a queue key.
pub const MAX_KEY_USER_LEN: usize = 64;

/// Reads a participation level from an `X-Kazaa-XferUid` value (clamped to [`MAX_LEVEL`]).
pub fn parse_level(value: Option<&str>) -> u16 {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_LEVEL, |l| l.min(u64::from(MAX_LEVEL)) as u16)
}

/// A requester.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Its IP as we saw it.
    pub ip: IpAddr,
    /// Its `X-Kazaa-Username` (clipped).
    pub user: String,
}

impl PeerKey {
    /// A key; the name is clipped to [`MAX_KEY_USER_LEN`] bytes.
    pub fn new(ip: IpAddr, user: &str) -> Self {
        let mut end = user.len().min(MAX_KEY_USER_LEN);
        while !user.is_char_boundary(end) {
            end -= 1;
        }
        PeerKey {
            ip,
            user: user[..end].to_owned(),
        }
    }
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve it (take a slot).
    Go,
    /// Queued: 1-based place in line, and the line's length.
    Queued {
        /// Place in line.
        position: usize,
        /// Waiters in all.
        waiting: usize,
    },
    /// The line is full: refuse without a place.
    Full,
}

#[derive(Debug, Clone)]
struct Waiter {
    key: PeerKey,
    level: u16,
    arrived: Instant,
    last_seen: Instant,
}

/// The waiting line of one uploader.
#[derive(Debug, Clone)]
pub struct UploadQueue {
    waiters: Vec<Waiter>,
    stale_after: Duration,
}

impl UploadQueue {
    /// An empty line whose waiters expire when silent for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        UploadQueue {
            waiters: Vec::new(),
            stale_after,
        }
    }

    /// Waiters now (after the last [`UploadQueue::request`]'s expiry).
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// A request from `key` with participation `level` while `free_slots` slots are free.
    pub fn request(
        &mut self,
        key: PeerKey,
        level: u16,
        free_slots: usize,
        now: Instant,
    ) -> Admission {
        let stale = self.stale_after;
        self.waiters
            .retain(|w| now.saturating_duration_since(w.last_seen) < stale);
        let level = level.min(MAX_LEVEL);
        let (empty, full) = (self.waiters.is_empty(), self.waiters.len() >= MAX_QUEUE);
        match self.waiters.iter_mut().find(|w| w.key == key) {
            Some(w) => {
                w.level = level;
                w.last_seen = now;
            }
            None if free_slots > 0 && empty => return Admission::Go,
            None if full => return Admission::Full,
            None => self.waiters.push(Waiter {
                key: key.clone(),
                level,
                arrived: now,
                last_seen: now,
            }),
        }
        // Highest level first, then first come; a stable sort keeps equal arrivals in order.
        self.waiters
            .sort_by(|a, b| b.level.cmp(&a.level).then(a.arrived.cmp(&b.arrived)));
        let rank = self.waiters.iter().position(|w| w.key == key).unwrap_or(0);
        if rank < free_slots {
            self.waiters.remove(rank);
            return Admission::Go;
        }
        Admission::Queued {
            position: rank + 1,
            waiting: self.waiters.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(user: &str) -> PeerKey {
        PeerKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), user)
    }

    const STALE: Duration = Duration::from_secs(10);

    #[test]
    fn free_slot_and_empty_line_goes_at_once() {
        let mut q = UploadQueue::new(STALE);
        assert_eq!(q.request(key("a"), 10, 1, Instant::now()), Admission::Go);
        assert!(q.is_empty());
    }

    #[test]
    fn next_free_slot_goes_to_the_highest_level_then_first_come() {
        let t = Instant::now();
        let s = |n| t + Duration::from_millis(n);
        let mut q = UploadQueue::new(STALE);
        assert_eq!(
            q.request(key("low"), 10, 0, s(0)),
            Admission::Queued {
                position: 1,
                waiting: 1
            }
        );
        assert_eq!(
            q.request(key("mid"), 300, 0, s(1)),
            Admission::Queued {
                position: 1,
                waiting: 2
            }
        );
        assert_eq!(
            q.request(key("mid2"), 300, 0, s(2)),
            Admission::Queued {
                position: 2,
                waiting: 3
            }
        );
        assert_eq!(
            q.request(key("low"), 10, 0, s(3)),
            Admission::Queued {
                position: 3,
                waiting: 3
            }
        );
        // A slot frees: "low" asks first but is owed nothing; "mid" (highest, first) gets it.
        assert_eq!(
            q.request(key("low"), 10, 1, s(4)),
            Admission::Queued {
                position: 3,
                waiting: 3
            }
        );
        assert_eq!(
            q.request(key("mid2"), 300, 1, s(5)),
            Admission::Queued {
                position: 2,
                waiting: 3
            }
        );
        assert_eq!(q.request(key("mid"), 300, 1, s(6)), Admission::Go);
        assert_eq!(q.request(key("mid2"), 300, 1, s(7)), Admission::Go);
        assert_eq!(q.request(key("low"), 10, 1, s(8)), Admission::Go);
        assert!(q.is_empty());
    }

    #[test]
    fn a_newcomer_with_a_higher_level_jumps_the_line_but_not_a_free_slot_ahead() {
        let t = Instant::now();
        let mut q = UploadQueue::new(STALE);
        q.request(key("a"), 10, 0, t);
        // Two free slots, one waiter: the newcomer is second in line and still gets the second slot.
        assert_eq!(
            q.request(key("b"), 5, 2, t + Duration::from_millis(1)),
            Admission::Go
        );
        assert_eq!(
            q.request(key("c"), 1000, 0, t + Duration::from_millis(2)),
            Admission::Queued {
                position: 1,
                waiting: 2
            }
        );
    }

    #[test]
    fn silent_waiters_lose_their_place() {
        let t = Instant::now();
        let mut q = UploadQueue::new(STALE);
        q.request(key("gone"), 1000, 0, t);
        q.request(key("here"), 10, 0, t + Duration::from_secs(1));
        // "gone" never asks again; once it is stale, "here" gets the free slot.
        assert!(matches!(
            q.request(key("here"), 10, 1, t + Duration::from_secs(5)),
            Admission::Queued { position: 2, .. }
        ));
        assert_eq!(
            q.request(key("here"), 10, 1, t + Duration::from_secs(11)),
            Admission::Go
        );
        assert!(q.is_empty());
    }

    #[test]
    fn the_line_is_bounded() {
        let t = Instant::now();
        let mut q = UploadQueue::new(STALE);
        for i in 0..MAX_QUEUE {
            assert!(matches!(
                q.request(key(&format!("u{i}")), 10, 0, t),
                Admission::Queued { .. }
            ));
        }
        assert_eq!(q.request(key("late"), 1000, 0, t), Admission::Full);
        // Someone already waiting keeps being answered with a place.
        assert!(matches!(
            q.request(key("u0"), 10, 0, t),
            Admission::Queued { .. }
        ));
    }

    #[test]
    fn levels_parse_and_clamp() {
        assert_eq!(parse_level(None), DEFAULT_LEVEL);
        assert_eq!(parse_level(Some("junk")), DEFAULT_LEVEL);
        assert_eq!(parse_level(Some(" 250 ")), 250);
        assert_eq!(parse_level(Some("99999999999")), MAX_LEVEL);
        assert_eq!(
            PeerKey::new(IpAddr::V4(Ipv4Addr::LOCALHOST), &"é".repeat(40))
                .user
                .len(),
            64
        );
    }
}
