//! Counters as the user sees them: a text line on stderr or a JSON line on
//! stdout.

use std::time::Duration;

use pygocentrus_common::{Counter, Counters};
use serde_json::{Value, json};

use crate::rules::RuleSpec;

/// The text line names at most this many rules (`--json` has them all):
/// with a config file of thousands of rules it would be unreadable, and
/// formatting it once a second would cost the process real CPU.
const TEXT_RULES: usize = 8;

/// Counters read at one moment, with the rules they count: what
/// [`crate::Session::counters`] returns. [`Reading::snapshot`] prints it as
/// `attach` does.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Since the attachment started.
    pub elapsed: Duration,
    /// Slot 0 (totals: `seen` is every packet the classifier judged), then
    /// one per rule, in the order of the rules.
    pub slots: Vec<Counters>,
    pub rules: Vec<RuleSpec>,
}

impl Reading {
    /// Every packet the classifier saw, whatever the rules.
    pub fn seen(&self) -> u64 {
        self.slots.first().map_or(0, |c| c.seen)
    }

    /// The counters of each rule, in the order of the rules.
    pub fn rules(&self) -> &[Counters] {
        self.slots.get(1..).unwrap_or_default()
    }

    /// The counters of all the rules added up.
    pub fn sum(&self) -> Counters {
        let mut sum = Counters::default();
        for c in self.rules() {
            sum.add(c);
        }
        sum
    }

    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot { elapsed: self.elapsed, slots: &self.slots, rules: &self.rules }
    }
}

/// The counter line `attach` prints.
impl std::fmt::Display for Reading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.snapshot().text())
    }
}

/// Counters read at one moment: slot 0 (totals), then one per rule.
pub struct Snapshot<'a> {
    pub elapsed: Duration,
    pub slots: &'a [Counters],
    pub rules: &'a [RuleSpec],
}

impl Snapshot<'_> {
    fn total_seen(&self) -> u64 {
        self.slots.first().map_or(0, |c| c.seen)
    }

    fn per_rule(&self) -> impl Iterator<Item = (usize, &Counters, &RuleSpec)> {
        self.slots.iter().skip(1).zip(self.rules).enumerate().map(|(i, (c, r))| (i + 1, c, r))
    }

    /// `3s classifier saw 1200 | rule 1: matched 600 passed 420 dropped 180 ...`
    ///
    /// With more than [`TEXT_RULES`] rules, the first of those that matched
    /// something are shown, and the rest summed up in one clause.
    pub fn text(&self) -> String {
        let mut s = format!("{:.0}s classifier saw {}", self.elapsed.as_secs_f64(), self.total_seen());
        let all: Vec<_> = self.per_rule().collect();
        let shown: Vec<_> = if all.len() <= TEXT_RULES {
            all.clone()
        } else {
            all.iter().filter(|(_, c, _)| c.matched > 0).take(TEXT_RULES).copied().collect()
        };
        for &(id, c, r) in &shown {
            s.push_str(&rule_text(id, c, r));
        }
        let rest = all.len() - shown.len();
        if rest > 0 {
            let matched =
                |rules: &[(usize, &Counters, &RuleSpec)]| rules.iter().map(|(_, c, _)| c.matched).sum::<u64>();
            let matched = matched(&all) - matched(&shown);
            s.push_str(&format!(" | {rest} more rules: matched {matched} (--json shows each)"));
        }
        s
    }

    pub fn json(&self, event: &str) -> Value {
        let rules: Vec<Value> = self
            .per_rule()
            .map(|(id, c, r)| {
                let mut v = json!({"id": id, "rule": r.to_string()});
                for (k, n) in c.iter() {
                    v[k.name()] = json!(n);
                }
                v
            })
            .collect();
        json!({
            "event": event,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "classifier_seen": self.total_seen(),
            "rules": rules,
        })
    }
}

/// ` | rule 3: seen ... reset 0`, with the flow-fault and delay-family
/// counters only when the rule has them, to keep the line short.
fn rule_text(id: usize, c: &Counters, r: &RuleSpec) -> String {
    let shown = |k: Counter| match k {
        Counter::Unplugged => c.unplugged != 0 || r.faults.unplug_after.is_some(),
        Counter::Delayed | Counter::Duplicated | Counter::RateLimited => {
            c.delayed + c.duplicated + c.rate_limited != 0 || r.faults.schedules() || r.faults.duplicate.is_some()
        }
        _ => true,
    };
    let mut s = format!(" | rule {id}:");
    for (k, n) in c.iter().filter(|(k, _)| shown(*k)) {
        s.push_str(&format!(" {} {n}", k.label()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::args::parse_flags;

    /// The rule of `attach --iface x FLAGS`.
    fn rule(flags: &str) -> RuleSpec {
        RuleSpec::from_args(&parse_flags(flags).unwrap(), None).unwrap()
    }

    #[test]
    fn text_and_json_agree() {
        let rules = [rule("--port 9 --drop 5")];
        let slots = [
            Counters { seen: 10, ..Default::default() },
            Counters { seen: 4, matched: 4, passed: 3, dropped: 1, ..Default::default() },
        ];
        let snap = Snapshot { elapsed: Duration::from_secs(2), slots: &slots, rules: &rules };
        assert_eq!(
            snap.text(),
            "2s classifier saw 10 | rule 1: seen 4 matched 4 passed 3 dropped 1 corrupted 0 corrupted-payload 0 reset 0"
        );
        let j = snap.json("counters");
        assert_eq!(j["rules"][0]["dropped"], 1);
        assert_eq!(j["rules"][0]["rule"], "ip to/from *:9 drop 5%");
        assert_eq!(j["classifier_seen"], 10);
    }

    #[test]
    fn many_rules_show_those_that_matched_and_a_sum_of_the_rest() {
        let rules = vec![rule("--port 9 --drop 5"); 1000];
        let mut slots = vec![Counters::default(); 1001];
        slots[500].matched = 7;
        slots[900].matched = 2;
        let snap = Snapshot { elapsed: Duration::from_secs(1), slots: &slots, rules: &rules };
        let text = snap.text();
        assert!(text.contains(" | rule 500: seen 0 matched 7 "), "{text}");
        assert!(text.contains(" | rule 900: seen 0 matched 2 "), "{text}");
        assert!(text.ends_with(" | 998 more rules: matched 0 (--json shows each)"), "{text}");
        assert_eq!(snap.json("counters")["rules"].as_array().map(Vec::len), Some(1000));
        // A few rules: every one, matched or not.
        let snap = Snapshot { elapsed: Duration::from_secs(1), slots: &slots[..3], rules: &rules[..2] };
        assert!(snap.text().contains(" | rule 2: ") && !snap.text().contains("more rules"), "{}", snap.text());
    }

    #[test]
    fn unplugged_shows_with_unplug_after() {
        let rules = [rule("--port 9 --unplug-after 5s")];
        let slots =
            [Counters::default(), Counters { seen: 4, matched: 4, passed: 1, unplugged: 3, ..Default::default() }];
        let snap = Snapshot { elapsed: Duration::from_secs(1), slots: &slots, rules: &rules };
        assert!(snap.text().ends_with(" reset 0 unplugged 3"), "{}", snap.text());
        assert_eq!(snap.json("counters")["rules"][0]["unplugged"], 3);
        assert_eq!(snap.json("counters")["rules"][0]["rule"], "ip to/from *:9 unplug after 5s");
    }
}
