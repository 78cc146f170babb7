//! From what the user typed to the exact values the kernel reads: a
//! validated [`Plan`] of rules, and the [`MapContents`] that encode it.

use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use ipnet::IpNet;
use pygocentrus_common::{
    ADDR_BITS, CLASS_OTHER, CLASS_TCP, CLASS_UDP, CONFIG_ENDPOINT, CONFIG_PORTLESS, DIST_NORMAL, DIST_PARETO,
    DIST_PARETONORMAL, DIST_UNIFORM, GeModel, LIMIT_BYTES, LIMIT_NS, LIMIT_PACKETS, MAX_RULES, PORT_BITS, PROB_ALWAYS,
    RULE_GE, RULE_KEEP_ORDER, RULE_PER_CONNECTION, RULE_SEEDED, Rule, SIDE_FROM, SIDE_TO, TCP_ACK, TCP_CWR, TCP_ECE,
    TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, TargetKey, TargetValue,
};

use crate::{
    cli::{AttachArgs, Behavior, Direction, Distribution, Proto, RuleArgs},
    error::UsageError,
    netlink::FqParams,
    units::{FlowLimit, MAX_DURATION, Percent, Rate, parse_percent},
};

/// The faults of a rule.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    pub drop: Option<Percent>,
    pub reset: Option<Percent>,
    pub corrupt: Option<Percent>,
    pub corrupt_payload: Option<Percent>,
    pub duplicate: Option<Percent>,
    pub loss_model: Option<GeSpec>,
    pub delay: Option<Delay>,
    pub rate: Option<Rate>,
    /// Each percentage above decides per connection (both directions
    /// alike), not per packet: Toxiproxy's `toxicity`.
    pub per_connection: bool,
    /// Drop every packet of a connection past this point, both ways.
    pub unplug_after: Option<FlowLimit>,
    /// Turn the next TCP segment of a direction past this point into a
    /// reset (Toxiproxy's `limit_data`).
    pub reset_after: Option<FlowLimit>,
    /// The share of connections the rate applies to (per connection only).
    pub rate_share: Option<Percent>,
    /// The share of connections the flow limits apply to (per connection
    /// only).
    pub limit_share: Option<Percent>,
    /// "Slow close": segments carrying FIN leave this much later.
    pub fin_delay: Option<Duration>,
    /// The share of FINs (or connections) held back.
    pub fin_delay_share: Option<Percent>,
}

/// `--tcp-flags`: the TCP segments a rule judges, those with at least one
/// flag of `any` and none of `clear` (`TCP_*` bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlags {
    pub any: u8,
    pub clear: u8,
}

const TCP_FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", TCP_FIN),
    ("syn", TCP_SYN),
    ("rst", TCP_RST),
    ("psh", TCP_PSH),
    ("ack", TCP_ACK),
    ("urg", TCP_URG),
    ("ece", TCP_ECE),
    ("cwr", TCP_CWR),
];

/// `syn,fin,rst,ack,psh,urg,ece,cwr` (any of them) or `syn-only` (SYN
/// without ACK: connection attempts).
pub fn parse_tcp_flags(s: &str) -> Result<TcpFlags, String> {
    let t = s.trim().to_ascii_lowercase();
    if t == "syn-only" {
        return Ok(TcpFlags { any: TCP_SYN, clear: TCP_ACK });
    }
    let mut any = 0;
    for name in t.split(',').map(str::trim) {
        let bit = TCP_FLAG_NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).ok_or_else(|| {
            format!(
                "'{name}' is not a TCP flag (write a comma list of syn, fin, rst, ack, psh, urg, ece, cwr, or syn-only)"
            )
        })?;
        any |= bit;
    }
    Ok(TcpFlags { any, clear: 0 })
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == (TcpFlags { any: TCP_SYN, clear: TCP_ACK }) {
            return f.write_str("syn-only");
        }
        let names: Vec<&str> = TCP_FLAG_NAMES.iter().filter(|(_, b)| self.any & b != 0).map(|(n, _)| *n).collect();
        f.write_str(&names.join(","))
    }
}

/// The `LIMIT_*` kind and value the kernel reads for a flow limit.
fn limit_fields(limit: Option<FlowLimit>) -> (u32, u64) {
    match limit {
        None => (0, 0),
        Some(FlowLimit::Bytes(n)) => (LIMIT_BYTES, n),
        Some(FlowLimit::Packets(n)) => (LIMIT_PACKETS, n),
        Some(FlowLimit::Time(d)) => (LIMIT_NS, d.as_nanos().min(u128::from(u64::MAX)) as u64),
    }
}

/// The delay of a rule: mean, jitter and its distribution, the share of
/// packets delayed, and whether flows keep their order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Delay {
    pub mean: Duration,
    pub jitter: Duration,
    pub distribution: Distribution,
    pub share: Option<Percent>,
    pub keep_order: bool,
}

/// The Gilbert-Elliott loss model as netem takes it, in percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeSpec {
    pub p: Percent,
    pub r: Percent,
    pub loss_bad: Percent,
    pub loss_good: Percent,
}

