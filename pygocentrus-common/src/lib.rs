//! The values pygocentrus keeps in its BPF maps, shared by the kernel program
//! (`pygocentrus-ebpf`) and the loader (`pygocentrus-userspace`).
//!
//! Every struct here is `#[repr(C)]` with explicit padding and no `bool`s, so
//! both sides agree on the bytes. Byte order is stated on every field that is
//! not plain host order.
//!
//! The path of a fault: userspace builds [`Rule`]s and [`TargetKey`]s from the
//! command line, the kernel program looks the packet's addresses up in the
//! `TARGETS` trie, reads the [`Rule`] the entry names, draws its dice and
//! counts what it did in [`Counters`].
#![cfg_attr(not(test), no_std)]

pub mod counters;
pub mod csum;
pub mod decide;
pub mod faults;

pub use counters::{COUNTER_KINDS, Counter, Counters, Tally};
pub use faults::{ACTION_SLOTS, Action, Effect, PERCENT_FAULTS, PercentFault};

/// Name of the ingress classifier in the object file.
pub const PROG_INGRESS: &str = "pyg_ingress";
/// Name of the egress classifier in the object file.
pub const PROG_EGRESS: &str = "pyg_egress";

/// Map names (the loader looks them up by these).
pub const MAP_TARGETS: &str = "TARGETS";
pub const MAP_RULES: &str = "RULES";
pub const MAP_PORTS: &str = "PORTS";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_FLOWS: &str = "FLOWS";
pub const MAP_RULE_STATE: &str = "RULE_STATE";
pub const MAP_DIST: &str = "DIST";
pub const MAP_ORDER: &str = "ORDER";
pub const MAP_ENDPOINT: &str = "ENDPOINT";
pub const MAP_CONNS: &str = "CONNS";
pub const MAP_EXACT: &str = "EXACT";
pub const MAP_EXACT_INDEX: &str = "EXACT_INDEX";
pub const MAP_EXACT_SLOTS: &str = "EXACT_SLOTS";

/// Rules are numbered `1..=MAX_RULES`; 0 means "no rule" in a [`TargetValue`].
/// Counter slot 0 holds the totals of the program itself.
pub const MAX_RULES: u32 = 16_383;
/// Size of the rule and counter arrays (slot 0 is reserved).
pub const RULE_SLOTS: u32 = MAX_RULES + 1;
/// Size of the target trie.
pub const MAX_TARGETS: u32 = 16_384;
/// Size of the LRU flow table used for reproducible (`--seed`) decisions.
pub const MAX_FLOWS: u32 = 65_536;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Which protocol column of a [`TargetValue`] a packet uses.
pub const CLASS_TCP: usize = 0;
pub const CLASS_UDP: usize = 1;
pub const CLASS_OTHER: usize = 2;
pub const CLASSES: usize = 3;

/// Which side of the packet matched the target: its destination ("to the
/// target") or its source ("from the target").
pub const SIDE_TO: usize = 0;
pub const SIDE_FROM: usize = 1;
pub const SIDES: usize = 2;

/// Bits of address data in a [`TargetKey`] after the port.
pub const ADDR_BITS: u32 = 128;
/// Bits of port data at the start of a [`TargetKey`].
pub const PORT_BITS: u32 = 16;

/// The data part of an LPM trie key: the port, then the address.
///
/// The trie matches the longest prefix of `port ++ addr`, so a key with
/// prefix length `16 + n` matches one port and the first `n` bits of the
/// address, and a key with prefix length 16 and an all-zero address matches
/// one port on every address. Rules without a port are stored under port 0,
/// which the kernel looks up as a second chance.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so an IPv4
/// `/n` is a prefix of `96 + n` address bits and never matches IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// Port in network byte order; 0 = rule without a port.
    pub port: [u8; 2],
    /// Address in network byte order (IPv4-mapped for IPv4).
    pub addr: [u8; 16],
}

/// What the trie entry for a target holds: the rule to apply for each
/// (side, protocol class), indexed `side * CLASSES + class`; 0 = none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetValue {
    pub rules: [u32; SIDES * CLASSES],
}

impl TargetValue {
    pub const fn index(side: usize, class: usize) -> usize {
        side * CLASSES + class
    }
}

/// A probability as a fixed-point threshold: a fault fires when a uniform
/// 32-bit draw is below the threshold, `p = threshold / 2^32`.
/// [`PROB_ALWAYS`] fires on every packet (the draw cannot reach 2^32).
pub type Threshold = u32;
pub const PROB_NEVER: Threshold = 0;
pub const PROB_ALWAYS: Threshold = u32::MAX;

