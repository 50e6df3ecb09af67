//! Segment kinds (versions 3 to 6): how a segment makes its bytes, when the
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
//! - [`DEFLATE_CHUNKS`] (3, version 5, with [`FLAG_DEFLATE_CHUNKS`]): a
//!   deflate segment rebuilt chunk by chunk, so that the applier's memory
//!   does not grow with the content (a [`DEFLATE`] segment re-deflates it
//!   all at once). The payload is a [`DEFLATE`] payload whose
//!   `corrections_len, corrections` are replaced by:
//!
//! ```text
//! u8 window_log                      the frame's zstd window, MIN_WINDOW_LOG..=MAX_WINDOW_LOG
//! varint chunk_count                 1..=MAX_CHUNKS
//! chunk_count × (varint raw_len, varint stream_len, varint corrections_len, corrections)
//! zstd frame                         the new content, against the prefix
//! ```
//!
//!   The applier decodes the frame as a stream within the window, a
//!   chunk's `raw_len` bytes at a time, and rebuilds each chunk's
//!   `stream_len` bytes with one re-deflater kept across the chunks. The
//!   entry's `stream_len` is [`deflate_chunks_stream_len`].
//!
//! Memory: the applier holds the compressed sources, the prefix, the new
//! content, a second copy of it and the growing stream inside the
//! re-deflater, so the entry's `stream_len` must be
//! [`deflate_stream_len`]; `apply_memory` then covers a deflate segment as
//! it covers any other.
//!
//! [`FLAG_SEGMENT_KINDS`]: crate::FLAG_SEGMENT_KINDS
//! [`FLAG_LZMA`]: crate::FLAG_LZMA
//! [`FLAG_DEFLATE_CHUNKS`]: crate::FLAG_DEFLATE_CHUNKS

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
/// Kind byte (version 5): a deflate stream rebuilt chunk by chunk from its
/// inflated content, in memory that does not grow with the content.
pub const DEFLATE_CHUNKS: u8 = 3;
/// Kind byte (version 6): one executable made from its old partner after
/// the partner's references are projected (see [`crate::exec`]).
pub const EXEC: u8 = 4;

/// Most content bytes one chunk of a [`DEFLATE_CHUNKS`] segment may have:
/// the re-deflater holds one chunk (and a 32 KiB window of the one before)
/// at a time. (The generator's first chunk holds up to 2 MiB, the others
/// about 256 KiB; the entry's memory counts the largest.)
pub const MAX_CHUNK_RAW: u64 = 4 << 20;
/// Most stream bytes one chunk may rebuild.
pub const MAX_CHUNK_STREAM: u64 = 4 << 20;
/// Smallest and largest zstd window (log2) of a [`DEFLATE_CHUNKS`]
/// segment's frame: the applier decodes the frame as a stream, holding at
/// most the window (or the whole content, if smaller) besides the prefix.
pub const MIN_WINDOW_LOG: u8 = 10;
/// See [`MIN_WINDOW_LOG`]: 4 MiB.
pub const MAX_WINDOW_LOG: u8 = 22;
/// zstd's largest block: a streaming decoder holds one beyond its window.
pub const ZSTD_BLOCK: u64 = 128 << 10;

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
/// the rest; [`LZMA`] and [`DEFLATE_CHUNKS`] are kinds only when `kinds`
/// (the header's flags) say so.
///
/// # Errors
/// [`Error::InvalidField`] for an empty payload or an unknown kind.
pub fn split(payload: &[u8], segment: u64, kinds: Kinds) -> Result<(u8, &[u8])> {
    match payload.split_first() {
        Some((&kind, rest))
            if kind == PLAIN
                || kind == DEFLATE
                || (kinds.lzma && kind == LZMA)
                || (kinds.deflate_chunks && kind == DEFLATE_CHUNKS)
                || (kinds.exec && kind == EXEC) =>
        {
            Ok((kind, rest))
        }
        other => {
            let mut names = vec![format!("{PLAIN} (plain)"), format!("{DEFLATE} (deflate)")];
            if kinds.lzma {
                names.push(format!("{LZMA} (lzma)"));
            }
            if kinds.deflate_chunks {
                names.push(format!("{DEFLATE_CHUNKS} (deflate in chunks)"));
            }
            if kinds.exec {
                names.push(format!("{EXEC} (exec)"));
            }
            let last = names.pop().unwrap_or_default();
            Err(Error::InvalidField {
                field: format!("segment[{segment}] kind byte"),
                found: other.map_or(0, |(&kind, _)| kind.into()),
                expected: format!("{} or {last}", names.join(", ")),
            })
        }
    }
}

