//! A small eBPF assembler: the handful of instructions chbind's programs
//! need, with named jump targets. Hand-written rather than a crate because
//! the programs are a few dozen instructions whose constants (a guest's
//! addresses) change per guest: aya and libbpf-rs load ELF objects that a
//! BPF toolchain (clang or nightly Rust with bpf-linker) must build
//! ahead of time, which neither CI nor a host needs this way
//! (docs/ARCHITECTURE.md, "chbind").

use std::collections::HashMap;

use crate::sys::BpfInsn;

/// A register: r0 (return value), r1-r5 (arguments, clobbered by calls),
/// r6-r9 (kept across calls), r10 (frame pointer, read-only).
pub type Reg = u8;

/// The frame pointer.
pub const FP: Reg = 10;

// Opcodes (linux/bpf_common.h, linux/bpf.h): class | size/op | source.
const LDX_W: u8 = 0x61;
const LDX_DW: u8 = 0x79;
const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
const ST_DW: u8 = 0x7a;
const MOV64_K: u8 = 0xb7;
const MOV64_X: u8 = 0xbf;
const MOV32_X: u8 = 0xbc;
const ADD64_K: u8 = 0x07;
const AND32_K: u8 = 0x54;
const JA: u8 = 0x05;
const JEQ64_K: u8 = 0x15;
const JEQ32_K: u8 = 0x16;
const JNE32_K: u8 = 0x56;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// A program being written.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<BpfInsn>,
    labels: HashMap<String, usize>,
    jumps: Vec<(usize, String)>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    fn push(&mut self, code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> &mut Self {
        self.insns.push(BpfInsn {
            code,
            regs: (dst & 0xf) | (src << 4),
            off,
            imm,
        });
        self
    }

    fn jump(&mut self, code: u8, dst: Reg, imm: i32, to: &str) -> &mut Self {
        self.jumps.push((self.insns.len(), to.to_string()));
        self.push(code, dst, 0, 0, imm)
    }

    /// `dst = imm` (sign-extended to 64 bits).
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(MOV64_K, dst, 0, 0, imm)
    }

    /// `dst = src`.
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(MOV64_X, dst, src, 0, 0)
    }

    /// `dst = (u32) src`.
    pub fn mov32(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.push(MOV32_X, dst, src, 0, 0)
    }

    /// `dst += imm`.
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(ADD64_K, dst, 0, 0, imm)
    }

    /// `dst = (u32) dst & imm`.
    pub fn and32_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.push(AND32_K, dst, 0, 0, imm)
    }

    /// `dst = *(u32 *)(src + off)`.
    pub fn load32(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(LDX_W, dst, src, off, 0)
    }

    /// `dst = *(u64 *)(src + off)`.
    pub fn load64(&mut self, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.push(LDX_DW, dst, src, off, 0)
    }

    /// `*(u32 *)(dst + off) = src`.
    pub fn store32(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.push(STX_W, dst, src, off, 0)
    }

    /// `*(u32 *)(dst + off) = imm` (not into the context: the verifier
    /// refuses immediate stores there).
    pub fn store32_imm(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(ST_W, dst, 0, off, imm)
    }

    /// `*(u64 *)(dst + off) = imm`.
    pub fn store64_imm(&mut self, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.push(ST_DW, dst, 0, off, imm)
    }

    /// `goto to`.
    pub fn ja(&mut self, to: &str) -> &mut Self {
        self.jump(JA, 0, 0, to)
    }

    /// `if (u32) dst == imm goto to`.
    pub fn jeq32(&mut self, dst: Reg, imm: i32, to: &str) -> &mut Self {
        self.jump(JEQ32_K, dst, imm, to)
    }

    /// `if (u32) dst != imm goto to`.
    pub fn jne32(&mut self, dst: Reg, imm: i32, to: &str) -> &mut Self {
        self.jump(JNE32_K, dst, imm, to)
    }

    /// `if dst == imm goto to` (64 bits, `imm` sign-extended).
    pub fn jeq64(&mut self, dst: Reg, imm: i32, to: &str) -> &mut Self {
        self.jump(JEQ64_K, dst, imm, to)
    }

    /// `r0 = helper(r1, ..., r5)`.
    pub fn call(&mut self, helper: i32) -> &mut Self {
        self.push(CALL, 0, 0, 0, helper)
    }

    /// `return r0`.
    pub fn exit(&mut self) -> &mut Self {
        self.push(EXIT, 0, 0, 0, 0)
    }

    /// `return value`.
    pub fn ret(&mut self, value: i32) -> &mut Self {
        self.mov_imm(0, value).exit()
    }

    /// Names the next instruction `name`.
    pub fn label(&mut self, name: &str) -> &mut Self {
        let at = self.insns.len();
        let old = self.labels.insert(name.to_string(), at);
        assert!(old.is_none(), "bpf label '{name}' defined twice");
        self
    }

    /// The instructions, with every jump resolved; a jump to an unknown
    /// label or out of the 16-bit range is an error.
    pub fn finish(mut self) -> Result<Vec<BpfInsn>, String> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = *self
                .labels
                .get(&to)
                .ok_or_else(|| format!("bpf: jump to undefined label '{to}'"))?;
            let off = target as i64 - at as i64 - 1;
            self.insns[at].off =
                i16::try_from(off).map_err(|_| format!("bpf: jump to '{to}' too far"))?;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_kernel_reads_it() {
        let mut a = Asm::new();
        a.mov(6, 1)
            .load32(2, 6, 4)
            .jeq32(2, 0, "out")
            .store32(6, 4, 2)
            .label("out")
            .ret(1);
        let p = a.finish().unwrap();
        // r6 = r1: BPF_ALU64 | BPF_MOV | BPF_X, dst 6, src 1.
        assert_eq!(
            p[0],
            BpfInsn {
                code: 0xbf,
                regs: 0x16,
                off: 0,
                imm: 0
            }
        );
        // r2 = *(u32 *)(r6 + 4).
        assert_eq!((p[1].code, p[1].regs, p[1].off), (0x61, 0x62, 4));
        // if w2 == 0 goto +1 (over the store).
        assert_eq!(
            (p[2].code, p[2].regs, p[2].off, p[2].imm),
            (0x16, 0x02, 1, 0)
        );
        // *(u32 *)(r6 + 4) = r2.
        assert_eq!((p[3].code, p[3].regs, p[3].off), (0x63, 0x26, 4));
        // r0 = 1; exit.
        assert_eq!((p[4].code, p[4].imm, p[5].code), (0xb7, 1, 0x95));
        // A backward jump.
        let mut a = Asm::new();
        a.label("top").mov_imm(0, 0).ja("top");
        assert_eq!(a.finish().unwrap()[1].off, -2);
    }

    #[test]
    fn unknown_labels_are_errors() {
        let mut a = Asm::new();
        a.ja("nowhere");
        assert!(a.finish().unwrap_err().contains("nowhere"));
    }
}
