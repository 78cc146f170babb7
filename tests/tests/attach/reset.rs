//! --reset: TCP segments become resets the peer accepts.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    time::{Duration, Instant},
};

use pygocentrus_tests::{BRIDGE, Lab, args, tcp_connect, tcp_listener};

use crate::{OTHER_PORT, PORT};

/// How fast a reset must show. Without the tool a connect or read here
/// would succeed or block; with it the answer comes in one round trip
/// (microseconds). 2 s leaves room for a loaded CI machine, and stays below
/// TCP's 1 s SYN retry doubled: a lost packet would not pass as a reset.
const FAST: Duration = Duration::from_secs(2);

#[test]
fn reset_100_refuses_connections_to_the_port() {
    let lab = Lab::new("rstsyn", 2);
    let (client, server) = (lab.container(0), lab.container(1));
    let _target = tcp_listener(&server, false, PORT);
    let _other = tcp_listener(&server, false, OTHER_PORT);
    let ip = server.ip4.to_string();
    let tool = lab.attach(&args!["--iface", BRIDGE, "--ip", ip, "--port", PORT, "--proto", "tcp", "--reset", 100]);

    let start = Instant::now();
    let result = tcp_connect(&client, server.addr(false, PORT), Duration::from_secs(10));
    let took = start.elapsed();
    let spared = tcp_connect(&client, server.addr(false, OTHER_PORT), Duration::from_secs(10));
    tool.terminate();

    let err = result.expect_err("connect succeeded under --reset 100");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "connect failed otherwise: {err}");
    assert!(took < FAST, "connect took {took:?} to be refused");
    spared.expect("a connection to the other port failed");
}

#[test]
fn reset_from_target_breaks_an_established_connection() {
    let lab = Lab::new("rstest", 2);
    let (client, server) = (lab.container(0), lab.container(1));
    let listener = tcp_listener(&server, false, PORT);
    let mut conn = tcp_connect(&client, server.addr(false, PORT), Duration::from_secs(10)).expect("connecting");
    // Kept open: the server must not close the connection by itself.
    let (mut accepted, _) = listener.accept().expect("accepting");
    conn.write_all(b"hello").expect("sending before the tool runs");
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).expect("receiving before the tool runs");

    let ip = server.ip4.to_string();
    let tool = lab.attach(&args![
        "--iface",
        BRIDGE,
        "--ip",
        ip,
        "--port",
        PORT,
        "--proto",
        "tcp",
        "--direction",
        "from",
        "--reset",
        100
    ]);
    // Each write makes the server's kernel acknowledge it; the tool turns
    // that ACK into a reset, which the client must report.
    conn.set_read_timeout(Some(Duration::from_millis(100))).expect("setting a read timeout");
    let start = Instant::now();
    let error = loop {
        assert!(start.elapsed() < FAST, "no reset within {FAST:?}");
        if let Err(e) = conn.write_all(b"ping") {
            break e;
        }
        match conn.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => break e,
            Ok(n) => panic!("read {n} bytes instead of a reset"),
        }
    };
    let out = tool.terminate();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "the connection failed otherwise: {error}\n{out}");
}
