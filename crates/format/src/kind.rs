//! Segment kinds (version 3): how a segment makes its bytes, when the
//! header has [`FLAG_SEGMENT_KINDS`].
//!
//! Every payload then starts with one kind byte:
//!
//! - [`PLAIN`] (0): the rest is a version 2 payload (window list with
//!   `FLAG_WINDOW_LIST`, then one zstd frame of ops);
//! - [`DEFLATE`] (1): the segment is one deflate stream (a gzip or zlib
//!   file's, usually) rebuilt from its inflated content. An OS image keeps
//!   its changelogs and docs gzip-compressed; a one-line edit reshuffles the
//!   whole compressed stream, so its old bytes are of no use, while the
//!   inflated texts differ by that one line. The payload after the kind
//!   byte is:
//!
//! ```text
//! varint source_count                the zstd prefix: inflated streams
//! source_count × source
//! varint new_raw_len                 the new content, inflated
//! varint head_len, head bytes        new bytes before the stream (gzip header)
//! varint tail_len, tail bytes        new bytes after it (gzip trailer)
//! varint corrections_len, corrections  what makes the re-deflate bit-exact
//! zstd frame                         the new content, against the prefix
//!
//! source:
//! u8 space                           0: old image, 1: new image before this segment
//! varint range_count                 the stream's bytes, in stream order
//! range_count × (varint zigzag(start - previous end), varint len)
//! varint raw_len                     the stream inflates to this
//! ```
//!
//! The applier reads each source's ranges (the first counted from 0, each
//! next from the end of the one before), inflates them as one raw deflate
//! stream (RFC 1951) to exactly `raw_len` bytes, and lays the results end
//! to end as the zstd prefix: typically the file's old version, and the
//! content of the gzip files the segments before it rebuilt (new files
//! share much with the ones next to them: changelogs, translated manual
//! pages). It then decodes the frame against the prefix to exactly
//! `new_raw_len` bytes, deflates them again as the corrections say
//! (preflate's reconstruction data, see `FORMAT.md`), and produces
//! `head || stream || tail`, which must be `new_len` bytes and match
//! `output_digest`. The entry counts them all as `diff_len`; its
//! `ref_offset` is 0 and its `ref_len` is the bytes of old-image ranges.
//! New-image sources need the header's `COPY_NEW` flag and must end at or
//! before the segment's first byte.
//!
//! - [`LZMA`] (2, version 4, with [`FLAG_LZMA`]): a plain segment's op
//!   stream, compressed with LZMA2 after a branch filter instead of zstd
//!   against an old-image prefix. It is for new executables, which the old
//!   image does not hold: the branch filter turns the relative targets of
//!   calls and jumps into absolute ones, so that calls to one function look
//!   alike, and LZMA2's context modelling codes machine code about 10%
//!   smaller than zstd. The payload after the kind byte is:
//!
//! ```text
//! u8 filter                          BranchFilter: 0 none, 1 x86, 2 ARM64, 3 ARM Thumb
//! varint ops_len                     bytes of the op stream
//! raw LZMA2 data                     filter chain (filter, LZMA2), dictionary
//!                                    clamp(ops_len, 4 KiB, 4 MiB), to the end of the payload
//! ```
//!
//!   The entry's `ref_offset` and `ref_len` are 0 (there is no prefix) and
//!   its `stream_len` is [`lzma_stream_len`]`(ops_len)`: the op stream and
//!   the decoder's dictionary.
//!
//! Memory: the applier holds the compressed sources, the prefix, the new
//! content, a second copy of it and the growing stream inside the
//! re-deflater, so the entry's `stream_len` must be
//! [`deflate_stream_len`]; `apply_memory` then covers a deflate segment as
//! it covers any other.
//!
//! [`FLAG_SEGMENT_KINDS`]: crate::FLAG_SEGMENT_KINDS
//! [`FLAG_LZMA`]: crate::FLAG_LZMA

use crate::error::{Error, Result};
use crate::header::{Digest, SegmentEntry, STREAM_SLACK};
use crate::varint;
use std::ops::Range;