/// `gemodel:P[,R[,1-H[,1-K]]]`, netem's defaults for what is left out:
/// R = 100-P, 1-H = 100, 1-K = 0.
pub fn parse_loss_model(s: &str) -> Result<GeSpec, String> {
    let params = s
        .strip_prefix("gemodel:")
        .ok_or_else(|| format!("'{s}' is not a loss model (write gemodel:P[,R[,1-H[,1-K]]])"))?;
    let values = params.split(',').map(parse_percent).collect::<Result<Vec<_>, _>>()?;
    let pct = |v: f64| parse_percent(&v.to_string());
    match values[..] {
        [p] => Ok(GeSpec { p, r: pct(100.0 - p.value())?, loss_bad: pct(100.0)?, loss_good: pct(0.0)? }),
        [p, r] => Ok(GeSpec { p, r, loss_bad: pct(100.0)?, loss_good: pct(0.0)? }),
        [p, r, loss_bad] => Ok(GeSpec { p, r, loss_bad, loss_good: pct(0.0)? }),
        [p, r, loss_bad, loss_good] => Ok(GeSpec { p, r, loss_bad, loss_good }),
        _ => Err(format!("'{s}' has too many parameters (gemodel takes at most four)")),
    }
}

fn on(p: Option<Percent>) -> bool {
    p.is_some_and(|p| p.value() > 0.0)
}

impl Faults {
    pub(crate) fn any(&self) -> bool {
        [self.drop, self.reset, self.corrupt, self.corrupt_payload, self.duplicate].into_iter().any(on)
            || self.loss_model.is_some()
            || (self.rate.is_some() && self.rate_share.is_none_or(|s| s.value() > 0.0))
            || ((self.unplug_after.is_some() || self.reset_after.is_some())
                && self.limit_share.is_none_or(|s| s.value() > 0.0))
            || self.fin_delay.is_some_and(|d| !d.is_zero() && self.fin_delay_share.is_none_or(|s| s.value() > 0.0))
            || self
                .delay
                .is_some_and(|d| !(d.mean.is_zero() && d.jitter.is_zero()) && d.share.is_none_or(|s| s.value() > 0.0))
    }

    /// Whether packets get departure times: those need `fq`.
    pub fn schedules(&self) -> bool {
        self.rule_fields().schedules()
    }

    fn rule_fields(&self) -> Rule {
        let t = |p: Option<Percent>| p.map_or(0, Percent::threshold);
        let mut rule = Rule {
            drop: t(self.drop),
            reset: t(self.reset),
            corrupt: t(self.corrupt),
            corrupt_payload: t(self.corrupt_payload),
            duplicate: t(self.duplicate),
            rate_bytes: self.rate.map_or(0, |r| r.0),
            rate_prob: self.rate_share.map_or(PROB_ALWAYS, Percent::threshold),
            limit_prob: self.limit_share.map_or(PROB_ALWAYS, Percent::threshold),
            fin_delay_ns: self.fin_delay.map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64),
            fin_delay_prob: self.fin_delay_share.map_or(PROB_ALWAYS, Percent::threshold),
            ..Rule::default()
        };
        (rule.unplug_kind, rule.unplug_after) = limit_fields(self.unplug_after);
        (rule.reset_kind, rule.reset_after) = limit_fields(self.reset_after);
        if self.per_connection {
            rule.flags |= RULE_PER_CONNECTION;
        }
        if let Some(ge) = self.loss_model {
            rule.flags |= RULE_GE;
            rule.ge = GeModel {
                p: ge.p.threshold(),
                r: ge.r.threshold(),
                loss_bad: ge.loss_bad.threshold(),
                loss_good: ge.loss_good.threshold(),
            };
        }
        if let Some(d) = self.delay {
            rule.delay_ns = d.mean.as_nanos().min(u128::from(u64::MAX)) as u64;
            rule.jitter_ns = d.jitter.as_nanos().min(u128::from(u64::MAX)) as u64;
            rule.delay_prob = d.share.map_or(PROB_ALWAYS, Percent::threshold);
            rule.distribution = match d.distribution {
                Distribution::Uniform => DIST_UNIFORM,
                Distribution::Normal => DIST_NORMAL,
                Distribution::Pareto => DIST_PARETO,
                Distribution::Paretonormal => DIST_PARETONORMAL,
            };
            if d.keep_order {
                rule.flags |= RULE_KEEP_ORDER;
            }
        }
        rule
    }
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSpec {
    pub ip: Option<IpNet>,
    pub port: Option<u16>,
    /// With `--container` or `--netns`: the endpoint whose veths carry the
    /// hooks (`container web`). With neither `ip` nor `port` the target is
    /// that endpoint itself: every packet it sends or receives.
    pub endpoint: Option<String>,
    pub proto: Proto,
    pub direction: Direction,
    /// Only TCP segments with these flags are judged (`--tcp-flags`).
    pub tcp_flags: Option<TcpFlags>,
    pub faults: Faults,
    pub seed: Option<u64>,
}

impl RuleSpec {
    pub fn from_attach(a: &AttachArgs) -> Result<Self, UsageError> {
        Self::from_args(&a.rule, endpoint_label(a))
    }

