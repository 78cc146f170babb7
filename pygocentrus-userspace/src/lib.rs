//! pygocentrus: packet-level network fault injection with an eBPF TC
//! classifier. The path of a fault is visible in the modules:
//!
//! `cli` (what the user typed) → `plan` (validated rules and the exact map
//! entries) → `engine` (the loaded object, the only code touching maps) →
//! `hooks` (TCX links or clsact filters on interfaces) → the kernel program
//! → `stats` (counters as the user sees them). `attach` runs the whole path;
//! `endpoint` (with `docker`) finds the veths of `--container` and
//! `--netns`; `demo` builds a lab in network namespaces and runs it there.
//!
//! As a library, for tests: a [`Session`] attaches as `attach` does and
//! changes its faults live as `serve` does, and detaches when dropped.
//!
//! ```no_run
//! use pygocentrus::{Faults, Proto, Session, Target};
//!
//! # fn main() -> anyhow::Result<()> {
//! let session = Session::attach(Target::iface("br0"), Faults::none())?;
//! session.set_faults(Faults::rule().port(5432).proto(Proto::Tcp).reset(100.0))?;
//! // ... every connection to port 5432 is reset ...
//! println!("{}", session.counters()?);
//! session.set_faults(Faults::none())?;
//! # Ok(())
//! # }
//! ```

pub mod api;
pub mod attach;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod dist;
pub mod docker;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod guard;
pub mod hooks;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod privileges;
pub mod schedule;
pub mod serve;
pub mod session;
pub mod signals;
pub mod stats;
pub mod toxi;
pub mod units;

pub use cli::{Direction, HookMode, Proto};
pub use error::UsageError;
pub use pygocentrus_common::Counters;
pub use session::{Faults, Session, Target};
pub use stats::Reading;
