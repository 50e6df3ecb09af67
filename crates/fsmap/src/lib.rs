//! Maps the regular files inside an OS image to the bytes of the image
//! that hold them, so that the generator can treat some files (gzip
//! streams) specially.
//!
//! # Main types and data flow
//!
//! The caller hands in the whole image as a byte slice (the generator
//! mmaps it). [`map_image`] looks at the first bytes and calls [`map_ext4`]
//! or [`map_tar`]; each returns a [`FileMap`]: the [`ContainerKind`] and one
//! [`MappedFile`] per path of a regular file, sorted by path. A file's
//! [`Extent`]s say which byte ranges of the image hold which byte ranges of
//! the file; [`MappedFile::contiguous`] says whether the file is one run of
//! the image, which is what a caller usually wants to know.
//!
//! # What it does not do
//!
//! It reads no file data and checks no checksums (metadata_csum, tar
//! content): the map is a hint, and the generator's round trip checks the
//! delta it builds from it. It writes nothing, knows no partition tables,
//! and leaves out files whose bytes are not plain runs of the image: ext4
//! inline data and block-mapped (ext2/3 style) files, tar sparse members.
//!
//! # Untrusted images
//!
//! The image is untrusted. Nothing here panics on its bytes or loops
//! without bound; every offset and length read from it is checked. Work and
//! memory are bounded by the image length: at most `len / 4 + 65536` parse
//! steps (directory entries, extent entries, tar headers) and at most
//! `len + 1 MiB` bytes of output (paths and extents), past which mapping
//! fails with [`Error::Limit`]. Errors name the structure and the offset,
//! field or inode that was wrong.
//!
//! # Example
//!
//! ```
//! // A one-member tar archive: a 512-byte header, then the data.
//! let mut image = vec![0u8; 512 * 4];
//! image[..5].copy_from_slice(b"hello");
//! image[100..107].copy_from_slice(b"0000644");
//! image[124..135].copy_from_slice(b"00000000003");
//! image[156] = b'0';
//! image[257..263].copy_from_slice(b"ustar\0");
//! image[263..265].copy_from_slice(b"00");
//! image[148..156].copy_from_slice(b"        ");
//! let sum: u32 = image[..512].iter().map(|&b| u32::from(b)).sum();
//! image[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
//! image[512..515].copy_from_slice(b"hi\n");
//!
//! let map = delta_fsmap::map_image(&image).unwrap();
//! assert_eq!(map.kind, delta_fsmap::ContainerKind::Tar);
//! assert_eq!(map.files[0].path, "/hello");
//! assert_eq!(map.files[0].contiguous(), Some(512..515));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod ext4;
mod read;
mod tar;

pub use error::{Error, Result};

use std::ops::Range;

/// Deepest directory nesting [`map_ext4`] follows before it fails with
/// [`Error::TooDeep`].
pub const MAX_DEPTH: u64 = 64;

/// The regular files of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMap {
    /// What the image is.
    pub kind: ContainerKind,
    /// One entry per path of a regular file, sorted by path. A path may
    /// appear twice (a tar archive with an appended copy of a member);
    /// hard links give one entry per path, with the same extents.
    pub files: Vec<MappedFile>,
}

/// The kind of image a [`FileMap`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// An ext2/3/4 file system (only extent-mapped files are listed).
    Ext4,
    /// A ustar, GNU or pax tar archive.
    Tar,
}

/// A regular file and where its bytes are in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    /// Absolute path inside the image, e.g. `/usr/share/doc/x/changelog.gz`;
    /// names that are not UTF-8 are converted lossily.
    pub path: String,
    /// File size in bytes.
    pub size: u64,
    /// The file's data, in increasing `logical` order, not overlapping.
    /// Ranges of the file not covered (holes, unwritten extents) read as
    /// zeros. Adjacent extents that are also adjacent in the image are
    /// merged.
    pub extents: Vec<Extent>,
}

