//! --config: several rules from a TOML file, each with its own target,
//! faults and counters; bad files refused like bad flags.

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
        tool.wait_stderr("attached", std::time::Duration::ZERO).is_some_and(|l| l.contains("; udp from")),
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
}
