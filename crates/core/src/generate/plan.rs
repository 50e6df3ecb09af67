//! What a unit of the new image becomes: the ops and bytes of its
//! [`SegmentPlan`].
//!
//! The unit is scanned with a rolling hash of the old image's block width
//! (see [`crate::generate::index`]), so a block is found wherever it moved, at any
//! byte offset (tar-like or shifted data). Each hit is checked byte by byte
//! against the old image (the generator has both images, so no strong hash
//! is needed) and extended in both directions. Zero runs are found
//! directly. What lies between matches (a *gap*) is encoded bsdiff-style:
//! the stretch after a match is diffed against the old bytes that follow the
//! match, the stretch before the next match against the old bytes before
//! it, and the middle is literal. Literal bytes are later compressed with
//! zstd against a reference window of the old image (see [`crate::generate::encode`]).
//!
//! This module is pure and single-threaded: the pipeline runs it on many
//! units at once.

use crate::generate::index::{BlockIndex, ANCHOR_WINDOW};
use crate::generate::rolling::{common_prefix, common_suffix, mix, slide};
use delta_format::Op;
use std::collections::HashMap;
use std::ops::Range;

/// Tuning of the matcher.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Width of indexed blocks and of the rolling hash, in bytes.
    pub block_size: usize,
    /// Most bytes of old image used as the zstd reference of a segment. A
    /// unit's own window is at most half of it, so that two neighbours can
    /// share one segment with both windows when they are merged.
    pub max_reference: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            block_size: 4096,
            max_reference: 8 << 20,
        }
    }
}

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
    pub reference: Range<u64>,
    /// Other windows worth a trial when the stream is small: those of
    /// merged units that lost to `reference` (see
    /// [`encode_segment`](crate::encode_segment)).
    pub alternatives: Vec<Range<u64>>,
}

/// Shortest match kept by the fine pass, in bytes (shorter ones cost more
/// in ops than zstd spends on them as literals against the reference).
const MIN_FINE_MATCH: usize = 64;
/// Cost of a mismatching byte against a matching one when extending a diff
/// (bsdiff uses 1; on rebuilt binaries 4 gives the smallest deltas: sparse
/// diff bytes compress well, dense ones are better left to zstd as literals).
const MISMATCH_PENALTY: i64 = 4;

/// Shortest diff grown from an anchor match too short to copy, in bytes.
/// On rebuilt binaries (`.text` of mariadbd) these diffs make the delta
/// 9% smaller: each changed call or jump target costs a few diff bytes
/// instead of breaking the region into literals. 256 gave the smallest
/// deltas on the corpus (128: binary +0.3%, 512: binary +4.6%).
const MIN_APPROX_MATCH: usize = 256;
/// Cost of a mismatching byte when growing such a diff: 3 keeps regions
/// where at least three bytes in four match (code with changed addresses)
/// and stops at misaligned tables, whose zero high bytes match anywhere
/// (1, bsdiff's rule, made the binary pair 14% larger; 2 and 4 ~3%).
const APPROX_PENALTY: i64 = 3;
/// How far the score may fall below its peak before growing gives up.
const APPROX_GIVE_UP: i64 = 32;

/// Plans one segment: the bytes `new[range]`, matched against `old`.
pub fn plan_segment(
    old: &[u8],
    new: &[u8],
    range: Range<usize>,
    index: &BlockIndex,
    options: &DiffOptions,
) -> SegmentPlan {
    let mut planner = Planner {
        old,
        new,
        index,
        plan: SegmentPlan::default(),
        last_disp: None,
        disp_weight: HashMap::new(),
    };
    planner.scan(range.clone());
    planner.choose_reference(range, options.max_reference / 2);
    planner.plan
}

struct Planner<'a> {
    old: &'a [u8],
    new: &'a [u8],
    index: &'a BlockIndex,
    plan: SegmentPlan,
    /// `old offset - new offset` of the last match.
    last_disp: Option<i64>,
    /// Bytes matched per displacement, to pick the reference window.
    disp_weight: HashMap<i64, u64>,
}

