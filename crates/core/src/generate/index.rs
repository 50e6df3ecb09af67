//! Where the old image's content is: the index the matcher looks blocks
//! and anchors up in.
//!
//! The old image is indexed by the hash of each aligned block (4 KiB by
//! default: filesystems move data in blocks); the new image is scanned with
//! a rolling hash of the same width, so a block is found wherever it moved,
//! at any byte offset. A fine index of content-defined anchors (32-byte
//! windows whose hash has its low bits clear) finds the shorter pieces that
//! rebuilt files keep between their changes.

use crate::generate::rolling::{hash_block, is_zero, mix, slide};
use crate::generate::runner::{alike, split, Runner};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

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
/// the fine index (at most 288 MiB: large images get sparser anchors).
#[derive(Debug)]
pub struct BlockIndex {
    block_size: usize,
    filter: Vec<u64>,
    filter_mask: u64,
    blocks: HashMap<u64, u64, BuildHasherDefault<IdentityHasher>>,
    /// Fine index: content-defined anchors in buckets by the top bits of
    /// their key ([`ANCHOR_BUCKET_BITS`]), each sorted by key, one offset
    /// per key.
    anchors: Vec<Vec<Anchor>>,
    anchor_count: usize,
    anchor_mask: u64,
}

/// Bits of an anchor's key that pick its bucket: buckets are sorted on
/// their own and in parallel, without a sort of the whole fine index (whose
/// merge buffer would add its size to the peak).
const ANCHOR_BUCKET_BITS: u32 = 8;

/// Bytes of old image hashed and anchored as one piece of work (whole
/// blocks of at least this much).
const PIECE: usize = 1 << 20;

/// Width of the windows hashed by the fine (anchor) index, in bytes.
pub(crate) const ANCHOR_WINDOW: usize = 32;

/// Most anchors the fine index holds: 12 bytes each, so at most 288 MiB.
const MAX_ANCHORS: usize = 24 << 20;

/// Mask selecting anchor keys so that an old image of `old_len` bytes gets
/// at most about [`MAX_ANCHORS`] anchors and at least one anchor every
/// 16 bytes on average (a 640 MiB image gets one every 32 bytes: denser
/// anchors find more of the short pieces rebuilt files keep).
pub(crate) fn anchor_mask(old_len: usize) -> u64 {
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
/// per position. [`BlockIndex::build`] computes them piece by piece.
pub(crate) fn anchors_in(old: &[u8], range: Range<usize>, mask: u64) -> Vec<Anchor> {
    let mut out: Vec<Anchor> = Vec::new();
    let end = range.end.min(old.len().saturating_sub(ANCHOR_WINDOW - 1));
    if range.start >= end {
        return out;
    }
    // Windows that start before `end`, and may reach past the range.
    slide(
        old,
        range.start..end + ANCHOR_WINDOW - 1,
        ANCHOR_WINDOW,
        |w| {
            let key = mix(w.hash());
            if key & mask == 0 {
                let anchor = Anchor::new(key, w.pos() as u64);
                if out.last().is_none_or(|last| last.key != anchor.key) {
                    out.push(anchor);
                }
            }
            None
        },
    );
    out.sort_unstable();
    out.dedup_by_key(|a| a.key);
    out
}

/// One entry of the fine index: the high half of a window's key (its low
/// bits are the mask's zeros) and the window's old offset, in 12 bytes.
/// Ordered by key, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Anchor {
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
    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.offset_high) << 32 | u64::from(self.offset_low)
    }
}

