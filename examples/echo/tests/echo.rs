//! The echo server and client in-process, over loopback, against the real
//! server and against servers that misbehave on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report, as in aya's tests"
)]

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use echo_example::{Connect, EchoSettings, run_messages, serve};
use example_support::Env;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
    let addr = l.local_addr().expect("its address");
    (l, addr)
}

fn settings(addr: SocketAddr, count: u32, connect: Connect) -> EchoSettings {
    EchoSettings {
        addr: addr.ip().to_string(),
        port: addr.port(),
        id: "7".to_owned(),
        count,
        interval: Duration::ZERO,
        timeout: Duration::from_secs(5),
        connect,
        start_delay: Duration::ZERO,
    }
}

/// Runs the client; returns each message's outcome kind and the summary.
async fn client(settings: &EchoSettings) -> (Vec<String>, String) {
    let mut out = Vec::new();
    run_messages(settings, &mut out).await.expect("running the client");
    let text = String::from_utf8(out).expect("UTF-8");
    let kinds = text
        .lines()
        .filter(|l| l.starts_with("message "))
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_owned())
        .collect();
    let summary = text.lines().last().unwrap_or_default().to_owned();
    (kinds, summary)
}

/// A server that hands each accepted connection to `handle`, counting them.
async fn server_with<F, Fut>(handle: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (l, addr) = listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handle(stream));
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn echoes_come_back_whole() {
    let (l, addr) = listener().await;
    tokio::spawn(serve(l, false, std::future::pending()));
    let (kinds, summary) = client(&settings(addr, 3, Connect::Once)).await;
    assert_eq!(kinds, ["ok", "ok", "ok"]);
    assert_eq!(summary, "summary: 3 messages: 3 ok, 0 failed");
}

#[tokio::test]
async fn the_server_stops_when_told() {
    let (l, _) = listener().await;
    tokio::time::timeout(Duration::from_secs(5), serve(l, false, async {}))
        .await
        .expect("serve returned")
        .expect("without an error");
}

#[tokio::test]
async fn a_damaged_echo_is_a_mismatch() {
    let (addr, _) = server_with(|mut s: TcpStream| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            buf[n / 2] ^= 0x20;
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut out = Vec::new();
    run_messages(&settings(addr, 2, Connect::Once), &mut out).await.expect("running the client");
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.contains("message 1: mismatch "), "{text}");
    assert!(text.contains("1 of 32 bytes differ, the first at byte 16"), "{text}");
    assert!(text.ends_with("summary: 2 messages: 0 ok, 2 failed (mismatch 2)\n"), "{text}");
}

#[tokio::test]
async fn a_connection_reset_is_econnreset() {
    // Reads the message, then closes with SO_LINGER 0: a reset.
    let (addr, _) = server_with(|mut s: TcpStream| async move {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        let _ = s.set_zero_linger();
    })
    .await;
    let (kinds, summary) = client(&settings(addr, 2, Connect::Once)).await;
    assert_eq!(kinds, ["ECONNRESET", "ECONNRESET"], "{summary}");
}

#[tokio::test]
async fn a_closed_port_is_econnrefused() {
    let addr = listener().await.1;
    let (kinds, summary) = client(&settings(addr, 1, Connect::Once)).await;
    assert_eq!(kinds, ["ECONNREFUSED"]);
    assert_eq!(summary, "summary: 1 messages: 0 ok, 1 failed (ECONNREFUSED 1)");
}

#[tokio::test]
async fn a_silent_server_is_a_timeout() {
    let (addr, _) = server_with(|s: TcpStream| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(s);
    })
    .await;
    let mut s = settings(addr, 1, Connect::Once);
    s.timeout = Duration::from_millis(200);
    let (kinds, _) = client(&s).await;
    assert_eq!(kinds, ["timeout"]);
}

#[tokio::test]
async fn once_keeps_one_connection_and_each_opens_one_per_message() {
    for (connect, expected) in [(Connect::Once, 1), (Connect::Each, 4)] {
        let (l, addr) = listener().await;
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        // The real echo loop, behind a counting accept.
        let (inner, inner_addr) = listener().await;
        tokio::spawn(serve(inner, false, std::future::pending()));
        tokio::spawn(async move {
            while let Ok((mut outer, _)) = l.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut to_server) = TcpStream::connect(inner_addr).await {
                        let _ = tokio::io::copy_bidirectional(&mut outer, &mut to_server).await;
                    }
                });
            }
        });
        let (kinds, _) = client(&settings(addr, 4, connect)).await;
        assert_eq!(kinds, ["ok"; 4]);
        assert_eq!(accepted.load(Ordering::SeqCst), expected, "{connect:?}");
    }
}

fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Env::new(move |name: &str| map.get(name).cloned())
}

#[test]
fn settings_come_from_the_environment_with_defaults() {
    let s = EchoSettings::from_env(&env(&[("ADDR", "198.19.51.10")])).expect("valid settings");
    assert_eq!((s.port, s.count, s.connect, s.id.as_str()), (12345, 10, Connect::Once, "1"));
    assert_eq!((s.interval, s.timeout), (Duration::from_secs(1), Duration::from_secs(1)));
    assert_eq!(s.message(3), b"[CLIENT 1] Message number 3 sent");
    let s = EchoSettings::from_env(&env(&[("ADDR", "x"), ("CONNECT", "each"), ("TIMEOUT", "300ms")]))
        .expect("valid settings");
    assert_eq!((s.connect, s.timeout), (Connect::Each, Duration::from_millis(300)));
    let refused = |vars: &[(&str, &str)]| EchoSettings::from_env(&env(vars)).expect_err("refused").to_string();
    assert!(refused(&[]).starts_with("ADDR is not set"));
    assert!(refused(&[("ADDR", "x"), ("CONNECT", "always")]).starts_with("CONNECT=\"always\""));
    assert!(refused(&[("ADDR", "x"), ("TIMEOUT", "0")]).starts_with("TIMEOUT=\"0\""));
}
