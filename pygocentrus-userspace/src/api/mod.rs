//! The HTTP API of `serve`: Toxiproxy's (same paths, JSON shapes and status
//! codes as Toxiproxy 2.x), pygocentrus's own under `/pygocentrus/` (what
//! `set`, `status` and `reset` use), and `/metrics` for Prometheus.
//!
//! Handlers never touch the maps: they change a copy of the [`ApiState`],
//! turn it into a [`Plan`] and send it to the loop that owns the
//! attachment, which answers once the maps hold it; only then is the copy
//! kept. So a reply means the faults are in force.

pub mod listen;
pub mod state;
pub mod toxi;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Path, Request, State as AxState},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use tokio::sync::{Mutex, mpsc, oneshot};

pub use self::state::ApiState;
use self::toxi::{ApiError, Proxy, ProxyInput, Toxic, ToxicInput, check_name};
use crate::{
    control::live::{EngineRequest, Tally},
    rules::{RuleArgs, RuleSpec},
};

/// The largest request body accepted (a `/populate` of a few hundred
/// proxies fits).
pub const BODY_LIMIT: usize = 256 * 1024;

/// How long a request body may take to arrive once its head has (408
/// after that).
pub const BODY_TIMEOUT: Duration = listen::HEADER_TIMEOUT;

pub struct Server {
    state: Mutex<ApiState>,
    engine: mpsc::Sender<EngineRequest>,
    token: Option<String>,
}

type Shared = Arc<Server>;

impl Server {
    pub fn new(state: ApiState, engine: mpsc::Sender<EngineRequest>, token: Option<String>) -> Shared {
        Arc::new(Self { state: Mutex::new(state), engine, token })
    }

    /// Runs `change` on a copy of the state, puts the result to work, and
    /// keeps it if the maps took it. Returns what `change` returned.
    async fn change<T>(&self, change: impl FnOnce(&mut ApiState) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let out = change(&mut next)?;
        let (plan, _) = next.plan()?;
        let (tx, rx) = oneshot::channel();
        self.engine.send(EngineRequest::Apply(plan, tx)).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?.map_err(ApiError::bad)?;
        *state = next;
        Ok(out)
    }

    async fn counters(&self) -> Result<Tally, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.engine.send(EngineRequest::Counters(tx)).await.map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?.map_err(|e| ApiError { status: 500, message: e })
    }
}

fn stopping() -> ApiError {
    ApiError { status: 503, message: "pygocentrus is stopping".to_owned() }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({"error": self.message, "status": self.status}))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn reply(status: StatusCode, body: impl serde::Serialize) -> ApiResult {
    Ok((status, axum::Json(body)).into_response())
}

/// A request body, read within [`BODY_TIMEOUT`] and [`BODY_LIMIT`]; what
/// goes wrong is answered in the JSON error shape (408, 413, 400).
struct ReadBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for ReadBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(request, state)).await {
            Ok(Ok(bytes)) => Ok(Self(bytes)),
            Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError { status: 413, message: format!("request body over {} KiB", BODY_LIMIT / 1024) })
            }
            Ok(Err(rejection)) => Err(ApiError { status: rejection.status().as_u16(), message: rejection.body_text() }),
            Err(_) => Err(ApiError {
                status: 408,
                message: format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            }),
        }
    }
}

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}

/// A JSON object as `T`: serde would also read a struct from an array,
/// its fields by position, which no client means.
fn object<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad("bad JSON body: expected a JSON object"));
    }
    body(bytes)
}

pub fn router(server: Shared) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/proxies", get(list_proxies).post(create_proxy))
        .route("/populate", post(populate))
        .route("/proxies/{proxy}", get(get_proxy).post(update_proxy).delete(delete_proxy))
        .route("/proxies/{proxy}/toxics", get(list_toxics).post(create_toxic))
        .route("/proxies/{proxy}/toxics/{toxic}", get(get_toxic).post(update_toxic).delete(delete_toxic))
        .route("/reset", post(reset))
        .route("/metrics", get(metrics))
        .route("/pygocentrus/status", get(status))
        .route("/pygocentrus/rules/{name}", put(set_rule).delete(delete_rule))
        .fallback(|| async { ApiError::not_found("no such path") })
        .layer(middleware::from_fn_with_state(Arc::clone(&server), authorize))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(server)
}

