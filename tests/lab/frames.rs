//! Hand-made frames, for the packets no socket sends: lengths that disagree
//! with each other, a UDP datagram shorter than its IP payload. Sent from a
//! container's `eth0` by a packet socket, caught on another's.

use std::{
    io,
    mem::{size_of, zeroed},
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use pygocentrus_common::csum;

use crate::Container;

pub const ETH_HLEN: usize = 14;
pub const IP_HLEN: usize = 20;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ALL: u16 = 0x0003;

/// Ethernet from `from` to `to`, then IPv4 carrying `l4` (protocol
/// `proto`) with valid header checksum and the true total length; the
/// caller may then spoil what it wants.
pub fn ipv4(from: &Container, to: &Container, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + IP_HLEN + l4.len());
    f.extend_from_slice(&mac(&to.mac));
    f.extend_from_slice(&mac(&from.mac));
    f.extend_from_slice(&ETH_P_IP.to_be_bytes());
    let total = u16::try_from(IP_HLEN + l4.len()).expect("a frame within 64 KiB");
    let mut ip = [0u8; IP_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&from.ip4.octets());
    ip[16..20].copy_from_slice(&to.ip4.octets());
    let sum = !csum::fold(csum::sum_words(0, &ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// Rewrites the IPv4 total length of `frame` to `total` and fixes the
/// header checksum: a header that is valid in itself and lies about the
/// packet's length.
pub fn set_ipv4_total(frame: &mut [u8], total: u16) {
    let ip = &mut frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10..12].fill(0);
    let sum = !csum::fold(csum::sum_words(0, ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// A UDP datagram (`data`, its length field saying 8 + `data.len()`) with
/// a valid checksum between the addresses given, followed by `trailer`
/// bytes that are in the IP payload but not in the datagram.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, data: &[u8], trailer: &[u8]) -> Vec<u8> {
    let len = u16::try_from(UDP_HLEN + data.len()).expect("a datagram within 64 KiB");
    let mut d = Vec::with_capacity(usize::from(len) + trailer.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(data);
    let pseudo = csum::pseudo_sum(&src.octets(), &dst.octets(), 17, u32::from(len));
    let sum = match !csum::fold(csum::sum_words(pseudo, &d)) {
        0 => 0xffff,
        s => s,
    };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d.extend_from_slice(trailer);
    d
}

/// A TCP segment with `flags` and `data`, data offset `doff` words (5 for a
/// header without options; more, with no options there, claims a header
/// longer than it is), and a valid checksum over what it carries.
#[expect(clippy::too_many_arguments, reason = "one call per field of the header a test sets")]
pub fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    flags: u8,
    doff: u8,
    data: &[u8],
) -> Vec<u8> {
    let mut s = vec![0u8; TCP_HLEN];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..8].copy_from_slice(&seq.to_be_bytes());
    s[12] = doff << 4;
    s[13] = flags;
    s[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    s.extend_from_slice(data);
    let len = u32::try_from(s.len()).expect("a segment within 4 GiB");
    let pseudo = csum::pseudo_sum(&src.octets(), &dst.octets(), 6, len);
    let sum = !csum::fold(csum::sum_words(pseudo, &s));
    s[16..18].copy_from_slice(&sum.to_be_bytes());
    s
}

fn mac(text: &str) -> [u8; 6] {
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).expect("a MAC address")).collect();
    bytes.try_into().expect("a MAC address of 6 bytes")
}

/// A packet socket on a container's `eth0`: sends frames as they are,
/// receives every frame that arrives.
pub struct Wire {
    fd: OwnedFd,
    ifindex: i32,
}

impl Wire {
    /// Opens it inside `c`'s namespace.
    pub fn open(c: &Container) -> Self {
        c.run(|| {
            // SAFETY: plain socket calls; the descriptor is owned at once.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ALL.to_be())) };
            assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
            // SAFETY: a descriptor this call made and nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
            assert!(ifindex != 0, "no eth0 in {}", c.ns);
            let ifindex = i32::try_from(ifindex).expect("an interface index");
            // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex;
            // SAFETY: `sll` is a sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).expect("a small struct"),
                )
            };
            assert_eq!(r, 0, "binding the packet socket: {}", io::Error::last_os_error());
            Self { fd, ifindex }
        })
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: as in `open`.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` is a readable buffer of its length; `sll` as in `open`.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const sll).cast(),
                u32::try_from(size_of::<libc::sockaddr_ll>()).expect("a small struct"),
            )
        };
        assert_eq!(usize::try_from(n).ok(), Some(frame.len()), "sending a frame: {}", io::Error::last_os_error());
    }

    /// The frames that arrive (not those this end sends) for which `keep`
    /// says yes, until `quiet` passes without one.
    pub fn receive(&self, quiet: Duration, keep: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65_536];
        let mut deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1);
            // SAFETY: one pollfd.
            if unsafe { libc::poll(&raw mut pfd, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: as in `open`.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            let mut len = u32::try_from(size_of::<libc::sockaddr_ll>()).expect("a small struct");
            // SAFETY: `buf` is writable for its length; `sll` and `len` as above.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&raw mut sll).cast(),
                    &raw mut len,
                )
            };
            let Ok(n) = usize::try_from(n) else { continue };
            if sll.sll_pkttype != libc::PACKET_OUTGOING && keep(&buf[..n]) {
                got.push(buf[..n].to_vec());
                deadline = Instant::now() + quiet;
            }
        }
    }
}
