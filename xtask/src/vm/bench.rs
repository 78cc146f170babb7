//! `cargo xtask bench-vm`: pygocentrus beside netem on the same path, in
//! the same guest, under a Debian kernel in QEMU (the development machines'
//! kernel has neither `sch_fq` nor `sch_netem`).
//!
//! The guest runs `xtask/vm-guest/netem-bench`, which builds two namespaces
//! on a bridge (198.18.0.0/15 only) and prints raw measurements (`BENCH ...`
//! lines) on the console; [`results`] reads them back from the console log,
//! [`report`] turns them into the Markdown printed and recorded in
//! BENCHMARKS.md. Measured, with each fault on the path to the server:
//!
//! - ping RTTs, bare, with `pygocentrus attach --delay 20ms` and with
//!   `netem delay 20ms`: the mean error of the added delay and its spread;
//! - one iperf3 TCP stream, bare and at 10 ms from each;
//! - the same stream with N rules installed (pygocentrus, from a config
//!   file) or N u32 filters in front of netem, for each N of `--rules`.

mod report;
mod results;

use std::{fs, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use pygocentrus_common::MAX_RULES;

use super::{
    Profile, build_pygocentrus, prepare, qemu,
    rootfs::{self, Payload, TestProgram, TestSource},
};

const GUEST_SCRIPT: &str = include_str!("../../vm-guest/netem-bench");

/// The delays the issue compares at: 20 ms for ping, 10 ms for iperf3.
pub const PING_DELAY_MS: u32 = 20;
/// The same ping faults again at 1 µs: what each mechanism costs a packet
/// besides the delay itself (the `*-floor` cases).
pub const FLOOR_DELAY_US: u32 = 1;
pub const TPUT_DELAY_MS: u32 = 10;

#[derive(Debug, Args)]
pub struct BenchVmArgs {
    /// Which kernel to boot: 6.1 (netlink clsact fallback), 6.12 (TCX) or all.
    #[arg(long, default_value = "6.12", value_parser = ["6.1", "6.12", "all"])]
    kernel: String,
    /// Ping round trips per case (bare; pygocentrus and netem at 20 ms and at 1 µs).
    #[arg(long, default_value_t = 200)]
    samples: u32,
    /// Seconds between echo requests.
    #[arg(long, default_value_t = 0.02)]
    interval: f64,
    /// Seconds of each iperf3 run (one more is run and left out).
    #[arg(long, default_value_t = 10)]
    secs: u32,
    /// Rounds of the iperf3 part: every case runs once per round; the order
    /// of the cases flips each round.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Rounds of the ping part: its samples are split over them, and each
    /// runs every case back to back, so that pygocentrus and netem are
    /// compared round by round (a round costs only its pings).
    #[arg(long, default_value_t = 10)]
    ping_rounds: u32,
    /// Rule counts to measure throughput with (pygocentrus rules, netem u32
    /// filters), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    rules: Vec<u32>,
    /// Seconds after which a guest is killed and the run fails.
    #[arg(long, default_value_t = 2400)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Run one part only (the results are printed, not recorded).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Print the results without rewriting BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    /// The ping RTTs: bare, pygocentrus's delay, netem's (at 20 ms and 1 µs).
    Ping,
    /// The iperf3 runs, with and without rules.
    Throughput,
}

impl Part {
    fn guest_name(self) -> &'static str {
        match self {
            Part::Ping => "ping",
            Part::Throughput => "tput",
        }
    }
}

impl BenchVmArgs {
    fn check(&self) -> Result<()> {
        if self.samples == 0 || self.secs == 0 || self.rounds == 0 || self.ping_rounds == 0 || self.rules.is_empty() {
            bail!("--samples, --secs, --rounds, --ping-rounds and --rules must be at least 1");
        }
        if self.samples < self.ping_rounds {
            bail!("--samples must be at least --ping-rounds (the samples are split over them)");
        }
        if !(0.002..=1.0).contains(&self.interval) {
            bail!("--interval must be between 0.002 and 1 second");
        }
        if let Some(n) = self.rules.iter().find(|&&n| n == 0 || n > MAX_RULES) {
            bail!("--rules: {n} is outside 1..={MAX_RULES} (pygocentrus's rule limit)");
        }
        Ok(())
    }

