//! Invariants of the fuzz targets, shared with the regression test.
//!
//! Each public function takes arbitrary bytes, calls the public API of
//! `delta-format` / `delta-core` and panics only when an invariant breaks:
//! an `Err` from the library is a normal outcome for hostile input. The fuzz
//! targets call these functions, and `crates/apply/tests/regress.rs` includes
//! this file with `#[path]` to replay `testdata/regress/<target>/*`, so both
//! check exactly the same things.
//!
//! Digests stop a byte-flipping fuzzer at the first check, so `decode_header`
//! and `apply` also run a *fixed* copy of each input whose digests (and, for
//! `apply`, compressed payloads) are recomputed; that copy reaches the rules
//! behind the digests: table entries, zstd frames, op streams.
//!
//! Memory: every call allocates at most a few MiB whatever the input says
//! (tight [`Limits`], [`OUTPUT_CAP`], inputs bounded by libFuzzer's
//! `-max_len`).

use delta_apply::redeflate::Sandboxed;
use delta_core::{
    DeltaOptions, DiffOptions, EncodeOptions, Patcher, Redeflate, SegmentError, SegmentRef, Sink,
};
use delta_format::stream::Decoder;
use delta_format::{
    stream, window, Header, Index, Instruction, Limits, Op, SegmentEntry, Totals, DIGEST_LEN,
    ENTRY_LEN, HEADER_LEN, STREAM_SLACK,
};
use std::io;
use std::sync::Arc;

/// Applies `delta` as the device's applier does: deflate segments are
/// re-deflated in a bounded child process, so hostile corrections end.
fn apply_slice(old: &[u8], delta: &[u8], limits: &Limits) -> delta_core::Result<Vec<u8>> {
    let patcher = Patcher::new().with_redeflate(Arc::new(Sandboxed::default()));
    delta_core::apply_slice_with(patcher, old, delta, limits)
}

/// Old image the `apply` target patches (full deltas ignore it): the small
/// fixture pair's old file, so that a delta made from `testdata/small/` is a
/// valid seed.
pub const OLD: &[u8] = include_bytes!("../../testdata/small/old.bin");

/// Most bytes of new image the harness itself buffers while fixing digests.
pub const OUTPUT_CAP: usize = 1 << 20;

/// First bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The limits of an applier on a small device: what `apply` runs with.
pub fn tight_limits() -> Limits {
    Limits {
        max_segments: 64,
        max_memory: 1 << 20,
        memory_overhead: 0,
        max_output: OUTPUT_CAP as u64,
    }
}

/// Small generator settings for `roundtrip`: many segments, copies and
/// diffs even on inputs of a few KiB.
pub fn slice_options(full: bool) -> DeltaOptions {
    let d = DeltaOptions::default();
    DeltaOptions {
        diff: DiffOptions {
            block_size: 64,
            max_reference: 4096,
        },
        encode: EncodeOptions {
            level: 1,
            ..d.encode
        },
        segment_len: 4096,
        full,
        merge_len: 4 * 4096,
        report: true,
        ..d
    }
}

/// `decode_signatures`: the input is a signature block. Decoding must never
/// panic; a block it accepts re-encodes to the same bytes, and its length
/// is what `block_len` measures from its count.
pub fn decode_signatures(data: &[u8]) {
    use delta_format::signature::{block_len, decode_block, encode_block};
    let Ok(signatures) = decode_block(data, 0) else {
        return;
    };
    assert_eq!(
        encode_block(&signatures),
        data,
        "block re-encodes differently"
    );
    assert_eq!(
        block_len(data, 0).expect("an accepted block has a valid count"),
        data.len() as u64
    );
}

/// `decode_header`: the input is the start of a delta file. Header and
/// index decode must never panic, and whatever they accept must obey every
/// rule of `FORMAT.md` and re-encode to the same bytes.
pub fn decode_header(data: &[u8]) {
    for limits in [tight_limits(), Limits::default()] {
        check_index(data, &limits);
        if let Some(fixed) = with_table_digest(data, &limits) {
            check_index(&fixed, &limits);
        }
    }
}

