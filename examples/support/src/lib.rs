//! What the example programs (the gRPC greeter and the TCP echo pair) share:
//! settings read from the environment the way docker-compose passes them,
//! stopping cleanly on SIGTERM (in a `FROM scratch` image the program is
//! PID 1, and PID 1 ignores a SIGTERM it has no handler for, so `docker
//! stop` would wait ten seconds and kill it), and the summary line of the
//! clients.

mod tally;

use std::{future::Future, str::FromStr, time::Duration};

pub use tally::Tally;
use tokio::signal::unix::{SignalKind, signal};

/// The exit status of a program whose settings are wrong: nothing was tried.
pub const EXIT_SETUP: u8 = 2;

/// A setting that is missing or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("{name} is not set: {hint}")]
    Missing { name: &'static str, hint: &'static str },
    #[error("{name}={value:?}: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
}

/// Where settings come from: the process environment, or a table in tests.
/// A variable set to the empty string counts as unset, as compose's
/// `${VAR:-}` leaves it.
pub struct Env<F> {
    lookup: F,
}

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env::new(|name: &str| std::env::var(name).ok())
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// A variable that must be set; `hint` says what to set it to.
    pub fn required(&self, name: &'static str, hint: &'static str) -> Result<String, SettingError> {
        self.get(name).map(|v| v.trim().to_owned()).ok_or(SettingError::Missing { name, hint })
    }

    /// A variable read with `parse`, or `default` when it is unset.
    pub fn parsed<T>(
        &self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, SettingError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse(value.trim()).map_err(|reason| SettingError::Invalid { name, value, reason }),
        }
    }

    /// A number (a count, a port), or `default` when unset.
    pub fn number<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, SettingError> {
        self.parsed(name, default, |s| s.parse().map_err(|_| "not a number in range".to_owned()))
    }

    /// A duration such as `500ms` or `2s`, or `default` when unset.
    pub fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, SettingError> {
        self.parsed(name, default, parse_duration)
    }
}

/// A duration with a unit, as pygocentrus reads them: `250us`, `500ms`,
/// `2s`, `1.5s`, `1m`; `0` alone is zero. Another bare number is refused,
/// since some read it as seconds and tc as microseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or("needs a unit: 250us, 500ms, 2s, 1m")?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| "not a duration (write 250us, 500ms, 2s, 1m)")?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        other => return Err(format!("unknown unit '{other}' (use us, ms, s or m)")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| "not a valid duration".to_owned())
}

/// Resolves with the name of the first SIGINT or SIGTERM to arrive. The
/// handlers are installed before this returns, so a signal that comes
/// before the future is polled still counts.
pub fn stop_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// A setting's duration as it would be written: `500ms`, `2s`, `0`.
pub fn shown(d: Duration) -> String {
    if d.is_zero() { "0".to_owned() } else { format!("{d:?}") }
}

/// Milliseconds with one decimal, for latencies: `12.3 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Env::new(move |name: &str| map.get(name).cloned())
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn unset_and_empty_variables_take_the_default() {
        let e = env(&[("COUNT", ""), ("PORT", "7000")]);
        assert_eq!(e.number("COUNT", 10u32).ok(), Some(10));
        assert_eq!(e.number("PORT", 1u16).ok(), Some(7000));
        assert_eq!(e.duration("INTERVAL", Duration::from_secs(1)).ok(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = env(&[("PORT", "70000"), ("DEADLINE", "1")]);
        let port = e.number("PORT", 1u16).map_err(|e| e.to_string());
        assert_eq!(port, Err("PORT=\"70000\": not a number in range".to_owned()));
        let deadline = e.duration("DEADLINE", Duration::ZERO).map_err(|e| e.to_string());
        assert_eq!(deadline, Err("DEADLINE=\"1\": needs a unit: 250us, 500ms, 2s, 1m".to_owned()));
        let addr = e.required("ADDR", "the server's address").map_err(|e| e.to_string());
        assert_eq!(addr, Err("ADDR is not set: the server's address".to_owned()));
    }
}