/// The kinds beyond plain and deflate that a header allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    /// [`LZMA`] (the header's [`FLAG_LZMA`](crate::FLAG_LZMA)).
    pub lzma: bool,
    /// [`DEFLATE_CHUNKS`] (the header's
    /// [`FLAG_DEFLATE_CHUNKS`](crate::FLAG_DEFLATE_CHUNKS)).
    pub deflate_chunks: bool,
    /// [`EXEC`] (the header's [`FLAG_EXEC`](crate::FLAG_EXEC)).
    pub exec: bool,
}

impl Kinds {
    /// The kinds header flags `flags` allow.
    pub fn of_flags(flags: u32) -> Kinds {
        Kinds {
            lzma: flags & crate::FLAG_LZMA != 0,
            deflate_chunks: flags & crate::FLAG_DEFLATE_CHUNKS != 0,
            exec: flags & crate::FLAG_EXEC != 0,
        }
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
    prefix_memory(sources)
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

/// Most chunks one [`DEFLATE_CHUNKS`] segment may list (the generator's
/// chunks hold about 256 KiB of content each).
pub const MAX_CHUNKS: u64 = 4096;

/// The `stream_len` a [`DEFLATE_CHUNKS`] segment's entry must state: the
/// compressed bytes read back from the new image and every source's
/// content (the prefix), the frame decoder's window (or the whole content,
/// if smaller; none for one chunk, which is decoded in place) and one
/// block, and the largest chunk's content and stream twice each (the
/// applier's copy and the re-deflater's).
pub fn deflate_chunks_stream_len(
    sources: &[Source],
    new_raw_len: u64,
    window_log: u8,
    chunks: &[Chunk<'_>],
) -> u64 {
    let window = if chunks.len() > 1 {
        (1u64 << window_log.min(63)).min(new_raw_len)
    } else {
        0
    };
    let raw = largest(chunks, |c| c.raw_len);
    let stream = largest(chunks, |c| c.stream_len);
    prefix_memory(sources)
        .saturating_add(window)
        .saturating_add(ZSTD_BLOCK)
        .saturating_add(raw.saturating_mul(2))
        .saturating_add(stream.saturating_mul(2))
}

/// The largest `len` of `chunks`.
fn largest(chunks: &[Chunk<'_>], len: impl Fn(&Chunk<'_>) -> u64) -> u64 {
    chunks.iter().map(len).max().unwrap_or(0)
}

/// What a deflate segment's prefix needs: every source's content, and the
/// compressed bytes of the ones read back from the new image.
fn prefix_memory(sources: &[Source]) -> u64 {
    sources
        .iter()
        .map(|s| {
            let read_back = if s.new_image { s.len() } else { 0 };
            s.raw_len.saturating_add(read_back)
        })
        .fold(0u64, u64::saturating_add)
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
    /// How the stream is rebuilt from the content: the kind.
    pub rebuild: Rebuild<'a>,
    /// The zstd frame of the new content.
    pub frame: &'a [u8],
}

/// How a deflate segment's stream is rebuilt from its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebuild<'a> {
    /// Kind [`DEFLATE`]: the re-deflater's corrections for the whole
    /// content at once.
    Whole(&'a [u8]),
    /// Kind [`DEFLATE_CHUNKS`]: chunk after chunk, each from its share of
    /// the content (the frame decoded as a stream).
    Chunks {
        /// log2 of the frame's zstd window.
        window_log: u8,
        /// The chunks, in stream order.
        chunks: Vec<Chunk<'a>>,
    },
}

/// One chunk of a [`DEFLATE_CHUNKS`] segment's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// Bytes of content it is rebuilt from (the next ones of the frame).
    pub raw_len: u64,
    /// Bytes of stream it rebuilds.
    pub stream_len: u64,
    /// The re-deflater's corrections for it.
    pub corrections: &'a [u8],
}

impl<'a> Deflate<'a> {
    /// Appends the payload, kind byte first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(match self.rebuild {
            Rebuild::Whole(_) => DEFLATE,
            Rebuild::Chunks { .. } => DEFLATE_CHUNKS,
        });
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
        for bytes in [self.head, self.tail] {
            varint::put(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        match &self.rebuild {
            Rebuild::Whole(corrections) => {
                varint::put(out, corrections.len() as u64);
                out.extend_from_slice(corrections);
            }
            Rebuild::Chunks { window_log, chunks } => {
                out.push(*window_log);
                varint::put(out, chunks.len() as u64);
                for chunk in chunks {
                    varint::put(out, chunk.raw_len);
                    varint::put(out, chunk.stream_len);
                    varint::put(out, chunk.corrections.len() as u64);
                    out.extend_from_slice(chunk.corrections);
                }
            }
        }
        out.extend_from_slice(self.frame);
    }

    /// Bytes of content an applier holds at once: all of it for kind
    /// [`DEFLATE`], the largest chunk's for [`DEFLATE_CHUNKS`].
    pub fn content_buffer(&self) -> u64 {
        match &self.rebuild {
            Rebuild::Whole(_) => self.new_raw_len,
            Rebuild::Chunks { chunks, .. } => largest(chunks, |c| c.raw_len),
        }
    }

    /// The entry's `stream_len`, for a segment of `new_len` bytes: what
    /// [`deflate_stream_len`] or [`deflate_chunks_stream_len`] says.
    pub fn stream_len(&self, new_len: u64) -> u64 {
        match &self.rebuild {
            Rebuild::Whole(_) => deflate_stream_len(&self.sources, self.new_raw_len, new_len),
            Rebuild::Chunks { window_log, chunks } => {
                deflate_chunks_stream_len(&self.sources, self.new_raw_len, *window_log, chunks)
            }
        }
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
            stream_len: self.stream_len(new_len),
            ref_offset: 0,
            ref_len: self.old_len(),
            diff_len: new_len,
            payload_digest: *blake3::hash(payload).as_bytes(),
            output_digest,
            ..SegmentEntry::default()
        }
    }

