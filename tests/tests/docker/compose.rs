//! A compose stack of the examples under a project name of the tests' own:
//! brought up service by service, its clients run, its containers'
//! logs and exit codes read, and taken down when dropped.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pygocentrus_tests::{PortHooks, hooks_in};

/// How long one docker or compose command may take. Generous: compose v1
/// is slow to start, and a stop waits for the program to detach.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The compose program: `PYGOCENTRUS_COMPOSE` (e.g. `docker compose`), or
/// `docker-compose` (v1) where installed, else `docker compose` (v2).
fn compose_program() -> Vec<String> {
    if let Ok(words) = std::env::var("PYGOCENTRUS_COMPOSE") {
        return words.split_whitespace().map(str::to_owned).collect();
    }
    let v1 = Command::new("docker-compose").arg("version").output().is_ok_and(|o| o.status.success());
    if v1 { vec!["docker-compose".to_owned()] } else { vec!["docker".to_owned(), "compose".to_owned()] }
}

/// Runs `cmd` to its end, within `timeout` (killed after it), and returns
/// its output.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> Output {
    let described = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {described}: {e}"));
    let read_all = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = read_all(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = read_all(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("waiting for {described}: {e}")) {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("{described} did not end within {timeout:?}; its stderr:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let described = format!("{cmd:?}");
    let out = run_captured(cmd, COMMAND_TIMEOUT);
    assert!(
        out.status.success(),
        "{described} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    run_ok(Command::new("docker").args(args))
}

/// A command running in the background, its stdout collected line by line
/// (its stderr too, apart, for messages). Dropping it kills the command.
pub struct Background {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

/// Collects the lines of `pipe` into `into` until it closes.
fn collect_lines(pipe: impl Read + Send + 'static, into: &Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            into.lock().unwrap_or_else(PoisonError::into_inner).push(line);
        }
    })
}

impl Background {
    pub fn spawn(cmd: &mut Command) -> Self {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        readers.extend(child.stdout.take().map(|out| collect_lines(out, &lines)));
        readers.extend(child.stderr.take().map(|err| collect_lines(err, &errors)));
        Self { child, lines, errors, readers, what }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What it printed on stderr so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until a line satisfies `pred`; panics after `timeout`.
    pub fn wait_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no such line within {timeout:?}:\n{:#?}\nstderr: {:#?}",
                self.what,
                self.lines(),
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the command to end (killing it after `timeout`), and
    /// returns its status and every line it printed.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap_or_else(|e| panic!("waiting for {}: {e}", self.what)) {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not end within {timeout:?}:\n{:#?}\nstderr: {:#?}",
                self.what,
                self.lines(),
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.lines())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One example's compose file under the project `pygocentrus-e2e-NAME`.
/// Creating it removes whatever a crashed earlier run of the same test
/// left; dropping it takes everything down (containers, network).
pub struct Stack {
    project: String,
    file: PathBuf,
    bridge: &'static str,
}

impl Stack {
    /// `file` relative to the repository's root; `bridge`: the fixed name
    /// of its network's bridge.
    pub fn new(name: &str, file: &str, bridge: &'static str) -> Self {
        let stack = Self {
            project: format!("pygocentrus-e2e-{name}"),
            file: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(file),
            bridge,
        };
        stack.down();
        let exists =
            Command::new("ip").args(["link", "show", "dev", bridge]).output().is_ok_and(|o| o.status.success());
        assert!(!exists, "bridge {bridge} exists already: is the example running? (docker-compose -f {file} down)");
        stack
    }

    /// `compose -p PROJECT -f FILE ARGS...`, with `env` for the file's
    /// variables and none of them taken from the test's own environment.
    fn compose(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let program = compose_program();
        let mut cmd = Command::new(&program[0]);
        cmd.args(&program[1..]).arg("-p").arg(&self.project).arg("-f").arg(&self.file).args(args);
        cmd.env_remove("PYGOCENTRUS_ARGS");
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Creates (again) and starts `services` in the background.
    pub fn up(&self, services: &[&str], env: &[(&str, &str)]) {
        let mut args = vec!["up", "-d", "--no-deps", "--force-recreate"];
        args.extend_from_slice(services);
        run_ok(&mut self.compose(&args, env));
    }

    /// `compose run` of `service` with `env` set in its container.
    fn run_command(&self, service: &str, env: &[(&str, &str)]) -> Command {
        let mut args = vec!["run".to_owned(), "--rm".to_owned(), "-T".to_owned(), "--no-deps".to_owned()];
        for (k, v) in env {
            args.extend(["-e".to_owned(), format!("{k}={v}")]);
        }
        args.push(service.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.compose(&args, &[])
    }

    /// Runs a one-off container of `service` to its end; returns its stdout
    /// lines. Panics unless it exits with 0.
    pub fn run(&self, service: &str, env: &[(&str, &str)]) -> Vec<String> {
        run_ok(&mut self.run_command(service, env)).lines().map(str::to_owned).collect()
    }

    /// The same in the background.
    pub fn spawn(&self, service: &str, env: &[(&str, &str)]) -> Background {
        Background::spawn(&mut self.run_command(service, env))
    }

    /// The id of `service`'s container.
    pub fn container(&self, service: &str) -> String {
        let out = run_ok(&mut self.compose(&["ps", "-q", service], &[]));
        let id = out.lines().next().map(str::trim).unwrap_or_default().to_owned();
        assert!(!id.is_empty(), "{service} has no container");
        id
    }

    /// Waits until pygocentrus says it attached to the bridge; returns its
    /// container's id.
    pub fn wait_attached(&self) -> String {
        let id = self.container("pygocentrus");
        let said = format!("attached to bridge {}", self.bridge);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let logs = logs(&id);
            if logs.iter().any(|l| l.contains(&said)) {
                return id;
            }
            let running = docker(&["inspect", "-f", "{{.State.Running}}", &id]).trim() == "true";
            assert!(running && Instant::now() < deadline, "pygocentrus did not attach; its log:\n{}", logs.join("\n"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `compose stop` of `service`: SIGTERM (the compose file's
    /// stop_signal), then SIGKILL if it is still there after 30 s.
    pub fn stop(&self, service: &str) {
        run_ok(&mut self.compose(&["stop", "-t", "30", service], &[]));
    }

    /// `compose down`, logging rather than failing: it also cleans up after
    /// a failed test.
    pub fn down(&self) {
        let out = run_captured(&mut self.compose(&["down", "-t", "30", "--remove-orphans"], &[]), COMMAND_TIMEOUT);
        if !out.status.success() {
            eprintln!("{} down: {}", self.project, String::from_utf8_lossy(&out.stderr).trim());
        }
    }

    /// The bridge's ports (the host ends of the containers' veths).
    pub fn ports(&self) -> Vec<String> {
        let out = run_ok(Command::new("ip").args(["-o", "link", "show", "master", self.bridge]));
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    }

    /// Each port of the bridge, with its hooks.
    pub fn port_hooks(&self) -> Vec<(String, PortHooks)> {
        self.ports().into_iter().map(|p| (p.clone(), hooks_in(None, &p))).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.down();
    }
}

/// Every line a container printed, stdout and stderr.
pub fn logs(id: &str) -> Vec<String> {
    let out = run_captured(Command::new("docker").args(["logs", id]), COMMAND_TIMEOUT);
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.extend(String::from_utf8_lossy(&out.stderr).lines().map(str::to_owned));
    lines
}

/// Follows a container's log (stderr, where pygocentrus writes) until the
/// container stops: start it before stopping the container.
pub fn follow_stderr(id: &str) -> Background {
    let mut cmd = Command::new("sh");
    // docker logs writes the container's stderr on its own stderr.
    cmd.args(["-c", "exec docker logs -f \"$0\" 2>&1", id]);
    Background::spawn(&mut cmd)
}

/// The exit code of a stopped container.
pub fn exit_code(id: &str) -> i32 {
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", id]);
    code.trim().parse().unwrap_or_else(|e| panic!("exit code '{code}' of {id}: {e}"))
}
