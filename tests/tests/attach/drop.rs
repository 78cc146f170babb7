//! --drop: which packets vanish, how many, and how reproducibly.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use pygocentrus_common::{Action, FlowKey, PROTO_UDP, decide};
use pygocentrus_tests::{Container, Lab, NetCounters, UdpFlow, args};

use crate::{OTHER_PORT, PORT, assert_binomial, rule};

#[test]
fn drop_100_loses_every_datagram_to_the_port_and_none_to_another() {
    let (lab, client, server) = Lab::pair("drop");
    let target = UdpFlow::new(&client, 0, &server, PORT, false);
    let other = UdpFlow::new(&client, 0, &server, OTHER_PORT, false);
    let tool = lab.attach(&rule("udp", None, args!["--drop", 100, "--json"]));

    // Exact: at 100% nothing may pass, and nothing else may be touched.
    let hit = target.exchange(200);
    let spared = other.exchange(200);
    let out = tool.terminate();
    assert_eq!(hit.received(), 0, "datagrams to port {PORT} arrived");
    assert_eq!(spared.received(), 200, "datagrams to port {OTHER_PORT} were lost");
    assert_eq!(out.counter("dropped"), 200, "{out}");
    assert_eq!(out.counter("matched"), 200, "{out}");
}

#[test]
fn drop_30_loses_a_binomial_share_and_counts_it() {
    const N: u32 = 2000;
    let (lab, client, server) = Lab::pair("drop30");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let before = NetCounters::read(&server.ns);
    let tool = lab.attach(&rule("udp", None, args!["--drop", 30, "--json"]));
    let x = flow.exchange(N);
    let out = tool.terminate();

    // The receiver lost nothing by itself (its buffer holds the whole run),
    // so every loss is the tool's.
    let overflow = before.growth(&NetCounters::read(&server.ns), "Udp:RcvbufErrors");
    assert_eq!(overflow, 0, "the receiver's buffer overflowed: the count below means nothing");
    // Each datagram survives with probability 0.7, independently.
    assert_binomial(x.received(), x.sent(), 0.7, "datagrams received under --drop 30");
    // The tool counts each drop once (on the egress of the receiver's port);
    // it cannot count more than were lost, and a gap would be a loss it did
    // not cause. Slack of 2 for anything the kernel might lose on its own.
    let dropped = out.counter("dropped") as usize;
    assert!(
        dropped <= x.lost() && x.lost() - dropped <= 2,
        "the tool counted {dropped} drops, the receiver missed {}",
        x.lost()
    );
}

#[test]
fn direction_to_spares_what_the_target_sends() {
    let (lab, client, server) = Lab::pair("dirto");
    let to_target = UdpFlow::new(&client, 0, &server, PORT, false);
    // The target answers from the port the rule names.
    let from_target = to_target.reversed();
    let tool = lab.attach(&rule("udp", Some(server.ip(false)), args!["--direction", "to", "--drop", 100, "--json"]));
    let to = to_target.exchange(200);
    let from = from_target.exchange(200);
    let out = tool.terminate();
    assert_eq!(to.received(), 0, "datagrams to the target arrived");
    assert_eq!(from.received(), 200, "datagrams from the target were lost");
    assert_eq!(out.counter("dropped"), 200, "{out}");
}

#[test]
fn ipv6_target_is_dropped_and_its_other_port_and_ipv4_are_not() {
    let (lab, client, server) = Lab::pair("ipv6");
    let target = UdpFlow::new(&client, 0, &server, PORT, true);
    let other_port = UdpFlow::new(&client, 0, &server, OTHER_PORT, true);
    let same_port_v4 = UdpFlow::new(&client, 0, &server, PORT, false);
    let tool = lab.attach(&rule("any", Some(server.ip(true)), args!["--drop", 100, "--json"]));
    let hit = target.exchange(200);
    let spared = other_port.exchange(200);
    let v4 = same_port_v4.exchange(200);
    let out = tool.terminate();
    assert_eq!(hit.received(), 0, "datagrams to [{}]:{PORT} arrived", server.ip6);
    assert_eq!(spared.received(), 200, "datagrams to [{}]:{OTHER_PORT} were lost", server.ip6);
    assert_eq!(v4.received(), 200, "IPv4 datagrams to {}:{PORT} were lost", server.ip4);
    assert_eq!(out.counter("dropped"), 200, "{out}");
}

#[test]
fn traffic_to_the_bridge_itself_is_judged_as_it_enters() {
    let lab = Lab::new("brself", 1);
    let client = lab.container(0);
    let gateway = IpAddr::from(lab.add_bridge_address());
    // The host's own sockets sit behind the bridge device: a datagram for
    // them never leaves by a port, and only the ingress hook of the port it
    // enters by can judge it.
    let to_host =
        |port| UdpFlow::between(&client.ns, client.addr(false, 0), lab.host(), SocketAddr::new(gateway, port));
    let (target, other) = (to_host(PORT), to_host(OTHER_PORT));
    let tool = lab.attach(&rule("udp", Some(gateway), args!["--drop", 100, "--json"]));
    let hit = target.exchange(200);
    let spared = other.exchange(200);
    let out = tool.terminate();
    assert_eq!(hit.received(), 0, "datagrams to the bridge's {gateway}:{PORT} arrived");
    assert_eq!(spared.received(), 200, "datagrams to the bridge's {gateway}:{OTHER_PORT} were lost");
    assert_eq!(out.counter("dropped"), 200, "{out}");
}

/// Datagrams per seeded run, and the source port that makes every run the
/// same flow.
const SEEDED_N: u32 = 200;
const SOURCE_PORT: u16 = 40_000;

#[test]
fn seeded_runs_drop_the_same_datagrams() {
    let (lab, client, server) = Lab::pair("seed");
    let flow = UdpFlow::new(&client, SOURCE_PORT, &server, PORT, false);
    let lost = |seed: u64| {
        let tool = lab.attach(&rule("udp", None, args!["--drop", 50, "--seed", seed, "--json"]));
        let x = flow.exchange(SEEDED_N);
        tool.terminate();
        x.lost_seqs()
    };
    let first = lost(42);
    let second = lost(42);
    let other = lost(7);

    // Same seed, same flow, same packets: the same losses, exactly.
    assert_eq!(first, second, "two runs with --seed 42 lost different datagrams");
    // A different seed draws anew: equal sets of 200 coin flips would be a
    // 2^-200 coincidence.
    assert_ne!(first, other, "--seed 7 lost exactly what --seed 42 lost");
    // Each run is still a fair coin per datagram.
    for (seed, set) in [(42, &first), (7, &other)] {
        assert_binomial(set.len(), SEEDED_N as usize, 0.5, &format!("datagrams lost with --seed {seed}"));
    }
    // And the losses are the ones the documented hash predicts: packet i of
    // the flow is dropped when its draw falls below 2^31 (50%).
    assert_eq!(first, predicted_losses(42, &client, &server), "--seed 42 did not follow decide::seeded_draw");
}

/// The datagrams `decide` says a seeded 50% drop takes from the flow.
fn predicted_losses(seed: u64, from: &Container, to: &Container) -> BTreeSet<u32> {
    let key = FlowKey::new(
        from.ip4.to_ipv6_mapped().octets(),
        to.ip4.to_ipv6_mapped().octets(),
        SOURCE_PORT.to_be_bytes(),
        PORT.to_be_bytes(),
        PROTO_UDP,
    );
    let flow = decide::flow_hash(&key);
    (0..SEEDED_N)
        .filter(|i| decide::fires(decide::seeded_draw(seed, flow, u64::from(*i), Action::Drop), 1 << 31))
        .collect()
}
