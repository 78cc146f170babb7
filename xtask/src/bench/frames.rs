//! Ethernet/IPv4 frames for BPF_PROG_TEST_RUN, with correct checksums (so
//! that a fault that rewrites them can be checked afterwards).

use pygocentrus_common::{PROTO_TCP, PROTO_UDP, csum};

pub const ETH_HLEN: usize = 14;
pub const IP_HLEN: usize = 20;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// A full 1500-byte IP packet, like the segments of a bulk TCP transfer.
const IP_MTU: usize = 1500;

pub const TCP_PSH_ACK: u8 = 0x18;
pub const TCP_RST: u8 = 0x04;

/// One frame under test, and how to describe it in the report.
#[derive(Clone, Debug)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub label: String,
}

/// A full-size TCP segment (PSH|ACK, 1460 bytes of payload).
pub fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Frame {
    let payload = IP_MTU - IP_HLEN - TCP_HLEN;
    let mut l4 = vec![0u8; TCP_HLEN + payload];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&1_000_000u32.to_be_bytes()); // seq
    l4[8..12].copy_from_slice(&2_000_000u32.to_be_bytes()); // ack
    l4[12] = ((TCP_HLEN / 4) as u8) << 4;
    l4[13] = TCP_PSH_ACK;
    l4[14..16].copy_from_slice(&502u16.to_be_bytes()); // window
    fill_payload(&mut l4[TCP_HLEN..]);
    let sum = l4_checksum(&src, &dst, PROTO_TCP, &l4);
    l4[16..18].copy_from_slice(&sum.to_be_bytes());
    Frame {
        bytes: ipv4(src, dst, PROTO_TCP, &l4),
        label: format!("TCP {} B {}:{sport} → {}:{dport}", IP_MTU + ETH_HLEN, dotted(src), dotted(dst)),
    }
}

/// A full-size UDP datagram with a checksum.
pub fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Frame {
    let payload = IP_MTU - IP_HLEN - UDP_HLEN;
    let mut l4 = vec![0u8; UDP_HLEN + payload];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..6].copy_from_slice(&((UDP_HLEN + payload) as u16).to_be_bytes());
    fill_payload(&mut l4[UDP_HLEN..]);
    let sum = match l4_checksum(&src, &dst, PROTO_UDP, &l4) {
        0 => 0xffff,
        s => s,
    };
    l4[6..8].copy_from_slice(&sum.to_be_bytes());
    Frame {
        bytes: ipv4(src, dst, PROTO_UDP, &l4),
        label: format!("UDP {} B {}:{sport} → {}:{dport}", IP_MTU + ETH_HLEN, dotted(src), dotted(dst)),
    }
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + IP_HLEN + l4.len());
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // source MAC
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; IP_HLEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IP_HLEN + l4.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes()); // identification
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = !csum::fold(csum::sum_words(0, &ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// The checksum to store in a TCP/UDP header whose checksum field is zero.
fn l4_checksum(src: &[u8; 4], dst: &[u8; 4], proto: u8, l4: &[u8]) -> u16 {
    !csum::fold(csum::sum_words(csum::pseudo_sum(src, dst, proto, l4.len() as u32), l4))
}

/// Whether the IPv4 header checksum of a frame is correct.
pub fn ip_checksum_ok(frame: &[u8]) -> bool {
    frame.len() >= ETH_HLEN + IP_HLEN && csum::fold(csum::sum_words(0, &frame[ETH_HLEN..ETH_HLEN + IP_HLEN])) == 0xffff
}

/// Whether the TCP/UDP checksum of a frame is correct, over the length the
/// IP header states.
pub fn l4_checksum_ok(frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN + IP_HLEN {
        return false;
    }
    let ip = &frame[ETH_HLEN..ETH_HLEN + IP_HLEN];
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let end = ETH_HLEN + total;
    if total < IP_HLEN || end > frame.len() {
        return false;
    }
    let l4 = &frame[ETH_HLEN + IP_HLEN..end];
    let pseudo = csum::pseudo_sum(&ip[12..16], &ip[16..20], ip[9], l4.len() as u32);
    csum::fold(csum::sum_words(pseudo, l4)) == 0xffff
}

fn fill_payload(p: &mut [u8]) {
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
}

fn dotted(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_correct() {
        for f in
            [tcp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 5201), udp([198, 18, 0, 1], [198, 18, 0, 2], 40000, 5201)]
        {
            assert_eq!(f.bytes.len(), 1514);
            assert!(ip_checksum_ok(&f.bytes));
            assert!(l4_checksum_ok(&f.bytes));
        }
    }
}
