//! A fine matcher for one pair of files: a suffix array of the old file
//! finds matches from a few bytes, as bsdiff and HDiffPatch do.
//!
//! [`plan_segment`](crate::generate::plan::plan_segment) finds matches from
//! 32-byte anchors, cheap over whole images but blind to the short pieces
//! a rebuilt binary keeps between its changed addresses. Here the old file
//! is suffix-sorted (`divsufsort`, 4 bytes per old byte: memory is bounded
//! by the old file, not by the image), and each position of the new file
//! looks up its longest match in `O(m log n)`.
//!
//! The scan is Colin Percival's bsdiff loop: a match is taken only when it
//! beats the bytes that the current displacement already matches by more
//! than [`FineOptions::min_gain`], or matches many more bytes around it
//! ([`FineOptions::min_approx_gain`]: the cost rule that keeps short
//! matches out unless they pay), then the stretch before it is grown forwards from
//! the previous match and backwards from this one over mismatches, as a
//! diff (old bytes plus mostly-zero diff bytes), with literal bytes
//! between. Diff stretches whose diff bytes are zero for long runs become
//! copies, and long zero runs among literals become zero ops.
//!
//! Measured on library upgrades (bookworm to trixie: perl, libc,
//! libstdc++, libapt-pkg, libsystemd, libzstd, libdb, ls; see
//! `benches/examples/fine_pairs.rs`), the literal bytes are what decide
//! the size: zstd finds short matches in its reference window by itself,
//! so a short match pays only when taking it saves more than its ops. The
//! gain threshold of 48 bytes and the mismatch penalty of 3 reflect that.

use crate::generate::plan::SegmentPlan;
use delta_format::Op;
use std::collections::HashMap;
use std::ops::Range;

/// Tuning of [`fine_plan`].
#[derive(Debug, Clone)]
pub struct FineOptions {
    /// Bytes by which a new match must beat what the current displacement
    /// already matches over the same stretch before it is taken (bsdiff:
    /// 8). Shorter matches cost more as ops than zstd spends on the same
    /// bytes as literals against the reference window: on eight library
    /// upgrades (bookworm to trixie) 48 gave the smallest deltas (8: +9%,
    /// 16: +2%, 32: +0.2%, 128: +0.5%).
    pub min_gain: usize,
    /// A shorter match (of at least 8 bytes' gain) is taken all the same
    /// when its displacement matches this many more bytes than the
    /// current one over the 256 bytes from its start: code whose
    /// addresses changed, where no exact match is long (64: +0.2%, 96 and
    /// 192: +0.05% on the same upgrades; without it, +1.2%).
    pub min_approx_gain: usize,
    /// Cost of a mismatching byte against a matching one when growing a
    /// diff (bsdiff: 1, here +0.4%; 2: +1%; 4 and 5: +0.1%): dense diff
    /// bytes are better left to zstd as literals.
    pub mismatch_penalty: i64,
    /// Shortest run of zero diff bytes that becomes a copy, in bytes (16
    /// to 512 change the size by less than 0.1%).
    pub min_copy: usize,
    /// Shortest run of zero literal bytes that becomes a zero op, in bytes.
    pub min_zero: usize,
    /// Most bytes of old file given to zstd as reference for the literals.
    pub max_reference: usize,
}

impl Default for FineOptions {
    fn default() -> Self {
        FineOptions {
            min_gain: 48,
            min_approx_gain: 128,
            mismatch_penalty: 3,
            min_copy: 128,
            min_zero: 64,
            max_reference: 4 << 20,
        }
    }
}

/// bsdiff's threshold: a match must beat the current displacement by more
/// than this many bytes before its [`Builder::gain`] is weighed.
const BSDIFF_GAIN: usize = 8;

/// Bytes from a match's start over which its gain is weighed.
const LOOKAHEAD: usize = 256;

/// Longest match compared by one search, in bytes: bounds the time of a
/// lookup (`O(MAX_MATCH log n)`); a longer match is continued by the next.
const MAX_MATCH: usize = 1 << 16;

