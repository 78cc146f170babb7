//! The exact values the kernel reads for a [`Plan`]: each rule's [`Rule`]
//! and the trie entries ([`TargetKey`] → [`TargetValue`]) that lead to it,
//! as [`MapContents`]; `datapath::engine` writes them to the maps.

use std::collections::BTreeMap;

use ipnet::IpNet;
use pygocentrus_common::{
    ADDR_BITS, Action, CLASS_OTHER, CLASS_TCP, CLASS_UDP, CONFIG_ENDPOINT, CONFIG_PORTLESS, DIST_NORMAL, DIST_PARETO,
    DIST_PARETONORMAL, DIST_UNIFORM, GeModel, LIMIT_BYTES, LIMIT_NS, LIMIT_PACKETS, MAX_RULES, PORT_BITS, PROB_ALWAYS,
    PROB_NEVER, RULE_GE, RULE_KEEP_ORDER, RULE_PER_CONNECTION, RULE_SEEDED, Rule, SIDE_FROM, SIDE_TO, TargetKey,
    TargetValue,
};

use super::{
    spec::{Plan, RuleFaults, RuleSpec},
    units::{FlowLimit, Percent},
    values::{Direction, Distribution, Proto},
};
use crate::error::UsageError;

/// The `LIMIT_*` kind and value the kernel reads for a flow limit.
fn limit_fields(limit: Option<FlowLimit>) -> (u32, u64) {
    match limit {
        None => (0, 0),
        Some(FlowLimit::Bytes(n)) => (LIMIT_BYTES, n),
        Some(FlowLimit::Packets(n)) => (LIMIT_PACKETS, n),
        Some(FlowLimit::Time(d)) => (LIMIT_NS, d.as_nanos().min(u128::from(u64::MAX)) as u64),
    }
}

impl RuleFaults {
    /// Whether packets get departure times: those need `fq`.
    pub fn schedules(&self) -> bool {
        self.rule_fields().schedules()
    }

    fn rule_fields(&self) -> Rule {
        // A share not given is every packet (or connection).
        let share = |p: Option<Percent>| p.map_or(PROB_ALWAYS, Percent::threshold);
        let mut rule = Rule {
            rate_bytes: self.rate.map_or(0, |r| r.0),
            fin_delay_ns: self.fin_delay.map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64),
            ..Rule::default()
        };
        for (fault, p) in self.percents() {
            rule.set_threshold(fault.action, p.map_or(PROB_NEVER, Percent::threshold));
        }
        rule.set_threshold(Action::Rate, share(self.rate_share));
        rule.set_threshold(Action::Limit, share(self.limit_share));
        rule.set_threshold(Action::FinDelay, share(self.fin_delay_share));
        (rule.unplug_kind, rule.unplug_after) = limit_fields(self.unplug_after);
        (rule.reset_kind, rule.reset_after) = limit_fields(self.reset_after);
        if self.per_connection {
            rule.flags |= RULE_PER_CONNECTION;
        }
        if let Some(ge) = self.loss_model {
            rule.flags |= RULE_GE;
            rule.ge = GeModel {
                p: ge.p.threshold(),
                r: ge.r.threshold(),
                loss_bad: ge.loss_bad.threshold(),
                loss_good: ge.loss_good.threshold(),
            };
        }
        if let Some(d) = self.delay {
            rule.delay_ns = d.mean.as_nanos().min(u128::from(u64::MAX)) as u64;
            rule.jitter_ns = d.jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
            rule.set_threshold(Action::Delay, share(d.share));
            rule.distribution = match d.distribution {
                Distribution::Uniform => DIST_UNIFORM,
                Distribution::Normal => DIST_NORMAL,
                Distribution::Pareto => DIST_PARETO,
                Distribution::Paretonormal => DIST_PARETONORMAL,
            };
            if d.keep_order {
                rule.flags |= RULE_KEEP_ORDER;
            }
        }
        rule
    }
}

impl RuleSpec {
    /// The kernel's view of the faults. Per-connection decisions hash the
    /// seed with the connection: without `--seed`, a random one, so that
    /// each run picks other connections.
    pub fn rule(&self) -> Rule {
        let mut rule = self.faults.rule_fields();
        if let Some(seed) = self.seed {
            rule.flags |= RULE_SEEDED;
            rule.seed = seed;
        } else if self.faults.per_connection {
            rule.seed = rand::random();
        }
        if let Some(flags) = self.tcp_flags {
            rule.tcp_flags_any = u32::from(flags.any);
            rule.tcp_flags_clear = u32::from(flags.clear);
        }
        rule
    }

    /// Trie prefix length and key of the target.
    pub(super) fn key(&self) -> (u32, TargetKey) {
        let port = self.port.unwrap_or(0).to_be_bytes();
        match self.ip {
            None => (PORT_BITS, TargetKey { port, addr: [0; 16] }),
            Some(IpNet::V4(n)) => (
                PORT_BITS + ADDR_BITS - 32 + u32::from(n.prefix_len()),
                TargetKey { port, addr: n.network().to_ipv6_mapped().octets() },
            ),
            Some(IpNet::V6(n)) => {
                (PORT_BITS + u32::from(n.prefix_len()), TargetKey { port, addr: n.network().octets() })
            }
        }
    }

