//! The target of `--container` and `--netns`: an endpoint, that is a
//! network namespace (a container's), seen from here through the veth pairs
//! that lead into it.
//!
//! The hooks go on the host ends of those veths: what enters the host there
//! comes from the endpoint, what leaves there goes to it, and each packet
//! passes exactly one of those hooks once. The host end of each pair is
//! found from this side alone: a veth here whose peer lives in the
//! endpoint's namespace carries that namespace's id as its
//! `IFLA_LINK_NETNSID`, and `RTM_GETNSID` says which id this namespace gives
//! the endpoint's (see [`Netlink::nsid_of`]).
//!
//! No descriptor of the endpoint's namespace is kept between looks: it would
//! keep the namespace, and its veths, alive after the container is gone.

use std::{
    fmt,
    fs::File,
    io,
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::PathBuf,
    time::SystemTime,
};

use futures::channel::mpsc::UnboundedReceiver;

use super::{
    docker::{Docker, DockerError, DockerEvent, is_container_name},
    scope::Scope,
};
use crate::{
    datapath::netlink::{Link, Netlink},
    error::UsageError,
};

/// `ioctl(fd, NS_GET_NSTYPE)` (linux/nsfs.h): the kind of namespace a
/// descriptor refers to.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// A namespace, by the identity of its nsfs inode: stable for as long as
/// the namespace exists, whatever path or process leads to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NsId {
    dev: u64,
    ino: u64,
}

impl NsId {
    fn of(file: &File) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(Self { dev: meta.dev(), ino: meta.ino() })
    }

    /// The namespace this process runs in.
    fn own() -> io::Result<Self> {
        Self::of(&File::open("/proc/thread-self/ns/net")?)
    }
}

/// How the user named the endpoint.
enum Source {
    /// `--container`: followed through Docker's events, across restarts.
    Container { docker: Docker, id: String },
    /// `--netns PATH` or `--netns PID`: the namespace the path or process
    /// led to at the start, and only that one.
    Netns { path: PathBuf, pid: Option<u32>, ns: NsId },
}

pub struct Endpoint {
    source: Source,
    /// `container web`, `netns /var/run/netns/x`: how messages name it.
    label: String,
}

