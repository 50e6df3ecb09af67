//! The window list: the old-image ranges that make up a segment's
//! reference prefix, when the header has [`FLAG_WINDOW_LIST`].
//!
//! A generator leaves long old runs that COPY ops take whole out of the
//! prefix: zstd spends as long indexing a prefix byte as compressing a
//! stream byte, and finds little in bytes the new image already copies.
//! The list precedes the zstd frame in the payload:
//!
//! ```text
//! varint count
//! count × (varint gap, varint len)
//! ```
//!
//! Range `i` starts `gap` bytes after the end of range `i - 1` (range 0:
//! `gap` bytes after the entry's `ref_offset`) and holds `len ≥ 1` bytes.
//! The prefix is the ranges' bytes in order; their lengths add up to the
//! entry's `ref_len`, and `count = 0` exactly when `ref_len = 0`.
//!
//! [`FLAG_WINDOW_LIST`]: crate::FLAG_WINDOW_LIST

use crate::error::{Error, Result};
use crate::varint;
use std::ops::Range;

const WHAT: &str = "window list";

/// Appends the list of `ranges` (ascending, disjoint, none empty), relative
/// to `ref_offset` (at most the first range's start).
pub fn encode(ranges: &[Range<u64>], ref_offset: u64, out: &mut Vec<u8>) {
    varint::put(out, ranges.len() as u64);
    let mut at = ref_offset;
    for range in ranges {
        debug_assert!(at <= range.start && range.start < range.end);
        varint::put(out, range.start - at);
        varint::put(out, range.end - range.start);
        at = range.end;
    }
}

/// Reads a window list at the start of a payload, one range at a time,
/// checking every range against the entry and the old image; nothing is
/// allocated.
#[derive(Debug)]
pub struct Decoder<'a> {
    payload: &'a [u8],
    pos: usize,
    left: u64,
    index: u64,
    at: u64,
    total: u64,
    ref_len: u64,
    old_len: u64,
}

impl<'a> Decoder<'a> {
    /// Starts reading the list at the start of `payload`, for an entry with
    /// `ref_offset` and `ref_len`, over an old image of `old_len` bytes.
    ///
    /// # Errors
    /// [`Error::BadVarint`] for a damaged count, [`Error::InvalidField`]
    /// when the count disagrees with `ref_len`.
    pub fn new(payload: &'a [u8], ref_offset: u64, ref_len: u64, old_len: u64) -> Result<Self> {
        let mut pos = 0;
        let count = varint::get(payload, &mut pos, WHAT)?;
        // Every range holds at least one byte.
        if (count == 0) != (ref_len == 0) || count > ref_len {
            return Err(Error::InvalidField {
                field: "window list count".into(),
                found: count,
                expected: format!("0 exactly when ref_len is 0, at most ref_len ({ref_len})"),
            });
        }
        Ok(Decoder {
            payload,
            pos,
            left: count,
            index: 0,
            at: ref_offset,
            total: 0,
            ref_len,
            old_len,
        })
    }

    /// The next range, or `None` after the last one, once the lengths are
    /// known to add up to `ref_len`.
    ///
    /// # Errors
    /// [`Error::BadVarint`] for a damaged or missing pair,
    /// [`Error::InvalidField`] for an empty range, one past the old image,
    /// or lengths that do not add up to `ref_len`.
    pub fn next_range(&mut self) -> Result<Option<Range<u64>>> {
        if self.left == 0 {
            if self.total != self.ref_len {
                return Err(self.invalid("lengths", self.total, format!("{}", self.ref_len)));
            }
            return Ok(None);
        }
        let gap = varint::get(self.payload, &mut self.pos, WHAT)?;
        let len = varint::get(self.payload, &mut self.pos, WHAT)?;
        if len == 0 {
            return Err(self.invalid("len", 0, "at least 1".into()));
        }
        let start = self.at.checked_add(gap);
        let end = start.and_then(|start| start.checked_add(len));
        let Some((start, end)) = start.zip(end).filter(|&(_, end)| end <= self.old_len) else {
            let shown = self.at.saturating_add(gap).saturating_add(len);
            let expected = format!("at most old_len ({})", self.old_len);
            return Err(self.invalid("end", shown, expected));
        };
        self.total = self.total.saturating_add(len);
        if self.total > self.ref_len {
            return Err(self.invalid("lengths", self.total, format!("{}", self.ref_len)));
        }
        self.at = end;
        self.left -= 1;
        self.index += 1;
        Ok(Some(start..end))
    }

