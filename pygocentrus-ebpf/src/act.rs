//! The faults that rewrite a packet. Each returns `Err(())` when it does
//! not apply to the packet (or a helper failed), and the packet then passes
//! as it was.

use aya_ebpf::{bindings::BPF_F_MARK_MANGLED_0, programs::TcContext};
use pygocentrus_common::{PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, csum, decide};

use crate::{
    maps::{self, HEADER_SCRATCH, Pass},
    packet::Packet,
    parse,
};

const TCP_CSUM_OFF: usize = 16;
const UDP_CSUM_OFF: usize = 6;

#[inline(always)]
fn check(ret: i64) -> Result<(), ()> {
    if ret == 0 { Ok(()) } else { Err(()) }
}

/// netem's corrupt: damage the packet so that the receiving kernel discards
/// it and counts the error.
///
/// IPv4: flip the lowest bit of the identification field and leave the
/// header checksum stale; the receiver drops it (`IpExt: InCsumErrors`).
/// (Flipping a payload bit would not do: traffic between namespaces carries
/// an offloaded L4 checksum that the receiver trusts.)
///
/// IPv6 has no header checksum: flip the version field instead; the receiver
/// drops it as a header error (`Ip6InHdrErrors`).
#[inline(always)]
pub fn corrupt(ctx: &TcContext, pkt: &Packet) -> Result<(), ()> {
    let (offset, mask) = if pkt.ipv6 { (pkt.l3, 0x80u8) } else { (pkt.l3 + 5, 0x01u8) };
    // Read directly, written by the helper (see `reset`). Two bytes (both
    // inside the IP header): a check for one compiles to a comparison from
    // which the verifier learns nothing.
    let [byte, _] = parse::read_header::<2>(ctx, offset)?;
    ctx.store(offset, &(byte ^ mask), 0).map_err(|_| ())
}

/// `bpf_l4_csum_replace` flag bits holding the size of the replaced value.
const CSUM_FIELD_SIZE: u64 = 2;

/// Flips one payload byte (chosen by `draw`, [`decide::payload_pick`]) and
/// fixes the L4 checksum, so the application receives damaged data.
/// Packets without payload, and fragments, are left alone.
#[inline(always)]
pub fn corrupt_payload(ctx: &TcContext, pkt: &Packet, draw: u32) -> Result<(), ()> {
    let (csum_off, flags) = match pkt.key.proto {
        PROTO_TCP => (TCP_CSUM_OFF, 0),
        PROTO_UDP => (UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0)),
        _ => return Err(()),
    };
    let payload_len = pkt.payload_len().ok_or(())?;
    let (at, mask) = decide::payload_pick(draw, payload_len);
    let rel = pkt.l4_hlen + at;
    let offset = pkt.l4 + rel;
    // By the helper: the payload of a large packet is mostly in paged data,
    // which direct access cannot reach.
    let old: u8 = ctx.load(offset).map_err(|_| ())?;
    let new = old ^ mask;
    ctx.store(offset, &new, 0).map_err(|_| ())?;
    // The checksum sums 16-bit words counted from the L4 header: the byte is
    // the high half of its word at an even offset, the low half at an odd one.
    let word =
        |b: u8| u64::from(if rel.is_multiple_of(2) { u16::from_ne_bytes([b, 0]) } else { u16::from_ne_bytes([0, b]) });
    // The low bits of the flags give the size of the replaced field: 2 bytes.
    // (The helper, not our own arithmetic: it knows whether the skb's
    // checksum is still to be completed by the device, and then leaves it.)
    ctx.l4_csum_replace(pkt.l4 + csum_off, word(old), word(new), flags | CSUM_FIELD_SIZE).map_err(|_| ())
}

/// Whether [`reset`] applies to the packet ([`decide::resettable`]): never
/// to one that is not intact (its receiver would discard it, and a reset
/// made of it would be accepted).
#[inline(always)]
pub fn resettable(pkt: &Packet) -> bool {
    pkt.intact && decide::resettable(pkt.key.proto, pkt.tcp_flags, pkt.fragment, pkt.l4_hlen)
}

