//! Hooking the classifier onto interfaces, and taking it off again so that
//! every interface is left exactly as found.
//!
//! On kernels with TCX (6.6+) each hook is a BPF link owned by this process:
//! if the process dies, even by SIGKILL, the kernel detaches it. On older
//! kernels hooks are cls_bpf filters on a clsact qdisc, which outlive the
//! process; a state file under [`STATE_DIR`] records what this process
//! added, and the next start removes what a dead process left behind.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    programs::{
        LinkOrder, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};

use crate::{
    cli::HookMode,
    engine::{Engine, Hook},
    netlink::{Link, Netlink},
    plan::UsageError,
};

pub const STATE_DIR: &str = "/run/pygocentrus";

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
}

pub struct Hooks {
    method: Method,
    ports: BTreeMap<u32, Port>,
    state: PathBuf,
}

impl Hooks {
    pub fn new(method: Method) -> Self {
        let state = Path::new(STATE_DIR).join(format!("{}.state", std::process::id()));
        Self { method, ports: BTreeMap::new(), state }
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
        let mut port = Port { name: link.name.clone(), links: Vec::new(), added_clsact: false };
        if self.method == Method::Netlink {
            let kinds = nl.qdisc_kinds(link.index).await?;
            if !kinds.iter().any(|k| k == "clsact") {
                tc::qdisc_add_clsact(&link.name).with_context(|| format!("adding a clsact qdisc to {}", link.name))?;
                port.added_clsact = true;
            }
        }
        // Record before attaching: a crash between the two must still be
        // cleaned up by the next start.
        self.ports.insert(link.index, port);
        self.save_state();
        let mut result = Ok(());
        for hook in Hook::BOTH {
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
            remove_clsact_if_unused(nl, index, &port.name).await;
        }
        self.save_state();
    }

    pub async fn detach_all(&mut self, engine: &mut Engine, nl: &Netlink) {
        let indexes: Vec<u32> = self.ports.keys().copied().collect();
        for index in indexes {
            self.detach(engine, nl, index).await;
        }
        if let Err(e) = fs::remove_file(&self.state)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("pygocentrus: warning: removing {}: {e}", self.state.display());
        }
    }

    /// Writes the state file of the netlink path: the network namespace
    /// first (interface indexes only mean something inside it), then one
    /// line per port, `index name added_clsact`. TCX needs none.
    fn save_state(&self) {
        if self.method != Method::Netlink {
            return;
        }
        let mut text = format!("{NETNS_TAG} {}\n", netns_id().unwrap_or_default());
        for (index, p) in &self.ports {
            text.push_str(&format!("{index} {} {}\n", p.name, u8::from(p.added_clsact)));
        }
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(STATE_DIR)?;
            let tmp = self.state.with_extension("tmp");
            fs::File::create(&tmp)?.write_all(text.as_bytes())?;
            fs::rename(&tmp, &self.state)
        };
        if let Err(e) = write() {
            eprintln!("pygocentrus: warning: writing {}: {e}", self.state.display());
        }
    }
}

const NETNS_TAG: &str = "netns";

/// The network namespace this process runs in, as `device:inode` of
/// `/proc/self/ns/net`: stable for as long as the namespace exists.
fn netns_id() -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata("/proc/self/ns/net")?;
    Ok(format!("{}:{}", meta.dev(), meta.ino()))
}

/// Deletes a clsact qdisc we added, unless someone else's filters now live
/// on it.
async fn remove_clsact_if_unused(nl: &Netlink, index: u32, name: &str) {
    match nl.filter_count(index).await {
        Ok(0) => {
            if let Err(e) = nl.del_clsact(index).await {
                eprintln!("pygocentrus: warning: removing the clsact qdisc of {name}: {e}");
            }
        }
        Ok(_) => eprintln!("pygocentrus: leaving the clsact qdisc of {name}: other filters use it"),
        Err(e) => eprintln!("pygocentrus: warning: listing filters of {name}: {e}"),
    }
}

/// Removes what earlier runs that died without detaching (SIGKILL, power
/// loss of the namespace's owner...) left on the netlink path: their filters
/// and the clsact qdiscs they added. Returns the interfaces cleaned.
pub async fn clean_leftovers(nl: &Netlink) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let Ok(dir) = fs::read_dir(STATE_DIR) else { return Ok(cleaned) };
    let links = nl.links().await?;
    let own_netns = netns_id().context("identifying this network namespace")?;
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".state"))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.lines();
        let netns = lines.next().and_then(|l| l.strip_prefix(NETNS_TAG)).map(str::trim);
        if netns != Some(own_netns.as_str()) {
            // Another namespace's leftovers: its indexes and names mean
            // nothing here; a run inside that namespace cleans them.
            continue;
        }
        for line in lines {
            let mut f = line.split_whitespace();
            let (Some(index), Some(name), Some(added)) = (f.next(), f.next(), f.next()) else { continue };
            let Ok(index) = index.parse::<u32>() else { continue };
            if !links.iter().any(|l| l.index == index && l.name == name) {
                continue;
            }
            for hook in Hook::BOTH {
                let attach_type = match hook {
                    Hook::Ingress => TcAttachType::Ingress,
                    Hook::Egress => TcAttachType::Egress,
                };
                match tc::qdisc_detach_program(name, attach_type, hook.program_name()) {
                    Ok(()) => {}
                    Err(tc::TcError::IoError(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => eprintln!("pygocentrus: warning: removing a leftover filter from {name}: {e}"),
                }
            }
            if added == "1" {
                remove_clsact_if_unused(nl, index, name).await;
            }
            cleaned.push(name.to_owned());
        }
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(cleaned)
}
