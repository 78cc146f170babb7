//! --config: several rules from a TOML file, each with its own target,
//! faults and counters; bad files refused like bad flags.

use std::time::Duration;

use pygocentrus_tests::{BRIDGE, Lab, TempFile, UdpFlow, args};

use crate::{OTHER_PORT, PORT, usage::assert_refused};

/// Ports that no rule names.
const SPARED_PORT: u16 = 5002;
const SINK_PORT: u16 = 5003;

#[test]
fn a_config_file_attaches_several_rules_each_with_its_own_counters() {
    let (lab, client, server) = Lab::pair("config");
    let to_port = UdpFlow::new(&client, 0, &server, PORT, false);
    // Rule 2 names OTHER_PORT on the client, direction from: datagrams the
    // client sends from OTHER_PORT vanish, those to it pass.
    let from_other = UdpFlow::new(&client, OTHER_PORT, &server, SINK_PORT, false);
    let to_other = from_other.reversed();
    let spared = UdpFlow::new(&client, 0, &server, SPARED_PORT, false);
    let config = TempFile::new(
        "config",
        &format!(
            r#"
            # every datagram to the server's PORT
            [[rule]]
            ip = "{server}"
            port = {PORT}
            proto = "udp"
            drop = 100

            [[rule]]
            ip = "{client}"
            port = {OTHER_PORT}
            proto = "udp"
            direction = "from"
            drop = "100%"
            "#,
            server = server.ip4,
            client = client.ip4,
        ),
    );
    let tool = lab.attach(&args!["--iface", BRIDGE, "--config", config.path(), "--json"]);
    assert!(
        tool.wait_stderr("attached", Duration::ZERO).is_some_and(|l| l.contains("; udp from")),
        "the attach line does not list both rules: {:?}",
        tool.stderr()
    );
    let hit = to_port.exchange(200);
    let hit_from = from_other.exchange(150);
    let to = to_other.exchange(100);
    let free = spared.exchange(100);
    let out = tool.terminate();
    assert_eq!(hit.received(), 0, "datagrams to {}:{PORT} arrived", server.ip4);
    assert_eq!(hit_from.received(), 0, "datagrams from {}:{OTHER_PORT} arrived", client.ip4);
    assert_eq!(to.received(), 100, "datagrams to {}:{OTHER_PORT} were lost", client.ip4);
    assert_eq!(free.received(), 100, "datagrams to {}:{SPARED_PORT} were lost", server.ip4);
    let summary = out.summary();
    let rules = summary["rules"].as_array().unwrap_or_else(|| panic!("no rules in {summary}"));
    assert_eq!(rules.len(), 2, "{summary}");
    assert_eq!(rules[0]["dropped"], 200, "rule 1: {summary}");
    assert_eq!(rules[1]["dropped"], 150, "rule 2: {summary}");
}