impl Planner<'_> {
    fn scan(&mut self, range: Range<usize>) {
        let (old, new, index) = (self.old, self.new, self.index);
        let block = index.block_size();
        let end = range.end;
        let mut gap_start = range.start;
        let mut nonzero_at: Option<usize> = None;
        slide(new, range, block, |w| {
            let pos = w.pos();
            // A window holding a non-zero byte at `nonzero_at` cannot be a
            // zero block: skip re-checking until the scan passes it (zero
            // runs shorter than a block would otherwise cost quadratic time).
            let zero_block = nonzero_at.is_none_or(|k| pos > k) && new[pos] == 0 && {
                let nz = w.bytes().iter().rposition(|&b| b != 0);
                if let Some(k) = nz {
                    nonzero_at = Some(pos + k);
                }
                nz.is_none()
            };
            if zero_block {
                let zeros = self.zero_run(gap_start..end, pos, block);
                self.gap(gap_start..zeros.start, None);
                self.push(Op::Zero {
                    len: zeros.len() as u64,
                });
                gap_start = zeros.end;
                return Some(zeros.end);
            }
            let window = w.bytes();
            let same_disp = self.last_disp.and_then(|d| {
                let c = usize::try_from(pos as i64 + d).ok()?;
                (old.get(c..c + block)? == window).then_some(c)
            });
            let c = same_disp.or_else(|| {
                let c = usize::try_from(index.lookup(w.hash())?).ok()?;
                (old.get(c..c + block)? == window).then_some(c)
            })?;
            let (start, src, stop) = self.extend(gap_start..end, pos, c, block);
            let disp = src as i64 - start as i64;
            self.gap(gap_start..start, Some(disp));
            self.push_copy(start, src, stop);
            gap_start = stop;
            Some(stop)
        });
        self.gap(gap_start..end, None);
    }

    /// The zero run around the zero block at `pos`, within `bounds`.
    fn zero_run(&self, bounds: Range<usize>, pos: usize, block: usize) -> Range<usize> {
        let new = self.new;
        let before = (pos - bounds.start).min(ZERO_PAGE.len());
        let start = pos - common_suffix(&new[bounds.start..pos], &ZERO_PAGE[..before]);
        let mut stop = pos + block;
        while stop < bounds.end {
            let ahead = (bounds.end - stop).min(ZERO_PAGE.len());
            let n = common_prefix(&new[stop..bounds.end], &ZERO_PAGE[..ahead]);
            stop += n;
            if n < ZERO_PAGE.len() {
                break;
            }
        }
        start..stop
    }

    /// Encodes the unmatched bytes `new[range]`: a diff against the bytes
    /// after the previous match, a diff against the bytes before the next
    /// one (`next_disp`), literal bytes between.
    fn gap(&mut self, range: Range<usize>, next_disp: Option<i64>) {
        if range.len() < MIN_FINE_MATCH || !self.index.has_anchors() {
            return self.coarse_gap(range, next_disp);
        }
        let (old, new, index) = (self.old, self.new, self.index);
        let mask = index.anchor_mask();
        let mut sub_start = range.start;
        let end = range.end;
        slide(new, range, ANCHOR_WINDOW, |w| {
            let pos = w.pos();
            let key = mix(w.hash());
            if key & mask != 0 {
                return None;
            }
            let c = usize::try_from(index.lookup_anchor(key)?).ok()?;
            if old.get(c..c + ANCHOR_WINDOW)? != w.bytes() {
                return None;
            }
            let (start, src, stop) = self.extend(sub_start..end, pos, c, ANCHOR_WINDOW);
            let disp = src as i64 - start as i64;
            let next = if stop - start >= MIN_FINE_MATCH {
                self.coarse_gap(sub_start..start, Some(disp));
                self.push_copy(start, src, stop);
                stop
            } else {
                // Too short to copy: a seed for a diff when the bytes
                // around it mostly match too (rebuilt code, where
                // changed addresses break every exact match).
                let (a, b) = self.approx_extend(sub_start..end, start, stop, disp);
                if b - a < MIN_APPROX_MATCH {
                    return None;
                }
                self.coarse_gap(sub_start..a, Some(disp));
                self.push_diff((a as i64 + disp) as usize, &new[a..b]);
                self.remember(disp, b - a);
                b
            };
            sub_start = next;
            Some(next)
        });
        self.coarse_gap(sub_start..end, next_disp);
    }

    /// Extends the verified match `new[pos..pos+width] == old[c..c+width]`
    /// in both directions without leaving `bounds`; returns its new start,
    /// old start and new end.
    fn extend(
        &self,
        bounds: Range<usize>,
        pos: usize,
        c: usize,
        width: usize,
    ) -> (usize, usize, usize) {
        let (old, new) = (self.old, self.new);
        let back = common_suffix(&new[bounds.start..pos], &old[..c]);
        let fwd = common_prefix(&new[pos + width..bounds.end], &old[c + width..]);
        (pos - back, c - back, pos + width + fwd)
    }

    /// Extends the exact match `new[start..stop]` at displacement `disp`
    /// both ways over mismatches, within `bounds`: to where the score
    /// (+1 per matching byte, -[`APPROX_PENALTY`] per mismatch) peaks, giving
    /// up once it falls [`APPROX_GIVE_UP`] below the peak. Returns the
    /// extended range of `new`.
    fn approx_extend(
        &self,
        bounds: Range<usize>,
        start: usize,
        stop: usize,
        disp: i64,
    ) -> (usize, usize) {
        let (old, new) = (self.old, self.new);
        // Both ends lie in the old image: `new[start..stop]` matched there.
        let old_start = (start as i64 + disp) as usize;
        let old_stop = old_start + (stop - start);
        let ahead = best_prefix(
            new[stop..bounds.end].iter().zip(&old[old_stop..]),
            APPROX_PENALTY,
            APPROX_GIVE_UP,
        );
        let back = best_prefix(
            new[bounds.start..start]
                .iter()
                .rev()
                .zip(old[..old_start].iter().rev()),
            APPROX_PENALTY,
            APPROX_GIVE_UP,
        );
        (start - back, stop + ahead)
    }

    /// Emits a copy of `new[start..stop]` from `old[src..]` and remembers
    /// its displacement.
    fn push_copy(&mut self, start: usize, src: usize, stop: usize) {
        let disp = src as i64 - start as i64;
        self.push(Op::Copy {
            src: src as u64,
            len: (stop - start) as u64,
        });
        self.remember(disp, stop - start);
    }

    /// Notes `len` bytes matched at displacement `disp`: the window choice
    /// weighs displacements, and the next gap diffs against the last one.
    fn remember(&mut self, disp: i64, len: usize) {
        *self.disp_weight.entry(disp).or_default() += len as u64;
        self.last_disp = Some(disp);
    }

    /// Encodes unmatched bytes without searching: bsdiff-style diffs at
    /// the neighbouring matches' displacements, literals between.
    fn coarse_gap(&mut self, range: Range<usize>, next_disp: Option<i64>) {
        if range.is_empty() {
            return;
        }
        let (old, new) = (self.old, self.new);
        let gap = &new[range.clone()];
        let old_at = |disp: i64, pos: usize| usize::try_from(pos as i64 + disp).ok();

        // bsdiff's rule, stricter: extend while matches outweigh mismatches
        // by MISMATCH_PENALTY.
        let fwd_base = self.last_disp.and_then(|d| old_at(d, range.start));
        let fwd = fwd_base.map_or(0, |base| {
            let after = old.get(base..).unwrap_or(&[]);
            best_prefix(gap.iter().zip(after), MISMATCH_PENALTY, i64::MAX)
        });
        let back_base = next_disp.and_then(|d| old_at(d, range.end));
        let mut back = back_base.map_or(0, |base| {
            let before = old.get(..base).unwrap_or(&[]);
            best_prefix(
                gap.iter().rev().zip(before.iter().rev()),
                MISMATCH_PENALTY,
                i64::MAX,
            )
        });
        if fwd + back > gap.len() {
            back = gap.len() - fwd;
        }
        if let Some(base) = fwd_base.filter(|_| fwd > 0) {
            self.push_diff(base, &gap[..fwd]);
        }
        let mid = &gap[fwd..gap.len() - back];
        if !mid.is_empty() {
            self.plan.literal.extend_from_slice(mid);
            self.push(Op::Literal {
                len: mid.len() as u64,
            });
        }
        if let Some(base) = back_base.filter(|_| back > 0) {
            self.push_diff(base - back, &gap[gap.len() - back..]);
        }
    }

    fn push_diff(&mut self, src: usize, new: &[u8]) {
        let old = &self.old[src..src + new.len()];
        self.plan
            .diff
            .extend(new.iter().zip(old).map(|(n, o)| n.wrapping_sub(*o)));
        self.push(Op::Diff {
            src: src as u64,
            len: new.len() as u64,
        });
    }

    fn push(&mut self, op: Op) {
        self.plan.ops.push(op);
    }

    /// Picks the old range zstd may reference for literal bytes: centred on
    /// where most of this segment's matches point (neighbouring matches
    /// usually belong to the old version of the same file), else on the
    /// same relative position in the old image.
    fn choose_reference(&mut self, range: Range<usize>, max_reference: usize) {
        if self.plan.literal.is_empty() || self.old.is_empty() || max_reference == 0 {
            return;
        }
        let old_len = self.old.len();
        let mid_new = range.start + range.len() / 2;
        let centre = match self.disp_weight.iter().max_by_key(|(d, w)| (**w, **d)) {
            Some((&d, _)) => (mid_new as i64 + d).clamp(0, old_len as i64) as usize,
            None => ((mid_new as u128 * old_len as u128) / self.new.len().max(1) as u128) as usize,
        };
        // Loading a reference costs zstd about as much as compressing it:
        // scale it with the literal bytes it serves.
        let wanted = self.plan.literal.len().saturating_mul(8).max(64 * 1024);
        let len = max_reference.min(wanted).min(old_len);
        let start = centre.saturating_sub(len / 2).min(old_len - len);
        self.plan.reference = start as u64..(start + len) as u64;
    }
}

