//! `cargo xtask bench-live`: what the classifier costs live packets, from
//! the kernel's own BPF statistics (`run_time_ns` / `run_cnt` of each
//! program), on the lab's bridge ports under real traffic.
//!
//! Beside `cargo xtask bench`, which times one crafted frame with
//! BPF_PROG_TEST_RUN: here the packets are what the kernel's stack makes
//! of an iperf3 stream, small UDP datagrams and redis requests (GSO
//! super-packets, ACKs, payload in paged fragments), and the floor is the
//! same empty classifier attached to the same ports. Each figure includes
//! what the statistics themselves cost a run (two clock reads), which the
//! floor has too.
//!
//! - `setups`: what a case attaches (the empty classifier, the real binary,
//!   the tool's object once per port, a probe), and the statistics.
//! - `loads`: iperf3 and redis in the lab's namespaces.
//! - `report`: Markdown, printed and written into BENCHMARKS.md.

mod loads;
pub mod report;
mod setups;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use clap::Args;

pub use self::loads::Load;
use self::{
    loads::Settings as LoadSettings,
    setups::{Attached, Hook, Setup, Stat, StatsOn},
};
use super::{
    build_release,
    cost::IDLE_RULE,
    interrupt,
    lab::{Lab, SERVER_ADDR},
    report::{Machine, invocation, publish},
    workspace_root,
};

#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Rounds: every case runs once per load in each round, the order of
    /// the cases flipping each round; figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each iperf3 run (TCP and UDP).
    #[arg(long, default_value_t = 5)]
    secs: u32,
    /// Datagrams a second of the UDP load (64-byte payloads).
    #[arg(long, default_value_t = 50_000)]
    udp_pps: u32,
    /// Requests of each redis-benchmark test (SET, then GET).
    #[arg(long, default_value_t = 40_000)]
    requests: u32,
    /// pygocentrus binary for the attached runs; by default the bench builds
    /// and uses target/release/pygocentrus.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Run one load only (the results are printed, not recorded).
    #[arg(long, value_enum)]
    only: Option<Load>,
    /// Print the results without rewriting BENCHMARKS.md.
    #[arg(long)]
    no_record: bool,
}

/// What a case is, for the targets and the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Empty,
    Unmatched,
    Matched,
    Seeded,
    /// The pull probe: one step of the classifier alone.
    Probe,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    pub kind: Kind,
    pub setup: Setup,
}

impl Case {
    /// The rule's `attach` flags, if it has one.
    pub fn flags(&self) -> Option<&str> {
        match &self.setup {
            Setup::Tool(f) | Setup::PerPort(f) => Some(f),
            Setup::Empty | Setup::Pull => None,
        }
    }

    /// Whether each port and hook has a program of its own.
    pub fn per_port(&self) -> bool {
        !matches!(self.setup, Setup::Tool(_))
    }
}

/// The matched rule of a load: its server's address and port, a drop that
/// practically never fires (10^-6).
fn matched_rule(load: Load) -> String {
    format!("--ip {SERVER_ADDR} --port {} --drop 0.0001", load.port())
}

pub fn cases(load: Load) -> Vec<Case> {
    let matched = matched_rule(load);
    let seeded = format!("{matched} --seed 1");
    let mut v = vec![
        Case { name: "empty classifier", kind: Kind::Empty, setup: Setup::Empty },
        Case {
            name: "pygocentrus, unmatched: another address, port 9",
            kind: Kind::Unmatched,
            setup: Setup::Tool(IDLE_RULE.to_owned()),
        },
        Case { name: "pygocentrus, matched, passes", kind: Kind::Matched, setup: Setup::Tool(matched.clone()) },
        Case { name: "pygocentrus, matched, passes, --seed 1", kind: Kind::Seeded, setup: Setup::Tool(seeded.clone()) },
        Case { name: "probe: linearize's pull alone (at egress)", kind: Kind::Probe, setup: Setup::Pull },
    ];
    if load == Load::Tcp {
        v.extend([
            Case { name: "per port: unmatched", kind: Kind::Unmatched, setup: Setup::PerPort(IDLE_RULE.to_owned()) },
            Case { name: "per port: matched, passes", kind: Kind::Matched, setup: Setup::PerPort(matched) },
            Case { name: "per port: matched, --seed 1", kind: Kind::Seeded, setup: Setup::PerPort(seeded) },
        ]);
    }
    v
}

/// One run of one case under one load.
pub struct Sample {
    /// Per site (port-major, as `setups::Attached::sites`): the statistics
    /// of the program there (for the tool, both ports of a hook read the
    /// same program).
    pub sites: Vec<Stat>,
    /// Per hook, ingress then egress: summed over the distinct programs
    /// on that hook.
    pub hooks: [Stat; 2],
    /// What the load moved, in its unit.
    pub rate: f64,
    /// What the classifier counted: packets seen, packets its rule matched.
    pub counted: Option<(u64, u64)>,
}

pub struct CaseResult {
    pub load: Load,
    pub case: Case,
    pub samples: Vec<Sample>,
    /// The classifier's counters agree with the case (matched none, or some).
    pub ok: bool,
}

pub struct Report {
    pub results: Vec<CaseResult>,
    pub rounds: usize,
    pub loads: Vec<Load>,
    pub settings: LoadSettings,
    pub seconds: f64,
    pub load_at_end: String,
    pub sysctl: (String, String, String),
}

