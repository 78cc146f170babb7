//! Serving the API's connections so that slow or idle clients cannot take
//! it over, before any token is checked: HTTP/1.1 through hyper with a
//! deadline on each request head, at most [`MAX_CONNECTIONS`] at once
//! (the one idle longest is closed to make room for a new one), and the
//! memory of closed connections given back.
//!
//! A connection is *idle* when no request of it is being answered: it is
//! waiting for the next request head, or has sent part of one. hyper
//! closes it when a head takes longer than [`HEADER_TIMEOUT`] (counted
//! from when it starts to wait for one, so a connection that sends
//! nothing goes too); a body that does not arrive within
//! [`super::BODY_TIMEOUT`] is answered 408 by the handlers.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use hyper::{Request, Response, body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::AbortHandle};

/// How long a client may take to send a request head (its line and
/// headers), from the moment the connection waits for one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Toxiproxy's clients keep one or a few; a
/// new connection beyond this closes the one idle longest, or is closed
/// itself when every one is busy with a request.
pub const MAX_CONNECTIONS: usize = 256;

/// The read buffer of a connection at most (hyper's smallest is 8 KiB): a
/// request head must fit in it (431 otherwise), and so
/// [`MAX_CONNECTIONS`] idle ones hold 16 MiB at most.
const MAX_BUF: usize = 64 * 1024;

/// One open connection.
struct Conn {
    /// Requests of it being answered.
    busy: usize,
    /// Since when it has had none (its start, or its last answer).
    idle_since: Instant,
    /// Ends its task, closing it; `None` for the moment before it is
    /// spawned.
    abort: Option<AbortHandle>,
}

/// The open connections, by number of arrival.
#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Conn>,
    /// The most open at once since memory was last given back.
    peak: usize,
}

/// Connections open at once after which the memory is given back when the
/// last one closes (a client or two doing requests one by one need not).
const TRIM_AFTER: usize = 16;

type Shared = Arc<Mutex<Conns>>;

fn lock(conns: &Shared) -> std::sync::MutexGuard<'_, Conns> {
    conns.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Conns {
    /// Makes room for one more connection: closes the one idle longest if
    /// the cap is reached. Whether there is room now.
    fn make_room(&mut self) -> bool {
        if self.open.len() < MAX_CONNECTIONS {
            return true;
        }
        let oldest = self.open.iter().filter(|(_, c)| c.busy == 0).min_by_key(|(_, c)| c.idle_since).map(|(id, _)| *id);
        let Some(id) = oldest else { return false };
        if let Some(conn) = self.open.remove(&id)
            && let Some(abort) = conn.abort
        {
            abort.abort();
        }
        true
    }
}

/// Removes its connection from the open ones when its task ends, however
/// it ends (also when it is aborted to make room).
struct Registered {
    conns: Shared,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut conns = lock(&self.conns);
        conns.open.remove(&self.id);
        if conns.open.is_empty() && conns.peak >= TRIM_AFTER {
            conns.peak = 0;
            drop(conns);
            give_back_memory();
        }
    }
}

/// Marks its connection busy for as long as it lives (a request being
/// answered).
struct Busy {
    conns: Shared,
    id: u64,
}

impl Busy {
    fn new(conns: &Shared, id: u64) -> Self {
        if let Some(c) = lock(conns).open.get_mut(&id) {
            c.busy += 1;
        }
        Self { conns: Arc::clone(conns), id }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.conns).open.get_mut(&self.id) {
            c.busy -= 1;
            if c.busy == 0 {
                c.idle_since = Instant::now();
            }
        }
    }
}

/// Serves `app` on `listener` until an error of the listener itself.
pub async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    let conns = Shared::default();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_BUF);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // The client gave up before it was accepted, or the process is
            // out of descriptors or memory for a moment: go on.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let id = {
            let mut c = lock(&conns);
            if !c.make_room() {
                continue;
            }
            let id = c.next;
            c.next += 1;
            c.open.insert(id, Conn { busy: 0, idle_since: Instant::now(), abort: None });
            c.peak = c.peak.max(c.open.len());
            id
        };
        let registered = Registered { conns: Arc::clone(&conns), id };
        let service = Tracked { app: app.clone(), conns: Arc::clone(&conns), id };
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let task = tokio::spawn(async move {
            let _registered = registered;
            // A client that breaks off is no error of the server's.
            let _ = conn.await;
        });
        if let Some(c) = lock(&conns).open.get_mut(&id) {
            c.abort = Some(task.abort_handle());
        }
    }
}

/// Errors of `accept` that concern one connection, or pass.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The router as hyper's service for one connection, which it marks busy
/// while a request is answered.
#[derive(Clone)]
struct Tracked {
    app: Router,
    conns: Shared,
    id: u64,
}

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(&self.conns, self.id);
        let answer = tower_service::Service::call(&mut self.app.clone(), request.map(Body::new));
        Box::pin(async move {
            let response = answer.await;
            drop(busy);
            response
        })
    }
}

/// Hands the heap's free pages back to the system once no connection is
/// left: glibc keeps them otherwise, and thousands of connections would
/// leave the process hundreds of MB larger for good. (musl gives them
/// back by itself.)
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under
    // its locks; it takes no pointer and is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(busy: impl Fn(u64) -> usize) -> Conns {
        let start = Instant::now();
        let mut conns = Conns::default();
        for id in 0..MAX_CONNECTIONS as u64 {
            // Idle since later as the id grows, but 7 the longest of all.
            let idle_since = if id == 7 { start } else { start + Duration::from_millis(id + 1) };
            conns.open.insert(id, Conn { busy: busy(id), idle_since, abort: None });
        }
        conns
    }

    #[test]
    fn room_is_made_by_closing_the_connection_idle_longest() {
        let mut conns = full(|id| usize::from(id < 3));
        assert!(conns.make_room());
        assert!(!conns.open.contains_key(&7), "not the one idle longest");
        assert_eq!(conns.open.len(), MAX_CONNECTIONS - 1);
        assert!(conns.make_room(), "below the cap there is room");
        assert_eq!(conns.open.len(), MAX_CONNECTIONS - 1);
    }

    #[test]
    fn busy_connections_are_never_closed_to_make_room() {
        let mut conns = full(|_| 1);
        assert!(!conns.make_room());
        assert_eq!(conns.open.len(), MAX_CONNECTIONS);
    }
}
