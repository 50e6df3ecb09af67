//! Applying one segment: verify the payload, decompress it against its
//! reference prefix, run its ops, verify what they produced.
//!
//! Memory: a [`Patcher`] holds the decompressed stream (`stream_len`), the
//! reference prefix (`ref_len`) and a fixed copy buffer of [`COPY_CHUNK`]
//! bytes; the caller holds the payload. zstd decodes straight into the
//! stream buffer in one shot, so it needs no window buffer of its own. A
//! frame that would expand past `stream_len` fails inside zstd as soon as it
//! runs out of room, which cuts decompression bombs off at the declared size.

use crate::apply::rebuild::{self, InProcess, Redeflate, SharedContent};
use crate::apply::sink::{Sink, ZEROS};
use crate::apply::source::Source;
use crate::error::{Error, Result, SegmentError};
use crate::exec::{self, Rewrite, ShiftMap};
use crate::frame::{decode_frame, one_frame};
use crate::segment::SegmentRef;
use delta_format::exec::{Exec, Piece};
use delta_format::kind::{self, Deflate, Rebuild};
use delta_format::{
    stream, window, Digest, Instruction, Limits, SegmentEntry, Totals, STREAM_SLACK,
};
use std::sync::Arc;

/// What applying a segment into a sink whose errors are `E` gives.
type Applied<T, E> = std::result::Result<T, SegmentError<E>>;

/// Bytes of old image read per `read_at` call while copying.
pub(crate) const COPY_CHUNK: usize = 256 * 1024;

/// Fixed memory an applier needs on top of a header's `apply_memory`:
/// copy buffer, zstd context, I/O buffers (a generous 2 MiB), and for
/// deflate segments the re-deflater's own memory and the rebuilt content
/// kept for the segments after.
pub const APPLY_OVERHEAD: u64 = 2 * 1024 * 1024 + rebuild::REBUILD_OVERHEAD + REBUILT_KEPT;

/// Most memory an apply takes by default, in all (`delta apply
/// --max-memory`): a delta's `apply_memory` plus the applier's fixed
/// memory ([`APPLY_OVERHEAD`] and its writer's buffers).
pub const DEFAULT_MAX_MEMORY: u64 = 24 << 20;

/// Reusable buffers for applying segments one at a time.
#[derive(Debug)]
pub struct Patcher {
    /// What re-deflates deflate segments (see [`Patcher::with_redeflate`]).
    redeflate: Arc<dyn Redeflate>,
    stream: Vec<u8>,
    reference: Vec<u8>,
    chunk: Vec<u8>,
    /// The content of the last deflate segments applied, by the new-image
    /// range of their stream: later deflate segments name those streams as
    /// sources, and the content is then at hand instead of being read back
    /// and inflated again (an applier that resumes starts without it).
    rebuilt: std::collections::VecDeque<(std::ops::Range<u64>, Vec<u8>)>,
    /// Where patchers applying other segments at once share that content.
    shared: Option<Arc<dyn SharedContent>>,
}

/// Content of rebuilt streams a [`Patcher`] keeps: the generator's
/// history, plus one stream (of at most that size: larger ones are not
/// kept) that can overshoot it.
const REBUILT_KEPT: u64 = 2 * rebuild::HISTORY;

impl Default for Patcher {
    fn default() -> Patcher {
        Patcher::new()
    }
}

impl Patcher {
    /// A patcher with empty buffers; they grow to the largest segment seen.
    /// It re-deflates in this process ([`InProcess`], unbounded): an
    /// applier of deltas it did not make itself sets a bounded
    /// [`Redeflate`] with [`Patcher::with_redeflate`].
    pub fn new() -> Patcher {
        Patcher {
            redeflate: Arc::new(InProcess),
            stream: Vec::new(),
            reference: Vec::new(),
            chunk: Vec::new(),
            rebuilt: Default::default(),
            shared: None,
        }
    }

    /// This patcher, re-deflating deflate segments with `redeflate`.
    pub fn with_redeflate(mut self, redeflate: Arc<dyn Redeflate>) -> Patcher {
        self.redeflate = redeflate;
        self
    }

    /// This patcher, sharing the content of the deflate streams it
    /// rebuilds through `shared`, and reading theirs from it.
    pub fn with_shared(mut self, shared: Arc<dyn SharedContent>) -> Patcher {
        self.shared = Some(shared);
        self
    }