/// Decodes header and index through the one reader the applier, `info`
/// and the in-memory applier use, and checks what it accepts.
fn check_index(data: &[u8], limits: &Limits) -> Option<Index> {
    let mut rest = data;
    let index = delta_format::read_index(&mut rest, limits).ok()?;
    assert_eq!(
        index.header.encode()[..],
        data[..HEADER_LEN],
        "header re-encodes differently"
    );
    let table_len = index
        .header
        .table_len(limits)
        .expect("the reader checked the table size");
    // With the signed flag, the signature block follows the table.
    let block_len = if index.header.is_signed() {
        assert!(
            !index.signatures.is_empty(),
            "a signed delta without signatures"
        );
        4 + index.signatures.len() * delta_format::signature::ENTRY_LEN
    } else {
        assert!(index.signatures.is_empty(), "signatures without the flag");
        0
    };
    assert_eq!(
        data.len() - rest.len(),
        HEADER_LEN + table_len as usize + block_len,
        "the reader consumed more or less than header, table and signatures"
    );
    let h = &index.header;
    let count = index.segments.len();
    assert!(h.apply_memory <= limits.max_memory);
    assert!(h.segment_count <= limits.max_segments);
    assert_eq!(count as u64, h.segment_count);
    assert_eq!(index.new_offsets.len(), count);
    assert_eq!(index.payload_offsets.len(), count);
    assert_eq!(h.new_len == 0, count == 0);
    if h.is_full() {
        assert_eq!(h.old_len, 0, "full payload with an old image");
    }
    let mut new_offset = 0u64;
    let mut payload_offset = (HEADER_LEN + count * ENTRY_LEN + DIGEST_LEN + block_len) as u64;
    for (i, e) in index.segments.iter().enumerate() {
        assert_eq!(index.new_offsets[i], new_offset, "segment {i} new offset");
        assert_eq!(
            index.payload_offsets[i], payload_offset,
            "segment {i} payload"
        );
        assert!(
            (1..=h.max_segment_len).contains(&e.new_len),
            "segment {i} new_len"
        );
        let parts = [e.copy_len, e.zero_len, e.diff_len, e.literal_len]
            .iter()
            .try_fold(0u64, |sum, &n| sum.checked_add(n));
        assert_eq!(parts, Some(e.new_len), "segment {i} parts");
        assert!(e.payload_len >= 1, "segment {i} empty payload");
        // With segment kinds, deflate and LZMA segments state the buffers
        // they need, which the payload reader checks (see kind.rs).
        let stream_max = e.new_len.saturating_mul(2).saturating_add(STREAM_SLACK);
        if !h.has_segment_kinds() {
            assert!(e.stream_len <= stream_max, "segment {i} stream_len");
        }
        let ref_end = e.ref_offset.checked_add(e.ref_len);
        assert!(
            ref_end.is_some_and(|end| end <= h.old_len),
            "segment {i} ref"
        );
        assert!(e.memory() <= h.apply_memory, "segment {i} memory");
        if h.is_full() {
            assert_eq!((e.copy_len, e.diff_len), (0, 0), "segment {i} reads old");
        }
        new_offset = new_offset.checked_add(e.new_len).expect("new_len sum");
        payload_offset = payload_offset
            .checked_add(e.payload_len)
            .expect("payload sum");
    }
    assert_eq!(new_offset, h.new_len, "segments do not add up to new_len");
    assert_eq!(index.file_len, payload_offset, "file_len");
    let table_end = HEADER_LEN + usize::try_from(table_len).expect("table in memory");
    let encoded = Index::encode(h, &index.segments);
    assert!(
        encoded[..] == data[..table_end],
        "index re-encodes differently"
    );
    Some(index)
}

/// `data` with the table digest recomputed, when a header decodes and the
/// table is present and the digest was wrong.
fn with_table_digest(data: &[u8], limits: &Limits) -> Option<Vec<u8>> {
    let header = Header::decode(data, limits).ok()?;
    let table_len = usize::try_from(header.table_len(limits).ok()?).ok()?;
    let end = HEADER_LEN.checked_add(table_len)?;
    let mut fixed = data.to_vec();
    let digest_at = end - DIGEST_LEN;
    let digest = blake3::hash(fixed.get(..digest_at)?);
    let slot = fixed.get_mut(digest_at..end)?;
    if slot == digest.as_bytes() {
        return None;
    }
    slot.copy_from_slice(digest.as_bytes());
    Some(fixed)
}

/// `decode_ops`: the first 8 bytes are `old_len` (little-endian), the rest
/// a segment stream (a shorter input is a stream with `old_len` 0).
///
/// Decoding must never panic; every instruction must produce at least one
/// byte and read only `[0, old_len)`; data slices come in order from their
/// sections; the totals add up; and a stream re-encoded from the decoded
/// ops decodes to the same ops and is no longer than the input.
pub fn decode_ops(data: &[u8]) {
    let (old_len, stream) = match data.split_first_chunk::<8>() {
        Some((len, stream)) => (u64::from_le_bytes(*len), stream),
        None => (0, data),
    };
    let Some(decoded) = walk(stream, old_len) else {
        return;
    };
    let again = stream::encode(&decoded.ops, &decoded.diff, &decoded.literal);
    assert!(again.len() <= stream.len(), "re-encoding grew the stream");
    let redecoded = walk(&again, old_len).expect("a re-encoded stream decodes");
    assert_eq!(redecoded, decoded, "re-encoded stream decodes differently");
}

/// What a stream decodes to, with absolute offsets.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    ops: Vec<Op>,
    diff: Vec<u8>,
    literal: Vec<u8>,
    totals: Totals,
}

/// Bytes of new image before the segment that `walk` lets COPY_NEW read.
const NEW_LIMIT: u64 = 1 << 16;

