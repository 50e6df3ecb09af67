//! Copies of new content that an earlier segment already carries.
//!
//! An OS image holds identical files in several places (licence texts,
//! locale data, the same library in two packages). When such a file is new,
//! the matcher finds no old copy, so every segment that holds it pays for it
//! as literal bytes, compressed on its own: one zstd frame cannot see
//! another. [`copy_repeats`] turns those repeats into COPY_NEW ops that read
//! the bytes back from the new image an earlier segment wrote.
//!
//! Shorter repeats count too: new packages share headers, tables and strings
//! across files, and zstd's long-distance matching finds them only inside
//! one frame. On the os-major pair, copying repeats of 48 bytes and more
//! makes the delta 2.7% smaller; whole 4 KiB blocks alone gave 0.6%.
//!
//! It is the block matcher again, run on new content with small blocks: an
//! index of the literal blocks that lie on a 32-byte grid of the new image,
//! a rolling hash over every literal run to find them at any offset, and
//! each match extended byte by byte within its run. Repeats inside one
//! segment are left to zstd, which finds them in its window.

use crate::generate::index::BlockIndex;
use crate::generate::plan::SegmentPlan;
use crate::generate::rolling::{common_prefix, common_suffix, hash_block, slide};
use crate::generate::runner::Runner;
use delta_format::Op;
use std::ops::Range;

/// Size of the blocks looked up, and grid they are indexed on, in bytes:
/// every repeat of 63 bytes or more holds a whole block of the grid.
const REUSE_BLOCK: usize = 32;
/// Shortest repeat copied, in bytes: shorter ones cost about as much as an
/// op as zstd spends on them as literals (48 gave the smallest OS deltas,
/// 40 and 56 were within 0.05%).
const MIN_REPEAT: usize = 48;

/// Replaces literal bytes that repeat literal blocks of earlier segments
/// (or bytes of `also`) with COPY_NEW ops, and returns the segments and the
/// bytes replaced.
///
/// `segments` are the merged plans in order, with the ranges of `new` they
/// produce; `also` are other ranges of `new` that other segments produce
/// (the gzip files that deflate segments rebuild: a second copy of one is
/// not rebuilt again); `runner` maps over the segments. Every COPY_NEW
/// reads only bytes before its own segment.
pub fn copy_repeats<R: Runner>(
    segments: Vec<(Range<usize>, SegmentPlan)>,
    new: &[u8],
    also: &[Range<usize>],
    runner: &R,
) -> (Vec<(Range<usize>, SegmentPlan)>, u64) {
    let index = repeat_index(&segments, new, also);
    // The search rolls over every literal byte.
    let items = segments
        .into_iter()
        .map(|segment| (segment.1.literal.len() as u64, segment))
        .collect();
    let done = runner.map(items, |(range, mut plan)| {
        let replaced = copy_repeats_in(range.start, &mut plan, new, &index);
        ((range, plan), replaced)
    });
    let replaced = done.iter().map(|(_, n)| n).sum();
    (
        done.into_iter().map(|(segment, _)| segment).collect(),
        replaced,
    )
}

/// Index of the blocks on the [`REUSE_BLOCK`] grid of `new` in the literal
/// runs of `segments` and in `also`, first occurrence winning.
fn repeat_index(
    segments: &[(Range<usize>, SegmentPlan)],
    new: &[u8],
    also: &[Range<usize>],
) -> BlockIndex {
    let grid = |run: Range<usize>| {
        (run.start.next_multiple_of(REUSE_BLOCK)..run.end.saturating_sub(REUSE_BLOCK - 1))
            .step_by(REUSE_BLOCK)
    };
    // In image order, so that the first occurrence is the earliest.
    let mut all: Vec<Range<usize>> = segments
        .iter()
        .flat_map(|(range, plan)| literal_runs(range.start, plan))
        .chain(also.iter().cloned())
        .collect();
    all.sort_by_key(|run| run.start);
    let runs = || all.iter().cloned();
    let count = runs().map(|run| grid(run).len()).sum();
    let blocks = runs()
        .flat_map(grid)
        .map(|at| (hash_block(&new[at..at + REUSE_BLOCK]), at as u64));
    BlockIndex::from_hashes(REUSE_BLOCK, count, blocks)
}

