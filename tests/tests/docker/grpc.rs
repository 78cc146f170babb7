//! `examples/grpc-hello/docker-compose.yml`: the greeter client dials the
//! server's own address while pygocentrus, in its own container, drops
//! packets on the network's bridge.

use std::time::Duration;

use crate::{
    compose::{Stack, exit_code, follow_stderr, logs},
    count, hooked,
};

const BRIDGE: &str = "pyg-grpc0";

/// The client's report: each call's status code name, and its summary line.
fn calls(report: &[String]) -> (Vec<String>, String) {
    let codes = report
        .iter()
        .filter(|l| l.starts_with("call "))
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
        .collect();
    let summary = report.iter().find(|l| l.starts_with("summary: ")).cloned();
    (codes, summary.unwrap_or_else(|| panic!("no summary in the client's report:\n{}", report.join("\n"))))
}

#[test]
fn greeter_calls_fail_under_drop_100_and_mostly_succeed_under_the_default() {
    if !crate::engine::ready() {
        return;
    }
    let stack = Stack::new("grpc", "examples/grpc-hello/docker-compose.yml", BRIDGE);

    // --drop 100: not one call gets through.
    stack.up(&["greeter-server", "pygocentrus"], &[("PYGOCENTRUS_ARGS", "--port 50051 --drop 100")]);
    let id = stack.wait_attached();
    let hooks = stack.port_hooks();
    assert!(!hooks.is_empty(), "{BRIDGE} has no ports");
    for (port, h) in &hooks {
        assert!(hooked(h), "port {port} of {BRIDGE} is not hooked: {h:#?}");
    }
    let report =
        stack.run("greeter-client", &[("COUNT", "6"), ("INTERVAL", "0"), ("DEADLINE", "500ms"), ("START_DELAY", "0")]);
    let (codes, summary) = calls(&report);
    assert_eq!(codes.len(), 6, "{report:#?}");
    for code in &codes {
        assert!(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED", "a call ended with {code}:\n{report:#?}");
    }
    assert!(summary.contains("6 calls: 0 ok, 6 failed"), "{summary}");

    // compose stop: SIGTERM; pygocentrus detaches, exits 0, leaves nothing
    // on the ports (which are still there: the server runs on).
    stack.stop("pygocentrus");
    let log = logs(&id);
    assert!(log.iter().any(|l| l == &format!("detached from {BRIDGE}: every hook removed")), "{log:#?}");
    assert_eq!(exit_code(&id), 0, "{log:#?}");
    for (port, h) in stack.port_hooks() {
        assert!(h.is_empty(), "port {port} still carries hooks after SIGTERM: {h:#?}");
    }

    // The compose file's default, --drop 5: most calls succeed (a call
    // fails only if a segment is lost three times in a row, or the SYN
    // once), and pygocentrus counts drops: 200 calls on one HTTP/2
    // connection, at least two packets each (request and answer; ACKs may
    // ride on them), so no drop at all has a chance under 0.95^400 ≈ 1e-9.
    stack.up(&["pygocentrus"], &[]);
    let id = stack.wait_attached();
    let report = stack
        .run("greeter-client", &[("COUNT", "200"), ("INTERVAL", "10ms"), ("DEADLINE", "1s"), ("START_DELAY", "0")]);
    let (codes, _) = calls(&report);
    assert_eq!(codes.len(), 200, "{report:#?}");
    let ok = codes.iter().filter(|c| *c == "OK").count();
    assert!(ok > 100, "only {ok} of 200 calls succeeded under --drop 5:\n{report:#?}");
    for code in codes.iter().filter(|c| *c != "OK") {
        assert!(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED", "a call ended with {code}:\n{report:#?}");
    }

    // compose down: SIGTERM again; the summary counts the drops.
    let follower = follow_stderr(&id);
    follower.wait_line(|l| l.starts_with("attached"), Duration::from_secs(30));
    stack.down();
    let (_, log) = follower.finish(Duration::from_secs(60));
    let summary = log.iter().find(|l| l.starts_with("summary: ")).unwrap_or_else(|| panic!("no summary: {log:#?}"));
    assert!(count(summary, "dropped").is_some_and(|n| n > 0), "no drops counted: {summary}");
    assert!(log.iter().any(|l| l == &format!("detached from {BRIDGE}: every hook removed")), "{log:#?}");
    let bridge_left = std::process::Command::new("ip").args(["link", "show", "dev", BRIDGE]).output();
    assert!(bridge_left.is_ok_and(|o| !o.status.success()), "{BRIDGE} is still there after down");
}