/// Kind byte: a version 2 payload follows.
pub const PLAIN: u8 = 0;
/// Kind byte: a deflate stream rebuilt from its inflated content.
pub const DEFLATE: u8 = 1;
/// Kind byte (version 4): an op stream compressed with LZMA2 after a
/// branch filter.
pub const LZMA: u8 = 2;

/// Largest op stream of an LZMA segment: it bounds the decoder's
/// dictionary (the generator's segments are at most a few MiB).
pub const MAX_LZMA_STREAM: u64 = 64 << 20;
/// Smallest LZMA2 dictionary (liblzma's `LZMA_DICT_SIZE_MIN`).
pub const LZMA_DICT_MIN: u64 = 4096;
/// Largest LZMA2 dictionary: what an applier holds besides the op stream
/// (few executables are larger, and matches reach little further back).
pub const LZMA_DICT_MAX: u64 = 4 << 20;

/// Most ranges one deflate segment may list, over all its sources.
pub const MAX_DEFLATE_RANGES: u64 = 1 << 16;
/// Most sources one deflate segment may list.
pub const MAX_DEFLATE_SOURCES: u64 = 256;
/// Deflate cannot expand input by more than this factor (a 258-byte match
/// costs at least two bits): more inflated bytes per stream byte is
/// impossible, so it bounds every `raw_len`.
pub const MAX_DEFLATE_RATIO: u64 = 1032;

const WHAT: &str = "deflate segment";

/// Splits a payload of a header with segment kinds into its kind byte and
/// the rest; [`LZMA`] is a kind only when `lzma` (the header's
/// [`FLAG_LZMA`](crate::FLAG_LZMA)) says so.
///
/// # Errors
/// [`Error::InvalidField`] for an empty payload or an unknown kind.
pub fn split(payload: &[u8], segment: u64, lzma: bool) -> Result<(u8, &[u8])> {
    match payload.split_first() {
        Some((&kind, rest)) if kind == PLAIN || kind == DEFLATE || (lzma && kind == LZMA) => {
            Ok((kind, rest))
        }
        other => Err(Error::InvalidField {
            field: format!("segment[{segment}] kind byte"),
            found: other.map_or(0, |(&kind, _)| kind.into()),
            expected: if lzma {
                format!("{PLAIN} (plain), {DEFLATE} (deflate) or {LZMA} (lzma)")
            } else {
                format!("{PLAIN} (plain) or {DEFLATE} (deflate)")
            },
        }),
    }
}

/// The branch filter of an LZMA segment: the machine code it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchFilter {
    /// No filter: LZMA2 alone.
    None = 0,
    /// x86 and x86-64 (relative CALL and JMP).
    X86 = 1,
    /// ARM64 (BL and ADRP).
    Arm64 = 2,
    /// 32-bit ARM in Thumb-2 mode (BL), as Debian's armhf is built.
    ArmThumb = 3,
}

impl BranchFilter {
    /// The filter of byte `b`, if it names one.
    pub fn from_byte(b: u8) -> Option<BranchFilter> {
        [Self::None, Self::X86, Self::Arm64, Self::ArmThumb]
            .into_iter()
            .find(|f| *f as u8 == b)
    }
}

/// The LZMA2 dictionary of an LZMA segment whose op stream is `ops_len`
/// bytes: the whole stream (no match can reach further back), within
/// [`LZMA_DICT_MIN`] and [`LZMA_DICT_MAX`].
pub fn lzma_dict_size(ops_len: u64) -> u64 {
    ops_len.clamp(LZMA_DICT_MIN, LZMA_DICT_MAX)
}

/// The `stream_len` an LZMA segment's entry must state: its op stream and
/// the decoder's dictionary.
pub fn lzma_stream_len(ops_len: u64) -> u64 {
    ops_len.saturating_add(lzma_dict_size(ops_len))
}

/// The parts of an LZMA segment's payload, after the kind byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lzma<'a> {
    /// The branch filter before LZMA2.
    pub filter: BranchFilter,
    /// Bytes of the op stream.
    pub ops_len: u64,
    /// The raw LZMA2 data.
    pub data: &'a [u8],
}

