//! AArch64 references: B and BL, B.cond, CBZ and CBNZ, TBZ and TBNZ, LDR
//! (literal), ADR, and ADRP with the ADD or LDR that completes its address.
//!
//! Instructions are four bytes, so each word of a code section is looked
//! at once, in place. A field is rewritten only when the new value fits it
//! (and keeps the alignment it scales by); otherwise it stays as it is.

use super::Rewrite;
use std::ops::Range;

/// A PC-relative field: where it sits in the word, its width and scale.
#[derive(Clone, Copy)]
struct Field {
    shift: u32,
    bits: u32,
    scale: i64,
}

const IMM26: Field = Field {
    shift: 0,
    bits: 26,
    scale: 4,
};
const IMM19: Field = Field {
    shift: 5,
    bits: 19,
    scale: 4,
};
const IMM14: Field = Field {
    shift: 5,
    bits: 14,
    scale: 4,
};

impl Field {
    fn mask(self) -> u32 {
        ((1u32 << self.bits) - 1) << self.shift
    }

    /// The byte offset the field of `word` holds.
    fn get(self, word: u32) -> i64 {
        let raw = (word & self.mask()) >> self.shift;
        sign_extend(raw.into(), self.bits) * self.scale
    }

    /// `word` with its field set to byte offset `offset`, if it fits.
    fn set(self, word: u32, offset: i64) -> Option<u32> {
        if offset % self.scale != 0 {
            return None;
        }
        let value = offset / self.scale;
        let half = 1i64 << (self.bits - 1);
        if !(-half..half).contains(&value) {
            return None;
        }
        let raw = (value as u32 & ((1 << self.bits) - 1)) << self.shift;
        Some(word & !self.mask() | raw)
    }
}

fn sign_extend(value: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((value << shift) as i64) >> shift
}

/// The scaled field of a branch or literal load, if `word` is one.
fn branch(word: u32) -> Option<Field> {
    match word {
        w if w & 0x7c00_0000 == 0x1400_0000 => Some(IMM26), // B, BL
        w if w & 0xff00_0010 == 0x5400_0000 => Some(IMM19), // B.cond
        w if w & 0x7e00_0000 == 0x3400_0000 => Some(IMM19), // CBZ, CBNZ
        w if w & 0x7e00_0000 == 0x3600_0000 => Some(IMM14), // TBZ, TBNZ
        w if w & 0x3b00_0000 == 0x1800_0000 => Some(IMM19), // LDR (literal)
        _ => None,
    }
}

const ADR_MASK: u32 = 0x9f00_0000;
const ADR: u32 = 0x1000_0000;
const ADRP: u32 = 0x9000_0000;
/// immlo (bits 29-30) and immhi (bits 5-23).
const ADR_FIELDS: u32 = 0x6000_0000 | 0x00ff_ffe0;

fn adr_imm(word: u32) -> i64 {
    let raw = ((word >> 5) & 0x7_ffff) << 2 | (word >> 29) & 3;
    sign_extend(raw.into(), 21)
}

fn set_adr_imm(word: u32, imm: i64) -> Option<u32> {
    if !(-(1 << 20)..1 << 20).contains(&imm) {
        return None;
    }
    let raw = imm as u32 & 0x1f_ffff;
    Some(word & !ADR_FIELDS | (raw & 3) << 29 | (raw >> 2) << 5)
}

/// The low 12 bits' scale of the instruction after an ADRP to register
/// `rd` that completes its address: ADD (immediate, 64-bit) or LDR
/// (unsigned offset, 64- or 32-bit) from `rd`.
fn low_part(next: u32, rd: u32) -> Option<i64> {
    if (next >> 5) & 31 != rd {
        return None;
    }
    match next & 0xffc0_0000 {
        0x9100_0000 => Some(1), // ADD Xd, Xn, #imm12
        0xf940_0000 => Some(8), // LDR Xt, [Xn, #imm12*8]
        0xb940_0000 => Some(4), // LDR Wt, [Xn, #imm12*4]
        _ => None,
    }
}

const IMM12: u32 = 0xfff << 10;

/// Words after an ADRP searched for the ADD or LDR that completes its
/// address (compilers schedule other instructions between them): on
/// arm64-minor's rebuilt libraries 1 word made 486,176 bytes, 2 465,045,
/// 4 460,061 and 8 459,165.
const ADRP_LOOKAHEAD: usize = 8;

fn read(file: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]])
}

fn write(file: &mut [u8], at: usize, word: u32) {
    file[at..at + 4].copy_from_slice(&word.to_le_bytes());
}

