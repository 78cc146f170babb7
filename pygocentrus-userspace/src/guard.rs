//! The guard: a small process that outlives a killed run just long enough
//! to take its hooks off.
//!
//! What a run adds that the kernel does not remove when the process dies
//! (cls_bpf filters and clsact on the netlink path, fq qdiscs on any path)
//! is recorded in its state file (see `hooks.rs`). Before adding any of it,
//! the run starts `pygocentrus guard --run RUN` with a pipe as its stdin and
//! never writes to it. The guard blocks reading that pipe; the read returns
//! end-of-file only when every copy of the write end is closed, which
//! happens when the run exits, however it exits (even SIGKILL). A run that
//! detached cleanly has removed its state file, so the guard has nothing to
//! do; otherwise it undoes what the file records.
//!
//! The guard runs in its own process group, so Ctrl-C in a terminal (sent
//! to the foreground group) does not reach it. What kills both at once (the
//! end of a container's PID namespace, a cgroup kill) leaves the state file
//! for the next run's start-up clean-up.

use std::{
    io::{ErrorKind, Read as _},
    os::unix::process::CommandExt as _,
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::{hooks, netlink::Netlink};

/// A running guard. Dropping it closes the pipe and waits for the guard,
/// which by then finds no state file and exits at once.
pub struct Guard {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guard {
    /// Starts a guard for this process in the calling thread's network
    /// namespace (where the hooks are).
    pub fn spawn() -> Result<Self> {
        let mut child = Command::new("/proc/self/exe")
            .args(["guard", "--run", hooks::run_id()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the guard process")?;
        let pipe = child.stdin.take();
        Ok(Self { child, pipe })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// The guard's side: waits for run `run` to end, then cleans what it left.
pub async fn run(run: &str) -> Result<()> {
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
    let cleaned = hooks::clean_after(&nl, run).await?;
    if !cleaned.is_empty() {
        eprintln!(
            "pygocentrus: guard: run {run} ended without detaching; removed its hooks from {}",
            cleaned.join(", ")
        );
    }
    Ok(())
}
