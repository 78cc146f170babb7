//! A validated rule, as the rest of the program takes it: its target, its
//! faults, and the [`Plan`] of all rules in force. What the user typed is
//! in [`super::args`]; [`super::validate`] builds these from it, and
//! [`super::encode`] turns them into the values the kernel reads.

use std::time::Duration;

use ipnet::IpNet;
use pygocentrus_common::{PERCENT_FAULTS, PercentFault};

use super::{
    units::{FlowLimit, Percent, Rate},
    values::{Direction, Distribution, GeSpec, Proto, TcpFlags},
};

// `RuleFaults`, with a field for each fault of the table of faults given
// as a percentage (`pygocentrus_common::percent_faults!`).
macro_rules! rule_faults {
    ($($(#[$help:meta])* $field:ident $flag:literal $action:ident $effect:ident;)+) => {
        /// The faults of a rule.
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct RuleFaults {
            // The faults of the table: each a share of packets (or of
            // connections, with `per_connection`).
            $($(#[$help])* pub $field: Option<Percent>,)+
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

        impl RuleFaults {
            /// The faults given as a percentage with their line of the
            /// table, in its order.
            pub fn percents(&self) -> [(PercentFault, Option<Percent>); PERCENT_FAULTS.len()] {
                let values = [$(self.$field),+];
                std::array::from_fn(|i| (PERCENT_FAULTS[i], values[i]))
            }

            /// The same fields, to set.
            pub fn percents_mut(&mut self) -> [&mut Option<Percent>; PERCENT_FAULTS.len()] {
                [$(&mut self.$field),+]
            }
        }
    };
}

pygocentrus_common::percent_faults!(rule_faults);

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
    pub faults: RuleFaults,
    pub seed: Option<u64>,
}

impl RuleSpec {
    /// Whether the target is the endpoint itself (`--container` or
    /// `--netns` without `--ip` and `--port`): its rule lives in the
    /// `ENDPOINT` array, not in the trie.
    pub fn targets_endpoint(&self) -> bool {
        self.endpoint.is_some() && self.ip.is_none() && self.port.is_none()
    }
}

/// Everything pygocentrus asks of the kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub rules: Vec<RuleSpec>,
}
