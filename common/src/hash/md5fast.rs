//! MD5 (RFC 1321), scheduled for a short dependency chain.
//!
//! Why not just the `md-5` crate: MD5 is latency-bound (every step needs the previous step's result), and
//! on this project's machine `md-5` 0.10 (with or without its `asm` feature, which measured within noise of
//! the plain build) ran at about 0.77x of `openssl dgst -md5` per CPU second, below the 0.9x goal. Its
//! generated code adds the round constant *after* the boolean function, because LLVM's reassociation moves
//! constants to the end of a sum, which puts one more add on the critical path of each of the 64 steps.
//! Here the sum `a + X[k] + K[i]`, which only depends on older values, goes through
//! [`core::hint::black_box`] so it stays a precomputed operand, and the chain per step is: boolean
//! function, one add, rotate, one add (what OpenSSL's assembly does). Measured 0.98–1.00x of OpenSSL per
//! CPU second (`cargo bench -p common --bench hashes`, see `docs/BENCHMARKS.md`).
//!
//! Second trick: [`Md5::update_pair`] runs two MD5 states over the same blocks with their steps
//! interleaved, so one chain's latency hides the other's. `kzhash` needs the whole-file MD5 and the MD5 of
//! every 32 KiB leaf, over the same bytes with the same 64-byte block boundaries: the pair costs about
//! 1.15x one MD5 instead of 2x. Padding and buffering are textbook; `md-5` stays the oracle in the tests.

use core::hint::black_box;

/// MD5 block size.
const BLOCK: usize = 64;

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

// F = d ^ (b & (c ^ d)); G = (c & !d) + (b & d) (disjoint bits, so + is |, and c & !d is off the chain);
// H = b ^ c ^ d; I = c ^ (b | !d). `$m` is the message word plus the round constant.
macro_rules! step {
    (F, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $s:expr) => {
        $a = black_box($a.wrapping_add($m))
            .wrapping_add($d ^ ($b & ($c ^ $d)))
            .rotate_left($s)
            .wrapping_add($b);
    };
    (G, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $s:expr) => {
        $a = black_box($a.wrapping_add($m))
            .wrapping_add(!$d & $c)
            .wrapping_add($d & $b)
            .rotate_left($s)
            .wrapping_add($b);
    };
    (H, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $s:expr) => {
        $a = black_box($a.wrapping_add($m))
            .wrapping_add($b ^ $c ^ $d)
            .rotate_left($s)
            .wrapping_add($b);
    };
    (I, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $s:expr) => {
        $a = black_box($a.wrapping_add($m))
            .wrapping_add($c ^ ($b | !$d))
            .rotate_left($s)
            .wrapping_add($b);
    };
}

/// The 16 steps of one round over one or more independent states `[a b c d]` (several states interleave
/// their dependency chains, which a single MD5 cannot do).
macro_rules! round {
    ($x:ident, $f:ident, $k0:expr, $kstep:expr, $i0:expr, [$s0:expr, $s1:expr, $s2:expr, $s3:expr],
     $([$a:ident $b:ident $c:ident $d:ident])+) => {
        for j in 0..4 {
            let i = $i0 + 4 * j;
            let m = |n: usize| $x[($k0 + $kstep * (4 * j + n)) % 16].wrapping_add(K[i + n]);
            $(step!($f, $a, $b, $c, $d, m(0), $s0);)+
            $(step!($f, $d, $a, $b, $c, m(1), $s1);)+
            $(step!($f, $c, $d, $a, $b, m(2), $s2);)+
            $(step!($f, $b, $c, $d, $a, m(3), $s3);)+
        }
    };
}

/// All 64 steps; message word of step i: round 1 i, round 2 (1 + 5i), round 3 (5 + 3i), round 4 7i, mod 16.
macro_rules! rounds {
    ($x:ident, $($st:tt)+) => {
        round!($x, F, 0, 1, 0, [7, 12, 17, 22], $($st)+);
        round!($x, G, 1, 5, 16, [5, 9, 14, 20], $($st)+);
        round!($x, H, 5, 3, 32, [4, 11, 16, 23], $($st)+);
        round!($x, I, 0, 7, 48, [6, 10, 15, 21], $($st)+);
    };
}

