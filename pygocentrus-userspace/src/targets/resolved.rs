//! A [`Scope`] resolved: the interface, or the endpoint and its veths.

use std::time::SystemTime;

use anyhow::Result;
use futures::channel::mpsc::UnboundedReceiver;

use super::{docker::DockerEvent, endpoint::Endpoint, scope::Scope};
use crate::{
    datapath::netlink::{Link, Netlink},
    error::UsageError,
};

/// What a [`Scope`] names, found.
pub enum Resolved {
    /// `--iface`: a device, or every port of a bridge.
    Iface(Link),
    /// `--container`, `--netns`: the host ends of the endpoint's veths, as
    /// resolved.
    Endpoint(Endpoint, Vec<Link>),
}

impl Resolved {
    /// What `scope` names, with Docker's events for a container. Subscribe
    /// to link events before calling this, so that a change in between is
    /// not missed.
    pub async fn of(scope: &Scope, nl: &Netlink) -> Result<(Self, Option<UnboundedReceiver<DockerEvent>>)> {
        // Note the time Docker's events are replayed from before looking.
        let since = SystemTime::now();
        Ok(match Endpoint::resolve(scope, nl).await? {
            Some((endpoint, links)) => {
                let docker_events = endpoint.docker_events(since);
                (Resolved::Endpoint(endpoint, links), docker_events)
            }
            None => {
                let name = scope.iface.clone().unwrap_or_default();
                (Resolved::Iface(nl.link(&name).await?.ok_or(UsageError::UnknownInterface(name))?), None)
            }
        })
    }
}
