//! `pygocentrus serve`: attach once with the rules of `--config` (or none),
//! then change the faults through map updates alone, as the HTTP API (see
//! `api`) asks, until Ctrl-C or SIGTERM. Hooks are never touched after
//! the start: connections through the target live on.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use tokio::sync::mpsc;

use super::cli::ServeArgs;
use crate::{
    api::{self, ApiState, Server},
    control::{
        attachment::{Attachment, Fq},
        live::{SERVE_FQ, live},
        signals::Signals,
    },
    datapath::{guard::GuardProgram, privileges},
    error::UsageError,
    rules::{ConfigFile, Plan},
};

/// Refuses an API address anyone on the network could reach, unless every
/// request has to carry a token.
fn check_api(addr: SocketAddr, token: Option<&str>) -> Result<(), UsageError> {
    if token.is_some_and(str::is_empty) {
        return Err(UsageError::Api("--token cannot be empty".to_owned()));
    }
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(UsageError::Api(format!(
            "refusing to serve the API on {addr}, which is not a loopback address, without --token (or --token-file, or PYGOCENTRUS_API_TOKEN)"
        )));
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let token = super::token(args.token.as_ref(), args.token_file.as_deref())?;
    check_api(args.api, token.as_deref())?;
    let scope = args.scope();
    let base = match &args.config {
        Some(path) => {
            let plan = ConfigFile::load(path)?.plan(scope.endpoint_label().as_deref())?;
            plan.map_contents()?;
            plan
        }
        None => Plan::default(),
    };
    privileges::check()?;
    let listener = tokio::net::TcpListener::bind(args.api)
        .await
        .map_err(|e| UsageError::Api(format!("cannot listen on {}: {e}", args.api)))?;
    let mut signals = Signals::install()?;
    let (mut attachment, mut events) =
        Attachment::open(&scope, base.clone(), Fq::WhereAvailable(SERVE_FQ), &GuardProgram::ThisBinary).await?;
    eprintln!("attached to {attachment}");

    let (tx, mut requests) = mpsc::channel(16);
    let state = ApiState { base: base.rules, endpoint: scope.endpoint_label(), ..ApiState::default() };
    let server = Server::new(state, tx, token);
    let app = api::router(server);
    let mut http = tokio::spawn(api::listen::serve(listener, app));
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
