//! What a run leaves that outlives it if it is killed, and removing it:
//! state files under [`state_dir`], one per set of hooks, record the
//! filters, clsact and fq qdiscs a run added; the next start (or the run's
//! guard) undoes what a dead run's files record.
//!
//! State files are named by the run (see [`run_id`]), not by PID alone: in
//! a container without `pid: host` every run is PID 1, so a PID cannot tell
//! a dead run's leftovers from a live run's hooks. Each run holds an
//! exclusive `flock` on its own lock file for as long as it lives; a lock
//! that can be taken means the run is gone, whatever its PID names now.
//!
//! Nothing in the directory is trusted that only root could not have
//! written: the directory is made 0700 and refused (one line, exit 2) if
//! it is a symbolic link, not root's, or writable by its group or others;
//! files are made with `O_EXCL` and mode 0600, never through a symbolic
//! link; a file is read only if it is a regular file of root's that only
//! root can write (a FIFO named like a lock would block the open), and any
//! other is left alone with a warning.

use std::{
    collections::BTreeSet,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock, PoisonError},
};

use anyhow::{Context as _, Result};
use aya::programs::{TcAttachType, tc};
use nix::fcntl::{Flock, FlockArg};

use super::{engine::Hook, netlink::Netlink, qdisc};
use crate::error::UsageError;

/// Where state files go by default.
pub const STATE_DIR: &str = "/run/pygocentrus";

/// The environment variable that puts state files elsewhere than
/// [`STATE_DIR`]: the tests give each lab a directory of its own.
pub const STATE_DIR_ENV: &str = "PYGOCENTRUS_STATE_DIR";

/// The state directory: `$PYGOCENTRUS_STATE_DIR`, else [`STATE_DIR`]. The
/// guard inherits the variable with the rest of the environment.
pub fn state_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os(STATE_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(STATE_DIR), PathBuf::from)
    })
}

const NETNS_TAG: &str = "netns";

/// One hooked port, as a state file records it.
pub(super) struct PortRecord<'a> {
    pub index: u32,
    pub name: &'a str,
    pub added_clsact: bool,
    pub added_fq: bool,
}

/// Writes state file `path`: what outlives this process if it is killed
/// (filters and clsact on the netlink path, fq on any path). The network
/// namespace first (interface indexes only mean something inside it), then
/// one line per port, `index name added_clsact added_fq`.
pub(super) fn save<'a>(path: &Path, ports: impl Iterator<Item = PortRecord<'a>>) {
    let mut text = format!("{NETNS_TAG} {}\n", netns_id().unwrap_or_default());
    for p in ports {
        text.push_str(&format!("{} {} {} {}\n", p.index, p.name, u8::from(p.added_clsact), u8::from(p.added_fq)));
    }
    let mut lock = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut write = || -> std::io::Result<()> {
        lock_run(&mut lock)?;
        write_atomically(path, text.as_bytes())
    };
    if let Err(e) = write() {
        eprintln!("pygocentrus: warning: writing {}: {e}", path.display());
    }
}

/// Writes `path` through a temporary file beside it, renamed over it: a
/// reader sees the old contents or the new, never part. The temporary
/// file is made anew (`O_EXCL`, mode 0600): a file or symbolic link
/// already there under its name is removed, never written through.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let create =
        || OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp);
    let mut file = match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp)?;
            create()?
        }
        other => other?,
    };
    file.write_all(bytes)?;
    fs::rename(&tmp, path)
}

/// Makes the state directory if it is missing (0700, whatever the umask),
/// and checks it: what a run that leaves state does before it adds
/// anything.
pub fn prepare() -> Result<(), UsageError> {
    let dir = state_dir();
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        // The umask may have taken bits off, never added any.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| UsageError::StateDir(format!("state directory {}: {e}", dir.display())))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(UsageError::StateDir(format!("creating the state directory {}: {e}", dir.display()))),
    }
    check_dir(dir)
}

/// Refuses a state directory that someone other than root (or this
/// process's user) could have put files in: one owned by another user,
/// writable by its group or by others, a symbolic link, not a directory.
/// A planted file there could make this run write where it should not, or
/// remove what it did not add.
fn check_dir(dir: &Path) -> Result<(), UsageError> {
    let refuse = |why: String| {
        UsageError::StateDir(format!(
            "refusing the state directory {}: {why} (it must be a directory owned by root, mode 0700 or 0755; remove it and pygocentrus makes it)",
            dir.display()
        ))
    };
    let meta = fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".to_owned()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(refuse(format!("it is owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(format!("its group or others can write to it (mode {:04o})", meta.mode() & 0o7777)));
    }
    Ok(())
}

