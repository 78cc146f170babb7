//! Packets whose lengths disagree (issue 13's torture run): a fault that
//! rewrites a packet by its lengths must not repair one its receiver would
//! discard, nor damage bytes outside it. Frames are made by hand and sent
//! by a packet socket, across a plain bridge (bridge netfilter off in the
//! lab, as on most CNI bridges: with it on, the bridge itself drops IPv4
//! headers that lie about their length).

use std::{net::UdpSocket, time::Duration};

use pygocentrus_tests::{
    Lab, args,
    frames::{self, ETH_HLEN, IP_HLEN, TCP_HLEN, Wire},
    in_netns,
};

use crate::{PORT, rule};

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const QUIET: Duration = Duration::from_millis(500);

/// A plain bridge: the lab's host namespace without bridge netfilter.
fn plain_bridge(lab: &Lab) {
    in_netns(lab.host(), || {
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
            let path = format!("/proc/sys/net/bridge/{key}");
            // Absent where br_netfilter is not loaded: then it is plain already.
            if std::path::Path::new(&path).exists() {
                std::fs::write(&path, "0").unwrap_or_else(|e| panic!("setting {key}: {e}"));
            }
        }
    });
}

#[test]
fn reset_leaves_segments_whose_lengths_disagree_as_they_were() {
    let (lab, client, server) = Lab::pair("rstbad");
    plain_bridge(&lab);
    let (src, dst) = (client.ip4, server.ip4);
    let segment = |doff, data: &[u8]| frames::tcp(src, 40_000, dst, PORT, 1_000, TCP_ACK | TCP_PSH, doff, data);
    let data = [0x5a; 20];
    // The IP total length longer than the frame, shorter than the headers;
    // a data offset (60 bytes) beyond the 30-byte segment.
    let mut longer = frames::ipv4(&client, &server, 6, &segment(5, &data));
    let total = u16::try_from(longer.len() - ETH_HLEN).unwrap();
    frames::set_ipv4_total(&mut longer, total + 40);
    let mut shorter = frames::ipv4(&client, &server, 6, &segment(5, &data));
    frames::set_ipv4_total(&mut shorter, u16::try_from(IP_HLEN + TCP_HLEN - 4).unwrap());
    let beyond = frames::ipv4(&client, &server, 6, &segment(15, &data[..10]));
    let sent = [longer, shorter, beyond];

    let wire = Wire::open(&client);
    let tap = Wire::open(&server);
    let tool = lab.attach(&rule("tcp", Some(server.ip(false)), args!["--reset", 100, "--json"]));
    for f in &sent {
        wire.send(f);
    }
    let arrived = tap.receive(QUIET, |f| f.len() > ETH_HLEN + IP_HLEN && f[ETH_HLEN + 9] == 6);
    let out = tool.terminate();

    assert_eq!(arrived.len(), sent.len(), "{} of {} segments arrived", arrived.len(), sent.len());
    for (i, (s, a)) in sent.iter().zip(&arrived).enumerate() {
        assert_eq!(&a[..s.len().min(a.len())], &s[..], "segment {i} was changed on the way");
    }
    assert_eq!(out.counter("reset"), 0, "{out}");
    assert_eq!(out.counter("passed"), 3, "{out}");
}

#[test]
fn corrupt_payload_damages_a_short_udp_datagram_inside_it() {
    const N: usize = 50;
    let (lab, client, server) = Lab::pair("cpshort");
    let socket = server.run(|| UdpSocket::bind((server.ip4, PORT)).unwrap());
    socket.set_read_timeout(Some(QUIET)).unwrap();
    let wire = Wire::open(&client);
    let tool = lab.attach(&rule("udp", Some(server.ip(false)), args!["--corrupt-payload", 100, "--json"]));
    // 16 bytes of datagram, then 200 bytes in the IP payload that are not
    // the datagram's (legal: the UDP length says where it ends).
    let data = |i: usize| [u8::try_from(i).unwrap(); 16];
    for i in 0..N {
        let udp = frames::udp(client.ip4, 40_000, server.ip4, PORT, &data(i), &[0xaa; 200]);
        wire.send(&frames::ipv4(&client, &server, 17, &udp));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    let out = tool.terminate();

    // Damaged inside the datagram, its checksum fixed: every one arrives.
    assert_eq!(got.len(), N, "{} of {N} datagrams arrived: a byte outside them was flipped", got.len());
    // Datagram i is 16 bytes of value i: one of them changed leaves 15.
    for d in &got {
        assert_eq!(d.len(), 16, "a datagram changed length: {d:02x?}");
        let most = d.iter().map(|v| d.iter().filter(|b| *b == v).count()).max().unwrap_or(0);
        assert_eq!(most, 15, "not exactly one byte changed in {d:02x?}");
    }
    assert_eq!(out.counter("corrupted_payload"), N as u64, "{out}");
}
