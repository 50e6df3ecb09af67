//! Where the bytes of a delta go: the files of the new image that cost
//! payload bytes, and how each was encoded (`delta gen --report`).
//!
//! Each segment's payload is shared out over the new-image bytes it
//! produces by what each part costs to compress. The diff and literal
//! bytes of a plain segment go, in order, through one zstd stream at
//! level [`METER_LEVEL`] that is flushed at every [`SLICE`] of the image
//! and at every op's end: the bytes each flush writes are what that slice
//! costs after everything before it in the segment, so random bytes weigh
//! about their length, text a third of it, and a run of zero diff bytes
//! (old and new agree there) almost nothing. Weighing bytes by count
//! instead charged 4,096 fresh random bytes beside compressible text less
//! than half their size. Each diff or literal op adds [`OP_BYTES`]. The
//! real coder (a higher zstd level or LZMA2, with the old window) mostly
//! does better than the meter where the meter already compressed: when a
//! segment's payload is below its weights, the difference comes off each
//! part in proportion to what the meter saved on it, so random bytes keep
//! their full cost (scaling every part alike charged a random firmware
//! file beside an executable in one LZMA segment 90% of its size).
//!
//! Copied and zero bytes cost their file nothing: the ops that make them
//! ([`OP_BYTES`] each) go to the line of bytes outside files, with a
//! segment of copies only, so an unchanged file is never listed. A deflate
//! segment is its file's alone. The shares are summed per file of the new
//! image's container map; bytes outside every file (file-system metadata,
//! free space, a whole image that could not be mapped, copy ops) are one
//! line of their own. The weights are scaled to each segment's payload, in
//! whole bytes that add up exactly to it. Slices are cut at multiples of
//! [`SLICE`] in the image, so on an ext4 image of 4 KiB blocks every slice
//! is one file's; a slice shared by files (tar's 512-byte records, 1 KiB
//! blocks) is split between them by bytes.

use crate::generate::plan::SegmentPlan;
use delta_format::Op;
use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;

/// Longest slice of new bytes measured on its own, in bytes; slices end at
/// multiples of it in the image.
const SLICE: u64 = 4096;

/// zstd level of the cost meter: fast, and near the real level's ratio on
/// text, equal to it on random bytes.
const METER_LEVEL: i32 = 1;

/// Weight of an op (its code, length and source), in compressed bytes.
const OP_BYTES: u64 = 3;

/// How a file's bytes were made, from what made most of its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum How {
    /// Copied or zero: from the old image or earlier new bytes.
    Copy,
    /// Diffed against old bytes.
    Diff,
    /// Rebuilt from its inflated content (a deflate segment).
    Deflate,
    /// Literal bytes, compressed against the segment's window.
    Literal,
    /// Literal bytes of an LZMA segment (new executables, branch-filtered).
    Lzma,
    /// Made from its old partner with references projected (an executable
    /// segment).
    Exec,
}

/// Every [`How`], in declaration order (their `as usize` values).
const HOWS: [How; 6] = [
    How::Copy,
    How::Diff,
    How::Deflate,
    How::Literal,
    How::Lzma,
    How::Exec,
];

impl How {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            How::Copy => "copy",
            How::Diff => "diff",
            How::Deflate => "deflate",
            How::Literal => "literal",
            How::Lzma => "lzma",
            How::Exec => "exec",
        }
    }
}

/// One run of new-image bytes made one way, with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub range: Range<u64>,
    pub how: How,
    pub weight: u64,
}

