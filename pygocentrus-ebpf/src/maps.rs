//! The maps, and the only code that touches them. Their value types live in
//! `pygocentrus-common`, where the loader reads them too.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use pygocentrus_common::{
    ADDR_BITS, Config, ConnState, Counters, DIST_TABLE_SIZE, DIST_TABLES, DistTable, EXACT_COLLIDED, EXACT_FOLDS,
    ExactKey, ExactSlot, MAX_FLOWS, MAX_TARGETS, PORT_BITS, PortMark, RULE_SLOTS, Rule, RuleState, Tally, TargetKey,
    TargetValue,
};

use crate::packet::Packet;

/// (port, address prefix) → the rules of that target.
#[map(name = "TARGETS")]
static TARGETS: LpmTrie<TargetKey, TargetValue> = LpmTrie::with_max_entries(MAX_TARGETS, 0);

/// Rule id → faults.
#[map(name = "RULES")]
static RULES: Array<Rule> = Array::with_max_entries(RULE_SLOTS, 0);

/// [`ExactKey::fold`] → 0 (no target of one address has that fold), the
/// `EXACT_SLOTS` index of the one that has, or `EXACT_COLLIDED`, with
/// [`pygocentrus_common::CONFIG_EXACT`].
#[map(name = "EXACT_INDEX")]
static EXACT_INDEX: Array<u32> = Array::with_max_entries(EXACT_FOLDS, 0);

/// The targets of one address whose fold is theirs alone (slot 0 unused).
#[map(name = "EXACT_SLOTS")]
static EXACT_SLOTS: Array<ExactSlot> = Array::with_max_entries(MAX_TARGETS + 1, 0);

/// The targets of one address whose fold another shares.
#[map(name = "EXACT")]
static EXACT: HashMap<ExactKey, TargetValue> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Host-order port → non-zero if some rule names it (a cheap pre-filter).
#[map(name = "PORTS")]
static PORTS: Array<PortMark> = Array::with_max_entries(65_536, 0);

/// The rules whose target is the endpoint the program is hooked on, with
/// [`pygocentrus_common::CONFIG_ENDPOINT`].
#[map(name = "ENDPOINT")]
static ENDPOINT: Array<TargetValue> = Array::with_max_entries(1, 0);

#[map(name = "CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Rule id → counters (slot 0: the program's totals).
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(RULE_SLOTS, 0);

/// Hash of a directional 5-tuple ([`pygocentrus_common::decide::flow_hash`])
/// → packets seen so far, for seeded decisions. (Keyed by the hash the
/// seeded dice need anyway: 8 bytes to hash in the map instead of 40.)
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn rule(id: u32) -> Option<&'static Rule> {
    RULES.get(id)
}

/// Whether some rule names `port` (network order). Port 0 (no port) never
/// is: portless rules are flagged in the config.
#[inline(always)]
pub fn port_named(port: [u8; 2]) -> bool {
    PORTS.get(u32::from(u16::from_be_bytes(port))).is_some_and(|m| *m != 0)
}

/// Whether some target of one address may be (`addr` as its words in
/// memory order, `port`): its fold's index entry is not 0.
#[inline(always)]
pub fn exact_known(addr: [u32; 4], port: [u8; 2]) -> bool {
    EXACT_INDEX.get(ExactKey::fold_of(addr, port)).is_some_and(|i| *i != 0)
}

/// The exact-target entry for `port` (network order; 0: the portless
/// rules) on `addr`: one array read when there is none (most packets),
/// two and a compare of three words when there is.
#[inline(always)]
pub fn exact(addr: &[u8; 16], port: [u8; 2]) -> Option<&'static TargetValue> {
    let key = ExactKey::new(*addr, port);
    let index = *EXACT_INDEX.get(key.fold())?;
    if index == 0 {
        return None;
    }
    if index == EXACT_COLLIDED {
        // SAFETY: the value outlives the program run; the loader replaces
        // an entry as a whole (the hash map's update is atomic).
        return unsafe { EXACT.get(key) };
    }
    let slot = EXACT_SLOTS.get(index)?;
    let (a, b) = (slot.key.words(), key.words());
    // The loader may rewrite a slot's value meanwhile (a live change of
    // rules), never its key while the index points to it: a value is rule
    // ids, and a torn read at worst picks a rule of the old or the new set.
    if a[0] == b[0] && a[1] == b[1] && a[2] == b[2] { Some(&slot.value) } else { None }
}