/// Turns a TCP segment into a reset its receiver accepts as its peer's: the
/// same sequence number (so it is exactly the next expected byte), RST plus
/// the ACK flag and number it had, no payload, lengths and checksums fixed.
///
/// An initial SYN is never reset (nobody would hear it); the SYN-ACK that
/// answers it is, and the client's connect fails with ECONNREFUSED. The
/// caller has checked [`resettable`] (the decision needs it first).
#[inline(always)]
pub fn reset(ctx: &TcContext, pkt: &Packet, pass: Pass) -> Result<(), ()> {
    let hlen = pkt.l4_hlen;
    // The pseudo-header's sum but for its length, in memory order (see
    // `csum`): the checksum is summed as the words are loaded.
    let pseudo = csum::pseudo_ne(&pkt.key, pkt.ipv6, PROTO_TCP);

    // Reads first, by direct access and one helper call; then three
    // writes, each a helper (a TC program that writes the packet directly
    // gets a prologue that un-clones every skb it sees: TCP's egress skbs
    // are clones, so every packet would pay a copy): the IP length (and
    // IPv4's checksum), the tail cut, the TCP flags and checksum.
    let scratch = maps::header_slot(pass).ok_or(())?;
    // hlen is 20..=60; written so that the verifier sees 1..=64 even
    // after LLVM spills it (older verifiers lose a clamp's lower bound
    // and refuse a possibly zero-sized read).
    let len = ((hlen as u32).wrapping_sub(1) & (HEADER_SCRATCH as u32 - 1)) + 1;
    // SAFETY: the helper writes at most `len` (at most 64) bytes into the
    // 64-byte slot.
    check(unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            pkt.l4 as u32,
            scratch.tcp.as_mut_ptr().cast(),
            len,
        )
    })?;
    let hdr = scratch.tcp_bytes();

    // Is the checksum field a full checksum or, as for locally sent traffic
    // (CHECKSUM_PARTIAL), only the pseudo-header sum the device completes?
    let l4_len = pkt.l4_len as u32;
    let field = u16::from_ne_bytes([hdr[TCP_CSUM_OFF], hdr[TCP_CSUM_OFF + 1]]);
    let partial = field == csum::fold_ne(pseudo + csum::ne16((l4_len >> 16) as u16) + csum::ne16(l4_len as u16));
    // Flags: RST, keeping ACK (a SYN-SENT client checks the ack number).
    hdr[TCP_FLAGS_OFF] = TCP_RST | (pkt.tcp_flags & TCP_ACK);
    // The checksum from scratch over the pseudo-header and the new header.
    let pseudo = pseudo + csum::ne16(hlen as u16);
    let new_csum = if partial {
        csum::fold_ne(pseudo)
    } else {
        hdr[TCP_CSUM_OFF] = 0;
        hdr[TCP_CSUM_OFF + 1] = 0;
        // A TCP header is a whole number of 32-bit words: `len / 4` of
        // them (20..=60 is left as is by the mask).
        !csum::fold_ne(csum::sum_ne_words(pseudo, &scratch.tcp, (len / 4) as usize))
    };
    let hdr = scratch.tcp_bytes();
    [hdr[TCP_CSUM_OFF], hdr[TCP_CSUM_OFF + 1]] = new_csum.to_ne_bytes();

    // IP length: headers only.
    if pkt.ipv6 {
        ctx.store(pkt.l3 + 4, &(hlen as u16).to_be_bytes(), 0).map_err(|_| ())?;
    } else {
        // Bytes 2..12 of the header: the total length, the four bytes and
        // TTL and protocol it keeps, the header checksum updated for the
        // new length (RFC 1624), written by one call.
        let ip = &mut scratch.ip;
        *ip = parse::read_header::<IPV4_REWRITTEN>(ctx, pkt.l3 + 2)?;
        let old_tot = u16::from_be_bytes([ip[0], ip[1]]);
        let new_tot = (pkt.l4 - pkt.l3 + hlen) as u16;
        let old_csum = u16::from_be_bytes([ip[8], ip[9]]);
        [ip[0], ip[1]] = new_tot.to_be_bytes();
        [ip[8], ip[9]] = csum::replace16(old_csum, old_tot, new_tot).to_be_bytes();
        // SAFETY: `ip` is IPV4_REWRITTEN bytes of this CPU's scratch slot.
        check(unsafe {
            aya_ebpf::helpers::bpf_skb_store_bytes(
                ctx.skb.skb,
                (pkt.l3 + 2) as u32,
                ip.as_ptr().cast(),
                IPV4_REWRITTEN as u32,
                0,
            )
        })?;
    }

    // Strip the payload (this also clears GSO state).
    // SAFETY: the context's own skb, a length within the packet.
    check(unsafe { aya_ebpf::helpers::bpf_skb_change_tail(ctx.skb.skb, (pkt.l4 + hlen) as u32, 0) })?;

    // Flags, window (as it was) and checksum, from the scratch copy.
    // SAFETY: TCP_REWRITTEN bytes of the 64-byte slot, from offset 13.
    check(unsafe {
        aya_ebpf::helpers::bpf_skb_store_bytes(
            ctx.skb.skb,
            (pkt.l4 + TCP_FLAGS_OFF) as u32,
            scratch.tcp_bytes().as_ptr().add(TCP_FLAGS_OFF).cast(),
            TCP_REWRITTEN as u32,
            0,
        )
    })
}

const TCP_FLAGS_OFF: usize = 13;
/// Bytes a reset writes from the TCP flags on: flags, window, checksum.
const TCP_REWRITTEN: usize = TCP_CSUM_OFF + 2 - TCP_FLAGS_OFF;
/// Bytes a reset writes from the IPv4 total length on, up to and with
/// the header checksum.
const IPV4_REWRITTEN: usize = 10;
