//! IP fields (notes §1): an IPv4 address travels as a decimal u32 whose value is the four octets in network
//! order read as a **little-endian** integer, so `127.0.0.1` is `16777343`.

use std::net::Ipv4Addr;

/// Encodes an address the Napster way.
pub fn to_wire(ip: Ipv4Addr) -> u32 {
    u32::from_le_bytes(ip.octets())
}

/// Decodes a Napster IP field value.
pub fn from_wire(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn loopback_is_16777343() {
        assert_eq!(to_wire(Ipv4Addr::LOCALHOST), 16_777_343);
        assert_eq!(from_wire(16_777_343), Ipv4Addr::LOCALHOST);
        assert_eq!(to_wire(Ipv4Addr::new(1, 2, 3, 4)), 0x0403_0201);
    }

    proptest! {
        #[test]
        fn round_trip(n in any::<u32>()) {
            prop_assert_eq!(to_wire(from_wire(n)), n);
        }
    }
}
