//! Builds the kernel program with aya-build (nightly + bpf-linker) and leaves
//! the object in OUT_DIR, where `src/loader.rs` embeds it in the binary.

/// The nightly that builds the eBPF crate; pinned so builds are reproducible.
/// `scripts/setup` installs it with `rust-src`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../pygocentrus-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "pygocentrus-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