    /// Produces the bytes of one segment into `sink` and returns their
    /// blake3 digest, which has been checked against the table.
    ///
    /// Bytes reach `sink` before the digest is known: callers commit nothing
    /// until this returns `Ok`.
    ///
    /// # Errors
    /// A damaged payload, a stream that breaks the format, old-image reads
    /// that fail, a digest mismatch, or a sink error.
    pub fn apply_segment<S: Source + ?Sized, K: Sink + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        payload: &[u8],
        sink: &mut K,
    ) -> Applied<Digest, K::Error> {
        let entry = seg.entry;
        let segment = seg.index;
        let payload_end = seg.payload_offset.saturating_add(payload.len() as u64);
        if payload.len() as u64 != entry.payload_len
            || blake3::hash(payload).as_bytes() != &entry.payload_digest
        {
            return Err(Error::PayloadDigest {
                segment,
                offset: seg.payload_offset,
                end: payload_end,
            }
            .into());
        }
        let (kind, payload) = if seg.kinds {
            kind::split(payload, segment, seg.allowed)
                .map_err(|source| Error::Format { segment, source })?
        } else {
            (kind::PLAIN, payload)
        };
        if kind == kind::DEFLATE || kind == kind::DEFLATE_CHUNKS {
            return self.apply_deflate(old, seg, kind, payload, sink);
        }
        self.redeflate.idle(entry.memory());
        if kind == kind::EXEC {
            return self.apply_exec(old, seg, payload, sink);
        }
        match kind {
            kind::LZMA => self.decompress_lzma(seg, payload)?,
            _ => self.decompress(old, seg, payload)?,
        }
        let digest = self.run_ops(old, seg, sink)?;
        check_output(seg, &digest)?;
        Ok(digest)
    }

    /// Runs the op stream in the stream buffer, reading `old`, into `sink`;
    /// returns the digest of what it produced.
    fn run_ops<S: Source + ?Sized, K: Sink + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        sink: &mut K,
    ) -> Applied<Digest, K::Error> {
        let segment = seg.index;
        let mut run = Run {
            old,
            sink,
            hasher: blake3::Hasher::new(),
            produced: 0,
            seg,
            chunk: &mut self.chunk,
        };
        let format = |source| Error::Format { segment, source };
        let mut decoder = stream::Decoder::new(&self.stream, old.len())
            .map_err(format)?
            .with_new_limit(seg.new_limit);
        while let Some(instruction) = decoder.next_instruction().map_err(format)? {
            run.execute(instruction)?;
        }
        let totals = decoder.finish().map_err(format)?;
        check_totals(segment, seg.entry, totals)?;
        Ok(*run.hasher.finalize().as_bytes())
    }

    /// Applies an executable segment (see [`delta_format::exec`]): reads
    /// the old file into the reference buffer, projects its references,
    /// decodes the op stream against it and runs the ops on it.
    fn apply_exec<S: Source + ?Sized, K: Sink + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        body: &[u8],
        sink: &mut K,
    ) -> Applied<Digest, K::Error> {
        let segment = seg.index;
        let parts = Exec::decode(body, segment, seg.entry, old.len())
            .map_err(|source| Error::Format { segment, source })?;
        // Both are within the entry's memory, which was checked against
        // apply_memory and the caller's limit.
        let (file_len, ops_len) = (parts.old_len() as usize, parts.ops_len as usize);
        self.fit(ops_len, file_len);
        let mut file = std::mem::take(&mut self.reference);
        file.clear();
        file.resize(file_len, 0);
        let result = (|| {
            let mut at = 0;
            for piece in &parts.pieces {
                let len = piece.len() as usize;
                if let Piece::Old(range) = piece {
                    read_range(old, range.start, &mut file[at..at + len])?;
                }
                at += len;
            }
            exec::rewrite(
                parts.arch,
                &mut file,
                Rewrite::Project(ShiftMap::new(&parts.shifts)),
            );
            let reference = &file[parts.reference.start as usize..parts.reference.end as usize];
            self.stream.resize(ops_len, 0);
            decode_frame(segment, parts.frame, reference, &mut self.stream)
        })();
        // The ops read the projected file, never the new image.
        let inner = SegmentRef {
            new_limit: 0,
            ..seg
        };
        let digest = result
            .map_err(SegmentError::from)
            .and_then(|()| self.run_ops(file.as_slice(), inner, sink));
        self.reference = file;
        let digest = digest?;
        check_output(seg, &digest)?;
        Ok(digest)
    }

    fn decompress<S: Source + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        payload: &[u8],
    ) -> Result<()> {
        let entry = seg.entry;
        let segment = seg.index;
        if entry.stream_len > kind::plain_stream_max(entry.new_len) {
            let source = delta_format::Error::InvalidField {
                field: format!("segment[{segment}].stream_len"),
                found: entry.stream_len,
                expected: format!("at most 2*new_len+{STREAM_SLACK}"),
            };
            return Err(Error::Format { segment, source });
        }
        // Both lengths were checked against apply_memory and the caller's
        // limit when the table was decoded.
        let too_large = |field: &str, found: u64| Error::Format {
            segment,
            source: delta_format::Error::InvalidField {
                field: format!("segment[{segment}].{field}"),
                found,
                expected: "a buffer this machine can address".into(),
            },
        };
        let ref_len =
            usize::try_from(entry.ref_len).map_err(|_| too_large("ref_len", entry.ref_len))?;
        let stream_len = usize::try_from(entry.stream_len)
            .map_err(|_| too_large("stream_len", entry.stream_len))?;
        self.fit(stream_len, ref_len);
        self.reference.resize(ref_len, 0);
        let frame = if seg.window_list {
            self.read_window_list(old, seg, payload)?
        } else {
            read_range(old, entry.ref_offset, &mut self.reference)?;
            payload
        };
        self.stream.resize(stream_len, 0);
        decode_frame(segment, frame, &self.reference, &mut self.stream)
    }

    /// Gives back buffer memory this segment does not need, so that the
    /// stream and prefix buffers together hold at most what one segment
    /// needs (which `apply_memory` bounds), not the largest stream and the
    /// largest prefix of different segments. Each buffer larger than its
    /// share is emptied and shrunk: one that stayed because the sum of
    /// both was small enough would still grow the other past it (a 3.8 MB
    /// executable's prefix kept through a 6.8 MB LZMA stream).
    fn fit(&mut self, stream_len: usize, ref_len: usize) {
        for (buf, len) in [
            (&mut self.stream, stream_len),
            (&mut self.reference, ref_len),
        ] {
            if buf.capacity() > len {
                buf.clear();
                buf.shrink_to(len);
            }
        }
    }

    /// Decodes an LZMA segment's op stream (see [`delta_format::kind`])
    /// into the stream buffer.
    fn decompress_lzma(&mut self, seg: SegmentRef<'_>, body: &[u8]) -> Result<()> {
        let segment = seg.index;
        let parts = kind::Lzma::decode(body, segment, seg.entry)
            .map_err(|source| Error::Format { segment, source })?;
        // ops_len ≤ MAX_LZMA_STREAM, and it and its dictionary are within
        // stream_len, which was checked against apply_memory.
        let ops_len = parts.ops_len as usize;
        self.fit(ops_len, 0);
        self.stream.resize(ops_len, 0);
        crate::lzma::decompress(segment, &parts, &mut self.stream)
    }

    /// Applies a deflate segment (see [`delta_format::kind`]) of kind
    /// `kind`: inflates the old stream, decodes the new content against
    /// it, re-deflates it (whole or chunk by chunk) and produces the
    /// stream between its head and tail.
    fn apply_deflate<S: Source + ?Sized, K: Sink + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        kind: u8,
        body: &[u8],
        sink: &mut K,
    ) -> Applied<Digest, K::Error> {
        let (entry, segment) = (seg.entry, seg.index);
        let parts = Deflate::decode(kind, body, segment, entry, old.len(), seg.new_limit)
            .map_err(|source| Error::Format { segment, source })?;
        let stream_len = entry.new_len - (parts.head.len() + parts.tail.len()) as u64;
        if let Rebuild::Whole(_) = parts.rebuild {
            // The re-deflater's memory grows with these: no generator
            // makes more, so more is refused before anything is decoded.
            for (field, found, most) in [
                ("new_raw_len", parts.new_raw_len, rebuild::MAX_NEW_RAW),
                ("deflate stream length", stream_len, rebuild::MAX_NEW_STREAM),
            ] {
                if found > most as u64 {
                    let source = delta_format::Error::InvalidField {
                        field: format!("segment[{segment}].{field}"),
                        found,
                        expected: format!("at most {most} bytes (deflate segments' limit)"),
                    };
                    return Err(Error::Format { segment, source }.into());
                }
            }
        }
        // Every length below is part of the entry's memory, which was
        // checked against apply_memory and the caller's limit.
        let size = |n: u64| n as usize;
        let prefix_len = (parts.sources.iter().map(|s| s.raw_len)).fold(0, u64::saturating_add);
        // The prefix goes in the reference buffer, the compressed sources
        // in the copy buffer and the new content (or a chunk of it) in the
        // stream buffer. Buffers a larger segment left are given back
        // first: the re-deflater's memory comes on top of them.
        self.fit(size(parts.content_buffer()), size(prefix_len));
        let mut prefix = std::mem::take(&mut self.reference);
        prefix.resize(size(prefix_len), 0);
        let filled = self.fill_prefix(old, seg, &parts, &mut prefix, sink);
        let rebuilt = filled.and_then(|()| self.rebuild(seg, &parts, &prefix, sink));
        self.reference = prefix;
        let (digest, kept) = rebuilt?;
        check_output(seg, &digest)?;
        if let Some(content) = kept {
            let start = seg.new_offset + parts.head.len() as u64;
            self.keep_rebuilt(start..start + stream_len, content);
        }
        Ok(digest)
    }

    /// Lays the content of a deflate segment's sources end to end in
    /// `prefix`: kept from the segments before, or read and inflated.
    fn fill_prefix<S: Source + ?Sized, K: Sink + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        parts: &Deflate<'_>,
        prefix: &mut [u8],
        sink: &mut K,
    ) -> Applied<(), K::Error> {
        let segment = seg.index;
        let size = |n: u64| n as usize;
        let mut compressed = std::mem::take(&mut self.chunk);
        let mut filled = 0;
        let result = (|| {
            for source in &parts.sources {
                let end = filled + size(source.raw_len);
                let kept = self.rebuilt.iter().find(|(range, raw)| {
                    source.new_image
                        && source.ranges[..] == [range.clone()]
                        && raw.len() as u64 == source.raw_len
                });
                if let Some((_, raw)) = kept {
                    prefix[filled..end].copy_from_slice(raw);
                    filled = end;
                    continue;
                }
                if let (true, Some(shared), [range]) =
                    (source.new_image, &self.shared, &source.ranges[..])
                {
                    if shared.content(range, &mut prefix[filled..end]) {
                        filled = end;
                        continue;
                    }
                }
                compressed.resize(size(source.len()), 0);
                let mut read = 0;
                for range in &source.ranges {
                    let end = read + size(range.end - range.start);
                    let buf = &mut compressed[read..end];
                    if source.new_image {
                        sink.read_back(range.start, buf).map_err(|error| {
                            SegmentError::ReadBack {
                                offset: range.start,
                                len: range.end - range.start,
                                error,
                            }
                        })?;
                    } else {
                        read_range(old, range.start, buf)?;
                    }
                    read = end;
                }
                rebuild::inflate_exact(&compressed, &mut prefix[filled..end])
                    .map_err(|reason| Error::Deflate { segment, reason })?;
                filled = end;
            }
            Ok::<_, SegmentError<K::Error>>(())
        })();
        // The copy buffer grew to the largest source; plain segments need
        // only COPY_CHUNK of it.
        compressed.truncate(COPY_CHUNK);
        compressed.shrink_to(COPY_CHUNK);
        self.chunk = compressed;
        result
    }

    /// Decodes a deflate segment's content against `prefix`, re-deflates
    /// it and writes `head || stream || tail`: their digest, and the
    /// content when it is small enough to keep for later segments.
    fn rebuild<K: Sink + ?Sized>(
        &mut self,
        seg: SegmentRef<'_>,
        parts: &Deflate<'_>,
        prefix: &[u8],
        sink: &mut K,
    ) -> Applied<(Digest, Option<Vec<u8>>), K::Error> {
        let segment = seg.index;
        let mut hasher = blake3::Hasher::new();
        let mut offset = seg.new_offset;
        let mut write = |bytes: &[u8]| {
            hasher.update(bytes);
            sink.write_bytes(bytes)
                .map_err(|error| SegmentError::Write { offset, error })?;
            offset += bytes.len() as u64;
            Ok::<_, SegmentError<K::Error>>(())
        };
        let stream_len = seg.entry.new_len - (parts.head.len() + parts.tail.len()) as u64;
        let keep = parts.new_raw_len <= rebuild::HISTORY;
        let mut kept = Vec::new();
        // Within the entry's memory, checked against apply_memory.
        self.stream.resize(parts.content_buffer() as usize, 0);
        match &parts.rebuild {
            Rebuild::Whole(corrections) => {
                decode_frame(segment, parts.frame, prefix, &mut self.stream)?;
                if let (true, Some(shared)) = (keep, &self.shared) {
                    let start = seg.new_offset + parts.head.len() as u64;
                    shared.publish(start..start + stream_len, &self.stream);
                }
                let stream = self
                    .redeflate
                    .redeflate(&self.stream, corrections, stream_len as usize)
                    .map_err(|reason| Error::Deflate { segment, reason })?;
                if stream.len() as u64 != stream_len {
                    return Err(Error::Deflate {
                        segment,
                        reason: format!(
                            "rebuilt {} stream bytes, the segment holds {stream_len}",
                            stream.len()
                        ),
                    }
                    .into());
                }
                for bytes in [parts.head, &stream, parts.tail] {
                    write(bytes)?;
                }
                if keep {
                    kept.extend_from_slice(&self.stream);
                }
            }
            Rebuild::Chunks { window_log, chunks } => {
                write(parts.head)?;
                // One chunk is decoded in place, in one go; more are
                // decoded as a stream, within the frame's window.
                let mut frame = match &chunks[..] {
                    [one] => {
                        let raw = &mut self.stream[..one.raw_len as usize];
                        decode_frame(segment, parts.frame, prefix, raw)?;
                        None
                    }
                    _ => Some(ChunkedFrame::new(segment, parts, *window_log, prefix)?),
                };
                let redeflate = Arc::clone(&self.redeflate);
                let mut rebuilder = redeflate.chunks(parts.new_raw_len);
                for (i, chunk) in chunks.iter().enumerate() {
                    let raw = &mut self.stream[..chunk.raw_len as usize];
                    if let Some(frame) = frame.as_mut() {
                        frame.fill(raw)?;
                    }
                    let most = chunk.stream_len as usize;
                    let stream =
                        rebuilder
                            .next(raw, chunk.corrections, most)
                            .map_err(|reason| Error::Deflate {
                                segment,
                                reason: format!("chunk #{i}: {reason}"),
                            })?;
                    if stream.len() != most {
                        return Err(Error::Deflate {
                            segment,
                            reason: format!(
                                "chunk #{i} rebuilt {} stream bytes, the segment holds {most}",
                                stream.len()
                            ),
                        }
                        .into());
                    }
                    write(&stream)?;
                    if keep {
                        kept.extend_from_slice(raw);
                    }
                }
                if let Some(frame) = frame {
                    frame.finish()?;
                }
                if let (true, Some(shared)) = (keep, &self.shared) {
                    let start = seg.new_offset + parts.head.len() as u64;
                    shared.publish(start..start + stream_len, &kept);
                }
                write(parts.tail)?;
            }
        }
        let digest: Digest = *hasher.finalize().as_bytes();
        Ok((digest, keep.then_some(kept)))
    }

    /// Keeps the content just rebuilt for later deflate segments: the
    /// newest streams that hold [`rebuild::HISTORY`] bytes, as the
    /// generator picks them. (Larger contents are not kept, but read back
    /// when named: keeping one would double what is kept.)
    fn keep_rebuilt(&mut self, range: std::ops::Range<u64>, content: Vec<u8>) {
        debug_assert!(content.len() as u64 <= rebuild::HISTORY);
        self.rebuilt.push_back((range, content));
        let mut total: u64 = self.rebuilt.iter().map(|(_, raw)| raw.len() as u64).sum();
        while let Some((_, oldest)) = self.rebuilt.front() {
            let without = total - oldest.len() as u64;
            if without < rebuild::HISTORY {
                break;
            }
            total = without;
            self.rebuilt.pop_front();
        }
        debug_assert!(total <= REBUILT_KEPT);
    }

    /// Reads the window list at the start of `payload` and the old ranges it
    /// names into the reference buffer (`ref_len` bytes); returns the rest
    /// of the payload, the zstd frame.
    fn read_window_list<'p, S: Source + ?Sized>(
        &mut self,
        old: &S,
        seg: SegmentRef<'_>,
        payload: &'p [u8],
    ) -> Result<&'p [u8]> {
        let entry = seg.entry;
        let format = |source| Error::Format {
            segment: seg.index,
            source,
        };
        let mut list = window::Decoder::new(payload, entry.ref_offset, entry.ref_len, old.len())
            .map_err(format)?;
        let mut filled = 0;
        while let Some(range) = list.next_range().map_err(format)? {
            // In bounds: the decoder fails as soon as the lengths pass ref_len.
            let end = filled + (range.end - range.start) as usize;
            read_range(old, range.start, &mut self.reference[filled..end])?;
            filled = end;
        }
        Ok(list.rest())
    }
}

