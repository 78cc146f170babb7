//! The demo's traffic, from A to B: numbered UDP datagrams to a sink, and
//! TCP connections to an echo server.

use std::{
    fmt, io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream, UdpSocket},
    task::AbortHandle,
};

use super::{
    lab::{ADDR_A, ADDR_B, Lab},
    netns::Netns,
};

pub const UDP_PORT: u16 = 5000;
pub const TCP_PORT: u16 = 7000;
/// The receiver stops after this long without a datagram.
const QUIET: Duration = Duration::from_millis(300);
/// Datagrams sent between two yields to the receiving task.
const BURST: u32 = 32;
/// A connection plus one echo, on a local bridge: far longer than needed.
const TCP_TIMEOUT: Duration = Duration::from_secs(1);
/// A fresh lab passes traffic within about a second (see [`wait_reachable`]).
const READY_WITHIN: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Datagram `seq`: readable text ending with the sum of its bytes, so that
/// any one changed byte shows (see [`intact`]).
pub fn datagram(seq: u32) -> Vec<u8> {
    let body = format!("datagram {seq:06}: the quick brown fox jumps over the lazy dog");
    let sum: u32 = body.bytes().map(u32::from).sum();
    format!("{body} #{sum:04x}").into_bytes()
}

/// Whether `d` is exactly a datagram we send. A change to the number makes
/// the sum wrong; any other change makes the text differ.
pub fn intact(d: &[u8]) -> bool {
    seq_of(d).is_some_and(|seq| datagram(seq) == d)
}

fn seq_of(d: &[u8]) -> Option<u32> {
    std::str::from_utf8(d.get(9..15)?).ok()?.parse().ok()
}

/// What B received of the datagrams A sent.
#[derive(Debug, Default)]
pub struct UdpRun {
    pub sent: u64,
    pub received: u64,
    /// Received, but not as sent.
    pub damaged: u64,
    /// A damaged datagram and the one sent, when its number survived.
    pub sample: Option<(Vec<u8>, Vec<u8>)>,
}

impl UdpRun {
    fn record(&mut self, d: &[u8]) {
        self.received += 1;
        if intact(d) {
            return;
        }
        self.damaged += 1;
        // A changed number would pair it with the wrong original.
        if self.sample.is_none()
            && let Some(sent) = seq_of(d).map(datagram)
            && sent.len() == d.len()
            && sent.iter().zip(d).filter(|(a, b)| a != b).count() == 1
        {
            self.sample = Some((sent, d.to_vec()));
        }
    }

    pub fn lost(&self) -> u64 {
        self.sent - self.received
    }
}

/// Sends `count` datagrams from A to B's sink and counts what arrives.
pub async fn udp(lab: &Lab, count: u32) -> Result<UdpRun> {
    let to = SocketAddr::from((ADDR_B, UDP_PORT));
    let rx = udp_socket(&lab.b, to).context("binding B's UDP sink")?;
    let tx = udp_socket(&lab.a, (ADDR_A, 0).into()).context("binding A's UDP socket")?;
    let send = async {
        for seq in 0..count {
            tx.send_to(&datagram(seq), to).await?;
            if seq % BURST == BURST - 1 {
                // Let the receiver drain its socket: no losses of our own.
                tokio::task::yield_now().await;
            }
        }
        io::Result::Ok(())
    };
    let receive = async {
        let mut run = UdpRun { sent: u64::from(count), ..UdpRun::default() };
        let mut buf = [0u8; 2048];
        while run.received < run.sent {
            match tokio::time::timeout(QUIET, rx.recv(&mut buf)).await {
                Ok(n) => run.record(&buf[..n?]),
                Err(_) => break,
            }
        }
        io::Result::Ok(run)
    };
    let (sent, run) = futures::join!(send, receive);
    sent.context("sending datagrams from A")?;
    run.context("receiving datagrams on B")
}

