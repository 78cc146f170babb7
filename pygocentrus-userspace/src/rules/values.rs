//! The value syntax of a rule: the small types both the flags and the
//! validated rules name (protocols, directions, distributions, TCP flags,
//! the Gilbert-Elliott loss model) and the parsers that read them as the
//! flags and the config file write them.

use std::{fmt, net::IpAddr, str::FromStr};

use clap::ValueEnum;
use ipnet::IpNet;
use pygocentrus_common::{TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG};
use serde::{Deserialize, Serialize};

use super::units::{Percent, parse_percent};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Normal,
    Pareto,
    Paretonormal,
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

pub fn parse_ipnet(s: &str) -> Result<IpNet, String> {
    let net = if s.contains('/') {
        IpNet::from_str(s).map_err(|_| format!("'{s}' is not an address or prefix"))?
    } else {
        IpNet::from(IpAddr::from_str(s).map_err(|_| format!("'{s}' is not an IP address"))?)
    };
    Ok(net.trunc())
}
