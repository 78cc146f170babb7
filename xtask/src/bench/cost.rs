//! Per-packet cost of the classifier, measured in the kernel with
//! BPF_PROG_TEST_RUN (aya's `TestRun::test_run`).
//!
//! Each case loads the real object and fills its maps through the tool's
//! own path (clap → `RuleSpec` → `Plan::map_contents` → `Engine::install`),
//! then runs `pyg_egress` on a crafted frame. The kernel reports the mean
//! time per repetition in `duration` (it divides by `repeat` itself), with
//! whole-nanosecond resolution; a case's figure is the median over runs.
//!
//! A reset rewrites the test skb into a bare RST on the first repetition, and
//! the later repetitions would measure a RST passing through; resets are
//! therefore timed as single runs (`repeat = 1`, one fresh skb each), against
//! a floor measured the same way.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use aya::{TestRun as _, TestRunOptions, programs::SchedClassifier};
use clap::Parser as _;
use pygocentrus::{
    commands::{
        attach::rule_of,
        cli::{Cli, Command},
    },
    datapath::engine::{Engine, Hook},
    rules::{Plan, RuleSpec},
};
use pygocentrus_common::Counters;

use super::{
    frames::{self, ETH_HLEN, Frame, IP_HLEN, TCP_HLEN, TCP_RST},
    median,
};

const TC_ACT_UNSPEC: u32 = -1i32 as u32;
const TC_ACT_SHOT: u32 = 2;

const CLIENT: [u8; 4] = [198, 18, 0, 1];
const SERVER: [u8; 4] = [198, 18, 0, 2];
/// The rule of the attached-idle throughput run: a port and an address no
/// traffic uses.
pub const IDLE_RULE: &str = "--ip 198.18.1.9 --port 9 --drop 100";
/// The smallest non-zero probability (threshold 4 of 2^32): the dice are
/// thrown and practically never fire.
const NEVER: &str = "0.0000001";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `repeat` repetitions per run on one skb.
    Repeat,
    /// One repetition per run, a fresh skb each time.
    Single,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// The packet matches no rule.
    Untouched,
    Passed,
    Dropped,
    Corrupted,
    CorruptedPayload,
    Reset,
}

struct Case {
    name: &'static str,
    /// Flags of `pygocentrus attach` after `--iface`; `None`: the empty
    /// classifier.
    flags: Option<String>,
    frame: Frame,
    expect: Expect,
    method: Method,
    /// The target for the case, if it has one.
    goal: Option<Goal>,
    /// Rules installed after the case's own, alike but for other addresses
    /// (198.19.x.y, which the frame never carries): what more rules cost.
    others: u32,
}

/// A target for a case's cost.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// At most this many ns above the floor of its method, and what the
    /// target says of it.
    AboveFloor(f64, &'static str),
    /// At most this many ns above the case named, and what the target says.
    AboveCase(&'static str, f64, &'static str),
}

pub struct Settings {
    pub repeat: u32,
    pub runs: usize,
    pub singles: usize,
    /// Only the cases whose name contains this (and the floors).
    pub case: Option<String>,
}

pub struct Row {
    pub name: &'static str,
    pub rule: String,
    pub packet: String,
    pub method: Method,
    /// Median ns per packet, and the range over runs.
    pub ns: f64,
    pub min: u32,
    pub max: u32,
    /// The empty classifier.
    pub floor: bool,
    /// `ns` minus the floor of the same method (0 for the floors).
    pub above_floor: f64,
    /// What was checked: the verdict, the packet afterwards, the counters.
    pub check: String,
    pub ok: bool,
    pub goal: Option<Goal>,
}

pub struct Report {
    pub rows: Vec<Row>,
    /// `pyg_egress` as the kernel holds it.
    pub insns: Option<u32>,
    pub jited: u32,
    pub seconds: f64,
}

