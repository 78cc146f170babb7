//! The control loop that `serve` and a session share: it keeps an
//! [`Attachment`] on its target and puts the plans its [`EngineRequest`]s
//! bring to work through the maps alone, answering each once it is in
//! force.

use std::future::Future;

use anyhow::Result;

use pygocentrus_common::Counters;
use tokio::sync::{mpsc, oneshot};

use super::{attachment::Attachment, events::Events};
use crate::rules::{FqParams, Plan};

/// The `fq` every port gets, so that delays and rates can be set later:
/// room for 100 000 packets (one flow may use all of it), departure times
/// up to 60 s ahead.
pub const SERVE_FQ: FqParams = FqParams { limit: 100_000, flow_limit: 100_000, horizon_us: 60_000_000 };

/// What the API asks of the loop that owns the attachment.
pub enum EngineRequest {
    /// Put this plan to work; the answer says whether the maps hold it.
    Apply(Plan, oneshot::Sender<Result<(), String>>),
    /// Read the counters.
    Counters(oneshot::Sender<Result<Tally, String>>),
}

/// The counters of the rules in force.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// The kernel's id of each rule, in the plan's order: a rule keeps its
    /// id while it stays in force, wherever other rules come and go.
    pub ids: Vec<u32>,
    /// The totals, then one per rule, in the plan's order.
    pub slots: Vec<Counters>,
}

/// Keeps `attachment` on its target and puts the plans `requests` bring to
/// work through the maps alone, until `stop` ends (its result is
/// returned), every sender of `requests` is gone, or the target is. What
/// `serve` and a [`crate::Session`] run.
pub async fn live(
    attachment: &mut Attachment,
    events: &mut Events,
    requests: &mut mpsc::Receiver<EngineRequest>,
    stop: impl Future<Output = Result<()>>,
) -> Result<()> {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            result = &mut stop => return result,
            request = requests.recv() => match request {
                None => return Ok(()),
                Some(EngineRequest::Apply(plan, reply)) => {
                    let summary = plan.rules.len();
                    let outcome = attachment.update(plan).map_err(|e| e.to_string());
                    if outcome.is_ok() {
                        eprintln!("pygocentrus: {summary} rules in force");
                    }
                    let _ = reply.send(outcome);
                }
                Some(EngineRequest::Counters(reply)) => {
                    let tally = attachment.counters().map(|slots| Tally { ids: attachment.ids().collect(), slots });
                    let _ = reply.send(tally.map_err(|e| format!("{e:#}")));
                }
            },
            event = events.next() => {
                if attachment.on_event(event?).await?.is_break() {
                    return Ok(());
                }
            }
        }
    }
}