/// Decodes `stream` checking each instruction; `None` when the decoder
/// returns an error (which is fine).
fn walk(stream: &[u8], old_len: u64) -> Option<Decoded> {
    let mut decoder = Decoder::new(stream, old_len)
        .ok()?
        .with_new_limit(NEW_LIMIT);
    let base = stream.as_ptr() as usize;
    // Offset of `part` in `stream`, checking that it lies inside.
    let offset = |part: &[u8]| {
        let start = (part.as_ptr() as usize)
            .checked_sub(base)
            .expect("slice before the stream");
        assert!(start + part.len() <= stream.len(), "slice past the stream");
        start
    };
    let mut out = Decoded {
        ops: Vec::new(),
        diff: Vec::new(),
        literal: Vec::new(),
        totals: Totals::default(),
    };
    let add = |total: &mut u64, len: u64| {
        *total = total
            .checked_add(len)
            .expect("decoder lets op totals overflow");
    };
    // Data sections: diff bytes, then literal bytes, each read in order
    // (ops of both kinds may interleave).
    let mut diff_end: Option<usize> = None;
    let mut literal_start: Option<usize> = None;
    let mut literal_end: Option<usize> = None;
    // Each op takes at least two bytes of the stream, so this ends.
    while let Some(instruction) = decoder.next_instruction().ok()? {
        let op = match instruction {
            Instruction::Copy { src, len } => {
                assert!(len >= 1, "empty copy");
                let end = src.checked_add(len);
                assert!(end.is_some_and(|end| end <= old_len), "copy outside old");
                add(&mut out.totals.copy, len);
                Op::Copy { src, len }
            }
            Instruction::CopyNew { src, len } => {
                assert!(len >= 1, "empty copy of the new image");
                let end = src.checked_add(len);
                assert!(
                    end.is_some_and(|end| end <= NEW_LIMIT),
                    "copy of the new image past the segment's start"
                );
                add(&mut out.totals.copy, len);
                Op::CopyNew { src, len }
            }
            Instruction::Diff { src, delta } => {
                let len = delta.len() as u64;
                assert!(len >= 1, "empty diff");
                let end = src.checked_add(len);
                assert!(end.is_some_and(|end| end <= old_len), "diff outside old");
                let start = offset(delta);
                assert!(
                    diff_end.is_none_or(|end| end == start),
                    "diff bytes skipped"
                );
                diff_end = Some(start + delta.len());
                assert!(
                    literal_start.is_none_or(|literal| start + delta.len() <= literal),
                    "diff bytes inside the literal section"
                );
                out.diff.extend_from_slice(delta);
                add(&mut out.totals.diff, len);
                Op::Diff { src, len }
            }
            Instruction::Zero { len } => {
                assert!(len >= 1, "empty zero run");
                add(&mut out.totals.zero, len);
                Op::Zero { len }
            }
            Instruction::Literal(bytes) => {
                let len = bytes.len() as u64;
                assert!(len >= 1, "empty literal");
                let start = offset(bytes);
                assert!(
                    literal_end.is_none_or(|end| end == start),
                    "literal bytes skipped"
                );
                assert!(
                    diff_end.is_none_or(|end| end <= start),
                    "literal before diff"
                );
                literal_start.get_or_insert(start);
                literal_end = Some(start + bytes.len());
                out.literal.extend_from_slice(bytes);
                add(&mut out.totals.literal, len);
                Op::Literal { len }
            }
        };
        out.ops.push(op);
    }
    let totals = decoder.finish().ok()?;
    assert_eq!(totals, out.totals, "finish() totals differ from the ops");
    // Every section consumed: the last data byte is the stream's last byte.
    if let Some(end) = literal_end.or(diff_end) {
        assert_eq!(end, stream.len(), "finish() accepts unread data");
    }
    Some(out)
}

/// `apply`: the input is a delta for [`OLD`], applied with
/// [`tight_limits`]. Whatever `apply_slice` accepts must be `new_len` bytes
/// whose blake3 is the header's `new_digest`.
///
/// The input is applied as is, then (if its header decodes) as a *fixed*
/// copy: payloads that do not start with the zstd magic are taken as
/// uncompressed segment streams and compressed (with their reference
/// prefix), and all digests, `payload_len`, `stream_len` and `apply_memory`
/// are recomputed, so that mutated streams reach the patcher.
pub fn apply(data: &[u8]) {
    // `max_output` refuses headers claiming more new image than the harness
    // holds (testdata/regress/apply/huge-zero-run.delta claims 8 GiB).
    let limits = tight_limits();
    check_apply(data, &limits);
    if let Some(fixed) = fix_delta(data, &limits) {
        check_apply(&fixed, &limits);
    }
}

