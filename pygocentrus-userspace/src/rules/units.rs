//! Percentages, durations and rates written the way tc users write them.

use std::time::Duration;

use pygocentrus_common::{PROB_ALWAYS, Threshold};

/// A probability in percent, 0–100: `5`, `5%`, `0.1` (= 0.1%).
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Percent(f64);

impl Percent {
    /// 100%.
    pub const ALWAYS: Percent = Percent(100.0);

    pub fn value(self) -> f64 {
        self.0
    }

    /// The fixed-point threshold the kernel compares a 32-bit draw with:
    /// `round(p / 100 * 2^32)`; 100% (or anything that rounds to 2^32)
    /// becomes [`PROB_ALWAYS`].
    pub fn threshold(self) -> Threshold {
        let t = (self.0 / 100.0 * 4_294_967_296.0).round();
        if t >= f64::from(PROB_ALWAYS) { PROB_ALWAYS } else { t as Threshold }
    }
}

impl std::fmt::Display for Percent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}%", self.0)
    }
}

pub fn parse_percent(s: &str) -> Result<Percent, String> {
    let t = s.trim();
    let num = t.strip_suffix('%').unwrap_or(t).trim();
    let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a percentage (write 5, 5% or 0.1)"))?;
    if !v.is_finite() || !(0.0..=100.0).contains(&v) {
        return Err(format!("{s} is outside 0-100%"));
    }
    Ok(Percent(v))
}

/// The longest duration accepted: what the kernel counts in its 64-bit
/// nanoseconds (about 584 years).
pub const MAX_DURATION: Duration = Duration::from_nanos(u64::MAX);

/// A duration with a unit: `250us`, `500ms`, `30s`, `2m`, `1h` (fractions
/// allowed: `1.5s`). A bare number is refused: tc reads it as microseconds,
/// most people as seconds. A whole number is read exactly (`1500000ns` is
/// what `pygocentrus set` sends); at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' needs a unit: 250us, 500ms, 30s, 2m"))?;
    let (num, unit) = t.split_at(split);
    let nanos_per_unit: u64 = match unit.trim() {
        "ns" | "nsec" => 1,
        "us" | "usec" | "µs" => 1_000,
        "ms" | "msec" => 1_000_000,
        "s" | "sec" | "secs" => 1_000_000_000,
        "m" | "min" | "mins" => 60_000_000_000,
        "h" | "hour" | "hours" => 3_600_000_000_000,
        other => return Err(format!("unknown time unit '{other}' in '{s}' (use us, ms, s, m or h)")),
    };
    let nanos = match num.parse::<u64>() {
        Ok(n) => u64::try_from(u128::from(n) * u128::from(nanos_per_unit)).ok(),
        Err(_) => {
            let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration (write 250us, 500ms, 30s, 2m)"))?;
            let n = (v * nanos_per_unit as f64).round();
            // u64::MAX as f64 rounds up to 2^64, which is out of range.
            (n < u64::MAX as f64).then_some(n as u64)
        }
    };
    nanos
        .map(Duration::from_nanos)
        .ok_or_else(|| format!("'{s}' is too long (at most {}ns, about 584 years)", u64::MAX))
}

/// A rate in bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u64);

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bits = self.0 as f64 * 8.0;
        match bits {
            b if b >= 1e9 => write!(f, "{}gbit", b / 1e9),
            b if b >= 1e6 => write!(f, "{}mbit", b / 1e6),
            b if b >= 1e3 => write!(f, "{}kbit", b / 1e3),
            b => write!(f, "{b}bit"),
        }
    }
}

