//! What the user typed, as clap parsed it. Nothing here is validated beyond
//! the syntax of each value: `plan.rs` turns it into rules.

use std::{net::IpAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    config::{de, ser},
    plan::{GeSpec, TcpFlags, parse_loss_model, parse_tcp_flags},
    units::{FlowLimit, Percent, Rate, parse_duration, parse_flow_limit, parse_percent, parse_rate},
};

#[derive(Debug, Parser)]
#[command(
    name = "pygocentrus",
    version,
    about = "Inject production-like network faults into containers, at the packet level.",
    long_about = "Inject production-like network faults into containers, at the packet level.\n\n\
        An eBPF traffic-control classifier on the ports of a bridge (or on one \
        interface, or on one container's veths) drops, corrupts or resets the \
        packets to and from a target. \
        Nothing is proxied: clients keep dialing their real servers."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach faults to an interface, to every port of a bridge, or to one
    /// container's veths, until Ctrl-C, SIGTERM or --duration.
    #[command(after_long_help = ATTACH_EXAMPLES)]
    Attach(Box<AttachArgs>),
    /// Attach once with no faults and serve an HTTP API (Toxiproxy's, and
    /// pygocentrus's own for `set`, `status`, `reset`) that changes the
    /// faults live, through map updates alone.
    #[command(after_long_help = SERVE_EXAMPLES)]
    Serve(Box<ServeArgs>),
    /// Set (add or replace) rule NAME on a running `serve`.
    Set(Box<SetArgs>),
    /// Show the rules of a running `serve` and their live counters.
    Status(ClientArgs),
    /// Remove every toxic and every rule set with `set` from a running
    /// `serve`, and enable every proxy (rules of its --config stay).
    Reset(ClientArgs),
    /// Run a self-contained demonstration in network namespaces: two hosts on
    /// a bridge, real traffic, then the same traffic under attack. Exits
    /// non-zero if an expected effect did not show, so it doubles as a smoke
    /// test.
    Demo(DemoArgs),
    /// Started by `attach` (and the others) itself: removes what a run
    /// that was killed left behind (see guard.rs).
    #[command(hide = true)]
    Guard(GuardArgs),
}

const ATTACH_EXAMPLES: &str = "\
Examples:
  # 5% of the packets to and from port 50051 on a docker-compose bridge vanish
  sudo pygocentrus attach --iface br-grpc --port 50051 --drop 5

  # every TCP segment from 198.18.0.2:6379 becomes a reset, for 30 seconds
  sudo pygocentrus attach --iface br0 --ip 198.18.0.2 --port 6379 --direction from --reset 100 --duration 30s

  # 100 ms ± 20 ms (normal) on the replies of a service, at most 5 Mbit/s
  sudo pygocentrus attach --iface br0 --ip 198.18.0.2 --direction from --delay 100ms --jitter 20ms --distribution normal --rate 5mbit

  # the same 10% of UDP datagrams damaged on every run, counters as JSON lines
  sudo pygocentrus attach --iface br0 --port 5353 --proto udp --corrupt 10 --seed 42 --json

  # every packet to or from the container `db` vanishes, other containers on its network are spared
  sudo pygocentrus attach --container db --drop 100

  # half of the connections to port 8080 fail entirely, the other half never lose a packet
  sudo pygocentrus attach --iface br0 --port 8080 --proto tcp --drop 50 --per-connection

  # every connection to 198.18.0.2:5432 goes silent after 10 kB, as if a cable were pulled
  sudo pygocentrus attach --iface br0 --ip 198.18.0.2 --port 5432 --unplug-after 10kb

  # connection attempts to port 6379 time out; open connections keep working
  sudo pygocentrus attach --iface br0 --port 6379 --tcp-flags syn-only --drop 100

  # resets on one container's port 6379, in a namespace made with `ip netns add`
  sudo pygocentrus attach --netns /var/run/netns/redis --port 6379 --proto tcp --reset 100";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["iface", "container", "netns"])))]
pub struct AttachArgs {
    /// Interface to hook: a bridge (all its ports, including ones that join
    /// later) or any other device.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// A Docker container (name or id): hook the host ends of its veths, so
    /// that only its traffic, both ways, is judged. Followed across
    /// restarts until it is removed. Without --ip and --port, the target is
    /// the container itself: all its IP traffic.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,

    /// A network namespace, as for --container: a path (/var/run/netns/NAME,
    /// /proc/PID/ns/net) or the PID of a process inside it. Detaches when
    /// the namespace is gone.
    #[arg(long, value_name = "PATH|PID")]
    pub netns: Option<String>,

