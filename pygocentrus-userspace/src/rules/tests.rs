//! The tests of the rules: validation, display and encoding of single
//! rules and plans, and the schedules of config files. Above every module
//! of `rules`, so that each test can build its rules from flags or TOML.

mod rules {
    use pygocentrus_common::{
        Action, CONFIG_ENDPOINT, CONFIG_PORTLESS, LIMIT_BYTES, LIMIT_NS, LIMIT_PACKETS, PORT_BITS, PROB_ALWAYS,
        RULE_PER_CONNECTION, RULE_SEEDED, TCP_ACK, TCP_FIN, TCP_SYN,
    };

    use crate::{
        error::UsageError,
        rules::{
            args::parse_flags,
            encode::covers,
            spec::{Plan, RuleSpec},
            units::parse_percent,
            values::{TcpFlags, parse_tcp_flags},
        },
    };

    /// The rule of `attach --iface x ARGS`.
    fn spec(args: &str) -> Result<RuleSpec, UsageError> {
        RuleSpec::from_args(&parse_flags(args).unwrap(), None)
    }

    #[test]
    fn validation() {
        assert_eq!(spec("--port 1"), Err(UsageError::NoFault));
        assert_eq!(spec("--port 1 --drop 0"), Err(UsageError::NoFault));
        assert_eq!(spec("--drop 5"), Err(UsageError::NoTarget));
        assert!(spec("--drop 5 --all").is_ok());
        assert_eq!(spec("--port 1 --proto udp --reset 5"), Err(UsageError::ResetNeedsTcp));
        assert!(spec("--port 1 --proto tcp --reset 5").is_ok());
        assert_eq!(spec("--ip 198.18.0.1 --corrupt-payload 5"), Err(UsageError::PayloadNeedsL4));
        assert!(spec("--ip 198.18.0.1 --proto udp --corrupt-payload 5").is_ok());
    }

    #[test]
    fn the_faults_given_as_a_percentage_read_in_the_order_they_are_tried() {
        let s = spec("--port 80 --proto tcp --duplicate 5 --reset 2 --corrupt-payload 4 --corrupt 3 --drop 1 --loss-model gemodel:1,2")
            .unwrap();
        assert_eq!(
            s.to_string(),
            "tcp to/from *:80 drop 1% reset 2% corrupt 3% corrupt-payload 4% loss gemodel 1% 2% 100% 0% duplicate 5%"
        );
        assert_eq!(
            UsageError::NoFault.to_string(),
            "no fault given: add --drop, --corrupt, --corrupt-payload, --reset, --duplicate (a percentage above 0), \
             --delay, --rate, --loss-model, --unplug-after, --reset-after or --fin-delay"
        );
        assert_eq!(
            UsageError::PerConnectionNeedsShare.to_string(),
            "--per-connection needs a fault with a percentage: --drop, --reset, --corrupt, --corrupt-payload, \
             --duplicate, --delay-pct, --rate-pct, --limit-pct or --fin-delay-pct"
        );
    }

    #[test]
    fn rule_values() {
        let r = spec("--port 50051 --drop 100 --reset 50 --seed 7").unwrap().rule();
        assert_eq!(r.threshold(Action::Drop), PROB_ALWAYS);
        assert_eq!(r.threshold(Action::Reset), 1 << 31);
        assert_eq!((r.threshold(Action::Corrupt), r.threshold(Action::CorruptPayload)), (0, 0));
        assert_eq!((r.flags, r.seed), (RULE_SEEDED, 7));
    }

