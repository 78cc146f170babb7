//! `serve`'s API under slow and idle clients (slowloris), before any
//! token is checked: it keeps answering, closes connections that send no
//! request in time, holds a bounded number, and gives memory back.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use pygocentrus_tests::{BRIDGE, Lab, args, http, in_netns};

const API: &str = "127.0.0.1:8474";

/// What the README promises: connections served at once, and how long a
/// request head or body may take.
const MAX_CONNECTIONS: usize = 256;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How soon `GET /version` must answer while the attack goes on: it takes
/// a few milliseconds; 2 s covers a loaded 2-core CI machine.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

fn api() -> SocketAddr {
    API.parse().unwrap()
}

/// Bytes of the request head each slow client sends (of a header that
/// never ends): the server must buffer them.
const PARTIAL_HEAD: usize = 32 * 1024;

/// `n` connections to the API from the lab's host namespace; every other
/// one has sent [`PARTIAL_HEAD`] bytes of a request head, the rest nothing.
fn slowloris(lab: &Lab, n: usize) -> Vec<TcpStream> {
    let mut head = b"GET /version HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
    head.resize(PARTIAL_HEAD, b'a');
    in_netns(lab.host(), || {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&api(), Duration::from_secs(5)).unwrap();
                if i % 2 == 0 {
                    // The server may already have closed it to make room.
                    let _ = s.write_all(&head);
                }
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect()
    })
}

/// How many of `conns` the server has not closed.
fn still_open(conns: &mut [TcpStream]) -> usize {
    conns
        .iter_mut()
        .map(|s| {
            let mut buf = [0u8; 512];
            matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .filter(|open| *open)
        .count()
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn version_answers_in_time(lab: &Lab, when: &str) {
    let start = Instant::now();
    let r = http(lab.host(), api(), "GET", "/version", "", None);
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{when}: {r:?}");
    assert!(took <= ANSWER_WITHIN, "{when}: GET /version took {took:?}");
}

#[test]
fn idle_and_slow_clients_neither_stop_the_api_nor_stay() {
    let lab = Lab::new("slowloris", 1);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    version_answers_in_time(&lab, "before the attack");
    let before = rss_kib(tool.pid());

    // Three times the cap: the API goes on answering, and holds no more
    // than the cap (the new ones close the ones idle longest).
    let mut conns = slowloris(&lab, 3 * MAX_CONNECTIONS);
    version_answers_in_time(&lab, "with 3x the cap of idle connections open");
    std::thread::sleep(Duration::from_millis(500));
    let open = still_open(&mut conns);
    assert!(open <= MAX_CONNECTIONS, "{open} idle connections still open, more than the cap of {MAX_CONNECTIONS}");
    let during = rss_kib(tool.pid());
    // The cap bounds what the attack costs: 64 KiB of buffer at most for
    // each of MAX_CONNECTIONS, and allocator slack.
    assert!(during <= before + 32 * 1024, "VmRSS {before} KiB before the attack, {during} KiB during it");

    // None sent a request head in time: all are closed by then.
    std::thread::sleep(READ_TIMEOUT + Duration::from_secs(2));
    let open = still_open(&mut conns);
    assert_eq!(open, 0, "{open} connections that sent no whole request head in {READ_TIMEOUT:?} are still open");
    version_answers_in_time(&lab, "after the attack");
    drop(conns);

    // Memory comes back near where it was: within 8 MiB (allocator slack).
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(tool.pid());
    eprintln!("VmRSS: {before} KiB before, {during} KiB during, {after} KiB after");
    assert!(after <= before + 8 * 1024, "VmRSS {before} KiB before the attack, {after} KiB after it");
    tool.terminate();
}

#[test]
fn a_body_that_does_not_come_is_answered_408_in_time() {
    let lab = Lab::new("slowbody", 1);
    let tool = lab.serve(&args!["--iface", BRIDGE]);
    let mut s = in_netns(lab.host(), || TcpStream::connect_timeout(&api(), Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT + Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    s.write_all(
        b"POST /proxies HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na",
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "no 408 within {took:?}: {text:?}");
    assert!(text.contains(r#""status":408"#), "not the JSON error shape: {text:?}");
    assert!(took <= READ_TIMEOUT + Duration::from_secs(2), "answered after {took:?}");
    version_answers_in_time(&lab, "after");
    tool.terminate();
}
