//! `cargo xtask bench`: what the classifier costs per packet, and what it
//! costs a TCP stream across a bridge when attached and matching nothing.
//!
//! - `cost`: BPF_PROG_TEST_RUN of `pyg_egress` with maps filled by the
//!   tool's own code, beside an empty classifier (`noop`) as the floor.
//! - `throughput`: iperf3 in namespaces (`lab`), bare and with the release
//!   binary attached, in alternating pairs.
//! - `report`: Markdown, printed and written into BENCHMARKS.md.
//!
//! `cargo xtask bench-live` (`live`) times the classifier on live packets
//! instead, from the kernel's BPF statistics, in the same lab.

mod attached;
mod cost;
mod frames;
mod interrupt;
mod lab;
pub mod live;
mod noop;
pub mod report;
mod throughput;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed BPF_PROG_TEST_RUN calls per case (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Repetitions of the program per call.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Calls of one repetition each, for the cases timed that way (reset).
    #[arg(long, default_value_t = 20_000)]
    singles: usize,
    /// Bare/attached iperf3 pairs (the median ratio is reported).
    #[arg(long, default_value_t = 7)]
    pairs: usize,
    /// Seconds of each iperf3 run.
    #[arg(long, default_value_t = 5)]
    secs: u32,
    /// pygocentrus binary for the attached runs; by default the bench builds
    /// and uses target/release/pygocentrus.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Run one part only (the results are printed, not recorded).
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// Print the results without rewriting BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
    /// Time only the cost cases whose name contains this text, beside the
    /// floors (for trying a change; the results are printed, not recorded).
    #[arg(long, value_name = "TEXT")]
    case: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Per-packet cost (BPF_PROG_TEST_RUN).
    Cost,
    /// iperf3 throughput, bare and attached.
    Throughput,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.runs == 0 || args.pairs == 0 || args.singles == 0 || args.repeat == 0 || args.secs == 0 {
        bail!("--runs, --repeat, --singles, --pairs and --secs must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the bench loads BPF programs and creates network namespaces: run it as root (sudo -E cargo xtask bench)"
        );
    }
    let root = workspace_root()?;
    let machine = report::Machine::probe(&root);
    if machine.busy() {
        eprintln!(
            "bench: warning: load average {} on {} CPUs: other work will move the figures (recorded with them)",
            machine.load, machine.cpus
        );
    }
    let settings =
        cost::Settings { repeat: args.repeat, runs: args.runs, singles: args.singles, case: args.case.clone() };
    let with_cost = args.only != Some(Part::Throughput);
    let with_tput = args.only != Some(Part::Cost);
    // Build first: a failed build stops the bench early, and the compiler is
    // done before anything is timed.
    let binary = match (&args.bin, with_tput) {
        (_, false) => None,
        (Some(b), true) => Some(b.clone()),
        (None, true) => Some(build_release(&root)?),
    };
    let binary = binary
        .map(|b| b.canonicalize().with_context(|| format!("no pygocentrus binary at {}", b.display())))
        .transpose()?;

    let cost = if with_cost { Some(cost::measure(&settings)?) } else { None };
    let tput = match &binary {
        Some(binary) => {
            Some(throughput::measure(&throughput::Settings { pairs: args.pairs, secs: args.secs, binary })?)
        }
        None => None,
    };
    let shown = binary.as_ref().map_or(String::new(), |b| b.strip_prefix(&root).unwrap_or(b).display().to_string());

    let section = report::markdown(&machine, &report::invocation(), &shown, cost.as_ref(), &settings, tput.as_ref())
        .context("formatting the report")?;
    let record = !args.no_record && args.only.is_none() && args.case.is_none();
    report::publish(&root, &section, record, report::START, report::END)?;
    if let Some(bad) = cost.iter().flat_map(|c| &c.rows).find(|r| !r.ok) {
        bail!("a check failed for '{}': {}", bad.name, bad.check);
    }
    Ok(())
}

/// The median (mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// Builds the release binary the attached runs use.
fn build_release(root: &Path) -> Result<PathBuf> {
    eprintln!("bench: building the release binary");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--package", "pygocentrus-userspace", "--bin", "pygocentrus"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("pygocentrus"))
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
