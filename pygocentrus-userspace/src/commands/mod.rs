//! The subcommands of the `pygocentrus` binary, at the top: each may use
//! every folder below, none is used by them. [`cli`] holds the flags as
//! clap parsed them; [`attach`], [`serve`], [`client`] (`set`, `status`,
//! `reset`) and [`demo`] run them. `guard` runs
//! [`crate::datapath::guard::run`].

pub mod attach;
pub mod cli;
pub mod client;
pub mod demo;
pub mod serve;
