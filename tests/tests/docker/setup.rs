//! A real Docker engine for the tests, and the few things they make with
//! it: an image built from a static busybox (no registry is needed), a
//! user-defined bridge network on 198.19.0.0/16 (inside 198.18.0.0/15), and
//! containers on it. Everything is named `pygct-PID-TAG...` and removed
//! when its guard drops; what a test process that died left is removed by
//! the next one. The engine itself is the one `crate::engine` readies.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Command, Output},
    sync::Once,
};

/// Every name this suite gives a Docker object starts with this.
const PREFIX: &str = "pygct-";

/// Runs `docker ARGS...`.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap_or_else(|e| panic!("running docker: {e}"))
}

/// Runs `docker ARGS...`, panicking with its stderr if it fails; returns
/// its stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Proof that the engine answers, made ready by `crate::engine::ready` (the
/// repository's `scripts/dockerd-up`), and that what dead test processes
/// left was swept: every [`Setup`] takes one.
pub struct Engine;

impl Engine {
    /// The engine, or `None` (the reason already said) where none can run,
    /// e.g. in the QEMU guests of `cargo xtask vm-test`. An engine that is
    /// installed but fails to start is a failure, not a skip.
    pub fn get() -> Option<Self> {
        if !crate::engine::ready() {
            return None;
        }
        sweep_dead();
        Some(Self)
    }
}

/// Removes, once per process, the containers, networks and images of test
/// processes that died without cleaning up.
fn sweep_dead() {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let dead = |name: &str| {
            name.strip_prefix(PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        let list = |args: &[&str]| -> Vec<String> {
            docker(args).lines().map(str::to_owned).filter(|n| dead(n.split(':').next().unwrap_or(n))).collect()
        };
        for c in list(&["ps", "-a", "--filter", &format!("name={PREFIX}"), "--format", "{{.Names}}"]) {
            eprintln!("engine: removing container {c}, left by a test process that died");
            let _ = docker_output(&["rm", "-f", &c]);
        }
        for n in list(&["network", "ls", "--filter", &format!("name={PREFIX}"), "--format", "{{.Name}}"]) {
            let _ = docker_output(&["network", "rm", &n]);
        }
        for i in list(&["images", "--format", "{{.Repository}}:{{.Tag}}", &format!("{PREFIX}*")]) {
            let _ = docker_output(&["rmi", "-f", &i]);
        }
    });
}

/// A container, as the tests need it. What changes when it restarts (its
/// process, namespace, veth, perhaps its address) is looked up each time.
#[derive(Clone, Debug)]
pub struct DockerContainer {
    pub name: String,
}

