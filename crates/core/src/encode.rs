//! Turning a segment plan (ops plus data) into a payload and table entry.

use crate::error::{Error, Result};
use crate::window::{CopiedRuns, WindowLayout};
use delta_format::{stream, Digest, Op, SegmentEntry};
use std::borrow::Cow;
use std::ops::Range;

/// What one segment should contain, before compression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Ops in order; their lengths add up to the segment's length.
    pub ops: Vec<Op>,
    /// Bytes consumed by the diff ops, in order.
    pub diff: Vec<u8>,
    /// Bytes consumed by the literal ops, in order.
    pub literal: Vec<u8>,
    /// Old-image range given to zstd as reference prefix (empty: none).
    pub reference: std::ops::Range<u64>,
    /// Other windows worth a trial when the stream is small: those of
    /// merged units that lost to `reference` (see [`encode_segment`]).
    pub alternatives: Vec<std::ops::Range<u64>>,
}

impl SegmentPlan {
    /// Bytes of new image the plan produces.
    pub fn new_len(&self) -> u64 {
        self.ops.iter().map(Op::len).sum()
    }
}

/// Most bytes of new image one merged segment may produce, by default: no
/// limit. A segment's length costs the applier no memory, and a power cut
/// inside one costs only the writes since the applier's last journal
/// checkpoint (it checkpoints inside segments), so only the stream limit
/// below bounds a merge.
pub const MAX_MERGED_LEN: usize = usize::MAX;
/// Most stream bytes (ops, diff and literal bytes) of one merged segment:
/// with the default 4 MiB units and 8 MiB reference, the applier's buffers
/// (stream, payload and reference) stay under 24 MiB.
const MAX_MERGED_STREAM: usize = 8 << 20;
/// Literal bytes that two neighbours may always share a segment with,
/// whatever their reference windows.
const MAX_MERGED_LITERAL: usize = 64 << 10;

/// Joins neighbouring plans into segments of up to `max_len` bytes of new
/// image (default [`MAX_MERGED_LEN`]) and [`MAX_MERGED_STREAM`] stream bytes,
/// when that costs no compression:
/// - plans that carry little literal data (zero runs, copies, sparse diffs):
///   every segment costs a table entry (136 bytes) and a zstd frame, which
///   dominates the deltas of sparse or nearly identical images;
/// - plans whose reference windows overlap or touch: the segment references
///   the span of both when it fits in `max_reference` (so a unit's window
///   should be at most half of it), else (overlapping windows only) the
///   window of the part with more literals;
/// - plans whose literal bytes are new content (long runs, see
///   [`NEW_CONTENT_RUN`]): one zstd frame then finds what the new files
///   share, where edits of old content would lose their own reference window.
///
/// Applier memory is set by streams and references, not by `new_len`, so
/// merged segments cost a device little.
pub fn merge_plans(
    units: Vec<(Range<usize>, SegmentPlan)>,
    max_len: usize,
    max_reference: usize,
) -> Vec<(Range<usize>, SegmentPlan)> {
    let max_reference = max_reference as u64;
    let weight = |plan: &SegmentPlan| plan.ops.len() * 12 + plan.diff.len() + plan.literal.len();
    let mut out: Vec<(Range<usize>, SegmentPlan)> = Vec::with_capacity(units.len());
    for (range, plan) in units {
        if let Some((last_range, last)) = out.last_mut() {
            let joint = joint_reference(&last.reference, &plan.reference, max_reference);
            if last_range.end == range.start
                && range.end - last_range.start <= max_len
                && weight(last) + weight(&plan) <= MAX_MERGED_STREAM
                && (last.literal.len() + plan.literal.len() <= MAX_MERGED_LITERAL
                    || joint.is_some()
                    || overlap(&last.reference, &plan.reference)
                    || (mean_literal_run(last) >= NEW_CONTENT_RUN
                        && mean_literal_run(&plan) >= NEW_CONTENT_RUN))
            {
                match joint {
                    Some(joint) => last.reference = joint,
                    None if plan.literal.len() > last.literal.len() => {
                        let lost = std::mem::replace(&mut last.reference, plan.reference);
                        add_alternative(&mut last.alternatives, lost);
                    }
                    None => add_alternative(&mut last.alternatives, plan.reference),
                }
                for window in plan.alternatives {
                    add_alternative(&mut last.alternatives, window);
                }
                last_range.end = range.end;
                append_ops(&mut last.ops, plan.ops);
                last.diff.extend(plan.diff);
                last.literal.extend(plan.literal);
                continue;
            }
        }
        out.push((range, plan));
    }
    out
}

