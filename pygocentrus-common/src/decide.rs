//! What a rule decides for a packet, as pure functions: how its dice are
//! thrown, which fault fires, what its flow limits and loss model say,
//! which delay a packet gets. The kernel program calls these and then acts
//! on the answer; here they have host tests (property tests where they
//! fit), and userspace tests can predict exactly what the kernel decides
//! for a seeded rule.

use crate::{
    Action, CONN_UNPLUGGED, DIST_SCALE, DIST_UNIFORM, FlowKey, GeModel, LIMIT_BYTES, LIMIT_NS, LIMIT_PACKETS,
    PROB_ALWAYS, PROTO_TCP, PROTO_UDP, Rule, TCP_ACK, TCP_RST, TCP_SYN, Threshold,
};

/// The splitmix64 finaliser: a cheap bijective mixer with good avalanche.
#[inline(always)]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hash of a directional 5-tuple.
#[inline(always)]
pub const fn flow_hash(k: &FlowKey) -> u64 {
    let w = k.words();
    let tail = u16::from_be_bytes(k.sport) as u64 | (u16::from_be_bytes(k.dport) as u64) << 16 | (k.proto as u64) << 32;
    let mut h = mix64(tail);
    h = mix64(h ^ w[0]);
    h = mix64(h ^ w[1]);
    h = mix64(h ^ w[2]);
    mix64(h ^ w[3])
}

/// A hash of one end of a connection: its address as two words (each its
/// bytes in memory order) and port.
#[inline(always)]
pub const fn endpoint_hash(addr: [u64; 2], port: [u8; 2]) -> u64 {
    let h = mix64(addr[0] ^ u16::from_be_bytes(port) as u64);
    mix64(h ^ addr[1])
}

/// A hash of a connection that is the same for both of its directions,
/// and whether this packet goes "forward" (its sender has the smaller
/// endpoint hash; a connection from an endpoint to itself is forward both
/// ways).
#[inline(always)]
pub const fn conn_hash(k: &FlowKey) -> (u64, bool) {
    let w = k.words();
    let (s, d) = (endpoint_hash([w[0], w[1]], k.sport), endpoint_hash([w[2], w[3]], k.dport));
    (mix64(s.wrapping_add(d) ^ k.proto as u64), s <= d)
}

/// The draw for one action on the `index`-th packet (counting from 0) of a
/// flow under a seeded rule: a pure function of its inputs.
#[inline(always)]
pub const fn seeded_draw(seed: u64, flow: u64, index: u64, action: Action) -> u32 {
    let a = action as u64;
    (mix64(seed ^ mix64(flow ^ mix64(index ^ (a << 56)))) >> 32) as u32
}

/// The draw for one action of a packet whose one draw from the kernel's
/// PRNG is `random`: the PRNG is called once per packet, and each action
/// gets its own value from it.
#[inline(always)]
pub const fn random_draw(random: u64, action: Action) -> u32 {
    (mix64(random ^ ((action as u64) << 56)) >> 32) as u32
}

/// Whether a draw fires for a threshold.
#[inline(always)]
pub const fn fires(draw: u32, threshold: Threshold) -> bool {
    threshold == PROB_ALWAYS || draw < threshold
}

/// Whether a rule judges a packet by its TCP flags (`--tcp-flags`): every
/// packet if the rule names none, else TCP segments with at least one of
/// `rule.tcp_flags_any` and none of `rule.tcp_flags_clear`.
#[inline(always)]
pub const fn flags_match(rule: &Rule, proto: u8, tcp_flags: u8) -> bool {
    if rule.tcp_flags_any == 0 {
        return true;
    }
    let f = tcp_flags as u32;
    proto == PROTO_TCP && f & rule.tcp_flags_any != 0 && f & rule.tcp_flags_clear == 0
}

/// Whether a TCP segment can be turned into a reset: not an initial SYN
/// (nobody would hear it), not already a reset, not a fragment, and with
/// a header of at most 60 bytes.
#[inline(always)]
pub const fn resettable(proto: u8, tcp_flags: u8, fragment: bool, l4_hlen: usize) -> bool {
    let syn_only = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    proto == PROTO_TCP && !(syn_only || fragment || tcp_flags & TCP_RST != 0 || l4_hlen > 60)
}

