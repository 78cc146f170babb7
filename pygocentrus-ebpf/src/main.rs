//! The pygocentrus classifier: one TC program for ingress, one for egress,
//! sharing every map. Read it top to bottom, one step a function:
//! parse → find the rule → decide (a [`Fault`], from pure functions in
//! `pygocentrus_common::decide`) → act → count once. Anything unexpected
//! passes the packet untouched (fail open); only a deliberate fault
//! returns `TC_ACT_SHOT`. (A packet to be delayed that a local socket still
//! owns is swapped for a copy first: `orphan`.)
#![no_std]
#![no_main]

mod act;
mod maps;
mod packet;
mod parse;
mod sched;

use core::cell::Cell;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect,
    macros::classifier,
    programs::TcContext,
};
use pygocentrus_common::{
    Action, CONFIG_BRIDGE, CONFIG_ENDPOINT, CONFIG_EXACT, CONFIG_PORTLESS, CONFIG_PREFIXES, CONN_RESET_FWD,
    CONN_RESET_REV, Config, Counter, MARK_DUPLICATE, MARK_ORPHAN, PROB_ALWAYS, PROB_NEVER, RULE_GE,
    RULE_PER_CONNECTION, RULE_SEEDED, Rule, SIDE_FROM, SIDE_TO, TCP_FIN, TCP_RST, Tally, TargetValue,
    decide::{self, Applies, Dice as _, Fault, Flow, FlowCount},
};

use crate::{maps::Pass, packet::Packet};

/// "Not my business": hand the packet to whatever comes next (the next TCX
/// program, the next cls_bpf filter, or the default action). This is what
/// every packet we do not fault gets, so that we never override another
/// program's verdict.
const PASS: i32 = TC_ACT_UNSPEC;
const SHOT: i32 = TC_ACT_SHOT;

/// A packet of a rule's target the rule does not judge.
const SEEN: Tally = Counter::Seen.bit();
/// A packet the rule judges.
const MATCHED: Tally = Counter::Seen.bit() | Counter::Matched.bit();

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Ingress,
    Egress,
}

#[classifier]
// Inlined into the entry point the macro wraps it in: one frame, no call.
#[inline(always)]
#[expect(clippy::needless_pass_by_value, reason = "the signature aya's classifier macro asks for")]
pub fn pyg_ingress(ctx: TcContext) -> i32 {
    classify(&ctx, Hook::Ingress)
}

#[classifier]
// Inlined into the entry point the macro wraps it in: one frame, no call.
#[inline(always)]
#[expect(clippy::needless_pass_by_value, reason = "the signature aya's classifier macro asks for")]
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
    let pass = if tag & MARK_DUPLICATE != 0 {
        Pass::Duplicate
    } else if tag & MARK_ORPHAN != 0 {
        Pass::Orphan
    } else {
        Pass::First
    };
    if pass != Pass::Orphan {
        maps::count(0, SEEN);
    }
    match try_classify(ctx, hook, pass) {
        Ok(Judged { verdict, rule, tally }) => {
            if tally != 0 {
                maps::count(rule, tally);
            }
            verdict
        }
        Err(()) => PASS,
    }
}

/// What became of a packet: the verdict, and what it adds to which rule's
/// counters (nothing when `tally` is 0).
struct Judged {
    verdict: i32,
    rule: u32,
    tally: Tally,
}

impl Judged {
    /// Not a packet of any rule.
    const NOBODY: Judged = Judged { verdict: PASS, rule: 0, tally: 0 };

    /// A packet of rule `id`'s target that the rule does not judge.
    const fn seen(id: u32) -> Judged {
        Judged { verdict: PASS, rule: id, tally: SEEN }
    }
}

