//! Real traffic between containers: numbered UDP datagrams, TCP sockets.

use std::{
    collections::BTreeSet,
    io::{self, ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};

use crate::{Container, in_netns};

/// Receive buffer of every UDP receiver: far more than a test sends, so the
/// receiver never loses a datagram the tool let through.
const RCVBUF: usize = 16 << 20;
/// A receiver that got nothing for this long has got everything: between
/// namespaces on one machine a datagram arrives in microseconds.
const QUIET: Duration = Duration::from_millis(300);
/// The longest a ping or its answer may take: far above any delay a test
/// configures.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends are paced: a short pause after every `BURST` datagrams.
const BURST: u32 = 50;
const PAUSE: Duration = Duration::from_millis(1);
/// Bytes per datagram: a sequence number and a pattern derived from it.
pub const PAYLOAD_LEN: usize = 64;

/// The payload of datagram `seq`: its number (big endian), then bytes that
/// differ from datagram to datagram.
pub fn payload(seq: u32) -> Vec<u8> {
    let mut p = seq.to_be_bytes().to_vec();
    p.extend((4..PAYLOAD_LEN).map(|i| (seq as usize * 7 + i) as u8));
    p
}

/// The sequence number at the start of a payload.
pub fn seq_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("a payload starts with its sequence number"))
}

/// A UDP sender in one container and a receiver in another.
pub struct UdpFlow {
    pub tx: UdpSocket,
    pub rx: UdpSocket,
    pub dst: SocketAddr,
}

/// What one [`UdpFlow::exchange`] sent and what arrived, in order.
pub struct Exchange {
    pub sent: Vec<Vec<u8>>,
    pub received: Vec<Vec<u8>>,
}

impl Exchange {
    pub fn sent(&self) -> usize {
        self.sent.len()
    }

    pub fn received(&self) -> usize {
        self.received.len()
    }

    pub fn lost(&self) -> usize {
        self.sent() - self.received()
    }

    /// The sequence numbers that did not arrive.
    pub fn lost_seqs(&self) -> BTreeSet<u32> {
        let got: BTreeSet<u32> = self.received.iter().map(|d| seq_of(d)).collect();
        self.sent.iter().map(|d| seq_of(d)).filter(|s| !got.contains(s)).collect()
    }
}

impl UdpFlow {
    /// From `from` (source port `src_port`, 0 for any) to `to:dst_port`,
    /// over IPv6 if `v6`.
    pub fn new(from: &Container, src_port: u16, to: &Container, dst_port: u16, v6: bool) -> Self {
        Self::between(&from.ns, from.addr(v6, src_port), &to.ns, to.addr(v6, dst_port))
    }

    /// From `src` in namespace `src_ns` to `dst` in namespace `dst_ns`.
    pub fn between(src_ns: &str, src: SocketAddr, dst_ns: &str, dst: SocketAddr) -> Self {
        let rx = in_netns(dst_ns, || bind_udp(dst));
        let tx = in_netns(src_ns, || bind_udp(src));
        Self { tx, rx, dst }
    }

    /// The same two sockets the other way round: the receiver answers from
    /// the port it listens on.
    pub fn reversed(&self) -> Self {
        let dup = |s: &UdpSocket| s.try_clone().expect("duplicating a socket");
        let dst = self.tx.local_addr().expect("the sender's address");
        Self { tx: dup(&self.rx), rx: dup(&self.tx), dst }
    }

    /// Sends datagrams `0..n` and collects what arrives.
    pub fn exchange(&self, n: u32) -> Exchange {
        let sent: Vec<Vec<u8>> = (0..n).map(payload).collect();
        for (i, p) in sent.iter().enumerate() {
            self.send(p);
            if (i as u32 + 1).is_multiple_of(BURST) {
                std::thread::sleep(PAUSE);
            }
        }
        Exchange { sent, received: self.receive(QUIET) }
    }

    /// Round-trip times of `n` pings, one at a time: a datagram to the
    /// receiver, which sends it straight back from its socket. Panics if a
    /// ping or its answer is lost (delay tests lose nothing).
    pub fn ping(&self, n: u32) -> Vec<Duration> {
        let back = self.reversed();
        (0..n)
            .map(|seq| {
                let p = payload(seq);
                let start = Instant::now();
                self.send(&p);
                let got = self.receive_one(PING_TIMEOUT).unwrap_or_else(|| panic!("ping {seq} was lost"));
                back.send(&got);
                let answer =
                    back.receive_one(PING_TIMEOUT).unwrap_or_else(|| panic!("the answer to ping {seq} was lost"));
                let rtt = start.elapsed();
                assert_eq!(seq_of(&answer), seq, "answers came back out of order");
                rtt
            })
            .collect()
    }

    pub fn send(&self, payload: &[u8]) {
        self.tx.send_to(payload, self.dst).unwrap_or_else(|e| panic!("sending to {}: {e}", self.dst));
    }

    /// Every datagram that arrives until none has for `quiet`.
    pub fn receive(&self, quiet: Duration) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.receive_one(quiet)).collect()
    }

    /// The next datagram, if one arrives within `timeout`.
    pub fn receive_one(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            self.rx.set_read_timeout(Some(left)).expect("setting a read timeout");
            match self.rx.recv(&mut buf) {
                Ok(n) => return Some(buf[..n].to_vec()),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return None,
                // A receive with a timeout is not restarted after a signal.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("receiving on {}: {e}", self.dst),
            }
        }
    }
}

/// A UDP socket bound to `addr`, in the calling thread's namespace, with a
/// receive buffer large enough for a whole test.
pub fn bind_udp(addr: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    setsockopt(&sock, RcvBufForce, &RCVBUF).unwrap_or_else(|e| panic!("SO_RCVBUFFORCE on {addr}: {e}"));
    sock
}

/// A TCP listener on `port` of `c`.
pub fn tcp_listener(c: &Container, v6: bool, port: u16) -> TcpListener {
    let addr = c.addr(v6, port);
    c.run(|| TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}")))
}

/// Connects from `from` to `to`, giving up after `timeout`.
pub fn tcp_connect(from: &Container, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    from.run(|| TcpStream::connect_timeout(&to, timeout))
}

/// Echoes whatever each connection sends, on its own thread.
pub fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// Sends `msg` and waits up to `wait` for its echo: whether it came.
pub fn echoes(conn: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    conn.write_all(msg).expect("sending on the connection");
    conn.set_read_timeout(Some(wait)).expect("setting a read timeout");
    let mut buf = vec![0u8; msg.len()];
    match conn.read_exact(&mut buf) {
        Ok(()) => {
            assert_eq!(buf, msg, "the echo is not what was sent");
            true
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("the connection failed: {e}"),
    }
}
