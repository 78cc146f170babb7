//! `serve`'s HTTP API without a kernel: a sequence of requests, one a line
//! (`METHOD PATH [BODY]`), goes through the real router (`api::router`:
//! body limit, JSON bodies, Toxiproxy's proxies and toxics, `set`'s rules)
//! against one in-memory state. The loop that owns the maps is replaced by
//! one that checks each plan as `Attachment::update` does before it writes
//! the maps (`map_contents`) and keeps it.
//!
//! Invariants: nothing panics; no request gets a 5xx; a refused request gets
//! a message (a JSON `error` from the API's own refusals); after every
//! change the API accepted, the state still gives a plan (`/pygocentrus/status`
//! answers 200).

#![no_main]

use std::{net::SocketAddr, sync::OnceLock};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Method, Request, StatusCode, Uri},
};
use libfuzzer_sys::fuzz_target;
use pygocentrus::{
    api::{self, ApiState, Server, toxi::ProxyInput},
    control::live::{EngineRequest, Tally},
};
use serde_json::Value;
use tokio::{runtime::Runtime, sync::mpsc};
use tower::ServiceExt as _;

/// At most this many requests of an input are sent.
const REQUESTS: usize = 64;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(session(data));
});

async fn session(data: &[u8]) {
    let (tx, rx) = mpsc::channel(16);
    let engine = tokio::spawn(engine(rx));
    let app = api::router(Server::new(ApiState::default(), tx, None));
    for line in data.split(|b| *b == b'\n').take(REQUESTS) {
        let Some((method, uri, body)) = request(line) else { continue };
        let changes = method != Method::GET;
        let what = format!("{method} {uri} {}", String::from_utf8_lossy(body));
        let (status, reply) = send(&app, method, uri, body.to_vec()).await;
        assert!(!status.is_server_error(), "{what}: {status} {reply}");
        if status.is_client_error() {
            // Only the router's own 405 has no body.
            assert!(
                status == StatusCode::METHOD_NOT_ALLOWED || !reply.is_empty(),
                "{what}: {status} without a message"
            );
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&reply) {
                let message = o.get("error").and_then(Value::as_str).unwrap_or_default();
                assert!(!message.is_empty(), "{what}: {status} without a message: {reply}");
            }
        } else if changes {
            let (status, reply) = send(&app, Method::GET, Uri::from_static("/pygocentrus/status"), Vec::new()).await;
            assert_eq!(status, StatusCode::OK, "after {what}: the state kept gives no plan: {reply}");
        }
    }
    drop(app);
    engine.await.expect("the engine loop");
}

async fn send(app: &Router, method: Method, uri: Uri, body: Vec<u8>) -> (StatusCode, String) {
    let request = Request::builder().method(method).uri(uri).body(Body::from(body)).expect("a request");
    let response = match app.clone().oneshot(request).await {
        Ok(r) => r,
        Err(e) => match e {},
    };
    let status = response.status();
    let body = to_bytes(response.into_body(), usize::MAX).await.expect("a response body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `METHOD PATH [BODY]`; `None` for a line that is no request, or whose body
/// would make `serve` ask the resolver (below).
fn request(line: &[u8]) -> Option<(Method, Uri, &[u8])> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let uri = Uri::try_from(parts.next()?).ok()?;
    let body = parts.next().unwrap_or_default();
    if asks_resolver(body) {
        return None;
    }
    Some((method, uri, body))
}

/// Whether the body, as `serve` reads a proxy (`ProxyInput`, alone or in a
/// `/populate` list), names an upstream that is not an address: `serve`
/// would look it up (DNS), which a fuzzer must not do. Empty upstreams
/// stay: they are refused before any lookup.
fn asks_resolver(body: &[u8]) -> bool {
    let literal =
        |p: &ProxyInput| p.upstream.as_deref().is_none_or(|u| u.is_empty() || u.parse::<SocketAddr>().is_ok());
    if let Ok(p) = serde_json::from_slice::<ProxyInput>(body) {
        return !literal(&p);
    }
    if let Ok(list) = serde_json::from_slice::<Vec<ProxyInput>>(body) {
        return !list.iter().all(literal);
    }
    false
}

/// The loop that owns the maps, less the maps: a plan is refused when its
/// map entries cannot be made, kept otherwise; counters are zeros.
async fn engine(mut requests: mpsc::Receiver<EngineRequest>) {
    let mut rules = 0;
    while let Some(request) = requests.recv().await {
        match request {
            EngineRequest::Apply(plan, reply) => {
                let outcome = plan.map_contents().map(|_| ()).map_err(|e| e.to_string());
                let _ = plan.fq_params();
                if outcome.is_ok() {
                    rules = plan.rules.len();
                }
                let _ = reply.send(outcome);
            }
            EngineRequest::Counters(reply) => {
                let tally = Tally { ids: (1..=rules as u32).collect(), slots: vec![Default::default(); rules + 1] };
                let _ = reply.send(Ok(tally));
            }
        }
    }
}
