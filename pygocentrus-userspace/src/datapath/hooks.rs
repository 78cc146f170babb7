//! Hooking the classifier onto interfaces, and taking it off again so that
//! every interface is left exactly as found.
//!
//! On kernels with TCX (6.6+) each hook is a BPF link owned by this process:
//! if the process dies, even by SIGKILL, the kernel detaches it. On older
//! kernels hooks are cls_bpf filters on a clsact qdisc, which outlive the
//! process; a state file under [`STATE_DIR`] records what this process
//! added, and the next start removes what a dead process left behind.
//!
//! State files are named by the run (see [`run_id`]), not by PID alone: in
//! a container without `pid: host` every run is PID 1, so a PID cannot tell
//! a dead run's leftovers from a live run's hooks. Each run holds an
//! exclusive `flock` on its own lock file for as long as it lives; a lock
//! that can be taken means the run is gone, whatever its PID names now.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Mutex, OnceLock, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
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
use nix::fcntl::{Flock, FlockArg};

use super::{
    engine::{Engine, Hook},
    netlink::{Link, Netlink},
};
use crate::{error::UsageError, rules::FqParams};

pub const STATE_DIR: &str = "/run/pygocentrus";

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
        let state = Path::new(STATE_DIR).join(format!("{}.{}.state", run_id(), NEXT.fetch_add(1, Ordering::Relaxed)));
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
        let mut lock = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = fs::remove_file(&self.state)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("pygocentrus: warning: removing {}: {e}", self.state.display());
        }
        if lock.is_some() && state_files(run_id()).is_empty() {
            remove_lock_file(run_id());
            *lock = None;
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
        let mut lock = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let mut write = || -> std::io::Result<()> {
            fs::create_dir_all(STATE_DIR)?;
            lock_run(&mut lock)?;
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
            return Err(UsageError::ForeignRootQdisc { iface: link.name.clone(), kind }.into());
        }
        _ => {}
    }
    match nl.set_root_fq(link.index, fq).await {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.errno(), Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)) => {
            Err(UsageError::NoFq.into())
        }
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

/// This run's name, unique on the machine: `PID-RANDOM`.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()))
}

/// The lock that says this run is alive: an exclusive `flock` on
/// `STATE_DIR/RUN.lock`, taken before the run's first state file is
/// written and given up (the file removed) when its last one is. The
/// kernel releases it however the process dies.
static RUN_LOCK: Mutex<Option<Flock<fs::File>>> = Mutex::new(None);

fn lock_run(held: &mut Option<Flock<fs::File>>) -> std::io::Result<()> {
    if held.is_none() {
        let file = fs::File::create(lock_path(run_id()))?;
        *held = Some(Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| std::io::Error::from(e))?);
    }
    Ok(())
}

fn lock_path(run: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{run}.lock"))
}

/// Whether run `run` (a name from [`run_id`], or a bare PID as state files
/// of earlier versions were named) is still alive.
fn run_alive(run: &str) -> bool {
    if run == run_id() {
        return true;
    }
    if run.bytes().all(|b| b.is_ascii_digit()) {
        return Path::new("/proc").join(run).exists();
    }
    let Ok(file) = fs::File::open(lock_path(run)) else { return false };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The state files of `run`: `RUN.N.state`, and `RUN.state` as earlier
/// versions named them.
fn state_files(run: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(STATE_DIR) else { return Vec::new() };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(state_run).is_some_and(|r| r == run))
        .collect()
}

/// The run a state file's name belongs to.
fn state_run(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".state")?;
    Some(stem.split_once('.').map_or(stem, |(run, _)| run))
}

/// Removes what earlier runs that died without detaching (SIGKILL, power
/// loss of the namespace's owner...) left behind, as their state files say:
/// filters and the clsact qdiscs they added, and their fq qdiscs. Returns
/// the interfaces cleaned.
pub async fn clean_leftovers(nl: &Netlink) -> Result<Vec<String>> {
    let Ok(dir) = fs::read_dir(STATE_DIR) else { return Ok(Vec::new()) };
    // Runs with state files, and runs that died between taking their lock
    // and writing their first state file.
    let runs: BTreeSet<String> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".lock").or_else(|| state_run(&name)).map(str::to_owned)
        })
        .collect();
    let mut cleaned = Vec::new();
    for run in runs.iter().filter(|r| !run_alive(r)) {
        cleaned.extend(clean_run(nl, run).await?);
    }
    Ok(cleaned)
}

/// Removes what run `run` left, if it left state files: what the next
/// start does if the run's guard died with it. The run's lock file goes
/// once its state files are all gone.
async fn clean_run(nl: &Netlink, run: &str) -> Result<Vec<String>> {
    let mut cleaned = Vec::new();
    let mut left = false;
    for path in state_files(run) {
        match clean_state_file(nl, &path).await? {
            Some(names) => cleaned.extend(names),
            None => left = true,
        }
    }
    if !left {
        remove_lock_file(run);
    }
    Ok(cleaned)
}

/// Removes what a set of hooks left, if it left state file `path`: what
/// its guard process does as soon as the run has ended (see `guard.rs`).
/// The run's lock file goes with its last state file.
pub async fn clean_after(nl: &Netlink, path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let cleaned = clean_state_file(nl, path).await?.unwrap_or_default();
    if let Some(run) = path.file_name().and_then(|n| n.to_str()).and_then(state_run)
        && state_files(run).is_empty()
    {
        remove_lock_file(run);
    }
    Ok(cleaned)
}

fn remove_lock_file(run: &str) {
    if let Err(e) = fs::remove_file(lock_path(run))
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("pygocentrus: warning: removing {}: {e}", lock_path(run).display());
    }
}

/// Undoes what one state file records, then deletes the file. A state file
/// of another network namespace is left alone (`None`): its indexes and
/// names mean nothing here, and a run inside that namespace cleans it.
async fn clean_state_file(nl: &Netlink, path: &Path) -> Result<Option<Vec<String>>> {
    let mut cleaned = Vec::new();
    let own_netns = netns_id().context("identifying this network namespace")?;
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines();
    let netns = lines.next().and_then(|l| l.strip_prefix(NETNS_TAG)).map(str::trim);
    if netns != Some(own_netns.as_str()) {
        return Ok(None);
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
    // The guard and a new start may both be cleaning a dead run.
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", path.display()));
        }
        _ => {}
    }
    Ok(Some(cleaned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_name_their_run() {
        assert_eq!(state_run("1234-00ff00ff00ff00ff.0.state"), Some("1234-00ff00ff00ff00ff"));
        assert_eq!(state_run("1234-00ff00ff00ff00ff.12.state"), Some("1234-00ff00ff00ff00ff"));
        // As earlier versions named them: by PID alone.
        assert_eq!(state_run("1234.state"), Some("1234"));
        assert_eq!(state_run("1234-00ff00ff00ff00ff.lock"), None);
        assert_eq!(state_run("1234.0.tmp"), None);
    }

    #[test]
    fn run_ids_differ_from_pids_and_stay_put() {
        let id = run_id();
        assert_eq!(id, run_id());
        let (pid, random) = id.split_once('-').expect("PID-RANDOM");
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(random.len(), 16);
        assert!(!id.contains('.'), "a run id must not contain the state files' separator");
    }
}
