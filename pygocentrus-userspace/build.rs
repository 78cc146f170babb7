//! Builds the kernel program with aya-build (nightly + bpf-linker) and leaves
//! the object in OUT_DIR, where `src/datapath/engine.rs` embeds it in the binary.

use std::{env, fs, path::PathBuf};

use anyhow::Context as _;

/// The nightly that builds the eBPF crate; pinned so builds are reproducible.
/// `scripts/setup` installs it with `rust-src`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    // `cargo fuzz` builds with `--cfg fuzzing` (and sanitizer flags in
    // RUSTFLAGS, which aya-build would not pass on: it sets the eBPF
    // build's own CARGO_ENCODED_RUSTFLAGS). The fuzz targets exercise the
    // parsers and never load the classifier, so the eBPF object is not
    // built at all there: an empty file stands in for it, and loading that
    // fails with an error. No other build sets this cfg.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?).join("pygocentrus");
        fs::write(&out, []).with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../pygocentrus-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "pygocentrus-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