/// The payload a payload fault may damage: TCP or UDP with at least one
/// payload byte, not a fragment. Its length, or `None`.
#[inline(always)]
pub const fn payload_len(proto: u8, fragment: bool, l4_len: usize, l4_hlen: usize) -> Option<usize> {
    if (proto != PROTO_TCP && proto != PROTO_UDP) || fragment || l4_len <= l4_hlen {
        return None;
    }
    Some(l4_len - l4_hlen)
}

/// Which payload byte a payload fault damages, counted from the start of
/// the payload (`len` bytes, at least 1), and the bits it flips (never
/// none), from one draw: the offset from its low 24 bits (multiplied, not
/// divided: a division is the slowest instruction there is), the mask from
/// its high 8.
#[inline(always)]
pub const fn payload_pick(draw: u32, len: usize) -> (usize, u8) {
    let at = ((draw & 0x00ff_ffff) as u64 * len as u64) >> 24;
    let mask = (draw >> 24) as u8;
    (at as usize, if mask == 0 { 0xff } else { mask })
}

/// What the flow limits of a rule decide for a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// No limit reached: the dice decide.
    Dice,
    /// Past the reset limit: make this segment the reset.
    Reset,
    /// The reset of this direction was sent: let the segment pass.
    Pass,
    /// The connection is unplugged: drop the packet.
    Unplug,
}

/// Whether a flow limit of kind `kind` (`LIMIT_*`) at `limit` is passed by
/// a direction that carried `bytes` and `packets`, in a connection of
/// `age` ns.
#[inline(always)]
pub const fn past(kind: u32, limit: u64, bytes: u64, packets: u64, age: u64) -> bool {
    match kind {
        LIMIT_BYTES => bytes > limit,
        LIMIT_PACKETS => packets > limit,
        LIMIT_NS => age > limit,
        _ => false,
    }
}

/// Where a direction of a connection stands against a rule's flow limits
/// (`--unplug-after`, `--reset-after`), after counting the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCount {
    /// Payload bytes and packets of this direction, this packet included.
    pub bytes: u64,
    pub packets: u64,
    /// Since the first packet of the connection the rule saw, in ns.
    pub age: u64,
    /// The connection's `CONN_*` flags.
    pub flags: u32,
    /// This direction's `CONN_RESET_*` bit.
    pub reset_bit: u32,
    /// The packet is a TCP reset already.
    pub is_reset: bool,
    /// The packet can carry a reset ([`resettable`]).
    pub resettable: bool,
}

/// The flow limits' decision for a packet, and the connection's flags
/// after it.
///
/// Reset first: a direction past its reset limit has its next TCP segment
/// turned into a reset, and the segments after it pass untouched (the
/// reset peer's kernel answers them with resets, closing the other end
/// too), even when the connection is also unplugged: unplug-after 0 with
/// reset-after T blackholes a connection and resets it after T
/// (Toxiproxy's `timeout`). A segment that cannot carry the reset (an
/// initial SYN, UDP) leaves the later limits to decide. Then unplug: a
/// connection past its unplug limit loses every packet the rule matches
/// from then on.
#[inline(always)]
pub const fn flow_limits(rule: &Rule, n: &FlowCount) -> (Flow, u32) {
    let flags = n.flags;
    if past(rule.reset_kind, rule.reset_after, n.bytes, n.packets, n.age) {
        if flags & n.reset_bit != 0 {
            return (Flow::Pass, flags);
        }
        if n.is_reset {
            // Already a reset: it is this direction's.
            return (Flow::Pass, flags | n.reset_bit);
        }
        if n.resettable {
            return (Flow::Reset, flags | n.reset_bit);
        }
    }
    if flags & CONN_UNPLUGGED != 0 || past(rule.unplug_kind, rule.unplug_after, n.bytes, n.packets, n.age) {
        return (Flow::Unplug, flags | CONN_UNPLUGGED);
    }
    (Flow::Dice, flags)
}

