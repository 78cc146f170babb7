//! `serve`: the faults change through the API while the hooks stay, and
//! connections through the target live on. Driven by raw HTTP, by the
//! native client (`set`, `status`, `reset`) and by a stock Toxiproxy client
//! (toxiproxy-python, from PyPI).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use pygocentrus_common::Counter;
use pygocentrus_tests::{
    BRIDGE, Container, Lab, Reply, TempFile, UdpFlow, args, echo_server, echoes, http, tcp_connect, tcp_listener,
};
use serde_json::json;

use crate::{PORT, usage::assert_refused};

const API: &str = "127.0.0.1:8474";

fn api(lab: &Lab, method: &str, path: &str, body: &str) -> Reply {
    http(lab.host(), API.parse().unwrap_or_else(|e| panic!("{e}")), method, path, body, None)
}

/// The sum of `pygocentrus_packets_total{...,event="EVENT"}` over the rules
/// in a `/metrics` reply.
fn counted(metrics: &str, event: &str) -> u64 {
    let label = format!("event=\"{event}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("pygocentrus_packets_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A lab with an echo server on the server's PORT and `serve` on the bridge.
fn served(tag: &str) -> (Lab, Container, Container) {
    let (lab, client, server) = Lab::pair(tag);
    echo_server(tcp_listener(&server, false, PORT));
    (lab, client, server)
}

#[test]
fn toxics_change_live_and_an_open_connection_survives_them() {
    let (lab, client, server) = served("srvlive");
    let upstream = server.addr(false, PORT);
    let mut conn = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting before serve");
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    assert!(echoes(&mut conn, b"before", Duration::from_secs(2)), "no echo with no toxic");

    let r = api(&lab, "POST", "/proxies", &json!({"name": "echo", "upstream": upstream.to_string()}).to_string());
    assert_eq!(r.status, 201, "{r:?}");
    let proxy = r.json();
    // Nothing listens elsewhere: a suite that dials `listen` reaches the server.
    assert_eq!(
        (proxy["listen"].as_str(), proxy["enabled"].as_bool()),
        (Some(upstream.to_string().as_str()), Some(true))
    );

    // timeout 0 downstream: the answers vanish while it is there...
    let r = api(&lab, "POST", "/proxies/echo/toxics", r#"{"type":"timeout","attributes":{"timeout":0}}"#);
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("timeout_downstream")), "{r:?}");
    assert!(!echoes(&mut conn, b"during", Duration::from_millis(500)), "an echo came through a blackhole");
    // ...and once it is removed the same connection gets them (TCP resends).
    let r = api(&lab, "DELETE", "/proxies/echo/toxics/timeout_downstream", "");
    assert_eq!(r.status, 204, "{r:?}");
    let mut late = vec![0u8; 6];
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("setting a read timeout");
    conn.read_exact(&mut late).expect("the connection did not survive the blackhole");
    assert_eq!(late, b"during");
    assert!(echoes(&mut conn, b"after", Duration::from_secs(2)), "no echo after the toxic was removed");

    // A disabled proxy blackholes new connections too; /reset enables it.
    let r = api(&lab, "POST", "/proxies/echo", r#"{"enabled":false}"#);
    assert_eq!((r.status, r.json()["enabled"].as_bool()), (200, Some(false)), "{r:?}");
    let refused = tcp_connect(&client, upstream, Duration::from_millis(500));
    assert!(refused.is_err(), "connected to a disabled proxy");
    // reset_peer downstream: connects are refused at once.
    let r = api(&lab, "POST", "/reset", "");
    assert_eq!(r.status, 204, "{r:?}");
    let r =
        api(&lab, "POST", "/proxies/echo/toxics", r#"{"type":"reset_peer","name":"rst","attributes":{"timeout":0}}"#);
    assert_eq!(r.status, 200, "{r:?}");
    let err = tcp_connect(&client, upstream, Duration::from_secs(2)).expect_err("connected through reset_peer");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    let r = api(&lab, "GET", "/proxies", "");
    assert_eq!(r.json()["echo"]["toxics"][0]["type"], "reset_peer", "{r:?}");
    let metrics = api(&lab, "GET", "/metrics", "");
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("pygocentrus_packets_total{"), "{}", metrics.body);
    assert!(counted(&metrics.body, "reset") > 0, "{}", metrics.body);
    api(&lab, "POST", "/reset", "");
    tcp_connect(&client, upstream, Duration::from_secs(2)).expect("connecting after /reset");
    tool.terminate();
    lab.assert_clean("after serve", Duration::from_secs(5));
}

#[test]
fn bad_requests_get_a_clear_4xx_and_serve_lives_on() {
    let (lab, _client, server) = served("srvbad");
    let upstream = server.addr(false, PORT).to_string();
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    let proxy = json!({"name": "p", "upstream": upstream}).to_string();
    assert_eq!(api(&lab, "POST", "/proxies", &proxy).status, 201);
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    // Objects' fields given by position, as serde would read them.
    let other = server.addr(false, PORT + 1).to_string();
    let array = json!(["q", null, other, true]).to_string();
    let arrays = json!([["q", null, other, true]]).to_string();
    // One byte over the longest name.
    let long = "n".repeat(257);
    let long_proxy = json!({"name": long, "upstream": other}).to_string();
    let long_toxic = json!({"name": long, "type": "latency"}).to_string();
    let long_rule = format!("/pygocentrus/rules/{long}");
    for (method, path, body, status, needle) in [
        ("POST", "/proxies", array.as_str(), 400, "expected a JSON object"),
        ("POST", "/populate", arrays.as_str(), 400, "bad JSON body"),
        ("POST", "/proxies/p/toxics", r#"["t", "latency"]"#, 400, "expected a JSON object"),
        ("POST", "/proxies/p", "[false]", 400, "expected a JSON object"),
        ("POST", "/proxies", long_proxy.as_str(), 400, "at most 256 bytes"),
        ("POST", "/proxies/p/toxics", long_toxic.as_str(), 400, "at most 256 bytes"),
        ("PUT", long_rule.as_str(), r#"{"port":5000,"drop":1}"#, 400, "at most 256 bytes"),
        ("POST", "/proxies", "{not json", 400, "bad JSON body"),
        ("POST", "/proxies", r#"{"name":"q"}"#, 400, "upstream"),
        ("POST", "/proxies", proxy.as_str(), 409, "already exists"),
        ("POST", "/proxies", big.as_str(), 413, r#""status":413"#),
        ("GET", "/proxies/nosuch", "", 404, "proxy not found"),
        ("POST", "/proxies/p/toxics", r#"{"type":"nosuch"}"#, 400, "unknown toxic type"),
        ("POST", "/proxies/p/toxics", r#"{"type":"slicer"}"#, 400, "packet level"),
        ("POST", "/proxies/p/toxics", r#"{"type":"latency","toxicity":7}"#, 400, "between 0 and 1"),
        ("POST", "/proxies/p/toxics", r#"{"type":"latency","attributes":{"latency":-5}}"#, 400, "whole number"),
        ("POST", "/proxies/p/toxics", r#"{"type":"slow_close","attributes":{"delay":"x"}}"#, 400, "whole number"),
        ("POST", "/proxies/p/toxics", r#"{"type":"bandwidth","stream":"sideways"}"#, 400, "upstream or downstream"),
        ("DELETE", "/proxies/p/toxics/nosuch", "", 404, "toxic not found"),
        ("PUT", "/pygocentrus/rules/x", r#"{"port":5000,"drop":101}"#, 400, "0-100"),
        ("PUT", "/pygocentrus/rules/x", r#"{"port":5000,"dorp":1}"#, 400, "unknown field"),
    ] {
        let r = api(&lab, method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        assert!(r.body.contains(needle), "{method} {path}: {r:?}");
    }
    let r = api(&lab, "GET", "/version", "");
    assert_eq!(r.status, 200, "serve died: {r:?}");
    assert_eq!(api(&lab, "GET", "/proxies/p/toxics", "").body, "[]", "a refused toxic was kept");
    let proxies = api(&lab, "GET", "/proxies", "").json();
    assert_eq!(proxies.as_object().map(serde_json::Map::len), Some(1), "a refused proxy was kept: {proxies}");

    // A name of the longest length is created, read and deleted, and
    // /reset keeps its proxy, as Toxiproxy does.
    let longest = "n".repeat(256);
    let r = api(&lab, "POST", "/proxies", &json!({"name": longest, "upstream": other}).to_string());
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(api(&lab, "GET", &format!("/proxies/{longest}"), "").status, 200);
    assert_eq!(api(&lab, "POST", "/reset", "").status, 204);
    assert_eq!(api(&lab, "GET", &format!("/proxies/{longest}"), "").status, 200, "/reset removed a proxy");
    assert_eq!(api(&lab, "DELETE", &format!("/proxies/{longest}"), "").status, 204);
    tool.terminate();
}

#[test]
fn the_api_needs_a_token_off_loopback() {
    let (lab, _client, _server) = Lab::pair("srvtok");
    let out = lab.run_sub("serve", &args!["--iface", BRIDGE, "--api", "0.0.0.0:8474"]);
    assert_refused(&lab, "non-loopback without a token", &out);
    let tool = lab.serve(&args!["--iface", BRIDGE, "--api", "0.0.0.0:8474", "--token", "s3cret"]);
    let addr: SocketAddr = API.parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", None).status, 401);
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", Some("wrong")).status, 401);
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", Some("s3cret")).status, 200);
    let out = lab.run_sub("status", &args!["--token", "s3cret"]);
    out.assert_exit(0);
    // Only the whole token: a longer one that starts with it is wrong.
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", Some("s3cretX")).status, 401);
    tool.terminate();

    // The token from a file (its trailing newline is not part of it).
    let file = TempFile::new("token", "fr0m-a-file\n");
    let tool = lab.serve(&args!["--iface", BRIDGE, "--api", "0.0.0.0:8474", "--token-file", file.path()]);
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", Some("s3cret")).status, 401);
    assert_eq!(http(lab.host(), addr, "GET", "/proxies", "", Some("fr0m-a-file")).status, 200);
    lab.run_sub("status", &args!["--token-file", file.path()]).assert_exit(0);
    tool.terminate();
    let empty = TempFile::new("token", "");
    let out = lab.run_sub("serve", &args!["--iface", BRIDGE, "--api", "0.0.0.0:8474", "--token-file", empty.path()]);
    assert_refused(&lab, "an empty token file", &out);
}

#[test]
fn the_native_client_sets_shows_and_resets_rules() {
    let (lab, client, server) = Lab::pair("srvcli");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let config = TempFile::new("srvcli", "[[rule]]\nport = 9\nproto = \"udp\"\ndrop = 1\n");
    let tool = lab.serve(&args!["--iface", BRIDGE, "--config", config.path()]);
    let out = lab.run_sub("set", &args!["flaky", "--ip", server.ip4, "--port", PORT, "--proto", "udp", "--drop", 100]);
    out.assert_exit(0);
    assert_eq!(flow.exchange(100).received(), 0, "datagrams passed a 100% drop set live");
    let out = lab.run_sub("status", &args!["--json"]);
    out.assert_exit(0);
    let status: serde_json::Value = serde_json::from_str(&out.stdout.join("")).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(status["rules"][0]["owner"], "config rule 1", "{status}");
    assert_eq!(status["rules"][1]["owner"], "rule flaky", "{status}");
    assert_eq!(status["rules"][1]["dropped"], 100, "{status}");
    let text = lab.run_sub("status", &[] as &[&str]);
    assert!(text.stdout.iter().any(|l| l.contains("rule 2 (rule flaky): udp to/from 198.18")), "{text}");
    // Bad input is refused by the client in one line, status 2.
    let out = lab.run_sub("set", &args!["bad", "--port", PORT, "--drop", 5, "--proto", "udp", "--reset", 5]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    lab.run_sub("reset", &[] as &[&str]).assert_exit(0);
    assert_eq!(flow.exchange(100).received(), 100, "datagrams were lost after reset");
    let status = api(&lab, "GET", "/pygocentrus/status", "").json();
    assert_eq!(status["rules"].as_array().map(Vec::len), Some(1), "reset removed the config's rule: {status}");
    tool.terminate();
}

#[test]
fn status_shows_every_counter_of_every_rule() {
    // The counters come from one list; `status` once printed all but
    // `unplugged`.
    let (lab, _client, _server) = Lab::pair("srvall");
    let config = TempFile::new("srvall", "[[rule]]\nport = 9\nproto = \"udp\"\ndrop = 1\n");
    let tool = lab.serve(&args!["--iface", BRIDGE, "--config", config.path()]);
    let text = lab.run_sub("status", &[] as &[&str]);
    text.assert_exit(0);
    let line = text.stdout.iter().find(|l| l.trim_start().starts_with("seen ")).unwrap_or_else(|| panic!("{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    for c in Counter::ALL {
        let shown = words.windows(2).any(|w| w[0] == c.label() && w[1].parse::<u64>().is_ok());
        assert!(shown, "status shows no {}: {line}", c.label());
    }
    tool.terminate();
}

#[test]
fn a_rule_keeps_its_id_and_counters_while_others_come_and_go() {
    let (lab, client, server) = Lab::pair("srvids");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    let set = |name: &str, port: u16, drop: u32| {
        lab.run_sub("set", &args![name, "--ip", server.ip4, "--port", port, "--proto", "udp", "--drop", drop])
            .assert_exit(0);
    };
    let status = || api(&lab, "GET", "/pygocentrus/status", "").json();
    // Rule 1 on a port nobody uses, rule 2 on the flow's.
    set("first", 9, 1);
    set("second", PORT, 100);
    assert_eq!(flow.exchange(100).received(), 0, "datagrams passed a 100% drop");
    let s = status();
    assert_eq!((s["rules"][1]["id"].as_u64(), s["rules"][1]["dropped"].as_u64()), (Some(2), Some(100)), "{s}");

    // The first rule goes: the second is now first in the list, and keeps
    // its id and what it counted (positional ids would have moved it to 1
    // and started it from zero).
    let r = api(&lab, "DELETE", "/pygocentrus/rules/first", "");
    assert_eq!(r.status, 204, "{r:?}");
    let s = status();
    assert_eq!(s["rules"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(
        (s["rules"][0]["owner"].as_str(), s["rules"][0]["id"].as_u64(), s["rules"][0]["dropped"].as_u64()),
        (Some("rule second"), Some(2), Some(100)),
        "{s}"
    );
    // A new rule takes the free id; the second goes on counting under its own.
    set("third", 10, 1);
    assert_eq!(flow.exchange(100).received(), 0, "datagrams passed a 100% drop");
    let s = status();
    assert_eq!((s["rules"][1]["owner"].as_str(), s["rules"][1]["id"].as_u64()), (Some("rule third"), Some(1)), "{s}");
    assert_eq!((s["rules"][0]["id"].as_u64(), s["rules"][0]["dropped"].as_u64()), (Some(2), Some(200)), "{s}");
    assert_eq!(s["rules"][1]["seen"].as_u64(), Some(0), "the new rule inherited counts: {s}");
    // /metrics: one series for the second rule, under its id, not restarted.
    let metrics = api(&lab, "GET", "/metrics", "").body;
    let series = metrics
        .lines()
        .find(|l| {
            l.starts_with("pygocentrus_packets_total{") && l.contains("id=\"2\"") && l.contains("event=\"dropped\"")
        })
        .unwrap_or_else(|| panic!("no dropped series for rule 2:\n{metrics}"));
    assert!(series.ends_with(" 200"), "{series}");
    tool.terminate();
    lab.assert_clean("after serve", Duration::from_secs(5));
}

/// The Python of the venv `scripts/setup` makes for toxiproxy-python.
fn toxiproxy_python() -> Option<PathBuf> {
    let venv = std::env::var_os("PYGOCENTRUS_TOXIPROXY_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pygocentrus/toxiproxy-venv")))?;
    let python = venv.join("bin/python");
    python.is_file().then_some(python)
}

/// Runs a Python snippet with toxiproxy-python in the lab's host namespace,
/// after `from toxiproxy import Toxiproxy; t = Toxiproxy()`.
fn py(lab: &Lab, python: &PathBuf, code: &str) -> String {
    let script = format!("from toxiproxy import Toxiproxy\nt = Toxiproxy()\n{code}\n");
    let out = Command::new("ip")
        .args(["netns", "exec", lab.host()])
        .arg(python)
        .args(["-c", &script])
        .output()
        .unwrap_or_else(|e| panic!("running python: {e}"));
    assert!(out.status.success(), "toxiproxy-python failed:\n{script}\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn toxiproxy_python_drives_serve_unchanged() {
    let Some(python) = toxiproxy_python() else {
        eprintln!("skipped: no toxiproxy-python venv in ~/.cache/pygocentrus (scripts/setup makes it)");
        return;
    };
    let (lab, client, server) = served("srvpy");
    let upstream = server.addr(false, PORT);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    assert!(py(&lab, &python, "print(t.running(), t.version() is not None)") == "True True");
    let listen = py(&lab, &python, &format!("p = t.create(upstream='{upstream}', name='echo')\nprint(p.listen)"));
    assert_eq!(listen, upstream.to_string(), "listen is not the upstream");
    let mut conn = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting");
    assert!(echoes(&mut conn, b"clean", Duration::from_secs(2)));

    py(&lab, &python, "t.get_proxy('echo').add_toxic(type='timeout', attributes={'timeout': 0})");
    let toxics = py(&lab, &python, "print(sorted(t.get_proxy('echo').toxics()))");
    assert_eq!(toxics, "['timeout_downstream']");
    assert!(!echoes(&mut conn, b"lost!", Duration::from_millis(500)), "an echo came through the timeout toxic");
    py(&lab, &python, "t.get_proxy('echo').destroy_toxic('timeout_downstream')");
    let mut late = [0u8; 5];
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("setting a read timeout");
    conn.read_exact(&mut late).expect("the connection did not survive");

    // An invalid toxic raises the client's own InvalidToxic (a 400).
    let raised = py(
        &lab,
        &python,
        "from toxiproxy.exceptions import InvalidToxic\ntry:\n    t.get_proxy('echo').add_toxic(type='slicer')\n    print('accepted')\nexcept InvalidToxic as e:\n    print('InvalidToxic')",
    );
    assert_eq!(raised, "InvalidToxic");
    // disable() blackholes; reset() brings it back.
    py(&lab, &python, "t.get_proxy('echo').disable()");
    assert!(tcp_connect(&client, upstream, Duration::from_millis(500)).is_err(), "connected to a disabled proxy");
    py(&lab, &python, "t.reset()");
    assert!(echoes(&mut conn, b"again", Duration::from_secs(5)), "no echo after reset()");
    py(&lab, &python, "t.destroy_all()\nassert t.proxies() == {}");
    tool.terminate();
}

#[test]
fn a_latency_toxic_delays_the_answers_of_an_open_connection() {
    let (lab, client, server) = served("srvlat");
    let upstream = server.addr(false, PORT);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    let r = api(&lab, "POST", "/proxies", &json!({"name": "echo", "upstream": upstream.to_string()}).to_string());
    assert_eq!(r.status, 201, "{r:?}");
    let toxic = r#"{"type":"latency","attributes":{"latency":50}}"#;
    if !lab.has_fq() {
        // Refused, saying why, and nothing else changes.
        let r = api(&lab, "POST", "/proxies/echo/toxics", toxic);
        assert_eq!(r.status, 400, "{r:?}");
        assert!(r.body.contains("sch_fq"), "{r:?}");
        eprintln!("skipped the timing: this kernel has no fq qdisc (sch_fq); `cargo xtask vm-test` runs it");
        tool.terminate();
        return;
    }
    let mut conn = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting");
    let rtt = |conn: &mut TcpStream| {
        let start = std::time::Instant::now();
        assert!(echoes(conn, b"ping", Duration::from_secs(5)), "no echo");
        start.elapsed()
    };
    let before = rtt(&mut conn);
    let r = api(&lab, "POST", "/proxies/echo/toxics", toxic);
    assert_eq!(r.status, 200, "{r:?}");
    // Each answer leaves the server's port 50 ms late: a lower bound that
    // is exact (a departure time is never early). The upper bound is loose:
    // emulation under QEMU is slow.
    let during: Vec<Duration> = (0..5).map(|_| rtt(&mut conn)).collect();
    assert!(during.iter().all(|d| *d >= Duration::from_millis(50)), "answers under 50 ms: {during:?}");
    assert!(during.iter().all(|d| *d < Duration::from_millis(50) + Duration::from_secs(1)), "{during:?}");
    api(&lab, "DELETE", "/proxies/echo/toxics/latency_downstream", "");
    // The fastest of three: under the toxic none can be under 50 ms (a
    // departure time is never early), so one is proof enough, and a stall
    // of the emulated CPU on one sample does not fail the test.
    let after = (0..3).map(|_| rtt(&mut conn)).min().unwrap_or_default();
    assert!(after < Duration::from_millis(50), "still slow after the toxic went: {after:?} (before: {before:?})");
    tool.terminate();
}

#[test]
fn a_limit_data_toxic_resets_a_connection_after_its_bytes_and_spares_a_new_one() {
    const LIMIT: usize = 3000;
    const MESSAGE: usize = 1000;
    let (lab, client, server) = served("srvlimit");
    let upstream = server.addr(false, PORT);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    let r = api(&lab, "POST", "/proxies", &json!({"name": "echo", "upstream": upstream.to_string()}).to_string());
    assert_eq!(r.status, 201, "{r:?}");
    let body = json!({"type": "limit_data", "stream": "upstream", "attributes": {"bytes": LIMIT}}).to_string();
    let r = api(&lab, "POST", "/proxies/echo/toxics", &body);
    assert_eq!(r.status, 200, "{r:?}");

    // Messages of MESSAGE bytes, each echoed before the next (TCP_NODELAY:
    // a segment each): the first LIMIT / MESSAGE fit, the next crosses the
    // limit and becomes a reset to the server, whose kernel then resets
    // the client's next segment.
    let mut conn = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting");
    conn.set_nodelay(true).expect("setting TCP_NODELAY");
    conn.set_read_timeout(Some(Duration::from_secs(5))).expect("setting a read timeout");
    let mut echoed = 0;
    let error = loop {
        let mut buf = vec![0u8; MESSAGE];
        if let Err(e) = conn.write_all(&[b'x'; MESSAGE]).and_then(|()| conn.read_exact(&mut buf)) {
            break e;
        }
        echoed += MESSAGE;
        assert!(echoed <= LIMIT, "{echoed} bytes went through a limit_data of {LIMIT}");
    };
    assert_eq!(echoed, LIMIT, "the connection failed before its limit: {error}");
    assert!(
        matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof),
        "the connection failed otherwise than by a reset: {error}"
    );
    // The limit is each connection's: a new one carries its own bytes.
    let mut fresh = tcp_connect(&client, upstream, Duration::from_secs(5)).expect("connecting again");
    assert!(echoes(&mut fresh, b"a new connection", Duration::from_secs(2)), "a new connection got no echo");
    let metrics = api(&lab, "GET", "/metrics", "");
    assert!(counted(&metrics.body, "reset") > 0, "no reset counted: {}", metrics.body);
    tool.terminate();
    lab.assert_clean("after serve", Duration::from_secs(5));
}
