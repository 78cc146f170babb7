//! The library: a [`Session`] in the test's own process, attached to the
//! lab's bridge (or a container's veths) from the lab's host namespace,
//! with its faults changed live and everything taken off when it is
//! dropped: also when the test panics, and (by its guard) when the test
//! process is killed.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use pygocentrus::{Faults, HookMode, Proto, Session, Target};
use pygocentrus_tests::{
    BRIDGE, Lab, TOOL_TIMEOUT, Tool, UdpFlow, auto_hook, binary, echo_server, echoes, tcp_connect, tcp_listener,
};

use crate::PORT;

/// The lab's bridge, seen from its host namespace; the guard is the binary
/// under test.
fn bridge(lab: &Lab) -> Target {
    Target::iface(BRIDGE).within(lab.host_netns_path()).guard(binary())
}

/// Panics unless every port of the bridge carries the hooks of `hook`.
fn assert_hooked(lab: &Lab, hook: &str) {
    for (port, hooks) in lab.port_hooks() {
        assert!(hooks.hooked_with(hook), "port {port} is not hooked with {hook}: {hooks:#?}");
    }
}

/// How long an echo may take on a clean path, and how long one is waited
/// for under a drop of 100% (none can come: the wait only bounds the test).
const ECHO: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_millis(500);

#[test]
fn faults_change_live_on_the_same_hooks_and_an_open_connection_lives_on() {
    let (lab, client, server) = Lab::pair("sessl");
    echo_server(tcp_listener(&server, false, PORT));
    let upstream = server.addr(false, PORT);
    let mut conn = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting");

    let session = Session::attach(bridge(&lab), Faults::none()).expect("attaching a session");
    assert_hooked(&lab, auto_hook());
    assert!(echoes(&mut conn, b"clean", ECHO), "no echo with no fault");
    let clean = session.counters().expect("reading the counters");
    assert!(clean.rules().is_empty(), "{clean}");
    assert!(clean.seen() >= 2, "the classifier saw not even the echo: {clean}");

    // Every packet to or from the server's port vanishes, at once...
    let blackout = Faults::rule().ip(server.ip4).port(PORT).proto(Proto::Tcp).drop(100.0);
    session.set_faults(blackout).expect("setting a drop of 100%");
    assert!(!echoes(&mut conn, b"lost", SILENCE), "an echo came through a drop of 100%");
    let during = session.counters().expect("reading the counters");
    assert_eq!(during.rules().len(), 1, "{during}");
    let dropped = during.rules()[0].dropped;
    assert!(dropped >= 1, "the rule dropped nothing: {during}");
    assert_eq!(during.rules()[0].passed, 0, "a packet passed a drop of 100%: {during}");

    // ...and once it is gone, TCP resends what was lost on the same
    // connection: it was never reset nor made again.
    session.set_faults(Faults::none()).expect("removing the faults");
    let mut late = [0u8; 4];
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("setting a read timeout");
    std::io::Read::read_exact(&mut conn, &mut late).expect("the connection did not survive the blackout");
    assert_eq!(&late, b"lost");
    assert!(echoes(&mut conn, b"after", ECHO), "no echo after the faults went");
    let after = session.counters().expect("reading the counters");
    assert!(after.rules().is_empty(), "{after}");
    assert!(after.seen() > during.seen(), "the classifier stopped counting: {during} then {after}");
    // The hooks were never touched: still the same two per port.
    assert_hooked(&lab, auto_hook());

    drop(session);
    lab.assert_clean("after the session was dropped", Duration::ZERO);
    assert!(echoes(&mut conn, b"detached", ECHO), "no echo after detaching");
}

