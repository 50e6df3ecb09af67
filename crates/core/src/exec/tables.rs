//! Tables of addresses besides the relocations: the dynamic symbol table
//! (each defined symbol's `st_value`), the unwinder's search table in
//! `.eh_frame_hdr` (each function's start and its FDE, counted from the
//! table's own address), the unwind records in `.eh_frame` (each
//! function's start, counted from the field's own address) and ARM's unwind
//! index `.ARM.exidx` (31-bit offsets from each word to its function and its
//! unwind entry). Code that moved moves them all.

use super::elf::Layout;
use super::{read, write, Rewrite};

const SHT_DYNSYM: u32 = 11;
const SHT_ARM_EXIDX: u32 = 0x7000_0001;
/// The second word of an ARM index entry that says "cannot unwind".
const EXIDX_CANTUNWIND: u64 = 1;
/// `st_shndx` of an undefined symbol, and the first reserved index
/// (`SHN_LORESERVE`: absolute and common symbols name no address here).
const SHN_UNDEF: u64 = 0;
const SHN_LORESERVE: u64 = 0xff00;
/// The search table's encoding this reads: signed 4-byte values relative
/// to the start of `.eh_frame_hdr` (`DW_EH_PE_datarel | DW_EH_PE_sdata4`),
/// what GNU ld writes.
const DATAREL_SDATA4: u8 = 0x3b;
/// The FDE count's encoding: unsigned 4 bytes (`DW_EH_PE_udata4`).
const UDATA4: u8 = 0x03;

/// Rewrites the dynamic symbols' values and the unwinder's search table of
/// `file` (laid out as `layout`); returns how many values it found.
pub(super) fn rewrite(file: &mut [u8], layout: &Layout, how: Rewrite<'_>) -> u64 {
    let project = |address: u64| match how {
        Rewrite::Project(map) => map.project(address),
        Rewrite::Mask => 0,
    };
    let mut found = 0;
    for section in &layout.sections {
        let Some(range) = section.file_range(file.len()) else {
            continue;
        };
        if section.kind == SHT_DYNSYM {
            // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64,
            // size u64; Elf32_Sym: name u32, value u32, size u32, info u8,
            // other u8, shndx u16.
            let (entry, value_at, width, shndx_at) = if layout.is_64 {
                (24, 8, 8, 6)
            } else {
                (16, 4, 4, 14)
            };
            let mut at = range.start;
            while at + entry <= range.end {
                let shndx = read(file, at + shndx_at, 2);
                if shndx != SHN_UNDEF && shndx < SHN_LORESERVE {
                    found += 1;
                    let value = read(file, at + value_at, width);
                    write(file, at + value_at, width, project(value));
                }
                at += entry;
            }
        } else if section.kind == SHT_ARM_EXIDX && layout.machine == 40 {
            found += arm_exidx(file, range, section.addr, how);
        } else if section.name == b".eh_frame" {
            found += eh_frame(file, range, section.addr, how);
        } else if section.name == b".eh_frame_hdr" && range.len() >= 12 {
            let at = range.start;
            let header = &file[at..at + 4];
            if header[0] != 1 || header[2] != UDATA4 || header[3] != DATAREL_SDATA4 {
                continue;
            }
            // version, encodings, eh_frame_ptr (4 bytes), fde_count, table.
            let count = read(file, at + 8, 4) as usize;
            let base = section.addr;
            let table = at + 12;
            let end = table.saturating_add(count.saturating_mul(8)).min(range.end);
            let mut field = table;
            while field + 4 <= end {
                found += 1;
                let value = read(file, field, 4) as u32 as i32;
                let target = base.wrapping_add_signed(value.into());
                let new = match how {
                    Rewrite::Project(map) => map.project(target).wrapping_sub(map.project(base)),
                    Rewrite::Mask => 0,
                };
                write(file, field, 4, new);
                field += 4;
            }
        }
    }
    found
}

/// Rewrites the ARM unwind index at `range` (loaded at `addr`): in each
/// 8-byte entry, the 31-bit offset from the first word to its function, and
/// the second word's offset to its table entry when it is one (bit 31
/// clear, not [`EXIDX_CANTUNWIND`]); returns how many.
fn arm_exidx(file: &mut [u8], range: std::ops::Range<usize>, addr: u64, how: Rewrite<'_>) -> u64 {
    let mut found = 0;
    let mut at = range.start;
    while at + 8 <= range.end {
        for (word, always) in [(at, true), (at + 4, false)] {
            let value = read(file, word, 4);
            if value & 0x8000_0000 != 0 || (!always && value == EXIDX_CANTUNWIND) {
                continue;
            }
            found += 1;
            let place = addr.wrapping_add((word - range.start) as u64);
            let offset = ((value << 33) as i64) >> 33;
            let target = place.wrapping_add_signed(offset);
            let new = match how {
                Rewrite::Project(map) => map.project(target).wrapping_sub(map.project(place)),
                Rewrite::Mask => 0,
            };
            write(file, word, 4, new & 0x7fff_ffff);
        }
        at += 8;
    }
    found
}

