//! What an attachment follows: link events of its network namespace and,
//! for a container, Docker's events, as one stream.

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, channel::mpsc::UnboundedReceiver};

use crate::{datapath::netlink::LinkEvent, targets::docker::DockerEvent};

/// The next item of an optional stream; never, without one.
async fn next_event<T>(rx: &mut Option<UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.next().await,
        None => std::future::pending().await,
    }
}

/// What an attachment follows: link changes in its network namespace and,
/// for a container, Docker's events.
pub struct Events {
    pub(super) links: UnboundedReceiver<LinkEvent>,
    pub(super) docker: Option<UnboundedReceiver<DockerEvent>>,
}

/// One of [`Events`], for `Attachment::on_event`.
pub enum Event {
    Link(LinkEvent),
    Docker(DockerEvent),
}

impl Events {
    /// The next event. Cancel-safe: nothing is lost if another branch of a
    /// `select!` wins.
    pub async fn next(&mut self) -> Result<Event> {
        tokio::select! {
            event = self.links.next() => event.map(Event::Link).context("the netlink event stream ended"),
            Some(event) = next_event(&mut self.docker) => Ok(Event::Docker(event)),
        }
    }
}
