//! The pygocentrus classifier: one TC program for ingress, one for egress,
//! sharing every map. Read it top to bottom: parse → match a rule → decide →
//! act → count. Anything unexpected passes the packet untouched (fail open);
//! only a deliberate fault returns `TC_ACT_SHOT`.
#![no_std]
#![no_main]

mod act;
mod maps;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::classifier,
    programs::TcContext,
};
use pygocentrus_common::{
    Action, CONFIG_BRIDGE, CONFIG_ENDPOINT, CONFIG_PORTLESS, Config, Counters, PROB_NEVER, PROTO_TCP, Rule, SIDE_FROM,
    SIDE_TO, TargetValue, Threshold, decide,
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
    maps::count(0, |c| c.seen += 1);
    try_classify(ctx, hook).unwrap_or(PASS)
}

#[inline(always)]
fn try_classify(ctx: &TcContext, hook: Hook) -> Result<i32, ()> {
    let cfg = maps::config().ok_or(())?;
    if hook == Hook::Ingress && cfg.flags & CONFIG_BRIDGE != 0 && !parse::to_mac(ctx, &cfg.bridge_mac)? {
        // On a bridge port, a packet that is not addressed to the bridge
        // itself leaves by another port: its egress hook judges it. (On an
        // endpoint's veths, CONFIG_BRIDGE is off: the other ports are not
        // hooked, so the ingress hook judges everything the endpoint sends.)
        return Ok(PASS);
    }
    let Some(pkt) = parse::packet(ctx)? else {
        return Ok(PASS);
    };
    let Some((id, rule)) = find_rule(&pkt, cfg, hook) else {
        return Ok(PASS);
    };
    Ok(judge(ctx, &pkt, id, rule))
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
        let (addr, port) = if side == SIDE_TO { (&pkt.daddr, pkt.dport) } else { (&pkt.saddr, pkt.sport) };
        let cell = TargetValue::index(side, pkt.class);
        if let Some(entry) = maps::target_with_port(addr, port)
            && let Some(found) = pick(entry, cell, &mut seen)
        {
            return Some(found);
        }
        if portless
            && let Some(entry) = maps::target_with_port(addr, [0, 0])
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

/// The rule of `cell` in a trie entry, counted as seen and matched; if the
/// cell is empty, remembers the entry's first rule in `seen` (the packet
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
    let rule = maps::rule(id)?;
    maps::count(id, |c| {
        c.seen += 1;
        c.matched += 1;
    });
    Some((id, rule))
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

/// Throws the rule's dice in order (drop, reset, corrupt, corrupt-payload)
/// and applies the first that fires. A fault that does not apply to this
/// packet (a reset of an initial SYN, a payload fault on an empty segment)
/// lets the packet pass.
#[inline(always)]
fn judge(ctx: &TcContext, pkt: &Packet, id: u32, rule: &Rule) -> i32 {
    let dice = Dice::new(pkt, rule);
    if dice.fires(rule.drop, Action::Drop) {
        maps::count(id, |c| c.dropped += 1);
        return SHOT;
    }
    if dice.fires(rule.reset, Action::Reset) && pkt.proto == PROTO_TCP && act::reset(ctx, pkt).is_ok() {
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
    maps::count(id, bump_passed);
    PASS
}

#[inline(always)]
fn bump_passed(c: &mut Counters) {
    c.passed += 1;
}

/// Where a rule's randomness comes from: the kernel's PRNG, or with
/// `--seed` a hash of (seed, flow, packet index in the flow, action).
/// Plain fields (no `Option` of a tuple): every register the verifier sees
/// spilled is initialised on both paths.
struct Dice {
    seeded: bool,
    seed: u64,
    flow: u64,
    index: u64,
}

impl Dice {
    #[inline(always)]
    fn new(pkt: &Packet, rule: &Rule) -> Self {
        let mut dice = Self { seeded: false, seed: 0, flow: 0, index: 0 };
        if rule.flags & pygocentrus_common::RULE_SEEDED != 0 {
            let key = pkt.flow_key();
            dice.seeded = true;
            dice.seed = rule.seed;
            dice.flow = decide::flow_hash(&key);
            dice.index = maps::next_flow_index(&key);
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

    #[inline(always)]
    fn fires(&self, threshold: Threshold, action: Action) -> bool {
        threshold != PROB_NEVER && decide::fires(self.draw(action), threshold)
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
