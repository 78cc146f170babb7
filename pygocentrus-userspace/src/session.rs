//! pygocentrus as a library, for tests: a [`Session`] attaches to a bridge,
//! an interface, a container or a namespace, as `pygocentrus attach` does,
//! and changes its faults live, as `serve` does, from the test's own code.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use pygocentrus::{Faults, Session, Target};
//!
//! # fn main() -> anyhow::Result<()> {
//! // Hooked on every port of br0, no fault yet: every packet passes.
//! let session = Session::attach(Target::iface("br0"), Faults::none())?;
//! // Every packet to or from 198.18.0.2:6379 vanishes, from now on.
//! session.set_faults(Faults::rule().ip([198, 18, 0, 2]).port(6379).drop(100.0))?;
//! // ... the code under test meets a dead Redis ...
//! assert!(session.counters()?.sum().dropped > 0);
//! // Back to normal, on the same hooks: open connections live on.
//! session.set_faults(Faults::none())?;
//! // The same rules as attach's flags or a config file's [[rule]]s.
//! session.set_faults(Faults::parse("--port 6379 --direction from --delay 50ms")?)?;
//! drop(session); // every hook off, every qdisc as it was
//! # Ok(())
//! # }
//! ```
//!
//! Underneath it is `serve` without the HTTP: [`Attachment::open`] as
//! `attach` and `serve` start, then [`crate::control::live`], the loop that
//! follows the target (ports that join the bridge, a container that
//! restarts) and puts new rules to work through the maps alone. It runs on
//! a thread of its own, with a runtime of its own, so a session works the
//! same from a plain `#[test]` and from an async one.
//!
//! Dropping the session detaches, as `attach` does when it stops: every
//! hook off, and the `fq` qdiscs it put on the ports removed. A test that
//! panics detaches as it unwinds. A test process that is killed (a
//! timeout, SIGKILL, `panic = "abort"`) cannot: for what outlives it (the
//! clsact filters of kernels without TCX, the `fq` qdiscs) the session
//! starts the same guard process as `attach` (see `guard.rs`), which
//! removes them as soon as the process is gone. The guard is the
//! `pygocentrus` binary: named with [`Target::guard`], else
//! `$PYGOCENTRUS_BIN`, else `pygocentrus` on `$PATH`; attaching is refused
//! when hooks that need one would be left without one, unless the test
//! says [`Target::without_guard`] (then the next start of pygocentrus in
//! that namespace removes the leftovers).

use std::{
    fmt,
    fs::File,
    net::IpAddr,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};
use tokio::sync::{mpsc, oneshot};

use crate::{
    control::{
        attachment::{Attachment, Fq},
        live::{EngineRequest, SERVE_FQ, live},
        stats::Reading,
    },
    datapath::{guard::GuardProgram, hooks::HookMode, privileges},
    error::UsageError,
    rules::{
        ConfigFile, Direction, Plan, Proto, RuleArgs, RuleSpec,
        args::parse_flags,
        units::{parse_percent, parse_rate},
    },
    targets::Scope,
};

/// What a [`Session`] hooks, and how: `attach`'s `--iface`, `--container`
/// or `--netns`, and `--hook`.
#[derive(Clone, Debug)]
pub struct Target {
    scope: Scope,
    within: Option<PathBuf>,
    guard: GuardProgram,
}

impl Target {
    fn scope(iface: Option<String>, container: Option<String>, netns: Option<String>) -> Self {
        Self { scope: Scope { iface, container, netns, hook: HookMode::Auto }, within: None, guard: GuardProgram::Find }
    }

    /// A bridge (every port, including those that join later) or any other
    /// device, as `--iface`.
    pub fn iface(name: impl Into<String>) -> Self {
        Self::scope(Some(name.into()), None, None)
    }

    /// The veths of a Docker container (name or id), as `--container`.
    pub fn container(name: impl Into<String>) -> Self {
        Self::scope(None, Some(name.into()), None)
    }

    /// The veths of a network namespace (a path such as
    /// `/var/run/netns/NAME`, or the PID of a process inside it), as
    /// `--netns`.
    pub fn netns(path_or_pid: impl Into<String>) -> Self {
        Self::scope(None, None, Some(path_or_pid.into()))
    }

