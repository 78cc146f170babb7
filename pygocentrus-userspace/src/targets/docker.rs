//! The Docker Engine API, as far as `--container` needs it: the process a
//! container runs (hence its network namespace), and the moments it starts,
//! dies, changes networks or is removed.
//!
//! The engine is reached on its local unix socket: `/var/run/docker.sock`,
//! or the `unix://` path in `DOCKER_HOST`. A remote engine would not do: the
//! container's namespace must be on this machine.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bollard::{
    errors::Error as ApiError,
    models::{EventMessage, EventMessageTypeEnum},
    query_parameters::EventsOptionsBuilder,
};
use futures::{
    StreamExt as _,
    channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded},
};
use thiserror::Error;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Seconds a request may take (the event stream is not bounded by it).
const REQUEST_TIMEOUT_S: u64 = 30;
/// How often a broken event stream is tried again.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum DockerError {
    #[error("no Docker socket at {0} (is dockerd running?)")]
    NoSocket(String),
    #[error("DOCKER_HOST={0}: only a unix socket works (the container must run on this machine)")]
    NotLocal(String),
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// Not a container name or id as Docker writes them: it would change
    /// the request's URL (`.`, `..`, `/`, `#`, `?`).
    #[error(
        "not a container name or id: a name is a letter or digit, then letters, digits, '_', '.' or '-' (at most 255 bytes)"
    )]
    BadName,
    #[error("Docker at {socket}: {source}")]
    Api {
        socket: String,
        #[source]
        source: ApiError,
    },
}

/// A container, as `docker inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Its main process, while it runs.
    pub pid: Option<u32>,
}

/// What happened to the followed container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DockerEvent {
    /// It started (also as the second half of a restart).
    Started,
    /// Its main process ended.
    Died,
    /// It was connected to or disconnected from a network.
    Network,
    /// It was removed.
    Destroyed,
    /// The event stream broke, for this reason; it is being tried again.
    Lost(String),
    /// The event stream works again (events of the outage are replayed).
    Resumed,
}

#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    socket: String,
}

