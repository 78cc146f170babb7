//! The clients' summary line: how many tries succeeded, and how the others
//! failed, by kind.

use std::{collections::BTreeMap, fmt};

/// Outcomes counted so far: `ok`, or the name of a failure (`UNAVAILABLE`,
/// `ECONNRESET`, `mismatch`...).
#[derive(Debug, Default)]
pub struct Tally {
    ok: usize,
    failed: BTreeMap<String, usize>,
}

impl Tally {
    pub fn ok(&mut self) {
        self.ok += 1;
    }

    pub fn failed(&mut self, kind: &str) {
        *self.failed.entry(kind.to_owned()).or_default() += 1;
    }

    pub fn oks(&self) -> usize {
        self.ok
    }

    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    /// `summary: 10 calls: 8 ok, 2 failed (DEADLINE_EXCEEDED 1, UNAVAILABLE 1)`,
    /// with `what` naming the tries (`calls`, `messages`).
    pub fn summary<'a>(&'a self, what: &'a str) -> impl fmt::Display + 'a {
        Summary { tally: self, what }
    }
}

struct Summary<'a> {
    tally: &'a Tally,
    what: &'a str,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.tally;
        write!(f, "summary: {} {}: {} ok, {} failed", t.ok + t.failures(), self.what, t.ok, t.failures())?;
        if !t.failed.is_empty() {
            let kinds: Vec<String> = t.failed.iter().map(|(k, n)| format!("{k} {n}")).collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_failures_by_kind() {
        let mut t = Tally::default();
        assert_eq!(t.summary("calls").to_string(), "summary: 0 calls: 0 ok, 0 failed");
        t.ok();
        t.failed("UNAVAILABLE");
        t.ok();
        t.failed("DEADLINE_EXCEEDED");
        t.failed("UNAVAILABLE");
        assert_eq!((t.oks(), t.failures()), (2, 3));
        assert_eq!(
            t.summary("calls").to_string(),
            "summary: 5 calls: 2 ok, 3 failed (DEADLINE_EXCEEDED 1, UNAVAILABLE 2)"
        );
    }
}
