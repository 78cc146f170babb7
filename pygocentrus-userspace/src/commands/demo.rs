//! `pygocentrus demo`: two hosts on a bridge, each in a network namespace
//! of its own (`demo/lab.rs`), real traffic between them (`demo/traffic.rs`),
//! first clean, then under four attacks, then gRPC calls (`demo/grpc.rs`)
//! clean and under three more, all made exactly as `pygocentrus attach`
//! makes them: each phase's command line goes through the same parser and
//! the same [`Attachment`]. Every phase prints what A sent, what B got and
//! pygocentrus' counters, and checks that the effect happened; a demo that
//! did not show it fails, so it doubles as a smoke test.

mod grpc;
mod lab;
mod netns;
mod traffic;

use std::{fmt::Display, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser as _, ValueEnum as _};
use grpc_hello::Code;
use pygocentrus_common::Counters;

use self::{
    grpc::{GRPC_PORT, greeter_server},
    lab::{ADDR_A, ADDR_B, BRIDGE, ETH, Lab, PORT_A, PORT_B, ip_checksum_errors},
    traffic::{TCP_PORT, TcpOutcome, UDP_PORT, UdpRun, connect, echo, round_trips, udp, wait_reachable},
};
use super::{
    attach::rule_of,
    cli::{AttachArgs, Cli, Command, DemoArgs},
};
use crate::{
    control::{attachment::Attachment, signals::Signals},
    datapath::{
        guard::GuardProgram,
        hooks::{HookMode, Method},
        netlink::Netlink,
        privileges,
    },
    error::UsageError,
    rules::Plan,
    targets::Resolved,
};

const PHASES: usize = 9;
/// gRPC calls made in a phase, and the pause after each.
const CALLS: u32 = 5;
const GAP: Duration = Duration::from_millis(100);
/// The delay of the gRPC delay phase, each way.
const GRPC_DELAY: Duration = Duration::from_millis(100);
/// TCP connections tried in a phase.
const CONNECTIONS: u32 = 5;
/// How far from the asked share a count may stray, in standard deviations
/// of the binomial law. The exact tails of the demo's smallest phases (300
/// packets at 10%) are skewed: 5 of them came to about 4e-6; 5.5 keeps a
/// false alarm under one in a million runs.
const SIGMAS: f64 = 5.5;

