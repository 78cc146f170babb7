//! The loaded eBPF object and the only code that reads or writes its maps.

use std::{
    collections::{BTreeSet, HashMap},
    os::fd::AsFd as _,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::SchedClassifier,
};
use pygocentrus_common::{
    ADDR_BITS, CONFIG_BRIDGE, CONFIG_EXACT, CONFIG_PREFIXES, Config, Counters, DistTable, ExactKey, ExactSlot,
    MAP_CONFIG, MAP_COUNTERS, MAP_DIST, MAP_ENDPOINT, MAP_EXACT, MAP_EXACT_INDEX, MAP_EXACT_SLOTS, MAP_PORTS,
    MAP_RULE_STATE, MAP_RULES, MAP_TARGETS, PORT_BITS, PROG_EGRESS, PROG_INGRESS, PortMark, Rule, RuleState, TargetKey,
    TargetValue,
};
use thiserror::Error;

use crate::{
    datapath::{
        dist,
        exact::{ExactTable, Write},
    },
    rules::MapContents,
};

/// Where the target entries of a [`MapContents`] are stored: an entry of
/// one address (`/32`, `/128`, with or without a port) in the exact-target
/// table; a shorter prefix in
/// the `TARGETS` trie. A packet's address then costs one array read when
/// no target has it, and two array reads instead of a trie walk when one
/// does (`datapath::exact`); the trie is searched only where a prefix rule
/// exists. The kernel
/// tries the exact entry first: it is the longest prefix there is, and
/// `rules::encode` has given it the cells of the prefixes that cover it.
struct Stored<'a> {
    exact: Vec<(ExactKey, TargetValue)>,
    trie: Vec<(u32, &'a TargetKey, &'a TargetValue)>,
    /// `CONFIG_EXACT`, and `CONFIG_PREFIXES` if the trie has entries.
    flags: u32,
}

impl<'a> Stored<'a> {
    fn of(m: &'a MapContents) -> Self {
        let mut out = Stored { exact: Vec::new(), trie: Vec::new(), flags: CONFIG_EXACT };
        for (prefix, key, value) in &m.targets {
            if *prefix == PORT_BITS + ADDR_BITS {
                out.exact.push((ExactKey::new(key.addr, key.port), *value));
            } else {
                out.trie.push((*prefix, key, value));
                out.flags |= CONFIG_PREFIXES;
            }
        }
        out
    }
}

/// The kernel program, built by `build.rs` and embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pygocentrus"));

/// The embedded eBPF object (for `cargo xtask stack`, which reads its code).
pub fn object() -> &'static [u8] {
    OBJECT
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("map {0}: {1}")]
    Map(&'static str, aya::maps::MapError),
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("program {0}: {1}")]
    Program(&'static str, aya::programs::ProgramError),
    #[error("counting the CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
}

/// Which hook a program is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    pub fn program_name(self) -> &'static str {
        match self {
            Hook::Ingress => PROG_INGRESS,
            Hook::Egress => PROG_EGRESS,
        }
    }
}

pub struct Engine {
    ebpf: Ebpf,
    config: Config,
    rules: u32,
    exact: ExactTable,
}

impl Engine {
    /// Loads the object and verifies both programs; nothing is attached yet.
    pub fn load() -> Result<Self, EngineError> {
        let mut ebpf = Ebpf::load(OBJECT)?;
        for hook in Hook::BOTH {
            let name = hook.program_name();
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(EngineError::MissingProgram(name))?
                .try_into()
                .map_err(|e| EngineError::Program(name, e))?;
            prog.load().map_err(|e| EngineError::Program(name, e))?;
        }
        let mut engine = Self { ebpf, config: Config::default(), rules: 0, exact: ExactTable::default() };
        engine.write_dist_tables()?;
        Ok(engine)
    }

    fn write_dist_tables(&mut self) -> Result<(), EngineError> {
        let mut map: Array<_, DistTable> =
            Array::try_from(self.map_mut(MAP_DIST)?).map_err(|e| EngineError::Map(MAP_DIST, e))?;
        for (i, table) in dist::tables().iter().enumerate() {
            map.set(i as u32, table, 0).map_err(|e| EngineError::Map(MAP_DIST, e))?;
        }
        Ok(())
    }

    pub fn program_mut(&mut self, hook: Hook) -> Result<&mut SchedClassifier, EngineError> {
        let name = hook.program_name();
        self.ebpf
            .program_mut(name)
            .ok_or(EngineError::MissingProgram(name))?
            .try_into()
            .map_err(|e| EngineError::Program(name, e))
    }

    /// Writes rules, targets, ports and the endpoint's rules. Call before
    /// attaching (the maps start empty, so nothing matches until then).
    pub fn install(&mut self, m: &MapContents) -> Result<(), EngineError> {
        self.install_stored(m, &Stored::of(m))
    }