    /// Looks for the interface (or the veths) from inside the network
    /// namespace at `path` rather than the calling thread's: where a test's
    /// bridge lives, for instance. The session's own thread joins it; the
    /// caller stays where it is.
    pub fn within(mut self, path: impl Into<PathBuf>) -> Self {
        self.within = Some(path.into());
        self
    }

    /// How to hook, as `--hook`: TCX links where the kernel has them
    /// (the default, `Auto`), or clsact and cls_bpf filters.
    pub fn hook(mut self, mode: HookMode) -> Self {
        self.scope.hook = mode;
        self
    }

    /// The `pygocentrus` binary that runs the guard (see the module's
    /// documentation).
    pub fn guard(mut self, binary: impl Into<PathBuf>) -> Self {
        self.guard = GuardProgram::Binary(binary.into());
        self
    }

    /// No guard: if the process is killed, the clsact filters and `fq`
    /// qdiscs stay until pygocentrus next starts in that namespace.
    pub fn without_guard(mut self) -> Self {
        self.guard = GuardProgram::Off;
        self
    }
}

/// The rules a [`Session`] puts to work: none, or rules with the names,
/// units and checks of `attach`'s flags, written as flags
/// ([`Faults::parse`]), as a config file's `[[rule]]` tables
/// ([`Faults::from_toml`]), or built ([`Faults::rule`] and the methods
/// that set the fields of the last rule). [`Faults::and`] puts rules
/// together. Nothing is checked until the faults are put to work: a value
/// out of range is an error of [`Session::attach`] or
/// [`Session::set_faults`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    rules: Vec<RuleArgs>,
    /// The first value a builder method could not take.
    problem: Option<String>,
}

impl Faults {
    /// No rule: every packet passes (and is counted as seen).
    pub fn none() -> Self {
        Self::default()
    }

    /// One rule, with no target and no fault yet: the methods below fill
    /// it in.
    pub fn rule() -> Self {
        Self { rules: vec![RuleArgs::default()], problem: None }
    }

    /// One rule written as `attach`'s flags, without the scope:
    /// `"--ip 198.18.0.2 --port 6379 --proto tcp --reset 100"`.
    pub fn parse(flags: &str) -> Result<Self, UsageError> {
        let rule = parse_flags(flags).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            UsageError::Rule(format!("'{flags}': {}", first.strip_prefix("error: ").unwrap_or(first)))
        })?;
        Ok(Self { rules: vec![rule], problem: None })
    }

    /// The `[[rule]]` tables of a config file (README, "Config file").
    /// Phases and flaps belong to `attach`: a test calls
    /// [`Session::set_faults`] when it wants a change.
    pub fn from_toml(text: &str) -> Result<Self, UsageError> {
        let config = ConfigFile::parse(text).map_err(UsageError::Config)?;
        if !config.phase.is_empty() || config.repeat {
            return Err(UsageError::Config("[[phase]] and repeat are for attach: call set_faults instead".to_owned()));
        }
        Ok(Self { rules: config.rule, problem: None })
    }

    /// These rules, then those of `other`.
    pub fn and(mut self, other: Faults) -> Self {
        self.rules.extend(other.rules);
        self.problem = self.problem.or(other.problem);
        self
    }

    /// How many rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Sets a field of the last rule (of a new one if there is none).
    fn set(mut self, f: impl FnOnce(&mut RuleArgs)) -> Self {
        if self.rules.is_empty() {
            self.rules.push(RuleArgs::default());
        }
        if let Some(rule) = self.rules.last_mut() {
            f(rule);
        }
        self
    }

    /// Sets a field from a value that may be refused (kept for later).
    fn set_parsed<T>(self, parsed: Result<T, String>, f: impl FnOnce(&mut RuleArgs, T)) -> Self {
        match parsed {
            Ok(v) => self.set(|r| f(r, v)),
            Err(e) => Self { problem: self.problem.or(Some(e)), ..self },
        }
    }

    /// `--ip`: the target address.
    pub fn ip(self, ip: impl Into<IpAddr>) -> Self {
        let ip = IpNet::from(ip.into());
        self.set(|r| r.ip = Some(ip))
    }

    /// `--port`: the target port (1-65535).
    pub fn port(self, port: u16) -> Self {
        let parsed = if port == 0 { Err("port 0 cannot be a target (1-65535)".to_owned()) } else { Ok(port) };
        self.set_parsed(parsed, |r, p| r.port = Some(p))
    }

    /// `--proto`.
    pub fn proto(self, proto: Proto) -> Self {
        self.set(|r| r.proto = proto)
    }

    /// `--direction`: packets to the target, from it, or both (the default).
    pub fn direction(self, direction: Direction) -> Self {
        self.set(|r| r.direction = direction)
    }

    /// `--all`: a rule with neither address nor port on an interface.
    pub fn all(self) -> Self {
        self.set(|r| r.all = true)
    }

    /// `--delay` (needs the `fq` qdisc: see [`Session::has_fq`]).
    pub fn delay(self, delay: Duration) -> Self {
        self.set(|r| r.delay = Some(delay))
    }

    /// `--jitter`, with a delay.
    pub fn jitter(self, jitter: Duration) -> Self {
        self.set(|r| r.jitter = Some(jitter))
    }

    /// `--rate`, as the flag takes it: `5mbit`, `512kbps`.
    pub fn rate(self, rate: &str) -> Self {
        self.set_parsed(parse_rate(rate), |r, v| r.rate = Some(v))
    }

    /// `--per-connection`: each percentage decides per connection.
    pub fn per_connection(self) -> Self {
        self.set(|r| r.per_connection = true)
    }

    /// `--seed`: the same traffic gets the same faults.
    pub fn seed(self, seed: u64) -> Self {
        self.set(|r| r.seed = Some(seed))
    }

    /// The validated rules, each on `endpoint` if the scope is one: the
    /// checks of `attach`'s flags and config file, overlaps included.
    fn plan(&self, endpoint: Option<&str>) -> Result<Plan, UsageError> {
        if let Some(problem) = &self.problem {
            return Err(UsageError::Rule(problem.clone()));
        }
        let several = self.rules.len() > 1;
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if r.flap.is_some() {
                    return Err(UsageError::Rule(format!(
                        "rule {}: flap is for attach: call set_faults instead",
                        i + 1
                    )));
                }
                RuleSpec::from_args(r, endpoint.map(str::to_owned))
                    .map_err(|e| if several { UsageError::Rule(format!("rule {}: {e}", i + 1)) } else { e })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let plan = Plan { rules };
        plan.map_contents()?;
        Ok(plan)
    }
}

