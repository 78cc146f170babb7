//! `pygocentrus set`, `status` and `reset`: the native client of a running
//! `serve`, over its HTTP API (HTTP/1.1 with hyper, one request each).

use anyhow::{Context as _, Result, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use pygocentrus_common::Counter;
use serde_json::Value;

use super::cli::{ClientArgs, SetArgs};
use crate::{error::UsageError, rules::RuleSpec};

/// Sends one request; returns the status and the body parsed as JSON
/// (`null` when empty).
async fn call(c: &ClientArgs, method: Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
    let token = super::token(c.token.as_ref(), c.token_file.as_deref())?;
    let stream = tokio::net::TcpStream::connect(c.api)
        .await
        .with_context(|| format!("connecting to pygocentrus serve at {} (is it running?)", c.api))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header(header::HOST, c.api.to_string());
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(&v)?)
        }
        None => Bytes::new(),
    };
    let resp = sender.send_request(req.body(Full::new(bytes))?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    conn.abort();
    let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
    Ok((status, value))
}

/// The body of a success, or the server's error as one line.
fn answer(status: StatusCode, value: Value) -> Result<Value> {
    if status.is_success() {
        return Ok(value);
    }
    let msg = value["error"].as_str().map_or_else(|| status.to_string(), str::to_owned);
    if status.is_client_error() {
        return Err(UsageError::Api(format!("serve refused: {msg}")).into());
    }
    bail!("serve answered {status}: {msg}")
}

pub async fn set(args: SetArgs) -> Result<()> {
    let path = format!("/pygocentrus/rules/{}", args.name);
    if args.remove {
        let (status, value) = call(&args.client, Method::DELETE, &path, None).await?;
        answer(status, value)?;
        eprintln!("removed rule {}", args.name);
        return Ok(());
    }
    // Checked here too, so that a mistake is said without a round trip.
    RuleSpec::from_args(&args.rule, None)?;
    let (status, value) = call(&args.client, Method::PUT, &path, Some(serde_json::to_value(&args.rule)?)).await?;
    let value = answer(status, value)?;
    eprintln!("set rule {}: {}", args.name, value["rule"].as_str().unwrap_or_default());
    Ok(())
}

pub async fn status(args: ClientArgs) -> Result<()> {
    let (status, value) = call(&args, Method::GET, "/pygocentrus/status", None).await?;
    let value = answer(status, value)?;
    if args.json {
        println!("{value}");
        return Ok(());
    }
    println!("classifier saw {}", value["classifier_seen"]);
    let rules = value["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        println!("no rules in force");
    }
    for r in rules {
        println!(
            "rule {} ({}): {}",
            r["id"],
            r["owner"].as_str().unwrap_or_default(),
            r["rule"].as_str().unwrap_or_default()
        );
        let counters: Vec<String> = Counter::ALL.iter().map(|k| format!("{} {}", k.label(), r[k.name()])).collect();
        println!("  {}", counters.join(" "));
    }
    Ok(())
}

pub async fn reset(args: ClientArgs) -> Result<()> {
    let (status, value) = call(&args, Method::POST, "/reset", None).await?;
    answer(status, value)?;
    eprintln!("reset: every toxic and every rule set with `set` removed");
    Ok(())
}