/// The trie entry for `port` (network order; 0: the portless rules) on
/// `addr`. Callers ask only for ports [`port_named`] said yes to.
#[inline(always)]
pub fn target(addr: &[u8; 16], port: [u8; 2]) -> Option<&'static TargetValue> {
    let key = Key::new(PORT_BITS + ADDR_BITS, TargetKey { port, addr: *addr });
    TARGETS.get(&key)
}

#[inline(always)]
pub fn endpoint() -> Option<&'static TargetValue> {
    ENDPOINT.get(0)
}

/// Adds a packet's tally to counter slot `slot` (a rule id, or 0 for the
/// program's totals): the only code that writes counters.
#[inline(always)]
pub fn count(slot: u32, tally: Tally) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and TC
        // programs do not preempt each other on one CPU.
        unsafe { (*c).add_tally(tally) };
    }
}

/// Which pass of a packet the program is judging: each has its own
/// scratch slot, since a copy sent by `bpf_clone_redirect` passes the
/// egress hook (on the same CPU) before the helper returns, while the
/// judgement of the packet it was copied from is still under way. The
/// copies are told apart by their mark: an orphan's copy may itself be
/// duplicated, a duplicate is never copied again, so three slots suffice.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Pass {
    /// The packet as it came.
    First = 0,
    /// The copy that replaces a packet a local socket owned.
    Orphan = 1,
    /// A duplicate.
    Duplicate = 2,
}

/// One per CPU and [`Pass`]: the parsed packet, kept off the stack.
#[map(name = "PACKETS")]
static PACKETS: PerCpuArray<Packet> = PerCpuArray::with_max_entries(3, 0);

/// This CPU's scratch [`Packet`] for `pass` (`None` only if the map
/// lookup failed, which it cannot for an index in range).
#[inline(always)]
pub fn packet_slot(pass: Pass) -> Option<&'static mut Packet> {
    // SAFETY: this CPU's own slot for this pass; no other invocation on
    // this CPU uses it while this one runs (see `Pass`).
    PACKETS.get_ptr_mut(pass as u32).map(|p| unsafe { &mut *p })
}

/// What a reset builds before it writes: the TCP header (read whole, for
/// its checksum), kept as 32-bit words (what the checksum sums) and read
/// and written as bytes through [`HeaderScratch::tcp_bytes`], and the IPv4
/// fields it rewrites.
#[repr(C)]
pub struct HeaderScratch {
    pub tcp: [u32; HEADER_SCRATCH / 4],
    pub ip: [u8; 10],
}

impl HeaderScratch {
    #[inline(always)]
    pub fn tcp_bytes(&mut self) -> &mut [u8; HEADER_SCRATCH] {
        // SAFETY: the same HEADER_SCRATCH bytes, of a type with no
        // alignment and every bit pattern valid.
        unsafe { &mut *self.tcp.as_mut_ptr().cast::<[u8; HEADER_SCRATCH]>() }
    }
}

/// One per CPU and [`Pass`]: a reset's [`HeaderScratch`], off the stack.
#[map(name = "HEADERS")]
static HEADERS: PerCpuArray<HeaderScratch> = PerCpuArray::with_max_entries(3, 0);

/// Bytes of [`HeaderScratch::tcp`]: the longest TCP header (60 bytes),
/// rounded up to a power of two so that a mask bounds a copy's length.
pub const HEADER_SCRATCH: usize = 64;

/// This CPU's header scratch for `pass`.
#[inline(always)]
pub fn header_slot(pass: Pass) -> Option<&'static mut HeaderScratch> {
    // SAFETY: as for `packet_slot`.
    HEADERS.get_ptr_mut(pass as u32).map(|p| unsafe { &mut *p })
}

