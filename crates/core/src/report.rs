//! Where the bytes of a delta go: the files of the new image that cost
//! payload bytes, and how each was encoded (`delta gen --report`).
//!
//! Each segment's payload is shared out over the new-image bytes it
//! produces, by weight: a literal byte or a non-zero diff byte weighs
//! [`BYTE_WEIGHT`] (what the compressor has to code), a zero diff byte (old
//! and new agree there) [`ZERO_DIFF_WEIGHT`], a copy or zero run nothing
//! but its op ([`OP_WEIGHT`]); a segment of copies only is shared by bytes
//! produced. Weighing every diff byte like a literal one overcharged
//! rebuilt executables about fourfold: most of their diff bytes are zero
//! and compress to almost nothing. A deflate segment is its
//! file's alone. The shares are then summed per file of the new image's
//! container map; bytes outside every file (file-system metadata, free
//! space, a whole image that could not be mapped) are one line of their own.
//! Shares are whole bytes that add up exactly to each payload.

use crate::deflate::Pair;
use delta_format::Op;
use std::collections::HashMap;
use std::ops::Range;

/// Weight of a literal byte, or of a diff byte where old and new differ.
const BYTE_WEIGHT: u64 = 32;

/// Weight of a zero diff byte (old and new agree): runs of them cost the
/// compressor a few bits, not a byte each.
const ZERO_DIFF_WEIGHT: u64 = 1;

/// Weight of an op (its code, length and source): four literal bytes.
const OP_WEIGHT: u64 = 4 * BYTE_WEIGHT;

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
}

/// Every [`How`], in declaration order (their `as usize` values).
const HOWS: [How; 4] = [How::Copy, How::Diff, How::Deflate, How::Literal];

impl How {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            How::Copy => "copy",
            How::Diff => "diff",
            How::Deflate => "deflate",
            How::Literal => "literal",
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

/// The pieces of a plain segment starting at `start`, from its ops and
/// the diff bytes they consume in order.
pub(crate) fn plain_pieces(start: u64, ops: &[Op], diff: &[u8]) -> Vec<Piece> {
    let mut at = start;
    let mut diff = diff;
    let mut pieces: Vec<Piece> = ops
        .iter()
        .map(|op| {
            let (how, bytes) = match *op {
                Op::Copy { .. } | Op::CopyNew { .. } | Op::Zero { .. } => (How::Copy, 0),
                Op::Diff { len, .. } => {
                    let (mine, rest) = diff.split_at((len as usize).min(diff.len()));
                    diff = rest;
                    (How::Diff, diff_weight(mine))
                }
                Op::Literal { len } => (How::Literal, len.saturating_mul(BYTE_WEIGHT)),
            };
            let range = at..at + op.len();
            at = range.end;
            let weight = OP_WEIGHT.saturating_add(bytes);
            Piece { range, how, weight }
        })
        .collect();
    if pieces.iter().all(|p| p.how == How::Copy) {
        for piece in &mut pieces {
            piece.weight = piece.range.end - piece.range.start;
        }
    }
    pieces
}

/// The weight of a diff op's bytes: [`BYTE_WEIGHT`] for each non-zero
/// one, [`ZERO_DIFF_WEIGHT`] for each zero one.
fn diff_weight(bytes: &[u8]) -> u64 {
    let non_zero = bytes.iter().filter(|&&b| b != 0).count() as u64;
    let zero = bytes.len() as u64 - non_zero;
    non_zero * BYTE_WEIGHT + zero * ZERO_DIFF_WEIGHT
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
        let mut shares: Vec<(usize, How, u64)> = Vec::new();
        for piece in pieces {
            split_piece(piece, &owner, outside, &mut shares);
        }
        let total: u64 = shares.iter().map(|s| s.2).sum();
        if total == 0 {
            bytes[outside] += payload;
            continue;
        }
        let mut given = 0;
        let mut largest = 0;
        for (k, &(who, how, w)) in shares.iter().enumerate() {
            let share = (u128::from(*payload) * u128::from(w) / u128::from(total)) as u64;
            bytes[who] += share;
            given += share;
            weight_by_how[who][how as usize] += w;
            if w > shares[largest].2 {
                largest = k;
            }
        }
        bytes[shares[largest].0] += payload - given;
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

/// Splits `piece` over the file intervals it overlaps, by bytes, and
/// appends `(file, how, weight)`; the weights add up to the piece's.
fn split_piece(
    piece: &Piece,
    owner: &[(u64, u64, usize)],
    outside: usize,
    out: &mut Vec<(usize, How, u64)>,
) {
    let Range { start, end: stop } = piece.range;
    let len = u128::from(stop - start).max(1);
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
            out.push((who, piece.how, upto - given));
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
    pairs: &[Pair],
) -> Vec<FileSpan> {
    let deflate_partner: HashMap<&str, &str> = pairs
        .iter()
        .filter_map(|p| Some((p.path.as_str(), p.old_path.as_deref()?)))
        .collect();
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
            partner: deflate_partner
                .get(f.path.as_str())
                .map(|p| p.to_string())
                .or_else(|| old_paths.contains(&f.path).then(|| f.path.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file at `path` made of the image ranges `(start, end)`.
    fn span(path: &str, ranges: &[(u64, u64)]) -> FileSpan {
        FileSpan {
            path: path.into(),
            size: ranges.iter().map(|(start, end)| end - start).sum(),
            ranges: ranges.iter().map(|&(start, end)| start..end).collect(),
            partner: None,
        }
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
        let segments = vec![
            (1000, plain_pieces(0, &ops, &[1; 150])),
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
    fn copies_only_are_shared_by_bytes() {
        let files = vec![span("/a", &[(0, 10)]), span("/b", &[(10, 40)])];
        let ops = [Op::Copy { src: 0, len: 40 }];
        let report = build("tar".into(), files, &[(40, plain_pieces(0, &ops, &[]))], 0);
        let get = |p: &str| report.files.iter().find(|f| f.path == p).unwrap();
        assert_eq!(get("/a").delta_bytes, 10);
        assert_eq!(get("/b").delta_bytes, 30);
        assert_eq!(get("/b").how, How::Copy);
    }

    #[test]
    fn zero_diff_bytes_weigh_less_than_changed_ones() {
        // Two diff runs of 1000 bytes: /same's old and new agree but for
        // 10 bytes, /changed's differ everywhere.
        let files = vec![
            span("/same", &[(0, 1000)]),
            span("/changed", &[(1000, 2000)]),
        ];
        let ops = [
            Op::Diff { src: 0, len: 1000 },
            Op::Diff {
                src: 1000,
                len: 1000,
            },
        ];
        let mut diff = vec![0u8; 1000];
        diff[..10].fill(7);
        diff.extend_from_slice(&[3u8; 1000]);
        let report = build(
            "ext4".into(),
            files,
            &[(5000, plain_pieces(0, &ops, &diff))],
            0,
        );
        let get = |p: &str| {
            report
                .files
                .iter()
                .find(|f| f.path == p)
                .unwrap()
                .delta_bytes
        };
        assert_eq!(get("/same") + get("/changed"), 5000);
        assert!(
            get("/changed") > 20 * get("/same"),
            "{} {}",
            get("/changed"),
            get("/same")
        );
    }
}
