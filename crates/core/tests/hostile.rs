//! Hostile segments: ops that write past the segment, frames that expand
//! past their declared size, reads outside the old image. Each must fail
//! with an error naming the segment, never panic or over-allocate.

use delta_core::{Error, Patcher, SegmentRef};
use delta_format::{stream, Op, SegmentEntry};

/// A table entry and payload for `stream`, as a hostile generator would
/// write them (digests right, claims wrong).
fn segment(stream: &[u8], entry: SegmentEntry) -> (SegmentEntry, Vec<u8>) {
    let payload = zstd::bulk::compress(stream, 3).unwrap();
    let entry = SegmentEntry {
        payload_len: payload.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        ..entry
    };
    (entry, payload)
}

fn apply(old: &[u8], entry: &SegmentEntry, payload: &[u8]) -> Result<Vec<u8>, Error> {
    apply_as(old, entry, payload, false)
}

fn apply_as(
    old: &[u8],
    entry: &SegmentEntry,
    payload: &[u8],
    window_list: bool,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let seg = SegmentRef {
        index: 3,
        new_offset: 1000,
        payload_offset: 500,
        entry,
        new_limit: 0,
        window_list,
        kinds: false,
        allowed: Default::default(),
    };
    Patcher::new().apply_segment(old, seg, payload, &mut out)?;
    Ok(out)
}

#[test]
fn op_writing_past_the_segment_is_cut_off() {
    let stream = stream::encode(&[Op::Zero { len: 1 << 40 }], &[], &[]);
    let (entry, payload) = segment(
        &stream,
        SegmentEntry {
            new_len: 50,
            stream_len: stream.len() as u64,
            zero_len: 50,
            ..SegmentEntry::default()
        },
    );
    let err = apply(&[], &entry, &payload).unwrap_err().to_string();
    assert!(
        err.contains("segment 3") && err.contains("bytes produced by ops vs new_len"),
        "{err}"
    );
}