/// A rate as tc writes it: `100kbit`, `5mbit`, `1gbit` (bits per second,
/// SI prefixes; `kibit`, `mibit`, `gibit` for powers of 1024), `512kbps`,
/// `1mbps` (bytes per second). A bare number is refused (tc reads it as
/// bits, many people as bytes).
pub fn parse_rate(s: &str) -> Result<Rate, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' needs a unit: 100kbit, 5mbit, 1gbit, 512kbps"))?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("'{s}' is not a rate (write 100kbit, 5mbit, 1gbit or 512kbps)"))?;
    let bits_per_unit = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        "kibit" => 1024.0,
        "mibit" => 1024.0 * 1024.0,
        "gibit" => 1024.0 * 1024.0 * 1024.0,
        "bps" => 8.0,
        "kbps" => 8e3,
        "mbps" => 8e6,
        "gbps" => 8e9,
        other => {
            return Err(format!("unknown rate unit '{other}' in '{s}' (use bit, kbit, mbit, gbit or bps, kbps, mbps)"));
        }
    };
    let bytes = (v * bits_per_unit / 8.0).round();
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("rate '{s}' is out of range (at least 8bit)"));
    }
    Ok(Rate(bytes as u64))
}

/// How much of a connection's life passes before a flow fault
/// (`--unplug-after`, `--reset-after`) strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowLimit {
    /// Payload bytes (TCP/UDP payload, per direction).
    Bytes(u64),
    /// Packets, per direction.
    Packets(u64),
    /// Time since the first packet of the connection the rule saw.
    Time(Duration),
}

impl std::fmt::Display for FlowLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowLimit::Bytes(n) => write!(f, "{n}b"),
            FlowLimit::Packets(n) => write!(f, "{n}pkt"),
            FlowLimit::Time(d) => write!(f, "{d:?}"),
        }
    }
}

