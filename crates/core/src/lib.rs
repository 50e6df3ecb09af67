//! Diff and patch algorithms of the delta engine.
//!
//! Generating is one pipeline, [`generate`]: index the old image
//! ([`BlockIndex`]), plan each unit of the new image ([`plan_segment`]: copies,
//! zero runs, bsdiff-style diffs and literals, as a [`SegmentPlan`]), merge
//! units into segments, copy repeated new content ([`copy_repeats`]),
//! compress each segment ([`encode_segment`]: one zstd frame referencing a
//! window of the old image, laid out as a [`WindowLayout`]) and build the
//! header, giving a [`Delta`]. The caller's [`Runner`] decides how the
//! independent work runs: [`Serial`] on the calling thread ([`diff_slices`]),
//! or the `delta-gen` crate's thread pool, which also re-applies every
//! segment.
//!
//! Applying: a [`Patcher`] applies one segment from a [`Source`] (the old
//! image, read by position) into a [`Sink`], checking its digest;
//! [`apply_slice`] applies a whole delta held in memory.
//!
//! This crate is pure: no paths, clocks or globals, and no threads of its
//! own (a [`Runner`] may bring them). Applying holds at most one segment's
//! payload, stream and reference plus a 256 KiB copy buffer, all bounded by
//! the header's `apply_memory` which callers check against their limit.
//! Generating holds the whole old and new images as slices (the generator
//! maps them), the block index, the plans and the payloads.
//!
//! ```
//! use delta_core::{apply_slice, diff_slices};
//! let old = b"the quick brown fox jumps over the lazy dog".repeat(200);
//! let mut new = old.clone();
//! new.splice(100..100, b"a small insertion".iter().copied());
//! let delta = diff_slices(&old, &new, &Default::default()).unwrap();
//! assert_eq!(apply_slice(&old, &delta, &Default::default()).unwrap(), new);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod arrange;
mod content;
mod deflate;
mod encode;
mod error;
mod hex;
mod index;
mod lzma;
mod patch;
mod pipeline;
mod plan;
mod report;
mod reuse;
mod rolling;
mod runner;
pub mod signature;
mod sink;
mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod window;

pub use content::ContentSummary;
pub use deflate::{
    chunks_of, first_line, inflate_exact, rebuild, ChunkData, InProcess, Rebuilder, Redeflate,
    RedeflateChunks,
};
pub use encode::{encode_segment, EncodeOptions};
pub use error::{Error, Result};
pub use hex::{from_hex, to_hex};
pub use index::BlockIndex;
pub use lzma::compress as compress_lzma;
pub use patch::{
    apply_slice, apply_slice_with, Patcher, SegmentRef, APPLY_OVERHEAD, DEFAULT_MAX_MEMORY,
    SEGMENT_MEMORY,
};
pub use pipeline::{diff_slices, generate, Delta, DeltaOptions};
pub use plan::{plan_segment, DiffOptions, SegmentPlan};
pub use report::{FileCost, How, Report};
pub use reuse::copy_repeats;
pub use runner::{Phase, Progress, Runner, Serial};
pub use sink::{NullSink, Sink};
pub use source::{describe_type, open_image, Source};
pub use window::{CopiedRuns, WindowLayout};
