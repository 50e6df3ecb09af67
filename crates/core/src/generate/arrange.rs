//! Which units share a segment, and which old bytes each segment's zstd
//! frame may reference.
//!
//! Units are planned on their own (see [`crate::generate::plan`]); [`arrange`] then
//! merges cheap or related neighbours into one segment (every segment costs
//! a table entry and a zstd frame) and, once segments are fixed, widens the
//! reference windows of those whose literal bytes are edits of old content.

use crate::generate::plan::SegmentPlan;
use delta_format::Op;
use std::ops::Range;

/// Turns the plans of the units, in order, into the plans of the segments:
/// merges neighbours into segments of up to `merge_len` bytes of new image
/// ([`merge_plans`]), then widens the windows of edits ([`widen_edit_references`]),
/// within `max_reference` bytes and the old image's `old_len`.
pub(crate) fn arrange(
    units: Vec<(Range<usize>, SegmentPlan)>,
    merge_len: usize,
    max_reference: usize,
    old_len: u64,
) -> Vec<(Range<usize>, SegmentPlan)> {
    let mut segments = merge_plans(units, merge_len, max_reference);
    widen_edit_references(&mut segments, max_reference, old_len);
    segments
}

/// Most bytes of new image one merged segment may produce, by default: no
/// limit. A segment's length costs the applier no memory, and a power cut
/// inside one costs only the writes since the applier's last journal
/// checkpoint (it checkpoints inside segments), so only the stream limit
/// below bounds a merge.
pub(crate) const MAX_MERGED_LEN: usize = usize::MAX;
/// Most stream bytes (ops, diff and literal bytes) of one merged segment.
/// Random-looking literal bytes (which compress to their own size) are
/// merged only while twice their stream fits the applier's
/// [`SEGMENT_MEMORY`](crate::SEGMENT_MEMORY): the payload and the stream
/// are held at once, and merging them saves nothing.
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
pub(crate) fn merge_plans(
    units: Vec<(Range<usize>, SegmentPlan)>,
    max_len: usize,
    max_reference: usize,
) -> Vec<(Range<usize>, SegmentPlan)> {
    let max_reference = max_reference as u64;
    let weight = |plan: &SegmentPlan| plan.ops.len() * 12 + plan.diff.len() + plan.literal.len();
    let mut out: Vec<(Range<usize>, SegmentPlan)> = Vec::with_capacity(units.len());
    // Whether the last segment's literal bytes are all random-looking
    // (compressed or encrypted data): its payload is then as large as its
    // stream, and the applier holds both.
    let mut last_random = false;
    for (range, plan) in units {
        let random = crate::generate::encode::looks_random(&plan.literal);
        if let Some((last_range, last)) = out.last_mut() {
            let joint = joint_reference(&last.reference, &plan.reference, max_reference);
            let stream = weight(last) + weight(&plan);
            if last_range.end == range.start
                && range.end - last_range.start <= max_len
                && stream <= MAX_MERGED_STREAM
                && !(last_random && random && 2 * stream as u64 > crate::segment::SEGMENT_MEMORY)
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
                last_random &= random;
                continue;
            }
        }
        out.push((range, plan));
        last_random = random;
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
pub(crate) fn widen_edit_references(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