/// Length of the prefix of `pairs` (new byte, old byte) where the score, +1
/// per equal pair and -`penalty` per differing one, peaks; scanning stops
/// once the score falls `give_up` below its peak.
fn best_prefix<'a>(
    pairs: impl Iterator<Item = (&'a u8, &'a u8)>,
    penalty: i64,
    give_up: i64,
) -> usize {
    let (mut score, mut best, mut len) = (0i64, 0i64, 0);
    for (i, (n, o)) in pairs.enumerate() {
        score += if n == o { 1 } else { -penalty };
        if score > best {
            best = score;
            len = i + 1;
        } else if score < best.saturating_sub(give_up) {
            break;
        }
    }
    len
}

static ZERO_PAGE: [u8; 4096] = [0; 4096];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuilt_code_becomes_diffs_not_literals() {
        // "Code" whose addresses changed: one byte in every 48 differs, so
        // no exact match reaches 64 bytes, and it moved by 100 bytes.
        let mut rng = crate::testing::Rng::new(3);
        let old = rng.bytes(256 << 10);
        let mut new = rng.bytes(100);
        new.extend_from_slice(&old[..200 << 10]);
        for i in (140..new.len()).step_by(48) {
            new[i] = new[i].wrapping_add(1);
        }
        let index = BlockIndex::build(&old, 4096, &crate::Serial);
        let plan = plan_segment(&old, &new, 0..new.len(), &index, &DiffOptions::default());
        let diffed: u64 = plan
            .ops
            .iter()
            .filter(|op| matches!(op, Op::Diff { .. }))
            .map(Op::len)
            .sum();
        assert!(
            diffed > 190 << 10 && plan.literal.len() < 8 << 10,
            "diffed {diffed}, literal {}",
            plan.literal.len()
        );
    }

    #[test]
    fn finds_moved_block_at_odd_offset() {
        let old: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let mut new = vec![7u8; 1001];
        new.extend_from_slice(&old[8192..8192 + 20000]);
        let index = BlockIndex::build(&old, 4096, &crate::Serial);
        let plan = plan_segment(&old, &new, 0..new.len(), &index, &DiffOptions::default());
        assert!(
            plan.ops.contains(&Op::Copy {
                src: 8192,
                len: 20000
            }),
            "{:?}",
            plan.ops
        );
    }
}
