//! --reset: TCP segments become resets the peer accepts.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    time::{Duration, Instant},
};

use pygocentrus_tests::{Container, Lab, args, tcp_connect, tcp_listener};

use crate::{OTHER_PORT, PORT, rule};

/// How fast a reset must show. Without the tool a connect or read here
/// would succeed or block; with it the answer comes in one round trip
/// (microseconds). 2 s leaves room for a loaded CI machine, and stays below
/// TCP's 1 s SYN retry doubled: a lost packet would not pass as a reset.
const FAST: Duration = Duration::from_secs(2);

/// A rule that resets every TCP segment of `direction` at the target's
/// [`PORT`].
fn reset_all(target: &Container, v6: bool, direction: &str) -> Vec<String> {
    rule("tcp", Some(target.ip(v6)), args!["--direction", direction, "--reset", 100])
}

/// A connect to the target's port is refused at once (the SYN-ACK became a
/// reset); one to another port of the target succeeds.
fn connect_is_refused(tag: &str, v6: bool) {
    let (lab, client, server) = Lab::pair(tag);
    let _target = tcp_listener(&server, v6, PORT);
    let _other = tcp_listener(&server, v6, OTHER_PORT);
    let tool = lab.attach(&reset_all(&server, v6, "both"));

    let start = Instant::now();
    let result = tcp_connect(&client, server.addr(v6, PORT), Duration::from_secs(10));
    let took = start.elapsed();
    let spared = tcp_connect(&client, server.addr(v6, OTHER_PORT), Duration::from_secs(10));
    tool.terminate();

    let err = result.expect_err("connect succeeded under --reset 100");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "connect failed otherwise: {err}");
    assert!(took < FAST, "connect took {took:?} to be refused");
    spared.expect("a connection to the other port failed");
}

#[test]
fn reset_100_refuses_connections_to_the_port() {
    connect_is_refused("rstsyn4", false);
}

#[test]
fn reset_100_refuses_ipv6_connections_to_the_port() {
    connect_is_refused("rstsyn6", true);
}

/// A connection made before the tool runs fails with ECONNRESET once the
/// target's segments become resets.
fn established_is_reset(tag: &str, v6: bool) {
    let (lab, client, server) = Lab::pair(tag);
    let listener = tcp_listener(&server, v6, PORT);
    let mut conn = tcp_connect(&client, server.addr(v6, PORT), Duration::from_secs(10)).expect("connecting");
    // Kept open: the server must not close the connection by itself.
    let (mut accepted, _) = listener.accept().expect("accepting");
    conn.write_all(b"hello").expect("sending before the tool runs");
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).expect("receiving before the tool runs");

    let tool = lab.attach(&reset_all(&server, v6, "from"));
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
            // No reset yet (a read with a timeout is not restarted after a
            // signal either).
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => break e,
            Ok(n) => panic!("read {n} bytes instead of a reset"),
        }
    };
    let out = tool.terminate();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "the connection failed otherwise: {error}\n{out}");
}

#[test]
fn reset_from_target_breaks_an_established_connection() {
    established_is_reset("rstest4", false);
}

#[test]
fn reset_from_target_breaks_an_established_ipv6_connection() {
    established_is_reset("rstest6", true);
}
