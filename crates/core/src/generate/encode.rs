//! Turning a segment plan (ops plus data) into a payload and table entry.

use crate::error::Result;
use crate::generate::plan::SegmentPlan;
use crate::generate::window::{CopiedRuns, WindowLayout};
use delta_format::kind::{self, BranchFilter};
use delta_format::{stream, Digest, Op, SegmentEntry};
use std::borrow::Cow;
use std::ops::Range;

/// Compression settings for payloads.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level (1..=22); random-looking streams get at most 3.
    pub level: i32,
    /// Most memory a segment may need to apply (payload, stream and
    /// window at once): a window that would take a segment past it is cut.
    pub max_memory: u64,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            level: 19,
            max_memory: crate::segment::SEGMENT_MEMORY,
        }
    }
}

/// Largest stream compressed once per alternative window: small segments
/// (a few edits) gain most from the right window, and cost little to try.
const TRIAL_STREAM: usize = 64 << 10;

/// What a segment produces: the new bytes and their BLAKE3 digest, which
/// goes in its entry (the generator hashes long segments on several
/// threads).
#[derive(Debug, Clone, Copy)]
pub struct Produced<'a> {
    /// The new bytes.
    pub bytes: &'a [u8],
    /// Their BLAKE3 digest.
    pub digest: Digest,
}

/// A segment encoded by [`encode_segment`].
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Its table entry.
    pub entry: SegmentEntry,
    /// Its payload, without the kind byte.
    pub payload: Vec<u8>,
    /// Its kind: [`kind::PLAIN`] or [`kind::LZMA`].
    pub kind: u8,
}

