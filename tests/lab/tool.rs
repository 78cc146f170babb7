//! The real binary, run inside a lab's host namespace, with its output
//! captured line by line as it comes.

use std::{
    fmt,
    io::{BufRead as _, BufReader, Read},
    marker::PhantomData,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

use crate::{Lab, binary};

/// How long the tool may take to attach, or to exit once told to. Generous:
/// loading and verifying the program on a loaded CI machine is slow.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Streams not yet at end of file.
    open: u8,
}

#[derive(Default)]
struct Captured {
    lines: Mutex<Lines>,
    changed: Condvar,
}

impl Captured {
    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running `pygocentrus` (or a test process holding a session, see
/// [`Tool::spawn_test`]). Dropping it kills the process; it borrows its
/// lab, so it always ends before the lab's namespaces are deleted.
pub struct Tool<'lab> {
    child: Child,
    captured: Arc<Captured>,
    readers: Vec<JoinHandle<()>>,
    done: bool,
    _lab: PhantomData<&'lab Lab>,
}

/// What a finished run left: its exit status and every line it printed.
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Lab {
    /// Starts `pygocentrus attach ARGS...` in the host namespace.
    pub fn spawn(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        Tool::spawn(self.tool_command(&[], args))
    }

    /// Starts it as user and group 65534 with no capabilities.
    pub fn spawn_unprivileged(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        let setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
        Tool::spawn(self.tool_command(&setpriv, args))
    }

    /// Starts the tool in a PID namespace of its own, where it is PID 1 (as
    /// in a container without `pid: host`), and waits until every hook is
    /// in place. The returned tool is `unshare`; [`Tool::inner`] is the
    /// tool itself. Killing PID 1 ends the namespace: its guard dies too.
    pub fn attach_as_pid_1(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        let unshare = ["unshare", "--pid", "--fork", "--kill-child"];
        Tool::spawn(self.tool_command(&unshare, args)).attached(args)
    }

    /// Starts the tool and waits until it says every hook is in place.
    pub fn attach(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        self.spawn(args).attached(args)
    }

    /// Runs the tool to its end (bad input, --duration).
    pub fn run(&self, args: &[impl AsRef<str>]) -> Outcome {
        self.spawn(args).wait(TOOL_TIMEOUT)
    }

    /// Runs the tool to its end with more environment variables.
    pub fn run_env(&self, env: &[(&str, &str)], args: &[impl AsRef<str>]) -> Outcome {
        let mut cmd = self.tool_command(&[], args);
        cmd.envs(env.iter().copied());
        Tool::spawn(cmd).wait(TOOL_TIMEOUT)
    }

    /// Starts `pygocentrus attach ARGS...` under `wrapper` (a command that
    /// runs the rest of its arguments, e.g. `setpriv ...`), with more
    /// environment variables, without waiting.
    pub fn spawn_with(&self, wrapper: &[&str], env: &[(&str, &str)], args: &[impl AsRef<str>]) -> Tool<'_> {
        let mut cmd = self.tool_command(wrapper, args);
        cmd.envs(env.iter().copied());
        Tool::spawn(cmd)
    }

    /// [`Lab::spawn_with`], and waits until every hook is in place.
    pub fn attach_with(&self, wrapper: &[&str], env: &[(&str, &str)], args: &[impl AsRef<str>]) -> Tool<'_> {
        self.spawn_with(wrapper, env, args).attached(args)
    }

    fn tool_command(&self, wrapper: &[&str], args: &[impl AsRef<str>]) -> Command {
        self.subcommand(wrapper, "attach", args)
    }

    fn subcommand(&self, wrapper: &[&str], sub: &str, args: &[impl AsRef<str>]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.host()])
            .args(wrapper)
            .arg(binary())
            .arg(sub)
            .args(args.iter().map(AsRef::as_ref));
        cmd
    }

    /// Starts `pygocentrus serve ARGS...` in the host namespace, without
    /// waiting.
    pub fn spawn_serve(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        Tool::spawn(self.subcommand(&[], "serve", args))
    }

    /// Starts `pygocentrus serve ARGS...` and waits until its API answers.
    pub fn serve(&self, args: &[impl AsRef<str>]) -> Tool<'_> {
        let tool = self.spawn_serve(args);
        if tool.wait_stderr("serving the API", TOOL_TIMEOUT).is_none() {
            let outcome = tool.stop(Signal::SIGKILL);
            panic!("pygocentrus serve did not start:\n{outcome}");
        }
        tool
    }

    /// Runs `pygocentrus SUB ARGS...` (`set`, `status`, `reset`) to its end.
    pub fn run_sub(&self, sub: &str, args: &[impl AsRef<str>]) -> Outcome {
        Tool::spawn(self.subcommand(&[], sub, args)).wait(TOOL_TIMEOUT)
    }
}

impl Tool<'static> {
    /// Starts `pygocentrus attach ARGS...` in the test's own network
    /// namespace (where Docker's bridges and veths are), not in a lab.
    pub fn spawn_here(args: &[impl AsRef<str>]) -> Self {
        let mut cmd = Command::new(binary());
        cmd.arg("attach").args(args.iter().map(AsRef::as_ref));
        Self::spawn(cmd)
    }

    /// Like [`Tool::spawn_here`], and waits until every hook is in place.
    pub fn attach_here(args: &[impl AsRef<str>]) -> Self {
        Self::spawn_here(args).attached(args)
    }

    /// Runs test `name` of this very test executable in a process of its
    /// own, with `env` (`--exact --ignored --nocapture`: a helper marked
    /// `#[ignore]` runs, and prints as it goes), to see what a test process
    /// that is killed leaves behind.
    pub fn spawn_test(name: &str, env: &[(&str, &str)]) -> Self {
        let exe = std::env::current_exe().expect("the path of the test executable");
        let mut cmd = Command::new(exe);
        cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]).envs(env.iter().copied());
        Self::spawn(cmd)
    }
}