    #[test]
    fn flow_faults_and_tcp_flags() {
        let r = spec("--port 80 --unplug-after 10kb --reset-after 5s").unwrap().rule();
        assert_eq!((r.unplug_kind, r.unplug_after), (LIMIT_BYTES, 10_000));
        assert_eq!((r.reset_kind, r.reset_after), (LIMIT_NS, 5_000_000_000));
        let r = spec("--port 80 --unplug-after 100pkt").unwrap().rule();
        assert_eq!((r.unplug_kind, r.unplug_after, r.reset_kind), (LIMIT_PACKETS, 100, 0));
        let s = spec("--port 80 --proto tcp --tcp-flags syn,fin --drop 100").unwrap();
        assert_eq!((s.rule().tcp_flags_any, s.rule().tcp_flags_clear), (u32::from(TCP_SYN | TCP_FIN), 0));
        assert_eq!(s.to_string(), "tcp to/from *:80 tcp-flags fin,syn drop 100%");
        let r = spec("--port 80 --tcp-flags syn-only --drop 100").unwrap().rule();
        assert_eq!((r.tcp_flags_any, r.tcp_flags_clear), (u32::from(TCP_SYN), u32::from(TCP_ACK)));
        let s = spec("--port 80 --drop 50 --per-connection --seed 3").unwrap();
        assert_eq!(s.rule().flags, RULE_PER_CONNECTION | RULE_SEEDED);
        assert_eq!(s.to_string(), "ip to/from *:80 drop 50% per connection seed 3");
        // Without a seed, the connections are picked anew on each run.
        let s = spec("--port 80 --drop 50 --per-connection").unwrap();
        assert_eq!(s.rule().flags, RULE_PER_CONNECTION);
        assert_ne!(s.rule().seed, s.rule().seed);
    }

    #[test]
    fn flow_fault_validation() {
        assert!(spec("--port 80 --unplug-after 0pkt").is_ok());
        assert_eq!(spec("--port 80 --proto udp --reset-after 1kb"), Err(UsageError::NeedsTcp("--reset-after")));
        assert!(spec("--port 80 --proto udp --unplug-after 1kb").is_ok());
        assert_eq!(spec("--port 80 --proto udp --tcp-flags syn --drop 5"), Err(UsageError::NeedsTcp("--tcp-flags")));
        assert_eq!(spec("--port 80 --tcp-flags syn"), Err(UsageError::NoFault));
        assert_eq!(spec("--port 80 --per-connection --rate 1mbit"), Err(UsageError::PerConnectionNeedsShare));
        assert!(spec("--port 80 --per-connection --delay 10ms --delay-pct 50").is_ok());
    }

    #[test]
    fn shares_of_connections_and_fin_delay() {
        assert_eq!(spec("--port 80 --rate 1mbit --rate-pct 50"), Err(UsageError::SharePerConnection("--rate-pct")));
        assert_eq!(spec("--port 80 --drop 1 --rate-pct 50"), Err(UsageError::ShareNeedsFault("--rate-pct", "--rate")));
        assert_eq!(
            spec("--port 80 --drop 1 --limit-pct 50"),
            Err(UsageError::ShareNeedsFault("--limit-pct", "--unplug-after or --reset-after"))
        );
        assert_eq!(
            spec("--port 80 --reset-after 1kb --limit-pct 50"),
            Err(UsageError::SharePerConnection("--limit-pct"))
        );
        assert_eq!(spec("--port 80 --proto udp --fin-delay 1s"), Err(UsageError::NeedsTcp("--fin-delay")));
        assert_eq!(
            spec("--port 80 --fin-delay-pct 5"),
            Err(UsageError::ShareNeedsFault("--fin-delay-pct", "--fin-delay"))
        );
        // A share of 0 is no fault at all.
        assert_eq!(spec("--port 80 --per-connection --rate 1mbit --rate-pct 0"), Err(UsageError::NoFault));

        let r = spec("--port 80 --per-connection --rate 1mbit --rate-pct 50 --reset-after 1kb --limit-pct 25")
            .unwrap()
            .rule();
        let t = |p: &str| parse_percent(p).unwrap().threshold();
        assert_eq!((r.threshold(Action::Rate), r.threshold(Action::Limit)), (t("50"), t("25")));
        assert_ne!(r.flags & RULE_PER_CONNECTION, 0);

        let r = spec("--port 80 --fin-delay 250ms").unwrap().rule();
        assert_eq!(
            (r.fin_delay_ns, r.threshold(Action::FinDelay), r.threshold(Action::Rate)),
            (250_000_000, PROB_ALWAYS, PROB_ALWAYS)
        );
        assert!(r.schedules(), "holding FINs back needs fq");
        let plan = Plan { rules: vec![spec("--port 80 --fin-delay 30s").unwrap()] };
        assert_eq!(plan.fq_params().unwrap().horizon_us, 60_000_000, "the horizon covers the FIN delay");
        assert_eq!(parse_tcp_flags("syn,bogus").map_err(|_| ()), Err(()));
        assert_eq!(parse_tcp_flags("SYN, ACK"), Ok(TcpFlags { any: TCP_SYN | TCP_ACK, clear: 0 }));
    }