pub async fn run(args: DemoArgs) -> Result<()> {
    privileges::check()?;
    let mut signals = Signals::install()?;
    let started = std::time::Instant::now();
    let lab = Lab::build().await.context("building the lab")?;
    let echo_server = traffic::echo_server(&lab)?;
    let greeter_server = greeter_server(&lab)?;
    intro();

    let mut demo = Demo { lab: &lab, args: &args, signals: &mut signals, failed: Vec::new(), skipped: Vec::new() };
    let result = demo.phases().await;
    let Demo { failed, skipped, .. } = demo;
    drop(echo_server);
    drop(greeter_server);
    // Closing the namespaces deletes them, with the bridge and the veths.
    drop(lab);
    if result.is_err() {
        eprintln!("pygocentrus: demo stopped; the lab is gone");
    }
    result?;

    if !failed.is_empty() {
        bail!("the demo did not show the expected effect of: {}", failed.join(", "));
    }
    let shown = PHASES - skipped.len();
    let skips = if skipped.is_empty() { String::new() } else { format!(" ({} skipped)", skipped.join(", ")) };
    println!(
        "\n{shown} of {PHASES} phases showed what they should{skips}, in {:.1}s; the lab is gone.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn intro() {
    println!("pygocentrus demo: hosts A and B on a bridge, in network namespaces of their own");
    println!("(nothing outside them is touched, and they vanish when the demo ends)\n");
    println!("    A {ADDR_A}  {ETH} ---- {PORT_A} --+");
    println!("                                         +-- bridge {BRIDGE}: pygocentrus hooks here");
    println!("    B {ADDR_B}  {ETH} ---- {PORT_B} --+");
    println!("\n    B runs a UDP sink on port {UDP_PORT}, a TCP echo server on port {TCP_PORT}");
    println!("    and gRPC's helloworld Greeter on port {GRPC_PORT}; A dials B's own address.");
}

/// The four attacks of the demo.
#[derive(Clone, Copy, Debug)]
enum Attack {
    Drop,
    Reset,
    CorruptPayload,
    Corrupt,
    GrpcDrop,
    GrpcReset,
    GrpcDelay,
}

impl Attack {
    /// Share of the matched packets hit, in percent.
    fn percent(self) -> u32 {
        match self {
            Attack::Drop => 30,
            Attack::Reset => 100,
            Attack::CorruptPayload => 10,
            Attack::Corrupt => 20,
            Attack::GrpcDrop | Attack::GrpcReset | Attack::GrpcDelay => 100,
        }
    }

    fn probability(self) -> f64 {
        f64::from(self.percent()) / 100.0
    }

    fn title(self) -> String {
        let p = self.percent();
        match self {
            Attack::Drop => format!("drop: {p}% of the datagrams to B:{UDP_PORT} vanish"),
            Attack::Reset => format!("reset: TCP segments from B:{TCP_PORT} become resets"),
            Attack::CorruptPayload => {
                format!("corrupt-payload: {p}% of the datagrams to B:{UDP_PORT} arrive altered")
            }
            Attack::Corrupt => {
                format!("corrupt: {p}% of the datagrams to B:{UDP_PORT} are damaged on the wire")
            }
            Attack::GrpcDrop => format!("gRPC under drop: every packet to or from port {GRPC_PORT} vanishes"),
            Attack::GrpcReset => "gRPC under reset: the server's packets become resets, like a crash".to_owned(),
            Attack::GrpcDelay => {
                format!("gRPC under delay: {} more each way", ms(GRPC_DELAY))
            }
        }
    }

    /// What a user types after `pygocentrus attach --iface BRIDGE`.
    fn flags(self) -> String {
        let p = self.percent();
        let udp = format!("--ip {ADDR_B} --port {UDP_PORT} --proto udp");
        match self {
            Attack::Drop => format!("{udp} --drop {p}"),
            Attack::Reset => {
                format!("--ip {ADDR_B} --port {TCP_PORT} --proto tcp --direction from --reset {p}")
            }
            Attack::CorruptPayload => format!("{udp} --corrupt-payload {p}"),
            Attack::Corrupt => format!("{udp} --corrupt {p}"),
            Attack::GrpcDrop => format!("--port {GRPC_PORT} --drop {p}"),
            Attack::GrpcReset => format!("--port {GRPC_PORT} --direction from --reset {p}"),
            Attack::GrpcDelay => format!("--port {GRPC_PORT} --delay {}ms", GRPC_DELAY.as_millis()),
        }
    }

    /// The full command line, and what `attach` would get from it.
    fn command(self, hook: HookMode) -> Result<(String, AttachArgs)> {
        let flags = self.flags();
        let mut argv = vec!["pygocentrus", "attach", "--iface", BRIDGE];
        argv.extend(flags.split_whitespace());
        let hook_flag = hook.to_possible_value().filter(|_| hook != HookMode::Auto);
        if let Some(value) = &hook_flag {
            argv.extend(["--hook", value.get_name()]);
        }
        let line = argv.join(" ");
        match Cli::try_parse_from(&argv).with_context(|| format!("parsing the demo's own `{line}`"))?.command {
            Command::Attach(args) => Ok((line, *args)),
            other => bail!("`{line}` parsed as {other:?}"),
        }
    }
}

struct Demo<'a> {
    lab: &'a Lab,
    args: &'a DemoArgs,
    signals: &'a mut Signals,
    /// Names of the phases whose effect did not show.
    failed: Vec<&'static str>,
    /// Names of the phases this kernel cannot show.
    skipped: Vec<&'static str>,
}

