//! How a run starts and ends: hooks in place on every port (also ports that
//! join later), and nothing left afterwards, however the run ended.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use pygocentrus_common::{PROG_EGRESS, PROG_INGRESS};
use pygocentrus_tests::{BRIDGE, Lab, PortHooks, TOOL_TIMEOUT, UdpFlow, args, payload};
use serde_json::Value;

use crate::{OTHER_PORT, PORT, rule};

/// A rule that takes every UDP datagram to [`PORT`], hooked with `hook`.
fn drop_all(hook: &str) -> Vec<String> {
    rule("udp", None, args!["--drop", 100, "--hook", hook])
}

/// Whether `hooks` are what the tool puts on a port with `hook`.
fn hooked(hooks: &PortHooks, hook: &str) -> bool {
    match hook {
        "tcx" => !hooks.clsact && hooks.tcx == [format!("ingress:{PROG_INGRESS}"), format!("egress:{PROG_EGRESS}")],
        _ => {
            let has = |name: &str| hooks.filters.iter().any(|f| f.contains(name));
            hooks.clsact && has(PROG_INGRESS) && has(PROG_EGRESS) && hooks.tcx.is_empty()
        }
    }
}

/// Panics unless every port of the bridge, and only they, carry the hooks.
fn assert_ports_hooked(lab: &Lab, hook: &str) {
    for (port, hooks) in lab.port_hooks() {
        assert!(hooked(&hooks, hook), "port {port} is not hooked with {hook}: {hooks:#?}");
    }
    assert!(lab.hooks(BRIDGE).is_empty(), "the bridge itself was hooked");
}

/// Runs until `signal`, then checks the run ended well and took every hook
/// off: no TCX program, no filter, no clsact qdisc on any interface.
fn signal_leaves_nothing(tag: &str, hook: &str, signal: Signal) {
    let lab = Lab::new(tag, 2);
    let tool = lab.attach(&drop_all(hook));
    // The check below must be able to see hooks, or it proves nothing.
    assert_ports_hooked(&lab, hook);
    let out = tool.stop(signal);
    out.assert_exit(0);
    assert!(out.stderr_has("summary: "), "no summary:\n{out}");
    assert!(out.stderr_has("every hook removed"), "no word of detaching:\n{out}");
    lab.assert_clean(&format!("after {signal} ({hook})"), Duration::ZERO);
}

#[test]
fn sigterm_on_tcx_removes_every_hook() {
    pygocentrus_tests::require_tcx!();
    signal_leaves_nothing("termtcx", "tcx", Signal::SIGTERM);
}

#[test]
fn sigterm_on_netlink_removes_filters_and_clsact() {
    signal_leaves_nothing("termnl", "netlink", Signal::SIGTERM);
}

#[test]
fn sigint_on_netlink_removes_filters_and_clsact() {
    signal_leaves_nothing("intnl", "netlink", Signal::SIGINT);
}

#[test]
fn duration_ends_the_run_by_itself_and_leaves_nothing() {
    let lab = Lab::new("dur", 2);
    let mut run = drop_all("netlink");
    // Long enough to look at the hooks while they are in place, and for
    // counters to be printed once a second.
    run.extend(args!["--duration", "2s", "--json"]);
    let start = Instant::now();
    let tool = lab.attach(&run);
    // Netlink hooks outlive the process: only the tool can remove them.
    assert_ports_hooked(&lab, "netlink");
    let out = tool.wait(TOOL_TIMEOUT);
    let took = start.elapsed();
    out.assert_exit(0);
    assert!(took >= Duration::from_secs(2), "exited after {took:?}, before --duration 2s");
    // --json: counters and the summary as JSON lines on stdout, none as
    // text on stderr.
    let events: Vec<Value> = out.stdout.iter().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(events.iter().any(|e| e["event"] == "counters" && e["rules"][0]["id"] == 1), "no counters:\n{out}");
    assert_eq!(out.summary()["rules"][0]["id"], 1, "{out}");
    assert!(!out.stderr_has("classifier saw"), "counters on stderr too:\n{out}");
    lab.assert_clean("after --duration", Duration::ZERO);
}

/// How soon traffic must flow again after the tool is killed. TCX links
/// are released as the process exits, before the kill is reaped; 2 s covers
/// a loaded machine, and the 50 ms between datagrams.
const RECOVERY: Duration = Duration::from_secs(2);
const SEND_EVERY: Duration = Duration::from_millis(50);