impl<'a> Lzma<'a> {
    /// Appends the payload, kind byte first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(LZMA);
        out.push(self.filter as u8);
        varint::put(out, self.ops_len);
        out.extend_from_slice(self.data);
    }

    /// Reads the payload `body` (after its kind byte) of segment `segment`
    /// and checks it against its table `entry`.
    ///
    /// # Errors
    /// [`Error::BadVarint`] for a damaged or missing length,
    /// [`Error::InvalidField`] for an unknown filter, an op stream over
    /// the plain bound or [`MAX_LZMA_STREAM`], an entry whose `stream_len`
    /// is not [`lzma_stream_len`] or that names a prefix, or no data.
    pub fn decode(body: &'a [u8], segment: u64, entry: &SegmentEntry) -> Result<Lzma<'a>> {
        let invalid = |what: &str, found: u64, expected: String| Error::InvalidField {
            field: format!("segment[{segment}] lzma {what}"),
            found,
            expected,
        };
        let what = "lzma segment";
        let byte = *body.first().ok_or(Error::BadVarint { what, offset: 0 })?;
        let filter = BranchFilter::from_byte(byte).ok_or_else(|| {
            invalid(
                "filter",
                byte.into(),
                "0 (none), 1 (x86), 2 (ARM64) or 3 (ARM Thumb)".into(),
            )
        })?;
        let mut pos = 1;
        let ops_len = varint::get(body, &mut pos, what)?;
        let max = plain_stream_max(entry.new_len).min(MAX_LZMA_STREAM);
        if ops_len == 0 || ops_len > max {
            return Err(invalid("ops_len", ops_len, format!("1..={max}")));
        }
        let stream_len = lzma_stream_len(ops_len);
        if entry.stream_len != stream_len {
            let expected = format!("the op stream and its dictionary, {stream_len}");
            return Err(invalid("stream_len", entry.stream_len, expected));
        }
        if entry.ref_len != 0 || entry.ref_offset != 0 {
            let found = entry.ref_len.max(entry.ref_offset);
            return Err(invalid("ref_offset/ref_len", found, "0 (no prefix)".into()));
        }
        let data = &body[pos..];
        if data.is_empty() {
            return Err(invalid("data length", 0, "at least 1".into()));
        }
        Ok(Lzma {
            filter,
            ops_len,
            data,
        })
    }
}

/// The `stream_len` a deflate segment's entry must state, from its
/// sources, `new_raw_len` and `new_len`: the compressed bytes read back
/// from the new image, every source's content, the new content twice and
/// the rebuilt stream twice (room to grow).
pub fn deflate_stream_len(sources: &[Source], new_raw_len: u64, new_len: u64) -> u64 {
    sources
        .iter()
        .map(|s| {
            let read_back = if s.new_image { s.len() } else { 0 };
            s.raw_len.saturating_add(read_back)
        })
        .fold(0u64, u64::saturating_add)
        .saturating_add(new_raw_len.saturating_mul(2))
        .saturating_add(new_len.saturating_mul(2))
}

/// The largest `stream_len` a plain segment may state.
pub fn plain_stream_max(new_len: u64) -> u64 {
    new_len.saturating_mul(2).saturating_add(STREAM_SLACK)
}

/// One inflated stream of a deflate segment's zstd prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The ranges are in the new image (before the segment), else in the
    /// old image.
    pub new_image: bool,
    /// The stream's bytes, in stream order.
    pub ranges: Vec<Range<u64>>,
    /// Bytes the stream inflates to.
    pub raw_len: u64,
}

impl Source {
    /// Bytes of the stream.
    pub fn len(&self) -> u64 {
        // Saturating: a hostile list cannot wrap it to a small length.
        let lens = self.ranges.iter().map(|r| r.end - r.start);
        lens.fold(0, u64::saturating_add)
    }

    /// True when it lists no bytes (never in a valid payload).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The parts of a deflate segment's payload, after the kind byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deflate<'a> {
    /// The streams whose content, inflated and laid end to end, is the
    /// zstd prefix.
    pub sources: Vec<Source>,
    /// Bytes of the new content.
    pub new_raw_len: u64,
    /// New bytes before the rebuilt stream.
    pub head: &'a [u8],
    /// New bytes after the rebuilt stream.
    pub tail: &'a [u8],
    /// The re-deflater's corrections.
    pub corrections: &'a [u8],
    /// The zstd frame of the new content.
    pub frame: &'a [u8],
}

