//! The one error type of the library's checks: input that cannot work,
//! each kind its own variant, so that callers match variants, never text.
//! `main` prints it in one line and exits with status 2.

use pygocentrus_common::{MAX_RULES, PERCENT_FAULTS, PercentFault};
use thiserror::Error;

/// The flags of `faults`, as a message lists them: `--drop, --corrupt`.
fn flags(faults: impl IntoIterator<Item = PercentFault>) -> String {
    faults.into_iter().map(|f| format!("--{}", f.flag)).collect::<Vec<_>>().join(", ")
}

/// Input that cannot work: reported in one line, exit status 2.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UsageError {
    #[error(
        "no fault given: add {} (a percentage above 0), --delay, --rate, --loss-model, --unplug-after, --reset-after or --fin-delay",
        flags(PERCENT_FAULTS)
    )]
    NoFault,
    #[error(
        "--per-connection needs a fault with a percentage: {}, --delay-pct, --rate-pct, --limit-pct or --fin-delay-pct",
        flags(PercentFault::tried())
    )]
    PerConnectionNeedsShare,
    /// A flag that only means something for TCP, with `--proto udp`.
    #[error("{0} needs TCP, but --proto is udp")]
    NeedsTcp(&'static str),
    #[error("{0} needs --delay")]
    NeedsDelay(&'static str),
    #[error("{0} needs {1}")]
    ShareNeedsFault(&'static str, &'static str),
    #[error("{0} is a share of connections: add --per-connection")]
    SharePerConnection(&'static str),
    #[error("--distribution needs --jitter")]
    DistributionNeedsJitter,
    #[error("--keep-order needs --jitter (without jitter a flow keeps its order anyway)")]
    KeepOrderNeedsJitter,
    /// Longer than the kernel's 64-bit nanoseconds count.
    #[error("{0} is too long (at most {max}ns, about 584 years)", max = u64::MAX)]
    TooLong(&'static str),
    /// The kernel lacks the `fq` qdisc that departure times need.
    #[error("this kernel has no fq qdisc, which --delay and --rate need: load it with 'modprobe sch_fq'")]
    NoFq,
    /// A root qdisc someone else set up sits where `fq` would go.
    #[error(
        "{iface} has a root qdisc '{kind}' of its own; delay and rate need fq there: remove it or leave out --delay/--rate"
    )]
    ForeignRootQdisc { iface: String, kind: String },
    #[error("refusing to impair all traffic: give --ip and/or --port, or --all to mean it")]
    NoTarget,
    /// `--container` or `--netns` cannot be resolved: no such container or
    /// namespace, not running, Docker unreachable, nothing to hook.
    #[error("{0}")]
    Endpoint(String),
    #[error("--reset needs TCP, but --proto is udp")]
    ResetNeedsTcp,
    /// Departure times are kept only where a packet leaves by a hooked
    /// port: on a container's veth, that is what the container receives.
    #[error(
        "with --container or --netns, --delay and --rate apply to what the container receives: use --direction to or both"
    )]
    ScheduleOnlyInbound,
    #[error(
        "--corrupt-payload needs TCP or UDP, and --proto any without --port also matches ICMP: add --proto or --port"
    )]
    PayloadNeedsL4,
    #[error("rules {0} and {1} both match {2}")]
    Overlap(usize, usize, String),
    #[error("too many rules: {0} (at most {MAX_RULES})")]
    TooMany(usize),
    #[error("unknown interface '{0}'")]
    UnknownInterface(String),
    #[error("{0}")]
    Privileges(String),
    /// The kernel lacks what the flags ask for.
    #[error("{0}")]
    Kernel(String),
    /// The config file cannot be read, parsed or turned into rules. A
    /// long message (one quoting a long bad value) is cut in the middle.
    #[error("config: {}", cut(.0))]
    Config(String),
    #[error("give the rule either as flags or in --config, not both")]
    ConfigAndFlags,
    #[error("{0}")]
    Behavior(String),
    /// The API address or token cannot be used.
    #[error("{0}")]
    Api(String),
    /// A rule built in Rust (`Faults`) has a value out of range, or flags
    /// that do not parse.
    #[error("{0}")]
    Rule(String),
    /// Hooks that outlive the process, and no program to run their guard.
    #[error("{0}")]
    Guard(String),
    /// The state directory is not one only root can write to.
    #[error("{0}")]
    StateDir(String),
}

/// Messages longer than this are cut in the middle when shown.
const MAX_SHOWN: usize = 400;

/// `message`, or its first and last few hundred bytes around a note of
/// how much was cut: a bad value of 50 MB must not make a 50 MB line.
fn cut(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_SHOWN {
        return message.into();
    }
    let floor = |mut i: usize| {
        while !message.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let head = floor(MAX_SHOWN * 2 / 3);
    let tail = floor(message.len() - MAX_SHOWN / 3);
    format!("{} [... {} bytes cut ...] {}", &message[..head], tail - head, &message[tail..]).into()
}

impl UsageError {
    /// Whether `fq`, which delays and rates need, cannot be put on a port.
    pub fn is_qdisc(&self) -> bool {
        matches!(self, UsageError::NoFq | UsageError::ForeignRootQdisc { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_config_message_is_cut_in_the_middle() {
        let short = UsageError::Config("line 3: bad port".to_owned());
        assert_eq!(short.to_string(), "config: line 3: bad port");
        let value = "é".repeat(500_000);
        let long = UsageError::Config(format!("line 4: '{value}' is not an address"));
        let shown = long.to_string();
        assert!(shown.len() < 2 * MAX_SHOWN, "{} bytes shown", shown.len());
        assert!(shown.starts_with("config: line 4: 'éé"), "{shown}");
        assert!(shown.ends_with("éé' is not an address"), "{shown}");
        assert!(shown.contains(" bytes cut ...] "), "{shown}");
    }
}
