//! The demo's lab: hosts A and B, each a network namespace with an `eth0`,
//! joined by veth pairs to a bridge in a third namespace, the "host", where
//! pygocentrus runs. The machine's own network is never touched, and the
//! namespaces die with the process (see `netns`).

use std::{io, net::Ipv4Addr};

use anyhow::{Context as _, Result};

use super::netns::{Entered, Netns};
use crate::datapath::netlink::Netlink;

pub const BRIDGE: &str = "pygdemo-br";
/// The bridge ports (host side of the veth pairs) of A and B.
pub const PORT_A: &str = "pygdemo-a";
pub const PORT_B: &str = "pygdemo-b";
/// The interface inside A and inside B.
pub const ETH: &str = "eth0";
/// Benchmarking addresses (RFC 2544): never routed anywhere.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PREFIX_LEN: u8 = 24;

pub struct Lab {
    // Declared first, so dropped first: the thread leaves the host
    // namespace before the namespaces are released.
    _inside: Entered,
    _host: Netns,
    pub a: Netns,
    pub b: Netns,
}

impl Lab {
    /// Builds the lab and moves the calling thread into the host namespace
    /// until the lab is dropped: interface names given to pygocentrus
    /// are the host's from then on.
    pub async fn build() -> Result<Self> {
        let new = || Netns::new().context("creating a network namespace");
        let (host, a, b) = (new()?, new()?, new()?);
        for ns in [&host, &a, &b] {
            ns.run(quiet_ipv6).context("disabling IPv6 in the lab")?;
        }

        let inside = host.enter().context("entering the lab's host namespace")?;
        let nl = Netlink::open()?;
        let bridge = nl.add_bridge(BRIDGE).await.with_context(|| format!("creating bridge {BRIDGE}"))?;
        for (port, ns, addr) in [(PORT_A, &a, ADDR_A), (PORT_B, &b, ADDR_B)] {
            nl.add_bridge_port_veth(port, bridge.index, ETH, ns)
                .await
                .with_context(|| format!("creating the veth pair {port}/{ETH}"))?;
            let inner = ns.run(Netlink::open)?;
            let eth = inner.existing_link(ETH).await?;
            inner
                .add_address(eth.index, addr.into(), PREFIX_LEN)
                .await
                .with_context(|| format!("adding {addr}/{PREFIX_LEN} to {ETH}"))?;
            inner.set_up(eth.index).await.with_context(|| format!("bringing {ETH} up"))?;
        }
        Ok(Self { _inside: inside, _host: host, a, b })
    }
}

/// The lab carries IPv4 only: no IPv6 link-local chatter (router
/// solicitations, MLD) crossing the bridge while we count.
fn quiet_ipv6() -> io::Result<()> {
    for conf in ["all", "default"] {
        match std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1") {
            // IPv6 disabled on the whole machine: nothing to quieten.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// `IpExt: InCsumErrors` of the namespace: IPv4 packets its kernel discarded
/// for a bad header checksum.
pub fn ip_checksum_errors(ns: &Netns) -> Result<u64> {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))?;
    netstat_value(&text, "IpExt", "InCsumErrors").context("no IpExt InCsumErrors in /proc/net/netstat")
}

/// A value of `/proc/net/netstat`, where each group is a line of names
/// followed by a line of values.
fn netstat_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_values() {
        let text = "TcpExt: SyncookiesSent EmbryonicRsts\nTcpExt: 0 3\n\
                    IpExt: InNoRoutes InTruncatedPkts InMcastPkts InCsumErrors\nIpExt: 0 0 7 42\n";
        assert_eq!(netstat_value(text, "IpExt", "InCsumErrors"), Some(42));
        assert_eq!(netstat_value(text, "TcpExt", "EmbryonicRsts"), Some(3));
        assert_eq!(netstat_value(text, "IpExt", "Nope"), None);
        assert_eq!(netstat_value(text, "MPTcpExt", "InCsumErrors"), None);
    }
}
