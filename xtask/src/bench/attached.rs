//! The real binary attached to the lab's bridge: `ip netns exec … pygocentrus
//! attach --iface br0 FLAGS --json`, started, waited for (its `attached`
//! line on stderr), and stopped with SIGTERM, after which its JSON summary
//! says what the classifier saw. Used by the throughput and the live bench.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::lab::{BRIDGE, ChildGuard, Lab};

pub struct Tool {
    guard: ChildGuard,
    /// The tool's `attached …` line.
    pub line: String,
    said: Vec<String>,
    lines: mpsc::Receiver<String>,
    err_reader: JoinHandle<()>,
    out_reader: JoinHandle<Option<String>>,
}

/// What the tool's summary said when it stopped.
pub struct Summary {
    /// Packets the classifier ran on (slot 0: every packet).
    pub seen: u64,
    /// Packets the first rule matched.
    pub matched: u64,
}

impl Tool {
    /// Starts `binary attach --iface br0 FLAGS --json` in the bridge's
    /// namespace and waits (15 s at most) until it says it is attached.
    pub fn start(lab: &Lab, binary: &Path, flags: &str) -> Result<Self> {
        let mut cmd = lab.exec(&lab.bridge, &binary.to_string_lossy());
        cmd.args(["attach", "--iface", BRIDGE])
            .args(flags.split_whitespace())
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(cmd, "pygocentrus attach")?;
        let child = guard.child_mut().context("pygocentrus is not running")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::channel();
        let err_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The last JSON line on stdout is the summary.
        let out_reader = thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).last());

        let deadline = Instant::now() + Duration::from_secs(15);
        let mut said = Vec::new();
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.starts_with("attached") => break l,
                Ok(l) => said.push(l),
                Err(_) => bail!("pygocentrus did not attach within 15 s: {}", said.join(" / ")),
            }
        };
        Ok(Self { guard, line, said, lines, err_reader, out_reader })
    }

    /// SIGTERM, then the summary; fails if the tool did not exit cleanly or
    /// its classifier saw no packet.
    pub fn stop(mut self) -> Result<Summary> {
        let clean = self.guard.stop(Duration::from_secs(5))?;
        if self.err_reader.join().is_err() {
            eprintln!("bench: warning: the stderr reader of pygocentrus panicked");
        }
        self.said.extend(self.lines.try_iter());
        if !clean {
            bail!("pygocentrus did not exit cleanly on SIGTERM: {}", self.said.join(" / "));
        }
        let summary = self.out_reader.join().ok().flatten().context("pygocentrus printed no JSON summary")?;
        let json: Value = serde_json::from_str(&summary).context("pygocentrus's summary is not JSON")?;
        if json["event"] != "summary" {
            bail!("pygocentrus's last JSON line is not its summary: {summary}");
        }
        let seen = json["classifier_seen"].as_u64().unwrap_or(0);
        let matched = json["rules"][0]["matched"].as_u64().unwrap_or(0);
        if seen == 0 {
            bail!("the classifier saw no packet while attached: {summary}");
        }
        Ok(Summary { seen, matched })
    }
}
