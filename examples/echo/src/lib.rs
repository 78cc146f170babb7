//! A TCP echo server and its client, the stack of the seeds' compose
//! example, for watching what `--reset` and `--corrupt-payload` do to an
//! application: the client says, per message, whether the echo came back
//! intact (`ok`), damaged (`mismatch`), or the connection failed
//! (`ECONNRESET`, `ECONNREFUSED`, `timeout`...).

pub mod client;
pub mod server;

pub use client::{Connect, EchoSettings, Outcome, error_name, run_messages};
pub use server::serve;

/// The port of the echo compose service.
pub const DEFAULT_PORT: u16 = 12345;
