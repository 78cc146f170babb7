//! Boots one kernel and its initramfs under QEMU (TCG, no network), streams
//! the guest's serial console, and reads the exit status the guest prints.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{host, kernel::Kernel};

/// Printed by the guest's run-tests before the first test: from here on the
/// console is shown live.
const BEGIN: &str = "VM-TEST-BEGIN";
/// Printed by run-tests after the last test (and its diagnostics).
const END: &str = "VM-TEST-END";
/// Printed by the guest's init: `VM-TEST-RESULT rc=N`.
const RESULT: &str = "VM-TEST-RESULT rc=";

#[derive(Debug)]
pub struct Machine {
    pub memory_mib: u32,
    pub cpus: u32,
    pub timeout: Duration,
}

#[derive(Debug)]
pub struct Outcome {
    /// The guest's exit status, if it printed one.
    pub rc: Option<i32>,
    pub timed_out: bool,
    /// The console lines that were not printed live (the boot, and QEMU's
    /// own stderr prefixed `qemu: `): shown when the run fails.
    pub unseen: Vec<String>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.rc == Some(0) && !self.timed_out
    }
}

enum Line {
    Console(String),
    Qemu(String),
}

/// Boots `kernel` with `initramfs`, writes the console to `log`.
pub fn run(kernel: &Kernel, initramfs: &Path, machine: &Machine, log: &Path) -> Result<Outcome> {
    let qemu = host::tool("qemu-system-x86_64")?;
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-cpu", "max"])
        .args(["-smp", &machine.cpus.to_string(), "-m", &machine.memory_mib.to_string()])
        .args(["-nodefaults", "-no-user-config", "-no-reboot", "-display", "none"])
        .args(["-nic", "none", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // mitigations=off: page-table isolation and retpolines only cost
        // time under emulation. panic=-1 with -no-reboot: a dead guest ends
        // QEMU instead of hanging until the timeout.
        .args(["-append", "console=ttyS0 loglevel=4 panic=-1 rdinit=/init mitigations=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("QEMU's stdout")?;
    let stderr = child.stderr.take().context("QEMU's stderr")?;
    let tx2 = tx.clone();
    std::thread::spawn(move || forward(stdout, &tx, Line::Console));
    std::thread::spawn(move || forward(stderr, &tx2, Line::Qemu));

    let mut log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut unseen = Vec::new();
    let mut rc = None;
    let mut live = false;
    let mut timed_out = false;
    let deadline = start + machine.timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // After the result line, poweroff takes a moment: wait at most 30 s.
        let left = if rc.is_some() { left.min(Duration::from_secs(30)) } else { left };
        let line = match rx.recv_timeout(left) {
            Ok(Line::Console(l)) => l,
            Ok(Line::Qemu(l)) => format!("qemu: {l}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = rc.is_none();
                // The child may have exited in the meantime; either way it is gone after this.
                let _ = child.kill();
                break;
            }
        };
        writeln!(log_file, "{line}").with_context(|| format!("writing {}", log.display()))?;
        if line.contains(BEGIN) {
            live = true;
        }
        if let Some(at) = line.find(RESULT) {
            let digits: String = line[at + RESULT.len()..].chars().take_while(char::is_ascii_digit).collect();
            rc = digits.parse().ok();
        }
        if line.contains(END) {
            live = false;
            println!("{line}");
        } else if live {
            println!("{line}");
        } else {
            unseen.push(line);
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    if rc.is_none() && !timed_out && !status.success() {
        unseen.push(format!("qemu: exited with {status}"));
    }
    Ok(Outcome { rc, timed_out, unseen, elapsed: start.elapsed() })
}

/// Sends every line of `from` (without `\r\n`) until it closes.
fn forward(from: impl Read, tx: &mpsc::Sender<Line>, wrap: fn(String) -> Line) {
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let text = text.trim_end_matches(['\r', '\n']).replace('\r', "");
                if tx.send(wrap(text)).is_err() {
                    return;
                }
            }
        }
    }
}