    /// The rule of `r` (flags or a config file's `[[rule]]`), on `endpoint`
    /// if the scope is one.
    pub fn from_args(r: &RuleArgs, endpoint: Option<String>) -> Result<Self, UsageError> {
        let r = &with_behavior(r)?;
        let spec = Self {
            ip: r.ip,
            port: r.port,
            endpoint,
            proto: r.proto,
            direction: r.direction,
            tcp_flags: r.tcp_flags,
            faults: Faults {
                drop: r.drop,
                reset: r.reset,
                corrupt: r.corrupt,
                corrupt_payload: r.corrupt_payload,
                duplicate: r.duplicate,
                loss_model: r.loss_model,
                delay: delay_of(r)?,
                rate: r.rate,
                per_connection: r.per_connection,
                unplug_after: r.unplug_after,
                reset_after: r.reset_after,
                rate_share: shares_of(r.rate.is_some(), r.rate_pct, "--rate-pct", "--rate")?,
                limit_share: shares_of(
                    r.unplug_after.is_some() || r.reset_after.is_some(),
                    r.limit_pct,
                    "--limit-pct",
                    "--unplug-after or --reset-after",
                )?,
                fin_delay: r.fin_delay,
                fin_delay_share: shares_of(r.fin_delay.is_some(), r.fin_delay_pct, "--fin-delay-pct", "--fin-delay")?,
            },
            seed: r.seed,
        };
        if r.behavior == Some(Behavior::Dummy) {
            if spec.faults.any() {
                return Err(UsageError::Behavior("dummy does nothing: leave out the faults".to_owned()));
            }
            // Matched and counted, nothing done: the target is still checked.
            let mut check = spec.clone();
            check.faults.drop = Some(Percent::ALWAYS);
            check.validate(r.all)?;
            return Ok(spec);
        }
        spec.validate(r.all)?;
        Ok(spec)
    }

    pub(crate) fn validate(&self, all: bool) -> Result<(), UsageError> {
        if !self.faults.any() {
            return Err(UsageError::NoFault);
        }
        if self.ip.is_none() && self.port.is_none() && !all && self.endpoint.is_none() {
            return Err(UsageError::NoTarget);
        }
        if on(self.faults.reset) && self.proto == Proto::Udp {
            return Err(UsageError::ResetNeedsTcp);
        }
        if self.proto == Proto::Udp {
            if self.faults.reset_after.is_some() {
                return Err(UsageError::NeedsTcp("--reset-after"));
            }
            if self.tcp_flags.is_some() {
                return Err(UsageError::NeedsTcp("--tcp-flags"));
            }
            if self.faults.fin_delay.is_some() {
                return Err(UsageError::NeedsTcp("--fin-delay"));
            }
        }
        if let Some(d) = self.faults.delay {
            for (value, flag) in [(d.mean, "--delay"), (d.jitter, "--jitter")] {
                if value > MAX_DURATION {
                    return Err(UsageError::TooLong(flag));
                }
            }
        }
        let f = &self.faults;
        let shares = [
            f.drop,
            f.reset,
            f.corrupt,
            f.corrupt_payload,
            f.duplicate,
            f.delay.and_then(|d| d.share),
            f.rate_share,
            f.limit_share,
            f.fin_delay_share,
        ];
        if f.per_connection && !shares.into_iter().any(on) {
            return Err(UsageError::PerConnectionNeedsShare);
        }
        // A share of connections, drawn per packet, would pace or limit a
        // random part of each connection: no fault anyone meets.
        for (given, flag) in [(f.rate_share.is_some(), "--rate-pct"), (f.limit_share.is_some(), "--limit-pct")] {
            if given && !f.per_connection {
                return Err(UsageError::SharePerConnection(flag));
            }
        }
        if self.endpoint.is_some() && self.faults.schedules() && self.direction == Direction::From {
            return Err(UsageError::ScheduleOnlyInbound);
        }
        if on(self.faults.corrupt_payload) && self.proto == Proto::Any && self.port.is_none() {
            return Err(UsageError::PayloadNeedsL4);
        }
        Ok(())
    }

    /// Whether the target is the endpoint itself (`--container` or
    /// `--netns` without `--ip` and `--port`): its rule lives in the
    /// `ENDPOINT` array, not in the trie.
    pub fn targets_endpoint(&self) -> bool {
        self.endpoint.is_some() && self.ip.is_none() && self.port.is_none()
    }

    /// The kernel's view of the faults. Per-connection decisions hash the
    /// seed with the connection: without `--seed`, a random one, so that
    /// each run picks other connections.
    pub fn rule(&self) -> Rule {
        let mut rule = self.faults.rule_fields();
        if let Some(seed) = self.seed {
            rule.flags |= RULE_SEEDED;
            rule.seed = seed;
        } else if self.faults.per_connection {
            rule.seed = rand::random();
        }
        if let Some(flags) = self.tcp_flags {
            rule.tcp_flags_any = u32::from(flags.any);
            rule.tcp_flags_clear = u32::from(flags.clear);
        }
        rule
    }

