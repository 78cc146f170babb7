//! --loss-model (Gilbert-Elliott burst loss) and --duplicate: neither needs
//! fq, so these run on every kernel.

use std::collections::BTreeMap;

use pygocentrus_tests::{Exchange, Lab, UdpFlow, args, seq_of};

use crate::{PORT, assert_binomial, rule};

/// Runs of consecutive lost datagrams: their count and mean length.
fn loss_runs(x: &Exchange) -> (usize, f64) {
    let lost = x.lost_seqs();
    let runs = lost.iter().filter(|s| **s == 0 || !lost.contains(&(**s - 1))).count();
    (runs, if runs == 0 { 0.0 } else { lost.len() as f64 / runs as f64 })
}

#[test]
fn gemodel_loses_in_bursts_where_drop_of_the_same_mean_does_not() {
    const N: u32 = 6000;
    let (lab, client, server) = Lab::pair("gemodel");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);

    // p = 2%, r = 20%, all lost in the bad state, none in the good one: the
    // chain is bad 2/22 ≈ 9.1% of the time, in stays of mean 1/r = 5.
    let tool = lab.attach(&rule("udp", None, args!["--loss-model", "gemodel:2,20", "--json"]));
    let ge = flow.exchange(N);
    let out = tool.terminate();
    let (runs, mean_run) = loss_runs(&ge);
    let share = ge.lost() as f64 / f64::from(N);
    // About 110 stays of geometric length (sd ≈ 4.5): the mean's standard
    // error is about 0.43, and its upper tail is heavy (geometric runs).
    // Exact tails over this chain (run count by dynamic programming, run
    // lengths negative-binomial): a mean outside [3, 8] has a chance of
    // 3e-8, a share outside [4.1%, 15.5%] 4e-8. Independent drops (mean
    // run 1.1) and r halved or doubled (10 or 2.5) still fall outside.
    assert!((3.0..=8.0).contains(&mean_run), "GE bursts of mean length {mean_run:.2} over {runs} runs, expected 5");
    assert!((0.041..=0.155).contains(&share), "GE lost {:.1}%, expected 9.1%", share * 100.0);
    // As for --drop: every loss is the tool's, slack 2 for the kernel's own.
    let dropped = out.counter("dropped") as usize;
    assert!(dropped <= ge.lost() && ge.lost() - dropped <= 2, "counted {dropped} drops, {} lost", ge.lost());

    // Independent drops with the same mean: runs of mean 1/(1 - 0.091) ≈ 1.1.
    let tool = lab.attach(&rule("udp", None, args!["--drop", 9.1]));
    let bernoulli = flow.exchange(N);
    tool.terminate();
    let (_, mean_run) = loss_runs(&bernoulli);
    assert!(mean_run < 1.5, "--drop 9.1 lost in runs of mean length {mean_run:.2}, expected 1.1");
}

#[test]
fn duplicate_100_delivers_every_datagram_twice_and_copies_are_not_copied() {
    const N: u32 = 300;
    let (lab, client, server) = Lab::pair("dup");
    let flow = UdpFlow::new(&client, 0, &server, PORT, false);
    let tool = lab.attach(&rule("udp", None, args!["--duplicate", 100, "--json"]));
    let x = flow.exchange(N);
    let out = tool.terminate();
    let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
    for d in &x.received {
        *copies.entry(seq_of(d)).or_default() += 1;
        assert!(x.sent.contains(d), "a duplicate differs from what was sent");
    }
    assert_eq!(copies.len(), N as usize, "datagrams are missing");
    assert!(copies.values().all(|n| *n == 2), "not exactly two of each: {copies:?}");
    assert_eq!(out.counter("duplicated"), u64::from(N), "{out}");
}

#[test]
fn duplicate_30_adds_a_binomial_share_of_copies_in_both_directions() {
    const N: u32 = 2000;
    let (lab, client, server) = Lab::pair("dup30");
    let there = UdpFlow::new(&client, 0, &server, PORT, false);
    let back = there.reversed();
    let tool = lab.attach(&rule("udp", Some(server.ip(false)), args!["--duplicate", 30, "--json"]));
    let to = there.exchange(N);
    let from = back.exchange(N);
    let out = tool.terminate();
    for (x, way) in [(&to, "to the target"), (&from, "from the target")] {
        assert!(x.lost_seqs().is_empty(), "datagrams {way} were lost");
        assert_binomial(x.received() - N as usize, N as usize, 0.3, &format!("extra copies {way}"));
    }
    let extra = (to.received() + from.received()) as u64 - 2 * u64::from(N);
    assert_eq!(out.counter("duplicated"), extra, "{out}");
}
