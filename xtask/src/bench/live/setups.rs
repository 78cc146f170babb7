//! What a live case puts on the lab's bridge ports, the programs found
//! there afterwards (queried from the kernel, port by port and hook by
//! hook), and their run-time statistics (`run_time_ns`, `run_cnt`).

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, loaded_programs, tc::TcAttachOptions};
use pygocentrus::{
    datapath::engine::{Engine, Hook as EngineHook},
    rules::Plan,
};

use super::super::{
    attached::Tool,
    cost::rule_spec,
    lab::{CLIENT_PORT, Lab, SERVER_PORT},
    noop,
};

/// The bridge's ports, in the order of [`Site`]s.
pub const PORTS: [&str; 2] = [CLIENT_PORT, SERVER_PORT];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Ingress, Hook::Egress];

    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        }
    }

    fn engine(self) -> EngineHook {
        match self {
            Hook::Ingress => EngineHook::Ingress,
            Hook::Egress => EngineHook::Egress,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Hook::Ingress => "ingress",
            Hook::Egress => "egress",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setup {
    /// The empty classifier, a copy of its own on each port and hook.
    Empty,
    /// The pull probe ([`noop::load_pull_probe`]) at egress, the empty
    /// classifier at ingress; a copy of its own on each port and hook.
    Pull,
    /// `pygocentrus attach --iface br0 FLAGS`, the real binary: one
    /// program per hook, on both ports.
    Tool(String),
    /// The tool's object loaded once per port by the tool's own library
    /// code (maps filled from FLAGS, the bridge's MAC set, as `attach
    /// --iface br0` does), so that each port and hook has a program of its
    /// own: the data and the ACKs of a stream apart.
    PerPort(String),
}

/// One port and hook, and the program the kernel runs there.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    pub hook: Hook,
    pub prog: u32,
}

/// The kernel's statistics of one program: nanoseconds spent in it and
/// times it ran, or the difference of two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub ns: u64,
    pub runs: u64,
}

impl Stat {
    pub fn since(self, before: Stat) -> Stat {
        Stat { ns: self.ns.saturating_sub(before.ns), runs: self.runs.saturating_sub(before.runs) }
    }

    pub fn add(self, other: Stat) -> Stat {
        Stat { ns: self.ns + other.ns, runs: self.runs + other.runs }
    }

    /// ns per run (NaN without runs).
    pub fn per_run(self) -> f64 {
        if self.runs == 0 { f64::NAN } else { self.ns as f64 / self.runs as f64 }
    }
}

/// What keeps the programs attached: dropping it detaches them.
enum Holder {
    Programs(Vec<SchedClassifier>),
    Tool(Tool),
    Engines(Vec<Engine>),
}

pub struct Attached {
    holder: Holder,
    /// Port-major: (client, ingress), (client, egress), (server, …).
    pub sites: Vec<Site>,
}

/// What the classifier reported when it was taken off.
pub struct Seen {
    /// Packets it ran on, and packets its rule matched (`None` for the
    /// bench's own programs, which count nothing).
    pub counted: Option<(u64, u64)>,
}

impl Attached {
    pub fn attach(lab: &Lab, setup: &Setup, binary: &std::path::Path) -> Result<Self> {
        let holder = match setup {
            Setup::Empty | Setup::Pull => {
                let mut progs = Vec::new();
                for _port in PORTS {
                    for hook in Hook::BOTH {
                        let prog = if hook == Hook::Egress && *setup == Setup::Pull {
                            noop::load_pull_probe()?
                        } else {
                            noop::load()?
                        };
                        progs.push(prog);
                    }
                }
                let _in = lab.enter(&lab.bridge)?;
                for (i, prog) in progs.iter_mut().enumerate() {
                    let (port, hook) = (PORTS[i / 2], Hook::BOTH[i % 2]);
                    tcx_attach(prog, port, hook)?;
                }
                Holder::Programs(progs)
            }
            Setup::Tool(flags) => Holder::Tool(Tool::start(lab, binary, flags)?),
            Setup::PerPort(flags) => {
                let contents = Plan { rules: vec![rule_spec(flags)?] }.map_contents()?;
                let mac = lab.bridge_mac()?;
                let mut engines = Vec::new();
                for port in PORTS {
                    let mut engine = Engine::load().context("loading the classifier")?;
                    engine.install(&contents).context("filling the maps")?;
                    engine.set_bridge(Some(mac)).context("telling the classifier the bridge's MAC")?;
                    let _in = lab.enter(&lab.bridge)?;
                    for hook in Hook::BOTH {
                        tcx_attach(engine.program_mut(hook.engine())?, port, hook)?;
                    }
                    engines.push(engine);
                }
                Holder::Engines(engines)
            }
        };
        let sites = query_sites(lab)?;
        Ok(Self { holder, sites })
    }

