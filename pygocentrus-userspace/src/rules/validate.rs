//! From a rule as written ([`RuleArgs`]) to a validated [`RuleSpec`]:
//! named behaviors filled in, every flag checked for sense alone and with
//! the others. Each refusal is a [`UsageError`] variant.

use std::time::Duration;

use super::{
    args::RuleArgs,
    spec::{Delay, RuleFaults, RuleSpec},
    units::{MAX_DURATION, Percent},
    values::{Behavior, Direction, Distribution, Proto},
};
use crate::error::UsageError;

fn on(p: Option<Percent>) -> bool {
    p.is_some_and(|p| p.value() > 0.0)
}

impl RuleFaults {
    pub(crate) fn any(&self) -> bool {
        self.percents().into_iter().any(|(_, p)| on(p))
            || self.loss_model.is_some()
            || (self.rate.is_some() && self.rate_share.is_none_or(|s| s.value() > 0.0))
            || ((self.unplug_after.is_some() || self.reset_after.is_some())
                && self.limit_share.is_none_or(|s| s.value() > 0.0))
            || self.fin_delay.is_some_and(|d| !d.is_zero() && self.fin_delay_share.is_none_or(|s| s.value() > 0.0))
            || self
                .delay
                .is_some_and(|d| !(d.mean.is_zero() && d.jitter.is_zero()) && d.share.is_none_or(|s| s.value() > 0.0))
    }
}

impl RuleSpec {
    /// The rule of `r` (flags or a config file's `[[rule]]`), on `endpoint`
    /// if the scope is one.
    pub fn from_args(r: &RuleArgs, endpoint: Option<String>) -> Result<Self, UsageError> {
        let r = &with_behavior(r)?;
        let mut spec = Self {
            ip: r.ip,
            port: r.port,
            endpoint,
            proto: r.proto,
            direction: r.direction,
            tcp_flags: r.tcp_flags,
            faults: RuleFaults {
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
                ..RuleFaults::default()
            },
            seed: r.seed,
        };
        for (field, given) in spec.faults.percents_mut().into_iter().zip(r.percents()) {
            *field = given;
        }
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
        let mut shares = f.percents().into_iter().map(|(_, p)| p).chain([
            f.delay.and_then(|d| d.share),
            f.rate_share,
            f.limit_share,
            f.fin_delay_share,
        ]);
        if f.per_connection && !shares.any(on) {
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
