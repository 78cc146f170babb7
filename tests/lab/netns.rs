//! Namespaces, the bridge and its "containers", and what hooks sit on the
//! bridge's ports.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    process::{Command, Output},
    sync::{
        Mutex, Once,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use nix::sched::{CloneFlags, setns};

use crate::require_root;

/// The bridge in every lab's host namespace.
pub const BRIDGE: &str = "br0";

/// Labs made by this process so far: part of every namespace name.
static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs `f` on a new thread that has joined network namespace `ns`, and
/// returns its result (a panic in `f` is the caller's panic).
///
/// Sockets keep the namespace they were created in, so a socket made here
/// can be used from any thread afterwards.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("joining {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Writes a per-namespace (`net.*`) sysctl inside namespace `ns`.
fn set_sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_netns(ns, || std::fs::write(&path, value)).unwrap_or_else(|e| panic!("setting {key} in {ns}: {e}"));
}

/// Deletes, once per process, the namespaces of labs whose test process
/// died without cleaning up (killed by a timeout or SIGKILL: no `Drop`).
fn sweep_dead_labs() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let Ok(dir) = std::fs::read_dir("/var/run/netns") else { return };
        for name in dir.flatten().filter_map(|e| e.file_name().into_string().ok()) {
            if lab_pid(&name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                eprintln!("lab: deleting {name}, left by a test process that died");
                let _ = output("ip", &["netns", "del", &name]);
            }
        }
    });
}

/// The process that made namespace `name`, if it is a lab's:
/// `pyg-TAG-PID-N-h` or `pyg-TAG-PID-N-cK`.
fn lab_pid(name: &str) -> Option<u32> {
    let parts: Vec<&str> = name.strip_prefix("pyg-")?.split('-').collect();
    let [_tag, pid, n, role] = parts[..] else { return None };
    let role_ok = role == "h" || role.strip_prefix('c').is_some_and(|k| k.parse::<u32>().is_ok());
    (role_ok && n.parse::<u32>().is_ok()).then_some(())?;
    pid.parse().ok()
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"))
}

/// A "container": a namespace with `eth0`, whose veth peer is a port of the
/// bridge.
#[derive(Clone, Debug)]
pub struct Container {
    pub ns: String,
    /// The host-side veth: the bridge port this container hangs on.
    pub port: String,
    pub ip4: Ipv4Addr,
    pub ip6: Ipv6Addr,
    pub mac: String,
}

impl Container {
    /// Its IPv4 or IPv6 address.
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 { self.ip6.into() } else { self.ip4.into() }
    }

    pub fn addr(&self, v6: bool, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(v6), port)
    }

    /// Runs `f` inside this container's namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.ns, f)
    }
}

/// What pygocentrus (or anyone) hooked onto one interface.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortHooks {
    /// A clsact qdisc is present.
    pub clsact: bool,
    /// `tc filter show` lines, ingress then egress.
    pub filters: Vec<String>,
    /// TCX programs as `ingress:NAME` / `egress:NAME`.
    pub tcx: Vec<String>,
}

