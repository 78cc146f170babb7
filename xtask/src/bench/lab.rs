//! Network namespaces for the throughput and live benches: a client and a server on a
//! bridge that lives in a namespace of its own, all on 198.18.0.0/24, and
//! all removed when the [`Lab`] is dropped.
//!
//! The harness drives `ip` (iproute2) as a subprocess: it is test setup, not
//! the tool, which talks netlink itself.

use std::{
    fs::{self, File},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    errno::Errno,
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};

const PREFIX: &str = "pygbench-";
pub const CLIENT_ADDR: &str = "198.18.0.1";
pub const SERVER_ADDR: &str = "198.18.0.2";
/// The bridge, inside the bridge namespace.
pub const BRIDGE: &str = "br0";
/// The bridge's ports, inside the bridge namespace: the veth to the client
/// and the one to the server.
pub const CLIENT_PORT: &str = "pcli";
pub const SERVER_PORT: &str = "psrv";

pub struct Lab {
    pub client: String,
    pub server: String,
    pub bridge: String,
    /// Namespaces created so far, removed on drop.
    created: Vec<String>,
}

impl Lab {
    pub fn create() -> Result<Self> {
        remove_leftovers();
        let pid = std::process::id();
        let mut lab = Lab {
            client: format!("{PREFIX}cli-{pid}"),
            server: format!("{PREFIX}srv-{pid}"),
            bridge: format!("{PREFIX}br-{pid}"),
            created: Vec::new(),
        };
        for ns in [lab.client.clone(), lab.server.clone(), lab.bridge.clone()] {
            ip(&["netns", "add", &ns])?;
            lab.created.push(ns);
        }
        let br = lab.bridge.clone();
        ip(&["-n", &br, "link", "add", BRIDGE, "type", "bridge"])?;
        for (port, host, addr) in [(CLIENT_PORT, &lab.client, CLIENT_ADDR), (SERVER_PORT, &lab.server, SERVER_ADDR)] {
            ip(&["-n", &br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host])?;
            ip(&["-n", &br, "link", "set", port, "master", BRIDGE, "up"])?;
            ip(&["-n", host, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", host, "link", "set", "eth0", "up"])?;
            ip(&["-n", host, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &br, "link", "set", BRIDGE, "up"])?;
        Ok(lab)
    }

    /// This thread inside namespace `ns` (to attach programs to its links or
    /// query them) until the guard is dropped. Only the calling thread moves.
    pub fn enter(&self, ns: &str) -> Result<InNetns> {
        let home = File::open("/proc/thread-self/ns/net").context("opening this thread's network namespace")?;
        let target = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening namespace {ns}"))?;
        setns(&target, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {ns}"))?;
        Ok(InNetns { home })
    }

    /// The MAC address of the bridge (what `pygocentrus attach` tells its
    /// classifier, so that the ingress hook leaves forwarded frames to egress).
    pub fn bridge_mac(&self) -> Result<[u8; 6]> {
        let out = Command::new("ip")
            .args(["-n", &self.bridge, "-o", "link", "show", BRIDGE])
            .output()
            .context("running ip (iproute2)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mac = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .with_context(|| format!("no link/ether in `ip link show {BRIDGE}`: {text}"))?;
        let mut bytes = [0u8; 6];
        let parts: Vec<&str> = mac.split(':').collect();
        if parts.len() != 6 {
            bail!("not a MAC address: {mac}");
        }
        for (b, p) in bytes.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).with_context(|| format!("not a MAC address: {mac}"))?;
        }
        Ok(bytes)
    }

    /// A command run inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("bench: warning: could not remove namespace {ns}: {e:#}");
            }
        }
    }
}

/// The thread back in the namespace it was in before [`Lab::enter`].
pub struct InNetns {
    home: File,
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // Children are started with `ip netns exec NS`, so a thread left
        // behind would misplace nothing but its own later queries.
        if let Err(e) = setns(&self.home, CloneFlags::CLONE_NEWNET) {
            eprintln!("bench: warning: could not return to the original network namespace: {e}");
        }
    }
}

/// Removes `pygbench-*-<pid>` namespaces whose process is gone (a bench
/// killed before its guard ran). Nothing else is touched.
fn remove_leftovers() {
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((_, pid)) = rest.rsplit_once('-') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing namespace {name} left by an earlier run");
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("bench: warning: {e:#}");
            }
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct ChildGuard {
    child: Option<Child>,
    what: &'static str,
}

impl ChildGuard {
    pub fn spawn(mut cmd: Command, what: &'static str) -> Result<Self> {
        let child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self { child: Some(child), what })
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// SIGTERM, then waits up to `grace` (SIGKILL after that). Returns
    /// whether the process exited successfully of its own accord.
    pub fn stop(&mut self, grace: Duration) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        if child.try_wait()?.is_none() {
            let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
            match kill(pid, Signal::SIGTERM) {
                // ESRCH: it exited in between.
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => return Err(e).with_context(|| format!("signalling {}", self.what)),
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() >= deadline {
                eprintln!("bench: warning: {} ignored SIGTERM; killing it", self.what);
                child.kill()?;
                child.wait()?;
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(3)) {
            eprintln!("bench: warning: stopping {}: {e:#}", self.what);
        }
    }
}
