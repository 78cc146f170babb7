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

use crate::{
    cli::HookMode,
    engine::{Engine, Hook},
    netlink::{FqParams, Link, Netlink},
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
        // One process may hold several sets of hooks at once (the sessions
        // of a test process): each has a state file of its own.
        static SETS: AtomicU32 = AtomicU32::new(0);
        let state = state_path(std::process::id(), SETS.fetch_add(1, Ordering::Relaxed));
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
            port.added_fq = ensure_fq(nl, link, fq).await?;
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
            remove_clsact_if_unused(nl, index, &port.name).await;
        }
        if port.added_fq && exists {
            remove_fq(nl, index, &port.name).await;
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
        let mut text = format!("{NETNS_TAG} {}\n", netns_id().unwrap_or_default());
        for (index, p) in &self.ports {
            text.push_str(&format!("{index} {} {} {}\n", p.name, u8::from(p.added_clsact), u8::from(p.added_fq)));
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

/// Puts `fq` at the root of `link` unless it is there already. Returns
/// whether we added it (and must remove it). A root qdisc someone set up
/// (non-zero handle) is not replaced: delay would silently change their
/// shaping.
async fn ensure_fq(nl: &Netlink, link: &Link, fq: &FqParams) -> Result<bool> {
    match nl.root_qdisc(link.index).await? {
        Some((kind, _)) if kind == "fq" => return Ok(false),
        Some((kind, handle)) if handle.major != 0 => {
            return Err(UsageError::Qdisc(format!(
                "{} has a root qdisc '{kind}' of its own; delay and rate need fq there: remove it or leave out --delay/--rate",
                link.name
            ))
            .into());
        }
        _ => {}
    }
    match nl.set_root_fq(link.index, fq).await {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)) => Err(UsageError::Qdisc(
            "this kernel has no fq qdisc, which --delay and --rate need: load it with 'modprobe sch_fq'".to_owned(),
        )
        .into()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("adding an fq qdisc to {}", link.name))),
    }
}

/// Takes our `fq` off `index` again (if it is still ours: still fq).
async fn remove_fq(nl: &Netlink, index: u32, name: &str) {
    match nl.root_qdisc(index).await {
        Ok(Some((kind, _))) if kind == "fq" => {
            if let Err(e) = nl.del_root_qdisc(index).await {
                eprintln!("pygocentrus: warning: removing the fq qdisc of {name}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("pygocentrus: warning: reading the root qdisc of {name}: {e}"),
    }
}

/// The network namespace the calling thread runs in, as `device:inode` of
/// `/proc/thread-self/ns/net`: stable for as long as the namespace exists.
/// (A thread of a test process may have joined another namespace than the
/// process's main thread, which `/proc/self` shows.)
fn netns_id() -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata("/proc/thread-self/ns/net")?;
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
/// loss of the namespace's owner...) left behind, as their state files say:
/// filters and the clsact qdiscs they added, and their fq qdiscs. Returns
/// the interfaces cleaned.
pub async fn clean_leftovers(nl: &Netlink) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let Ok(dir) = fs::read_dir(STATE_DIR) else { return Ok(cleaned) };
    for entry in dir.flatten() {
        let path = entry.path();
        // `PID-N.state` (`PID.state` before there could be several).
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".state"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid as u32 == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        cleaned.extend(clean_state_file(nl, &path).await?);
    }
    Ok(cleaned)
}

/// Removes what a run left, if it left state file `path`: what its guard
/// process does as soon as that run has ended (see `guard.rs`).
pub async fn clean_after(nl: &Netlink, path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    clean_state_file(nl, path).await
}

/// The state file of set `n` of the hooks of process `pid`.
fn state_path(pid: u32, n: u32) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{pid}-{n}.state"))
}

/// Undoes what one state file records, then deletes the file. A state file
/// of another network namespace is left alone: its indexes and names mean
/// nothing here, and a run inside that namespace cleans it.
async fn clean_state_file(nl: &Netlink, path: &Path) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let own_netns = netns_id().context("identifying this network namespace")?;
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let netns = lines.next().and_then(|l| l.strip_prefix(NETNS_TAG)).map(str::trim);
    if netns != Some(own_netns.as_str()) {
        return Ok(cleaned);
    }
    let links = nl.links().await?;
    for line in lines {
        let mut f = line.split_whitespace();
        let (Some(index), Some(name), Some(added)) = (f.next(), f.next(), f.next()) else { continue };
        let added_fq = f.next() == Some("1");
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
        if added_fq {
            remove_fq(nl, index, name).await;
        }
        cleaned.push(name.to_owned());
    }
    fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(cleaned)
}
