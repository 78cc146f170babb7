//! The dice a rule throws ([`Action`]) and the faults a user gives as a
//! percentage (`--drop 5`, `corrupt-payload = "0.5%"`), listed once in
//! [`percent_faults!`](crate::percent_faults).
//!
//! A new fault of that kind is a line in the table and its [`Action`],
//! both here; besides, it needs its counter (`counters.rs`), its decision
//! (a `Fault` variant and its turn in `decide::choose`, for a fault a
//! packet gets instead of passing) and its act in the kernel program.
//! Userspace makes the rest from the table: the flag with its help, the
//! config key and API field, the field of the validated rule and the
//! checks that count it as a fault, its part of a rule's text and of the
//! messages that list the faults, its threshold in the kernel's
//! [`Rule`](crate::Rule), and its `Session` method.

/// The dice a rule can throw, in the order they are thrown. The discriminant
/// is mixed into the seeded hash so that each action gets its own draw, and
/// is the slot of the action's threshold in [`Rule::thresholds`]: a new
/// action takes the next number, below [`ACTION_SLOTS`].
///
/// [`Rule::thresholds`]: crate::Rule::thresholds
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop = 1,
    Reset = 2,
    Corrupt = 3,
    CorruptPayload = 4,
    /// Not an action: the draw that chooses which payload byte to damage.
    PayloadOffset = 5,
    Duplicate = 6,
    /// Whether the delay applies to this packet.
    Delay = 7,
    /// The draw that picks the delay from its distribution.
    Jitter = 8,
    /// The two draws of the loss model: state change, then loss.
    GeTransition = 9,
    GeLoss = 10,
    /// Whether a connection's flow limits apply (per connection only).
    Limit = 11,
    /// Whether the rate applies (per connection only).
    Rate = 12,
    /// Whether a FIN is held back.
    FinDelay = 13,
}

/// How many thresholds a [`Rule`](crate::Rule) holds: one slot per
/// [`Action`] number (slot 0 and those of the draws that only pick a value
/// stay [`PROB_NEVER`](crate::PROB_NEVER)). A power of two, so that the
/// kernel program's index is masked, whatever the compiler makes of it.
pub const ACTION_SLOTS: usize = 16;

// The highest number has a slot (the table checks its own dice too).
const _: () = assert!((Action::FinDelay as usize) < ACTION_SLOTS && ACTION_SLOTS.is_power_of_two());

/// Calls `$callback!` with the faults given as a percentage, one a line:
///
/// ```text
/// /// HELP (the flag's help in `attach --help`, as doc comments)
/// FIELD "FLAG" ACTION EFFECT;
/// ```
///
/// - `FIELD`: the field of the rule as written and as validated
///   (`RuleArgs`, `RuleFaults`) and the name of the `Session` method;
/// - `FLAG`: the flag without `--`, the config file's key and the API's
///   JSON field, and the fault's name in the text of a rule;
/// - `ACTION`: its die, an [`Action`] variant: the slot of its threshold in
///   the kernel's [`Rule`](crate::Rule) and the salt of its draw;
/// - `EFFECT`: an [`Effect`] variant, what a packet it hits gets.
///
/// The lines are in the order `attach --help` and the message "no fault
/// given" list the flags. The text of a rule lists them in the order a
/// rule tries them, by [`Action`] ([`PercentFault::tried`]).
///
/// A callback takes the lines with this pattern and expands each with
/// `$(...)+`, as [`PERCENT_FAULTS`] is made here:
///
/// ```
/// macro_rules! flags {
///     ($($(#[$help:meta])* $field:ident $flag:literal $action:ident $effect:ident;)+) => {
///         const FLAGS: &[&str] = &[$(concat!("--", $flag)),+];
///     };
/// }
/// pygocentrus_common::percent_faults!(flags);
/// assert_eq!(FLAGS[0], "--drop");
/// ```
#[macro_export]
macro_rules! percent_faults {
    ($callback:ident) => {
        $callback! {
            /// Drop this share of matched packets (5, 5%, 0.1).
            drop "drop" Drop Instead;

            /// Damage this share so that the receiving kernel discards it as a
            /// checksum (IPv4) or header (IPv6) error, like netem's corrupt.
            corrupt "corrupt" Corrupt Instead;

            /// Flip a payload byte of this share and fix the checksums: the
            /// application receives damaged data.
            corrupt_payload "corrupt-payload" CorruptPayload Instead;

            /// Turn this share of TCP segments into resets the receiver accepts
            /// (ECONNRESET; a reset SYN-ACK makes connect fail with ECONNREFUSED).
            reset "reset" Reset Instead;

            /// Send a copy of this share of matched packets.
            duplicate "duplicate" Duplicate AsWell;
        }
    };
}

/// What a fault given as a percentage does to a packet it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The packet gets the fault instead of passing: `decide::choose`
    /// tries these in the order of their [`Action`] and the first that
    /// fires is the packet's one fault (its `Fault`).
    Instead,
    /// The packet passes, and gets the fault as well (a copy).
    AsWell,
}

/// One line of [`percent_faults!`](crate::percent_faults), as a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PercentFault {
    /// The flag without `--`, the config key and the name in a rule's text.
    pub flag: &'static str,
    pub action: Action,
    pub effect: Effect,
}

macro_rules! percent_fault_values {
    ($($(#[$help:meta])* $field:ident $flag:literal $action:ident $effect:ident;)+) => {
        /// Every line of [`percent_faults!`](crate::percent_faults), in its order.
        pub const PERCENT_FAULTS: [PercentFault; [$($flag),+].len()] =
            [$(PercentFault { flag: $flag, action: Action::$action, effect: Effect::$effect }),+];
        const _: () = {
            $(assert!((Action::$action as usize) < ACTION_SLOTS, concat!($flag, ": its die has no threshold slot"));)+
        };
    };
}

percent_faults!(percent_fault_values);

impl PercentFault {
    /// The faults in the order a rule tries them: by [`Action`].
    pub fn tried() -> [PercentFault; PERCENT_FAULTS.len()] {
        let mut faults = PERCENT_FAULTS;
        faults.sort_unstable_by_key(|f| f.action as u32);
        faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_has_its_own_die_and_flag() {
        for (i, a) in PERCENT_FAULTS.iter().enumerate() {
            for b in &PERCENT_FAULTS[i + 1..] {
                assert_ne!(a.action, b.action, "{} and {} share a die", a.flag, b.flag);
                assert_ne!(a.flag, b.flag);
            }
        }
        let tried = PercentFault::tried();
        assert!(tried.windows(2).all(|w| (w[0].action as u32) < (w[1].action as u32)));
        assert!(PERCENT_FAULTS.iter().all(|f| tried.contains(f)));
    }
}