    /// Trie prefix length and key of the target.
    fn key(&self) -> (u32, TargetKey) {
        let port = self.port.unwrap_or(0).to_be_bytes();
        match self.ip {
            None => (PORT_BITS, TargetKey { port, addr: [0; 16] }),
            Some(IpNet::V4(n)) => (
                PORT_BITS + ADDR_BITS - 32 + u32::from(n.prefix_len()),
                TargetKey { port, addr: n.network().to_ipv6_mapped().octets() },
            ),
            Some(IpNet::V6(n)) => {
                (PORT_BITS + u32::from(n.prefix_len()), TargetKey { port, addr: n.network().octets() })
            }
        }
    }

    /// The (side, class) cells of a trie entry this rule fills.
    fn cells(&self) -> impl Iterator<Item = usize> + '_ {
        let sides: &[usize] = match self.direction {
            Direction::Both => &[SIDE_TO, SIDE_FROM],
            Direction::To => &[SIDE_TO],
            Direction::From => &[SIDE_FROM],
        };
        let classes: &[usize] = match (self.proto, self.port) {
            (Proto::Tcp, _) => &[CLASS_TCP],
            (Proto::Udp, _) => &[CLASS_UDP],
            // A port only exists on TCP and UDP.
            (Proto::Any, Some(_)) => &[CLASS_TCP, CLASS_UDP],
            (Proto::Any, None) => &[CLASS_TCP, CLASS_UDP, CLASS_OTHER],
        };
        sides.iter().flat_map(move |s| classes.iter().map(move |c| TargetValue::index(*s, *c)))
    }
}

/// The rule with its behavior's faults filled in. A behavior sets its
/// fault; giving that fault as well is refused (which one would win?).
fn with_behavior(r: &RuleArgs) -> Result<RuleArgs, UsageError> {
    let mut r = r.clone();
    let Some(b) = r.behavior else { return Ok(r) };
    let name = format!("{b:?}").to_lowercase();
    let taken = |given: bool, fault: &str| {
        if given {
            Err(UsageError::Behavior(format!("behavior {name} sets --{fault} itself: leave it out")))
        } else {
            Ok(())
        }
    };
    match b {
        Behavior::Blackout => {
            taken(r.drop.is_some(), "drop")?;
            r.drop = Some(Percent::ALWAYS);
        }
        Behavior::Hang => {
            taken(r.drop.is_some(), "drop")?;
            r.drop = Some(Percent::ALWAYS);
            if r.direction == Direction::Both {
                r.direction = Direction::From;
            }
        }
        Behavior::Error => {
            taken(r.reset.is_some(), "reset")?;
            r.reset = Some(Percent::ALWAYS);
        }
        Behavior::Delay => {
            r.delay = Some(r.delay.unwrap_or(Duration::from_secs(1)));
        }
        Behavior::Dummy => {}
    }
    Ok(r)
}

/// How messages name the endpoint of `--container` or `--netns`, if given.
pub fn endpoint_label(a: &AttachArgs) -> Option<String> {
    match (&a.container, &a.netns, a.netns_pid()) {
        (Some(c), _, _) => Some(format!("container {c}")),
        (None, Some(_), Some(pid)) => Some(format!("netns of process {pid}")),
        (None, Some(n), None) => Some(format!("netns {n}")),
        (None, None, _) => None,
    }
}

/// A share flag (`--rate-pct`...), refused without the fault it refines.
fn shares_of(
    fault: bool,
    share: Option<Percent>,
    flag: &'static str,
    needs: &'static str,
) -> Result<Option<Percent>, UsageError> {
    match share {
        Some(_) if !fault => Err(UsageError::ShareNeedsFault(flag, needs)),
        share => Ok(share),
    }
}

/// The delay flags, checked for sense: jitter and the rest refine a delay.
fn delay_of(a: &RuleArgs) -> Result<Option<Delay>, UsageError> {
    let Some(mean) = a.delay else {
        for (given, flag) in [
            (a.jitter.is_some(), "--jitter"),
            (a.distribution.is_some(), "--distribution"),
            (a.delay_pct.is_some(), "--delay-pct"),
            (a.keep_order, "--keep-order"),
        ] {
            if given {
                return Err(UsageError::NeedsDelay(flag));
            }
        }
        return Ok(None);
    };
    let jitter = a.jitter.unwrap_or_default();
    if jitter.is_zero() && a.distribution.is_some_and(|d| d != Distribution::Uniform) {
        return Err(UsageError::DistributionNeedsJitter);
    }
    if jitter.is_zero() && a.keep_order {
        return Err(UsageError::KeepOrderNeedsJitter);
    }
    Ok(Some(Delay {
        mean,
        jitter,
        distribution: a.distribution.unwrap_or(Distribution::Uniform),
        share: a.delay_pct,
        keep_order: a.keep_order,
    }))
}