/// Returns how many packets of this flow were seen before this one, and
/// counts this one. Two CPUs racing on one flow may reuse an index; flows
/// normally stay on one CPU, and the cost is one repeated decision.
#[inline(always)]
pub fn next_flow_index(flow: u64) -> u64 {
    match FLOWS.get_ptr_mut(flow) {
        // SAFETY: a valid pointer into the map's value.
        Some(n) => unsafe {
            let index = *n;
            *n = index + 1;
            index
        },
        None => {
            // Fail open: if the LRU cannot take it, every packet is index 0.
            let _ = FLOWS.insert(flow, 1u64, 0);
            0
        }
    }
}

/// Rule id → what the rule remembers between packets (rate, loss model).
#[map(name = "RULE_STATE")]
static RULE_STATE: Array<RuleState> = Array::with_max_entries(RULE_SLOTS, 0);

/// Jitter distribution tables (normal, pareto, paretonormal), filled by
/// the loader.
#[map(name = "DIST")]
static DIST: Array<DistTable> = Array::with_max_entries(DIST_TABLES, 0);

/// Hash of a directional 5-tuple → departure time of its latest packet, for
/// rules that keep the order of a flow.
#[map(name = "ORDER")]
static ORDER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[inline(always)]
pub fn rule_state(id: u32) -> Option<&'static mut RuleState> {
    // SAFETY: the array outlives the program; concurrent writers race
    // benignly (see `RuleState`).
    RULE_STATE.get_ptr_mut(id).map(|p| unsafe { &mut *p })
}

/// Entry `index` (masked into range) of distribution table `dist` (1-based,
/// as `DIST_*`), or 0 if the loader did not fill it.
#[inline(always)]
pub fn dist_value(dist: u32, index: u32) -> i64 {
    match DIST.get(dist.wrapping_sub(1)) {
        Some(t) => i64::from(t.values[index as usize & (DIST_TABLE_SIZE - 1)]),
        None => 0,
    }
}

/// Makes `departure` no earlier than the previous packet of the flow and
/// remembers it.
#[inline(always)]
pub fn in_flow_order(flow: u64, departure: u64) -> u64 {
    match ORDER.get_ptr_mut(flow) {
        // SAFETY: a valid pointer into the map's value.
        Some(last) => unsafe {
            let t = if *last > departure { *last } else { departure };
            *last = t;
            t
        },
        None => {
            // Fail open: without a slot the packet keeps its own time.
            let _ = ORDER.insert(flow, departure, 0);
            departure
        }
    }
}

/// Hash of (connection, rule), the same both ways → what the rule's flow
/// limits count of that connection (`--unplug-after`, `--reset-after`).
#[map(name = "CONNS")]
static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// One per CPU: where a new [`ConnState`] is built before it is copied
/// into `CONNS`, so that it takes no room on the 512-byte stack.
#[map(name = "CONN_SCRATCH")]
static CONN_SCRATCH: PerCpuArray<ConnState> = PerCpuArray::with_max_entries(1, 0);

/// The state of connection `key`, created (started at `now`) if absent.
/// `None` if the LRU can take no entry: the limits then do not apply
/// (fail open).
#[inline(always)]
pub fn conn_state(key: u64, now: u64) -> Option<&'static mut ConnState> {
    if let Some(p) = CONNS.get_ptr_mut(key) {
        // SAFETY: a valid pointer into the map's value; CPUs racing on one
        // connection may lose a count, which only moves a limit by a packet.
        return Some(unsafe { &mut *p });
    }
    let fresh = CONN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's own slot. Only `start_ns` is ever written: the
    // other fields keep the zeros the array starts with (zeroing them here
    // would compile to a `memset` call, which the verifier refuses).
    let fresh: &ConnState = unsafe {
        (*fresh).start_ns = now;
        &*fresh
    };
    // Copied from the scratch slot by the kernel (a reference, not a value:
    // a value would be copied onto the stack first).
    CONNS.insert(key, fresh, 0).ok()?;
    // SAFETY: as above.
    CONNS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
}
