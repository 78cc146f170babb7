//! Header parsing with bounds-checked direct packet access. Multi-byte
//! fields are kept as byte arrays in network order until compared.

use core::mem::size_of;

use aya_ebpf::programs::TcContext;
use pygocentrus_common::{CLASS_OTHER, CLASS_TCP, CLASS_UDP, FlowKey, PROTO_TCP, PROTO_UDP, decide};

use crate::maps::{self, Pass};

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

/// What the rest of the program needs to know about a packet. It lives in
/// a per-CPU scratch slot (`maps::packet_slot`), not on the 512-byte stack.
/// The key first, at the slot's 8-byte aligned start.
#[repr(C)]
pub struct Packet {
    /// Addresses (IPv4-mapped for IPv4), ports (zero for protocols without
    /// ports), network order, and the IP protocol (IPv4) or next header
    /// (IPv6): also the key of the flow maps, built once.
    pub key: FlowKey,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// Length of the L4 header (TCP data offset, 8 for UDP; 0 otherwise).
    pub l4_hlen: usize,
    /// Length of the L4 header plus payload: from the IP header, or for UDP
    /// the datagram's own length, which may be shorter (what follows it in
    /// the IP payload is not the datagram's).
    pub l4_len: usize,
    /// The lengths agree with each other and with the frame: the IP length
    /// covers the headers and fits in the frame, the L4 header fits in the
    /// L4 length, a UDP length is within the IP payload. A fault that
    /// rewrites a packet by its lengths (reset, corrupt-payload) leaves one
    /// that is not intact alone: the receiver would discard it, and the
    /// fault must not repair it.
    pub intact: bool,
    pub ipv6: bool,
    /// The first fragment of a fragmented IPv4 datagram.
    pub fragment: bool,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// Whether some rule names the source / destination port: the trie is
    /// only searched for a port a rule names.
    pub sport_named: bool,
    pub dport_named: bool,
}

impl Packet {
    /// Column of the rule table: `CLASS_TCP`, `CLASS_UDP` or `CLASS_OTHER`.
    /// Computed where it is used, not stored: a value read back from the
    /// scratch slot is unbounded to the verifier, and Linux 6.1's loses
    /// the bound a check gives it once the compiler spills the index.
    #[inline(always)]
    pub fn class(&self) -> usize {
        match self.key.proto {
            PROTO_TCP => CLASS_TCP,
            PROTO_UDP => CLASS_UDP,
            _ => CLASS_OTHER,
        }
    }

    /// How many payload bytes a payload fault may damage
    /// ([`decide::payload_len`]): none unless the packet is intact.
    #[inline(always)]
    pub fn payload_len(&self) -> Option<usize> {
        if !self.intact {
            return None;
        }
        decide::payload_len(self.key.proto, self.fragment, self.l4_len, self.l4_hlen)
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

/// `N` bytes of the packet at `offset`, by direct access (no helper call).
#[inline(always)]
pub fn read<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], ()> {
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
/// `Ok(None)`: a packet we never touch (not IP, a non-first fragment, an
/// IPv6 extension header), one neither of whose ports is `named` while no
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
    let (ipv6, proto, l4) = match ethertype {
        ETH_P_IP => {
            let ip = read::<10>(ctx, l3)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return Err(());
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
                return Ok(None);
            }
            (false, ip[9], l3 + ihl)
        }
        ETH_P_IPV6 => {
            let ip = read::<8>(ctx, l3)?;
            if ip[0] >> 4 != 6 {
                return Err(());
            }
            if is_extension_header(ip[6]) {
                return Ok(None);
            }
            (true, ip[6], l3 + IPV6_HLEN)
        }
        _ => return Ok(None),
    };
    let (sport, dport, l4_hlen, tcp_flags) = match proto {
        PROTO_TCP => {
            let tcp = read::<14>(ctx, l4)?;
            let hlen = usize::from(tcp[12] >> 4) * 4;
            if hlen < 20 {
                return Err(());
            }
            ([tcp[0], tcp[1]], [tcp[2], tcp[3]], hlen, tcp[13])
        }
        PROTO_UDP => {
            let udp = read::<4>(ctx, l4)?;
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
        pkt.fragment = false;
        (l3 + IPV6_HLEN + payload, payload)
    } else {
        let ip = read::<8>(ctx, l3)?;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        pkt.fragment = ip[6] & 0x20 != 0;
        (l3 + total, total.saturating_sub(l4 - l3))
    };
    let mut intact = ip_end <= ctx.len() as usize && l4_hlen <= l4_len;
    if proto == PROTO_UDP {
        let udp_len = usize::from(u16::from_be_bytes(read::<2>(ctx, l4 + 4)?));
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

/// IPv6 extension headers (RFC 8200 and the IANA list): we do not walk
/// them, so packets carrying one pass untouched.
#[inline(always)]
fn is_extension_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}
