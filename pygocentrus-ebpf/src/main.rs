//! The pygocentrus classifier: one TC program for ingress, one for egress,
//! sharing every map. Read it top to bottom: parse → match a rule → decide →
//! act → count. Anything unexpected passes the packet untouched (fail open);
//! only a deliberate fault returns `TC_ACT_SHOT`. (A packet to be delayed
//! that a local socket still owns is swapped for a copy first: `orphan`.)
#![no_std]
#![no_main]

mod act;
mod maps;
mod parse;
mod sched;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use pygocentrus_common::{
    Action, CONFIG_BRIDGE, CONFIG_ENDPOINT, CONFIG_PORTLESS, CONN_RESET_FWD, CONN_RESET_REV, CONN_UNPLUGGED, Config,
    Counters, LIMIT_BYTES, LIMIT_NS, LIMIT_PACKETS, MARK_DUPLICATE, MARK_ORPHAN, PROB_ALWAYS, PROB_NEVER, PROTO_TCP,
    RULE_GE, RULE_PER_CONNECTION, RULE_SEEDED, Rule, SIDE_FROM, SIDE_TO, TCP_FIN, TCP_RST, TargetValue, Threshold,
    decide,
};

use crate::parse::Packet;

/// "Not my business": hand the packet to whatever comes next (the next TCX
/// program, the next cls_bpf filter, or the default action). This is what
/// every packet we do not fault gets, so that we never override another
/// program's verdict.
const PASS: i32 = TC_ACT_UNSPEC;
const SHOT: i32 = TC_ACT_SHOT;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Ingress,
    Egress,
}

#[classifier]
pub fn pyg_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, Hook::Ingress)
}

#[classifier]
pub fn pyg_egress(ctx: TcContext) -> i32 {
    classify(&ctx, Hook::Egress)
}

#[inline(always)]
fn classify(ctx: &TcContext, hook: Hook) -> i32 {
    // A copy we made passes a second time, its tag taken off: a duplicate
    // is only scheduled, an orphan's copy is judged as the packet it
    // replaces (which was not counted, judged or sent).
    let mark = mark(ctx);
    let tag = mark & (MARK_DUPLICATE | MARK_ORPHAN);
    if tag != 0 {
        ctx.set_mark(mark & !tag);
    }
    if tag & MARK_ORPHAN == 0 {
        maps::count(0, |c| c.seen += 1);
    }
    try_classify(ctx, hook, tag & MARK_DUPLICATE != 0).unwrap_or(PASS)
}

#[inline(always)]
fn try_classify(ctx: &TcContext, hook: Hook, copy: bool) -> Result<i32, ()> {
    let cfg = maps::config().ok_or(())?;
    if hook == Hook::Ingress && cfg.flags & CONFIG_BRIDGE != 0 && !parse::to_mac(ctx, &cfg.bridge_mac)? {
        // On a bridge port, a packet that is not addressed to the bridge
        // itself leaves by another port: its egress hook judges it. (On an
        // endpoint's veths, CONFIG_BRIDGE is off: the other ports are not
        // hooked, so the ingress hook judges everything the endpoint sends.)
        return Ok(PASS);
    }
    // Ports no rule names end here, before any address is copied or looked
    // up: the path most packets take.
    // (Portless rules and the endpoint's own rule match any port.)
    let any_port = cfg.flags & (CONFIG_PORTLESS | CONFIG_ENDPOINT) != 0;
    let Some(pkt) = parse::packet(ctx, any_port, maps::port_named)? else {
        return Ok(PASS);
    };
    let Some((id, rule)) = find_rule(&pkt, cfg, hook) else {
        return Ok(PASS);
    };
    if !flags_match(&pkt, rule) {
        // The rule's target, but not a segment it judges (--tcp-flags).
        maps::count(id, |c| c.seen += 1);
        return Ok(PASS);
    }
    if copy {
        return Ok(if hook == Hook::Egress { schedule(ctx, &pkt, id, rule, &Dice::new(&pkt, rule)) } else { PASS });
    }
    // A packet that will wait in fq and still belongs to its socket is
    // swapped for a copy, judged in its place.
    if hook == Hook::Egress
        && rule.schedules()
        && let Some(verdict) = orphan(ctx)
    {
        return Ok(verdict);
    }
    maps::count(id, |c| {
        c.seen += 1;
        c.matched += 1;
    });
    Ok(judge(ctx, &pkt, id, rule, hook))
}