/// Root, or the user this process runs as.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Opens a file of the state directory to read it, if it is what this
/// tool writes there: a regular file (not a FIFO, which would block the
/// open, nor a symbolic link, which is not followed), owned by root (or
/// this process's user), writable by its owner alone.
fn open_trusted(path: &Path) -> io::Result<File> {
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    let why = if !meta.is_file() {
        "not a regular file"
    } else if !trusted_owner(meta.uid()) {
        "not owned by root"
    } else if meta.mode() & 0o022 != 0 {
        "writable by others than its owner"
    } else {
        return Ok(file);
    };
    Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
}

/// Says that `path`, not what this tool writes, is left alone.
fn ignoring(path: &Path, e: &io::Error) {
    eprintln!("pygocentrus: warning: ignoring {}: {e}", path.display());
}

/// Removes state file `path` of hooks all detached, and the run's lock
/// file with its last one.
pub(super) fn forget(path: &Path) {
    let mut lock = RUN_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(e) = fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("pygocentrus: warning: removing {}: {e}", path.display());
    }
    if lock.is_some() && state_files(run_id()).is_empty() {
        remove_lock_file(run_id());
        *lock = None;
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

/// This run's name, unique on the machine: `PID-RANDOM`.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| format!("{}-{:016x}", std::process::id(), rand::random::<u64>()))
}

/// The lock that says this run is alive: an exclusive `flock` on
/// `RUN.lock` in [`state_dir`], taken before the run's first state file
/// is written and given up (the file removed) when its last one is. The
/// kernel releases it however the process dies.
static RUN_LOCK: Mutex<Option<Flock<fs::File>>> = Mutex::new(None);

fn lock_run(held: &mut Option<Flock<fs::File>>) -> std::io::Result<()> {
    if held.is_none() {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(lock_path(run_id()))?;
        *held = Some(Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| std::io::Error::from(e))?);
    }
    Ok(())
}

fn lock_path(run: &str) -> PathBuf {
    state_dir().join(format!("{run}.lock"))
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
    let path = lock_path(run);
    let file = match open_trusted(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        // Not a lock this tool made: leave the run's files alone.
        Err(e) => {
            ignoring(&path, &e);
            return true;
        }
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_) => false,
        Err((_, errno)) => errno == nix::errno::Errno::EWOULDBLOCK,
    }
}

/// The state files of `run`: `RUN.N.state`, and `RUN.state` as earlier
/// versions named them.
fn state_files(run: &str) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(state_dir()) else { return Vec::new() };
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
    match fs::symlink_metadata(state_dir()) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => check_dir(state_dir())?,
    }
    let Ok(dir) = fs::read_dir(state_dir()) else { return Ok(Vec::new()) };
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
    if fs::symlink_metadata(path).is_err() {
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
    // A run writes a line per port: far less than this.
    const MAX_STATE: u64 = 1 << 20;
    let mut text = String::new();
    let read = open_trusted(path).and_then(|f| f.take(MAX_STATE).read_to_string(&mut text));
    match read {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            ignoring(path, &e);
            return Ok(None);
        }
    }
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
            qdisc::remove_clsact_if_unused(nl, index, name).await;
        }
        if added_fq {
            qdisc::remove_fq(nl, index, name).await;
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

    /// A temporary file name planted as a symbolic link (to a file of
    /// root's) is removed and the file made anew: nothing is written
    /// through the link.
    #[test]
    fn a_planted_temporary_file_is_not_written_through() {
        let dir = std::env::temp_dir().join(format!("pyg-leftovers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let state = dir.join("1234-00ff00ff00ff00ff.0.state");
        std::os::unix::fs::symlink(&victim, state.with_extension("tmp")).unwrap();
        write_atomically(&state, b"netns 1:2\n").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(fs::read_to_string(&state).unwrap(), "netns 1:2\n");
        assert_eq!(fs::symlink_metadata(&state).unwrap().mode() & 0o777, 0o600);
        // What is read back is checked: a symbolic link or a FIFO is not.
        std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
        assert!(open_trusted(&dir.join("link")).is_err(), "a symbolic link was followed");
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_trusted(&dir.join("fifo")).is_err(), "a FIFO was opened as a state file");
        assert!(open_trusted(&state).is_ok());
        fs::remove_dir_all(&dir).unwrap();
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
