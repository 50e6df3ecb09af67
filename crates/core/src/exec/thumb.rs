//! 32-bit ARM references in Thumb-2 code (as Debian's armhf is built):
//! BL, BLX and B.W, whose 24-bit offsets reach ±16 MiB.
//!
//! Thumb-2 mixes 16- and 32-bit instructions: the code is read halfword by
//! halfword from the start of each section, and a halfword whose top five
//! bits are 11101, 11110 or 11111 starts a 32-bit instruction. Rewriting an
//! offset never changes those bits, so every reader finds the same
//! instructions. Literal pools inside the code are read as instructions
//! too; whatever they hold, the generator and the applier read them alike.

use super::Rewrite;
use std::ops::Range;

fn halfword(file: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([file[at], file[at + 1]])
}

/// The kind of a 32-bit branch with a 24-bit offset, from its halfwords.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Branch {
    /// BL (T1) and B.W (T4): target = PC + offset.
    Relative,
    /// BLX (T2): target = Align(PC, 4) + offset, and ARM code.
    Exchange,
}

fn branch(first: u16, second: u16) -> Option<Branch> {
    if first & 0xf800 != 0xf000 {
        return None;
    }
    match second & 0xd000 {
        0xd000 | 0x9000 => Some(Branch::Relative), // BL, B.W
        0xc000 if second & 1 == 0 => Some(Branch::Exchange), // BLX
        _ => None,
    }
}

/// The offset of a 24-bit branch (`S:I1:I2:imm10:imm11:0`).
fn offset(first: u16, second: u16) -> i64 {
    let s = u32::from(first >> 10) & 1;
    let j1 = u32::from(second >> 13) & 1;
    let j2 = u32::from(second >> 11) & 1;
    let i1 = !(j1 ^ s) & 1;
    let i2 = !(j2 ^ s) & 1;
    let imm10 = u32::from(first) & 0x3ff;
    let imm11 = u32::from(second) & 0x7ff;
    let raw = s << 24 | i1 << 23 | i2 << 22 | imm10 << 12 | imm11 << 1;
    i64::from(((raw << 7) as i32) >> 7)
}

/// The halfwords with the branch's offset set to `offset`, if it fits.
fn set_offset(first: u16, second: u16, offset: i64) -> Option<(u16, u16)> {
    if offset & 1 != 0 || !(-(1 << 24)..1 << 24).contains(&offset) {
        return None;
    }
    let raw = offset as u32;
    let s = (raw >> 24) & 1;
    let i1 = (raw >> 23) & 1;
    let i2 = (raw >> 22) & 1;
    let j1 = !(i1 ^ s) & 1;
    let j2 = !(i2 ^ s) & 1;
    let imm10 = (raw >> 12) & 0x3ff;
    let imm11 = (raw >> 1) & 0x7ff;
    let first = (first & 0xf800) | (s << 10 | imm10) as u16;
    let second = (second & 0xd000) | (j1 << 13 | j2 << 11 | imm11) as u16;
    Some((first, second))
}

/// Rewrites the references of the code at `code` in `file` (loaded at
/// `addr`); returns how many it found.
pub(super) fn rewrite(file: &mut [u8], code: Range<usize>, addr: u64, how: Rewrite<'_>) -> u64 {
    let mut found = 0;
    let mut at = code.start;
    while at + 2 <= code.end {
        let first = halfword(file, at);
        if first >> 11 < 0b11101 {
            at += 2;
            continue;
        }
        if at + 4 > code.end {
            break;
        }
        let second = halfword(file, at + 2);
        if let Some(kind) = branch(first, second) {
            found += 1;
            let ip = addr.wrapping_add((at - code.start) as u64);
            let pc = |ip: u64| {
                let pc = ip.wrapping_add(4);
                match kind {
                    Branch::Relative => pc,
                    Branch::Exchange => pc & !3,
                }
            };
            let new = match how {
                Rewrite::Mask => Some((first & 0xf800, second & 0xd000)),
                Rewrite::Project(map) => {
                    let target = pc(ip).wrapping_add_signed(offset(first, second));
                    let place = pc(ip.wrapping_add_signed(map.shift(ip)));
                    let target = map.project(target);
                    let aligned = kind == Branch::Relative || target & 3 == 0;
                    let wanted = target.wrapping_sub(place) as i64;
                    aligned.then(|| set_offset(first, second, wanted)).flatten()
                }
            };
            if let Some((first, second)) = new {
                file[at..at + 2].copy_from_slice(&first.to_le_bytes());
                file[at + 2..at + 4].copy_from_slice(&second.to_le_bytes());
            }
        }
        at += 4;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::ShiftMap;
    use super::*;

    #[test]
    fn offsets_round_trip() {
        for offset in [0i64, 2, -2, 0x1234, -0x1234, (1 << 24) - 2, -(1 << 24)] {
            let (first, second) = set_offset(0xf000, 0xd000, offset).unwrap();
            assert_eq!(super::offset(first, second), offset, "{offset:#x}");
            assert!(branch(first, second) == Some(Branch::Relative));
        }
        assert_eq!(set_offset(0xf000, 0xd000, 1 << 24), None);
        assert_eq!(set_offset(0xf000, 0xd000, 3), None);
    }

    #[test]
    fn bl_follows_its_target_and_16_bit_code_stays() {
        // movs r0, #1; bl +0x100 (from 0x8002: PC 0x8006, target 0x8106);
        // bx lr.
        let (first, second) = set_offset(0xf000, 0xd000, 0x100).unwrap();
        let mut file = Vec::new();
        for h in [0x2001u16, first, second, 0x4770] {
            file.extend_from_slice(&h.to_le_bytes());
        }
        let original = file.clone();
        let points = [(0x8100, 0x40)];
        let len = file.len();
        let found = rewrite(
            &mut file,
            0..len,
            0x8000,
            Rewrite::Project(ShiftMap::new(&points)),
        );
        assert_eq!(found, 1);
        let first = halfword(&file, 2);
        let second = halfword(&file, 4);
        assert_eq!(offset(first, second), 0x140);
        assert_eq!(file[..2], original[..2]);
        assert_eq!(file[6..], original[6..]);
    }
}
