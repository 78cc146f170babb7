//! `pygocentrus serve`: attach once with the rules of `--config` (or none),
//! then change the faults through map updates alone, as the HTTP API (see
//! `api.rs`) asks, until Ctrl-C or SIGTERM. Hooks are never touched after
//! the start: connections through the target live on.

use std::{future::Future, net::SocketAddr};

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use crate::{
    api::{self, EngineRequest, Server, State, Tally},
    attach::{Attachment, Events, Fq, plan_of},
    cli::ServeArgs,
    error::UsageError,
    guard::GuardProgram,
    netlink::FqParams,
    plan::endpoint_label,
    privileges,
    signals::Signals,
};

/// The `fq` every port gets, so that delays and rates can be set later:
/// room for 100 000 packets (one flow may use all of it), departure times
/// up to 60 s ahead.
pub const SERVE_FQ: FqParams = FqParams { limit: 100_000, flow_limit: 100_000, horizon_us: 60_000_000 };

/// Refuses an API address anyone on the network could reach, unless every
/// request has to carry a token.
fn check_api(addr: SocketAddr, token: Option<&str>) -> Result<(), UsageError> {
    if token.is_some_and(str::is_empty) {
        return Err(UsageError::Api("--token cannot be empty".to_owned()));
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(UsageError::Api(format!(
            "refusing to serve the API on {addr}, which is not a loopback address, without --token (or PYGOCENTRUS_API_TOKEN)"
        )));
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<()> {
    check_api(args.api, args.token.as_deref())?;
    let attach_args = args.attach_args();
    let base = match &args.config {
        Some(_) => plan_of(&attach_args)?,
        None => crate::plan::Plan::default(),
    };
    privileges::check()?;
    let listener = tokio::net::TcpListener::bind(args.api)
        .await
        .map_err(|e| UsageError::Api(format!("cannot listen on {}: {e}", args.api)))?;
    let mut signals = Signals::install()?;
    let (mut attachment, mut events) =
        Attachment::open(&attach_args, base.clone(), Fq::WhereAvailable(SERVE_FQ), &GuardProgram::ThisBinary).await?;
    eprintln!("attached to {attachment}");

    let (tx, mut requests) = mpsc::channel(16);
    let state = State { base: base.rules, endpoint: endpoint_label(&attach_args), ..State::default() };
    let server = Server::new(state, tx, args.token.clone());
    let app = api::router(server);
    let mut http = tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("serving the API on http://{}", args.api);

    let stop = async {
        tokio::select! {
            _ = signals.recv() => Ok(()),
            done = &mut http => match done {
                Ok(Ok(())) => anyhow::bail!("the API server stopped"),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the API server failed")),
                Err(e) => Err(anyhow::Error::from(e).context("the API server failed")),
            },
        }
    };
    let result = live(&mut attachment, &mut events, &mut requests, stop).await;

    http.abort();
    let name = attachment.name();
    attachment.detach().await;
    match &result {
        Ok(()) => eprintln!("detached from {name}: every hook removed"),
        Err(_) => eprintln!("pygocentrus: detached from {name} after an error"),
    }
    result.context("serve")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_stays_on_loopback_without_a_token() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(check_api(addr("127.0.0.1:8474"), None).is_ok());
        assert!(check_api(addr("[::1]:8474"), None).is_ok());
        assert!(check_api(addr("0.0.0.0:8474"), None).is_err());
        assert!(check_api(addr("198.18.0.1:8474"), None).is_err());
        assert!(check_api(addr("0.0.0.0:8474"), Some("s3cret")).is_ok());
        assert!(check_api(addr("127.0.0.1:8474"), Some("")).is_err());
    }
}
