//! Building this crate depends on the `bpf-linker` binary, which cargo cannot
//! see: rebuild whenever the one on PATH changes.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