#[test]
fn sigkill_on_tcx_lets_traffic_through_at_once() {
    pygocentrus_tests::require_tcx!();
    let lab = Lab::new("killtcx", 2);
    let flow = UdpFlow::new(&lab.container(0), 0, &lab.container(1), PORT, false);
    let tool = lab.attach(&drop_all("tcx"));
    assert_eq!(flow.exchange(20).received(), 0, "the rule was not in force");

    let sending = AtomicBool::new(true);
    let (first, killed_at) = std::thread::scope(|s| {
        s.spawn(|| {
            for seq in 0.. {
                if !sending.load(Ordering::Relaxed) {
                    break;
                }
                flow.send(&payload(seq));
                std::thread::sleep(SEND_EVERY);
            }
        });
        let killed_at = Instant::now();
        let out = tool.stop(Signal::SIGKILL);
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(9), "{out}");
        let first = flow.receive_one(RECOVERY.saturating_sub(killed_at.elapsed()));
        sending.store(false, Ordering::Relaxed);
        (first, killed_at)
    });
    assert!(first.is_some(), "nothing arrived within {RECOVERY:?} of SIGKILL");
    let took = killed_at.elapsed();
    assert!(took <= RECOVERY, "traffic resumed {took:?} after SIGKILL");
    lab.assert_clean("after SIGKILL (tcx)", RECOVERY);
}

#[test]
fn sigkill_on_netlink_the_guard_removes_filters_and_clsact() {
    let lab = Lab::new("killnl", 2);
    let flow = UdpFlow::new(&lab.container(0), 0, &lab.container(1), PORT, false);
    let tool = lab.attach(&drop_all("netlink"));
    assert!(tool.guard().is_some(), "no guard process on the netlink path");
    assert_ports_hooked(&lab, "netlink");
    let out = tool.stop(Signal::SIGKILL);
    // The guard has finished by the time the output ends: it shares stderr.
    assert!(out.stderr_has("ended without detaching; removed its hooks from"), "the guard said nothing:\n{out}");
    lab.assert_clean("after SIGKILL (netlink)", RECOVERY);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after SIGKILL");
}