impl RuleSpec {
    /// The target alone: `udp to/from 198.18.0.3:5000`, `ip to container web`.
    fn target(&self) -> String {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Any => "ip",
        };
        let dir = match self.direction {
            Direction::Both => "to/from",
            Direction::To => "to",
            Direction::From => "from",
        };
        let host = self.ip.map_or("*".to_owned(), |n| {
            if n.prefix_len() == n.max_prefix_len() {
                match n.addr() {
                    IpAddr::V6(a) => format!("[{a}]"),
                    IpAddr::V4(a) => a.to_string(),
                }
            } else {
                n.to_string()
            }
        });
        let flags = self.tcp_flags.map_or(String::new(), |f| format!(" tcp-flags {f}"));
        if let Some(endpoint) = self.endpoint.as_ref().filter(|_| self.targets_endpoint()) {
            return format!("{proto} {dir} {endpoint}{flags}");
        }
        let port = self.port.map_or("*".to_owned(), |p| p.to_string());
        format!("{proto} {dir} {host}:{port}{flags}")
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target())?;
        for (name, p) in [
            ("drop", self.faults.drop),
            ("reset", self.faults.reset),
            ("corrupt", self.faults.corrupt),
            ("corrupt-payload", self.faults.corrupt_payload),
        ] {
            if let Some(p) = p.filter(|p| p.value() > 0.0) {
                write!(f, " {name} {p}")?;
            }
        }
        if let Some(ge) = self.faults.loss_model {
            write!(f, " loss gemodel {} {} {} {}", ge.p, ge.r, ge.loss_bad, ge.loss_good)?;
        }
        if let Some(p) = self.faults.duplicate.filter(|p| p.value() > 0.0) {
            write!(f, " duplicate {p}")?;
        }
        if let Some(d) = self.faults.delay {
            write!(f, " delay {:?}", d.mean)?;
            if !d.jitter.is_zero() {
                let dist = format!("{:?}", d.distribution).to_lowercase();
                write!(f, " jitter {:?} {dist}", d.jitter)?;
            }
            if let Some(share) = d.share {
                write!(f, " on {share}")?;
            }
            if d.keep_order {
                f.write_str(" in order")?;
            }
        }
        if let Some(rate) = self.faults.rate {
            write!(f, " rate {rate}")?;
            if let Some(share) = self.faults.rate_share {
                write!(f, " on {share}")?;
            }
        }
        if let Some(d) = self.faults.fin_delay {
            write!(f, " fin delay {d:?}")?;
            if let Some(share) = self.faults.fin_delay_share {
                write!(f, " on {share}")?;
            }
        }
        if let Some(limit) = self.faults.unplug_after {
            write!(f, " unplug after {limit}")?;
        }
        if let Some(limit) = self.faults.reset_after {
            write!(f, " reset after {limit}")?;
        }
        if let Some(share) = self.faults.limit_share {
            write!(f, " limits on {share}")?;
        }
        if self.faults.per_connection {
            f.write_str(" per connection")?;
        }
        if let Some(seed) = self.seed {
            write!(f, " seed {seed}")?;
        }
        Ok(())
    }
}

/// Everything pygocentrus asks of the kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub rules: Vec<RuleSpec>,
}

/// The map entries that encode a [`Plan`]. Rule `i` of the plan has id `i + 1`,
/// or the `i`th of the ids given to [`Plan::map_contents_with_ids`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapContents {
    pub targets: Vec<(u32, TargetKey, TargetValue)>,
    pub rules: Vec<(u32, Rule)>,
    /// Host-order ports some rule names.
    pub ports: Vec<u16>,
    /// The rules whose target is the endpoint itself (`ENDPOINT` array).
    pub endpoint: Option<TargetValue>,
    /// `CONFIG_*` flags that follow from the rules.
    pub flags: u32,
}

/// A trie entry's identity while the plan is encoded: (prefix length, port,
/// address), port and address in network byte order.
type EntryKey = (u32, [u8; 2], [u8; 16]);

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
        let scheduled: Vec<&Faults> = self.rules.iter().map(|r| &r.faults).filter(|f| f.schedules()).collect();
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

    /// The map entries of the plan, rule `i` with id `i + 1`.
    pub fn map_contents(&self) -> Result<MapContents, UsageError> {
        let ids: Vec<u32> = (1..=self.rules.len() as u32).collect();
        self.map_contents_with_ids(&ids)
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

    /// The map entries of the plan, rule `i` with id `ids[i]` (distinct,
    /// non-zero, at most [`MAX_RULES`]).
    pub fn map_contents_with_ids(&self, ids: &[u32]) -> Result<MapContents, UsageError> {
        if self.rules.len() > MAX_RULES as usize {
            return Err(UsageError::TooMany(self.rules.len()));
        }
        debug_assert_eq!(ids.len(), self.rules.len());
        let mut out = MapContents::default();
        // (prefix, key) → (value, which rule filled each cell)
        let mut entries: BTreeMap<EntryKey, (TargetValue, [usize; 6])> = BTreeMap::new();
        let mut endpoint: Option<(TargetValue, [usize; 6])> = None;
        for ((i, spec), &id) in self.rules.iter().enumerate().zip(ids) {
            out.rules.push((id, spec.rule()));
            let (value, owners) = if spec.targets_endpoint() {
                out.flags |= CONFIG_ENDPOINT;
                endpoint.get_or_insert((TargetValue::default(), [0; 6]))
            } else {
                match spec.port {
                    Some(p) => out.ports.push(p),
                    None => out.flags |= CONFIG_PORTLESS,
                }
                let (prefix, key) = spec.key();
                entries.entry((prefix, key.port, key.addr)).or_insert((TargetValue::default(), [0; 6]))
            };
            for cell in spec.cells() {
                if value.rules[cell] != 0 {
                    return Err(UsageError::Overlap(owners[cell], i + 1, spec.target()));
                }
                value.rules[cell] = id;
                owners[cell] = i + 1;
            }
        }
        out.endpoint = endpoint.map(|(value, _)| value);
        out.ports.sort_unstable();
        out.ports.dedup();
        // The trie returns only the longest match: let a more specific entry
        // inherit the cells it leaves empty from the entries that cover it
        // (same port, shorter prefix). Shortest prefixes first, so that
        // inheritance chains through.
        let list: Vec<_> = entries.into_iter().map(|(k, (v, _))| (k, v)).collect();
        let mut done: Vec<(EntryKey, TargetValue)> = Vec::with_capacity(list.len());
        for ((prefix, port, addr), mut value) in list {
            let cover = done
                .iter()
                .filter(|((p, pt, a), _)| *pt == port && *p < prefix && covers(*p, a, &addr))
                .max_by_key(|((p, _, _), _)| *p);
            if let Some((_, parent)) = cover {
                for (cell, id) in value.rules.iter_mut().enumerate() {
                    if *id == 0 {
                        *id = parent.rules[cell];
                    }
                }
            }
            done.push(((prefix, port, addr), value));
        }
        out.targets = done.into_iter().map(|((prefix, port, addr), v)| (prefix, TargetKey { port, addr }, v)).collect();
        Ok(out)
    }
}