#[test]
fn invalid_faults_are_refused_and_the_ones_in_force_stay() {
    let (lab, client, server) = Lab::pair("sessbad");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let drop_all = Faults::parse(&format!("--ip {} --port {PORT} --proto udp --drop 100", server.ip4)).expect("flags");
    let session = Session::attach(bridge(&lab), drop_all).expect("attaching a session");
    assert_eq!(flow.exchange(50).received(), 0, "datagrams passed a drop of 100% set at attach");
    for (bad, needle) in [
        (Faults::rule().port(PORT).proto(Proto::Udp).reset(100.0), "--reset needs TCP"),
        (Faults::rule().port(PORT).drop(150.0), "outside 0-100"),
        (Faults::rule().port(PORT).drop(5.0).and(Faults::rule().port(PORT).drop(7.0)), "both match"),
    ] {
        let e = session.set_faults(bad).expect_err("invalid faults were accepted");
        assert!(e.to_string().contains(needle), "{e:#}");
    }
    assert_eq!(flow.exchange(50).received(), 0, "a refused change changed the faults");
    let counters = session.counters().expect("reading the counters");
    assert_eq!(counters.rules()[0].dropped, 100, "{counters}");
    let e = Session::attach(Target::iface("nosuch0").within(lab.host_netns_path()), Faults::none())
        .err()
        .expect("attached to an interface that does not exist");
    assert!(e.to_string().contains("unknown interface 'nosuch0'"), "{e:#}");
    drop(session);
    lab.assert_clean("after the session was dropped", Duration::ZERO);
    assert_eq!(flow.exchange(50).received(), 50, "datagrams were lost after detaching");
}

/// A test that panics while its session is attached (with `hook`) leaves
/// nothing: the session detaches as the panic unwinds.
fn a_panic_leaves_nothing(tag: &str, hook: HookMode, hook_name: &str) {
    let (lab, client, server) = Lab::pair(tag);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let failed = catch_unwind(AssertUnwindSafe(|| {
        let session = Session::attach(bridge(&lab).hook(hook), Faults::none()).expect("attaching a session");
        session.set_faults(Faults::rule().port(PORT).proto(Proto::Udp).drop(100.0)).expect("setting a drop");
        // The check below must be able to see hooks, or it proves nothing.
        assert_hooked(&lab, hook_name);
        assert_eq!(flow.exchange(20).received(), 0, "the drop was not in force");
        panic!("the test under the session fails here");
    }));
    let panic = failed.expect_err("the closure panics");
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"the test under the session fails here"));
    lab.assert_clean("after a panic in the session's scope", Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the panic");
}

#[test]
fn a_test_that_panics_in_a_session_leaves_no_hook() {
    a_panic_leaves_nothing("sesspanic", HookMode::Auto, auto_hook());
}

#[test]
fn a_test_that_panics_in_a_session_leaves_no_filter_or_clsact() {
    // Filters outlive their process: only the session's detach removes them.
    a_panic_leaves_nothing("sesspanicnl", HookMode::Netlink, "netlink");
}

/// What tells [`hold_a_session_until_killed`] which lab to attach to.
const HOLD_ENV: &str = "PYG_TEST_SESSION_NETNS";
/// How long the holder waits to be killed before it gives up.
const HOLD_AT_MOST: Duration = Duration::from_secs(120);