    /// [`Engine::install`], with the target entries already split.
    fn install_stored(&mut self, m: &MapContents, stored: &Stored<'_>) -> Result<(), EngineError> {
        {
            let mut rules: Array<_, Rule> =
                Array::try_from(self.map_mut(MAP_RULES)?).map_err(|e| EngineError::Map(MAP_RULES, e))?;
            for (id, rule) in &m.rules {
                rules.set(*id, rule, 0).map_err(|e| EngineError::Map(MAP_RULES, e))?;
            }
        }
        {
            let mut ports: Array<_, PortMark> =
                Array::try_from(self.map_mut(MAP_PORTS)?).map_err(|e| EngineError::Map(MAP_PORTS, e))?;
            for port in &m.ports {
                ports.set(u32::from(*port), 1, 0).map_err(|e| EngineError::Map(MAP_PORTS, e))?;
            }
        }
        let writes = self.exact.update(&stored.exact);
        self.write_exact(&writes)?;
        {
            let mut targets: LpmTrie<_, TargetKey, TargetValue> =
                LpmTrie::try_from(self.map_mut(MAP_TARGETS)?).map_err(|e| EngineError::Map(MAP_TARGETS, e))?;
            for (prefix, key, value) in &stored.trie {
                targets.insert(&Key::new(*prefix, **key), *value, 0).map_err(|e| EngineError::Map(MAP_TARGETS, e))?;
            }
        }
        if let Some(value) = &m.endpoint {
            let mut endpoint: Array<_, TargetValue> =
                Array::try_from(self.map_mut(MAP_ENDPOINT)?).map_err(|e| EngineError::Map(MAP_ENDPOINT, e))?;
            endpoint.set(0, value, 0).map_err(|e| EngineError::Map(MAP_ENDPOINT, e))?;
        }
        self.rules = m.rules.iter().map(|(id, _)| *id).max().unwrap_or(0);
        self.config.flags = (self.config.flags & CONFIG_BRIDGE) | m.flags | stored.flags;
        self.write_config()
    }

    /// Replaces what `old` wrote with `new`, live, while the program runs:
    /// new rules, ports and targets are written first, then what only
    /// `old` had is deleted, so a packet meets either rule set (or, for an
    /// instant, a mix) but never a gap in a target both sets keep. The
    /// counters and state (rate, loss model) of every rule id whose rule
    /// changed start again from zero.
    pub fn replace(&mut self, old: &MapContents, new: &MapContents) -> Result<(), EngineError> {
        // Both sets of flags while both sets of entries may be in place.
        let (was_stored, now_stored) = (Stored::of(old), Stored::of(new));
        self.config.flags =
            (self.config.flags & CONFIG_BRIDGE) | old.flags | new.flags | was_stored.flags | now_stored.flags;
        self.write_config()?;
        // Ids that now hold another rule, or none: what was counted under
        // them belongs to a rule that is gone.
        let (was, now): (HashMap<u32, Rule>, HashMap<u32, Rule>) =
            (old.rules.iter().copied().collect(), new.rules.iter().copied().collect());
        let gone: Vec<u32> = old.rules.iter().map(|(id, _)| *id).filter(|id| !now.contains_key(id)).collect();
        let changed: Vec<u32> = new
            .rules
            .iter()
            .filter(|(id, rule)| was.get(id) != Some(rule))
            .map(|(id, _)| *id)
            .chain(gone.iter().copied())
            .collect();
        self.zero_rule_state(&changed)?;
        self.install_stored(new, &now_stored)?;
        {
            let mut targets: LpmTrie<_, TargetKey, TargetValue> =
                LpmTrie::try_from(self.map_mut(MAP_TARGETS)?).map_err(|e| EngineError::Map(MAP_TARGETS, e))?;
            let keep: BTreeSet<(u32, [u8; 2], [u8; 16])> =
                now_stored.trie.iter().map(|(p, k, _)| (*p, k.port, k.addr)).collect();
            for (prefix, key, _) in was_stored.trie.iter().filter(|(p, k, _)| !keep.contains(&(*p, k.port, k.addr))) {
                targets.remove(&Key::new(*prefix, **key)).map_err(|e| EngineError::Map(MAP_TARGETS, e))?;
            }
        }
        {
            let mut ports: Array<_, PortMark> =
                Array::try_from(self.map_mut(MAP_PORTS)?).map_err(|e| EngineError::Map(MAP_PORTS, e))?;
            for port in old.ports.iter().filter(|p| !new.ports.contains(p)) {
                ports.set(u32::from(*port), 0, 0).map_err(|e| EngineError::Map(MAP_PORTS, e))?;
            }
        }
        if new.endpoint.is_none() && old.endpoint.is_some() {
            let mut endpoint: Array<_, TargetValue> =
                Array::try_from(self.map_mut(MAP_ENDPOINT)?).map_err(|e| EngineError::Map(MAP_ENDPOINT, e))?;
            endpoint.set(0, TargetValue::default(), 0).map_err(|e| EngineError::Map(MAP_ENDPOINT, e))?;
        }
        {
            // Rules no target names any more.
            let mut rules: Array<_, Rule> =
                Array::try_from(self.map_mut(MAP_RULES)?).map_err(|e| EngineError::Map(MAP_RULES, e))?;
            for id in &gone {
                rules.set(*id, Rule::default(), 0).map_err(|e| EngineError::Map(MAP_RULES, e))?;
            }
        }
        self.config.flags = (self.config.flags & CONFIG_BRIDGE) | new.flags | now_stored.flags;
        self.write_config()
    }

