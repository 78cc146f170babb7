//! The config file (`--config FILE`, TOML): what the user wrote, as
//! `commands::cli` is what the user typed. Each `[[rule]]` table has the
//! names and units of `attach`'s flags and is read into the same
//! [`RuleArgs`], so `validate` checks both the same way.
//!
//! ```toml
//! [[rule]]
//! ip = "198.18.0.2"
//! port = 5000
//! proto = "udp"
//! drop = 30
//!
//! [[rule]]
//! port = 6379
//! proto = "tcp"
//! direction = "from"
//! delay = "20ms"
//! jitter = "5ms"
//! ```

use std::path::Path;

use serde::Deserialize;

use super::{
    args::RuleArgs,
    schedule::{Phase, Schedule},
    spec::{Plan, RuleSpec},
    text::de,
};
use crate::error::UsageError;

/// The largest config file read: room for every one of the kernel's
/// 16 383 rules several times over. Parsing takes some 40 times a file's
/// size in memory.
pub const MAX_CONFIG: u64 = 8 << 20;

/// A config file as written. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[[rule]]` tables: in force all the time (unless one flaps).
    #[serde(default)]
    pub rule: Vec<RuleArgs>,
    /// `[[phase]]` tables: a schedule, each phase's rules in force for its
    /// duration, one after the other.
    #[serde(default)]
    pub phase: Vec<PhaseArgs>,
    /// Start the phases again after the last one (otherwise only the
    /// `[[rule]]`s stay).
    #[serde(default)]
    pub repeat: bool,
}

/// One `[[phase]]`: a name for messages, how long, and its rules
/// (`[[phase.rule]]`; none is a phase of normal traffic).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseArgs {
    pub name: Option<String>,
    #[serde(deserialize_with = "de::required_duration")]
    pub duration: std::time::Duration,
    #[serde(default)]
    pub rule: Vec<RuleArgs>,
}

impl ConfigFile {
    /// Reads and parses `path`; any problem is one line naming the file.
    /// A file over [`MAX_CONFIG`] is refused before it is read, and so is
    /// a FIFO or device.
    pub fn load(path: &Path) -> Result<Self, UsageError> {
        let name = path.display();
        let bytes = crate::files::read_regular(path, MAX_CONFIG)
            .map_err(|e| UsageError::Config(format!("reading {name}: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| UsageError::Config(format!("reading {name}: {e}")))?;
        Self::parse(&text).map_err(|e| UsageError::Config(format!("{name}: {e}")))
    }

    /// Parses the text of a config file: errors say on which line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let msg = e.message().replace('\n', " ");
            match line {
                Some(line) => format!("line {line}: {msg}"),
                None => msg,
            }
        })
    }