pub fn run(args: &LiveArgs) -> Result<()> {
    if args.rounds == 0 || args.secs == 0 || args.udp_pps == 0 || args.requests == 0 {
        bail!("--rounds, --secs, --udp-pps and --requests must be at least 1");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("the bench loads BPF programs and creates network namespaces: run it as root");
    }
    let root = workspace_root()?;
    let binary = match &args.bin {
        Some(b) => b.clone(),
        None => build_release(&root)?,
    };
    let binary = binary.canonicalize().with_context(|| format!("no pygocentrus binary at {}", binary.display()))?;
    let machine = Machine::probe(&root);
    if machine.busy() {
        eprintln!(
            "bench: warning: load average {} on {} CPUs: other work will move the figures (recorded with them)",
            machine.load, machine.cpus
        );
    }
    let loads = args.only.map_or(Load::ALL.to_vec(), |l| vec![l]);
    let settings = LoadSettings { secs: args.secs, udp_pps: args.udp_pps, requests: args.requests };
    let report = measure(&loads, args.rounds, settings, &binary)?;

    let shown = binary.strip_prefix(&root).unwrap_or(&binary).display().to_string();
    let section = report::markdown(&machine, &invocation(), &shown, &report).context("formatting the report")?;
    let record = !args.no_record && args.only.is_none();
    publish(&root, &section, record, report::START, report::END)?;
    if let Some(bad) = report.results.iter().find(|r| !r.ok) {
        bail!("the classifier's counters disagree with the case '{}' ({})", bad.case.name, bad.load.name());
    }
    Ok(())
}

fn measure(loads: &[Load], rounds: usize, settings: LoadSettings, binary: &Path) -> Result<Report> {
    let start = Instant::now();
    // Before anything is created: a Ctrl-C from here on unwinds through
    // the guards below (statistics, servers, namespaces).
    let _caught = interrupt::catch()?;
    let lab = Lab::create().context("creating the namespaces")?;
    let _servers = loads::start_servers(&lab, loads)?;
    let stats = StatsOn::enable()?;
    let during = setups::sysctl();
    let mut results: Vec<CaseResult> = loads
        .iter()
        .flat_map(|&load| cases(load).into_iter().map(move |case| CaseResult { load, case, samples: vec![], ok: true }))
        .collect();
    for round in 0..rounds {
        for &load in loads {
            let mut order: Vec<usize> = (0..results.len()).filter(|&i| results[i].load == load).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                interrupt::check()?;
                let r = &mut results[i];
                let sample = match run_case(&lab, load, &r.case, &settings, binary) {
                    Ok(sample) => sample,
                    // A Ctrl-C also stops the children, and the step fails
                    // for it: say that, not the step's symptom.
                    Err(e) => {
                        interrupt::check()?;
                        return Err(e.context(format!("{} under {}", r.case.name, load.name())));
                    }
                };
                interrupt::check()?;
                r.ok &= counters_agree(r.case.kind, sample.counted);
                let [ing, eg] = sample.hooks;
                eprintln!(
                    "bench: live round {}/{rounds}, {}, {}: ingress {:.1} ns/run ({} runs), egress {:.1} ns/run ({} runs), {:.2} {}",
                    round + 1,
                    load.name(),
                    r.case.name,
                    ing.per_run(),
                    ing.runs,
                    eg.per_run(),
                    eg.runs,
                    sample.rate,
                    load.unit()
                );
                r.samples.push(sample);
            }
        }
    }
    let before = stats.sysctl_before.clone();
    drop(stats);
    let after = setups::sysctl();
    let load_at_end = Machine::probe(&workspace_root()?).load;
    Ok(Report {
        results,
        rounds,
        loads: loads.to_vec(),
        settings,
        seconds: start.elapsed().as_secs_f64(),
        load_at_end,
        sysctl: (before, during, after),
    })
}

fn run_case(lab: &Lab, load: Load, case: &Case, s: &LoadSettings, binary: &Path) -> Result<Sample> {
    let attached = Attached::attach(lab, &case.setup, binary)?;
    let before = attached.read()?;
    let rate = loads::run(lab, load, s)?;
    let after = attached.read()?;
    let sites: Vec<Stat> = after.iter().zip(&before).map(|(a, b)| a.since(*b)).collect();
    let mut hooks = [Stat::default(); 2];
    for (h, hook) in Hook::BOTH.iter().enumerate() {
        let mut counted: Vec<u32> = Vec::new();
        for (site, stat) in attached.sites.iter().zip(&sites) {
            if site.hook == *hook && !counted.contains(&site.prog) {
                counted.push(site.prog);
                hooks[h] = hooks[h].add(*stat);
            }
        }
    }
    let seen = attached.detach()?;
    Ok(Sample { sites, hooks, rate, counted: seen.counted })
}

/// An unmatched rule matched nothing, a matched one matched something.
fn counters_agree(kind: Kind, counted: Option<(u64, u64)>) -> bool {
    match (kind, counted) {
        (_, None) => true,
        (_, Some((0, _))) => false,
        (Kind::Unmatched, Some((_, matched))) => matched == 0,
        (Kind::Matched | Kind::Seeded, Some((_, matched))) => matched > 0,
        (Kind::Empty | Kind::Probe, Some(_)) => true,
    }
}