/// Looks the packet's destination, then its source, up in the target trie
/// and returns the rule for its protocol and direction. A port entry is
/// tried before the portless entry of the same address. On an endpoint's
/// veths, the endpoint's own rules come last, the side given by the hook.
#[inline(always)]
fn find_rule(pkt: &Packet, cfg: &Config, hook: Hook) -> Option<(u32, &'static Rule)> {
    let portless = cfg.flags & CONFIG_PORTLESS != 0;
    let mut seen = 0;
    for side in [SIDE_TO, SIDE_FROM] {
        let (addr, port, named) = if side == SIDE_TO {
            (&pkt.daddr, pkt.dport, pkt.dport_named)
        } else {
            (&pkt.saddr, pkt.sport, pkt.sport_named)
        };
        let cell = TargetValue::index(side, pkt.class);
        if named
            && let Some(entry) = maps::target(addr, port)
            && let Some(found) = pick(entry, cell, &mut seen)
        {
            return Some(found);
        }
        if portless
            && let Some(entry) = maps::target(addr, [0, 0])
            && let Some(found) = pick(entry, cell, &mut seen)
        {
            return Some(found);
        }
    }
    if cfg.flags & CONFIG_ENDPOINT != 0
        && let Some(entry) = maps::endpoint()
    {
        let side = if hook == Hook::Egress { SIDE_TO } else { SIDE_FROM };
        if let Some(found) = pick(entry, TargetValue::index(side, pkt.class), &mut seen) {
            return Some(found);
        }
    }
    if seen != 0 {
        maps::count(seen, |c| c.seen += 1);
    }
    None
}

/// The rule of `cell` in a trie entry; if the cell is empty, remembers the entry's first rule in `seen` (the packet
/// belongs to that rule's target but not to its protocol or direction).
#[inline(always)]
fn pick(entry: &TargetValue, cell: usize, seen: &mut u32) -> Option<(u32, &'static Rule)> {
    // Checked: an index the compiler cannot bound would pull in a panic
    // path the verifier refuses (the endpoint's side comes from the hook).
    let id = entry.rules.get(cell).copied().unwrap_or(0);
    if id == 0 {
        if *seen == 0 {
            *seen = first_rule(entry);
        }
        return None;
    }
    Some((id, maps::rule(id)?))
}

#[inline(always)]
fn first_rule(entry: &TargetValue) -> u32 {
    let mut i = 0;
    while i < entry.rules.len() {
        if entry.rules[i] != 0 {
            return entry.rules[i];
        }
        i += 1;
    }
    0
}

/// Whether the packet is one the rule judges by its TCP flags: every
/// packet if the rule names none, else TCP segments with at least one of
/// `tcp_flags_any` and none of `tcp_flags_clear`.
#[inline(always)]
fn flags_match(pkt: &Packet, rule: &Rule) -> bool {
    if rule.tcp_flags_any == 0 {
        return true;
    }
    let f = u32::from(pkt.tcp_flags);
    pkt.proto == PROTO_TCP && f & rule.tcp_flags_any != 0 && f & rule.tcp_flags_clear == 0
}

/// What the flow limits of a rule decide for a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// No limit reached: the dice decide.
    Dice,
    /// Past the reset limit: make this segment the reset.
    Reset,
    /// The reset of this direction was sent: let the segment pass.
    Pass,
    /// The connection is unplugged: drop the packet.
    Unplug,
}

