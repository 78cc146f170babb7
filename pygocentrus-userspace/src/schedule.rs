//! A config file's schedule: which rules are in force at each moment of a
//! run. `[[rule]]`s are always in force, or come and go if they flap;
//! `[[phase]]`s follow each other, and start again with `repeat`.

use std::time::Duration;

use crate::{
    error::UsageError,
    netlink::FqParams,
    plan::{Plan, RuleSpec},
};

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
    pub flaps: Vec<(RuleSpec, crate::cli::Flap)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigFile;

    const S: Duration = Duration::from_secs(1);

    fn schedule(text: &str) -> Schedule {
        ConfigFile::parse(text).unwrap().schedule(None).unwrap()
    }

    #[test]
    fn phases_follow_each_other_and_repeat() {
        let s = schedule(
            "repeat = true\n\
             [[phase]]\nname = \"normal\"\nduration = \"30s\"\n\
             [[phase]]\nname = \"blackout\"\nduration = \"10s\"\n[[phase.rule]]\nport = 5000\nbehavior = \"blackout\"\n",
        );
        assert_eq!(s.phase_at(Duration::ZERO), Some(0));
        assert_eq!(s.phase_at(30 * S), Some(1));
        assert_eq!(s.phase_at(45 * S), Some(0));
        assert!(s.plan_at(5 * S).0.rules.is_empty());
        assert_eq!(s.plan_at(35 * S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(30 * S));
        assert_eq!(s.next_change(30 * S), Some(40 * S));
        assert_eq!(s.next_change(41 * S), Some(70 * S));
    }

    #[test]
    fn without_repeat_the_fixed_rules_stay() {
        let s = schedule(
            "[[rule]]\nport = 1\ndrop = 1\n\
             [[phase]]\nduration = \"1s\"\n[[phase.rule]]\nport = 2\nbehavior = \"error\"\nproto = \"tcp\"\n",
        );
        assert_eq!(s.plan_at(Duration::ZERO).0.rules.len(), 2);
        assert_eq!(s.plan_at(S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(S));
        assert_eq!(s.next_change(S), None);
    }

    #[test]
    fn a_flapping_rule_comes_and_goes() {
        let s = schedule("[[rule]]\nport = 1\nbehavior = \"blackout\"\nflap = { on = \"2s\", off = \"3s\" }\n");
        assert!(s.is_dynamic());
        assert_eq!(s.plan_at(S).0.rules.len(), 1);
        assert_eq!(s.plan_at(2 * S).0.rules.len(), 0);
        assert_eq!(s.plan_at(5 * S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(2 * S));
        assert_eq!(s.next_change(2 * S), Some(5 * S));
    }

    #[test]
    fn behaviors_set_their_faults() {
        let s = schedule(
            "[[rule]]\nport = 1\nbehavior = \"hang\"\n\
             [[rule]]\nport = 2\nproto = \"tcp\"\nbehavior = \"error\"\n\
             [[rule]]\nport = 3\nbehavior = \"delay\"\n\
             [[rule]]\nport = 4\nbehavior = \"dummy\"\n",
        );
        let r = &s.fixed;
        assert_eq!((r[0].faults.drop.unwrap().value(), r[0].direction), (100.0, crate::cli::Direction::From));
        assert_eq!(r[1].faults.reset.unwrap().value(), 100.0);
        assert_eq!(r[2].faults.delay.unwrap().mean, S);
        assert!(!r[3].faults.schedules() && r[3].faults.drop.is_none());
    }

    /// Phases of centuries: their ends lie past 2^64 ns, which were cut to
    /// 64 bits (the end of the second phase was lost, and with `repeat` the
    /// next change stopped moving on).
    #[test]
    fn long_phases_end_on_time() {
        const CENTURIES: &str = "[[phase]]\nduration = \"2628000h\"\n\
                                 [[phase]]\nduration = \"2628000h\"\n[[phase.rule]]\nport = 1\ndrop = 1\n";
        let p = Duration::from_secs(2_628_000 * 3600);
        let s = schedule(CENTURIES);
        assert_eq!(s.next_change(p), Some(2 * p));
        assert_eq!((s.phase_at(2 * p - Duration::from_nanos(1)), s.phase_at(2 * p)), (Some(1), None));
        let s = schedule(&format!("repeat = true\n{CENTURIES}"));
        assert_eq!(s.next_change(p), Some(2 * p));
        assert_eq!(s.next_change(2 * p), Some(3 * p));
        assert_eq!((s.phase_at(2 * p), s.phase_at(3 * p)), (Some(0), Some(1)));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for (text, needle) in [
            ("[[rule]]\nport = 1\nbehavior = \"blackout\"\ndrop = 5\n", "sets --drop itself"),
            ("[[rule]]\nport = 1\nbehavior = \"dummy\"\ndrop = 5\n", "dummy does nothing"),
            ("[[phase]]\nduration = \"0s\"\n", "duration above 0"),
            ("[[phase]]\n", "missing field `duration`"),
            ("repeat = true\n[[rule]]\nport = 1\ndrop = 1\n", "repeat needs"),
            (
                "[[rule]]\nport = 1\ndrop = 1\n[[phase]]\nduration = \"1s\"\n[[phase.rule]]\nport = 1\ndrop = 2\n",
                "rules 1 and 2",
            ),
            ("[[rule]]\nport = 1\ndrop = 1\nflap = { on = \"1s\" }\n", "missing field `off`"),
        ] {
            let e = match ConfigFile::parse(text) {
                Ok(c) => c.schedule(None).map(|_| ()).unwrap_err().to_string(),
                Err(e) => e,
            };
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
