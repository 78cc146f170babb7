//! [`Attachment`]: a plan at work on one interface, a bridge's ports or an
//! endpoint's veths, following its target as links and containers come
//! and go. `attach`, `serve`, sessions and `demo` all run one.

use std::{fmt, ops::ControlFlow, time::Duration};

use anyhow::{Context as _, Result};
use futures::channel::mpsc::UnboundedReceiver;
use pygocentrus_common::Counters;

use super::{
    events::{Event, Events},
    stats::Reading,
};
use crate::{
    datapath::{
        engine::Engine,
        guard::{Guard, GuardProgram},
        hooks::{Hooks, Method},
        leftovers,
        netlink::{Link, LinkEvent, Netlink, link_events},
    },
    error::UsageError,
    rules::{FqParams, MapContents, Plan},
    targets::{
        Resolved, Scope,
        docker::DockerEvent,
        endpoint::{Endpoint, EndpointState},
    },
};

/// Where an [`Attachment`] puts the `fq` qdisc that delays and rates need.
#[derive(Clone, Copy, Debug)]
pub enum Fq {
    /// On every hooked port with these parameters, or nowhere: `attach`,
    /// whose rules are known from the start.
    Exactly(Option<FqParams>),
    /// On every hooked port where the kernel has `fq` (with a warning where
    /// it has not: delays and rates are then refused when asked for):
    /// `serve` and sessions, whose rules change later.
    WhereAvailable(FqParams),
}

