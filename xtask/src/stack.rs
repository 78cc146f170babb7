//! `cargo xtask stack`: how much of the 512-byte BPF stack the classifier
//! uses, read from the object the tool embeds (so: the program as built
//! and as loaded).
//!
//! Each function's frame is the deepest stack slot its instructions
//! address: a load with `r10` as source base, a store with `r10` as
//! destination base, or a pointer `rX = r10; rX += -N` to a stack object
//! (which then spans `r10 - N` upwards). A chain of BPF-to-BPF calls adds
//! its frames, as the verifier adds them ("combined stack size"). With
//! `--max N` the task fails when the deepest chain exceeds N bytes:
//! `scripts/test` runs it, so the headroom the next feature needs cannot
//! shrink unnoticed.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

#[derive(Debug, Args)]
pub struct StackArgs {
    /// Fail if the deepest call chain of a classifier uses more than this
    /// many bytes of stack.
    #[arg(long)]
    max: Option<u64>,
}

/// BPF instruction classes and the opcodes read here.
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_ALU64: u8 = 0x07;
const OP_MOV64_REG: u8 = 0xbf;
const OP_ADD64_IMM: u8 = 0x07;
const OP_CALL: u8 = 0x85;
const OP_LD_IMM64: u8 = 0x18;
/// `src_reg` of a call to a BPF function (not a helper).
const PSEUDO_CALL: u8 = 1;
const FRAME_POINTER: u8 = 10;

/// One function of the object: its frame and whom it calls.
#[derive(Debug, Default)]
struct Function {
    frame: u64,
    calls: Vec<String>,
    classifier: bool,
}

pub fn run(args: &StackArgs) -> Result<()> {
    let functions = functions(pygocentrus::datapath::engine::object())?;
    let mut worst = 0;
    for name in functions.iter().filter(|(_, f)| f.classifier).map(|(name, _)| name) {
        let (depth, chain) = deepest(&functions, name, 0)?;
        println!("{name}: {depth} bytes of stack (frames: {})", chain.join(" → "));
        worst = worst.max(depth);
    }
    for (name, f) in functions.iter().filter(|(_, f)| !f.classifier && f.frame > 0) {
        println!("  {name}: frame {} bytes", f.frame);
    }
    if let Some(max) = args.max
        && worst > max
    {
        bail!("the classifier uses {worst} bytes of stack, more than the {max} allowed (of 512)");
    }
    Ok(())
}

/// The deepest call chain from `name`: its bytes, and each frame on it.
fn deepest(functions: &BTreeMap<String, Function>, name: &str, depth: usize) -> Result<(u64, Vec<String>)> {
    if depth > 8 {
        bail!("calls nest deeper than 8 from {name}: the verifier allows 8 frames");
    }
    let f = functions.get(name).with_context(|| format!("a call to {name}, which is not in the object"))?;
    let mut best = (0, Vec::new());
    for callee in &f.calls {
        let below = deepest(functions, callee, depth + 1)?;
        if below.0 >= best.0 {
            best = below;
        }
    }
    let mut chain = vec![format!("{name} {}", f.frame)];
    chain.extend(best.1);
    Ok((f.frame + best.0, chain))
}

/// Every function symbol of the object's code sections, with its frame
/// and the functions it calls.
fn functions(data: &[u8]) -> Result<BTreeMap<String, Function>> {
    let file = object::File::parse(data).context("parsing the eBPF object")?;
    // (section, address) → function name, for calls by address.
    let mut names = BTreeMap::new();
    for sym in file.symbols().filter(|s| s.kind() == SymbolKind::Text && s.size() > 0) {
        if let Some(section) = sym.section_index() {
            names.insert((section.0, sym.address()), sym.name()?.to_owned());
        }
    }
    let mut out = BTreeMap::new();
    for section in file.sections() {
        let bytes = section.data().context("reading a section")?;
        let classifier = section.name().unwrap_or_default() == "classifier";
        // Calls by relocation: instruction offset → the symbol's section
        // and, for a function symbol, its address (for a section symbol the
        // instruction's immediate gives the address).
        let mut relocated = BTreeMap::new();
        for (offset, reloc) in section.relocations() {
            if let RelocationTarget::Symbol(index) = reloc.target()
                && let Ok(sym) = file.symbol_by_index(index)
                && let Some(target_section) = sym.section_index()
            {
                let address = (sym.kind() != SymbolKind::Section).then(|| sym.address());
                relocated.insert(offset, (target_section.0, address));
            }
        }
        let code_symbols = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.kind() == SymbolKind::Text && s.size() > 0);
        for sym in code_symbols {
            let name = sym.name()?.to_owned();
            let start = usize::try_from(sym.address())?;
            let end = start + usize::try_from(sym.size())?;
            let code = bytes.get(start..end).with_context(|| format!("{name} lies outside its section"))?;
            let callee = |at: u64, imm: i64| -> Option<String> {
                let (target_section, target) = match relocated.get(&at) {
                    Some((sec, Some(address))) => (*sec, *address),
                    // A section symbol: the immediate counts instructions
                    // from the section's start, less one.
                    Some((sec, None)) => (*sec, u64::try_from((imm + 1) * 8).ok()?),
                    // Relative: the next instruction plus the immediate.
                    None => (section.index().0, u64::try_from(at as i64 + 8 + imm * 8).ok()?),
                };
                names.get(&(target_section, target)).cloned()
            };
            let mut f = scan(code, sym.address(), callee);
            f.classifier = classifier;
            out.insert(name, f);
        }
    }
    if !out.values().any(|f| f.classifier) {
        bail!("the eBPF object has no classifier section");
    }
    Ok(out)
}

/// The frame of one function's code (at `base` in its section), and the
/// functions it calls.
fn scan(code: &[u8], base: u64, callee: impl Fn(u64, i64) -> Option<String>) -> Function {
    let mut f = Function::default();
    // Registers that hold r10 itself (not yet offset).
    let mut frame_copies = [false; 11];
    let mut pc = 0;
    while pc + 8 <= code.len() {
        let insn = &code[pc..pc + 8];
        let (op, dst, src) = (insn[0], insn[1] & 0x0f, insn[1] >> 4);
        let off = i64::from(i16::from_le_bytes([insn[2], insn[3]]));
        let imm = i64::from(i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]));
        let mut deepen = |by: i64| {
            if by < 0 {
                f.frame = f.frame.max(by.unsigned_abs());
            }
        };
        match op & 0x07 {
            CLASS_LDX if src == FRAME_POINTER => deepen(off),
            CLASS_ST | CLASS_STX if dst == FRAME_POINTER => deepen(off),
            _ => {}
        }
        let reg = usize::from(dst).min(10);
        if op == OP_MOV64_REG && src == FRAME_POINTER {
            frame_copies[reg] = true;
        } else if op == OP_ADD64_IMM && frame_copies[reg] {
            deepen(imm);
            frame_copies[reg] = false;
        } else if matches!(op & 0x07, CLASS_ALU | CLASS_ALU64 | CLASS_LDX) || op == OP_LD_IMM64 {
            frame_copies[reg] = false;
        }
        if op == OP_CALL
            && src == PSEUDO_CALL
            && let Some(callee) = callee(base + pc as u64, imm)
            && !f.calls.contains(&callee)
        {
            f.calls.push(callee);
        }
        // A 64-bit immediate load takes two instruction slots.
        pc += if op == OP_LD_IMM64 { 16 } else { 8 };
    }
    f
}
