//! Executable segments: each changed ELF file of the new image, made from
//! its old partner with its references projected (see
//! [`delta_format::exec`] and [`crate::exec`]).
//!
//! A new ELF file becomes a candidate ([`exec_pairs`]) when its bytes are
//! one run of the new image, the old image does not hold them as they are,
//! and an old ELF file is its partner: the file at the same path, else the
//! one whose name is the same but for its version numbers
//! (`libapt-pkg.so.6.0.0` and `libapt-pkg.so.7.0.0`,
//! `libsystemd-shared-252.so` and `libsystemd-shared-257.so`), in the most
//! alike folder.
//!
//! [`encode`] finds what moved ([`shift_points`]): it masks the references
//! of both files, matches the masked new file against the masked old one,
//! and turns each match into a point of the shift map (how far the old
//! address moved to reach the new one). It then projects the old file with
//! that map, and plans the new file against it with the suffix-array
//! matcher ([`crate::generate::fine`]), with two mismatch penalties, keeping
//! the smaller. The caller compares the result with the plain segment of
//! the same bytes.

use crate::exec::{self, arch_of, layout, Layout, Rewrite, ShiftMap};
use crate::generate::content::{common_prefix, file_name};
use crate::generate::encode::{encode_segment, EncodeOptions, Produced};
use crate::generate::fine::{fine_plans_sorted, suffix_array, FineOptions};
use crate::generate::index::BlockIndex;
use crate::generate::plan::{plan_segment, DiffOptions, SegmentPlan};
use crate::generate::runner::Serial;
use crate::generate::window::WindowLayout;
use delta_format::exec::{Exec, ExecArch, Piece, MAX_SHIFTS};
use delta_format::{Op, SegmentEntry};
use delta_fsmap::{FileMap, MappedFile};
use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// Largest old or new file made into an executable segment: the applier
/// holds the old file whole (Android's update_engine caps Zucchini at
/// 150 MiB; a segment's memory is capped lower still, see
/// [`SEGMENT_MEMORY`](crate::SEGMENT_MEMORY)).
pub(crate) const MAX_FILE: u64 = 64 << 20;

/// Block of the matcher that finds what moved: a file pair is small, so
/// blocks can be too.
const BLOCK: usize = 64;
/// Shortest match that makes a point of the shift map.
const MIN_MATCH: u64 = 64;

/// A new ELF file and its old partner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pair {
    /// The new file's path.
    pub(crate) path: String,
    /// The old partner's path.
    pub(crate) old_path: String,
    /// The new image range the segment makes: the new file's data, which
    /// is one run of the image (its holes, if any, are not).
    pub(crate) new: Range<usize>,
    /// The new file as its headers see it: each run of `new` at its offset
    /// in the file, of `new_size` bytes in all (zeros elsewhere).
    pub(crate) new_runs: Vec<(u64, Range<usize>)>,
    /// Bytes of the new file.
    pub(crate) new_size: u64,
    /// The old file, in file order: runs of the old image and holes.
    pub(crate) old: Vec<Piece>,
}

impl Pair {
    /// Bytes of the old file.
    pub(crate) fn old_len(&self) -> u64 {
        self.old.iter().map(Piece::len).sum()
    }

    /// The new file as its headers see it.
    fn new_file(&self, new: &[u8]) -> Vec<u8> {
        let mut file = vec![0; self.new_size as usize];
        for (at, run) in &self.new_runs {
            let at = *at as usize;
            file[at..at + run.len()].copy_from_slice(&new[run.clone()]);
        }
        file
    }
}

