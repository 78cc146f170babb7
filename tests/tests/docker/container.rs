//! `pygocentrus attach --container` against a real Docker engine: three
//! containers on a user-defined bridge network of their own (on
//! 198.19.128.0/17), the target restarted while the tool runs. Only the
//! target's veth is hooked, before and after the restart, its traffic is
//! dropped both ways and the others' is not; SIGTERM leaves nothing. A
//! network the target is connected to while the tool runs is followed too.
//!
//! Needs root and a Docker engine (see `crate::engine`: started when it is
//! not running; skips, saying so, only where none can run, as in the QEMU
//! guests of `cargo xtask vm-test`).

#![expect(clippy::useless_vec, reason = "args! builds owned argument lists")]

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use crate::setup::{DockerContainer, Engine, Setup, docker, ports_of};
use pygocentrus_tests::{TOOL_TIMEOUT, Tool, UdpFlow, args, hooks_in};

const PORT: u16 = 5000;
const OTHER_PORT: u16 = 5001;
const N: u32 = 200;

/// A UDP flow from `from` to `to:port`, made in their namespaces as they
/// are now.
fn flow(from: &DockerContainer, to: &DockerContainer, port: u16) -> UdpFlow {
    let src = SocketAddr::new(IpAddr::V4(from.ip()), 0);
    let dst = SocketAddr::new(IpAddr::V4(to.ip()), port);
    UdpFlow::between(&from.netns(), src, &to.netns(), dst)
}

/// Panics unless `veth` (the target's) is hooked with `hook` and no other
/// port of the network's bridge, nor the bridge, carries anything.
fn assert_only_hooked(setup: &Setup, veth: &str, hook: &str) {
    let ports = setup.ports();
    assert!(ports.iter().any(|p| p == veth), "{veth} is not a port of {}: {ports:?}", setup.bridge);
    for port in &ports {
        let hooks = hooks_in(None, port);
        if port == veth {
            assert!(hooks.hooked_with(hook), "the target's {port} is not hooked with {hook}: {hooks:#?}");
        } else {
            assert!(hooks.is_empty(), "{port}, not the target's, carries hooks: {hooks:#?}");
        }
    }
    assert!(hooks_in(None, &setup.bridge).is_empty(), "the bridge itself was hooked");
}

/// Sends `N` datagrams each way between the target and the peer (all must
/// be lost) and between the bystander and the peer (none may be).
fn assert_only_the_target_loses(
    target: &DockerContainer,
    peer: &DockerContainer,
    bystander: &DockerContainer,
    when: &str,
) {
    let to_target = flow(peer, target, PORT);
    let from_target = flow(target, peer, PORT);
    let spared = flow(bystander, peer, OTHER_PORT);
    let spared_back = spared.reversed();
    for (what, f) in [("peer to target", &to_target), ("target to peer", &from_target)] {
        assert_eq!(f.exchange(N).received(), 0, "{when}: {what}: datagrams arrived");
    }
    for (what, f) in [("bystander to peer", &spared), ("peer to bystander", &spared_back)] {
        let x = f.exchange(N);
        assert_eq!(x.received(), x.sent(), "{when}: {what}: datagrams were lost");
    }
}

/// Every datagram between the target and the peer arrives (the tool is not
/// in the way), which also settles the neighbours' ARP entries.
fn assert_all_arrive(target: &DockerContainer, peer: &DockerContainer, when: &str) {
    for f in [flow(peer, target, PORT), flow(target, peer, PORT)] {
        let x = f.exchange(20);
        assert_eq!(x.received(), x.sent(), "{when}: datagrams between target and peer were lost");
    }
}

fn followed_across_a_restart(tag: &str, hook: &str) {
    let Some(engine) = Engine::get() else { return };
    let mut setup = Setup::new(engine, tag);
    let (target, peer, bystander) = (setup.run("target"), setup.run("peer"), setup.run("bystander"));
    assert_all_arrive(&target, &peer, "before the tool runs");

    let tool = Tool::attach_here(&args![
        "--container",
        target.name,
        "--proto",
        "udp",
        "--drop",
        100,
        "--hook",
        hook,
        "--json"
    ]);
    let before = target.host_veth();
    assert_only_hooked(&setup, &before, hook);
    assert_only_the_target_loses(&target, &peer, &bystander, "before the restart");

    docker(&["restart", "-t", "0", &target.name]);
    let said = tool.wait_stderr("hooked veth", Duration::from_secs(30));
    assert!(said.is_some(), "the restarted container's veth was not hooked: {:#?}", tool.stderr());
    let after = target.host_veth();
    assert_ne!(before, after, "the restart kept the veth: it proves nothing");
    assert_only_hooked(&setup, &after, hook);
    assert_only_the_target_loses(&target, &peer, &bystander, "after the restart");

    let out = tool.terminate();
    assert!(out.stderr_has("every hook removed"), "no word of detaching:\n{out}");
    // Judged once each: N each way, before and after the restart.
    assert_eq!(out.counter("dropped"), u64::from(4 * N), "{out}");
    for port in setup.ports().iter().chain([&setup.bridge]) {
        let hooks = hooks_in(None, port);
        assert!(hooks.is_empty(), "after SIGTERM, {port} carries hooks: {hooks:#?}");
    }
    assert_all_arrive(&target, &peer, "after the tool ended");
}