    /// The validated rules and schedule, each rule on `endpoint` if the
    /// scope is one (`--container`, `--netns`). Every moment of the
    /// schedule is checked (no overlap, not too many rules) before anything
    /// is attached.
    pub fn schedule(&self, endpoint: Option<&str>) -> Result<Schedule, UsageError> {
        if self.rule.is_empty() && self.phase.is_empty() {
            return Err(UsageError::Config("no [[rule]] or [[phase]] in the config file".to_owned()));
        }
        if self.repeat && self.phase.is_empty() {
            return Err(UsageError::Config("repeat needs [[phase]]s".to_owned()));
        }
        let spec = |r: &RuleArgs, what: String| {
            RuleSpec::from_args(r, endpoint.map(str::to_owned)).map_err(|e| UsageError::Config(format!("{what}: {e}")))
        };
        let mut fixed = Vec::new();
        let mut flaps = Vec::new();
        for (i, r) in self.rule.iter().enumerate() {
            let s = spec(r, format!("rule {}", i + 1))?;
            match r.flap {
                Some(f) if f.on.is_zero() || f.off.is_zero() => {
                    return Err(UsageError::Config(format!("rule {}: flap needs on and off above 0", i + 1)));
                }
                Some(f) => flaps.push((s, f)),
                None => fixed.push(s),
            }
        }
        let mut phases = Vec::new();
        for (i, p) in self.phase.iter().enumerate() {
            let label = p.name.clone().unwrap_or_else(|| format!("phase {}", i + 1));
            // Names go into one-line messages and announcements.
            if label.contains(char::is_control) {
                return Err(UsageError::Config(format!("phase {}: a name is one line of printable text", i + 1)));
            }
            if p.duration.is_zero() {
                return Err(UsageError::Config(format!("{label}: a phase needs a duration above 0")));
            }
            let rules = p
                .rule
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    if r.flap.is_some() {
                        return Err(UsageError::Config(format!("{label} rule {}: flap only in [[rule]]", j + 1)));
                    }
                    spec(r, format!("{label} rule {}", j + 1))
                })
                .collect::<Result<Vec<_>, _>>()?;
            phases.push(Phase { name: label, duration: p.duration, rules });
        }
        let schedule = Schedule { fixed, flaps, phases, repeat: self.repeat };
        schedule.check()?;
        Ok(schedule)
    }

    /// The rules, for a file without a schedule.
    pub fn plan(&self, endpoint: Option<&str>) -> Result<Plan, UsageError> {
        let schedule = self.schedule(endpoint)?;
        if schedule.is_dynamic() {
            return Err(UsageError::Config(
                "[[phase]] and flap are for attach: serve takes its changes from its API".to_owned(),
            ));
        }
        Ok(schedule.plan_at(std::time::Duration::ZERO).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::values::{Direction, Proto};

    #[test]
    fn rules_with_the_flags_names_and_units() {
        let cfg = ConfigFile::parse(
            r#"
            [[rule]]
            ip = "198.18.0.2"
            port = 5000
            proto = "udp"
            direction = "both"
            drop = 30
            delay = "20ms"

            [[rule]]
            ip = "198.18.0.0/24"
            port = 6379
            proto = "tcp"
            direction = "from"
            reset = "0.5%"
            corrupt-payload = 1.5
            loss-model = "gemodel:2,20"
            seed = 7
            "#,
        )
        .unwrap();
        assert_eq!(cfg.rule.len(), 2);
        let (a, b) = (&cfg.rule[0], &cfg.rule[1]);
        assert_eq!(a.port, Some(5000));
        assert_eq!(a.proto, Proto::Udp);
        assert_eq!(a.drop.unwrap().value(), 30.0);
        assert_eq!(a.delay, Some(std::time::Duration::from_millis(20)));
        assert_eq!(b.ip.unwrap().to_string(), "198.18.0.0/24");
        assert_eq!(b.direction, Direction::From);
        assert_eq!(b.reset.unwrap().value(), 0.5);
        assert_eq!(b.corrupt_payload.unwrap().value(), 1.5);
        assert_eq!(b.seed, Some(7));
        let plan = cfg.plan(None).unwrap();
        assert_eq!(plan.rules.len(), 2);
        assert_eq!(plan.map_contents().unwrap().rules.len(), 2);
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        for (text, needle) in [
            ("[[rule]]\nport = 5000\ndorp = 5\n", "line 3: unknown field `dorp`"),
            ("[[rule]]\nport = 0\ndrop = 5\n", "not a port"),
            ("[[rule]]\nport = 1\ndrop = 101\n", "outside 0-100%"),
            ("[[rule]]\nport = 1\ndelay = 20\n", "needs a unit"),
            ("[[rule]]\nport = 1\nproto = \"sctp\"\n", "unknown variant `sctp`"),
            ("[rule]\nport = 1\n", "invalid type"),
            ("[[rules]]\nport = 1\n", "unknown field `rules`"),
            ("[[rule]]\nport = \n", "line 2"),
        ] {
            let e = ConfigFile::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{text:?}: not one line: {e}");
        }
    }

    #[test]
    fn rules_are_validated_like_flags() {
        let plan = |text: &str| ConfigFile::parse(text).unwrap().plan(None).map(|_| ()).unwrap_err().to_string();
        assert_eq!(plan(""), "config: no [[rule]] or [[phase]] in the config file");
        assert_eq!(
            plan("[[rule]]\nport = 1\n"),
            "config: rule 1: no fault given: add --drop, --corrupt, --corrupt-payload, --reset, --duplicate (a percentage above 0), --delay, --rate, --loss-model, --unplug-after, --reset-after or --fin-delay"
        );
        assert!(plan("[[rule]]\nport = 1\ndrop = 1\n[[rule]]\ndrop = 5\n").starts_with("config: rule 2: refusing"));
        assert!(plan("[[rule]]\nport = 1\ndrop = 1\n[[rule]]\nport = 1\nreset = 5\n").contains("rules 1 and 2"));
    }

    #[test]
    fn rules_go_through_json_unchanged() {
        let cfg = ConfigFile::parse(
            "[[rule]]\nip = \"198.18.0.0/24\"\nport = 1\nproto = \"tcp\"\ndrop = 2.5\ndelay = \"1.5ms\"\njitter = \"250us\"\n\
             distribution = \"normal\"\nkeep-order = true\nrate = \"5mbit\"\nloss-model = \"gemodel:2,20\"\nseed = 3\n",
        )
        .unwrap();
        let json = serde_json::to_string(&cfg.rule[0]).unwrap();
        let back: RuleArgs = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cfg.rule[0], "{json}");
    }

    /// Durations went up to 2^64 s, where a delay plus a jitter (or four
    /// jitters, sizing fq) overflowed: a panic. Now they stop at 2^64 ns,
    /// what the kernel counts, and such sums fit.
    #[test]
    fn the_longest_delays_do_not_overflow() {
        let cfg = ConfigFile::parse(
            "[[rule]]\nport = 1\ndelay = \"18446744073709551615ns\"\njitter = \"18446744073709551615ns\"\n",
        )
        .unwrap();
        let plan = cfg.plan(None).unwrap();
        assert!(plan.fq_params().is_some());
        assert_eq!(plan.map_contents().unwrap().rules[0].1.jitter_ns, u64::MAX);
        let e = ConfigFile::parse("[[rule]]\nport = 1\ndelay = \"10000000000000000000s\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("too long"), "{e}");
    }

    /// A phase's name with a line break made a message of two lines.
    #[test]
    fn phase_names_are_one_line() {
        let cfg = ConfigFile::parse("[[phase]]\nname = \"a\\nb\"\nduration = \"1s\"\n").unwrap();
        let e = cfg.schedule(None).unwrap_err().to_string();
        assert_eq!(e, "config: phase 1: a name is one line of printable text");
    }

    #[test]
    fn ten_thousand_rules_fit() {
        let mut text = String::new();
        for i in 0..10_000u32 {
            text.push_str(&format!(
                "[[rule]]\nip = \"198.18.{}.{}\"\nport = 5000\nproto = \"udp\"\ndrop = 1\n",
                i / 250,
                i % 250 + 1
            ));
        }
        let plan = ConfigFile::parse(&text).unwrap().plan(None).unwrap();
        assert_eq!(plan.map_contents().unwrap().targets.len(), 10_000);
    }
}
