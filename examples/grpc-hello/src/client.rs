//! The Greeter client: calls with a deadline, each ending in a gRPC status
//! code, the way an application sees them.

use std::{
    fmt, io,
    io::Write,
    net::{Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use example_support::{Env, SettingError, Tally, millis, shown};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tonic::{
    Code, Request,
    transport::{Channel, Uri},
};

use crate::{DEFAULT_PORT, proto::HelloRequest, proto::greeter_client::GreeterClient};

/// What `greeter-client` reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// `ADDR`: the server's address or name (required).
    pub addr: String,
    /// `PORT`: default 50051.
    pub port: u16,
    /// `NAME`: sent in every call; default `gRPC Dev`.
    pub name: String,
    /// `COUNT`: calls to make; default 10.
    pub count: u32,
    /// `INTERVAL`: pause after each call; default `1s`.
    pub interval: Duration,
    /// `DEADLINE`: each call's deadline; default `1s`.
    pub deadline: Duration,
    /// `START_DELAY`: wait before the first call (e.g. for pygocentrus to
    /// attach); default `0`.
    pub start_delay: Duration,
}

impl ClientSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, SettingError> {
        let settings = Self {
            addr: env.required("ADDR", "set it to the server's address, e.g. ADDR=198.19.50.10")?,
            port: env.number("PORT", DEFAULT_PORT)?,
            name: env.parsed("NAME", "gRPC Dev".to_owned(), |s| Ok(s.to_owned()))?,
            count: env.number("COUNT", 10)?,
            interval: env.duration("INTERVAL", Duration::from_secs(1))?,
            deadline: env.duration("DEADLINE", Duration::from_secs(1))?,
            start_delay: env.duration("START_DELAY", Duration::ZERO)?,
        };
        if settings.deadline.is_zero() {
            let value = "0".to_owned();
            return Err(SettingError::Invalid { name: "DEADLINE", value, reason: "must be longer than 0".to_owned() });
        }
        Ok(settings)
    }
}

/// How one call ended.
#[derive(Debug)]
pub struct CallResult {
    pub code: Code,
    /// From the call to its answer, or to its failure.
    pub latency: Duration,
    /// The greeting, or what went wrong.
    pub detail: String,
}

impl CallResult {
    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }
}

/// `OK 1.2 ms: Hello gRPC Dev`, `UNAVAILABLE 0.3 ms: tcp connect error...`
impl fmt::Display for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", code_name(self.code), millis(self.latency), self.detail)
    }
}