fn cases() -> Vec<Case> {
    let tcp = frames::tcp(CLIENT, SERVER, 40_000, 5201);
    let udp = frames::udp(CLIENT, SERVER, 40_000, 5201);
    let to_port_9 = frames::tcp(CLIENT, SERVER, 40_000, 9);
    let match_tcp = "--ip 198.18.0.2 --port 5201 --proto tcp";
    let case = |name, flags: Option<String>, frame: &Frame, expect, method, goal| Case {
        name,
        flags,
        frame: frame.clone(),
        expect,
        method,
        goal,
        others: 0,
    };
    let among = |others: u32, name| Case {
        others,
        ..case(name, Some(format!("{match_tcp} --drop 100")), &tcp, Expect::Dropped, Method::Repeat, None)
    };
    const UNMATCHED: &str = "a packet no rule matches";
    const FAULT: &str = "drop, corrupt, corrupt-payload";
    let unmatched = Some(Goal::AboveFloor(15.0, UNMATCHED));
    let fault = Some(Goal::AboveFloor(45.0, FAULT));
    use Expect::*;
    use Method::*;
    vec![
        case("floor: empty classifier", None, &tcp, Untouched, Repeat, None),
        case("non-matching, port no rule names", Some(IDLE_RULE.into()), &tcp, Untouched, Repeat, unmatched),
        case(
            "non-matching, named port on another address: 1 address pre-filter read",
            Some(IDLE_RULE.into()),
            &to_port_9,
            Untouched,
            Repeat,
            unmatched,
        ),
        case(
            "non-matching, portless rule on another address: 2 address pre-filter reads",
            Some("--ip 198.18.1.9 --drop 100".into()),
            &tcp,
            Untouched,
            Repeat,
            unmatched,
        ),
        case(
            "non-matching, portless rule for a /24 beside the address: 2 trie lookups",
            Some("--ip 198.18.1.0/24 --drop 100".into()),
            &tcp,
            Untouched,
            Repeat,
            None,
        ),
        case(
            "matching, passes: 4 dice thrown, none fires",
            Some(format!("{match_tcp} --drop {NEVER} --reset {NEVER} --corrupt {NEVER} --corrupt-payload {NEVER}")),
            &tcp,
            Passed,
            Repeat,
            Some(Goal::AboveFloor(30.0, "a matched packet that passes")),
        ),
        case(
            "matching, passes, --seed: 4 seeded draws + flow table",
            Some(format!(
                "{match_tcp} --drop {NEVER} --reset {NEVER} --corrupt {NEVER} --corrupt-payload {NEVER} --seed 1"
            )),
            &tcp,
            Passed,
            Repeat,
            Some(Goal::AboveCase("matching, passes: 4 dice thrown, none fires", 15.0, "--seed adds")),
        ),
        case("drop 100", Some(format!("{match_tcp} --drop 100")), &tcp, Dropped, Repeat, fault),
        among(999, "drop 100, among 1 000 rules"),
        among(9_999, "drop 100, among 10 000 rules"),
        case("corrupt 100", Some(format!("{match_tcp} --corrupt 100")), &tcp, Corrupted, Repeat, fault),
        case(
            "corrupt-payload 100 (TCP)",
            Some(format!("{match_tcp} --corrupt-payload 100")),
            &tcp,
            CorruptedPayload,
            Repeat,
            fault,
        ),
        case(
            "corrupt-payload 100 (UDP)",
            Some("--ip 198.18.0.2 --port 5201 --proto udp --corrupt-payload 100".into()),
            &udp,
            CorruptedPayload,
            Repeat,
            fault,
        ),
        case("floor: empty classifier", None, &tcp, Untouched, Single, None),
        // What a fault costs timed this way, for scale: drop does no work
        // beyond the decision.
        case("drop 100", Some(format!("{match_tcp} --drop 100")), &tcp, Dropped, Single, None),
        case(
            "reset 100",
            Some(format!("{match_tcp} --reset 100")),
            &tcp,
            Reset,
            Single,
            Some(Goal::AboveFloor(80.0, "a reset")),
        ),
    ]
}