#[test]
fn bad_config_files_are_refused_in_one_line_with_status_2() {
    let lab = Lab::new("cfgbad", 2);
    let cases = [
        ("unknown key", "[[rule]]\nport = 5000\ndorp = 5\n"),
        ("out of range", "[[rule]]\nport = 5000\ndrop = 101\n"),
        ("no fault", "[[rule]]\nport = 5000\n"),
        ("no rule", "# nothing\n"),
        ("not TOML", "[[rule]\n"),
        ("overlap", "[[rule]]\nport = 5000\ndrop = 5\n[[rule]]\nport = 5000\nproto = \"udp\"\nreset = 5\n"),
    ];
    for (case, text) in cases {
        let file = TempFile::new("cfgbad", text);
        assert_refused(&lab, case, &lab.run(&args!["--iface", BRIDGE, "--config", file.path()]));
    }
    let out = lab.run(&args!["--iface", BRIDGE, "--config", "/nonexistent/pyg.toml"]);
    assert_refused(&lab, "no such file", &out);
    let file = TempFile::new("cfgbad", "[[rule]]\nport = 5000\ndrop = 5\n");
    let out = lab.run(&args!["--iface", BRIDGE, "--config", file.path(), "--port", PORT, "--drop", 5]);
    assert_refused(&lab, "flags and a file", &out);

    // A file over the cap is refused before it is read, and says so.
    let big = TempFile::new("cfgbad", &format!("[[rule]]\nport = 5000\ndrop = 5\n#{}\n", "x".repeat(8 << 20)));
    let out = lab.run(&args!["--iface", BRIDGE, "--config", big.path()]);
    assert_refused(&lab, "a file over 8 MiB", &out);
    assert!(out.stderr[0].contains("larger than 8 MiB"), "the message does not give the cap:\n{out}");
    // A long bad value is not repeated whole: the line stays short.
    let long = TempFile::new("cfgbad", &format!("[[rule]]\nport = 5000\ndrop = 5\nip = \"{}\"\n", "A".repeat(1 << 20)));
    let out = lab.run(&args!["--iface", BRIDGE, "--config", long.path()]);
    assert_refused(&lab, "a long bad value", &out);
    assert!(out.stderr[0].len() < 1000, "a line of {} bytes", out.stderr[0].len());
    assert!(out.stderr[0].contains("line 4"), "the message lost where the value is:\n{out}");
    // A FIFO is refused, not waited on.
    let fifo = std::env::temp_dir().join(format!("pyg-cfg-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = lab.run(&args!["--iface", BRIDGE, "--config", fifo.display()]);
    std::fs::remove_file(&fifo).unwrap();
    assert_refused(&lab, "a FIFO", &out);
}

#[test]
fn a_scheduled_three_phase_attack_runs_from_the_file_alone() {
    let (lab, client, server) = Lab::pair("cfgsched");
    let to_server = UdpFlow::new(&client, 0, &server, PORT, false);
    let from_server = to_server.reversed();
    let config = TempFile::new(
        "cfgsched",
        &format!(
            r#"
            [[phase]]
            name = "normal"
            duration = "2s"

            [[phase]]
            name = "blackout"
            duration = "2s"
            [[phase.rule]]
            ip = "{server}"
            port = {PORT}
            proto = "udp"
            behavior = "blackout"

            [[phase]]
            name = "hang"
            duration = "2s"
            [[phase.rule]]
            ip = "{server}"
            port = {PORT}
            proto = "udp"
            behavior = "hang"
            "#,
            server = server.ip4,
        ),
    );
    let tool = lab.attach(&args!["--iface", BRIDGE, "--config", config.path()]);
    // Each phase is announced once its rules are in force; 2 s leaves room
    // for the two exchanges (about 0.4 s each) within the phase.
    let phase = |needle: &str| {
        tool.wait_stderr(needle, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no '{needle}' announcement: {:?}", tool.stderr()));
        (to_server.exchange(50).received(), from_server.exchange(50).received())
    };
    assert_eq!(phase(" normal: no rule in force"), (50, 50), "normal traffic was hit");
    assert_eq!(phase(" blackout: udp to/from"), (0, 0), "traffic passed the blackout");
    // hang: requests arrive, answers vanish.
    assert_eq!(phase(" hang: udp from"), (50, 0), "hang did not blackhole exactly the answers");
    // No repeat: after the last phase, nothing is in force.
    assert_eq!(phase(" no phase: no rule in force"), (50, 50), "traffic was hit after the schedule");
    tool.terminate();
}

#[test]
fn a_flapping_rule_comes_and_goes() {
    let (lab, client, server) = Lab::pair("cfgflap");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let config = TempFile::new(
        "cfgflap",
        &format!(
            "[[rule]]\nip = \"{}\"\nport = {PORT}\nproto = \"udp\"\nbehavior = \"blackout\"\nflap = {{ on = \"2s\", off = \"2s\" }}\n",
            server.ip4
        ),
    );
    let tool = lab.attach(&args!["--iface", BRIDGE, "--config", config.path()]);
    let during_on = flow.exchange(50).received();
    tool.wait_stderr("no phase: no rule in force", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the rule did not go: {:?}", tool.stderr()));
    let during_off = flow.exchange(50).received();
    let out = tool.terminate();
    assert_eq!((during_on, during_off), (0, 50), "{out}");
}