/// Most alternative windows a plan keeps.
const MAX_ALTERNATIVES: usize = 8;

fn add_alternative(alternatives: &mut Vec<Range<u64>>, window: Range<u64>) {
    if !window.is_empty() && alternatives.len() < MAX_ALTERNATIVES {
        alternatives.push(window);
    }
}

/// Appends `ops` to `to`, joining the op across the seam when both halves
/// continue each other (a zero run, or a copy or diff of contiguous old
/// bytes, cut by the unit boundary): long zero runs and moved regions then
/// cost one op, not one per unit. Literal runs stay apart: their lengths
/// tell new files from edits.
fn append_ops(to: &mut Vec<Op>, ops: Vec<Op>) {
    let mut ops = ops.into_iter();
    if let (Some(last), Some(first)) = (to.last_mut(), ops.as_slice().first()) {
        let joined = match (*last, *first) {
            (Op::Zero { len: a }, Op::Zero { len: b }) => Some(Op::Zero { len: a + b }),
            (Op::Copy { src, len: a }, Op::Copy { src: next, len: b }) if src + a == next => {
                Some(Op::Copy { src, len: a + b })
            }
            (Op::Diff { src, len: a }, Op::Diff { src: next, len: b }) if src + a == next => {
                Some(Op::Diff { src, len: a + b })
            }
            _ => None,
        };
        if let Some(op) = joined {
            *last = op;
            ops.next();
        }
    }
    to.extend(ops);
}

/// Most window bytes [`widen_edit_references`] gives per literal byte.
const WIDE_REFERENCE_PER_LITERAL: u64 = 32;

/// Mean literal run under which a segment's literals are edits of old code
/// or data (rebuilt binaries: changed instructions and addresses between
/// copies and diffs) rather than whole new files.
const EDIT_RUN: usize = 1024;

/// Widens the reference window of every segment whose literal bytes are
/// edits (mean literal run under [`EDIT_RUN`]) to up to `max_reference`
/// bytes, and [`WIDE_REFERENCE_PER_LITERAL`] per literal byte, around its
/// centre, within the old image's `old_len` bytes. Run after
/// [`merge_plans`], which decides on the narrow windows of the units.
///
/// Narrow windows keep neighbours mergeable; once segments are fixed, a
/// rebuilt binary gains from seeing more of its old version (the binary
/// pair -1.9%). Segments of new files are left alone: a wider window costs
/// zstd the time of loading it and barely helps them.
pub fn widen_edit_references(
    segments: &mut [(Range<usize>, SegmentPlan)],
    max_reference: usize,
    old_len: u64,
) {
    for (_, plan) in segments {
        // Loading a window costs zstd about as much as compressing it:
        // scale it with the literal bytes it serves.
        let want = (max_reference as u64)
            .min(old_len)
            .min((plan.literal.len() as u64).saturating_mul(WIDE_REFERENCE_PER_LITERAL));
        let r = &plan.reference;
        if plan.literal.is_empty()
            || r.is_empty()
            || r.end - r.start >= want
            || mean_literal_run(plan) >= EDIT_RUN
        {
            continue;
        }
        let centre = r.start + (r.end - r.start) / 2;
        let start = centre.saturating_sub(want / 2).min(old_len - want);
        plan.reference = start..start + want;
    }
}

/// Mean length of literal runs from which a plan's literal bytes count as
/// new content (whole new files) rather than edits of old content (rebuilt
/// binaries, where runs are short and lie between copies and diffs).
const NEW_CONTENT_RUN: usize = 4096;

