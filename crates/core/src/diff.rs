//! Finding what the new image shares with the old one.
//!
//! The old image is indexed by the hash of each aligned block (4 KiB by
//! default: filesystems move data in blocks). The new image is scanned with
//! a rolling hash of the same width, so a block is found wherever it moved,
//! at any byte offset (tar-like or shifted data). Each hit is checked byte by
//! byte against the old image — the generator has both images, so no strong
//! hash is needed — and extended in both directions. Zero runs are found
//! directly. What lies between matches (a *gap*) is encoded bsdiff-style:
//! the stretch after a match is diffed against the old bytes that follow the
//! match, the stretch before the next match against the old bytes before
//! it, and the middle is literal. Literal bytes are later compressed with
//! zstd against a reference window of the old image (see [`crate::encode`]).
//!
//! This module is pure and single-threaded: the generator runs it on many
//! segments at once.

use crate::encode::SegmentPlan;
use delta_format::Op;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;

/// Tuning of the matcher.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Width of indexed blocks and of the rolling hash, in bytes.
    pub block_size: usize,
    /// Most bytes of old image used as the zstd reference of a segment. A
    /// unit's own window is at most half of it, so that two neighbours can
    /// share one segment with both windows (see [`crate::merge_plans`]).
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

/// Hash of one block, the same value a [`Roller`] reaches over those bytes.
pub fn hash_block(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(PRIME).wrapping_add(u64::from(b) + 1)
    })
}

/// Mixes a rolling hash into a table key (the polynomial's low bits are
/// weak).
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Rolling polynomial hash over a window of fixed width.
pub(crate) struct Roller {
    pub(crate) hash: u64,
    /// PRIME^(width-1): the weight of the byte leaving the window.
    out_weight: u64,
}

impl Roller {
    pub(crate) fn new(window: &[u8]) -> Roller {
        let out_weight = (1..window.len()).fold(1u64, |w, _| w.wrapping_mul(PRIME));
        Roller {
            hash: hash_block(window),
            out_weight,
        }
    }

    pub(crate) fn roll(&mut self, out: u8, inp: u8) {
        let h = self
            .hash
            .wrapping_sub((u64::from(out) + 1).wrapping_mul(self.out_weight));
        self.hash = h.wrapping_mul(PRIME).wrapping_add(u64::from(inp) + 1);
    }
}

#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Where each distinct non-zero aligned block of the old image is.
///
/// Memory: about 24 bytes per old block (0.6% of the old image at 4 KiB),
/// a one-bit-per-slot filter of at most 16 MiB, and 12 bytes per anchor of
/// the fine index (at most 288 MiB, see [`anchor_mask`]).
#[derive(Debug)]
pub struct BlockIndex {
    block_size: usize,
    filter: Vec<u64>,
    filter_mask: u64,
    blocks: HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>,
    /// Fine index: content-defined anchors, sorted by key, one offset per
    /// key.
    anchors: Vec<Anchor>,
    anchor_mask: u64,
}

/// Width of the windows hashed by the fine (anchor) index, in bytes.
pub const ANCHOR_WINDOW: usize = 32;
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

/// Most anchors the fine index holds: 12 bytes each, so at most 288 MiB.
const MAX_ANCHORS: usize = 24 << 20;

/// Mask selecting anchor keys so that an old image of `old_len` bytes gets
/// at most about [`MAX_ANCHORS`] anchors and at least one anchor every
/// 16 bytes on average (a 640 MiB image gets one every 32 bytes: denser
/// anchors find more of the short pieces rebuilt files keep).
pub fn anchor_mask(old_len: usize) -> u64 {
    let mut bits = 4;
    while bits < 16 && old_len >> bits > MAX_ANCHORS {
        bits += 1;
    }
    (1 << bits) - 1
}

/// The content-defined anchors of `old[range]` (windows starting in the
/// range): positions whose window hash, mixed, has all `mask` bits clear,
/// sorted by key, with one (the lowest) offset per key. Repeated content
/// (a run of one byte, a short pattern) thus adds a few anchors, not one
/// per position. The generator computes them in parallel over chunks.
pub fn anchors_in(old: &[u8], range: Range<usize>, mask: u64) -> Vec<Anchor> {
    let mut out = Vec::new();
    let end = range.end.min(old.len().saturating_sub(ANCHOR_WINDOW - 1));
    if range.start >= end {
        return out;
    }
    let mut roller = Roller::new(&old[range.start..range.start + ANCHOR_WINDOW]);
    for pos in range.start..end {
        let key = mix(roller.hash);
        if key & mask == 0 {
            let anchor = Anchor::new(key, pos as u64);
            if out.last().is_none_or(|last| last.key != anchor.key) {
                out.push(anchor);
            }
        }
        if pos + ANCHOR_WINDOW < old.len() {
            roller.roll(old[pos], old[pos + ANCHOR_WINDOW]);
        }
    }
    out.sort_unstable();
    out.dedup_by_key(|a| a.key);
    out
}