/// Rewrites the literal ops of the plan that starts at `start` in `new`:
/// runs that repeat an indexed block before `start` become COPY_NEW ops.
/// Returns the bytes replaced.
fn copy_repeats_in(start: usize, plan: &mut SegmentPlan, new: &[u8], index: &BlockIndex) -> u64 {
    let copies: Vec<(Range<usize>, usize)> = literal_runs(start, plan)
        .flat_map(|run| find_repeats(run, start, new, index))
        .collect();
    if copies.is_empty() {
        return 0;
    }
    let replaced = copies.iter().map(|(copy, _)| copy.len() as u64).sum();
    // Rebuild the ops: every copy lies inside one literal run.
    let mut ops = Vec::with_capacity(plan.ops.len() + 2 * copies.len());
    let mut literal = Vec::with_capacity(plan.literal.len());
    let mut copies = copies.into_iter().peekable();
    let mut at = start;
    for op in std::mem::take(&mut plan.ops) {
        let run = at..at + op.len() as usize;
        at = run.end;
        if !matches!(op, Op::Literal { .. }) {
            ops.push(op);
            continue;
        }
        let mut cursor = run.start;
        while let Some((copy, src)) = copies.next_if(|(copy, _)| copy.end <= run.end) {
            push_literal(&mut ops, &mut literal, new, cursor..copy.start);
            ops.push(Op::CopyNew {
                src: src as u64,
                len: copy.len() as u64,
            });
            cursor = copy.end;
        }
        push_literal(&mut ops, &mut literal, new, cursor..run.end);
    }
    plan.ops = ops;
    plan.literal = literal;
    replaced
}

/// The repeats inside the literal run `run` of a segment starting at
/// `start`: ranges of `run`, in order, each with the offset it copies from
/// (before `start`).
fn find_repeats(
    run: Range<usize>,
    start: usize,
    new: &[u8],
    index: &BlockIndex,
) -> Vec<(Range<usize>, usize)> {
    let mut found = Vec::new();
    let mut cursor = run.start;
    let run_end = run.end;
    slide(new, run, REUSE_BLOCK, |w| {
        let (pos, window) = (w.pos(), w.bytes());
        let src = index
            .lookup(w.hash())
            .map(|src| src as usize)
            .filter(|&src| src + REUSE_BLOCK <= start && &new[src..src + REUSE_BLOCK] == window)?;
        // Extend within the run (not over the previous copy), never reading
        // at or past the segment's start.
        let back = common_suffix(&new[..src], &new[cursor..pos]);
        let limit = (start - src - REUSE_BLOCK).min(run_end - pos - REUSE_BLOCK);
        let ahead = common_prefix(
            &new[src + REUSE_BLOCK..src + REUSE_BLOCK + limit],
            &new[pos + REUSE_BLOCK..pos + REUSE_BLOCK + limit],
        );
        let copy = pos - back..pos + REUSE_BLOCK + ahead;
        if copy.len() < MIN_REPEAT {
            return None;
        }
        cursor = copy.end;
        found.push((copy.clone(), src - back));
        Some(copy.end)
    });
    found
}

/// The ranges of the new image that a plan starting at `start` sends as
/// literal bytes.
fn literal_runs(start: usize, plan: &SegmentPlan) -> impl Iterator<Item = Range<usize>> + '_ {
    plan.ops
        .iter()
        .scan(start, |at, op| {
            let run = *at..*at + op.len() as usize;
            *at = run.end;
            Some((op, run))
        })
        .filter(|(op, _)| matches!(op, Op::Literal { .. }))
        .map(|(_, run)| run)
}