/// The flow limits of a rule (`--unplug-after`, `--reset-after`): counts
/// the packet in its connection's state and says whether a limit decides
/// its fate.
///
/// Reset first: a direction past its reset limit has its next TCP segment
/// turned into a reset, and the segments after it pass untouched (the
/// reset peer's kernel answers them with resets, closing the other end
/// too), even when the connection is also unplugged: unplug-after 0 with
/// reset-after T blackholes a connection and resets it after T
/// (Toxiproxy's `timeout`). Then unplug: a connection past its unplug
/// limit loses every packet the rule matches from then on.
///
/// The reset itself is left to `judge`, so that the program has one copy
/// of it (the verifier walks each copy): the direction is marked as reset
/// here, and if the rewrite then fails the later segments pass (fail open).
#[inline(always)]
fn flow_limits(pkt: &Packet, id: u32, rule: &Rule, dice: &Dice) -> Flow {
    // SAFETY: a helper without arguments.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    let Some(state) = maps::conn_state(decide::mix64(dice.conn ^ u64::from(id)), now) else {
        return Flow::Dice;
    };
    // Payload bytes: the L4 length past the TCP/UDP header (for other
    // protocols, whose header length is 0, the whole IP payload).
    let len = pkt.l4_len.saturating_sub(pkt.l4_hlen) as u64;
    let (bytes, packets, reset_bit) = if dice.forward {
        state.bytes_fwd += len;
        state.packets_fwd += 1;
        (state.bytes_fwd, state.packets_fwd, CONN_RESET_FWD)
    } else {
        state.bytes_rev += len;
        state.packets_rev += 1;
        (state.bytes_rev, state.packets_rev, CONN_RESET_REV)
    };
    let age = now.saturating_sub(state.start_ns);
    let past = |kind: u32, limit: u64| match kind {
        LIMIT_BYTES => bytes > limit,
        LIMIT_PACKETS => packets > limit,
        LIMIT_NS => age > limit,
        _ => false,
    };
    if past(rule.reset_kind, rule.reset_after) {
        if state.flags & reset_bit != 0 {
            return Flow::Pass;
        }
        if pkt.tcp_flags & TCP_RST != 0 {
            // Already a reset: it is this direction's.
            state.flags |= reset_bit;
            return Flow::Pass;
        }
        if act::resettable(pkt) {
            state.flags |= reset_bit;
            return Flow::Reset;
        }
        // Not a segment that can carry the reset (an initial SYN, UDP):
        // the limits after this one still apply.
    }
    if state.flags & CONN_UNPLUGGED != 0 || past(rule.unplug_kind, rule.unplug_after) {
        state.flags |= CONN_UNPLUGGED;
        return Flow::Unplug;
    }
    Flow::Dice
}

/// Throws the rule's dice in order (loss model and drop, reset, corrupt,
/// corrupt-payload) and applies the first that fires. A fault that does not
/// apply to this packet (a reset of an initial SYN, a payload fault on an
/// empty segment) lets the packet pass. A packet that passes may be
/// duplicated, and at egress gets its departure time.
#[inline(always)]
fn judge(ctx: &TcContext, pkt: &Packet, id: u32, rule: &Rule, hook: Hook) -> i32 {
    let dice = Dice::new(pkt, rule);
    let flow = if rule.limits_flows() && dice.fires(rule.limit_prob, Action::Limit) {
        flow_limits(pkt, id, rule, &dice)
    } else {
        Flow::Dice
    };
    match flow {
        Flow::Pass => {
            maps::count(id, bump_passed);
            return PASS;
        }
        Flow::Unplug => {
            maps::count(id, |c| c.unplugged += 1);
            return SHOT;
        }
        Flow::Dice | Flow::Reset => {}
    }
    let flow_reset = flow == Flow::Reset;
    if !flow_reset && (dice.fires(rule.drop, Action::Drop) || (rule.flags & RULE_GE != 0 && ge_loss(id, rule, &dice))) {
        maps::count(id, |c| c.dropped += 1);
        return SHOT;
    }
    if (flow_reset || dice.fires(rule.reset, Action::Reset)) && pkt.proto == PROTO_TCP && act::reset(ctx, pkt).is_ok() {
        maps::count(id, |c| c.reset += 1);
        return PASS;
    }
    if dice.fires(rule.corrupt, Action::Corrupt) && act::corrupt(ctx, pkt).is_ok() {
        maps::count(id, |c| c.corrupted += 1);
        return PASS;
    }
    if dice.fires(rule.corrupt_payload, Action::CorruptPayload)
        && act::corrupt_payload(ctx, pkt, dice.draw(Action::PayloadOffset)).is_ok()
    {
        maps::count(id, |c| c.corrupted_payload += 1);
        return PASS;
    }
    if dice.fires(rule.duplicate, Action::Duplicate) && duplicate(ctx, hook).is_ok() {
        maps::count(id, |c| c.duplicated += 1);
    }
    if hook == Hook::Egress && schedule(ctx, pkt, id, rule, &dice) == SHOT {
        return SHOT;
    }
    maps::count(id, bump_passed);
    PASS
}