/// Rule flag: decisions come from `hash(seed, flow, packet index)` instead
/// of the kernel's PRNG, so the same traffic gets the same faults.
pub const RULE_SEEDED: u32 = 1;
/// Rule flag: the Gilbert-Elliott loss model in [`Rule::ge`] is on.
pub const RULE_GE: u32 = 2;
/// Rule flag: a packet never leaves before an earlier packet of its flow
/// (jitter then stretches gaps instead of reordering).
pub const RULE_KEEP_ORDER: u32 = 4;
/// Rule flag: each probability (the faults of [`PERCENT_FAULTS`], the
/// delay's share) is drawn once per connection instead of once per
/// packet: a hash of (seed, connection, action), where the connection
/// hash is the same in both directions ([`decide::conn_hash`]). A
/// connection then gets all of a fault's packets or none (Toxiproxy's
/// `toxicity`). The "how" draws (payload byte, jitter, loss model) stay
/// per packet.
pub const RULE_PER_CONNECTION: u32 = 8;

/// What a flow limit ([`Rule::unplug_after`], [`Rule::reset_after`])
/// counts. Bytes are L4 payload bytes (IP payload minus the TCP/UDP
/// header: what the applications exchange), packets are IP packets; both
/// are counted per direction of the connection, over the packets the rule
/// matched (retransmissions count again). Time runs from the first packet
/// of the connection the rule saw, in either direction.
pub const LIMIT_NONE: u32 = 0;
pub const LIMIT_BYTES: u32 = 1;
pub const LIMIT_PACKETS: u32 = 2;
pub const LIMIT_NS: u32 = 3;

/// TCP flag bits as they sit in byte 13 of the header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// Jitter distributions (netem's four). All but uniform read a table of
/// [`DIST_TABLE_SIZE`] values from the `DIST` map, at index `distribution - 1`.
pub const DIST_UNIFORM: u32 = 0;
pub const DIST_NORMAL: u32 = 1;
pub const DIST_PARETO: u32 = 2;
pub const DIST_PARETONORMAL: u32 = 3;
/// Number of tables in the `DIST` map.
pub const DIST_TABLES: u32 = 3;
/// Entries per distribution table (a power of two: the kernel masks).
pub const DIST_TABLE_SIZE: usize = 4096;
/// Table values are standard deviations times this (netem's scale).
pub const DIST_SCALE: i64 = 8192;

/// One jitter distribution: quantiles of a zero-mean, unit-deviation
/// distribution at evenly spaced probabilities, times [`DIST_SCALE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DistTable {
    pub values: [i16; DIST_TABLE_SIZE],
}

/// The Gilbert-Elliott burst loss model, with netem's parameter meaning:
/// in the good state a packet is lost with probability `1-k` and the state
/// turns bad with probability `p`; in the bad state a packet is lost with
/// probability `1-h` and the state turns good with probability `r`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeModel {
    pub p: Threshold,
    pub r: Threshold,
    pub loss_bad: Threshold,
    pub loss_good: Threshold,
}

/// The faults of one rule. Actions are tried in the order drop (and the
/// loss model), reset, corrupt, corrupt-payload; the first that fires
/// decides what happens to the packet. A packet that survives them may
/// still be duplicated and is then scheduled (rate, delay).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The probability of each decision, at its [`Action`]'s number
    /// ([`Rule::threshold`]): the faults given as a percentage
    /// ([`PERCENT_FAULTS`]), and the shares the delay (`Delay`: of matched
    /// packets) and the FIN delay (`FinDelay`: of FIN segments) apply to;
    /// with [`RULE_PER_CONNECTION`] each is a share of connections, and
    /// `Limit` and `Rate` are the shares of connections the flow limits
    /// and the rate apply to ([`PROB_ALWAYS`] without that flag).
    pub thresholds: [Threshold; ACTION_SLOTS],
    /// `RULE_*` bits.
    pub flags: u32,
    /// `DIST_*`.
    pub distribution: u32,
    /// Seed for reproducible decisions (host order), used with [`RULE_SEEDED`].
    pub seed: u64,
    /// Mean added delay in nanoseconds (0: none).
    pub delay_ns: u64,
    /// Jitter in nanoseconds: the half-width for uniform, the standard
    /// deviation for the table distributions.
    pub jitter_ns: u64,
    /// Rate limit in bytes per second (0: none).
    pub rate_bytes: u64,
    pub ge: GeModel,
    /// "Cable unplug": once a connection passes this limit (its kind in
    /// `unplug_kind`, a `LIMIT_*`), every later packet of it the rule
    /// matches, both directions, is dropped. Bytes, packets or ns.
    pub unplug_after: u64,
    /// Once a direction of a connection passes this limit (kind in
    /// `reset_kind`), its next TCP segment becomes a reset; the segments of
    /// that direction after the reset pass, so that the reset peer's kernel
    /// answers them with resets of its own and both ends close.
    pub reset_after: u64,
    pub unplug_kind: u32,
    pub reset_kind: u32,
    /// With a non-zero `tcp_flags_any`, the rule judges only TCP segments
    /// carrying at least one of these flags (`TCP_*` bits) and none of
    /// `tcp_flags_clear`; other packets pass uncounted but for `seen`.
    pub tcp_flags_any: u32,
    pub tcp_flags_clear: u32,
    /// "Slow close": a TCP segment carrying FIN leaves this much later
    /// (Toxiproxy's `slow_close`). 0: none.
    pub fin_delay_ns: u64,
}