#[test]
fn frame_expanding_past_stream_len_is_cut_off() {
    // 64 MiB of zeros compress to a few KiB: a bomb if trusted.
    let stream = vec![0u8; 64 << 20];
    let (entry, payload) = segment(
        &stream,
        SegmentEntry {
            new_len: 100,
            stream_len: 200,
            literal_len: 100,
            ..SegmentEntry::default()
        },
    );
    let err = apply(&[], &entry, &payload).unwrap_err();
    assert!(
        matches!(
            err,
            Error::StreamLength {
                segment: 3,
                stated: 200,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn frame_without_a_content_size_expanding_past_stream_len_is_a_frame_error() {
    let stream = vec![0u8; 1 << 20];
    let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
    compressor.include_contentsize(false).unwrap();
    let payload = compressor.compress(&stream).unwrap();
    let entry = SegmentEntry {
        new_len: 100,
        stream_len: 200,
        literal_len: 100,
        payload_len: payload.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        ..SegmentEntry::default()
    };
    let err = apply(&[], &entry, &payload).unwrap_err();
    assert!(matches!(err, Error::Decompress { segment: 3, .. }), "{err}");
}

/// The error of a segment made of one 20-byte copy op, applied to a
/// 100-byte old image.
fn copy_error(op: Op) -> String {
    let stream = stream::encode(&[op], &[], &[]);
    let (entry, payload) = segment(
        &stream,
        SegmentEntry {
            new_len: 20,
            stream_len: stream.len() as u64,
            copy_len: 20,
            ..SegmentEntry::default()
        },
    );
    apply(&[7u8; 100], &entry, &payload)
        .unwrap_err()
        .to_string()
}

#[test]
fn copy_outside_the_old_image_is_refused() {
    let err = copy_error(Op::Copy { src: 90, len: 20 });
    assert!(
        err.contains("segment 3") && err.contains("old offset 90"),
        "{err}"
    );
}

#[test]
fn copy_of_the_new_image_without_its_flag_is_refused() {
    let err = copy_error(Op::CopyNew { src: 10, len: 20 });
    assert!(
        err.contains("segment 3")
            && err.contains("new offset 10")
            && err.contains("only the 0 bytes"),
        "{err}"
    );
}

#[test]
fn totals_that_disagree_with_the_entry_are_refused() {
    let stream = stream::encode(&[Op::Zero { len: 10 }, Op::Literal { len: 2 }], &[], b"hi");
    let (mut entry, payload) = segment(
        &stream,
        SegmentEntry {
            new_len: 12,
            stream_len: stream.len() as u64,
            zero_len: 12,
            ..SegmentEntry::default()
        },
    );
    entry.output_digest = *blake3::hash(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']).as_bytes();
    let err = apply(&[], &entry, &payload).unwrap_err().to_string();
    assert!(err.contains("zero_len"), "{err}");
}

#[test]
fn trailing_bytes_after_the_frame_are_refused() {
    let stream = stream::encode(&[Op::Zero { len: 4 }], &[], &[]);
    let mut payload = zstd::bulk::compress(&stream, 3).unwrap();
    payload.extend_from_slice(&zstd::bulk::compress(&stream, 3).unwrap());
    let entry = SegmentEntry {
        new_len: 4,
        stream_len: stream.len() as u64,
        zero_len: 4,
        payload_len: payload.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        ..SegmentEntry::default()
    };
    let err = apply(&[], &entry, &payload).unwrap_err().to_string();
    assert!(err.contains("after its zstd frame"), "{err}");
}

#[test]
fn claimed_output_over_the_limit_is_refused_before_any_work() {
    // A valid full payload of 8 GiB of zeros: a few hundred bytes.
    let stream = stream::encode(&[Op::Zero { len: 8 << 30 }], &[], &[]);
    let (entry, payload) = segment(
        &stream,
        SegmentEntry {
            new_len: 8 << 30,
            stream_len: stream.len() as u64,
            zero_len: 8 << 30,
            ..SegmentEntry::default()
        },
    );
    let header = delta_format::Header {
        flags: delta_format::FLAG_FULL,
        old_len: 0,
        new_len: 8 << 30,
        old_digest: *blake3::hash(&[]).as_bytes(),
        new_digest: [0; 32],
        block_size: 4096,
        zstd_level: 3,
        max_segment_len: 8 << 30,
        apply_memory: entry.memory(),
        segment_count: 1,
    };
    let mut delta = delta_format::Index::encode(&header, &[entry]);
    delta.extend_from_slice(&payload);
    let limits = delta_format::Limits {
        max_output: 1 << 20,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = delta_core::apply_slice(&[], &delta, &limits)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("new_len") && err.contains("over the limit"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "refused only after doing the work"
    );
}

#[test]
fn window_lists_past_the_old_image_or_its_ref_len_are_refused() {
    let old = vec![7u8; 100];
    let stream = stream::encode(&[Op::Literal { len: 4 }], &[], b"abcd");
    let frame = zstd::bulk::compress(&stream, 3).unwrap();
    // (start, end) of each range, ref_len, the error.
    type Case = (&'static [(u64, u64)], u64, &'static str);
    let cases: [Case; 3] = [
        (
            &[(90, 110)],
            20,
            "window range #0 end: 110, expected at most old_len (100)",
        ),
        (
            &[(0, 10), (20, 30)],
            10,
            "window range #1 lengths: 20, expected 10",
        ),
        (&[(0, 10)], 20, "window range #1 lengths: 10, expected 20"),
    ];
    for (ranges, ref_len, want) in cases {
        let ranges: Vec<_> = ranges.iter().map(|&(start, end)| start..end).collect();
        let mut payload = Vec::new();
        delta_format::window::encode(&ranges, 0, &mut payload);
        payload.extend_from_slice(&frame);
        let entry = SegmentEntry {
            new_len: 4,
            stream_len: stream.len() as u64,
            literal_len: 4,
            ref_len,
            payload_len: payload.len() as u64,
            payload_digest: *blake3::hash(&payload).as_bytes(),
            ..SegmentEntry::default()
        };
        let err = apply_as(&old, &entry, &payload, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("segment 3") && err.contains(want),
            "{ranges:?}: {err}"
        );
    }
}

/// A whole (version 3) deflate segment whose content or stream is over
/// what any generator makes is refused before anything is decoded: the
/// re-deflater's memory grows with them (8 MiB of text took the applier to
/// 36.7 MiB). Chunked segments hold a chunk at a time.
#[test]
fn deflate_content_over_the_limit_is_refused_before_decoding() {
    use delta_format::kind::Deflate;
    let text = vec![b'a'; 3 << 20];
    let frame = zstd::bulk::compress(&text, 3).unwrap();
    let parts = Deflate {
        sources: Vec::new(),
        new_raw_len: text.len() as u64,
        head: b"",
        tail: b"",
        rebuild: delta_format::kind::Rebuild::Whole(b"not read"),
        frame: &frame,
    };
    let mut payload = Vec::new();
    parts.encode(&mut payload);
    let entry = parts.entry(&payload, 64 << 10, [0; 32]);
    let mut out = Vec::new();
    let seg = SegmentRef {
        index: 3,
        new_offset: 0,
        payload_offset: 500,
        entry: &entry,
        new_limit: 0,
        window_list: false,
        kinds: true,
        allowed: Default::default(),
    };
    let err = Patcher::new()
        .apply_segment(&[][..], seg, &payload, &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("segment[3].new_raw_len"), "{err}");
    assert!(out.is_empty());
}