/// Plans `new` against the whole file `old` with [`FineOptions::default`].
pub fn fine_plan(old: &[u8], new: &[u8]) -> SegmentPlan {
    fine_plan_with(old, new, &FineOptions::default())
}

/// Plans `new` against the whole file `old`: the returned ops produce
/// exactly `new`, and their `src` offsets index into `old`.
///
/// Memory: 4 bytes per old byte for the suffix array, plus the plan. An
/// old file of 2 GiB or more (beyond the suffix array's `i32`) is not
/// searched: `new` becomes literal and zero ops.
pub fn fine_plan_with(old: &[u8], new: &[u8], options: &FineOptions) -> SegmentPlan {
    let sa = suffix_array(old);
    let mut plans = fine_plans_sorted(old, &sa, new, options, &[options.mismatch_penalty]);
    plans.pop().unwrap_or_default()
}

/// [`fine_plan_with`] with the suffix array `sa` of `old` ([`suffix_array`])
/// already made, for each of `penalties` (in place of
/// [`FineOptions::mismatch_penalty`]), in that order. The penalty only
/// decides how far each diff grows around the matches, not which matches
/// are taken: the old file is searched once for all of them.
pub(crate) fn fine_plans_sorted(
    old: &[u8],
    sa: &[i32],
    new: &[u8],
    options: &FineOptions,
    penalties: &[i64],
) -> Vec<SegmentPlan> {
    let sorted = Sorted::new(old, sa);
    let matches = scan(&sorted, new, options);
    penalties
        .iter()
        .map(|&mismatch_penalty| {
            let options = FineOptions {
                mismatch_penalty,
                ..options.clone()
            };
            let mut builder = Builder {
                old,
                new,
                options: &options,
                plan: SegmentPlan::default(),
                disp_weight: HashMap::new(),
            };
            builder.build(&matches);
            builder.choose_reference();
            builder.plan
        })
        .collect()
}

/// The suffix array of `old` (4 bytes per old byte), or an empty one when
/// `old` is too large for `i32` offsets.
pub fn suffix_array(old: &[u8]) -> Vec<i32> {
    if i32::try_from(old.len()).is_err() {
        return Vec::new();
    }
    let mut sa = vec![0; old.len()];
    divsufsort::sort_in_place(old, &mut sa);
    sa
}

/// Length of the common prefix of `a` and `b`, at most [`MAX_MATCH`].
fn match_len(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .take(MAX_MATCH)
        .take_while(|(x, y)| x == y)
        .count()
}

/// The suffix array of an old file, with where each two-byte prefix's
/// suffixes start in it: a search starts in its key's bucket, which
/// spares it the first dozen or more of its steps, each a cache miss in
/// the array and another in the old file (they were most of a search).
struct Sorted<'a> {
    old: &'a [u8],
    sa: &'a [i32],
    /// `first[k]`: how many suffixes sort before those that start with
    /// the two bytes `k` (a one-byte suffix `x` counts as `x, 0`, as it
    /// sorts first among them); 65,537 entries, or none for an empty file.
    first: Vec<u32>,
}

