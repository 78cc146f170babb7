//! A namespace's own network statistics (`/proc/net/netstat`, `snmp`,
//! `snmp6`): what the receiving or sending kernel saw.

use std::collections::BTreeMap;

use crate::in_netns;

/// Counters named `Group:Name` (`IpExt:InCsumErrors`, `Tcp:RetransSegs`,
/// `Udp:RcvbufErrors`) or, from `snmp6`, by their own name
/// (`Ip6InHdrErrors`).
#[derive(Debug)]
pub struct NetCounters(BTreeMap<String, u64>);

impl NetCounters {
    /// Reads the counters of namespace `ns`. `/proc/thread-self/net` shows
    /// the namespace of the reading thread, which joined `ns`.
    pub fn read(ns: &str) -> Self {
        let files = in_netns(ns, || {
            ["netstat", "snmp", "snmp6"].map(|f| {
                let path = format!("/proc/thread-self/net/{f}");
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path} in {ns}: {e}"))
            })
        });
        let [netstat, snmp, snmp6] = files;
        let mut all = BTreeMap::new();
        for text in [netstat, snmp] {
            parse_pairs(&text, &mut all);
        }
        for line in snmp6.lines() {
            let mut f = line.split_whitespace();
            if let (Some(name), Some(Ok(v))) = (f.next(), f.next().map(str::parse)) {
                all.insert(name.to_owned(), v);
            }
        }
        Self(all)
    }

    pub fn get(&self, name: &str) -> u64 {
        *self.0.get(name).unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// How much counter `name` grew from `self` to `later`.
    pub fn growth(&self, later: &Self, name: &str) -> u64 {
        later.get(name) - self.get(name)
    }
}

/// `netstat` and `snmp` come in pairs of lines: `Group: names...` then
/// `Group: values...`.
fn parse_pairs(text: &str, into: &mut BTreeMap<String, u64>) {
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks_exact(2) {
        let (Some((group, names)), Some((_, values))) = (pair[0].split_once(':'), pair[1].split_once(':')) else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Some values are signed (Tcp: MaxConn is -1): keep the others.
            if let Ok(v) = value.parse() {
                into.insert(format!("{group}:{name}"), v);
            }
        }
    }
}