    /// The rules in a TOML file instead of the flags below: several rules,
    /// each with its own target and faults (see README, "Config file").
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The rule, when there is one and no --config.
    #[command(flatten)]
    pub rule: RuleArgs,

    /// Detach after this long (250us, 500ms, 30s, 2m).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Print counters as JSON lines on stdout instead of text on stderr.
    #[arg(long)]
    pub json: bool,

    /// How to hook: TCX links (kernel 6.6+, gone with the process) or
    /// clsact + cls_bpf through netlink. `auto` picks TCX where it exists.
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hook: HookMode,
}

/// One rule: its target and its faults. Given as flags to `attach`, or as a
/// `[[rule]]` table of a config file with the same names and units
/// (`drop = 30`, `delay = "20ms"`, `corrupt-payload = "0.5%"`).
#[derive(Clone, Debug, Default, PartialEq, Args, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuleArgs {
    /// Target address, optionally a prefix: 198.18.0.2, 198.18.0.0/24, fd00::2.
    #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_ipnet)]
    #[serde(deserialize_with = "de::ipnet", serialize_with = "ser::display", skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpNet>,

    /// Target port (1-65535). Without it, all IP traffic of --ip matches,
    /// ICMP included.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    #[serde(deserialize_with = "de::port", skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,

    /// Protocol to match.
    #[arg(long, value_enum, default_value_t = Proto::Any)]
    pub proto: Proto,

    /// Which packets: to the target, from the target, or both.
    #[arg(long, value_enum, default_value_t = Direction::Both)]
    pub direction: Direction,

    /// Drop this share of matched packets (5, 5%, 0.1).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub drop: Option<Percent>,

    /// Damage this share so that the receiving kernel discards it as a
    /// checksum (IPv4) or header (IPv6) error, like netem's corrupt.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub corrupt: Option<Percent>,

    /// Flip a payload byte of this share and fix the checksums: the
    /// application receives damaged data.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub corrupt_payload: Option<Percent>,

    /// Turn this share of TCP segments into resets the receiver accepts
    /// (ECONNRESET; a reset SYN-ACK makes connect fail with ECONNREFUSED).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub reset: Option<Percent>,

    /// Hold matched packets back by this long before they leave (20ms,
    /// 250us). Delay, jitter and rate need the fq qdisc: pygocentrus puts it
    /// on the hooked ports and restores what was there on exit.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(
        deserialize_with = "de::duration",
        serialize_with = "ser::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay: Option<Duration>,

    /// Vary the delay: ±DUR for the uniform distribution, a standard
    /// deviation of DUR for the others.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(
        deserialize_with = "de::duration",
        serialize_with = "ser::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,

    /// Distribution of the jitter (netem's four).
    #[arg(long, value_enum, value_name = "DIST")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,

    /// Delay only this share of matched packets (default: all).
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub delay_pct: Option<Percent>,

    /// Never let jitter reorder a flow: a packet leaves no earlier than the
    /// one before it in its flow.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_order: bool,

    /// Limit the matched traffic to this rate, shared by all its flows
    /// (100kbit, 5mbit, 1gbit, 512kbps).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    #[serde(deserialize_with = "de::rate", serialize_with = "ser::rate", skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,

    /// With --per-connection: pace only this share of connections (the
    /// others pass at full speed). Default: all.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_pct: Option<Percent>,

    /// "Slow close": hold back each segment carrying FIN (the end of what
    /// a side sends) by this long, so the peer sees the connection close
    /// late, like Toxiproxy's slow_close. TCP only; needs fq like --delay.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    #[serde(
        deserialize_with = "de::duration",
        serialize_with = "ser::duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub fin_delay: Option<Duration>,

    /// Hold back only this share of FINs (with --per-connection: of
    /// connections). Default: all.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub fin_delay_pct: Option<Percent>,

    /// Burst loss with the Gilbert-Elliott model, parameters as netem's:
    /// gemodel:P[,R[,1-H[,1-K]]] in percent (R defaults to 100-P, 1-H to
    /// 100, 1-K to 0).
    #[arg(long, value_name = "gemodel:P[,R[,1-H[,1-K]]]", value_parser = parse_loss_model)]
    #[serde(
        deserialize_with = "de::loss_model",
        serialize_with = "ser::loss_model",
        skip_serializing_if = "Option::is_none"
    )]
    pub loss_model: Option<GeSpec>,

    /// Send a copy of this share of matched packets.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub duplicate: Option<Percent>,

    /// Decide each probability once per connection rather than per packet:
    /// a connection gets all of a fault's packets or none (both directions
    /// of a connection decide alike). Toxiproxy's `toxicity`.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub per_connection: bool,

    /// "Cable unplug": once a connection has carried this much in one
    /// direction (10kb, 64kib: payload bytes; 100pkt: packets) or lived this
    /// long (5s), every later packet of it is silently dropped, both ways.
    #[arg(long, value_name = "SIZE|Npkt|DUR", value_parser = parse_flow_limit)]
    #[serde(
        deserialize_with = "de::flow_limit",
        serialize_with = "ser::flow_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub unplug_after: Option<FlowLimit>,

    /// Once a direction of a TCP connection has carried this much (10kb,
    /// 100pkt) or the connection lived this long (5s), its next segment
    /// becomes a reset (ECONNRESET), like Toxiproxy's limit_data.
    #[arg(long, value_name = "SIZE|Npkt|DUR", value_parser = parse_flow_limit)]
    #[serde(
        deserialize_with = "de::flow_limit",
        serialize_with = "ser::flow_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub reset_after: Option<FlowLimit>,

    /// With --per-connection: apply --unplug-after and --reset-after to
    /// only this share of connections. Default: all.
    #[arg(long, value_name = "PCT", value_parser = parse_percent)]
    #[serde(
        deserialize_with = "de::percent",
        serialize_with = "ser::percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub limit_pct: Option<Percent>,

    /// Judge only TCP segments with at least one of these flags (comma
    /// list of syn, fin, rst, ack, psh, urg, ece, cwr), or `syn-only`
    /// (SYN without ACK: connection attempts). Other packets pass.
    #[arg(long, value_name = "FLAGS", value_parser = parse_tcp_flags)]
    #[serde(
        deserialize_with = "de::tcp_flags",
        serialize_with = "ser::display",
        skip_serializing_if = "Option::is_none"
    )]
    pub tcp_flags: Option<TcpFlags>,

    /// Make decisions reproducible: the same traffic gets the same faults.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,

    /// Allow a rule with neither --ip nor --port on --iface (impairs all IP
    /// traffic). Not needed with --container or --netns.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,

    /// A named behavior (Vaurien's): blackout (every packet vanishes),
    /// hang (what the target sends vanishes: direction from unless given;
    /// connections stay open and wait), error (TCP resets), delay (--delay,
    /// 1s if not given), dummy (matched and counted, nothing done).
    #[arg(long, value_enum, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,

    /// Config file only: the rule flaps, in force for `on`, then off for
    /// `off`, and again (`flap = { on = "2s", off = "3s" }`).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flap: Option<Flap>,
}

