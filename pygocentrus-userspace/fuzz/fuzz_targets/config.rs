//! The path a `--config` file takes: its text → [`ConfigFile`] (TOML, the
//! units of `rules::units`) → the validated schedule of `attach` and the
//! plan of `serve` (`rules::config`) → the map entries of every moment of
//! the schedule.
//!
//! Invariants: nothing panics; a refused file is an error value with a
//! one-line message; a schedule that was accepted never has a moment whose
//! rules the maps would refuse; each rule reads back unchanged from the JSON
//! that `pygocentrus set` sends.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pygocentrus::{
    error::UsageError,
    rules::{ConfigFile, Plan, RuleArgs, Schedule},
};

/// How many changes of a schedule are walked through.
const CHANGES: usize = 16;

fuzz_target!(|data: &[u8]| {
    // `ConfigFile::load` reads the file with `read_to_string`, which
    // refuses anything that is not UTF-8 before it is parsed.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let cfg = match ConfigFile::parse(text) {
        Ok(cfg) => cfg,
        Err(e) => return one_line(&e),
    };
    for endpoint in [None, Some("container web")] {
        match cfg.schedule(endpoint) {
            Ok(schedule) => walk(&schedule),
            Err(e) => usage(&e),
        }
        match cfg.plan(endpoint) {
            Ok(plan) => encode(&plan, "serve --config"),
            Err(e) => usage(&e),
        }
    }
    for rule in cfg.rule.iter().chain(cfg.phase.iter().flat_map(|p| &p.rule)) {
        let json = serde_json::to_string(rule).expect("a rule serializes");
        let back: RuleArgs = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json} does not read back: {e}"));
        assert_eq!(&back, rule, "{json}");
    }
});

/// Runs the schedule as `attach` would, change after change.
fn walk(schedule: &Schedule) {
    let _ = schedule.fq_params();
    let (plan, _) = schedule.plan_at(Duration::ZERO);
    encode(&plan, "the start");
    let mut t = Duration::ZERO;
    for _ in 0..CHANGES {
        let Some(next) = schedule.next_change(t) else { return };
        assert!(next > t, "the schedule does not move on after {t:?} (next change at {next:?})");
        t = next;
        let (plan, _) = schedule.plan_at(t);
        encode(&plan, &format!("{t:?}"));
    }
}

/// The map entries of a plan that was accepted: never refused, and each
/// rule can be shown.
fn encode(plan: &Plan, when: &str) {
    if let Err(e) = plan.map_contents() {
        panic!("an accepted config gives maps refused at {when}: {e}");
    }
    let _ = plan.fq_params();
    for rule in &plan.rules {
        let _ = rule.rule();
        let _ = rule.to_string();
    }
}

fn usage(e: &UsageError) {
    one_line(&e.to_string());
}

fn one_line(message: &str) {
    assert!(!message.is_empty(), "an error without a message");
    assert!(!message.contains('\n'), "an error on several lines: {message:?}");
}
