//! BEP 15 connection ids, and the rule that keeps the UDP tracker from being an amplifier.
//!
//! # Threat model
//! UDP source addresses can be spoofed. An attacker who sends announces with a victim's source address would
//! make the tracker send the victim peer lists larger than the requests: reflection with amplification.
//! BEP 15's connect step is the defence: an announce or scrape is only answered in full when it carries a
//! connection id that was sent *to that IP address* a short time ago, which a spoofer never sees.
//!
//! A connection id is therefore a MAC, not a table entry (no state to fill up):
//!
//! ```text
//! connection_id = SipHash-2-4(key, ip bytes || time_bucket)     (64 bits)
//! time_bucket   = unix_seconds / BUCKET_SECS
//! ```
//!
//! `key` is 128 random bits drawn at start-up (from the RNG the caller passes in) and never leaves the
//! process. An id is accepted in its own bucket and the next, so it lives between [`BUCKET_SECS`] and
//! 2 × [`BUCKET_SECS`] seconds; BEP 15 asks clients to reconnect after one minute and trackers to accept ids
//! for two. Forging one without the key means guessing 64 bits per (IP, bucket): about 2^63 packets on
//! average, and the answer of a wrong guess is at most as big as the guess (see below), so guessing buys
//! nothing. Restarting the tracker invalidates all ids (clients reconnect, as BEP 15 expects).
//!
//! # No amplification
//! [`reply_budget`]: a packet that is not authenticated (a connect request, or a request whose connection id
//! does not verify) gets a reply of at most its own size. A connect reply is 16 bytes for a 16-byte request;
//! an error reply is cut to the request's length. Only an authenticated announce may get a larger reply, and
//! it is still capped by `--max-peers`.

use std::hash::Hasher;
use std::net::IpAddr;

use rand::Rng;
use siphasher::sip::SipHasher24;

/// Length of a time bucket in seconds; ids are valid for one to two buckets.
pub const BUCKET_SECS: u64 = 60;

/// Makes and checks connection ids.
#[derive(Clone)]
pub struct ConnectionIds {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for ConnectionIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionIds { key: <secret> }")
    }
}

impl ConnectionIds {
    /// A validator with a fresh secret key drawn from `rng`.
    pub fn new(rng: &mut impl Rng) -> ConnectionIds {
        ConnectionIds {
            k0: rng.gen(),
            k1: rng.gen(),
        }
    }

    fn mac(&self, ip: IpAddr, bucket: u64) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        // IPv4-mapped IPv6 and plain IPv4 are the same sender.
        match ip.to_canonical() {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write_u64(bucket);
        h.finish()
    }

    /// The id to send to `ip` at `unix_secs`.
    pub fn make(&self, ip: IpAddr, unix_secs: u64) -> u64 {
        self.mac(ip, unix_secs / BUCKET_SECS)
    }

    /// Whether `id` was made for `ip` within the validity window.
    pub fn check(&self, id: u64, ip: IpAddr, unix_secs: u64) -> bool {
        let b = unix_secs / BUCKET_SECS;
        id == self.mac(ip, b) || (b > 0 && id == self.mac(ip, b - 1))
    }
}

/// Largest reply allowed for a request of `request_len` bytes: unlimited (`usize::MAX`, other caps apply)
/// when the request carried a verified connection id, else the request's own size.
pub fn reply_budget(request_len: usize, authenticated: bool) -> usize {
    if authenticated {
        usize::MAX
    } else {
        request_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ids_are_bound_to_ip_and_time() {
        let ids = ConnectionIds::new(&mut StdRng::seed_from_u64(1));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let t = 1_700_000_000;
        let id = ids.make(ip, t);
        assert!(ids.check(id, ip, t));
        assert!(
            ids.check(id, ip, t + BUCKET_SECS),
            "valid in the next bucket"
        );
        assert!(!ids.check(id, ip, t + 2 * BUCKET_SECS), "expired");
        assert!(!ids.check(id, other, t), "another IP cannot use it");
        assert!(!ids.check(id ^ 1, ip, t));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(ids.check(id, mapped, t));
    }

    #[test]
    fn different_keys_different_ids() {
        let a = ConnectionIds::new(&mut StdRng::seed_from_u64(1));
        let b = ConnectionIds::new(&mut StdRng::seed_from_u64(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_ne!(a.make(ip, 100), b.make(ip, 100));
    }

    #[test]
    fn unauthenticated_budget_is_request_size() {
        assert_eq!(reply_budget(16, false), 16);
        assert_eq!(reply_budget(98, true), usize::MAX);
    }
}