/// A run of a file's bytes that is a run of the image's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset in the image.
    pub physical: u64,
    /// Length in bytes, clipped to the file size.
    pub len: u64,
}

impl MappedFile {
    /// The file's bytes are one run of the image: `Some(physical range)`,
    /// so that `image[range]` is the file's content. `None` when the file
    /// has holes, is split over several places, or is empty (no bytes to
    /// place).
    pub fn contiguous(&self) -> Option<Range<u64>> {
        let first = self.extents.first()?;
        if first.logical != 0 || self.size == 0 {
            return None;
        }
        let mut end = first.physical.checked_add(first.len)?;
        let mut covered = first.len;
        for extent in self.extents.get(1..).unwrap_or_default() {
            if extent.logical != covered || extent.physical != end {
                return None;
            }
            end = end.checked_add(extent.len)?;
            covered = covered.checked_add(extent.len)?;
        }
        (covered == self.size).then_some(first.physical..end)
    }
}

/// Maps the regular files of an ext2/3/4 file system image.
///
/// Regular files with extents are listed; files with inline data or a
/// block map (no `EXTENTS` flag), and all other inode types, are left out.
///
/// # Errors
///
/// Fails on a superblock this reader cannot use (bad magic, sizes, or
/// unsupported incompatible features such as compression, journal
/// devices, dirdata, encryption, or a journal that needs recovery), an
/// image shorter than the file system, invalid group descriptors, inodes,
/// extent trees or directory entries, extents past the end of the file
/// system, directory cycles, nesting past [`MAX_DEPTH`], block-mapped
/// directories, and the work limits of the crate docs.
pub fn map_ext4(image: &[u8]) -> Result<FileMap> {
    ext4::map(image)
}

/// Maps the regular file members of a tar archive (ustar, GNU, pax).
///
/// Each regular member (type `0`, `\0` or `7`) is one extent, the data
/// right after its header; GNU long names (`L`) and pax `path` and `size`
/// records apply to the member after them; hard links (`1`) to an earlier
/// member get its extents. Sparse members are left out. The archive ends at
/// a zero block or at the end of the image.
///
/// # Errors
///
/// Fails on a header with a bad checksum or magic, an unparsable size,
/// a member whose data runs past the image, a malformed pax record, and
/// the work limits of the crate docs.
pub fn map_tar(image: &[u8]) -> Result<FileMap> {
    tar::map(image)
}

/// Maps an image of either kind: ext4 if the superblock magic `0xEF53` is
/// at offset 1080, else tar if a valid ustar or GNU header is at offset 0.
///
/// # Errors
///
/// [`Error::Unknown`] when neither is found, else the errors of
/// [`map_ext4`] or [`map_tar`].
pub fn map_image(image: &[u8]) -> Result<FileMap> {
    if ext4::has_magic(image) {
        map_ext4(image)
    } else if tar::has_header(image) {
        map_tar(image)
    } else {
        Err(Error::Unknown)
    }
}

/// Work and memory left for one mapping, both proportional to the image
/// length (see the crate docs).
#[derive(Debug)]
struct Budget {
    steps: u64,
    steps_limit: u64,
    bytes: u64,
    bytes_limit: u64,
}

/// Bytes one [`MappedFile`] costs beyond its path and extents.
const FILE_COST: u64 = 64;
/// Bytes one [`Extent`] costs.
const EXTENT_COST: u64 = 24;

impl Budget {
    fn new(image_len: usize) -> Self {
        let len = u64::try_from(image_len).unwrap_or(u64::MAX);
        let steps_limit = (len / 4).saturating_add(65_536);
        let bytes_limit = len.saturating_add(1 << 20);
        Self {
            steps: steps_limit,
            steps_limit,
            bytes: bytes_limit,
            bytes_limit,
        }
    }

    /// Takes `n` parse steps.
    fn step(&mut self, n: u64) -> Result<()> {
        self.steps = self.steps.checked_sub(n).ok_or(Error::Limit {
            what: "steps",
            limit: self.steps_limit,
        })?;
        Ok(())
    }