#[test]
fn killed_with_its_guard_a_run_leaves_filters_that_the_next_run_removes() {
    let lab = Lab::new("killall", 2);
    let flow = UdpFlow::new(&lab.container(0), 0, &lab.container(1), PORT, false);
    let run = drop_all("netlink");
    let tool = lab.attach(&run);
    // As when a container's PID namespace ends: everything dies at once.
    tool.kill_with_guard();

    // The documented limitation: cls_bpf filters outlive their process, and
    // keep dropping.
    assert_ports_hooked(&lab, "netlink");
    assert_eq!(flow.exchange(20).received(), 0, "the orphaned filters stopped dropping");

    let tool = lab.attach(&run);
    let stderr = tool.stderr();
    for i in 0..2 {
        let port = lab.container(i).port;
        let said = format!("removed hooks a killed earlier run left on {port}");
        assert!(stderr.iter().any(|l| l.contains(&said)), "no '{said}' in {stderr:#?}");
    }
    // Hooked once again, not twice.
    for (port, hooks) in lab.port_hooks() {
        assert_eq!(hooks.filters.iter().filter(|f| f.contains(PROG_INGRESS)).count(), 1, "{port}: {hooks:#?}");
    }
    tool.terminate();
    lab.assert_clean("after the run that cleaned up", Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the clean-up");
}

/// In a container without `pid: host` every run is PID 1 and the end of
/// the container kills its guard too: the next run, PID 1 as well, must
/// still tell the dead run's filters from its own (a PID cannot).
#[test]
fn a_run_that_was_pid_1_is_cleaned_by_the_next_pid_1() {
    let lab = Lab::new("pid1", 2);
    let flow = UdpFlow::new(&lab.container(0), 0, &lab.container(1), PORT, false);
    let run = drop_all("netlink");
    let tool = lab.attach_as_pid_1(&run);
    // SIGKILL to PID 1 ends the namespace and kills the guard too, but the
    // guard may first see the run's pipe close and clean up (the kernel
    // closes PID 1's files before it kills the rest): kill it first, as in
    // `killed_with_its_guard...`.
    let guard = tool.inner_guard().expect("no guard process on the netlink path");
    nix::sys::signal::kill(guard, Signal::SIGKILL).expect("killing the guard");
    nix::sys::signal::kill(tool.inner(), Signal::SIGKILL).expect("killing PID 1");
    tool.wait(TOOL_TIMEOUT);
    assert_ports_hooked(&lab, "netlink");
    assert_eq!(flow.exchange(20).received(), 0, "the orphaned filters stopped dropping");

    let tool = lab.attach_as_pid_1(&run);
    let stderr = tool.stderr();
    for i in 0..2 {
        let said = format!("removed hooks a killed earlier run left on {}", lab.container(i).port);
        assert!(stderr.iter().any(|l| l.contains(&said)), "no '{said}' in {stderr:#?}");
    }
    for (port, hooks) in lab.port_hooks() {
        assert_eq!(hooks.filters.iter().filter(|f| f.contains(PROG_INGRESS)).count(), 1, "{port}: {hooks:#?}");
    }
    nix::sys::signal::kill(tool.inner(), Signal::SIGTERM).expect("stopping PID 1");
    tool.wait(TOOL_TIMEOUT).assert_exit(0);
    lab.assert_clean("after the second PID 1", Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the clean-up");
}

/// A port that joins the bridge while the tool runs is hooked (with
/// `hook`), and one that leaves it unhooked.
fn ports_follow_the_bridge(tag: &str, hook: &str) {
    let lab = Lab::new(tag, 2);
    let client = lab.container(0);
    let tool = lab.attach(&drop_all(hook));
    let newcomer = lab.add_container();
    let said = format!("hooked new port {}", newcomer.port);
    assert!(tool.wait_stderr(&said, Duration::from_secs(10)).is_some(), "no '{said}' in {:#?}", tool.stderr());
    assert!(hooked(&lab.hooks(&newcomer.port), hook), "{:#?}", lab.hooks(&newcomer.port));

    // On a bridge a packet is judged on the egress of the port it leaves
    // by: datagrams to the newcomer are dropped only if its port is hooked.
    let target = UdpFlow::new(&client, 0, &newcomer, PORT, false);
    let other = UdpFlow::new(&client, 0, &newcomer, OTHER_PORT, false);
    assert_eq!(target.exchange(100).received(), 0, "datagrams to the newcomer's port {PORT} arrived");
    assert_eq!(other.exchange(100).received(), 100, "the newcomer is not reachable");

    lab.unplug(&newcomer);
    let said = format!("{} left the bridge; unhooked", newcomer.port);
    assert!(tool.wait_stderr(&said, Duration::from_secs(10)).is_some(), "no '{said}' in {:#?}", tool.stderr());
    assert!(lab.hooks(&newcomer.port).is_empty(), "{:#?}", lab.hooks(&newcomer.port));
    tool.terminate();
    lab.assert_clean("after SIGTERM", Duration::ZERO);
}

#[test]
fn ports_that_join_the_bridge_are_hooked_and_ports_that_leave_unhooked() {
    ports_follow_the_bridge("hotplug", pygocentrus_tests::auto_hook());
}

#[test]
fn ports_that_join_or_leave_the_bridge_are_followed_on_netlink_too() {
    ports_follow_the_bridge("hotplugnl", "netlink");
}

#[test]
fn a_device_that_is_not_a_bridge_is_hooked_alone() {
    let (lab, client, server) = Lab::pair("device");
    let target = UdpFlow::new(&client, 0, &server, PORT, false);
    let other = UdpFlow::new(&client, 0, &server, OTHER_PORT, false);
    // The server's port, not the bridge.
    let tool = lab.attach(&args!["--iface", server.port, "--port", PORT, "--proto", "udp", "--drop", 100]);
    for (port, hooks) in lab.port_hooks() {
        let expected = port == server.port;
        assert_eq!(hooked(&hooks, pygocentrus_tests::auto_hook()), expected, "{port}: {hooks:#?}");
    }
    assert_eq!(target.exchange(100).received(), 0, "datagrams to port {PORT} arrived");
    assert_eq!(other.exchange(100).received(), 100, "datagrams to port {OTHER_PORT} were lost");
    tool.terminate();
    lab.assert_clean("after SIGTERM", Duration::ZERO);
}
