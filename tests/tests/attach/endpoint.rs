//! `--netns`: one "container" of a bridge targeted by its namespace. The
//! hooks go on the host end of its veth only; its traffic is judged in both
//! directions, each packet exactly once, for every fault, and the other
//! containers on the same bridge are spared. Then the lifecycle: hooks gone
//! after SIGTERM, after SIGKILL on the netlink path (the next start cleans),
//! a veth the namespace gains later is hooked, and the run ends by itself
//! when the namespace goes away (not merely the process `--netns PID`
//! named).

use std::{
    io::ErrorKind,
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::sys::signal::Signal;
use pygocentrus_common::PROG_INGRESS;
use pygocentrus_tests::{BRIDGE, Container, Lab, NetCounters, TOOL_TIMEOUT, UdpFlow, args, tcp_connect, tcp_listener};

use crate::{OTHER_PORT, PORT};

const N: u32 = 200;

/// A lab with three containers on one bridge: the target, a peer it talks
/// with, and a bystander that talks with the peer too.
fn trio(tag: &str) -> (Lab, Container, Container, Container) {
    let lab = Lab::new(tag, 3);
    let (target, peer, bystander) = (lab.container(0), lab.container(1), lab.container(2));
    (lab, target, peer, bystander)
}

/// `--netns TARGET` followed by `more`.
fn on(target: &Container, more: Vec<String>) -> Vec<String> {
    let mut run = args!["--netns", target.netns_path()];
    run.extend(more);
    run
}

/// Panics unless the port of `target`, and no other interface, is hooked.
fn assert_only_hooked(lab: &Lab, target: &Container, hook: &str) {
    for (port, hooks) in lab.port_hooks() {
        let expected = port == target.port;
        assert_eq!(hooks.hooked_with(hook), expected, "port {port} (target's: {}): {hooks:#?}", target.port);
        if !expected {
            assert!(hooks.is_empty(), "port {port} carries hooks: {hooks:#?}");
        }
    }
    assert!(lab.hooks(BRIDGE).is_empty(), "the bridge itself was hooked");
}

#[test]
fn drop_takes_all_the_targets_traffic_both_ways_and_spares_the_others() {
    let (lab, target, peer, bystander) = trio("epdrop");
    let to_target = UdpFlow::new(&peer, 0, &target, PORT, false);
    let from_target = UdpFlow::new(&target, 0, &peer, OTHER_PORT, false);
    let to_target6 = UdpFlow::new(&peer, 0, &target, PORT, true);
    let spared = UdpFlow::new(&bystander, 0, &peer, PORT, false);
    let spared_back = spared.reversed();
    // No --ip and no --port: the target is the container, all its UDP.
    let tool = lab.attach(&on(&target, args!["--proto", "udp", "--drop", 100, "--json"]));
    assert_only_hooked(&lab, &target, pygocentrus_tests::auto_hook());

    let lost = [to_target.exchange(N), from_target.exchange(N), to_target6.exchange(N)];
    let kept = [spared.exchange(N), spared_back.exchange(N)];
    let out = tool.terminate();
    for (what, x) in ["peer to target", "target to peer", "peer to target (IPv6)"].iter().zip(&lost) {
        assert_eq!(x.received(), 0, "{what}: datagrams arrived\n{out}");
    }
    for (what, x) in ["bystander to peer", "peer to bystander"].iter().zip(&kept) {
        assert_eq!(x.received(), x.sent(), "{what}: datagrams were lost\n{out}");
    }
    // Each of the target's datagrams judged once, none of the others'.
    assert_eq!(out.counter("dropped"), u64::from(3 * N), "{out}");
    assert_eq!(out.counter("matched"), u64::from(3 * N), "{out}");
    lab.assert_clean("after SIGTERM", Duration::ZERO);
}

#[test]
fn direction_to_and_from_are_seen_from_the_target() {
    let (lab, target, peer, _) = trio("epdir");
    let to_target = UdpFlow::new(&peer, 0, &target, PORT, false);
    let from_target = to_target.reversed();
    for (direction, lost, kept) in [("to", &to_target, &from_target), ("from", &from_target, &to_target)] {
        let tool = lab.attach(&on(&target, args!["--proto", "udp", "--direction", direction, "--drop", 100, "--json"]));
        let (hit, spared) = (lost.exchange(N), kept.exchange(N));
        let out = tool.terminate();
        assert_eq!(hit.received(), 0, "--direction {direction}: datagrams arrived\n{out}");
        assert_eq!(spared.received(), spared.sent(), "--direction {direction}: the other way lost some\n{out}");
        // Both ways belong to the target; one of them matches the rule.
        // "seen" may also count an IPv6 multicast report the target's
        // kernel sends on its own, hence a little room.
        let seen = out.counter("seen");
        assert!((u64::from(2 * N)..=u64::from(2 * N) + 10).contains(&seen), "seen {seen}, expected {}\n{out}", 2 * N);
        assert_eq!(out.counter("matched"), u64::from(N), "{out}");
    }
}

#[test]
fn corrupt_payload_changes_each_datagram_once_in_each_direction() {
    let (lab, target, peer, bystander) = trio("eppay");
    let to_target = UdpFlow::new(&peer, 0, &target, PORT, false);
    let from_target = to_target.reversed();
    let spared = UdpFlow::new(&bystander, 0, &peer, OTHER_PORT, false);
    let tool = lab.attach(&on(&target, args!["--proto", "udp", "--corrupt-payload", 100, "--json"]));
    let runs = [("peer to target", to_target.exchange(N)), ("target to peer", from_target.exchange(N))];
    let untouched = spared.exchange(N);
    let out = tool.terminate();

    // A datagram judged twice would have two bytes changed (or none).
    for (what, x) in &runs {
        assert_eq!(x.received(), x.sent(), "{what}: corrupted datagrams were discarded");
        for (i, (sent, got)) in x.sent.iter().zip(&x.received).enumerate() {
            let changed = sent.iter().zip(got).filter(|(a, b)| a != b).count();
            assert_eq!(changed, 1, "{what}, datagram {i}: {changed} bytes changed");
        }
    }
    assert_eq!(untouched.received, untouched.sent, "the bystander's datagrams were damaged or lost");
    assert_eq!(out.counter("corrupted_payload"), u64::from(2 * N), "{out}");
}

/// Whether bridged IPv4 frames of namespace `ns` go through netfilter
/// (`br_netfilter`, which Docker loads), which checks their headers.
fn bridge_checks_headers(ns: &str) -> bool {
    pygocentrus_tests::in_netns(ns, || std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables"))
        .is_ok_and(|v| v.trim() == "1")
}

#[test]
fn corrupt_is_a_checksum_error_where_the_damaged_header_is_checked() {
    let (lab, target, peer, bystander) = trio("epcsum");
    let to_target = UdpFlow::new(&peer, 0, &target, PORT, false);
    let from_target = to_target.reversed();
    let spared = UdpFlow::new(&bystander, 0, &peer, OTHER_PORT, false);
    let read = || [&target.ns, &peer.ns, lab.host()].map(NetCounters::read);
    let before = read();
    let tool = lab.attach(&on(&target, args!["--proto", "udp", "--corrupt", 100, "--json"]));
    let (to, from, untouched) = (to_target.exchange(N), from_target.exchange(N), spared.exchange(N));
    let out = tool.terminate();
    let after = read();
    let [at_target, at_peer, at_bridge] = [0, 1, 2].map(|i| before[i].growth(&after[i], "IpExt:InCsumErrors"));

    assert_eq!((to.received(), from.received()), (0, 0), "corrupted datagrams reached an application");
    assert_eq!(untouched.received(), untouched.sent(), "the bystander's datagrams were lost");
    assert_eq!(out.counter("corrupted"), u64::from(2 * N), "{out}");
    // Exactly the target's datagrams, one error each (nothing else in
    // these private namespaces makes checksum errors). Those to the target
    // are damaged after the bridge: the target's kernel counts them. Those
    // from it are damaged before the bridge, which discards them itself
    // when it checks IP headers, or else the peer's kernel does.
    assert_eq!(at_target, u64::from(N), "checksum errors at the target\n{out}");
    let expected = if bridge_checks_headers(lab.host()) { (0, u64::from(N)) } else { (u64::from(N), 0) };
    assert_eq!((at_peer, at_bridge), expected, "checksum errors at the peer, at the bridge\n{out}");
}

#[test]
fn reset_refuses_connections_to_and_from_the_target_only() {
    let (lab, target, peer, bystander) = trio("eprst");
    let _at_target = tcp_listener(&target, false, PORT);
    let _at_peer = tcp_listener(&peer, false, PORT);
    let tool = lab.attach(&on(&target, args!["--proto", "tcp", "--reset", 100]));
    // The SYN-ACK becomes a reset, whichever side the target is on.
    let inbound = tcp_connect(&peer, target.addr(false, PORT), Duration::from_secs(10));
    let outbound = tcp_connect(&target, peer.addr(false, PORT), Duration::from_secs(10));
    let spared = tcp_connect(&bystander, peer.addr(false, PORT), Duration::from_secs(10));
    tool.terminate();

    for (what, result) in [("peer to target", inbound), ("target to peer", outbound)] {
        let err = result.expect_err(&format!("{what}: connect succeeded under --reset 100"));
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{what}: connect failed otherwise: {err}");
    }
    spared.expect("the bystander could not connect to the peer");
}

#[test]
fn port_and_ip_keep_their_meaning_and_only_the_targets_traffic_is_judged() {
    let (lab, target, peer, bystander) = trio("epfilt");
    let to_target = UdpFlow::new(&peer, 0, &target, PORT, false);
    let from_target = UdpFlow::new(&target, 0, &peer, PORT, false);
    let other_port = UdpFlow::new(&target, 0, &peer, OTHER_PORT, false);
    // The same port, between two other containers of the bridge.
    let same_port_elsewhere = UdpFlow::new(&peer, 0, &bystander, PORT, false);
    let tool = lab.attach(&on(&target, args!["--port", PORT, "--proto", "udp", "--drop", 100]));
    let hit = [to_target.exchange(N), from_target.exchange(N)];
    let spared = [other_port.exchange(N), same_port_elsewhere.exchange(N)];
    tool.terminate();
    assert!(hit.iter().all(|x| x.received() == 0), "datagrams to or from port {PORT} of the target's flows arrived");
    assert!(spared.iter().all(|x| x.received() == x.sent()), "spared datagrams were lost");

    // --ip: only the target's exchanges with that address.
    let with_bystander = UdpFlow::new(&target, 0, &bystander, OTHER_PORT, false);
    let tool = lab.attach(&on(&target, args!["--ip", bystander.ip4, "--proto", "udp", "--drop", 100]));
    let (hit, spared, elsewhere) =
        (with_bystander.exchange(N), other_port.exchange(N), same_port_elsewhere.exchange(N));
    tool.terminate();
    assert_eq!(hit.received(), 0, "datagrams from the target to --ip arrived");
    assert_eq!(spared.received(), spared.sent(), "datagrams from the target to another address were lost");
    assert_eq!(elsewhere.received(), elsewhere.sent(), "--ip's own traffic with others was judged");
}

/// Runs until SIGTERM with `hook`, and checks nothing is left.
fn sigterm_leaves_nothing(tag: &str, hook: &str) {
    let (lab, target, peer, _) = trio(tag);
    let tool = lab.attach(&on(&target, args!["--drop", 100, "--hook", hook]));
    assert_only_hooked(&lab, &target, hook);
    let flow = UdpFlow::new(&peer, 0, &target, PORT, false);
    assert_eq!(flow.exchange(20).received(), 0, "the rule was not in force");
    let out = tool.terminate();
    assert!(out.stderr_has("every hook removed"), "no word of detaching:\n{out}");
    lab.assert_clean(&format!("after SIGTERM ({hook})"), Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the tool ended");
}

#[test]
fn sigterm_on_tcx_removes_the_hooks_of_the_targets_veth() {
    pygocentrus_tests::require_tcx!();
    sigterm_leaves_nothing("eptermtcx", "tcx");
}

#[test]
fn sigterm_on_netlink_removes_the_hooks_of_the_targets_veth() {
    sigterm_leaves_nothing("eptermnl", "netlink");
}

#[test]
fn sigkill_on_netlink_is_cleaned_by_the_guard_or_else_by_the_next_run() {
    let (lab, target, peer, _) = trio("epkillnl");
    let flow = UdpFlow::new(&peer, 0, &target, PORT, false);
    let run = on(&target, args!["--proto", "udp", "--drop", 100, "--hook", "netlink"]);
    // Killed alone: its guard takes the filters off.
    let out = lab.attach(&run).stop(Signal::SIGKILL);
    assert!(out.stderr_has("ended without detaching"), "the guard said nothing:\n{out}");
    lab.assert_clean("after SIGKILL", Duration::from_secs(2));

    // Killed with its guard: cls_bpf filters outlive both, and keep dropping.
    let tool = lab.attach(&run);
    tool.kill_with_guard();
    assert_only_hooked(&lab, &target, "netlink");
    assert_eq!(flow.exchange(20).received(), 0, "the orphaned filters stopped dropping");

    let tool = lab.attach(&run);
    let said = format!("removed hooks a killed earlier run left on {}", target.port);
    assert!(tool.stderr().iter().any(|l| l.contains(&said)), "no '{said}' in {:#?}", tool.stderr());
    let hooks = lab.hooks(&target.port);
    assert_eq!(hooks.filters.iter().filter(|f| f.contains(PROG_INGRESS)).count(), 1, "hooked twice: {hooks:#?}");
    tool.terminate();
    lab.assert_clean("after the run that cleaned up", Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the clean-up");
}

#[test]
fn a_pid_targets_the_namespace_of_that_process_while_it_lives() {
    let (lab, target, peer, bystander) = trio("eppid");
    let mut inside = Sleeper::start(&target);
    let pid = inside.pid();
    let flow = UdpFlow::new(&peer, 0, &target, PORT, false);
    let spared = UdpFlow::new(&bystander, 0, &peer, PORT, false);
    let tool = lab.attach(&args!["--netns", pid, "--proto", "udp", "--drop", 100]);
    assert_only_hooked(&lab, &target, pygocentrus_tests::auto_hook());
    let (hit, kept) = (flow.exchange(N), spared.exchange(N));
    assert_eq!(hit.received(), 0, "datagrams to the process's namespace arrived");
    assert_eq!(kept.received(), kept.sent(), "datagrams elsewhere were lost");

    // The process ends, its namespace lives on (`ip netns` holds it): the
    // target is the namespace, still hooked.
    inside.stop();
    assert_eq!(flow.exchange(N).received(), 0, "the namespace was let go when the process ended");
    // The namespace goes too (the test's socket in it kept it alive as
    // well): nothing is left to judge, the run ends.
    drop(flow);
    lab.delete_netns(&target);
    let out = tool.wait(TOOL_TIMEOUT);
    out.assert_exit(0);
    assert!(out.stderr_has(&format!("process {pid} has exited")), "no word of the process:\n{out}");
    lab.assert_clean("after the namespace went away", Duration::ZERO);
}

/// A `sleep` in the namespace of a container: a PID that leads there.
struct Sleeper(Child);

impl Sleeper {
    fn start(c: &Container) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &c.ns, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting a process in {}: {e}", c.ns));
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn stop(&mut self) {
        self.0.kill().unwrap_or_else(|e| panic!("killing {}: {e}", self.0.id()));
        self.0.wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.0.id()));
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A veth the namespace gains while the tool runs is hooked, with `hook`.
fn new_veths_are_followed(tag: &str, hook: &str) {
    let (lab, target, peer, _) = trio(tag);
    let flow = UdpFlow::new(&peer, 0, &target, PORT, false);
    let tool = lab.attach(&on(&target, args!["--proto", "udp", "--drop", 100, "--hook", hook]));
    lab.replug(&target);
    let said = format!("hooked {} of netns", target.port);
    assert!(tool.wait_stderr(&said, Duration::from_secs(10)).is_some(), "no '{said}' in {:#?}", tool.stderr());
    assert_only_hooked(&lab, &target, hook);
    assert_eq!(flow.exchange(N).received(), 0, "datagrams to the target's new veth arrived");
    tool.terminate();
    lab.assert_clean("after SIGTERM", Duration::ZERO);
}

#[test]
fn a_veth_the_namespace_gains_is_hooked() {
    new_veths_are_followed("epnew", pygocentrus_tests::auto_hook());
}

#[test]
fn a_veth_the_namespace_gains_is_hooked_on_netlink_too() {
    new_veths_are_followed("epnewnl", "netlink");
}

#[test]
fn the_run_ends_when_the_namespace_goes_away() {
    let (lab, target, peer, bystander) = trio("epgone");
    let tool = lab.attach(&on(&target, args!["--drop", 100, "--hook", "netlink"]));
    lab.delete_netns(&target);
    let out = tool.wait(TOOL_TIMEOUT);
    out.assert_exit(0);
    assert!(out.stderr_has("no longer exists"), "no word of the namespace:\n{out}");
    assert!(out.stderr_has("every hook removed"), "no word of detaching:\n{out}");
    lab.assert_clean("after the namespace went away", Duration::ZERO);
    let flow = UdpFlow::new(&peer, 0, &bystander, PORT, false);
    assert_eq!(flow.exchange(20).received(), 20, "traffic between the others does not flow");
}