impl DockerContainer {
    /// Its address on the test's network.
    pub fn ip(&self) -> Ipv4Addr {
        let ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &self.name]);
        ip.parse().unwrap_or_else(|e| panic!("the address of {}: '{ip}': {e}", self.name))
    }

    /// Its main process (it changes when the container restarts).
    pub fn pid(&self) -> u32 {
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &self.name]);
        pid.parse().unwrap_or_else(|e| panic!("the pid of {}: '{pid}': {e}", self.name))
    }

    /// Its network namespace now, as `in_netns` and `UdpFlow::between` take it.
    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid())
    }

    /// The name, in this namespace, of the host end of its `eth0`.
    pub fn host_veth(&self) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns()))
            .args(["ip", "-o", "link", "show", "eth0"])
            .output()
            .unwrap_or_else(|e| panic!("running nsenter: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        // `9: eth0@if10: <...`: the peer's index follows "@if".
        let peer = text
            .split_once("@if")
            .and_then(|(_, rest)| rest.split(':').next())
            .and_then(|i| i.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no veth peer in `ip link show eth0` of {}: {text}", self.name));
        let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("running ip");
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .find_map(|l| {
                let (index, rest) = l.split_once(": ")?;
                let name = rest.split([':', '@']).next()?;
                (index.trim().parse::<u32>().ok()? == peer).then(|| name.to_owned())
            })
            .unwrap_or_else(|| panic!("no interface with index {peer} here (host end of {})", self.name))
    }
}

/// An image, a network (or more) and containers on it, all removed on drop.
pub struct Setup {
    pub image: String,
    pub network: String,
    /// The network's Linux bridge.
    pub bridge: String,
    /// Networks added with [`Setup::add_network`].
    more_networks: Vec<String>,
    containers: Vec<String>,
    _engine: Engine,
}

impl Setup {
    /// An image and a bridge network of their own for the test `tag`
    /// (letters only, at most 3, or 2 with [`Setup::add_network`], so that
    /// bridge names fit in 15 characters).
    pub fn new(engine: Engine, tag: &str) -> Self {
        assert!(tag.len() <= 3 && tag.chars().all(|c| c.is_ascii_lowercase()), "tag '{tag}'");
        let pid = std::process::id();
        let base = format!("{PREFIX}{pid}-{tag}");
        let setup = Self {
            image: format!("{base}:latest"),
            network: format!("{base}-net"),
            bridge: format!("pygct{pid}{tag}"),
            more_networks: Vec::new(),
            containers: Vec::new(),
            _engine: engine,
        };
        setup.build_image();
        create_network(&setup.network, &setup.bridge);
        setup
    }

    /// Another bridge network: returns its name and its bridge's.
    pub fn add_network(&mut self, suffix: char) -> (String, String) {
        let (network, bridge) = (format!("{}{suffix}", self.network), format!("{}{suffix}", self.bridge));
        assert!(bridge.len() <= 15, "bridge name {bridge} is too long: use a shorter tag");
        create_network(&network, &bridge);
        self.more_networks.push(network.clone());
        (network, bridge)
    }

    /// `docker import` of a root file system holding only a static busybox.
    fn build_image(&self) {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("no busybox: apt-get install busybox-static");
        let ldd = Command::new("ldd").arg(busybox).output().expect("running ldd");
        assert!(
            !ldd.status.success() || String::from_utf8_lossy(&ldd.stdout).contains("not a dynamic"),
            "{busybox} is not static: apt-get install busybox-static"
        );
        let root = std::env::temp_dir().join(format!("{}-rootfs", self.network));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).expect("creating the image's root");
        std::fs::copy(busybox, root.join("bin/busybox")).expect("copying busybox");
        let tar = root.with_extension("tar");
        let packed = Command::new("tar")
            .args(["-C", &root.to_string_lossy(), "-cf", &tar.to_string_lossy(), "."])
            .status()
            .expect("running tar");
        assert!(packed.success(), "tar failed");
        docker(&["import", &tar.to_string_lossy(), &self.image]);
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_file(&tar);
    }

    fn name(&self, role: &str) -> String {
        format!("{}-{role}", self.network.trim_end_matches("-net"))
    }

    /// Runs a container `role` on the network (`busybox sleep`: the tests
    /// make their traffic from sockets opened in its namespace).
    pub fn run(&mut self, role: &str) -> DockerContainer {
        let network = self.network.clone();
        DockerContainer { name: self.container(role, "run", &network) }
    }

    /// A container `role` on `network` (`none`, `host`, ...), started
    /// (`docker run -d`) or only created (`docker create`) as `how` says.
    pub fn container(&mut self, role: &str, how: &str, network: &str) -> String {
        let name = self.name(role);
        self.containers.push(name.clone());
        let detach: &[&str] = if how == "run" { &["-d"] } else { &[] };
        let mut args = vec![how];
        args.extend_from_slice(detach);
        args.extend_from_slice(&["--name", &name, "--network", network, &self.image, "/bin/busybox", "sleep", "3600"]);
        docker(&args);
        name
    }

    /// The Linux interfaces enslaved to the network's bridge.
    pub fn ports(&self) -> Vec<String> {
        ports_of(&self.bridge)
    }
}

/// Creates bridge network `network` (Linux bridge `bridge`) on a free /24
/// of 198.19.128.0/17 (other tests may hold some of them on a shared
/// engine).
fn create_network(network: &str, bridge: &str) {
    let bridge_opt = format!("com.docker.network.bridge.name={bridge}");
    for i in 0..128u32 {
        let octet = 128 + (std::process::id() + i) % 128;
        let subnet = format!("198.19.{octet}.0/24");
        let args = ["network", "create", "--driver", "bridge", "--subnet", &subnet, "-o", &bridge_opt, network];
        let out = docker_output(&args);
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("overlap"), "creating network {network} on {subnet}: {err}");
    }
    panic!("no free /24 in 198.19.128.0/17 for {network}");
}

/// The Linux interfaces enslaved to `bridge`.
pub fn ports_of(bridge: &str) -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link", "show", "master", bridge]).output().expect("running ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

impl Drop for Setup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker_output(&["rm", "-f", c]);
        }
        let networks = self.more_networks.iter().chain([&self.network]);
        let removals = networks.map(|n| vec!["network", "rm", n]).chain([vec!["rmi", "-f", &self.image]]);
        for args in removals {
            let out = docker_output(&args);
            if !out.status.success() {
                eprintln!("engine: `docker {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
        }
    }
}
