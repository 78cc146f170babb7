//! A config file's schedule: which rules are in force at each moment of a
//! run. `[[rule]]`s are always in force, or come and go if they flap;
//! `[[phase]]`s follow each other, and start again with `repeat`.

use std::time::Duration;

use super::{
    args::Flap,
    plan::FqParams,
    spec::{Plan, RuleSpec},
};
use crate::error::UsageError;

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration: Duration,
    pub rules: Vec<RuleSpec>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schedule {
    /// In force all the time.
    pub fixed: Vec<RuleSpec>,
    /// In force for `on`, then not for `off`, from the start.
    pub flaps: Vec<(RuleSpec, Flap)>,
    pub phases: Vec<Phase>,
    pub repeat: bool,
}

impl Schedule {
    /// A plan that never changes.
    pub fn fixed(plan: Plan) -> Self {
        Self { fixed: plan.rules, ..Self::default() }
    }

    /// Whether the rules change during the run.
    pub fn is_dynamic(&self) -> bool {
        !self.flaps.is_empty() || !self.phases.is_empty()
    }

    fn cycle(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The phase in force at `t` from the start, if any.
    pub fn phase_at(&self, t: Duration) -> Option<usize> {
        let cycle = self.cycle();
        if cycle.is_zero() || (!self.repeat && t >= cycle) {
            return None;
        }
        let mut left = nanos(t.as_nanos() % cycle.as_nanos());
        for (i, p) in self.phases.iter().enumerate() {
            if left < p.duration {
                return Some(i);
            }
            left -= p.duration;
        }
        None
    }

    /// The rules in force at `t`, and the phase.
    pub fn plan_at(&self, t: Duration) -> (Plan, Option<usize>) {
        let mut rules = self.fixed.clone();
        for (rule, flap) in &self.flaps {
            let period = (flap.on + flap.off).as_nanos();
            if t.as_nanos() % period < flap.on.as_nanos() {
                rules.push(rule.clone());
            }
        }
        let phase = self.phase_at(t);
        if let Some(i) = phase {
            rules.extend(self.phases[i].rules.iter().cloned());
        }
        (Plan { rules }, phase)
    }

    /// The first moment after `t` at which the rules may change; `None`
    /// when they never will again.
    pub fn next_change(&self, t: Duration) -> Option<Duration> {
        let after = |period: u128, offsets: &[u128]| -> Option<Duration> {
            if period == 0 {
                return None;
            }
            let base = t.as_nanos() / period * period;
            offsets.iter().flat_map(|o| [base + o, base + period + o]).filter(|at| *at > t.as_nanos()).min().map(nanos)
        };
        let mut next: Vec<Duration> =
            self.flaps.iter().filter_map(|(_, f)| after((f.on + f.off).as_nanos(), &[0, f.on.as_nanos()])).collect();
        let cycle = self.cycle();
        if !cycle.is_zero() {
            let mut offsets = vec![0u128];
            let mut at = Duration::ZERO;
            for p in &self.phases {
                at += p.duration;
                offsets.push(at.as_nanos());
            }
            if self.repeat {
                next.extend(after(cycle.as_nanos(), &offsets));
            } else {
                next.extend(offsets.iter().map(|o| nanos(*o)).filter(|o| *o > t));
            }
        }
        next.into_iter().min()
    }

    /// Every rule that can be in force at some moment: for `fq`'s size.
    fn all_rules(&self) -> Plan {
        let mut rules = self.fixed.clone();
        rules.extend(self.flaps.iter().map(|(r, _)| r.clone()));
        rules.extend(self.phases.iter().flat_map(|p| p.rules.iter().cloned()));
        Plan { rules }
    }

    pub fn fq_params(&self) -> Option<FqParams> {
        self.all_rules().fq_params()
    }

    /// Refuses a schedule some moment of which would be refused: each
    /// phase with the fixed rules and every flapping rule on at once.
    pub fn check(&self) -> Result<(), UsageError> {
        let mut base = self.fixed.clone();
        base.extend(self.flaps.iter().map(|(r, _)| r.clone()));
        let check = |rules: Vec<RuleSpec>, label: &str| {
            Plan { rules }.map_contents().map(|_| ()).map_err(|e| UsageError::Config(format!("{label}: {e}")))
        };
        check(base.clone(), "the [[rule]]s")?;
        for p in &self.phases {
            let mut rules = base.clone();
            rules.extend(p.rules.iter().cloned());
            check(rules, &p.name)?;
        }
        Ok(())
    }
}

/// A count of nanoseconds as a duration, exactly (a cycle of phases can be
/// longer than 2^64 ns), or the longest one.
fn nanos(n: u128) -> Duration {
    const PER_SEC: u128 = 1_000_000_000;
    u64::try_from(n / PER_SEC).map_or(Duration::MAX, |secs| Duration::new(secs, (n % PER_SEC) as u32))
}
