//! The guest's raw measurements, read back from its console log, and the
//! statistics the report is made of.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// What the guest script printed (see `xtask/vm-guest/netem-bench`).
#[derive(Debug, Default)]
pub struct Results {
    /// RTTs in ms by (case, round); cases: `base`, `pyg`, `netem`,
    /// `pyg-floor`, `netem-floor`.
    pub ping_rounds: BTreeMap<(String, u32), Vec<f64>>,
    pub tput: Vec<Tput>,
    /// Seconds taken to install the rules, by (case, rule count), per run.
    pub setup: BTreeMap<(String, u32), Vec<f64>>,
    /// pygocentrus's CPU seconds (user + system) during the throughput
    /// run, by (case, rule count), per run.
    pub cpu: BTreeMap<(String, u32), Vec<f64>>,
    /// Cases the guest could not run, and why.
    pub skipped: Vec<(String, String)>,
    /// The guest's tools: name, path.
    pub tools: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tput {
    pub case: String,
    pub rules: u32,
    pub round: u32,
    pub mbit: f64,
    pub retransmits: u64,
}

const MARK: &str = "BENCH ";

pub fn parse(console: &str) -> Result<Results> {
    let mut r = Results::default();
    for (i, line) in console.lines().enumerate() {
        let Some(at) = line.find(MARK) else {
            continue;
        };
        let rest = &line[at + MARK.len()..];
        parse_line(&mut r, rest).with_context(|| format!("console line {}: {line}", i + 1))?;
    }
    if r.ping_rounds.is_empty() && r.tput.is_empty() {
        bail!("the guest printed no measurement");
    }
    Ok(r)
}

fn parse_line(r: &mut Results, line: &str) -> Result<()> {
    let mut words = line.split_whitespace();
    let kind = words.next().context("empty BENCH line")?;
    let mut next = |what: &str| words.next().with_context(|| format!("no {what}"));
    match kind {
        "ping" => {
            let case = next("case")?.to_owned();
            let round: u32 = next("round")?.parse().context("round")?;
            let rtts =
                words.map(|w| w.parse::<f64>().with_context(|| format!("RTT {w}"))).collect::<Result<Vec<_>>>()?;
            r.ping_rounds.entry((case, round)).or_default().extend(rtts);
        }
        "tput" => {
            let case = next("case")?.to_owned();
            let rules = next("rule count")?.parse().context("rule count")?;
            let round = next("round")?.parse().context("round")?;
            let mbit = next("Mbit/s")?.parse().context("Mbit/s")?;
            let retransmits = next("retransmits")?.parse().context("retransmits")?;
            r.tput.push(Tput { case, rules, round, mbit, retransmits });
        }
        "setup" | "cpu" => {
            let case = next("case")?.to_owned();
            let rules = next("rule count")?.parse().context("rule count")?;
            let secs = next("seconds")?.parse().context("seconds")?;
            let map = if kind == "setup" { &mut r.setup } else { &mut r.cpu };
            map.entry((case, rules)).or_default().push(secs);
        }
        "skip" => {
            let case = next("case")?.to_owned();
            r.skipped.push((case, words.collect::<Vec<_>>().join(" ")));
        }
        "tool" => {
            let name = next("name")?.to_owned();
            let path = next("path")?.to_owned();
            r.tools.push((name, path));
        }
        other => bail!("unknown BENCH line kind {other}"),
    }
    Ok(())
}

impl Results {
    /// Every RTT of `case`, its rounds in order.
    pub fn ping(&self, case: &str) -> Vec<f64> {
        self.ping_rounds.iter().filter(|((c, _), _)| c == case).flat_map(|(_, v)| v.iter().copied()).collect()
    }

    /// Round by round, the mean RTTs of the cases in `plus` summed, minus
    /// those of the cases in `minus` (rounds where every one of them has
    /// replies): each round runs its cases back to back, so the difference
    /// leaves out what changed between rounds.
    pub fn paired_ping(&self, plus: &[&str], minus: &[&str]) -> Vec<f64> {
        let mean = |case: &str, round: u32| Stats::of(self.ping_rounds.get(&(case.to_owned(), round))?).map(|s| s.mean);
        let mut rounds: Vec<u32> = self.ping_rounds.keys().map(|(_, round)| *round).collect();
        rounds.sort_unstable();
        rounds.dedup();
        rounds
            .into_iter()
            .filter_map(|round| {
                let sum = |cases: &[&str]| cases.iter().map(|c| mean(c, round)).sum::<Option<f64>>();
                Some(sum(plus)? - sum(minus)?)
            })
            .collect()
    }

