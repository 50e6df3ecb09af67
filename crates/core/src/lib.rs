//! Diff and patch algorithms of the delta engine.
//!
//! - [`diff`]: a [`BlockIndex`] of the old image and [`plan_segment`], which
//!   matches one range of the new image into a [`SegmentPlan`] (copies, zero
//!   runs, bsdiff-style diffs and literals);
//! - [`encode`]: [`encode_segment`] compresses a plan into one zstd frame
//!   (referencing a window of the old image) and its table entry;
//! - [`patch`]: a [`Patcher`] applies one segment from a [`Source`] (the old
//!   image, read by position) into a [`Sink`], checking its digest.
//!
//! Data flow: generator = `BlockIndex` → `plan_segment` → `encode_segment`
//! per segment; applier = `Patcher::apply_segment` per segment, in order.
//!
//! This crate is pure: no paths, clocks, threads or globals. Applying holds
//! at most one segment's payload, stream and reference plus
//! [`patch::COPY_CHUNK`] bytes, all bounded by the header's `apply_memory`
//! which callers check against their limit. Planning holds the whole old and
//! new images as slices (the generator maps them).
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
pub mod encode;
mod error;
mod index;
pub mod patch;
mod plan;
pub mod reuse;
mod rolling;
mod sink;
mod source;
pub mod testing;
pub mod window;

/// The index and hash helpers the generator builds its block index with.
#[doc(hidden)]
pub mod diff {
    pub use crate::index::{anchor_mask, anchors_in};
    pub use crate::rolling::{hash_block, is_zero};
}

pub use encode::{encode_segment, encode_segment_digested, EncodeOptions};
pub use error::{Error, Result};
pub use index::BlockIndex;
pub use patch::{Patcher, SegmentRef, APPLY_OVERHEAD};
pub use plan::{plan_segment, DiffOptions, SegmentPlan};
pub use sink::{NullSink, Sink, WriteSink};
pub use source::{describe_type, not_an_image, open_image, Source};

pub use window::{CopiedRuns, WindowLayout};

use delta_format::{
    Header, Index, Limits, SegmentEntry, FLAG_COPY_NEW, FLAG_FULL, FLAG_WINDOW_LIST,
};
use std::ops::Range;

/// Options of the one-thread, in-memory generator [`diff_slices`].
#[derive(Debug, Clone)]
pub struct SliceOptions {
    /// Matcher settings.
    pub diff: DiffOptions,
    /// Compression settings.
    pub encode: EncodeOptions,
    /// Bytes of new image per segment.
    pub segment_len: usize,
    /// Build a full-image payload (ignore `old`).
    pub full: bool,
    /// Largest merged segment, in bytes of new image.
    pub merge_len: usize,
    /// Let segments copy new content that earlier segments carry (see
    /// [`reuse`]); off, every segment depends on the old image only.
    pub copy_new: bool,
    /// Give payloads window lists, so that windows leave out long old runs
    /// that COPY ops take whole (see [`window`]); off, every window is one
    /// contiguous old range (readable without `FLAG_WINDOW_LIST`).
    pub window_list: bool,
}

impl SliceOptions {
    /// True when segments copy repeated new content from earlier ones
    /// (`copy_new`, and not a full payload, which copies nothing).
    pub fn copies_new(&self) -> bool {
        self.copy_new && !self.full
    }

    /// How segments lay out their windows: gathered without `copied` when
    /// [`window_list`](Self::window_list) is on.
    pub fn window_layout<'a>(&self, copied: &'a CopiedRuns) -> WindowLayout<'a> {
        if self.window_list {
            WindowLayout::Gathered(copied)
        } else {
            WindowLayout::Contiguous
        }
    }
}

impl Default for SliceOptions {
    fn default() -> Self {
        SliceOptions {
            diff: DiffOptions::default(),
            encode: EncodeOptions::default(),
            segment_len: 4 << 20,
            full: false,
            merge_len: arrange::MAX_MERGED_LEN,
            copy_new: true,
            window_list: true,
        }
    }
}

/// Turns the plans of the units, in order, into the plans of the segments:
/// merges cheap neighbours and widens the windows of edits. Callers then
/// run [`reuse::copy_repeats`] when [`SliceOptions::copies_new`].
pub fn arrange_segments(
    units: Vec<(Range<usize>, SegmentPlan)>,
    old_len: u64,
    options: &SliceOptions,
) -> Vec<(Range<usize>, SegmentPlan)> {
    arrange::arrange(
        units,
        options.merge_len,
        options.diff.max_reference,
        old_len,
    )
}

