//! `pygocentrus attach`: plan → maps → hooks → counters, until a signal or
//! the end of --duration, then everything is taken off again.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::AttachArgs,
    engine::Engine,
    hooks::{self, Hooks, Method},
    netlink::{Link, LinkEvent, Netlink, link_events},
    plan::{Plan, RuleSpec, UsageError},
    privileges,
    stats::Snapshot,
};

pub async fn run(args: AttachArgs) -> Result<()> {
    // Everything that can be refused is refused before anything is touched.
    let plan = Plan { rules: vec![RuleSpec::from_attach(&args)?] };
    let contents = plan.map_contents()?;
    privileges::check()?;
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;

    let nl = Netlink::open()?;
    // Subscribe before listing ports, so that a port joining in between is
    // not missed.
    let mut events = link_events()?;
    let target = nl
        .link(&args.iface)
        .await?
        .ok_or_else(|| UsageError::UnknownInterface(args.iface.clone()))?;
    for name in hooks::clean_leftovers(&nl).await? {
        eprintln!("pygocentrus: removed hooks a killed earlier run left on {name}");
    }

    let mut engine = Engine::load().context("loading the classifier")?;
    engine.install(&contents)?;
    let mut hooks = Hooks::new(Method::resolve(args.hook), plan.fq_params());

    let result = async {
        if target.is_bridge {
            engine.set_bridge(target.mac)?;
            for port in nl.ports_of(target.index).await? {
                hooks.attach(&mut engine, &nl, &port).await?;
            }
        } else {
            hooks.attach(&mut engine, &nl, &target).await?;
        }
        let what = if target.is_bridge {
            format!("bridge {} ({} ports)", target.name, hooks.len())
        } else {
            target.name.clone()
        };
        eprintln!("attached to {what} via {}: {}", hooks.method(), plan.rules[0]);

        let start = Instant::now();
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
        let mut bridge_mac = target.mac;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
                _ = tick.tick() => report(&engine, &plan, start.elapsed(), args.json, "counters")?,
                event = events.next() => {
                    let Some(event) = event else { anyhow::bail!("the netlink event stream ended") };
                    match event {
                        LinkEvent::Removed(index) if index == target.index => {
                            eprintln!("pygocentrus: {} was removed", target.name);
                            break;
                        }
                        LinkEvent::Removed(index) => {
                            if hooks.contains(index) {
                                hooks.detach(&mut engine, &nl, index).await;
                                eprintln!("pygocentrus: port {index} is gone");
                            }
                        }
                        LinkEvent::Changed(link) if target.is_bridge => {
                            on_bridge_change(&mut engine, &nl, &mut hooks, &target, &mut bridge_mac, link).await?;
                        }
                        LinkEvent::Changed(_) => {}
                    }
                }
            }
        }
        report(&engine, &plan, start.elapsed(), args.json, "summary")
    }
    .await;

    hooks.detach_all(&mut engine, &nl).await;
    match &result {
        Ok(()) => eprintln!("detached from {}: every hook removed", target.name),
        Err(_) => eprintln!("pygocentrus: detached from {} after an error", target.name),
    }
    result
}

async fn on_bridge_change(
    engine: &mut Engine,
    nl: &Netlink,
    hooks: &mut Hooks,
    bridge: &Link,
    bridge_mac: &mut Option<[u8; 6]>,
    link: Link,
) -> Result<()> {
    if link.index == bridge.index {
        // A bridge without a fixed address takes the lowest of its ports'.
        if link.mac.is_some() && link.mac != *bridge_mac {
            *bridge_mac = link.mac;
            engine.set_bridge(link.mac)?;
        }
        return Ok(());
    }
    let member = link.controller == Some(bridge.index);
    if member && !hooks.contains(link.index) {
        match hooks.attach(engine, nl, &link).await {
            Ok(()) => eprintln!("pygocentrus: hooked new port {}", link.name),
            Err(e) => eprintln!("pygocentrus: warning: could not hook new port {}: {e:#}", link.name),
        }
    } else if !member && hooks.contains(link.index) {
        hooks.detach(engine, nl, link.index).await;
        eprintln!("pygocentrus: {} left the bridge; unhooked", link.name);
    }
    Ok(())
}

fn report(engine: &Engine, plan: &Plan, elapsed: Duration, json: bool, event: &str) -> Result<()> {
    let slots = engine.counters()?;
    let snap = Snapshot { elapsed, slots: &slots, rules: &plan.rules };
    if json {
        println!("{}", snap.json(event));
    } else {
        eprintln!("{}{}", if event == "summary" { "summary: " } else { "" }, snap.text());
    }
    Ok(())
}
