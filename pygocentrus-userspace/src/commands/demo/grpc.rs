//! The demo's gRPC pair: gRPC's helloworld Greeter (`examples/grpc-hello`,
//! wire-compatible with every gRPC implementation) served by B and called
//! by A, over the lab's bridge, each end's sockets made in its own
//! namespace.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use grpc_hello::CallResult;
pub use grpc_hello::Greeter;
use tokio::net::TcpSocket;

use super::{
    lab::{ADDR_B, Lab},
    traffic::Server,
};

pub const GRPC_PORT: u16 = 50051;
/// Each call's deadline: a call on a clean bridge takes a millisecond or
/// two, and one delayed by the demo's 100 ms each way about 200 ms.
pub const DEADLINE: Duration = Duration::from_secs(1);
/// The name sent in every call.
const NAME: &str = "pygocentrus demo";

/// B's Greeter server.
pub fn greeter_server(lab: &Lab) -> Result<Server> {
    Server::start(lab, GRPC_PORT, "gRPC server", |listener| async move {
        if let Err(e) = grpc_hello::serve(listener, false, std::future::pending()).await {
            eprintln!("pygocentrus: demo: B's gRPC server stopped: {e}");
        }
    })
}

/// A's Greeter client: one channel (HTTP/2 connection), reconnected after a
/// failure as gRPC clients do, dialing B's own address.
pub fn client(lab: &Lab) -> Result<Greeter> {
    let a = Arc::new(lab.a.try_clone().context("holding A's namespace")?);
    let server = SocketAddr::from((ADDR_B, GRPC_PORT));
    Ok(Greeter::with_sockets(server, DEADLINE, move || a.run(TcpSocket::new_v4))?)
}

/// `count` calls, one after the other, with a pause of `gap` after each.
pub async fn calls(greeter: &mut Greeter, count: u32, gap: Duration) -> Vec<CallResult> {
    let mut results = Vec::new();
    for _ in 0..count {
        results.push(greeter.call(NAME).await);
        tokio::time::sleep(gap).await;
    }
    results
}

/// Prints one line per call, as `greeter-client` does.
pub fn show(results: &[CallResult]) {
    for (i, r) in results.iter().enumerate() {
        println!("        call {}: {r}", i + 1);
    }
}

/// Waits until a call succeeds (the server has started and the lab's
/// neighbours are known), for up to `within`.
pub async fn wait_serving(greeter: &mut Greeter, within: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = greeter.call(NAME).await;
        if r.is_ok() {
            return Ok(());
        }
        if start.elapsed() > within {
            anyhow::bail!("B's gRPC server did not answer within {within:?}: {r}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