/// The one fault a rule applies to a packet (besides duplicating and
/// scheduling it, which a packet that passes may also get).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No fault: the packet passes, and may be duplicated and scheduled.
    None,
    /// Past its direction's reset: passes as it is, nothing else applied.
    Spared,
    Drop,
    /// Its connection is unplugged: dropped.
    Unplug,
    Reset,
    Corrupt,
    CorruptPayload,
}

/// Which faults a packet can take, beyond drop and corrupt (which any can).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applies {
    /// [`resettable`].
    pub reset: bool,
    /// [`payload_len`] is some.
    pub payload: bool,
}

/// The dice of one rule for one packet, as [`choose`] throws them.
pub trait Dice {
    /// Throws the die of a decision `action` (its threshold is the rule's,
    /// [`Rule::threshold`]).
    fn fires(&self, action: Action) -> bool;
    /// Takes a step of the rule's loss model, if it has one: whether it
    /// loses the packet.
    fn lost(&self) -> bool;
}

/// Chooses the fault: the flow limits' decision if they made one, else
/// the rule's dice in order (drop or the loss model, reset, corrupt,
/// corrupt-payload), the first that fires on a packet it applies to. The
/// loss model steps only when the drop die did not fire (a step moves its
/// state).
#[inline(always)]
pub fn choose(flow: Flow, applies: Applies, dice: &impl Dice) -> Fault {
    match flow {
        Flow::Pass => return Fault::Spared,
        Flow::Unplug => return Fault::Unplug,
        Flow::Reset if applies.reset => return Fault::Reset,
        Flow::Reset | Flow::Dice => {}
    }
    if flow == Flow::Dice && (dice.fires(Action::Drop) || dice.lost()) {
        return Fault::Drop;
    }
    if flow == Flow::Dice && dice.fires(Action::Reset) && applies.reset {
        return Fault::Reset;
    }
    if dice.fires(Action::Corrupt) {
        return Fault::Corrupt;
    }
    if dice.fires(Action::CorruptPayload) && applies.payload {
        return Fault::CorruptPayload;
    }
    Fault::None
}

/// One step of a Gilbert-Elliott chain in state `bad`, netem's order: the
/// `switch` draw may move it between the good and bad states, and the
/// `loss` draw loses the packet with the loss probability of the state it
/// was in before the move. Returns (bad after the step, lost).
#[inline(always)]
pub const fn ge_step(ge: &GeModel, bad: bool, switch: u32, loss: u32) -> (bool, bool) {
    if bad {
        (!fires(switch, ge.r), fires(loss, ge.loss_bad))
    } else {
        (fires(switch, ge.p), fires(loss, ge.loss_good))
    }
}