    /// The payload after the list: the zstd frame. Meaningful once
    /// [`next_range`](Self::next_range) has returned `None`.
    pub fn rest(&self) -> &'a [u8] {
        &self.payload[self.pos..]
    }

    fn invalid(&self, what: &str, found: u64, expected: String) -> Error {
        Error::InvalidField {
            field: format!("window range #{} {what}", self.index),
            found,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[u8], ref_offset: u64, ref_len: u64, old_len: u64) -> Result<Vec<Range<u64>>> {
        let mut decoder = Decoder::new(list, ref_offset, ref_len, old_len)?;
        let mut out = Vec::new();
        while let Some(range) = decoder.next_range()? {
            out.push(range);
        }
        assert!(decoder.rest().is_empty());
        Ok(out)
    }

    #[test]
    fn ranges_round_trip_and_the_frame_follows() {
        let want = vec![10..20, 20..21, 4096..8192];
        let mut payload = Vec::new();
        encode(&want, 10, &mut payload);
        let list_len = payload.len();
        payload.extend_from_slice(b"frame");
        let mut decoder = Decoder::new(&payload, 10, 4107, 8192).unwrap();
        let mut got = Vec::new();
        while let Some(range) = decoder.next_range().unwrap() {
            got.push(range);
        }
        assert_eq!(got, want);
        assert_eq!(decoder.rest(), b"frame");
        assert_eq!(list_len + 5, payload.len());
    }

    #[test]
    fn an_empty_list_goes_with_no_prefix_only() {
        assert_eq!(ranges(&[0], 0, 0, 100).unwrap(), vec![]);
        let err = ranges(&[0], 0, 5, 100).unwrap_err().to_string();
        assert!(err.contains("window list count: 0"), "{err}");
        let mut one = Vec::new();
        encode(std::slice::from_ref(&(0..5)), 0, &mut one);
        let err = ranges(&one, 0, 0, 100).unwrap_err().to_string();
        assert!(err.contains("window list count: 1"), "{err}");
    }

    #[test]
    fn hostile_lists_name_the_range_and_what_was_expected() {
        let list = |pairs: &[(u64, u64)]| {
            let mut out = Vec::new();
            varint::put(&mut out, pairs.len() as u64);
            for &(gap, len) in pairs {
                varint::put(&mut out, gap);
                varint::put(&mut out, len);
            }
            out
        };
        // (gap, len) pairs, ref_len, the error.
        type Case = (&'static [(u64, u64)], u64, &'static str);
        let cases: [Case; 5] = [
            (&[(0, 0)], 1, "window range #0 len: 0, expected at least 1"),
            (
                &[(95, 10)],
                10,
                "window range #0 end: 105, expected at most old_len (100)",
            ),
            (&[(0, 5), (u64::MAX, 5)], 10, "window range #1 end"),
            (
                &[(0, 5), (0, 5)],
                6,
                "window range #1 lengths: 10, expected 6",
            ),
            (&[(0, 5)], 6, "window range #1 lengths: 5, expected 6"),
        ];
        for (pairs, ref_len, want) in cases {
            let err = ranges(&list(pairs), 0, ref_len, 100)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
        // More ranges than bytes, and a list cut short.
        let err = ranges(&list(&[(0, 1), (0, 1)]), 0, 1, 100).unwrap_err();
        assert!(err.to_string().contains("window list count: 2"), "{err}");
        let cut = &list(&[(0, 5)])[..2];
        let err = ranges(cut, 0, 5, 100).unwrap_err();
        assert!(matches!(err, Error::BadVarint { what: WHAT, .. }), "{err}");
    }
}
