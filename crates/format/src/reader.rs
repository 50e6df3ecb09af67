//! The one reader of delta files: header and table from the start of any
//! byte stream.
//!
//! Every consumer (the applier, `delta info`, the in-memory applier, the
//! fuzz targets) reads a delta's start through [`read_index`], so there is
//! one path to get right and to fuzz. It needs only [`std::io::Read`]: a
//! file, a slice or a pipe (nothing is sought, so streaming apply and
//! signatures, which follow the table, slot in after it). Two bounded reads:
//! the 128-byte header, then the table whose length the header states and
//! the caller's [`Limits`] bound, never more.

use crate::{Error, Header, Index, Limits, Result, HEADER_LEN};
use std::io::Read;

/// Reads and checks the header and segment table at the start of
/// `stream`, leaving it positioned at the first payload.
///
/// # Errors
/// The stream ending early ([`Error::Truncated`]), failing
/// ([`Error::Read`]), or bytes that break a rule of `FORMAT.md` or exceed
/// `limits`.
pub fn read_index(stream: &mut impl Read, limits: &Limits) -> Result<Index> {
    let head = read_up_to(stream, HEADER_LEN as u64, 0)?;
    let header = Header::decode(&head, limits)?;
    let table_len = header.table_len(limits)?;
    let table = read_up_to(stream, table_len, HEADER_LEN as u64)?;
    let signed = header.is_signed();
    let mut index = Index::decode(header, &head, &table, limits)?;
    if signed {
        let at = index.table_end();
        let count = read_up_to(stream, 4, at)?;
        let len = crate::signature::block_len(&count, at)?;
        let rest = read_up_to(stream, len - 4, at + 4)?;
        index.attach_signatures(&[count, rest].concat())?;
    }
    Ok(index)
}

/// Reads `len` bytes, or fewer where the stream ends (the decoders then
/// report what was truncated). `len` is bounded by the caller's limits.
fn read_up_to(stream: &mut impl Read, len: u64, offset: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stream
        .take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Read {
            offset: offset + bytes.len() as u64,
            message: e.to_string(),
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentEntry;

    fn sample() -> Vec<u8> {
        let seg = SegmentEntry {
            new_len: 100,
            payload_len: 3,
            stream_len: 30,
            literal_len: 100,
            ..SegmentEntry::default()
        };
        let header = Header {
            flags: crate::FLAG_FULL,
            old_len: 0,
            new_len: 100,
            old_digest: [0; 32],
            new_digest: [4; 32],
            block_size: 4096,
            zstd_level: 19,
            max_segment_len: 100,
            apply_memory: 33,
            segment_count: 1,
        };
        let mut bytes = Index::encode(&header, &[seg]);
        bytes.extend_from_slice(b"abc");
        bytes
    }

    /// A reader that hands out one byte per call, as a pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some((&first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            match buf.first_mut() {
                Some(b) => {
                    *b = first;
                    self.0 = rest;
                    Ok(1)
                }
                None => Ok(0),
            }
        }
    }

    #[test]
    fn reads_exactly_header_and_table_from_any_stream() {
        let bytes = sample();
        let mut slice = &bytes[..];
        let index = read_index(&mut slice, &Limits::default()).unwrap();
        assert_eq!(slice, b"abc", "left at the first payload");
        assert_eq!(index.file_len, bytes.len() as u64);
        let mut trickle = Trickle(&bytes);
        let same = read_index(&mut trickle, &Limits::default()).unwrap();
        assert_eq!(same.segments, index.segments);
        assert_eq!(trickle.0, b"abc");
    }

    #[test]
    fn a_signature_block_is_read_and_payloads_start_after_it() {
        let unsigned = sample();
        let mut header = read_index(&mut &unsigned[..], &Limits::default())
            .unwrap()
            .header;
        header.flags |= crate::FLAG_SIGNED;
        let segments = read_index(&mut &unsigned[..], &Limits::default())
            .unwrap()
            .segments;
        let sigs = [crate::signature::Signature {
            key_id: [9; 8],
            signature: [8; 64],
        }];
        let mut bytes = Index::encode(&header, &segments);
        bytes.extend_from_slice(&crate::signature::encode_block(&sigs));
        bytes.extend_from_slice(b"abc");
        let mut rest = &bytes[..];
        let index = read_index(&mut rest, &Limits::default()).unwrap();
        assert_eq!(rest, b"abc");
        assert_eq!(index.signatures, sigs);
        assert_eq!(index.file_len, bytes.len() as u64);
        assert_eq!(index.payload_offsets[0], bytes.len() as u64 - 3);
        // The block cut short.
        let cut = &bytes[..bytes.len() - 3 - 10];
        let err = read_index(&mut &cut[..], &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("signature block"), "{err}");
    }

    #[test]
    fn short_streams_name_what_is_truncated() {
        let bytes = sample();
        let err = read_index(&mut &bytes[..100], &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    what: "header",
                    need: 128,
                    have: 100,
                    ..
                }
            ),
            "{err}"
        );
        let err = read_index(&mut &bytes[..200], &Limits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated {
                    what: "segment table",
                    offset: 128,
                    have: 72,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn failing_streams_say_where() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("cable cut"))
            }
        }
        let err = read_index(&mut Broken, &Limits::default()).unwrap_err();
        assert_eq!(err.to_string(), "read failed at offset 0: cable cut");
    }
}
