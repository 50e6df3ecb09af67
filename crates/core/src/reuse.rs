//! Copies of new content that an earlier segment already carries.
//!
//! An OS image holds identical files in several places (licence texts,
//! locale data, the same library in two packages). When such a file is new,
//! the matcher finds no old copy, so every segment that holds it pays for it
//! as literal bytes, compressed on its own: one zstd frame cannot see
//! another. [`copy_repeats`] turns those repeats into COPY_NEW ops that read
//! the bytes back from the new image an earlier segment wrote.
//!
//! File systems place file data on 4 KiB blocks, so the search looks only at
//! literal blocks aligned to 4 KiB in the new image, then extends each match
//! byte by byte within its literal run. Repeats inside one segment are left
//! to zstd, which already finds them in its window.

use crate::encode::SegmentPlan;
use delta_format::Op;
use std::collections::HashMap;
use std::ops::Range;

/// Size and alignment of the blocks looked up, in bytes.
pub const REUSE_BLOCK: usize = 4096;

/// Replaces literal blocks that repeat literal blocks of earlier segments
/// with COPY_NEW ops, and returns the bytes replaced.
///
/// `segments` are the merged plans in order, with the ranges of `new` they
/// produce. Every COPY_NEW reads only bytes before its own segment.
pub fn copy_repeats(segments: &mut [(Range<usize>, SegmentPlan)], new: &[u8]) -> u64 {
    // First new-image offset of each literal block seen in earlier segments.
    let mut seen: HashMap<[u8; 8], usize> = HashMap::new();
    let mut replaced = 0;
    for (range, plan) in segments.iter_mut() {
        let mut fresh = Vec::new();
        replaced += reuse_in(range.start, plan, new, &seen, &mut fresh);
        for (key, at) in fresh {
            seen.entry(key).or_insert(at);
        }
    }
    replaced
}

/// Rewrites the literal ops of one plan starting at `start`; adds the keys
/// of its literal blocks that found no earlier copy to `fresh`.
fn reuse_in(
    start: usize,
    plan: &mut SegmentPlan,
    new: &[u8],
    seen: &HashMap<[u8; 8], usize>,
    fresh: &mut Vec<([u8; 8], usize)>,
) -> u64 {
    let mut replaced = 0;
    let mut ops = Vec::with_capacity(plan.ops.len());
    let mut literal = Vec::new();
    let mut at = start;
    for op in std::mem::take(&mut plan.ops) {
        let len = op.len() as usize;
        if !matches!(op, Op::Literal { .. }) {
            ops.push(op);
            at += len;
            continue;
        }
        let run = at..at + len;
        let mut cursor = run.start;
        let mut block = run.start.next_multiple_of(REUSE_BLOCK);
        while block + REUSE_BLOCK <= run.end {
            let bytes = &new[block..block + REUSE_BLOCK];
            let key = block_key(bytes);
            let found = seen
                .get(&key)
                .copied()
                .filter(|&src| &new[src..src + REUSE_BLOCK] == bytes);
            let Some(src) = found else {
                fresh.push((key, block));
                block += REUSE_BLOCK;
                continue;
            };
            // Extend within the literal run, never reading at or past the
            // segment's start.
            let back = common_suffix(&new[..src], &new[cursor..block]);
            let limit = (start - src - REUSE_BLOCK).min(run.end - block - REUSE_BLOCK);
            let ahead = common_prefix(
                &new[src + REUSE_BLOCK..src + REUSE_BLOCK + limit],
                &new[block + REUSE_BLOCK..block + REUSE_BLOCK + limit],
            );
            let copy = block - back..block + REUSE_BLOCK + ahead;
            push_literal(&mut ops, &mut literal, new, cursor..copy.start);
            ops.push(Op::CopyNew {
                src: (src - back) as u64,
                len: copy.len() as u64,
            });
            replaced += copy.len() as u64;
            cursor = copy.end;
            block = cursor.next_multiple_of(REUSE_BLOCK);
        }
        push_literal(&mut ops, &mut literal, new, cursor..run.end);
        at = run.end;
    }
    plan.ops = ops;
    plan.literal = literal;
    replaced
}

fn push_literal(ops: &mut Vec<Op>, literal: &mut Vec<u8>, new: &[u8], range: Range<usize>) {
    if !range.is_empty() {
        ops.push(Op::Literal {
            len: range.len() as u64,
        });
        literal.extend_from_slice(&new[range]);
    }
}

fn block_key(bytes: &[u8]) -> [u8; 8] {
    let hash = blake3::hash(bytes);
    let mut key = [0; 8];
    key.copy_from_slice(&hash.as_bytes()[..8]);
    key
}

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Length of the longest common suffix of `a` and `b`.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    fn literal_plan(len: usize, new: &[u8], start: usize) -> SegmentPlan {
        SegmentPlan {
            ops: vec![Op::Literal { len: len as u64 }],
            literal: new[start..start + len].to_vec(),
            ..SegmentPlan::default()
        }
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
        let mut segments: Vec<_> = (0..3)
            .map(|i| {
                let range = i << 16..(i + 1) << 16;
                let plan = literal_plan(1 << 16, &new, range.start);
                (range, plan)
            })
            .collect();
        let replaced = copy_repeats(&mut segments, &new);
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
    fn leaves_unaligned_and_in_segment_repeats_to_zstd() {
        let mut rng = Rng::new(8);
        let mut new = rng.bytes(2 << 16);
        let file = rng.bytes(9000);
        // Repeated within segment 0, and in segment 1 only off the 4 KiB
        // grid by more than a block can absorb.
        new[0..9000].copy_from_slice(&file);
        new[16_384..25_384].copy_from_slice(&file);
        new[(1 << 16) + 4097..(1 << 16) + 4097 + 4000].copy_from_slice(&file[..4000]);
        let mut segments: Vec<_> = (0..2)
            .map(|i| {
                let range = i << 16..(i + 1) << 16;
                let plan = literal_plan(1 << 16, &new, range.start);
                (range, plan)
            })
            .collect();
        assert_eq!(copy_repeats(&mut segments, &new), 0);
        for (range, plan) in &segments {
            replay(range, plan, &new);
        }
    }
}