impl<'a> Sorted<'a> {
    fn new(old: &'a [u8], sa: &'a [i32]) -> Sorted<'a> {
        let mut first = Vec::new();
        // The counts need u32 (the array's i32 offsets already bound it).
        if !sa.is_empty() && sa.len() == old.len() && u32::try_from(old.len()).is_ok() {
            first = vec![0u32; (1 << 16) + 1];
            for pair in old.windows(2) {
                first[bucket(pair[0], pair[1]) + 1] += 1;
            }
            if let Some(&last) = old.last() {
                first[bucket(last, 0) + 1] += 1;
            }
            for k in 1..first.len() {
                first[k] += first[k - 1];
            }
        }
        Sorted { old, sa, first }
    }

    /// The longest match of a prefix of `new` among the suffixes of the
    /// old file: its old offset and length.
    fn search(&self, new: &[u8]) -> (usize, usize) {
        let (sa, old) = (self.sa, self.old);
        let at = |i: usize| usize::try_from(sa[i]).expect("suffix array holds offsets");
        let n = sa.len();
        if n == 0 {
            return (0, 0);
        }
        let key = &new[..new.len().min(MAX_MATCH)];
        // Invariant: suffix `lo` sorts before `key` (or is the first),
        // suffix `hi` at or after it (or is the last). Suffixes before the
        // key's bucket sort before it and those after it after: the search
        // ends on the pair it would have found over the whole array.
        let (mut lo, mut hi) = (0, n - 1);
        if let ([a, b, ..], false) = (key, self.first.is_empty()) {
            let k = bucket(*a, *b);
            let (start, end) = (self.first[k] as usize, self.first[k + 1] as usize);
            lo = start.saturating_sub(1).min(n.saturating_sub(2));
            hi = end.max(lo + 1).min(n - 1);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let suffix = &old[at(mid)..];
            if suffix[..suffix.len().min(key.len())] < *key {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (a, b) = (at(lo), at(hi));
        let (la, lb) = (match_len(&old[a..], new), match_len(&old[b..], new));
        if la >= lb {
            (a, la)
        } else {
            (b, lb)
        }
    }
}

/// The bucket of suffixes that start with the bytes `a`, `b`.
fn bucket(a: u8, b: u8) -> usize {
    usize::from(a) << 8 | usize::from(b)
}

/// bsdiff's main loop: the matches worth taking, in new-file order, as
/// (new offset, old offset), the last at the new file's end. Which match
/// is taken depends on the displacement of the one before, not on how far
/// diffs grow around them, so one scan serves every mismatch penalty.
fn scan(sorted: &Sorted<'_>, new: &[u8], options: &FineOptions) -> Vec<(usize, usize)> {
    let old = sorted.old;
    let new_len = new.len();
    // `old[i + offset] == new[i]`, where the offset lands in `old`.
    let same = |i: usize, offset: i64| {
        usize::try_from(i as i64 + offset)
            .ok()
            .and_then(|j| old.get(j))
            .is_some_and(|o| *o == new[i])
    };
    let mut matches = Vec::new();
    let (mut scan, mut len, mut pos) = (0usize, 0usize, 0usize);
    let mut last_offset = 0i64;
    while scan < new_len {
        let mut old_score = 0usize;
        scan += len;
        let mut scsc = scan;
        while scan < new_len {
            (pos, len) = sorted.search(&new[scan..]);
            while scsc < scan + len {
                if same(scsc, last_offset) {
                    old_score += 1;
                }
                scsc += 1;
            }
            if (len == old_score && len != 0)
                || len > old_score + options.min_gain
                || (len > old_score + BSDIFF_GAIN
                    && gain(old, new, options, scan, pos, last_offset)
                        > options.min_approx_gain as i64)
            {
                break;
            }
            if same(scan, last_offset) {
                old_score = old_score.saturating_sub(1);
            }
            scan += 1;
        }
        if len == old_score && scan != new_len {
            continue;
        }
        matches.push((scan, pos));
        last_offset = pos as i64 - scan as i64;
    }
    matches
}

/// Bytes matched at the match's displacement (`new[scan..]` against
/// `old[pos..]`) less those matched at `last_offset`, over the match and
/// [`LOOKAHEAD`] bytes after it: a match in code whose addresses changed
/// counts the matching bytes beyond its first mismatch.
fn gain(
    old: &[u8],
    new: &[u8],
    options: &FineOptions,
    scan: usize,
    pos: usize,
    last_offset: i64,
) -> i64 {
    let ahead = &new[scan..new.len().min(scan + LOOKAHEAD)];
    let goal = options.min_approx_gain;
    let mut here = 0;
    for (i, (n, o)) in ahead.iter().zip(&old[pos..]).enumerate() {
        here += usize::from(n == o);
        if here + (ahead.len() - i - 1) <= goal {
            // Cannot beat the goal even if all the rest match: most
            // candidates in unrelated data stop here early.
            return 0;
        }
    }
    let there = usize::try_from(scan as i64 + last_offset)
        .ok()
        .and_then(|j| old.get(j..))
        .map_or(0, |o| ahead.iter().zip(o).filter(|(n, o)| n == o).count());
    here as i64 - there as i64
}

/// Length of the prefix of `pairs` (new byte, old byte) where the score, +1
/// per equal pair and -`penalty` per differing one, peaks.
fn best_prefix<'a>(pairs: impl Iterator<Item = (&'a u8, &'a u8)>, penalty: i64) -> usize {
    let (mut score, mut best, mut len) = (0i64, 0i64, 0);
    for (i, (n, o)) in pairs.enumerate() {
        score += if n == o { 1 } else { -penalty };
        if score > best {
            best = score;
            len = i + 1;
        }
    }
    len
}

