//! --corrupt (the receiving kernel discards the packet and says so) and
//! --corrupt-payload (the application gets damaged bytes).

use std::{
    io::{Read as _, Write as _},
    net::Shutdown,
    time::Duration,
};

use pygocentrus_tests::{BRIDGE, Lab, NetCounters, UdpFlow, args, tcp_connect, tcp_listener};

use crate::PORT;

const N: u32 = 200;

/// Corrupts every datagram to the target and checks that the receiving
/// kernel, not the tool, threw them away: `counter` in its own statistics
/// grows by the number sent.
fn corrupt_all_udp(tag: &str, v6: bool, counter: &str) {
    let lab = Lab::new(tag, 2);
    let (client, server) = (lab.container(0), lab.container(1));
    let flow = UdpFlow::new(&client, 0, &server, PORT, v6);
    let ip = server.ip(v6).to_string();
    let before = NetCounters::read(&server.ns);
    let tool =
        lab.attach(&args!["--iface", BRIDGE, "--ip", ip, "--port", PORT, "--proto", "udp", "--corrupt", 100, "--json"]);
    let x = flow.exchange(N);
    let out = tool.terminate();
    let errors = before.growth(&NetCounters::read(&server.ns), counter);

    assert_eq!(x.received(), 0, "corrupted datagrams reached the application");
    assert_eq!(out.counter("corrupted"), u64::from(N), "{out}");
    // Every corrupted datagram is one error; nothing else in this private
    // namespace makes such errors, but allow a couple for stray traffic.
    assert!(
        (u64::from(N)..=u64::from(N) + 2).contains(&errors),
        "{counter} grew by {errors} for {N} corrupted datagrams"
    );
}

#[test]
fn corrupt_ipv4_is_a_header_checksum_error_at_the_receiver() {
    corrupt_all_udp("csum4", false, "IpExt:InCsumErrors");
}

#[test]
fn corrupt_ipv6_is_a_header_error_at_the_receiver() {
    corrupt_all_udp("csum6", true, "Ip6InHdrErrors");
}

#[test]
fn tcp_recovers_from_corrupt_20_by_retransmitting() {
    // 1 MiB: enough segments (and ACKs) that at 20% corruption in both
    // directions some are certainly lost, few enough to finish in a second
    // or two even with retransmission timeouts.
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let lab = Lab::new("csumtcp", 2);
    let (client, server) = (lab.container(0), lab.container(1));
    let listener = tcp_listener(&server, false, PORT);
    let ip = server.ip4.to_string();
    let tool =
        lab.attach(&args!["--iface", BRIDGE, "--ip", ip, "--port", PORT, "--proto", "tcp", "--corrupt", 20, "--json"]);
    let (client_before, server_before) = (NetCounters::read(&client.ns), NetCounters::read(&server.ns));

    // Timeouts only keep a broken run from hanging: TCP retries a lost SYN
    // after 1 s, and a lost tail after at least 200 ms, doubling each time.
    // Under QEMU's emulation (the kernel matrix) RTTs and so timeouts are
    // far longer: two minutes is only a guard against a hang.
    let timeout = Some(Duration::from_secs(120));
    let received = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accepting the client");
            conn.set_read_timeout(timeout).expect("setting a read timeout");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("reading what the client sent");
            got
        });
        let mut conn = tcp_connect(&client, server.addr(false, PORT), Duration::from_secs(120)).expect("connecting");
        conn.set_write_timeout(timeout).expect("setting a write timeout");
        conn.write_all(&data).expect("sending");
        conn.shutdown(Shutdown::Write).expect("closing the sending side");
        reader.join().expect("the reader panicked")
    });
    let out = tool.terminate();
    let retrans = client_before.growth(&NetCounters::read(&client.ns), "Tcp:RetransSegs");
    let csum_errors = server_before.growth(&NetCounters::read(&server.ns), "IpExt:InCsumErrors");

    assert!(received == data, "TCP delivered {} bytes that differ from the {} sent", received.len(), data.len());
    assert!(out.counter("corrupted") > 0, "nothing was corrupted: {out}");
    assert!(csum_errors > 0, "the server's kernel saw no checksum error");
    assert!(retrans > 0, "the client never retransmitted");
}

/// Flips a byte of every datagram and checks that each arrives, one byte
/// different from what was sent.
fn corrupt_payload_all_udp(tag: &str, v6: bool) {
    let lab = Lab::new(tag, 2);
    let (client, server) = (lab.container(0), lab.container(1));
    let flow = UdpFlow::new(&client, 0, &server, PORT, v6);
    let tool =
        lab.attach(&args!["--iface", BRIDGE, "--port", PORT, "--proto", "udp", "--corrupt-payload", 100, "--json"]);
    let x = flow.exchange(N);
    let out = tool.terminate();

    // The checksum was fixed, so the kernel delivered every datagram (in
    // order: one sender, one path).
    assert_eq!(x.received(), x.sent(), "corrupted datagrams were discarded");
    for (i, (sent, got)) in x.sent.iter().zip(&x.received).enumerate() {
        assert_eq!(sent.len(), got.len(), "datagram {i} changed length");
        let changed = sent.iter().zip(got).filter(|(a, b)| a != b).count();
        assert_eq!(changed, 1, "datagram {i}: {changed} bytes changed\nsent {sent:02x?}\ngot  {got:02x?}");
    }
    assert_eq!(out.counter("corrupted_payload"), u64::from(N), "{out}");
}

#[test]
fn corrupt_payload_ipv4_changes_one_byte_of_each_datagram() {
    corrupt_payload_all_udp("cpay4", false);
}

#[test]
fn corrupt_payload_ipv6_changes_one_byte_of_each_datagram() {
    corrupt_payload_all_udp("cpay6", true);
}
