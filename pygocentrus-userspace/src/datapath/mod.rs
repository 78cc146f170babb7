//! The datapath: everything that talks to the kernel. Each module imports
//! only those above it in this list, and [`crate::rules`] and
//! [`crate::error`] below them all:
//!
//! - [`privileges`]: refuses early when the process cannot load BPF;
//! - [`netlink`]: links, link events, qdiscs through rtnetlink;
//! - [`dist`]: the delay distribution tables the kernel reads;
//! - [`exact`]: where each target of one address sits in the exact-target
//!   table, and the order of the writes that change it live;
//! - [`engine`]: the loaded classifier, the only code touching maps;
//! - [`qdisc`]: the `fq` and clsact qdiscs under the hooks;
//! - [`leftovers`]: state files of what a run adds that outlives it, and
//!   removing what a killed run left;
//! - [`hooks`]: TCX links or clsact filters on interfaces, `fq` under
//!   them;
//! - [`guard`]: the process that takes a killed run's hooks off.

pub mod dist;
pub mod engine;
pub mod exact;
pub mod guard;
pub mod hooks;
pub mod leftovers;
pub mod netlink;
pub mod privileges;
pub mod qdisc;
