//! Internet checksum arithmetic (RFC 1071), in the form the kernel program
//! needs to rebuild a TCP checksum from scratch, and the tests need to check
//! one.

use crate::FlowKey;

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

// Sums in memory order. RFC 1071 (2.B): the one's complement sum of
// 16-bit words read in either byte order is the sum in the other, its two
// bytes swapped. Summing the words as the machine reads them from memory
// therefore needs no byte swaps, and 32-bit words serve as well as 16-bit
// ones: the folded result, stored as the machine stores a u16, is the
// checksum's bytes. What the kernel program sums this way takes a load
// and an add per four bytes where byte-wise sums take six instructions
// per two.

/// Folds a memory-order sum to 16 bits ([`fold`] for 64-bit sums).
#[inline(always)]
pub const fn fold_ne(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// A 16-bit field given as its (network-order) value, as a memory-order
/// term of a sum.
#[inline(always)]
pub const fn ne16(value: u16) -> u64 {
    u16::from_ne_bytes(value.to_be_bytes()) as u64
}

/// The pseudo-header's memory-order sum without its length field: the
/// key's addresses (the IPv4 address alone of an IPv4-mapped one) and
/// `proto`. The length is added as [`ne16`] terms.
#[inline(always)]
pub const fn pseudo_ne(key: &FlowKey, ipv6: bool, proto: u8) -> u64 {
    let w = key.words();
    let addrs = if ipv6 {
        halves(w[0]) + halves(w[1]) + halves(w[2]) + halves(w[3])
    } else {
        // Address bytes 12..16: the second half of the second word.
        if cfg!(target_endian = "little") {
            (w[1] >> 32) + (w[3] >> 32)
        } else {
            (w[1] & 0xffff_ffff) + (w[3] & 0xffff_ffff)
        }
    };
    addrs + ne16(proto as u16)
}

/// A 64-bit word's two 32-bit halves, added.
#[inline(always)]
const fn halves(word: u64) -> u64 {
    (word & 0xffff_ffff) + (word >> 32)
}

/// `acc` plus the first `n` of `words` (memory order), by a loop whose
/// bound is the array's length (what a BPF verifier can follow).
#[inline(always)]
pub const fn sum_ne_words<const N: usize>(mut acc: u64, words: &[u32; N], n: usize) -> u64 {
    let mut i = 0;
    while i < N {
        if i < n {
            acc += words[i] as u64;
        }
        i += 1;
    }
    acc
}

/// The checksum `csum` (as stored, the complement of the sum) after a
/// 16-bit word of what it covers changes from `old` to `new` (RFC 1624,
/// equation 3: HC' = ~(~HC + ~m + m')). Words in either byte order, the
/// same for all three.
#[inline(always)]
pub const fn replace16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(!csum as u32 + !old as u32 + new as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_order_sum_is_the_network_order_sum() {
        // A TCP header of 24 bytes between two IPv6 and two IPv4 addresses.
        let hdr: [u8; 24] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let words: [u32; 15] = core::array::from_fn(|i| match hdr.get(i * 4..i * 4 + 4) {
            Some(b) => u32::from_ne_bytes(b.try_into().unwrap()),
            None => 0xdead_beef,
        });
        let v6 =
            FlowKey::new([0xfd, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xfe, 0xff], [0xfd; 16], [0; 2], [0; 2], 6);
        let mut v4 = FlowKey::new([0; 16], [0; 16], [0; 2], [0; 2], 6);
        v4.saddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 1]);
        v4.daddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 0, 2]);
        for (key, ipv6, addr) in [(v6, true, 0..16), (v4, false, 12..16)] {
            let pseudo = pseudo_sum(&key.saddr[addr.clone()], &key.daddr[addr], 6, 24);
            let expected = !fold(sum_words(pseudo, &hdr));
            let sum = sum_ne_words(pseudo_ne(&key, ipv6, 6) + ne16(24), &words, 6);
            assert_eq!(u16::from_ne_bytes((!fold_ne(sum)).to_ne_bytes()), u16::from_ne_bytes(expected.to_be_bytes()));
        }
    }

    #[test]
    fn an_incremental_update_is_the_checksum_computed_again() {
        let mut data = [0x45u8, 0, 0, 60, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
        let csum = !fold(sum_words(0, &data));
        let old = u16::from_be_bytes([data[2], data[3]]);
        data[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(replace16(csum, old, 40), !fold(sum_words(0, &data)));
        // In memory order too (how the kernel program reads the words).
        let ne = |v: u16| u16::from_ne_bytes(v.to_be_bytes());
        assert_eq!(ne(replace16(ne(csum), ne(old), ne(40))), replace16(csum, old, 40));
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
