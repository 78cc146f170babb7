//! How a rule's dice are thrown. Shared so that userspace tests can predict
//! exactly what the kernel decides for a seeded rule.

use crate::{Action, FlowKey, PROB_ALWAYS, Threshold};

/// The splitmix64 finaliser: a cheap bijective mixer with good avalanche.
#[inline(always)]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[inline(always)]
fn word(b: &[u8; 16], half: usize) -> u64 {
    let o = half * 8;
    u64::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5], b[o + 6], b[o + 7]])
}

/// A hash of a directional 5-tuple.
#[inline(always)]
pub fn flow_hash(k: &FlowKey) -> u64 {
    let tail = u64::from(u16::from_be_bytes(k.sport))
        | (u64::from(u16::from_be_bytes(k.dport)) << 16)
        | (u64::from(k.proto) << 32);
    let mut h = mix64(tail);
    h = mix64(h ^ word(&k.saddr, 0));
    h = mix64(h ^ word(&k.saddr, 1));
    h = mix64(h ^ word(&k.daddr, 0));
    mix64(h ^ word(&k.daddr, 1))
}

/// A hash of one end of a connection: address and port.
#[inline(always)]
pub fn endpoint_hash(addr: &[u8; 16], port: [u8; 2]) -> u64 {
    let h = mix64(word(addr, 0) ^ u64::from(u16::from_be_bytes(port)));
    mix64(h ^ word(addr, 1))
}

/// A hash of a connection that is the same for both of its directions,
/// and whether this packet goes "forward" (its sender has the smaller
/// endpoint hash; a connection from an endpoint to itself is forward both
/// ways).
#[inline(always)]
pub fn conn_hash(saddr: &[u8; 16], daddr: &[u8; 16], sport: [u8; 2], dport: [u8; 2], proto: u8) -> (u64, bool) {
    let (s, d) = (endpoint_hash(saddr, sport), endpoint_hash(daddr, dport));
    (mix64(s.wrapping_add(d) ^ u64::from(proto)), s <= d)
}

/// The draw for one action on the `index`-th packet (counting from 0) of a
/// flow under a seeded rule: a pure function of its inputs.
#[inline(always)]
pub const fn seeded_draw(seed: u64, flow: u64, index: u64, action: Action) -> u32 {
    let a = action as u64;
    (mix64(seed ^ mix64(flow ^ mix64(index ^ (a << 56)))) >> 32) as u32
}

/// Whether a draw fires for a threshold.
#[inline(always)]
pub const fn fires(draw: u32, threshold: Threshold) -> bool {
    threshold == PROB_ALWAYS || draw < threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROB_NEVER;

    #[test]
    fn never_and_always() {
        for d in [0, 1, u32::MAX / 2, u32::MAX] {
            assert!(!fires(d, PROB_NEVER));
            assert!(fires(d, PROB_ALWAYS));
        }
    }

    #[test]
    fn seeded_draws_are_reproducible_and_depend_on_every_input() {
        let a = seeded_draw(1, 2, 3, Action::Drop);
        assert_eq!(a, seeded_draw(1, 2, 3, Action::Drop));
        assert_ne!(a, seeded_draw(9, 2, 3, Action::Drop));
        assert_ne!(a, seeded_draw(1, 9, 3, Action::Drop));
        assert_ne!(a, seeded_draw(1, 2, 9, Action::Drop));
        assert_ne!(a, seeded_draw(1, 2, 3, Action::Reset));
    }

    #[test]
    fn both_directions_of_a_connection_hash_the_same() {
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let (ab, fwd_ab) = conn_hash(&a, &b, [0, 80], [200, 1], 6);
        let (ba, fwd_ba) = conn_hash(&b, &a, [200, 1], [0, 80], 6);
        assert_eq!(ab, ba);
        assert_ne!(fwd_ab, fwd_ba);
        // Another port, another protocol: another connection.
        assert_ne!(ab, conn_hash(&a, &b, [0, 81], [200, 1], 6).0);
        assert_ne!(ab, conn_hash(&a, &b, [0, 80], [200, 1], 17).0);
        // Swapping only the ports is another connection too.
        assert_ne!(ab, conn_hash(&a, &b, [200, 1], [0, 80], 6).0);
    }

    #[test]
    fn seeded_draws_are_uniform_enough() {
        // 100 000 draws against a 30% threshold: the count is binomial with
        // sd = sqrt(n p (1-p)) = 145; 6 sd = 870 makes a false alarm
        // practically impossible while catching any biased mixer.
        let t = (0.3 * 4_294_967_296.0) as u32;
        let n = 100_000u64;
        let hits = (0..n).filter(|i| fires(seeded_draw(42, 7, *i, Action::Drop), t)).count() as i64;
        assert!((hits - 30_000).abs() < 870, "hits = {hits}");
    }
}
