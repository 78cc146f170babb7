//! What the kernel program counts, named once: the `COUNTERS` map's value,
//! the names `--json`, the text line, `status` and `/metrics` print, and
//! the bits the kernel program's one counting site adds.
//!
//! A new counter is one line in the [`counters!`] list below: the struct
//! slot, its name and its label follow from it, on both sides.

/// Declares [`Counter`] (one variant per counter, in the order shown),
/// [`Counters`] (one field per counter, named as the counter), their names
/// and text-line labels, and [`COUNTER_KINDS`].
macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $variant:ident $field:ident $label:literal,)+) => {
        /// One counter of a rule.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Counter {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Counter {
            /// Every counter, in the order they are shown.
            pub const ALL: [Counter; COUNTER_KINDS] = [$(Counter::$variant,)+];

            /// The counter's name in JSON, `status` and `/metrics`
            /// (`snake_case`, the field's name).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => stringify!($field),)+
                }
            }

            /// The name as the text line prints it (`kebab-case`).
            pub const fn label(self) -> &'static str {
                match self {
                    $(Counter::$variant => $label,)+
                }
            }

        }

        /// How many counters a rule has.
        pub const COUNTER_KINDS: usize = [$(stringify!($field),)+].len();

        /// Per-rule counters, one per CPU, summed by userspace. Slot 0 of
        /// the `COUNTERS` map holds the program's totals (`seen` = every
        /// packet the classifier ran on). A field per [`Counter`], in its
        /// order.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[doc = $doc])+ pub $field: u64,)+
        }

        impl Counters {
            /// Adds 1 to every counter whose bit is in `tally`.
            #[inline(always)]
            pub fn add_tally(&mut self, tally: Tally) {
                $(if tally & Counter::$variant.bit() != 0 {
                    self.$field += 1;
                })+
            }

            /// The value of counter `c`.
            pub const fn get(&self, c: Counter) -> u64 {
                match c {
                    $(Counter::$variant => self.$field,)+
                }
            }

            fn get_mut(&mut self, c: Counter) -> &mut u64 {
                match c {
                    $(Counter::$variant => &mut self.$field,)+
                }
            }
        }
    };
}

counters! {
    /// Packets whose address and port matched the rule's target.
    Seen seen "seen",
    /// Packets whose protocol and direction matched too: the ones the dice ran on.
    Matched matched "matched",
    /// Matched packets that left untouched.
    Passed passed "passed",
    /// Packets dropped (by the drop probability, the loss model or a full rate queue).
    Dropped dropped "dropped",
    /// Packets whose IP header was damaged so that the receiver discards them.
    Corrupted corrupted "corrupted",
    /// Packets with one payload byte changed and a valid checksum.
    CorruptedPayload corrupted_payload "corrupted-payload",
    /// TCP segments turned into resets.
    Reset reset "reset",
    /// Packets given a later departure time by the delay.
    Delayed delayed "delayed",
    /// Copies sent.
    Duplicated duplicated "duplicated",
    /// Packets held back by the rate limit.
    RateLimited rate_limited "rate-limited",
    /// Packets dropped because their connection is unplugged.
    Unplugged unplugged "unplugged",
}

impl Counter {
    /// The counter's bit in a [`Tally`].
    pub const fn bit(self) -> Tally {
        1 << self as u32
    }
}

/// The counters one packet adds to a rule: bit `c as u32` adds 1 to
/// counter `c` (a packet adds at most 1 to each). Built by the kernel
/// program's decision and action, added in one place.
pub type Tally = u32;

impl Counters {
    pub fn add(&mut self, other: &Self) {
        for c in Counter::ALL {
            *self.get_mut(c) += other.get(c);
        }
    }

    /// What was counted since `before` (a snapshot of the same counters).
    pub fn since(&self, before: &Self) -> Self {
        let mut out = *self;
        for c in Counter::ALL {
            *out.get_mut(c) = self.get(c).wrapping_sub(before.get(c));
        }
        out
    }

    /// (counter, value) in the order shown.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_in_order_and_labels_match_them() {
        for (i, c) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
            assert_eq!(c.label().replace('-', "_"), c.name());
        }
    }

    #[test]
    fn a_tally_adds_one_to_each_of_its_counters() {
        let mut c = Counters::default();
        c.add_tally(Counter::Seen.bit() | Counter::Matched.bit() | Counter::Unplugged.bit());
        c.add_tally(Counter::Seen.bit());
        assert_eq!(c.seen, 2);
        assert_eq!(c.matched, 1);
        assert_eq!(c.unplugged, 1);
        assert_eq!(c.dropped, 0);
        let before = c;
        c.add_tally(Counter::Dropped.bit());
        assert_eq!(c.since(&before).dropped, 1);
        assert_eq!(c.since(&before).seen, 0);
    }
}
