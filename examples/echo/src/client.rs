//! The echo client: sends numbered messages and checks each echo.

use std::{
    fmt,
    io::{self, Write},
    time::{Duration, Instant},
};

use example_support::{Env, SettingError, Tally, millis, shown};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    time::timeout,
};

use crate::DEFAULT_PORT;

/// When the client opens a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connect {
    /// One connection for every message, opened again after a failure: an
    /// open connection that is reset shows `ECONNRESET`.
    Once,
    /// A new connection per message, as the seeds' client does.
    Each,
}

/// What `echo-client` reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoSettings {
    /// `ADDR`: the server's address or name (required).
    pub addr: String,
    /// `PORT`: default 12345.
    pub port: u16,
    /// `ID`: names the client in its messages; default `1`.
    pub id: String,
    /// `COUNT`: messages to send; default 10.
    pub count: u32,
    /// `INTERVAL`: pause after each message; default `1s`.
    pub interval: Duration,
    /// `TIMEOUT`: for connecting, and for the echo to come back; default `1s`.
    pub timeout: Duration,
    /// `CONNECT`: `once` (default) or `each`.
    pub connect: Connect,
    /// `START_DELAY`: wait before the first message; default `0`.
    pub start_delay: Duration,
}

impl EchoSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, SettingError> {
        let settings = Self {
            addr: env.required("ADDR", "set it to the server's address, e.g. ADDR=198.19.51.10")?,
            port: env.number("PORT", DEFAULT_PORT)?,
            id: env.parsed("ID", "1".to_owned(), |s| Ok(s.to_owned()))?,
            count: env.number("COUNT", 10)?,
            interval: env.duration("INTERVAL", Duration::from_secs(1))?,
            timeout: env.duration("TIMEOUT", Duration::from_secs(1))?,
            connect: env.parsed("CONNECT", Connect::Once, |s| match s {
                "once" => Ok(Connect::Once),
                "each" => Ok(Connect::Each),
                _ => Err("write once (one connection) or each (a connection per message)".to_owned()),
            })?,
            start_delay: env.duration("START_DELAY", Duration::ZERO)?,
        };
        if settings.timeout.is_zero() {
            let value = "0".to_owned();
            return Err(SettingError::Invalid { name: "TIMEOUT", value, reason: "must be longer than 0".to_owned() });
        }
        Ok(settings)
    }

    /// Message `n`, as the seeds' client writes them.
    pub fn message(&self, n: u32) -> Vec<u8> {
        format!("[CLIENT {}] Message number {n} sent", self.id).into_bytes()
    }
}

/// How one message ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The echo came back byte for byte.
    Ok,
    /// It came back damaged: `differ` of `len` bytes, the first at `first`.
    Mismatch { len: usize, differ: usize, first: usize },
    /// The connection failed: `kind` as [`error_name`] writes it, and while
    /// doing `what`.
    Failed { kind: String, what: &'static str, error: String },
}

impl Outcome {
    /// `ok`, `mismatch`, or the failure's kind: what the summary counts.
    pub fn kind(&self) -> &str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Mismatch { .. } => "mismatch",
            Outcome::Failed { kind, .. } => kind,
        }
    }

    fn failed(what: &'static str, e: &io::Error) -> Self {
        Outcome::Failed { kind: error_name(e), what, error: e.to_string() }
    }
}

/// `ok 0.3 ms`, `mismatch 0.4 ms: 1 of 34 bytes differ, the first at
/// byte 7`, `ECONNRESET 201.2 ms: reading the echo: Connection reset by peer`
/// (the time from the start of the message to its outcome).
struct Line<'a>(&'a Outcome, Duration);

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.kind(), millis(self.1))?;
        match self.0 {
            Outcome::Ok => Ok(()),
            Outcome::Mismatch { len, differ, first } => {
                write!(f, ": {differ} of {len} bytes differ, the first at byte {first}")
            }
            Outcome::Failed { what, error, .. } => write!(f, ": {what}: {error}"),
        }
    }
}

