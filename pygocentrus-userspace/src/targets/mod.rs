//! The targets: what `--iface`, `--container` and `--netns` name and what
//! they resolve to. Each module imports only those above it in this list,
//! and [`crate::datapath`] and below:
//!
//! - [`scope`]: the [`Scope`], as `attach`, `serve` and a session give it;
//! - [`docker`]: Docker's API, for a container's namespace and its events;
//! - [`endpoint`]: a container or namespace, seen through its veths;
//! - [`resolved`]: a scope resolved to an interface or an endpoint.

pub mod docker;
pub mod endpoint;
pub mod resolved;
pub mod scope;

pub use self::{resolved::Resolved, scope::Scope};