/// What an endpoint is at one moment.
#[derive(Debug)]
pub enum EndpointState {
    /// Running; these are the host ends of its veths (possibly none, e.g.
    /// between a `docker network disconnect` and a `connect`).
    Up(Vec<Link>),
    /// A container that is not running (stopped, restarting): it may start
    /// again.
    Down,
    /// It cannot be reached any more, for this reason: a removed container,
    /// a process that exited, a namespace file that was deleted.
    Gone(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl Endpoint {
    /// Resolves `--container` or `--netns` (`None` for `--iface`) and finds
    /// the host ends of its veths. Anything that does not lead to at least
    /// one veth is a usage error, said in one line: no such container or
    /// namespace, not running, Docker unreachable, host network, no veth.
    pub async fn resolve(args: &Scope, nl: &Netlink) -> Result<Option<(Self, Vec<Link>)>, UsageError> {
        let refused = |what: String| UsageError::Endpoint(what);
        // (how messages name it, its namespace file, Docker and the
        // container id, the PID given to --netns)
        let (label, path, container, pid) = if let Some(name) = &args.container {
            if !is_container_name(name) {
                return Err(refused(format!("--container {name}: {}", DockerError::BadName)));
            }
            let docker = Docker::connect().await.map_err(|e| refused(format!("--container {name}: {e}")))?;
            let c = docker.inspect(name).await.map_err(|e| match e {
                DockerError::NoSuchContainer(_) => refused(format!("no such container: {name}")),
                e => refused(format!("--container {name}: {e}")),
            })?;
            let label = format!("container {}", c.name);
            let pid = c.pid.ok_or_else(|| refused(format!("{label} is not running")))?;
            (label, proc_netns(pid), Some((docker, c.id)), None)
        } else if let Some(value) = &args.netns {
            match args.netns_pid() {
                Some(pid) => (format!("netns of process {pid}"), proc_netns(pid), None, Some(pid)),
                None => (format!("netns {value}"), PathBuf::from(value), None, None),
            }
        } else {
            return Ok(None);
        };
        let file = open_netns(&path).map_err(|e| refused(format!("{label}: {e}")))?;
        let ns = NsId::of(&file).map_err(|e| refused(format!("{label}: {e}")))?;
        if NsId::own().is_ok_and(|own| own == ns) {
            return Err(refused(format!(
                "{label} is pygocentrus's own network namespace (host network?): \
                 there is no veth of its own to hook; use --iface"
            )));
        }
        let source = match container {
            Some((docker, id)) => Source::Container { docker, id },
            None => Source::Netns { path, pid, ns },
        };
        let links = host_ends(nl, &file).await.map_err(|e| refused(format!("{label}: {e}")))?;
        if links.is_empty() {
            return Err(refused(format!(
                "{label} has no veth leading to pygocentrus's network namespace \
                 (no network, macvlan/ipvlan, or another namespace's bridge)"
            )));
        }
        Ok(Some((Self { source, label }, links)))
    }

    /// With `--container`: Docker's events about it, from `since` on.
    pub fn docker_events(&self, since: SystemTime) -> Option<UnboundedReceiver<DockerEvent>> {
        match &self.source {
            Source::Container { docker, id } => Some(docker.follow(id.clone(), since)),
            Source::Netns { .. } => None,
        }
    }

    /// Looks again: where the endpoint is now, and the host ends of its
    /// veths. Errors are transient (Docker busy, a race with a restart).
    pub async fn state(&self, nl: &Netlink) -> anyhow::Result<EndpointState> {
        let path = match &self.source {
            Source::Container { docker, id } => match docker.inspect(id).await {
                Err(DockerError::NoSuchContainer(_)) => return Ok(EndpointState::Gone(format!("{self} was removed"))),
                Err(e) => return Err(e.into()),
                Ok(c) => match c.pid {
                    None => return Ok(EndpointState::Down),
                    Some(pid) => proc_netns(pid),
                },
            },
            Source::Netns { path, .. } => path.clone(),
        };
        let file = match (open_netns(&path), &self.source) {
            (Ok(file), _) => file,
            // A container whose process just ended: restarting, or stopped.
            (Err(_), Source::Container { .. }) => return Ok(EndpointState::Down),
            (Err(e), Source::Netns { pid, .. }) => return Ok(EndpointState::Gone(self.gone(*pid, Some(&e)))),
        };
        if let Source::Netns { ns, pid, .. } = &self.source
            && NsId::of(&file)? != *ns
        {
            return Ok(EndpointState::Gone(self.gone(*pid, None)));
        }
        Ok(EndpointState::Up(host_ends(nl, &file).await?))
    }

    /// Why a `--netns` endpoint cannot be reached any more.
    fn gone(&self, pid: Option<u32>, error: Option<&io::Error>) -> String {
        match (pid, error) {
            (Some(pid), Some(e)) if e.kind() == io::ErrorKind::NotFound => format!("process {pid} has exited"),
            (None, Some(e)) if e.kind() == io::ErrorKind::NotFound => format!("{self} no longer exists"),
            (_, Some(e)) => format!("{self} cannot be opened any more: {e}"),
            (_, None) => format!("{self} now leads to another network namespace"),
        }
    }
}

fn proc_netns(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Opens a network namespace file, refusing any other kind of file. A
/// namespace file is a regular file (of nsfs): anything else is refused
/// before it is opened, and the open does not wait (`O_NONBLOCK`: a FIFO
/// swapped in meanwhile would block `open` for ever, deaf to signals).
fn open_netns(path: &std::path::Path) -> io::Result<File> {
    let not_netns = || io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace");
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_netns());
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(not_netns());
    }
    Ok(file)
}

/// The veths of this namespace whose peers live in the namespace of `ns`.
async fn host_ends(nl: &Netlink, ns: &File) -> anyhow::Result<Vec<Link>> {
    // Listing first: the kernel numbers the namespaces our links lead to
    // as it lists them, so an endpoint with a veth here has an id after it.
    let links = nl.links().await?;
    let Some(nsid) = nl.nsid_of(ns).await? else { return Ok(Vec::new()) };
    Ok(links.into_iter().filter(|l| l.is_veth && l.peer_netnsid == Some(nsid)).collect())
}