// The thresholds and two 4-byte fields, then 8-byte fields, and the other
// 4-byte ones in pairs: no implicit padding for the kernel program and
// userspace to read differently.
const _: () = assert!(size_of::<Rule>() == 160);

impl Rule {
    /// The probability of an action that is a decision (whether a fault
    /// applies); [`PROB_NEVER`] for the draws that only pick a value.
    /// Masked: an index the kernel program's verifier can always bound.
    #[inline(always)]
    pub const fn threshold(&self, action: Action) -> Threshold {
        self.thresholds[action as usize & (ACTION_SLOTS - 1)]
    }

    /// Sets the probability of `action`.
    pub const fn set_threshold(&mut self, action: Action, threshold: Threshold) {
        self.thresholds[action as usize & (ACTION_SLOTS - 1)] = threshold;
    }

    /// Whether the rule sets departure times: those need the `fq` qdisc.
    pub const fn schedules(&self) -> bool {
        ((self.delay_ns != 0 || self.jitter_ns != 0) && self.threshold(Action::Delay) != PROB_NEVER)
            || (self.rate_bytes != 0 && self.threshold(Action::Rate) != PROB_NEVER)
            || (self.fin_delay_ns != 0 && self.threshold(Action::FinDelay) != PROB_NEVER)
    }

    /// Whether the rule keeps per-connection state in the `CONNS` map.
    pub const fn limits_flows(&self) -> bool {
        self.unplug_kind != LIMIT_NONE || self.reset_kind != LIMIT_NONE
    }
}

/// Value of the `CONNS` LRU map, keyed by a hash of (connection, rule)
/// that is the same in both directions. "Forward" is the direction whose
/// sender has the smaller endpoint hash ([`decide::conn_hash`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Monotonic ns of the first packet the rule saw.
    pub start_ns: u64,
    pub bytes_fwd: u64,
    pub bytes_rev: u64,
    pub packets_fwd: u64,
    pub packets_rev: u64,
    /// `CONN_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// [`ConnState`] flag: the connection is unplugged.
pub const CONN_UNPLUGGED: u32 = 1;
/// [`ConnState`] flags: the reset of that direction was sent.
pub const CONN_RESET_FWD: u32 = 2;
pub const CONN_RESET_REV: u32 = 4;

/// What a rule remembers between packets (one, shared by all CPUs; the
/// kernel updates it without a lock: two CPUs racing may each take the
/// same slot of the rate, as in Cilium's EDT bandwidth manager).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleState {
    /// Earliest departure (monotonic ns) of the next packet under the rate.
    pub next_departure: u64,
    /// 1 while the loss model is in its bad state.
    pub ge_bad: u32,
    pub _pad: u32,
}

/// `skb->mark` bit carried by a duplicate while it passes the egress hook a
/// second time, so that it is not judged (or duplicated) again. Cleared
/// before the packet leaves.
pub const MARK_DUPLICATE: u32 = 0x0100_0000;

/// `skb->mark` bit carried by the copy that replaces a packet still charged
/// to its sending socket (see `orphan` in the eBPF program) while it passes
/// the egress hook a second time: it is judged as the packet, but not
/// counted again among the packets the classifier saw. Cleared before the
/// packet leaves.
pub const MARK_ORPHAN: u32 = 0x0200_0000;

