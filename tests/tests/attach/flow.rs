//! Faults that follow a connection: --per-connection, --unplug-after,
//! --reset-after, and --tcp-flags.

use std::{
    collections::HashMap,
    io::{self, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    thread,
    time::{Duration, Instant},
};

use pygocentrus_tests::{Container, Lab, NetCounters, args, in_netns, tcp_connect, tcp_listener};

use crate::{PORT, assert_binomial, rule};

/// A connect whose SYN (or SYN-ACK) is lost gives up after this long. The
/// kernel retransmits a SYN after 1 s: giving up before that leaves each
/// failed connection one lost packet, its SYN. (A stalled machine may
/// close the socket only after that retry: the tests count such retries,
/// `TcpExt:TCPSynRetrans`, rather than assume there are none.)
const CONNECT_GIVE_UP: Duration = Duration::from_millis(700);
/// How long a working connection may take to answer: between namespaces a
/// round trip takes microseconds; this is for a loaded CI machine.
const ANSWER: Duration = Duration::from_secs(2);
/// A stream that moved nothing for this long has stalled: the sender
/// writes every millisecond, and without loss a segment arrives in
/// microseconds.
const STALL: Duration = Duration::from_millis(1500);
/// Application writes of the flow-limit tests, paced so that each leaves
/// as a segment of its own (TCP_NODELAY; no GSO aggregate crosses a limit
/// by more than a few writes).
const CHUNK: usize = 1000;
const PACE: Duration = Duration::from_millis(1);
/// What a limit may undershoot by: the segment that crosses it is the
/// first one not delivered, and the kernel may coalesce a few paced writes
/// into it (autocorking) when the previous one is still queued.
const SLACK: usize = 16 * CHUNK;

/// Runs `connect` and returns what it returned, with how many SYNs the
/// client's kernel sent again meanwhile (`TcpExt:TCPSynRetrans`; none if
/// every connect gave up in time).
fn counting_syn_retries<T>(client: &Container, connect: impl FnOnce() -> T) -> (T, u64) {
    let before = NetCounters::read(&client.ns);
    let out = connect();
    (out, before.growth(&NetCounters::read(&client.ns), "TcpExt:TCPSynRetrans"))
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// Writes `msg` and reads it back from an echoing peer `echo`.
fn round_trip(conn: &mut TcpStream, echo: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    conn.write_all(msg)?;
    let mut buf = vec![0; msg.len()];
    echo.read_exact(&mut buf)?;
    echo.write_all(&buf)?;
    conn.read_exact(&mut buf)?;
    assert_eq!(buf, msg, "the echo came back different");
    Ok(())
}

/// Sockets in `SYN_RECV` on `port` in namespace `ns` (`/proc/net/tcp` and
/// `tcp6` list half-open connections as state 03).
fn half_open(ns: &str, port: u16) -> usize {
    let local = format!(":{port:04X} ");
    in_netns(ns, || {
        ["tcp", "tcp6"]
            .iter()
            .map(|f| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).expect("reading /proc/net/tcp"))
            .map(|text| {
                text.lines()
                    .skip(1)
                    .filter(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        f.len() > 3 && format!("{} ", f[1]).ends_with(&local) && f[3] == "03"
                    })
                    .count()
            })
            .sum()
    })
}

