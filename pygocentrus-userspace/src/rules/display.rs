//! How a rule reads in messages, counters and the API: `udp to/from
//! 198.18.0.3:5000 drop 30%`, `ip to container web delay 20ms`.

use std::{fmt, net::IpAddr};

use pygocentrus_common::Effect;

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
        // The faults given as a percentage in the order the rule tries
        // them: those a packet gets instead of passing, the loss model (a
        // drop of its own), then those a packet that passes gets as well.
        let mut percents = self.faults.percents();
        percents.sort_unstable_by_key(|(fault, _)| fault.action as u32);
        let write_percents = |f: &mut fmt::Formatter<'_>, effect: Effect| -> fmt::Result {
            for (fault, p) in percents.iter().filter(|(fault, _)| fault.effect == effect) {
                if let Some(p) = p.filter(|p| p.value() > 0.0) {
                    write!(f, " {} {p}", fault.flag)?;
                }
            }
            Ok(())
        };
        write_percents(f, Effect::Instead)?;
        if let Some(ge) = self.faults.loss_model {
            write!(f, " loss gemodel {} {} {} {}", ge.p, ge.r, ge.loss_bad, ge.loss_good)?;
        }
        write_percents(f, Effect::AsWell)?;
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
