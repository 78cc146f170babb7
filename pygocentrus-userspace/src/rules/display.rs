//! How a rule reads in messages, counters and the API: `udp to/from
//! 198.18.0.3:5000 drop 30%`, `ip to container web delay 20ms`.

use std::{fmt, net::IpAddr};

use super::{
    spec::RuleSpec,
    values::{Direction, Proto},
};

impl RuleSpec {
    /// The target alone: `udp to/from 198.18.0.3:5000`, `ip to container web`.
    pub(super) fn target(&self) -> String {
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