fn udp_socket(ns: &Netns, addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = ns.run(|| std::net::UdpSocket::bind(addr))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A server of B's, run as a task; stops when dropped.
pub struct Server(AbortHandle);

impl Server {
    /// Listens on B's `port` and runs `serve` on that listener as a task;
    /// `what` names it in errors.
    pub fn start<F>(lab: &Lab, port: u16, what: &str, serve: impl FnOnce(TcpListener) -> F) -> Result<Self>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = lab
            .b
            .run(|| {
                let l = std::net::TcpListener::bind((ADDR_B, port))?;
                l.set_nonblocking(true)?;
                TcpListener::from_std(l)
            })
            .with_context(|| format!("starting B's {what}"))?;
        Ok(Self(tokio::spawn(serve(listener)).abort_handle()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// B's TCP echo server.
pub fn echo_server(lab: &Lab) -> Result<Server> {
    Server::start(lab, TCP_PORT, "TCP echo server", |listener| async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_back(stream));
        }
    })
}

async fn echo_back(stream: TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match read_some(&stream, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if write_all(&stream, &buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How one TCP exchange from A ended.
#[derive(Debug)]
pub enum TcpOutcome {
    /// The echo came back intact.
    Echoed,
    Refused,
    Reset,
    TimedOut,
    Failed(io::Error),
}

impl TcpOutcome {
    /// Runs `exchange` with a timeout: how it ended, and after how long.
    pub async fn of(exchange: impl Future<Output = io::Result<()>>) -> (Self, Duration) {
        let start = Instant::now();
        let outcome = match tokio::time::timeout(TCP_TIMEOUT, exchange).await {
            Ok(Ok(())) => Self::Echoed,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Self::Refused,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset => Self::Reset,
            Ok(Err(e)) => Self::Failed(e),
            Err(_) => Self::TimedOut,
        };
        (outcome, start.elapsed())
    }
}

impl TcpOutcome {
    /// One word, for a table.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Echoed => "echoed",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::TimedOut => "timeout",
            Self::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for TcpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Echoed => f.write_str("echoed"),
            Self::Refused => f.write_str("refused (ECONNREFUSED)"),
            Self::Reset => f.write_str("reset (ECONNRESET)"),
            Self::TimedOut => write!(f, "no answer within {}s", TCP_TIMEOUT.as_secs()),
            Self::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// A new connection from A to B's echo server.
pub async fn connect(lab: &Lab) -> io::Result<TcpStream> {
    let socket = lab.a.run(TcpSocket::new_v4)?;
    socket.connect((ADDR_B, TCP_PORT).into()).await
}

/// Sends `msg` and waits for it to come back unchanged.
pub async fn echo(stream: &TcpStream, msg: &[u8]) -> io::Result<()> {
    write_all(stream, msg).await?;
    let mut back = vec![0u8; msg.len()];
    let mut got = 0;
    while got < back.len() {
        match read_some(stream, &mut back[got..]).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    if back == msg { Ok(()) } else { Err(io::Error::other("the echo came back altered")) }
}

/// Waits until A gets an echo from B. A new interface drops what it is
/// given until the kernel's link watch has processed its carrier (that can
/// take up to a second); a lost SYN would only be sent again a second later.
pub async fn wait_reachable(lab: &Lab) -> Result<()> {
    let start = Instant::now();
    loop {
        let probe = tokio::time::timeout(PROBE_TIMEOUT, async { echo(&connect(lab).await?, b"ready?\n").await });
        let error = match probe.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => io::ErrorKind::TimedOut.into(),
        };
        if start.elapsed() > READY_WITHIN {
            return Err(error).context(format!("A still cannot reach B after {}s", READY_WITHIN.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `tries` connections from A, one echo each.
pub async fn round_trips(lab: &Lab, tries: u32) -> Vec<(TcpOutcome, Duration)> {
    let mut outcomes = Vec::new();
    for i in 0..tries {
        let msg = format!("ping {i}\n");
        outcomes.push(TcpOutcome::of(async { echo(&connect(lab).await?, msg.as_bytes()).await }).await);
    }
    outcomes
}

// tokio is built without `io-util`: readiness plus try_read/try_write.

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_one_changed_byte_shows() {
        let d = datagram(42);
        assert!(intact(&d));
        assert_eq!(seq_of(&d), Some(42));
        for at in 0..d.len() {
            for mask in [0x01, 0x02, 0x10, 0x20, 0x80, 0xff] {
                let mut bad = d.clone();
                bad[at] ^= mask;
                assert!(!intact(&bad), "byte {at} ^ {mask:#x} went unnoticed");
            }
        }
    }
}