/// Config flag: the program is attached to the ports of a bridge. Packets
/// entering a port that are not addressed to the bridge itself are left to
/// the egress hook of the port they leave by, so that each packet is judged
/// exactly once per direction.
pub const CONFIG_BRIDGE: u32 = 1;
/// Config flag: at least one rule has no port, so the kernel must look up
/// port 0 as well.
pub const CONFIG_PORTLESS: u32 = 2;
/// Config flag: the program sits on the host ends of the veths of one
/// endpoint (a container, a network namespace), so what enters the host at
/// its ingress hook comes from the endpoint and what leaves by its egress
/// hook goes to it; each packet passes one hook once. The single entry of
/// the `ENDPOINT` array holds the rules whose target is the endpoint itself
/// (sides by hook: egress is "to", ingress "from"), tried after the trie.
/// Never set together with [`CONFIG_BRIDGE`].
pub const CONFIG_ENDPOINT: u32 = 4;
/// Config flag: the targets of full length (one address, `/32` or `/128`,
/// with a port or portless) are in the exact-target table, not the
/// `TARGETS` trie: `EXACT_INDEX[exact_fold(address, port)]` is 0 (no such
/// target: one array read for most packets), the index of the slot in
/// `EXACT_SLOTS` that holds the target's [`ExactKey`] and [`TargetValue`]
/// (compared, then used: two array reads), or [`EXACT_COLLIDED`] (more
/// than one target has that fold: they are in the `EXACT` hash map).
/// Without this flag every target is in the trie.
pub const CONFIG_EXACT: u32 = 8;
/// Config flag: some target is a prefix shorter than one address, in the
/// `TARGETS` trie, which is searched after the exact table (with
/// [`CONFIG_EXACT`]; without it the trie holds every target).
pub const CONFIG_PREFIXES: u32 = 16;

/// A target of one address (IPv4-mapped for IPv4, network order) and port
/// (network order; 0: the portless rules): what an exact-table slot holds
/// and the key of the `EXACT` hash map. Aligned, with its padding as zeroed
/// scalar fields, so that the kernel builds and compares it in words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExactKey {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub _pad0: u16,
    pub _pad1: u32,
}

impl ExactKey {
    #[inline(always)]
    pub const fn new(addr: [u8; 16], port: [u8; 2]) -> Self {
        Self { addr, port, _pad0: 0, _pad1: 0 }
    }

    /// The key as three words: what the kernel compares.
    #[inline(always)]
    pub const fn words(&self) -> &[u64; 3] {
        // SAFETY: `ExactKey` is #[repr(C, align(8))], 24 bytes of integers
        // with no implicit padding: a valid, aligned [u64; 3].
        unsafe { &*(self as *const Self).cast::<[u64; 3]>() }
    }

    /// The key's slot in `EXACT_INDEX` ([`exact_fold`]).
    #[inline(always)]
    pub const fn fold(&self) -> u32 {
        let w = self.words();
        exact_fold(w[0], w[1], w[2])
    }

    /// The fold of the key of `addr`, given as its four 32-bit words in
    /// memory order (as the kernel program reads them from a packet), and
    /// `port`, without building the key.
    #[inline(always)]
    pub const fn fold_of(addr: [u32; 4], port: [u8; 2]) -> u32 {
        const fn join(first: u32, second: u32) -> u64 {
            if cfg!(target_endian = "little") {
                first as u64 | (second as u64) << 32
            } else {
                (first as u64) << 32 | second as u64
            }
        }
        let port = u16::from_ne_bytes(port) as u64;
        let port = if cfg!(target_endian = "little") { port } else { port << 48 };
        exact_fold(join(addr[0], addr[1]), join(addr[2], addr[3]), port)
    }
}

/// Entries of the `EXACT_INDEX` array: one per value of [`exact_fold`]
/// (1 MiB of u32s): with n targets a given one shares its fold with
/// another with probability about n / 2^18, 0.4% at 1 000.
pub const EXACT_FOLDS: u32 = 1 << 18;
/// An `EXACT_INDEX` entry whose fold more than one target shares: look the
/// key up in the `EXACT` hash map.
pub const EXACT_COLLIDED: u32 = u32::MAX;

