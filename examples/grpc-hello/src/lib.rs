//! gRPC's `helloworld.Greeter/SayHello`, server and client, for watching a
//! gRPC client under pygocentrus's faults: in docker-compose
//! (`docker-compose.yml` beside this crate), in tests, or in-process.
//!
//! - [`serve`]: the server on a listener, until a shutdown future resolves.
//! - [`Greeter`]: a client; [`Greeter::call`] makes one call with a
//!   deadline and says how it ended ([`CallResult`]), never failing itself;
//!   [`say_hello`] does one call on a connection of its own.
//! - [`run_calls`]: what `greeter-client` does: `count` calls, a line each
//!   and a summary.

pub mod client;
pub mod server;

pub use client::{BadAddress, CallResult, ClientSettings, Greeter, RunError, code_name, run_calls, say_hello};
pub use server::{DEFAULT_PORT, serve};
/// The status codes calls end with.
pub use tonic::Code;

/// The messages and service stubs generated from `proto/helloworld.proto`.
#[allow(clippy::allow_attributes_without_reason, reason = "tonic-build's code carries its own allows, without reasons")]
pub mod proto {
    tonic::include_proto!("helloworld");
}