    /// The (side, class) cells of a trie entry this rule fills.
    fn cells(&self) -> impl Iterator<Item = usize> + '_ {
        let sides: &[usize] = match self.direction {
            Direction::Both => &[SIDE_TO, SIDE_FROM],
            Direction::To => &[SIDE_TO],
            Direction::From => &[SIDE_FROM],
        };
        let classes: &[usize] = match (self.proto, self.port) {
            (Proto::Tcp, _) => &[CLASS_TCP],
            (Proto::Udp, _) => &[CLASS_UDP],
            // A port only exists on TCP and UDP.
            (Proto::Any, Some(_)) => &[CLASS_TCP, CLASS_UDP],
            (Proto::Any, None) => &[CLASS_TCP, CLASS_UDP, CLASS_OTHER],
        };
        sides.iter().flat_map(move |s| classes.iter().map(move |c| TargetValue::index(*s, *c)))
    }
}

/// The map entries that encode a [`Plan`]. Rule `i` of the plan has id `i + 1`,
/// or the `i`th of the ids given to [`Plan::map_contents_with_ids`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapContents {
    pub targets: Vec<(u32, TargetKey, TargetValue)>,
    pub rules: Vec<(u32, Rule)>,
    /// Host-order ports some rule names.
    pub ports: Vec<u16>,
    /// The rules whose target is the endpoint itself (`ENDPOINT` array).
    pub endpoint: Option<TargetValue>,
    /// `CONFIG_*` flags that follow from the rules.
    pub flags: u32,
}

/// A trie entry's identity while the plan is encoded: (prefix length, port,
/// address), port and address in network byte order.
type EntryKey = (u32, [u8; 2], [u8; 16]);

impl Plan {
    /// The map entries of the plan, rule `i` with id `i + 1`.
    pub fn map_contents(&self) -> Result<MapContents, UsageError> {
        let ids: Vec<u32> = (1..=self.rules.len() as u32).collect();
        self.map_contents_with_ids(&ids)
    }

    /// The map entries of the plan, rule `i` with id `ids[i]` (distinct,
    /// non-zero, at most [`MAX_RULES`]).
    pub fn map_contents_with_ids(&self, ids: &[u32]) -> Result<MapContents, UsageError> {
        if self.rules.len() > MAX_RULES as usize {
            return Err(UsageError::TooMany(self.rules.len()));
        }
        debug_assert_eq!(ids.len(), self.rules.len());
        let mut out = MapContents::default();
        // (prefix, key) → (value, which rule filled each cell)
        let mut entries: BTreeMap<EntryKey, (TargetValue, [usize; 6])> = BTreeMap::new();
        let mut endpoint: Option<(TargetValue, [usize; 6])> = None;
        for ((i, spec), &id) in self.rules.iter().enumerate().zip(ids) {
            out.rules.push((id, spec.rule()));
            let (value, owners) = if spec.targets_endpoint() {
                out.flags |= CONFIG_ENDPOINT;
                endpoint.get_or_insert((TargetValue::default(), [0; 6]))
            } else {
                match spec.port {
                    Some(p) => out.ports.push(p),
                    None => out.flags |= CONFIG_PORTLESS,
                }
                let (prefix, key) = spec.key();
                entries.entry((prefix, key.port, key.addr)).or_insert((TargetValue::default(), [0; 6]))
            };
            for cell in spec.cells() {
                if value.rules[cell] != 0 {
                    return Err(UsageError::Overlap(owners[cell], i + 1, spec.target()));
                }
                value.rules[cell] = id;
                owners[cell] = i + 1;
            }
        }
        out.endpoint = endpoint.map(|(value, _)| value);
        out.ports.sort_unstable();
        out.ports.dedup();
        // The trie returns only the longest match: let a more specific entry
        // inherit the cells it leaves empty from the entries that cover it
        // (same port, shorter prefix). Shortest prefixes first, so that
        // inheritance chains through.
        let list: Vec<_> = entries.into_iter().map(|(k, (v, _))| (k, v)).collect();
        let mut done: Vec<(EntryKey, TargetValue)> = Vec::with_capacity(list.len());
        for ((prefix, port, addr), mut value) in list {
            let cover = done
                .iter()
                .filter(|((p, pt, a), _)| *pt == port && *p < prefix && covers(*p, a, &addr))
                .max_by_key(|((p, _, _), _)| *p);
            if let Some((_, parent)) = cover {
                for (cell, id) in value.rules.iter_mut().enumerate() {
                    if *id == 0 {
                        *id = parent.rules[cell];
                    }
                }
            }
            done.push(((prefix, port, addr), value));
        }
        out.targets = done.into_iter().map(|((prefix, port, addr), v)| (prefix, TargetKey { port, addr }, v)).collect();
        Ok(out)
    }
}

/// Whether the trie key with `prefix` bits (port bits included) and address
/// `a` covers address `b`.
pub(super) fn covers(prefix: u32, a: &[u8; 16], b: &[u8; 16]) -> bool {
    let bits = prefix.saturating_sub(PORT_BITS) as usize;
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}