/// The candidates of `new` (mapped as `new_map`) against `old`, sorted by
/// their place in the new image, not overlapping.
pub(crate) fn exec_pairs(
    old_map: &FileMap,
    new_map: &FileMap,
    old: &[u8],
    new: &[u8],
) -> Vec<Pair> {
    let partners = Partners::new(old_map, old);
    let mut pairs: Vec<Pair> = new_map
        .files
        .iter()
        .filter_map(|file| {
            let (range, new_runs) = elf_run(file, new)?;
            let bytes = &new[range.clone()];
            if partners.same.contains(&blake3::hash(bytes)) {
                return None;
            }
            let partner = partners.find(&file.path)?;
            Some(Pair {
                path: file.path.clone(),
                old_path: partner.path.clone(),
                new: range,
                new_runs,
                new_size: file.size,
                old: pieces(partner)?,
            })
        })
        .collect();
    pairs.sort_by_key(|pair| pair.new.start);
    // Hard links list the same bytes under two paths: keep one.
    pairs.dedup_by(|b, a| b.new.start < a.new.end);
    pairs
}

/// The new image range of `file`'s data and where each run of it lies in
/// the file, when its data is one run of the image (holes apart), it starts
/// like an ELF file, and it is not too large.
#[allow(clippy::type_complexity)]
fn elf_run(file: &MappedFile, image: &[u8]) -> Option<(Range<usize>, Vec<(u64, Range<usize>)>)> {
    if file.size > MAX_FILE || file.size < 64 {
        return None;
    }
    let first = file.extents.first().filter(|e| e.logical == 0)?;
    let start = usize::try_from(first.physical).ok()?;
    let mut end = start;
    let mut runs = Vec::with_capacity(file.extents.len());
    for extent in &file.extents {
        let len = usize::try_from(extent.len).ok()?;
        if usize::try_from(extent.physical).ok()? != end {
            return None;
        }
        runs.push((extent.logical, end..end.checked_add(len)?));
        end += len;
    }
    image
        .get(start..end)?
        .starts_with(b"\x7fELF")
        .then_some((start..end, runs))
}

/// The pieces of all of `file`'s bytes, in file order: its extents, and
/// zeros for its holes; `None` when it is too large.
fn pieces(file: &MappedFile) -> Option<Vec<Piece>> {
    if file.size > MAX_FILE || file.size == 0 {
        return None;
    }
    let mut at = 0;
    let mut out = Vec::with_capacity(file.extents.len());
    for extent in &file.extents {
        if extent.logical > at {
            out.push(Piece::Zeros(extent.logical - at));
        }
        out.push(Piece::Old(extent.physical..extent.physical + extent.len));
        at = extent.logical + extent.len;
    }
    if file.size > at {
        out.push(Piece::Zeros(file.size - at));
    }
    Some(out)
}

/// The old ELF files, by path and by versionless name, and the digests of
/// every old ELF file's bytes.
struct Partners<'a> {
    by_path: HashMap<&'a str, &'a MappedFile>,
    by_stem: HashMap<String, Vec<&'a MappedFile>>,
    same: HashSet<blake3::Hash>,
}

impl<'a> Partners<'a> {
    fn new(map: &'a FileMap, image: &[u8]) -> Partners<'a> {
        let mut partners = Partners {
            by_path: HashMap::new(),
            by_stem: HashMap::new(),
            same: HashSet::new(),
        };
        for file in &map.files {
            let Some((range, _)) = elf_run(file, image) else {
                continue;
            };
            partners.same.insert(blake3::hash(&image[range]));
            partners.by_path.insert(&file.path, file);
            let stem = stem(file_name(&file.path));
            partners.by_stem.entry(stem).or_default().push(file);
        }
        partners
    }

    /// The old partner of the new file at `path`: the file at the same
    /// path, else the one of the same versionless name whose path shares
    /// the longest start with this one's.
    fn find(&self, path: &str) -> Option<&'a MappedFile> {
        if let Some(file) = self.by_path.get(path) {
            return Some(file);
        }
        let candidates = self.by_stem.get(&stem(file_name(path)))?;
        candidates
            .iter()
            .max_by_key(|file| {
                (
                    common_prefix(&file.path, path),
                    std::cmp::Reverse(&file.path),
                )
            })
            .copied()
    }
}