/// The canonical name of a status code, as gRPC's specification and every
/// other implementation print it: `DeadlineExceeded` is `DEADLINE_EXCEEDED`.
pub fn code_name(code: Code) -> String {
    if code == Code::Ok {
        return "OK".to_owned();
    }
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// An address that does not make a URI.
#[derive(Debug, thiserror::Error)]
#[error("{uri} is not a valid server address: {source}")]
pub struct BadAddress {
    uri: String,
    source: tonic::codegen::http::uri::InvalidUri,
}

/// A Greeter client on one channel (HTTP/2 connection), connected at the
/// first call and reconnected after a failure, as gRPC clients do.
#[derive(Clone)]
pub struct Greeter {
    client: GreeterClient<Channel>,
    deadline: Duration,
}

impl Greeter {
    /// A client of `addr:port` (an IP address or a name) whose calls have
    /// `deadline`. Nothing is sent yet; fails only on an address that cannot
    /// be written into a URI. Call it inside a Tokio runtime: the channel
    /// starts a task.
    pub fn new(addr: &str, port: u16, deadline: Duration) -> Result<Self, BadAddress> {
        let host = if addr.parse::<Ipv6Addr>().is_ok() { format!("[{addr}]") } else { addr.to_owned() };
        let uri = format!("http://{host}:{port}");
        let channel = Channel::from_shared(uri.clone())
            .map_err(|source| BadAddress { uri, source })?
            .connect_timeout(deadline)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self { client: GreeterClient::new(channel), deadline })
    }

    /// A client of `server` whose TCP connections use the sockets `socket`
    /// makes, unconnected: e.g. sockets made in another network namespace,
    /// where they stay whichever thread connects them.
    pub fn with_sockets<F>(server: SocketAddr, deadline: Duration, socket: F) -> Result<Self, BadAddress>
    where
        F: Fn() -> io::Result<TcpSocket> + Clone + Send + 'static,
    {
        let uri = format!("http://{server}");
        let endpoint = Channel::from_shared(uri.clone()).map_err(|source| BadAddress { uri, source })?;
        let connector = tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let socket = socket()?;
                socket.set_nodelay(true)?;
                Ok::<_, io::Error>(TokioIo::new(socket.connect(server).await?))
            }
        });
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Self { client: GreeterClient::new(channel), deadline })
    }

    /// One `SayHello(name)` with this client's deadline.
    pub async fn call(&mut self, name: &str) -> CallResult {
        let mut request = Request::new(HelloRequest { name: name.to_owned() });
        // Tells the server the deadline, and makes tonic enforce it too.
        request.set_timeout(self.deadline);
        let start = Instant::now();
        // Bounds the whole call, connecting included, whatever tonic's own
        // timeout covers.
        let outcome = tokio::time::timeout(self.deadline, self.client.say_hello(request)).await;
        let latency = start.elapsed();
        let (code, detail) = match outcome {
            Ok(Ok(reply)) => (Code::Ok, reply.into_inner().message),
            // tonic reports its own expired deadline as CANCELLED; gRPC's
            // specification, and the other implementations, call it
            // DEADLINE_EXCEEDED.
            Ok(Err(status))
                if status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string() =>
            {
                (Code::DeadlineExceeded, format!("deadline of {} expired", shown(self.deadline)))
            }
            Ok(Err(status)) => (status.code(), describe(&status)),
            Err(_) => (Code::DeadlineExceeded, format!("deadline of {} expired", shown(self.deadline))),
        };
        CallResult { code, latency, detail }
    }
}

/// One call on a connection of its own: `SayHello(name)` to `addr:port`
/// within `deadline`. Inside a Tokio runtime.
pub async fn say_hello(addr: &str, port: u16, name: &str, deadline: Duration) -> Result<CallResult, BadAddress> {
    Ok(Greeter::new(addr, port, deadline)?.call(name).await)
}

/// A status's message with the errors under it: `transport error: tcp
/// connect error: Connection refused (os error 111)`.
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// Why [`run_calls`] could not do its job (failed calls are not a reason).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Address(#[from] BadAddress),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}

/// What `greeter-client` does: `settings.count` calls, one line each on
/// `out` (`call 3: UNAVAILABLE 0.4 ms: ...`), then the summary line. Failed
/// calls are counted, not returned as errors.
pub async fn run_calls(settings: &ClientSettings, out: &mut impl Write) -> Result<Tally, RunError> {
    let mut greeter = Greeter::new(&settings.addr, settings.port, settings.deadline)?;
    writeln!(
        out,
        "greeter-client: {} calls to {}:{} as {:?}, deadline {}, {} apart",
        settings.count,
        settings.addr,
        settings.port,
        settings.name,
        shown(settings.deadline),
        shown(settings.interval)
    )?;
    tokio::time::sleep(settings.start_delay).await;
    let mut tally = Tally::default();
    for i in 1..=settings.count {
        let result = greeter.call(&settings.name).await;
        if result.is_ok() {
            tally.ok();
        } else {
            tally.failed(&code_name(result.code));
        }
        writeln!(out, "call {i}: {result}")?;
        out.flush()?;
        if i < settings.count {
            tokio::time::sleep(settings.interval).await;
        }
    }
    writeln!(out, "{}", tally.summary("calls"))?;
    out.flush()?;
    Ok(tally)
}
