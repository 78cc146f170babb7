//! The guard: a small process that outlives a killed run just long enough
//! to take its hooks off.
//!
//! What a run adds that the kernel does not remove when the process dies
//! (cls_bpf filters and clsact on the netlink path, fq qdiscs on any path)
//! is recorded in its state file (see `leftovers.rs`). Before adding any of it,
//! the run starts `pygocentrus guard --run RUN --state FILE` with a pipe
//! as its stdin and never writes to it. The guard blocks reading that pipe; the read returns
//! end-of-file only when every copy of the write end is closed, which
//! happens when the run exits, however it exits (even SIGKILL). A run that
//! detached cleanly has removed its state file, so the guard has nothing to
//! do; otherwise it undoes what the file records.
//!
//! The guard runs in its own process group, so Ctrl-C in a terminal (sent
//! to the foreground group) does not reach it. What kills both at once (the
//! end of a container's PID namespace, a cgroup kill) leaves the state file
//! for the next run's start-up clean-up.
//!
//! The `pygocentrus` binary runs itself as the guard. A process that is not
//! that binary (a test holding a [`crate::Session`]) names one, see
//! [`GuardProgram`]: a test that panics detaches as it unwinds, and one
//! that is killed is cleaned up after by its guard all the same.

use std::{
    io::{ErrorKind, Read as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::{leftovers, netlink::Netlink};
use crate::error::UsageError;

/// The environment variable that names the `pygocentrus` binary, for a
/// process that is not one (a test using [`crate::Session`]).
pub const BIN_ENV: &str = "PYGOCENTRUS_BIN";

/// Which program runs the guard: `pygocentrus guard`, from some binary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GuardProgram {
    /// The running executable: what the `pygocentrus` binary itself uses.
    #[default]
    ThisBinary,
    /// The `pygocentrus` binary at this path.
    Binary(PathBuf),
    /// `$PYGOCENTRUS_BIN`, else `pygocentrus` on `$PATH`; looked up only
    /// when a guard is needed.
    Find,
    /// No guard: what a killed process leaves is removed by the next start
    /// of pygocentrus (or of a session) in that network namespace.
    Off,
}

impl GuardProgram {
    /// The executable to run, or `None` for [`GuardProgram::Off`].
    fn executable(&self) -> Result<Option<PathBuf>, UsageError> {
        match self {
            GuardProgram::ThisBinary => Ok(Some(PathBuf::from("/proc/self/exe"))),
            GuardProgram::Binary(path) => Ok(Some(path.clone())),
            GuardProgram::Off => Ok(None),
            GuardProgram::Find => {
                let from_env = std::env::var_os(BIN_ENV).map(PathBuf::from);
                let on_path = || {
                    std::env::var_os("PATH").and_then(|dirs| {
                        std::env::split_paths(&dirs).map(|d| d.join("pygocentrus")).find(|p| p.is_file())
                    })
                };
                from_env.or_else(on_path).map(Some).ok_or_else(|| {
                    UsageError::Guard(format!(
                        "these hooks (clsact filters or fq) outlive a killed process, and no pygocentrus binary was found \
                         to run the guard that removes them: set {BIN_ENV}, put pygocentrus on PATH, or name it \
                         (Target::guard), or do without (Target::without_guard)"
                    ))
                })
            }
        }
    }
}

/// A running guard. Dropping it closes the pipe and waits for the guard,
/// which by then finds no state file and exits at once.
pub struct Guard {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guard {
    /// Starts a guard for this process in the calling thread's network
    /// namespace (where the hooks are), to clean what state file `state`
    /// records; none with [`GuardProgram::Off`].
    pub fn spawn(program: &GuardProgram, state: &Path) -> Result<Option<Self>> {
        let Some(exe) = program.executable()? else { return Ok(None) };
        let mut child = Command::new(&exe)
            .args(["guard", "--run", leftovers::run_id(), "--state"])
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting the guard process ({})", exe.display()))?;
        let pipe = child.stdin.take();
        Ok(Some(Self { child, pipe }))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// The guard's side: waits for run `run` to end, then cleans what it left
/// as state file `state` says.
pub async fn run(run: &str, state: &Path) -> Result<()> {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("waiting on the pipe from the run"),
        }
    }
    let nl = Netlink::open().context("opening rtnetlink")?;
    let cleaned = leftovers::clean_after(&nl, state).await?;
    if !cleaned.is_empty() {
        eprintln!(
            "pygocentrus: guard: run {run} ended without detaching; removed its hooks from {}",
            cleaned.join(", ")
        );
    }
    Ok(())
}