impl PortHooks {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A host namespace with a bridge, and containers on it. Dropping it
/// deletes every namespace it created.
pub struct Lab {
    name: String,
    host: String,
    containers: Mutex<Vec<Container>>,
    namespaces: Mutex<Vec<String>>,
}

impl Lab {
    /// A lab with `containers` containers. `tag` (a few letters) names the
    /// test in the namespace names, for whoever lists them.
    pub fn new(tag: &str, containers: usize) -> Self {
        require_root();
        assert!(tag.chars().all(|c| c.is_ascii_alphanumeric()), "lab tag '{tag}': letters and digits only");
        sweep_dead_labs();
        let name = format!("pyg-{tag}-{}-{}", std::process::id(), LABS.fetch_add(1, Ordering::SeqCst));
        let lab = Self {
            host: format!("{name}-h"),
            name,
            containers: Mutex::new(Vec::new()),
            namespaces: Mutex::new(Vec::new()),
        };
        lab.add_netns(&lab.host);
        // The host only switches frames: no IPv6 chatter from its ports.
        for conf in ["all", "default"] {
            set_sysctl(&lab.host, &format!("net.ipv6.conf.{conf}.disable_ipv6"), "1");
        }
        lab.ip(&lab.host, &["link", "set", "lo", "up"]);
        lab.ip(&lab.host, &["link", "add", BRIDGE, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"]);
        lab.ip(&lab.host, &["link", "set", BRIDGE, "up"]);
        for _ in 0..containers {
            lab.add_container();
        }
        lab
    }

    /// A lab with two containers: the usual client and server.
    pub fn pair(tag: &str) -> (Self, Container, Container) {
        let lab = Self::new(tag, 2);
        let (client, server) = (lab.container(0), lab.container(1));
        (lab, client, server)
    }

    /// The host namespace (where the bridge lives and the tool runs).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Container `i`, counting from 0.
    pub fn container(&self, i: usize) -> Container {
        self.lock_containers()[i].clone()
    }

    fn lock_containers(&self) -> std::sync::MutexGuard<'_, Vec<Container>> {
        self.containers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add_netns(&self, ns: &str) {
        // A namespace of a crashed run with a recycled pid would be in the way.
        let _ = output("ip", &["netns", "del", ns]);
        run("ip", &["netns", "add", ns]);
        self.namespaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ns.to_owned());
    }

    /// `ip -n NS ARGS...`
    fn ip(&self, ns: &str, args: &[&str]) -> String {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Adds a container to the bridge (also while the tool runs: hot-plug).
    /// Neighbours and the bridge's forwarding table are filled in statically,
    /// so that no packet waits for ARP or NDP, and no frame is flooded to
    /// ports it is not for (each port's classifier would count it).
    pub fn add_container(&self) -> Container {
        let mut containers = self.lock_containers();
        let i = containers.len() + 1;
        let octet = u8::try_from(10 + i).expect("too many containers");
        let c = Container {
            ns: format!("{}-c{i}", self.name),
            port: format!("v{i}"),
            ip4: Ipv4Addr::new(198, 18, 0, octet),
            ip6: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(octet)),
            mac: format!("02:00:00:00:00:{octet:02x}"),
        };
        self.add_netns(&c.ns);
        let (ns, port) = (c.ns.as_str(), c.port.as_str());
        self.ip(
            &self.host,
            &["link", "add", port, "type", "veth", "peer", "name", "eth0", "address", &c.mac, "netns", ns],
        );
        self.ip(ns, &["link", "set", "lo", "up"]);
        self.ip(ns, &["addr", "add", &format!("{}/24", c.ip4), "dev", "eth0"]);
        self.ip(ns, &["addr", "add", &format!("{}/64", c.ip6), "dev", "eth0", "nodad"]);
        self.ip(ns, &["link", "set", "eth0", "up"]);
        for other in containers.iter() {
            self.neighbour(&c, other);
            self.neighbour(other, &c);
        }
        self.ip(&self.host, &["link", "set", port, "master", BRIDGE, "up"]);
        run("bridge", &["-n", &self.host, "fdb", "replace", &c.mac, "dev", port, "master", "static"]);
        containers.push(c.clone());
        c
    }

    /// Gives the bridge itself an address, 198.18.0.1/24, as Docker gives
    /// its bridges a gateway address for the host's own services.
    pub fn add_bridge_address(&self) -> Ipv4Addr {
        let gateway = Ipv4Addr::new(198, 18, 0, 1);
        self.ip(&self.host, &["addr", "add", &format!("{gateway}/24"), "dev", BRIDGE]);
        gateway
    }

    /// Takes a container's port off the bridge (the port stays).
    pub fn unplug(&self, c: &Container) {
        self.ip(&self.host, &["link", "set", &c.port, "nomaster"]);
    }

    /// Tells `at` the MAC address of `of`, for IPv4 and IPv6.
    fn neighbour(&self, at: &Container, of: &Container) {
        for ip in [of.ip4.to_string(), of.ip6.to_string()] {
            self.ip(&at.ns, &["neigh", "replace", &ip, "lladdr", &of.mac, "dev", "eth0", "nud", "permanent"]);
        }
    }

    /// Every interface of the host namespace: the bridge, its ports, lo.
    pub fn host_links(&self) -> Vec<String> {
        self.ip(&self.host, &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    }

    /// The hooks on interface `dev` of the host namespace.
    pub fn hooks(&self, dev: &str) -> PortHooks {
        hooks_of(Some(&self.host), dev)
    }

    /// The interfaces that still carry some hook, with what they carry.
    pub fn leftovers(&self) -> Vec<(String, PortHooks)> {
        self.host_links()
            .into_iter()
            .map(|dev| {
                let hooks = self.hooks(&dev);
                (dev, hooks)
            })
            .filter(|(_, hooks)| !hooks.is_empty())
            .collect()
    }

    /// Panics, listing them, if any hook is left in the host namespace
    /// `timeout` from now (the kernel may take a moment to release the
    /// links of a process that just died).
    pub fn assert_clean(&self, when: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{when}: hooks left behind: {left:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The bridge ports, each with its hooks.
    pub fn port_hooks(&self) -> Vec<(String, PortHooks)> {
        self.lock_containers().iter().map(|c| (c.port.clone(), self.hooks(&c.port))).collect()
    }
}

/// The hooks on interface `dev` of namespace `ns`, or of this process's
/// own namespace (`None`: where Docker's bridges live).
pub fn hooks_of(ns: Option<&str>, dev: &str) -> PortHooks {
    let tc = |args: &[&str]| {
        let mut all = ns.map_or_else(Vec::new, |ns| vec!["-n", ns]);
        all.extend_from_slice(args);
        run("tc", &all)
    };
    let clsact = tc(&["qdisc", "show", "dev", dev]).lines().any(|l| l.contains("clsact"));
    let filters = ["ingress", "egress"]
        .iter()
        .flat_map(|hook| tc(&["filter", "show", "dev", dev, hook]).lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let query = || {
        [(TcAttachType::Ingress, "ingress"), (TcAttachType::Egress, "egress")]
            .into_iter()
            .flat_map(|(attach, hook)| {
                let progs = match SchedClassifier::query_tcx(dev, attach) {
                    Ok((_, progs)) => progs,
                    // Nothing can be on a hook the kernel does not have.
                    Err(_) if !crate::kernel_has_tcx() => Vec::new(),
                    Err(e) => panic!("querying TCX {hook} programs of {dev}: {e}"),
                };
                progs.iter().map(|p| format!("{hook}:{}", p.name_as_str().unwrap_or("?"))).collect::<Vec<_>>()
            })
            .collect()
    };
    let tcx = match ns {
        Some(ns) => in_netns(ns, query),
        None => query(),
    };
    PortHooks { clsact, filters, tcx }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let namespaces = self.namespaces.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        for ns in namespaces.iter().rev() {
            let out = output("ip", &["netns", "del", ns]);
            if !out.status.success() {
                eprintln!("lab: deleting namespace {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
}
