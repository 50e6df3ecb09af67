//! Errors raised while producing or applying segments.

use std::io;

/// What went wrong while applying or encoding a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key file or key line is malformed.
    #[error("bad key: {reason}")]
    Key {
        /// What is wrong (never secret bytes).
        reason: String,
    },
    /// Signatures are required and the delta carries none.
    #[error("the delta is not signed; signatures are required (trusted key ids: {trusted})")]
    Unsigned {
        /// Trusted key ids.
        trusted: String,
    },
    /// No signature is by a trusted key.
    #[error("no signature by a trusted key: signed by key ids {found}, trusted key ids {trusted}")]
    UntrustedSignatures {
        /// Key ids of the signatures found.
        found: String,
        /// Trusted key ids.
        trusted: String,
    },
    /// A signature by a trusted key does not verify.
    #[error("bad signature by trusted key id {key_id}: the delta was changed after signing, or the signature is forged")]
    BadSignature {
        /// The key id.
        key_id: String,
    },
    /// The bytes of a segment break the format.
    #[error("segment {segment}: {source}")]
    Format {
        /// Index of the segment.
        segment: u64,
        /// What is wrong.
        source: delta_format::Error,
    },
    /// The payload does not match the digest in the table.
    #[error(
        "segment {segment}: payload digest mismatch (delta bytes {offset}..{end} are damaged)"
    )]
    PayloadDigest {
        /// Index of the segment.
        segment: u64,
        /// Offset of the payload in the delta file.
        offset: u64,
        /// End of the payload in the delta file.
        end: u64,
    },
    /// The zstd frame of a payload cannot be decoded.
    #[error("segment {segment}: bad zstd frame: {reason}")]
    Decompress {
        /// Index of the segment.
        segment: u64,
        /// zstd's error name.
        reason: &'static str,
    },
    /// The LZMA2 data of an LZMA segment cannot be decoded.
    #[error("segment {segment} (LZMA): bad LZMA2 data: {reason}")]
    Lzma {
        /// Index of the segment.
        segment: u64,
        /// What liblzma or the length checks found.
        reason: &'static str,
    },
    /// A deflate segment's old stream does not inflate as stated, or its
    /// new stream cannot be rebuilt from its corrections.
    #[error("segment {segment}: deflate stream: {reason}")]
    Deflate {
        /// Segment index.
        segment: u64,
        /// What failed: inflating the old stream or rebuilding the new one.
        reason: String,
    },
    /// The decoded stream has another length than the table says.
    #[error("segment {segment}: stream decodes to {found} bytes, table says {stated}")]
    StreamLength {
        /// Index of the segment.
        segment: u64,
        /// Length in the table.
        stated: u64,
        /// Length decoded (at least this many when over).
        found: u64,
    },
    /// The bytes produced do not match the segment's digest.
    #[error(
        "source mismatch: segment {segment} (new image bytes {start}..{end}) does not match its \
         digest although its payload is intact: the old image is not the one this delta was made for"
    )]
    OutputDigest {
        /// Index of the segment.
        segment: u64,
        /// First byte of the new image the segment produces.
        start: u64,
        /// End of the range.
        end: u64,
    },
    /// Reading the old image failed.
    #[error("reading {len} bytes of the old image at offset {offset}: {source}")]
    ReadSource {
        /// Offset in the old image.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// Reading back new-image bytes that an earlier segment wrote failed.
    #[error("reading back {len} bytes of the new image at offset {offset}: {source}")]
    ReadBack {
        /// Offset in the new image.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("writing the new image at offset {offset}: {source}")]
    Write {
        /// Offset in the new image.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The header or table of a delta is malformed.
    #[error("delta header: {0}")]
    Header(#[source] delta_format::Error),
    /// The old image has another size than the delta was made for.
    #[error("old image is {found} bytes, the delta was made for {expected} bytes")]
    OldLength {
        /// Size in the header.
        expected: u64,
        /// Size of the image given.
        found: u64,
    },
    /// The whole new image does not match the header's digest.
    #[error("new image digest mismatch: the result is not the image this delta was made for")]
    NewDigest,
    /// zstd refused to compress (out of memory or a bad parameter).
    #[error("zstd compression failed: {reason}")]
    Compress {
        /// zstd's error name.
        reason: &'static str,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why applying a segment failed: the segment itself, or its [`Sink`]
/// (`E`, the sink's own error type).
///
/// [`Sink`]: crate::Sink
#[derive(Debug)]
pub enum SegmentError<E> {
    /// The segment: a damaged payload, a stream that breaks the format,
    /// old-image reads failing, a digest mismatch.
    Segment(Error),
    /// The sink failed, or stopped the segment, writing new-image bytes at
    /// `offset`.
    Write {
        /// Offset in the new image.
        offset: u64,
        /// The sink's error.
        error: E,
    },
    /// The sink failed reading back new-image bytes (for `COPY_NEW` ops or
    /// deflate sources in the new image).
    ReadBack {
        /// Offset in the new image.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// The sink's error.
        error: E,
    },
}

impl<E> From<Error> for SegmentError<E> {
    fn from(e: Error) -> Self {
        SegmentError::Segment(e)
    }
}

/// The same words as [`Error::Write`] and [`Error::ReadBack`].
impl<E: std::fmt::Display> std::fmt::Display for SegmentError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentError::Segment(e) => e.fmt(f),
            SegmentError::Write { offset, error } => {
                write!(f, "writing the new image at offset {offset}: {error}")
            }
            SegmentError::ReadBack { offset, len, error } => write!(
                f,
                "reading back {len} bytes of the new image at offset {offset}: {error}"
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for SegmentError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SegmentError::Segment(e) => e.source(),
            SegmentError::Write { error, .. } | SegmentError::ReadBack { error, .. } => Some(error),
        }
    }
}

/// A segment applied into an `io::Error` sink (a vector, a file): its
/// failure as one [`Error`].
impl From<SegmentError<io::Error>> for Error {
    fn from(e: SegmentError<io::Error>) -> Self {
        match e {
            SegmentError::Segment(e) => e,
            SegmentError::Write { offset, error } => Error::Write {
                offset,
                source: error,
            },
            SegmentError::ReadBack { offset, len, error } => Error::ReadBack {
                offset,
                len,
                source: error,
            },
        }
    }
}
