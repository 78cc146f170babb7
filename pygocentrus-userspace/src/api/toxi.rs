//! Toxiproxy's model (proxies and their toxics, as its HTTP API shows them)
//! and how it maps onto rules. A "proxy" here is a target: nothing listens
//! and no traffic is moved, so `listen` is reported as the upstream address
//! itself; toxics become the faults of a rule on that address and port.
//!
//! `upstream` toxics act on what the client sends (packets to the
//! target), `downstream` ones on what the server answers (from the target).
//!
//! Toxics that act on connections use the kernel's per-connection state:
//! a `toxicity` below 1 chooses connections by flow hash (`--per-connection`,
//! all or none of a connection's packets), `limit_data` resets a connection
//! after N payload bytes in the toxic's direction (`--reset-after`),
//! `timeout` > 0 blackholes the connection and resets each end at its first
//! packet after the timeout (`--unplug-after 0b --reset-after T`), and
//! `reset_peer` with a timeout resets after T (`--reset-after T`), and
//! `slow_close` holds back the stream's FIN by its delay (`--fin-delay`).
//! A toxicity below 1 on those applies them to that share of connections
//! (`--limit-pct`, `--rate-pct`, `--fin-delay-pct`).

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rules::{
    Delay, Direction, Distribution, Proto, RuleFaults, RuleSpec,
    units::{FlowLimit, Percent, Rate, parse_percent},
};

/// A request the API refuses: its HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: 404, message: message.into() }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self { status: 409, message: message.into() }
    }
}

/// The longest name of a proxy, toxic or rule the API creates, in bytes:
/// Toxiproxy's clients never need more than a few dozen, and a name must
/// fit in the URLs that read and delete it.
pub const MAX_NAME: usize = 256;

/// Refuses a `what` name (`proxy`, `toxic`, `rule`) longer than
/// [`MAX_NAME`].
pub fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.len() > MAX_NAME {
        return Err(ApiError::bad(format!("a {what} name is at most {MAX_NAME} bytes; this one is {}", name.len())));
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize)]
pub struct Proxy {
    pub name: String,
    pub listen: String,
    pub upstream: String,
    pub enabled: bool,
    pub toxics: Vec<Toxic>,
    #[serde(skip)]
    pub target: SocketAddr,
}

#[derive(Clone, Debug, Serialize)]
pub struct Toxic {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub stream: String,
    pub toxicity: f64,
    pub attributes: Map<String, Value>,
}

/// The body of `POST /proxies`, `POST /populate` (a list of these) and
/// `POST /proxies/{name}`. Unknown fields are ignored, as Toxiproxy does.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProxyInput {
    pub name: Option<String>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub enabled: Option<bool>,
}

/// The body of `POST /proxies/{name}/toxics` and of a toxic's update.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ToxicInput {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stream: Option<String>,
    pub toxicity: Option<f64>,
    pub attributes: Option<Map<String, Value>>,
}

impl Toxic {
    /// A new toxic from its body, checked: Toxiproxy's defaults (stream
    /// downstream, toxicity 1, name `TYPE_STREAM`).
    pub fn new(input: ToxicInput) -> Result<Self, ApiError> {
        let kind = input.kind.ok_or_else(|| ApiError::bad("missing toxic type"))?;
        let stream = input.stream.unwrap_or_else(|| "downstream".to_owned());
        let toxic = Self {
            name: input.name.unwrap_or_else(|| format!("{kind}_{stream}")),
            kind,
            stream,
            toxicity: input.toxicity.unwrap_or(1.0),
            attributes: input.attributes.unwrap_or_default(),
        };
        toxic.check()?;
        Ok(toxic)
    }

