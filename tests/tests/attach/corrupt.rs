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
    // veth carries GSO packets of up to 64 KiB, so a MiB can be as few as
    // 16 packets (CI once saw 23 matched and none corrupted in a 1 MiB
    // transfer: 0.8^23 is 0.6%). So the stream goes a MiB at a time until
    // the server's kernel has counted a checksum error, up to 16 MiB: at
    // least 256 packets, none of them corrupted at 20% with a chance of
    // 0.8^256 < 1e-24. Usually one or two MiB: each repaired loss can cost
    // a retransmission timeout, which is slow under QEMU's emulation.
    const CHUNK: u32 = 1 << 20;
    const MAX_CHUNKS: u32 = 16;
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
    // Only keeps a broken run from hanging.
    let timeout = Some(Duration::from_secs(120));
    accepted.set_read_timeout(timeout).expect("setting a read timeout");
    conn.set_write_timeout(timeout).expect("setting a write timeout");
    let tool = lab.attach(&rule("tcp", Some(server.ip(false)), args!["--direction", "to", "--corrupt", 20, "--json"]));
    let (client_before, server_before) = (NetCounters::read(&client.ns), NetCounters::read(&server.ns));
    let csum_errors = || server_before.growth(&NetCounters::read(&server.ns), "IpExt:InCsumErrors");

    let mut chunks = 0;
    while chunks < MAX_CHUNKS && (chunks == 0 || csum_errors() == 0) {
        let data: Vec<u8> =
            (chunks * CHUNK..(chunks + 1) * CHUNK).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let reading = &mut accepted;
        let received = std::thread::scope(|s| {
            let len = data.len();
            let reader = s.spawn(move || {
                let mut got = vec![0u8; len];
                reading.read_exact(&mut got).expect("reading what the client sent");
                got
            });
            conn.write_all(&data).expect("sending");
            reader.join().expect("the reader panicked")
        });
        assert!(received == data, "TCP delivered bytes that differ from those sent in MiB {chunks}");
        chunks += 1;
    }
    conn.shutdown(Shutdown::Write).expect("closing the sending side");
    let mut rest = Vec::new();
    accepted.read_to_end(&mut rest).expect("reading to the end");
    assert!(rest.is_empty(), "{} bytes more than were sent", rest.len());
    let out = tool.terminate();
    let retrans = client_before.growth(&NetCounters::read(&client.ns), "Tcp:RetransSegs");

    assert!(out.counter("corrupted") > 0, "nothing was corrupted in {chunks} MiB: {out}");
    assert!(csum_errors() > 0, "the server's kernel saw no checksum error in {chunks} MiB");
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