    /// Writes the exact-target table's writes, in their order.
    fn write_exact(&mut self, writes: &[Write]) -> Result<(), EngineError> {
        for w in writes {
            match w {
                Write::Slot(i, slot) => {
                    let mut slots: Array<_, ExactSlot> = Array::try_from(self.map_mut(MAP_EXACT_SLOTS)?)
                        .map_err(|e| EngineError::Map(MAP_EXACT_SLOTS, e))?;
                    slots.set(*i, slot, 0).map_err(|e| EngineError::Map(MAP_EXACT_SLOTS, e))?;
                }
                Write::Index(fold, v) => {
                    let mut index: Array<_, u32> = Array::try_from(self.map_mut(MAP_EXACT_INDEX)?)
                        .map_err(|e| EngineError::Map(MAP_EXACT_INDEX, e))?;
                    index.set(*fold, v, 0).map_err(|e| EngineError::Map(MAP_EXACT_INDEX, e))?;
                }
                Write::Hash(key, value) => {
                    let mut hash: BpfHashMap<_, ExactKey, TargetValue> =
                        BpfHashMap::try_from(self.map_mut(MAP_EXACT)?).map_err(|e| EngineError::Map(MAP_EXACT, e))?;
                    hash.insert(key, value, 0).map_err(|e| EngineError::Map(MAP_EXACT, e))?;
                }
                Write::Unhash(key) => {
                    let mut hash: BpfHashMap<_, ExactKey, TargetValue> =
                        BpfHashMap::try_from(self.map_mut(MAP_EXACT)?).map_err(|e| EngineError::Map(MAP_EXACT, e))?;
                    hash.remove(key).map_err(|e| EngineError::Map(MAP_EXACT, e))?;
                }
            }
        }
        Ok(())
    }

    /// Zeroes the counters and the state of rule ids `ids`.
    fn zero_rule_state(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| EngineError::Cpus(e))?;
        {
            let mut counters: PerCpuArray<_, Counters> =
                PerCpuArray::try_from(self.map_mut(MAP_COUNTERS)?).map_err(|e| EngineError::Map(MAP_COUNTERS, e))?;
            for id in ids {
                let zero = PerCpuValues::try_from(vec![Counters::default(); cpus])
                    .map_err(|e| EngineError::Map(MAP_COUNTERS, aya::maps::MapError::from(e)))?;
                counters.set(*id, zero, 0).map_err(|e| EngineError::Map(MAP_COUNTERS, e))?;
            }
        }
        let mut state: Array<_, RuleState> =
            Array::try_from(self.map_mut(MAP_RULE_STATE)?).map_err(|e| EngineError::Map(MAP_RULE_STATE, e))?;
        for id in ids {
            state.set(*id, RuleState::default(), 0).map_err(|e| EngineError::Map(MAP_RULE_STATE, e))?;
        }
        Ok(())
    }

    /// Tells the program it sits on the ports of a bridge with this MAC.
    pub fn set_bridge(&mut self, mac: Option<[u8; 6]>) -> Result<(), EngineError> {
        match mac {
            Some(mac) => {
                self.config.flags |= CONFIG_BRIDGE;
                self.config.bridge_mac = mac;
            }
            None => self.config.flags &= !CONFIG_BRIDGE,
        }
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), EngineError> {
        let cfg = self.config;
        let mut config: Array<_, Config> =
            Array::try_from(self.map_mut(MAP_CONFIG)?).map_err(|e| EngineError::Map(MAP_CONFIG, e))?;
        config.set(0, cfg, 0).map_err(|e| EngineError::Map(MAP_CONFIG, e))
    }

    /// Counters summed over CPUs, by slot: 0 (totals), then every rule id
    /// up to the highest in use. Read in one system call where the kernel
    /// can (`BPF_MAP_LOOKUP_BATCH`, 5.6 and later): with thousands of
    /// rules, one call per slot every second is most of what the process
    /// costs while it runs.
    pub fn counters(&self) -> Result<Vec<Counters>, EngineError> {
        let map = self.ebpf.map(MAP_COUNTERS).ok_or(EngineError::MissingMap(MAP_COUNTERS))?;
        let slots = self.rules as usize + 1;
        if let aya::maps::Map::PerCpuArray(data) = map
            && let Ok(cpus) = aya::util::nr_cpus()
            && let Ok(all) = batch::per_cpu_lookup::<Counters>(data.fd().as_fd(), slots, cpus)
        {
            return Ok(all.chunks(cpus).map(sum_cpus).collect());
        }
        let counters: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(map).map_err(|e| EngineError::Map(MAP_COUNTERS, e))?;
        (0..=self.rules)
            .map(|slot| {
                let per_cpu = counters.get(&slot, 0).map_err(|e| EngineError::Map(MAP_COUNTERS, e))?;
                Ok(sum_cpus(&per_cpu))
            })
            .collect()
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, EngineError> {
        self.ebpf.map_mut(name).ok_or(EngineError::MissingMap(name))
    }
}