#[inline(always)]
fn try_classify(ctx: &TcContext, hook: Hook, pass: Pass) -> Result<Judged, ()> {
    let cfg = maps::config().ok_or(())?;
    if hook == Hook::Ingress && cfg.flags & CONFIG_BRIDGE != 0 && !parse::to_mac(ctx, &cfg.bridge_mac)? {
        // On a bridge port, a packet that is not addressed to the bridge
        // itself leaves by another port: its egress hook judges it. (On an
        // endpoint's veths, CONFIG_BRIDGE is off: the other ports are not
        // hooked, so the ingress hook judges everything the endpoint sends.)
        return Ok(Judged::NOBODY);
    }
    // Ports no rule names end here, before any address is copied or looked
    // up: the path most packets take.
    // (Portless rules and the endpoint's own rule match any port.)
    let filter = parse::Filter {
        any_port: cfg.flags & (CONFIG_PORTLESS | CONFIG_ENDPOINT) != 0,
        portless: cfg.flags & CONFIG_PORTLESS != 0,
        exact_only: cfg.flags & (CONFIG_EXACT | CONFIG_PREFIXES | CONFIG_ENDPOINT) == CONFIG_EXACT,
    };
    let Some(pkt) = parse::packet(ctx, &filter, maps::port_named, pass)? else {
        return Ok(Judged::NOBODY);
    };
    let (id, rule) = match find_rule(pkt, cfg, hook) {
        Found::Rule(id, rule) => (id, rule),
        Found::Target(id) => return Ok(Judged::seen(id)),
        Found::Nothing => return Ok(Judged::NOBODY),
    };
    if !decide::flags_match(rule, pkt.key.proto, pkt.tcp_flags) {
        // The rule's target, but not a segment it judges (--tcp-flags).
        return Ok(Judged::seen(id));
    }
    if pass == Pass::Duplicate {
        // A duplicate only gets its departure time, counted as such.
        if hook == Hook::Ingress {
            return Ok(Judged::NOBODY);
        }
        let (verdict, tally) = schedule(ctx, pkt, rule, id, &Dice::new(pkt, rule, id));
        return Ok(Judged { verdict, rule: id, tally });
    }
    // A packet that will wait in fq and still belongs to its socket is
    // swapped for a copy, judged in its place.
    if hook == Hook::Egress
        && rule.schedules()
        && let Some(verdict) = orphan(ctx)
    {
        return Ok(Judged { verdict, rule: id, tally: 0 });
    }
    let dice = Dice::new(pkt, rule, id);
    let fault = decide_fault(pkt, id, rule, &dice);
    let (verdict, tally) = act(ctx, pkt, pass, hook, id, rule, &dice, fault);
    Ok(Judged { verdict, rule: id, tally: MATCHED | tally })
}

/// What looking a packet up among the targets found.
enum Found {
    /// The rule that judges the packet.
    Rule(u32, &'static Rule),
    /// A target's rule, whose protocol or direction is not the packet's.
    Target(u32),
    Nothing,
}

/// Looks the packet's destination, then its source, up among the targets
/// and returns the rule for its protocol and direction. A port entry is
/// tried before the portless entry of the same address. On an endpoint's
/// veths, the endpoint's own rules come last, the side given by the hook.
#[inline(always)]
fn find_rule(pkt: &Packet, cfg: &Config, hook: Hook) -> Found {
    let portless = cfg.flags & CONFIG_PORTLESS != 0;
    let exact = cfg.flags & CONFIG_EXACT != 0;
    let trie = !exact || cfg.flags & CONFIG_PREFIXES != 0;
    let mut seen = 0;
    for side in [SIDE_TO, SIDE_FROM] {
        let (addr, port, named) = if side == SIDE_TO {
            (&pkt.key.daddr, pkt.key.dport, pkt.dport_named)
        } else {
            (&pkt.key.saddr, pkt.key.sport, pkt.sport_named)
        };
        if !(named || portless) {
            continue;
        }
        let cell = TargetValue::index(side, pkt.class());
        if named
            && let Some(entry) = target(addr, port, exact, trie)
            && let Some(found) = pick(entry, cell, &mut seen)
        {
            return found;
        }
        if portless
            && let Some(entry) = target(addr, [0, 0], exact, trie)
            && let Some(found) = pick(entry, cell, &mut seen)
        {
            return found;
        }
    }
    if cfg.flags & CONFIG_ENDPOINT != 0
        && let Some(entry) = maps::endpoint()
    {
        let side = if hook == Hook::Egress { SIDE_TO } else { SIDE_FROM };
        if let Some(found) = pick(entry, TargetValue::index(side, pkt.class()), &mut seen) {
            return found;
        }
    }
    if seen != 0 { Found::Target(seen) } else { Found::Nothing }
}

/// The target entry of (`addr`, `port`): its exact entry if the exact
/// table is in use and has one (an exact entry is the longest prefix there
/// is), else the longest prefix in the trie if it is searched.
#[inline(always)]
fn target(addr: &[u8; 16], port: [u8; 2], exact: bool, trie: bool) -> Option<&'static TargetValue> {
    if exact && let Some(entry) = maps::exact(addr, port) {
        return Some(entry);
    }
    if trie { maps::target(addr, port) } else { None }
}