/// With a token configured, every request must carry it.
async fn authorize(AxState(server): AxState<Shared>, request: Request, next: Next) -> Response {
    if let Some(token) = &server.token {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        // In constant time: how long a wrong token took to refuse says
        // nothing of how much of it was right (its length aside).
        if !given.is_some_and(|given| bool::from(given.ct_eq(token.as_bytes()))) {
            return ApiError { status: 401, message: "missing or wrong bearer token".to_owned() }.into_response();
        }
    }
    next.run(request).await
}

async fn version() -> ApiResult {
    reply(StatusCode::OK, json!({"version": concat!("pygocentrus-", env!("CARGO_PKG_VERSION"))}))
}

async fn list_proxies(AxState(s): AxState<Shared>) -> ApiResult {
    let state = s.state.lock().await;
    let map: serde_json::Map<String, Value> = state.proxies.iter().map(|p| (p.name.clone(), json!(p))).collect();
    reply(StatusCode::OK, map)
}

/// A proxy from its body: name and upstream required, upstream resolved.
async fn new_proxy(input: ProxyInput) -> Result<Proxy, ApiError> {
    let name = input.name.filter(|n| !n.is_empty()).ok_or_else(|| ApiError::bad("missing required field: name"))?;
    check_name("proxy", &name)?;
    let upstream =
        input.upstream.filter(|u| !u.is_empty()).ok_or_else(|| ApiError::bad("missing required field: upstream"))?;
    let target = resolve(&upstream).await?;
    Ok(Proxy::new(name, upstream, target, input.enabled.unwrap_or(true)))
}

async fn resolve(upstream: &str) -> Result<std::net::SocketAddr, ApiError> {
    let target = tokio::net::lookup_host(upstream)
        .await
        .map_err(|e| ApiError::bad(format!("upstream '{upstream}' is not host:port: {e}")))?
        .next()
        .ok_or_else(|| ApiError::bad(format!("upstream '{upstream}' resolves to no address")))?;
    if target.port() == 0 {
        return Err(ApiError::bad(format!("upstream '{upstream}' has port 0")));
    }
    Ok(target)
}

fn add_proxy(state: &mut ApiState, proxy: Proxy) -> Result<(), ApiError> {
    if state.proxies.iter().any(|p| p.name == proxy.name) {
        return Err(ApiError::conflict("proxy already exists"));
    }
    if let Some(other) = state.proxies.iter().find(|p| p.target == proxy.target) {
        return Err(ApiError::conflict(format!("proxy {} already has upstream {}", other.name, proxy.target)));
    }
    state.proxies.push(proxy);
    Ok(())
}

async fn create_proxy(AxState(s): AxState<Shared>, ReadBody(bytes): ReadBody) -> ApiResult {
    let proxy = new_proxy(object(&bytes)?).await?;
    let shown = json!(proxy);
    s.change(|st| add_proxy(st, proxy)).await?;
    reply(StatusCode::CREATED, shown)
}

async fn populate(AxState(s): AxState<Shared>, ReadBody(bytes): ReadBody) -> ApiResult {
    let inputs: Vec<serde_json::Map<String, Value>> = body(&bytes)?;
    let mut proxies = Vec::new();
    for input in inputs {
        let input =
            serde_json::from_value(Value::Object(input)).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))?;
        proxies.push(new_proxy(input).await?);
    }
    let shown: Vec<Value> = proxies.iter().map(|p| json!(p)).collect();
    s.change(|st| {
        for proxy in proxies {
            // Toxiproxy replaces a proxy of the same name (its toxics go).
            st.proxies.retain(|p| p.name != proxy.name);
            add_proxy(st, proxy)?;
        }
        Ok(())
    })
    .await?;
    reply(StatusCode::CREATED, json!({"proxies": shown}))
}

