//! The control side: a plan at work on its target, and the loops that keep
//! it there. Each module imports only those above it in this list, and
//! [`crate::targets`], [`crate::datapath`], [`crate::rules`] below them:
//!
//! - [`signals`]: SIGINT and SIGTERM;
//! - [`stats`]: counters as the user sees them;
//! - [`events`]: what an attachment follows (links, Docker);
//! - [`attachment`]: the [`Attachment`](attachment::Attachment), a plan at
//!   work, which follows its target;
//! - [`live`]: the loop `serve` and a session share, which puts new plans
//!   to work as they are asked for.

pub mod attachment;
pub mod events;
pub mod live;
pub mod signals;
pub mod stats;