/// A flow limit: bytes (`10kb`, `1.5mb`, `64kib`, `500b`: SI prefixes for
/// kb, mb, gb, powers of 1024 for kib, mib, gib), packets (`100pkt`), or
/// a duration (`5s`, `250ms`, as [`parse_duration`]). A bare number is
/// refused.
pub fn parse_flow_limit(s: &str) -> Result<FlowLimit, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{s}' needs a unit: 10kb, 100pkt or 5s"))?;
    let (num, unit) = t.split_at(split);
    let bytes_per_unit = match unit.trim() {
        "b" | "byte" | "bytes" => Some(1.0),
        "kb" => Some(1e3),
        "mb" => Some(1e6),
        "gb" => Some(1e9),
        "kib" => Some(1024.0),
        "mib" => Some(1024.0 * 1024.0),
        "gib" => Some(1024.0 * 1024.0 * 1024.0),
        _ => None,
    };
    let number = || num.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    if let Some(scale) = bytes_per_unit {
        let v = number().ok_or_else(|| format!("'{s}' is not a size (write 10kb, 64kib or 500b)"))?;
        let bytes = (v * scale).round();
        if bytes > u64::MAX as f64 {
            return Err(format!("'{s}' is out of range"));
        }
        return Ok(FlowLimit::Bytes(bytes as u64));
    }
    if matches!(unit.trim(), "pkt" | "pkts" | "packet" | "packets") {
        let n = num.parse::<u64>().map_err(|_| format!("'{s}' is not a whole number of packets"))?;
        return Ok(FlowLimit::Packets(n));
    }
    parse_duration(&t)
        .map(FlowLimit::Time)
        .map_err(|_| format!("'{s}' is not a size, a packet count or a duration (write 10kb, 100pkt or 5s)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_forms() {
        assert_eq!(parse_rate("100kbit"), Ok(Rate(12_500)));
        assert_eq!(parse_rate("5mbit"), Ok(Rate(625_000)));
        assert_eq!(parse_rate("1gbit"), Ok(Rate(125_000_000)));
        assert_eq!(parse_rate("512kbps"), Ok(Rate(512_000)));
        assert_eq!(parse_rate("1MBit"), Ok(Rate(125_000)));
        assert_eq!(parse_rate("1mibit"), Ok(Rate(131_072)));
        for bad in ["100", "5 furlongs", "kbit", "0kbit", "-1mbit"] {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(Rate(625_000).to_string(), "5mbit");
    }

    #[test]
    fn percent_forms() {
        assert_eq!(parse_percent("5").unwrap().value(), 5.0);
        assert_eq!(parse_percent("5%").unwrap().value(), 5.0);
        assert_eq!(parse_percent("0.1").unwrap().value(), 0.1);
        assert_eq!(parse_percent("100").unwrap().value(), 100.0);
        assert_eq!(parse_percent("0").unwrap().value(), 0.0);
    }

    #[test]
    fn percent_out_of_range_or_garbage() {
        for bad in ["101", "-1", "150%", "abc", "", "NaN", "inf", "5%%"] {
            assert!(parse_percent(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn thresholds() {
        assert_eq!(parse_percent("0").unwrap().threshold(), 0);
        assert_eq!(parse_percent("100").unwrap().threshold(), PROB_ALWAYS);
        assert_eq!(parse_percent("50").unwrap().threshold(), 1 << 31);
        assert_eq!(parse_percent("25").unwrap().threshold(), 1 << 30);
        // The smallest step is 2^-32; 0.1% is 4294967.296 steps.
        assert_eq!(parse_percent("0.1").unwrap().threshold(), 4_294_967);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn bad_durations() {
        for bad in ["30", "", "ms", "5 parsecs", "1.2.3s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    /// 10^19 s was accepted, and a delay plus a jitter that long overflowed
    /// (a panic) where they were added up: the config fuzz target's
    /// seeds/config/overflow-*.toml.
    #[test]
    fn durations_stop_at_what_the_kernel_counts() {
        assert_eq!(parse_duration("18446744073709551615ns"), Ok(MAX_DURATION));
        for long in ["18446744073709551616ns", "10000000000000000000s", "18446744074s", "5124095576h", "1e400s"] {
            let e = parse_duration(long).unwrap_err();
            assert!(e.contains("too long") || e.contains("unknown time unit"), "{long}: {e}");
        }
        assert!(parse_duration("18446744073.709551615s").is_err(), "f64 rounds it up past the limit");
    }

    /// Whole numbers of nanoseconds past 2^53 went through an f64 and came
    /// back different, so a rule sent by `pygocentrus set` (durations as
    /// `Nns`) was not the rule given: `1234567890123456789ns` was sent as
    /// `1234567890123456955ns` (the config fuzz target's JSON round trip).
    #[test]
    fn whole_numbers_are_exact() {
        assert_eq!(parse_duration("9007199254740993ns"), Ok(Duration::from_nanos(9_007_199_254_740_993)));
        assert_eq!(parse_duration("1234567890123456789ns"), Ok(Duration::from_nanos(1_234_567_890_123_456_789)));
        assert_eq!(parse_duration("18446744073s"), Ok(Duration::from_secs(18_446_744_073)));
        assert_eq!(parse_duration("0.1s"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2.5us"), Ok(Duration::from_nanos(2_500)));
    }

    #[test]
    fn flow_limits() {
        assert_eq!(parse_flow_limit("10kb"), Ok(FlowLimit::Bytes(10_000)));
        assert_eq!(parse_flow_limit("64KiB"), Ok(FlowLimit::Bytes(65_536)));
        assert_eq!(parse_flow_limit("1.5mb"), Ok(FlowLimit::Bytes(1_500_000)));
        assert_eq!(parse_flow_limit("0b"), Ok(FlowLimit::Bytes(0)));
        assert_eq!(parse_flow_limit("100pkt"), Ok(FlowLimit::Packets(100)));
        assert_eq!(parse_flow_limit("5s"), Ok(FlowLimit::Time(Duration::from_secs(5))));
        assert_eq!(parse_flow_limit("250ms"), Ok(FlowLimit::Time(Duration::from_millis(250))));
        for bad in ["10", "", "kb", "1.5pkt", "-1kb", "5 furlongs", "1.2.3kb"] {
            assert!(parse_flow_limit(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(FlowLimit::Bytes(10_000).to_string(), "10000b");
        assert_eq!(FlowLimit::Packets(3).to_string(), "3pkt");
        assert_eq!(FlowLimit::Time(Duration::from_secs(5)).to_string(), "5s");
    }
}
