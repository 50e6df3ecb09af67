//! Unit tests of the header and segment table codec (`header.rs`).

use super::*;

fn sample() -> (Header, Vec<SegmentEntry>) {
    let seg = SegmentEntry {
        new_len: 100,
        payload_len: 20,
        stream_len: 30,
        ref_offset: 5,
        ref_len: 10,
        copy_len: 60,
        zero_len: 10,
        diff_len: 20,
        literal_len: 10,
        payload_digest: [1; 32],
        output_digest: [2; 32],
    };
    let header = Header {
        flags: 0,
        old_len: 1000,
        new_len: 200,
        old_digest: [3; 32],
        new_digest: [4; 32],
        block_size: 4096,
        zstd_level: 19,
        max_segment_len: 100,
        apply_memory: 60,
        segment_count: 2,
    };
    (header, vec![seg.clone(), seg])
}

fn decode_all(bytes: &[u8]) -> Result<Index> {
    let limits = Limits::default();
    let header = Header::decode(bytes, &limits)?;
    Index::decode(header, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..], &limits)
}

#[test]
fn round_trips() {
    let (header, segments) = sample();
    let bytes = Index::encode(&header, &segments);
    let index = decode_all(&bytes).unwrap();
    assert_eq!(index.header, header);
    assert_eq!(index.segments, segments);
    assert_eq!(index.new_offsets, vec![0, 100]);
    let base = (HEADER_LEN + 2 * ENTRY_LEN + DIGEST_LEN) as u64;
    assert_eq!(index.payload_offsets, vec![base, base + 20]);
    assert_eq!(index.file_len, base + 40);
}

#[test]
fn every_flipped_byte_is_an_error() {
    let (header, segments) = sample();
    let bytes = Index::encode(&header, &segments);
    for i in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[i] ^= 0x10;
        assert!(decode_all(&damaged).is_err(), "flip at {i} accepted");
    }
}

#[test]
fn names_the_problem() {
    let (header, segments) = sample();
    let mut bytes = Index::encode(&header, &segments);
    bytes[8] = 9;
    assert_eq!(
        decode_all(&bytes).unwrap_err(),
        Error::UnsupportedVersion {
            found: 9,
            supported: VERSION
        }
    );
    assert!(matches!(decode_all(b"hello"), Err(Error::BadMagic { .. })));
    assert!(matches!(
        decode_all(&MAGIC[..5]),
        Err(Error::Truncated { .. })
    ));
    let bytes = Index::encode(&header, &segments);
    assert!(matches!(
        decode_all(&bytes[..bytes.len() - 1]),
        Err(Error::Truncated {
            what: "segment table",
            ..
        })
    ));
}

#[test]
fn rejects_inconsistent_tables() {
    let (header, mut segments) = sample();
    segments[1].new_len = 99;
    segments[1].literal_len = 9;
    let bytes = Index::encode(&header, &segments);
    let err = decode_all(&bytes).unwrap_err().to_string();
    assert!(err.contains("sum of segment new_len"), "{err}");

    let (header, mut segments) = sample();
    segments[0].ref_offset = 995;
    let err = decode_all(&Index::encode(&header, &segments))
        .unwrap_err()
        .to_string();
    assert!(err.contains("segment[0].ref_offset+ref_len"), "{err}");

    let (header, segments) = sample();
    let bytes = Index::encode(&header, &segments);
    let small = Limits {
        max_output: 199,
        ..Limits::default()
    };
    assert!(matches!(
        Header::decode(&bytes, &small),
        Err(Error::OverLimit {
            found: 200,
            limit: 199,
            ..
        })
    ));

    let (mut header, segments) = sample();
    header.apply_memory = 10 << 30;
    assert!(matches!(
        decode_all(&Index::encode(&header, &segments)),
        Err(Error::OverLimit { .. })
    ));
}

