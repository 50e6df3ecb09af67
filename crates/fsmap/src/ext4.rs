//! A read-only reader for the small subset of ext4 that maps files.
//!
//! Why by hand: the `ext4-view` crate reads files and directories well but
//! keeps its extents private (`pub(crate) struct Extent`), and the
//! generator needs the physical byte ranges, not the contents. The subset
//! is small: superblock, group descriptors (with `64bit` and `meta_bg`),
//! inode table lookup, extent trees, and linear directory parsing (which
//! also reads htree directories: their index blocks look like empty
//! entries). Checksums are not verified: a wrong map costs compression,
//! not correctness, because the generator checks every delta.
//!
//! Refused: compression, journal devices, `dirdata`, encryption, a journal
//! that needs recovery (its metadata may be newer than the image's), and
//! any unknown incompatible feature; directories with a block map (ext2/3).
//! Left out without error: regular files with inline data or a block map.

use crate::read::{slice, Fields};
use crate::{
    push_extent, Budget, ContainerKind, Error, Extent, FileMap, MappedFile, Result, MAX_DEPTH,
};
use std::collections::HashSet;

const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_LEN: u64 = 1024;
const MAGIC_OFFSET: u64 = SUPERBLOCK_OFFSET + 0x38;
const MAGIC: u16 = 0xEF53;
const ROOT_INODE: u32 = 2;

const INCOMPAT_NAMES: [(u32, &str); 16] = [
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x1_0000, "encrypt"),
    (0x2_0000, "casefold"),
];
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
/// Features this reader handles (or that do not change how files are found).
const INCOMPAT_SUPPORTED: u32 =
    0x2 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x2000 | 0x4000 | 0x8000 | 0x2_0000;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_BIGALLOC: u32 = 0x200;

const MODE_TYPE: u16 = 0xF000;
const MODE_DIR: u16 = 0x4000;
const MODE_REG: u16 = 0x8000;
const FLAG_EXTENTS: u32 = 0x8_0000;
const FLAG_INLINE_DATA: u32 = 0x1000_0000;

const EXTENT_MAGIC: u16 = 0xF30A;
const EXTENT_MAX_DEPTH: u16 = 5;
/// An `ee_len` above this marks an unwritten extent of `ee_len - 32768` blocks.
const EXTENT_INIT_MAX: u16 = 32_768;
const I_BLOCK: usize = 0x28;
const I_BLOCK_LEN: usize = 60;
const GOOD_OLD_INODE_SIZE: u64 = 128;
const XATTR_MAGIC: u32 = 0xEA02_0000;
const XATTR_INDEX_SYSTEM: u8 = 7;

/// Whether `image` has the ext2/3/4 superblock magic.
pub(crate) fn has_magic(image: &[u8]) -> bool {
    slice(image, MAGIC_OFFSET, 2, "ext4 magic").is_ok_and(|b| b == MAGIC.to_le_bytes())
}

pub(crate) fn map(image: &[u8]) -> Result<FileMap> {
    let mut fs = Fs::open(image)?;
    let mut walk = Walk {
        visited: HashSet::from([ROOT_INODE]),
        files: Vec::new(),
    };
    let root = fs.inode(u64::from(ROOT_INODE))?;
    if root.mode & MODE_TYPE != MODE_DIR {
        return Err(Error::Inode {
            inode: u64::from(ROOT_INODE),
            reason: "the root inode is not a directory",
        });
    }
    fs.walk_dir(&root, "", 0, &mut walk)?;
    walk.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(FileMap {
        kind: ContainerKind::Ext4,
        files: walk.files,
    })
}

/// The superblock's geometry and the walk's budget.
#[derive(Debug)]
struct Fs<'a> {
    image: &'a [u8],
    block_size: u64,
    /// Blocks in the file system; every block number must be below it.
    blocks: u64,
    blocks_per_group: u64,
    first_data_block: u64,
    inodes_per_group: u64,
    inodes: u64,
    inode_size: u64,
    desc_size: u64,
    groups: u64,
    filetype: bool,
    /// `s_first_meta_bg` when `meta_bg` is on.
    first_meta_bg: Option<u64>,
    sparse_super: bool,
    /// `s_backup_bgs` when `sparse_super2` is on.
    backup_bgs: Option<[u64; 2]>,
    budget: Budget,
}