    #[test]
    fn port_only_rule() {
        let plan = Plan { rules: vec![spec("--port 50051 --drop 5").unwrap()] };
        let m = plan.map_contents().unwrap();
        assert_eq!(m.ports, vec![50051]);
        assert_eq!(m.flags, 0);
        let (prefix, key, value) = m.targets[0];
        assert_eq!(prefix, PORT_BITS);
        assert_eq!(key.port, 50051u16.to_be_bytes());
        // TCP and UDP, both sides; nothing for ICMP.
        assert_eq!(value.rules, [1, 1, 0, 1, 1, 0]);
    }

    #[test]
    fn ipv4_prefix_is_mapped() {
        let plan = Plan { rules: vec![spec("--ip 198.18.0.0/24 --direction to --drop 5").unwrap()] };
        let m = plan.map_contents().unwrap();
        assert_eq!(m.flags, CONFIG_PORTLESS);
        let (prefix, key, value) = m.targets[0];
        assert_eq!(prefix, PORT_BITS + 96 + 24);
        assert_eq!(&key.addr[10..], &[0xff, 0xff, 198, 18, 0, 0]);
        assert_eq!(value.rules, [1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn more_specific_entries_inherit_empty_cells() {
        let plan = Plan {
            rules: vec![
                spec("--ip 198.18.0.0/24 --drop 5").unwrap(),
                spec("--ip 198.18.0.2 --proto tcp --direction to --reset 5").unwrap(),
            ],
        };
        let m = plan.map_contents().unwrap();
        let host = m.targets.iter().find(|t| t.0 == PORT_BITS + 128).unwrap();
        assert_eq!(host.2.rules, [2, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let plan = Plan {
            rules: vec![
                spec("--port 80 --drop 5").unwrap(),
                spec("--port 80 --proto tcp --direction from --reset 5").unwrap(),
            ],
        };
        assert!(matches!(plan.map_contents(), Err(UsageError::Overlap(1, 2, _))));
    }

    fn plan_of(rules: &[&str]) -> Plan {
        Plan { rules: rules.iter().map(|r| spec(r).unwrap()).collect() }
    }

    #[test]
    fn rules_that_stay_keep_their_ids_and_new_ones_fill_the_gaps() {
        let (a, b, c, d) = ("--port 1 --drop 5", "--port 2 --drop 5", "--port 3 --drop 5", "--port 4 --drop 5");
        let old = plan_of(&[a, b, c]);
        let ids = [1, 2, 3];
        // The first goes: the others keep 2 and 3.
        assert_eq!(plan_of(&[b, c]).stable_ids(&old, &ids), [2, 3]);
        // One comes in front: it takes the first free id.
        assert_eq!(plan_of(&[d, a, b, c]).stable_ids(&old, &ids), [4, 1, 2, 3]);
        // The middle one changes: it takes its old id, now free, and starts
        // from zero there (Engine::replace sees another rule under it).
        let changed = "--port 2 --drop 50";
        assert_eq!(plan_of(&[a, changed, c]).stable_ids(&old, &ids), [1, 2, 3]);
        // Reordered.
        assert_eq!(plan_of(&[c, a, b]).stable_ids(&old, &ids), [3, 1, 2]);
        // Ids already sparse: new rules take the holes, lowest first.
        assert_eq!(plan_of(&[d, c, changed]).stable_ids(&plan_of(&[c]), &[3]), [1, 3, 2]);
        // Nothing left.
        assert_eq!(plan_of(&[]).stable_ids(&old, &ids), Vec::<u32>::new());
    }

    #[test]
    fn map_contents_with_ids_puts_each_rule_under_its_id() {
        let plan = plan_of(&["--port 1 --drop 5", "--port 2 --drop 5"]);
        let m = plan.map_contents_with_ids(&[7, 3]).unwrap();
        assert_eq!(m.rules.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [7, 3]);
        let ids: Vec<u32> =
            m.targets.iter().map(|(_, _, v)| v.rules.iter().copied().find(|id| *id != 0).unwrap()).collect();
        assert_eq!(ids, [7, 3]);
    }

    /// The rule of `attach --netns /var/run/netns/a ARGS`.
    fn endpoint_spec(args: &str) -> Result<RuleSpec, UsageError> {
        RuleSpec::from_args(&parse_flags(args).unwrap(), Some("netns /var/run/netns/a".to_owned()))
    }

    #[test]
    fn an_endpoint_without_ip_or_port_is_the_target() {
        let spec = endpoint_spec("--direction to --drop 5").unwrap();
        assert!(spec.targets_endpoint());
        assert_eq!(spec.to_string(), "ip to netns /var/run/netns/a drop 5%");
        let m = Plan { rules: vec![spec] }.map_contents().unwrap();
        assert_eq!(m.flags, CONFIG_ENDPOINT);
        assert!(m.targets.is_empty() && m.ports.is_empty());
        // To the endpoint, every protocol; nothing from it.
        assert_eq!(m.endpoint.unwrap().rules, [1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn on_an_endpoint_ip_and_port_keep_their_meaning() {
        let spec = endpoint_spec("--port 5000 --proto udp --drop 5").unwrap();
        assert!(!spec.targets_endpoint());
        assert_eq!(spec.to_string(), "udp to/from *:5000 drop 5%");
        let m = Plan { rules: vec![spec] }.map_contents().unwrap();
        assert_eq!((m.flags, m.endpoint, m.ports), (0, None, vec![5000]));
        let m = Plan { rules: vec![endpoint_spec("--ip 198.18.0.9 --drop 5").unwrap()] }.map_contents().unwrap();
        assert_eq!((m.flags, m.endpoint), (CONFIG_PORTLESS, None));
    }

    #[test]
    fn endpoint_validation() {
        // No --all needed: the endpoint is the target.
        assert!(endpoint_spec("--drop 5").is_ok());
        assert_eq!(endpoint_spec("--port 1"), Err(UsageError::NoFault));
        assert_eq!(endpoint_spec("--corrupt-payload 5"), Err(UsageError::PayloadNeedsL4));
        assert!(endpoint_spec("--proto udp --corrupt-payload 5").is_ok());
        assert_eq!(endpoint_spec("--proto udp --reset 5"), Err(UsageError::ResetNeedsTcp));
    }

    #[test]
    fn coverage() {
        let net = |s: &str| spec(&format!("--ip {s} --drop 1")).unwrap().key();
        let (p, k) = net("198.18.0.0/24");
        let (_, host) = net("198.18.0.9");
        let (_, other) = net("198.18.1.9");
        assert!(covers(p, &k.addr, &host.addr));
        assert!(!covers(p, &k.addr, &other.addr));
        let (p, k) = net("198.18.0.0/15");
        assert!(covers(p, &k.addr, &other.addr));
    }
}

mod schedules {
    use std::time::Duration;

    use crate::rules::{config::ConfigFile, schedule::Schedule, values::Direction};

    const S: Duration = Duration::from_secs(1);

    fn schedule(text: &str) -> Schedule {
        ConfigFile::parse(text).unwrap().schedule(None).unwrap()
    }

    #[test]
    fn phases_follow_each_other_and_repeat() {
        let s = schedule(
            "repeat = true\n\
             [[phase]]\nname = \"normal\"\nduration = \"30s\"\n\
             [[phase]]\nname = \"blackout\"\nduration = \"10s\"\n[[phase.rule]]\nport = 5000\nbehavior = \"blackout\"\n",
        );
        assert_eq!(s.phase_at(Duration::ZERO), Some(0));
        assert_eq!(s.phase_at(30 * S), Some(1));
        assert_eq!(s.phase_at(45 * S), Some(0));
        assert!(s.plan_at(5 * S).0.rules.is_empty());
        assert_eq!(s.plan_at(35 * S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(30 * S));
        assert_eq!(s.next_change(30 * S), Some(40 * S));
        assert_eq!(s.next_change(41 * S), Some(70 * S));
    }

    #[test]
    fn without_repeat_the_fixed_rules_stay() {
        let s = schedule(
            "[[rule]]\nport = 1\ndrop = 1\n\
             [[phase]]\nduration = \"1s\"\n[[phase.rule]]\nport = 2\nbehavior = \"error\"\nproto = \"tcp\"\n",
        );
        assert_eq!(s.plan_at(Duration::ZERO).0.rules.len(), 2);
        assert_eq!(s.plan_at(S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(S));
        assert_eq!(s.next_change(S), None);
    }

    #[test]
    fn a_flapping_rule_comes_and_goes() {
        let s = schedule("[[rule]]\nport = 1\nbehavior = \"blackout\"\nflap = { on = \"2s\", off = \"3s\" }\n");
        assert!(s.is_dynamic());
        assert_eq!(s.plan_at(S).0.rules.len(), 1);
        assert_eq!(s.plan_at(2 * S).0.rules.len(), 0);
        assert_eq!(s.plan_at(5 * S).0.rules.len(), 1);
        assert_eq!(s.next_change(Duration::ZERO), Some(2 * S));
        assert_eq!(s.next_change(2 * S), Some(5 * S));
    }

    #[test]
    fn behaviors_set_their_faults() {
        let s = schedule(
            "[[rule]]\nport = 1\nbehavior = \"hang\"\n\
             [[rule]]\nport = 2\nproto = \"tcp\"\nbehavior = \"error\"\n\
             [[rule]]\nport = 3\nbehavior = \"delay\"\n\
             [[rule]]\nport = 4\nbehavior = \"dummy\"\n",
        );
        let r = &s.fixed;
        assert_eq!((r[0].faults.drop.unwrap().value(), r[0].direction), (100.0, Direction::From));
        assert_eq!(r[1].faults.reset.unwrap().value(), 100.0);
        assert_eq!(r[2].faults.delay.unwrap().mean, S);
        assert!(!r[3].faults.schedules() && r[3].faults.drop.is_none());
    }

    /// Phases of centuries: their ends lie past 2^64 ns, which were cut to
    /// 64 bits (the end of the second phase was lost, and with `repeat` the
    /// next change stopped moving on).
    #[test]
    fn long_phases_end_on_time() {
        const CENTURIES: &str = "[[phase]]\nduration = \"2628000h\"\n\
                                 [[phase]]\nduration = \"2628000h\"\n[[phase.rule]]\nport = 1\ndrop = 1\n";
        let p = Duration::from_secs(2_628_000 * 3600);
        let s = schedule(CENTURIES);
        assert_eq!(s.next_change(p), Some(2 * p));
        assert_eq!((s.phase_at(2 * p - Duration::from_nanos(1)), s.phase_at(2 * p)), (Some(1), None));
        let s = schedule(&format!("repeat = true\n{CENTURIES}"));
        assert_eq!(s.next_change(p), Some(2 * p));
        assert_eq!(s.next_change(2 * p), Some(3 * p));
        assert_eq!((s.phase_at(2 * p), s.phase_at(3 * p)), (Some(0), Some(1)));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for (text, needle) in [
            ("[[rule]]\nport = 1\nbehavior = \"blackout\"\ndrop = 5\n", "sets --drop itself"),
            ("[[rule]]\nport = 1\nbehavior = \"dummy\"\ndrop = 5\n", "dummy does nothing"),
            ("[[phase]]\nduration = \"0s\"\n", "duration above 0"),
            ("[[phase]]\n", "missing field `duration`"),
            ("repeat = true\n[[rule]]\nport = 1\ndrop = 1\n", "repeat needs"),
            (
                "[[rule]]\nport = 1\ndrop = 1\n[[phase]]\nduration = \"1s\"\n[[phase.rule]]\nport = 1\ndrop = 2\n",
                "rules 1 and 2",
            ),
            ("[[rule]]\nport = 1\ndrop = 1\nflap = { on = \"1s\" }\n", "missing field `off`"),
        ] {
            let e = match ConfigFile::parse(text) {
                Ok(c) => c.schedule(None).map(|_| ()).unwrap_err().to_string(),
                Err(e) => e,
            };
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
