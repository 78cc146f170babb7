//! The faults that rewrite a packet. Each returns `Err(())` when it does
//! not apply to the packet (or a helper failed), and the packet then passes
//! as it was.

use aya_ebpf::{bindings::BPF_F_MARK_MANGLED_0, programs::TcContext};
use pygocentrus_common::{PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, csum, decide};

use crate::{
    maps::{self, HEADER_SCRATCH, Pass},
    parse::Packet,
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
    let byte: u8 = ctx.load(offset).map_err(|_| ())?;
    ctx.store(offset, &(byte ^ mask), 0).map_err(|_| ())
}

/// `bpf_l4_csum_replace` flag bits holding the size of the replaced value.
const CSUM_FIELD_SIZE: u64 = 2;

/// Flips one payload byte (chosen by `draw`) and fixes the L4 checksum, so
/// the application receives damaged data. Packets without payload, and
/// fragments, are left alone.
#[inline(always)]
pub fn corrupt_payload(ctx: &TcContext, pkt: &Packet, draw: u32) -> Result<(), ()> {
    let (csum_off, flags) = match pkt.key.proto {
        PROTO_TCP => (TCP_CSUM_OFF, 0),
        PROTO_UDP => (UDP_CSUM_OFF, u64::from(BPF_F_MARK_MANGLED_0)),
        _ => return Err(()),
    };
    let payload_len = decide::payload_len(pkt.key.proto, pkt.fragment, pkt.l4_len, pkt.l4_hlen).ok_or(())?;
    // (Checked: the compiler does not see that the length is not zero.)
    let rel = pkt.l4_hlen + (draw as usize).checked_rem(payload_len).unwrap_or(0);
    let offset = pkt.l4 + rel;
    let old: u8 = ctx.load(offset).map_err(|_| ())?;
    let mut mask = (draw >> 24) as u8;
    if mask == 0 {
        mask = 0xff;
    }
    let new = old ^ mask;
    ctx.store(offset, &new, 0).map_err(|_| ())?;
    // The checksum sums 16-bit words counted from the L4 header: the byte is
    // the high half of its word at an even offset, the low half at an odd one.
    let word =
        |b: u8| u64::from(if rel.is_multiple_of(2) { u16::from_ne_bytes([b, 0]) } else { u16::from_ne_bytes([0, b]) });
    // The low bits of the flags give the size of the replaced field: 2 bytes.
    ctx.l4_csum_replace(pkt.l4 + csum_off, word(old), word(new), flags | CSUM_FIELD_SIZE).map_err(|_| ())
}

/// Whether [`reset`] applies to the packet ([`decide::resettable`]).
#[inline(always)]
pub fn resettable(pkt: &Packet) -> bool {
    decide::resettable(pkt.key.proto, pkt.tcp_flags, pkt.fragment, pkt.l4_hlen)
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
    let csum_at = pkt.l4 + TCP_CSUM_OFF;
    let (saddr, daddr) = pkt.addrs();

    // Is the checksum field a full checksum or, as for locally sent traffic
    // (CHECKSUM_PARTIAL), only the pseudo-header sum the device completes?
    let old_csum: [u8; 2] = ctx.load(csum_at).map_err(|_| ())?;
    let partial = old_csum == csum::fold(csum::pseudo_sum(saddr, daddr, PROTO_TCP, pkt.l4_len as u32)).to_be_bytes();

    // Flags: RST, keeping ACK (a SYN-SENT client checks the ack number).
    let flags = TCP_RST | (pkt.tcp_flags & TCP_ACK);
    ctx.store(pkt.l4 + 13, &flags, 0).map_err(|_| ())?;

    // IP length: headers only.
    if pkt.ipv6 {
        ctx.store(pkt.l3 + 4, &(hlen as u16).to_be_bytes(), 0).map_err(|_| ())?;
    } else {
        let old_tot: [u8; 2] = ctx.load(pkt.l3 + 2).map_err(|_| ())?;
        let new_tot = ((pkt.l4 - pkt.l3 + hlen) as u16).to_be_bytes();
        ctx.store(pkt.l3 + 2, &new_tot, 0).map_err(|_| ())?;
        ctx.l3_csum_replace(
            pkt.l3 + 10,
            u64::from(u16::from_ne_bytes(old_tot)),
            u64::from(u16::from_ne_bytes(new_tot)),
            2,
        )
        .map_err(|_| ())?;
    }

    // Strip the payload (this also clears GSO state).
    // SAFETY: the context's own skb, a length within the packet.
    check(unsafe { aya_ebpf::helpers::bpf_skb_change_tail(ctx.skb.skb, (pkt.l4 + hlen) as u32, 0) })?;

    // Checksum from scratch over the pseudo-header and the new header.
    let pseudo = csum::pseudo_sum(saddr, daddr, PROTO_TCP, hlen as u32);
    let new_csum = if partial {
        csum::fold(pseudo)
    } else {
        // The header is read into this CPU's scratch slot, not the stack.
        let hdr = maps::header_slot(pass).ok_or(())?;
        // hlen is 20..=60; written so that the verifier sees 1..=64 even
        // after LLVM spills it (older verifiers lose a clamp's lower bound
        // and refuse a possibly zero-sized read).
        let len = ((hlen as u32).wrapping_sub(1) & (HEADER_SCRATCH as u32 - 1)) + 1;
        // SAFETY: the helper writes at most `len` (at most 64) bytes into
        // the 64-byte slot.
        check(unsafe {
            aya_ebpf::helpers::bpf_skb_load_bytes(ctx.skb.skb as *const _, pkt.l4 as u32, hdr.as_mut_ptr().cast(), len)
        })?;
        // `hlen` = `len` (20..=60 is left as is by the mask).
        hdr[TCP_CSUM_OFF] = 0;
        hdr[TCP_CSUM_OFF + 1] = 0;
        // Summed over a loop of constant bound: the verifier of Linux 6.1
        // loses the bound of a slice length the compiler spills.
        !csum::fold(csum::sum_words_prefix(pseudo, hdr, len as usize))
    };
    ctx.store(csum_at, &new_csum.to_be_bytes(), 0).map_err(|_| ())?;
    Ok(())
}
