//! One rule as the user wrote it: the flags of `attach` and `set`, a
//! `[[rule]]` table of a config file, the JSON body of `PUT
//! /pygocentrus/rules/NAME`, a session's `Faults`. Nothing here is checked
//! beyond the syntax of each value: [`super::validate`] turns it into a
//! [`RuleSpec`](super::spec::RuleSpec).

use std::time::Duration;

use clap::{Args, Parser as _};
use ipnet::IpNet;
use pygocentrus_common::PERCENT_FAULTS;
use serde::{Deserialize, Serialize};

use super::{
    text::{de, ser},
    units::{FlowLimit, Percent, Rate, parse_duration, parse_flow_limit, parse_percent, parse_rate},
    values::{
        Behavior, Direction, Distribution, GeSpec, Proto, TcpFlags, parse_ipnet, parse_loss_model, parse_tcp_flags,
    },
};

// `RuleArgs`, with a field for each fault of the table of faults given as
// a percentage (`pygocentrus_common::percent_faults!`), after the target's:
// their flags, keys, help and parsing are alike.
macro_rules! rule_args {
    ($($(#[$help:meta])* $field:ident $flag:literal $action:ident $effect:ident;)+) => {
        /// One rule: its target and its faults. Given as flags to `attach`, or as a
        /// `[[rule]]` table of a config file with the same names and units
        /// (`drop = 30`, `delay = "20ms"`, `corrupt-payload = "0.5%"`).
        #[derive(Clone, Debug, Default, PartialEq, Args, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct RuleArgs {
            /// Target address, optionally a prefix: 198.18.0.2, 198.18.0.0/24, fd00::2.
            #[arg(long, value_name = "ADDR[/LEN]", value_parser = parse_ipnet)]
            #[serde(
                deserialize_with = "de::ipnet",
                serialize_with = "ser::display",
                skip_serializing_if = "Option::is_none"
            )]
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

            // The faults of the table, each with its help.
            $(
                $(#[$help])*
                #[arg(long = $flag, value_name = "PCT", value_parser = parse_percent)]
                #[serde(
                    rename = $flag,
                    deserialize_with = "de::percent",
                    serialize_with = "ser::percent",
                    skip_serializing_if = "Option::is_none"
                )]
                pub $field: Option<Percent>,
            )+

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

        impl RuleArgs {
            /// The faults given as a percentage, in the table's order.
            pub fn percents(&self) -> [Option<Percent>; PERCENT_FAULTS.len()] {
                [$(self.$field),+]
            }
        }
    };
}

pygocentrus_common::percent_faults!(rule_args);

/// A rule that comes and goes: in force for `on`, then not for `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flap {
    #[serde(deserialize_with = "de::required_duration", serialize_with = "ser::required_duration")]
    pub on: Duration,
    #[serde(deserialize_with = "de::required_duration", serialize_with = "ser::required_duration")]
    pub off: Duration,
}

/// One rule written as flags without the scope (`--port 6379 --drop 5`),
/// as clap parses them.
pub fn parse_flags(flags: &str) -> Result<RuleArgs, clap::Error> {
    #[derive(clap::Parser)]
    #[command(name = "rule", no_binary_name = true, disable_help_flag = true)]
    struct Flags {
        #[command(flatten)]
        rule: RuleArgs,
    }
    Flags::try_parse_from(flags.split_whitespace()).map(|parsed| parsed.rule)
}