/// Compresses `plan` into one zstd frame and builds its table entry; a
/// small stream is compressed with each of the plan's alternative windows
/// too, and the smallest frame kept. With `lzma`, a stream of mostly
/// literal bytes is also compressed as an LZMA segment with that branch
/// filter (see [`crate::lzma`]), and kept when smaller.
///
/// `old` is the whole old image (the reference window is taken from it,
/// laid out as `layout` says: with [`WindowLayout::Gathered`] the payload
/// starts with a window list, format flag `WINDOW_LIST`), `produced` what
/// the plan produces.
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails (out of
/// memory).
pub fn encode_segment(
    old: &[u8],
    produced: Produced<'_>,
    plan: &SegmentPlan,
    layout: WindowLayout<'_>,
    options: &EncodeOptions,
    lzma: Option<BranchFilter>,
) -> Result<Encoded> {
    let Produced {
        bytes: produced,
        digest: output_digest,
    } = produced;
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
    // The slow parser of high levels finds nothing in random bytes (data
    // that was compressed or encrypted before, which our matcher did not
    // find in the old image either): spare it.
    let random = looks_random(&stream);
    let level = if random {
        options.level.min(RANDOM_STREAM_LEVEL)
    } else {
        options.level
    };
    let keep_all = CopiedRuns::default();
    let mut best = Window::new(old, &plan.reference, layout);
    let mut best_span = (plan.reference.clone(), layout);
    // Literal bytes are most of the stream (merged segments also copy and
    // zero long runs, which cost the stream little): new executables,
    // which LZMA2 after a branch filter codes smaller than zstd.
    let mostly_literal = plan.literal.len() * 2 >= stream.len();
    let size_fits = (LZMA_MIN as u64..=kind::MAX_LZMA_STREAM).contains(&(stream.len() as u64));
    let mut lzma = lzma.filter(|_| mostly_literal && !random && size_fits);
    // The LZMA payload, once made.
    let mut lzma_made = None;
    if let Some(filter) = lzma.filter(|_| stream.len() >= LZMA_PROBED) {
        // Each way costs seconds on such a stream (both about 2 MB/s): a
        // quick probe of the window decides which to try.
        let probed = best.probe(&stream)?;
        let gain = probed.gain();
        if gain >= WINDOW_MATTERS {
            lzma = None;
        } else {
            let body = lzma_body(&stream, filter)?;
            let fits = lzma_memory(&stream, &body) <= options.max_memory;
            // Under WINDOW_USELESS LZMA2 alone is tried; in between, zstd
            // too, unless LZMA2 is already well under the window's probe.
            let clear = (body.len() as f64) < probed.with as f64 * LZMA_CLEARLY;
            if fits && (gain < WINDOW_USELESS || clear) {
                let produced = Produced {
                    bytes: produced,
                    digest: output_digest,
                };
                return Ok(lzma_segment(produced, plan, &stream, body));
            }
            // Left for the comparison with zstd only when it may win there.
            lzma = lzma.filter(|_| fits && gain >= WINDOW_USELESS);
            lzma_made = Some(body);
        }
    }
    let mut payload = best.compress(&stream, level)?;
    if stream.len() <= TRIAL_STREAM {
        // Small streams (a few edits) try every alternative window and, with
        // a window list, every window whole as well: edits may resemble the
        // old bytes that their neighbours copy.
        let mut trials: Vec<_> = plan
            .alternatives
            .iter()
            .map(|span| (span, layout))
            .collect();
        if let WindowLayout::Gathered(_) = layout {
            let whole = WindowLayout::Gathered(&keep_all);
            let spans = std::iter::once(&plan.reference).chain(&plan.alternatives);
            // Only where gathering left something out.
            let gathered = spans.filter(|span| layout.window_len(span) < whole.window_len(span));
            trials.extend(gathered.map(|span| (span, whole)));
        }
        for (span, layout) in trials {
            let window = Window::new(old, span, layout);
            let trial = window.compress(&stream, level)?;
            if trial.len() < payload.len() {
                payload = trial;
                best = window;
                best_span = (span.clone(), layout);
            }
        }
    }
    // Within the applier's memory: payload, stream and window are held at
    // once. A window that takes the segment past it is cut to what is
    // left, around its middle, until it fits (at worst, no window).
    for _ in 0..4 {
        let needed = (payload.len() + stream.len() + best.bytes.len()) as u64;
        if needed <= options.max_memory || best.bytes.is_empty() {
            break;
        }
        let left = options
            .max_memory
            .saturating_sub((payload.len() + stream.len()) as u64);
        let (span, layout) = &best_span;
        let cut = middle(span, left.min(best.bytes.len() as u64 / 2));
        best = Window::new(old, &cut, *layout);
        payload = best.compress(&stream, level)?;
        best_span = (cut, *layout);
    }
    let needed = (payload.len() + stream.len() + best.bytes.len()) as u64;
    if needed > options.max_memory && !best.bytes.is_empty() {
        best = Window::new(old, &(0..0), WindowLayout::Contiguous);
        payload = best.compress(&stream, level)?;
    }

    if let Some(filter) = lzma {
        let body = match lzma_made {
            Some(body) => body,
            None => lzma_body(&stream, filter)?,
        };
        if body.len() < payload.len() && lzma_memory(&stream, &body) <= options.max_memory {
            let produced = Produced {
                bytes: produced,
                digest: output_digest,
            };
            return Ok(lzma_segment(produced, plan, &stream, body));
        }
    }
    let mut entry = SegmentEntry {
        new_len: produced.len() as u64,
        payload_len: payload.len() as u64,
        stream_len: stream.len() as u64,
        ref_offset: best.offset(),
        ref_len: best.bytes.len() as u64,
        payload_digest: *blake3::hash(&payload).as_bytes(),
        output_digest,
        ..SegmentEntry::default()
    };
    count_ops(&mut entry, plan);
    Ok(Encoded {
        entry,
        payload,
        kind: kind::PLAIN,
    })
}

/// Memory an LZMA segment of op stream `stream` and payload `body` needs
/// to apply: the payload, the stream and liblzma's dictionary.
fn lzma_memory(stream: &[u8], body: &[u8]) -> u64 {
    (body.len() as u64).saturating_add(kind::lzma_stream_len(stream.len() as u64))
}

/// The `len` bytes in the middle of `span` (all of it when shorter).
fn middle(span: &Range<u64>, len: u64) -> Range<u64> {
    let total = span.end - span.start;
    if len >= total {
        return span.clone();
    }
    let start = span.start + (total - len) / 2;
    start..start + len
}

/// The entry and payload of an LZMA segment of `plan`, whose op stream is
/// `stream` and payload `body` (without its kind byte).
fn lzma_segment(
    produced: Produced<'_>,
    plan: &SegmentPlan,
    stream: &[u8],
    body: Vec<u8>,
) -> Encoded {
    let mut entry = SegmentEntry {
        new_len: produced.bytes.len() as u64,
        payload_len: body.len() as u64,
        stream_len: kind::lzma_stream_len(stream.len() as u64),
        payload_digest: *blake3::hash(&body).as_bytes(),
        output_digest: produced.digest,
        ..SegmentEntry::default()
    };
    count_ops(&mut entry, plan);
    Encoded {
        entry,
        payload: body,
        kind: kind::LZMA,
    }
}

/// An LZMA segment's payload for op stream `stream`, without its kind byte.
fn lzma_body(stream: &[u8], filter: BranchFilter) -> Result<Vec<u8>> {
    let data = crate::lzma::compress(stream, filter)?;
    let parts = kind::Lzma {
        filter,
        ops_len: stream.len() as u64,
        data: &data,
    };
    let mut body = Vec::with_capacity(data.len() + 12);
    parts.encode(&mut body);
    body.remove(0); // the kind byte is the caller's to add
    Ok(body)
}

/// Sets the entry's per-op byte counts from `plan`.
fn count_ops(entry: &mut SegmentEntry, plan: &SegmentPlan) {
    for op in &plan.ops {
        let slot = match op {
            Op::Copy { .. } | Op::CopyNew { .. } => &mut entry.copy_len,
            Op::Zero { .. } => &mut entry.zero_len,
            Op::Diff { .. } => &mut entry.diff_len,
            Op::Literal { .. } => &mut entry.literal_len,
        };
        *slot += op.len();
    }
}

/// Smallest op stream worth an LZMA trial: below it, zstd's window holds
/// what little there is to gain.
const LZMA_MIN: usize = 4096;

/// Smallest op stream whose window is probed (see [`Window::probe`]) to
/// choose between zstd and LZMA2; smaller ones are compressed both ways
/// and the smaller payload kept.
const LZMA_PROBED: usize = 256 << 10;

/// Window gain from which zstd alone is tried, and under which LZMA2
/// alone. On the 31 probed streams of the os-minor and os-major corpus
/// pairs, zstd won all 9 with a gain of 8% or more and LZMA2 all but one
/// of the 13 under 3% (that one by 0.3%); in between, each won about half.
const WINDOW_MATTERS: f64 = 0.08;
const WINDOW_USELESS: f64 = 0.03;

/// In between those gains, an LZMA2 payload under this share of the
/// window's probe (zstd level 3) is kept without the slow zstd level 19
/// beside it. On os-major's 674 such streams, LZMA2 won 439; at 0.8, 74 of
/// them (20 s of zstd's CPU) were kept without it, one of them (by 4.5 KB)
/// wrongly; at 0.85, 160 (28 s), six wrongly (8.2 KB).
const LZMA_CLEARLY: f64 = 0.8;

/// Rough cost of encoding the segment of `plan`, producing `range` of the
/// new image, in literal-byte equivalents: what schedulers start the slow
/// segments first by. zstd level 19 on os-major: 2.3 MB/s of literal bytes,
/// 4.3 MB/s of op and diff columns (mostly zeros), 6.3 MB/s of window
/// loaded; the generator's self-check hashes and compares every output
/// byte.
pub(crate) fn encode_cost(
    range: &Range<usize>,
    plan: &SegmentPlan,
    layout: WindowLayout<'_>,
) -> u64 {
    let window = layout.window_len(&plan.reference);
    (plan.literal.len() as u64 + plan.diff.len() as u64 / 2)
        .saturating_add(window / 3)
        .saturating_add(range.len() as u64 / 64)
}

/// zstd level for streams that look like random bytes (see
/// [`looks_random`]): on the random corpus pair, level 19 took 0.61 s on one
/// such 1 MiB segment for the same payload size that level 3 gives in 4 ms.
const RANDOM_STREAM_LEVEL: i32 = 3;

/// Whether `stream` is at least 256 KiB and its bytes look uniformly random:
/// an order-0 entropy of at least 7.95 bits per byte, where no byte-level
/// coding can save more than 0.6%. The OS image pairs' streams stay under
/// 7.6 bits.
pub(crate) fn looks_random(stream: &[u8]) -> bool {
    if stream.len() < 256 << 10 {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in stream {
        counts[b as usize] += 1;
    }
    let n = stream.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum();
    bits >= 7.95
}

/// A segment's reference window: its old ranges and their bytes, ready to
/// compress against.
struct Window<'a> {
    /// Old ranges, ascending and disjoint (empty: no window).
    ranges: Vec<Range<u64>>,
    /// Their bytes, in order: borrowed from `old` when contiguous.
    bytes: Cow<'a, [u8]>,
    /// Whether the payload starts with a window list.
    listed: bool,
}

impl<'a> Window<'a> {
    /// The window of `span` (clamped to `old`) laid out as `layout` says.
    fn new(old: &'a [u8], span: &Range<u64>, layout: WindowLayout<'_>) -> Window<'a> {
        let end = span.end.min(old.len() as u64);
        let span = span.start.min(end)..end;
        let ranges = match layout {
            WindowLayout::Contiguous => vec![span.clone()],
            WindowLayout::Gathered(copied) => copied.gather(span.clone()),
        };
        let ranges: Vec<_> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
        let slice = |r: &Range<u64>| &old[r.start as usize..r.end as usize];
        let bytes = match &ranges[..] {
            [one] => Cow::Borrowed(slice(one)),
            many => Cow::Owned(many.iter().map(slice).collect::<Vec<_>>().concat()),
        };
        Window {
            ranges,
            bytes,
            listed: matches!(layout, WindowLayout::Gathered(_)),
        }
    }

    /// `stream` compressed at a fast zstd level with tables large enough
    /// to see a window of megabytes (levels up to 9 with their own tables
    /// cannot), with this window and without. About 0.3 s for a stream of
    /// 7 MB and its 8 MiB window.
    ///
    /// No window: nothing is compressed, and the gain is 0.
    fn probe(&self, stream: &[u8]) -> Result<Probed> {
        if self.bytes.is_empty() {
            return Ok(Probed::default());
        }
        let with = probe(stream, &self.bytes)?.len();
        let without = probe(stream, &[])?.len();
        Ok(Probed { with, without })
    }

    /// The entry's `ref_offset`: where the first range starts (0 for none).
    fn offset(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.start)
    }

    /// The payload of `stream`: the window list if any, then one zstd frame.
    fn compress(&self, stream: &[u8], level: i32) -> Result<Vec<u8>> {
        let mut payload = Vec::new();
        if self.listed {
            delta_format::window::encode(&self.ranges, self.offset(), &mut payload);
        }
        crate::frame::compress(stream, &self.bytes, level, payload)
    }
}

