//! Internet checksum arithmetic (RFC 1071), in the form the kernel program
//! needs to rebuild a TCP checksum from scratch, and the tests need to check
//! one.

/// Adds the big-endian 16-bit words of `data` to `acc` (an odd trailing byte
/// is padded with zero, as RFC 1071 says).
#[inline(always)]
pub fn sum_words(mut acc: u32, data: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        i += 2;
    }
    if i < data.len() {
        acc += u32::from(data[i]) << 8;
    }
    acc
}

/// [`sum_words`] of the first `len` bytes of `data`, by a loop whose bound
/// is the array's length (what a BPF verifier can follow), not `len`.
#[inline(always)]
pub fn sum_words_prefix<const N: usize>(mut acc: u32, data: &[u8; N], len: usize) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        if i + 1 < len {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        } else if i < len {
            acc += u32::from(data[i]) << 8;
        }
        i += 2;
    }
    if N % 2 == 1 && N - 1 < len {
        acc += u32::from(data[N - 1]) << 8;
    }
    acc
}

/// Folds a 32-bit one's-complement accumulator to 16 bits (not complemented).
#[inline(always)]
pub const fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The sum of the TCP/UDP pseudo-header: both addresses (4 or 16 bytes each),
/// the protocol and the length of the L4 header plus payload.
#[inline(always)]
pub fn pseudo_sum(saddr: &[u8], daddr: &[u8], proto: u8, l4_len: u32) -> u32 {
    let acc = sum_words(0, saddr);
    let acc = sum_words(acc, daddr);
    acc + u32::from(proto) + (l4_len >> 16) + (l4_len & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_sums_as_its_slice_does() {
        let data: [u8; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        for len in 0..=9 {
            assert_eq!(sum_words_prefix(7, &data, len), sum_words(7, &data[..len]), "len {len}");
        }
        assert_eq!(sum_words_prefix(0, &data, 20), sum_words(0, &data));
    }

    #[test]
    fn rfc1071_example() {
        // The example of RFC 1071 section 3: words 0001 f203 f4f5 f6f7.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum_words(0, &data)), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum_words(0, &[0x12]), 0x1200);
        assert_eq!(sum_words(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn a_correct_checksum_sums_to_ffff() {
        // An IPv4 header with its checksum filled in sums to 0xffff.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(fold(sum_words(0, &hdr)), 0xffff);
    }
}
