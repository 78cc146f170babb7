//! The datapath: everything that talks to the kernel. Each module imports
//! only those above it in this list, and [`crate::rules`] and
//! [`crate::error`] below them all:
//!
//! - [`privileges`]: refuses early when the process cannot load BPF;
//! - [`netlink`]: links, link events, qdiscs through rtnetlink;
//! - [`dist`]: the delay distribution tables the kernel reads;
//! - [`engine`]: the loaded classifier, the only code touching maps;
//! - [`hooks`]: TCX links or clsact filters on interfaces, `fq` under
//!   them, and what a killed run left behind;
//! - [`guard`]: the process that takes a killed run's hooks off.

pub mod dist;
pub mod engine;
pub mod guard;
pub mod hooks;
pub mod netlink;
pub mod privileges;
