//! `pygocentrus attach`: plan → maps → hooks → counters, until a signal or
//! the end of --duration, then everything is taken off again.
//!
//! [`Attachment`] is the plan at work on one interface; `demo` uses it too.

use std::{
    fmt,
    ops::ControlFlow,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use futures::StreamExt as _;
use pygocentrus_common::Counters;

use crate::{
    cli::AttachArgs,
    engine::Engine,
    guard::Guard,
    hooks::{self, Hooks, Method},
    netlink::{Link, LinkEvent, Netlink, link_events},
    plan::{Plan, RuleSpec, UsageError},
    privileges,
    signals::Signals,
    stats::Snapshot,
};

pub async fn run(args: AttachArgs) -> Result<()> {
    // Everything that can be refused is refused before anything is touched.
    let plan = Plan { rules: vec![RuleSpec::from_attach(&args)?] };
    plan.map_contents()?;
    privileges::check()?;
    let mut signals = Signals::install()?;

    let nl = Netlink::open()?;
    // Subscribe before listing ports, so that a port joining in between is
    // not missed.
    let mut events = link_events()?;
    let target = nl.link(&args.iface).await?.ok_or_else(|| UsageError::UnknownInterface(args.iface.clone()))?;
    for name in hooks::clean_leftovers(&nl).await? {
        eprintln!("pygocentrus: removed hooks a killed earlier run left on {name}");
    }

    let mut attachment = Attachment::start(plan, nl, target, Method::resolve(args.hook)?).await?;
    eprintln!("attached to {attachment}");

    let result = async {
        let start = Instant::now();
        let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = signals.recv() => break,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => break,
                _ = tick.tick() => attachment.report(start.elapsed(), args.json, "counters")?,
                event = events.next() => {
                    let Some(event) = event else { anyhow::bail!("the netlink event stream ended") };
                    if attachment.on_link_event(event).await?.is_break() {
                        break;
                    }
                }
            }
        }
        attachment.report(start.elapsed(), args.json, "summary")
    }
    .await;

    let name = attachment.target.name.clone();
    attachment.detach().await;
    match &result {
        Ok(()) => eprintln!("detached from {name}: every hook removed"),
        Err(_) => eprintln!("pygocentrus: detached from {name} after an error"),
    }
    result
}

/// A plan at work on one interface: the classifier loaded, its maps filled,
/// hooked onto the interface or onto every port of the bridge.
///
/// Interfaces are those of the network namespace the calling thread is in
/// when it starts, reacts to link events and detaches. Call [`detach`]: on
/// the TCX path dropping is enough, but the netlink path leaves filters.
///
/// [`detach`]: Attachment::detach
pub struct Attachment {
    plan: Plan,
    engine: Engine,
    hooks: Hooks,
    nl: Netlink,
    target: Link,
    bridge_mac: Option<[u8; 6]>,
    /// Takes the hooks off if this process dies without detaching; dropped
    /// (and so ended) only after [`Attachment::detach`].
    _guard: Option<Guard>,
}

impl Attachment {
    /// Loads the classifier with `plan` and hooks it onto `target`. On
    /// failure, whatever was hooked is taken off again.
    pub async fn start(plan: Plan, nl: Netlink, target: Link, method: Method) -> Result<Self> {
        let contents = plan.map_contents()?;
        let mut engine = Engine::load().context("loading the classifier")?;
        engine.install(&contents)?;
        let hooks = Hooks::new(method, plan.fq_params());
        let guard = if hooks.leaves_state() { Some(Guard::spawn()?) } else { None };
        let mut this = Self { plan, engine, hooks, nl, bridge_mac: target.mac, target, _guard: guard };
        if let Err(e) = this.hook_target().await {
            this.detach().await;
            return Err(e);
        }
        Ok(this)
    }

    async fn hook_target(&mut self) -> Result<()> {
        if self.target.is_bridge {
            self.engine.set_bridge(self.target.mac)?;
            for port in self.nl.ports_of(self.target.index).await? {
                self.hooks.attach(&mut self.engine, &self.nl, &port).await?;
            }
        } else {
            self.hooks.attach(&mut self.engine, &self.nl, &self.target).await?;
        }
        Ok(())
    }

    /// Counters summed over CPUs: slot 0 (totals), then one per rule.
    pub fn counters(&self) -> Result<Vec<Counters>> {
        Ok(self.engine.counters()?)
    }

    fn report(&self, elapsed: Duration, json: bool, event: &str) -> Result<()> {
        let slots = self.counters()?;
        let snap = Snapshot { elapsed, slots: &slots, rules: &self.plan.rules };
        if json {
            println!("{}", snap.json(event));
        } else {
            eprintln!("{}{}", if event == "summary" { "summary: " } else { "" }, snap.text());
        }
        Ok(())
    }

    /// Follows the target: hooks ports that join the bridge, unhooks ports
    /// that leave or vanish. Breaks when the target itself is removed.
    pub async fn on_link_event(&mut self, event: LinkEvent) -> Result<ControlFlow<()>> {
        match event {
            LinkEvent::Removed(index) if index == self.target.index => {
                eprintln!("pygocentrus: {} was removed", self.target.name);
                return Ok(ControlFlow::Break(()));
            }
            LinkEvent::Removed(index) => {
                if self.hooks.contains(index) {
                    self.hooks.detach(&mut self.engine, &self.nl, index).await;
                    eprintln!("pygocentrus: port {index} is gone");
                }
            }
            LinkEvent::Changed(link) if self.target.is_bridge => self.on_bridge_change(link).await?,
            LinkEvent::Changed(_) => {}
        }
        Ok(ControlFlow::Continue(()))
    }

    async fn on_bridge_change(&mut self, link: Link) -> Result<()> {
        if link.index == self.target.index {
            // A bridge without a fixed address takes the lowest of its ports'.
            if link.mac.is_some() && link.mac != self.bridge_mac {
                self.bridge_mac = link.mac;
                self.engine.set_bridge(link.mac)?;
            }
            return Ok(());
        }
        let member = link.controller == Some(self.target.index);
        if member && !self.hooks.contains(link.index) {
            match self.hooks.attach(&mut self.engine, &self.nl, &link).await {
                Ok(()) => eprintln!("pygocentrus: hooked new port {}", link.name),
                Err(e) => eprintln!("pygocentrus: warning: could not hook new port {}: {e:#}", link.name),
            }
        } else if !member && self.hooks.contains(link.index) {
            self.hooks.detach(&mut self.engine, &self.nl, link.index).await;
            eprintln!("pygocentrus: {} left the bridge; unhooked", link.name);
        }
        Ok(())
    }

    /// Takes every hook off. Problems are reported and do not stop it.
    pub async fn detach(mut self) {
        self.hooks.detach_all(&mut self.engine, &self.nl).await;
    }
}

/// `bridge br0 (2 ports) via tcx: udp to/from *:5000 drop 30%`
impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target.is_bridge {
            write!(f, "bridge {} ({} ports)", self.target.name, self.hooks.len())?;
        } else {
            f.write_str(&self.target.name)?;
        }
        write!(f, " via {}", self.hooks.method())?;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            write!(f, "{}{rule}", if i == 0 { ": " } else { "; " })?;
        }
        Ok(())
    }
}
