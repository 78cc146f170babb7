//! `pygocentrus attach`: plan → maps → hooks → counters, until a signal or
//! the end of --duration, then everything is taken off again.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::cli::AttachArgs;
use crate::{
    control::{
        attachment::{Attachment, Fq},
        signals::Signals,
    },
    datapath::{guard::GuardProgram, privileges},
    error::UsageError,
    rules::{ConfigFile, Plan, RuleArgs, RuleSpec, Schedule},
};

pub async fn run(args: AttachArgs) -> Result<()> {
    // Everything that can be refused is refused before anything is touched.
    let schedule = schedule_of(&args)?;
    privileges::check()?;
    let mut signals = Signals::install()?;

    let (plan, phase) = schedule.plan_at(Duration::ZERO);
    let (mut attachment, mut events) =
        Attachment::open(&args.scope(), plan, Fq::Exactly(schedule.fq_params()), &GuardProgram::ThisBinary).await?;
    eprintln!("attached to {attachment}");

    let result = async {
        let start = Instant::now();
        let mut last_phase = None;
        if schedule.is_dynamic() {
            announce(&schedule, phase, &attachment, args.json, Duration::ZERO);
            last_phase = phase;
        }
        let mut next_change = schedule.next_change(Duration::ZERO);
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = signals.recv() => break,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
                _ = tick.tick() => attachment.report(start.elapsed(), args.json, "counters")?,
                _ = async { tokio::time::sleep_until(tokio::time::Instant::from_std(start + next_change.unwrap_or_default())).await }, if next_change.is_some() => {
                    let t = start.elapsed();
                    let (plan, phase) = schedule.plan_at(t);
                    if plan != *attachment.plan() {
                        attachment.update(plan)?;
                        if phase != last_phase || phase.is_none() {
                            announce(&schedule, phase, &attachment, args.json, t);
                        }
                    }
                    last_phase = phase;
                    next_change = schedule.next_change(t);
                }
                event = events.next() => {
                    if attachment.on_event(event?).await?.is_break() {
                        break;
                    }
                }
            }
        }
        attachment.report(start.elapsed(), args.json, "summary")
    }
    .await;

    let name = attachment.name();
    attachment.detach().await;
    match &result {
        Ok(()) => eprintln!("detached from {name}: every hook removed"),
        Err(_) => eprintln!("pygocentrus: detached from {name} after an error"),
    }
    result
}

/// Says which phase of the schedule began, and what is in force now.
fn announce(schedule: &Schedule, phase: Option<usize>, attachment: &Attachment, json: bool, t: Duration) {
    let name = phase.map_or("no phase", |i| schedule.phases[i].name.as_str());
    let rules: Vec<String> = attachment.plan().rules.iter().map(ToString::to_string).collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "phase", "elapsed_s": t.as_secs_f64(), "phase": name, "rules": rules})
        );
    } else {
        let what = if rules.is_empty() { "no rule in force".to_owned() } else { rules.join("; ") };
        eprintln!("pygocentrus: {:.1}s {name}: {what}", t.as_secs_f64());
    }
}

/// The rules of the run and how they change: from `--config` or from the
/// flags (which never change).
pub fn schedule_of(args: &AttachArgs) -> Result<Schedule, UsageError> {
    match &args.config {
        Some(path) => {
            if args.rule != RuleArgs::default() {
                return Err(UsageError::ConfigAndFlags);
            }
            ConfigFile::load(path)?.schedule(args.scope().endpoint_label().as_deref())
        }
        None => {
            let plan = Plan { rules: vec![rule_of(args)?] };
            plan.map_contents()?;
            Ok(Schedule::fixed(plan))
        }
    }
}

/// The rule of `attach`'s flags, on its endpoint if the scope is one.
pub fn rule_of(args: &AttachArgs) -> Result<RuleSpec, UsageError> {
    RuleSpec::from_args(&args.rule, args.scope().endpoint_label())
}