#[test]
fn total_reference_is_bounded_by_the_image_sizes() {
    // Many one-byte segments, each referencing the whole old image:
    // tiny on the wire, but the applier would read old_len bytes per
    // segment.
    let old_len = 20 << 20;
    let count = 24u64;
    let seg = SegmentEntry {
        new_len: 1,
        payload_len: 1,
        stream_len: 1,
        ref_offset: 0,
        ref_len: old_len,
        copy_len: 0,
        zero_len: 0,
        diff_len: 0,
        literal_len: 1,
        payload_digest: [1; 32],
        output_digest: [2; 32],
    };
    let header = |segment_count| Header {
        flags: 0,
        old_len,
        new_len: segment_count,
        old_digest: [3; 32],
        new_digest: [4; 32],
        block_size: 4096,
        zstd_level: 19,
        max_segment_len: 1,
        apply_memory: old_len + 2,
        segment_count,
    };
    let limit = max_reference_total(old_len, count);
    let fits = limit / old_len;
    assert!(fits < count, "the test needs more segments than fit");
    let ok = vec![seg.clone(); fits as usize];
    decode_all(&Index::encode(&header(fits), &ok)).unwrap();
    let over = vec![seg; count as usize];
    let err = decode_all(&Index::encode(&header(count), &over))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("sum of segment ref_len up to segment[{fits}]")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{limit} bytes of old image")),
        "{err}"
    );
}

#[test]
fn version_follows_the_segment_kinds_flag() {
    let (mut header, segments) = sample();
    assert_eq!(header.encode()[8], 2);
    header.flags |= FLAG_SEGMENT_KINDS;
    let bytes = Index::encode(&header, &segments);
    assert_eq!(bytes[8], 3);
    assert_eq!(decode_all(&bytes).unwrap().header, header);
    // A plain stream_len over 2*new_len+slack is the payload reader's to
    // refuse once kinds are on (deflate segments need more).
    let mut big = segments.clone();
    big[0].stream_len = 10_000;
    header.apply_memory = big[0].memory();
    assert!(decode_all(&Index::encode(&header, &big)).is_ok());
    // LZMA segments make it version 4.
    header.flags |= FLAG_LZMA;
    let bytes = Index::encode(&header, &big);
    assert_eq!(bytes[8], 4);
    assert_eq!(decode_all(&bytes).unwrap().header, header);
    // Chunked deflate segments make it version 5.
    header.flags |= FLAG_DEFLATE_CHUNKS;
    let bytes = Index::encode(&header, &big);
    assert_eq!(bytes[8], 5);
    assert_eq!(decode_all(&bytes).unwrap().header, header);
    // Any version with another's flags is refused.
    let kinds = FLAG_SEGMENT_KINDS;
    let lzma = FLAG_SEGMENT_KINDS | FLAG_LZMA;
    let chunks = FLAG_SEGMENT_KINDS | FLAG_DEFLATE_CHUNKS;
    for (flags, version) in [
        (0, 3u8),
        (kinds, 2),
        (kinds, 4),
        (lzma, 3),
        (0, 4),
        (lzma, 5),
        (chunks, 4),
    ] {
        let mut bytes = Index::encode(
            &Header {
                flags,
                ..header.clone()
            },
            &segments,
        );
        bytes[8] = version;
        let err = Header::decode(&bytes, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid version"), "{err}");
    }
    // The LZMA flag needs segment kinds.
    let mut bytes = Index::encode(
        &Header {
            flags: FLAG_LZMA,
            ..header.clone()
        },
        &segments,
    );
    bytes[8] = 4;
    let err = Header::decode(&bytes, &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("only with SEGMENT_KINDS"), "{err}");
    // So does the chunked deflate flag.
    let mut bytes = Index::encode(
        &Header {
            flags: FLAG_DEFLATE_CHUNKS,
            ..header.clone()
        },
        &segments,
    );
    bytes[8] = 5;
    let err = Header::decode(&bytes, &Limits::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("DEFLATE_CHUNKS (0x80) only with SEGMENT_KINDS"),
        "{err}"
    );
}
