//! The compose examples on a real Docker engine: the images built from this
//! checkout (`scripts/images`), `examples/grpc-hello/docker-compose.yml` and
//! `examples/echo/docker-compose.yml` brought up under a project name of
//! the tests' own, the clients' reports read line by line, pygocentrus's
//! hooks looked at on the bridge's ports, and everything taken down again,
//! also when a test fails.
//!
//! Needs root. Installs Docker's Debian packages and starts the daemon when
//! needed (through `scripts/images`); skips, saying so, only where no
//! engine can run at all. Compose is `docker-compose` (v1) where installed,
//! else `docker compose`; `PYGOCENTRUS_COMPOSE="docker compose"` picks v2.
//!
//! The networks are those of the compose files: 198.19.50.0/24 (bridge
//! `pyg-grpc0`) and 198.19.51.0/24 (`pyg-echo0`), inside 198.18.0.0/15.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report, as in aya's tests"
)]

mod compose;
mod container;
mod echo;
mod engine;
mod grpc;
mod setup;

use pygocentrus_common::{PROG_EGRESS, PROG_INGRESS};
use pygocentrus_tests::PortHooks;

/// Whether `hooks` are pygocentrus's, as `--hook auto` makes them here.
fn hooked(hooks: &PortHooks) -> bool {
    hooked_with(hooks, pygocentrus_tests::auto_hook())
}

/// Whether `hooks` are pygocentrus's, as `--hook METHOD` makes them.
fn hooked_with(hooks: &PortHooks, method: &str) -> bool {
    if method == "tcx" {
        hooks.tcx.contains(&format!("ingress:{PROG_INGRESS}")) && hooks.tcx.contains(&format!("egress:{PROG_EGRESS}"))
    } else {
        let has = |name: &str| hooks.filters.iter().any(|f| f.contains(name));
        hooks.clsact && has(PROG_INGRESS) && has(PROG_EGRESS)
    }
}

/// The number after `word ` in `line`: `count("... dropped 12 ...", "dropped")`.
fn count(line: &str, word: &str) -> Option<u64> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == word)?;
    words.next()?.parse().ok()
}

#[test]
fn counts_are_read_after_their_word() {
    let line = "summary: 3s classifier saw 40 | rule 1: seen 30 matched 30 passed 28 dropped 2 corrupted 0";
    assert_eq!(count(line, "dropped"), Some(2));
    assert_eq!(count(line, "passed"), Some(28));
    assert_eq!(count(line, "reset"), None);
}