#[test]
fn per_connection_drop_50_fails_whole_connections() {
    const N: usize = 40;
    let (lab, client, server) = Lab::pair("perconn");
    let listener = tcp_listener(&server, false, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--drop", 50, "--per-connection", "--json"]));

    // All connects at once: the failing ones each wait CONNECT_GIVE_UP.
    let to = server.addr(false, PORT);
    let (results, syn_retries): (Vec<io::Result<TcpStream>>, _) = counting_syn_retries(&client, || {
        thread::scope(|s| {
            let tries: Vec<_> = (0..N).map(|_| s.spawn(|| tcp_connect(&client, to, CONNECT_GIVE_UP))).collect();
            tries.into_iter().map(|t| t.join().expect("a connect thread panicked")).collect()
        })
    });
    let half_open = half_open(&server.ns, PORT);
    let (mut up, mut failed) = (Vec::new(), 0);
    for r in results {
        match r {
            Ok(conn) => up.push(conn),
            Err(e) => {
                assert!(timed_out(&e), "a connect failed otherwise than by a timeout: {e}");
                failed += 1;
            }
        }
    }
    // Every connection that came up works in full: ten round trips each,
    // through the server's end of that very connection.
    let mut accepted: HashMap<SocketAddr, TcpStream> = HashMap::new();
    for _ in 0..up.len() {
        let (conn, peer) = listener.accept().expect("accepting a connection that came up");
        conn.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
        accepted.insert(peer, conn);
    }
    for conn in &mut up {
        conn.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
        let me = conn.local_addr().expect("the client's address");
        let echo = accepted.get_mut(&me).expect("the server accepted this connection");
        for i in 0..10u8 {
            round_trip(conn, echo, &[i; 1000]).unwrap_or_else(|e| panic!("round trip {i} of {me} failed: {e}"));
        }
    }
    let out = tool.terminate();

    // Each connection is a fair coin; 5σ also makes sure both kinds occur
    // (at least 5 of 40 each).
    assert_binomial(failed, N, 0.5, "connections that failed under --drop 50 --per-connection");
    // A failed connection lost its SYN (and its retry if it gave up late)
    // and nothing else, a working one nothing: per packet, a 50% drop over
    // some 25 packets per working connection would lose many more.
    assert_eq!(out.counter("dropped"), failed as u64 + syn_retries, "{out}");
    // The answer of a connection decides as its question: no server kept a
    // half-open connection whose SYN-ACK was lost.
    assert_eq!(half_open, 0, "SYN-ACKs were dropped while their SYNs passed");
}
/// `conn.read(buf)`, read again when a signal interrupts it: a read with a
/// timeout is not restarted by the kernel (signal(7)), and this test
/// process does get the odd signal while many tests run.
fn read_uninterrupted(conn: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match conn.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A server that counts what it receives on one connection until the
/// stream ends, fails or stalls: (bytes, how it ended).
fn count_until_stall(mut conn: TcpStream) -> (usize, io::Result<()>) {
    conn.set_read_timeout(Some(STALL)).expect("setting a timeout");
    let mut total = 0;
    let mut buf = [0u8; 65536];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return (total, Err(ErrorKind::UnexpectedEof.into())),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => return (total, Ok(())),
            Err(e) => return (total, Err(e)),
        }
    }
}

/// Sends `total` bytes in paced chunks, stopping at the first error (a
/// write that blocks for `ANSWER` counts as one).
fn send_paced(conn: &mut TcpStream, total: usize) -> io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_write_timeout(Some(ANSWER))?;
    let chunk = [0x5au8; CHUNK];
    for _ in 0..total / CHUNK {
        conn.write_all(&chunk)?;
        thread::sleep(PACE);
    }
    Ok(())
}

/// A connection to the server, and the server's end of it.
fn connected(client: &Container, listener: &TcpListener, to: SocketAddr) -> (TcpStream, TcpStream) {
    let conn = tcp_connect(client, to, ANSWER).expect("connecting");
    let (accepted, _) = listener.accept().expect("accepting");
    (conn, accepted)
}

