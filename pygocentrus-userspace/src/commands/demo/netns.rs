//! Network namespaces held by a file descriptor, and moving a thread into
//! one for a while.
//!
//! A namespace made here has no name under `/run/netns`: it lives as long
//! as its descriptor (or a thread inside it), so when the process ends, in
//! whatever way, the kernel deletes it with every interface in it. Nothing
//! is left to clean up.

use std::{
    fs::File,
    io,
    marker::PhantomData,
    os::fd::{AsFd, BorrowedFd},
};

use nix::sched::{CloneFlags, setns, unshare};

/// The network namespace of the calling thread.
const OWN: &str = "/proc/thread-self/ns/net";

pub struct Netns {
    fd: File,
}

impl Netns {
    /// A new, empty namespace (a `lo` that is down, nothing else). The
    /// calling thread stays where it is: a short-lived thread moves out.
    pub fn new() -> io::Result<Self> {
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET)?;
            File::open(OWN)
        })
        .join()
        .map_err(|_| io::Error::other("the thread creating a namespace panicked"))?
        .map(|fd| Self { fd })
    }

    /// Moves the calling thread into this namespace until the guard drops.
    /// Sockets (netlink included) made meanwhile belong to this namespace,
    /// wherever they are used afterwards; interface names and indexes are
    /// resolved here.
    ///
    /// The guard is not `Send`: it must be dropped on the thread it moved.
    /// Held across `.await` it is only sound on a current-thread runtime,
    /// where every task runs on that thread.
    pub fn enter(&self) -> io::Result<Entered> {
        let home = File::open(OWN)?;
        setns(&self.fd, CloneFlags::CLONE_NEWNET)?;
        Ok(Entered { home, _not_send: PhantomData })
    }

    /// Another handle on the same namespace.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { fd: self.fd.try_clone()? })
    }

    /// Runs `f`, which must not await, with the calling thread in this
    /// namespace: `ns.run(|| UdpSocket::bind(addr))`.
    pub fn run<T, E: From<io::Error>>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let _inside = self.enter()?;
        f()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A thread's stay in another namespace; dropping it moves the thread back.
#[must_use = "the thread goes back as soon as the guard is dropped"]
pub struct Entered {
    home: File,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home, CloneFlags::CLONE_NEWNET) {
            // Not expected (we came from there). Staying in the wrong
            // namespace would make later work silently wrong: stop here.
            eprintln!("pygocentrus: fatal: returning to the original network namespace: {e}");
            std::process::abort();
        }
    }
}