async fn get_proxy(AxState(s): AxState<Shared>, Path(name): Path<String>) -> ApiResult {
    let state = s.state.lock().await;
    let i = state.proxy(&name)?;
    reply(StatusCode::OK, &state.proxies[i])
}

async fn update_proxy(AxState(s): AxState<Shared>, Path(name): Path<String>, ReadBody(bytes): ReadBody) -> ApiResult {
    let input: ProxyInput = object(&bytes)?;
    let target = match &input.upstream {
        Some(u) => Some((u.clone(), resolve(u).await?)),
        None => None,
    };
    let shown = s
        .change(|st| {
            let i = st.proxy(&name)?;
            let p = &mut st.proxies[i];
            if let Some(enabled) = input.enabled {
                p.enabled = enabled;
            }
            if let Some((upstream, target)) = target {
                p.listen = upstream.clone();
                p.upstream = upstream;
                p.target = target;
            }
            let shown = json!(p);
            let target = st.proxies[i].target;
            if st.proxies.iter().filter(|q| q.target == target).count() > 1 {
                return Err(ApiError::conflict(format!("another proxy has upstream {target}")));
            }
            Ok(shown)
        })
        .await?;
    reply(StatusCode::OK, shown)
}

async fn delete_proxy(AxState(s): AxState<Shared>, Path(name): Path<String>) -> ApiResult {
    s.change(|st| {
        let i = st.proxy(&name)?;
        st.proxies.remove(i);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_toxics(AxState(s): AxState<Shared>, Path(name): Path<String>) -> ApiResult {
    let state = s.state.lock().await;
    let i = state.proxy(&name)?;
    reply(StatusCode::OK, &state.proxies[i].toxics)
}

async fn create_toxic(AxState(s): AxState<Shared>, Path(name): Path<String>, ReadBody(bytes): ReadBody) -> ApiResult {
    let toxic = Toxic::new(object(&bytes)?)?;
    let shown = json!(toxic);
    s.change(|st| {
        let i = st.proxy(&name)?;
        let p = &mut st.proxies[i];
        if p.toxics.iter().any(|t| t.name == toxic.name) {
            return Err(ApiError::conflict("toxic already exists"));
        }
        p.toxics.push(toxic);
        Ok(())
    })
    .await?;
    reply(StatusCode::OK, shown)
}

async fn get_toxic(AxState(s): AxState<Shared>, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    let state = s.state.lock().await;
    let i = state.proxy(&name)?;
    let t = state.proxies[i]
        .toxics
        .iter()
        .find(|t| t.name == toxic)
        .ok_or_else(|| ApiError::not_found("toxic not found"))?;
    reply(StatusCode::OK, t)
}

async fn update_toxic(
    AxState(s): AxState<Shared>,
    Path((name, toxic)): Path<(String, String)>,
    ReadBody(bytes): ReadBody,
) -> ApiResult {
    let input: ToxicInput = object(&bytes)?;
    let shown = s
        .change(|st| {
            let i = st.proxy(&name)?;
            let p = &mut st.proxies[i];
            let t =
                p.toxics.iter_mut().find(|t| t.name == toxic).ok_or_else(|| ApiError::not_found("toxic not found"))?;
            *t = t.update(input)?;
            Ok(json!(t))
        })
        .await?;
    reply(StatusCode::OK, shown)
}

async fn delete_toxic(AxState(s): AxState<Shared>, Path((name, toxic)): Path<(String, String)>) -> ApiResult {
    s.change(|st| {
        let i = st.proxy(&name)?;
        let p = &mut st.proxies[i];
        let j = p.toxics.iter().position(|t| t.name == toxic).ok_or_else(|| ApiError::not_found("toxic not found"))?;
        p.toxics.remove(j);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Toxiproxy's reset (every proxy enabled, every toxic removed), and the
/// rules set with `pygocentrus set` removed too.
async fn reset(AxState(s): AxState<Shared>) -> ApiResult {
    s.change(|st| {
        st.rules.clear();
        for p in &mut st.proxies {
            p.enabled = true;
            p.toxics.clear();
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_rule(AxState(s): AxState<Shared>, Path(name): Path<String>, ReadBody(bytes): ReadBody) -> ApiResult {
    check_name("rule", &name)?;
    let args: RuleArgs = object(&bytes)?;
    if args.flap.is_some() {
        return Err(ApiError::bad("flap is for config files: set the rule again to change it"));
    }
    let shown = s
        .change(|st| {
            let spec = RuleSpec::from_args(&args, st.endpoint.clone()).map_err(|e| ApiError::bad(e.to_string()))?;
            let shown = json!({"name": name, "rule": spec.to_string()});
            match st.rules.iter_mut().find(|(n, _, _)| *n == name) {
                Some(slot) => *slot = (name.clone(), spec, args),
                None => st.rules.push((name.clone(), spec, args)),
            }
            Ok(shown)
        })
        .await?;
    reply(StatusCode::OK, shown)
}

async fn delete_rule(AxState(s): AxState<Shared>, Path(name): Path<String>) -> ApiResult {
    s.change(|st| {
        let i =
            st.rules.iter().position(|(n, _, _)| *n == name).ok_or_else(|| ApiError::not_found("rule not found"))?;
        st.rules.remove(i);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The rules in force, whose they are, and their counters since each was
/// last changed.
async fn status(AxState(s): AxState<Shared>) -> ApiResult {
    let (plan, owners) = s.state.lock().await.plan()?;
    let Tally { ids, slots } = s.counters().await?;
    let rules: Vec<Value> = plan
        .rules
        .iter()
        .zip(&owners)
        .enumerate()
        .map(|(i, (r, owner))| {
            let id = ids.get(i).copied().unwrap_or_default();
            let mut v = json!({"id": id, "owner": owner, "rule": r.to_string()});
            if let Some(c) = slots.get(i + 1) {
                for (k, n) in c.iter() {
                    v[k.name()] = json!(n);
                }
            }
            v
        })
        .collect();
    reply(StatusCode::OK, json!({"classifier_seen": slots.first().map_or(0, |c| c.seen), "rules": rules}))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    id: u64,
    owner: String,
    rule: String,
    event: String,
}

/// Prometheus text: `pygocentrus_packets_total{id,owner,rule,event}` per
/// rule, and `pygocentrus_classifier_packets_total`.
async fn metrics(AxState(s): AxState<Shared>) -> ApiResult {
    let (plan, owners) = s.state.lock().await.plan()?;
    let Tally { ids, slots } = s.counters().await?;
    let mut registry = Registry::default();
    let seen = Counter::<u64>::default();
    seen.inc_by(slots.first().map_or(0, |c| c.seen));
    registry.register("pygocentrus_classifier_packets", "Packets the classifier ran on", seen);
    let family = Family::<RuleLabels, Counter<u64>>::default();
    for (i, (r, owner)) in plan.rules.iter().zip(&owners).enumerate() {
        let (Some(c), Some(id)) = (slots.get(i + 1), ids.get(i)) else { continue };
        for (event, n) in c.iter() {
            let labels = RuleLabels {
                id: u64::from(*id),
                owner: owner.clone(),
                rule: r.to_string(),
                event: event.name().to_owned(),
            };
            family.get_or_create(&labels).inc_by(n);
        }
    }
    registry.register("pygocentrus_packets", "Packets of each rule, by what happened to them", family);
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| ApiError { status: 500, message: format!("encoding metrics: {e}") })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok((StatusCode::OK, headers, text).into_response())
}