#[test]
fn a_container_is_followed_across_a_restart() {
    followed_across_a_restart("rs", pygocentrus_tests::auto_hook());
}

#[test]
fn a_container_is_followed_across_a_restart_on_netlink() {
    followed_across_a_restart("rsn", "netlink");
}

#[test]
fn network_connect_and_disconnect_are_followed() {
    let Some(engine) = Engine::get() else { return };
    let mut setup = Setup::new(engine, "nc");
    let target = setup.run("target");
    let (second, second_bridge) = setup.add_network('b');
    let peer = DockerContainer { name: setup.container("peer", "run", &second) };
    let tool = Tool::attach_here(&args!["--container", target.name, "--proto", "udp", "--drop", 100]);
    let first_veth = target.host_veth();

    docker(&["network", "connect", &second, &target.name]);
    let said = tool.wait_stderr("hooked veth", Duration::from_secs(30));
    assert!(said.is_some(), "the veth of the connected network was not hooked: {:#?}", tool.stderr());
    let hook = pygocentrus_tests::auto_hook();
    for port in ports_of(&second_bridge) {
        // The target's new veth, and not the peer's.
        let hooks = hooks_in(None, &port);
        let targets = said.as_deref().is_some_and(|l| l.contains(&port));
        assert_eq!(hooks.hooked_with(hook), targets, "{port} on {second_bridge}: {hooks:#?}");
    }
    // Over the second network (the peer's only one), both ways.
    let address = |c: &DockerContainer| -> IpAddr {
        let ip = docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{second}\").IPAddress}}}}"),
            &c.name,
        ]);
        ip.parse().unwrap_or_else(|e| panic!("the address of {} on {second}: '{ip}': {e}", c.name))
    };
    let (t, p) = (SocketAddr::new(address(&target), PORT), SocketAddr::new(address(&peer), PORT));
    let to_target = UdpFlow::between(&peer.netns(), SocketAddr::new(p.ip(), 0), &target.netns(), t);
    let from_target = UdpFlow::between(&target.netns(), SocketAddr::new(t.ip(), 0), &peer.netns(), p);
    assert_eq!(to_target.exchange(N).received(), 0, "peer to target over {second}: datagrams arrived");
    assert_eq!(from_target.exchange(N).received(), 0, "target to peer over {second}: datagrams arrived");

    docker(&["network", "disconnect", &setup.network, &target.name]);
    let said = format!("{first_veth} of container {} is gone", target.name);
    assert!(tool.wait_stderr(&said, Duration::from_secs(30)).is_some(), "no '{said}' in {:#?}", tool.stderr());
    let out = tool.terminate();
    for port in ports_of(&second_bridge).iter().chain(&setup.ports()) {
        let hooks = hooks_in(None, port);
        assert!(hooks.is_empty(), "after SIGTERM, {port} carries hooks: {hooks:#?}\n{out}");
    }
}

#[test]
fn containers_that_cannot_be_targeted_are_refused_in_one_line() {
    let Some(engine) = Engine::get() else { return };
    let mut setup = Setup::new(engine, "bad");
    let created = setup.container("created", "create", &setup.network.clone());
    let isolated = setup.container("none", "run", "none");
    let host = setup.container("host", "run", "host");
    let nosuch = format!("{}-nosuch", setup.network);
    let cases = [
        (nosuch.as_str(), "no such container"),
        (created.as_str(), "is not running"),
        (isolated.as_str(), "has no veth"),
        (host.as_str(), "own network namespace"),
    ];
    for (name, says) in cases {
        let out = Tool::spawn_here(&args!["--container", name, "--drop", 5]).wait(TOOL_TIMEOUT);
        assert_eq!(out.status.code(), Some(2), "{name}: wrong exit status:\n{out}");
        assert_eq!(out.stderr.len(), 1, "{name}: not one line on stderr:\n{out}");
        assert!(out.stderr[0].contains(says), "{name}: the message does not say '{says}':\n{out}");
    }
}
