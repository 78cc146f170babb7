//! `cargo xtask vm-test`: the integration tests under the kernels of the
//! matrix, each booted in QEMU.
//!
//! - 6.1 (Debian bookworm's cloud kernel) has no TCX: pygocentrus falls back
//!   to a `clsact` qdisc and `cls_bpf` filters added through netlink.
//! - 6.12 (bookworm-security's cloud kernel) has TCX: links owned by the
//!   process.
//!
//! Both have `sch_fq` and `sch_netem`, which the development machines'
//! kernel lacks. The kernels are Debian packages fetched once with
//! `apt-get download` into a cache outside the repository (see
//! [`kernel::cache_dir`]); after that the harness works offline.
//!
//! Each run builds pygocentrus and the test executables of
//! `pygocentrus-tests` on the host, packs them with busybox, bash, iproute2
//! and their libraries into an initramfs (`target/vm-test/`), boots it under
//! TCG (`/dev/kvm` cannot be used on these machines) without a network
//! device, and runs every test executable as root in the guest. The guest
//! prints `VM-TEST-RESULT rc=N` on its serial console and powers off.
//!
//! The whole suite runs in each guest, with libtest's default of one thread
//! per guest CPU: about 2.5 minutes per kernel under TCG on a 2-core machine
//! (21 tests in November 2026). `-- FILTER` narrows it for a quick run.

pub mod bench;
mod cpio;
mod host;
mod kernel;
mod qemu;
mod rootfs;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use kernel::{KERNELS, KernelSpec};
use rootfs::{Payload, TestProgram, TestSource};

const SMOKE: &str = include_str!("../vm-guest/smoke");

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Which kernel to boot: 6.1 (netlink clsact fallback), 6.12 (TCX) or all.
    #[arg(long, default_value = "all", value_parser = ["6.1", "6.12", "all"])]
    kernel: String,
    /// Run the harness's own smoke test (a bridge lab and one
    /// `pygocentrus attach`) instead of the integration tests.
    #[arg(long)]
    smoke: bool,
    /// Seconds after which a guest is killed and counted as failed.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Arguments for every test executable (libtest's: a name filter,
    /// `--skip NAME`, `--exact`, `--nocapture`...), e.g.
    /// `cargo xtask vm-test --kernel 6.1 -- lifecycle::`.
    #[arg(last = true)]
    test_args: Vec<String>,
}

pub fn run(args: &VmTestArgs) -> Result<()> {
    let (workspace, work, kernels) = prepare(&args.kernel, "vm-test")?;
    let payload = payload(args, &workspace, &work)?;
    let machine =
        qemu::Machine { memory_mib: args.memory, cpus: args.cpus, timeout: Duration::from_secs(args.timeout) };

    let mut results = Vec::new();
    for kernel in &kernels {
        println!("== vm-test: Linux {} ({}, {})", kernel.release, kernel.spec.label, kernel.spec.hook);
        let packed = Instant::now();
        let initramfs = work.join(format!("initramfs-{}.cpio", kernel.spec.label));
        let size = rootfs::build(kernel, &payload, &initramfs)
            .with_context(|| format!("packing the initramfs for {}", kernel.release))?;
        eprintln!(
            "vm-test: initramfs {} MiB packed in {:.1} s; booting under TCG",
            size >> 20,
            packed.elapsed().as_secs_f64()
        );
        let log = work.join(format!("console-{}.log", kernel.spec.label));
        let outcome = qemu::run(kernel, &initramfs, &machine, &log)?;
        if !outcome.passed() {
            println!(
                "== vm-test: {} FAILED; the rest of the guest's console (all of it is in {}):",
                kernel.spec.label,
                log.display()
            );
            for line in &outcome.unseen {
                println!("| {line}");
            }
        }
        results.push((kernel, outcome));
    }

    println!("== vm-test summary");
    let mut failed = Vec::new();
    for (kernel, outcome) in &results {
        let verdict = match (outcome.timed_out, outcome.rc) {
            (true, _) => format!("TIMED OUT after {} s", args.timeout),
            (false, Some(0)) => "passed".to_owned(),
            (false, Some(rc)) => format!("FAILED (rc={rc})"),
            (false, None) => "FAILED (the guest printed no result)".to_owned(),
        };
        println!(
            "   {:<5} {:<28} {verdict} in {:.0} s",
            kernel.spec.label,
            kernel.release,
            outcome.elapsed.as_secs_f64()
        );
        if !outcome.passed() {
            failed.push(kernel.spec.label);
        }
    }
    if !failed.is_empty() {
        bail!("vm-test failed on kernel {}", failed.join(", "));
    }
    Ok(())
}