/// One slot's counters, summed over the CPUs.
fn sum_cpus(per_cpu: &[Counters]) -> Counters {
    let mut sum = Counters::default();
    per_cpu.iter().for_each(|c| sum.add(c));
    sum
}

/// `BPF_MAP_LOOKUP_BATCH` on a per-CPU array, which aya 0.14 does not offer.
mod batch {
    use std::{
        io,
        mem::size_of,
        os::fd::{AsRawFd as _, BorrowedFd},
    };

    /// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

    /// The `batch` member of `union bpf_attr`; the kernel zero-fills the
    /// rest of the union.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }

    /// The values of keys `0..slots` of the per-CPU array `fd`, `cpus` per
    /// key, in one system call. `T` must be the map's value type, its size
    /// a multiple of 8 (as the kernel lays per-CPU values out).
    pub fn per_cpu_lookup<T: aya::Pod>(fd: BorrowedFd<'_>, slots: usize, cpus: usize) -> io::Result<Vec<T>> {
        const { assert!(size_of::<T>().is_multiple_of(8)) };
        let (Ok(count), Ok(map_fd)) = (u32::try_from(slots), u32::try_from(fd.as_raw_fd())) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        let mut keys = vec![0u32; slots];
        let mut values: Vec<T> = Vec::with_capacity(slots * cpus);
        let mut out_batch = 0u32;
        let mut attr = BatchAttr {
            out_batch: &raw mut out_batch as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count,
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: every pointer in `attr` is to a buffer of the size the
        // kernel writes: `count` keys of 4 bytes, `count` × `cpus` values
        // of `size_of::<T>()` bytes, one 4-byte batch token.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>() as libc::c_uint)
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            // ENOENT: the array ended at the last slot; every slot asked
            // for was written all the same if `count` says so.
            if err.raw_os_error() != Some(libc::ENOENT) || attr.count != count {
                return Err(err);
            }
        } else if attr.count != count {
            return Err(io::Error::other(format!("the kernel returned {} of {count} slots", attr.count)));
        }
        // SAFETY: the kernel wrote `count` × `cpus` values of `T`, which is
        // `Pod`: valid for any bytes.
        unsafe { values.set_len(slots * cpus) };
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use pygocentrus_common::{CONFIG_EXACT, CONFIG_PREFIXES};

    use super::Stored;
    use crate::rules::{RuleSpec, args::parse_flags, spec::Plan};

    fn stored_flags(rules: &[&str]) -> (usize, usize, u32) {
        let rules = rules.iter().map(|r| RuleSpec::from_args(&parse_flags(r).unwrap(), None).unwrap()).collect();
        let m = Plan { rules }.map_contents().unwrap();
        let s = Stored::of(&m);
        (s.exact.len(), s.trie.len(), s.flags)
    }

    #[test]
    fn one_address_goes_to_the_hash_a_prefix_to_the_trie() {
        assert_eq!(stored_flags(&["--ip 198.18.0.2 --port 80 --drop 1"]), (1, 0, CONFIG_EXACT));
        assert_eq!(stored_flags(&["--ip fd00::2 --drop 1"]), (1, 0, CONFIG_EXACT));
        assert_eq!(
            stored_flags(&["--ip 198.18.0.0/24 --port 80 --drop 1", "--ip 198.18.0.2 --port 80 --proto udp --drop 1"]),
            (1, 1, CONFIG_EXACT | CONFIG_PREFIXES)
        );
        // A rule without an address is a prefix of length 0.
        assert_eq!(stored_flags(&["--port 80 --drop 1"]), (0, 1, CONFIG_EXACT | CONFIG_PREFIXES));
    }
}