/// Whether the trie key with `prefix` bits (port bits included) and address
/// `a` covers address `b`.
fn covers(prefix: u32, a: &[u8; 16], b: &[u8; 16]) -> bool {
    let bits = prefix.saturating_sub(PORT_BITS) as usize;
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use pygocentrus_common::PROB_ALWAYS;

    use super::*;
    use crate::cli::{Cli, Command};

    fn spec(args: &str) -> Result<RuleSpec, UsageError> {
        let mut v = vec!["pygocentrus", "attach", "--iface", "x"];
        v.extend(args.split_whitespace());
        match Cli::try_parse_from(v).unwrap().command {
            Command::Attach(a) => RuleSpec::from_attach(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn validation() {
        assert_eq!(spec("--port 1"), Err(UsageError::NoFault));
        assert_eq!(spec("--port 1 --drop 0"), Err(UsageError::NoFault));
        assert_eq!(spec("--drop 5"), Err(UsageError::NoTarget));
        assert!(spec("--drop 5 --all").is_ok());
        assert_eq!(spec("--port 1 --proto udp --reset 5"), Err(UsageError::ResetNeedsTcp));
        assert!(spec("--port 1 --proto tcp --reset 5").is_ok());
        assert_eq!(spec("--ip 198.18.0.1 --corrupt-payload 5"), Err(UsageError::PayloadNeedsL4));
        assert!(spec("--ip 198.18.0.1 --proto udp --corrupt-payload 5").is_ok());
    }

    #[test]
    fn rule_values() {
        let r = spec("--port 50051 --drop 100 --reset 50 --seed 7").unwrap().rule();
        assert_eq!(r.drop, PROB_ALWAYS);
        assert_eq!(r.reset, 1 << 31);
        assert_eq!((r.corrupt, r.corrupt_payload), (0, 0));
        assert_eq!((r.flags, r.seed), (RULE_SEEDED, 7));
    }

    #[test]
    fn flow_faults_and_tcp_flags() {
        let r = spec("--port 80 --unplug-after 10kb --reset-after 5s").unwrap().rule();
        assert_eq!((r.unplug_kind, r.unplug_after), (LIMIT_BYTES, 10_000));
        assert_eq!((r.reset_kind, r.reset_after), (LIMIT_NS, 5_000_000_000));
        let r = spec("--port 80 --unplug-after 100pkt").unwrap().rule();
        assert_eq!((r.unplug_kind, r.unplug_after, r.reset_kind), (LIMIT_PACKETS, 100, 0));
        let s = spec("--port 80 --proto tcp --tcp-flags syn,fin --drop 100").unwrap();
        assert_eq!((s.rule().tcp_flags_any, s.rule().tcp_flags_clear), (u32::from(TCP_SYN | TCP_FIN), 0));
        assert_eq!(s.to_string(), "tcp to/from *:80 tcp-flags fin,syn drop 100%");
        let r = spec("--port 80 --tcp-flags syn-only --drop 100").unwrap().rule();
        assert_eq!((r.tcp_flags_any, r.tcp_flags_clear), (u32::from(TCP_SYN), u32::from(TCP_ACK)));
        let s = spec("--port 80 --drop 50 --per-connection --seed 3").unwrap();
        assert_eq!(s.rule().flags, RULE_PER_CONNECTION | RULE_SEEDED);
        assert_eq!(s.to_string(), "ip to/from *:80 drop 50% per connection seed 3");
        // Without a seed, the connections are picked anew on each run.
        let s = spec("--port 80 --drop 50 --per-connection").unwrap();
        assert_eq!(s.rule().flags, RULE_PER_CONNECTION);
        assert_ne!(s.rule().seed, s.rule().seed);
    }

    #[test]
    fn flow_fault_validation() {
        assert!(spec("--port 80 --unplug-after 0pkt").is_ok());
        assert_eq!(spec("--port 80 --proto udp --reset-after 1kb"), Err(UsageError::NeedsTcp("--reset-after")));
        assert!(spec("--port 80 --proto udp --unplug-after 1kb").is_ok());
        assert_eq!(spec("--port 80 --proto udp --tcp-flags syn --drop 5"), Err(UsageError::NeedsTcp("--tcp-flags")));
        assert_eq!(spec("--port 80 --tcp-flags syn"), Err(UsageError::NoFault));
        assert_eq!(spec("--port 80 --per-connection --rate 1mbit"), Err(UsageError::PerConnectionNeedsShare));
        assert!(spec("--port 80 --per-connection --delay 10ms --delay-pct 50").is_ok());
    }

    #[test]
    fn shares_of_connections_and_fin_delay() {
        assert_eq!(spec("--port 80 --rate 1mbit --rate-pct 50"), Err(UsageError::SharePerConnection("--rate-pct")));
        assert_eq!(spec("--port 80 --drop 1 --rate-pct 50"), Err(UsageError::ShareNeedsFault("--rate-pct", "--rate")));
        assert_eq!(
            spec("--port 80 --drop 1 --limit-pct 50"),
            Err(UsageError::ShareNeedsFault("--limit-pct", "--unplug-after or --reset-after"))
        );
        assert_eq!(
            spec("--port 80 --reset-after 1kb --limit-pct 50"),
            Err(UsageError::SharePerConnection("--limit-pct"))
        );
        assert_eq!(spec("--port 80 --proto udp --fin-delay 1s"), Err(UsageError::NeedsTcp("--fin-delay")));
        assert_eq!(
            spec("--port 80 --fin-delay-pct 5"),
            Err(UsageError::ShareNeedsFault("--fin-delay-pct", "--fin-delay"))
        );
        // A share of 0 is no fault at all.
        assert_eq!(spec("--port 80 --per-connection --rate 1mbit --rate-pct 0"), Err(UsageError::NoFault));

        let r = spec("--port 80 --per-connection --rate 1mbit --rate-pct 50 --reset-after 1kb --limit-pct 25")
            .unwrap()
            .rule();
        let t = |p: &str| parse_percent(p).unwrap().threshold();
        assert_eq!((r.rate_prob, r.limit_prob), (t("50"), t("25")));
        assert_ne!(r.flags & RULE_PER_CONNECTION, 0);

        let r = spec("--port 80 --fin-delay 250ms").unwrap().rule();
        assert_eq!((r.fin_delay_ns, r.fin_delay_prob, r.rate_prob), (250_000_000, PROB_ALWAYS, PROB_ALWAYS));
        assert!(r.schedules(), "holding FINs back needs fq");
        let plan = Plan { rules: vec![spec("--port 80 --fin-delay 30s").unwrap()] };
        assert_eq!(plan.fq_params().unwrap().horizon_us, 60_000_000, "the horizon covers the FIN delay");
        assert_eq!(parse_tcp_flags("syn,bogus").map_err(|_| ()), Err(()));
        assert_eq!(parse_tcp_flags("SYN, ACK"), Ok(TcpFlags { any: TCP_SYN | TCP_ACK, clear: 0 }));
    }

    #[test]
    fn port_only_rule() {
        let plan = Plan { rules: vec![spec("--port 50051 --drop 5").unwrap()] };
        let m = plan.map_contents().unwrap();
        assert_eq!(m.ports, vec![50051]);
        assert_eq!(m.flags, 0);
        let (prefix, key, value) = m.targets[0];
        assert_eq!(prefix, PORT_BITS);
        assert_eq!(key.port, 50051u16.to_be_bytes());
        // TCP and UDP, both sides; nothing for ICMP.
        assert_eq!(value.rules, [1, 1, 0, 1, 1, 0]);
    }

    #[test]
    fn ipv4_prefix_is_mapped() {
        let plan = Plan { rules: vec![spec("--ip 198.18.0.0/24 --direction to --drop 5").unwrap()] };
        let m = plan.map_contents().unwrap();
        assert_eq!(m.flags, CONFIG_PORTLESS);
        let (prefix, key, value) = m.targets[0];
        assert_eq!(prefix, PORT_BITS + 96 + 24);
        assert_eq!(&key.addr[10..], &[0xff, 0xff, 198, 18, 0, 0]);
        assert_eq!(value.rules, [1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn more_specific_entries_inherit_empty_cells() {
        let plan = Plan {
            rules: vec![
                spec("--ip 198.18.0.0/24 --drop 5").unwrap(),
                spec("--ip 198.18.0.2 --proto tcp --direction to --reset 5").unwrap(),
            ],
        };
        let m = plan.map_contents().unwrap();
        let host = m.targets.iter().find(|t| t.0 == PORT_BITS + 128).unwrap();
        assert_eq!(host.2.rules, [2, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let plan = Plan {
            rules: vec![
                spec("--port 80 --drop 5").unwrap(),
                spec("--port 80 --proto tcp --direction from --reset 5").unwrap(),
            ],
        };
        assert!(matches!(plan.map_contents(), Err(UsageError::Overlap(1, 2, _))));
    }

    fn plan_of(rules: &[&str]) -> Plan {
        Plan { rules: rules.iter().map(|r| spec(r).unwrap()).collect() }
    }

    #[test]
    fn rules_that_stay_keep_their_ids_and_new_ones_fill_the_gaps() {
        let (a, b, c, d) = ("--port 1 --drop 5", "--port 2 --drop 5", "--port 3 --drop 5", "--port 4 --drop 5");
        let old = plan_of(&[a, b, c]);
        let ids = [1, 2, 3];
        // The first goes: the others keep 2 and 3.
        assert_eq!(plan_of(&[b, c]).stable_ids(&old, &ids), [2, 3]);
        // One comes in front: it takes the first free id.
        assert_eq!(plan_of(&[d, a, b, c]).stable_ids(&old, &ids), [4, 1, 2, 3]);
        // The middle one changes: it takes its old id, now free, and starts
        // from zero there (Engine::replace sees another rule under it).
        let changed = "--port 2 --drop 50";
        assert_eq!(plan_of(&[a, changed, c]).stable_ids(&old, &ids), [1, 2, 3]);
        // Reordered.
        assert_eq!(plan_of(&[c, a, b]).stable_ids(&old, &ids), [3, 1, 2]);
        // Ids already sparse: new rules take the holes, lowest first.
        assert_eq!(plan_of(&[d, c, changed]).stable_ids(&plan_of(&[c]), &[3]), [1, 3, 2]);
        // Nothing left.
        assert_eq!(plan_of(&[]).stable_ids(&old, &ids), Vec::<u32>::new());
    }

    #[test]
    fn map_contents_with_ids_puts_each_rule_under_its_id() {
        let plan = plan_of(&["--port 1 --drop 5", "--port 2 --drop 5"]);
        let m = plan.map_contents_with_ids(&[7, 3]).unwrap();
        assert_eq!(m.rules.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [7, 3]);
        let ids: Vec<u32> =
            m.targets.iter().map(|(_, _, v)| v.rules.iter().copied().find(|id| *id != 0).unwrap()).collect();
        assert_eq!(ids, [7, 3]);
    }

    fn endpoint_spec(args: &str) -> Result<RuleSpec, UsageError> {
        let mut v = vec!["pygocentrus", "attach", "--netns", "/var/run/netns/a"];
        v.extend(args.split_whitespace());
        match Cli::try_parse_from(v).unwrap().command {
            Command::Attach(a) => RuleSpec::from_attach(&a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_endpoint_without_ip_or_port_is_the_target() {
        let spec = endpoint_spec("--direction to --drop 5").unwrap();
        assert!(spec.targets_endpoint());
        assert_eq!(spec.to_string(), "ip to netns /var/run/netns/a drop 5%");
        let m = Plan { rules: vec![spec] }.map_contents().unwrap();
        assert_eq!(m.flags, CONFIG_ENDPOINT);
        assert!(m.targets.is_empty() && m.ports.is_empty());
        // To the endpoint, every protocol; nothing from it.
        assert_eq!(m.endpoint.unwrap().rules, [1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn on_an_endpoint_ip_and_port_keep_their_meaning() {
        let spec = endpoint_spec("--port 5000 --proto udp --drop 5").unwrap();
        assert!(!spec.targets_endpoint());
        assert_eq!(spec.to_string(), "udp to/from *:5000 drop 5%");
        let m = Plan { rules: vec![spec] }.map_contents().unwrap();
        assert_eq!((m.flags, m.endpoint, m.ports), (0, None, vec![5000]));
        let m = Plan { rules: vec![endpoint_spec("--ip 198.18.0.9 --drop 5").unwrap()] }.map_contents().unwrap();
        assert_eq!((m.flags, m.endpoint), (CONFIG_PORTLESS, None));
    }

    #[test]
    fn endpoint_validation() {
        // No --all needed: the endpoint is the target.
        assert!(endpoint_spec("--drop 5").is_ok());
        assert_eq!(endpoint_spec("--port 1"), Err(UsageError::NoFault));
        assert_eq!(endpoint_spec("--corrupt-payload 5"), Err(UsageError::PayloadNeedsL4));
        assert!(endpoint_spec("--proto udp --corrupt-payload 5").is_ok());
        assert_eq!(endpoint_spec("--proto udp --reset 5"), Err(UsageError::ResetNeedsTcp));
    }

    #[test]
    fn coverage() {
        let net = |s: &str| spec(&format!("--ip {s} --drop 1")).unwrap().key();
        let (p, k) = net("198.18.0.0/24");
        let (_, host) = net("198.18.0.9");
        let (_, other) = net("198.18.1.9");
        assert!(covers(p, &k.addr, &host.addr));
        assert!(!covers(p, &k.addr, &other.addr));
        let (p, k) = net("198.18.0.0/15");
        assert!(covers(p, &k.addr, &other.addr));
    }
}
