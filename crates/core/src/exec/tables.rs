//! Tables of addresses besides the relocations: the dynamic symbol table
//! (each defined symbol's `st_value`) and the unwinder's search table in
//! `.eh_frame_hdr` (each function's start and its FDE, counted from the
//! table's own address). Code that moved moves them all.

use super::elf::Layout;
use super::Rewrite;

const SHT_DYNSYM: u32 = 11;
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

fn read(file: &[u8], at: usize, width: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..width].copy_from_slice(&file[at..at + width]);
    u64::from_le_bytes(bytes)
}

fn write(file: &mut [u8], at: usize, width: usize, value: u64) {
    file[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

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

#[cfg(test)]
mod tests {
    use super::super::elf::Section;
    use super::super::ShiftMap;
    use super::*;

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
}
