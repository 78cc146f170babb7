//! What the program knows of a packet once it is parsed: written by
//! `parse`, kept in a scratch slot of `maps`, read by everything after.
//! (Its own module, so that `maps` and `parse` do not import each other.)

use pygocentrus_common::{CLASS_OTHER, CLASS_TCP, CLASS_UDP, FlowKey, PROTO_TCP, PROTO_UDP, decide};

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
    /// The first fragment of a fragmented datagram (IPv4, or IPv6 by its
    /// fragment header).
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
