//! A Docker engine and the examples' images, made ready once per test
//! process by the repository's own scripts.

use std::{io::Write as _, path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use crate::compose::run_captured;

/// `scripts/images` and `scripts/dockerd-up` exit with this when no Docker
/// engine can run on this machine.
const NO_ENGINE: i32 = 3;

/// The musl build of a fresh checkout takes minutes on two cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

enum Readiness {
    Ready,
    /// Why no engine can run here: the tests skip.
    NoEngine(String),
    /// Anything else that went wrong: the tests fail.
    Failed(String),
}

static READINESS: OnceLock<Readiness> = OnceLock::new();

/// True once the engine answers and the images are built from this
/// checkout. False, after saying why, where no engine can run at all.
/// Panics on any other failure.
pub fn ready() -> bool {
    match READINESS.get_or_init(prepare) {
        Readiness::Ready => true,
        Readiness::NoEngine(why) => {
            // Straight to stderr: libtest would hide an eprintln! of a test
            // that passes, and a skip must be seen.
            let _ = writeln!(std::io::stderr(), "skipped: no Docker engine can run here: {why}");
            false
        }
        Readiness::Failed(why) => panic!("{why}"),
    }
}

fn prepare() -> Readiness {
    pygocentrus_tests::require_root();
    if let Ok(kernel) = std::env::var("PYGOCENTRUS_VM_KERNEL") {
        return Readiness::NoEngine(format!("inside the kernel-matrix VM ({kernel}), which has no Docker"));
    }
    let scripts = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts"));
    // scripts/test builds the images as the calling user before it runs the
    // tests as root, and says so; run any other way, the test builds them.
    let script = if std::env::var("PYGOCENTRUS_IMAGES_READY").is_ok_and(|v| v == "1") {
        scripts.join("dockerd-up")
    } else {
        scripts.join("images")
    };
    let out = run_captured(&mut Command::new(&script), BUILD_TIMEOUT);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(0) => Readiness::Ready,
        Some(NO_ENGINE) => Readiness::NoEngine(said.trim().to_owned()),
        _ => Readiness::Failed(format!("{} failed ({}):\n{said}", script.display(), out.status)),
    }
}