/// The zstd frame of a chunked deflate segment, decoded as a stream
/// within its stated window, a chunk's content at a time.
struct ChunkedFrame<'a> {
    segment: u64,
    dctx: zstd_safe::DCtx<'a>,
    frame: &'a [u8],
    /// Bytes of `frame` decoded.
    at: usize,
    /// The decoder said the frame is complete.
    done: bool,
}

impl<'a> ChunkedFrame<'a> {
    /// Starts decoding `parts.frame` against `prefix`, refusing a window
    /// over `2^window_log` bytes and content other than `new_raw_len`.
    fn new(
        segment: u64,
        parts: &Deflate<'a>,
        window_log: u8,
        prefix: &'a [u8],
    ) -> Result<ChunkedFrame<'a>> {
        let frame = parts.frame;
        let bad_frame = |code| Error::Decompress {
            segment,
            reason: zstd_safe::get_error_name(code),
        };
        if let Some(declared) = one_frame(segment, frame)? {
            if declared != parts.new_raw_len {
                return Err(Error::StreamLength {
                    segment,
                    stated: parts.new_raw_len,
                    found: declared,
                });
            }
        }
        let mut dctx = zstd_safe::DCtx::create();
        dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(window_log.into()))
            .map_err(bad_frame)?;
        if !prefix.is_empty() {
            dctx.ref_prefix(prefix).map_err(bad_frame)?;
        }
        Ok(ChunkedFrame {
            segment,
            dctx,
            frame,
            at: 0,
            done: false,
        })
    }

    /// One step of the decoder into `out`: its hint (0 once the frame
    /// is done) and whether it moved.
    fn step(&mut self, out: &mut zstd_safe::OutBuffer<'_, [u8]>) -> Result<(usize, bool)> {
        let mut input = zstd_safe::InBuffer::around(&self.frame[self.at..]);
        let written = out.pos();
        let hint =
            (self.dctx.decompress_stream(out, &mut input)).map_err(|code| Error::Decompress {
                segment: self.segment,
                reason: zstd_safe::get_error_name(code),
            })?;
        self.at += input.pos();
        self.done = hint == 0;
        Ok((hint, input.pos() > 0 || out.pos() > written))
    }

    /// Fills `out` with the next bytes of content.
    fn fill(&mut self, out: &mut [u8]) -> Result<()> {
        let want = out.len();
        let mut buffer = zstd_safe::OutBuffer::around(out);
        while buffer.pos() < want {
            let (hint, moved) = self.step(&mut buffer)?;
            if buffer.pos() < want && (hint == 0 || !moved) {
                return Err(Error::StreamLength {
                    segment: self.segment,
                    stated: want as u64,
                    found: buffer.pos() as u64,
                });
            }
        }
        Ok(())
    }

    /// Ends the frame: it must hold no more content, and nothing after it.
    fn finish(mut self) -> Result<()> {
        let mut byte = [0u8; 1];
        while !self.done {
            let mut buffer = zstd_safe::OutBuffer::around(&mut byte[..]);
            let (hint, moved) = self.step(&mut buffer)?;
            if buffer.pos() > 0 {
                return Err(Error::Decompress {
                    segment: self.segment,
                    reason: "the frame holds more content than the chunks",
                });
            }
            if hint != 0 && !moved {
                return Err(Error::Decompress {
                    segment: self.segment,
                    reason: "the frame is cut short",
                });
            }
        }
        if self.at != self.frame.len() {
            return Err(Error::Decompress {
                segment: self.segment,
                reason: "payload holds bytes after its zstd frame",
            });
        }
        Ok(())
    }
}