pub fn measure(s: &Settings) -> Result<Report> {
    let start = Instant::now();
    let noop = super::noop::load()?;
    let mut rows: Vec<Row> = Vec::new();
    let (mut insns, mut jited) = (None, 0);
    let chosen = |c: &Case| c.flags.is_none() || s.case.as_ref().is_none_or(|text| c.name.contains(text.as_str()));
    for case in cases().into_iter().filter(chosen) {
        eprintln!("bench: cost: {}", case.name);
        let row = match &case.flags {
            None => run_case(&case, &noop, None, s)?,
            Some(flags) => {
                let mut rules = vec![rule_spec(flags)?];
                for i in 0..case.others {
                    let [_, _, c, d] = i.to_be_bytes();
                    rules.push(rule_spec(&format!("--ip 198.19.{c}.{d} --port 5201 --proto tcp --drop 100"))?);
                }
                let contents = Plan { rules }.map_contents()?;
                let mut engine = Engine::load().context("loading the classifier")?;
                engine.install(&contents).context("filling the maps")?;
                let before = engine.counters()?;
                let prog = engine.program_mut(Hook::Egress)?;
                let info = prog.info().context("reading pyg_egress's info")?;
                (insns, jited) = (info.verified_instruction_count(), info.size_jitted());
                let shown = match case.others {
                    0 => format!("`{flags}`"),
                    n => format!("`{flags}` and {n} like it for 198.19.x.y"),
                };
                let mut row = run_case(&case, prog, Some(&shown), s)?;
                let after = engine.counters()?;
                let (ok, what) = check_counters(case.expect, &before, &after, row.runs)?;
                row.row.ok &= ok;
                row.row.check = format!("{}; {what}", row.row.check);
                row
            }
        };
        rows.push(row.row);
    }
    // Floors are per method: each case is compared with the floor measured
    // the same way.
    let floor = |m: Method| rows.iter().find(|r| r.method == m && r.floor).map(|r| r.ns);
    let floors = (floor(Method::Repeat), floor(Method::Single));
    for r in &mut rows {
        let f = match r.method {
            Method::Repeat => floors.0,
            Method::Single => floors.1,
        };
        r.above_floor = f.map_or(f64::NAN, |f| r.ns - f);
    }
    Ok(Report { rows, insns, jited, seconds: start.elapsed().as_secs_f64() })
}

/// A row, and how many times the program ran for it (for the counters).
struct Measured {
    row: Row,
    runs: u64,
}

/// `rule`: the rule's flags as the report shows them (`None`: the empty
/// classifier).
fn run_case(case: &Case, prog: &SchedClassifier, rule: Option<&str>, s: &Settings) -> Result<Measured> {
    let frame = &case.frame.bytes;
    // One run with the packet copied out, to see what the program did to it.
    let mut out = vec![0u8; frame.len()];
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: 1, ..Default::default() })
        .with_context(|| format!("BPF_PROG_TEST_RUN ({})", case.name))?;
    out.truncate(r.data_size_out as usize);
    let (mut ok, check) = check_packet(case.expect, r.return_value, frame, &out);
    let mut runs = 1u64;

    let mut samples = Vec::new();
    match case.method {
        Method::Repeat => {
            // Warm-up, not timed.
            let warm = (s.repeat / 10).max(1);
            timed(prog, frame, warm)?;
            runs += u64::from(warm);
            for _ in 0..s.runs {
                let (ns, ret) = timed(prog, frame, s.repeat)?;
                ok &= ret == r.return_value;
                samples.push(ns);
                runs += u64::from(s.repeat);
            }
        }
        Method::Single => {
            for _ in 0..s.singles {
                let (ns, ret) = timed(prog, frame, 1)?;
                ok &= ret == r.return_value;
                samples.push(ns);
                runs += 1;
            }
        }
    }
    samples.sort_unstable();
    let (min, max) = (samples.first().copied().unwrap_or(0), samples.last().copied().unwrap_or(0));
    Ok(Measured {
        row: Row {
            name: case.name,
            rule: rule.map_or("—".to_owned(), str::to_owned),
            packet: case.frame.label.clone(),
            method: case.method,
            ns: median(&samples.iter().map(|&n| f64::from(n)).collect::<Vec<_>>()),
            min,
            max,
            floor: rule.is_none(),
            above_floor: 0.0,
            check,
            ok,
            goal: case.goal,
        },
        runs,
    })
}

/// One BPF_PROG_TEST_RUN: the kernel's mean ns per repetition, and the verdict.
fn timed(prog: &SchedClassifier, frame: &[u8], repeat: u32) -> Result<(u32, u32)> {
    let r = prog
        .test_run(TestRunOptions { data_in: Some(frame), repeat: repeat.max(1), ..Default::default() })
        .context("BPF_PROG_TEST_RUN")?;
    let ns = u32::try_from(r.duration.as_nanos()).unwrap_or(u32::MAX);
    Ok((ns, r.return_value))
}