fn unplug_after_bytes(tag: &str, v6: bool) {
    const LIMIT: usize = 100_000;
    let (lab, client, server) = Lab::pair(tag);
    let listener = tcp_listener(&server, v6, PORT);
    let to = server.addr(v6, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--unplug-after", "100kb", "--json"]));

    let (mut conn, accepted) = connected(&client, &listener, to);
    let (received, ended) = thread::scope(|s| {
        let server = s.spawn(|| count_until_stall(accepted));
        // Three times the limit: more than gets through. The writes may
        // block once the send buffer is full: that is the stall.
        if let Err(e) = send_paced(&mut conn, 3 * LIMIT) {
            assert!(timed_out(&e), "the sender failed: {e}");
        }
        server.join().expect("the server thread panicked")
    });
    // Silence, not a reset: both ends still think the connection is up.
    assert!(ended.is_ok(), "the server's end did not just stall: {ended:?}");
    conn.set_read_timeout(Some(Duration::from_millis(300))).expect("setting a timeout");
    match read_uninterrupted(&mut conn, &mut [0u8; 16]) {
        Err(e) if timed_out(&e) => {}
        other => panic!("the client's end did not just stall: {other:?}"),
    }
    assert!(conn.take_error().expect("SO_ERROR").is_none(), "the client's end saw an error");
    // A new connection works (and carries less than the limit).
    let (mut fresh, mut echo) = connected(&client, &listener, to);
    fresh.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    echo.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    round_trip(&mut fresh, &mut echo, &[7u8; 5000]).expect("a new connection failed");
    let out = tool.terminate();

    // The segment that crossed the limit was the first one lost.
    assert!(
        (LIMIT - SLACK..=LIMIT).contains(&received),
        "the server received {received} bytes under --unplug-after 100kb"
    );
    // The sender retransmitted into the void: those are unplugged too.
    assert!(out.counter("unplugged") >= 2, "{out}");
    assert_eq!(out.counter("reset"), 0, "{out}");
}

#[test]
fn unplug_after_100kb_stalls_a_connection_silently() {
    unplug_after_bytes("unplug4", false);
}

#[test]
fn unplug_after_100kb_stalls_an_ipv6_connection_silently() {
    unplug_after_bytes("unplug6", true);
}

#[test]
fn unplug_after_1s_cuts_an_idle_connection_off() {
    let (lab, client, server) = Lab::pair("unplugt");
    let listener = tcp_listener(&server, false, PORT);
    let to = server.addr(false, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--unplug-after", "1s", "--json"]));
    let (mut conn, mut echo) = connected(&client, &listener, to);
    conn.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    echo.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    round_trip(&mut conn, &mut echo, b"before").expect("the connection failed before 1 s");
    // Past its first second (the clock starts at its SYN).
    thread::sleep(Duration::from_millis(1500));
    conn.write_all(b"after").expect("writing");
    echo.set_read_timeout(Some(Duration::from_millis(1500))).expect("setting a timeout");
    let late = read_uninterrupted(&mut echo, &mut [0u8; 16]);
    let (mut fresh, mut fresh_echo) = connected(&client, &listener, to);
    fresh.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    fresh_echo.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    let new = round_trip(&mut fresh, &mut fresh_echo, b"new");
    let out = tool.terminate();
    match late {
        Err(e) if timed_out(&e) => {}
        other => panic!("data arrived after the connection was unplugged: {other:?}"),
    }
    new.expect("a new connection failed");
    assert!(out.counter("unplugged") >= 1, "{out}");
}

fn reset_after_bytes(tag: &str, v6: bool) {
    const LIMIT: usize = 50_000;
    let (lab, client, server) = Lab::pair(tag);
    let listener = tcp_listener(&server, v6, PORT);
    let to = server.addr(v6, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--reset-after", "50kb", "--json"]));

    let (mut conn, accepted) = connected(&client, &listener, to);
    let start = Instant::now();
    let ((received, ended), sent) = thread::scope(|s| {
        let server = s.spawn(|| count_until_stall(accepted));
        let sent = send_paced(&mut conn, 4 * LIMIT);
        (server.join().expect("the server thread panicked"), sent)
    });
    let out = tool.terminate();

    let error = ended.expect_err("the server's end stalled or ended instead of being reset");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "the server's end failed otherwise: {error}");
    assert!(
        (LIMIT - SLACK..=LIMIT).contains(&received),
        "the server received {received} bytes before the reset under --reset-after 50kb"
    );
    // The sender goes on writing; the server's kernel, its socket gone,
    // answers with a reset of its own, which passes: the client fails too,
    // long before it would have sent all it had (4 × the limit at about
    // 1 MB/s is 0.2 s of writes; ANSWER is the bound for a loaded machine).
    let error = sent.expect_err("the client sent everything without noticing the reset");
    assert!(
        matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "the client's end failed otherwise: {error}"
    );
    assert!(start.elapsed() < 4 * ANSWER, "the resets took {:?}", start.elapsed());
    assert_eq!(out.counter("reset"), 1, "{out}");
}

/// Toxiproxy's `limit_data` with a toxicity: the limit applies to a share
/// of connections, all or nothing each.
#[test]
fn limit_pct_50_resets_about_half_the_connections_at_the_limit() {
    const N: usize = 40;
    const LIMIT: usize = 2_000;
    let (lab, client, server) = Lab::pair("limitpct");
    let listener = tcp_listener(&server, false, PORT);
    let to = server.addr(false, PORT);
    let tool =
        lab.attach(&rule("tcp", None, args!["--reset-after", "2kb", "--per-connection", "--limit-pct", 50, "--json"]));
    let mut reset = 0;
    for i in 0..N {
        let (mut conn, accepted) = connected(&client, &listener, to);
        let (received, ended) = thread::scope(|s| {
            let server = s.spawn(|| count_until_stall(accepted));
            // Five times the limit, then the end of the stream.
            let _ = send_paced(&mut conn, 5 * LIMIT).and_then(|()| conn.shutdown(std::net::Shutdown::Write));
            server.join().expect("the server thread panicked")
        });
        match ended {
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert!(received <= LIMIT, "connection {i}: {received} bytes passed a 2kb limit before its reset");
                reset += 1;
            }
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                assert_eq!(received, 5 * LIMIT, "connection {i} ended early without a reset");
            }
            other => panic!("connection {i} neither ended nor was reset: {other:?} after {received} bytes"),
        }
    }
    let out = tool.terminate();
    // Each connection is a fair coin (see per_connection_drop_50...).
    assert_binomial(reset, N, 0.5, "connections reset under --reset-after 2kb --limit-pct 50");
    assert_eq!(out.counter("reset"), reset as u64, "one reset per chosen connection: {out}");
}