impl BlockIndex {
    /// Builds the index from `(hash_block(block), offset)` pairs, first
    /// occurrence winning.
    pub(crate) fn from_hashes(
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
            anchor_count: 0,
            anchor_mask: u64::MAX,
        };
        for (hash, offset) in hashes {
            let key = mix(hash);
            index.filter[(key & index.filter_mask) as usize / 64] |= 1 << (key % 64);
            index.blocks.entry(key).or_insert(offset);
        }
        index
    }

    /// Builds the index of `old` with blocks of `block_size` bytes, its
    /// pieces hashed and anchored, and its buckets of anchors sorted, as
    /// `runner` maps them.
    pub fn build<R: Runner>(old: &[u8], block_size: usize, runner: &R) -> BlockIndex {
        let mask = anchor_mask(old.len());
        let piece = block_size * (PIECE / block_size).max(1);
        let pieces = runner.map(alike(split(old.len(), piece)), |range| {
            let hashes: Vec<(u64, u64)> = old[range.clone()]
                .chunks_exact(block_size)
                .enumerate()
                .filter(|(_, b)| !is_zero(b))
                .map(|(i, b)| (hash_block(b), (range.start + i * block_size) as u64))
                .collect();
            (hashes, anchors_in(old, range, mask))
        });
        let (hashes, anchors): (Vec<_>, Vec<_>) = pieces.into_iter().unzip();
        let count = hashes.iter().map(Vec::len).sum();
        let (index, anchors) = runner.join(
            || BlockIndex::from_hashes(block_size, count, hashes.into_iter().flatten()),
            || bucket_anchors(anchors, runner),
        );
        BlockIndex {
            anchor_count: anchors.iter().map(Vec::len).sum(),
            anchors,
            anchor_mask: mask,
            ..index
        }
    }

    /// Width of indexed blocks.
    pub(crate) fn block_size(&self) -> usize {
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

    /// Whether the fine index holds any anchor.
    pub(crate) fn has_anchors(&self) -> bool {
        self.anchor_count > 0
    }

    /// The mask whose bits are clear in every anchor's key.
    pub(crate) fn anchor_mask(&self) -> u64 {
        self.anchor_mask
    }

    /// Lowest offset of an anchor window whose mixed hash may be `key`
    /// (callers compare the bytes).
    pub(crate) fn lookup_anchor(&self, key: u64) -> Option<u64> {
        let key = (key >> 32) as u32;
        let bucket = self.anchors.get(bucket_of(key))?;
        let i = bucket.binary_search_by_key(&key, |a| a.key).ok()?;
        Some(bucket[i].offset())
    }
}

/// The bucket of anchors with (the high half of) key `key`.
fn bucket_of(key: u32) -> usize {
    (key >> (32 - ANCHOR_BUCKET_BITS)) as usize
}

/// The buckets of the fine index from the anchors of each piece (each
/// sorted by key, as [`anchors_in`] returns them): in each bucket sorted,
/// with the lowest offset kept per key.
fn bucket_anchors<R: Runner>(pieces: Vec<Vec<Anchor>>, runner: &R) -> Vec<Vec<Anchor>> {
    runner.map(alike(0..1 << ANCHOR_BUCKET_BITS), |b| {
        let parts: Vec<&[Anchor]> = pieces
            .iter()
            .map(|piece| {
                let start = piece.partition_point(|a| bucket_of(a.key) < b);
                let end = piece.partition_point(|a| bucket_of(a.key) <= b);
                &piece[start..end]
            })
            .collect();
        let mut bucket = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            bucket.extend_from_slice(part);
        }
        bucket.sort_unstable();
        bucket.dedup_by_key(|a| a.key);
        bucket
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use crate::Serial;

    #[test]
    fn pieces_and_buckets_index_what_the_whole_image_holds() {
        // Several pieces, the last one short, and repeated blocks.
        let mut rng = Rng::new(11);
        let mut old = rng.text(3 << 20);
        old.extend(rng.bytes(300_001));
        old.extend_from_within(..1 << 20);
        let index = BlockIndex::build(&old, 4096, &Serial);
        let whole = anchors_in(&old, 0..old.len(), index.anchor_mask());
        assert_eq!(index.anchor_count, whole.len());
        for anchor in &whole {
            let key = u64::from(anchor.key) << 32;
            assert_eq!(index.lookup_anchor(key), Some(anchor.offset()));
        }
        // Blocks: the first of each content wins.
        for (i, block) in old.chunks_exact(4096).enumerate() {
            let first = old.chunks_exact(4096).position(|b| b == block).unwrap();
            if i == first {
                assert_eq!(index.lookup(hash_block(block)), Some((i * 4096) as u64));
            }
        }
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
}
