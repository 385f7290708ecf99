//! An SN's index of its children's shares (`shared/protocols/kazaa.md` §1 "ON→SN metadata": one 0x22 per
//! file; 0x05 or a disconnect removes it). Answers queries with [`super::matching::matches`].

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddrV4;

use common::hash::UuHash;

use super::matching::matches;
use super::ConnId;
use crate::codec::message::{FileMeta, Query, SearchResult};

/// Who a child is, from its 0x02 (or the address the SN saw until then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The HTTP address results advertise (port 0 = firewalled).
    pub addr: SocketAddrV4,
    /// Bandwidth byte.
    pub bandwidth: u8,
    /// Username.
    pub user: String,
}

#[derive(Debug, Clone)]
struct Child {
    info: ChildInfo,
    files: Vec<FileMeta>,
}

/// Why a share was not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// The child already shares the per-child maximum (Kazaa SNs clipped at 51–69 shares).
    #[error("share limit reached ({0} files)")]
    LimitReached(usize),
    /// No such child.
    #[error("unknown child")]
    UnknownChild,
}

/// The index: children in connection order, so answers are deterministic.
#[derive(Debug, Clone, Default)]
pub struct ShareIndex {
    children: BTreeMap<ConnId, Child>,
    by_hash: HashMap<UuHash, usize>,
    files: usize,
    max_per_child: usize,
}

impl ShareIndex {
    /// An empty index keeping at most `max_per_child` files per child.
    pub fn new(max_per_child: usize) -> Self {
        ShareIndex {
            max_per_child,
            ..Default::default()
        }
    }

    /// Registers a child (or updates its info, on a repeated 0x02).
    pub fn set_child(&mut self, id: ConnId, info: ChildInfo) {
        self.children
            .entry(id)
            .and_modify(|c| c.info = info.clone())
            .or_insert(Child {
                info,
                files: Vec::new(),
            });
    }

    /// The child's info.
    pub fn child(&self, id: ConnId) -> Option<&ChildInfo> {
        self.children.get(&id).map(|c| &c.info)
    }

    /// The child whose advertised address is `addr` and username `user` (firewalled children behind
    /// one NAT share ip:0, so the name tells them apart).
    pub fn child_by_addr(&self, addr: SocketAddrV4, user: &str) -> Option<ConnId> {
        self.children
            .iter()
            .find(|(_, c)| c.info.addr == addr && c.info.user == user)
            .map(|(id, _)| *id)
    }

    /// Adds a file. A repeated share of the same hash replaces the earlier entry.
    pub fn share(&mut self, id: ConnId, file: FileMeta) -> Result<(), ShareError> {
        let child = self.children.get_mut(&id).ok_or(ShareError::UnknownChild)?;
        if let Some(old) = child.files.iter_mut().find(|f| f.hash == file.hash) {
            *old = file;
            return Ok(());
        }
        if child.files.len() >= self.max_per_child {
            return Err(ShareError::LimitReached(self.max_per_child));
        }
        *self.by_hash.entry(file.hash).or_default() += 1;
        child.files.push(file);
        self.files += 1;
        Ok(())
    }

    /// Removes one file; returns whether it was there.
    pub fn unshare(&mut self, id: ConnId, hash: &UuHash) -> bool {
        let Some(child) = self.children.get_mut(&id) else {
            return false;
        };
        let before = child.files.len();
        child.files.retain(|f| &f.hash != hash);
        let removed = before - child.files.len();
        for _ in 0..removed {
            self.forget_hash(hash);
        }
        removed > 0
    }

    fn forget_hash(&mut self, hash: &UuHash) {
        self.files -= 1;
        if let Some(n) = self.by_hash.get_mut(hash) {
            *n -= 1;
            if *n == 0 {
                self.by_hash.remove(hash);
            }
        }
    }

    /// Removes a child and all its files; returns how many files went.
    pub fn remove_child(&mut self, id: ConnId) -> usize {
        let Some(child) = self.children.remove(&id) else {
            return 0;
        };
        for f in &child.files {
            self.forget_hash(&f.hash);
        }
        child.files.len()
    }

    /// Children registered.
    pub fn child_count(&self) -> usize {
        self.children.len()
    }

    /// Files indexed.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Total bytes indexed.
    pub fn total_size(&self) -> u64 {
        self.children
            .values()
            .flat_map(|c| &c.files)
            .map(|f| f.size)
            .fold(0, u64::saturating_add)
    }

    /// Files of one child (for tests and the trace).
    pub fn files_of(&self, id: ConnId) -> &[FileMeta] {
        self.children
            .get(&id)
            .map(|c| c.files.as_slice())
            .unwrap_or(&[])
    }

    /// Whether some child shares `hash`.
    pub fn has_hash(&self, hash: &UuHash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Up to `limit` results for `query`, excluding the asking child's own files.
    pub fn search(
        &self,
        query: &Query,
        limit: usize,
        network: &str,
        exclude: Option<ConnId>,
    ) -> Vec<SearchResult> {
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        for (id, child) in &self.children {
            if Some(*id) == exclude {
                continue;
            }
            for f in &child.files {
                if matches(query, f) {
                    out.push(SearchResult {
                        addr: child.info.addr,
                        bandwidth: child.info.bandwidth,
                        user: child.info.user.clone(),
                        network: network.to_owned(),
                        hash: f.hash,
                        file_id: f.file_id,
                        size: f.size,
                        tags: f.tags.clone(),
                    });
                    if out.len() == limit {
                        return out;
                    }
                }
            }
        }
        out
    }
}