/// The fields of an inode the walk uses.
#[derive(Debug)]
struct Inode<'a> {
    number: u64,
    mode: u16,
    flags: u32,
    size: u64,
    /// The whole on-disk inode.
    raw: Fields<'a>,
}

/// What the directory walk carries along.
#[derive(Debug)]
struct Walk {
    visited: HashSet<u32>,
    files: Vec<MappedFile>,
}

fn bad_sb(field: &'static str, value: impl Into<u64>, reason: &'static str) -> Error {
    Error::Superblock {
        field,
        value: value.into(),
        reason,
    }
}

impl<'a> Fs<'a> {
    fn open(image: &'a [u8]) -> Result<Self> {
        let sb = Fields::at(image, SUPERBLOCK_OFFSET, SUPERBLOCK_LEN, "ext4 superblock")?;
        let magic = sb.u16(0x38)?;
        if magic != MAGIC {
            return Err(bad_sb("s_magic", magic, "not 0xEF53"));
        }
        let incompat = sb.u32(0x60)?;
        let unsupported = incompat & !INCOMPAT_SUPPORTED;
        if unsupported != 0 {
            let mut names: Vec<&str> = INCOMPAT_NAMES
                .iter()
                .filter(|(bit, _)| unsupported & bit != 0)
                .map(|&(_, name)| name)
                .collect();
            let known = INCOMPAT_NAMES.iter().fold(0, |all, (bit, _)| all | bit);
            if unsupported & !known != 0 {
                names.push("unknown");
            }
            return Err(Error::Incompatible {
                flags: unsupported,
                names: names.join(", "),
            });
        }
        let compat = sb.u32(0x5C)?;
        let ro_compat = sb.u32(0x64)?;
        let is_64bit = incompat & INCOMPAT_64BIT != 0;

        let log_block = sb.u32(0x18)?;
        if log_block > 6 {
            return Err(bad_sb(
                "s_log_block_size",
                log_block,
                "block size over 64 KiB",
            ));
        }
        let block_size = 1024u64 << log_block;
        let mut blocks = u64::from(sb.u32(0x04)?);
        if is_64bit {
            blocks |= u64::from(sb.u32(0x150)?) << 32;
        }
        let first_data_block = u64::from(sb.u32(0x14)?);
        if first_data_block >= blocks {
            return Err(bad_sb(
                "s_first_data_block",
                first_data_block,
                "not below s_blocks_count",
            ));
        }
        let mut blocks_per_group = u64::from(sb.u32(0x20)?);
        if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            let log_cluster = sb.u32(0x1C)?;
            let shift = log_cluster
                .checked_sub(log_block)
                .filter(|&s| s <= 16)
                .ok_or(bad_sb(
                    "s_log_cluster_size",
                    log_cluster,
                    "below the block size or over 2^16 blocks",
                ))?;
            blocks_per_group <<= shift;
        }
        if blocks_per_group == 0 {
            return Err(bad_sb("s_blocks_per_group", blocks_per_group, "zero"));
        }
        let inodes_per_group = u64::from(sb.u32(0x28)?);
        if inodes_per_group == 0 || inodes_per_group > block_size * 8 {
            return Err(bad_sb(
                "s_inodes_per_group",
                inodes_per_group,
                "zero or more than one bitmap block holds",
            ));
        }
        let inode_size = if sb.u32(0x4C)? == 0 {
            GOOD_OLD_INODE_SIZE
        } else {
            u64::from(sb.u16(0x58)?)
        };
        if inode_size < GOOD_OLD_INODE_SIZE
            || !inode_size.is_power_of_two()
            || inode_size > block_size
        {
            return Err(bad_sb(
                "s_inode_size",
                inode_size,
                "not a power of two from 128 to the block size",
            ));
        }
        let desc_size = if is_64bit {
            let size = u64::from(sb.u16(0xFE)?);
            if !(64..=1024).contains(&size) || !size.is_power_of_two() {
                return Err(bad_sb(
                    "s_desc_size",
                    size,
                    "not a power of two from 64 to 1024",
                ));
            }
            size
        } else {
            32
        };
        let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
        let inodes = u64::from(sb.u32(0x00)?);
        if inodes < u64::from(ROOT_INODE) || inodes > groups.saturating_mul(inodes_per_group) {
            return Err(bad_sb(
                "s_inodes_count",
                inodes,
                "below 2 or more than the groups hold",
            ));
        }
        let fs_len =
            blocks
                .checked_mul(block_size)
                .ok_or(bad_sb("s_blocks_count", blocks, "overflows"))?;
        let image_len = u64::try_from(image.len()).unwrap_or(u64::MAX);
        if fs_len > image_len {
            return Err(Error::Truncated {
                what: "ext4 file system (s_blocks_count blocks)",
                offset: 0,
                need: fs_len,
                have: image_len,
            });
        }
        let first_meta_bg = if incompat & INCOMPAT_META_BG != 0 {
            Some(u64::from(sb.u32(0x104)?))
        } else {
            None
        };
        let backup_bgs = if compat & COMPAT_SPARSE_SUPER2 != 0 {
            Some([u64::from(sb.u32(0x24C)?), u64::from(sb.u32(0x250)?)])
        } else {
            None
        };
        Ok(Self {
            image,
            block_size,
            blocks,
            blocks_per_group,
            first_data_block,
            inodes_per_group,
            inodes,
            inode_size,
            desc_size,
            groups,
            filetype: incompat & INCOMPAT_FILETYPE != 0,
            first_meta_bg,
            sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
            backup_bgs,
            budget: Budget::new(image.len()),
        })
    }

    /// Whether block group `group` holds a superblock copy (and with it,
    /// under `meta_bg`, a descriptor block), as `ext4_bg_has_super`.
    fn has_super(&self, group: u64) -> bool {
        fn is_power_of(mut n: u64, base: u64) -> bool {
            while n > 1 && n.is_multiple_of(base) {
                n /= base;
            }
            n == 1
        }
        if group == 0 {
            return true;
        }
        if let Some(backups) = self.backup_bgs {
            return backups.contains(&group);
        }
        if group == 1 || !self.sparse_super {
            return true;
        }
        group % 2 == 1 && (is_power_of(group, 3) || is_power_of(group, 5) || is_power_of(group, 7))
    }

    /// First block of the inode table of block group `group`.
    fn inode_table(&self, group: u64) -> Result<u64> {
        let per_block = self.block_size / self.desc_size;
        let index = group / per_block;
        let block = match self.first_meta_bg {
            Some(first) if index >= first => {
                let first_group = index * per_block;
                self.first_data_block
                    + first_group * self.blocks_per_group
                    + u64::from(self.has_super(first_group))
            }
            _ => SUPERBLOCK_OFFSET / self.block_size + 1 + index,
        };
        let offset = block
            .checked_mul(self.block_size)
            .and_then(|b| b.checked_add((group % per_block) * self.desc_size))
            .ok_or(Error::GroupDescriptor {
                group,
                offset: u64::MAX,
                reason: "offset overflows",
            })?;
        let desc = Fields::at(self.image, offset, self.desc_size, "ext4 group descriptor")?;
        let mut table = u64::from(desc.u32(0x08)?);
        if self.desc_size >= 64 {
            table |= u64::from(desc.u32(0x28)?) << 32;
        }
        let table_blocks = (self.inodes_per_group * self.inode_size).div_ceil(self.block_size);
        if table
            .checked_add(table_blocks)
            .is_none_or(|end| end > self.blocks)
        {
            return Err(Error::GroupDescriptor {
                group,
                offset,
                reason: "inode table lies past the end of the file system",
            });
        }
        Ok(table)
    }

    fn inode(&self, number: u64) -> Result<Inode<'a>> {
        if number == 0 || number > self.inodes {
            return Err(Error::Inode {
                inode: number,
                reason: "number is 0 or above s_inodes_count",
            });
        }
        let group = (number - 1) / self.inodes_per_group;
        debug_assert!(
            group < self.groups,
            "s_inodes_count was checked against the groups"
        );
        let index = (number - 1) % self.inodes_per_group;
        let offset = self.inode_table(group)? * self.block_size + index * self.inode_size;
        let raw = Fields::at(self.image, offset, self.inode_size, "ext4 inode")?;
        Ok(Inode {
            number,
            mode: raw.u16(0x00)?,
            flags: raw.u32(0x20)?,
            size: u64::from(raw.u32(0x04)?) | u64::from(raw.u32(0x6C)?) << 32,
            raw,
        })
    }

    /// The extents of an extent-mapped inode, clipped to its size.
    fn extents(&mut self, inode: &Inode<'a>) -> Result<Vec<Extent>> {
        let root = Fields {
            bytes: inode.raw.bytes(I_BLOCK, I_BLOCK_LEN)?,
            offset: inode.raw.offset + I_BLOCK as u64,
            what: "ext4 extent tree root",
        };
        let mut walk = ExtentWalk {
            inode: inode.number,
            size: inode.size,
            next_block: 0,
            extents: Vec::new(),
        };
        self.extent_node(root, None, &mut walk)?;
        Ok(walk.extents)
    }

    /// Reads one extent tree node; `depth` is the depth its parent expects
    /// (`None` at the root).
    fn extent_node(
        &mut self,
        node: Fields<'a>,
        depth: Option<u16>,
        walk: &mut ExtentWalk,
    ) -> Result<()> {
        let inode = walk.inode;
        let bad = |reason| Error::ExtentNode {
            inode,
            offset: node.offset,
            reason,
        };
        if node.u16(0)? != EXTENT_MAGIC {
            return Err(bad("header magic is not 0xF30A"));
        }
        let entries = node.u16(2)?;
        let max = node.u16(4)?;
        let node_depth = node.u16(6)?;
        if entries > max || 12 + 12 * usize::from(entries) > node.bytes.len() {
            return Err(bad("more entries than the node holds"));
        }
        match depth {
            None if node_depth > EXTENT_MAX_DEPTH => return Err(bad("tree deeper than 5")),
            Some(expected) if node_depth != expected => {
                return Err(bad("depth differs from its parent's"))
            }
            _ => {}
        }
        self.budget.step(1 + u64::from(entries))?;
        for i in 0..usize::from(entries) {
            let at = 12 + 12 * i;
            let logical = u64::from(node.u32(at)?);
            if node_depth > 0 {
                let child = u64::from(node.u32(at + 4)?) | u64::from(node.u16(at + 8)?) << 32;
                if child >= self.blocks {
                    return Err(bad("index entry points past the end of the file system"));
                }
                let child = Fields::at(
                    self.image,
                    child * self.block_size,
                    self.block_size,
                    "ext4 extent tree node",
                )?;
                self.extent_node(child, Some(node_depth - 1), walk)?;
                continue;
            }
            let raw_len = node.u16(at + 4)?;
            let start = u64::from(node.u32(at + 8)?) | u64::from(node.u16(at + 6)?) << 32;
            let (len, written) = match raw_len {
                0 => return Err(bad("extent of zero blocks")),
                len if len > EXTENT_INIT_MAX => (u64::from(len - EXTENT_INIT_MAX), false),
                len => (u64::from(len), true),
            };
            if logical < walk.next_block {
                return Err(Error::ExtentOrder {
                    inode: walk.inode,
                    logical,
                });
            }
            walk.next_block = logical + len;
            if start.checked_add(len).is_none_or(|end| end > self.blocks) {
                return Err(Error::ExtentOutOfRange {
                    inode: walk.inode,
                    logical,
                    start,
                    len,
                    blocks: self.blocks,
                });
            }
            // Block numbers are below 2^48 and blocks at most 2^16 bytes:
            // the products fit.
            let offset = logical * self.block_size;
            if !written || offset >= walk.size {
                continue;
            }
            push_extent(
                &mut walk.extents,
                Extent {
                    logical: offset,
                    physical: start * self.block_size,
                    len: (len * self.block_size).min(walk.size - offset),
                },
            );
        }
        Ok(())
    }

    /// Lists directory `dir` (at `path`, `depth` levels below the root) and
    /// everything below it into `walk`.
    fn walk_dir(&mut self, dir: &Inode<'a>, path: &str, depth: u64, walk: &mut Walk) -> Result<()> {
        if dir.flags & FLAG_INLINE_DATA != 0 {
            // The first 4 bytes of i_block are the parent's inode number.
            let head = Fields {
                bytes: dir.raw.bytes(I_BLOCK + 4, I_BLOCK_LEN - 4)?,
                offset: dir.raw.offset + I_BLOCK as u64 + 4,
                what: "ext4 inline directory",
            };
            self.dir_block(dir.number, head, path, depth, walk)?;
            if let Some(rest) = self.inline_xattr(dir)? {
                self.dir_block(dir.number, rest, path, depth, walk)?;
            }
            return Ok(());
        }
        if dir.flags & FLAG_EXTENTS == 0 {
            return Err(Error::Inode {
                inode: dir.number,
                reason:
                    "directory uses a block map (no extents), which this reader does not follow",
            });
        }
        let extents = self.extents(dir)?;
        self.budget.spend_file(0, extents.len())?;
        for extent in extents {
            let mut done = 0;
            while done < extent.len {
                let len = self.block_size.min(extent.len - done);
                let block = Fields::at(
                    self.image,
                    extent.physical + done,
                    len,
                    "ext4 directory block",
                )?;
                self.dir_block(dir.number, block, path, depth, walk)?;
                done += len;
            }
        }
        Ok(())
    }

    /// The `system.data` extended attribute of an inline-data inode: the
    /// directory entries that did not fit in `i_block`.
    fn inline_xattr(&self, inode: &Inode<'a>) -> Result<Option<Fields<'a>>> {
        if inode.raw.bytes.len() <= GOOD_OLD_INODE_SIZE as usize {
            return Ok(None);
        }
        let bad = |reason| Error::Inode {
            inode: inode.number,
            reason,
        };
        let start = GOOD_OLD_INODE_SIZE as usize + usize::from(inode.raw.u16(0x80)?);
        let Ok(magic) = inode.raw.u32(start) else {
            return Ok(None);
        };
        if magic != XATTR_MAGIC {
            return Ok(None);
        }
        let first = start + 4;
        let area = inode
            .raw
            .bytes(first, inode.raw.bytes.len().saturating_sub(first))?;
        let area = Fields {
            bytes: area,
            offset: inode.raw.offset + first as u64,
            what: "ext4 in-inode extended attributes",
        };
        let mut at = 0;
        // Entries are at least 16 bytes, so this ends within the inode.
        while area.u32(at)? != 0 {
            let name_len = usize::from(area.u8(at)?);
            let index = area.u8(at + 1)?;
            let value_offset = usize::from(area.u16(at + 2)?);
            let value_inode = area.u32(at + 4)?;
            let value_len =
                usize::try_from(area.u32(at + 8)?).map_err(|_| bad("xattr value too long"))?;
            let name = area.bytes(at + 16, name_len)?;
            if index == XATTR_INDEX_SYSTEM && name == b"data" {
                if value_inode != 0 {
                    return Err(bad("inline data stored in an xattr inode"));
                }
                let bytes = area.bytes(value_offset, value_len)?;
                return Ok(Some(Fields {
                    bytes,
                    offset: area.offset + value_offset as u64,
                    what: "ext4 inline directory (system.data)",
                }));
            }
            at += (16 + name_len + 3) & !3;
        }
        Ok(None)
    }

    /// Parses the directory entries of one block (or inline area) of
    /// directory `dir` and walks each entry.
    fn dir_block(
        &mut self,
        dir: u64,
        block: Fields<'a>,
        path: &str,
        depth: u64,
        walk: &mut Walk,
    ) -> Result<()> {
        let mut at = 0usize;
        while at + 8 <= block.bytes.len() {
            let entry_offset = block.offset + at as u64;
            let bad = |reason| Error::DirEntry {
                inode: dir,
                offset: entry_offset,
                reason,
            };
            let inode = block.u32(at)?;
            let rec_len = self.rec_len(block.u16(at + 4)?);
            let name_len = if self.filetype {
                usize::from(block.u8(at + 6)?)
            } else {
                usize::from(block.u16(at + 6)?)
            };
            if rec_len < 8 || !rec_len.is_multiple_of(4) || rec_len > block.bytes.len() - at {
                return Err(bad(
                    "rec_len below 8, not a multiple of 4, or past the block",
                ));
            }
            if 8 + name_len > rec_len {
                return Err(bad("name longer than rec_len allows"));
            }
            self.budget.step(1)?;
            let name = block.bytes(at + 8, name_len)?;
            at += rec_len;
            if inode == 0 || name == b"." || name == b".." {
                continue;
            }
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return Err(bad("name empty or holding '/' or NUL"));
            }
            let child_path = format!("{path}/{}", String::from_utf8_lossy(name));
            self.entry(inode, child_path, depth, walk)?;
        }
        Ok(())
    }

    /// Walks one directory entry: lists a regular file, descends into a
    /// directory, skips anything else.
    fn entry(&mut self, number: u32, path: String, depth: u64, walk: &mut Walk) -> Result<()> {
        let inode = self.inode(u64::from(number))?;
        match inode.mode & MODE_TYPE {
            MODE_DIR => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Error::TooDeep {
                        path,
                        limit: MAX_DEPTH,
                    });
                }
                if !walk.visited.insert(number) {
                    return Err(Error::DirectoryCycle {
                        inode: u64::from(number),
                        path,
                    });
                }
                self.walk_dir(&inode, &path, depth + 1, walk)
            }
            MODE_REG if inode.flags & FLAG_INLINE_DATA == 0 && inode.flags & FLAG_EXTENTS != 0 => {
                let extents = self.extents(&inode)?;
                self.budget.spend_file(path.len(), extents.len())?;
                walk.files.push(MappedFile {
                    path,
                    size: inode.size,
                    extents,
                });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Decodes `rec_len` as `ext4_rec_len_from_disk` (64 KiB blocks keep
    /// two high bits in the low ones).
    fn rec_len(&self, raw: u16) -> usize {
        if self.block_size < 65_536 {
            return usize::from(raw);
        }
        if raw == u16::MAX || raw == 0 {
            return 65_536;
        }
        usize::from(raw & 0xFFFC) | usize::from(raw & 3) << 16
    }
}

/// State of one inode's extent tree walk.
#[derive(Debug)]
struct ExtentWalk {
    inode: u64,
    size: u64,
    /// First file block the next extent may start at.
    next_block: u64,
    extents: Vec<Extent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 1 KiB-block file system: superblock fields only, no
    /// groups, so that `Fs::open` can be tested field by field.
    fn superblock() -> Vec<u8> {
        let mut image = vec![0u8; 64 * 1024];
        let sb = &mut image[1024..2048];
        sb[0x00..0x04].copy_from_slice(&16u32.to_le_bytes()); // inodes
        sb[0x04..0x08].copy_from_slice(&64u32.to_le_bytes()); // blocks
        sb[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // first data block
        sb[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        sb[0x28..0x2C].copy_from_slice(&16u32.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        sb[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        sb[0x60..0x64].copy_from_slice(&(INCOMPAT_FILETYPE | 0x40).to_le_bytes());
        image
    }

    fn set_u32(image: &mut [u8], at: usize, value: u32) {
        image[1024 + at..1024 + at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn superblock_fields_are_checked() {
        let image = superblock();
        let fs = Fs::open(&image).unwrap();
        assert_eq!(
            (fs.block_size, fs.blocks, fs.groups, fs.desc_size),
            (1024, 64, 1, 32)
        );

        let mut bad = superblock();
        set_u32(&mut bad, 0x18, 7);
        assert!(matches!(
            Fs::open(&bad),
            Err(Error::Superblock {
                field: "s_log_block_size",
                ..
            })
        ));

        let mut bad = superblock();
        set_u32(&mut bad, 0x60, INCOMPAT_FILETYPE | 0x1 | 0x8000_0000);
        assert_eq!(
            Fs::open(&bad).unwrap_err(),
            Error::Incompatible {
                flags: 0x8000_0001,
                names: "compression, unknown".into()
            }
        );

        let mut bad = superblock();
        set_u32(&mut bad, 0x04, 65);
        assert!(matches!(
            Fs::open(&bad),
            Err(Error::Truncated { need: 66_560, .. })
        ));

        let mut bad = superblock();
        set_u32(&mut bad, 0x00, 1 << 20);
        assert!(matches!(
            Fs::open(&bad),
            Err(Error::Superblock {
                field: "s_inodes_count",
                ..
            })
        ));

        let mut bad = superblock();
        set_u32(&mut bad, 0x20, 0);
        assert!(matches!(
            Fs::open(&bad),
            Err(Error::Superblock {
                field: "s_blocks_per_group",
                ..
            })
        ));

        assert!(Fs::open(&image[..1500]).is_err());
    }

    #[test]
    fn sparse_super_groups() {
        let image = superblock();
        let mut fs = Fs::open(&image).unwrap();
        fs.sparse_super = true;
        let with: Vec<u64> = (0..50).filter(|&g| fs.has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
        fs.backup_bgs = Some([1, 7]);
        let with: Vec<u64> = (0..50).filter(|&g| fs.has_super(g)).collect();
        assert_eq!(with, [0, 1, 7]);
    }

    #[test]
    fn rec_len_of_64k_blocks() {
        let image = superblock();
        let mut fs = Fs::open(&image).unwrap();
        assert_eq!(fs.rec_len(12), 12);
        fs.block_size = 65_536;
        assert_eq!(fs.rec_len(0), 65_536);
        assert_eq!(fs.rec_len(u16::MAX), 65_536);
        assert_eq!(fs.rec_len(12), 12);
        assert_eq!(fs.rec_len(0xFFFC | 1), 0x1FFFC);
    }
}