/// CIEs of one `.eh_frame` remembered (real files have a handful): FDEs of
/// later ones are left, and the search for an FDE's CIE stays short.
const MAX_CIES: usize = 16;

/// The pointer encoding of FDEs this reads: signed 4 bytes relative to the
/// field's own address (`DW_EH_PE_pcrel | DW_EH_PE_sdata4`).
const PCREL_SDATA4: u8 = 0x1b;

/// Rewrites the `pc_begin` of each FDE in the `.eh_frame` bytes at `range`
/// (loaded at `addr`) whose CIE says [`PCREL_SDATA4`]; returns how many.
fn eh_frame(file: &mut [u8], range: std::ops::Range<usize>, addr: u64, how: Rewrite<'_>) -> u64 {
    // The encoding of each CIE seen, by its offset (a handful per file).
    let mut cies: Vec<(usize, u8)> = Vec::new();
    let mut found = 0;
    let mut at = range.start;
    while at + 8 <= range.end {
        let len = read(file, at, 4) as usize;
        // 0 ends the section; an entry holds at least its 4-byte id (a
        // shorter one, from a damaged or hostile file, ends the reading).
        if len < 4 || len == 0xffff_ffff || len > range.end - at - 4 {
            break;
        }
        let end = at + 4 + len;
        let id = read(file, at + 4, 4) as usize;
        if id == 0 {
            if cies.len() < MAX_CIES {
                cies.push((at, cie_encoding(&file[at + 8..end])));
            }
        } else if let Some(&(_, encoding)) = (at + 4)
            .checked_sub(id)
            .and_then(|cie| cies.iter().find(|(at, _)| *at == cie))
        {
            let field = at + 8;
            if encoding == PCREL_SDATA4 && field + 4 <= end {
                found += 1;
                let place = addr.wrapping_add((field - range.start) as u64);
                let value = read(file, field, 4) as u32 as i32;
                let target = place.wrapping_add_signed(value.into());
                let new = match how {
                    Rewrite::Project(map) => map.project(target).wrapping_sub(map.project(place)),
                    Rewrite::Mask => 0,
                };
                write(file, field, 4, new);
            }
        }
        at = end;
    }
    found
}

