//! Bad input: one line on stderr, exit status 2, nothing attached.

use std::time::Duration;

use pygocentrus_tests::{BRIDGE, Lab, Outcome, TOOL_TIMEOUT, args};

use crate::PORT;

/// Panics unless the run was refused as bad input: status 2, exactly one
/// line on stderr, nothing on stdout, and no hook anywhere in the lab.
pub(crate) fn assert_refused(lab: &Lab, case: &str, out: &Outcome) {
    assert_eq!(out.status.code(), Some(2), "{case}: wrong exit status:\n{out}");
    assert_eq!(out.stderr.len(), 1, "{case}: not one line on stderr:\n{out}");
    assert!(out.stderr[0].starts_with("pygocentrus: "), "{case}: unexpected message:\n{out}");
    assert!(out.stdout.is_empty(), "{case}: printed on stdout:\n{out}");
    lab.assert_clean(case, Duration::ZERO);
}

#[test]
fn bad_input_is_refused_in_one_line_with_status_2() {
    let lab = Lab::new("usage", 2);
    let cases = [
        ("unknown interface", args!["--iface", "nosuch0", "--port", PORT, "--drop", 5]),
        ("--drop 101", args!["--iface", BRIDGE, "--port", PORT, "--drop", 101]),
        ("no fault", args!["--iface", BRIDGE, "--port", PORT]),
        ("no target", args!["--iface", BRIDGE, "--drop", 5]),
        ("--reset on UDP", args!["--iface", BRIDGE, "--port", PORT, "--proto", "udp", "--reset", 10]),
        ("--reset-after on UDP", args!["--iface", BRIDGE, "--port", PORT, "--proto", "udp", "--reset-after", "1kb"]),
        ("--unplug-after without a unit", args!["--iface", BRIDGE, "--port", PORT, "--unplug-after", 10]),
        ("--reset-after 1.5pkt", args!["--iface", BRIDGE, "--port", PORT, "--reset-after", "1.5pkt"]),
        ("an unknown TCP flag", args!["--iface", BRIDGE, "--port", PORT, "--tcp-flags", "syn,nope", "--drop", 5]),
        (
            "--tcp-flags on UDP",
            args!["--iface", BRIDGE, "--port", PORT, "--proto", "udp", "--tcp-flags", "syn", "--drop", 5],
        ),
        ("--tcp-flags without a fault", args!["--iface", BRIDGE, "--port", PORT, "--tcp-flags", "syn"]),
        (
            "--per-connection without a share",
            args!["--iface", BRIDGE, "--port", PORT, "--per-connection", "--rate", "1mbit"],
        ),
    ];
    for (case, args) in &cases {
        assert_refused(&lab, case, &lab.run(args));
    }
}

#[test]
fn endpoints_that_cannot_be_resolved_are_refused_in_one_line_with_status_2() {
    let lab = Lab::new("epusage", 2);
    let target = lab.container(0);
    let cases = [
        ("no such namespace file", args!["--netns", "/var/run/netns/pyg-no-such-netns", "--drop", 5]),
        ("not a namespace", args!["--netns", "/etc/hostname", "--drop", 5]),
        ("no such process", args!["--netns", u32::MAX, "--drop", 5]),
        // The tool runs in the lab's host namespace: no veth of its own.
        ("its own namespace", args!["--netns", lab.host_netns_path(), "--drop", 5]),
        // The machine's namespace: no veth of it leads to the lab's host.
        ("a namespace without a veth here", args!["--netns", "/proc/1/ns/net", "--drop", 5]),
        ("--netns with --iface", args!["--iface", BRIDGE, "--netns", target.netns_path(), "--drop", 5]),
        ("--netns with --container", args!["--container", "web", "--netns", target.netns_path(), "--drop", 5]),
        // Docker's API would read it as another path (with or without Docker).
        ("a container name that is a path", args!["--container", "../../info", "--drop", 5]),
        ("a container name with a '#'", args!["--container", "web#x", "--drop", 5]),
        ("--reset on UDP", args!["--netns", target.netns_path(), "--proto", "udp", "--reset", 5]),
    ];
    for (case, args) in &cases {
        assert_refused(&lab, case, &lab.run(args));
    }
    // Refused for its grammar, before Docker is asked (and if it runs).
    let out = lab.run(&args!["--container", "../../info", "--drop", 5]);
    assert!(out.stderr_has("not a container name"), "the message does not say what is wrong:\n{out}");
    // A FIFO: opening it to see what it is blocked for ever.
    let fifo = std::env::temp_dir().join(format!("pyg-netns-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = lab.run(&args!["--netns", fifo.display(), "--drop", 5]);
    std::fs::remove_file(&fifo).unwrap();
    assert_refused(&lab, "a FIFO", &out);
    assert!(out.stderr[0].contains("not a network namespace"), "the message does not say what is wrong:\n{out}");
    // Without Docker's socket (DOCKER_HOST names one that does not exist).
    let out =
        lab.run_env(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")], &args!["--container", "web", "--drop", 5]);
    assert_refused(&lab, "no Docker socket", &out);
    assert!(out.stderr[0].contains("no Docker socket"), "the message does not say what is missing:\n{out}");
}

#[test]
fn an_unprivileged_user_is_refused_in_one_line_with_status_2() {
    let lab = Lab::new("noroot", 2);
    let out = lab.spawn_unprivileged(&args!["--iface", BRIDGE, "--port", PORT, "--drop", 5]).wait(TOOL_TIMEOUT);
    assert_refused(&lab, "not root", &out);
    assert!(out.stderr[0].contains("root"), "the message does not say what is missing:\n{out}");
}