    /// Applies an update: given fields replace, attributes are merged.
    pub fn update(&self, input: ToxicInput) -> Result<Self, ApiError> {
        let mut t = self.clone();
        if let Some(kind) = input.kind.filter(|k| *k != t.kind) {
            return Err(ApiError::bad(format!("a toxic's type cannot change ({} to {kind})", t.kind)));
        }
        if let Some(stream) = input.stream {
            t.stream = stream;
        }
        if let Some(toxicity) = input.toxicity {
            t.toxicity = toxicity;
        }
        for (k, v) in input.attributes.unwrap_or_default() {
            t.attributes.insert(k, v);
        }
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<(), ApiError> {
        if self.name.is_empty() {
            return Err(ApiError::bad("a toxic's name cannot be empty"));
        }
        check_name("toxic", &self.name)?;
        self.direction()?;
        let mut f = RuleFaults::default();
        self.apply(&mut f)
    }

    /// `upstream` (client to server: to the target) or `downstream`.
    fn direction(&self) -> Result<Direction, ApiError> {
        match self.stream.as_str() {
            "upstream" => Ok(Direction::To),
            "downstream" => Ok(Direction::From),
            other => Err(ApiError::bad(format!("stream must be upstream or downstream, not '{other}'"))),
        }
    }

    /// An attribute in milliseconds or bytes: a whole number ≥ 0 (absent: 0).
    fn attr(&self, key: &str) -> Result<u64, ApiError> {
        match self.attributes.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                ApiError::bad(format!("{} attribute '{key}' must be a whole number ≥ 0, not {v}", self.kind))
            }),
        }
    }

    /// An attribute in milliseconds, at most what the kernel counts
    /// ([`crate::rules::units::MAX_DURATION`]).
    fn millis(&self, key: &str) -> Result<Duration, ApiError> {
        let ms = self.attr(key)?;
        ms.checked_mul(1_000_000).map(Duration::from_nanos).ok_or_else(|| {
            ApiError::bad(format!(
                "{} attribute '{key}' is too long: {ms} ms (at most {} ms, about 584 years)",
                self.kind,
                u64::MAX / 1_000_000
            ))
        })
    }

    /// Adds this toxic's faults to `f` (the faults of its direction).
    ///
    /// A `toxicity` below 1 turns the rule's sampling per connection: each
    /// percentage is then decided once per connection, and the toxics of
    /// the same stream that have a toxicity of 1 keep 100%, which per
    /// connection is still every connection.
    fn apply(&self, f: &mut RuleFaults) -> Result<(), ApiError> {
        if !(0.0..=1.0).contains(&self.toxicity) {
            return Err(ApiError::bad(format!("toxicity must be between 0 and 1, not {}", self.toxicity)));
        }
        if self.toxicity == 0.0 {
            // Toxiproxy: a toxicity of 0 never applies the toxic.
            self.check_attributes()?;
            return Ok(());
        }
        let sampled = self.toxicity < 1.0;
        let share = pct(self.toxicity * 100.0)?;
        if sampled {
            f.per_connection = true;
        }
        match self.kind.as_str() {
            "latency" => {
                let (mean, jitter) = (self.millis("latency")?, self.millis("jitter")?);
                if mean.is_zero() && jitter.is_zero() {
                    return Ok(());
                }
                let d = f.delay.get_or_insert(Delay {
                    mean: Duration::ZERO,
                    jitter: Duration::ZERO,
                    distribution: Distribution::Uniform,
                    share: None,
                    keep_order: false,
                });
                // Past the kernel's limit, the rule is refused as any other.
                d.mean = d.mean.saturating_add(mean);
                d.jitter = d.jitter.saturating_add(jitter);
                if sampled {
                    d.share = Some(share);
                }
                // A stream keeps its order through Toxiproxy's latency.
                d.keep_order = !d.jitter.is_zero();
            }
            "bandwidth" => {
                // KB/s, as Toxiproxy counts (1 KB = 1000 bytes); 0 = no limit.
                let rate = self.attr("rate")?;
                if rate == 0 {
                    return Ok(());
                }
                let bytes = rate.checked_mul(1000).ok_or_else(|| ApiError::bad("bandwidth rate is too large"))?;
                f.rate = Some(Rate(f.rate.map_or(bytes, |r| r.0.min(bytes))));
                if sampled {
                    self.set_share(&mut f.rate_share, share, "bandwidth")?;
                }
            }
            "timeout" => match self.millis("timeout")? {
                Duration::ZERO => f.drop = Some(share),
                time => {
                    // Nothing of the connection passes after its handshake
                    // (which carries no payload), and each end is reset at
                    // its first packet after the timeout.
                    f.unplug_after = Some(FlowLimit::Bytes(0));
                    self.set_reset_after(f, FlowLimit::Time(time), share)?;
                }
            },
            "reset_peer" => match self.millis("timeout")? {
                Duration::ZERO => f.reset = Some(share),
                time => self.set_reset_after(f, FlowLimit::Time(time), share)?,
            },
            "limit_data" => {
                let bytes = self.attr("bytes")?;
                self.set_reset_after(f, FlowLimit::Bytes(bytes), share)?;
            }
            "slow_close" => {
                // The end of what the stream's sender sends (its FIN)
                // arrives `delay` late: the peer sees the close late.
                let ms = self.attr("delay")?;
                if ms == 0 {
                    return Ok(());
                }
                if f.fin_delay.is_some() {
                    return Err(ApiError::conflict(format!(
                        "toxic {}: this stream already has a slow_close toxic; remove it first",
                        self.name
                    )));
                }
                f.fin_delay = Some(Duration::from_millis(ms));
                if sampled {
                    f.fin_delay_share = Some(share);
                }
            }
            "slicer" => {
                return Err(ApiError::bad(
                    "slicer does not apply at the packet level: it cuts a byte stream into small writes, \
                     and pygocentrus sees packets whose size the sender's TCP chose; use bandwidth or latency instead",
                ));
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown toxic type '{other}' (latency, bandwidth, timeout, reset_peer, slow_close, limit_data, slicer)"
                )));
            }
        }
        Ok(())
    }

    /// Checks the attributes of a toxic that does nothing (toxicity 0), so
    /// that bad input is refused the same whatever its toxicity.
    fn check_attributes(&self) -> Result<(), ApiError> {
        let mut f = RuleFaults::default();
        Toxic { toxicity: 1.0, ..self.clone() }.apply(&mut f)
    }

    /// Sets the stream's one connection limit that ends in a reset, on
    /// `share` of the connections.
    fn set_reset_after(&self, f: &mut RuleFaults, limit: FlowLimit, share: Percent) -> Result<(), ApiError> {
        if f.reset_after.is_some() {
            return Err(ApiError::conflict(format!(
                "toxic {}: this stream already has a toxic that resets connections at a limit \
                 (limit_data, or timeout/reset_peer with a timeout); remove it first",
                self.name
            )));
        }
        f.reset_after = Some(limit);
        if self.toxicity < 1.0 {
            self.set_share(&mut f.limit_share, share, "connection limits")?;
        }
        Ok(())
    }

    /// Sets the share of connections a fault shared by the stream's toxics
    /// applies to: one rule per stream has one share for its rate and one
    /// for its connection limits, so two toxics must agree on it.
    fn set_share(&self, slot: &mut Option<Percent>, share: Percent, what: &str) -> Result<(), ApiError> {
        match slot {
            Some(other) if *other != share => Err(ApiError::conflict(format!(
                "toxic {}: another toxic of this stream applies its {what} to {other} of the connections, \
                 this one to {share}; give them the same toxicity",
                self.name
            ))),
            _ => {
                *slot = Some(share);
                Ok(())
            }
        }
    }
}