/// The name of a connection error as the C library spells it
/// (`ECONNRESET`, `ECONNREFUSED`...), or `timeout`, or `closed` for a
/// connection the peer closed before the whole echo came back.
pub fn error_name(e: &io::Error) -> String {
    use io::ErrorKind as K;
    let name = match e.kind() {
        K::ConnectionReset => "ECONNRESET",
        K::ConnectionRefused => "ECONNREFUSED",
        K::ConnectionAborted => "ECONNABORTED",
        K::BrokenPipe => "EPIPE",
        K::HostUnreachable => "EHOSTUNREACH",
        K::NetworkUnreachable => "ENETUNREACH",
        K::TimedOut | K::WouldBlock => "timeout",
        K::UnexpectedEof => "closed",
        other => return format!("{other:?}"),
    };
    name.to_owned()
}

/// Sends `message` on `stream` and reads back as many bytes, within
/// `limit`.
async fn exchange(stream: &mut TcpStream, message: &[u8], limit: Duration) -> Outcome {
    let mut back = vec![0u8; message.len()];
    let result = timeout(limit, async {
        stream.write_all(message).await.map_err(|e| Outcome::failed("sending", &e))?;
        stream.read_exact(&mut back).await.map_err(|e| Outcome::failed("reading the echo", &e))?;
        Ok::<(), Outcome>(())
    })
    .await;
    match result {
        Err(_) => Outcome::failed("waiting for the echo", &io::ErrorKind::TimedOut.into()),
        Ok(Err(failed)) => failed,
        Ok(Ok(())) => compare(message, &back),
    }
}

fn compare(sent: &[u8], back: &[u8]) -> Outcome {
    let differing: Vec<usize> =
        sent.iter().zip(back).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    match differing.first() {
        None => Outcome::Ok,
        Some(&first) => Outcome::Mismatch { len: sent.len(), differ: differing.len(), first },
    }
}

async fn connect(settings: &EchoSettings) -> Result<TcpStream, Outcome> {
    match timeout(settings.timeout, TcpStream::connect((settings.addr.as_str(), settings.port))).await {
        Err(_) => Err(Outcome::failed("connecting", &io::ErrorKind::TimedOut.into())),
        Ok(Err(e)) => Err(Outcome::failed("connecting", &e)),
        Ok(Ok(stream)) => {
            // Each message leaves at once, in one segment.
            stream.set_nodelay(true).map_err(|e| Outcome::failed("connecting", &e))?;
            Ok(stream)
        }
    }
}

/// What `echo-client` does: `settings.count` messages, one line each on
/// `out` (`message 3: ECONNRESET reading the echo: ...`), then the summary
/// line. Failed messages are counted, not returned as errors.
pub async fn run_messages(settings: &EchoSettings, out: &mut impl Write) -> io::Result<Tally> {
    writeln!(
        out,
        "echo-client: {} messages to {}:{}, timeout {}, {} apart, {}",
        settings.count,
        settings.addr,
        settings.port,
        shown(settings.timeout),
        shown(settings.interval),
        match settings.connect {
            Connect::Once => "one connection",
            Connect::Each => "a connection each",
        }
    )?;
    tokio::time::sleep(settings.start_delay).await;
    let mut tally = Tally::default();
    let mut open: Option<TcpStream> = None;
    for n in 1..=settings.count {
        let start = Instant::now();
        let outcome = match open.take() {
            Some(stream) => Ok(stream),
            None => connect(settings).await,
        };
        let outcome = match outcome {
            Err(failed) => failed,
            Ok(mut stream) => {
                let outcome = exchange(&mut stream, &settings.message(n), settings.timeout).await;
                // A connection that failed, or whose echo is late (the rest
                // could still come), is not used again.
                let usable = matches!(outcome, Outcome::Ok | Outcome::Mismatch { .. });
                if usable && settings.connect == Connect::Once {
                    open = Some(stream);
                }
                outcome
            }
        };
        match outcome {
            Outcome::Ok => tally.ok(),
            ref other => tally.failed(other.kind()),
        }
        writeln!(out, "message {n}: {}", Line(&outcome, start.elapsed()))?;
        out.flush()?;
        if n < settings.count {
            tokio::time::sleep(settings.interval).await;
        }
    }
    writeln!(out, "{}", tally.summary("messages"))?;
    out.flush()?;
    Ok(tally)
}
