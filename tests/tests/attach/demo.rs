//! `pygocentrus demo`, the README's first command, run as a user runs it:
//! it builds its own namespaces (anonymous: they die with the process) and
//! exits 0 only if every phase showed its effect.

use std::{process::Command, time::Duration};

use pygocentrus_tests::{Lab, binary, output_within};

#[test]
fn the_demo_shows_the_effect_of_every_phase() {
    // Only to ask whether this kernel has fq (then the gRPC delay phase
    // must run, not skip); the demo builds namespaces of its own.
    let lab = Lab::pair("demo").0;
    let fq = lab.has_fq();
    drop(lab);

    let mut cmd = Command::new(binary());
    // 300 datagrams a phase: the shares are checked within 5 standard
    // deviations of the binomial law, which 300 keeps meaningful.
    cmd.args(["demo", "--packets", "300"]);
    let out = output_within(&mut cmd, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the demo failed ({}):\n{report}", out.status);
    assert!(!stdout.contains("FAILED"), "{report}");
    for phase in 1..=9 {
        assert!(stdout.contains(&format!("[{phase}/9]")), "phase {phase} missing:\n{report}");
    }
    assert!(stdout.contains("call 5: OK"), "no gRPC call answered:\n{report}");
    let ran = "9 of 9 phases showed what they should";
    if fq {
        assert!(stdout.contains(ran), "with fq, the delay phase must run:\n{report}");
    } else {
        assert!(stdout.contains("(gRPC delay skipped)"), "without fq, the delay phase must say it skips:\n{report}");
    }
}