/// pygocentrus and the test programs, built (and stripped of debug info,
/// which only makes the initramfs bigger) for the guest.
fn payload(args: &VmTestArgs, workspace: &Path, work: &Path) -> Result<Payload> {
    let (bin_dir, pygocentrus) = build_pygocentrus(workspace, work, Profile::Dev)?;

    let tests = if args.smoke {
        vec![TestProgram { name: "smoke".to_owned(), source: TestSource::Script(SMOKE) }]
    } else {
        let built = cargo_executables(workspace, &["test", "-p", "pygocentrus-tests", "--no-run"])?;
        if built.is_empty() {
            bail!("cargo built no test executable for pygocentrus-tests");
        }
        built
            .into_iter()
            .map(|(name, path)| {
                let slim_path = slim(&path, &bin_dir.join(&name))?;
                Ok(TestProgram { name, source: TestSource::Binary(slim_path) })
            })
            .collect::<Result<_>>()?
    };
    Ok(Payload { pygocentrus, tests, test_args: args.test_args.clone() })
}

/// Checks the host's tools, makes the work directory `target/WORK`, and
/// returns the workspace, that directory and the kernels `label` selects
/// (`all` or one label of [`KERNELS`]), downloaded if needed.
fn prepare(label: &str, work: &str) -> Result<(PathBuf, PathBuf, Vec<kernel::Kernel>)> {
    let kernels: Vec<&'static KernelSpec> = KERNELS.iter().filter(|k| label == "all" || label == k.label).collect();
    // Fail early, before building, on a machine without the tools.
    host::tool("qemu-system-x86_64")?;
    host::tool("busybox")?;

    let workspace = workspace_root()?;
    let work = target_dir(&workspace).join(work);
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let cache = kernel::cache_dir()?;
    // Download before building: a missing kernel is the slow, rare failure.
    let kernels = kernels.into_iter().map(|spec| kernel::ensure(spec, &cache)).collect::<Result<Vec<_>>>()?;
    Ok((workspace, work, kernels))
}

/// Which cargo profile [`build_pygocentrus`] builds (the eBPF program in it
/// is optimized either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profile {
    /// The one the integration tests run (`scripts/test`).
    Dev,
    /// The one a user runs, and the benchmarks.
    Release,
}

/// Builds pygocentrus and returns `WORK/bin` and a slim copy of it there.
fn build_pygocentrus(workspace: &Path, work: &Path, profile: Profile) -> Result<(PathBuf, PathBuf)> {
    let bin_dir = work.join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let mut args = vec!["build", "-p", "pygocentrus-userspace", "--bin", "pygocentrus"];
    if profile == Profile::Release {
        args.push("--release");
    }
    let built = cargo_executables(workspace, &args)?;
    let (_, pygocentrus) = built.into_iter().next().context("cargo built no pygocentrus executable")?;
    let pygocentrus = slim(&pygocentrus, &bin_dir.join("pygocentrus"))?;
    Ok((bin_dir, pygocentrus))
}

/// Runs `cargo ARGS --message-format=json-render-diagnostics` in the
/// workspace and returns the executables it reports, as (target name, path).
fn cargo_executables(workspace: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("`cargo {}` failed ({})", args.join(" "), out.status);
    }
    let mut executables = parse_cargo_messages(&String::from_utf8_lossy(&out.stdout))?;
    // Two targets of the same name (a lib's unit tests and a test file) get
    // distinct names in the guest.
    executables.sort();
    for i in 1..executables.len() {
        if executables[i].0 == executables[i - 1].0 {
            executables[i].0.push_str(&format!("-{i}"));
        }
    }
    Ok(executables)
}

fn parse_cargo_messages(stdout: &str) -> Result<Vec<(String, PathBuf)>> {
    let mut executables = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let msg: serde_json::Value = serde_json::from_str(line).context("parsing cargo's JSON messages")?;
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str()) else {
            continue;
        };
        executables.push((name.to_owned(), PathBuf::from(exe)));
    }
    Ok(executables)
}

/// Copies `src` to `dst` without debug info (`strip --strip-debug` keeps the
/// symbols, so panics still have a readable backtrace); a plain copy when
/// the host has no `strip`.
fn slim(src: &Path, dst: &Path) -> Result<PathBuf> {
    match host::find("strip") {
        Some(strip) => host::run(Command::new(strip).arg("--strip-debug").arg("-o").arg(dst).arg(src))?,
        None => {
            fs::copy(src, dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(dst.to_owned())
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_owned).context("xtask has no parent directory")
}

fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace.join("target"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_messages_give_executables() {
        let out = r#"{"reason":"compiler-artifact","target":{"name":"lab","kind":["lib"]},"executable":null}
{"reason":"compiler-artifact","target":{"name":"attach","kind":["test"]},"executable":"/t/debug/deps/attach-0123"}
{"reason":"build-finished","success":true}
"#;
        let exes = parse_cargo_messages(out).unwrap();
        assert_eq!(exes, [("attach".to_owned(), PathBuf::from("/t/debug/deps/attach-0123"))]);
    }
}
