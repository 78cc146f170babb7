//! What the user typed, as clap parsed it (ripgrep's `lowargs`). Nothing
//! here is validated beyond the syntax of each value: a rule's flags are
//! [`RuleArgs`], which `rules::validate` turns into rules, and the scope
//! flags become a [`Scope`].

use std::{path::PathBuf, time::Duration};

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::{
    datapath::hooks::HookMode,
    rules::{RuleArgs, units::parse_duration},
    targets::Scope,
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

impl AttachArgs {
    /// Where to hook: `--iface`, `--container` or `--netns`, and `--hook`.
    pub fn scope(&self) -> Scope {
        scope_of(&self.iface, &self.container, &self.netns, self.hook)
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
    /// TOKEN`). Required to listen on a non-loopback address. Prefer the
    /// environment variable or --token-file: a flag's value is visible to
    /// every user in /proc/PID/cmdline.
    #[arg(long, value_name = "TOKEN", env = "PYGOCENTRUS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read the token from this file (its whole contents, less a trailing
    /// newline) instead: `--token-file /run/secrets/pygocentrus-token`.
    /// It takes precedence over --token and PYGOCENTRUS_API_TOKEN.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// How to hook, as for `attach`.
    #[arg(long, value_enum, default_value_t = HookMode::Auto)]
    pub hook: HookMode,
}

impl ServeArgs {
    /// Where to hook, as for `attach`.
    pub fn scope(&self) -> Scope {
        scope_of(&self.iface, &self.container, &self.netns, self.hook)
    }
}

/// The scope flags, as `attach` and `serve` both have them.
fn scope_of(iface: &Option<String>, container: &Option<String>, netns: &Option<String>, hook: HookMode) -> Scope {
    Scope { iface: iface.clone(), container: container.clone(), netns: netns.clone(), hook }
}

/// How the client commands reach `serve`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Address of `serve`'s API.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8474")]
    pub api: std::net::SocketAddr,

    /// Bearer token, if `serve` has one (prefer the environment variable or
    /// --token-file: a flag's value is visible to every user).
    #[arg(long, value_name = "TOKEN", env = "PYGOCENTRUS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read the token from this file instead, as for `serve`.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Direction, Proto};

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
