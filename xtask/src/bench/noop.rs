//! The floor: an empty TC classifier (`r0 = TC_ACT_UNSPEC; exit`), and
//! for the live bench a probe that does only what `parse::linearize` of the
//! classifier does first (pull the first `min(len, 138)` bytes into the
//! linear part when they are not there), to time that step alone on live
//! packets.
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
const NAME: &str = "pyg_bench_noop";
const PULL_NAME: &str = "pyg_bench_pull";
/// `MAX_HEADERS` of the classifier's `parse.rs`: Ethernet + VLAN + IPv4
/// with options + TCP with options.
const MAX_HEADERS: i32 = 14 + 4 + 60 + 60;
/// `offsetof(struct __sk_buff, len / data / data_end)`.
const SKB_LEN: i16 = 0;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
/// `BPF_FUNC_skb_pull_data`.
const HELPER_SKB_PULL_DATA: i32 = 39;

/// `struct bpf_insn`: opcode, dst_reg (low nibble) and src_reg, offset, imm.
#[repr(C)]
#[derive(Clone, Copy)]
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

/// `r0 = -1 (TC_ACT_UNSPEC); exit`.
const RETURN_UNSPEC: [Insn; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K: r0 = -1 (TC_ACT_UNSPEC)
    Insn { code: 0xb7, regs: 0, off: 0, imm: -1 },
    // BPF_JMP | BPF_EXIT
    Insn { code: 0x95, regs: 0, off: 0, imm: 0 },
];

/// `regs` of an instruction: destination in the low nibble, source high.
const fn regs(dst: u8, src: u8) -> u8 {
    dst | src << 4
}

/// The empty classifier.
pub fn load() -> Result<SchedClassifier> {
    load_program(NAME, &RETURN_UNSPEC)
}

/// The probe: `want = min(skb->len, 138); if data + want > data_end:
/// bpf_skb_pull_data(skb, want)`, then `TC_ACT_UNSPEC`.
pub fn load_pull_probe() -> Result<SchedClassifier> {
    let insns = [
        // r6 = r1 (the context)
        Insn { code: 0xbf, regs: regs(6, 1), off: 0, imm: 0 },
        // r2 = skb->len
        Insn { code: 0x61, regs: regs(2, 6), off: SKB_LEN, imm: 0 },
        // if r2 <= MAX_HEADERS goto +1
        Insn { code: 0xb5, regs: regs(2, 0), off: 1, imm: MAX_HEADERS },
        // r2 = MAX_HEADERS
        Insn { code: 0xb7, regs: regs(2, 0), off: 0, imm: MAX_HEADERS },
        // r3 = skb->data; r4 = skb->data_end
        Insn { code: 0x61, regs: regs(3, 6), off: SKB_DATA, imm: 0 },
        Insn { code: 0x61, regs: regs(4, 6), off: SKB_DATA_END, imm: 0 },
        // r3 += r2
        Insn { code: 0x0f, regs: regs(3, 2), off: 0, imm: 0 },
        // if r3 <= r4 goto +2 (the bytes are linear already)
        Insn { code: 0xbd, regs: regs(3, 4), off: 2, imm: 0 },
        // r1 = r6; call bpf_skb_pull_data(r1, r2)
        Insn { code: 0xbf, regs: regs(1, 6), off: 0, imm: 0 },
        Insn { code: 0x85, regs: 0, off: 0, imm: HELPER_SKB_PULL_DATA },
        RETURN_UNSPEC[0],
        RETURN_UNSPEC[1],
    ];
    load_program(PULL_NAME, &insns)
}

fn load_program(name: &'static str, insns: &[Insn]) -> Result<SchedClassifier> {
    let license: &CStr = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..name.len()].copy_from_slice(name.as_bytes());
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
        return Err(io::Error::last_os_error()).with_context(|| format!("BPF_PROG_LOAD of {name}"));
    }
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(ret as i32) };
    let id = prog_id(&fd)?;
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .ok_or_else(|| anyhow!("program {id} ({name}) is not among the loaded programs"))?;
    // aya takes its own fd (by id), so ours can be closed afterwards.
    SchedClassifier::from_program_info(info, Cow::Borrowed(name)).with_context(|| format!("handing {name} to aya"))
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