impl Tool<'_> {
    /// Waits for the line saying every hook is in place; kills the tool
    /// and panics, showing its output, if it does not come.
    fn attached(self, args: &[impl AsRef<str>]) -> Self {
        if self.wait_stderr("attached", TOOL_TIMEOUT).is_none() {
            let outcome = self.stop(Signal::SIGKILL);
            let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
            panic!("pygocentrus attach {} did not attach:\n{outcome}", args.join(" "));
        }
        self
    }

    fn spawn(mut cmd: Command) -> Self {
        // `ip netns exec` execs the command: the child is the tool itself.
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let captured = Arc::new(Captured::default());
        captured.lock().open = 2;
        let stdout = child.stdout.take().map(|s| reader(&captured, s, |l| &mut l.stdout));
        let stderr = child.stderr.take().map(|s| reader(&captured, s, |l| &mut l.stderr));
        Self { child, captured, readers: stdout.into_iter().chain(stderr).collect(), done: false, _lab: PhantomData }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    /// The tool's guard process (it starts one when what it adds would
    /// outlive it: netlink filters, fq), if it has one: a child of any of
    /// its threads (a session starts it from a thread of its own).
    pub fn guard(&self) -> Option<Pid> {
        first_child(self.pid())
    }

    /// The guard of the tool run under a wrapper ([`Tool::inner`]).
    pub fn inner_guard(&self) -> Option<Pid> {
        first_child(self.inner())
    }

    /// The first child of the process started: the tool itself when that
    /// was a wrapper such as `unshare --fork`.
    pub fn inner(&self) -> Pid {
        let pid = self.pid();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().filter_map(|p| p.parse().ok()).map(Pid::from_raw).next().expect("no child")
    }

    /// Kills the tool and its guard together with SIGKILL, guard first, as
    /// when a container's PID namespace ends: what the run added stays.
    pub fn kill_with_guard(self) -> Outcome {
        let guard = self.guard().expect("no guard process: the run added nothing that outlives it");
        nix::sys::signal::kill(guard, Signal::SIGKILL).expect("killing the guard");
        self.stop(Signal::SIGKILL)
    }

    /// Waits for a line on stderr containing `needle`; `None` after
    /// `timeout`, or as soon as the process closed its output without one.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.captured.lock();
        loop {
            if let Some(line) = lines.stderr.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if lines.open == 0 || left.is_zero() {
                return None;
            }
            lines = self.captured.changed.wait_timeout(lines, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// The stderr lines printed so far.
    pub fn stderr(&self) -> Vec<String> {
        self.captured.lock().stderr.clone()
    }

    pub fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(self.pid(), signal).unwrap_or_else(|e| panic!("sending {signal}: {e}"));
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop(self, signal: Signal) -> Outcome {
        self.signal(signal);
        self.wait(TOOL_TIMEOUT)
    }

    /// Ends the run the normal way (SIGTERM) and checks it exits 0.
    pub fn terminate(self) -> Outcome {
        let outcome = self.stop(Signal::SIGTERM);
        outcome.assert_exit(0);
        outcome
    }

    /// Waits for the process to end by itself; kills it and panics after
    /// `timeout`.
    pub fn wait(mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("waiting for pygocentrus: {e}")) {
                return self.collect(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().unwrap_or_else(|e| panic!("waiting for pygocentrus: {e}"));
                panic!("pygocentrus still ran after {timeout:?}; killed:\n{}", self.collect(status));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn collect(&mut self, status: ExitStatus) -> Outcome {
        self.done = true;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let lines = std::mem::take(&mut *self.captured.lock());
        Outcome { status, stdout: lines.stdout, stderr: lines.stderr }
    }
}

impl Drop for Tool<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            for reader in self.readers.drain(..) {
                let _ = reader.join();
            }
        }
    }
}

/// Copies lines of `stream` into the captured output as they arrive.
fn reader(
    captured: &Arc<Captured>,
    stream: impl Read + Send + 'static,
    pick: fn(&mut Lines) -> &mut Vec<String>,
) -> JoinHandle<()> {
    let captured = Arc::clone(captured);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            pick(&mut captured.lock()).push(line);
            captured.changed.notify_all();
        }
        captured.lock().open -= 1;
        captured.changed.notify_all();
    })
}

impl Outcome {
    /// Panics, showing the output, unless the exit status is `code`.
    pub fn assert_exit(&self, code: i32) {
        assert_eq!(self.status.code(), Some(code), "unexpected exit status:\n{self}");
    }

    /// The `--json` summary line.
    pub fn summary(&self) -> Value {
        self.stdout
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or_else(|| panic!("no JSON summary on stdout:\n{self}"))
    }

    /// Counter `name` of rule 1 in the `--json` summary.
    pub fn counter(&self, name: &str) -> u64 {
        let summary = self.summary();
        summary["rules"][0][name].as_u64().unwrap_or_else(|| panic!("no counter {name} in the summary {summary}"))
    }

    pub fn stderr_has(&self, needle: &str) -> bool {
        self.stderr.iter().any(|l| l.contains(needle))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "status: {}", self.status)?;
        writeln!(f, "stderr:")?;
        for l in &self.stderr {
            writeln!(f, "  {l}")?;
        }
        writeln!(f, "stdout:")?;
        for l in &self.stdout {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

/// The first child of any thread of `pid`.
fn first_child(pid: Pid) -> Option<Pid> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| children.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<_>>())
        .map(Pid::from_raw)
        .next()
}
