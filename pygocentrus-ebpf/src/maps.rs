//! The maps, and the only code that touches them. Their value types live in
//! `pygocentrus-common`, where the loader reads them too.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
};
use pygocentrus_common::{
    ADDR_BITS, Config, Counters, FlowKey, MAX_FLOWS, MAX_TARGETS, PORT_BITS, PortMark, RULE_SLOTS, Rule, TargetKey,
    TargetValue,
};

/// (port, address prefix) → the rules of that target.
#[map(name = "TARGETS")]
static TARGETS: LpmTrie<TargetKey, TargetValue> = LpmTrie::with_max_entries(MAX_TARGETS, 0);

/// Rule id → faults.
#[map(name = "RULES")]
static RULES: Array<Rule> = Array::with_max_entries(RULE_SLOTS, 0);

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

/// Directional 5-tuple → packets seen so far, for seeded decisions.
#[map(name = "FLOWS")]
static FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn rule(id: u32) -> Option<&'static Rule> {
    RULES.get(id)
}

/// The trie entry for `port` (network order) on `addr`, if the port is one a
/// rule names (port 0: the portless rules).
#[inline(always)]
pub fn target_with_port(addr: &[u8; 16], port: [u8; 2]) -> Option<&'static TargetValue> {
    let host_port = u16::from_be_bytes(port);
    if host_port != 0 && PORTS.get(u32::from(host_port)).copied().unwrap_or(0) == 0 {
        return None;
    }
    let key = Key::new(PORT_BITS + ADDR_BITS, TargetKey { port, addr: *addr });
    TARGETS.get(&key)
}

#[inline(always)]
pub fn endpoint() -> Option<&'static TargetValue> {
    ENDPOINT.get(0)
}

#[inline(always)]
pub fn count(slot: u32, f: impl FnOnce(&mut Counters)) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and TC
        // programs do not preempt each other on one CPU.
        f(unsafe { &mut *c });
    }
}

/// Returns how many packets of this flow were seen before this one, and
/// counts this one. Two CPUs racing on one flow may reuse an index; flows
/// normally stay on one CPU, and the cost is one repeated decision.
#[inline(always)]
pub fn next_flow_index(key: &FlowKey) -> u64 {
    match FLOWS.get_ptr_mut(key) {
        Some(n) => unsafe {
            let index = *n;
            *n = index + 1;
            index
        },
        None => {
            // Fail open: if the LRU cannot take it, every packet is index 0.
            let _ = FLOWS.insert(key, 1u64, 0);
            0
        }
    }
}
