//! The config file (`--config FILE`, TOML): what the user wrote, as
//! `cli.rs` is what the user typed. Each `[[rule]]` table has the names and
//! units of `attach`'s flags and is read into the same [`RuleArgs`], so
//! `plan.rs` validates both the same way.
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

use crate::{
    cli::RuleArgs,
    plan::{Plan, RuleSpec, UsageError},
};

/// A config file as written. Unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[[rule]]` tables, in order: rule `i` gets id `i + 1` and its own
    /// counters.
    #[serde(default)]
    pub rule: Vec<RuleArgs>,
}

impl ConfigFile {
    /// Reads and parses `path`; any problem is one line naming the file.
    pub fn load(path: &Path) -> Result<Self, UsageError> {
        let name = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| UsageError::Config(format!("reading {name}: {e}")))?;
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

    /// The validated rules, each on `endpoint` if the scope is one
    /// (`--container`, `--netns`).
    pub fn plan(&self, endpoint: Option<&str>) -> Result<Plan, UsageError> {
        if self.rule.is_empty() {
            return Err(UsageError::Config("no [[rule]] in the config file".to_owned()));
        }
        let rules = self
            .rule
            .iter()
            .enumerate()
            .map(|(i, r)| {
                RuleSpec::from_args(r, endpoint.map(str::to_owned))
                    .map_err(|e| UsageError::Config(format!("rule {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = Plan { rules };
        plan.map_contents()?;
        Ok(plan)
    }
}

/// Deserializers for config values, through the parsers of the flags: a
/// value is accepted in the file exactly when it is accepted on the command
/// line. Numbers are read as the text they would be on the command line
/// (`drop = 30` as `--drop 30`).
pub mod de {
    use std::{fmt, marker::PhantomData, time::Duration};

    use ipnet::IpNet;
    use serde::{Deserializer, de::Visitor};

    use crate::{
        cli::parse_ipnet,
        plan::{GeSpec, parse_loss_model},
        units::{Percent, Rate, parse_duration, parse_percent, parse_rate},
    };

    struct Text<T> {
        parse: fn(&str) -> Result<T, String>,
        expecting: &'static str,
        _t: PhantomData<T>,
    }

    impl<T> Visitor<'_> for Text<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            (self.parse)(v).map(Some).map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
    }

    fn text<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
        expecting: &'static str,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Text { parse, expecting, _t: PhantomData })
    }

    pub fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Percent>, D::Error> {
        text(d, parse_percent, "a percentage: 5, 0.1 or \"5%\"")
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        text(d, parse_duration, "a duration with a unit: \"250us\", \"20ms\", \"30s\"")
    }

    pub fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
        text(d, parse_rate, "a rate: \"100kbit\", \"5mbit\", \"512kbps\"")
    }

    pub fn loss_model<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GeSpec>, D::Error> {
        text(d, parse_loss_model, "a loss model: \"gemodel:P[,R[,1-H[,1-K]]]\"")
    }

    pub fn ipnet<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
        text(d, parse_ipnet, "an address or prefix: \"198.18.0.2\", \"198.18.0.0/24\", \"fd00::2\"")
    }

    pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        text(
            d,
            |s| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{s} is not a port (1-65535)")),
            "a port, 1-65535",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Direction, Proto};

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
        assert_eq!(plan(""), "config: no [[rule]] in the config file");
        assert_eq!(
            plan("[[rule]]\nport = 1\n"),
            "config: rule 1: no fault given: add --drop, --corrupt, --corrupt-payload, --reset, --duplicate (a percentage above 0), --delay, --rate or --loss-model"
        );
        assert!(plan("[[rule]]\nport = 1\ndrop = 1\n[[rule]]\ndrop = 5\n").starts_with("config: rule 2: refusing"));
        assert!(plan("[[rule]]\nport = 1\ndrop = 1\n[[rule]]\nport = 1\nreset = 5\n").starts_with("rules 1 and 2"));
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
