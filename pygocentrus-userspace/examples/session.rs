//! README's "Use it from Rust tests", as a program that is built with the
//! workspace (so the README's code keeps compiling; a unit test checks the
//! README still shows it): as root,
//!
//!     cargo run --example session -- BRIDGE ADDR:PORT
//!
//! with a TCP echo server listening on ADDR:PORT behind bridge BRIDGE (a
//! Docker network's, say), reachable from this machine.

// [README]
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::Result;
use pygocentrus::{Faults, Proto, Session, Target};

fn survives_a_blackout(bridge: &str, server: SocketAddr) -> Result<()> {
    // Hooked on every port of the bridge, with no fault: everything passes.
    let session = Session::attach(Target::iface(bridge), Faults::none())?;
    let mut conn = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;

    // Every packet to or from the server vanishes, from now on.
    let blackout = Faults::rule().ip(server.ip()).port(server.port()).proto(Proto::Tcp).drop(100.0);
    session.set_faults(blackout)?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    conn.write_all(b"ping")?;
    assert!(conn.read(&mut [0; 4]).is_err(), "an answer came through the blackout");
    assert!(session.counters()?.sum().dropped > 0);

    // Back to normal, on the same hooks: the connection lives on, and TCP
    // sends "ping" again.
    session.set_faults(Faults::none())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.read_exact(&mut [0; 4])?;
    Ok(())
    // Dropping the session detaches: no hook left, every qdisc as it was.
}
// [end of README]

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(bridge), Some(server)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: session BRIDGE ADDR:PORT (a TCP echo server behind the bridge)");
    };
    let server: SocketAddr = server.parse()?;
    survives_a_blackout(&bridge, server)
}
