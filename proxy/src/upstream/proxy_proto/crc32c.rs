//! CRC32C (Castagnoli), the checksum of the PROXY v2 `PP2_TYPE_CRC32C` TLV. Bit by bit: a
//! header is a few dozen bytes, once per connection, so a table or a crate buys nothing.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (POLY & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::crc32c;

    #[test]
    fn known_values() {
        // RFC 3720 B.4 and the common check value of CRC-32C.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
    }
}
