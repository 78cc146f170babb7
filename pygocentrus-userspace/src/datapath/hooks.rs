//! Hooking the classifier onto interfaces, and taking it off again so that
//! every interface is left exactly as found.
//!
//! On kernels with TCX (6.6+) each hook is a BPF link owned by this process:
//! if the process dies, even by SIGKILL, the kernel detaches it. On older
//! kernels hooks are cls_bpf filters on a clsact qdisc, which outlive the
//! process; a state file in [`leftovers::state_dir`] records what this process
//! added, and the next start removes what a dead process left behind (see
//! [`super::leftovers`]).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};
use aya::{
    programs::{
        LinkOrder, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};
use clap::ValueEnum;

use super::{
    engine::{Engine, Hook},
    leftovers::{self, run_id},
    netlink::{Link, Netlink},
    qdisc,
};
use crate::{error::UsageError, rules::FqParams};

// `--hook`: TCX links, clsact and cls_bpf filters through netlink, or
// whichever the kernel has (TCX first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookMode {
    Auto,
    Tcx,
    Netlink,
}

/// How hooks are made, once resolved from [`HookMode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Tcx,
    Netlink,
}

impl Method {
    /// The method for `mode` on this kernel; `--hook tcx` on a kernel
    /// without TCX is a usage error, said in one line.
    pub fn resolve(mode: HookMode) -> Result<Self, UsageError> {
        let kernel = KernelVersion::current().ok();
        let has_tcx = kernel.is_some_and(|v| v >= KernelVersion::new(6, 6, 0));
        Ok(match mode {
            HookMode::Tcx if !has_tcx => {
                let version = kernel.map_or_else(|| "this kernel".to_owned(), |v| format!("Linux {v}"));
                return Err(UsageError::Kernel(format!(
                    "{version} has no TCX (it came in 6.6): use --hook netlink (or auto)"
                )));
            }
            HookMode::Tcx => Method::Tcx,
            HookMode::Netlink => Method::Netlink,
            HookMode::Auto if has_tcx => Method::Tcx,
            HookMode::Auto => Method::Netlink,
        })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Tcx => "tcx",
            Method::Netlink => "clsact",
        })
    }
}

struct Port {
    name: String,
    links: Vec<(Hook, SchedClassifierLinkId)>,
    added_clsact: bool,
    /// We replaced the device's default root qdisc with `fq`.
    added_fq: bool,
}

pub struct Hooks {
    method: Method,
    /// Where departure times are set, the `fq` every port needs.
    fq: Option<FqParams>,
    ports: BTreeMap<u32, Port>,
    state: PathBuf,
}

impl Hooks {
    pub fn new(method: Method, fq: Option<FqParams>) -> Self {
        // One process may hold several sets of hooks (the library's
        // sessions): each has its own state file of the run.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let state = leftovers::state_dir().join(format!("{}.{}.state", run_id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        Self { method, fq, ports: BTreeMap::new(), state }
    }

    /// The state file: what the guard of these hooks reads if this process
    /// dies without detaching them.
    pub fn state_file(&self) -> &Path {
        &self.state
    }

    /// Whether every port gets `fq`.
    pub fn has_fq(&self) -> bool {
        self.fq.is_some()
    }

    pub fn method(&self) -> Method {
        self.method
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    pub fn contains(&self, index: u32) -> bool {
        self.ports.contains_key(&index)
    }

    /// The indexes of the hooked interfaces.
    pub fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports.keys().copied()
    }

    /// The name a hooked interface had when it was hooked.
    pub fn name(&self, index: u32) -> Option<String> {
        self.ports.get(&index).map(|p| p.name.clone())
    }