/// Where the hooks of an [`Attachment`] sit, and what it follows.
enum HookSite {
    /// A bridge: all its ports. The classifier judges each packet at the
    /// egress of the port it leaves by, or at the ingress of the sender's
    /// port when it is addressed to the bridge itself.
    Bridge { link: Link, mac: Option<[u8; 6]> },
    /// Any other device: both of its hooks judge everything.
    Device(Link),
    /// An endpoint's veths: both hooks judge everything (the other ports of
    /// its bridge are not hooked, so nothing is judged twice). `waiting`
    /// is what was last said about a lull, so as not to say it again.
    Endpoint { endpoint: Endpoint, waiting: Option<&'static str> },
}

/// A plan at work: the classifier loaded, its maps filled, hooked onto an
/// interface, every port of a bridge, or the veths of an endpoint.
///
/// Interfaces are those of the network namespace the calling thread is in
/// when it starts, reacts to events and detaches. Call [`detach`]: on the
/// TCX path dropping is enough, but the netlink path leaves filters.
///
/// [`detach`]: Attachment::detach
pub struct Attachment {
    plan: Plan,
    /// What `plan` wrote to the maps: each of its rules, in its order, with
    /// the id the kernel counts it under.
    contents: MapContents,
    engine: Engine,
    hooks: Hooks,
    nl: Netlink,
    site: HookSite,
    /// Takes the hooks off if this process dies without detaching; dropped
    /// (and so ended) only after [`Attachment::detach`].
    _guard: Option<Guard>,
}

impl Attachment {
    /// Resolves `scope` (`--iface`, `--container`, `--netns`, `--hook`)
    /// and puts `plan` to work there, with `fq` as asked and a
    /// guard run by `guard`: how `attach`, `serve` and sessions start.
    /// Returns the events to hand to [`Attachment::on_event`] so that it
    /// follows its target.
    pub async fn open(scope: &Scope, plan: Plan, fq: Fq, guard: &GuardProgram) -> Result<(Self, Events)> {
        let method = Method::resolve(scope.hook)?;
        let (fq, fallback) = match fq {
            Fq::Exactly(fq) => (fq, false),
            Fq::WhereAvailable(fq) => (Some(fq), true),
        };
        // Subscribe before listing ports or veths (and note the time
        // Docker's events are replayed from), so that a change in between
        // is not missed.
        let links = link_events()?;
        let nl = Netlink::open()?;
        let (target, docker) = resolve(scope, &nl).await?;
        match Self::start_with_fq(plan.clone(), nl, target, method, fq, guard).await {
            Ok(this) => Ok((this, Events { links, docker })),
            Err(e) if fallback && is_missing_fq(&e) => {
                eprintln!(
                    "pygocentrus: warning: this kernel has no fq qdisc (sch_fq): delays and rates will be refused"
                );
                let nl = Netlink::open()?;
                let (target, docker) = resolve(scope, &nl).await?;
                let this = Self::start_with_fq(plan, nl, target, method, None, guard).await?;
                Ok((this, Events { links, docker }))
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the classifier with `plan` and hooks it onto `target`, with
    /// the `fq` the plan needs. On failure, whatever was hooked is taken
    /// off again.
    pub async fn start(
        plan: Plan,
        nl: Netlink,
        target: Resolved,
        method: Method,
        guard: &GuardProgram,
    ) -> Result<Self> {
        let fq = plan.fq_params();
        Self::start_with_fq(plan, nl, target, method, fq, guard).await
    }

    /// [`Attachment::start`], with `fq` on every port whatever the plan:
    /// `serve` needs it in place for delays and rates set later.
    pub async fn start_with_fq(
        plan: Plan,
        nl: Netlink,
        target: Resolved,
        method: Method,
        fq: Option<FqParams>,
        guard: &GuardProgram,
    ) -> Result<Self> {
        let contents = plan.map_contents()?;
        let mut engine = Engine::load().context("loading the classifier")?;
        engine.install(&contents)?;
        let (site, links) = match target {
            Resolved::Iface(link) if link.is_bridge => {
                engine.set_bridge(link.mac)?;
                let ports = nl.ports_of(link.index).await?;
                (HookSite::Bridge { mac: link.mac, link }, ports)
            }
            Resolved::Iface(link) => (HookSite::Device(link.clone()), vec![link]),
            Resolved::Endpoint(endpoint, links) => (HookSite::Endpoint { endpoint, waiting: None }, links),
        };
        let hooks = Hooks::new(method, fq);
        if hooks.leaves_state() {
            leftovers::prepare()?;
        }
        let guard = if hooks.leaves_state() { Guard::spawn(guard, hooks.state_file())? } else { None };
        let mut this = Self { plan, contents, engine, hooks, nl, site, _guard: guard };
        for link in &links {
            if let Err(e) = this.hooks.attach(&mut this.engine, &this.nl, link).await {
                this.detach().await;
                return Err(e);
            }
        }
        Ok(this)
    }

    /// The rules at work.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The kernel's id of each rule of the plan, in its order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.contents.rules.iter().map(|(id, _)| *id)
    }

    /// Whether the hooked ports have `fq`, which delays and rates need.
    pub fn has_fq(&self) -> bool {
        self.hooks.has_fq()
    }

    /// Puts `plan` to work in place of the current one, through the maps
    /// alone: no hook is touched, no connection notices anything but the
    /// faults. A rule both plans have keeps its id, so its counters and
    /// state (rate, loss model) go on wherever it moved in the list; a
    /// new or changed rule starts from zero. Refused (and nothing changed)
    /// if the plan is invalid, or needs `fq` that the ports do not have.
    pub fn update(&mut self, plan: Plan) -> Result<(), UsageError> {
        let old_ids: Vec<u32> = self.ids().collect();
        let new = plan.map_contents_with_ids(&plan.stable_ids(&self.plan, &old_ids))?;
        if plan.fq_params().is_some() && !self.has_fq() {
            return Err(UsageError::Kernel(
                "delay and rate need the fq qdisc on the hooked ports, and this kernel has no sch_fq (modprobe sch_fq, then restart serve)".to_owned(),
            ));
        }
        self.engine.replace(&self.contents, &new).map_err(|e| UsageError::Kernel(format!("updating the maps: {e}")))?;
        self.plan = plan;
        self.contents = new;
        Ok(())
    }

    /// The interface or endpoint, as messages name it.
    pub fn name(&self) -> String {
        match &self.site {
            HookSite::Bridge { link, .. } | HookSite::Device(link) => link.name.clone(),
            HookSite::Endpoint { endpoint, .. } => endpoint.to_string(),
        }
    }

    /// Counters summed over CPUs: the totals, then one per rule of the
    /// plan, in its order.
    pub fn counters(&self) -> Result<Vec<Counters>> {
        let slots = self.engine.counters()?;
        let slot = |id: u32| slots.get(id as usize).copied().unwrap_or_default();
        Ok(std::iter::once(0).chain(self.ids()).map(slot).collect())
    }

    /// The counters with the rules they count.
    pub fn reading(&self, elapsed: Duration) -> Result<Reading> {
        Ok(Reading { elapsed, slots: self.counters()?, rules: self.plan.rules.clone() })
    }

    pub fn report(&self, elapsed: Duration, json: bool, event: &str) -> Result<()> {
        let reading = self.reading(elapsed)?;
        let snap = reading.snapshot();
        if json {
            println!("{}", snap.json(event));
        } else {
            eprintln!("{}{}", if event == "summary" { "summary: " } else { "" }, snap.text());
        }
        Ok(())
    }

    /// Follows the target (see [`Attachment::on_link_event`] and
    /// [`Attachment::on_docker_event`]). Breaks when it is gone.
    pub async fn on_event(&mut self, event: Event) -> Result<ControlFlow<()>> {
        match event {
            Event::Link(event) => self.on_link_event(event).await,
            Event::Docker(event) => self.on_docker_event(event).await,
        }
    }

    /// Follows the target: hooks ports that join the bridge and veths that
    /// lead to the endpoint, unhooks those that leave or vanish. Breaks when
    /// the target itself is removed.
    pub async fn on_link_event(&mut self, event: LinkEvent) -> Result<ControlFlow<()>> {
        match (&self.site, event) {
            (HookSite::Bridge { link, .. } | HookSite::Device(link), LinkEvent::Removed(index))
                if index == link.index =>
            {
                eprintln!("pygocentrus: {} was removed", link.name);
                return Ok(ControlFlow::Break(()));
            }
            (HookSite::Endpoint { .. }, LinkEvent::Removed(index)) if self.hooks.contains(index) => {
                let name = self.hooks.name(index).unwrap_or_default();
                self.hooks.detach(&mut self.engine, &self.nl, index).await;
                eprintln!("pygocentrus: {name} of {} is gone", self.name());
                if self.hooks.is_empty() {
                    return self.follow_endpoint().await;
                }
            }
            (_, LinkEvent::Removed(index)) => {
                if self.hooks.contains(index) {
                    self.hooks.detach(&mut self.engine, &self.nl, index).await;
                    eprintln!("pygocentrus: port {index} is gone");
                }
            }
            (HookSite::Bridge { .. }, LinkEvent::Changed(link)) => self.on_bridge_change(link).await?,
            (HookSite::Endpoint { .. }, LinkEvent::Changed(link))
                if link.is_veth && link.peer_netnsid.is_some() && !self.hooks.contains(link.index) =>
            {
                // A veth leading to some namespace: perhaps the endpoint's.
                return self.follow_endpoint().await;
            }
            (_, LinkEvent::Changed(_)) => {}
        }
        Ok(ControlFlow::Continue(()))
    }

    async fn on_bridge_change(&mut self, link: Link) -> Result<()> {
        let HookSite::Bridge { link: bridge, mac } = &mut self.site else { return Ok(()) };
        if link.index == bridge.index {
            // A bridge without a fixed address takes the lowest of its ports'.
            if link.mac.is_some() && link.mac != *mac {
                *mac = link.mac;
                self.engine.set_bridge(link.mac)?;
            }
            return Ok(());
        }
        let member = link.controller == Some(bridge.index);
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

    /// Follows a container through Docker's events: a start (also after a
    /// restart) or a network change is looked at; a removal ends the run.
    pub async fn on_docker_event(&mut self, event: DockerEvent) -> Result<ControlFlow<()>> {
        match event {
            DockerEvent::Destroyed => {
                eprintln!("pygocentrus: {} was removed", self.name());
                Ok(ControlFlow::Break(()))
            }
            DockerEvent::Lost(why) => {
                eprintln!("pygocentrus: warning: Docker's event stream broke ({why}); trying again");
                Ok(ControlFlow::Continue(()))
            }
            DockerEvent::Resumed => {
                eprintln!("pygocentrus: Docker's event stream is back");
                self.follow_endpoint().await
            }
            DockerEvent::Started | DockerEvent::Died | DockerEvent::Network => self.follow_endpoint().await,
        }
    }

    /// Looks at the endpoint again and makes the hooks match: the host ends
    /// of its veths now are hooked, others unhooked. Breaks when it is gone
    /// and none of its veths is left.
    async fn follow_endpoint(&mut self) -> Result<ControlFlow<()>> {
        let HookSite::Endpoint { endpoint, waiting } = &mut self.site else { return Ok(ControlFlow::Continue(())) };
        let links = match endpoint.state(&self.nl).await {
            Ok(EndpointState::Up(links)) => links,
            Ok(EndpointState::Down) => {
                say_once(waiting, "is not running; waiting for it to start again", endpoint);
                return Ok(ControlFlow::Continue(()));
            }
            // Gone, but a veth still hooked proves its namespace lives on.
            Ok(EndpointState::Gone(_)) if !self.hooks.is_empty() => return Ok(ControlFlow::Continue(())),
            Ok(EndpointState::Gone(why)) => {
                eprintln!("pygocentrus: {why}: its veths are gone, nothing is left to judge");
                return Ok(ControlFlow::Break(()));
            }
            Err(e) => {
                eprintln!("pygocentrus: warning: looking at {endpoint}: {e:#}");
                return Ok(ControlFlow::Continue(()));
            }
        };
        let label = endpoint.to_string();
        if links.is_empty() {
            say_once(waiting, "has no veth leading here; waiting for one", endpoint);
        } else {
            *waiting = None;
        }
        let stale: Vec<u32> = self.hooks.indexes().filter(|i| !links.iter().any(|l| l.index == *i)).collect();
        for index in stale {
            let name = self.hooks.name(index).unwrap_or_default();
            self.hooks.detach(&mut self.engine, &self.nl, index).await;
            eprintln!("pygocentrus: {name} no longer leads to {label}; unhooked");
        }
        for link in &links {
            if self.hooks.contains(link.index) {
                continue;
            }
            match self.hooks.attach(&mut self.engine, &self.nl, link).await {
                Ok(()) => eprintln!("pygocentrus: hooked {} of {label}", link.name),
                Err(e) => eprintln!("pygocentrus: warning: could not hook {} of {label}: {e:#}", link.name),
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Takes every hook off. Problems are reported and do not stop it.
    pub async fn detach(mut self) {
        self.hooks.detach_all(&mut self.engine, &self.nl).await;
    }
}

/// What `scope` names, with Docker's events for a container; also removes
/// what a killed earlier run left behind. Subscribe to link events before
/// calling this, so that a change in between is not missed.
async fn resolve(scope: &Scope, nl: &Netlink) -> Result<(Resolved, Option<UnboundedReceiver<DockerEvent>>)> {
    let resolved = Resolved::of(scope, nl).await?;
    for name in leftovers::clean_leftovers(nl).await? {
        eprintln!("pygocentrus: removed hooks a killed earlier run left on {name}");
    }
    Ok(resolved)
}

/// Whether attaching failed for want of the `fq` qdisc in this kernel.
fn is_missing_fq(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<UsageError>(), Some(UsageError::NoFq))
}

/// Says `what` about `endpoint`, unless it was the last thing said.
fn say_once(last: &mut Option<&'static str>, what: &'static str, endpoint: &Endpoint) {
    if *last != Some(what) {
        eprintln!("pygocentrus: {endpoint} {what}");
        *last = Some(what);
    }
}

/// `bridge br0 (2 ports) via tcx: udp to/from *:5000 drop 30%`,
/// `container web (veth1a2b3c) via tcx: ip to/from container web drop 5%`
impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.site {
            HookSite::Bridge { link, .. } => write!(f, "bridge {} ({} ports)", link.name, self.hooks.len())?,
            HookSite::Device(link) => f.write_str(&link.name)?,
            HookSite::Endpoint { endpoint, .. } => {
                let names: Vec<String> = self.hooks.indexes().filter_map(|i| self.hooks.name(i)).collect();
                write!(f, "{endpoint} ({})", names.join(", "))?;
            }
        }
        write!(f, " via {}", self.hooks.method())?;
        // A config file may hold thousands of rules: name the first few.
        const SHOWN: usize = 8;
        for (i, rule) in self.plan.rules.iter().take(SHOWN).enumerate() {
            write!(f, "{}{rule}", if i == 0 { ": " } else { "; " })?;
        }
        if self.plan.rules.len() > SHOWN {
            write!(f, "; and {} more rules", self.plan.rules.len() - SHOWN)?;
        }
        Ok(())
    }
}