/// Checks the digest of what a segment produced against its entry's.
fn check_output(seg: SegmentRef<'_>, digest: &Digest) -> Result<()> {
    if *digest != seg.entry.output_digest {
        return Err(Error::OutputDigest {
            segment: seg.index,
            start: seg.new_offset,
            end: seg.new_offset.saturating_add(seg.entry.new_len),
        });
    }
    Ok(())
}

/// Fills `buf` with the old bytes at `offset`.
fn read_range<S: Source + ?Sized>(old: &S, offset: u64, buf: &mut [u8]) -> Result<()> {
    old.read_at(offset, buf)
        .map_err(|source| Error::ReadSource {
            offset,
            len: buf.len() as u64,
            source,
        })
}

fn check_totals(segment: u64, entry: &SegmentEntry, t: Totals) -> Result<()> {
    let pairs = [
        ("copy_len", entry.copy_len, t.copy),
        ("zero_len", entry.zero_len, t.zero),
        ("diff_len", entry.diff_len, t.diff),
        ("literal_len", entry.literal_len, t.literal),
    ];
    for (what, stated, actual) in pairs {
        if stated != actual {
            return Err(Error::Format {
                segment,
                source: delta_format::Error::StreamMismatch {
                    what,
                    stated,
                    actual,
                },
            });
        }
    }
    Ok(())
}