impl AttachArgs {
    /// `--netns` given as the PID of a process (rather than a path).
    pub fn netns_pid(&self) -> Option<u32> {
        self.netns.as_deref().and_then(|n| n.parse::<u32>().ok()).filter(|pid| *pid > 0)
    }
}

const SERVE_EXAMPLES: &str = "\
Examples:
  # serve Toxiproxy's API on 127.0.0.1:8474 for a compose network
  sudo pygocentrus serve --iface br-grpc
  toxiproxy-cli create -l 198.18.0.2:6379 -u 198.18.0.2:6379 redis   # or any Toxiproxy client
  curl -d '{\"type\":\"latency\",\"attributes\":{\"latency\":100}}' localhost:8474/proxies/redis/toxics

  # the native client
  pygocentrus set flaky --ip 198.18.0.2 --port 5000 --proto udp --drop 30
  pygocentrus status
  pygocentrus reset";

/// Where `serve` runs and how its API is reached.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["iface", "container", "netns"])))]
pub struct ServeArgs {
    /// Interface to hook, as for `attach`.
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,

    /// A Docker container, as for `attach`.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,

    /// A network namespace, as for `attach`.
    #[arg(long, value_name = "PATH|PID")]
    pub netns: Option<String>,

    /// Address of the HTTP API. Only a loopback address unless --token is
    /// given.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8474")]
    pub api: std::net::SocketAddr,

    /// Rules in force from the start (a config file as for `attach`); the
    /// API adds to them, `reset` comes back to them.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Bearer token every request must carry (`Authorization: Bearer
    /// TOKEN`). Required to listen on a non-loopback address.
    #[arg(long, value_name = "TOKEN", env = "PYGOCENTRUS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How to hook, as for `attach`.
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hook: HookMode,
}

impl ServeArgs {
    /// The scope as `attach` takes it, to resolve it the same way.
    pub fn attach_args(&self) -> AttachArgs {
        AttachArgs {
            iface: self.iface.clone(),
            container: self.container.clone(),
            netns: self.netns.clone(),
            config: self.config.clone(),
            rule: RuleArgs::default(),
            duration: None,
            json: false,
            hook: self.hook,
        }
    }
}