#[inline(always)]
fn load(block: &[u8]) -> [u32; 16] {
    let mut x = [0u32; 16];
    for (w, c) in x.iter_mut().zip(block.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    x
}

#[inline(always)]
fn add_into(state: &mut [u32; 4], v: [u32; 4]) {
    for (s, v) in state.iter_mut().zip(v) {
        *s = s.wrapping_add(v);
    }
}

#[inline(always)]
fn compress(state: &mut [u32; 4], block: &[u8]) {
    let x = load(block);
    let [mut a, mut b, mut c, mut d] = *state;
    rounds!(x, [a b c d]);
    add_into(state, [a, b, c, d]);
}

/// One block into two independent states at once (the whole-file MD5 and a kzhash tree leaf read the same
/// bytes); about 1.15x the time of one [`compress`] for twice the work.
#[inline(always)]
fn compress2(s1: &mut [u32; 4], s2: &mut [u32; 4], block: &[u8]) {
    let x = load(block);
    let [mut a, mut b, mut c, mut d] = *s1;
    let [mut e, mut f, mut g, mut h] = *s2;
    rounds!(x, [a b c d] [e f g h]);
    add_into(s1, [a, b, c, d]);
    add_into(s2, [e, f, g, h]);
}

fn compress_blocks(state: &mut [u32; 4], blocks: &[u8]) {
    for block in blocks.chunks_exact(BLOCK) {
        compress(state, block);
    }
}

/// Streaming MD5.
#[derive(Clone)]
pub struct Md5 {
    state: [u32; 4],
    buf: [u8; BLOCK],
    buf_len: usize,
    total: u64,
}

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Md5 {
            state: INIT,
            buf: [0; BLOCK],
            buf_len: 0,
            total: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total = self.total.wrapping_add(data.len() as u64);
        if self.buf_len > 0 {
            let take = (BLOCK - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < BLOCK {
                return;
            }
            let block = self.buf;
            compress_blocks(&mut self.state, &block);
            self.buf_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        compress_blocks(&mut self.state, &data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Feeds the same bytes to two hashers that have been fed the same number of bytes modulo 64 (so
    /// their blocks line up), interleaving their work.
    pub fn update_pair(a: &mut Md5, b: &mut Md5, mut data: &[u8]) {
        if a.buf_len != b.buf_len {
            a.update(data);
            b.update(data);
            return;
        }
        let len = data.len() as u64;
        a.total = a.total.wrapping_add(len);
        b.total = b.total.wrapping_add(len);
        if a.buf_len > 0 {
            let take = (BLOCK - a.buf_len).min(data.len());
            a.buf[a.buf_len..a.buf_len + take].copy_from_slice(&data[..take]);
            b.buf[b.buf_len..b.buf_len + take].copy_from_slice(&data[..take]);
            a.buf_len += take;
            b.buf_len += take;
            data = &data[take..];
            if a.buf_len < BLOCK {
                return;
            }
            let (ba, bb) = (a.buf, b.buf);
            compress(&mut a.state, &ba);
            compress(&mut b.state, &bb);
            a.buf_len = 0;
            b.buf_len = 0;
        }
        let whole = data.len() - data.len() % BLOCK;
        for block in data[..whole].chunks_exact(BLOCK) {
            compress2(&mut a.state, &mut b.state, block);
        }
        let rest = &data[whole..];
        a.buf[..rest.len()].copy_from_slice(rest);
        b.buf[..rest.len()].copy_from_slice(rest);
        a.buf_len = rest.len();
        b.buf_len = rest.len();
    }

    /// The digest.
    pub fn finalize(mut self) -> [u8; 16] {
        let bits = self.total.wrapping_mul(8);
        let mut tail = [0u8; 2 * BLOCK];
        tail[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        tail[self.buf_len] = 0x80;
        let n = if self.buf_len < BLOCK - 8 {
            BLOCK
        } else {
            2 * BLOCK
        };
        tail[n - 8..n].copy_from_slice(&bits.to_le_bytes());
        compress_blocks(&mut self.state, &tail[..n]);
        let mut out = [0u8; 16];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// MD5 of a buffer.
    pub fn digest(data: &[u8]) -> [u8; 16] {
        let mut h = Md5::new();
        h.update(data);
        h.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;
    use proptest::prelude::*;

    fn oracle(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    #[test]
    fn rfc1321_suite() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(
                hex::encode(Md5::digest(input.as_bytes())),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn every_length_around_the_padding_edges() {
        let data: Vec<u8> = (0..300).map(|i| (i * 13 % 256) as u8).collect();
        for n in 0..data.len() {
            assert_eq!(Md5::digest(&data[..n]), oracle(&data[..n]), "n = {n}");
        }
    }

    proptest! {
        #[test]
        fn pair_equals_two_singles(
            prefix_a in 0usize..200,
            prefix_b in 0usize..200,
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            chunk in 1usize..300,
        ) {
            let lead: Vec<u8> = (0..200u8).collect();
            let (mut a, mut b) = (Md5::new(), Md5::new());
            a.update(&lead[..prefix_a]);
            b.update(&lead[..prefix_b]);
            for c in data.chunks(chunk) {
                Md5::update_pair(&mut a, &mut b, c);
            }
            let mut want_a = lead[..prefix_a].to_vec();
            want_a.extend_from_slice(&data);
            let mut want_b = lead[..prefix_b].to_vec();
            want_b.extend_from_slice(&data);
            prop_assert_eq!(a.finalize(), oracle(&want_a));
            prop_assert_eq!(b.finalize(), oracle(&want_b));
        }

        #[test]
        fn matches_md5_crate(data in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..200) {
            let mut h = Md5::new();
            for c in data.chunks(chunk) {
                h.update(c);
            }
            prop_assert_eq!(h.finalize(), oracle(&data));
        }
    }
}
