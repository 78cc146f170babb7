//! The floor: an empty TC classifier (`r0 = TC_ACT_UNSPEC; exit`).
//!
//! It is loaded here with a raw `BPF_PROG_LOAD` rather than added to the
//! pygocentrus object, so that the object the tool ships carries no
//! benchmark-only program. aya then picks the loaded program up by id
//! (`SchedClassifier::from_program_info`), and the floor is run through the
//! same `TestRun::test_run` as the classifier.

use std::{
    borrow::Cow,
    ffi::CStr,
    fs, io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{SchedClassifier, loaded_programs};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const NAME: &[u8] = b"pyg_bench_noop";

/// `struct bpf_insn`: opcode, dst_reg (low nibble) and src_reg, offset, imm.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`; the kernel reads the
/// fields it has and treats the ones after `size` as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

pub fn load() -> Result<SchedClassifier> {
    let insns = [
        // BPF_ALU64 | BPF_MOV | BPF_K: r0 = -1 (TC_ACT_UNSPEC)
        Insn { code: 0xb7, regs: 0, off: 0, imm: -1 },
        // BPF_JMP | BPF_EXIT
        Insn { code: 0x95, regs: 0, off: 0, imm: 0 },
    ];
    let license: &CStr = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..NAME.len()].copy_from_slice(NAME);
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `attr` and the instructions and license it points to outlive
    // the call; the size passed is the size of `attr`.
    let ret =
        unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr as *const ProgLoadAttr, size_of::<ProgLoadAttr>()) };
    if ret < 0 {
        return Err(io::Error::last_os_error()).context("BPF_PROG_LOAD of the empty classifier");
    }
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(ret as i32) };
    let id = prog_id(&fd)?;
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or_else(|| anyhow!("program {id} (the empty classifier) is not among the loaded programs"))?;
    // aya takes its own fd (by id), so ours can be closed afterwards.
    SchedClassifier::from_program_info(info, Cow::Borrowed("pyg_bench_noop"))
        .context("handing the empty classifier to aya")
}

/// The program id the kernel shows in `/proc/self/fdinfo` for a program fd.
fn prog_id(fd: &OwnedFd) -> Result<u32> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let info = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("prog_id:") {
            return v.trim().parse().with_context(|| format!("prog_id in {path}"));
        }
    }
    bail!("no prog_id in {path}")
}