/// A file name without its version numbers: the parts between dots,
/// dashes and underscores that are all digits go (`libfoo.so.6.0.0` and
/// `libfoo.so.7` are both `libfoo.so`; `libsystemd-shared-252.so` is
/// `libsystemd.shared.so`), and so do hashes that tools add to names
/// (auditwheel's `libscipy_openblas64_-6bb31eeb.so`: parts of six or more
/// hex digits, one at least a digit). Digits inside a part stay: they
/// name the library (`libnghttp2` and `libnghttp3` are two).
fn stem(name: &str) -> String {
    let kept: Vec<&str> = name
        .split(['.', '-', '_'])
        .filter(|part| {
            let version = part.bytes().all(|b| b.is_ascii_digit());
            let hash = part.len() >= 6
                && part.bytes().all(|b| b.is_ascii_hexdigit())
                && part.bytes().any(|b| b.is_ascii_digit());
            !part.is_empty() && !version && !hash
        })
        .collect();
    kept.join(".")
}

/// An executable segment made by [`finish`].
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Its table entry.
    pub(crate) entry: SegmentEntry,
    /// Its payload, kind byte first.
    pub(crate) payload: Vec<u8>,
}

/// An executable segment planned by [`prepare`], before its final
/// compression.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    arch: ExecArch,
    pieces: Vec<Piece>,
    points: Vec<(u64, i64)>,
    /// The projected old file.
    file: Vec<u8>,
    plan: SegmentPlan,
    /// Payload bytes of the plan compressed at [`PROBE_LEVEL`].
    pub(crate) probe_len: u64,
}

impl Prepared {
    /// This plan, made for an old file of the same bytes in another old
    /// image, for `pair`: the same but for where the old file lies.
    pub(crate) fn for_pair(&self, pair: &Pair) -> Prepared {
        Prepared {
            pieces: pair.old.clone(),
            ..self.clone()
        }
    }
}

/// The zstd level at which plans are compared (with each other, and with
/// the plain segment of the same bytes): about ten times as fast as level
/// 19, and it ranks plans alike.
pub(crate) const PROBE_LEVEL: i32 = 3;

/// The mismatch penalties of the fine matcher tried on each pair, the
/// smaller payload kept: 1 (bsdiff's) suits point releases, whose code
/// differs little once projected, 3 major upgrades (on os-minor's,
/// arm64-minor's and armhf-minor's rebuilt libraries, both together make
/// 126,779, 583,176 and 249,718 bytes; penalty 1 alone 128,271, 589,753 and
/// 249,718; block anchors, as plain segments are planned, 165,626, 642,405
/// and 332,733).
const PENALTIES: [i64; 2] = [1, 3];

/// Plans the executable segment of `pair`: reads the old file and, with
/// `transform`, finds its shift map and projects it; plans the new file
/// against the old one as it is and as projected, with each of
/// [`PENALTIES`], and keeps the plan that compresses smaller at
/// [`PROBE_LEVEL`] (with its map).
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails.
pub(crate) fn prepare(
    old: &[u8],
    new: &[u8],
    pair: &Pair,
    digest: delta_format::Digest,
    transform: bool,
) -> crate::Result<Prepared> {
    prepare_file(old_file(old, pair), new, pair, digest, transform)
}

/// The bytes of `pair`'s old file, read from the old image `old`.
pub(crate) fn old_file(old: &[u8], pair: &Pair) -> Vec<u8> {
    let mut file = Vec::new();
    for piece in &pair.old {
        match piece {
            Piece::Old(range) => {
                file.extend_from_slice(&old[range.start as usize..range.end as usize])
            }
            Piece::Zeros(len) => file.resize(file.len() + *len as usize, 0),
        }
    }
    file
}