/// Rewrites the references of the code at `code` in `file` (loaded at
/// `addr`); returns how many it found.
pub(super) fn rewrite(file: &mut [u8], code: Range<usize>, addr: u64, how: Rewrite<'_>) -> u64 {
    let mut found = 0;
    let mut at = code.start;
    while at + 4 <= code.end {
        let ip = addr.wrapping_add((at - code.start) as u64);
        let word = read(file, at);
        // Where the instruction lands, and where a target lands.
        let place = |ip: u64| match how {
            Rewrite::Project(map) => ip.wrapping_add_signed(map.shift(ip)),
            Rewrite::Mask => ip,
        };
        let project = |target: u64| match how {
            Rewrite::Project(map) => map.project(target),
            Rewrite::Mask => target,
        };
        if let Some(field) = branch(word) {
            found += 1;
            let target = ip.wrapping_add_signed(field.get(word));
            let new = match how {
                Rewrite::Mask => Some(word & !field.mask()),
                Rewrite::Project(_) => {
                    field.set(word, project(target).wrapping_sub(place(ip)) as i64)
                }
            };
            if let Some(new) = new {
                write(file, at, new);
            }
        } else if word & ADR_MASK == ADR {
            found += 1;
            let target = ip.wrapping_add_signed(adr_imm(word));
            let new = match how {
                Rewrite::Mask => Some(word & !ADR_FIELDS),
                Rewrite::Project(_) => {
                    set_adr_imm(word, project(target).wrapping_sub(place(ip)) as i64)
                }
            };
            if let Some(new) = new {
                write(file, at, new);
            }
        } else if word & ADR_MASK == ADRP {
            found += 1;
            let page = (ip & !0xfff).wrapping_add_signed(adr_imm(word) << 12);
            // The instruction that completes the address: the first of the
            // next few that adds to, or loads from, the ADRP's register.
            let pair = (1..=ADRP_LOOKAHEAD)
                .map(|k| at + 4 * k)
                .take_while(|&next_at| next_at + 4 <= code.end)
                .find_map(|next_at| {
                    let next = read(file, next_at);
                    Some((next_at, next, low_part(next, word & 31)?))
                });
            match (how, pair) {
                (Rewrite::Mask, Some((next_at, next, _))) => {
                    write(file, at, word & !ADR_FIELDS);
                    write(file, next_at, next & !IMM12);
                }
                (Rewrite::Mask, None) => write(file, at, word & !ADR_FIELDS),
                (Rewrite::Project(_), Some((next_at, next, scale))) => {
                    let low = i64::from((next & IMM12) >> 10) * scale;
                    let target = project(page.wrapping_add_signed(low));
                    let pages = (target >> 12).wrapping_sub(place(ip) >> 12) as i64;
                    let low = (target & 0xfff) as i64;
                    if low % scale == 0 {
                        if let Some(new) = set_adr_imm(word, pages) {
                            write(file, at, new);
                            let imm = ((low / scale) as u32) << 10;
                            write(file, next_at, next & !IMM12 | imm);
                        }
                    }
                }
                (Rewrite::Project(_), None) => {
                    let pages = (project(page) >> 12).wrapping_sub(place(ip) >> 12) as i64;
                    if let Some(new) = set_adr_imm(word, pages) {
                        write(file, at, new);
                    }
                }
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

    fn words(code: &[u32]) -> Vec<u8> {
        code.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn project(code: &[u32], points: &[(u64, i64)]) -> Vec<u32> {
        let mut file = words(code);
        let map = ShiftMap::new(points);
        let len = file.len();
        rewrite(&mut file, 0..len, 0x10000, Rewrite::Project(map));
        file.chunks(4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn branches_follow_their_targets() {
        // bl +0x100 at 0x10000; b.ne -8 at 0x10004; nop.
        let code = [0x9400_0040, 0x54ff_ffc1, 0xd503_201f];
        // Everything from 0x10080 on moved up by 0x20: the bl's target did.
        let out = project(&code, &[(0x10080, 0x20)]);
        assert_eq!(out[0], 0x9400_0048);
        assert_eq!(out[1], code[1], "the b.ne and its target stayed");
        assert_eq!(out[2], code[2]);
    }

    #[test]
    fn adrp_pairs_move_together() {
        // adrp x1, +1 page; add x1, x1, #0xff8 at 0x10000: names 0x11ff8.
        let adrp = 0x9000_0001 | 1 << 29;
        let add = 0x9100_0021 | 0xff8 << 10;
        // The target moved up by 0x10: to 0x12008, the next page.
        let out = project(&[adrp, add], &[(0x11000, 0x10)]);
        assert_eq!(adr_imm(out[0]), 2);
        assert_eq!((out[1] & IMM12) >> 10, 0x008);
        // Masked, both fields are zero.
        let mut file = words(&[adrp, add]);
        assert_eq!(rewrite(&mut file, 0..8, 0x10000, Rewrite::Mask), 1);
        assert_eq!(file, words(&[adrp & !ADR_FIELDS, add & !IMM12]));
    }

    #[test]
    fn a_value_that_does_not_fit_stays() {
        // tbz x0, #0, +4: a 14-bit field cannot reach 1 MiB further.
        let code = [0x3600_0020];
        assert_eq!(project(&code, &[(0x10004, 1 << 20)]), code);
    }
}
