//! Packets whose lengths disagree (issue 13's torture run): a fault that
//! rewrites a packet by its lengths must not repair one its receiver would
//! discard, nor damage bytes outside it. Frames are made by hand and sent
//! by a packet socket, across a plain bridge (bridge netfilter off in the
//! lab, as on most CNI bridges: with it on, the bridge itself drops IPv4
//! headers that lie about their length).

use std::{net::UdpSocket, os::fd::AsRawFd as _, time::Duration};

use pygocentrus_tests::{
    Lab, Outcome, args, bind_udp,
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

/// The server's UDP socket on PORT and two senders, over IPv6: one plain,
/// one whose datagrams carry `dstopts` (a destination options header).
struct V6Sockets {
    rx: UdpSocket,
    plain: UdpSocket,
    with_options: UdpSocket,
}

impl V6Sockets {
    fn new(lab: &Lab, dstopts: &[u8]) -> Self {
        let (client, server) = (lab.container(0), lab.container(1));
        let rx = server.run(|| bind_udp(server.addr(true, PORT)));
        rx.set_read_timeout(Some(QUIET)).unwrap();
        let plain = client.run(|| bind_udp(client.addr(true, 0)));
        let with_options = client.run(|| bind_udp(client.addr(true, 0)));
        // SAFETY: a valid socket and a readable option buffer of its length.
        let r = unsafe {
            libc::setsockopt(
                with_options.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                dstopts.as_ptr().cast(),
                u32::try_from(dstopts.len()).unwrap(),
            )
        };
        assert_eq!(r, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
        Self { rx, plain, with_options }
    }

    /// Sends 20 datagrams of `size` bytes from `tx` and returns how many
    /// arrived, and with `drop` what `--drop 100` attached meanwhile said
    /// (without, nothing is attached).
    fn exchange(&self, lab: &Lab, tx: &UdpSocket, drop: bool, size: usize) -> (usize, Option<Outcome>) {
        let server = lab.container(1);
        let tool = drop.then(|| lab.attach(&rule("udp", Some(server.ip(true)), args!["--drop", 100, "--json"])));
        for i in 0..20u8 {
            tx.send_to(&vec![i; size], server.addr(true, PORT)).unwrap();
        }
        let mut got = 0;
        let mut buf = vec![0u8; 65_536];
        while self.rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        (got, tool.map(pygocentrus_tests::Tool::terminate))
    }
}

#[test]
fn drop_catches_ipv6_datagrams_behind_extension_headers_and_fragments() {
    let (lab, _, _) = Lab::pair("v6ext");
    plain_bridge(&lab);
    // PadN over the 6 bytes a destination options header has room for.
    let s = V6Sockets::new(&lab, &[0, 0, 1, 4, 0, 0, 0, 0]);
    // Without a fault every datagram arrives: the lab carries them.
    assert_eq!(s.exchange(&lab, &s.plain, false, 12_000).0, 20, "fragmented datagrams do not cross the lab");
    assert_eq!(s.exchange(&lab, &s.with_options, false, 100).0, 20, "datagrams with options do not cross the lab");
    // 12 000 bytes: 9 fragments each; the first carries the UDP header.
    let (got, out) = s.exchange(&lab, &s.plain, true, 12_000);
    let out = out.unwrap();
    assert_eq!(got, 0, "{got} of 20 fragmented datagrams arrived: {out}");
    assert_eq!(out.counter("dropped"), 20, "one first fragment per datagram: {out}");
    let (got, out) = s.exchange(&lab, &s.with_options, true, 100);
    let out = out.unwrap();
    assert_eq!(got, 0, "{got} of 20 datagrams with a destination options header arrived: {out}");
    assert_eq!(out.counter("dropped"), 20, "{out}");
}
