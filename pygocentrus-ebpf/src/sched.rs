//! When a packet may leave: the rate limit, the delay and its jitter, and
//! the order of its flow, written to `skb->tstamp` as an earliest departure
//! time (EDT). The `fq` qdisc the loader puts on the port holds the packet
//! until then; no timer runs per packet. (A packet a local socket still
//! owns was swapped for a copy before it got here: `orphan` in main.rs.)

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use pygocentrus_common::{DIST_SCALE, DIST_UNIFORM, RULE_KEEP_ORDER, Rule};

use crate::{maps, parse::Packet};

const NSEC_PER_SEC: u64 = 1_000_000_000;
/// The longest a rate-limited packet may be made to wait for its turn: the
/// rule's queue, in time. A packet that would wait longer is dropped, as a
/// full queue drops it, and does not move the rule's clock. Without this
/// bound a bulk TCP sender fills fq far beyond its horizon, fq drops what
/// lies beyond it, and each retransmission is stamped later still: the
/// connection stalls for the length of its retransmission back-off.
/// (Cilium's bandwidth manager bounds its EDT queue the same way, by 2 s.)
const RATE_BACKLOG_NS: u64 = 2 * NSEC_PER_SEC;

/// What scheduling did to one packet, for the counters.
#[derive(Default)]
pub struct Scheduled {
    pub delayed: bool,
    pub rate_limited: bool,
    /// The rule's rate queue is full: the packet must be dropped.
    pub overflow: bool,
}

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
/// the FIN delay, then the flow's order.
#[inline(always)]
pub fn schedule(ctx: &TcContext, pkt: &Packet, id: u32, rule: &Rule, chosen: &Chosen, jitter: u32) -> Scheduled {
    let mut out = Scheduled::default();
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut departure = now;
    if chosen.rate
        && let Some(state) = maps::rule_state(id)
    {
        if state.next_departure > now.saturating_add(RATE_BACKLOG_NS) {
            out.overflow = true;
            return out;
        }
        if state.next_departure > departure {
            departure = state.next_departure;
            out.rate_limited = true;
        }
        state.next_departure =
            departure + (u64::from(ctx.len()) * NSEC_PER_SEC).checked_div(rule.rate_bytes).unwrap_or(0);
    }
    if chosen.delay {
        let d = pick_delay(rule, jitter);
        if d != 0 {
            departure += d;
            out.delayed = true;
        }
    }
    if chosen.fin {
        departure += rule.fin_delay_ns;
        out.delayed = true;
    }
    if rule.flags & RULE_KEEP_ORDER != 0 {
        departure = maps::in_flow_order(&pkt.flow_key(), departure);
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
    out
}

/// netem's `tabledist`: the mean delay plus jitter drawn from the rule's
/// distribution (uniform within ±jitter, or a table of standard normal,
/// pareto or paretonormal quantiles scaled by jitter), never below zero.
/// Only unsigned division (older kernels' BPF has no signed one), and only
/// checked division: a panic path would not pass the verifier.
#[inline(always)]
fn pick_delay(rule: &Rule, draw: u32) -> u64 {
    let mu = rule.delay_ns;
    let sigma = rule.jitter_ns;
    if sigma == 0 {
        return mu;
    }
    if rule.distribution == DIST_UNIFORM {
        let offset = u64::from(draw).checked_rem(2 * sigma).unwrap_or(0);
        return (mu + offset).saturating_sub(sigma);
    }
    let t = maps::dist_value(rule.distribution, draw);
    let scaled = (t.unsigned_abs() * sigma + DIST_SCALE as u64 / 2) / DIST_SCALE as u64;
    if t < 0 { mu.saturating_sub(scaled) } else { mu + scaled }
}