/// The sizes of a stream's quick frames (see [`Window::probe`]).
#[derive(Default)]
struct Probed {
    with: usize,
    without: usize,
}

impl Probed {
    /// How much smaller the window makes the stream, as a fraction.
    fn gain(&self) -> f64 {
        match self.without {
            0 => 0.0,
            without => 1.0 - self.with as f64 / without as f64,
        }
    }
}

/// A quick zstd frame of `data` against `reference`: level 3 with hash
/// and chain tables of 4M entries.
fn probe(data: &[u8], reference: &[u8]) -> Result<Vec<u8>> {
    use zstd_safe::CParameter;
    let parameters = [
        CParameter::CompressionLevel(3),
        CParameter::HashLog(22),
        CParameter::ChainLog(22),
    ];
    crate::frame::compress_with(data, reference, &parameters, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::arrange::{merge_plans, MAX_MERGED_LEN};
    use crate::{Patcher, SegmentRef};

    /// [`encode_segment`] with a contiguous window, hashing `produced`.
    fn encode_contiguous(
        old: &[u8],
        produced: &[u8],
        plan: &SegmentPlan,
        options: &EncodeOptions,
    ) -> Result<(SegmentEntry, Vec<u8>)> {
        let produced = Produced {
            bytes: produced,
            digest: *blake3::hash(produced).as_bytes(),
        };
        let layout = WindowLayout::Contiguous;
        let encoded = encode_segment(old, produced, plan, layout, options, None)?;
        Ok((encoded.entry, encoded.payload))
    }

    #[test]
    fn only_large_random_streams_skip_the_slow_parser() {
        let mut rng = crate::testing::Rng::new(5);
        assert!(looks_random(&rng.bytes(1 << 20)));
        assert!(!looks_random(&rng.bytes(100 << 10)), "too small to matter");
        assert!(!looks_random(&rng.text(1 << 20)));
        // Random bytes with one byte in eight zeroed (a table of 7-byte
        // random values) still deserve the slow parser.
        let mut table = rng.bytes(1 << 20);
        table.iter_mut().step_by(8).for_each(|b| *b = 0);
        assert!(!looks_random(&table));
    }

    #[test]
    fn small_segments_keep_the_window_that_compresses_them_best() {
        // Two edits merged into one segment: 4 KiB of noise (more literal
        // bytes, so its window wins the merge) and 3 KB copied from the old
        // text at 1 MiB, which only the other unit's window holds.
        let mut rng = crate::testing::Rng::new(9);
        let mut old = rng.bytes(1 << 20);
        old.extend(rng.text(1 << 20));
        let noise = rng.bytes(4096);
        let text = old[(1 << 20) + 5000..(1 << 20) + 8000].to_vec();
        let unit = |at: usize, literal: &[u8], reference: Range<u64>| {
            let plan = SegmentPlan {
                ops: vec![Op::Literal {
                    len: literal.len() as u64,
                }],
                literal: literal.to_vec(),
                reference,
                ..SegmentPlan::default()
            };
            (at..at + literal.len(), plan)
        };
        let merged = merge_plans(
            vec![
                unit(0, &noise, 0..65536),
                unit(4096, &text, (1 << 20)..(1 << 20) + 65536),
            ],
            MAX_MERGED_LEN,
            8 << 20,
        );
        assert_eq!(merged.len(), 1);
        let plan = &merged[0].1;
        assert_eq!(plan.reference, 0..65536);
        let text_window = (1 << 20)..(1 << 20) + 65536;
        assert_eq!(
            plan.alternatives.as_slice(),
            std::slice::from_ref(&text_window)
        );
        let mut produced = noise.clone();
        produced.extend_from_slice(&text);
        let options = EncodeOptions {
            level: 19,
            ..EncodeOptions::default()
        };
        let (entry, payload) = encode_contiguous(&old, &produced, plan, &options).unwrap();
        assert_eq!(entry.ref_offset, 1 << 20);
        let without = SegmentPlan {
            alternatives: Vec::new(),
            ..plan.clone()
        };
        let (_, larger) = encode_contiguous(&old, &produced, &without, &options).unwrap();
        assert!(
            payload.len() + 800 < larger.len(),
            "{} against {}",
            payload.len(),
            larger.len()
        );
    }

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
        let (entry, payload) = encode_contiguous(
            &[],
            &produced,
            &plan,
            &EncodeOptions {
                level: 1,
                ..EncodeOptions::default()
            },
        )
        .unwrap();
        assert!(entry.stream_len <= 2 * 10_000 + delta_format::STREAM_SLACK);
        assert_eq!(entry.literal_len, 10_000);
        assert_eq!(apply_one(&[], &entry, &payload, false), produced);
    }

    /// What the patcher makes of a lone segment at new offset 0.
    fn apply_one(old: &[u8], entry: &SegmentEntry, payload: &[u8], window_list: bool) -> Vec<u8> {
        let seg = SegmentRef {
            index: 0,
            new_offset: 0,
            payload_offset: 0,
            entry,
            new_limit: 0,
            window_list,
            kinds: false,
            allowed: Default::default(),
        };
        let mut out = Vec::new();
        Patcher::new()
            .apply_segment(old, seg, payload, &mut out)
            .unwrap();
        out
    }

    /// Encodes, with a window list, a segment that copies the first 128 KiB
    /// of `old` (256 KiB) whole and then sends `literal`; its window spans
    /// all of `old`. Returns what the segment produces, its entry and
    /// payload.
    fn encode_after_copy(old: &[u8], literal: &[u8]) -> (Vec<u8>, SegmentEntry, Vec<u8>) {
        let plan = SegmentPlan {
            ops: vec![
                Op::Copy {
                    src: 0,
                    len: 128 << 10,
                },
                Op::Literal {
                    len: literal.len() as u64,
                },
            ],
            literal: literal.to_vec(),
            reference: 0..old.len() as u64,
            ..SegmentPlan::default()
        };
        let mut produced = old[..128 << 10].to_vec();
        produced.extend_from_slice(literal);
        let copied = crate::generate::window::CopiedRuns::from_plans([&plan]);
        let layout = WindowLayout::Gathered(&copied);
        let digest = *blake3::hash(&produced).as_bytes();
        let options = EncodeOptions {
            level: 19,
            ..EncodeOptions::default()
        };
        let made = Produced {
            bytes: &produced,
            digest,
        };
        let encoded = encode_segment(old, made, &plan, layout, &options, None).unwrap();
        (produced, encoded.entry, encoded.payload)
    }

    #[test]
    fn gathered_windows_leave_copied_runs_out_and_still_apply() {
        // 70,000 literal bytes (over the stream size that tries other
        // windows) that the old text holds at 130 KiB.
        let old = crate::testing::Rng::new(4).text(256 << 10);
        let literal = &old[130 << 10..(130 << 10) + 70_000];
        let (produced, entry, payload) = encode_after_copy(&old, literal);
        let skipped = (128 << 10) - 2 * crate::generate::window::SKIP_MARGIN;
        assert_eq!(
            (entry.ref_offset, entry.ref_len),
            (0, (256 << 10) - skipped)
        );
        assert!(
            payload.len() < 200,
            "{} bytes: the window was not used",
            payload.len()
        );
        assert_eq!(apply_one(&old, &entry, &payload, true), produced);
    }

    #[test]
    fn small_edits_of_copied_bytes_keep_their_whole_window() {
        // An edited copy of 3000 of the copied bytes: only the whole window
        // holds what the edit resembles.
        let old = crate::testing::Rng::new(5).text(256 << 10);
        let mut literal = old[1000..4000].to_vec();
        for i in (0..literal.len()).step_by(500) {
            literal[i] ^= 0x20;
        }
        let (_, entry, payload) = encode_after_copy(&old, &literal);
        assert_eq!((entry.ref_offset, entry.ref_len), (0, 256 << 10));
        assert!(payload.len() < 300, "{} bytes", payload.len());
    }
}
