//! Rule values as text in serde: a config file's values read through the
//! parsers of the flags ([`de`]), and [`RuleArgs`](super::args::RuleArgs)
//! written as JSON that those parsers read back exactly ([`ser`]).

/// Deserializers for config values, through the parsers of the flags: a
/// value is accepted in the file exactly when it is accepted on the command
/// line. Numbers are read as the text they would be on the command line
/// (`drop = 30` as `--drop 30`).
pub mod de {
    use std::{fmt, marker::PhantomData, time::Duration};

    use ipnet::IpNet;
    use serde::{Deserializer, de::Visitor};

    use crate::rules::{
        units::{FlowLimit, Percent, Rate, parse_duration, parse_flow_limit, parse_percent, parse_rate},
        values::{GeSpec, TcpFlags, parse_ipnet, parse_loss_model, parse_tcp_flags},
    };

    struct Text<T> {
        parse: fn(&str) -> Result<T, String>,
        expecting: &'static str,
        _t: PhantomData<T>,
    }

    impl<T> Visitor<'_> for Text<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            (self.parse)(v).map(Some).map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.visit_str(&v.to_string())
        }
    }

    fn text<'de, D: Deserializer<'de>, T>(
        d: D,
        parse: fn(&str) -> Result<T, String>,
        expecting: &'static str,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Text { parse, expecting, _t: PhantomData })
    }

    pub fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Percent>, D::Error> {
        text(d, parse_percent, "a percentage: 5, 0.1 or \"5%\"")
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        text(d, parse_duration, "a duration with a unit: \"250us\", \"20ms\", \"30s\"")
    }

    pub fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Rate>, D::Error> {
        text(d, parse_rate, "a rate: \"100kbit\", \"5mbit\", \"512kbps\"")
    }

    pub fn loss_model<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GeSpec>, D::Error> {
        text(d, parse_loss_model, "a loss model: \"gemodel:P[,R[,1-H[,1-K]]]\"")
    }

    pub fn flow_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FlowLimit>, D::Error> {
        text(d, parse_flow_limit, "a size, a packet count or a duration: \"10kb\", \"100pkt\", \"5s\"")
    }

    pub fn tcp_flags<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TcpFlags>, D::Error> {
        text(d, parse_tcp_flags, "TCP flags: \"syn\", \"syn,fin\" or \"syn-only\"")
    }

    pub fn required_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        duration(d)?.ok_or_else(|| serde::de::Error::custom("a duration is required"))
    }

    pub fn ipnet<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpNet>, D::Error> {
        text(d, parse_ipnet, "an address or prefix: \"198.18.0.2\", \"198.18.0.0/24\", \"fd00::2\"")
    }

    pub fn port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
        text(
            d,
            |s| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("{s} is not a port (1-65535)")),
            "a port, 1-65535",
        )
    }
}

/// Serializers for [`RuleArgs`](crate::rules::RuleArgs) as JSON
/// (`pygocentrus set` sends a rule to `serve`): each value as text its
/// parser reads back exactly.
pub mod ser {
    use std::{fmt::Display, time::Duration};

    use serde::Serializer;

    use crate::rules::{
        units::{FlowLimit, Percent, Rate},
        values::GeSpec,
    };

    fn text<S: Serializer>(s: S, v: Option<String>) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v),
            None => s.serialize_none(),
        }
    }

    pub fn display<S: Serializer, T: Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        text(s, v.as_ref().map(ToString::to_string))
    }

    pub fn percent<S: Serializer>(v: &Option<Percent>, s: S) -> Result<S::Ok, S::Error> {
        text(s, v.map(|p| p.value().to_string()))
    }

    pub fn duration<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        text(s, v.map(|d| format!("{}ns", d.as_nanos())))
    }

    pub fn required_duration<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ns", v.as_nanos()))
    }

    pub fn flow_limit<S: Serializer>(v: &Option<FlowLimit>, s: S) -> Result<S::Ok, S::Error> {
        text(
            s,
            v.map(|l| match l {
                FlowLimit::Time(d) => format!("{}ns", d.as_nanos()),
                other => other.to_string(),
            }),
        )
    }

    pub fn rate<S: Serializer>(v: &Option<Rate>, s: S) -> Result<S::Ok, S::Error> {
        text(s, v.map(|r| format!("{}bps", r.0)))
    }

    pub fn loss_model<S: Serializer>(v: &Option<GeSpec>, s: S) -> Result<S::Ok, S::Error> {
        text(
            s,
            v.map(|g| {
                format!("gemodel:{},{},{},{}", g.p.value(), g.r.value(), g.loss_bad.value(), g.loss_good.value())
            }),
        )
    }
}