fn check_apply(delta: &[u8], limits: &Limits) {
    let Ok(out) = apply_slice(OLD, delta, limits) else {
        return;
    };
    let header = Header::decode(delta, limits).expect("apply_slice accepted the header");
    assert_eq!(out.len() as u64, header.new_len, "output length");
    assert!(
        blake3::hash(&out).as_bytes() == &header.new_digest,
        "output digest"
    );
}

/// The fixed copy of a delta described at [`apply`], or `None` when the
/// header or table does not decode or nothing changes.
fn fix_delta(data: &[u8], limits: &Limits) -> Option<Vec<u8>> {
    let header = Header::decode(data, limits).ok()?;
    let table_end =
        HEADER_LEN.checked_add(usize::try_from(header.table_len(limits).ok()?).ok()?)?;
    let table = with_table_digest(data, limits).unwrap_or_else(|| data.to_vec());
    let index = Index::decode(header, &table[..HEADER_LEN], &table[HEADER_LEN..], limits).ok()?;
    let mut header = index.header;
    let mut segments = index.segments;

    let mut rest = &data[table_end..];
    let mut payloads = Vec::with_capacity(segments.len());
    for e in &mut segments {
        let take = usize::try_from(e.payload_len).map_or(rest.len(), |n| n.min(rest.len()));
        let (raw, tail) = rest.split_at(take);
        rest = tail;
        let payload = if header.has_window_list() {
            listed_payload(raw, &header, e)?
        } else if raw.starts_with(&ZSTD_MAGIC) {
            raw.to_vec()
        } else {
            e.stream_len = raw.len() as u64;
            compress(raw, reference(&header, e))?
        };
        e.payload_len = payload.len() as u64;
        e.payload_digest = *blake3::hash(&payload).as_bytes();
        payloads.push(payload);
    }
    let memory = segments.iter().map(SegmentEntry::memory).max().unwrap_or(0);
    header.apply_memory = header.apply_memory.max(memory);

    // Run the segments once to learn their output digests.
    let old = if header.is_full() { &[][..] } else { OLD };
    let mut patcher = Patcher::new();
    let mut image = blake3::Hasher::new();
    let mut complete = true;
    let mut payload_offset = (HEADER_LEN + segments.len() * ENTRY_LEN + DIGEST_LEN) as u64;
    for (i, payload) in payloads.iter().enumerate() {
        let entry = segments[i].clone();
        let seg = SegmentRef {
            index: i as u64,
            new_offset: index.new_offsets[i],
            payload_offset,
            entry: &entry,
            new_limit: if header.has_copy_new() {
                index.new_offsets[i]
            } else {
                0
            },
            window_list: header.has_window_list(),
            kinds: header.has_segment_kinds(),
            allowed: delta_format::kind::Kinds::of_flags(header.flags),
        };
        payload_offset = payload_offset.saturating_add(entry.payload_len);
        let mut sink = CappedSink::default();
        match patcher.apply_segment(old, seg, payload, &mut sink) {
            Ok(_) => {}
            Err(SegmentError::Segment(delta_core::Error::OutputDigest { .. })) => {
                segments[i].output_digest = *blake3::hash(&sink.bytes).as_bytes();
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
        image.update(&sink.bytes);
    }
    if complete {
        header.new_digest = *image.finalize().as_bytes();
    }

    let mut out = Index::encode(&header, &segments);
    for payload in &payloads {
        out.extend_from_slice(payload);
    }
    (out != data).then_some(out)
}

/// A payload for a header with `FLAG_WINDOW_LIST`: `raw` as it is when a
/// window list and a zstd frame follow each other in it (so that mutated
/// lists reach the applier); else `raw` compressed as the stream, after the
/// list of the entry's window as one range.
fn listed_payload(raw: &[u8], header: &Header, e: &mut SegmentEntry) -> Option<Vec<u8>> {
    if let Ok(mut list) = window::Decoder::new(raw, e.ref_offset, e.ref_len, header.old_len) {
        while let Ok(Some(_)) = list.next_range() {}
        if list.rest().starts_with(&ZSTD_MAGIC) {
            return Some(raw.to_vec());
        }
    }
    e.stream_len = raw.len() as u64;
    let reference = reference(header, e);
    let whole = e.ref_offset..e.ref_offset + reference.len() as u64;
    let ranges = if reference.is_empty() {
        vec![]
    } else {
        vec![whole]
    };
    let mut payload = Vec::new();
    window::encode(&ranges, e.ref_offset, &mut payload);
    payload.extend(compress(raw, reference)?);
    Some(payload)
}

/// The old-image prefix a segment's frame is compressed against.
fn reference<'a>(header: &Header, e: &SegmentEntry) -> &'a [u8] {
    if header.is_full() {
        return &[];
    }
    let start = usize::try_from(e.ref_offset).ok();
    let end = start.and_then(|s| s.checked_add(usize::try_from(e.ref_len).ok()?));
    start
        .zip(end)
        .and_then(|(s, end)| OLD.get(s..end))
        .unwrap_or(&[])
}

/// One zstd frame of `data` at level 1 with `reference` as raw prefix, as
/// `delta_core::encode_segment` makes them.
fn compress(data: &[u8], reference: &[u8]) -> Option<Vec<u8>> {
    use zstd_safe::CParameter;
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(1)).ok()?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
    if !reference.is_empty() {
        let span = (reference.len() + data.len()) as u64;
        let window_log = (64 - span.saturating_sub(1).leading_zeros()).clamp(10, 30);
        cctx.set_parameter(CParameter::WindowLog(window_log)).ok()?;
        cctx.ref_prefix(reference).ok()?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).ok()?;
    Some(out)
}

/// Collects at most [`OUTPUT_CAP`] bytes, then fails.
#[derive(Debug, Default)]
struct CappedSink {
    bytes: Vec<u8>,
}

impl Sink for CappedSink {
    type Error = io::Error;

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.bytes.len() + bytes.len() > OUTPUT_CAP {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}

/// `roundtrip`: the first two bytes (little-endian, modulo the rest's
/// length + 1) split the rest into `old` and `new`. A delta and a full
/// payload made with [`slice_options`] must decode under [`tight_limits`]
/// and apply back to `new`.
pub fn roundtrip(data: &[u8]) {
    let Some((split, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)) % (rest.len() + 1);
    let (old, new) = rest.split_at(split);
    let limits = tight_limits();
    for full in [false, true] {
        let delta = delta_core::diff_slices(old, new, &slice_options(full))
            .expect("diff_slices fails on a small input");
        check_index(&delta, &limits).expect("generated index does not decode");
        let base = if full { &[][..] } else { old };
        match apply_slice(base, &delta, &limits) {
            Ok(out) => assert!(
                out == new,
                "round trip differs (full: {full}, old {} bytes, new {} bytes)",
                old.len(),
                new.len()
            ),
            Err(e) => panic!(
                "generated delta does not apply (full: {full}, old {} bytes, new {} bytes): {e}",
                old.len(),
                new.len()
            ),
        }
    }
}

/// `deflate_segment`: the input describes a deflate segment (see
/// `delta_format::kind`), which the harness turns into a version 3 or 5 delta
/// over [`OLD`] and applies:
///
/// ```text
/// u8 flags            bit 0: one old-image source follows
/// [u16 start, u16 len, u16 raw_len]   the source, within OLD
/// u8 head_len, head   u8 tail_len, tail
/// u16 corrections_len, corrections
/// content             the rest: the new content, in a zstd frame
/// ```
///
/// With bit 2 of `flags`, the segment is a chunked one (kind
/// `DEFLATE_CHUNKS`, version 5) of one chunk. The corrections go to the
/// re-deflater as they are (hostile) when bit 1
/// of `flags` is set; else the harness replaces them with preflate's own
/// for a zlib deflate of the content (at the level in bits 4..8), which
/// reaches the whole applier path with valid corrections. Source bytes are
/// whatever OLD holds there. Nothing may panic or hang; a delta the patcher
/// accepts must produce `head || rebuilt stream || tail`. The input is also
/// decoded as a raw payload body against a few entries.
///
/// preflate-rs 0.7 is not hardened against hostile corrections: it panics
/// on some and loops with growing memory on others
/// (`testdata/regress/deflate_segment/preflate-hang-hostile-corrections`).
/// The applier runs it in a child process with limits
/// (`delta_apply::redeflate`), and so does this harness.
/// libFuzzer's panic hook would abort on the caught panics, so the hook is
/// silenced while the check runs; a panic that escapes (ours) still aborts.
pub fn deflate_segment(data: &[u8]) {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let escaped = std::panic::catch_unwind(|| check_deflate_segment(data));
    std::panic::set_hook(hook);
    if let Err(panic) = escaped {
        std::panic::resume_unwind(panic);
    }
}

fn check_deflate_segment(data: &[u8]) {
    use delta_format::kind::{self, Chunk, Deflate, Rebuild, Source};
    for new_len in [1u64, 64, 1 << 20] {
        let entry = SegmentEntry {
            new_len,
            diff_len: new_len,
            ref_len: u64::from(data.first().copied().unwrap_or(0)),
            ..SegmentEntry::default()
        };
        for kind in [kind::DEFLATE, kind::DEFLATE_CHUNKS] {
            let _ = Deflate::decode(kind, data, 0, &entry, OLD.len() as u64, 4096);
        }
    }
    let mut r = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, rest) = (r.get(..n)?, r.get(n..)?);
        r = rest;
        Some(head)
    };
    let u16_at = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]]));
    let Some(&[flags]) = take(1) else { return };
    let mut sources = Vec::new();
    if flags & 1 != 0 {
        let Some(b) = take(6) else { return };
        let (start, len, raw_len) = (u16_at(&b[0..2]), u16_at(&b[2..4]).max(1), u16_at(&b[4..6]));
        let start = start % OLD.len() as u64;
        let end = (start + len).min(OLD.len() as u64);
        sources.push(Source {
            new_image: false,
            ranges: std::iter::once(start..end.max(start + 1)).collect(),
            raw_len,
        });
    }
    let Some(&[head_len]) = take(1) else { return };
    let Some(head) = take(head_len.into()) else {
        return;
    };
    let Some(&[tail_len]) = take(1) else { return };
    let Some(tail) = take(tail_len.into()) else {
        return;
    };
    let Some(b) = take(2) else { return };
    let Some(corrections) = take(u16_at(b) as usize) else {
        return;
    };
    let content = r;
    let hostile = flags & 2 != 0;
    let own;
    let corrections = if hostile {
        corrections
    } else {
        let level = u32::from(flags >> 4).min(9);
        let Some(made) = own_corrections(content, level) else {
            return;
        };
        own = made;
        &own[..]
    };
    // Hostile corrections are rebuilt as the device's applier does, in a
    // bounded child process; preflate's own are rebuilt in this process
    // (a fork per input would slow the fuzzer down a hundredfold).
    // A chunked segment (version 5) of one chunk: preflate's corrections
    // for a whole stream are those of its first chunk.
    let chunked = flags & 4 != 0;
    let sandbox = Sandboxed::default();
    // More than any deflate stream of the content (15-bit codes at worst).
    let most = 2 * content.len() + 1024;
    let rebuilt = match (hostile, chunked) {
        (true, false) => sandbox.rebuild_at_most(content, corrections, most).ok(),
        (true, true) => sandbox
            .chunks(content.len() as u64)
            .next(content, corrections, most)
            .ok(),
        (false, false) => delta_core::rebuild(content, corrections).ok(),
        (false, true) => delta_core::Rebuilder::new()
            .chunk(content, corrections)
            .ok(),
    };
    let stream_len = rebuilt.as_ref().map_or(1, Vec::len);
    let Some(frame) = compress(content, &[]) else {
        return;
    };
    let rebuild = if chunked {
        let span = content.len().max(1) as u64;
        let window_log = (64 - (span - 1).leading_zeros() as u8)
            .clamp(kind::MIN_WINDOW_LOG, kind::MAX_WINDOW_LOG);
        let chunk = Chunk {
            raw_len: content.len() as u64,
            stream_len: stream_len as u64,
            corrections,
        };
        Rebuild::Chunks {
            window_log,
            chunks: vec![chunk],
        }
    } else {
        Rebuild::Whole(corrections)
    };
    let parts = Deflate {
        sources,
        new_raw_len: content.len() as u64,
        head,
        tail,
        rebuild,
        frame: &frame,
    };
    let mut payload = Vec::new();
    parts.encode(&mut payload);
    let new_len = (head.len() + tail.len() + stream_len) as u64;
    let expected: Vec<u8> = match &rebuilt {
        Some(stream) => [head, stream, tail].concat(),
        None => Vec::new(),
    };
    let segment = parts.entry(&payload, new_len, *blake3::hash(&expected).as_bytes());
    let chunks_flag = if chunked {
        delta_format::FLAG_DEFLATE_CHUNKS
    } else {
        0
    };
    let delta = one_segment_delta(
        delta_format::FLAG_SEGMENT_KINDS | chunks_flag,
        &segment,
        &payload,
        &expected,
    );
    let limits = Limits {
        max_memory: 64 << 20,
        ..tight_limits()
    };
    let applied = if hostile {
        apply_slice(OLD, &delta, &limits)
    } else {
        delta_core::apply_slice(OLD, &delta, &limits)
    };
    if let Ok(out) = applied {
        assert!(
            rebuilt.is_some(),
            "accepted a stream the re-deflater refused"
        );
        assert_eq!(out, expected, "deflate segment output");
    }
}