/// An 18-bit fold of an [`ExactKey`] given as its three words (address
/// halves, then the port word): its entry in `EXACT_INDEX`. The last two
/// bytes of the address (the host part of most subnets) enter as they are,
/// the rest of the address and the port through a multiplicative hash: the
/// targets of a /16 on one port never share a fold, and those on other
/// ports or in other subnets rarely.
#[inline(always)]
pub const fn exact_fold(hi: u64, lo: u64, port: u64) -> u32 {
    // Little-endian: the low 16 bits of `host` are bytes 14-15 (xor 8-9,
    // which an IPv4-mapped address has zero), and `lo << 16` leaves them out
    // of the hash. (A big-endian host folds other bytes: as well spread.)
    let host = lo ^ (lo >> 48);
    let rest = (hi.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (lo << 16) ^ port).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (((host & 0xffff) ^ (rest >> 46)) & (EXACT_FOLDS as u64 - 1)) as u32
}

/// An `EXACT_SLOTS` entry: a target of one address and what it leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExactSlot {
    pub key: ExactKey,
    pub value: TargetValue,
}

/// Global settings, in the single slot of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `CONFIG_*` bits.
    pub flags: u32,
    /// MAC address of the bridge (wire order), with [`CONFIG_BRIDGE`].
    pub bridge_mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Value of the `PORTS` array (indexed by host-order port): non-zero when a
/// rule names that port. It lets a packet that matches no port leave after
/// two array reads instead of trie lookups.
pub type PortMark = u8;

/// Key of the `FLOWS` LRU map: a directional 5-tuple. Aligned to 8 bytes
/// (its size is a multiple of 8 already) so that the kernel program copies
/// addresses in words instead of calling `memcpy`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Ports in network byte order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    /// Padding as scalar fields: a `[u8; 3]` zeroed by an array literal
    /// compiles to a `memset` call on BPF, and each call is a stack frame
    /// the 512-byte limit counts (Linux 6.1 rounds frames to 32 bytes).
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FlowKey {
    #[inline(always)]
    pub const fn new(saddr: [u8; 16], daddr: [u8; 16], sport: [u8; 2], dport: [u8; 2], proto: u8) -> Self {
        Self { saddr, daddr, sport, dport, proto, _pad0: 0, _pad1: 0 }
    }

    /// The key as five words, each as its bytes in memory order: the
    /// addresses' halves (`saddr` first), then ports, protocol and padding.
    /// What the hashes and checksums read: five aligned loads, where the
    /// bytes one by one would be forty loads on BPF.
    #[inline(always)]
    pub const fn words(&self) -> &[u64; 5] {
        // SAFETY: `FlowKey` is #[repr(C, align(8))], 40 bytes of integers
        // and byte arrays with no implicit padding: a valid, aligned
        // [u64; 5].
        unsafe { &*(self as *const Self).cast::<[u64; 5]>() }
    }
}

#[cfg(feature = "user")]
mod pod {
    /// `aya::Pod` for map values and keys.
    macro_rules! pod {
        ($($t:ident),+) => {$(
            // SAFETY: #[repr(C)], made only of integers and byte arrays,
            // with its padding spelled out as fields: every bit pattern is
            // a value, and no byte is uninitialised.
            unsafe impl aya::Pod for super::$t {}
        )+};
    }

    pod!(TargetKey, TargetValue, Rule, Counters, Config, FlowKey, DistTable, RuleState, ConnState, ExactKey, ExactSlot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fold_of_a_key_keeps_neighbours_and_ports_apart() {
        let v4 = |d: u8| [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, d];
        let v4_16 = |i: u16| {
            let [c, d] = i.to_be_bytes();
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, c, d]
        };
        let folds: std::collections::BTreeSet<u32> =
            (0..=255).flat_map(|d| [0u16, 80, 443].map(|p| ExactKey::new(v4(d), p.to_be_bytes()).fold())).collect();
        assert_eq!(folds.len(), 256 * 3, "a /24 on three ports collides");
        // A /16 on one port never does.
        let one_port: std::collections::BTreeSet<u32> =
            (0..=u16::MAX).map(|i| ExactKey::new(v4_16(i), [0, 80]).fold()).collect();
        assert_eq!(one_port.len(), 65_536);
        assert!(folds.iter().all(|f| *f < EXACT_FOLDS));
        let k = ExactKey::new(v4(2), [0, 80]);
        assert_eq!(k.words()[2] & 0xffff, u64::from(u16::from_ne_bytes([0, 80])));
        // From the address's words, as the kernel reads them.
        let a = v4(2);
        let words = [0, 1, 2, 3].map(|i| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]));
        assert_eq!(ExactKey::fold_of(words, [0, 80]), k.fold());
    }
}
