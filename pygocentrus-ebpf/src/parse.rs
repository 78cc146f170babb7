//! Header parsing with bounds-checked direct packet access. Multi-byte
//! fields are kept as byte arrays in network order until compared.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use pygocentrus_common::{PROTO_TCP, PROTO_UDP};

use crate::{
    maps::{self, Pass},
    packet::Packet,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
/// What is read by direct access before the L4 header: Ethernet, one VLAN
/// tag and an IPv6 header (or IPv4 without options). The L4 header is
/// pulled in only if it is not linear already ([`read_l4`]).
const BEFORE_L4: u32 = (ETH_HLEN + VLAN_HLEN + IPV6_HLEN) as u32;

#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

/// `N` bytes of the packet at `offset`, by direct access (no helper call).
#[inline(always)]
fn read<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ()> {
    // SAFETY: ptr_at checked that N bytes at offset are inside the packet.
    Ok(unsafe { *ptr_at::<[u8; N]>(ctx, offset)? })
}

/// [`read`] at an offset within the headers (below 256) that the verifier
/// cannot bound by itself, such as one read back from the scratch slot: the
/// mask keeps every offset the parser gives as it is and bounds the rest.
#[inline(always)]
pub fn read_header<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ()> {
    read::<N>(ctx, offset & 0xff)
}

/// Makes the first [`BEFORE_L4`] bytes readable by direct access when the
/// skb keeps them in paged data (rare: every stack puts its headers in the
/// linear part).
///
/// Only what is needed: `bpf_skb_pull_data` un-clones the skb, and TCP's
/// egress skbs are clones whose linear part ends with the TCP header. A pull
/// of a fixed 138 bytes (the longest headers there are) copied the head of
/// every TCP data segment: about 540 ns a segment on a live stream
/// (`cargo xtask bench-live`), most of the classifier's cost there.
#[inline(always)]
fn linearize(ctx: &TcContext) {
    let want = ctx.len().min(BEFORE_L4);
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

/// Which packets are worth parsing in full, from the config flags.
pub struct Filter {
    /// Some rule matches any port (a portless rule, the endpoint's rules).
    pub any_port: bool,
    /// Portless rules exist.
    pub portless: bool,
    /// Every target is one address, in the exact table (no prefix, no
    /// endpoint rule): an address the table does not know is no target's.
    pub exact_only: bool,
}

/// Parses Ethernet (one 802.1Q/802.1ad tag), IPv4 or IPv6, TCP or UDP,
/// into this CPU's scratch slot for `pass`.
/// IPv6 extension headers are walked to the L4 header ([`extensions`]).
/// `Ok(None)`: a packet we never touch (not IP, a non-first fragment, an
/// IPv6 extension chain [`extensions`] does not follow), one neither of whose ports is `named` while no
/// rule matches any port, or (`filter.exact_only`) one whose addresses no
/// target has. The ports are read before the addresses, and both checked
/// before the scratch slot is looked up, so that the common case, traffic
/// no rule names a port or an address of, costs as little as possible.
#[inline(always)]
pub fn packet(
    ctx: &TcContext,
    filter: &Filter,
    named: impl Fn([u8; 2]) -> bool,
    pass: Pass,
) -> Result<Option<&'static mut Packet>, ()> {
    linearize(ctx);
    let mut l3 = ETH_HLEN;
    let mut ethertype = u16::from_be_bytes(read::<2>(ctx, 12)?);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = u16::from_be_bytes(read::<2>(ctx, 16)?);
        l3 += VLAN_HLEN;
    }
    // Only what locates the L4 header, first: fewer live values on the
    // path most packets leave by.
    let (family, proto, l4) = match ethertype {
        ETH_P_IP => {
            let ip = read::<10>(ctx, l3)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return Err(());
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                return Ok(None);
            }
            (IPV4, ip[9], l3 + ihl)
        }
        ETH_P_IPV6 => {
            let ip = read::<8>(ctx, l3)?;
            if ip[0] >> 4 != 6 {
                return Err(());
            }
            if !is_extension_header(ip[6]) {
                (IPV6, ip[6], l3 + IPV6_HLEN)
            } else {
                match extensions(ctx, ip[6], l3 + IPV6_HLEN) {
                    Some(Walked { next, l4, first_fragment }) => {
                        (if first_fragment { IPV6_WALKED | IPV6_FIRST_FRAGMENT } else { IPV6_WALKED }, next, l4)
                    }
                    None => return Ok(None),
                }
            }
        }
        _ => return Ok(None),
    };
    let ipv6 = family != IPV4;
    // Behind extension headers, the L4 header is read by the helper too
    // (see `extensions`).
    let walked = family & IPV6_WALKED != 0;
    let (sport, dport, l4_hlen, tcp_flags) = match proto {
        PROTO_TCP => {
            let tcp = read_l4::<14>(ctx, l4, walked)?;
            let hlen = usize::from(tcp[12] >> 4) * 4;
            if hlen < 20 {
                return Err(());
            }
            ([tcp[0], tcp[1]], [tcp[2], tcp[3]], hlen, tcp[13])
        }
        PROTO_UDP => {
            let udp = read_l4::<4>(ctx, l4, walked)?;
            ([udp[0], udp[1]], [udp[2], udp[3]], UDP_HLEN, 0)
        }
        _ => ([0; 2], [0; 2], 0, 0),
    };
    let (sport_named, dport_named) = (named(sport), named(dport));
    if !(filter.any_port || sport_named || dport_named) {
        return Ok(None);
    }
    let (saddr, daddr) = if ipv6 {
        let a = words::<8>(ctx, l3 + 8)?;
        ([a[0], a[1], a[2], a[3]], [a[4], a[5], a[6], a[7]])
    } else {
        let a = words::<2>(ctx, l3 + 12)?;
        (mapped(a[0]), mapped(a[1]))
    };
    // Where every target is one address, an address no target has ends
    // here: one array read per side, before the scratch slot is filled.
    if filter.exact_only {
        let known = |addr: [u32; 4], port: [u8; 2], named: bool| {
            (named && maps::exact_known(addr, port)) || (filter.portless && maps::exact_known(addr, [0, 0]))
        };
        if !(known(daddr, dport, dport_named) || known(saddr, sport, sport_named)) {
            return Ok(None);
        }
    }
    let pkt = maps::packet_slot(pass).ok_or(())?;
    pkt.key.sport = sport;
    pkt.key.dport = dport;
    pkt.key.proto = proto;
    put_addr(&mut pkt.key.saddr, saddr);
    put_addr(&mut pkt.key.daddr, daddr);
    // Where the IP packet ends by its own length, and the L4 length.
    let (ip_end, mut l4_len) = if ipv6 {
        let payload = usize::from(u16::from_be_bytes(read::<2>(ctx, l3 + 4)?));
        pkt.fragment = family & IPV6_FIRST_FRAGMENT != 0;
        // The extension headers are part of the payload, not of the L4 length.
        (l3 + IPV6_HLEN + payload, payload.saturating_sub(l4 - l3 - IPV6_HLEN))
    } else {
        let ip = read::<8>(ctx, l3)?;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        pkt.fragment = ip[6] & 0x20 != 0;
        (l3 + total, total.saturating_sub(l4 - l3))
    };
    let mut intact = ip_end <= ctx.len() as usize && l4_hlen <= l4_len;
    if proto == PROTO_UDP {
        let udp_len = usize::from(u16::from_be_bytes(read_l4::<2>(ctx, l4 + 4, walked)?));
        intact &= (UDP_HLEN..=l4_len).contains(&udp_len);
        l4_len = udp_len.min(l4_len);
    }
    pkt.l4_len = l4_len;
    pkt.intact = intact;
    pkt.l3 = l3;
    pkt.l4 = l4;
    pkt.l4_hlen = l4_hlen;
    pkt.ipv6 = ipv6;
    pkt.tcp_flags = tcp_flags;
    pkt.sport_named = sport_named;
    pkt.dport_named = dport_named;
    Ok(Some(pkt))
}