    /// Reads the payload `body` (after its kind byte `kind`, [`DEFLATE`] or
    /// [`DEFLATE_CHUNKS`]) of segment `segment`
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
        kind: u8,
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
        let section = |pos: &mut usize, what: &str| -> Result<&'a [u8]> {
            let len = varint::get(body, pos, WHAT)?;
            let left = (body.len() - *pos) as u64;
            if len > left {
                return Err(invalid(what, len, format!("at most the {left} bytes left")));
            }
            let bytes = &body[*pos..*pos + len as usize];
            *pos += len as usize;
            Ok(bytes)
        };
        let head = section(&mut pos, "head length")?;
        let tail = section(&mut pos, "tail length")?;
        let wrapper = (head.len() + tail.len()) as u64;
        let Some(stream) = entry.new_len.checked_sub(wrapper).filter(|&n| n > 0) else {
            let expected = format!("less than new_len, {}", entry.new_len);
            return Err(invalid("head+tail length", wrapper, expected));
        };
        let rebuild = if kind == DEFLATE_CHUNKS {
            let window_log = *body.get(pos).ok_or(Error::BadVarint {
                what: WHAT,
                offset: pos as u64,
            })?;
            pos += 1;
            if !(MIN_WINDOW_LOG..=MAX_WINDOW_LOG).contains(&window_log) {
                let expected = format!("{MIN_WINDOW_LOG}..={MAX_WINDOW_LOG}");
                return Err(invalid("window_log", window_log.into(), expected));
            }
            let count = varint::get(body, &mut pos, WHAT)?;
            // Each chunk takes at least three bytes: the list is as long
            // as the payload says, never more.
            let most = MAX_CHUNKS.min((body.len() - pos) as u64 / 3);
            if count == 0 || count > most {
                return Err(invalid("chunk count", count, format!("1..={most}")));
            }
            let mut chunks = Vec::with_capacity(count as usize);
            let (mut raw_total, mut stream_total) = (0u64, 0u64);
            for i in 0..count {
                let raw_len = varint::get(body, &mut pos, WHAT)?;
                let stream_len = varint::get(body, &mut pos, WHAT)?;
                if raw_len > MAX_CHUNK_RAW {
                    let what = format!("chunk #{i} raw_len");
                    return Err(invalid(&what, raw_len, format!("at most {MAX_CHUNK_RAW}")));
                }
                if stream_len == 0 || stream_len > MAX_CHUNK_STREAM {
                    let what = format!("chunk #{i} stream_len");
                    return Err(invalid(
                        &what,
                        stream_len,
                        format!("1..={MAX_CHUNK_STREAM}"),
                    ));
                }
                if raw_len > stream_len.saturating_mul(MAX_DEFLATE_RATIO) {
                    let what = format!("chunk #{i} raw_len");
                    let expected = format!("at most {MAX_DEFLATE_RATIO} x its stream_len");
                    return Err(invalid(&what, raw_len, expected));
                }
                let corrections = section(&mut pos, &format!("chunk #{i} corrections length"))?;
                raw_total = raw_total.saturating_add(raw_len);
                stream_total = stream_total.saturating_add(stream_len);
                chunks.push(Chunk {
                    raw_len,
                    stream_len,
                    corrections,
                });
            }
            if raw_total != new_raw_len {
                let expected = format!("new_raw_len, {new_raw_len}");
                return Err(invalid("chunks' raw_len sum", raw_total, expected));
            }
            if stream_total != stream {
                let expected = format!("the stream's length, {stream}");
                return Err(invalid("chunks' stream_len sum", stream_total, expected));
            }
            Rebuild::Chunks { window_log, chunks }
        } else {
            Rebuild::Whole(section(&mut pos, "corrections length")?)
        };
        let frame = &body[pos..];
        let parts = Deflate {
            sources,
            new_raw_len,
            head,
            tail,
            rebuild,
            frame,
        };
        let old = parts.old_len();
        if old != entry.ref_len {
            let expected = format!("ref_len, {}", entry.ref_len);
            return Err(invalid("old range lengths", old, expected));
        }
        if new_raw_len > stream.saturating_mul(MAX_DEFLATE_RATIO) {
            let expected = format!("at most {MAX_DEFLATE_RATIO} x the {stream} stream bytes");
            return Err(invalid("new_raw_len", new_raw_len, expected));
        }
        let stream_len = parts.stream_len(entry.new_len);
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

    const LZMA_ONLY: Kinds = Kinds {
        lzma: true,
        deflate_chunks: false,
        exec: false,
    };

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
            rebuild: Rebuild::Whole(b"corr"),
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
        let (kind, body) = split(&out, 0, Kinds::default()).unwrap();
        assert_eq!(kind, DEFLATE);
        assert_eq!(
            Deflate::decode(DEFLATE, body, 0, &entry, 1000, 500).unwrap(),
            parts
        );
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
            let err = Deflate::decode(DEFLATE, body, 3, &entry, old_len, new_limit).unwrap_err();
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
                Deflate::decode(out[0], &out[1..end], 0, &entry, 1000, 500).is_err(),
                "{end}"
            );
        }
    }

    fn chunked() -> (Deflate<'static>, SegmentEntry) {
        let (mut parts, mut entry) = sample();
        parts.rebuild = Rebuild::Chunks {
            window_log: 12,
            chunks: vec![
                Chunk {
                    raw_len: 400,
                    stream_len: 150,
                    corrections: b"one",
                },
                Chunk {
                    raw_len: 120,
                    stream_len: 32,
                    corrections: b"",
                },
            ],
        };
        entry.stream_len = parts.stream_len(entry.new_len);
        (parts, entry)
    }

    #[test]
    fn chunked_payloads_round_trip_and_state_their_memory() {
        let (parts, entry) = chunked();
        let mut out = Vec::new();
        parts.encode(&mut out);
        assert_eq!(out[0], DEFLATE_CHUNKS);
        let decoded = Deflate::decode(out[0], &out[1..], 0, &entry, 1000, 500).unwrap();
        assert_eq!(decoded, parts);
        // The prefix (500 + 3 + 1 read back), the content (smaller than
        // the window), a zstd block, the largest chunk's content and
        // stream twice each.
        assert_eq!(entry.stream_len, 504 + 520 + ZSTD_BLOCK + 800 + 300);
        // One chunk is decoded in place: no window.
        let one = [Chunk {
            raw_len: 520,
            stream_len: 182,
            corrections: b"",
        }];
        let stream_len = deflate_chunks_stream_len(&parts.sources, 520, 12, &one);
        assert_eq!(stream_len, 504 + ZSTD_BLOCK + 1040 + 364);
        for end in 1..out.len() - parts.frame.len() {
            assert!(
                Deflate::decode(out[0], &out[1..end], 0, &entry, 1000, 500).is_err(),
                "{end}"
            );
        }
    }

    #[test]
    fn chunk_lists_that_disagree_are_refused() {
        let (parts, entry) = chunked();
        let Rebuild::Chunks { chunks, .. } = &parts.rebuild else {
            unreachable!()
        };
        let with = |window_log: u8, chunks: Vec<Chunk<'static>>| {
            let parts = Deflate {
                rebuild: Rebuild::Chunks { window_log, chunks },
                ..parts.clone()
            };
            let mut out = Vec::new();
            parts.encode(&mut out);
            let entry = SegmentEntry {
                stream_len: parts.stream_len(entry.new_len),
                ..entry.clone()
            };
            Deflate::decode(out[0], &out[1..], 4, &entry, 1000, 500)
                .unwrap_err()
                .to_string()
        };
        let more = |i: usize, raw: u64, stream: u64| {
            let mut list = chunks.clone();
            list[i].raw_len += raw;
            list[i].stream_len += stream;
            list
        };
        let big = Chunk {
            raw_len: MAX_CHUNK_RAW + 1,
            stream_len: 1,
            corrections: b"",
        };
        for (what, err) in [
            ("window_log", with(MAX_WINDOW_LOG + 1, chunks.clone())),
            ("window_log", with(MIN_WINDOW_LOG - 1, chunks.clone())),
            ("chunk count", with(12, Vec::new())),
            ("chunks' raw_len sum", with(12, more(1, 1, 0))),
            ("chunks' stream_len sum", with(12, more(0, 0, 1))),
            ("chunk #1 stream_len", with(12, more(1, 0, u64::MAX - 32))),
            ("chunk #0 raw_len", with(12, vec![big])),
        ] {
            assert!(
                err.contains(&format!("segment[4] deflate {what}")),
                "{what}: {err}"
            );
        }
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let all = Kinds::of_flags(crate::FLAG_LZMA | crate::FLAG_DEFLATE_CHUNKS);
        assert!(split(&[], 2, all).is_err());
        let err = split(&[7, 1, 2], 2, all).unwrap_err().to_string();
        assert!(err.contains("segment[2] kind byte"), "{err}");
        assert!(
            err.contains("0 (plain), 1 (deflate), 2 (lzma) or 3 (deflate in chunks)"),
            "{err}"
        );
        // LZMA and chunked deflate only with the header's flags.
        assert!(split(&[LZMA, 1, 2], 2, LZMA_ONLY).is_ok());
        assert!(split(&[DEFLATE_CHUNKS, 1, 2], 2, all).is_ok());
        let err = split(&[LZMA, 1, 2], 2, Kinds::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 (plain) or 1 (deflate)"), "{err}");
        let err = split(&[DEFLATE_CHUNKS, 1], 2, LZMA_ONLY)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 (plain), 1 (deflate) or 2 (lzma)"), "{err}");
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
        let (kind, body) = split(&out, 0, LZMA_ONLY).unwrap();
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
