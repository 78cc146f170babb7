//! When a packet may leave: the rate limit, the delay and its jitter, and
//! the order of its flow, written to `skb->tstamp` as an earliest departure
//! time (EDT). The `fq` qdisc the loader puts on the port holds the packet
//! until then; no timer runs per packet. (A packet a local socket still
//! owns was swapped for a copy before it got here: `orphan` in main.rs.)

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use pygocentrus_common::{Counter, RULE_KEEP_ORDER, Rule, Tally, decide};

use crate::{maps, packet::Packet};

const NSEC_PER_SEC: u64 = 1_000_000_000;
/// The longest a rate-limited packet may be made to wait for its turn: the
/// rule's queue, in time. A packet that would wait longer is dropped, as a
/// full queue drops it, and does not move the rule's clock. Without this
/// bound a bulk TCP sender fills fq far beyond its horizon, fq drops what
/// lies beyond it, and each retransmission is stamped later still: the
/// connection stalls for the length of its retransmission back-off.
/// (Cilium's bandwidth manager bounds its EDT queue the same way, by 2 s.)
const RATE_BACKLOG_NS: u64 = 2 * NSEC_PER_SEC;

/// Which of the rule's schedules the dice chose for this packet.
pub struct Chosen {
    /// The delay (and its jitter).
    pub delay: bool,
    /// The rate.
    pub rate: bool,
    /// The FIN delay (the packet carries FIN).
    pub fin: bool,
}

/// Sets the departure time of a packet at egress: the rate first, then the
/// delay (`jitter` is the draw that picks it from the distribution) and
/// the FIN delay, then the flow's order (`flow`: the flow's hash if the
/// seeded dice made it already). What it counts: delayed, rate-limited, or
/// dropped when the rule's rate queue is full (the packet must then be
/// dropped).
#[inline(always)]
pub fn schedule(
    ctx: &TcContext,
    pkt: &Packet,
    id: u32,
    rule: &Rule,
    chosen: &Chosen,
    jitter: u32,
    flow: Option<u64>,
) -> Tally {
    let mut tally = 0;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut departure = now;
    if chosen.rate
        && let Some(state) = maps::rule_state(id)
    {
        if state.next_departure > now.saturating_add(RATE_BACKLOG_NS) {
            return Counter::Dropped.bit();
        }
        if state.next_departure > departure {
            departure = state.next_departure;
            tally |= Counter::RateLimited.bit();
        }
        state.next_departure =
            departure + (u64::from(ctx.len()) * NSEC_PER_SEC).checked_div(rule.rate_bytes).unwrap_or(0);
    }
    if chosen.delay {
        let d = decide::pick_delay(rule, jitter, maps::dist_value);
        if d != 0 {
            departure += d;
            tally |= Counter::Delayed.bit();
        }
    }
    if chosen.fin {
        departure += rule.fin_delay_ns;
        tally |= Counter::Delayed.bit();
    }
    if rule.flags & RULE_KEEP_ORDER != 0 {
        departure = maps::in_flow_order(flow.unwrap_or_else(|| decide::flow_hash(&pkt.key)), departure);
    }
    if departure > now {
        // SAFETY: `skb` points to the context the kernel gave us; tstamp is
        // writable from tc programs. A later time already set (a socket's
        // own pacing) is kept.
        unsafe {
            let skb = ctx.skb.skb;
            if (*skb).tstamp < departure {
                (*skb).tstamp = departure;
            }
        }
    }
    tally
}