impl Demo<'_> {
    async fn phases(&mut self) -> Result<()> {
        self.baseline().await?;
        self.drop().await?;
        self.reset().await?;
        self.corrupt_payload().await?;
        self.corrupt().await?;
        let mut greeter = grpc::client(self.lab)?;
        self.grpc_baseline(&mut greeter).await?;
        self.grpc_drop(&mut greeter).await?;
        self.grpc_reset(&mut greeter).await?;
        self.grpc_delay(&mut greeter).await
    }

    async fn grpc_baseline(&mut self, greeter: &mut grpc::Greeter) -> Result<()> {
        header(6, &format!("gRPC: {CALLS} SayHello calls from A to B:{GRPC_PORT}, no faults"));
        self.warm(greeter).await?;
        let results = self.unless_stopped(async { Ok(grpc::calls(greeter, CALLS, GAP).await) }).await?;
        grpc::show(&results);
        let ok = results.iter().filter(|r| r.is_ok()).count();
        self.verdict(
            "gRPC baseline",
            ok == results.len(),
            &format!("every call answers, within {} each (deadline {})", slowest(&results), ms(grpc::DEADLINE)),
            &format!("only {ok} of {} calls answered without any fault", results.len()),
        );
        Ok(())
    }

    async fn grpc_drop(&mut self, greeter: &mut grpc::Greeter) -> Result<()> {
        let (results, c) = self.grpc_calls_under(7, Attack::GrpcDrop, greeter).await?;
        row("packets dropped by pygocentrus", c.dropped);
        let failed = failed_with(&results, &[Code::DeadlineExceeded, Code::Unavailable]);
        self.verdict(
            "gRPC drop",
            failed == results.len() && c.dropped > 0,
            "every call fails with DEADLINE_EXCEEDED or UNAVAILABLE, as on a dead link: \
             the client dialed the server's own address all along",
            &format!("{failed} of {} calls failed that way; pygocentrus dropped {}", results.len(), c.dropped),
        );
        Ok(())
    }

    async fn grpc_reset(&mut self, greeter: &mut grpc::Greeter) -> Result<()> {
        let (results, c) = self.grpc_calls_under(8, Attack::GrpcReset, greeter).await?;
        row("resets made by pygocentrus", c.reset);
        // The open connection's reset reaches tonic as an HTTP/2 connection
        // error, which it reports as UNKNOWN; the reconnections are refused.
        let failed = failed_with(&results, &[Code::Unknown, Code::Unavailable]);
        self.verdict(
            "gRPC reset",
            failed == results.len() && c.reset > 0,
            &format!(
                "every call fails fast: the open connection is reset (UNKNOWN: connection reset), \
                 new ones are refused (UNAVAILABLE), the slowest in {}",
                slowest(&results)
            ),
            &format!(
                "{failed} of {} calls failed with UNKNOWN or UNAVAILABLE; pygocentrus made {} resets",
                results.len(),
                c.reset
            ),
        );
        Ok(())
    }

    async fn grpc_delay(&mut self, greeter: &mut grpc::Greeter) -> Result<()> {
        let (results, c) = match self.grpc_calls_under(9, Attack::GrpcDelay, greeter).await {
            Err(e) if e.downcast_ref::<UsageError>().is_some_and(UsageError::is_qdisc) => {
                println!("      skipped: {e}");
                self.skipped.push("gRPC delay");
                return Ok(());
            }
            other => other?,
        };
        row("packets delayed by pygocentrus", c.delayed);
        // Request and answer each wait GRPC_DELAY, at least: departure
        // times are never early.
        let floor = GRPC_DELAY * 2;
        let slow = results.iter().filter(|r| r.is_ok() && r.latency >= floor).count();
        self.verdict(
            "gRPC delay",
            slow == results.len() && c.delayed > 0,
            &format!("every call answers, each after at least {} (request and answer each wait)", ms(floor)),
            &format!("{slow} of {} calls answered after {} or more", results.len(), ms(floor)),
        );
        Ok(())
    }

    /// Phase `n`: CALLS gRPC calls under `attack`, on a channel made
    /// sure to work first, shown one per line; their results and the
    /// rule's counters.
    async fn grpc_calls_under(
        &mut self,
        n: usize,
        attack: Attack,
        greeter: &mut grpc::Greeter,
    ) -> Result<(Vec<grpc_hello::CallResult>, Counters)> {
        header(n, &attack.title());
        self.warm(greeter).await?;
        let (results, c) = self.under_attack(attack, async { Ok(grpc::calls(greeter, CALLS, GAP).await) }).await?;
        grpc::show(&results);
        Ok((results, c))
    }

    /// Makes sure A's channel is connected and B answers, before a phase:
    /// a previous attack may have broken the connection.
    async fn warm(&mut self, greeter: &mut grpc::Greeter) -> Result<()> {
        let mut greeter = greeter.clone();
        self.unless_stopped(async move { grpc::wait_serving(&mut greeter, Duration::from_secs(10)).await }).await
    }

    async fn baseline(&mut self) -> Result<()> {
        header(1, "baseline: no faults");
        let (lab, packets) = (self.lab, self.args.packets);
        let (tcp, udp) = self
            .unless_stopped(async {
                wait_reachable(lab).await?;
                Ok((round_trips(lab, CONNECTIONS).await, udp(lab, packets).await?))
            })
            .await?;
        let echoed = tcp.iter().filter(|(o, _)| matches!(o, TcpOutcome::Echoed)).count();
        row("TCP connections with an echo", format!("{echoed}/{CONNECTIONS}"));
        udp_rows(&udp, None);
        row("received damaged", udp.damaged);
        let fastest = tcp.iter().map(|(_, d)| *d).min().unwrap_or_default();
        self.verdict(
            "baseline",
            echoed == tcp.len() && udp.lost() == 0 && udp.damaged == 0,
            &format!("everything arrives, intact (an echo takes {})", ms(fastest)),
            &format!(
                "traffic suffers without any fault, so the next phases would mean nothing: \
                 TCP {}; UDP {} lost, {} damaged",
                list(&tcp),
                udp.lost(),
                udp.damaged
            ),
        );
        Ok(())
    }

    async fn drop(&mut self) -> Result<()> {
        let attack = Attack::Drop;
        header(2, &attack.title());
        let (udp, c) = self.under_attack(attack, udp(self.lab, self.args.packets)).await?;
        udp_rows(&udp, Some(("dropped by pygocentrus", c.dropped)));
        let share = percent(udp.lost(), udp.sent);
        self.verdict(
            "drop",
            c.dropped == udp.lost() && udp.damaged == 0 && plausible(c.dropped, udp.sent, attack),
            &format!("B lost {share:.1}% ({}% asked): exactly the datagrams pygocentrus dropped", attack.percent()),
            &format!("B lost {} ({share:.1}%), pygocentrus dropped {}", udp.lost(), c.dropped),
        );
        Ok(())
    }

    async fn reset(&mut self) -> Result<()> {
        let attack = Attack::Reset;
        header(3, &attack.title());
        let lab = self.lab;
        let open = self
            .unless_stopped(async {
                let open = connect(lab).await?;
                echo(&open, b"hello\n").await?;
                Ok(open)
            })
            .await
            .context("echoing before the attack")?;
        println!("      (a connection is opened, and echoes, before the attack)");
        let traffic = async {
            let (on_open, _) = TcpOutcome::of(echo(&open, b"hello again\n")).await;
            Ok((on_open, round_trips(lab, CONNECTIONS).await))
        };
        let ((on_open, new), c) = self.under_attack(attack, traffic).await?;
        let refused = new.iter().filter(|(o, _)| matches!(o, TcpOutcome::Refused)).count();
        let slowest = new.iter().map(|(_, d)| *d).max().unwrap_or_default();
        row("open connection, next echo", on_open.word());
        row("new connections refused", format!("{refused}/{CONNECTIONS}"));
        row("resets made by pygocentrus", c.reset);
        self.verdict(
            "reset",
            matches!(on_open, TcpOutcome::Reset) && refused == new.len() && c.reset > u64::from(CONNECTIONS),
            &format!(
                "the open connection gets ECONNRESET, new ones ECONNREFUSED within {}: \
                 like a crashed server",
                ms(slowest)
            ),
            &format!("expected a reset, then refusals; got {on_open}, then {}", list(&new)),
        );
        Ok(())
    }

    async fn corrupt_payload(&mut self) -> Result<()> {
        let attack = Attack::CorruptPayload;
        header(4, &attack.title());
        let (udp, c) = self.under_attack(attack, udp(self.lab, self.args.packets)).await?;
        udp_rows(&udp, Some(("altered by pygocentrus", c.corrupted_payload)));
        row("received altered", udp.damaged);
        if let Some((sent, got)) = &udp.sample {
            sample(sent, got);
        }
        self.verdict(
            "corrupt-payload",
            udp.lost() == 0 && udp.damaged == c.corrupted_payload && plausible(udp.damaged, udp.sent, attack),
            "all arrive, checksums valid: B's application got exactly the altered ones",
            &format!(
                "B got {} altered of {} received; pygocentrus altered {}",
                udp.damaged, udp.received, c.corrupted_payload
            ),
        );
        Ok(())
    }

    async fn corrupt(&mut self) -> Result<()> {
        let attack = Attack::Corrupt;
        header(5, &attack.title());
        let before = ip_checksum_errors(&self.lab.b)?;
        let (udp, c) = self.under_attack(attack, udp(self.lab, self.args.packets)).await?;
        let discarded = ip_checksum_errors(&self.lab.b)?.saturating_sub(before);
        udp_rows(&udp, Some(("damaged by pygocentrus", c.corrupted)));
        row("discarded by B's kernel (InCsumErrors)", discarded);
        self.verdict(
            "corrupt",
            discarded == c.corrupted
                && udp.lost() == c.corrupted
                && udp.damaged == 0
                && plausible(c.corrupted, udp.sent, attack),
            "B's kernel threw each damaged one away (bad IP checksum): \
             the application never saw them",
            &format!("pygocentrus damaged {}, B's kernel counted {discarded}, B lost {}", c.corrupted, udp.lost()),
        );
        Ok(())
    }

    /// Runs `traffic` under `attack`, attached from the host namespace as
    /// `pygocentrus attach` would; returns its result and the rule's
    /// counters. The hooks come off whatever happens.
    async fn under_attack<T>(
        &mut self,
        attack: Attack,
        traffic: impl Future<Output = Result<T>>,
    ) -> Result<(T, Counters)> {
        let (line, args) = attack.command(self.args.hook)?;
        println!("      $ {line}");
        let plan = Plan { rules: vec![rule_of(&args)?] };
        let nl = Netlink::open()?;
        let bridge = nl.existing_link(BRIDGE).await?;
        let method = Method::resolve(args.hook)?;
        let attachment =
            Attachment::start(plan, nl, Resolved::Iface(bridge), method, &GuardProgram::ThisBinary).await?;
        println!("      attached to {attachment}");
        let result = self.unless_stopped(traffic).await;
        let counters = attachment.counters();
        attachment.detach().await;
        let rule = counters?.get(1).copied().context("the rule has no counters")?;
        Ok((result?, rule))
    }

    /// Awaits `work` unless SIGINT or SIGTERM comes first.
    async fn unless_stopped<T>(&mut self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            result = work => result,
            name = self.signals.recv() => Err(anyhow!("interrupted by {name}")),
        }
    }

    fn verdict(&mut self, phase: &'static str, ok: bool, success: &str, failure: &str) {
        if ok {
            println!("      ok: {success}");
        } else {
            println!("      FAILED: {failure}");
            self.failed.push(phase);
        }
    }
}