/// IPv4-mapped (`::ffff:a.b.c.d`), as 32-bit words in memory order.
#[inline(always)]
fn mapped(v4: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), v4]
}

/// `N` 32-bit words of the packet at `offset`, in memory order.
#[inline(always)]
fn words<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u32; N], ()> {
    let p = ptr_at::<[u32; N]>(ctx, offset)?;
    // SAFETY: ptr_at checked that the words are inside the packet. The IP
    // header, and so its addresses, sits at a 4-byte boundary in the
    // kernel's buffers (NET_IP_ALIGN), and where it does not the BPF
    // instruction loads it anyway (the verifier asks alignment of packet
    // reads only on architectures without efficient unaligned access).
    // Word loads instead of a byte copy: a 16-byte copy compiles to a call
    // of `memmove`.
    Ok(unsafe { p.read() })
}

/// Writes an address given as words into a key's address field.
#[inline(always)]
fn put_addr(dst: &mut [u8; 16], words: [u32; 4]) {
    let p = dst.as_mut_ptr().cast::<u32>();
    // SAFETY: `dst` is the `saddr` or `daddr` of a `FlowKey`, which is
    // 8-byte aligned with those fields at offsets 0 and 16: 4-byte aligned,
    // 16 bytes long.
    unsafe {
        p.write(words[0]);
        p.add(1).write(words[1]);
        p.add(2).write(words[2]);
        p.add(3).write(words[3]);
    }
}