/// The rule the tool would build from these `attach` flags.
pub fn rule_spec(flags: &str) -> Result<RuleSpec> {
    let mut argv = vec!["pygocentrus", "attach", "--iface", "bench"];
    argv.extend(flags.split_whitespace());
    let cli = Cli::try_parse_from(argv).with_context(|| format!("parsing `{flags}`"))?;
    let Command::Attach(args) = cli.command else {
        bail!("`{flags}` did not parse as attach flags");
    };
    rule_of(&args).with_context(|| format!("validating `{flags}`"))
}

fn verdict(ret: u32) -> String {
    match ret {
        TC_ACT_UNSPEC => "UNSPEC".to_owned(),
        TC_ACT_SHOT => "SHOT".to_owned(),
        n => format!("{}", n as i32),
    }
}

/// What the program did to one packet, against what the case expects.
fn check_packet(expect: Expect, ret: u32, input: &[u8], out: &[u8]) -> (bool, String) {
    let v = verdict(ret);
    let diff: Vec<usize> = (0..input.len().min(out.len())).filter(|&i| input[i] != out[i]).collect();
    let ip_id_low = ETH_HLEN + 5;
    let l4 = ETH_HLEN + IP_HLEN;
    match expect {
        Expect::Untouched | Expect::Passed => {
            let ok = ret == TC_ACT_UNSPEC && out == input;
            (ok, format!("{v}, packet unchanged"))
        }
        Expect::Dropped => (ret == TC_ACT_SHOT, v),
        Expect::Corrupted => {
            let ok = ret == TC_ACT_UNSPEC
                && diff == [ip_id_low]
                && out[ip_id_low] == input[ip_id_low] ^ 1
                && !frames::ip_checksum_ok(out);
            (ok, format!("{v}, IP id bit flipped, IP checksum left stale"))
        }
        Expect::CorruptedPayload => {
            // The checksum field changes along with one payload byte.
            let payload: Vec<_> = diff.iter().filter(|&&i| i >= l4 + 8 && !(l4 + 16..l4 + 18).contains(&i)).collect();
            let ok = ret == TC_ACT_UNSPEC
                && out.len() == input.len()
                && payload.len() == 1
                && frames::ip_checksum_ok(out)
                && frames::l4_checksum_ok(out);
            (ok, format!("{v}, 1 payload byte changed, L4 checksum valid"))
        }
        Expect::Reset => {
            let ok = ret == TC_ACT_UNSPEC
                && out.len() == l4 + TCP_HLEN
                && out[l4 + 13] & TCP_RST != 0
                && frames::ip_checksum_ok(out)
                && frames::l4_checksum_ok(out);
            (ok, format!("{v}, {} B RST, IP and TCP checksums valid", out.len()))
        }
    }
}

/// Counter deltas of slot 0 (every run) and of rule 1, against the case.
fn check_counters(expect: Expect, before: &[Counters], after: &[Counters], runs: u64) -> Result<(bool, String)> {
    let delta = |slot: usize| -> Result<Counters> {
        let (b, a) = (before.get(slot), after.get(slot));
        let (Some(b), Some(a)) = (b, a) else { bail!("counter slot {slot} is missing") };
        Ok(a.since(b))
    };
    let (total, rule) = (delta(0)?, delta(1)?);
    let (ok, what) = match expect {
        Expect::Untouched => (rule.seen == 0 && rule.matched == 0, "rule matched 0".to_owned()),
        // Each die fires with p = 2^-30 (about 1e-9): allow a stray one.
        Expect::Passed => {
            (rule.matched == runs && rule.passed + runs / 1000 >= runs, format!("passed {} of {runs}", rule.passed))
        }
        Expect::Dropped => (rule.dropped == runs, format!("dropped {} of {runs}", rule.dropped)),
        Expect::Corrupted => (rule.corrupted == runs, format!("corrupted {} of {runs}", rule.corrupted)),
        Expect::CorruptedPayload => {
            (rule.corrupted_payload == runs, format!("corrupted-payload {} of {runs}", rule.corrupted_payload))
        }
        Expect::Reset => (rule.reset == runs, format!("reset {} of {runs}", rule.reset)),
    };
    Ok((ok && total.seen == runs, what))
}
