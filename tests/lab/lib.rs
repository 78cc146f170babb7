//! The lab of the integration tests: real network namespaces, a real bridge,
//! real sockets and the real `pygocentrus` binary.
//!
//! Each [`Lab`] is a "host" namespace holding a bridge [`BRIDGE`] and
//! "container" namespaces, each joined to the bridge by a veth pair. Names
//! carry the test's tag, the process id and a counter, so tests run in
//! parallel without sharing anything; dropping the lab deletes every
//! namespace it made, also when the test panics. [`Tool`] runs the binary
//! inside the host namespace and kills it if the test ends first.
//!
//! Traffic stays between these namespaces, on 198.18.0.0/24 and fd00::/64.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report, as in aya's tests"
)]

mod counters;
pub mod frames;
mod http;
mod netns;
mod tool;
mod traffic;

use std::path::PathBuf;

pub use counters::NetCounters;
pub use http::{Reply, http};
pub use netns::{BRIDGE, Container, Lab, PortHooks, hooks_in, in_netns, netns_path};
pub use tool::{Outcome, TOOL_TIMEOUT, Tool};
pub use traffic::{Exchange, UdpFlow, bind_udp, echo_server, echoes, payload, seq_of, tcp_connect, tcp_listener};

/// Command-line arguments from a mix of strings and numbers:
/// `args!["--port", 5000, "--drop", 100]`.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => { vec![$($arg.to_string()),*] };
}

/// Panics, saying how to run the suite, unless the process is root: the
/// lab needs namespaces and the tool needs CAP_BPF and CAP_NET_ADMIN.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests need root (namespaces, bridges, BPF): \
         run them with `sudo -E cargo test -p pygocentrus-tests` or `scripts/test`"
    );
}

/// The binary under test: `$PYGOCENTRUS_BIN`, or the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("PYGOCENTRUS_BIN").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/pygocentrus")),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "pygocentrus binary not found at {}: run `cargo build` first, or set PYGOCENTRUS_BIN",
        path.display()
    );
    path
}

/// Runs `cmd` with its output captured; panics if it is still running
/// after `deadline` (it is killed first). Its output is read while it
/// runs, so a talkative program cannot block on a full pipe.
pub fn output_within(cmd: &mut std::process::Command, deadline: std::time::Duration) -> std::process::Output {
    use std::{io::Read as _, process::Stdio};
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still ran after {deadline:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let joined = |t: std::thread::JoinHandle<Vec<u8>>| t.join().unwrap_or_default();
    std::process::Output { status, stdout: joined(stdout), stderr: joined(stderr) }
}

/// Whether this kernel has TCX (6.6+). Tests of the TCX path say they are
/// skipped where it does not, and the netlink path is tested there instead.
pub fn kernel_has_tcx() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
}

/// The hook method `--hook auto` picks on this kernel.
pub fn auto_hook() -> &'static str {
    if kernel_has_tcx() { "tcx" } else { "netlink" }
}

/// Returns early from a test that needs the `fq` qdisc (delay, jitter,
/// rate), saying why, on a kernel without it: `cargo xtask vm-test` runs
/// those tests under kernels that have it.
#[macro_export]
macro_rules! require_fq {
    ($lab:expr) => {
        if !$lab.has_fq() {
            eprintln!("skipped: this kernel has no fq qdisc (sch_fq); `cargo xtask vm-test` runs this test");
            return;
        }
    };
}

/// Returns early from a test that needs TCX, saying why, on older kernels.
#[macro_export]
macro_rules! require_tcx {
    () => {
        if !$crate::kernel_has_tcx() {
            eprintln!("skipped: this kernel has no TCX (6.6+); the netlink path is tested instead");
            return;
        }
    };
}

/// A file for the tool to read (a `--config` file), deleted on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    /// Writes `contents` to a new file whose name carries `tag` and the
    /// process id, in the system's temporary directory.
    pub fn new(tag: &str, contents: &str) -> Self {
        static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pyg-{tag}-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