// A method of `Faults` for each fault of the table of faults given as a
// percentage (`pygocentrus_common::percent_faults!`), named as its field.
macro_rules! percent_methods {
    ($($(#[$help:meta])* $field:ident $flag:literal $action:ident $effect:ident;)+) => {
        impl Faults {
            $(
                #[doc = concat!("`--", $flag, "`, in percent (0-100).")]
                pub fn $field(self, percent: f64) -> Self {
                    self.set_parsed(parse_percent(&percent.to_string()), |r, p| r.$field = Some(p))
                }
            )+
        }
    };
}

pygocentrus_common::percent_faults!(percent_methods);

/// Faults at work on a target until dropped: see the module's
/// documentation. Its methods block until the change is in force or the
/// counters are read (a few milliseconds); they may be called from any
/// thread, also from async code.
pub struct Session {
    requests: Option<mpsc::Sender<EngineRequest>>,
    worker: Option<JoinHandle<Result<()>>>,
    /// `--container`/`--netns` label of every rule.
    endpoint: Option<String>,
    /// The rules at work: held while they change, so that counters are
    /// read with the rules they count.
    plan: Mutex<Plan>,
    started: Instant,
    name: String,
    has_fq: bool,
}

/// What the session's thread says once attached.
struct Attached {
    name: String,
    has_fq: bool,
}

impl Session {
    /// Hooks the classifier onto `target` with `faults` at work. Refused,
    /// with nothing attached, as `pygocentrus attach` refuses: not root,
    /// no such interface, container or namespace, invalid faults...
    #[expect(
        clippy::needless_pass_by_value,
        reason = "public API: the builder's Faults is handed over, as the tests and examples write it"
    )]
    pub fn attach(target: Target, faults: Faults) -> Result<Self> {
        let endpoint = target.scope.endpoint_label();
        let plan = faults.plan(endpoint.as_deref())?;
        privileges::check()?;
        let (tx, mut requests) = mpsc::channel(1);
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<Attached>>();
        let first = plan.clone();
        let worker = std::thread::Builder::new()
            .name("pygocentrus".to_owned())
            .spawn(move || -> Result<()> {
                if let Some(path) = &target.within {
                    let joined = File::open(path)
                        .map_err(anyhow::Error::from)
                        .and_then(|ns| Ok(setns(ns, CloneFlags::CLONE_NEWNET)?))
                        .with_context(|| format!("joining network namespace {}", path.display()));
                    if let Err(e) = joined {
                        let _ = ready_tx.send(Err(e));
                        return Ok(());
                    }
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("starting the session's runtime")?;
                runtime.block_on(async move {
                    let opened =
                        Attachment::open(&target.scope, first, Fq::WhereAvailable(SERVE_FQ), &target.guard).await;
                    let (mut attachment, mut events) = match opened {
                        Ok(opened) => opened,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Ok(());
                        }
                    };
                    eprintln!("pygocentrus: session attached to {attachment}");
                    let _ = ready_tx.send(Ok(Attached { name: attachment.name(), has_fq: attachment.has_fq() }));
                    let result = live(&mut attachment, &mut events, &mut requests, std::future::pending()).await;
                    let name = attachment.name();
                    attachment.detach().await;
                    eprintln!("pygocentrus: session detached from {name}: every hook removed");
                    result
                })
            })
            .context("starting the session's thread")?;
        let attached = match ready.recv() {
            Ok(Ok(attached)) => attached,
            Ok(Err(e)) => {
                let _ = worker.join();
                return Err(e);
            }
            // The thread ended without a word: its result says why.
            Err(_) => {
                return Err(match worker.join() {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow!("the session's thread ended before attaching"),
                    Err(_) => anyhow!("the session's thread panicked"),
                });
            }
        };
        Ok(Self {
            requests: Some(tx),
            worker: Some(worker),
            endpoint,
            plan: Mutex::new(plan),
            started: Instant::now(),
            name: attached.name,
            has_fq: attached.has_fq,
        })
    }

    /// Puts `faults` to work in place of the current ones, through the
    /// maps alone: no hook is touched, open connections notice nothing but
    /// the faults. In force when this returns. Refused, with nothing
    /// changed, if the faults are invalid (or need `fq`, which this kernel
    /// lacks). The counters of every rule that changed start from zero.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "public API: the builder's Faults is handed over, as the tests and examples write it"
    )]
    pub fn set_faults(&self, faults: Faults) -> Result<()> {
        let plan = faults.plan(self.endpoint.as_deref())?;
        let mut current = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        let (reply, answer) = oneshot::channel();
        self.send(EngineRequest::Apply(plan.clone(), reply))?;
        futures::executor::block_on(answer).map_err(|_| ended())?.map_err(|e| anyhow!(e))?;
        *current = plan;
        Ok(())
    }

    /// The counters now: every packet the classifier saw, and each rule's
    /// (in the order of the faults).
    pub fn counters(&self) -> Result<Reading> {
        let plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        let (reply, answer) = oneshot::channel();
        self.send(EngineRequest::Counters(reply))?;
        let slots = futures::executor::block_on(answer).map_err(|_| ended())?.map_err(|e| anyhow!(e))?.slots;
        Ok(Reading { elapsed: self.started.elapsed(), slots, rules: plan.rules.clone() })
    }

    /// Whether the hooked ports have `fq`, which delays and rates need
    /// (the kernel has `sch_fq`).
    pub fn has_fq(&self) -> bool {
        self.has_fq
    }

    /// Detaches, as dropping the session does, and says whether all went
    /// well while it was attached.
    pub fn detach(mut self) -> Result<()> {
        self.stop()
    }

    fn send(&self, request: EngineRequest) -> Result<()> {
        let requests = self.requests.as_ref().ok_or_else(ended)?;
        futures::executor::block_on(requests.send(request)).map_err(|_| ended())
    }

    /// Ends the session's loop (which detaches) and waits for its thread.
    fn stop(&mut self) -> Result<()> {
        drop(self.requests.take());
        match self.worker.take() {
            Some(worker) => worker.join().map_err(|_| anyhow!("the session's thread panicked"))?,
            None => Ok(()),
        }
    }
}

