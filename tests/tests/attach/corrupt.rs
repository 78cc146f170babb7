//! --corrupt (the receiving kernel discards the packet and says so) and
//! --corrupt-payload (the application gets damaged bytes).

use std::{
    io::{Read as _, Write as _},
    net::Shutdown,
    time::Duration,
};

use pygocentrus_tests::{Lab, NetCounters, UdpFlow, args, tcp_connect, tcp_listener};

use crate::{PORT, rule};

const N: u32 = 200;

/// Corrupts every datagram to the target and checks that the receiving
/// kernel, not the tool, threw them away: `counter` in its own statistics
/// grows by the number sent.
fn corrupt_all_udp(tag: &str, v6: bool, counter: &str) {
    let (lab, client, server) = Lab::pair(tag);
    let flow = UdpFlow::new(&client, 0, &server, PORT, v6);
    let before = NetCounters::read(&server.ns);
    let tool = lab.attach(&rule("udp", Some(server.ip(v6)), args!["--corrupt", 100, "--json"]));
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
    // 8 MiB. veth carries GSO packets of up to 64 KiB, so a MiB can be as
    // few as 16 packets (CI once saw 23 matched and none corrupted: 0.8^23 is
    // 0.6%). 8 MiB is at least 128 packets: at 20% none corrupted has a
    // chance of 0.8^128 < 1e-12.
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let (lab, client, server) = Lab::pair("csumtcp");
    let listener = tcp_listener(&server, false, PORT);
    // Connected before the tool runs, and only the data direction damaged:
    // a lost SYN costs a 1 s retry, and lost ACKs inflate the sender's RTT
    // estimate (an ACK that does arrive covers segments sent long before),
    // hence its retransmission timeout, to seconds: the transfer would
    // sometimes take tens of seconds. Lost data segments alone are repaired
    // in milliseconds, at worst a few timeouts of 200 ms and up.
    let mut conn = tcp_connect(&client, server.addr(false, PORT), Duration::from_secs(10)).expect("connecting");
    let (mut accepted, _) = listener.accept().expect("accepting");
    let tool = lab.attach(&rule("tcp", Some(server.ip(false)), args!["--direction", "to", "--corrupt", 20, "--json"]));
    let (client_before, server_before) = (NetCounters::read(&client.ns), NetCounters::read(&server.ns));

    // Only keeps a broken run from hanging.
    let timeout = Some(Duration::from_secs(120));
    let received = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            accepted.set_read_timeout(timeout).expect("setting a read timeout");
            let mut got = Vec::new();
            accepted.read_to_end(&mut got).expect("reading what the client sent");
            got
        });
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
    let (lab, client, server) = Lab::pair(tag);
    let flow = UdpFlow::new(&client, 0, &server, PORT, v6);
    let tool = lab.attach(&rule("udp", None, args!["--corrupt-payload", 100, "--json"]));
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
