//! TCP throughput across a bridge, bare and with pygocentrus attached to it
//! with a rule no packet matches, in alternating pairs.
//!
//! The attached runs start the real binary inside the bridge's namespace
//! (`attached::Tool`), run iperf3, and stop it; its JSON summary shows that
//! the classifier saw the traffic and matched none.

use std::{
    path::Path,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    attached::Tool,
    cost::IDLE_RULE,
    lab::{ChildGuard, Lab, SERVER_ADDR},
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
pub(super) fn warm_up(lab: &Lab) -> Result<()> {
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
pub(super) fn iperf(lab: &Lab, secs: u32) -> Result<f64> {
    let json = iperf3(lab, &["-t", &secs.to_string(), "-O", &OMIT.to_string()])?;
    json.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .context("no end.sum_received.bits_per_second in iperf3's JSON")
}

/// `iperf3 -c SERVER ARGS -J` from the client namespace: its JSON, or the
/// error it reported.
pub(super) fn iperf3(lab: &Lab, args: &[&str]) -> Result<Value> {
    let out = lab
        .exec(&lab.client, "iperf3")
        .args(["-c", SERVER_ADDR])
        .args(args)
        .arg("-J")
        .stdin(Stdio::null())
        .output()
        .context("running iperf3")?;
    let json: Value = serde_json::from_slice(&out.stdout).context("iperf3 did not print JSON")?;
    if let Some(err) = json.get("error") {
        bail!("iperf3 {}: {err}", args.join(" "));
    }
    Ok(json)
}

struct AttachedRun {
    bps: f64,
    line: String,
    seen: u64,
    matched: u64,
}

fn run_attached(lab: &Lab, s: &Settings<'_>) -> Result<AttachedRun> {
    let tool = Tool::start(lab, s.binary, IDLE_RULE)?;
    let line = tool.line.clone();
    let bps = iperf(lab, s.secs)?;
    let summary = tool.stop()?;
    Ok(AttachedRun { bps, line, seen: summary.seen, matched: summary.matched })
}
