//! What the guest's initramfs holds: busybox, the real tools the tests run,
//! their shared libraries, the kernel's modules, pygocentrus and the test
//! programs, and the scripts in `xtask/vm-guest/`.
//!
//! Layout in the guest:
//! - `/init` (busybox sh), `/busybox/` (applets, installed at boot; last in PATH)
//! - real tools at their host paths (`/usr/sbin/ip`...), `/bin/sh` is bash
//! - libraries at the paths `ldd` prints, the loader at `/lib64/...`
//! - `/vm/`: `pygocentrus`, `tests/*`, `test-args`, `modules/*.ko`,
//!   `modules.list`, `kernel-label`, `run-tests`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{
    cpio::{Archive, Content},
    host,
    kernel::{self, Kernel},
};

const INIT: &str = include_str!("../../vm-guest/init");
const RUN_TESTS: &str = include_str!("../../vm-guest/run-tests");

/// Programs the tests and the guest scripts run; the guest gets the host's.
/// `unshare` is util-linux's: busybox's has no `--kill-child`, which the
/// test of a run that was PID 1 in its namespace needs.
const REQUIRED_TOOLS: [&str; 5] = ["bash", "ip", "tc", "bridge", "unshare"];
/// Packed when the host has them: the not-root test runs the tool under
/// `setpriv`; socat and iperf3 are the real peers tests may use; ping
/// (iputils: busybox's rounds to 0.1 ms) is what `cargo xtask bench-vm`
/// times round trips with.
const OPTIONAL_TOOLS: [&str; 4] = ["setpriv", "socat", "iperf3", "ping"];

/// A program to run in the guest under `/vm/tests/NAME`.
#[derive(Debug)]
pub struct TestProgram {
    pub name: String,
    pub source: TestSource,
}

#[derive(Debug)]
pub enum TestSource {
    /// A test executable built on the host.
    Binary(PathBuf),
    /// A bash script compiled into xtask.
    Script(&'static str),
}

/// Everything but the kernel: the same for every kernel of a run.
#[derive(Debug)]
pub struct Payload {
    pub pygocentrus: PathBuf,
    pub tests: Vec<TestProgram>,
    pub test_args: Vec<String>,
}

/// Writes the initramfs for `kernel` to `out`; returns its size in bytes.
pub fn build(kernel: &Kernel, payload: &Payload, out: &Path) -> Result<u64> {
    let mut a = Archive::default();
    for dir in ["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/etc", "/vm/tests"] {
        a.dir(dir)?;
    }
    // The kernel opens /dev/console for PID 1 before anything is mounted.
    a.char_device("/dev/console", 5, 1)?;
    a.symlink("/var/run", "/run")?;
    a.symlink("/var/lock", "/run/lock")?;
    a.file("/init", 0o755, Content::Bytes(INIT.as_bytes().to_vec()))?;
    a.file("/vm/run-tests", 0o755, Content::Bytes(RUN_TESTS.as_bytes().to_vec()))?;
    etc(&mut a)?;

    let busybox = host::tool("busybox")?;
    add_program(&mut a, &busybox, "/busybox/busybox")?;
    for name in REQUIRED_TOOLS {
        let path = host::tool(name)?;
        add_program(&mut a, &path, &guest_path(&path)?)?;
    }
    for name in OPTIONAL_TOOLS {
        if let Some(path) = host::find(name) {
            add_program(&mut a, &path, &guest_path(&path)?)?;
        }
    }
    let bash = guest_path(&host::tool("bash")?)?;
    for link in ["/bin/bash", "/bin/sh"] {
        if !a.contains(link) {
            a.symlink(link, &bash)?;
        }
    }

    add_program(&mut a, &payload.pygocentrus, "/vm/pygocentrus")?;
    for test in &payload.tests {
        let at = format!("/vm/tests/{}", test.name);
        match &test.source {
            TestSource::Binary(path) => add_program(&mut a, path, &at)?,
            TestSource::Script(text) => a.file(&at, 0o755, Content::Bytes(text.as_bytes().to_vec()))?,
        }
    }
    let mut args = payload.test_args.join("\n");
    args.push('\n');
    a.file("/vm/test-args", 0o644, Content::Bytes(args.into_bytes()))?;
    a.file("/vm/kernel-label", 0o644, Content::Bytes(format!("{}\n", kernel.spec.label).into_bytes()))?;

    let mut list = String::new();
    for module in kernel.modules(&kernel::MODULES)? {
        let bytes = kernel::module_bytes(&module)?;
        a.file(&format!("/vm/modules/{}.ko", module.name), 0o644, Content::Bytes(bytes))?;
        list.push_str(&module.name);
        list.push('\n');
    }
    a.file("/vm/modules.list", 0o644, Content::Bytes(list.into_bytes()))?;

    a.write(out)
}

/// A program and every library it loads.
fn add_program(a: &mut Archive, host_path: &Path, guest: &str) -> Result<()> {
    a.file(guest, 0o755, Content::Host(host_path.to_owned()))?;
    for lib in host::shared_libraries(host_path)? {
        let at = lib.to_str().with_context(|| format!("library path {} is not UTF-8", lib.display()))?;
        if !a.contains(at) {
            a.file(at, 0o755, Content::Host(lib.clone()))?;
        }
    }
    Ok(())
}

fn guest_path(host_path: &Path) -> Result<String> {
    host_path.to_str().map(str::to_owned).with_context(|| format!("{} is not UTF-8", host_path.display()))
}

/// Enough of /etc for `setpriv`, name lookups of root/nobody and localhost.
fn etc(a: &mut Archive) -> Result<()> {
    let files: [(&str, &str); 5] = [
        ("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
        ("/etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("/etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n"),
        ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ("/etc/hostname", "vm-test\n"),
    ];
    for (path, text) in files {
        a.file(path, 0o644, Content::Bytes(text.as_bytes().to_vec()))?;
    }
    Ok(())
}