/// preflate's corrections for a zlib raw deflate of `content` at `level`.
fn own_corrections(content: &[u8], level: u32) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
    deflater.write_all(content).ok()?;
    let stream = deflater.finish().ok()?;
    let config = preflate_rs::PreflateConfig::default();
    let (chunk, _) = preflate_rs::preflate_whole_deflate_stream(&stream, &config).ok()?;
    Some(chunk.corrections)
}

/// `lzma_segment`: the input describes an LZMA segment (see
/// `delta_format::kind`), which the harness turns into a version 4 delta
/// over [`OLD`] and applies:
///
/// ```text
/// u8 mode     bits 0..2 and 7: branch filter (4..7 are invalid filters);
///             bit 2: the rest is hostile raw LZMA2 data; else bit 3: the
///             rest is an op stream, else the bytes of one literal op, which
///             the harness compresses
/// u16 ops_len (hostile data only) the op stream it claims to decode to
/// rest        the LZMA2 data, the op stream, or the literal bytes
/// ```
///
/// Hostile data reaches liblzma's raw decoder as it is: nothing may panic,
/// and whatever the patcher accepts must be the stream's stated output.
/// Compressed op streams (decoded as a plain segment's ops against OLD) must
/// apply exactly as the same stream in a plain segment does. The input is
/// also decoded as a raw payload body against a few entries.
pub fn lzma_segment(data: &[u8]) {
    use delta_format::kind::{self, BranchFilter, Lzma};
    for new_len in [1u64, 64, 1 << 20] {
        let ops_len = data.len().max(1) as u64;
        let entry = SegmentEntry {
            new_len,
            stream_len: kind::lzma_stream_len(ops_len),
            ..SegmentEntry::default()
        };
        let _ = Lzma::decode(data, 0, &entry);
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let filter_byte = mode & 3 | (mode >> 5 & 4);
    let hostile = mode & 4 != 0;
    let literal;
    let (ops_len, body) = if hostile {
        let Some(b) = rest.get(..2) else { return };
        (
            u64::from(u16::from_le_bytes([b[0], b[1]])).max(1),
            &rest[2..],
        )
    } else if mode & 8 != 0 {
        (rest.len() as u64, rest)
    } else {
        let op = delta_format::Op::Literal {
            len: rest.len() as u64,
        };
        literal = delta_format::stream::encode(&[op], &[], rest);
        (literal.len() as u64, &literal[..])
    };
    let stream;
    let lzma_data = if hostile {
        body
    } else {
        let Some(filter) = BranchFilter::from_byte(filter_byte) else {
            return;
        };
        if body.is_empty() {
            return;
        }
        let Ok(made) = delta_core::internal::compress_lzma(body, filter) else {
            return;
        };
        stream = made;
        &stream[..]
    };
    // What the stream's ops make, when it is one: the expected output.
    let plain = if hostile { None } else { plain_output(body) };
    let (new_len, expected) = match &plain {
        Some((_, out)) => (out.len() as u64, out.clone()),
        None => (64, vec![0; 64]),
    };
    let mut payload = vec![kind::LZMA, filter_byte];
    let mut varint = Vec::new();
    delta_format::varint::put(&mut varint, ops_len);
    payload.extend_from_slice(&varint);
    payload.extend_from_slice(lzma_data);
    let mut segment = SegmentEntry {
        new_len,
        payload_len: payload.len() as u64,
        stream_len: kind::lzma_stream_len(ops_len),
        payload_digest: *blake3::hash(&payload).as_bytes(),
        output_digest: *blake3::hash(&expected).as_bytes(),
        literal_len: new_len,
        ..SegmentEntry::default()
    };
    if let Some((counts, _)) = &plain {
        segment.copy_len = counts.copy;
        segment.zero_len = counts.zero;
        segment.diff_len = counts.diff;
        segment.literal_len = counts.literal;
    }
    let flags = delta_format::FLAG_SEGMENT_KINDS | delta_format::FLAG_LZMA;
    let delta = one_segment_delta(flags, &segment, &payload, &expected);
    let limits = Limits {
        max_memory: 256 << 20,
        ..tight_limits()
    };
    match apply_slice(OLD, &delta, &limits) {
        Ok(out) => assert_eq!(out, expected, "lzma segment output"),
        Err(err) => assert!(plain.is_none(), "a valid LZMA segment was refused: {err}"),
    }
}

/// A delta over [`OLD`] with `flags` and one segment, `segment` with
/// `payload`, that makes `expected`.
fn one_segment_delta(
    flags: u32,
    segment: &SegmentEntry,
    payload: &[u8],
    expected: &[u8],
) -> Vec<u8> {
    let header = Header {
        flags,
        old_len: OLD.len() as u64,
        new_len: segment.new_len,
        old_digest: *blake3::hash(OLD).as_bytes(),
        new_digest: *blake3::hash(expected).as_bytes(),
        max_segment_len: segment.new_len,
        apply_memory: segment.memory(),
        segment_count: 1,
        ..Header::default()
    };
    let mut delta = Index::encode(&header, std::slice::from_ref(segment));
    delta.extend_from_slice(payload);
    delta
}

/// What op stream `ops` makes when applied as a plain segment against
/// [`OLD`] (with its op counts), or `None` when it is not a valid stream.
fn plain_output(ops: &[u8]) -> Option<(delta_format::Totals, Vec<u8>)> {
    let mut decoder = Decoder::new(ops, OLD.len() as u64).ok()?;
    while decoder.next_instruction().ok()?.is_some() {}
    let totals = decoder.finish().ok()?;
    let out_len = [totals.copy, totals.zero, totals.diff, totals.literal]
        .into_iter()
        .try_fold(0u64, u64::checked_add)?;
    if out_len == 0 || out_len > 1 << 20 {
        return None;
    }
    let mut payload = vec![delta_format::kind::PLAIN];
    payload.extend_from_slice(&compress(ops, &[])?);
    let segment = SegmentEntry {
        new_len: out_len,
        payload_len: payload.len() as u64,
        stream_len: ops.len() as u64,
        copy_len: totals.copy,
        zero_len: totals.zero,
        diff_len: totals.diff,
        literal_len: totals.literal,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        ..SegmentEntry::default()
    };
    let seg = delta_core::SegmentRef {
        index: 0,
        new_offset: 0,
        payload_offset: 0,
        entry: &segment,
        new_limit: 0,
        window_list: false,
        kinds: true,
        allowed: Default::default(),
    };
    let mut out = Vec::new();
    // The output digest is not known yet: the patcher's digest check is
    // the only error expected from a valid stream.
    match delta_core::Patcher::new().apply_segment(OLD, seg, &payload, &mut out) {
        Ok(_) | Err(SegmentError::Segment(delta_core::Error::OutputDigest { .. }))
            if out.len() as u64 == out_len =>
        {
            Some((totals, out))
        }
        _ => None,
    }
}

/// Old files of [`exec_segment`]: two builds' first build of small
/// programs (see `testdata/elf`), for x86-64, AArch64 and ARM Thumb-2.
const EXEC_OLD: [&[u8]; 3] = [
    include_bytes!("../../testdata/elf/out/x86_64/libtally.so-a-stripped"),
    include_bytes!("../../testdata/elf/out/aarch64/calc-a-stripped"),
    include_bytes!("../../testdata/elf/out/armhf/tally-a-stripped"),
];

/// `exec_segment`: the ELF reader, the rewriting of references, and
/// executable segments (kind 4, see `delta_format::exec`):
///
/// ```text
/// u8 mode   bits 0..2: the old file: one of EXEC_OLD (0..=2), or the rest
///           of the input (3); bit 2: the rest is a hostile payload body
///           (after its kind byte), applied to the old file; else the new
///           file is the old one with the rest written over it at the
///           offset its first two bytes give (little-endian, modulo the
///           length), and bit 3 turns the projection off
/// rest      the payload body, or offset and bytes
/// ```
///
/// Any bytes go through the ELF reader and every architecture's rewriting
/// (masked, and projected by a map made of the input): nothing may panic.
/// A segment the generator makes must rebuild the new file exactly; a
/// hostile one must be refused or make what its entry says, within the
/// memory its entry states.
pub fn exec_segment(data: &[u8]) {
    use delta_format::exec::{exec_stream_len, Exec};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let points: Vec<(u64, i64)> = rest
        .chunks_exact(4)
        .take(16)
        .scan(0u64, |at, c| {
            *at += u64::from(u16::from_le_bytes([c[0], c[1]])) + 1;
            Some((*at, i64::from(i16::from_le_bytes([c[2], c[3]]))))
        })
        .collect();
    for arch in 0..4 {
        let mut file = rest.to_vec();
        delta_core::internal::exec_rewrite(arch, &mut file, None);
        delta_core::internal::exec_rewrite(arch, &mut file, Some(&points));
    }
    let old = match mode & 3 {
        3 => rest,
        i => EXEC_OLD[usize::from(i)],
    };
    if mode & 4 != 0 {
        let Ok(parts) = Exec::parse(rest, 0, old.len() as u64) else {
            return;
        };
        // The table's check: a segment's memory within the applier's limit.
        let file_len = parts.old_len();
        if file_len > delta_core::DEFAULT_MAX_MEMORY || parts.ops_len > 1 << 20 {
            return;
        }
        let mut payload = vec![delta_format::kind::EXEC];
        payload.extend_from_slice(rest);
        let entry = SegmentEntry {
            new_len: parts.ops_len,
            payload_len: payload.len() as u64,
            stream_len: exec_stream_len(parts.ops_len, parts.shifts.len() as u64),
            ref_len: file_len,
            payload_digest: *blake3::hash(&payload).as_bytes(),
            ..SegmentEntry::default()
        };
        let _ = apply_exec(old, &entry, &payload);
        return;
    }
    let Some((offset, bytes)) = rest.split_at_checked(2) else {
        return;
    };
    let mut new = old.to_vec();
    if !new.is_empty() {
        let at = usize::from(u16::from_le_bytes([offset[0], offset[1]])) % new.len();
        let end = (at + bytes.len()).min(new.len());
        new[at..end].copy_from_slice(&bytes[..end - at]);
        new.extend_from_slice(&bytes[end - at..]);
    } else {
        new.extend_from_slice(bytes);
    }
    if new.is_empty() {
        return;
    }
    let made = delta_core::internal::exec_file_segment(old, &new, mode & 8 == 0)
        .expect("encoding an executable segment");
    let Some((entry, payload)) = made else {
        return;
    };
    let out = apply_exec(old, &entry, &payload).expect("a generated segment applies");
    assert!(out == new, "an executable segment rebuilt other bytes");
}

/// Applies the executable segment `entry` with `payload` to `old`.
fn apply_exec(old: &[u8], entry: &SegmentEntry, payload: &[u8]) -> Result<Vec<u8>, String> {
    delta_core::internal::apply_one_segment(old, entry, payload).map_err(|e| e.to_string())
}
