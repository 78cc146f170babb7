//! Refuse early, in one line, when the process cannot load and attach BPF.

use crate::error::UsageError;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Needs CAP_NET_ADMIN (tc hooks) and CAP_BPF (or CAP_SYS_ADMIN, which
/// implies it on kernels before 5.8).
pub fn check() -> Result<(), UsageError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        raise_memlock();
        Ok(())
    } else {
        Err(UsageError::Privileges("needs root, or CAP_BPF and CAP_NET_ADMIN (try sudo)".to_owned()))
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it. Failure
/// is not fatal: newer kernels use memory cgroups instead.
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
    let old_kernel = aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(5, 11, 0));
    if ret != 0 && old_kernel {
        eprintln!("pygocentrus: note: could not raise RLIMIT_MEMLOCK; map creation may fail on kernels before 5.11");
    }
}