/// Rate, delay and order for a packet leaving by egress, counted: `SHOT`
/// when the rule's rate queue is full, `PASS` otherwise.
#[inline(always)]
fn schedule(ctx: &TcContext, pkt: &Packet, id: u32, rule: &Rule, dice: &Dice) -> i32 {
    if !rule.schedules() {
        return PASS;
    }
    let chosen = sched::Chosen {
        delay: dice.fires(rule.delay_prob, Action::Delay),
        rate: rule.rate_bytes != 0 && dice.fires(rule.rate_prob, Action::Rate),
        fin: rule.fin_delay_ns != 0
            && pkt.tcp_flags & TCP_FIN != 0
            && dice.fires(rule.fin_delay_prob, Action::FinDelay),
    };
    let done = sched::schedule(ctx, pkt, id, rule, &chosen, dice.draw(Action::Jitter));
    if done.overflow {
        maps::count(id, |c| c.dropped += 1);
        return SHOT;
    }
    if done.delayed || done.rate_limited {
        maps::count(id, |c| {
            c.delayed += u64::from(done.delayed);
            c.rate_limited += u64::from(done.rate_limited);
        });
    }
    PASS
}

/// One step of the rule's Gilbert-Elliott chain: move between the good and
/// bad states, then lose the packet with the loss probability of the state
/// it is in (netem's order).
#[inline(always)]
fn ge_loss(id: u32, rule: &Rule, dice: &Dice) -> bool {
    let Some(state) = maps::rule_state(id) else {
        return false;
    };
    let ge = &rule.ge;
    let switch = dice.draw(Action::GeTransition);
    let loss = dice.draw(Action::GeLoss);
    if state.ge_bad == 0 {
        if decide::fires(switch, ge.p) {
            state.ge_bad = 1;
        }
        decide::fires(loss, ge.loss_good)
    } else {
        if decide::fires(switch, ge.r) {
            state.ge_bad = 0;
        }
        decide::fires(loss, ge.loss_bad)
    }
}

/// Sends a copy of the packet through the same hook of the same device;
/// the copy carries [`MARK_DUPLICATE`] so that it is not judged again.
#[inline(always)]
fn duplicate(ctx: &TcContext, hook: Hook) -> Result<(), ()> {
    if send_copy(ctx, hook, MARK_DUPLICATE) == 0 { Ok(()) } else { Err(()) }
}

/// `bpf_clone_redirect` of the packet to the hook it is in, the copy tagged
/// with `tag` for its second pass: the helper's result. The copy passes the
/// hook (and the qdisc behind it) before the helper returns.
#[inline(always)]
fn send_copy(ctx: &TcContext, hook: Hook, tag: u32) -> i64 {
    let mark = mark(ctx);
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flags = if hook == Hook::Ingress { u64::from(BPF_F_INGRESS) } else { 0 };
    ctx.set_mark(mark | tag);
    let sent = ctx.clone_redirect(ifindex, flags);
    ctx.set_mark(mark);
    match sent {
        Ok(()) => 0,
        Err(e) => e,
    }
}

/// `ENOBUFS`: what `bpf_clone_redirect` returns since Linux 6.6 when the
/// copy reached the device and its qdisc (or our own hook) dropped it.
const ENOBUFS: i64 = 105;