/// The rule of `cell` in a trie entry; if the cell is empty, remembers the entry's first rule in `seen` (the packet
/// belongs to that rule's target but not to its protocol or direction).
#[inline(always)]
fn pick(entry: &TargetValue, cell: usize, seen: &mut u32) -> Option<Found> {
    // Checked: an index the compiler cannot bound would pull in a panic
    // path the verifier refuses (the endpoint's side comes from the hook).
    let id = entry.rules.get(cell).copied().unwrap_or(0);
    if id == 0 {
        if *seen == 0 {
            *seen = first_rule(entry);
        }
        return None;
    }
    Some(Found::Rule(id, maps::rule(id)?))
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

/// The fault rule `id` chooses for a matched packet: its flow limits (which
/// count the packet in its connection's state) if it has them and they
/// apply to the connection, then its dice ([`decide::choose`]).
#[inline(always)]
fn decide_fault(pkt: &Packet, id: u32, rule: &Rule, dice: &Dice<'_>) -> Fault {
    let applies = Applies { reset: act::resettable(pkt), payload: pkt.payload_len().is_some() };
    let flow = if rule.limits_flows() && dice.fires(Action::Limit) {
        flow_limits(pkt, id, rule, dice, applies.reset)
    } else {
        Flow::Dice
    };
    decide::choose(flow, applies, dice)
}

/// Counts the packet in its connection's state for the rule's flow limits
/// (`--unplug-after`, `--reset-after`) and returns what they decide
/// ([`decide::flow_limits`]). No state (the LRU took no entry): the limits
/// do not apply (fail open).
///
/// A reset decided here is marked as sent before `act` makes it, so that
/// the program has one copy of the reset (the verifier walks each copy);
/// if the rewrite then fails, the later segments pass (fail open).
#[inline(always)]
fn flow_limits(pkt: &Packet, id: u32, rule: &Rule, dice: &Dice<'_>, resettable: bool) -> Flow {
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
    let count = FlowCount {
        bytes,
        packets,
        age: now.saturating_sub(state.start_ns),
        flags: state.flags,
        reset_bit,
        is_reset: pkt.tcp_flags & TCP_RST != 0,
        resettable,
    };
    let (flow, flags) = decide::flow_limits(rule, &count);
    state.flags = flags;
    flow
}

/// Applies the fault and returns the verdict and what it counts. A fault
/// that could not be made (a helper failed) lets the packet pass as one
/// without a fault (fail open). A packet that passes may be duplicated, and
/// at egress gets its departure time.
#[expect(clippy::too_many_arguments, reason = "one call site; a struct would be copied onto the stack")]
#[inline(always)]
fn act(
    ctx: &TcContext,
    pkt: &Packet,
    pass: Pass,
    hook: Hook,
    id: u32,
    rule: &Rule,
    dice: &Dice<'_>,
    fault: Fault,
) -> (i32, Tally) {
    let rewritten = match fault {
        Fault::Spared => return (PASS, Counter::Passed.bit()),
        Fault::Unplug => return (SHOT, Counter::Unplugged.bit()),
        Fault::Drop => return (SHOT, Counter::Dropped.bit()),
        Fault::Reset => act::reset(ctx, pkt, pass).map(|()| Counter::Reset),
        Fault::Corrupt => act::corrupt(ctx, pkt).map(|()| Counter::Corrupted),
        Fault::CorruptPayload => {
            act::corrupt_payload(ctx, pkt, dice.draw(Action::PayloadOffset)).map(|()| Counter::CorruptedPayload)
        }
        Fault::None => Err(()),
    };
    if let Ok(counter) = rewritten {
        return (PASS, counter.bit());
    }
    let mut tally = Counter::Passed.bit();
    if dice.fires(Action::Duplicate) && duplicate(ctx, hook).is_ok() {
        tally |= Counter::Duplicated.bit();
    }
    if hook == Hook::Egress {
        let (verdict, scheduled) = schedule(ctx, pkt, rule, id, dice);
        if verdict == SHOT {
            return (SHOT, (tally & !Counter::Passed.bit()) | scheduled);
        }
        tally |= scheduled;
    }
    (PASS, tally)
}

/// Rate, delay and order for a packet leaving by egress: `SHOT` when the
/// rule's rate queue is full, `PASS` otherwise, and what it counts.
#[inline(always)]
fn schedule(ctx: &TcContext, pkt: &Packet, rule: &Rule, id: u32, dice: &Dice<'_>) -> (i32, Tally) {
    if !rule.schedules() {
        return (PASS, 0);
    }
    let chosen = sched::Chosen {
        delay: dice.fires(Action::Delay),
        rate: rule.rate_bytes != 0 && dice.fires(Action::Rate),
        fin: rule.fin_delay_ns != 0 && pkt.tcp_flags & TCP_FIN != 0 && dice.fires(Action::FinDelay),
    };
    let tally =
        sched::schedule(ctx, pkt, id, rule, &chosen, dice.draw(Action::Jitter), dice.seeded.then_some(dice.flow));
    // A full rate queue drops the packet: its only drop.
    (if tally & Counter::Dropped.bit() != 0 { SHOT } else { PASS }, tally)
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

/// Where a rule's randomness comes from: the kernel's PRNG, drawn once
/// per packet and spread over its actions ([`decide::random_draw`]), or
/// with `--seed` a hash of (seed, flow, packet index in the flow, action).
/// With `--per-connection` the decisions (`fires`) are a hash of (seed,
/// connection, action) instead, the same for every packet of the
/// connection in both directions; the other draws stay per packet.
/// Plain fields (no `Option` of a tuple): every register the verifier sees
/// spilled is initialised on both paths.
struct Dice<'a> {
    rule: &'a Rule,
    /// The rule's id (its loss model's state is kept under it).
    id: u32,
    seeded: bool,
    per_conn: bool,
    /// The packet goes in its connection's "forward" direction.
    forward: bool,
    flow: u64,
    index: u64,
    /// The connection hash (both directions the same), when the rule
    /// decides per connection or keeps connection state.
    conn: u64,
    /// The packet's draw from the kernel's PRNG, once taken (bit 32 set).
    random: Cell<u64>,
}

impl<'a> Dice<'a> {
    #[inline(always)]
    fn new(pkt: &Packet, rule: &'a Rule, id: u32) -> Self {
        let mut dice = Self {
            rule,
            id,
            seeded: false,
            per_conn: false,
            forward: false,
            flow: 0,
            index: 0,
            conn: 0,
            random: Cell::new(0),
        };
        if rule.flags & RULE_SEEDED != 0 {
            dice.seeded = true;
            dice.flow = decide::flow_hash(&pkt.key);
            dice.index = maps::next_flow_index(dice.flow);
        }
        if rule.flags & RULE_PER_CONNECTION != 0 || rule.limits_flows() {
            let (conn, forward) = decide::conn_hash(&pkt.key);
            dice.per_conn = rule.flags & RULE_PER_CONNECTION != 0;
            dice.conn = conn;
            dice.forward = forward;
        }
        dice
    }

    #[inline(always)]
    fn draw(&self, action: Action) -> u32 {
        if self.seeded {
            return decide::seeded_draw(self.rule.seed, self.flow, self.index, action);
        }
        let mut random = self.random.get();
        if random == 0 {
            // SAFETY: a helper without arguments or side effects.
            random = u64::from(unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() }) | 1 << 32;
            self.random.set(random);
        }
        decide::random_draw(random, action)
    }

    /// One step of the rule's Gilbert-Elliott chain ([`decide::ge_step`]),
    /// its state kept in the rule's state.
    #[inline(always)]
    fn ge_loss(&self) -> bool {
        let Some(state) = maps::rule_state(self.id) else {
            return false;
        };
        let (bad, lost) = decide::ge_step(
            &self.rule.ge,
            state.ge_bad != 0,
            self.draw(Action::GeTransition),
            self.draw(Action::GeLoss),
        );
        state.ge_bad = u32::from(bad);
        lost
    }
}

impl decide::Dice for Dice<'_> {
    /// Whether the rule's fault `action` hits the packet (with
    /// `--per-connection`: its connection).
    #[inline(always)]
    fn fires(&self, action: Action) -> bool {
        let threshold = self.rule.threshold(action);
        if threshold == PROB_NEVER {
            return false;
        }
        if threshold == PROB_ALWAYS {
            return true;
        }
        let draw =
            if self.per_conn { decide::seeded_draw(self.rule.seed, self.conn, 0, action) } else { self.draw(action) };
        decide::fires(draw, threshold)
    }

    #[inline(always)]
    fn lost(&self) -> bool {
        self.rule.flags & RULE_GE != 0 && self.ge_loss()
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
