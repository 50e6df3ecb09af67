//! Turning a segment plan (ops plus data) into a payload and table entry.

use crate::error::{Error, Result};
use delta_format::{stream, Op, SegmentEntry};
use std::ops::Range;

/// What one segment should contain, before compression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentPlan {
    /// Ops in order; their lengths add up to the segment's length.
    pub ops: Vec<Op>,
    /// Bytes consumed by the diff ops, in order.
    pub diff: Vec<u8>,
    /// Bytes consumed by the literal ops, in order.
    pub literal: Vec<u8>,
    /// Old-image range given to zstd as reference prefix (empty: none).
    pub reference: std::ops::Range<u64>,
}

impl SegmentPlan {
    /// Bytes of new image the plan produces.
    pub fn new_len(&self) -> u64 {
        self.ops.iter().map(Op::len).sum()
    }
}

/// Most bytes of new image one merged segment may produce.
pub const MAX_MERGED_LEN: usize = 256 << 20;
/// Most stream bytes (ops, diff and literal bytes) of one merged segment.
const MAX_MERGED_STREAM: usize = 1 << 20;
/// Most literal bytes of one merged segment.
const MAX_MERGED_LITERAL: usize = 64 << 10;

/// Joins neighbouring plans that carry little data (zero runs, copies,
/// sparse diffs, small literals) into one segment, up to
/// `max_len` bytes of new image (default [`MAX_MERGED_LEN`]). Every segment costs a table entry
/// (136 bytes) and a zstd frame, which dominates the deltas of sparse or
/// nearly identical images; applier memory is set by streams, not by
/// `new_len`, so merged segments cost a device nothing. A merged segment
/// keeps the reference window of the part with the most literal bytes.
pub fn merge_plans(
    units: Vec<(Range<usize>, SegmentPlan)>,
    max_len: usize,
) -> Vec<(Range<usize>, SegmentPlan)> {
    let weight = |plan: &SegmentPlan| plan.ops.len() * 12 + plan.diff.len() + plan.literal.len();
    let mut out: Vec<(Range<usize>, SegmentPlan)> = Vec::with_capacity(units.len());
    for (range, plan) in units {
        if let Some((last_range, last)) = out.last_mut() {
            if last_range.end == range.start
                && range.end - last_range.start <= max_len
                && weight(last) + weight(&plan) <= MAX_MERGED_STREAM
                && last.literal.len() + plan.literal.len() <= MAX_MERGED_LITERAL
            {
                if plan.literal.len() > last.literal.len() {
                    last.reference = plan.reference;
                }
                last_range.end = range.end;
                last.ops.extend(plan.ops);
                last.diff.extend(plan.diff);
                last.literal.extend(plan.literal);
                continue;
            }
        }
        out.push((range, plan));
    }
    out
}

/// Compression settings for payloads.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level (1..=22).
    pub level: i32,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { level: 19 }
    }
}

/// Compresses `plan` into one zstd frame and builds its table entry.
///
/// `old` is the whole old image (the reference prefix is taken from it) and
/// `produced` the bytes the plan produces, whose digest goes in the entry.
///
/// # Errors
/// [`Error::Compress`] when zstd fails (out of memory).
pub fn encode_segment(
    old: &[u8],
    produced: &[u8],
    plan: &SegmentPlan,
    options: &EncodeOptions,
) -> Result<(SegmentEntry, Vec<u8>)> {
    let mut stream = stream::encode(&plan.ops, &plan.diff, &plan.literal);
    let fallback;
    let mut plan = plan;
    let bound = (produced.len() as u64)
        .saturating_mul(2)
        .saturating_add(delta_format::STREAM_SLACK);
    if stream.len() as u64 > bound {
        // Too many tiny ops for the format's bound: send the bytes as one
        // literal instead (never larger than the bound).
        fallback = SegmentPlan {
            ops: vec![Op::Literal {
                len: produced.len() as u64,
            }],
            literal: produced.to_vec(),
            ..SegmentPlan::default()
        };
        plan = &fallback;
        stream = stream::encode(&plan.ops, &plan.diff, &plan.literal);
    }
    let reference = usize::try_from(plan.reference.start)
        .ok()
        .zip(usize::try_from(plan.reference.end).ok())
        .and_then(|(start, end)| old.get(start..end))
        .unwrap_or(&[]);
    let payload = compress(&stream, reference, options.level)?;

    let mut entry = SegmentEntry {
        new_len: produced.len() as u64,
        payload_len: payload.len() as u64,
        stream_len: stream.len() as u64,
        ref_offset: if reference.is_empty() {
            0
        } else {
            plan.reference.start
        },
        ref_len: reference.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        output_digest: *blake3::hash(produced).as_bytes(),
        ..SegmentEntry::default()
    };
    for op in &plan.ops {
        let slot = match op {
            Op::Copy { .. } => &mut entry.copy_len,
            Op::Zero { .. } => &mut entry.zero_len,
            Op::Diff { .. } => &mut entry.diff_len,
            Op::Literal { .. } => &mut entry.literal_len,
        };
        *slot += op.len();
    }
    Ok((entry, payload))
}

/// One zstd frame of `data`, with `reference` as raw-content prefix.
fn compress(data: &[u8], reference: &[u8], level: i32) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let fail = |code| Error::Compress {
        reason: zstd_safe::get_error_name(code),
    };
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(CParameter::CompressionLevel(level))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::DictIdFlag(false))
        .map_err(fail)?;
    cctx.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(fail)?;
    if !reference.is_empty() {
        // The window must reach back over the whole prefix.
        let span = (reference.len() + data.len()) as u64;
        let window_log = (64 - span.saturating_sub(1).leading_zeros()).clamp(10, 30);
        cctx.set_parameter(CParameter::WindowLog(window_log))
            .map_err(fail)?;
        cctx.ref_prefix(reference).map_err(fail)?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    cctx.compress2(&mut out, data).map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Patcher, SegmentRef};

    #[test]
    fn plans_over_the_stream_bound_fall_back_to_one_literal() {
        let produced: Vec<u8> = (0..10_000u32)
            .map(|i| if i % 2 == 0 { 7 } else { 0 })
            .collect();
        let ops: Vec<Op> = (0..10_000)
            .map(|i| {
                if i % 2 == 0 {
                    Op::Literal { len: 1 }
                } else {
                    Op::Zero { len: 1 }
                }
            })
            .collect();
        let plan = SegmentPlan {
            ops,
            literal: vec![7; 5000],
            ..SegmentPlan::default()
        };
        let (entry, payload) =
            encode_segment(&[], &produced, &plan, &EncodeOptions { level: 1 }).unwrap();
        assert!(entry.stream_len <= 2 * 10_000 + delta_format::STREAM_SLACK);
        assert_eq!(entry.literal_len, 10_000);
        let mut out = Vec::new();
        let seg = SegmentRef {
            index: 0,
            new_offset: 0,
            payload_offset: 0,
            entry: &entry,
        };
        Patcher::new()
            .apply_segment(&[][..], seg, &payload, &mut out)
            .unwrap();
        assert_eq!(out, produced);
    }
}