/// The FDE pointer encoding a CIE's body (after its id) gives with an `R`
/// augmentation, or 0 (absolute) when it has none or does not read.
fn cie_encoding(body: &[u8]) -> u8 {
    let mut at = 1; // version
    let Some(len) = body.get(at..).and_then(|b| b.iter().position(|&c| c == 0)) else {
        return 0;
    };
    let augmentation = &body[at..at + len];
    at += len + 1;
    if augmentation.first() != Some(&b'z') {
        return 0;
    }
    // code alignment, data alignment, return register (LEB128 each, or a
    // byte for the register in version 1, which LEB128 reads alike below
    // 128), then the augmentation data's length.
    for _ in 0..4 {
        while body.get(at).is_some_and(|b| b & 0x80 != 0) {
            at += 1;
        }
        at += 1;
    }
    for &c in &augmentation[1..] {
        match c {
            b'R' => return body.get(at).copied().unwrap_or(0),
            // A personality: its encoding, then a pointer of that size.
            b'P' => {
                let size = match body.get(at).map(|e| e & 0x0f) {
                    Some(0x02 | 0x0a) => 2,
                    Some(0x03 | 0x0b) => 4,
                    Some(0x04 | 0x0c | 0x00) => 8,
                    _ => return 0,
                };
                at += 1 + size;
            }
            b'L' => at += 1,
            b'S' | b'B' => {}
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::super::elf::Section;
    use super::super::ShiftMap;
    use super::*;

    /// An `.eh_frame` entry shorter than its own id (found by fuzzing
    /// `exec_segment`) ends the reading instead of slicing backwards.
    #[test]
    fn an_eh_frame_entry_shorter_than_its_id_is_the_end() {
        for len in 1..4u64 {
            let mut file = vec![0u8; 32];
            write(&mut file, 0, 4, len);
            assert_eq!(eh_frame(&mut file, 0..32, 0x1000, Rewrite::Mask), 0);
        }
    }

    #[test]
    fn symbols_and_the_search_table_move() {
        // .dynsym at 0 (two symbols: one defined, one undefined) and
        // .eh_frame_hdr at 48, address 0x3000, one pair.
        let mut file = vec![0u8; 68];
        write(&mut file, 6, 2, 12);
        write(&mut file, 8, 8, 0x1234);
        write(&mut file, 24 + 8, 8, 0x999);
        file[48..52].copy_from_slice(&[1, 0x1b, UDATA4, DATAREL_SDATA4]);
        write(&mut file, 56, 4, 1);
        write(&mut file, 60, 4, (-0x1000i32) as u32 as u64); // function at 0x2000
        write(&mut file, 64, 4, 0x100); // its FDE at 0x3100
        let section = |name: &[u8], kind, addr, offset, size| Section {
            name: name.to_vec(),
            addr,
            offset,
            size,
            exec: false,
            nobits: false,
            kind,
        };
        let layout = Layout {
            machine: 62,
            is_64: true,
            sections: vec![
                section(b".dynsym", SHT_DYNSYM, 0x200, 0, 48),
                section(b".eh_frame_hdr", 1, 0x3000, 48, 20),
            ],
        };
        // Code from 0x1000 moved by 0x10; the tables from 0x3000 by 0x40.
        let points = [(0x1000, 0x10), (0x3000, 0x40)];
        let found = rewrite(&mut file, &layout, Rewrite::Project(ShiftMap::new(&points)));
        assert_eq!(found, 3);
        assert_eq!(read(&file, 8, 8), 0x1244);
        assert_eq!(read(&file, 32, 8), 0x999, "undefined symbols stay");
        assert_eq!(read(&file, 60, 4) as u32 as i32, 0x2010 - 0x3040);
        assert_eq!(read(&file, 64, 4), 0x100);
    }

    #[test]
    fn fde_starts_move() {
        // A CIE "zR" with encoding 0x1b, then one FDE whose pc_begin names
        // 0x1000; the section is at 0x5000.
        let mut frame = Vec::new();
        let cie = [1u8, b'z', b'R', 0, 1, 0x78, 16, 1, PCREL_SDATA4, 0, 0, 0];
        frame.extend_from_slice(&((cie.len() + 4) as u32).to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&cie);
        let fde = frame.len();
        let field = fde + 8;
        let place = 0x5000 + field as i64;
        frame.extend_from_slice(&16u32.to_le_bytes());
        frame.extend_from_slice(&((fde + 4) as u32).to_le_bytes()); // back to the CIE
        frame.extend_from_slice(&((0x1000 - place) as i32).to_le_bytes());
        frame.extend_from_slice(&[0x40, 0, 0, 0, 0, 0, 0, 0]);
        frame.extend_from_slice(&0u32.to_le_bytes());
        let len = frame.len();
        // Code moved by 0x10, the frame section by 0x100.
        let points = [(0x1000, 0x10), (0x5000, 0x100)];
        let how = Rewrite::Project(ShiftMap::new(&points));
        assert_eq!(eh_frame(&mut frame, 0..len, 0x5000, how), 1);
        let value = read(&frame, field, 4) as u32 as i32;
        assert_eq!(i64::from(value), 0x1010 - (place + 0x100));
        // A CIE that does not read gives absolute pointers: left alone.
        assert_eq!(
            cie_encoding(&[1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b]),
            0x1b
        );
        assert_eq!(cie_encoding(&[1, b'z', b'R']), 0);
        assert_eq!(cie_encoding(&[]), 0);
    }

    #[test]
    fn arm_index_entries_move() {
        // One entry at 0x6000: function 0x1000 (offset -0x5000), unwind
        // entry at 0x7000 (from 0x6004); one that cannot unwind.
        let mut index = Vec::new();
        index.extend_from_slice(&((-0x5000i32) as u32 & 0x7fff_ffff).to_le_bytes());
        index.extend_from_slice(&(0x7000u32 - 0x6004).to_le_bytes());
        index.extend_from_slice(&((-0x4ff8i32) as u32 & 0x7fff_ffff).to_le_bytes());
        index.extend_from_slice(&1u32.to_le_bytes());
        // Code moved by 0x20, the index by 0x40, the table by 0x80.
        let points = [(0x1000, 0x20), (0x6000, 0x40), (0x7000, 0x80)];
        let how = Rewrite::Project(ShiftMap::new(&points));
        assert_eq!(arm_exidx(&mut index, 0..16, 0x6000, how), 3);
        let prel31 = |at: usize| ((read(&index, at, 4) << 33) as i64) >> 33;
        assert_eq!(prel31(0), 0x1020 - 0x6040);
        assert_eq!(prel31(4), 0x7080 - 0x6044);
        assert_eq!(prel31(8), 0x1030 - 0x6048);
        assert_eq!(read(&index, 12, 4), 1, "cannot unwind stays");
    }
}
