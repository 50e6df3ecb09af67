//! Dynamic relocations: where the loader writes absolute addresses (PIE
//! executables and shared libraries hold thousands), and what it writes.
//!
//! Every entry of a loaded `SHT_RELA` or `SHT_REL` section names the address
//! of its slot (`r_offset`); a relative relocation (`R_X86_64_RELATIVE`,
//! `R_AARCH64_RELATIVE`, `R_ARM_RELATIVE`) also names the address it
//! writes there: its addend, or for `SHT_REL` the slot's own value. Code
//! that moved moves both, so projecting them makes the tables of a rebuilt
//! library read like the new ones. A RELA slot that holds its addend as
//! well (the linker's copy) is projected with it.

use super::elf::Layout;
use super::{read, write, Rewrite};
use std::ops::Range;

const SHT_RELA: u32 = 4;
const SHT_REL: u32 = 9;

/// The relative relocation type of machine `machine`.
fn relative(machine: u16) -> Option<u32> {
    match machine {
        62 => Some(8),     // R_X86_64_RELATIVE
        183 => Some(1027), // R_AARCH64_RELATIVE
        40 => Some(23),    // R_ARM_RELATIVE
        _ => None,
    }
}

/// Rewrites the relocation tables of `file` (laid out as `layout`);
/// returns how many entries it found.
pub(super) fn rewrite(file: &mut [u8], layout: &Layout, how: Rewrite<'_>) -> u64 {
    let Some(relative) = relative(layout.machine) else {
        return 0;
    };
    let width = if layout.is_64 { 8 } else { 4 };
    let mut found = 0;
    for section in &layout.sections {
        let rela = match section.kind {
            SHT_RELA => true,
            SHT_REL => false,
            _ => continue,
        };
        let Some(table) = section.file_range(file.len()) else {
            continue;
        };
        found += table_rewrite(file, table, rela, width, relative, layout, how);
    }
    found
}

fn table_rewrite(
    file: &mut [u8],
    table: Range<usize>,
    rela: bool,
    width: usize,
    relative: u32,
    layout: &Layout,
    how: Rewrite<'_>,
) -> u64 {
    let entry = width * if rela { 3 } else { 2 };
    let project = |address: u64| match how {
        Rewrite::Project(map) => map.project(address),
        Rewrite::Mask => 0,
    };
    let mut found = 0;
    let mut at = table.start;
    while at + entry <= table.end {
        found += 1;
        let offset = read(file, at, width);
        let info = read(file, at + width, width);
        let kind = if width == 8 {
            info & 0xffff_ffff
        } else {
            info & 0xff
        } as u32;
        write(file, at, width, project(offset));
        if kind == relative {
            let slot = (layout.sections.iter())
                .find_map(|s| s.offset_of(offset))
                .and_then(|o| usize::try_from(o).ok())
                .filter(|&o| o.checked_add(width).is_some_and(|end| end <= file.len()));
            if rela {
                let addend = read(file, at + 2 * width, width);
                write(file, at + 2 * width, width, project(addend));
                if let Some(slot) = slot.filter(|&o| read(file, o, width) == addend) {
                    write(file, slot, width, project(addend));
                }
            } else if let Some(slot) = slot {
                let value = read(file, slot, width);
                write(file, slot, width, project(value));
            }
        }
        at += entry;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::elf::Section;
    use super::super::ShiftMap;
    use super::*;

    fn section(kind: u32, addr: u64, offset: u64, size: u64) -> Section {
        Section {
            name: Vec::new(),
            addr,
            offset,
            size,
            exec: false,
            nobits: false,
            kind,
        }
    }

    #[test]
    fn relative_relocations_and_their_slots_move() {
        // A RELA table at file offset 0 (two entries) and a data section at
        // 0x100 (address 0x2100) whose first slot holds its addend.
        let mut file = vec![0u8; 0x110];
        let entries = [(0x2100u64, 8u64, 0x1500u64), (0x2108, 6 | 5 << 32, 0)];
        for (i, (offset, info, addend)) in entries.iter().enumerate() {
            write(&mut file, i * 24, 8, *offset);
            write(&mut file, i * 24 + 8, 8, *info);
            write(&mut file, i * 24 + 16, 8, *addend);
        }
        write(&mut file, 0x100, 8, 0x1500);
        let layout = Layout {
            machine: 62,
            is_64: true,
            sections: vec![
                section(SHT_RELA, 0x400, 0, 48),
                section(1, 0x2100, 0x100, 16),
            ],
        };
        // Code from 0x1000 moved by 0x40, data from 0x2000 by 0x80.
        let points = [(0x1000, 0x40), (0x2000, 0x80)];
        let how = Rewrite::Project(ShiftMap::new(&points));
        assert_eq!(rewrite(&mut file, &layout, how), 2);
        assert_eq!(read(&file, 0, 8), 0x2180);
        assert_eq!(read(&file, 16, 8), 0x1540);
        assert_eq!(read(&file, 0x100, 8), 0x1540, "the slot holding its addend");
        // GLOB_DAT: its slot address moves, its addend is not an address.
        assert_eq!(read(&file, 24, 8), 0x2188);
        assert_eq!(read(&file, 40, 8), 0);
        assert_eq!(read(&file, 8, 8), 8, "info stays");
    }

    #[test]
    fn tables_past_the_file_and_odd_machines_are_left() {
        let mut file = vec![7u8; 40];
        let mut layout = Layout {
            machine: 62,
            is_64: true,
            sections: vec![section(SHT_RELA, 0, 16, 48)],
        };
        assert_eq!(rewrite(&mut file, &layout, Rewrite::Mask), 0);
        layout.machine = 3;
        layout.sections[0].size = 24;
        assert_eq!(rewrite(&mut file, &layout, Rewrite::Mask), 0);
        assert_eq!(file, vec![7u8; 40]);
    }
}
