//! pygocentrus: packet-level network fault injection with an eBPF TC
//! classifier. The path of a fault is visible in the modules:
//!
//! `cli` (what the user typed) → `plan` (validated rules and the exact map
//! entries) → `engine` (the loaded object, the only code touching maps) →
//! `hooks` (TCX links or clsact filters on interfaces) → the kernel program
//! → `stats` (counters as the user sees them). `attach` runs the whole path;
//! `endpoint` (with `docker`) finds the veths of `--container` and
//! `--netns`; `demo` builds a lab in network namespaces and runs it there.

pub mod attach;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dist;
pub mod docker;
pub mod endpoint;
pub mod engine;
pub mod guard;
pub mod hooks;
pub mod netlink;
pub mod netns;
pub mod plan;
pub mod privileges;
pub mod signals;
pub mod stats;
pub mod units;

pub use plan::UsageError;
