//! `pygocentrus attach` against real traffic: each test builds its own lab
//! (namespaces, a bridge, containers), runs the real binary in it, sends
//! real packets and looks at what arrived, at the kernels' own counters and
//! at the tool's. Every lab is private to its test, so the tests run in
//! parallel.
//!
//! Needs root and a built binary: `cargo build && sudo -E cargo test -p
//! pygocentrus-tests`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report, as in aya's tests"
)]
#![expect(clippy::useless_vec, reason = "args! builds owned argument lists (some kept, some only borrowed)")]

mod apilimits;
mod burst;
mod config;
mod corrupt;
mod delay;
mod demo;
mod drop;
mod endpoint;
mod flow;
mod lifecycle;
mod malformed;
mod reset;
mod serve;
mod session;
mod statedir;
mod usage;

use std::net::IpAddr;

use pygocentrus_tests::{BRIDGE, args};

/// The port rules name, and a port they leave alone.
const PORT: u16 = 5000;
const OTHER_PORT: u16 = 5001;

/// The rule most tests attach: `--iface br0 --port PORT --proto PROTO`,
/// `--ip IP` if given, then `more` (faults and options).
fn rule(proto: &str, ip: Option<IpAddr>, more: Vec<String>) -> Vec<String> {
    let mut rule = args!["--iface", BRIDGE, "--port", PORT, "--proto", proto];
    if let Some(ip) = ip {
        rule.extend(args!["--ip", ip]);
    }
    rule.extend(more);
    rule
}

/// Panics unless `hits` of `n` trials lies within 5 standard deviations of
/// the `n·p` a binomial law expects: a false alarm once in about 1.7 million
/// runs, while any real bias of a few percent over a few thousand trials
/// fails.
fn assert_binomial(hits: usize, n: usize, p: f64, what: &str) {
    let (n, hits) = (n as f64, hits as f64);
    let sigma = (n * p * (1.0 - p)).sqrt();
    let expected = n * p;
    assert!(
        (hits - expected).abs() <= 5.0 * sigma,
        "{what}: {hits} of {n}, expected {expected} ± {:.0} (5σ)",
        5.0 * sigma
    );
}