    /// The statistics of every site's program, now.
    pub fn read(&self) -> Result<Vec<Stat>> {
        let mut by_id: HashMap<u32, Stat> = self.sites.iter().map(|s| (s.prog, Stat::default())).collect();
        let mut found = 0;
        for info in loaded_programs().filter_map(Result::ok) {
            if let Some(stat) = by_id.get_mut(&info.id()) {
                *stat = Stat { ns: info.run_time().as_nanos() as u64, runs: info.run_count() };
                found += 1;
            }
        }
        if found < by_id.len() {
            bail!("some programs on the bridge's ports are no longer loaded");
        }
        Ok(self.sites.iter().map(|s| by_id[&s.prog]).collect())
    }

    /// Takes the programs off, and what the classifier counted meanwhile.
    pub fn detach(self) -> Result<Seen> {
        let counted = match self.holder {
            Holder::Programs(progs) => {
                // Dropping them detaches them.
                drop(progs);
                None
            }
            Holder::Tool(tool) => {
                let s = tool.stop()?;
                Some((s.seen, s.matched))
            }
            Holder::Engines(engines) => {
                let (mut seen, mut matched) = (0, 0);
                for engine in &engines {
                    let counters = engine.counters()?;
                    seen += counters.first().map_or(0, |c| c.seen);
                    matched += counters.get(1).map_or(0, |c| c.matched);
                }
                Some((seen, matched))
            }
        };
        Ok(Seen { counted })
    }
}

fn tcx_attach(prog: &mut SchedClassifier, port: &str, hook: Hook) -> Result<()> {
    prog.attach_with_options(port, hook.attach_type(), TcAttachOptions::TcxOrder(LinkOrder::default()))
        .with_context(|| format!("attaching to {port} {} with TCX", hook.name()))?;
    Ok(())
}

/// The one TCX program on each port and hook of the bridge.
fn query_sites(lab: &Lab) -> Result<Vec<Site>> {
    let _in = lab.enter(&lab.bridge)?;
    let mut sites = Vec::new();
    for name in PORTS {
        for hook in Hook::BOTH {
            let (_, progs) = SchedClassifier::query_tcx(name, hook.attach_type())
                .with_context(|| format!("querying the TCX programs of {name} {}", hook.name()))?;
            let [prog] = progs.as_slice() else {
                bail!("{} TCX programs on {name} {}, expected one", progs.len(), hook.name());
            };
            sites.push(Site { hook, prog: prog.id() });
        }
    }
    Ok(sites)
}

/// The kernel's run-time statistics switched on for as long as this lives:
/// `BPF_ENABLE_STATS` (aya's `enable_stats`), whose file descriptor the
/// kernel counts like a `kernel.bpf_stats_enabled=1` and drops when it is
/// closed, by this process or by its end however it ends (also on SIGKILL).
/// The sysctl's own value is never written, so there is nothing to
/// restore, and no other user of it is overridden.
pub struct StatsOn {
    _fd: std::os::fd::OwnedFd,
    /// `kernel.bpf_stats_enabled` as read before.
    pub sysctl_before: String,
}

pub const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

pub fn sysctl() -> String {
    std::fs::read_to_string(STATS_SYSCTL).map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}

impl StatsOn {
    pub fn enable() -> Result<Self> {
        let sysctl_before = sysctl();
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (the kernel's run-time statistics of BPF programs; Linux 5.8+)")?;
        Ok(Self { _fd: fd, sysctl_before })
    }
}
