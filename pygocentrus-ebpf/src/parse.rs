//! Header parsing with bounds-checked direct packet access. Multi-byte
//! fields are kept as byte arrays in network order until compared.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use pygocentrus_common::{CLASS_OTHER, CLASS_TCP, CLASS_UDP, FlowKey, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// Headers we may read: Ethernet + VLAN + IPv4 with options + TCP with options.
const MAX_HEADERS: u32 = (ETH_HLEN + VLAN_HLEN + 60 + 60) as u32;

/// What the rest of the program needs to know about a packet.
pub struct Packet {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    pub ipv6: bool,
    /// The IP protocol (IPv4) or next header (IPv6).
    pub proto: u8,
    /// Column of the rule table: `CLASS_TCP`, `CLASS_UDP` or `CLASS_OTHER`.
    pub class: usize,
    /// Addresses, IPv4-mapped for IPv4, network order.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Ports, network order; zero for protocols without ports.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    /// Length of the L4 header (TCP data offset, 8 for UDP; 0 otherwise).
    pub l4_hlen: usize,
    /// Length of the L4 header plus payload, from the IP header.
    pub l4_len: usize,
    /// The first fragment of a fragmented IPv4 datagram.
    pub fragment: bool,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
}

impl Packet {
    pub fn flow_key(&self) -> FlowKey {
        FlowKey::new(self.saddr, self.daddr, self.sport, self.dport, self.proto)
    }

    /// The pseudo-header addresses: 4 bytes for IPv4, 16 for IPv6.
    pub fn addrs(&self) -> (&[u8], &[u8]) {
        if self.ipv6 { (&self.saddr, &self.daddr) } else { (&self.saddr[12..], &self.daddr[12..]) }
    }
}

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
fn read<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ()> {
    // SAFETY: ptr_at checked that N bytes at offset are inside the packet.
    Ok(unsafe { *ptr_at::<[u8; N]>(ctx, offset)? })
}

/// Makes the headers readable by direct access when the skb keeps them in
/// paged data (rare for locally generated traffic).
#[inline(always)]
fn linearize(ctx: &TcContext) {
    let want = ctx.len().min(MAX_HEADERS);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        // Fail open: if this does not work, the reads below fail and the
        // packet passes.
        let _ = ctx.pull_data(want);
    }
}

/// Whether the Ethernet destination is `mac`.
#[inline(always)]
pub fn to_mac(ctx: &TcContext, mac: &[u8; 6]) -> Result<bool, ()> {
    Ok(read::<6>(ctx, 0)? == *mac)
}

/// Parses Ethernet (one 802.1Q/802.1ad tag), IPv4 or IPv6, TCP or UDP.
/// `Ok(None)`: a packet we never touch (not IP, a non-first fragment, an
/// IPv6 extension header).
#[inline(always)]
pub fn packet(ctx: &TcContext) -> Result<Option<Packet>, ()> {
    linearize(ctx);
    let mut l3 = ETH_HLEN;
    let mut ethertype = u16::from_be_bytes(read::<2>(ctx, 12)?);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be_bytes(read::<2>(ctx, 16)?);
        l3 += VLAN_HLEN;
    }
    let mut pkt = Packet {
        l3,
        l4: 0,
        ipv6: false,
        proto: 0,
        class: CLASS_OTHER,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: [0; 2],
        dport: [0; 2],
        l4_hlen: 0,
        l4_len: 0,
        fragment: false,
        tcp_flags: 0,
    };
    match ethertype {
        ETH_P_IP => {
            let ip = read::<20>(ctx, l3)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return Err(());
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x1fff != 0 {
                return Ok(None);
            }
            pkt.fragment = frag & 0x2000 != 0;
            pkt.proto = ip[9];
            pkt.saddr = mapped([ip[12], ip[13], ip[14], ip[15]]);
            pkt.daddr = mapped([ip[16], ip[17], ip[18], ip[19]]);
            pkt.l4 = l3 + ihl;
            pkt.l4_len = usize::from(u16::from_be_bytes([ip[2], ip[3]])).saturating_sub(ihl);
        }
        ETH_P_IPV6 => {
            let ip = read::<IPV6_HLEN>(ctx, l3)?;
            if ip[0] >> 4 != 6 {
                return Err(());
            }
            if is_extension_header(ip[6]) {
                return Ok(None);
            }
            pkt.ipv6 = true;
            pkt.proto = ip[6];
            let mut i = 0;
            while i < 16 {
                pkt.saddr[i] = ip[8 + i];
                pkt.daddr[i] = ip[24 + i];
                i += 1;
            }
            pkt.l4 = l3 + IPV6_HLEN;
            pkt.l4_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        }
        _ => return Ok(None),
    }
    match pkt.proto {
        PROTO_TCP => {
            let tcp = read::<14>(ctx, pkt.l4)?;
            pkt.class = CLASS_TCP;
            pkt.sport = [tcp[0], tcp[1]];
            pkt.dport = [tcp[2], tcp[3]];
            pkt.l4_hlen = usize::from(tcp[12] >> 4) * 4;
            pkt.tcp_flags = tcp[13];
            if pkt.l4_hlen < 20 {
                return Err(());
            }
        }
        PROTO_UDP => {
            let udp = read::<4>(ctx, pkt.l4)?;
            pkt.class = CLASS_UDP;
            pkt.sport = [udp[0], udp[1]];
            pkt.dport = [udp[2], udp[3]];
            pkt.l4_hlen = UDP_HLEN;
        }
        PROTO_ICMP | PROTO_ICMPV6 => {}
        _ => {}
    }
    Ok(Some(pkt))
}

#[inline(always)]
fn mapped(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// IPv6 extension headers (RFC 8200 and the IANA list): we do not walk
/// them, so packets carrying one pass untouched.
#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
