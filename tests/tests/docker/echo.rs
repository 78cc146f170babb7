//! `examples/echo/docker-compose.yml`: the echo client under `--reset`
//! (the server "crashes" under an open connection) and
//! `--corrupt-payload` (echoes come back damaged).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use pygocentrus_common::PROG_INGRESS;

use crate::{
    compose::{Stack, exit_code, follow_stderr, logs, run_ok},
    hooked_with,
};

const BRIDGE: &str = "pyg-echo0";

/// Each message's outcome (`ok`, `mismatch`, `ECONNRESET`...), in order.
fn outcomes(report: &[String]) -> Vec<String> {
    report
        .iter()
        .filter(|l| l.starts_with("message "))
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn echo_client_sees_resets_and_damaged_echoes() {
    if !crate::engine::ready() {
        return;
    }
    let stack = Stack::new("echo", "examples/echo/docker-compose.yml", BRIDGE);
    stack.up(&["echo-server"], &[]);

    // --reset on what the server sends, attached while the client's
    // connection is open: that connection gets ECONNRESET, and the new
    // ones it opens next are refused (their SYN-ACK becomes a reset).
    // Through clsact filters (--hook netlink), the path of kernels without
    // TCX, whose hooks only pygocentrus itself can take off again.
    let client = stack.spawn(
        "echo-client",
        // 200 messages, 20 s: room for `compose up` (slow with v1) and the
        // attach after the first answer, with messages left to refuse.
        &[("COUNT", "200"), ("INTERVAL", "100ms"), ("TIMEOUT", "1s"), ("CONNECT", "once"), ("START_DELAY", "0")],
    );
    client.wait_line(|l| l.starts_with("message ") && l.contains(": ok "), Duration::from_secs(60));
    stack.up(&["pygocentrus"], &[("PYGOCENTRUS_ARGS", "--port 12345 --direction from --reset 100 --hook netlink")]);
    let id = stack.wait_attached();
    for (port, h) in stack.port_hooks() {
        assert!(hooked_with(&h, "netlink"), "port {port} of {BRIDGE} is not hooked: {h:#?}");
    }
    let errors = client.errors();
    let (status, report) = client.finish(Duration::from_secs(120));
    assert!(status.success(), "echo-client: {status}\n{report:#?}\nstderr: {errors:#?}");
    let seen = outcomes(&report);
    assert_eq!(seen.len(), 200, "{report:#?}");
    let first_failure = seen.iter().position(|o| o != "ok").unwrap_or_else(|| panic!("no failure:\n{report:#?}"));
    assert!(first_failure > 0, "the first message failed, before pygocentrus ran:\n{report:#?}");
    assert_eq!(seen[first_failure], "ECONNRESET", "the open connection was not reset:\n{report:#?}");
    let after = &seen[first_failure + 1..];
    assert!(!after.is_empty(), "pygocentrus attached too late to see new connections:\n{report:#?}");
    // Every connect after it fails. Most are refused; a few may time out
    // instead: the server keeps each refused attempt half-open (SYN-RECV)
    // for about a minute, and when the client picks one of those source
    // ports again, the server answers its SYN with an ACK of the old
    // attempt, which becomes a reset the client rejects (README, --reset).
    // Seen: 2 in 171 in CI, 1 in 600 in a lab at this pace; up to 1 in 10
    // is allowed, far below what a reset that did not happen would give.
    let refused = after.iter().filter(|o| *o == "ECONNREFUSED").count();
    let timeouts = after.iter().filter(|o| *o == "timeout").count();
    let unusual: Vec<_> = report.iter().filter(|l| !l.contains(": ok ") && !l.contains(": ECONNREFUSED ")).collect();
    assert_eq!(refused + timeouts, after.len(), "after the reset, not refused nor timed out:\n{unusual:#?}");
    assert!(timeouts * 10 <= after.len(), "after the reset, too many timeouts:\n{unusual:#?}");

    stack.stop("pygocentrus");
    let log = logs(&id);
    assert!(log.iter().any(|l| l == &format!("detached from {BRIDGE}: every hook removed")), "{log:#?}");
    assert_eq!(exit_code(&id), 0, "{log:#?}");
    for (port, h) in stack.port_hooks() {
        assert!(h.is_empty(), "port {port} still carries hooks after SIGTERM: {h:#?}");
    }

    // --corrupt-payload on what the client sends: the server echoes the
    // damaged bytes, and the client sees every echo differ. Through clsact
    // filters again, and first killed (SIGKILL: no clean-up of its own):
    // its guard process (`pygocentrus guard`, which `pid: host` keeps alive
    // past the container's end) sees the run gone and removes its filters.
    let corrupt = [("PYGOCENTRUS_ARGS", "--port 12345 --direction to --corrupt-payload 100 --hook netlink")];
    stack.up(&["pygocentrus"], &corrupt);
    let killed = stack.wait_attached();
    for (port, h) in stack.port_hooks() {
        assert!(hooked_with(&h, "netlink"), "port {port} of {BRIDGE} is not hooked: {h:#?}");
    }
    run_ok(Command::new("docker").args(["kill", "-s", "KILL", &killed]));
    // The guard acts within milliseconds of the pipe closing; 10 s allows
    // for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.port_hooks().iter().any(|(_, h)| !h.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (port, h) in stack.port_hooks() {
        assert!(h.is_empty(), "port {port}: the killed run's filters outlived its guard: {h:#?}");
    }
    stack.up(&["pygocentrus"], &corrupt);
    let id = stack.wait_attached();
    for (port, h) in stack.port_hooks() {
        assert_eq!(h.filters.iter().filter(|f| f.contains(PROG_INGRESS)).count(), 1, "{port}: {h:#?}");
        assert!(hooked_with(&h, "netlink"), "port {port} of {BRIDGE} is not hooked: {h:#?}");
    }
    let report = stack.run("echo-client", &[("COUNT", "10"), ("INTERVAL", "0"), ("START_DELAY", "0")]);
    let seen = outcomes(&report);
    assert_eq!(seen.len(), 10, "{report:#?}");
    assert!(seen.iter().all(|o| o == "mismatch"), "{report:#?}");

    let follower = follow_stderr(&id);
    follower.wait_line(|l| l.starts_with("attached"), Duration::from_secs(30));
    stack.down();
    let (_, log) = follower.finish(Duration::from_secs(60));
    let summary = log.iter().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary: {log:#?}"));
    assert!(crate::count(summary, "corrupted-payload").is_some_and(|n| n >= 10), "{summary}");
    assert!(log.iter().any(|l| l == &format!("detached from {BRIDGE}: every hook removed")), "{log:#?}");
}