/// IPv6 extension headers (RFC 8200 and the IANA list).
#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// What parsing an IPv4 or IPv6 header found: the family, and for IPv6
/// whether extension headers were walked and the packet is the first
/// fragment of a datagram (bits).
const IPV4: u8 = 0;
const IPV6: u8 = 1;
const IPV6_WALKED: u8 = IPV6 | 2;
const IPV6_FIRST_FRAGMENT: u8 = 4;

/// `N` bytes of the L4 header at `at`: by direct access, or by the helper
/// behind extension headers, whose offset the verifier should not follow.
/// A header that is not linear (its IPv4 options took it past
/// [`BEFORE_L4`], or the skb keeps it in paged data) is pulled in first.
#[inline(always)]
fn read_l4<const N: usize>(ctx: &TcContext, at: usize, walked: bool) -> Result<[u8; N], ()> {
    if walked {
        return ctx.load(at).map_err(|_| ());
    }
    if let Ok(bytes) = read::<N>(ctx, at) {
        return Ok(bytes);
    }
    let want = (at + N) as u32;
    if ctx.len() < want {
        return Err(());
    }
    // Fail open, as in `linearize`.
    let _ = ctx.pull_data(want);
    read::<N>(ctx, at)
}

/// Extension headers walked before a packet is left alone: a chain this
/// long is already unusual (RFC 8200 expects at most one of each, in
/// order, and hosts send at most two or three).
const MAX_EXTENSIONS: usize = 4;

/// Where an IPv6 packet's extension headers end.
struct Walked {
    /// The header after them: the L4 protocol.
    next: u8,
    /// Its offset.
    l4: usize,
    /// A fragment header with offset 0 and more to come.
    first_fragment: bool,
}

/// Walks the extension headers from `next` at offset `at` (hop-by-hop,
/// routing, fragment, destination options, authentication): the L4 header
/// behind them, as IPv4's would be found. `None` (a packet we never touch,
/// as IPv4 treats the same): a later fragment, which has no L4 header; a
/// chain longer than [`MAX_EXTENSIONS`]; an extension this walk does not
/// know the length of (mobility, HIP, shim6, experimental).
///
/// Read by the helper, not by direct access: the offsets it adds up come
/// from the packet, and the verifier would otherwise follow every chain
/// separately through the rest of the program.
#[inline(always)]
fn extensions(ctx: &TcContext, mut next: u8, mut at: usize) -> Option<Walked> {
    let mut first_fragment = false;
    let mut i = 0;
    while i < MAX_EXTENSIONS {
        let h: [u8; 4] = ctx.load(at).ok()?;
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte
            // units, not counting the first 8.
            0 | 43 | 60 => at += (usize::from(h[1]) + 1) * 8,
            // Fragment: 8 bytes; offset (13 bits) and the M flag.
            44 => {
                let field = u16::from_be_bytes([h[2], h[3]]);
                if field & 0xfff8 != 0 {
                    return None;
                }
                first_fragment = field & 1 != 0;
                at += 8;
            }
            // Authentication: length in 4-byte units, not counting the first 8.
            51 => at += (usize::from(h[1]) + 2) * 4,
            _ => return None,
        }
        next = h[0];
        if !is_extension_header(next) {
            return Some(Walked { next, l4: at, first_fragment });
        }
        i += 1;
    }
    None
}