/// Mean length of a plan's literal runs (0 without literals).
fn mean_literal_run(plan: &SegmentPlan) -> usize {
    let runs = plan
        .ops
        .iter()
        .filter(|op| matches!(op, Op::Literal { .. }))
        .count();
    plan.literal.len() / runs.max(1)
}

/// True if the two windows share bytes.
fn overlap(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// One reference window serving both parts: the span of two windows that
/// overlap or touch, if it is at most `max_reference` bytes.
fn joint_reference(a: &Range<u64>, b: &Range<u64>, max_reference: u64) -> Option<Range<u64>> {
    let meet = !a.is_empty() && !b.is_empty() && a.start <= b.end && b.start <= a.end;
    let joint = a.start.min(b.start)..a.end.max(b.end);
    (meet && joint.end - joint.start <= max_reference).then_some(joint)
}

/// Compression settings for payloads.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level (1..=22); random-looking streams get at most 3.
    pub level: i32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { level: 19 }
    }
}

/// Largest stream compressed once per alternative window: small segments
/// (a few edits) gain most from the right window, and cost little to try.
const TRIAL_STREAM: usize = 64 << 10;

/// Compresses `plan` into one zstd frame and builds its table entry, with
/// a contiguous window (no window list); a small stream is compressed with
/// each of the plan's alternative windows too, and the smallest frame kept.
///
/// `old` is the whole old image (the reference prefix is taken from it) and
/// `produced` the bytes the plan produces, whose digest goes in the entry.
///
/// # Errors
/// [`Error::Compress`] when zstd fails (out of memory).
pub fn encode_segment(
    old: &[u8],
    produced: &[u8],
    plan: &SegmentPlan,
    options: &EncodeOptions,
) -> Result<(SegmentEntry, Vec<u8>)> {
    let digest = *blake3::hash(produced).as_bytes();
    encode_segment_digested(
        old,
        produced,
        digest,
        plan,
        WindowLayout::Contiguous,
        options,
    )
}

/// [`encode_segment`] with the BLAKE3 digest of `produced` given (the
/// generator hashes long segments on several threads) and the window laid
/// out as `layout` says: with [`WindowLayout::Gathered`] the payload starts
/// with a window list (format flag `WINDOW_LIST`).
///
/// # Errors
/// [`Error::Compress`] when zstd fails (out of memory).
pub fn encode_segment_digested(
    old: &[u8],
    produced: &[u8],
    output_digest: Digest,
    plan: &SegmentPlan,
    layout: WindowLayout<'_>,
    options: &EncodeOptions,
) -> Result<(SegmentEntry, Vec<u8>)> {
    let mut stream = stream::encode(&plan.ops, &plan.diff, &plan.literal);
    let fallback;
    let mut plan = plan;
    let bound = (produced.len() as u64)
        .saturating_mul(2)
        .saturating_add(delta_format::STREAM_SLACK);
    if stream.len() as u64 > bound {
        // Too many tiny ops for the format's bound: send the bytes as one
        // literal instead (never larger than the bound).
        fallback = SegmentPlan {
            ops: vec![Op::Literal {
                len: produced.len() as u64,
            }],
            literal: produced.to_vec(),
            ..SegmentPlan::default()
        };
        plan = &fallback;
        stream = stream::encode(&plan.ops, &plan.diff, &plan.literal);
    }
    // The slow parser of high levels finds nothing in random bytes (data
    // that was compressed or encrypted before, which our matcher did not
    // find in the old image either): spare it.
    let level = if looks_random(&stream) {
        options.level.min(RANDOM_STREAM_LEVEL)
    } else {
        options.level
    };
    let mut best = Window::new(old, &plan.reference, layout);
    let mut payload = best.compress(&stream, level)?;
    if stream.len() <= TRIAL_STREAM {
        // Small streams (a few edits) try every alternative window and, with
        // a window list, every window whole as well: edits may resemble the
        // old bytes that their neighbours copy.
        let keep_all = CopiedRuns::default();
        let mut trials: Vec<_> = plan
            .alternatives
            .iter()
            .map(|span| (span, layout))
            .collect();
        if let WindowLayout::Gathered(_) = layout {
            let whole = WindowLayout::Gathered(&keep_all);
            let spans = std::iter::once(&plan.reference).chain(&plan.alternatives);
            // Only where gathering left something out.
            let gathered = spans.filter(|span| layout.window_len(span) < whole.window_len(span));
            trials.extend(gathered.map(|span| (span, whole)));
        }
        for (span, layout) in trials {
            let window = Window::new(old, span, layout);
            let trial = window.compress(&stream, level)?;
            if trial.len() < payload.len() {
                payload = trial;
                best = window;
            }
        }
    }

    let mut entry = SegmentEntry {
        new_len: produced.len() as u64,
        payload_len: payload.len() as u64,
        stream_len: stream.len() as u64,
        ref_offset: best.offset(),
        ref_len: best.bytes.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        output_digest,
        ..SegmentEntry::default()
    };
    for op in &plan.ops {
        let slot = match op {
            Op::Copy { .. } | Op::CopyNew { .. } => &mut entry.copy_len,
            Op::Zero { .. } => &mut entry.zero_len,
            Op::Diff { .. } => &mut entry.diff_len,
            Op::Literal { .. } => &mut entry.literal_len,
        };
        *slot += op.len();
    }
    Ok((entry, payload))
}