    /// The guest script's `key=value` arguments.
    fn guest_args(&self) -> Vec<String> {
        let mut rules = self.rules.clone();
        rules.sort_unstable();
        rules.dedup();
        let rules = rules.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        vec![
            format!("samples={}", self.samples),
            format!("ping_rounds={}", self.ping_rounds),
            format!("interval={}", self.interval),
            format!("ping_delay={PING_DELAY_MS}ms"),
            format!("floor_delay={FLOOR_DELAY_US}us"),
            format!("secs={}", self.secs),
            format!("rounds={}", self.rounds),
            format!("tput_delay={TPUT_DELAY_MS}ms"),
            format!("rules={rules}"),
            format!("only={}", self.only.map_or("all", Part::guest_name)),
        ]
    }
}

pub fn run(args: &BenchVmArgs) -> Result<()> {
    args.check()?;
    let (workspace, work, kernels) = prepare(&args.kernel, "bench-vm")?;
    // The release build, as a user runs it: the process's own CPU time
    // (counters read and printed every second) is part of what the rule-count
    // rows measure.
    let (_, pygocentrus) = build_pygocentrus(&workspace, &work, Profile::Release)?;
    let payload = Payload {
        pygocentrus,
        tests: vec![TestProgram { name: "netem-bench".to_owned(), source: TestSource::Script(GUEST_SCRIPT) }],
        test_args: args.guest_args(),
    };
    let machine =
        qemu::Machine { memory_mib: args.memory, cpus: args.cpus, timeout: Duration::from_secs(args.timeout) };
    let host = crate::bench::report::Machine::probe(&workspace);

    let mut runs = Vec::new();
    for kernel in &kernels {
        println!("== bench-vm: Linux {} ({}, {})", kernel.release, kernel.spec.label, kernel.spec.hook);
        let initramfs = work.join(format!("initramfs-{}.cpio", kernel.spec.label));
        rootfs::build(kernel, &payload, &initramfs)
            .with_context(|| format!("packing the initramfs for {}", kernel.release))?;
        let log = work.join(format!("console-{}.log", kernel.spec.label));
        let outcome = qemu::run(kernel, &initramfs, &machine, &log)?;
        if !outcome.passed() {
            for line in &outcome.unseen {
                println!("| {line}");
            }
            bail!(
                "the benchmark failed in the {} guest (rc {:?}, timed out: {}); its console is in {}",
                kernel.spec.label,
                outcome.rc,
                outcome.timed_out,
                log.display()
            );
        }
        let console = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
        let measured = results::parse(&console).with_context(|| format!("reading the results in {}", log.display()))?;
        runs.push(report::KernelRun {
            label: kernel.spec.label,
            release: kernel.release.clone(),
            hook: kernel.spec.hook,
            seconds: outcome.elapsed.as_secs_f64(),
            results: measured,
        });
    }

    let command = std::env::args().skip(1).fold("cargo xtask".to_owned(), |acc, a| format!("{acc} {a}"));
    let settings = report::Settings {
        samples: args.samples,
        interval: args.interval,
        secs: args.secs,
        rounds: args.rounds,
        ping_rounds: args.ping_rounds,
        cpus: args.cpus,
        memory_mib: args.memory,
    };
    let section = report::markdown(&host, &command, &settings, &runs).context("formatting the report")?;
    println!("{section}");
    if args.no_record || args.only.is_some() {
        eprintln!("bench-vm: results not recorded (--no-record or --only): BENCHMARKS.md left as it was");
    } else {
        let path = workspace.join("BENCHMARKS.md");
        crate::bench::report::record_section(&path, report::START, report::END, &section)?;
        eprintln!("bench-vm: results written to {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchVmArgs,
    }

    #[test]
    fn defaults_are_the_issues_figures() {
        let cli = Cli::parse_from(["bench-vm"]);
        cli.args.check().unwrap();
        assert_eq!(
            cli.args.guest_args(),
            [
                "samples=200",
                "ping_rounds=10",
                "interval=0.02",
                "ping_delay=20ms",
                "floor_delay=1us",
                "secs=10",
                "rounds=3",
                "tput_delay=10ms",
                "rules=1,1000,10000",
                "only=all"
            ]
        );
    }

    #[test]
    fn rule_counts_are_bounded() {
        assert!(Cli::parse_from(["bench-vm", "--rules", "1,20000"]).args.check().is_err());
        assert!(Cli::parse_from(["bench-vm", "--rules", "0"]).args.check().is_err());
        let cli = Cli::parse_from(["bench-vm", "--rules", "100,1,100"]);
        assert!(cli.args.guest_args().contains(&"rules=1,100".to_owned()));
    }
}