fn ended() -> anyhow::Error {
    anyhow!("the session has ended (its target is gone, or it failed: detach() says why)")
}

/// The interface or endpoint it is attached to.
impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("pygocentrus: session: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(faults: &Faults) -> Result<Vec<String>, UsageError> {
        faults.plan(None).map(|p| p.rules.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn built_parsed_and_toml_rules_are_the_same_rules() {
        let built = Faults::rule().ip([198, 18, 0, 2]).port(6379).proto(Proto::Tcp).reset(100.0);
        let parsed = Faults::parse("--ip 198.18.0.2 --port 6379 --proto tcp --reset 100").unwrap();
        let toml =
            Faults::from_toml("[[rule]]\nip = \"198.18.0.2\"\nport = 6379\nproto = \"tcp\"\nreset = 100\n").unwrap();
        assert_eq!(built, parsed);
        assert_eq!(built, toml);
        assert_eq!(plan(&built).unwrap(), ["tcp to/from 198.18.0.2:6379 reset 100%"]);
    }

    #[test]
    fn several_rules_and_none() {
        assert_eq!(plan(&Faults::none()).unwrap(), Vec::<String>::new());
        let two = Faults::rule().port(5000).drop(5.0).and(Faults::rule().port(5001).delay(Duration::from_millis(20)));
        assert_eq!(plan(&two).unwrap(), ["ip to/from *:5000 drop 5%", "ip to/from *:5001 delay 20ms"]);
        // Methods on no rule start one.
        assert_eq!(Faults::none().port(9).drop(1.0), Faults::rule().port(9).drop(1.0));
    }

    #[test]
    fn the_checks_of_the_flags_apply() {
        assert_eq!(plan(&Faults::rule().port(5000)), Err(UsageError::NoFault));
        assert_eq!(plan(&Faults::rule().drop(5.0)), Err(UsageError::NoTarget));
        assert_eq!(plan(&Faults::rule().port(5000).proto(Proto::Udp).reset(5.0)), Err(UsageError::ResetNeedsTcp));
        let out_of_range = plan(&Faults::rule().port(5000).drop(150.0)).unwrap_err().to_string();
        assert!(out_of_range.contains("outside 0-100"), "{out_of_range}");
        assert!(plan(&Faults::rule().port(0).drop(5.0)).is_err());
        assert!(plan(&Faults::rule().port(1).rate("fast")).is_err());
        let overlap = Faults::rule().port(5000).drop(5.0).and(Faults::rule().port(5000).drop(7.0));
        assert!(matches!(plan(&overlap), Err(UsageError::Overlap(1, 2, _))), "{:?}", plan(&overlap));
        let second = Faults::rule().port(5000).drop(5.0).and(Faults::rule().port(5001));
        assert!(plan(&second).unwrap_err().to_string().starts_with("rule 2: no fault given"));
    }

    #[test]
    fn bad_flags_and_files_are_refused_in_one_line() {
        let e = Faults::parse("--port 5000 --dorp 5").unwrap_err().to_string();
        assert!(e.contains("--dorp") && !e.contains('\n'), "{e}");
        assert!(Faults::parse("--iface br0 --port 5000 --drop 5").is_err(), "the scope is the target's");
        assert!(Faults::parse("--port 5000 --drop 101").is_err());
        assert!(Faults::from_toml("[[rule]]\nport = 5000\ndorp = 5\n").is_err());
        let phases = "[[phase]]\nduration = \"1s\"\n[[phase.rule]]\nport = 1\ndrop = 5\n";
        assert!(Faults::from_toml(phases).is_err());
        let flap = Faults::from_toml("[[rule]]\nport = 1\ndrop = 5\nflap = { on = \"1s\", off = \"1s\" }\n").unwrap();
        assert!(plan(&flap).is_err());
    }

    #[test]
    fn the_readme_shows_the_example_that_is_built() {
        let example = include_str!("../examples/session.rs");
        let readme = include_str!("../../README.md");
        let start = example.find("// [README]\n").expect("the example marks what README shows");
        let end = example.find("// [end of README]").expect("the example marks what README shows");
        let shown = &example[start + "// [README]\n".len()..end];
        assert!(
            readme.contains(&format!("```rust\n{shown}```\n")),
            "README does not show examples/session.rs:\n{shown}"
        );
    }

    #[test]
    fn endpoint_rules_need_no_target() {
        let faults = Faults::rule().drop(100.0);
        let plan = faults.plan(Some("netns /var/run/netns/x")).unwrap();
        assert_eq!(plan.rules[0].to_string(), "ip to/from netns /var/run/netns/x drop 100%");
    }
}