    /// Hooks both directions of `link`. On failure, whatever was done for
    /// this link is undone before the error is returned.
    pub async fn attach(&mut self, engine: &mut Engine, nl: &Netlink, link: &Link) -> Result<()> {
        if self.contains(link.index) {
            return Ok(());
        }
        let mut port = Port { name: link.name.clone(), links: Vec::new(), added_clsact: false, added_fq: false };
        if let Some(fq) = &self.fq {
            port.added_fq = qdisc::ensure_fq(nl, link, fq).await?;
        }
        // Record before going on: a crash from here on must still be
        // cleaned up by the next start.
        self.ports.insert(link.index, port);
        self.save_state();
        let mut result = self.add_clsact(nl, link).await;
        for hook in Hook::BOTH {
            if result.is_err() {
                break;
            }
            match self.attach_one(engine, &link.name, hook) {
                Ok(id) => {
                    if let Some(p) = self.ports.get_mut(&link.index) {
                        p.links.push((hook, id));
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            self.detach(engine, nl, link.index).await;
            return Err(e.context(format!("hooking {}", link.name)));
        }
        Ok(())
    }

    /// On the netlink path, the clsact qdisc the filters hang on.
    async fn add_clsact(&mut self, nl: &Netlink, link: &Link) -> Result<()> {
        if self.method != Method::Netlink || nl.qdisc_kinds(link.index).await?.iter().any(|k| k == "clsact") {
            return Ok(());
        }
        tc::qdisc_add_clsact(&link.name).with_context(|| format!("adding a clsact qdisc to {}", link.name))?;
        if let Some(p) = self.ports.get_mut(&link.index) {
            p.added_clsact = true;
        }
        self.save_state();
        Ok(())
    }

    fn attach_one(&self, engine: &mut Engine, iface: &str, hook: Hook) -> Result<SchedClassifierLinkId> {
        let attach_type = match hook {
            Hook::Ingress => TcAttachType::Ingress,
            Hook::Egress => TcAttachType::Egress,
        };
        let options = match self.method {
            Method::Tcx => TcAttachOptions::TcxOrder(LinkOrder::default()),
            Method::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        };
        let prog = engine.program_mut(hook)?;
        Ok(prog.attach_with_options(iface, attach_type, options)?)
    }

    /// Unhooks one port. Errors are reported, not returned: detaching goes on
    /// for every other hook. A port that vanished took its hooks with it.
    pub async fn detach(&mut self, engine: &mut Engine, nl: &Netlink, index: u32) {
        let Some(port) = self.ports.remove(&index) else { return };
        let exists = nl.links().await.is_ok_and(|ls| ls.iter().any(|l| l.index == index));
        for (hook, id) in port.links {
            let detached = engine.program_mut(hook).map_err(anyhow::Error::from).and_then(|p| Ok(p.detach(id)?));
            if let Err(e) = detached
                && exists
            {
                eprintln!("pygocentrus: warning: detaching {} from {}: {e:#}", hook.program_name(), port.name);
            }
        }
        if port.added_clsact && exists {
            qdisc::remove_clsact_if_unused(nl, index, &port.name).await;
        }
        if port.added_fq && exists {
            qdisc::remove_fq(nl, index, &port.name).await;
        }
        self.save_state();
    }

    pub async fn detach_all(&mut self, engine: &mut Engine, nl: &Netlink) {
        let indexes: Vec<u32> = self.ports.keys().copied().collect();
        for index in indexes {
            self.detach(engine, nl, index).await;
        }
        leftovers::forget(&self.state);
    }

    /// Whether what these hooks add outlives this process if it is killed:
    /// filters and clsact on the netlink path, fq on any path (TCX links
    /// without fq die with their process).
    pub fn leaves_state(&self) -> bool {
        self.method == Method::Netlink || self.fq.is_some()
    }

    /// Writes the state file: what outlives this process if it is killed
    /// (filters and clsact on the netlink path, fq on any path). The
    /// network namespace first (interface indexes only mean something
    /// inside it), then one line per port, `index name added_clsact added_fq`.
    /// TCX links without fq need none.
    fn save_state(&self) {
        if !self.leaves_state() {
            return;
        }
        let ports = self.ports.iter().map(|(index, p)| leftovers::PortRecord {
            index: *index,
            name: &p.name,
            added_clsact: p.added_clsact,
            added_fq: p.added_fq,
        });
        leftovers::save(&self.state, ports);
    }
}
