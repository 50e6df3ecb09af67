//! The rolling hash the matchers share, the scan that slides it, and the
//! byte comparisons that extend what it finds.
//!
//! Three searches walk a window over bytes the same way: the block matcher
//! over a unit of the new image and its fine pass over the gaps between
//! matches ([`crate::generate::plan`]), and the search for repeated new content
//! ([`crate::generate::reuse`]). At each position they may look the window's hash up;
//! on a match they jump past it and start the hash afresh, else they move
//! on by one byte and roll the hash. [`slide`] is that loop, so that the
//! three differ only in what a position yields.

use std::ops::Range;

const PRIME: u64 = 0x9E37_79B9_7F4A_7C15;

/// Hash of one block, the same value a rolling hash reaches over those
/// bytes.
pub(crate) fn hash_block(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(PRIME).wrapping_add(u64::from(b) + 1)
    })
}

/// Mixes a rolling hash into a table key (the polynomial's low bits are
/// weak).
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Rolling polynomial hash over a window of fixed width.
struct Roller {
    hash: u64,
    /// PRIME^(width-1): the weight of the byte leaving the window.
    out_weight: u64,
}

impl Roller {
    fn new(window: &[u8]) -> Roller {
        let out_weight = (1..window.len()).fold(1u64, |w, _| w.wrapping_mul(PRIME));
        Roller {
            hash: hash_block(window),
            out_weight,
        }
    }

    fn roll(&mut self, out: u8, inp: u8) {
        let h = self
            .hash
            .wrapping_sub((u64::from(out) + 1).wrapping_mul(self.out_weight));
        self.hash = h.wrapping_mul(PRIME).wrapping_add(u64::from(inp) + 1);
    }
}

/// The window at one position of a [`slide`].
pub(crate) struct Window<'a> {
    bytes: &'a [u8],
    width: usize,
    pos: usize,
    /// Hash of the window, once asked for: rolled from then on.
    roller: Option<Roller>,
}

impl<'a> Window<'a> {
    /// Where the window starts.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The window's bytes.
    pub(crate) fn bytes(&self) -> &'a [u8] {
        &self.bytes[self.pos..self.pos + self.width]
    }

    /// The window's [`hash_block`], computed on first use at this position
    /// or rolled from the one before.
    pub(crate) fn hash(&mut self) -> u64 {
        let bytes = self.bytes();
        self.roller.get_or_insert_with(|| Roller::new(bytes)).hash
    }
}

/// Slides a window of `width` bytes over `bytes[range]` while it fits:
/// `visit` looks at each position and returns where to go on, `Some(next)`
/// (past a match, `next` beyond the position) or `None` (one byte on). The
/// hash is computed only once `visit` asks for it, afresh after a jump.
pub(crate) fn slide(
    bytes: &[u8],
    range: Range<usize>,
    width: usize,
    mut visit: impl FnMut(&mut Window<'_>) -> Option<usize>,
) {
    let mut window = Window {
        bytes,
        width,
        pos: range.start,
        roller: None,
    };
    while window.pos + width <= range.end {
        if let Some(next) = visit(&mut window) {
            window.pos = next;
            window.roller = None;
            continue;
        }
        let pos = window.pos;
        if pos + width < range.end {
            if let Some(roller) = &mut window.roller {
                roller.roll(bytes[pos], bytes[pos + width]);
            }
        }
        window.pos += 1;
    }
}

/// True if every byte is zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolled_hashes_match_block_hashes_and_restart_after_jumps() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let w = 64;
        let mut seen = Vec::new();
        slide(&data, 10..data.len(), w, |window| {
            let pos = window.pos();
            // Ask for the hash at every other position only: rolling must
            // not depend on being asked.
            if pos % 2 == 0 {
                assert_eq!(window.hash(), hash_block(&data[pos..pos + w]), "at {pos}");
            }
            assert_eq!(window.bytes(), &data[pos..pos + w]);
            seen.push(pos);
            (pos == 100).then_some(150)
        });
        let expected: Vec<usize> = (10..=100).chain(150..=data.len() - w).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn common_prefix_and_suffix() {
        assert_eq!(common_prefix(b"abcdefghijk", b"abcdefghijx"), 10);
        assert_eq!(common_prefix(b"abc", b"abcdef"), 3);
        assert_eq!(common_suffix(b"xbc", b"abc"), 2);
    }
}
