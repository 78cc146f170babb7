//! The delay family: --delay, --jitter, --distribution, --keep-order and
//! --rate stamp departure times that the `fq` qdisc enforces. Tests that
//! need fq skip on a kernel without it (`cargo xtask vm-test` runs them
//! under Debian's kernels, which have it).
//!
//! Tolerances. EDT never lets a packet leave before its departure time, so
//! lower bounds are exact and strict: a ping under a 20 ms delay takes at
//! least 20 ms, and one under 20 ± 10 ms at least 10 ms (a doubled jitter
//! would break that). Upper bounds allow [`LATE`] on a median or a 95th
//! percentile: the time between fq's timer and the packet reaching the
//! receiving socket, plus the scheduling noise of the machine. On hardware
//! that is tens of microseconds; under QEMU's TCG emulation (how CI runs
//! these tests, several at once on a loaded host) we measured medians up to
//! 5.6 ms late, hence 10 ms. They still catch a delay applied twice or in
//! the wrong unit. How close the delay comes to what was asked is measured,
//! beside netem, in the benchmark (BENCHMARKS.md).

use std::{
    io::{Read as _, Write as _},
    net::Shutdown,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use pygocentrus_tests::{
    Lab, NetCounters, UdpFlow, args, output_within, require_fq, seq_of, tcp_connect, tcp_listener,
};
use serde_json::Value;

use crate::{PORT, rule};

/// How late a median (or 95th percentile) may be: see the module's comment.
const LATE: Duration = Duration::from_millis(10);
const MS: Duration = Duration::from_millis(1);

fn median(samples: &[Duration]) -> Duration {
    percentile(samples, 50)
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    s[(s.len() * p / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn delay_20ms_adds_20ms_to_each_delayed_leg_of_the_round_trip() {
    let (lab, client, server) = Lab::pair("delay");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let base = median(&flow.ping(20));

    // Only the way to the target: one delayed leg per round trip.
    let tool = lab.attach(&rule("udp", None, args!["--direction", "to", "--delay", "20ms", "--json"]));
    let one_way = flow.ping(50);
    let out = tool.terminate();
    let fastest = one_way.iter().min().copied().unwrap_or_default();
    assert!(fastest >= 20 * MS, "a round trip took {:.2} ms under a 20 ms delay: fq let it out early", ms(fastest));
    let added = median(&one_way).saturating_sub(base);
    assert!(added <= 20 * MS + LATE, "median added delay {:.2} ms, expected 20 ms", ms(added));
    assert_eq!(out.counter("delayed"), 50, "{out}");
    assert_eq!(out.counter("delayed"), out.counter("matched"), "{out}");

    // Both ways (the default): both legs wait.
    let tool = lab.attach(&rule("udp", None, args!["--delay", "20ms", "--json"]));
    let both = flow.ping(30);
    tool.terminate();
    let fastest = both.iter().min().copied().unwrap_or_default();
    assert!(fastest >= 40 * MS, "a round trip took {:.2} ms with both legs delayed 20 ms", ms(fastest));
    let added = median(&both).saturating_sub(base);
    assert!(added <= 40 * MS + LATE, "median added delay {:.2} ms, expected 40 ms", ms(added));
    lab.assert_clean("after the delayed runs", Duration::from_secs(2));
}

#[test]
fn uniform_jitter_spreads_the_delay_over_its_whole_range() {
    let (lab, client, server) = Lab::pair("jitter");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let base = median(&flow.ping(20));
    let tool = lab.attach(&rule("udp", None, args!["--direction", "to", "--delay", "20ms", "--jitter", "10ms"]));
    let rtts = flow.ping(100);
    tool.terminate();

    let added: Vec<Duration> = rtts.iter().map(|r| r.saturating_sub(base)).collect();
    let (lo, hi) = (rtts.iter().min().copied().unwrap_or_default(), percentile(&added, 95));
    // Exact lower bound: 20 - 10 ms. Upper: 20 + 10 ms, plus lateness.
    assert!(lo >= 10 * MS, "a round trip of {:.2} ms under 20±10 ms", ms(lo));
    assert!(hi <= 30 * MS + LATE, "95th percentile of the added delay {:.2} ms under 20±10 ms", ms(hi));
    // Uniform over [10, 30] ms: the 10th to 90th percentile spread is
    // 16 ms, with a standard deviation of about 0.8 ms over 100 samples, so
    // at least 12 ms holds by 5 of them (3e-7). A spread, not a count of
    // samples near the bounds: lateness (up to a few ms under QEMU's
    // emulation) moves every sample alike and cancels out of it. Without
    // jitter the spread is the lateness's own, a millisecond or two.
    let spread = percentile(&added, 90).saturating_sub(percentile(&added, 10));
    assert!(spread >= 12 * MS, "jitter did not spread: 10th to 90th percentile {:.2} ms, expected 16", ms(spread));
}

#[test]
fn normal_jitter_has_the_configured_median_and_spread() {
    const N: u32 = 200;
    let (lab, client, server) = Lab::pair("normal");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let base = median(&flow.ping(20));
    let tool = lab.attach(&rule(
        "udp",
        None,
        args!["--direction", "to", "--delay", "20ms", "--jitter", "4ms", "--distribution", "normal"],
    ));
    let added: Vec<Duration> = flow.ping(N).iter().map(|r| r.saturating_sub(base)).collect();
    tool.terminate();

    // Median and interquartile range, not mean and deviation: under QEMU's
    // emulation a few samples come back tens of milliseconds late, which
    // would swamp a mean or a deviation but barely moves quartiles. For a
    // normal law with sd 4 ms the median is 20 ms and the IQR 1.349 × 4 =
    // 5.4 ms; with 200 samples their standard errors are about 0.35 and
    // 0.5 ms. Lower bounds: 5 standard errors (exact binomial tail of the
    // median below 18.2 ms: under 1e-6; lateness only adds). Upper bounds:
    // 4 of them plus LATE.
    let (q1, q2, q3) = (ms(percentile(&added, 25)), ms(percentile(&added, 50)), ms(percentile(&added, 75)));
    let iqr = q3 - q1;
    assert!((18.2..=21.4 + ms(LATE)).contains(&q2), "median added delay {q2:.2} ms, expected 20");
    assert!((2.9..=7.4 + ms(LATE)).contains(&iqr), "interquartile range {iqr:.2} ms, expected 5.4 (sd 4)");
}

#[test]
fn jitter_reorders_a_flow_and_keep_order_does_not() {
    const N: u32 = 300;
    let (lab, client, server) = Lab::pair("order");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let inversions = |jittered: &[Vec<u8>]| jittered.windows(2).filter(|w| seq_of(&w[1]) < seq_of(&w[0])).count();
    let jitter = args!["--delay", "10ms", "--jitter", "10ms", "--json"];

    let tool = lab.attach(&rule("udp", None, jitter.clone()));
    let x = flow.exchange(N);
    tool.terminate();
    assert_eq!(x.received(), N as usize, "datagrams were lost");
    // Fifty datagrams leave within a fraction of a millisecond, each with
    // its own delay between 0 and 20 ms: they cannot all keep their order.
    assert!(inversions(&x.received) > 0, "jitter reordered nothing");

    let mut ordered = jitter;
    ordered.push("--keep-order".into());
    let tool = lab.attach(&rule("udp", None, ordered));
    let x = flow.exchange(N);
    let out = tool.terminate();
    assert_eq!(x.received(), N as usize, "datagrams were lost");
    assert_eq!(inversions(&x.received), 0, "--keep-order let datagrams overtake each other");
    assert_eq!(out.counter("delayed"), u64::from(N), "{out}");
}

/// How long a 6-second iperf3 run may take before the test calls it
/// stalled (a rate queue without bound stalled TCP for minutes).
const IPERF_DEADLINE: Duration = Duration::from_secs(60);

/// One iperf3 TCP measurement (5 s, the first second omitted) from `client`
/// to a one-off server in `server`: the rate the server received, in bit/s,
/// or why there is none.
fn iperf_received(client: &str, server: &str, server_ip: &str, port: u16) -> Result<f64, String> {
    let mut iperf_server = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "--server", "--one-off", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting iperf3 (scripts/setup installs it): {e}"));
    // The server listens within milliseconds; the client retries briefly.
    // A refused connection is retried whatever iperf3's exit status (the
    // iperf3 in Debian 12 can exit 0 with the refusal in its JSON `error`).
    let mut last = String::from("the iperf3 client never ran");
    let mut report = None;
    for _ in 0..50 {
        let out = output_within(
            Command::new("ip").args(["netns", "exec", client, "iperf3", "--json", "--client", server_ip]).args([
                "--port",
                &port.to_string(),
                "--time",
                "5",
                "--omit",
                "1",
            ]),
            IPERF_DEADLINE,
        );
        let parsed: Result<Value, String> =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("iperf3 JSON ({}): {e}", out.status));
        let refused = match &parsed {
            Ok(json) => json["error"].as_str().is_some_and(|e| e.contains("unable to connect")),
            Err(_) => !out.status.success(),
        };
        if !refused {
            report = Some(parsed);
            break;
        }
        last = match parsed {
            Ok(json) => format!("the iperf3 client never connected: {}", json["error"]),
            Err(e) => e,
        };
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = iperf_server.kill();
    let _ = iperf_server.wait();
    let report = report.ok_or(last)??;
    report["end"]["sum_received"]["bits_per_second"].as_f64().ok_or_else(|| {
        let error = report["error"].as_str().unwrap_or("no error given");
        format!("iperf3 reported no received rate ({error}); its end section: {}", report["end"])
    })
}

#[test]
fn rate_limits_iperf3_tcp_throughput_to_within_10_percent() {
    const RATE_BPS: f64 = 5e6;
    const IPERF_PORT: u16 = 5201;
    let (lab, client, server) = Lab::pair("rate");
    require_fq!(lab);
    let server_ip = server.ip(false).to_string();
    let tool = lab.attach(&args![
        "--iface",
        pygocentrus_tests::BRIDGE,
        "--ip",
        server_ip,
        "--port",
        IPERF_PORT,
        "--rate",
        "5mbit",
        "--json"
    ]);
    // Up to three measurements. Once, in CI under QEMU, iperf3 exited 0
    // with no received rate in its report (that figure comes from the
    // server, over the control connection, which waits in the same rate
    // queue); such a report counts as a failed attempt and is kept, to be
    // shown if no attempt succeeds.
    let mut failures = Vec::new();
    let got = (0..3).find_map(|_| match iperf_received(&client.ns, &server.ns, &server_ip, IPERF_PORT) {
        Ok(bps) => Some(bps),
        Err(why) => {
            failures.push(why);
            None
        }
    });
    let out = tool.terminate();
    let got = got.unwrap_or_else(|| panic!("no iperf3 measurement in 3 attempts: {failures:#?}"));

    // The rate counts whole frames; iperf3 counts payload. A full segment
    // carries 1448 payload bytes in a 1514-byte frame (timestamps on).
    let expected = RATE_BPS * 1448.0 / 1514.0;
    assert!(
        (got - expected).abs() <= 0.1 * expected,
        "iperf3 received {:.3} Mbit/s under --rate 5mbit, expected {:.3} ± 10%",
        got / 1e6,
        expected / 1e6
    );
    assert!(out.counter("rate_limited") > 0, "{out}");
}

#[test]
fn fq_goes_in_for_the_run_and_the_original_root_qdisc_comes_back() {
    let (lab, client, _) = Lab::pair("qdisc");
    require_fq!(lab);
    let show = |dev: &str| lab.tc(&["qdisc", "show", "dev", dev]);
    let ports: Vec<String> = lab.port_hooks().into_iter().map(|(p, _)| p).collect();
    let before: Vec<String> = ports.iter().map(|p| show(p)).collect();

    let tool = lab.attach(&rule("udp", None, args!["--delay", "5ms"]));
    for (port, hooks) in lab.port_hooks() {
        assert!(hooks.fq, "{port} has no fq root qdisc while delaying: {}", show(&port));
    }
    tool.stop(Signal::SIGTERM).assert_exit(0);
    let after: Vec<String> = ports.iter().map(|p| show(p)).collect();
    assert_eq!(before, after, "the root qdiscs were not restored");

    // An fq the user installed is used, and left in place.
    lab.tc(&["qdisc", "replace", "dev", &client.port, "root", "handle", "8001:", "fq"]);
    let mine = show(&client.port);
    lab.attach(&rule("udp", None, args!["--delay", "5ms"])).terminate();
    assert_eq!(show(&client.port), mine, "the user's fq was changed");
    lab.tc(&["qdisc", "del", "dev", &client.port, "root"]);

    // Another root qdisc of the user's is not replaced: refused, untouched.
    lab.tc(&["qdisc", "replace", "dev", &client.port, "root", "handle", "8002:", "pfifo", "limit", "77"]);
    let theirs = show(&client.port);
    let out = lab.run(&rule("udp", None, args!["--delay", "5ms"]));
    out.assert_exit(2);
    assert_eq!(out.stderr.len(), 1, "not one line:\n{out}");
    assert!(out.stderr[0].contains(&client.port) && out.stderr[0].contains("pfifo"), "{out}");
    assert_eq!(show(&client.port), theirs, "the user's qdisc was changed");
    lab.tc(&["qdisc", "del", "dev", &client.port, "root"]);
    lab.assert_clean("after the refused run", Duration::ZERO);
}

#[test]
fn fq_of_a_killed_run_is_removed_by_its_guard_or_else_by_the_next_run() {
    let (lab, client, server) = Lab::pair("killfq");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let delay = rule("udp", None, args!["--delay", "5ms"]);
    // Killed alone: its guard takes fq (and any filter) off.
    let out = lab.attach(&delay).stop(Signal::SIGKILL);
    assert!(out.stderr_has("ended without detaching"), "the guard said nothing:\n{out}");
    lab.assert_clean("after SIGKILL", Duration::from_secs(2));

    // Killed with its guard: fq stays, and the next run removes it.
    let tool = lab.attach(&delay);
    tool.kill_with_guard();
    assert!(lab.port_hooks().iter().all(|(_, h)| h.fq), "fq went away by itself: {:#?}", lab.port_hooks());
    let tool = lab.attach(&rule("udp", None, args!["--drop", 0.001]));
    assert!(
        tool.stderr().iter().any(|l| l.contains("removed hooks a killed earlier run left on")),
        "{:#?}",
        tool.stderr()
    );
    tool.terminate();
    lab.assert_clean("after the run that cleaned up", Duration::ZERO);
    assert_eq!(flow.exchange(20).received(), 20, "traffic does not flow after the clean-up");
}

#[test]
fn without_fq_delay_and_rate_are_refused_in_one_line_and_nothing_is_attached() {
    let lab = Lab::new("nofq", 2);
    if lab.has_fq() {
        eprintln!("skipped: this kernel has fq; the refusal is for kernels without it");
        return;
    }
    for fault in [args!["--delay", "20ms"], args!["--rate", "1mbit"]] {
        let out = lab.run(&rule("udp", None, fault));
        out.assert_exit(2);
        assert_eq!(out.stderr.len(), 1, "not one line:\n{out}");
        assert!(out.stderr[0].contains("modprobe sch_fq"), "{out}");
        lab.assert_clean("after the refusal", Duration::ZERO);
    }
}

/// `--fin-delay` (Toxiproxy's slow_close): the segment carrying the
/// server's FIN leaves [`HOLD`] late, so the client sees the end of the
/// stream late; data before it, and the client's own FIN (not in the
/// rule's direction), are not held.
#[test]
fn fin_delay_holds_back_the_close_in_the_rules_direction_only() {
    const HOLD: Duration = Duration::from_millis(400);
    let (lab, client, server) = Lab::pair("findelay");
    require_fq!(lab);
    let listener = tcp_listener(&server, false, PORT);
    let tool = lab.attach(&rule("tcp", None, args!["--direction", "from", "--fin-delay", "400ms", "--json"]));
    let mut conn = tcp_connect(&client, server.addr(false, PORT), Duration::from_secs(5)).expect("connecting");
    let (mut accepted, _) = listener.accept().expect("accepting");
    for end in [&conn, &accepted] {
        end.set_read_timeout(Some(Duration::from_secs(10))).expect("setting a timeout");
    }
    let mut buf = [0u8; 16];

    // The client's FIN (to the server) is not held: the server's read
    // ends well within HOLD (a round trip here is about a millisecond,
    // under TCG a few).
    conn.write_all(b"hello").expect("the client writing");
    conn.shutdown(Shutdown::Write).expect("the client closing");
    let start = Instant::now();
    let mut got = Vec::new();
    accepted.read_to_end(&mut got).expect("the server reading to the end");
    let client_close = start.elapsed();
    assert_eq!(got, b"hello");

    // The server's data is not held either; it is read before the server
    // closes, so that the FIN travels alone.
    accepted.write_all(b"bye").expect("the server writing");
    let n = conn.read(&mut buf).expect("the client reading the data");
    assert_eq!(&buf[..n], b"bye");
    let start = Instant::now();
    accepted.shutdown(Shutdown::Write).expect("the server closing");
    assert_eq!(conn.read(&mut buf).expect("the client reading the end"), 0, "more data instead of the end");
    let server_close = start.elapsed();
    let out = tool.terminate();

    // EDT never lets the FIN leave early: the lower bound is exact.
    assert!(server_close >= HOLD, "the server's close reached the client after {server_close:?}, under {HOLD:?}");
    assert!(server_close < HOLD * 10, "the server's close took {server_close:?}");
    assert!(client_close < HOLD, "the client's close, in the other direction, took {client_close:?}");
    assert!(out.counter("delayed") >= 1, "{out}");
}

/// Vaurien's `delay` behavior: a delay of 1 s unless `--delay` says
/// otherwise (here on the way to the target only: one delayed leg).
#[test]
fn behavior_delay_holds_each_packet_a_second_by_default() {
    let (lab, client, server) = Lab::pair("bdelay");
    require_fq!(lab);
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let tool = lab.attach(&rule("udp", None, args!["--direction", "to", "--behavior", "delay", "--json"]));
    let rtts = flow.ping(3);
    let out = tool.terminate();
    let fastest = rtts.iter().min().copied().unwrap_or_default();
    assert!(fastest >= Duration::from_secs(1), "a round trip took {:.2} ms under the delay behavior", ms(fastest));
    assert!(median(&rtts) <= Duration::from_secs(1) + LATE, "median {:.2} ms", ms(median(&rtts)));
    assert_eq!(out.counter("delayed"), 3, "{out}");
}

/// The most a TCP sender may get through a 10 ms hold if its packets stay
/// charged to its socket while they wait: TCP Small Queues lets a socket
/// have at most max(2 × truesize, pacing rate / 1024) bytes below the TCP
/// layer. The pacing term cannot carry a stream (it would need a pacing
/// rate ten times the stream's; TCP paces at 1.2 to 2 times), so each
/// 10 ms lets through two packets of at most 64 KiB (GSO) and about 68 KB
/// of truesize: 2 × 68 KB / 10 ms ≈ 109 Mbit/s. Without orphaning, this
/// test measured 4.0 to 4.2 Mbit/s (Linux 6.12, packets of one or two
/// segments) and 36 to 88 (6.1, GSO packets) against a bare 1 100 or so.
const TSQ_BOUND_BPS: f64 = 109e6;

#[test]
fn delay_10ms_keeps_bulk_tcp_far_above_the_small_queue_bound() {
    // With orphaning the same stream measured 388 and 438 Mbit/s in
    // vm-test (bare 442 and 630, one test at a time), 633 and 265 (bare 296
    // and 291) with other tests beside it. The floor is 1.5 times the bound,
    // or half the bare stream where the VM is too slow for that (bare under
    // 3 times the bound): without orphaning the stream ran at 0.004 to 0.19
    // of bare. Up to three attempts, the first above the floor counts: the
    // bound caps every attempt, so retrying cannot hide the collapse.
    const IPERF_PORT: u16 = 5201;
    let (lab, client, server) = Lab::pair("tsq");
    require_fq!(lab);
    let server_ip = server.ip(false).to_string();
    let bare = iperf_received(&client.ns, &server.ns, &server_ip, IPERF_PORT);
    let floor_bps = bare.as_ref().map_or(f64::INFINITY, |bps| 0.5 * bps).min(1.5 * TSQ_BOUND_BPS);
    let before = NetCounters::read(&server.ns);
    let tool = lab.attach(&args![
        "--iface",
        pygocentrus_tests::BRIDGE,
        "--ip",
        server_ip,
        "--port",
        IPERF_PORT,
        "--proto",
        "tcp",
        "--direction",
        "to",
        "--delay",
        "10ms",
        "--json"
    ]);
    let mut attempts = Vec::new();
    let fast = (0..3).any(|_| {
        let got = iperf_received(&client.ns, &server.ns, &server_ip, IPERF_PORT);
        let enough = got.as_ref().is_ok_and(|bps| *bps >= floor_bps);
        attempts.push(got);
        enough
    });
    let out = tool.terminate();
    let received = before.growth(&NetCounters::read(&server.ns), "Ip:InReceives");
    let mbit = |r: &Result<f64, String>| match r {
        Ok(bps) => format!("{:.1} Mbit/s", bps / 1e6),
        Err(why) => why.clone(),
    };
    let attempts: Vec<String> = attempts.iter().map(mbit).collect();
    eprintln!("iperf3 through a 10 ms delay: {attempts:?} (bare {})", mbit(&bare));
    assert!(
        fast,
        "iperf3 through a 10 ms delay: {:?} (bare {}); floor {:.0} Mbit/s, small-queue bound {:.0}",
        attempts,
        mbit(&bare),
        floor_bps / 1e6,
        TSQ_BOUND_BPS / 1e6
    );
    // Each packet is judged and counted once, as itself or as the copy that
    // replaced it: every IPv4 packet the server received is one the rule
    // matched (all of it is iperf3's, to port 5201; a few may be the end of
    // the bare run's), and the rule matched no more than those plus the few
    // fq may drop at its flow limit (a tenth is far more than that); a
    // packet counted twice doubles it.
    let matched = out.counter("matched");
    assert_eq!(out.counter("delayed"), matched, "{out}");
    assert!(
        received <= matched + 5 && matched <= received + received / 10,
        "the rule matched {matched} packets, the server received {received}:\n{out}"
    );
}