#[test]
fn reset_after_50kb_resets_a_connection_at_the_limit() {
    reset_after_bytes("rstafter4", false);
}

#[test]
fn reset_after_50kb_resets_an_ipv6_connection_at_the_limit() {
    reset_after_bytes("rstafter6", true);
}

#[test]
fn tcp_flags_syn_drop_100_stops_new_connections_only() {
    let (lab, client, server) = Lab::pair("tcpflags");
    let listener = tcp_listener(&server, false, PORT);
    let to = server.addr(false, PORT);
    let (mut open, mut echo) = connected(&client, &listener, to);
    open.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    echo.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    let tool = lab.attach(&rule("tcp", None, args!["--tcp-flags", "syn", "--drop", 100, "--json"]));

    let (refused, syn_retries) = counting_syn_retries(&client, || tcp_connect(&client, to, CONNECT_GIVE_UP));
    let kept: io::Result<()> = (0..10u8).try_for_each(|i| round_trip(&mut open, &mut echo, &[i; 1000]));
    let out = tool.terminate();

    let error = refused.expect_err("a new connection came up under --tcp-flags syn --drop 100");
    assert!(timed_out(&error), "the new connection failed otherwise than by a timeout: {error}");
    kept.expect("the established connection failed");
    // The SYN, and nothing of the established connection's 40 segments.
    assert_eq!(out.counter("dropped"), 1 + syn_retries, "{out}");
    assert!(out.counter("seen") > out.counter("matched"), "segments without SYN were not left alone: {out}");
}

