//! The greeter's server and client in-process, over loopback.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic with its message is the failure report, as in aya's tests"
)]

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use example_support::Env;
use grpc_hello::{ClientSettings, Greeter, code_name, run_calls, say_hello, serve};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::Code;

/// A server on a free loopback port; it stops when the sender is dropped
/// or fired.
async fn server() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, false, async {
            let _ = stopped.await;
        })
        .await
        .expect("serving");
    });
    (addr, stop, task)
}

fn settings(addr: SocketAddr, count: u32) -> ClientSettings {
    ClientSettings {
        addr: addr.ip().to_string(),
        port: addr.port(),
        name: "tester".to_owned(),
        count,
        interval: Duration::ZERO,
        deadline: Duration::from_secs(5),
        start_delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_call_gets_its_greeting() {
    let (addr, _stop, _task) = server().await;
    let mut greeter = Greeter::new(&addr.ip().to_string(), addr.port(), Duration::from_secs(5)).expect("a client");
    let result = greeter.call("Ada").await;
    assert_eq!(result.code, Code::Ok, "{result}");
    assert_eq!(result.detail, "Hello Ada");
    assert!(result.to_string().starts_with("OK "), "{result}");
}

#[tokio::test]
async fn say_hello_makes_one_call() {
    let (addr, _stop, _task) = server().await;
    let result = say_hello("127.0.0.1", addr.port(), "Grace", Duration::from_secs(5)).await.expect("a valid address");
    assert!(result.is_ok(), "{result}");
    assert_eq!(result.detail, "Hello Grace");
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
        l.local_addr().expect("its address").port()
    };
    let mut greeter = Greeter::new("127.0.0.1", port, Duration::from_secs(5)).expect("a client");
    let result = greeter.call("Ada").await;
    assert_eq!(result.code, Code::Unavailable, "{result}");
    assert!(result.latency < Duration::from_secs(5), "{result}");
}

#[tokio::test]
async fn a_server_that_never_answers_exceeds_the_deadline() {
    // Accepts the connection and reads nothing: the call hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("binding a loopback port");
    let addr = silent.local_addr().expect("its address");
    let _accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let deadline = Duration::from_millis(300);
    let mut greeter = Greeter::new("127.0.0.1", addr.port(), deadline).expect("a client");
    let result = greeter.call("Ada").await;
    assert_eq!(result.code, Code::DeadlineExceeded, "{result}");
    assert!(result.latency >= deadline && result.latency < deadline * 3, "{result}");
    assert!(result.to_string().starts_with("DEADLINE_EXCEEDED "), "{result}");
}

#[tokio::test]
async fn the_report_has_a_line_per_call_and_a_summary() {
    let (addr, _stop, _task) = server().await;
    let mut out = Vec::new();
    let tally = run_calls(&settings(addr, 3), &mut out).await.expect("running the calls");
    assert_eq!((tally.oks(), tally.failures()), (3, 0));
    let text = String::from_utf8(out).expect("UTF-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("greeter-client: 3 calls to 127.0.0.1:"), "{text}");
    for (i, line) in lines[1..4].iter().enumerate() {
        assert!(line.starts_with(&format!("call {}: OK ", i + 1)), "{text}");
        assert!(line.ends_with(": Hello tester"), "{text}");
    }
    assert_eq!(lines[4], "summary: 3 calls: 3 ok, 0 failed");
}

#[tokio::test]
async fn failed_calls_are_counted_not_returned() {
    let (addr, stop, task) = server().await;
    let _ = stop.send(());
    task.await.expect("the server stopped");
    let mut out = Vec::new();
    let tally = run_calls(&settings(addr, 2), &mut out).await.expect("running the calls");
    assert_eq!((tally.oks(), tally.failures()), (0, 2));
    let text = String::from_utf8(out).expect("UTF-8");
    assert!(text.contains("call 2: UNAVAILABLE "), "{text}");
    assert!(text.ends_with("summary: 2 calls: 0 ok, 2 failed (UNAVAILABLE 2)\n"), "{text}");
}

#[test]
fn status_codes_have_their_canonical_names() {
    assert_eq!(code_name(Code::Ok), "OK");
    assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
    assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
    assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
}

fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Env::new(move |name: &str| map.get(name).cloned())
}

#[test]
fn settings_come_from_the_environment_with_defaults() {
    let s = ClientSettings::from_env(&env(&[("ADDR", "198.19.50.10")])).expect("valid settings");
    assert_eq!(
        s,
        ClientSettings {
            addr: "198.19.50.10".to_owned(),
            port: 50051,
            name: "gRPC Dev".to_owned(),
            count: 10,
            interval: Duration::from_secs(1),
            deadline: Duration::from_secs(1),
            start_delay: Duration::ZERO,
        }
    );
    let s = ClientSettings::from_env(&env(&[
        ("ADDR", "fd00::10"),
        ("PORT", "7000"),
        ("NAME", "Ada"),
        ("COUNT", "3"),
        ("INTERVAL", "0"),
        ("DEADLINE", "250ms"),
        ("START_DELAY", "2s"),
    ]))
    .expect("valid settings");
    assert_eq!((s.port, s.name.as_str(), s.count), (7000, "Ada", 3));
    assert_eq!(
        (s.interval, s.deadline, s.start_delay),
        (Duration::ZERO, Duration::from_millis(250), Duration::from_secs(2))
    );
}

#[test]
fn bad_settings_are_refused() {
    let error = |vars: &[(&str, &str)]| ClientSettings::from_env(&env(vars)).expect_err("refused").to_string();
    assert!(error(&[]).starts_with("ADDR is not set"));
    assert!(error(&[("ADDR", "x"), ("PORT", "http")]).starts_with("PORT=\"http\""));
    assert!(error(&[("ADDR", "x"), ("DEADLINE", "0")]).starts_with("DEADLINE=\"0\""));
    assert!(error(&[("ADDR", "x"), ("COUNT", "-1")]).starts_with("COUNT=\"-1\""));
}

#[tokio::test]
async fn an_address_that_makes_no_uri_is_refused() {
    assert!(Greeter::new("a b", 1, Duration::from_secs(1)).is_err());
    assert!(Greeter::new("fd00::10", 50051, Duration::from_secs(1)).is_ok());
}