/// zstd level for streams that look like random bytes (see
/// [`looks_random`]): on the random corpus pair, level 19 took 0.61 s on one
/// such 1 MiB segment for the same payload size that level 3 gives in 4 ms.
const RANDOM_STREAM_LEVEL: i32 = 3;

/// Whether `stream` is at least 256 KiB and its bytes look uniformly random:
/// an order-0 entropy of at least 7.95 bits per byte, where no byte-level
/// coding can save more than 0.6%. The OS image pairs' streams stay under
/// 7.6 bits.
fn looks_random(stream: &[u8]) -> bool {
    if stream.len() < 256 << 10 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in stream {
        counts[b as usize] += 1;
    }
    let n = stream.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    bits >= 7.95
}

/// A segment's reference window: its old ranges and their bytes, ready to
/// compress against.
struct Window<'a> {
    /// Old ranges, ascending and disjoint (empty: no window).
    ranges: Vec<Range<u64>>,
    /// Their bytes, in order: borrowed from `old` when contiguous.
    bytes: Cow<'a, [u8]>,
    /// Whether the payload starts with a window list.
    listed: bool,
}

impl<'a> Window<'a> {
    /// The window of `span` (clamped to `old`) laid out as `layout` says.
    fn new(old: &'a [u8], span: &Range<u64>, layout: WindowLayout<'_>) -> Window<'a> {
        let end = span.end.min(old.len() as u64);
        let span = span.start.min(end)..end;
        let ranges = match layout {
            WindowLayout::Contiguous => vec![span.clone()],
            WindowLayout::Gathered(copied) => copied.gather(span.clone()),
        };
        let ranges: Vec<_> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
        let slice = |r: &Range<u64>| &old[r.start as usize..r.end as usize];
        let bytes = match &ranges[..] {
            [one] => Cow::Borrowed(slice(one)),
            many => Cow::Owned(many.iter().map(slice).collect::<Vec<_>>().concat()),
        };
        Window {
            ranges,
            bytes,
            listed: matches!(layout, WindowLayout::Gathered(_)),
        }
    }

    /// The entry's `ref_offset`: where the first range starts (0 for none).
    fn offset(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.start)
    }

    /// The payload of `stream`: the window list if any, then one zstd frame.
    fn compress(&self, stream: &[u8], level: i32) -> Result<Vec<u8>> {
        let mut payload = Vec::new();
        if self.listed {
            delta_format::window::encode(&self.ranges, self.offset(), &mut payload);
        }
        compress(stream, &self.bytes, level, payload)
    }
}

