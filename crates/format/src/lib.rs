//! Wire format of delta files (versions 2 to 6).
//!
//! A delta file rebuilds a *new* image from an *old* one (or from nothing,
//! for a full-image payload). This crate knows its byte layout and nothing
//! else: no files, no compression, no tuning. The full specification is in
//! `FORMAT.md` at the root of the repository.
//!
//! Data flows through three types:
//! - [`Header`]: the fixed 128-byte header (sizes, digests, generator
//!   parameters, memory an applier needs);
//! - [`Index`]: header plus segment table ([`SegmentEntry`]), checked and
//!   with derived offsets, read from any stream by [`read_index`], the one
//!   reader every consumer uses;
//! - [`window`]: the old-image ranges of a segment's reference prefix, at
//!   the start of its payload (with [`FLAG_WINDOW_LIST`]);
//! - [`stream`]: the decompressed content of one segment, encoded from
//!   [`Op`]s and decoded into [`Instruction`]s that borrow their bytes.
//!
//! Nothing here trusts a length it reads: every size is checked against the
//! bytes present, the header and the caller's [`Limits`] before use, and
//! decoding allocates at most the table (bounded by `Limits::max_segments`).
//!
//! ```
//! use delta_format::{stream, Op};
//! let bytes = stream::encode(&[Op::Zero { len: 4 }, Op::Literal { len: 2 }], &[], b"hi");
//! let mut decoder = stream::Decoder::new(&bytes, 0).unwrap();
//! while let Some(_instruction) = decoder.next_instruction().unwrap() {}
//! assert_eq!(decoder.finish().unwrap().zero, 4);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod exec;
mod header;
pub mod kind;
mod reader;
pub mod signature;
pub mod stream;
pub mod varint;
pub mod window;

pub use error::{Error, Result};
pub use header::{
    max_reference_total, Digest, Header, Index, Limits, OutputTotals, SegmentEntry, DIGEST_LEN,
    ENTRY_LEN, FLAG_COPY_NEW, FLAG_DEFLATE_CHUNKS, FLAG_EXEC, FLAG_FULL, FLAG_LZMA, FLAG_MIGRATION,
    FLAG_SEGMENT_KINDS, FLAG_SIGNED, FLAG_WINDOW_LIST, HEADER_LEN, MAGIC, MIN_VERSION,
    REFERENCE_FACTOR, REFERENCE_SLACK, STREAM_SLACK, VERSION,
};
pub use reader::read_index;
pub use stream::{Instruction, Op, Totals};