/// How the client commands reach `serve`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Address of `serve`'s API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8474")]
    pub api: std::net::SocketAddr,

    /// Bearer token, if `serve` has one.
    #[arg(long, value_name = "TOKEN", env = "PYGOCENTRUS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The rule's name: `set` again with the same name replaces it.
    pub name: String,

    /// Remove rule NAME instead.
    #[arg(long)]
    pub remove: bool,

    #[command(flatten)]
    pub client: ClientArgs,

    #[command(flatten)]
    pub rule: RuleArgs,
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The run to watch over (its name in /run/pygocentrus: PID-RANDOM).
    #[arg(long)]
    pub run: String,

    /// Its state file: what to remove if it ends without detaching.
    #[arg(long)]
    pub state: PathBuf,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// UDP datagrams sent in each phase (100 to 100000: percentages need a
    /// few hundred to show).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=100_000))]
    pub packets: u32,

    /// How to hook, as for `attach`: run the demo on either path.
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hook: HookMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    #[default]
    Any,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Packets to and from the target.
    #[default]
    Both,
    /// Packets addressed to the target.
    To,
    /// Packets sent by the target.
    From,
}

/// Vaurien's named behaviors (see `RuleArgs::behavior`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    Blackout,
    Hang,
    Error,
    Delay,
    Dummy,
}

/// A rule that comes and goes: in force for `on`, then not for `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    #[serde(deserialize_with = "de::required_duration", serialize_with = "ser::required_duration")]
    pub on: Duration,
    #[serde(deserialize_with = "de::required_duration", serialize_with = "ser::required_duration")]
    pub off: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookMode {
    Auto,
    Tcx,
    Netlink,
}

pub fn parse_ipnet(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        IpNet::from_str(s).map_err(|_| format!("'{s}' is not an address or prefix"))?
    } else {
        IpNet::from(IpAddr::from_str(s).map_err(|_| format!("'{s}' is not an IP address"))?)
    };
    Ok(net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AttachArgs, clap::Error> {
        let mut v = vec!["pygocentrus", "attach"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).map(|c| match c.command {
            Command::Attach(a) => *a,
            _ => unreachable!(),
        })
    }

    #[test]
    fn the_one_line_promise_parses() {
        let a = parse(&["--iface", "br-xxx", "--port", "50051", "--drop", "5"]).unwrap();
        assert_eq!(a.iface.as_deref(), Some("br-xxx"));
        assert_eq!(a.rule.port, Some(50051));
        assert_eq!(a.rule.drop.unwrap().value(), 5.0);
        assert_eq!(a.rule.proto, Proto::Any);
        assert_eq!(a.rule.direction, Direction::Both);
    }

    #[test]
    fn a_container_or_a_namespace_instead_of_an_interface() {
        let a = parse(&["--container", "web", "--drop", "5"]).unwrap();
        assert_eq!((a.iface, a.container.as_deref(), a.netns), (None, Some("web"), None));
        let a = parse(&["--netns", "/var/run/netns/x", "--port", "80", "--drop", "5"]).unwrap();
        assert_eq!(a.netns.as_deref(), Some("/var/run/netns/x"));
    }

    #[test]
    fn prefixes_are_truncated() {
        let a = parse(&["--iface", "x", "--ip", "198.18.0.77/24", "--drop", "1"]).unwrap();
        assert_eq!(a.rule.ip.unwrap().to_string(), "198.18.0.0/24");
        let a = parse(&["--iface", "x", "--ip", "fd00::2", "--drop", "1"]).unwrap();
        assert_eq!(a.rule.ip.unwrap().to_string(), "fd00::2/128");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            &["--iface", "x", "--port", "0", "--drop", "1"][..],
            &["--iface", "x", "--port", "70000", "--drop", "1"],
            &["--iface", "x", "--ip", "198.18.0.300", "--drop", "1"],
            &["--iface", "x", "--ip", "198.18.0.0/33", "--drop", "1"],
            &["--iface", "x", "--port", "1", "--drop", "101"],
            &["--iface", "x", "--port", "1", "--drop", "1", "--duration", "10"],
            &["--iface", "x", "--port", "1", "--drop", "1", "--proto", "sctp"],
            &["--port", "1", "--drop", "1"],
            &["--iface", "x", "--container", "web", "--port", "1", "--drop", "1"],
            &["--container", "web", "--netns", "1", "--drop", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
