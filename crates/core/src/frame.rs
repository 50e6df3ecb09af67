//! zstd frames, both ways: the generator's frames against a raw-content
//! prefix ([`compress`], [`compress_in_window`]) and the applier's checks and
//! one-shot decode ([`one_frame`], [`decode_frame`]). The bottom of the
//! crate: it knows neither plans nor segments' ops.

use crate::error::{Error, Result};

/// One zstd frame of `data`, with `reference` as raw-content prefix,
/// appended to `out`.
pub(crate) fn compress(data: &[u8], reference: &[u8], level: i32, out: Vec<u8>) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let parameters = [
        CParameter::CompressionLevel(level),
        CParameter::ChecksumFlag(false),
        CParameter::DictIdFlag(false),
        CParameter::ContentSizeFlag(true),
    ];
    compress_with(data, reference, &parameters, out)
}

/// [`compress`] within a window of `2^window_log` bytes, prefix included:
/// a decoder holds at most that much of the output (or all of it, if
/// smaller) however long `data` is.
pub(crate) fn compress_in_window(
    data: &[u8],
    reference: &[u8],
    level: i32,
    window_log: u8,
    out: Vec<u8>,
) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let parameters = [
        CParameter::CompressionLevel(level),
        CParameter::ChecksumFlag(false),
        CParameter::DictIdFlag(false),
        CParameter::ContentSizeFlag(true),
        CParameter::WindowLog(window_log.into()),
    ];
    compress_with(data, reference, &parameters, out)
}

/// [`compress`] with zstd `parameters`; without a `WindowLog` among them,
/// the window reaches back over the whole prefix.
pub(crate) fn compress_with(
    data: &[u8],
    reference: &[u8],
    parameters: &[zstd_safe::CParameter],
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let fail = |code| Error::Compress {
        reason: zstd_safe::get_error_name(code),
    };
    let mut cctx = zstd_safe::CCtx::create();
    for &parameter in parameters {
        cctx.set_parameter(parameter).map_err(fail)?;
    }
    let window_set = (parameters.iter()).any(|p| matches!(p, CParameter::WindowLog(_)));
    if !reference.is_empty() && !window_set {
        // The window must reach back over the whole prefix.
        let span = (reference.len() + data.len()) as u64;
        let window_log = (64 - span.saturating_sub(1).leading_zeros()).clamp(10, 30);
        cctx.set_parameter(CParameter::WindowLog(window_log))
            .map_err(fail)?;
    }
    if !reference.is_empty() {
        cctx.ref_prefix(reference).map_err(fail)?;
    }
    out.reserve(zstd_safe::compress_bound(data.len()));
    // A Vec is written from its start; a cursor appends after `out`.
    let mut cursor = std::io::Cursor::new(out);
    cursor.set_position(cursor.get_ref().len() as u64);
    cctx.compress2(&mut cursor, data).map_err(fail)?;
    Ok(cursor.into_inner())
}

/// Checks that `frame` is exactly one zstd frame, with no bytes after it,
/// and returns the content size its header declares, if any.
pub(crate) fn one_frame(segment: u64, frame: &[u8]) -> Result<Option<u64>> {
    let frame_len =
        zstd_safe::find_frame_compressed_size(frame).map_err(|code| Error::Decompress {
            segment,
            reason: zstd_safe::get_error_name(code),
        })?;
    if frame_len != frame.len() {
        return Err(Error::Decompress {
            segment,
            reason: "payload holds bytes after its zstd frame",
        });
    }
    Ok(zstd_safe::get_frame_content_size(frame).ok().flatten())
}

/// Decodes the one zstd `frame` of a segment against `prefix` into `out`,
/// which it must fill exactly.
pub(crate) fn decode_frame(
    segment: u64,
    frame: &[u8],
    prefix: &[u8],
    out: &mut [u8],
) -> Result<()> {
    let bad_frame = |code| Error::Decompress {
        segment,
        reason: zstd_safe::get_error_name(code),
    };
    // A frame that says it holds more than the table's stream_len is
    // refused before it is decoded; one that does not say and still
    // overflows the buffer fails the decode below.
    if let Some(declared) = one_frame(segment, frame)? {
        if declared > out.len() as u64 {
            return Err(Error::StreamLength {
                segment,
                stated: out.len() as u64,
                found: declared,
            });
        }
    }
    let mut dctx = zstd_safe::DCtx::create();
    if !prefix.is_empty() {
        dctx.ref_prefix(prefix).map_err(bad_frame)?;
    }
    let found = dctx.decompress(out, frame).map_err(bad_frame)? as u64;
    if found != out.len() as u64 {
        return Err(Error::StreamLength {
            segment,
            stated: out.len() as u64,
            found,
        });
    }
    Ok(())
}