impl<'a> Deflate<'a> {
    /// Appends the payload, kind byte first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(DEFLATE);
        varint::put(out, self.sources.len() as u64);
        for source in &self.sources {
            out.push(u8::from(source.new_image));
            varint::put(out, source.ranges.len() as u64);
            let mut at = 0u64;
            for range in &source.ranges {
                varint::put(out, varint::zigzag(range.start as i64 - at as i64));
                varint::put(out, range.end - range.start);
                at = range.end;
            }
            varint::put(out, source.raw_len);
        }
        varint::put(out, self.new_raw_len);
        for bytes in [self.head, self.tail, self.corrections] {
            varint::put(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(self.frame);
    }

    /// The entry's `ref_len`: bytes of old-image ranges.
    pub fn old_len(&self) -> u64 {
        let old = self.sources.iter().filter(|s| !s.new_image);
        old.map(Source::len).fold(0, u64::saturating_add)
    }

    /// The table entry of the segment whose payload is `payload` (these
    /// parts encoded) and which produces `new_len` bytes with digest
    /// `output_digest`: every field the rules above fix.
    pub fn entry(&self, payload: &[u8], new_len: u64, output_digest: Digest) -> SegmentEntry {
        SegmentEntry {
            new_len,
            payload_len: payload.len() as u64,
            stream_len: deflate_stream_len(&self.sources, self.new_raw_len, new_len),
            ref_offset: 0,
            ref_len: self.old_len(),
            diff_len: new_len,
            payload_digest: *blake3::hash(payload).as_bytes(),
            output_digest,
            ..SegmentEntry::default()
        }
    }

    /// Reads the payload `body` (after its kind byte) of segment `segment`
    /// with table entry `entry`, and checks it against the entry: old
    /// ranges within the old image's `old_len` bytes, new ones within the
    /// `new_limit` bytes of new image before the segment (0 without
    /// `COPY_NEW`).
    ///
    /// # Errors
    /// [`Error::BadVarint`] for a damaged or missing number,
    /// [`Error::InvalidField`] for a range that is empty or out of bounds,
    /// lengths that disagree with the entry, or sections past the end.
    pub fn decode(
        body: &'a [u8],
        segment: u64,
        entry: &SegmentEntry,
        old_len: u64,
        new_limit: u64,
    ) -> Result<Deflate<'a>> {
        let invalid = |what: &str, found: u64, expected: String| Error::InvalidField {
            field: format!("segment[{segment}] deflate {what}"),
            found,
            expected,
        };
        let mut pos = 0;
        let count = varint::get(body, &mut pos, WHAT)?;
        if count > MAX_DEFLATE_SOURCES {
            let expected = format!("at most {MAX_DEFLATE_SOURCES}");
            return Err(invalid("source count", count, expected));
        }
        if entry.ref_offset != 0 {
            return Err(invalid("ref_offset", entry.ref_offset, "0".into()));
        }
        // Bounded: count ≤ MAX_DEFLATE_SOURCES, ranges ≤ MAX_DEFLATE_RANGES.
        let mut sources = Vec::with_capacity(count as usize);
        let mut ranges_left = MAX_DEFLATE_RANGES;
        for k in 0..count {
            let space = *body.get(pos).ok_or(Error::BadVarint {
                what: WHAT,
                offset: pos as u64,
            })?;
            pos += 1;
            let (new_image, limit) = match space {
                0 => (false, old_len),
                1 => (true, new_limit),
                _ => {
                    let what = format!("source #{k} space");
                    return Err(invalid(&what, space.into(), "0 (old) or 1 (new)".into()));
                }
            };
            let n = varint::get(body, &mut pos, WHAT)?;
            if n == 0 || n > ranges_left {
                let what = format!("source #{k} range count");
                return Err(invalid(&what, n, format!("1..={ranges_left}")));
            }
            ranges_left -= n;
            let mut ranges = Vec::with_capacity(n as usize);
            let mut at = 0u64;
            for i in 0..n {
                let shift = varint::unzigzag(varint::get(body, &mut pos, WHAT)?);
                let len = varint::get(body, &mut pos, WHAT)?;
                let start = i128::from(at) + i128::from(shift);
                let end = start + i128::from(len);
                if len == 0 || start < 0 || end > i128::from(limit) {
                    let what = format!("source #{k} range #{i} end");
                    let image = if new_image {
                        "new image before the segment"
                    } else {
                        "old image"
                    };
                    let expected = format!("a non-empty range within the {image} ({limit} bytes)");
                    return Err(invalid(
                        &what,
                        end.clamp(0, u64::MAX.into()) as u64,
                        expected,
                    ));
                }
                ranges.push(start as u64..end as u64);
                at = end as u64;
            }
            let raw_len = varint::get(body, &mut pos, WHAT)?;
            let source = Source {
                new_image,
                ranges,
                raw_len,
            };
            if raw_len > source.len().saturating_mul(MAX_DEFLATE_RATIO) {
                let what = format!("source #{k} raw_len");
                let expected = format!("at most {MAX_DEFLATE_RATIO} x its stream bytes");
                return Err(invalid(&what, raw_len, expected));
            }
            sources.push(source);
        }
        let new_raw_len = varint::get(body, &mut pos, WHAT)?;
        let mut section = |what: &str| -> Result<&'a [u8]> {
            let len = varint::get(body, &mut pos, WHAT)?;
            let left = (body.len() - pos) as u64;
            if len > left {
                return Err(invalid(what, len, format!("at most the {left} bytes left")));
            }
            let bytes = &body[pos..pos + len as usize];
            pos += len as usize;
            Ok(bytes)
        };
        let head = section("head length")?;
        let tail = section("tail length")?;
        let corrections = section("corrections length")?;
        let frame = &body[pos..];
        let parts = Deflate {
            sources,
            new_raw_len,
            head,
            tail,
            corrections,
            frame,
        };
        let old = parts.old_len();
        if old != entry.ref_len {
            let expected = format!("ref_len, {}", entry.ref_len);
            return Err(invalid("old range lengths", old, expected));
        }
        let wrapper = (head.len() + tail.len()) as u64;
        let Some(stream) = entry.new_len.checked_sub(wrapper).filter(|&n| n > 0) else {
            let expected = format!("less than new_len, {}", entry.new_len);
            return Err(invalid("head+tail length", wrapper, expected));
        };
        if new_raw_len > stream.saturating_mul(MAX_DEFLATE_RATIO) {
            let expected = format!("at most {MAX_DEFLATE_RATIO} x the {stream} stream bytes");
            return Err(invalid("new_raw_len", new_raw_len, expected));
        }
        let stream_len = deflate_stream_len(&parts.sources, new_raw_len, entry.new_len);
        if entry.stream_len != stream_len {
            return Err(invalid(
                "stream_len",
                entry.stream_len,
                format!("the sum of the buffers it needs, {stream_len}"),
            ));
        }
        if entry.diff_len != entry.new_len {
            return Err(invalid(
                "diff_len",
                entry.diff_len,
                format!("new_len, {}", entry.new_len),
            ));
        }
        if frame.is_empty() {
            return Err(invalid("frame length", 0, "at least 1".into()));
        }
        Ok(parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Deflate<'static>, SegmentEntry) {
        let parts = Deflate {
            sources: vec![
                Source {
                    new_image: false,
                    ranges: vec![100..150, 20..30],
                    raw_len: 500,
                },
                Source {
                    new_image: true,
                    ranges: std::iter::once(400..401).collect(),
                    raw_len: 3,
                },
            ],
            new_raw_len: 520,
            head: &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 3],
            tail: &[1, 2, 3, 4, 5, 6, 7, 8],
            corrections: b"corr",
            frame: b"frame",
        };
        let new_len = 200;
        let entry = SegmentEntry {
            new_len,
            ref_len: 60,
            stream_len: deflate_stream_len(&parts.sources, 520, new_len),
            diff_len: new_len,
            ..SegmentEntry::default()
        };
        (parts, entry)
    }

    #[test]
    fn round_trips_with_ranges_in_any_order() {
        let (parts, entry) = sample();
        let mut out = Vec::new();
        parts.encode(&mut out);
        let (kind, body) = split(&out, 0, false).unwrap();
        assert_eq!(kind, DEFLATE);
        assert_eq!(Deflate::decode(body, 0, &entry, 1000, 500).unwrap(), parts);
    }

    #[test]
    fn rejects_what_disagrees_with_the_entry() {
        let (parts, entry) = sample();
        let mut out = Vec::new();
        parts.encode(&mut out);
        let body = &out[1..];
        let cases = [
            ("source #0 range #0 end", 120, 500, entry.clone()),
            ("source #1 range #0 end", 1000, 400, entry.clone()),
            (
                "old range lengths",
                1000,
                500,
                SegmentEntry {
                    ref_len: 61,
                    ..entry.clone()
                },
            ),
            (
                "stream_len",
                1000,
                500,
                SegmentEntry {
                    stream_len: entry.stream_len + 1,
                    ..entry.clone()
                },
            ),
            (
                "diff_len",
                1000,
                500,
                SegmentEntry {
                    diff_len: 1,
                    ..entry.clone()
                },
            ),
            (
                "head+tail length",
                1000,
                500,
                SegmentEntry {
                    new_len: 18,
                    diff_len: 18,
                    stream_len: deflate_stream_len(&parts.sources, 520, 18),
                    ..entry.clone()
                },
            ),
        ];
        for (what, old_len, new_limit, entry) in cases {
            let err = Deflate::decode(body, 3, &entry, old_len, new_limit).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("segment[3] deflate {what}")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn truncated_payloads_fail_cleanly() {
        let (parts, entry) = sample();
        let mut out = Vec::new();
        parts.encode(&mut out);
        for end in 1..out.len() - parts.frame.len() {
            assert!(
                Deflate::decode(&out[1..end], 0, &entry, 1000, 500).is_err(),
                "{end}"
            );
        }
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(split(&[], 2, true).is_err());
        let err = split(&[7, 1, 2], 2, true).unwrap_err().to_string();
        assert!(err.contains("segment[2] kind byte"), "{err}");
        // LZMA only with the header's flag.
        assert!(split(&[LZMA, 1, 2], 2, true).is_ok());
        let err = split(&[LZMA, 1, 2], 2, false).unwrap_err().to_string();
        assert!(err.contains("0 (plain) or 1 (deflate)"), "{err}");
    }

    #[test]
    fn lzma_payloads_round_trip_and_are_checked_against_the_entry() {
        let parts = Lzma {
            filter: BranchFilter::X86,
            ops_len: 5000,
            data: b"lzma2 data",
        };
        let mut out = Vec::new();
        parts.encode(&mut out);
        let entry = SegmentEntry {
            new_len: 4000,
            stream_len: lzma_stream_len(5000),
            literal_len: 4000,
            ..SegmentEntry::default()
        };
        let (kind, body) = split(&out, 0, true).unwrap();
        assert_eq!(kind, LZMA);
        assert_eq!(Lzma::decode(body, 0, &entry).unwrap(), parts);
        assert_eq!(lzma_stream_len(100), 100 + LZMA_DICT_MIN);
        let cases = [
            (
                "stream_len",
                body.to_vec(),
                SegmentEntry {
                    stream_len: 9999,
                    ..entry.clone()
                },
            ),
            (
                "ref_offset/ref_len",
                body.to_vec(),
                SegmentEntry {
                    ref_len: 1,
                    ..entry.clone()
                },
            ),
            (
                "ops_len",
                body.to_vec(),
                SegmentEntry {
                    new_len: 100,
                    ..entry.clone()
                },
            ),
            ("filter", [&[9u8][..], &body[1..]].concat(), entry.clone()),
            ("data length", body[..3].to_vec(), entry.clone()),
        ];
        for (what, body, entry) in cases {
            let err = Lzma::decode(&body, 4, &entry).unwrap_err().to_string();
            assert!(
                err.contains(&format!("segment[4] lzma {what}")),
                "{what}: {err}"
            );
        }
        for end in 0..3 {
            assert!(Lzma::decode(&body[..end], 4, &entry).is_err(), "{end}");
        }
    }
}