/// State of one segment's execution.
struct Run<'a, S: ?Sized, K: ?Sized> {
    old: &'a S,
    sink: &'a mut K,
    hasher: blake3::Hasher,
    produced: u64,
    seg: SegmentRef<'a>,
    chunk: &'a mut Vec<u8>,
}

impl<S: Source + ?Sized, K: Sink + ?Sized> Run<'_, S, K> {
    fn execute(&mut self, instruction: Instruction<'_>) -> Applied<(), K::Error> {
        let len = match instruction {
            Instruction::Copy { len, .. }
            | Instruction::CopyNew { len, .. }
            | Instruction::Zero { len } => len,
            Instruction::Literal(bytes) | Instruction::Diff { delta: bytes, .. } => {
                bytes.len() as u64
            }
        };
        // Never produce past the segment, whatever the ops claim.
        let room = self.seg.entry.new_len - self.produced;
        if len > room {
            return Err(Error::Format {
                segment: self.seg.index,
                source: delta_format::Error::StreamMismatch {
                    what: "bytes produced by ops vs new_len",
                    stated: self.seg.entry.new_len,
                    actual: self.produced.saturating_add(len),
                },
            }
            .into());
        }
        match instruction {
            Instruction::Copy { src, len } => self.copy(src, len, &[], false)?,
            Instruction::CopyNew { src, len } => self.copy(src, len, &[], true)?,
            Instruction::Diff { src, delta } => self.copy(src, len, delta, false)?,
            Instruction::Literal(bytes) => self.emit(bytes)?,
            Instruction::Zero { len } => {
                let mut left = len;
                while left > 0 {
                    let n = left.min(ZEROS.len() as u64) as usize;
                    self.hasher.update(&ZEROS[..n]);
                    left -= n as u64;
                }
                let offset = self.offset();
                self.sink
                    .write_zeros(len)
                    .map_err(|error| SegmentError::Write { offset, error })?;
                self.produced += len;
            }
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` in the old image (or, with `from_new`,
    /// in the new image before this segment, read back from the sink),
    /// adding `delta` byte-wise when it is not empty (a diff op).
    fn copy(&mut self, src: u64, len: u64, delta: &[u8], from_new: bool) -> Applied<(), K::Error> {
        let mut done = 0u64;
        let mut chunk = std::mem::take(self.chunk);
        while done < len {
            let n = (len - done).min(COPY_CHUNK as u64) as usize;
            chunk.resize(n, 0);
            let offset = src + done;
            let len = n as u64;
            if from_new {
                self.sink
                    .read_back(offset, &mut chunk)
                    .map_err(|error| SegmentError::ReadBack { offset, len, error })?;
            } else {
                self.old
                    .read_at(offset, &mut chunk)
                    .map_err(|source| Error::ReadSource {
                        offset,
                        len,
                        source,
                    })?;
            }
            if !delta.is_empty() {
                let start = done as usize;
                for (byte, d) in chunk.iter_mut().zip(&delta[start..start + n]) {
                    *byte = byte.wrapping_add(*d);
                }
            }
            self.emit(&chunk)?;
            done += n as u64;
        }
        *self.chunk = chunk;
        Ok(())
    }

    fn emit(&mut self, bytes: &[u8]) -> Applied<(), K::Error> {
        self.hasher.update(bytes);
        let offset = self.offset();
        self.sink
            .write_bytes(bytes)
            .map_err(|error| SegmentError::Write { offset, error })?;
        self.produced += bytes.len() as u64;
        Ok(())
    }

    fn offset(&self) -> u64 {
        self.seg.new_offset.saturating_add(self.produced)
    }
}

/// Applies one segment of any kind, the first of a delta whose header
/// allows every kind and no COPY_NEW or window list, to `old`: the
/// single-segment applier of benchmarks, examples and fuzz targets.
///
/// # Errors
/// What [`Patcher::apply_segment`] reports.
pub fn apply_one_segment(
    old: &[u8],
    entry: &SegmentEntry,
    payload: &[u8],
) -> Applied<Vec<u8>, std::io::Error> {
    let seg = SegmentRef {
        index: 0,
        new_offset: 0,
        payload_offset: 0,
        entry,
        new_limit: 0,
        window_list: false,
        kinds: true,
        allowed: delta_format::kind::Kinds {
            lzma: true,
            deflate_chunks: true,
            exec: true,
        },
    };
    let mut out = Vec::new();
    Patcher::new().apply_segment(old, seg, payload, &mut out)?;
    Ok(out)
}

/// Applies a whole delta held in memory to `old`, returning the new image:
/// the small reference applier for tests and fuzzing. It checks everything
/// the streaming applier checks except the old image's digest. It holds the
/// whole new image, so callers bound it with `limits.max_output`.
///
/// # Errors
/// Any format, digest or length error.
pub fn apply_slice(old: &[u8], delta: &[u8], limits: &Limits) -> Result<Vec<u8>> {
    apply_slice_with(Patcher::new(), old, delta, limits)
}

/// [`apply_slice`] with `patcher` (a bounded [`Redeflate`] for untrusted
/// deltas).
///
/// # Errors
/// As [`apply_slice`].
pub fn apply_slice_with(
    mut patcher: Patcher,
    old: &[u8],
    delta: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>> {
    let index = delta_format::read_index(&mut &delta[..], limits).map_err(Error::Header)?;
    if index.header.old_len != old.len() as u64 && !index.header.is_full() {
        return Err(Error::OldLength {
            expected: index.header.old_len,
            found: old.len() as u64,
        });
    }
    let old = if index.header.is_full() { &[][..] } else { old };
    index
        .check_file_len(delta.len() as u64)
        .map_err(Error::Header)?;
    let mut out = Vec::new();
    for i in 0..index.segments.len() {
        let seg = SegmentRef::of(&index, i);
        // In bounds: the table's payload ranges add up to the delta's length.
        let start = seg.payload_offset as usize;
        let payload = &delta[start..start + seg.entry.payload_len as usize];
        patcher.apply_segment(old, seg, payload, &mut out)?;
    }
    if blake3::hash(&out).as_bytes() != &index.header.new_digest {
        return Err(Error::NewDigest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Patcher;

    #[test]
    fn buffers_hold_at_most_what_one_segment_needs() {
        // An executable segment left a 3.8 MB prefix, an earlier one a
        // 2 MB stream; an LZMA segment then needs a 6.8 MB stream alone.
        let mut patcher = Patcher::new();
        patcher.stream.reserve_exact(2_000_000);
        patcher.reference.reserve_exact(3_800_000);
        patcher.fit(6_800_000, 0);
        patcher.stream.resize(6_800_000, 0);
        assert_eq!(patcher.reference.capacity(), 0);
        let held = patcher.stream.capacity() + patcher.reference.capacity();
        assert!(held <= 6_800_000 + 64, "{held} bytes held");
        // And back: a small stream with a large prefix.
        patcher.fit(1000, 3_000_000);
        patcher.reference.resize(3_000_000, 0);
        assert!(patcher.stream.capacity() <= 1000);
    }
}