/// Builds the header for `segments` (digests of both images included);
/// `copy_new` (some segment holds a COPY_NEW op) sets `FLAG_COPY_NEW`.
pub fn build_header(
    old: &[u8],
    new: &[u8],
    old_digest: [u8; 32],
    new_digest: [u8; 32],
    segments: &[SegmentEntry],
    options: &SliceOptions,
    copy_new: bool,
) -> Header {
    let mut flags = if options.full { FLAG_FULL } else { 0 };
    if copy_new {
        flags |= FLAG_COPY_NEW;
    }
    if options.window_list {
        flags |= FLAG_WINDOW_LIST;
    }
    Header {
        flags,
        old_len: if options.full { 0 } else { old.len() as u64 },
        new_len: new.len() as u64,
        old_digest,
        new_digest,
        block_size: options.diff.block_size as u32,
        zstd_level: options.encode.level,
        max_segment_len: segments.iter().map(|s| s.new_len).max().unwrap_or(0),
        apply_memory: segments.iter().map(SegmentEntry::memory).max().unwrap_or(0),
        segment_count: segments.len() as u64,
    }
}

/// Splits `0..len` into ranges of `step` bytes (the last one shorter).
pub fn unit_ranges(len: usize, step: usize) -> Vec<std::ops::Range<usize>> {
    let step = step.max(1);
    (0..len)
        .step_by(step)
        .map(|start| start..(start + step).min(len))
        .collect()
}

/// Generates a whole delta in memory on one thread: the small reference
/// generator for tests and fuzzing (the `delta-gen` crate is the fast one).
///
/// # Errors
/// [`Error::Compress`] when zstd fails.
pub fn diff_slices(old: &[u8], new: &[u8], options: &SliceOptions) -> Result<Vec<u8>> {
    let old = if options.full { &[][..] } else { old };
    let index = BlockIndex::build(old, options.diff.block_size);
    let units = unit_ranges(new.len(), options.segment_len)
        .into_iter()
        .map(|range| {
            let plan = plan_segment(old, new, range.clone(), &index, &options.diff);
            (range, plan)
        })
        .collect();
    let mut segments = Vec::new();
    let mut payloads = Vec::new();
    let mut merged = arrange_segments(units, old.len() as u64, options);
    let copy_new = options.copies_new() && reuse::copy_repeats(&mut merged, new) > 0;
    let copied = CopiedRuns::from_plans(merged.iter().map(|(_, plan)| plan));
    let layout = options.window_layout(&copied);
    for (range, plan) in merged {
        let new = &new[range];
        let digest = *blake3::hash(new).as_bytes();
        let (entry, payload) =
            encode_segment_digested(old, new, digest, &plan, layout, &options.encode)?;
        segments.push(entry);
        payloads.push(payload);
    }
    let header = build_header(
        old,
        new,
        *blake3::hash(old).as_bytes(),
        *blake3::hash(new).as_bytes(),
        &segments,
        options,
        copy_new,
    );
    let mut out = Index::encode(&header, &segments);
    for payload in payloads {
        out.extend_from_slice(&payload);
    }
    Ok(out)
}

/// Applies a whole delta held in memory to `old`, returning the new image:
/// the small reference applier for tests and fuzzing. It checks everything
/// the streaming applier checks except the old image's digest. It holds the
/// whole new image, so callers bound it with `limits.max_output`.
///
/// # Errors
/// Any format, digest or length error.
pub fn apply_slice(old: &[u8], delta: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    let index = delta_format::read_index(&mut &delta[..], limits).map_err(Error::Header)?;
    if index.header.old_len != old.len() as u64 && !index.header.is_full() {
        return Err(Error::OldLength {
            expected: index.header.old_len,
            found: old.len() as u64,
        });
    }
    let old = if index.header.is_full() { &[][..] } else { old };
    index
        .check_file_len(delta.len() as u64)
        .map_err(Error::Header)?;
    let mut out = Vec::new();
    let mut patcher = Patcher::new();
    for i in 0..index.segments.len() {
        let seg = SegmentRef::of(&index, i);
        // In bounds: the table's payload ranges add up to the delta's length.
        let start = seg.payload_offset as usize;
        let payload = &delta[start..start + seg.entry.payload_len as usize];
        patcher.apply_segment(old, seg, payload, &mut out)?;
    }
    if blake3::hash(&out).as_bytes() != &index.header.new_digest {
        return Err(Error::NewDigest);
    }
    Ok(out)
}
