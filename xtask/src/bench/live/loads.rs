//! The live bench's traffic, client namespace → server namespace across
//! the lab's bridge: bulk TCP and small UDP datagrams (iperf3), and
//! requests and responses (redis-benchmark against a redis-server).

use std::{env, process::Stdio, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use clap::ValueEnum;

use super::super::{
    interrupt,
    lab::{ChildGuard, Lab, SERVER_ADDR},
    throughput,
};

pub const IPERF_PORT: u16 = 5201;
pub const REDIS_PORT: u16 = 6379;
/// UDP payload bytes of the small-packet load.
pub const UDP_PAYLOAD: u32 = 64;
/// redis-benchmark's parallel connections (`-c`).
pub const REDIS_CLIENTS: u32 = 4;
/// How long one redis-benchmark run may take before it is stopped.
const REDIS_TIMEOUT_SECS: u32 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Load {
    /// One iperf3 TCP stream, client → server.
    Tcp,
    /// iperf3 UDP, 64-byte datagrams at a fixed rate, client → server.
    Udp,
    /// redis-benchmark SET and GET against a redis-server (request/response).
    Rr,
}

pub struct Settings {
    pub secs: u32,
    pub udp_pps: u32,
    pub requests: u32,
}

impl Load {
    pub const ALL: [Load; 3] = [Load::Tcp, Load::Udp, Load::Rr];

    /// The server's port: what the matched rules name.
    pub fn port(self) -> u16 {
        match self {
            Load::Tcp | Load::Udp => IPERF_PORT,
            Load::Rr => REDIS_PORT,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Load::Tcp => "iperf3 TCP bulk",
            Load::Udp => "iperf3 UDP, 64 B",
            Load::Rr => "redis-benchmark",
        }
    }

    /// The command, as the report shows it.
    pub fn command(self, s: &Settings) -> String {
        match self {
            Load::Tcp => format!("iperf3 -c {SERVER_ADDR} -t {} -O {}", s.secs, throughput::OMIT),
            Load::Udp => format!("iperf3 -c {SERVER_ADDR} -u -l {UDP_PAYLOAD} -b {} -t {}", udp_bitrate(s), s.secs),
            Load::Rr => format!(
                "redis-benchmark -h {SERVER_ADDR} -p {REDIS_PORT} -t set,get -n {} -c {REDIS_CLIENTS}",
                s.requests
            ),
        }
    }

    /// The unit of what [`run`] returns.
    pub fn unit(self) -> &'static str {
        match self {
            Load::Tcp => "Gbit/s",
            Load::Udp => "datagrams/s",
            Load::Rr => "requests/s",
        }
    }
}

/// iperf3's `-b` for `udp_pps` datagrams a second (it counts payload bits).
fn udp_bitrate(s: &Settings) -> u64 {
    u64::from(s.udp_pps) * u64::from(UDP_PAYLOAD) * 8
}

/// The servers, in the server namespace, stopped when dropped.
pub struct Servers {
    _iperf: ChildGuard,
    _redis: Option<ChildGuard>,
}

pub fn start_servers(lab: &Lab, loads: &[Load]) -> Result<Servers> {
    let mut cmd = lab.exec(&lab.server, "iperf3");
    cmd.args(["-s", "-B", SERVER_ADDR]).stdout(Stdio::null()).stderr(Stdio::null());
    let iperf = ChildGuard::spawn(cmd, "the iperf3 server")?;
    throughput::warm_up(lab)?;
    let redis = if loads.contains(&Load::Rr) {
        let mut cmd = lab.exec(&lab.server, "redis-server");
        // No persistence, nothing written; its working directory a
        // temporary one all the same.
        cmd.args(["--bind", SERVER_ADDR, "--port", &REDIS_PORT.to_string(), "--protected-mode", "no"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let guard = ChildGuard::spawn(cmd, "redis-server")?;
        let mut tries = 0;
        while !redis_answers(lab) {
            interrupt::check()?;
            tries += 1;
            if tries > 40 {
                bail!("redis-server never answered at {SERVER_ADDR}:{REDIS_PORT}");
            }
            thread::sleep(Duration::from_millis(250));
        }
        Some(guard)
    } else {
        None
    };
    Ok(Servers { _iperf: iperf, _redis: redis })
}

/// Whether `redis-cli PING` gets its PONG (redis-benchmark itself hangs
/// when the server is not listening yet).
fn redis_answers(lab: &Lab) -> bool {
    lab.exec(&lab.client, "redis-cli")
        .args(["-h", SERVER_ADDR, "-p", &REDIS_PORT.to_string(), "ping"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
}

/// One run of the load: its rate in [`Load::unit`].
pub fn run(lab: &Lab, load: Load, s: &Settings) -> Result<f64> {
    match load {
        Load::Tcp => Ok(throughput::iperf(lab, s.secs)? / 1e9),
        Load::Udp => udp(lab, s),
        Load::Rr => redis(lab, s.requests),
    }
}

fn udp(lab: &Lab, s: &Settings) -> Result<f64> {
    let (len, rate, secs) = (UDP_PAYLOAD.to_string(), udp_bitrate(s).to_string(), s.secs.to_string());
    let json = throughput::iperf3(lab, &["-u", "-l", &len, "-b", &rate, "-t", &secs])?;
    let sum = json.pointer("/end/sum").context("no end.sum in iperf3's JSON")?;
    let packets = sum["packets"].as_f64().context("no end.sum.packets")?;
    let seconds = sum["seconds"].as_f64().context("no end.sum.seconds")?;
    Ok(packets / seconds)
}

/// `redis-benchmark -t set,get -n N`: the mean of the two tests' requests
/// per second.
fn redis(lab: &Lab, requests: u32) -> Result<f64> {
    // `timeout`: redis-benchmark waits for ever on a server that went away.
    let out = lab
        .exec(&lab.client, "timeout")
        .args([&REDIS_TIMEOUT_SECS.to_string(), "redis-benchmark"])
        .args(["-h", SERVER_ADDR, "-p", &REDIS_PORT.to_string(), "-t", "set,get"])
        .args(["-n", &requests.to_string(), "-c", &REDIS_CLIENTS.to_string(), "--csv"])
        .stdin(Stdio::null())
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("redis-benchmark failed: {} {}", text.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let rps = csv_rps(&text);
    if rps.len() != 2 {
        bail!("redis-benchmark printed no SET and GET lines: {}", text.trim());
    }
    Ok(rps.iter().sum::<f64>() / 2.0)
}

/// The `rps` column of redis-benchmark's `--csv` lines (`"GET","21891.42",…`).
fn csv_rps(text: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with("\"test\""))
        .filter_map(|l| l.split(',').nth(1))
        .filter_map(|v| v.trim_matches('"').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::csv_rps;

    #[test]
    fn reads_redis_benchmark_csv() {
        let text =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"SET\",\"14184.40\",\"0.221\"\n\"GET\",\"21891.42\",\"0.140\"\n";
        assert_eq!(csv_rps(text), vec![14184.40, 21891.42]);
    }
}