fn push_literal(ops: &mut Vec<Op>, literal: &mut Vec<u8>, new: &[u8], range: Range<usize>) {
    if !range.is_empty() {
        ops.push(Op::Literal {
            len: range.len() as u64,
        });
        literal.extend_from_slice(&new[range]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use crate::Serial;

    /// `new` as 64 KiB segments of literal bytes only.
    fn literal_segments(new: &[u8]) -> Vec<(Range<usize>, SegmentPlan)> {
        (0..new.len())
            .step_by(1 << 16)
            .map(|start| {
                let range = start..(start + (1 << 16)).min(new.len());
                let plan = SegmentPlan {
                    ops: vec![Op::Literal {
                        len: range.len() as u64,
                    }],
                    literal: new[range.clone()].to_vec(),
                    ..SegmentPlan::default()
                };
                (range, plan)
            })
            .collect()
    }

    /// Replays a plan's ops over `new` and checks it produces its range.
    fn replay(range: &Range<usize>, plan: &SegmentPlan, new: &[u8]) {
        let mut out = Vec::new();
        let mut lit = &plan.literal[..];
        for op in &plan.ops {
            match *op {
                Op::Literal { len } => {
                    let (head, tail) = lit.split_at(len as usize);
                    out.extend_from_slice(head);
                    lit = tail;
                }
                Op::CopyNew { src, len } => {
                    let src = src as usize;
                    assert!(src + len as usize <= range.start, "reads its own segment");
                    out.extend_from_slice(&new[src..src + len as usize]);
                }
                other => panic!("unexpected op {other:?}"),
            }
        }
        assert!(lit.is_empty());
        assert_eq!(out, &new[range.clone()]);
    }

    #[test]
    fn copies_a_repeated_file_from_an_earlier_segment_only() {
        let mut rng = Rng::new(7);
        let mut new = rng.bytes(3 << 16);
        // A 10000-byte "file" at an aligned offset in segment 0, repeated
        // (aligned too) in segment 1 and twice in segment 2.
        let file = rng.bytes(10_000);
        new[4096..14_096].copy_from_slice(&file);
        new[(1 << 16) + 8192..(1 << 16) + 18_192].copy_from_slice(&file);
        new[(2 << 16) + 4096..(2 << 16) + 14_096].copy_from_slice(&file);
        new[(2 << 16) + 20_480..(2 << 16) + 30_480].copy_from_slice(&file);
        let (segments, replaced) = copy_repeats(literal_segments(&new), &new, &[], &Serial);
        // Segment 0 keeps its literal; 1 and 2 copy all three repeats.
        assert_eq!(replaced, 3 * 10_000);
        assert_eq!(segments[0].1.ops.len(), 1);
        for (range, plan) in &segments {
            replay(range, plan, &new);
        }
        let copies = |plan: &SegmentPlan| {
            plan.ops
                .iter()
                .filter(|op| matches!(op, Op::CopyNew { .. }))
                .count()
        };
        assert_eq!(copies(&segments[1].1), 1);
        assert_eq!(copies(&segments[2].1), 2);
    }

    #[test]
    fn finds_repeats_at_any_offset_but_leaves_short_and_in_segment_ones_to_zstd() {
        let mut rng = Rng::new(8);
        let mut new = rng.bytes(2 << 16);
        let file = rng.bytes(9000);
        // On the grid in segment 0 and repeated there; in segment 1 at odd
        // offsets, once whole and once 4000 bytes of it; then 40 bytes of
        // it, too short to copy.
        new[4096..13_096].copy_from_slice(&file);
        new[16_384..25_384].copy_from_slice(&file);
        new[(1 << 16) + 1001..(1 << 16) + 10_001].copy_from_slice(&file);
        new[(1 << 16) + 30_001..(1 << 16) + 34_001].copy_from_slice(&file[..4000]);
        new[(1 << 16) + 50_001..(1 << 16) + 50_041].copy_from_slice(&file[..40]);
        let (segments, replaced) = copy_repeats(literal_segments(&new), &new, &[], &Serial);
        // The file and its first 4000 bytes (a random neighbour byte may
        // match as well).
        assert!((13_000..13_008).contains(&replaced), "{replaced}");
        assert_eq!(segments[0].1.ops.len(), 1);
        let copies: Vec<_> = segments[1]
            .1
            .ops
            .iter()
            .filter_map(|op| match *op {
                Op::CopyNew { len, .. } => Some(len),
                _ => None,
            })
            .collect();
        assert_eq!(copies.len(), 2, "{:?}", segments[1].1.ops);
        for (range, plan) in &segments {
            replay(range, plan, &new);
        }
    }
}
