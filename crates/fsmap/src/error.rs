//! Errors raised while mapping an image.

/// Everything that can be wrong with an image.
///
/// Each variant names the structure, the field or inode, and the offset in
/// the image where the problem was found, so that the generator can log one
/// line that says why it fell back to treating the image as plain bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Neither an ext4 superblock nor a tar header was found.
    #[error(
        "unknown image type: no ext4 superblock magic at offset 1080 and no valid ustar/GNU tar \
         header at offset 0"
    )]
    Unknown,
    /// A structure runs past the end of the image.
    #[error("truncated {what} at offset {offset}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Offset in the image where it starts.
        offset: u64,
        /// Bytes it needs.
        need: u64,
        /// Bytes the image has from `offset` on.
        have: u64,
    },
    /// An ext4 superblock field has a value this reader cannot use.
    #[error("ext4 superblock: {field} = {value}: {reason}")]
    Superblock {
        /// Name of the field (as in the kernel's `struct ext4_super_block`).
        field: &'static str,
        /// The value found.
        value: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The file system uses incompatible features this reader does not handle.
    #[error("ext4 superblock: s_feature_incompat has unsupported features {flags:#x} ({names})")]
    Incompatible {
        /// The unsupported bits.
        flags: u32,
        /// Their names, comma-separated (`unknown` for bits without one).
        names: String,
    },
    /// A group descriptor is invalid.
    #[error("ext4 group descriptor {group} at offset {offset}: {reason}")]
    GroupDescriptor {
        /// Block group number.
        group: u64,
        /// Offset of the descriptor in the image.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An inode number or an inode's fields are invalid.
    #[error("ext4 inode {inode}: {reason}")]
    Inode {
        /// Inode number.
        inode: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An extent tree node is invalid.
    #[error("ext4 inode {inode}: extent tree node at offset {offset}: {reason}")]
    ExtentNode {
        /// Inode whose tree it is.
        inode: u64,
        /// Offset of the node in the image.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An extent points outside the file system.
    #[error(
        "ext4 inode {inode}: extent of {len} blocks at block {start} (file block {logical}) ends \
         past the file system's {blocks} blocks"
    )]
    ExtentOutOfRange {
        /// Inode whose extent it is.
        inode: u64,
        /// First file block of the extent.
        logical: u64,
        /// First file system block of the extent.
        start: u64,
        /// Length in blocks.
        len: u64,
        /// Blocks in the file system.
        blocks: u64,
    },
    /// Two extents of one file cover the same file blocks or are out of order.
    #[error(
        "ext4 inode {inode}: extent at file block {logical} overlaps or precedes the one before"
    )]
    ExtentOrder {
        /// Inode whose extents they are.
        inode: u64,
        /// First file block of the offending extent.
        logical: u64,
    },
    /// A directory entry is invalid.
    #[error("ext4 directory inode {inode}: entry at offset {offset}: {reason}")]
    DirEntry {
        /// Directory inode.
        inode: u64,
        /// Offset of the entry in the image.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A directory was reached twice: a cycle or a hard-linked directory.
    #[error("ext4 directory inode {inode} reached again at {path}")]
    DirectoryCycle {
        /// Directory inode.
        inode: u64,
        /// The second path it was reached by.
        path: String,
    },
    /// Directories nest deeper than [`crate::MAX_DEPTH`].
    #[error("directories nest deeper than {limit} levels at {path}")]
    TooDeep {
        /// The path of the directory past the limit.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// Mapping would take more work or memory than the image's size allows.
    #[error("mapping needs more than {limit} {what} (limit proportional to the image length)")]
    Limit {
        /// `"steps"` (entries parsed) or `"output bytes"`.
        what: &'static str,
        /// The limit that was reached.
        limit: u64,
    },
    /// A tar header's checksum does not match its bytes.
    #[error("tar header at offset {offset}: checksum {stored} stored, {computed} computed")]
    TarChecksum {
        /// Offset of the header.
        offset: u64,
        /// The checksum field's value.
        stored: u64,
        /// The sum of the header's bytes.
        computed: u64,
    },
    /// A tar header or extended header field is invalid.
    #[error("tar header at offset {offset}: {field}: {reason}")]
    TarField {
        /// Offset of the header.
        offset: u64,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