/// Toxiproxy's `timeout` toxic: connections come up, their data vanishes,
/// and after the timeout both ends are reset.
#[test]
fn unplug_after_0b_with_reset_after_1s_blackholes_then_resets_both_ends() {
    let (lab, client, server) = Lab::pair("timeout");
    let listener = tcp_listener(&server, false, PORT);
    let to = server.addr(false, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--unplug-after", "0b", "--reset-after", "1s", "--json"]));
    // The handshake carries no payload: it passes.
    let (mut conn, mut accepted) = connected(&client, &listener, to);
    let start = Instant::now();
    conn.write_all(b"request").expect("writing");
    // The request never arrives; the first retransmission after 1 s
    // becomes the server's reset (the client retransmits 0.2, 0.6, 1.4,
    // 3 s after sending, the kernel's minimal RTO doubling).
    accepted.set_read_timeout(Some(Duration::from_secs(10))).expect("setting a timeout");
    let server_end = read_uninterrupted(&mut accepted, &mut [0u8; 16]);
    let server_after = start.elapsed();
    // The next retransmission passes; the server's kernel, its socket
    // gone, answers it with a reset that reaches the client.
    conn.set_read_timeout(Some(Duration::from_secs(10))).expect("setting a timeout");
    let client_end = read_uninterrupted(&mut conn, &mut [0u8; 16]);
    let client_after = start.elapsed();
    let out = tool.terminate();

    match server_end {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the server's end was not reset: {other:?} after {server_after:?}\n{out}"),
    }
    assert!(server_after >= Duration::from_secs(1), "the server was reset before the timeout: {server_after:?}");
    match client_end {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the client's end was not reset: {other:?} after {client_after:?}\n{out}"),
    }
    assert!(out.counter("unplugged") >= 1, "{out}");
    assert_eq!(out.counter("reset"), 1, "{out}");
}

/// `syn-only` is a connection attempt (SYN without ACK), where `syn` also
/// takes the SYN-ACK that answers it: on the server's side (`--direction
/// from`) `syn-only` matches nothing and `syn` stops every connect; on the
/// client's side (`--direction to`) `syn-only` stops every connect.
#[test]
fn tcp_flags_syn_only_takes_connection_attempts_and_not_their_answers() {
    let (lab, client, server) = Lab::pair("synonly");
    let listener = tcp_listener(&server, false, PORT);
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let to = server.addr(false, PORT);
    let connect_under = |flags: &str, direction: &str| {
        let tool = lab.attach(&rule(
            "tcp",
            None,
            args!["--direction", direction, "--tcp-flags", flags, "--drop", 100, "--json"],
        ));
        let (got, syn_retries) = counting_syn_retries(&client, || tcp_connect(&client, to, CONNECT_GIVE_UP));
        let out = tool.terminate();
        while listener.accept().is_ok() {}
        (got, out.counter("dropped").saturating_sub(syn_retries))
    };

    let (answered, dropped) = connect_under("syn-only", "from");
    answered.expect("syn-only from the server took its SYN-ACK");
    assert_eq!(dropped, 0);

    let (attempt, dropped) = connect_under("syn-only", "to");
    let error = attempt.expect_err("a connection came up with its SYNs dropped");
    assert!(timed_out(&error), "the connect failed otherwise than by a timeout: {error}");
    assert_eq!(dropped, 1, "the one SYN sent before the connect gave up");

    let (answer, dropped) = connect_under("syn", "from");
    let error = answer.expect_err("a connection came up with its SYN-ACKs dropped");
    assert!(timed_out(&error), "the connect failed otherwise than by a timeout: {error}");
    assert!(dropped >= 1, "no SYN-ACK was dropped");
}

/// Vaurien's `error` behavior is a reset of every matched segment: an open
/// connection fails with ECONNRESET at its next exchange, a new one with
/// ECONNREFUSED (its SYN-ACK becomes the reset). `dummy` matches and counts
/// and does nothing.
#[test]
fn behaviors_error_resets_and_dummy_only_counts() {
    let (lab, client, server) = Lab::pair("behavior");
    let listener = tcp_listener(&server, false, PORT);
    let to = server.addr(false, PORT);
    let (mut open, mut echo) = connected(&client, &listener, to);
    for end in [&open, &echo] {
        end.set_read_timeout(Some(ANSWER)).expect("setting a timeout");
    }

    let tool = lab.attach(&rule("tcp", None, args!["--behavior", "dummy", "--json"]));
    let kept: io::Result<()> = (0..10u8).try_for_each(|i| round_trip(&mut open, &mut echo, &[i; 100]));
    let out = tool.terminate();
    kept.expect("a round trip failed under the dummy behavior");
    assert!(out.counter("matched") >= 20, "dummy did not count the exchange: {out}");
    assert_eq!(out.counter("matched"), out.counter("passed"), "dummy touched packets: {out}");

    let tool = lab.attach(&rule("tcp", None, args!["--behavior", "error", "--json"]));
    let broken = round_trip(&mut open, &mut echo, b"hello");
    let refused = tcp_connect(&client, to, ANSWER);
    let out = tool.terminate();
    let error = broken.expect_err("the open connection survived the error behavior");
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "the open connection failed otherwise: {error}");
    let error = refused.expect_err("a new connection came up under the error behavior");
    assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "the connect failed otherwise: {error}");
    assert!(out.counter("reset") >= 2, "{out}");
}