/// [`prepare`] with the old file's bytes `file` ([`old_file`]) already read.
/// What it makes depends on those bytes and on the new file, not on where
/// the old file lies in its image, but for [`Prepared::pieces`]: see
/// [`Prepared::for_pair`].
///
/// # Errors
/// As [`prepare`].
pub(crate) fn prepare_file(
    mut file: Vec<u8>,
    new: &[u8],
    pair: &Pair,
    digest: delta_format::Digest,
    transform: bool,
) -> crate::Result<Prepared> {
    let new_file = pair.new_file(new);
    let arch = match (layout(&file), layout(&new_file)) {
        (Some(a), Some(b)) if transform && a.machine == b.machine => arch_of(&a),
        _ => ExecArch::None,
    };
    // Each way the file can be read: projected, and as it is (a projection
    // can cost more in its map than it saves on a small file).
    let mut ways = vec![(ExecArch::None, Vec::new(), file.clone())];
    if arch != ExecArch::None {
        let points = shift_points(arch, &file, &new_file);
        exec::rewrite(arch, &mut file, Rewrite::Project(ShiftMap::new(&points)));
        ways.push((arch, points, file));
    }
    // What the segment makes: the new file's data, holes left out.
    let produced = Produced {
        bytes: &new[pair.new.clone()],
        digest,
    };
    let probe = EncodeOptions {
        level: PROBE_LEVEL,
        max_memory: u64::MAX,
    };
    // The best plan so far: its way, the plan, its probe length.
    let mut best: Option<(usize, SegmentPlan, u64)> = None;
    for (way, (_, points, file)) in ways.iter().enumerate() {
        let sa = suffix_array(file);
        let fine = FineOptions {
            max_reference: file.len(),
            ..FineOptions::default()
        };
        for plan in fine_plans_sorted(file, &sa, produced.bytes, &fine, &PENALTIES) {
            let layout = WindowLayout::Contiguous;
            let made = encode_segment(file, produced, &plan, layout, &probe, None)?;
            // The map's bytes count too.
            let probe_len = made.payload.len() as u64 + 4 * points.len() as u64;
            if best.as_ref().is_none_or(|b| probe_len < b.2) {
                best = Some((way, plan, probe_len));
            }
        }
    }
    let (way, plan, probe_len) = best.unwrap_or_default();
    let (arch, points, file) = ways.swap_remove(way);
    Ok(Prepared {
        arch,
        pieces: pair.old.clone(),
        points,
        file,
        plan,
        probe_len,
    })
}

/// Compresses a prepared segment as `options` say; `None` when it does not
/// fit `options.max_memory`.
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails.
pub(crate) fn finish(
    prepared: Prepared,
    produced: Produced<'_>,
    options: &EncodeOptions,
) -> crate::Result<Option<Encoded>> {
    let Prepared {
        arch,
        pieces,
        points,
        file,
        plan,
        ..
    } = prepared;
    // The prefix is part of the old file the applier holds anyway: only
    // the whole segment's memory is checked, below.
    let inner = EncodeOptions {
        max_memory: u64::MAX,
        ..options.clone()
    };
    let layout = WindowLayout::Contiguous;
    let plain = encode_segment(&file, produced, &plan, layout, &inner, None)?;
    let parts = Exec {
        arch,
        pieces,
        shifts: points,
        ops_len: plain.entry.stream_len,
        reference: plain.entry.ref_offset..plain.entry.ref_offset + plain.entry.ref_len,
        frame: &plain.payload,
    };
    let mut payload = Vec::with_capacity(plain.payload.len() + 64);
    parts.encode(&mut payload);
    let entry = parts.entry(&payload, &plain.entry);
    Ok((entry.memory() <= options.max_memory).then_some(Encoded { entry, payload }))
}

