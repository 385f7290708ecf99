//! The MD5 tree whose root makes bytes 20–35 of Kazaa's `kzhash` (Kazaa >= 2.6), `shared/protocols/kazaa.md` §3.
//!
//! Leaves are the MD5 of each 32 KiB block (the last one may be short). Going up, neighbours are joined as
//! `MD5(left ‖ right)`; a node left without a partner is hashed alone (`MD5(node)`). Consequences pinned by the
//! reference vectors: one block gives `MD5(MD5(block))`, and empty content gives `MD5("")`.
//!
//! The streaming form keeps one pending node per tree level (like a binary counter), so memory is
//! `O(log n)` whatever the file size.

use super::md5fast::Md5;

/// Size of a leaf block: 32 KiB.
pub const MD5_TREE_BLOCK: usize = 32 * 1024;

type Node = [u8; 16];

fn md5_of(parts: &[&[u8]]) -> Node {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// Streaming MD5-tree hasher.
#[derive(Clone)]
pub struct Md5TreeHasher {
    block: Md5,
    block_fill: usize,
    leaves: u64,
    /// Complete subtrees not yet paired, as (level, node); levels strictly decrease towards the end.
    stack: Vec<(u32, Node)>,
}

impl Default for Md5TreeHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5TreeHasher {
    /// An empty tree.
    pub fn new() -> Self {
        Md5TreeHasher {
            block: Md5::new(),
            block_fill: 0,
            leaves: 0,
            stack: Vec::new(),
        }
    }

    fn push_leaf(&mut self, leaf: Node) {
        self.leaves += 1;
        let mut level = 0u32;
        let mut node = leaf;
        while let Some(&(top_level, top)) = self.stack.last() {
            if top_level != level {
                break;
            }
            self.stack.pop();
            node = md5_of(&[&top, &node]);
            level += 1;
        }
        self.stack.push((level, node));
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.feed(None, data);
    }

    /// Feeds the next bytes to the tree and to `file`, an MD5 of the whole content that has been fed the
    /// same bytes so far; the two MD5s share each block's work ([`Md5::update_pair`]).
    pub fn update_with_md5(&mut self, file: &mut Md5, data: &[u8]) {
        self.feed(Some(file), data);
    }

    fn feed(&mut self, mut file: Option<&mut Md5>, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (MD5_TREE_BLOCK - self.block_fill).min(data.len());
            match file.as_deref_mut() {
                Some(f) => Md5::update_pair(f, &mut self.block, &data[..take]),
                None => self.block.update(&data[..take]),
            }
            self.block_fill += take;
            data = &data[take..];
            if self.block_fill == MD5_TREE_BLOCK {
                let leaf: Node = std::mem::take(&mut self.block).finalize();
                self.block_fill = 0;
                self.push_leaf(leaf);
            }
        }
    }

    /// The tree root.
    pub fn finish(mut self) -> [u8; 16] {
        if self.block_fill > 0 {
            let leaf: Node = std::mem::take(&mut self.block).finalize();
            self.push_leaf(leaf);
        }
        match self.leaves {
            0 => return md5_of(&[]),
            1 => return md5_of(&[&self.stack[0].1]),
            _ => {}
        }
        // Levels below the top entry's level are empty; an entry is the odd node out of its level, so it is
        // hashed alone on the way up until it meets the pending node of a higher level.
        let (mut level, mut carry) = self.stack.pop().expect("at least one node");
        while let Some((top_level, top)) = self.stack.pop() {
            while level < top_level {
                carry = md5_of(&[&carry]);
                level += 1;
            }
            carry = md5_of(&[&top, &carry]);
            level += 1;
        }
        carry
    }
}

/// Root of the MD5 tree of an in-memory buffer.
pub fn md5_tree(data: &[u8]) -> [u8; 16] {
    let mut h = Md5TreeHasher::new();
    h.update(data);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight level-by-level construction, the way the notes describe it, as an oracle.
    fn level_by_level(data: &[u8]) -> Node {
        if data.is_empty() {
            return md5_of(&[]);
        }
        let mut level: Vec<Node> = data.chunks(MD5_TREE_BLOCK).map(|c| md5_of(&[c])).collect();
        loop {
            level = level
                .chunks(2)
                .map(|p| match p {
                    [a, b] => md5_of(&[a, b]),
                    [a] => md5_of(&[a]),
                    _ => unreachable!(),
                })
                .collect();
            if level.len() == 1 {
                return level[0];
            }
        }
    }

    #[test]
    fn stack_equals_level_by_level() {
        let data: Vec<u8> = (0..(MD5_TREE_BLOCK * 13 + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        for blocks in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13] {
            for extra in [0usize, 1] {
                let n = (blocks * MD5_TREE_BLOCK + extra).min(data.len());
                assert_eq!(md5_tree(&data[..n]), level_by_level(&data[..n]), "n = {n}");
            }
        }
    }
}