/// Takes a packet that is to wait in `fq` away from its sending socket
/// (what netem does with `skb_orphan_partial` before it delays one).
///
/// A packet sent by a socket on this host (every container's: veth and the
/// bridge do not orphan it) stays charged to that socket until it is freed.
/// TCP Small Queues lets a socket have only about two packets, or a
/// millisecond of its pacing rate, below the TCP layer; held for the delay
/// in `fq`, they are all a bulk TCP stream may send per delay: a 10 ms
/// delay held one at 4 Mbit/s where netem's kept 900.
///
/// A copy owns no socket: it is sent through this egress hook again, where
/// the program judges, counts and schedules it as the packet (tagged
/// [`MARK_ORPHAN`] only not to count it twice among the packets seen), and
/// the packet itself is freed, which releases its socket's share. Its
/// verdict is a redirect to no device (`bpf_redirect` to ifindex 0): the
/// kernel frees the packet and tells the sender it was sent, under TCX as
/// under cls_bpf. (`TC_ACT_STOLEN` does that only under cls_bpf: TCX reads
/// it as "next program", which would send the packet as well; `TC_ACT_SHOT`
/// would tell a sender on this host that its packet was dropped, and TCP
/// sends it again.)
///
/// Returns that verdict once the copy reached the device, even if its qdisc
/// or the judgement of the copy dropped it: the packet is the copy's
/// business from then on. `None` (send the packet as it is: fail open) when
/// the packet owns no socket (it is such a copy, or a duplicate, or was
/// forwarded from another host) or no copy was sent.
#[inline(always)]
fn orphan(ctx: &TcContext) -> Option<i32> {
    // SAFETY: reading a field of the context the kernel gave us (a pointer
    // the verifier lets us compare with null, nothing more).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // 0: sent; above 0 (before 6.6) a qdisc's verdict on it, or ENOBUFS
    // (since 6.6) its drop. Other errors: no copy reached the device.
    let sent = send_copy(ctx, Hook::Egress, MARK_ORPHAN);
    if sent < 0 && sent != -ENOBUFS {
        return None;
    }
    // SAFETY: a helper that only records where the packet goes.
    Some(unsafe { bpf_redirect(0, 0) } as i32)
}

#[inline(always)]
fn mark(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    unsafe { (*ctx.skb.skb).mark }
}

#[inline(always)]
fn bump_passed(c: &mut Counters) {
    c.passed += 1;
}

/// Where a rule's randomness comes from: the kernel's PRNG, or with
/// `--seed` a hash of (seed, flow, packet index in the flow, action).
/// With `--per-connection` the decisions (`fires`) are a hash of (seed,
/// connection, action) instead, the same for every packet of the
/// connection in both directions; the other draws stay per packet.
/// Plain fields (no `Option` of a tuple): every register the verifier sees
/// spilled is initialised on both paths.
struct Dice {
    seeded: bool,
    per_conn: bool,
    /// The packet goes in its connection's "forward" direction.
    forward: bool,
    seed: u64,
    flow: u64,
    index: u64,
    /// The connection hash (both directions the same), when the rule
    /// decides per connection or keeps connection state.
    conn: u64,
}

impl Dice {
    #[inline(always)]
    fn new(pkt: &Packet, rule: &Rule) -> Self {
        let mut dice =
            Self { seeded: false, per_conn: false, forward: false, seed: rule.seed, flow: 0, index: 0, conn: 0 };
        if rule.flags & RULE_SEEDED != 0 {
            let key = pkt.flow_key();
            dice.seeded = true;
            dice.flow = decide::flow_hash(&key);
            dice.index = maps::next_flow_index(&key);
        }
        if rule.flags & RULE_PER_CONNECTION != 0 || rule.limits_flows() {
            let (conn, forward) = decide::conn_hash(&pkt.saddr, &pkt.daddr, pkt.sport, pkt.dport, pkt.proto);
            dice.per_conn = rule.flags & RULE_PER_CONNECTION != 0;
            dice.conn = conn;
            dice.forward = forward;
        }
        dice
    }

    #[inline(always)]
    fn draw(&self, action: Action) -> u32 {
        if self.seeded {
            decide::seeded_draw(self.seed, self.flow, self.index, action)
        } else {
            // SAFETY: a helper without arguments or side effects.
            unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() }
        }
    }

    /// Whether a fault with this probability hits the packet (with
    /// `--per-connection`: its connection).
    #[inline(always)]
    fn fires(&self, threshold: Threshold, action: Action) -> bool {
        if threshold == PROB_NEVER {
            return false;
        }
        if threshold == PROB_ALWAYS {
            return true;
        }
        let draw = if self.per_conn { decide::seeded_draw(self.seed, self.conn, 0, action) } else { self.draw(action) };
        decide::fires(draw, threshold)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
