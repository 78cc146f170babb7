//! TCP throughput across a bridge, bare and with pygocentrus attached to it
//! with a rule no packet matches, in alternating pairs.
//!
//! The attached runs start the real binary inside the bridge's namespace
//! (`ip netns exec … pygocentrus attach --iface br0 …`), wait for its
//! `attached` line on stderr, run iperf3, and stop it with SIGTERM; its
//! JSON summary shows that the classifier saw the traffic and matched none.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    cost::IDLE_RULE,
    lab::{BRIDGE, ChildGuard, Lab, SERVER_ADDR},
    median,
};

pub struct Settings<'a> {
    pub pairs: usize,
    pub secs: u32,
    pub binary: &'a Path,
}

/// Seconds iperf3 leaves out at the start of each run (slow start).
pub const OMIT: u32 = 1;

pub struct Pair {
    pub bare: f64,
    pub attached: f64,
    pub attached_first: bool,
}

impl Pair {
    pub fn ratio(&self) -> f64 {
        self.attached / self.bare
    }
}

pub struct Report {
    pub pairs: Vec<Pair>,
    pub secs: u32,
    /// Medians: bits/s bare and attached, and the median of the ratios.
    pub bare: f64,
    pub attached: f64,
    pub ratio: f64,
    /// The tool's own `attached …` line, from the first attached run.
    pub attached_line: String,
    /// Packets the classifier ran on, and packets the rule matched, over
    /// all attached runs.
    pub seen: u64,
    pub matched: u64,
    pub seconds: f64,
}

pub fn measure(s: &Settings<'_>) -> Result<Report> {
    let start = Instant::now();
    let lab = Lab::create().context("creating the namespaces")?;
    let mut cmd = lab.exec(&lab.server, "iperf3");
    cmd.args(["-s", "-B", SERVER_ADDR]).stdout(Stdio::null()).stderr(Stdio::null());
    let _server = ChildGuard::spawn(cmd, "the iperf3 server")?;
    warm_up(&lab)?;

    let mut pairs = Vec::new();
    let (mut seen, mut matched, mut attached_line) = (0, 0, String::new());
    for i in 0..s.pairs {
        let attached_first = i % 2 == 1;
        let (mut bare, mut attached) = (0.0, 0.0);
        for attach in [attached_first, !attached_first] {
            if attach {
                let run = run_attached(&lab, s)?;
                attached = run.bps;
                seen += run.seen;
                matched += run.matched;
                if attached_line.is_empty() {
                    attached_line = run.line;
                }
            } else {
                bare = iperf(&lab, s.secs)?;
            }
        }
        let pair = Pair { bare, attached, attached_first };
        eprintln!(
            "bench: throughput pair {}/{}: bare {:.2} Gbit/s, attached {:.2} Gbit/s, ratio {:.4}",
            i + 1,
            s.pairs,
            bare / 1e9,
            attached / 1e9,
            pair.ratio()
        );
        pairs.push(pair);
    }
    let col = |f: fn(&Pair) -> f64| median(&pairs.iter().map(f).collect::<Vec<_>>());
    Ok(Report {
        bare: col(|p| p.bare),
        attached: col(|p| p.attached),
        ratio: col(Pair::ratio),
        pairs,
        secs: s.secs,
        attached_line,
        seen,
        matched,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Waits for the server to listen, with short runs that also warm up.
fn warm_up(lab: &Lab) -> Result<()> {
    let mut tries = 0;
    loop {
        match iperf(lab, 1) {
            Ok(_) => return Ok(()),
            Err(e) if tries >= 20 => return Err(e).context("the iperf3 server never answered"),
            Err(_) => tries += 1,
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// One iperf3 run from the client namespace: received bits per second.
fn iperf(lab: &Lab, secs: u32) -> Result<f64> {
    let out = lab
        .exec(&lab.client, "iperf3")
        .args(["-c", SERVER_ADDR, "-t", &secs.to_string(), "-O", &OMIT.to_string(), "-J"])
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    let json: Value = serde_json::from_slice(&out.stdout).context("iperf3 did not print JSON")?;
    if let Some(err) = json.get("error") {
        bail!("iperf3: {err}");
    }
    json.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("no end.sum_received.bits_per_second in iperf3's JSON")
}

struct AttachedRun {
    bps: f64,
    line: String,
    seen: u64,
    matched: u64,
}

fn run_attached(lab: &Lab, s: &Settings<'_>) -> Result<AttachedRun> {
    let mut cmd = lab.exec(&lab.bridge, &s.binary.to_string_lossy());
    cmd.args(["attach", "--iface", BRIDGE])
        .args(IDLE_RULE.split_whitespace())
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(cmd, "pygocentrus attach")?;
    let child = guard.child_mut().context("pygocentrus is not running")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
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
        match rx.recv_timeout(left) {
            Ok(l) if l.starts_with("attached") => break l,
            Ok(l) => said.push(l),
            Err(_) => bail!("pygocentrus did not attach within 15 s: {}", said.join(" / ")),
        }
    };

    let bps = iperf(lab, s.secs)?;
    let clean = guard.stop(Duration::from_secs(5))?;
    if err_reader.join().is_err() {
        eprintln!("bench: warning: the stderr reader of pygocentrus panicked");
    }
    said.extend(rx.try_iter());
    if !clean {
        bail!("pygocentrus did not exit cleanly on SIGTERM: {}", said.join(" / "));
    }
    let summary = out_reader.join().ok().flatten().context("pygocentrus printed no JSON summary")?;
    let json: Value = serde_json::from_str(&summary).context("pygocentrus's summary is not JSON")?;
    if json["event"] != "summary" {
        bail!("pygocentrus's last JSON line is not its summary: {summary}");
    }
    let seen = json["classifier_seen"].as_u64().unwrap_or(0);
    let matched = json["rules"][0]["matched"].as_u64().unwrap_or(0);
    if seen == 0 {
        bail!("the classifier saw no packet while attached: {summary}");
    }
    Ok(AttachedRun { bps, line, seen, matched })
}