impl Docker {
    /// Connects and agrees on an API version (engines older than this
    /// client speak an older one).
    pub async fn connect() -> Result<Self, DockerError> {
        let socket = socket_path(std::env::var("DOCKER_HOST").ok())?;
        let client = bollard::Docker::connect_with_unix(&socket, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
            .map_err(|e| match e {
                ApiError::SocketNotFoundError(path) => DockerError::NoSocket(path),
                source => DockerError::Api { socket: socket.clone(), source },
            })?;
        let client =
            client.negotiate_version().await.map_err(|source| DockerError::Api { socket: socket.clone(), source })?;
        Ok(Self { client, socket })
    }

    /// The container named (or with the id, or id prefix) `name`.
    pub async fn inspect(&self, name: &str) -> Result<Container, DockerError> {
        // bollard puts the name into the URL path as it is.
        if !is_container_name(name) {
            return Err(DockerError::BadName);
        }
        let c = match self.client.inspect_container(name, None).await {
            Ok(c) => c,
            Err(ApiError::DockerResponseServerError { status_code: 404, .. }) => {
                return Err(DockerError::NoSuchContainer(name.to_owned()));
            }
            Err(source) => return Err(DockerError::Api { socket: self.socket.clone(), source }),
        };
        let state = c.state.unwrap_or_default();
        let pid =
            state.pid.filter(|_| state.running == Some(true)).and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
        Ok(Container {
            id: c.id.unwrap_or_else(|| name.to_owned()),
            name: c.name.map_or_else(|| name.to_owned(), |n| n.trim_start_matches('/').to_owned()),
            pid,
        })
    }

    /// Follows container `id` from `since` on: events the engine logged
    /// since then are replayed first, so that nothing that happens between
    /// an inspect and the subscription is missed. A broken stream is
    /// reported, tried again every [`RETRY`], and resumed where it broke.
    pub fn follow(&self, id: String, since: SystemTime) -> UnboundedReceiver<DockerEvent> {
        let (tx, rx) = unbounded();
        let client = self.client.clone();
        tokio::spawn(async move {
            let mut since = since;
            let mut broken = false;
            loop {
                if broken {
                    tokio::time::sleep(RETRY).await;
                    if client.ping().await.is_err() {
                        continue;
                    }
                    if tx.unbounded_send(DockerEvent::Resumed).is_err() {
                        return;
                    }
                }
                let reason = match follow_stream(&client, &id, &mut since, &tx).await {
                    Ok(()) => return,
                    Err(reason) => reason,
                };
                if !broken && tx.unbounded_send(DockerEvent::Lost(reason)).is_err() {
                    return;
                }
                broken = true;
            }
        });
        rx
    }
}

/// Passes the events of container `id` on to `tx` until the stream breaks
/// (`Err` with the reason) or nobody listens any more (`Ok`). `since`
/// follows the events, so that a new subscription resumes here.
async fn follow_stream(
    client: &bollard::Docker,
    id: &str,
    since: &mut SystemTime,
    tx: &UnboundedSender<DockerEvent>,
) -> Result<(), String> {
    let filters = HashMap::from([
        ("type", vec!["container", "network"]),
        ("event", vec!["start", "die", "destroy", "connect", "disconnect"]),
    ]);
    let options = EventsOptionsBuilder::new().since(&timestamp(*since)).filters(&filters).build();
    let mut stream = client.events(Some(options));
    while let Some(item) = stream.next().await {
        let msg = item.map_err(|e| e.to_string())?;
        if let Some(ns) = msg.time_nano.and_then(|t| u64::try_from(t).ok()) {
            *since = (*since).max(UNIX_EPOCH + Duration::from_nanos(ns));
        }
        if let Some(event) = event_of(&msg, id)
            && tx.unbounded_send(event).is_err()
        {
            return Ok(());
        }
    }
    Err("the engine closed the stream".to_owned())
}

/// What `msg` means for container `id`, if anything.
fn event_of(msg: &EventMessage, id: &str) -> Option<DockerEvent> {
    let actor = msg.actor.as_ref()?;
    let action = msg.action.as_deref()?;
    match msg.typ? {
        EventMessageTypeEnum::CONTAINER if actor.id.as_deref() == Some(id) => match action {
            "start" => Some(DockerEvent::Started),
            "die" => Some(DockerEvent::Died),
            "destroy" => Some(DockerEvent::Destroyed),
            _ => None,
        },
        EventMessageTypeEnum::NETWORK
            if matches!(action, "connect" | "disconnect")
                && actor.attributes.as_ref().and_then(|a| a.get("container")).map(String::as_str) == Some(id) =>
        {
            Some(DockerEvent::Network)
        }
        _ => None,
    }
}

/// The events API's time format: seconds and nanoseconds since the epoch.
/// Whether `name` is a container name or id as Docker's grammar has them,
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`: nothing in it means anything in a URL
/// path but itself (a name that starts with a letter or digit is never
/// `.` or `..`).
pub fn is_container_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// The socket named by `DOCKER_HOST` (only `unix://`), or the default.
fn socket_path(docker_host: Option<String>) -> Result<String, DockerError> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Ok(DEFAULT_SOCKET.to_owned()),
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) => Ok(path.to_owned()),
            None => Err(DockerError::NotLocal(host)),
        },
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::EventActor;

    use super::*;

    fn msg(typ: EventMessageTypeEnum, action: &str, actor: &str, container_attr: Option<&str>) -> EventMessage {
        EventMessage {
            typ: Some(typ),
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(actor.to_owned()),
                attributes: container_attr.map(|c| HashMap::from([("container".to_owned(), c.to_owned())])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_of_the_container_and_of_its_networks() {
        use EventMessageTypeEnum::{CONTAINER, NETWORK};
        assert_eq!(event_of(&msg(CONTAINER, "start", "abc", None), "abc"), Some(DockerEvent::Started));
        assert_eq!(event_of(&msg(CONTAINER, "die", "abc", None), "abc"), Some(DockerEvent::Died));
        assert_eq!(event_of(&msg(CONTAINER, "destroy", "abc", None), "abc"), Some(DockerEvent::Destroyed));
        assert_eq!(event_of(&msg(CONTAINER, "start", "other", None), "abc"), None);
        assert_eq!(event_of(&msg(CONTAINER, "pause", "abc", None), "abc"), None);
        assert_eq!(event_of(&msg(NETWORK, "connect", "net1", Some("abc")), "abc"), Some(DockerEvent::Network));
        assert_eq!(event_of(&msg(NETWORK, "disconnect", "net1", Some("abc")), "abc"), Some(DockerEvent::Network));
        assert_eq!(event_of(&msg(NETWORK, "connect", "net1", Some("other")), "abc"), None);
    }

    #[test]
    fn only_a_local_socket() {
        assert_eq!(socket_path(None).unwrap(), DEFAULT_SOCKET);
        assert_eq!(socket_path(Some(String::new())).unwrap(), DEFAULT_SOCKET);
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock".into())).unwrap(),
            "/run/user/1000/docker.sock"
        );
        assert!(matches!(socket_path(Some("tcp://10.0.0.1:2375".into())), Err(DockerError::NotLocal(_))));
    }

    #[test]
    fn only_names_of_dockers_grammar_reach_the_url() {
        for good in ["web", "web.1", "my_app-db-1", "0123abcd", "a"] {
            assert!(is_container_name(good), "{good} refused");
        }
        for bad in ["", ".", "..", "../../info", "web#x", "web?all=1", "/web", "web/json", "-web", "we b", "wéb"] {
            assert!(!is_container_name(bad), "{bad:?} accepted");
        }
        assert!(!is_container_name(&"a".repeat(256)));
    }

    #[test]
    fn timestamps_have_nanoseconds() {
        assert_eq!(timestamp(UNIX_EPOCH + Duration::new(1_700_000_000, 5)), "1700000000.000000005");
    }
}