/// The pieces of a plain segment starting at `start`, from its plan (ops
/// and the diff and literal bytes they consume in order); `lzma` when the
/// segment was coded with LZMA.
pub(crate) fn plain_pieces(start: u64, plan: &SegmentPlan, lzma: bool) -> Vec<Piece> {
    let mut meter = Meter::new();
    let (mut diff, mut literal) = (&plan.diff[..], &plan.literal[..]);
    let mut pieces = Vec::new();
    let mut at = start;
    for op in &plan.ops {
        let end = at.saturating_add(op.len());
        let (how, mut bytes) = match *op {
            Op::Diff { .. } => (How::Diff, take(&mut diff, op.len())),
            Op::Literal { .. } if lzma => (How::Lzma, take(&mut literal, op.len())),
            Op::Literal { .. } => (How::Literal, take(&mut literal, op.len())),
            Op::Copy { .. } | Op::CopyNew { .. } | Op::Zero { .. } => {
                let weight = OP_BYTES;
                pieces.push(Piece {
                    range: at..end,
                    how: How::Copy,
                    weight,
                });
                at = end;
                continue;
            }
        };
        let mut weight = OP_BYTES;
        while at < end {
            let cut = (at / SLICE + 1).saturating_mul(SLICE).min(end);
            let mine = take(&mut bytes, cut - at);
            weight += meter.cost(mine);
            pieces.push(Piece {
                range: at..cut,
                how,
                weight,
            });
            weight = 0;
            at = cut;
        }
    }
    pieces
}

/// The first `len` bytes of `bytes` (fewer if it is shorter), taken off it.
fn take<'a>(bytes: &mut &'a [u8], len: u64) -> &'a [u8] {
    let len = usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len());
    let (mine, rest) = bytes.split_at(len);
    *bytes = rest;
    mine
}

/// A zstd stream that says what each slice written to it costs.
struct Meter {
    /// `None` if zstd could not start: slices then weigh their length.
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
}

impl Meter {
    fn new() -> Meter {
        Meter {
            encoder: zstd::stream::write::Encoder::new(Vec::new(), METER_LEVEL).ok(),
        }
    }

    /// The compressed bytes `bytes` cost after those written before.
    fn cost(&mut self, bytes: &[u8]) -> u64 {
        if bytes.is_empty() {
            return 0;
        }
        let measured = self.encoder.as_mut().and_then(|encoder| {
            encoder.write_all(bytes).ok()?;
            encoder.flush().ok()?;
            let len = encoder.get_ref().len() as u64;
            encoder.get_mut().clear();
            Some(len)
        });
        if measured.is_none() {
            self.encoder = None;
        }
        measured.unwrap_or(bytes.len() as u64)
    }
}

/// One file of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCost {
    /// Path in the new image; empty for the bytes outside every file.
    pub path: String,
    /// Size in the new image (for the outside line: the bytes outside).
    pub new_len: u64,
    /// The old file it was made from: same path, or the old version a
    /// deflate segment used; `None` for a new file.
    pub partner: Option<String>,
    /// What made most of its payload share.
    pub how: How,
    /// Payload bytes shared out to it.
    pub delta_bytes: u64,
}

/// The files of the new image that cost payload bytes, costliest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `ext4`, `tar`, or why the image could not be mapped.
    pub container: String,
    /// Every file that costs at least one payload byte, and the bytes
    /// outside files (path empty), costliest first.
    pub files: Vec<FileCost>,
    /// Payload bytes in all: the sum of `files[..].delta_bytes`.
    pub payload_bytes: u64,
    /// Header, table, digest and signature block.
    pub table_bytes: u64,
}

/// A file's new-image ranges, for [`build`].
#[derive(Debug, Clone)]
pub(crate) struct FileSpan {
    pub path: String,
    pub size: u64,
    pub ranges: Vec<Range<u64>>,
    pub partner: Option<String>,
}