/// One entry of the fine index: the high half of a window's key (its low
/// bits are the mask's zeros) and the window's old offset, in 12 bytes.
/// Ordered by key, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Anchor {
    key: u32,
    offset_high: u32,
    offset_low: u32,
}

impl Anchor {
    fn new(key: u64, offset: u64) -> Anchor {
        Anchor {
            key: (key >> 32) as u32,
            offset_high: (offset >> 32) as u32,
            offset_low: offset as u32,
        }
    }

    /// Offset of the window in the old image.
    pub fn offset(&self) -> u64 {
        u64::from(self.offset_high) << 32 | u64::from(self.offset_low)
    }
}

impl BlockIndex {
    /// Builds the index from `(hash_block(block), offset)` pairs, first
    /// occurrence winning. The generator computes the hashes in parallel.
    pub fn from_hashes(
        block_size: usize,
        count: usize,
        hashes: impl IntoIterator<Item = (u64, u64)>,
    ) -> BlockIndex {
        let bits = (count.max(1) * 16)
            .next_power_of_two()
            .clamp(1 << 16, 1 << 27);
        let mut index = BlockIndex {
            block_size,
            filter: vec![0; bits / 64],
            filter_mask: bits as u64 - 1,
            blocks: HashMap::with_capacity_and_hasher(count, Default::default()),
            anchors: Vec::new(),
            anchor_mask: u64::MAX,
        };
        for (hash, offset) in hashes {
            let key = mix(hash);
            index.filter[(key & index.filter_mask) as usize / 64] |= 1 << (key % 64);
            index.blocks.entry(key).or_insert(offset);
        }
        index
    }

    /// Adds the fine index: anchors from [`anchors_in`] with `mask`, in any
    /// order (sorted here, lowest offset kept per key).
    pub fn with_anchors(mut self, mut anchors: Vec<Anchor>, mask: u64) -> BlockIndex {
        anchors.sort_unstable();
        anchors.dedup_by_key(|a| a.key);
        self.anchors = anchors;
        self.anchor_mask = mask;
        self
    }

    /// Builds the index of `old` on one thread.
    pub fn build(old: &[u8], block_size: usize) -> BlockIndex {
        let hashes = old
            .chunks_exact(block_size)
            .enumerate()
            .filter(|(_, b)| !is_zero(b))
            .map(|(i, b)| (hash_block(b), (i * block_size) as u64));
        let mask = anchor_mask(old.len());
        BlockIndex::from_hashes(block_size, old.len() / block_size, hashes)
            .with_anchors(anchors_in(old, 0..old.len(), mask), mask)
    }

    fn lookup_anchor(&self, key: u64) -> Option<u64> {
        let key = (key >> 32) as u32;
        let i = self.anchors.binary_search_by_key(&key, |a| a.key).ok()?;
        Some(self.anchors[i].offset())
    }

    /// Width of indexed blocks.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// First offset of an indexed block whose hash may be `hash` (callers
    /// compare the bytes).
    pub(crate) fn lookup(&self, hash: u64) -> Option<u64> {
        let key = mix(hash);
        if self.filter[(key & self.filter_mask) as usize / 64] & (1 << (key % 64)) == 0 {
            return None;
        }
        self.blocks.get(&key).copied()
    }
}

/// True if every byte is zero.
pub fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|c| u64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .all(|w| w == 0)
        && tail.iter().all(|&b| b == 0)
}

