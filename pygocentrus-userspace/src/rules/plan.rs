//! A [`Plan`] put to work: how to size the `fq` qdisc its delays and rates
//! need ([`FqParams`]), and which kernel id each rule gets when one plan
//! replaces another.

use std::time::Duration;

use super::spec::{Plan, RuleFaults};

/// How the `fq` qdisc that enforces departure times is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FqParams {
    /// Packets the qdisc may hold in all (`limit`).
    pub limit: u32,
    /// Packets one flow may hold (`flow_limit`).
    pub flow_limit: u32,
    /// Packets stamped further than this in the future are capped to it,
    /// not dropped (`horizon`, microseconds; `horizon_cap`).
    pub horizon_us: u32,
}

impl Plan {
    /// How to size `fq` if some rule sets departure times: room for all
    /// that is in flight during the longest delay (mean plus four standard
    /// deviations, the tables' reach) at the highest rate given (10 Gbit/s
    /// where a delayed rule has none), in full-size packets, twice over;
    /// never fewer than 10 000 packets. One flow may use all of it. The
    /// horizon (beyond which fq caps a departure time) is twice the longest
    /// delay, at least fq's default 10 s.
    pub fn fq_params(&self) -> Option<FqParams> {
        const LINE_RATE: f64 = 10e9 / 8.0;
        const PACKET: f64 = 1500.0;
        let scheduled: Vec<&RuleFaults> = self.rules.iter().map(|r| &r.faults).filter(|f| f.schedules()).collect();
        if scheduled.is_empty() {
            return None;
        }
        let longest = scheduled
            .iter()
            .map(|f| {
                f.delay
                    .map_or(Duration::ZERO, |d| d.mean.saturating_add(d.jitter.saturating_mul(4)))
                    .saturating_add(f.fin_delay.unwrap_or_default())
            })
            .map(|d| d.as_secs_f64())
            .fold(0.0, f64::max);
        let fastest = scheduled.iter().map(|f| f.rate.map_or(LINE_RATE, |r| r.0 as f64)).fold(0.0, f64::max);
        let limit = (2.0 * longest * fastest / PACKET).ceil().clamp(10_000.0, 1_000_000.0) as u32;
        let horizon_us = (2.0 * longest * 1e6).clamp(10e6, f64::from(u32::MAX)) as u32;
        Some(FqParams { limit, flow_limit: limit, horizon_us })
    }

    /// The ids of `self`'s rules when they replace `old`'s rules, which had
    /// ids `old_ids`: a rule that `old` had too keeps its id (and so its
    /// counters and state), a new one takes the lowest id nobody holds.
    /// Lowest first keeps every id at or below the larger of the two plans'
    /// highest ids and the number of rules: never beyond the map.
    pub fn stable_ids(&self, old: &Plan, old_ids: &[u32]) -> Vec<u32> {
        let mut kept: Vec<Option<u32>> = vec![None; self.rules.len()];
        let mut taken = vec![false; old.rules.len()];
        // Plans change a rule or two at a time: the old rule after the last
        // one found is tried first, so that the search over all of them
        // (quadratic) runs only for the rules that changed.
        let mut cursor = 0;
        for (slot, rule) in kept.iter_mut().zip(&self.rules) {
            let found = if old.rules.get(cursor).is_some_and(|was| was == rule) && !taken[cursor] {
                Some(cursor)
            } else {
                (0..old.rules.len()).find(|&j| !taken[j] && old.rules[j] == *rule)
            };
            if let Some(j) = found
                && let Some(id) = old_ids.get(j)
            {
                taken[j] = true;
                *slot = Some(*id);
                cursor = j + 1;
            }
        }
        let mut used: Vec<u32> = kept.iter().flatten().copied().collect();
        used.sort_unstable();
        let mut next = 1;
        kept.into_iter()
            .map(|id| {
                id.unwrap_or_else(|| {
                    while used.binary_search(&next).is_ok() {
                        next += 1;
                    }
                    next += 1;
                    next - 1
                })
            })
            .collect()
    }
}
