//! The download mesh: which other hosts have a file, by SHA-1 (notes §5 "Alt-locs"; gtk-gnutella's dmesh).
//!
//! Fed by every source we learn of (hits of our own searches, `X-Alt` headers in replies to our downloads and
//! in the requests of peers downloading from us, when they name the same content URN) and read when we upload
//! (`X-Alt` on the reply) or download (extra sources). Sans-I/O: time is passed in.
//!
//! Bounded in memory: at most [`MAX_MESH_FILES`] files, [`MAX_ALTS_PER_FILE`] locations each, and a location
//! not confirmed for [`ALT_LIFETIME`] is forgotten. When full, the file updated longest ago goes.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use crate::codec::altloc::usable;

/// Files the mesh remembers.
pub const MAX_MESH_FILES: usize = 1024;
/// Locations kept per file (the freshest).
pub const MAX_ALTS_PER_FILE: usize = 64;
/// A location not heard of again for this long is dropped.
pub const ALT_LIFETIME: Duration = Duration::from_secs(30 * 60);

#[derive(Default)]
struct Entry {
    /// Freshest last.
    alts: Vec<(SocketAddrV4, Instant)>,
    touched: Option<Instant>,
}

/// Alternate locations by SHA-1.
#[derive(Default)]
pub struct Mesh {
    files: HashMap<[u8; 20], Entry>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("files", &self.files.len())
            .finish()
    }
}

impl Mesh {
    /// An empty mesh.
    pub fn new() -> Mesh {
        Mesh::default()
    }

    /// Records that `addr` has the file `sha1` (seen at `now`). Unusable addresses are ignored.
    pub fn add(&mut self, now: Instant, sha1: [u8; 20], addr: SocketAddrV4) {
        if !usable(&addr) {
            return;
        }
        if !self.files.contains_key(&sha1) && self.files.len() >= MAX_MESH_FILES {
            if let Some(oldest) = self
                .files
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| *k)
            {
                self.files.remove(&oldest);
            }
        }
        let e = self.files.entry(sha1).or_default();
        e.alts
            .retain(|(a, t)| *a != addr && now.saturating_duration_since(*t) <= ALT_LIFETIME);
        e.alts.push((addr, now));
        if e.alts.len() > MAX_ALTS_PER_FILE {
            let extra = e.alts.len() - MAX_ALTS_PER_FILE;
            e.alts.drain(..extra);
        }
        e.touched = Some(now);
    }

    /// Forgets `addr` for `sha1` (an `X-Nalt`, or a source that failed).
    pub fn remove(&mut self, sha1: &[u8; 20], addr: &SocketAddrV4) {
        if let Some(e) = self.files.get_mut(sha1) {
            e.alts.retain(|(a, _)| a != addr);
            if e.alts.is_empty() {
                self.files.remove(sha1);
            }
        }
    }

    /// Up to `max` live locations of `sha1`, freshest first, leaving out `exclude`.
    pub fn get(
        &self,
        now: Instant,
        sha1: &[u8; 20],
        exclude: &[SocketAddrV4],
        max: usize,
    ) -> Vec<SocketAddrV4> {
        let Some(e) = self.files.get(sha1) else {
            return Vec::new();
        };
        e.alts
            .iter()
            .rev()
            .filter(|(a, t)| {
                now.saturating_duration_since(*t) <= ALT_LIFETIME && !exclude.contains(a)
            })
            .map(|(a, _)| *a)
            .take(max)
            .collect()
    }

    /// Files currently known.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// No file known.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u16) -> SocketAddrV4 {
        SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 1000 + i)
    }

    #[test]
    fn freshest_first_without_excluded_and_bounded() {
        let t = Instant::now();
        let mut m = Mesh::new();
        let h = [1u8; 20];
        for i in 0..100 {
            m.add(t + Duration::from_millis(i as u64), h, a(i));
        }
        let got = m.get(t + Duration::from_secs(1), &h, &[a(99)], 3);
        assert_eq!(got, vec![a(98), a(97), a(96)]);
        assert_eq!(m.get(t, &h, &[], 1000).len(), MAX_ALTS_PER_FILE);
        // Seeing a location again refreshes it.
        m.add(t + Duration::from_secs(2), h, a(50));
        assert_eq!(m.get(t + Duration::from_secs(2), &h, &[], 1), vec![a(50)]);
        m.remove(&h, &a(50));
        assert!(!m
            .get(t + Duration::from_secs(2), &h, &[], 1000)
            .contains(&a(50)));
    }

    #[test]
    fn old_locations_expire_and_files_are_capped() {
        let t = Instant::now();
        let mut m = Mesh::new();
        m.add(t, [0; 20], a(1));
        assert!(m
            .get(t + ALT_LIFETIME + Duration::from_secs(1), &[0; 20], &[], 10)
            .is_empty());
        for i in 0..(MAX_MESH_FILES as u32 + 10) {
            let mut h = [0u8; 20];
            h[..4].copy_from_slice(&i.to_le_bytes());
            m.add(t + Duration::from_millis(i as u64), h, a(1));
        }
        assert_eq!(m.len(), MAX_MESH_FILES);
        // The oldest files went first.
        assert!(m.get(t, &[0; 20], &[], 10).is_empty());
        // Unusable addresses are ignored.
        m.add(
            t,
            [9; 20],
            SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 5),
        );
        assert!(m.get(t, &[9; 20], &[], 10).is_empty());
    }
}