fn header(n: usize, title: &str) {
    println!("\n[{n}/{PHASES}] {title}");
}

fn row(label: &str, value: impl Display) {
    println!("        {label:<40}{:>8}", value.to_string());
}

/// Sent, what pygocentrus did to them (`effect`), received.
fn udp_rows(udp: &UdpRun, effect: Option<(&str, u64)>) {
    row("UDP datagrams sent by A", udp.sent);
    if let Some((label, count)) = effect {
        row(label, count);
    }
    let share = percent(udp.received, udp.sent);
    println!("        {:<40}{:>8}  ({share:.1}%)", "received by B", udp.received);
}

/// One altered datagram under the one sent, the changed byte pointed at.
fn sample(sent: &[u8], got: &[u8]) {
    let at = sent.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
    let byte = |d: &[u8]| d.get(at).map_or(String::new(), |b| format!("'{}' ({b:#04x})", b.escape_ascii()));
    println!("        sample, byte {at} changed from {} to {}:", byte(sent), byte(got));
    println!("          sent      \"{}\"", sent.escape_ascii());
    println!("          received  \"{}\"", got.escape_ascii());
}

/// How many of `results` failed with one of `codes`.
fn failed_with(results: &[grpc_hello::CallResult], codes: &[Code]) -> usize {
    results.iter().filter(|r| codes.contains(&r.code)).count()
}

