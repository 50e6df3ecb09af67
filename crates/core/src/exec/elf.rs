//! The parts of an ELF file's headers that executable segments use: its
//! machine, and its sections with their addresses and file ranges.

use object::elf::{FileHeader32, FileHeader64, SHF_ALLOC, SHF_EXECINSTR, SHT_NOBITS};
use object::read::elf::{FileHeader, SectionHeader};
use object::Endianness;
use std::ops::Range;

/// An ELF file's machine and sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `e_machine`.
    pub(crate) machine: u16,
    /// ELFCLASS64.
    pub(crate) is_64: bool,
    /// The sections the program loads (`SHF_ALLOC`), in header order.
    pub(crate) sections: Vec<Section>,
}

/// One loaded section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    /// Its name (`.text`), empty when the string table lacks it.
    pub(crate) name: Vec<u8>,
    /// Virtual address.
    pub(crate) addr: u64,
    /// Offset in the file.
    pub(crate) offset: u64,
    /// Bytes in memory.
    pub(crate) size: u64,
    /// Holds code (`SHF_EXECINSTR`).
    pub(crate) exec: bool,
    /// Has no bytes in the file (`SHT_NOBITS`, e.g. `.bss`).
    pub(crate) nobits: bool,
    /// `sh_type`.
    pub(crate) kind: u32,
}

impl Section {
    /// Its bytes in a file of `file_len` bytes, when they are all there.
    pub(crate) fn file_range(&self, file_len: usize) -> Option<Range<usize>> {
        if self.nobits {
            return None;
        }
        let start = usize::try_from(self.offset).ok()?;
        let end = start.checked_add(usize::try_from(self.size).ok()?)?;
        (end <= file_len).then_some(start..end)
    }

    /// The file offset of virtual address `address`, when the section holds
    /// it in the file.
    pub(crate) fn offset_of(&self, address: u64) -> Option<u64> {
        let inside = !self.nobits && address >= self.addr && address - self.addr < self.size;
        inside.then(|| self.offset.wrapping_add(address - self.addr))
    }

    /// Whether both sections have bytes in the file, and some in common.
    fn overlaps(&self, other: &Section) -> bool {
        let end = |s: &Section| s.offset.saturating_add(s.size);
        let bytes = |s: &Section| !s.nobits && s.size > 0;
        bytes(self) && bytes(other) && self.offset < end(other) && other.offset < end(self)
    }

    /// The virtual address of file offset `offset`, when the section holds it.
    pub(crate) fn address_of(&self, offset: u64) -> Option<u64> {
        let inside = !self.nobits && offset >= self.offset && offset - self.offset < self.size;
        inside.then(|| self.addr.wrapping_add(offset - self.offset))
    }
}

/// Most sections a layout keeps (real files load a few dozen): bounds the
/// section lookups of each relocation.
const MAX_SECTIONS: usize = 256;
/// Most bytes of a section's name kept (`.eh_frame_hdr` is 13): a hostile
/// string table cannot make each name a copy of itself.
const MAX_NAME: usize = 32;

/// The layout of `data` when it is a little-endian ELF file whose section
/// headers read; `None` for anything else. It keeps the first
/// [`MAX_SECTIONS`] loaded sections, in header order, whose file bytes do
/// not overlap those of a section kept before.
pub(crate) fn layout(data: &[u8]) -> Option<Layout> {
    match data.get(4)? {
        1 => parse::<FileHeader32<Endianness>>(data, false),
        2 => parse::<FileHeader64<Endianness>>(data, true),
        _ => None,
    }
}

fn parse<Elf: FileHeader<Endian = Endianness>>(data: &[u8], is_64: bool) -> Option<Layout> {
    let header = Elf::parse(data).ok()?;
    let endian = header.endian().ok()?;
    if endian != Endianness::Little {
        return None;
    }
    let table = header.sections(endian, data).ok()?;
    let mut sections: Vec<Section> = Vec::new();
    for s in table.iter() {
        if sections.len() == MAX_SECTIONS {
            break;
        }
        if s.sh_flags(endian).into() & u64::from(SHF_ALLOC) == 0 {
            continue;
        }
        let name = table.section_name(endian, s).unwrap_or(&[]);
        let section = Section {
            name: name[..name.len().min(MAX_NAME)].to_vec(),
            addr: s.sh_addr(endian).into(),
            offset: s.sh_offset(endian).into(),
            size: s.sh_size(endian).into(),
            exec: s.sh_flags(endian).into() & u64::from(SHF_EXECINSTR) != 0,
            nobits: s.sh_type(endian) == SHT_NOBITS,
            kind: s.sh_type(endian),
        };
        // Each byte of the file belongs to one section at most: every
        // rewriting pass then reads it once, whatever the headers claim.
        if !sections.iter().any(|kept| kept.overlaps(&section)) {
            sections.push(section);
        }
    }
    Some(Layout {
        machine: header.e_machine(endian),
        is_64,
        sections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let layout = layout(&exe).expect("the test binary is an ELF file");
        assert!(layout.is_64);
        let text = layout.sections.iter().find(|s| s.name == b".text").unwrap();
        assert!(text.exec && !text.nobits);
        assert!(text.file_range(exe.len()).is_some());
        assert_eq!(text.address_of(text.offset), Some(text.addr));
    }

    #[test]
    fn refuses_what_is_not_elf() {
        assert_eq!(layout(b""), None);
        assert_eq!(layout(b"\x7fELF\x02\x01\x01"), None);
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [16, 63, 64, 200] {
            // A cut header never panics; a cut table is not read.
            let _ = layout(&exe[..cut]);
        }
    }

    #[test]
    fn overlapping_sections_are_kept_once() {
        let section = |offset, size, nobits| Section {
            name: Vec::new(),
            addr: 0,
            offset,
            size,
            exec: true,
            nobits,
            kind: 1,
        };
        assert!(section(0, 100, false).overlaps(&section(99, 10, false)));
        assert!(!section(0, 100, false).overlaps(&section(100, 10, false)));
        assert!(!section(0, 100, false).overlaps(&section(50, 10, true)));
        assert!(!section(0, 0, false).overlaps(&section(0, 10, false)));
        assert!(section(u64::MAX - 1, 100, false).overlaps(&section(u64::MAX - 1, 1, false)));
    }
}
