//! Per-direction zlib stream compression of a Gnet link (notes §1: zlib-framed deflate, Z_SYNC_FLUSH after
//! each batch so the peer can decode what it has). Inflation is bounded per call so a compression bomb
//! cannot grow memory faster than frames are consumed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Output produced by one [`Inflater::feed`] call at most.
pub const MAX_INFLATE_STEP: usize = 64 * 1024;

/// Inbound side: zlib → plain.
#[derive(Debug)]
pub struct Inflater {
    d: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            d: Decompress::new(true),
        }
    }
}

impl Inflater {
    /// Inflates from `input` into `out`, producing at most [`MAX_INFLATE_STEP`] bytes. Returns the input
    /// bytes consumed; call again with the rest after consuming the output.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
        let before_in = self.d.total_in();
        let start = out.len();
        out.reserve(MAX_INFLATE_STEP);
        let limit = start + MAX_INFLATE_STEP;
        let mut consumed = 0usize;
        while consumed < input.len() && out.len() < limit {
            let spare = limit - out.len();
            let mut tmp = Vec::with_capacity(spare.min(16 * 1024));
            let in0 = self.d.total_in();
            let st = self
                .d
                .decompress_vec(&input[consumed..], &mut tmp, FlushDecompress::Sync)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let used = (self.d.total_in() - in0) as usize;
            consumed += used;
            out.extend_from_slice(&tmp);
            if st == Status::StreamEnd {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer ended its deflate stream",
                ));
            }
            if used == 0 && tmp.is_empty() {
                break;
            }
        }
        debug_assert_eq!((self.d.total_in() - before_in) as usize, consumed);
        Ok(consumed)
    }
}

/// Outbound side: plain → zlib, sync-flushed per batch.
#[derive(Debug)]
pub struct Deflater {
    c: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            c: Compress::new(Compression::default(), true),
        }
    }
}

impl Deflater {
    /// Compresses `input` and sync-flushes, appending to `out`.
    pub fn compress_flush(&mut self, input: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut pos = 0;
        loop {
            out.reserve(input.len() / 2 + 1024);
            let in0 = self.c.total_in();
            let out0 = out.len();
            self.c
                .compress_vec(&input[pos..], out, FlushCompress::Sync)
                .map_err(std::io::Error::other)?;
            pos += (self.c.total_in() - in0) as usize;
            // Done when all input is taken and the flush did not fill the buffer.
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(());
            }
            if pos >= input.len() && out.len() == out0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_flushed_batches_decode_as_they_arrive() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        let mut plain = Vec::new();
        for n in 0..50u32 {
            let msg: Vec<u8> = (0..(n * 97 % 5000)).map(|x| (x % 251) as u8).collect();
            let mut wire = Vec::new();
            d.compress_flush(&msg, &mut wire).unwrap();
            let mut got = Vec::new();
            let mut off = 0;
            while off < wire.len() {
                off += i.feed(&wire[off..], &mut got).unwrap();
            }
            assert_eq!(got, msg, "batch {n} decodes fully after its sync flush");
            plain.extend(got);
        }
    }

    #[test]
    fn bomb_is_inflated_in_bounded_steps() {
        let mut d = Deflater::default();
        let mut wire = Vec::new();
        d.compress_flush(&vec![0u8; 10 * 1024 * 1024], &mut wire)
            .unwrap();
        let mut i = Inflater::default();
        let mut out = Vec::new();
        let used = i.feed(&wire, &mut out).unwrap();
        assert!(out.len() <= MAX_INFLATE_STEP + 16 * 1024);
        assert!(used < wire.len());
        assert!(Inflater::default()
            .feed(b"not zlib at all", &mut Vec::new())
            .is_err());
    }
}