/// The shift map that makes `old` (an ELF file of `arch`) most like `new`:
/// a point for each long match of their masked bytes, and one for each
/// section the new file has under the same name (`.bss` has no bytes to
/// match), sorted and with runs of one shift merged. Empty when either
/// file's headers do not read, or when the map would be too long.
pub(crate) fn shift_points(arch: ExecArch, old: &[u8], new: &[u8]) -> Vec<(u64, i64)> {
    let (Some(old_layout), Some(new_layout)) = (layout(old), layout(new)) else {
        return Vec::new();
    };
    let masked = |bytes: &[u8]| {
        let mut bytes = bytes.to_vec();
        exec::rewrite(arch, &mut bytes, Rewrite::Mask);
        bytes
    };
    let (old_masked, new_masked) = (masked(old), masked(new));
    let index = BlockIndex::build(&old_masked, BLOCK, &Serial);
    let diff = DiffOptions {
        block_size: BLOCK,
        max_reference: 0,
    };
    let plan = plan_segment(&old_masked, &new_masked, 0..new.len(), &index, &diff);
    // (address, shift, priority): matches win over section starts.
    let mut points = Vec::new();
    for section in &old_layout.sections {
        let twin = new_layout.sections.iter().find(|s| s.name == section.name);
        if let (Some(twin), false) = (twin, section.name.is_empty()) {
            points.push((section.addr, twin.addr.wrapping_sub(section.addr) as i64, 0));
        }
    }
    let mut at = 0u64;
    for op in &plan.ops {
        if let Op::Copy { src, len } | Op::Diff { src, len } = *op {
            if len >= MIN_MATCH {
                match_points(&old_layout, &new_layout, src, at, len, &mut points);
            }
        }
        at += op.len();
    }
    points.sort_by_key(|&(address, _, priority)| (address, std::cmp::Reverse(priority)));
    points.dedup_by_key(|&mut (address, _, _)| address);
    let mut merged: Vec<(u64, i64)> = Vec::with_capacity(points.len());
    for (address, shift, _) in points {
        if merged.last().is_none_or(|&(_, last)| last != shift) {
            merged.push((address, shift));
        }
    }
    if merged.len() as u64 > MAX_SHIFTS {
        return Vec::new();
    }
    merged
}

/// The points of one match (old file bytes from `src` and new ones from
/// `at`, `len` of them): one where each old section it covers starts.
fn match_points(
    old: &Layout,
    new: &Layout,
    src: u64,
    at: u64,
    len: u64,
    points: &mut Vec<(u64, i64, u8)>,
) {
    for section in old.sections.iter().filter(|s| !s.nobits) {
        let start = src.max(section.offset);
        let end = (src + len).min(section.offset.saturating_add(section.size));
        if start >= end {
            continue;
        }
        let new_offset = at + (start - src);
        let Some(new_address) = new.sections.iter().find_map(|s| s.address_of(new_offset)) else {
            continue;
        };
        let Some(old_address) = section.address_of(start) else {
            continue;
        };
        points.push((old_address, new_address.wrapping_sub(old_address) as i64, 1));
    }
}

/// The executable segment of the whole of `new_file` against the whole of
/// `old_file`, each taken as an image of one file (for benchmarks and
/// tests: the segment's ranges and offsets are those of the files).
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails.
pub fn file_segment(
    old_file: &[u8],
    new_file: &[u8],
    transform: bool,
) -> crate::Result<Option<(SegmentEntry, Vec<u8>)>> {
    let pair = Pair {
        path: String::new(),
        old_path: String::new(),
        new: 0..new_file.len(),
        new_runs: vec![(0, 0..new_file.len())],
        new_size: new_file.len() as u64,
        old: vec![Piece::Old(0..old_file.len() as u64)],
    };
    let digest = *blake3::hash(new_file).as_bytes();
    let prepared = prepare(old_file, new_file, &pair, digest, transform)?;
    let produced = Produced {
        bytes: new_file,
        digest,
    };
    let encoded = finish(prepared, produced, &EncodeOptions::default())?;
    Ok(encoded.map(|e| (e.entry, e.payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drop_versions() {
        assert_eq!(stem("libapt-pkg.so.6.0.0"), stem("libapt-pkg.so.7.0.0"));
        assert_eq!(
            stem("libsystemd-shared-252.so"),
            stem("libsystemd-shared-257.so")
        );
        assert_eq!(stem("perl5.36.0"), "perl5");
        assert_ne!(stem("libnghttp2.so.14.28.3"), stem("libnghttp3.so.9.2.6"));
        assert_eq!(stem("libpython3.11.so.1.0"), stem("libpython3.13.so.1.0"));
        assert_ne!(stem("libssl.so.3"), stem("libcrypto.so.3"));
        assert_eq!(
            stem("libscipy_openblas64_-6bb31eeb.so"),
            stem("libscipy_openblas64_-56d6093b.so")
        );
        assert_ne!(stem("libfeed.so"), stem("libface.so"));
    }
}