struct Builder<'a> {
    old: &'a [u8],
    new: &'a [u8],
    options: &'a FineOptions,
    plan: SegmentPlan,
    /// Bytes diffed per displacement (`old - new`), to pick the reference.
    disp_weight: HashMap<i64, u64>,
}

impl Builder<'_> {
    /// Emits the plan of `matches` ([`scan`]): from each match to the
    /// next, the diff grown forwards from the one, literal bytes, and the
    /// diff grown backwards from the other (emitted on the next turn).
    fn build(&mut self, matches: &[(usize, usize)]) {
        let (old, new) = (self.old, self.new);
        let (old_len, new_len) = (old.len(), new.len());
        let (mut last_scan, mut last_pos) = (0usize, 0usize);
        for &(scan, pos) in matches {
            let penalty = self.options.mismatch_penalty;
            // Forwards from the last match.
            let mut len_f = best_prefix(
                new[last_scan..scan]
                    .iter()
                    .zip(&old[last_pos.min(old_len)..]),
                penalty,
            );
            // Backwards from this one.
            let mut len_b = if scan < new_len {
                best_prefix(
                    new[last_scan..scan]
                        .iter()
                        .rev()
                        .zip(old[..pos].iter().rev()),
                    penalty,
                )
            } else {
                0
            };
            if last_scan + len_f > scan - len_b {
                // The two overlap: split where the forward diff stops
                // paying more than the backward one.
                let overlap = (last_scan + len_f) - (scan - len_b);
                let (mut s, mut best, mut lens) = (0i64, 0i64, 0usize);
                for i in 0..overlap {
                    let n = last_scan + len_f - overlap + i;
                    if new[n] == old[last_pos + len_f - overlap + i] {
                        s += 1;
                    }
                    if new[scan - len_b + i] == old[pos - len_b + i] {
                        s -= 1;
                    }
                    if s > best {
                        best = s;
                        lens = i + 1;
                    }
                }
                len_f = len_f + lens - overlap;
                len_b -= lens;
            }
            self.emit_diff(last_pos, last_scan..last_scan + len_f);
            self.emit_literal(last_scan + len_f..scan - len_b);
            last_scan = scan - len_b;
            last_pos = pos - len_b;
        }
    }

    /// Emits `new[range]` as old bytes from `src` plus diff bytes, with
    /// long runs of zero diff bytes as copies.
    fn emit_diff(&mut self, src: usize, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let disp = src as i64 - range.start as i64;
        *self.disp_weight.entry(disp).or_default() += range.len() as u64;
        let new = &self.new[range.clone()];
        let old = &self.old[src..src + new.len()];
        let min_copy = self.options.min_copy.max(1);
        let (mut i, mut diff_start) = (0, 0);
        while i < new.len() {
            if new[i] != old[i] {
                i += 1;
                continue;
            }
            let run = new[i..]
                .iter()
                .zip(&old[i..])
                .take_while(|(n, o)| n == o)
                .count();
            if run >= min_copy {
                self.push_diff(src, new, old, diff_start..i);
                self.push(Op::Copy {
                    src: (src + i) as u64,
                    len: run as u64,
                });
                diff_start = i + run;
            }
            i += run;
        }
        self.push_diff(src, new, old, diff_start..new.len());
    }

    /// Emits `new[range]` (of the stretch at `src`) as a diff op.
    fn push_diff(&mut self, src: usize, new: &[u8], old: &[u8], range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        let (new, old) = (&new[range.clone()], &old[range.clone()]);
        self.plan
            .diff
            .extend(new.iter().zip(old).map(|(n, o)| n.wrapping_sub(*o)));
        self.push(Op::Diff {
            src: (src + range.start) as u64,
            len: range.len() as u64,
        });
    }

    /// Emits `new[range]` as literal bytes, with long zero runs as zero ops.
    fn emit_literal(&mut self, range: Range<usize>) {
        let bytes = &self.new[range];
        let min_zero = self.options.min_zero.max(1);
        let mut i = 0;
        while i < bytes.len() {
            let lit_start = i;
            let mut zeros = None;
            while i < bytes.len() {
                if bytes[i] == 0 {
                    let run = bytes[i..].iter().take_while(|b| **b == 0).count();
                    if run >= min_zero {
                        zeros = Some(run);
                        break;
                    }
                    i += run;
                } else {
                    i += 1;
                }
            }
            if i > lit_start {
                self.plan.literal.extend_from_slice(&bytes[lit_start..i]);
                self.push(Op::Literal {
                    len: (i - lit_start) as u64,
                });
            }
            if let Some(run) = zeros {
                self.push(Op::Zero { len: run as u64 });
                i += run;
            }
        }
    }

    /// Appends `op`, merged into the last op when it continues it.
    fn push(&mut self, op: Op) {
        let merged = match (self.plan.ops.last_mut(), op) {
            (Some(Op::Literal { len }), Op::Literal { len: more })
            | (Some(Op::Zero { len }), Op::Zero { len: more }) => {
                *len += more;
                true
            }
            (Some(Op::Copy { src, len }), Op::Copy { src: s, len: more })
            | (Some(Op::Diff { src, len }), Op::Diff { src: s, len: more })
                if *src + *len == s =>
            {
                *len += more;
                true
            }
            _ => false,
        };
        if !merged {
            self.plan.ops.push(op);
        }
    }

    /// Picks the old range zstd may reference for literal bytes: centred
    /// where most diffed bytes point, scaled with the literal bytes.
    fn choose_reference(&mut self) {
        let (old_len, new_len) = (self.old.len(), self.new.len());
        if self.plan.literal.is_empty() || old_len == 0 || self.options.max_reference == 0 {
            return;
        }
        let mid_new = new_len / 2;
        let centre = match self.disp_weight.iter().max_by_key(|(d, w)| (**w, **d)) {
            Some((&d, _)) => (mid_new as i64 + d).clamp(0, old_len as i64) as usize,
            None => ((mid_new as u128 * old_len as u128) / new_len.max(1) as u128) as usize,
        };
        let wanted = self.plan.literal.len().saturating_mul(8).max(64 * 1024);
        let len = self.options.max_reference.min(wanted).min(old_len);
        let start = centre.saturating_sub(len / 2).min(old_len - len);
        self.plan.reference = start as u64..(start + len) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{edge_sizes, mutate, Rng};
    use proptest::prelude::*;

    /// A tiny reference applier: the bytes the plan's ops produce, or why
    /// they cannot.
    fn run(old: &[u8], plan: &SegmentPlan) -> Result<Vec<u8>, String> {
        let (mut diff, mut literal) = (&plan.diff[..], &plan.literal[..]);
        let mut out = Vec::new();
        for op in &plan.ops {
            let len = usize::try_from(op.len()).map_err(|e| e.to_string())?;
            if len == 0 {
                return Err(format!("empty op {op:?}"));
            }
            let from_old = |src: u64| {
                let src = usize::try_from(src).map_err(|e| e.to_string())?;
                old.get(src..src + len)
                    .ok_or_else(|| format!("{op:?} past old ({})", old.len()))
            };
            match *op {
                Op::Copy { src, .. } => out.extend_from_slice(from_old(src)?),
                Op::Zero { .. } => out.resize(out.len() + len, 0),
                Op::Literal { .. } => {
                    let (head, rest) = literal
                        .split_at_checked(len)
                        .ok_or("literal section short")?;
                    out.extend_from_slice(head);
                    literal = rest;
                }
                Op::Diff { src, .. } => {
                    let base = from_old(src)?;
                    let (head, rest) = diff.split_at_checked(len).ok_or("diff section short")?;
                    out.extend(base.iter().zip(head).map(|(o, d)| o.wrapping_add(*d)));
                    diff = rest;
                }
                Op::CopyNew { .. } => return Err("copy-new in a fine plan".into()),
            }
        }
        if !diff.is_empty() || !literal.is_empty() {
            return Err(format!(
                "{} diff, {} literal bytes left",
                diff.len(),
                literal.len()
            ));
        }
        if plan.reference.end > old.len() as u64 || plan.reference.start > plan.reference.end {
            return Err(format!("reference {:?} outside old", plan.reference));
        }
        Ok(out)
    }

    fn check(old: &[u8], new: &[u8]) -> SegmentPlan {
        let plan = fine_plan(old, new);
        assert_eq!(run(old, &plan).as_deref(), Ok(new), "ops {:?}", plan.ops);
        plan
    }

    #[test]
    fn the_reference_applier_catches_a_wrong_plan() {
        let old = b"hello world".to_vec();
        let mut plan = fine_plan(&old, b"hello word");
        plan.literal.push(1);
        assert!(run(&old, &plan).is_err());
        let bad = SegmentPlan {
            ops: vec![Op::Copy { src: 8, len: 4 }],
            ..SegmentPlan::default()
        };
        assert!(run(&old, &bad).is_err());
    }

    #[test]
    fn edge_sizes_round_trip() {
        let mut rng = Rng::new(5);
        for &a in &edge_sizes(32) {
            for &b in &edge_sizes(32) {
                let old = rng.bytes(a);
                let new = rng.bytes(b);
                check(&old, &new);
                let prefix = &old[..a.min(b)];
                check(&old, prefix);
                check(&[], &new);
                check(&old, &[]);
            }
        }
        check(&[], &[]);
        check(&[0], &[0]);
        check(&[0], &[1]);
        check(&[7], &[]);
    }

    #[test]
    fn identical_files_are_one_copy() {
        let old = Rng::new(1).bytes(100_000);
        let plan = check(&old, &old);
        assert_eq!(
            plan.ops,
            vec![Op::Copy {
                src: 0,
                len: 100_000
            }]
        );
        assert!(plan.literal.is_empty() && plan.diff.is_empty());
    }

    #[test]
    fn zero_runs_become_zero_ops() {
        let old = Rng::new(2).bytes(4096);
        let new = vec![0u8; 10_000];
        let plan = check(&old, &new);
        assert!(plan.ops.iter().any(|op| matches!(op, Op::Zero { .. })));
        let zeros = vec![0u8; 20_000];
        check(&zeros, &new);
    }

    #[test]
    fn short_moved_pieces_are_found() {
        // 12-byte pieces of old, shuffled: too short for 32-byte anchors,
        // found when the gain threshold lets them in.
        let mut rng = Rng::new(9);
        let old = rng.bytes(64 << 10);
        let mut new = Vec::new();
        for _ in 0..2000 {
            let at = rng.below((old.len() - 12) as u64) as usize;
            new.extend_from_slice(&old[at..at + 12]);
        }
        let options = FineOptions {
            min_gain: 4,
            ..FineOptions::default()
        };
        let plan = fine_plan_with(&old, &new, &options);
        assert_eq!(run(&old, &plan).as_deref(), Ok(&new[..]));
        assert!(
            plan.literal.len() < new.len() / 4,
            "{} of {} literal",
            plan.literal.len(),
            new.len()
        );
    }

    #[test]
    fn sparse_changes_become_diffs() {
        let mut rng = Rng::new(3);
        let old = rng.bytes(256 << 10);
        let mut new = rng.bytes(100);
        new.extend_from_slice(&old[..200 << 10]);
        for i in (140..new.len()).step_by(48) {
            new[i] = new[i].wrapping_add(1);
        }
        let plan = check(&old, &new);
        assert!(plan.literal.len() < 1024, "literal {}", plan.literal.len());
        let nonzero = plan.diff.iter().filter(|b| **b != 0).count();
        assert!(nonzero < 8 << 10, "{nonzero} non-zero diff bytes");
    }

    /// The search over the whole array, as it was before the buckets.
    fn search_whole(sa: &[i32], old: &[u8], new: &[u8]) -> (usize, usize) {
        let sorted = Sorted {
            old,
            sa,
            first: Vec::new(),
        };
        sorted.search(new)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn bucketed_search_finds_what_the_whole_array_gives(
            old in proptest::collection::vec(0u8..3, 0..200),
            new in proptest::collection::vec(0u8..4, 1..40),
        ) {
            // A small alphabet: empty buckets, one-byte suffixes, keys
            // before the first suffix and after the last.
            let sa = suffix_array(&old);
            let sorted = Sorted::new(&old, &sa);
            for start in 0..new.len() {
                prop_assert_eq!(
                    sorted.search(&new[start..]),
                    search_whole(&sa, &old, &new[start..]),
                    "old {:?}, new {:?}", old, &new[start..]
                );
            }
        }

        #[test]
        fn plans_for_several_penalties_are_those_made_one_by_one(seed in any::<u64>(), len in 0usize..8_000, edits in 0usize..30) {
            let mut rng = Rng::new(seed);
            let old = rng.text(len);
            let new = mutate(&old, &mut rng, edits);
            let sa = suffix_array(&old);
            let options = FineOptions::default();
            let plans = fine_plans_sorted(&old, &sa, &new, &options, &[1, 3, 0]);
            for (plan, mismatch_penalty) in plans.iter().zip([1, 3, 0]) {
                let alone = fine_plan_with(&old, &new, &FineOptions { mismatch_penalty, ..options.clone() });
                prop_assert_eq!(&plan.ops, &alone.ops);
                prop_assert_eq!(&plan.diff, &alone.diff);
                prop_assert_eq!(&plan.literal, &alone.literal);
                prop_assert_eq!(&plan.reference, &alone.reference);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_edits_round_trip(seed in any::<u64>(), len in 0usize..20_000, edits in 0usize..40, text in any::<bool>()) {
            let mut rng = Rng::new(seed);
            let old = if text { rng.text(len) } else { rng.bytes(len) };
            let new = mutate(&old, &mut rng, edits);
            let plan = fine_plan(&old, &new);
            prop_assert_eq!(run(&old, &plan), Ok(new));
        }

        #[test]
        fn any_bytes_round_trip(old in proptest::collection::vec(0u8..4, 0..300), new in proptest::collection::vec(0u8..4, 0..300)) {
            let plan = fine_plan(&old, &new);
            prop_assert_eq!(run(&old, &plan), Ok(new));
        }

        #[test]
        fn options_keep_round_trips(seed in any::<u64>(), min_gain in 0usize..16, penalty in 0i64..5, min_copy in 0usize..64, min_zero in 0usize..64) {
            let mut rng = Rng::new(seed);
            let old = rng.text(3000);
            let new = mutate(&old, &mut rng, 10);
            let options = FineOptions { min_gain, min_approx_gain: min_gain * 4, mismatch_penalty: penalty, min_copy, min_zero, max_reference: 1 << 12 };
            let plan = fine_plan_with(&old, &new, &options);
            prop_assert_eq!(run(&old, &plan), Ok(new));
        }
    }

    #[test]
    fn suffix_array_is_sorted() {
        let old = Rng::new(4).text(5000);
        let sa = suffix_array(&old);
        assert_eq!(sa.len(), old.len());
        for w in sa.windows(2) {
            assert!(old[w[0] as usize..] < old[w[1] as usize..]);
        }
    }
}
