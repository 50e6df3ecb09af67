//! Errors raised while decoding delta bytes.

/// Everything that can be wrong with the bytes of a delta file.
///
/// Each variant names the field or offset and what was expected, so that the
/// CLI can print one line that tells the user what is damaged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Reading the delta failed (an I/O error of the stream).
    #[error("read failed at offset {offset}: {message}")]
    Read {
        /// Offset in the delta where the read failed.
        offset: u64,
        /// The I/O error.
        message: String,
    },
    /// The delta file's length disagrees with its table.
    #[error(
        "file is {found} bytes, its segment table implies {expected} bytes (truncated or extended)"
    )]
    DeltaLength {
        /// Length implied by the table.
        expected: u64,
        /// Actual length.
        found: u64,
    },
    /// The input ended before a field was complete.
    #[error("truncated {what} at offset {offset}: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Offset of the structure within its container.
        offset: u64,
        /// Bytes needed.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// The file does not start with the delta magic bytes.
    #[error(
        "not a delta file: magic bytes at offset 0 are {found:02x?}, expected {expected:02x?}"
    )]
    BadMagic {
        /// What the file starts with.
        found: [u8; 8],
        /// The magic of this format.
        expected: [u8; 8],
    },
    /// A format version this build cannot read.
    #[error(
        "unsupported format version {found} at offset 8, this build reads version {supported}"
    )]
    UnsupportedVersion {
        /// Version found in the header.
        found: u32,
        /// Version this build supports.
        supported: u32,
    },
    /// Header flags with bits this build does not know.
    #[error("unknown header flags {found:#x} at offset 12 (known: {known:#x})")]
    UnknownFlags {
        /// Flags found.
        found: u32,
        /// Flags this build knows.
        known: u32,
    },
    /// A header or table field holds a value that breaks a rule of the format.
    #[error("invalid {field}: {found}, expected {expected}")]
    InvalidField {
        /// Which field (e.g. `segment[3].new_len`).
        field: String,
        /// The value found.
        found: u64,
        /// What the format requires.
        expected: String,
    },
    /// A limit set by the caller is exceeded.
    #[error("{what} is {found} bytes, over the limit of {limit} bytes")]
    OverLimit {
        /// What is too large.
        what: String,
        /// Size declared or needed.
        found: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// The header and segment table do not match their digest.
    #[error("header digest mismatch at offset {offset}: the header or segment table is damaged")]
    HeaderDigest {
        /// Offset of the stored digest.
        offset: u64,
    },
    /// A varint that does not fit in 64 bits.
    #[error("malformed varint in {what} at offset {offset}")]
    BadVarint {
        /// The structure being read.
        what: &'static str,
        /// Offset within that structure.
        offset: u64,
    },
    /// An op code that the format does not define.
    #[error("unknown op code {code:#04x} at offset {offset} of the code section")]
    UnknownOp {
        /// The code found.
        code: u8,
        /// Offset within the code section (the op's index).
        offset: u64,
    },
    /// An op of length zero (every op must produce at least one byte).
    #[error("op #{index} has length 0")]
    EmptyOp {
        /// Index of the op in its segment.
        index: u64,
    },
    /// An op reads outside the old image.
    #[error("op #{index} reads {len} bytes at old offset {src}, old image is {old_len} bytes")]
    SourceOutOfRange {
        /// Index of the op in its segment.
        index: u64,
        /// Offset in the old image (may be shown as wrapped when negative).
        src: i128,
        /// Bytes read.
        len: u64,
        /// Size of the old image.
        old_len: u64,
    },
    /// A COPY_NEW op reads new-image bytes that no earlier segment produced.
    #[error(
        "op #{index} copies {len} bytes at new offset {src}, but only the {limit} bytes of new image before its segment may be copied"
    )]
    NewSourceOutOfRange {
        /// Index of the op in its segment.
        index: u64,
        /// Offset in the new image (may be shown as wrapped when negative).
        src: i128,
        /// Bytes read.
        len: u64,
        /// Bytes of new image the segment may copy from (0 without
        /// `FLAG_COPY_NEW`).
        limit: u64,
    },
    /// The ops of a segment disagree with the sizes its table entry states.
    #[error("segment stream inconsistent: {what}: stated {stated}, ops give {actual}")]
    StreamMismatch {
        /// Which count disagrees.
        what: &'static str,
        /// The stated value.
        stated: u64,
        /// The value the ops add up to.
        actual: u64,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
