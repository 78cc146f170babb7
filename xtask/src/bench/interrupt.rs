//! Ctrl-C and SIGTERM as an error instead of an exit: the live bench keeps
//! running to the end of the step it is in (a child in the same process
//! group, such as iperf3, gets the Ctrl-C too and ends it early), then
//! [`check`] fails and every guard (programs, processes, namespaces, the
//! statistics switch) is dropped on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

const SIGNALS: [Signal; 2] = [Signal::SIGINT, Signal::SIGTERM];

/// The handlers in place until dropped; the previous ones come back then.
pub struct Caught {
    previous: Vec<(Signal, SigAction)>,
}

pub fn catch() -> Result<Caught> {
    // SA_RESTART: system calls the signal lands in go on; the flag is
    // looked at between steps.
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    let mut previous = Vec::new();
    for sig in SIGNALS {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        let old = unsafe { sigaction(sig, &action) }.with_context(|| format!("installing a {sig} handler"))?;
        previous.push((sig, old));
    }
    Ok(Caught { previous })
}

impl Drop for Caught {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: puts back the action that was in place before `catch`.
            if let Err(e) = unsafe { sigaction(*sig, old) } {
                eprintln!("bench: warning: restoring the {sig} handler: {e}");
            }
        }
    }
}

/// Fails once SIGINT or SIGTERM has arrived.
pub fn check() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted (SIGINT or SIGTERM): cleaning up");
    }
    Ok(())
}
