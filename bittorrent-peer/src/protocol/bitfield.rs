//! A set of piece indices in the BEP 3 `bitfield` layout: bit 7 of byte 0 is piece 0; spare bits in the
//! last byte must be zero.

/// A fixed-size bit set over `len` pieces.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

/// Why a peer's bitfield was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BitfieldError {
    /// Wrong number of bytes for the torrent.
    #[error("bitfield of {got} bytes, expected {want}")]
    WrongLength {
        /// Bytes received.
        got: usize,
        /// Bytes expected.
        want: usize,
    },
    /// A spare bit past the last piece is set.
    #[error("spare bits set in bitfield")]
    SpareBits,
}

impl Bitfield {
    /// An empty set over `len` pieces.
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            bytes: vec![0; len.div_ceil(8) as usize],
            len,
            ones: 0,
        }
    }

    /// A full set over `len` pieces.
    pub fn full(len: u32) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Parses a peer's `bitfield` payload for a torrent of `len` pieces.
    pub fn from_wire(data: &[u8], len: u32) -> Result<Bitfield, BitfieldError> {
        let want = len.div_ceil(8) as usize;
        if data.len() != want {
            return Err(BitfieldError::WrongLength {
                got: data.len(),
                want,
            });
        }
        let spare = want as u32 * 8 - len;
        if spare > 0 && data[want - 1] & ((1u8 << spare) - 1) != 0 {
            return Err(BitfieldError::SpareBits);
        }
        let ones = data.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield {
            bytes: data.to_vec(),
            len,
            ones,
        })
    }

    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of pieces covered.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when it covers no piece.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pieces in the set.
    pub fn count(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is in the set.
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// Whether piece `i` is in the set (false when out of range).
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Adds piece `i`; returns false if it was out of range or already present.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Removes piece `i`.
    pub fn clear(&mut self, i: u32) {
        if self.get(i) {
            self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
            self.ones -= 1;
        }
    }

    /// Indices in the set, in order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Whether `other` has a piece this set lacks.
    pub fn wants_from(&self, other: &Bitfield) -> bool {
        self.bytes
            .iter()
            .zip(&other.bytes)
            .any(|(mine, theirs)| theirs & !mine != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn wire_layout_and_spare_bits() {
        let mut b = Bitfield::new(10);
        b.set(0);
        b.set(9);
        assert_eq!(b.as_bytes(), [0x80, 0x40]);
        assert_eq!(Bitfield::from_wire(&[0x80, 0x40], 10).unwrap(), b);
        assert_eq!(
            Bitfield::from_wire(&[0x80, 0x41], 10),
            Err(BitfieldError::SpareBits)
        );
        assert!(matches!(
            Bitfield::from_wire(&[0x80], 10),
            Err(BitfieldError::WrongLength { .. })
        ));
        assert!(!b.set(10));
        assert_eq!(b.count(), 2);
        let full = Bitfield::full(10);
        assert!(full.is_full() && b.wants_from(&full) && !full.wants_from(&b));
    }

    proptest! {
        #[test]
        fn arbitrary_wire_never_panics(data in proptest::collection::vec(any::<u8>(), 0..20), len in 0u32..200) {
            if let Ok(b) = Bitfield::from_wire(&data, len) {
                prop_assert_eq!(b.iter_ones().count() as u32, b.count());
            }
        }
    }
}