/// netem's `tabledist`: the rule's mean delay plus jitter drawn from its
/// distribution (uniform within ±jitter, or `table(distribution, draw)`, a
/// standard normal, pareto or paretonormal quantile times [`DIST_SCALE`],
/// scaled by jitter), never below zero. Only unsigned and checked
/// division: older kernels' BPF has no signed one, and a panic path would
/// not pass the verifier.
#[inline(always)]
pub fn pick_delay(rule: &Rule, draw: u32, table: impl FnOnce(u32, u32) -> i64) -> u64 {
    let mu = rule.delay_ns;
    let sigma = rule.jitter_ns;
    if sigma == 0 {
        return mu;
    }
    if rule.distribution == DIST_UNIFORM {
        let offset = u64::from(draw).checked_rem(sigma.wrapping_mul(2)).unwrap_or(0);
        return mu.wrapping_add(offset).saturating_sub(sigma);
    }
    let t = table(rule.distribution, draw);
    // Wrapping, as the kernel program's arithmetic is (it has no overflow
    // checks, and a saturating multiply would need 128-bit helpers BPF has
    // not got): a jitter above 6 days times a table value could wrap.
    let scaled = t.unsigned_abs().wrapping_mul(sigma).wrapping_add(DIST_SCALE as u64 / 2) / DIST_SCALE as u64;
    if t < 0 { mu.saturating_sub(scaled) } else { mu.wrapping_add(scaled) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{CONN_RESET_FWD, DIST_NORMAL, LIMIT_NONE, PROB_NEVER};

    /// Dice whose answers are given: `fired` holds the actions that fire.
    struct Given {
        fired: [bool; 16],
        lost: bool,
    }

    impl Dice for Given {
        fn fires(&self, action: Action) -> bool {
            self.fired[action as usize]
        }
        fn lost(&self) -> bool {
            self.lost
        }
    }

    fn given(drop: bool, reset: bool, corrupt: bool, payload: bool, lost: bool) -> Given {
        let mut fired = [false; 16];
        fired[Action::Drop as usize] = drop;
        fired[Action::Reset as usize] = reset;
        fired[Action::Corrupt as usize] = corrupt;
        fired[Action::CorruptPayload as usize] = payload;
        Given { fired, lost }
    }

    fn flow() -> impl Strategy<Value = Flow> {
        prop_oneof![Just(Flow::Dice), Just(Flow::Reset), Just(Flow::Pass), Just(Flow::Unplug)]
    }

    proptest! {
        #[test]
        fn a_payload_pick_is_inside_the_payload_and_changes_a_bit(draw: u32, len in 1usize..=65_535) {
            let (at, mask) = payload_pick(draw, len);
            prop_assert!(at < len);
            prop_assert_ne!(mask, 0);
        }
    }

    #[test]
    fn payload_picks_reach_every_byte_of_a_short_payload_evenly() {
        // 30 000 draws spread over 3 bytes: each count is binomial with
        // sd = sqrt(30 000 * 1/3 * 2/3) = 82; 6 sd either side.
        let mut hits = [0u32; 3];
        for i in 0..30_000u64 {
            hits[payload_pick(seeded_draw(7, 1, i, Action::PayloadOffset), 3).0] += 1;
        }
        for h in hits {
            assert!((10_000 - 492..=10_000 + 492).contains(&h), "{hits:?}");
        }
    }

    proptest! {
        #[test]
        fn a_fault_is_chosen_only_where_its_die_fired_and_it_applies(
            flow in flow(), drop: bool, reset: bool, corrupt: bool, payload: bool, lost: bool,
            can_reset: bool, can_damage: bool,
        ) {
            let applies = Applies { reset: can_reset, payload: can_damage };
            let fault = choose(flow, applies, &given(drop, reset, corrupt, payload, lost));
            let dropped = flow == Flow::Dice && (drop || lost);
            let damaged = payload && can_damage;
            match fault {
                Fault::Spared => prop_assert_eq!(flow, Flow::Pass),
                Fault::Unplug => prop_assert_eq!(flow, Flow::Unplug),
                Fault::Drop => prop_assert!(dropped),
                Fault::Reset => prop_assert!(can_reset && (flow == Flow::Reset || reset)),
                Fault::Corrupt => prop_assert!(corrupt && !dropped),
                Fault::CorruptPayload => prop_assert!(payload && can_damage && !corrupt),
                Fault::None => prop_assert!(!corrupt && !damaged && !dropped),
            }
            // The order: drop before reset before corrupt before payload.
            if dropped {
                prop_assert_eq!(fault, Fault::Drop);
            } else if can_reset && (flow == Flow::Reset || (flow == Flow::Dice && reset)) {
                prop_assert_eq!(fault, Fault::Reset);
            }
        }

        #[test]
        fn flags_match_wants_one_flag_of_any_and_none_of_clear(any in 0u32..256, clear in 0u32..256, flags: u8, tcp: bool) {
            let rule = Rule { tcp_flags_any: any, tcp_flags_clear: clear, ..Rule::default() };
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let f = u32::from(flags);
            let want = any == 0 || (tcp && f & any != 0 && f & clear == 0);
            prop_assert_eq!(flags_match(&rule, proto, flags), want);
        }

        #[test]
        fn a_limit_once_past_stays_past(kind in 0u32..4, limit: u64, bytes in 0u64..u64::MAX, packets in 0u64..u64::MAX, age in 0u64..u64::MAX) {
            if past(kind, limit, bytes, packets, age) {
                prop_assert!(past(kind, limit, bytes + 1, packets + 1, age + 1));
            }
            prop_assert!(!past(LIMIT_NONE, limit, bytes, packets, age));
        }

        #[test]
        fn flow_limits_reset_once_per_direction_and_unplug_for_good(
            bytes: u64, packets: u64, age: u64, flags in 0u32..8, reset_after: u64, unplug_after: u64,
            reset_kind in 0u32..4, unplug_kind in 0u32..4, is_reset: bool, resettable: bool,
        ) {
            let rule = Rule { reset_kind, reset_after, unplug_kind, unplug_after, ..Rule::default() };
            let n = FlowCount { bytes, packets, age, flags, reset_bit: CONN_RESET_FWD, is_reset, resettable };
            let (flow, after) = flow_limits(&rule, &n);
            // Flags only gain bits.
            prop_assert_eq!(after & flags, flags);
            match flow {
                Flow::Reset => prop_assert!(resettable && flags & CONN_RESET_FWD == 0 && after & CONN_RESET_FWD != 0),
                Flow::Pass => prop_assert!(after & CONN_RESET_FWD != 0),
                Flow::Unplug => prop_assert!(after & CONN_UNPLUGGED != 0),
                Flow::Dice => prop_assert!(flags & CONN_UNPLUGGED == 0 && !past(unplug_kind, unplug_after, bytes, packets, age)),
            }
            if flags & CONN_UNPLUGGED != 0 {
                prop_assert!(flow != Flow::Dice);
            }
        }

        #[test]
        fn a_uniform_delay_lies_within_the_jitter(mu in 0u64..1 << 40, sigma in 1u64..1 << 40, draw: u32) {
            let rule = Rule { delay_ns: mu, jitter_ns: sigma, distribution: DIST_UNIFORM, ..Rule::default() };
            let d = pick_delay(&rule, draw, |_, _| unreachable!("uniform reads no table"));
            prop_assert!(d >= mu.saturating_sub(sigma) && d < mu + sigma, "{} not in {} ± {}", d, mu, sigma);
        }

        #[test]
        fn a_table_delay_is_the_mean_plus_the_scaled_quantile(mu in 0u64..1 << 40, sigma in 1u64..1 << 30, t in -32768i64..32768) {
            let rule = Rule { delay_ns: mu, jitter_ns: sigma, distribution: DIST_NORMAL, ..Rule::default() };
            let d = pick_delay(&rule, 7, |dist, draw| {
                assert_eq!((dist, draw), (DIST_NORMAL, 7));
                t
            });
            let exact = mu as f64 + t as f64 * sigma as f64 / DIST_SCALE as f64;
            // Rounded to the nearest ns, and never below zero.
            prop_assert!((d as f64 - exact.max(0.0)).abs() <= 1.0, "{} against {}", d, exact);
        }

        #[test]
        fn no_jitter_is_the_mean(mu: u64, draw: u32) {
            let rule = Rule { delay_ns: mu, distribution: DIST_NORMAL, ..Rule::default() };
            prop_assert_eq!(pick_delay(&rule, draw, |_, _| unreachable!("no jitter reads no table")), mu);
        }

        #[test]
        fn a_draw_fires_below_its_threshold(draw: u32, t: u32) {
            prop_assert_eq!(fires(draw, t), t == PROB_ALWAYS || draw < t);
        }

        #[test]
        fn resettable_segments(flags: u8, fragment: bool, hlen in 0usize..80, tcp: bool) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let want = tcp && !fragment && hlen <= 60 && flags & TCP_RST == 0 && flags & (TCP_SYN | TCP_ACK) != TCP_SYN;
            prop_assert_eq!(resettable(proto, flags, fragment, hlen), want);
        }

        #[test]
        fn payload_is_what_follows_the_l4_header(len in 0usize..70_000, hlen in 0usize..64, fragment: bool, tcp: bool) {
            let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
            let got = payload_len(proto, fragment, len, hlen);
            prop_assert_eq!(got, (!fragment && len > hlen).then(|| len - hlen));
            prop_assert_eq!(payload_len(1, false, len, hlen), None);
        }
    }

    #[test]
    fn the_loss_model_steps_as_netem_does() {
        let ge = GeModel { p: PROB_ALWAYS, r: PROB_ALWAYS, loss_bad: PROB_ALWAYS, loss_good: PROB_NEVER };
        // Good: turns bad, but the packet is judged by the good state.
        assert_eq!(ge_step(&ge, false, 0, 0), (true, false));
        // Bad: turns good, the packet judged by the bad state.
        assert_eq!(ge_step(&ge, true, 0, 0), (false, true));
        let stay = GeModel { p: PROB_NEVER, r: PROB_NEVER, ..ge };
        assert_eq!(ge_step(&stay, true, 0, 0), (true, true));
        assert_eq!(ge_step(&stay, false, 0, 0), (false, false));
    }

    #[test]
    fn the_loss_model_loses_its_stationary_share() {
        // p = 10%, r = 40%: the chain is bad a fifth of the time; loss 100%
        // in bad, 1% in good: 0.2 + 0.8 * 0.01 = 20.8% of packets. Over
        // 400 000 steps the bad runs (mean length 2.5) give a standard
        // error of about 0.1 percentage point: 1.5 points is over 10 of them.
        let pct = |p: f64| (p * 4_294_967_296.0) as u32;
        let ge = GeModel { p: pct(0.1), r: pct(0.4), loss_bad: PROB_ALWAYS, loss_good: pct(0.01) };
        let (mut bad, mut lost) = (false, 0u32);
        let n = 400_000u64;
        for i in 0..n {
            let (b, l) =
                ge_step(&ge, bad, seeded_draw(1, 2, i, Action::GeTransition), seeded_draw(1, 2, i, Action::GeLoss));
            bad = b;
            lost += u32::from(l);
        }
        let share = f64::from(lost) / n as f64;
        assert!((share - 0.208).abs() < 0.015, "lost {share}");
    }

    #[test]
    fn random_draws_differ_by_action_and_are_uniform_enough() {
        // As for the seeded draws below: 6 sd of a binomial count.
        let t = (0.3 * 4_294_967_296.0) as u32;
        let n = 100_000u64;
        let hits = (0..n).filter(|i| fires(random_draw(mix64(*i) | 1 << 32, Action::Drop), t)).count() as i64;
        assert!((hits - 30_000).abs() < 870, "hits = {hits}");
        // Two actions of one packet are not the same draw.
        let same = (0..n).filter(|i| random_draw(*i, Action::Drop) == random_draw(*i, Action::Reset)).count();
        assert_eq!(same, 0);
    }

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
        let conn = |s, d, sport, dport, proto| conn_hash(&FlowKey::new(s, d, sport, dport, proto));
        let (ab, fwd_ab) = conn(a, b, [0, 80], [200, 1], 6);
        let (ba, fwd_ba) = conn(b, a, [200, 1], [0, 80], 6);
        assert_eq!(ab, ba);
        assert_ne!(fwd_ab, fwd_ba);
        // Another port, another protocol: another connection.
        assert_ne!(ab, conn(a, b, [0, 81], [200, 1], 6).0);
        assert_ne!(ab, conn(a, b, [0, 80], [200, 1], 17).0);
        // Swapping only the ports is another connection too.
        assert_ne!(ab, conn(a, b, [200, 1], [0, 80], 6).0);
    }

    #[test]
    fn the_flow_hash_reads_the_key_as_its_bytes() {
        // The words are the key's bytes in memory order: the hash of a key
        // is what hashing its bytes one by one gives.
        let k = FlowKey::new([7; 16], [9; 16], [1, 2], [3, 4], 17);
        let word = |b: &[u8; 16], half: usize| u64::from_ne_bytes(b[half * 8..half * 8 + 8].try_into().unwrap());
        let tail = u64::from(u16::from_be_bytes(k.sport)) | u64::from(u16::from_be_bytes(k.dport)) << 16 | 17 << 32;
        let mut h = mix64(tail);
        for w in [word(&k.saddr, 0), word(&k.saddr, 1), word(&k.daddr, 0), word(&k.daddr, 1)] {
            h = mix64(h ^ w);
        }
        assert_eq!(flow_hash(&k), h);
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
