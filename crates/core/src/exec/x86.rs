//! x86-64 references: rel32 calls, jumps and conditional jumps, and
//! RIP-relative operands with a 32-bit displacement.
//!
//! Instructions are decoded from the start of each code section in turn
//! (a linear sweep, with iced-x86's decoder). The length of an instruction
//! never depends on the value of its displacement, so rewriting fields
//! changes nothing about where the next instruction starts.

use super::{Rewrite, WINDOW};
use iced_x86::{Decoder, DecoderOptions, Instruction, OpKind};
use std::ops::Range;

/// Longest x86 instruction.
const MAX_INSTRUCTION: usize = 15;

/// One reference: where its 32-bit field is, and what it names.
struct Reference {
    /// Offset of the field in the file.
    at: usize,
    /// Address of the instruction.
    ip: u64,
    /// Address the field counts from (the next instruction's).
    next: u64,
    /// Address it names.
    target: u64,
}

/// Rewrites the references of the code at `code` in `file` (loaded at
/// `addr`); returns how many it found.
pub(super) fn rewrite(file: &mut [u8], code: Range<usize>, addr: u64, how: Rewrite<'_>) -> u64 {
    let mut found = 0;
    let mut refs = Vec::new();
    let mut instruction = Instruction::default();
    let mut start = code.start;
    while start < code.end {
        // One window: every instruction that starts in its first WINDOW
        // bytes, with room to finish the last one.
        let end = code.end.min(start.saturating_add(WINDOW + MAX_INSTRUCTION));
        let last_start = code.end.min(start + WINDOW);
        let ip = addr.wrapping_add((start - code.start) as u64);
        let bytes = &file[start..end];
        let mut decoder = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        refs.clear();
        let mut next = start;
        while decoder.can_decode() && start + decoder.position() < last_start {
            let at = start + decoder.position();
            decoder.decode_out(&mut instruction);
            next = start + decoder.position();
            if let Some(reference) = reference(&instruction, bytes, at - start) {
                refs.push(Reference {
                    at: at + reference,
                    ip: instruction.ip(),
                    next: instruction.next_ip(),
                    target: target(&instruction),
                });
            }
        }
        // The decoder always moves on; `next > start` unless the window
        // was empty.
        start = next.max(start + 1);
        found += refs.len() as u64;
        for r in &refs {
            let value = match how {
                Rewrite::Mask => 0,
                Rewrite::Project(map) => {
                    let place = r.next.wrapping_add_signed(map.shift(r.ip));
                    map.project(r.target).wrapping_sub(place) as u32
                }
            };
            file[r.at..r.at + 4].copy_from_slice(&value.to_le_bytes());
        }
    }
    found
}

/// The offset in its instruction of the 32-bit field of `instruction`
/// (decoded from `bytes[at..]`) that names an address relative to the
/// next instruction, if it has one.
fn reference(instruction: &Instruction, bytes: &[u8], at: usize) -> Option<usize> {
    if instruction.is_invalid() {
        return None;
    }
    let len = instruction.len();
    if instruction.is_ip_rel_memory_operand() {
        // The displacement is followed only by an immediate, if any.
        let imm = immediate_len(instruction);
        let field = len.checked_sub(4 + imm)?;
        let disp = i32::from_le_bytes(bytes.get(at + field..at + field + 4)?.try_into().ok()?);
        let expected = instruction
            .ip_rel_memory_address()
            .wrapping_sub(instruction.next_ip()) as i64 as i32;
        return (disp == expected).then_some(field);
    }
    if instruction.op0_kind() == OpKind::NearBranch64 && len >= 5 {
        // rel32 is the instruction's last four bytes (rel8 forms are short).
        let field = len - 4;
        let rel = i32::from_le_bytes(bytes.get(at + field..at + len)?.try_into().ok()?);
        let expected = instruction
            .near_branch64()
            .wrapping_sub(instruction.next_ip()) as i64 as i32;
        return (rel == expected).then_some(field);
    }
    None
}

/// The address `instruction` names through its reference.
fn target(instruction: &Instruction) -> u64 {
    if instruction.is_ip_rel_memory_operand() {
        instruction.ip_rel_memory_address()
    } else {
        instruction.near_branch64()
    }
}

/// Bytes of immediate after a RIP-relative displacement.
fn immediate_len(instruction: &Instruction) -> usize {
    (0..instruction.op_count())
        .map(|i| match instruction.op_kind(i) {
            OpKind::Immediate8 | OpKind::Immediate8to16 | OpKind::Immediate8to32 => 1,
            OpKind::Immediate8to64 | OpKind::Immediate8_2nd => 1,
            OpKind::Immediate16 => 2,
            OpKind::Immediate32 | OpKind::Immediate32to64 => 4,
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::super::ShiftMap;
    use super::*;

    /// call +0x10; lea rax,[rip+0x20]; jne +0x30 (rel32); jmp short +2;
    /// mov dword [rip+0x40], 7; ret
    const CODE: &[u8] = &[
        0xe8, 0x10, 0, 0, 0, // call
        0x48, 0x8d, 0x05, 0x20, 0, 0, 0, // lea
        0x0f, 0x85, 0x30, 0, 0, 0, // jne
        0xeb, 0x02, // jmp short
        0xc7, 0x05, 0x40, 0, 0, 0, 7, 0, 0, 0,    // mov [rip+], imm32
        0xc3, // ret
    ];

    #[test]
    fn finds_each_field() {
        let mut file = CODE.to_vec();
        let found = rewrite(&mut file, 0..CODE.len(), 0x1000, Rewrite::Mask);
        assert_eq!(found, 4);
        let mut expected = CODE.to_vec();
        for at in [1, 8, 14, 22] {
            expected[at..at + 4].fill(0);
        }
        assert_eq!(file, expected, "the short jump and the immediate stay");
    }

    #[test]
    fn projects_place_and_target() {
        // Code from 0x100c on moved up by 0x100: the call at 0x1000 to
        // 0x1015 now reaches 0x1115, so its field grows by 0x100; the lea at
        // 0x1005 (field counts from 0x100c) names 0x102c, which moved too.
        let points = [(0x100c, 0x100)];
        let mut file = CODE.to_vec();
        rewrite(
            &mut file,
            0..CODE.len(),
            0x1000,
            Rewrite::Project(ShiftMap::new(&points)),
        );
        assert_eq!(file[1..5], 0x110u32.to_le_bytes());
        assert_eq!(file[8..12], 0x120u32.to_le_bytes());
        // The jne at 0x100c moved along with its target: unchanged.
        assert_eq!(file[14..18], 0x30u32.to_le_bytes());
        assert_eq!(file[26..], CODE[26..]);
    }

    #[test]
    fn windows_see_what_one_pass_sees() {
        // Code longer than a window, with instructions across each edge.
        let code: Vec<u8> = CODE.iter().copied().cycle().take(3 * WINDOW + 7).collect();
        let mut file = code.clone();
        let found = rewrite(&mut file, 0..code.len(), 0x40_0000, Rewrite::Mask);
        let whole = code.len() / CODE.len();
        assert!(found as usize >= whole * 4, "{found} of {}", whole * 4);
    }
}