/// Shares each segment's payload out over `files` (see the module docs).
/// `segments` are, per segment, its payload length and pieces.
pub(crate) fn build(
    container: String,
    files: Vec<FileSpan>,
    segments: &[(u64, Vec<Piece>)],
    table_bytes: u64,
) -> Report {
    // Intervals of the new image owned by a file, sorted; gaps are outside.
    let mut owner: Vec<(u64, u64, usize)> = files
        .iter()
        .enumerate()
        .flat_map(|(i, f)| f.ranges.iter().map(move |r| (r.start, r.end, i)))
        .collect();
    owner.sort_unstable();
    // Hard links share ranges: the first path keeps them.
    owner.dedup_by(|b, a| b.0 < a.1);
    let outside = files.len();
    let mut bytes = vec![0u64; files.len() + 1];
    // Per file, the weight each way of making bytes gave it (index: `How`).
    let mut weight_by_how = vec![[0u64; HOWS.len()]; files.len() + 1];
    for (payload, pieces) in segments {
        let mut shares: Vec<Share> = Vec::new();
        for piece in pieces {
            split_piece(piece, &owner, outside, &mut shares);
        }
        let total: u64 = shares.iter().map(|s| s.weight).sum();
        if total == 0 {
            bytes[outside] += payload;
            continue;
        }
        // What the real coder saved beyond the meter comes off the spare
        // weight, so incompressible bytes are never charged less than
        // they are; else every weight is scaled.
        let cut = total.saturating_sub(*payload);
        let spare: u64 = shares.iter().map(|s| s.spare).sum();
        let by_spare = cut > 0 && cut <= spare;
        let mut given = 0;
        let mut largest = 0;
        for (k, share) in shares.iter().enumerate() {
            let part = if by_spare {
                let off = (u128::from(cut) * u128::from(share.spare)).div_ceil(u128::from(spare));
                share.weight - off as u64
            } else {
                (u128::from(*payload) * u128::from(share.weight) / u128::from(total)) as u64
            };
            bytes[share.who] += part;
            given += part;
            weight_by_how[share.who][share.how as usize] += share.weight;
            if share.weight > shares[largest].weight {
                largest = k;
            }
        }
        bytes[shares[largest].who] += payload - given;
    }
    let mut out: Vec<FileCost> = files
        .into_iter()
        .map(|f| (f.path, f.size, f.partner))
        .chain(std::iter::once((String::new(), 0, None)))
        .enumerate()
        .filter(|&(i, _)| bytes[i] > 0)
        .map(|(i, (path, size, partner))| FileCost {
            path,
            new_len: size,
            partner,
            how: HOWS
                .into_iter()
                .zip(weight_by_how[i])
                .filter(|&(_, w)| w > 0)
                .max_by_key(|&(how, w)| (w, how))
                .map_or(How::Copy, |(how, _)| how),
            delta_bytes: bytes[i],
        })
        .collect();
    if let Some(rest) = out.iter_mut().find(|f| f.path.is_empty()) {
        let inside: u64 = owner.iter().map(|o| o.1 - o.0).sum();
        let image_end = segments
            .iter()
            .filter_map(|(_, p)| p.last())
            .map(|p| p.range.end)
            .max()
            .unwrap_or(0);
        rest.new_len = image_end.saturating_sub(inside);
    }
    out.sort_by(|a, b| b.delta_bytes.cmp(&a.delta_bytes).then(a.path.cmp(&b.path)));
    Report {
        container,
        payload_bytes: bytes.iter().sum(),
        files: out,
        table_bytes,
    }
}

/// A file's part of a piece.
struct Share {
    who: usize,
    how: How,
    weight: u64,
    /// The part of `weight` the meter found compressible: `weight` times
    /// the share of the piece's bytes the meter saved.
    spare: u64,
}

/// Splits `piece` over the file intervals it overlaps, by bytes, and
/// appends the shares; their weights add up to the piece's.
fn split_piece(piece: &Piece, owner: &[(u64, u64, usize)], outside: usize, out: &mut Vec<Share>) {
    if piece.how == How::Copy {
        // Copy ops cost the op only, which no file is charged for.
        out.push(Share {
            who: outside,
            how: How::Copy,
            weight: piece.weight,
            spare: 0,
        });
        return;
    }
    let Range { start, end: stop } = piece.range;
    let len = u128::from(stop - start).max(1);
    let saved = match piece.how {
        How::Diff | How::Literal | How::Lzma => len.saturating_sub(u128::from(piece.weight)),
        How::Copy | How::Deflate | How::Exec => 0,
    };
    let (mut at, mut given) = (start, 0u64);
    // The first interval that ends after `at`.
    let mut k = owner.partition_point(|o| o.1 <= at);
    while at < stop {
        let (end, who) = match owner.get(k) {
            Some(&(s, e, i)) if s <= at => {
                k += 1;
                (e.min(stop), i)
            }
            Some(&(s, _, _)) => (s.min(stop), outside),
            None => (stop, outside),
        };
        let upto = (u128::from(piece.weight) * u128::from(end - start) / len) as u64;
        let upto = if end == stop { piece.weight } else { upto };
        if upto > given {
            let weight = upto - given;
            let spare = (u128::from(weight) * saved / len) as u64;
            out.push(Share {
                who,
                how: piece.how,
                weight,
                spare,
            });
        }
        given = upto;
        at = end;
    }
}