    /// The throughput runs of one case and rule count, in Mbit/s.
    pub fn mbits(&self, case: &str, rules: u32) -> Vec<f64> {
        self.tput.iter().filter(|t| t.case == case && t.rules == rules).map(|t| t.mbit).collect()
    }

    pub fn retransmits(&self, case: &str, rules: u32) -> Vec<f64> {
        self.tput.iter().filter(|t| t.case == case && t.rules == rules).map(|t| t.retransmits as f64).collect()
    }

    /// The rule counts measured for `case`, ascending.
    pub fn rule_counts(&self, case: &str) -> Vec<u32> {
        let mut n: Vec<u32> = self.tput.iter().filter(|t| t.case == case).map(|t| t.rules).collect();
        n.sort_unstable();
        n.dedup();
        n
    }
}

/// Summary of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1).
    pub stddev: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Some(Self {
            n,
            mean,
            stddev: var.sqrt(),
            p25: quantile(&s, 0.25),
            p50: quantile(&s, 0.50),
            p75: quantile(&s, 0.75),
            p95: quantile(&s, 0.95),
            min: s[0],
            max: s[n - 1],
        })
    }

    pub fn iqr(&self) -> f64 {
        self.p75 - self.p25
    }
}

/// Quantile `q` of a sorted, non-empty sample, interpolated linearly
/// between the closest ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "\
[    3.1] random: crng init done
netem-bench: ping: 4 samples per case
BENCH tool ping /usr/bin/ping
BENCH ping base 1 1.50 1.70
BENCH ping base 2 1.60 1.60
BENCH ping pyg 1 21.6 21.4
BENCH tput pyg 1 1 2100.5 3
BENCH tput netem-filters 1000 1 800 0
BENCH tput netem-filters 1 1 1900 12
BENCH setup netem-filters 1000 4.20
BENCH cpu pyg-rules 1000 0.75
BENCH skip pyg-rules this pygocentrus has no attach --config
";

    #[test]
    fn console_lines_become_results() {
        let r = parse(CONSOLE).unwrap();
        assert_eq!(r.ping("base"), [1.5, 1.7, 1.6, 1.6]);
        assert_eq!(r.ping("pyg"), [21.6, 21.4]);
        assert_eq!(r.mbits("pyg", 1), [2100.5]);
        assert_eq!(r.retransmits("netem-filters", 1), [12.0]);
        assert_eq!(r.rule_counts("netem-filters"), [1, 1000]);
        assert_eq!(r.setup[&("netem-filters".to_owned(), 1000)], [4.2]);
        assert_eq!(r.cpu[&("pyg-rules".to_owned(), 1000)], [0.75]);
        assert_eq!(r.skipped, [("pyg-rules".to_owned(), "this pygocentrus has no attach --config".to_owned())]);
        assert_eq!(r.tools, [("ping".to_owned(), "/usr/bin/ping".to_owned())]);
    }

    #[test]
    fn malformed_lines_and_empty_logs_are_errors() {
        assert!(parse("BENCH tput pyg one 1 2 3\n").is_err());
        assert!(parse("BENCH ping base 1 1.5 x\n").is_err());
        assert!(parse("no results here\n").is_err());
    }

    #[test]
    fn stats() {
        let s = Stats::of(&[4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!((s.n, s.mean, s.p50, s.p25, s.p75, s.min, s.max), (5, 3.0, 3.0, 2.0, 4.0, 1.0, 5.0));
        assert!((s.stddev - 2.5f64.sqrt()).abs() < 1e-12);
        assert!((s.p95 - 4.8).abs() < 1e-12);
        assert_eq!(s.iqr(), 2.0);
        assert!(Stats::of(&[]).is_none());
    }
}