    /// Takes `n` bytes of output.
    fn spend(&mut self, n: u64) -> Result<()> {
        self.bytes = self.bytes.checked_sub(n).ok_or(Error::Limit {
            what: "output bytes",
            limit: self.bytes_limit,
        })?;
        Ok(())
    }

    /// Takes the output cost of one file with `extents` extents.
    fn spend_file(&mut self, path_len: usize, extents: usize) -> Result<()> {
        let path = u64::try_from(path_len).unwrap_or(u64::MAX);
        let extents = u64::try_from(extents)
            .unwrap_or(u64::MAX)
            .saturating_mul(EXTENT_COST);
        self.spend(FILE_COST.saturating_add(path).saturating_add(extents))
    }
}

/// Appends an extent to `extents`, merging it into the last one when it
/// continues it both in the file and in the image.
fn push_extent(extents: &mut Vec<Extent>, extent: Extent) {
    if let Some(last) = extents.last_mut() {
        if last.logical.checked_add(last.len) == Some(extent.logical)
            && last.physical.checked_add(last.len) == Some(extent.physical)
        {
            if let Some(len) = last.len.checked_add(extent.len) {
                last.len = len;
                return;
            }
        }
    }
    extents.push(extent);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, extents: &[(u64, u64, u64)]) -> MappedFile {
        MappedFile {
            path: "/f".into(),
            size,
            extents: extents
                .iter()
                .map(|&(logical, physical, len)| Extent {
                    logical,
                    physical,
                    len,
                })
                .collect(),
        }
    }

    #[test]
    fn contiguous_cases() {
        assert_eq!(file(10, &[(0, 100, 10)]).contiguous(), Some(100..110));
        assert_eq!(
            file(10, &[(0, 100, 4), (4, 104, 6)]).contiguous(),
            Some(100..110)
        );
        // Split in the image.
        assert_eq!(file(10, &[(0, 100, 4), (4, 200, 6)]).contiguous(), None);
        // Hole at the start, in the middle, at the end.
        assert_eq!(file(10, &[(2, 100, 8)]).contiguous(), None);
        assert_eq!(file(10, &[(0, 100, 4), (6, 106, 4)]).contiguous(), None);
        assert_eq!(file(10, &[(0, 100, 8)]).contiguous(), None);
        // Empty files and files without extents.
        assert_eq!(file(0, &[]).contiguous(), None);
        assert_eq!(file(10, &[]).contiguous(), None);
        // Overflow does not panic.
        assert_eq!(file(10, &[(0, u64::MAX, 10)]).contiguous(), None);
    }

    #[test]
    fn push_extent_merges_only_runs() {
        let mut extents = Vec::new();
        push_extent(
            &mut extents,
            Extent {
                logical: 0,
                physical: 4096,
                len: 4096,
            },
        );
        push_extent(
            &mut extents,
            Extent {
                logical: 4096,
                physical: 8192,
                len: 100,
            },
        );
        push_extent(
            &mut extents,
            Extent {
                logical: 8192,
                physical: 12288,
                len: 1,
            },
        );
        assert_eq!(
            extents,
            [
                Extent {
                    logical: 0,
                    physical: 4096,
                    len: 4196
                },
                Extent {
                    logical: 8192,
                    physical: 12288,
                    len: 1
                },
            ]
        );
    }

    #[test]
    fn budget_runs_out() {
        let mut budget = Budget::new(0);
        budget.step(65_536).unwrap();
        assert_eq!(
            budget.step(1),
            Err(Error::Limit {
                what: "steps",
                limit: 65_536
            })
        );
        assert!(budget.spend(1 << 20).is_ok());
        assert!(budget.spend_file(0, 0).is_err());
    }

    #[test]
    fn random_bytes_are_unknown() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..1 << 16)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect();
        assert_eq!(map_image(&bytes), Err(Error::Unknown));
        assert_eq!(map_image(&[]), Err(Error::Unknown));
    }
}