/// Not a test of its own: the process that
/// `a_killed_test_process_is_cleaned_up_after_by_the_guard` starts, which
/// attaches with netlink hooks (they outlive it) and waits to be killed.
#[test]
#[ignore = "a helper: run by a_killed_test_process_is_cleaned_up_after_by_the_guard in a process of its own"]
fn hold_a_session_until_killed() {
    let Ok(host) = std::env::var(HOLD_ENV) else { return };
    let target = Target::iface(BRIDGE).within(host).guard(binary()).hook(HookMode::Netlink);
    let _session =
        Session::attach(target, Faults::rule().port(PORT).proto(Proto::Udp).drop(100.0)).expect("attaching a session");
    let start = Instant::now();
    while start.elapsed() < HOLD_AT_MOST {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_test_process_is_cleaned_up_after_by_the_guard() {
    let (lab, client, server) = Lab::pair("sesskill");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let host = lab.host_netns_path();
    let holder = Tool::spawn_test("session::hold_a_session_until_killed", &[(HOLD_ENV, host.as_str())]);
    if holder.wait_stderr("session attached", TOOL_TIMEOUT).is_none() {
        panic!("the test process did not attach:\n{}", holder.stop(Signal::SIGKILL));
    }
    assert!(holder.guard().is_some(), "the session started no guard");
    assert_hooked(&lab, "netlink");
    assert_eq!(flow.exchange(20).received(), 0, "the drop was not in force");

    let out = holder.stop(Signal::SIGKILL);
    // The guard has finished by the time the output ends: it shares stderr.
    assert!(out.stderr_has("ended without detaching; removed its hooks from"), "the guard said nothing:\n{out}");
    lab.assert_clean("after SIGKILL of a test process", Duration::from_secs(2));
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after SIGKILL");
}

#[test]
fn a_session_on_a_namespace_judges_only_its_traffic() {
    let lab = Lab::new("sessns", 3);
    let (client, server, bystander) = (lab.container(0), lab.container(1), lab.container(2));
    // The server's namespace, as `--netns`: every packet it sends or gets.
    let target = Target::netns(server.netns_path()).within(lab.host_netns_path()).guard(binary());
    let session = Session::attach(target, Faults::rule().drop(100.0)).expect("attaching a session");
    let to_server = UdpFlow::new(&client, 0, &server, PORT, false);
    let to_bystander = UdpFlow::new(&client, 0, &bystander, PORT, false);
    assert_eq!(to_server.exchange(50).received(), 0, "datagrams reached the namespace under a drop of 100%");
    assert_eq!(to_bystander.exchange(50).received(), 50, "another namespace's datagrams were lost");
    for (port, hooks) in lab.port_hooks() {
        assert_eq!(hooks.hooked_with(auto_hook()), port == server.port, "{port}: {hooks:#?}");
    }
    // Live changes keep the endpoint as their target.
    session.set_faults(Faults::rule().proto(Proto::Udp).port(PORT).drop(100.0)).expect("changing the faults");
    let other = UdpFlow::new(&client, 0, &server, PORT + 7, false);
    assert_eq!(other.exchange(50).received(), 50, "datagrams to another port were lost");
    assert_eq!(to_server.exchange(50).received(), 0, "datagrams to the port passed");
    drop(session);
    lab.assert_clean("after the session was dropped", Duration::ZERO);
}

#[test]
fn a_delay_set_live_holds_the_answers_back_and_goes_again() {
    let (lab, client, server) = Lab::pair("sessdelay");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let session = Session::attach(bridge(&lab), Faults::none()).expect("attaching a session");
    let delay = Faults::rule().ip(server.ip4).port(PORT).proto(Proto::Udp).delay(Duration::from_millis(50));
    if !session.has_fq() {
        // Refused, saying why, and nothing else changes.
        let e = session.set_faults(delay).expect_err("a delay without fq was accepted");
        assert!(e.to_string().contains("sch_fq"), "{e:#}");
        eprintln!("skipped the timing: this kernel has no fq qdisc (sch_fq); `cargo xtask vm-test` runs it");
        return;
    }
    // fq went in at attach, for delays set later.
    for (port, hooks) in lab.port_hooks() {
        assert!(hooks.fq, "no fq on {port}: {hooks:#?}");
    }
    session.set_faults(delay).expect("setting a delay");
    // A departure time is never early: each ping's two legs both pass a
    // 50 ms delay (the server sends from PORT). The upper bound is loose:
    // emulation under QEMU is slow.
    let slow = flow.ping(5);
    assert!(slow.iter().all(|d| *d >= Duration::from_millis(100)), "round trips under 100 ms: {slow:?}");
    assert!(slow.iter().all(|d| *d < Duration::from_millis(100) + Duration::from_secs(1)), "{slow:?}");
    let counters = session.counters().expect("reading the counters");
    assert!(counters.rules()[0].delayed >= 10, "{counters}");
    session.set_faults(Faults::none()).expect("removing the delay");
    // Under the delay none is under 100 ms (a departure time is never
    // early): the fastest of five under 50 ms shows it gone, and a stall of
    // the emulated CPU on one sample does not fail the test.
    let fast = flow.ping(5);
    assert!(
        fast.iter().min().is_some_and(|d| *d < Duration::from_millis(50)),
        "still slow without the delay: {fast:?}"
    );
    drop(session);
    lab.assert_clean("after the session was dropped (fq removed)", Duration::ZERO);
}