/// The longest call of `results`.
fn slowest(results: &[grpc_hello::CallResult]) -> String {
    ms(results.iter().map(|r| r.latency).max().unwrap_or_default())
}

fn list(outcomes: &[(TcpOutcome, Duration)]) -> String {
    outcomes.iter().map(|(o, _)| o.to_string()).collect::<Vec<_>>().join(", ")
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Whether `hits` out of `n` is a plausible outcome of `attack`.
fn plausible(hits: u64, n: u64, attack: Attack) -> bool {
    let (n, p) = (n as f64, attack.probability());
    let sd = (n * p * (1.0 - p)).sqrt();
    hits > 0 && (hits as f64 - n * p).abs() <= SIGMAS * sd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausibility() {
        // 1000 draws at 30%: 300 ± 72 (5 sd of 14.5).
        assert_eq!(Attack::Drop.percent(), 30);
        assert!(plausible(300, 1000, Attack::Drop));
        assert!(plausible(240, 1000, Attack::Drop));
        assert!(!plausible(220, 1000, Attack::Drop));
        assert!(!plausible(1000, 1000, Attack::Drop));
        assert!(!plausible(0, 1000, Attack::Drop));
    }

    #[test]
    fn attacks_are_valid_command_lines() {
        for attack in [
            Attack::Drop,
            Attack::Reset,
            Attack::CorruptPayload,
            Attack::Corrupt,
            Attack::GrpcDrop,
            Attack::GrpcReset,
            Attack::GrpcDelay,
        ] {
            for hook in [HookMode::Auto, HookMode::Netlink] {
                let (line, args) = attack.command(hook).unwrap();
                rule_of(&args).unwrap();
                assert_eq!(line.contains("--hook netlink"), hook == HookMode::Netlink, "{line}");
            }
        }
    }
}
