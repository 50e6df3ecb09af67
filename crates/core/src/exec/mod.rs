//! Executables seen through their references, as both halves need it: the
//! ELF layout of a file, its shift map, and the rewriting of its references
//! ([`rewrite`]): projected (the applier and the generator, on the old
//! file) or masked (the generator, to find what moved).
//!
//! A reference is a field of an instruction that names another address
//! relative to its own: an x86-64 rel32 call, jump or conditional jump, a
//! RIP-relative operand, an AArch64 branch, literal load, ADR or ADRP pair,
//! a Thumb-2 BL, BLX or B.W; and the dynamic relocations that name
//! addresses (see [`reloc`]).
//! Projecting one rewrites it as if both its place and its target had moved
//! as the [`ShiftMap`] says, so that code which only moved in the new file
//! reads the same as there. Only the old file is ever rewritten this way:
//! the new bytes come out of the op stream as they are.
//!
//! The rewriting depends on nothing but the old file's bytes and the map,
//! so the generator and the applier rewrite alike. It reads the file as it
//! goes, in windows of [`WINDOW`] bytes, and never holds more than one
//! window's references: memory does not grow with the file.

mod arm64;
mod elf;
mod reloc;
mod tables;
mod thumb;
mod x86;

pub(crate) use elf::{layout, Layout};

use delta_format::exec::ExecArch;

/// Bytes of code read at once: the references found in one window are
/// written back before the next is read.
pub(crate) const WINDOW: usize = 64 << 10;

/// A step function over the old file's virtual addresses: each point's
/// shift holds from its address up to the next point; addresses before the
/// first point do not move.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShiftMap<'a> {
    points: &'a [(u64, i64)],
}

impl<'a> ShiftMap<'a> {
    /// The map of `points`, sorted by address.
    pub(crate) fn new(points: &'a [(u64, i64)]) -> ShiftMap<'a> {
        ShiftMap { points }
    }

    /// How far `address` moves.
    pub(crate) fn shift(&self, address: u64) -> i64 {
        match self.points.partition_point(|&(at, _)| at <= address) {
            0 => 0,
            i => self.points[i - 1].1,
        }
    }

    /// Where `address` lands.
    pub(crate) fn project(&self, address: u64) -> u64 {
        address.wrapping_add_signed(self.shift(address))
    }
}

/// What [`rewrite`] does to each reference.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rewrite<'a> {
    /// Rewrites it as if its place and its target had moved as the map
    /// says (when the new value fits its field; else leaves it).
    Project(ShiftMap<'a>),
    /// Zeroes its field, so that code alike but for its references matches.
    Mask,
}

/// The architecture whose references [`rewrite`] finds in an ELF file of
/// `layout`, if it knows it.
pub(crate) fn arch_of(layout: &Layout) -> ExecArch {
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    const EM_ARM: u16 = 40;
    match (layout.machine, layout.is_64) {
        (EM_X86_64, true) => ExecArch::X86_64,
        (EM_AARCH64, true) => ExecArch::Aarch64,
        (EM_ARM, false) => ExecArch::Thumb,
        _ => ExecArch::None,
    }
}

/// Rewrites the references of `file` (an ELF file of `arch`) in its code
/// sections as `how` says; returns how many it found. A file that is not
/// what its header says is rewritten all the same, as far as its headers
/// lead: the applier and the generator do the same to it.
pub(crate) fn rewrite(arch: ExecArch, file: &mut [u8], how: Rewrite<'_>) -> u64 {
    if arch == ExecArch::None {
        return 0;
    }
    let Some(layout) = layout(file) else {
        return 0;
    };
    if arch_of(&layout) != arch {
        return 0;
    }
    let mut found = 0;
    for section in layout.sections.iter().filter(|s| s.exec && !s.nobits) {
        let Some(code) = section.file_range(file.len()) else {
            continue;
        };
        found += match arch {
            ExecArch::X86_64 => x86::rewrite(file, code, section.addr, how),
            ExecArch::Aarch64 => arm64::rewrite(file, code, section.addr, how),
            ExecArch::Thumb => thumb::rewrite(file, code, section.addr, how),
            ExecArch::None => 0,
        };
    }
    found + reloc::rewrite(file, &layout, how) + tables::rewrite(file, &layout, how)
}

/// The little-endian word of `width` bytes (at most 8) at `at` in `file`.
fn read(file: &[u8], at: usize, width: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(&file[at..at + width]);
    u64::from_le_bytes(bytes)
}

/// Writes the low `width` bytes of `value` at `at` in `file`, little-endian.
fn write(file: &mut [u8], at: usize, width: usize, value: u64) {
    file[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

/// [`rewrite`] for benchmarks and fuzz targets: the references of `file`
/// (an ELF file of the machine `arch` names, see [`ExecArch`]) projected
/// with the shift map `points`, or masked without one; how many it found.
pub fn rewrite_for_tests(arch: u8, file: &mut [u8], points: Option<&[(u64, i64)]>) -> u64 {
    let Some(arch) = ExecArch::from_byte(arch) else {
        return 0;
    };
    let how = match points {
        Some(points) => Rewrite::Project(ShiftMap::new(points)),
        None => Rewrite::Mask,
    };
    rewrite(arch, file, how)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_map_is_a_step_function() {
        let points = [(0x1000, 0), (0x2000, 16), (0x3000, -8)];
        let map = ShiftMap::new(&points);
        assert_eq!(map.shift(0), 0);
        assert_eq!(map.shift(0x1fff), 0);
        assert_eq!(map.project(0x2000), 0x2010);
        assert_eq!(map.project(0x2fff), 0x300f);
        assert_eq!(map.project(0x5000), 0x4ff8);
        assert_eq!(ShiftMap::new(&[]).project(7), 7);
    }
}
