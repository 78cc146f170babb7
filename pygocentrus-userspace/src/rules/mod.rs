//! Rules, from what the user wrote to the values the kernel reads (the
//! `lowargs` → `hiargs` split of ripgrep, one file per step). Each module
//! imports only those above it in this list:
//!
//! - [`units`]: percentages, rates, durations, flow limits as tc users
//!   write them;
//! - [`values`]: the small types of a rule (protocol, direction, TCP flags,
//!   loss model...) and their parsers;
//! - [`text`]: those values through serde, with the parsers of the flags;
//! - [`args`]: one rule as written ([`RuleArgs`]: flags, TOML, JSON);
//! - [`spec`]: a validated rule ([`RuleSpec`]) and a [`Plan`] of them;
//! - [`display`]: how a rule reads in messages;
//! - [`encode`]: the kernel's values for a plan ([`MapContents`]);
//! - [`validate`]: [`RuleArgs`] → [`RuleSpec`], each refusal a
//!   [`UsageError`](crate::error::UsageError) variant;
//! - [`plan`]: the `fq` a plan needs ([`FqParams`]) and stable rule ids;
//! - [`schedule`]: which rules are in force at each moment of a run;
//! - [`config`]: the config file, read into all of the above.
//!
//! Nothing here touches the kernel or names a module outside `rules` but
//! [`crate::error`].

pub mod args;
pub mod config;
pub mod display;
pub mod encode;
pub mod plan;
pub mod schedule;
pub mod spec;
pub mod text;
pub mod units;
pub mod validate;
pub mod values;

#[cfg(test)]
mod tests;

pub use self::{
    args::{Flap, RuleArgs},
    config::ConfigFile,
    encode::MapContents,
    plan::FqParams,
    schedule::{Phase, Schedule},
    spec::{Delay, Plan, RuleFaults, RuleSpec},
    values::{Behavior, Direction, Distribution, GeSpec, Proto, TcpFlags},
};