fn pct(v: f64) -> Result<Percent, ApiError> {
    parse_percent(&v.to_string()).map_err(ApiError::bad)
}

impl Proxy {
    /// A new proxy on `target` (the resolved upstream).
    pub fn new(name: String, upstream: String, target: SocketAddr, enabled: bool) -> Self {
        Self { name, listen: upstream.clone(), upstream, enabled, toxics: Vec::new(), target }
    }

    /// Its rules: one per direction that has faults; a disabled proxy
    /// blackholes its target both ways.
    pub fn rules(&self, endpoint: Option<&str>) -> Result<Vec<RuleSpec>, ApiError> {
        let spec = |direction, faults| RuleSpec {
            ip: Some(IpNet::from(self.target.ip())),
            port: Some(self.target.port()),
            endpoint: endpoint.map(str::to_owned),
            proto: Proto::Tcp,
            direction,
            tcp_flags: None,
            faults,
            seed: None,
        };
        if !self.enabled {
            return Ok(vec![spec(Direction::Both, RuleFaults { drop: Some(pct(100.0)?), ..RuleFaults::default() })]);
        }
        let mut out = Vec::new();
        for direction in [Direction::To, Direction::From] {
            let mut faults = RuleFaults::default();
            for t in self.toxics.iter().filter(|t| t.direction() == Ok(direction)) {
                t.apply(&mut faults)?;
            }
            if faults.any() {
                let rule = spec(direction, faults);
                rule.validate(false).map_err(|e| ApiError::bad(format!("proxy {}: {e}", self.name)))?;
                out.push(rule);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use pygocentrus_common::{Action, PROB_ALWAYS};

    fn toxic(v: Value) -> Result<Toxic, ApiError> {
        Toxic::new(serde_json::from_value(v).unwrap())
    }

    fn proxy(toxics: Vec<Toxic>) -> Proxy {
        let mut p = Proxy::new("redis".into(), "198.18.0.2:6379".into(), "198.18.0.2:6379".parse().unwrap(), true);
        p.toxics = toxics;
        p
    }

    #[test]
    fn toxiproxy_defaults() {
        let t = toxic(json!({"type": "latency", "attributes": {"latency": 20}})).unwrap();
        assert_eq!((t.name.as_str(), t.stream.as_str(), t.toxicity), ("latency_downstream", "downstream", 1.0));
    }

    #[test]
    fn toxics_become_faults_in_their_direction() {
        let p = proxy(vec![
            toxic(json!({"type": "latency", "stream": "upstream", "attributes": {"latency": 20, "jitter": 5}}))
                .unwrap(),
            toxic(json!({"type": "bandwidth", "attributes": {"rate": 100}})).unwrap(),
            toxic(json!({"type": "timeout", "name": "t", "attributes": {"timeout": 0}})).unwrap(),
        ]);
        let rules = p.rules(None).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].direction, Direction::To);
        let d = rules[0].faults.delay.unwrap();
        assert_eq!((d.mean, d.jitter, d.keep_order), (Duration::from_millis(20), Duration::from_millis(5), true));
        assert_eq!(rules[1].direction, Direction::From);
        assert_eq!(rules[1].faults.rate, Some(Rate(100_000)));
        assert_eq!(rules[1].faults.drop.unwrap().value(), 100.0);
        assert_eq!(rules[1].proto, Proto::Tcp);
    }

    #[test]
    fn a_disabled_proxy_blackholes_and_an_empty_one_has_no_rule() {
        assert!(proxy(vec![]).rules(None).unwrap().is_empty());
        let mut p = proxy(vec![]);
        p.enabled = false;
        let rules = p.rules(None).unwrap();
        assert_eq!((rules.len(), rules[0].direction), (1, Direction::Both));
    }

    #[test]
    fn connection_toxics_become_flow_limits_and_toxicity_samples_connections() {
        let p = proxy(vec![
            toxic(json!({"type": "limit_data", "stream": "upstream", "attributes": {"bytes": 500}})).unwrap(),
            toxic(json!({"type": "timeout", "attributes": {"timeout": 200}})).unwrap(),
        ]);
        let rules = p.rules(None).unwrap();
        assert_eq!(rules[0].faults.reset_after, Some(FlowLimit::Bytes(500)));
        assert_eq!(rules[1].faults.unplug_after, Some(FlowLimit::Bytes(0)));
        assert_eq!(rules[1].faults.reset_after, Some(FlowLimit::Time(Duration::from_millis(200))));

        let p = proxy(vec![
            toxic(json!({"type": "reset_peer", "toxicity": 0.25, "attributes": {"timeout": 0}})).unwrap(),
            toxic(json!({"type": "latency", "attributes": {"latency": 5}})).unwrap(),
        ]);
        let f = &p.rules(None).unwrap()[0].faults;
        assert!(f.per_connection);
        assert_eq!(f.reset.unwrap().value(), 25.0);
        // The toxic of toxicity 1 still takes every connection.
        assert_eq!(f.delay.unwrap().share, None);

        let twice = proxy(vec![
            toxic(json!({"type": "limit_data", "name": "a", "attributes": {"bytes": 1}})).unwrap(),
            toxic(json!({"type": "limit_data", "name": "b", "attributes": {"bytes": 2}})).unwrap(),
        ]);
        assert_eq!(twice.rules(None).unwrap_err().status, 409);
    }

    /// Latencies of a stream add up; past what the kernel counts they are
    /// refused (they overflowed before: a panic in a debug build, a wrong
    /// sum in a release one).
    #[test]
    fn latencies_past_the_kernels_limit_are_refused() {
        let e = toxic(json!({"type": "latency", "attributes": {"latency": u64::MAX, "jitter": 1}})).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("'latency' is too long"), "{}", e.message);
        let most = u64::MAX / 1_000_000;
        let p = proxy(vec![
            toxic(json!({"type": "latency", "name": "a", "attributes": {"latency": most}})).unwrap(),
            toxic(json!({"type": "latency", "name": "b", "attributes": {"latency": most, "jitter": most}})).unwrap(),
        ]);
        let e = p.rules(None).unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (400, "proxy redis: --delay is too long (at most 18446744073709551615ns, about 584 years)")
        );
    }

    #[test]
    fn every_toxic_takes_a_toxicity_and_slow_close_holds_back_fins() {
        let p = proxy(vec![
            toxic(json!({"type": "bandwidth", "toxicity": 0.5, "attributes": {"rate": 100}})).unwrap(),
            toxic(json!({"type": "limit_data", "toxicity": 0.3, "attributes": {"bytes": 1000}})).unwrap(),
            toxic(json!({"type": "slow_close", "toxicity": 0.2, "attributes": {"delay": 250}})).unwrap(),
        ]);
        let rules = p.rules(None).unwrap();
        let f = &rules[0].faults;
        assert!(f.per_connection);
        assert_eq!((f.rate.unwrap().0, f.rate_share.unwrap().value()), (100_000, 50.0));
        assert_eq!((f.reset_after, f.limit_share.unwrap().value()), (Some(FlowLimit::Bytes(1000)), 30.0));
        assert_eq!((f.fin_delay, f.fin_delay_share.unwrap().value()), (Some(Duration::from_millis(250)), 20.0));
        let rule = rules[0].rule();
        assert_eq!(rule.fin_delay_ns, 250_000_000);
        assert!(rule.schedules(), "slow_close needs fq");

        // Toxicity 1: every connection, no sampling.
        let p = proxy(vec![toxic(json!({"type": "slow_close", "attributes": {"delay": 100}})).unwrap()]);
        let f = &p.rules(None).unwrap()[0].faults;
        assert_eq!((f.per_connection, f.fin_delay_share), (false, None));
        assert_eq!(p.rules(None).unwrap()[0].rule().threshold(Action::FinDelay), PROB_ALWAYS);

        // One rate per stream: two bandwidth toxics must agree on the share.
        let p = proxy(vec![
            toxic(json!({"type": "bandwidth", "name": "a", "toxicity": 0.5, "attributes": {"rate": 100}})).unwrap(),
            toxic(json!({"type": "bandwidth", "name": "b", "toxicity": 0.6, "attributes": {"rate": 50}})).unwrap(),
        ]);
        assert_eq!(p.rules(None).unwrap_err().status, 409);
    }

    #[test]
    fn refusals_say_why() {
        for (body, needle) in [
            (json!({"type": "slicer"}), "does not apply at the packet level"),
            (json!({"type": "nosuch"}), "unknown toxic type 'nosuch'"),
            (json!({"type": "slow_close", "attributes": {"delay": -5}}), "whole number"),
            (json!({"type": "latency", "toxicity": 0, "attributes": {"latency": -1}}), "whole number"),
            (json!({"type": "latency", "toxicity": 1.5}), "between 0 and 1"),
            (json!({"type": "latency", "attributes": {"latency": -1}}), "whole number"),
            (json!({"type": "latency", "attributes": {"latency": "x"}}), "whole number"),
            (json!({"type": "latency", "stream": "sideways"}), "upstream or downstream"),
            (json!({"attributes": {}}), "missing toxic type"),
        ] {
            let e = toxic(body.clone()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }
}