/// Length of the common prefix of `a` and `b`.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Length of the common suffix of `a` and `b`.
pub(crate) fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

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
        let mut pos = range.start;
        let mut roller: Option<Roller> = None;
        let mut nonzero_at: Option<usize> = None;
        while pos + block <= end {
            // A window holding a non-zero byte at `nonzero_at` cannot be a
            // zero block: skip re-checking until the scan passes it (zero
            // runs shorter than a block would otherwise cost quadratic time).
            let zero_block = nonzero_at.is_none_or(|k| pos > k) && new[pos] == 0 && {
                let nz = new[pos..pos + block].iter().rposition(|&b| b != 0);
                if let Some(k) = nz {
                    nonzero_at = Some(pos + k);
                }
                nz.is_none()
            };
            if zero_block {
                let start = pos
                    - common_suffix(
                        &new[gap_start..pos],
                        &ZERO_PAGE[..(pos - gap_start).min(ZERO_PAGE.len())],
                    );
                let mut stop = pos + block;
                while stop < end {
                    let n = common_prefix(
                        &new[stop..end],
                        &ZERO_PAGE[..(end - stop).min(ZERO_PAGE.len())],
                    );
                    stop += n;
                    if n < ZERO_PAGE.len() {
                        break;
                    }
                }
                self.gap(gap_start..start, None);
                self.push(Op::Zero {
                    len: (stop - start) as u64,
                });
                pos = stop;
                gap_start = stop;
                roller = None;
                continue;
            }
            let window = &new[pos..pos + block];
            let same_disp = self.last_disp.and_then(|d| {
                let c = usize::try_from(pos as i64 + d).ok()?;
                (old.get(c..c + block)? == window).then_some(c)
            });
            let hit = same_disp.or_else(|| {
                let roller = roller.get_or_insert_with(|| Roller::new(window));
                let c = usize::try_from(index.lookup(roller.hash)?).ok()?;
                (old.get(c..c + block)? == window).then_some(c)
            });
            if let Some(c) = hit {
                let (start, src, stop) = self.extend(gap_start..end, pos, c, block);
                let disp = src as i64 - start as i64;
                self.gap(gap_start..start, Some(disp));
                self.push_copy(start, src, stop);
                pos = stop;
                gap_start = stop;
                roller = None;
                continue;
            }
            if pos + block < end {
                let r = roller.get_or_insert_with(|| Roller::new(window));
                r.roll(new[pos], new[pos + block]);
            }
            pos += 1;
        }
        self.gap(gap_start..end, None);
    }

    /// Encodes the unmatched bytes `new[range]`: a diff against the bytes
    /// after the previous match, a diff against the bytes before the next
    /// one (`next_disp`), literal bytes between.
    fn gap(&mut self, range: Range<usize>, next_disp: Option<i64>) {
        if range.len() < MIN_FINE_MATCH || self.index.anchors.is_empty() {
            return self.coarse_gap(range, next_disp);
        }
        let (old, new) = (self.old, self.new);
        let mask = self.index.anchor_mask;
        let mut sub_start = range.start;
        let mut pos = range.start;
        let mut roller = Roller::new(&new[pos..pos + ANCHOR_WINDOW]);
        while pos + ANCHOR_WINDOW <= range.end {
            let key = mix(roller.hash);
            let hit = if key & mask == 0 {
                self.index.lookup_anchor(key).and_then(|c| {
                    let c = usize::try_from(c).ok()?;
                    (old.get(c..c + ANCHOR_WINDOW)? == &new[pos..pos + ANCHOR_WINDOW]).then_some(c)
                })
            } else {
                None
            };
            if let Some(c) = hit {
                let (start, src, stop) = self.extend(sub_start..range.end, pos, c, ANCHOR_WINDOW);
                let disp = src as i64 - start as i64;
                let taken = if stop - start >= MIN_FINE_MATCH {
                    self.coarse_gap(sub_start..start, Some(disp));
                    self.push_copy(start, src, stop);
                    Some(stop)
                } else {
                    // Too short to copy: a seed for a diff when the bytes
                    // around it mostly match too (rebuilt code, where
                    // changed addresses break every exact match).
                    let (a, b) = self.approx_extend(sub_start..range.end, start, stop, disp);
                    if b - a >= MIN_APPROX_MATCH {
                        self.coarse_gap(sub_start..a, Some(disp));
                        self.push_diff((a as i64 + disp) as usize, &new[a..b]);
                        self.remember(disp, b - a);
                        Some(b)
                    } else {
                        None
                    }
                };
                if let Some(next) = taken {
                    sub_start = next;
                    pos = next;
                    if pos + ANCHOR_WINDOW <= range.end {
                        roller = Roller::new(&new[pos..pos + ANCHOR_WINDOW]);
                    }
                    continue;
                }
            }
            if pos + ANCHOR_WINDOW < range.end {
                roller.roll(new[pos], new[pos + ANCHOR_WINDOW]);
            }
            pos += 1;
        }
        self.coarse_gap(sub_start..range.end, next_disp);
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
    fn roller_matches_block_hash() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let w = 64;
        let mut r = Roller::new(&data[..w]);
        for pos in 0..data.len() - w {
            assert_eq!(r.hash, hash_block(&data[pos..pos + w]), "at {pos}");
            r.roll(data[pos], data[pos + w]);
        }
    }

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
        let index = BlockIndex::build(&old, 4096);
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
        let index = BlockIndex::build(&old, 4096);
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

    #[test]
    fn repeated_content_adds_one_anchor_per_distinct_window() {
        // Mask 0 makes every position a candidate.
        let mut old = vec![0xFF; 1 << 20];
        old.extend(b"abc".repeat(100_000));
        let anchors = anchors_in(&old, 0..old.len(), 0);
        // The 0xFF run, the windows across the seam, the 3 phases of "abc".
        assert!(anchors.len() <= 1 + ANCHOR_WINDOW + 3, "{}", anchors.len());
        assert!(
            anchors.windows(2).all(|w| w[0].key < w[1].key),
            "sorted, unique"
        );
        assert!(
            anchors.iter().any(|a| a.offset() == 0),
            "lowest offset kept"
        );
    }

    #[test]
    fn common_prefix_and_suffix() {
        assert_eq!(common_prefix(b"abcdefghijk", b"abcdefghijx"), 10);
        assert_eq!(common_prefix(b"abc", b"abcdef"), 3);
        assert_eq!(common_suffix(b"xbc", b"abc"), 2);
    }
}
