//! `greeter-server`: the Greeter on every address, port `PORT` (default
//! 50051), until SIGTERM or SIGINT.

use std::{net::SocketAddr, process::ExitCode};

use example_support::{EXIT_SETUP, process_env, stop_signal};
use grpc_hello::{DEFAULT_PORT, serve};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let port = match process_env().number("PORT", DEFAULT_PORT) {
        Ok(port) => port,
        Err(e) => {
            eprintln!("greeter-server: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let listener = match listen(port).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("greeter-server: listening on port {port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = match stop_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("greeter-server: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("greeter-server: listening on {addr}"),
        Err(e) => eprintln!("greeter-server: warning: no local address: {e}"),
    }
    let shutdown = async {
        let signal = stop.await;
        println!("greeter-server: {signal}, stopping");
    };
    match serve(listener, true, shutdown).await {
        Ok(()) => {
            println!("greeter-server: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("greeter-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// IPv6 and IPv4 on one socket where the kernel has IPv6, IPv4 alone where
/// it does not.
async fn listen(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::from(([0u8; 4], port))).await,
    }
}
