//! Diff and patch algorithms of the delta engine, in two halves over a
//! shared bottom.
//!
//! The generate half (a build server's): one pipeline, [`generate`]. It
//! indexes the old image, plans each unit of the new image (copies, zero
//! runs, bsdiff-style diffs and literals), merges units into segments,
//! copies repeated new content, rebuilds gzip and zlib files from their
//! text, compresses each segment (one zstd frame referencing a window of
//! the old image) and builds the header, giving a [`Delta`]. The caller's
//! [`Runner`] decides how the independent work runs: [`Serial`] on the
//! calling thread ([`diff_slices`]), or the `delta-gen` crate's thread
//! pool, which also re-applies every segment.
//!
//! The apply half (a device's): a [`Patcher`] applies one segment from a
//! [`Source`] (the old image, read by position) into a [`Sink`], checking
//! its digest; a [`Redeflate`] rebuilds deflate streams; [`apply_slice`]
//! applies a whole delta held in memory. It uses nothing of the generate
//! half.
//!
//! The bottom both share: errors, zstd frames, LZMA, where a segment sits
//! ([`SegmentRef`]) and signatures ([`signature`]). The single steps of
//! the pipeline are in [`internal`] for benchmarks and fuzz targets.
//!
//! This crate is pure: no paths, clocks or globals, and no threads of its
//! own (a [`Runner`] may bring them); `delta-image` opens images. Applying
//! holds at most one segment's payload, stream and reference plus a 256 KiB
//! copy buffer, all bounded by the header's `apply_memory` which callers
//! check against their limit. Generating holds the whole old and new images
//! as slices (the generator maps them), the block index, the plans and the
//! payloads.
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

// The two halves, and the shared bottom they both use (error, frame,
// lzma, segment, signature, hex). The generate half may use the apply half
// (to prove what it makes rebuilds); the apply half never uses the generate
// half.
mod apply;
mod error;
mod exec;
mod frame;
mod generate;
mod hex;
mod lzma;
mod segment;
pub mod signature;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result, SegmentError};
pub use hex::{from_hex, to_hex};
pub use segment::{SegmentRef, SEGMENT_MEMORY};

// The apply half.
pub use apply::patch::{
    apply_slice, apply_slice_with, Patcher, APPLY_OVERHEAD, DEFAULT_MAX_MEMORY,
};
pub use apply::rebuild::{
    first_line, rebuild, InProcess, Rebuilder, Redeflate, RedeflateChunks, SharedContent,
};
pub use apply::sink::Sink;
pub use apply::source::Source;

// The generate half.
pub use generate::content::ContentSummary;
pub use generate::encode::EncodeOptions;
pub use generate::pipeline::{
    diff_slices, generate, generate_reusing, Delta, DeltaOptions, NewImage,
};
pub use generate::plan::DiffOptions;
pub use generate::report::{FileCost, How, Report};
pub use generate::runner::{Phase, Progress, Runner, Serial};

/// The steps inside [`generate`] and [`Patcher`], one at a time, for the
/// workspace's benchmarks and fuzz targets: not a stable API.
#[doc(hidden)]
pub mod internal {
    pub use crate::apply::patch::apply_one_segment;
    pub use crate::apply::rebuild::inflate_exact;
    pub use crate::apply::sink::NullSink;
    pub use crate::exec::rewrite_for_tests as exec_rewrite;
    pub use crate::generate::deflate::{chunks_of, ChunkData};
    pub use crate::generate::encode::{encode_segment, Encoded, Produced};
    pub use crate::generate::exec::file_segment as exec_file_segment;
    pub use crate::generate::fine::{fine_plan, fine_plan_with, suffix_array, FineOptions};
    pub use crate::generate::index::BlockIndex;
    pub use crate::generate::plan::{plan_segment, SegmentPlan};
    pub use crate::generate::reuse::copy_repeats;
    pub use crate::generate::window::{CopiedRuns, WindowLayout};
    pub use crate::lzma::compress as compress_lzma;
}
