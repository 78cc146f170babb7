//! pygocentrus: packet-level network fault injection with an eBPF TC
//! classifier.
//!
//! The path of a fault is visible in the folders: what the user typed
//! (`commands::cli`, a config file, the API's JSON, a session's
//! [`Faults`]) → validated rules and the exact map entries (`rules`) → the
//! loaded object and its hooks (`datapath`) on what `--iface`,
//! `--container` or `--netns` name (`targets`) → an attachment kept at
//! work on its target, and its counters (`control`) → what the user sees.
//!
//! Imports go one way, down this list; no module names one above it:
//!
//! - `commands` (the binary's subcommands: `cli`, `attach`, `serve`,
//!   `client`, `demo`) and `session` (the library's [`Session`]): the top,
//!   used by nothing in the crate;
//! - `api`: `serve`'s HTTP API (Toxiproxy's and pygocentrus's own);
//! - `control`: [`Attachment`](control::attachment::Attachment), the one
//!   control loop `serve` and sessions share (`control::live`), counters
//!   as the user sees them, signals;
//! - `targets`: the [`Scope`](targets::Scope) of an attachment (shared by
//!   `attach`, `serve` and sessions), containers, namespaces;
//! - `datapath`: privileges, netlink, the engine (the only code touching
//!   maps), hooks, the guard of a killed run;
//! - `rules`: from a rule as written to the kernel's values (`units`,
//!   `values`, `args`, `spec`, `display`, `encode`, `validate`, `plan`,
//!   `schedule`, `config`: the same one-way order inside);
//! - `files`: reading the files a user names (`--config`, `--token-file`)
//!   without blocking on a FIFO or reading more than allowed;
//! - `error`: [`UsageError`], input that cannot work; the bottom.
//!
//! `demo` builds a lab in network namespaces and runs `attach`'s path
//! there.
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
pub mod commands;
pub mod control;
pub mod datapath;
pub mod error;
pub mod files;
pub mod rules;
pub mod session;
pub mod targets;

pub use pygocentrus_common::Counters;

pub use self::{
    control::stats::Reading,
    datapath::hooks::HookMode,
    error::UsageError,
    rules::{Direction, Proto},
    session::{Faults, Session, Target},
};