/// The file spans of a container map, with partners: deflate pairs name
/// their old version, other files the old file at the same path.
pub(crate) fn spans(
    new_map: &delta_fsmap::FileMap,
    old_paths: &std::collections::HashSet<String>,
    partners: &HashMap<String, String>,
) -> Vec<FileSpan> {
    new_map
        .files
        .iter()
        .map(|f| FileSpan {
            path: f.path.clone(),
            size: f.size,
            ranges: f
                .extents
                .iter()
                .map(|e| e.physical..e.physical + e.len)
                .collect(),
            partner: partners
                .get(&f.path)
                .map(|p| p.to_string())
                .or_else(|| old_paths.contains(&f.path).then(|| f.path.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::encode::encode_segment;
    use crate::generate::window::WindowLayout;
    use crate::testing::Rng;

    /// A file at `path` made of the image ranges `(start, end)`.
    fn span(path: &str, ranges: &[(u64, u64)]) -> FileSpan {
        FileSpan {
            path: path.into(),
            size: ranges.iter().map(|(start, end)| end - start).sum(),
            ranges: ranges.iter().map(|&(start, end)| start..end).collect(),
            partner: None,
        }
    }

    fn plan(ops: &[Op], diff: &[u8], literal: &[u8]) -> SegmentPlan {
        SegmentPlan {
            ops: ops.to_vec(),
            diff: diff.to_vec(),
            literal: literal.to_vec(),
            ..SegmentPlan::default()
        }
    }

    /// The payload length the encoder gives `plan` (no old image), the new
    /// bytes being `produced`.
    fn payload_len(plan: &SegmentPlan, produced: &[u8]) -> u64 {
        let options = crate::EncodeOptions::default();
        let produced = crate::generate::encode::Produced {
            bytes: produced,
            digest: *blake3::hash(produced).as_bytes(),
        };
        let layout = WindowLayout::Contiguous;
        let encoded = encode_segment(&[], produced, plan, layout, &options, None).unwrap();
        encoded.entry.payload_len
    }

    fn cost(report: &Report, path: &str) -> u64 {
        report
            .files
            .iter()
            .find(|f| f.path == path)
            .map_or(0, |f| f.delta_bytes)
    }

    #[test]
    fn payloads_are_shared_by_weight_and_add_up() {
        let files = vec![
            span("/a", &[(0, 100)]),
            span("/b", &[(200, 300), (400, 450)]),
        ];
        let ops = [
            Op::Literal { len: 50 },
            Op::Copy { src: 0, len: 250 },
            Op::Diff { src: 0, len: 150 },
        ];
        let mut rng = Rng::new(1);
        let segments = vec![
            (
                1000,
                plain_pieces(0, &plan(&ops, &rng.bytes(150), &rng.bytes(50)), false),
            ),
            (
                77,
                vec![Piece {
                    range: 400..450,
                    how: How::Deflate,
                    weight: 1,
                }],
            ),
        ];
        let report = build("ext4".into(), files, &segments, 500);
        assert_eq!(report.payload_bytes, 1077);
        let total: u64 = report.files.iter().map(|f| f.delta_bytes).sum();
        assert_eq!(total, 1077);
        let get = |p: &str| report.files.iter().find(|f| f.path == p).unwrap();
        // The diff of 150 bytes covers 300..450: 100 outside, 50 in /b.
        assert_eq!(get("/a").how, How::Literal);
        assert!(get("").delta_bytes > get("/a").delta_bytes);
        assert!(get("/b").delta_bytes >= 77);
    }

    #[test]
    fn random_bytes_cost_their_length() {
        // A changed text file (diffed), 4096 fresh random bytes and a new
        // text file in one segment: the random file costs what it is.
        let mut rng = Rng::new(7);
        let old_text = rng.text(8192);
        let mut new_text = old_text.clone();
        for k in (0..new_text.len()).step_by(300) {
            new_text[k] ^= 0x20;
        }
        let random = rng.bytes(4096);
        let fresh = rng.text(8192);
        let diff: Vec<u8> = old_text
            .iter()
            .zip(&new_text)
            .map(|(o, n)| n.wrapping_sub(*o))
            .collect();
        let literal = [&random[..], &fresh[..]].concat();
        let ops = [
            Op::Diff { src: 0, len: 8192 },
            Op::Literal { len: 4096 + 8192 },
        ];
        let plan = plan(&ops, &diff, &literal);
        let produced = [&new_text[..], &literal[..]].concat();
        let payload = payload_len(&plan, &produced);
        let files = vec![
            span("/changed", &[(0, 8192)]),
            span("/random", &[(8192, 12288)]),
            span("/fresh", &[(12288, 20480)]),
        ];
        let report = build(
            "ext4".into(),
            files,
            &[(payload, plain_pieces(0, &plan, false))],
            0,
        );
        let total: u64 = report.files.iter().map(|f| f.delta_bytes).sum();
        assert_eq!(total, payload);
        let random = cost(&report, "/random");
        assert!(random >= 4096 * 9 / 10, "{random} of {payload}: {report:?}");
        assert!(random <= 4096 + 128, "{random} of {payload}: {report:?}");
        assert!(
            cost(&report, "/fresh") > cost(&report, "/changed"),
            "{report:?}"
        );
    }

    #[test]
    fn identical_images_list_no_files() {
        let files = vec![span("/a", &[(0, 4096)]), span("/b", &[(4096, 40960)])];
        let ops = [Op::Copy { src: 0, len: 40960 }];
        let pieces = plain_pieces(0, &plan(&ops, &[], &[]), false);
        let report = build("ext4".into(), files, &[(40, pieces)], 0);
        assert!(report.files.iter().all(|f| f.path.is_empty()), "{report:?}");
        assert_eq!(report.payload_bytes, 40);
        assert_eq!(cost(&report, ""), 40);
    }

    #[test]
    fn copied_files_beside_changed_ones_cost_nothing() {
        let files = vec![
            span("/same", &[(0, 8192)]),
            span("/changed", &[(8192, 12288)]),
        ];
        let ops = [Op::Copy { src: 0, len: 8192 }, Op::Literal { len: 4096 }];
        let literal = Rng::new(3).text(4096);
        let pieces = plain_pieces(0, &plan(&ops, &[], &literal), false);
        let report = build("ext4".into(), files, &[(900, pieces)], 0);
        assert_eq!(cost(&report, "/same"), 0);
        assert!(report.files.iter().all(|f| f.path != "/same"));
        assert!(cost(&report, "/changed") > 890, "{report:?}");
    }

    #[test]
    fn zero_diff_bytes_weigh_less_than_changed_ones() {
        // Two diff runs of 4096 bytes: /same's old and new agree but for
        // 10 bytes, /changed's differ everywhere.
        let files = vec![
            span("/same", &[(0, 4096)]),
            span("/changed", &[(4096, 8192)]),
        ];
        let ops = [
            Op::Diff { src: 0, len: 4096 },
            Op::Diff {
                src: 4096,
                len: 4096,
            },
        ];
        let mut diff = vec![0u8; 4096];
        diff[..10].fill(7);
        diff.extend_from_slice(&Rng::new(5).bytes(4096));
        let pieces = plain_pieces(0, &plan(&ops, &diff, &[]), false);
        let report = build("ext4".into(), files, &[(5000, pieces)], 0);
        let (same, changed) = (cost(&report, "/same"), cost(&report, "/changed"));
        assert_eq!(same + changed, 5000);
        assert!(changed > 20 * same, "{changed} {same}");
    }

    #[test]
    fn literals_of_lzma_segments_say_so() {
        let files = vec![span("/tool", &[(0, 100)])];
        let ops = [Op::Literal { len: 100 }];
        let literal = Rng::new(9).bytes(100);
        let pieces = plain_pieces(0, &plan(&ops, &[], &literal), true);
        let report = build("ext4".into(), files, &[(120, pieces)], 0);
        assert_eq!(report.files[0].how, How::Lzma);
        assert_eq!(report.files[0].how.name(), "lzma");
    }
}