/// One zstd frame of `data`, with `reference` as raw-content prefix,
/// appended to `out`.
fn compress(data: &[u8], reference: &[u8], level: i32, mut out: Vec<u8>) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let fail = |code| Error::Compress {
        reason: zstd_safe::get_error_name(code),
    };
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::DictIdFlag(false))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(fail)?;
    if !reference.is_empty() {
        // The window must reach back over the whole prefix.
        let span = (reference.len() + data.len()) as u64;
        let window_log = (64 - span.saturating_sub(1).leading_zeros()).clamp(10, 30);
        cctx.set_parameter(CParameter::WindowLog(window_log))
            .map_err(fail)?;
        cctx.ref_prefix(reference).map_err(fail)?;
    }
    out.reserve(zstd_safe::compress_bound(data.len()));
    // A Vec is written from its start; a cursor appends after `out`.
    let mut cursor = std::io::Cursor::new(out);
    cursor.set_position(cursor.get_ref().len() as u64);
    cctx.compress2(&mut cursor, data).map_err(fail)?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Patcher, SegmentRef};

    /// An 8 MiB unit, the `at`-th: `runs` literal runs of `run` bytes between
    /// copies, referencing 2 MiB of old image at `reference` MiB.
    fn unit(at: usize, runs: usize, run: usize, reference: u64) -> (Range<usize>, SegmentPlan) {
        let mut ops = Vec::new();
        for _ in 0..runs {
            ops.push(Op::Literal { len: run as u64 });
            ops.push(Op::Copy { src: 0, len: 100 });
        }
        let len = runs * (run + 100);
        ops.push(Op::Zero {
            len: (8 << 20) - len as u64,
        });
        let plan = SegmentPlan {
            ops,
            literal: vec![1; runs * run],
            reference: reference << 20..(reference + 2) << 20,
            ..SegmentPlan::default()
        };
        (at << 23..(at + 1) << 23, plan)
    }

    #[test]
    fn only_large_random_streams_skip_the_slow_parser() {
        let mut rng = crate::testing::Rng::new(5);
        assert!(looks_random(&rng.bytes(1 << 20)));
        assert!(!looks_random(&rng.bytes(100 << 10)), "too small to matter");
        assert!(!looks_random(&rng.text(1 << 20)));
        // Random bytes with one byte in eight zeroed (a table of 7-byte
        // random values) still deserve the slow parser.
        let mut table = rng.bytes(1 << 20);
        table.iter_mut().step_by(8).for_each(|b| *b = 0);
        assert!(!looks_random(&table));
    }

    #[test]
    fn small_segments_keep_the_window_that_compresses_them_best() {
        // Two edits merged into one segment: 4 KiB of noise (more literal
        // bytes, so its window wins the merge) and 3 KB copied from the old
        // text at 1 MiB, which only the other unit's window holds.
        let mut rng = crate::testing::Rng::new(9);
        let mut old = rng.bytes(1 << 20);
        old.extend(rng.text(1 << 20));
        let noise = rng.bytes(4096);
        let text = old[(1 << 20) + 5000..(1 << 20) + 8000].to_vec();
        let unit = |at: usize, literal: &[u8], reference: Range<u64>| {
            let plan = SegmentPlan {
                ops: vec![Op::Literal {
                    len: literal.len() as u64,
                }],
                literal: literal.to_vec(),
                reference,
                ..SegmentPlan::default()
            };
            (at..at + literal.len(), plan)
        };
        let merged = merge_plans(
            vec![
                unit(0, &noise, 0..65536),
                unit(4096, &text, (1 << 20)..(1 << 20) + 65536),
            ],
            MAX_MERGED_LEN,
            8 << 20,
        );
        assert_eq!(merged.len(), 1);
        let plan = &merged[0].1;
        assert_eq!(plan.reference, 0..65536);
        let text_window = (1 << 20)..(1 << 20) + 65536;
        assert_eq!(
            plan.alternatives.as_slice(),
            std::slice::from_ref(&text_window)
        );
        let mut produced = noise.clone();
        produced.extend_from_slice(&text);
        let options = EncodeOptions { level: 19 };
        let (entry, payload) = encode_segment(&old, &produced, plan, &options).unwrap();
        assert_eq!(entry.ref_offset, 1 << 20);
        let without = SegmentPlan {
            alternatives: Vec::new(),
            ..plan.clone()
        };
        let (_, larger) = encode_segment(&old, &produced, &without, &options).unwrap();
        assert!(
            payload.len() + 800 < larger.len(),
            "{} against {}",
            payload.len(),
            larger.len()
        );
    }

    #[test]
    fn merged_units_join_ops_cut_by_the_unit_boundary() {
        let unit = |at: usize, ops: Vec<Op>| {
            let plan = SegmentPlan {
                ops,
                ..SegmentPlan::default()
            };
            (at << 20..(at + 1) << 20, plan)
        };
        let merged = merge_plans(
            vec![
                unit(0, vec![Op::Zero { len: 1 << 20 }]),
                unit(1, vec![Op::Zero { len: 1 << 20 }]),
                unit(
                    2,
                    vec![Op::Copy {
                        src: 5 << 20,
                        len: 1 << 20,
                    }],
                ),
                unit(
                    3,
                    vec![Op::Copy {
                        src: 6 << 20,
                        len: 1 << 20,
                    }],
                ),
                // Not contiguous with the copy before: stays apart.
                unit(
                    4,
                    vec![Op::Copy {
                        src: 0,
                        len: 1 << 20,
                    }],
                ),
            ],
            MAX_MERGED_LEN,
            8 << 20,
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(
            merged[0].1.ops,
            [
                Op::Zero { len: 2 << 20 },
                Op::Copy {
                    src: 5 << 20,
                    len: 2 << 20
                },
                Op::Copy {
                    src: 0,
                    len: 1 << 20
                },
            ]
        );
    }

    #[test]
    fn merges_new_content_and_cheap_units_but_not_edits_with_their_own_reference() {
        let merged = |units| merge_plans(units, MAX_MERGED_LEN, 8 << 20).len();
        // New files (long literal runs), distant references: one segment.
        assert_eq!(
            merged(vec![unit(0, 20, 20_000, 0), unit(1, 20, 20_000, 100)]),
            1
        );
        // Edits of old content (short runs), distant references: kept apart.
        assert_eq!(
            merged(vec![unit(0, 1000, 300, 0), unit(1, 1000, 300, 100)]),
            2
        );
        // The same edits with overlapping references: one segment, whose
        // reference covers both.
        let joint = merge_plans(
            vec![unit(0, 1000, 300, 0), unit(1, 1000, 300, 1)],
            MAX_MERGED_LEN,
            8 << 20,
        );
        assert_eq!(joint.len(), 1);
        assert_eq!(joint[0].1.reference, 0..3 << 20);
        // Neighbouring references that do not overlap: kept apart.
        assert_eq!(
            merged(vec![unit(0, 1000, 300, 0), unit(1, 1000, 300, 3)]),
            2
        );
        // Little literal data: one segment whatever the references.
        assert_eq!(merged(vec![unit(0, 10, 300, 0), unit(1, 10, 300, 100)]), 1);
        // New content over the stream cap: two segments.
        assert_eq!(
            merged(vec![unit(0, 5, 1_000_000, 0), unit(1, 5, 1_000_000, 100)]),
            2
        );
    }

    #[test]
    fn widens_the_windows_of_edits_only_and_within_the_old_image() {
        let mut segments = vec![
            unit(0, 1000, 300, 10),  // edits, 2 MiB window at 10 MiB
            unit(1, 20, 20_000, 10), // new files
            unit(2, 1000, 300, 0),   // edits near the start of old
            unit(3, 0, 300, 10),     // no literals
        ];
        let old_len = 64 << 20;
        widen_edit_references(&mut segments, 8 << 20, old_len);
        assert_eq!(segments[0].1.reference, 7 << 20..15 << 20, "centred");
        assert_eq!(segments[1].1.reference, 10 << 20..12 << 20, "untouched");
        assert_eq!(segments[2].1.reference, 0..8 << 20, "clamped at 0");
        assert_eq!(segments[3].1.reference, 10 << 20..12 << 20, "untouched");
        // An old image smaller than the window: all of it.
        let mut small = vec![unit(0, 1000, 300, 1)];
        widen_edit_references(&mut small, 8 << 20, 5 << 20);
        assert_eq!(small[0].1.reference, 0..5 << 20);
    }

    #[test]
    fn plans_over_the_stream_bound_fall_back_to_one_literal() {
        let produced: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 2 == 0 { 7 } else { 0 })
            .collect();
        let ops: Vec<Op> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    Op::Literal { len: 1 }
                } else {
                    Op::Zero { len: 1 }
                }
            })
            .collect();
        let plan = SegmentPlan {
            ops,
            literal: vec![7; 5000],
            ..SegmentPlan::default()
        };
        let (entry, payload) =
            encode_segment(&[], &produced, &plan, &EncodeOptions { level: 1 }).unwrap();
        assert!(entry.stream_len <= 2 * 10_000 + delta_format::STREAM_SLACK);
        assert_eq!(entry.literal_len, 10_000);
        assert_eq!(apply_one(&[], &entry, &payload, false), produced);
    }

    /// What the patcher makes of a lone segment at new offset 0.
    fn apply_one(old: &[u8], entry: &SegmentEntry, payload: &[u8], window_list: bool) -> Vec<u8> {
        let seg = SegmentRef {
            index: 0,
            new_offset: 0,
            payload_offset: 0,
            entry,
            new_limit: 0,
            window_list,
        };
        let mut out = Vec::new();
        Patcher::new()
            .apply_segment(old, seg, payload, &mut out)
            .unwrap();
        out
    }

    /// Encodes, with a window list, a segment that copies the first 128 KiB
    /// of `old` (256 KiB) whole and then sends `literal`; its window spans
    /// all of `old`. Returns what the segment produces, its entry and
    /// payload.
    fn encode_after_copy(old: &[u8], literal: &[u8]) -> (Vec<u8>, SegmentEntry, Vec<u8>) {
        let plan = SegmentPlan {
            ops: vec![
                Op::Copy {
                    src: 0,
                    len: 128 << 10,
                },
                Op::Literal {
                    len: literal.len() as u64,
                },
            ],
            literal: literal.to_vec(),
            reference: 0..old.len() as u64,
            ..SegmentPlan::default()
        };
        let mut produced = old[..128 << 10].to_vec();
        produced.extend_from_slice(literal);
        let copied = crate::window::CopiedRuns::from_plans([&plan]);
        let layout = WindowLayout::Gathered(&copied);
        let digest = *blake3::hash(&produced).as_bytes();
        let options = EncodeOptions { level: 19 };
        let (entry, payload) =
            encode_segment_digested(old, &produced, digest, &plan, layout, &options).unwrap();
        (produced, entry, payload)
    }

    #[test]
    fn gathered_windows_leave_copied_runs_out_and_still_apply() {
        // 70,000 literal bytes (over the stream size that tries other
        // windows) that the old text holds at 130 KiB.
        let old = crate::testing::Rng::new(4).text(256 << 10);
        let literal = &old[130 << 10..(130 << 10) + 70_000];
        let (produced, entry, payload) = encode_after_copy(&old, literal);
        let skipped = (128 << 10) - 2 * crate::window::SKIP_MARGIN;
        assert_eq!(
            (entry.ref_offset, entry.ref_len),
            (0, (256 << 10) - skipped)
        );
        assert!(
            payload.len() < 200,
            "{} bytes: the window was not used",
            payload.len()
        );
        assert_eq!(apply_one(&old, &entry, &payload, true), produced);
    }

    #[test]
    fn small_edits_of_copied_bytes_keep_their_whole_window() {
        // An edited copy of 3000 of the copied bytes: only the whole window
        // holds what the edit resembles.
        let old = crate::testing::Rng::new(5).text(256 << 10);
        let mut literal = old[1000..4000].to_vec();
        for i in (0..literal.len()).step_by(500) {
            literal[i] ^= 0x20;
        }
        let (_, entry, payload) = encode_after_copy(&old, &literal);
        assert_eq!((entry.ref_offset, entry.ref_len), (0, 256 << 10));
        assert!(payload.len() < 300, "{} bytes", payload.len());
    }
}
