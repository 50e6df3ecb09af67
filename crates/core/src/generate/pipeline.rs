//! The steps of generation and their order, in one place: [`generate`].
//!
//! 1. hash both images and index the old one ([`BlockIndex::build`]);
//! 2. plan every unit of the new image on its own ([`plan_segment`]);
//! 3. merge units into segments and widen the windows of edits
//!    ([`crate::generate::arrange`]);
//! 4. copy new content that an earlier segment carries ([`copy_repeats`]);
//! 5. encode every segment ([`encode_segment`]) and let the caller check it;
//! 6. build the header, whole, from the segments.
//!
//! How independent work runs is the caller's: a [`Runner`] maps over items
//! (chunks of the old image, units, segments), runs two jobs side by side
//! and hashes images; it is also told the progress of each phase
//! ([`Runner::progress`], [`crate::Phase`]). [`Serial`] does everything on the calling thread (the
//! tests, the fuzz targets, [`diff_slices`]); the `delta-gen` crate runs the
//! same steps on a rayon pool, most costly segments first, and re-applies
//! every segment it encodes. One pipeline means the parallel generator and
//! the reference one cannot drift apart: a serial twin would.

use crate::error::Result;
use crate::generate::arrange::{arrange, MAX_MERGED_LEN};
use crate::generate::content::{deflate_pairs, map_both, map_one, ContentSummary, MapResult};
use crate::generate::deflate;
use crate::generate::encode::{encode_cost, encode_segment, EncodeOptions, Encoded, Produced};
use crate::generate::exec;
use crate::generate::index::BlockIndex;
use crate::generate::plan::{plan_segment, DiffOptions};
use crate::generate::report::{plain_pieces, FileSpan, Piece, Report};
use crate::generate::reuse::copy_repeats;
use crate::generate::runner::{alike, split, Phase, Runner, Serial, Tally};
use crate::generate::window::{CopiedRuns, WindowLayout};
use crate::segment::SegmentRef;
use delta_format::kind::{self, BranchFilter, Kinds};
use delta_format::{
    Header, Index, SegmentEntry, FLAG_COPY_NEW, FLAG_DEFLATE_CHUNKS, FLAG_EXEC, FLAG_FULL,
    FLAG_LZMA, FLAG_MIGRATION, FLAG_SEGMENT_KINDS, FLAG_WINDOW_LIST,
};
use std::collections::HashMap;
use std::io::{self, Write};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// What delta [`generate`] builds.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Matcher settings.
    pub diff: DiffOptions,
    /// Compression settings.
    pub encode: EncodeOptions,
    /// Bytes of new image per unit (segments merge neighbouring units).
    pub segment_len: usize,
    /// Build a full-image payload (ignore `old`).
    pub full: bool,
    /// Mark the update as a 1.x → 2.x migration (header flag `MIGRATION`:
    /// the applier checks the data partition first).
    pub migration: bool,
    /// Largest merged segment, in bytes of new image (at most
    /// `segment_len` disables merging).
    pub merge_len: usize,
    /// Let segments copy new content that earlier segments carry (see
    /// [`copy_repeats`]); off, every segment depends on the old image only.
    pub copy_new: bool,
    /// Give payloads window lists, so that windows leave out long old runs
    /// that COPY ops take whole (see [`CopiedRuns`]); off, every window is
    /// one contiguous old range (readable without `FLAG_WINDOW_LIST`).
    pub window_list: bool,
    /// See through the gzip and zlib files of file-system images: rebuild
    /// changed ones from their inflated content (deflate segments, format
    /// version 3, see [`crate::generate::content`]); off, every delta is version 2.
    pub deflate: bool,
    /// Compress segments of mostly new bytes with LZMA2 after a branch
    /// filter chosen from the new image's executables, where that is
    /// smaller than zstd (LZMA segments, format version 4, see
    /// [`crate::lzma`]); off, no delta is version 4.
    pub lzma: bool,
    /// Make each changed ELF file of a file-system image from its old
    /// partner (same path, or same name but for its version), with the
    /// partner's calls, jumps and PC-relative loads projected to where the
    /// new file has them, where that is smaller than plain segments
    /// (executable segments, format version 6, see
    /// [`crate::generate::exec`]); off, no delta is version 6.
    pub exec: bool,
    /// Share the payload bytes out over the files of the new image
    /// ([`Delta::report`], see [`crate::generate::report`]).
    pub report: bool,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            diff: DiffOptions::default(),
            encode: EncodeOptions::default(),
            segment_len: 4 << 20,
            full: false,
            migration: false,
            merge_len: MAX_MERGED_LEN,
            copy_new: true,
            window_list: true,
            deflate: true,
            lzma: true,
            exec: true,
            report: false,
        }
    }
}

/// A generated delta: its header, segment table and payloads.
#[derive(Debug, Clone)]
pub struct Delta {
    /// The header, digests and flags included.
    pub header: Header,
    /// The table: one entry per segment, in order.
    pub segments: Vec<SegmentEntry>,
    /// The payloads, in table order.
    pub payloads: Vec<Vec<u8>>,
    /// Bytes of new image copied from earlier segments (COPY_NEW ops).
    pub copy_new_len: u64,
    /// Signatures of the table digest (see [`Delta::sign`]).
    pub signatures: Vec<delta_format::signature::Signature>,
    /// What the container map found and the deflate segments made of it.
    pub content: ContentSummary,
    /// Where the payload bytes go, by file (with [`DeltaOptions::report`]).
    pub report: Option<Report>,
}

impl Delta {
    /// Signs the delta with each of `keys`: sets the header's signed flag
    /// (which changes the table digest, so signatures made before are
    /// dropped) and adds one signature per key.
    ///
    /// # Errors
    /// [`Error::Key`](crate::Error::Key) for more keys than a signature
    /// block holds.
    pub fn sign(&mut self, keys: &[crate::signature::SecretKey]) -> crate::Result<()> {
        let max = delta_format::signature::MAX_SIGNATURES as usize;
        if keys.is_empty() || keys.len() > max {
            return Err(crate::Error::Key {
                reason: format!("a delta holds 1 to {max} signatures, not {}", keys.len()),
            });
        }
        self.header.flags |= delta_format::FLAG_SIGNED;
        let digest = self.table_digest();
        self.signatures = keys.iter().map(|k| k.sign(&digest)).collect();
        Ok(())
    }

    /// The digest of the header and table, as written.
    pub fn table_digest(&self) -> delta_format::Digest {
        Index::encode_with_digest(&self.header, &self.segments).1
    }

    /// The length of the delta file [`write_to`](Delta::write_to) writes,
    /// in bytes.
    pub fn file_len(&self) -> u64 {
        let table = Index::encode(&self.header, &self.segments).len() as u64;
        let block = if self.header.is_signed() {
            delta_format::signature::encode_block(&self.signatures).len() as u64
        } else {
            0
        };
        let payloads: u64 = self.payloads.iter().map(|p| p.len() as u64).sum();
        table + block + payloads
    }

    /// Writes the delta file (header, table, payloads) to `out` and returns
    /// its length in bytes.
    ///
    /// # Errors
    /// The write error.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<u64> {
        let table = Index::encode(&self.header, &self.segments);
        out.write_all(&table)?;
        let mut len = table.len() as u64;
        if self.header.is_signed() {
            let block = delta_format::signature::encode_block(&self.signatures);
            out.write_all(&block)?;
            len += block.len() as u64;
        }
        for payload in &self.payloads {
            out.write_all(payload)?;
            len += payload.len() as u64;
        }
        Ok(len)
    }

    /// The delta file's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a vector does not fail");
        out
    }
}

/// A new image and the work on it that does not depend on the old image,
/// kept for the next generation to it ([`generate_reusing`]): its digest, its
/// container map, its LZMA branch filter, and the analysis of its gzip and
/// zlib files (inflating each with preflate and proving the corrections
/// that re-deflate it bit-exactly). Each is worked out when a
/// generation first needs it, and later generations to this image, from
/// any old image and with any options, take it as it is: the deltas are
/// byte for byte those [`generate`] makes.
///
/// Made with [`NewImage::for_many`], it also keeps the segments whose
/// payload depends on the new image alone (no old-image window: the
/// literal-only segments, new files' bytes compressed with zstd or LZMA2),
/// and a later generation whose plan gives the same segment (same range,
/// same op stream, same encoding options) takes it as it is. It keeps the
/// plans of its executable segments too (each changed ELF file planned
/// against its old partner, projected or not, with the suffix-array
/// matcher): a later generation whose old partner holds the same bytes,
/// wherever it lies in its image, takes the plan as it is. Old releases of
/// one product share most of their libraries.
///
/// Memory: besides the map, the content of the gzip and zlib files
/// analysed so far (the deflate candidates of the generations made), and
/// with [`NewImage::for_many`] the payloads of those segments (at most
/// the literal part of each delta) and the executable plans (about the
/// size of each distinct old partner plus its new file).
#[derive(Debug)]
pub struct NewImage<'a> {
    bytes: &'a [u8],
    digest: OnceLock<delta_format::Digest>,
    map: OnceLock<MapResult>,
    filter: OnceLock<BranchFilter>,
    streams: deflate::Streams,
    /// Encoded segments without an old window, when kept.
    segments: Option<Mutex<HashMap<SegmentKey, Encoded>>>,
    /// Executable segments as planned ([`exec::prepare`]), by the digest
    /// of the old file's bytes and the new file's range, when kept: old
    /// images of one product share most of their files.
    execs: Option<Mutex<HashMap<ExecKey, Arc<exec::Prepared>>>>,
}

/// What an executable segment's plan depends on: the old file's bytes (by
/// digest) and the new file (by its range of the new image).
type ExecKey = ([u8; 32], Range<usize>);

/// What the payload of a segment without an old-image window depends on
/// (besides the new image): its range, its op stream and how it is
/// encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SegmentKey {
    range: Range<usize>,
    stream: [u8; 32],
    level: i32,
    max_memory: u64,
    lzma: Option<u8>,
    listed: bool,
}

impl<'a> NewImage<'a> {
    /// The new image `bytes`, nothing of it worked out yet.
    pub fn new(bytes: &'a [u8]) -> NewImage<'a> {
        NewImage {
            bytes,
            digest: OnceLock::new(),
            map: OnceLock::new(),
            filter: OnceLock::new(),
            streams: deflate::Streams::default(),
            segments: None,
            execs: None,
        }
    }

    /// [`NewImage::new`] for several generations to this image: it keeps
    /// the segments without an old-image window too.
    pub fn for_many(bytes: &'a [u8]) -> NewImage<'a> {
        NewImage {
            segments: Some(Mutex::default()),
            execs: Some(Mutex::default()),
            ..NewImage::new(bytes)
        }
    }

    /// [`encode_segment`], taken from the kept segments when the plan
    /// reads no old window and the same segment was encoded before.
    #[allow(clippy::too_many_arguments)]
    fn encode_segment(
        &self,
        old: &[u8],
        range: &Range<usize>,
        produced: Produced<'_>,
        plan: &crate::generate::plan::SegmentPlan,
        layout: WindowLayout<'_>,
        options: &EncodeOptions,
        lzma: Option<BranchFilter>,
    ) -> Result<Encoded> {
        let Some(kept) = self
            .segments
            .as_ref()
            .filter(|_| plan.reference.is_empty() && plan.alternatives.is_empty())
        else {
            return encode_segment(old, produced, plan, layout, options, lzma);
        };
        let stream = delta_format::stream::encode(&plan.ops, &plan.diff, &plan.literal);
        let key = SegmentKey {
            range: range.clone(),
            stream: *blake3::hash(&stream).as_bytes(),
            level: options.level,
            max_memory: options.max_memory,
            lzma: lzma.map(|f| f as u8),
            listed: matches!(layout, WindowLayout::Gathered(_)),
        };
        drop(stream);
        let lock = || kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = lock().get(&key) {
            return Ok(found.clone());
        }
        let encoded = encode_segment(old, produced, plan, layout, options, lzma)?;
        lock().insert(key, encoded.clone());
        Ok(encoded)
    }

    /// [`exec::prepare`], taken from the kept plans when an earlier
    /// generation planned the same new file against an old file of the
    /// same bytes.
    fn prepare_exec(
        &self,
        old: &[u8],
        pair: &exec::Pair,
        digest: delta_format::Digest,
    ) -> Result<exec::Prepared> {
        let Some(kept) = &self.execs else {
            return exec::prepare(old, self.bytes, pair, digest, true);
        };
        let file = exec::old_file(old, pair);
        let key = (*blake3::hash(&file).as_bytes(), pair.new.clone());
        let lock = || kept.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = lock().get(&key).cloned() {
            return Ok(found.for_pair(pair));
        }
        let prepared = exec::prepare_file(file, self.bytes, pair, digest, true)?;
        lock().insert(key, Arc::new(prepared.clone()));
        Ok(prepared)
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn digest<R: Runner>(&self, runner: &R) -> delta_format::Digest {
        *self.digest.get_or_init(|| runner.digest(self.bytes))
    }

    fn map(&self) -> &MapResult {
        self.map.get_or_init(|| map_one(self.bytes))
    }

    fn branch_filter(&self) -> BranchFilter {
        *self.filter.get_or_init(|| branch_filter(self.bytes))
    }
}

/// Generates a delta from `old` (ignored for a full payload) to `new`: the
/// one pipeline, with its work run by `runner` (see the module docs).
///
/// Memory: both images as slices, the block index of `old` (dropped once
/// the units are planned), the plans of all segments, and the payloads.
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails, or what
/// [`Runner::check`] reports.
pub fn generate<R: Runner>(
    old: &[u8],
    new: &[u8],
    options: &DeltaOptions,
    runner: &R,
) -> Result<Delta, R::Error> {
    generate_reusing(old, &NewImage::new(new), options, runner)
}

/// [`generate`] to a [`NewImage`]: what earlier generations to it worked
/// out of the new image alone is taken as it is, and what this one works
/// out is kept in it for the next. The delta is the same, byte for byte.
///
/// # Errors
/// As [`generate`].
pub fn generate_reusing<R: Runner>(
    old: &[u8],
    new_image: &NewImage<'_>,
    options: &DeltaOptions,
    runner: &R,
) -> Result<Delta, R::Error> {
    let new = new_image.bytes;
    let old = if options.full { &[][..] } else { old };
    let indexing = Tally::start(runner, Phase::Indexing, (old.len() + new.len()) as u64);
    let ((old_digest, new_digest), index) = runner.join(
        || runner.join(|| runner.digest(old), || new_image.digest(runner)),
        || BlockIndex::build(old, options.diff.block_size, runner),
    );
    runner.hashed(&old_digest, &new_digest);
    let Mapped {
        deflate: pairs,
        exec: exec_pairs,
        mut content,
        spans: report_spans,
    } = map_content(old, new_image, options);
    indexing.finish();
    let deflated = deflate_segments(old, new_image, pairs, options, runner)?;
    let lzma = options.lzma.then(|| new_image.branch_filter());
    let execs = exec_segments(old, new_image, exec_pairs, &index, options, lzma, runner)?;
    let mut holes: Vec<_> = (deflated.iter().chain(&execs))
        .map(|m| m.range.clone())
        .collect();
    holes.sort_by_key(|range| range.start);
    let units = alike(split_around(new.len(), options.segment_len, &holes));
    let planning = Tally::start(runner, Phase::Planning, span(&units));
    let units = runner.map(units, |range| {
        let plan = plan_segment(old, new, range.clone(), &index, &options.diff);
        planning.add(range.len() as u64);
        (range, plan)
    });
    planning.finish();
    drop(index);
    let segments = arrange(
        units,
        options.merge_len,
        options.diff.max_reference,
        old.len() as u64,
    );
    let (segments, copy_new_len) = if options.copy_new && !options.full {
        copy_repeats(segments, new, &holes, runner)
    } else {
        (segments, 0)
    };
    // Deflate segments read the streams before them back from the new
    // image (see `deflate::encode`) when COPY_NEW is allowed.
    let copy_new = copy_new_len > 0 || (!deflated.is_empty() && options.copy_new);
    let copied = CopiedRuns::from_plans(segments.iter().map(|(_, plan)| plan));
    let layout = if options.window_list {
        WindowLayout::Gathered(&copied)
    } else {
        WindowLayout::Contiguous
    };
    let encoding_total = segments.iter().map(|(range, _)| range.len() as u64).sum();
    let encoding = Tally::start(runner, Phase::Encoding, encoding_total);
    let encoded = runner.map(
        segments
            .into_iter()
            .map(|(range, plan)| (encode_cost(&range, &plan, layout), (range, plan)))
            .collect(),
        |(range, plan)| {
            let bytes = &new[range.clone()];
            let produced = Produced {
                bytes,
                digest: runner.digest(bytes),
            };
            let encoded = new_image.encode_segment(
                old,
                &range,
                produced,
                &plan,
                layout,
                &options.encode,
                lzma,
            )?;
            encoding.add(range.len() as u64);
            let pieces = if options.report {
                plain_pieces(range.start as u64, &plan, encoded.kind == kind::LZMA)
            } else {
                Vec::new()
            };
            Ok::<_, R::Error>((
                Made::new(range, encoded.entry, encoded.payload, pieces),
                encoded.kind,
            ))
        },
    );
    let encoded = encoded.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Kind bytes only where a segment is not plain: otherwise the delta
    // stays version 2.
    let any_lzma = encoded.iter().any(|(_, kind)| *kind == kind::LZMA);
    let any_chunks = (deflated.iter()).any(|m| m.payload.first() == Some(&kind::DEFLATE_CHUNKS));
    let any_exec = !execs.is_empty();
    let kinds = !deflated.is_empty() || any_lzma || any_exec;
    let mut all: Vec<Made> = encoded
        .into_iter()
        .map(|(made, kind)| if kinds { made.with_kind(kind) } else { made })
        .collect();
    let checks = SegmentChecks {
        copy_new,
        window_list: options.window_list,
        kinds,
        lzma: any_lzma,
    };
    checks.run(&all, old, new, runner)?;
    encoding.finish();
    content.deflate_segments = deflated.len() as u64;
    content.deflate_bytes = deflated.iter().map(|m| m.entry.new_len).sum();
    content.deflate_payload = deflated.iter().map(|m| m.entry.payload_len).sum();
    content.exec_segments = execs.len() as u64;
    content.exec_bytes = execs.iter().map(|m| m.entry.new_len).sum();
    content.exec_payload = execs.iter().map(|m| m.entry.payload_len).sum();
    all.extend(deflated);
    all.extend(execs);
    all.sort_by_key(|m| m.range.start);
    let mut costs = Vec::new();
    let (segments, payloads): (Vec<_>, Vec<_>) = all
        .into_iter()
        .map(|m| {
            costs.push((m.entry.payload_len, m.pieces));
            (m.entry, m.payload)
        })
        .unzip();
    let flag = |on: bool, flag| if on { flag } else { 0 };
    let header = Header {
        flags: flag(options.full, FLAG_FULL)
            | flag(copy_new, FLAG_COPY_NEW)
            | flag(options.window_list, FLAG_WINDOW_LIST)
            | flag(options.migration, FLAG_MIGRATION)
            | flag(kinds, FLAG_SEGMENT_KINDS)
            | flag(any_lzma, FLAG_LZMA)
            | flag(any_chunks, FLAG_DEFLATE_CHUNKS)
            | flag(any_exec, FLAG_EXEC),
        old_len: old.len() as u64,
        new_len: new.len() as u64,
        old_digest,
        new_digest,
        block_size: options.diff.block_size as u32,
        zstd_level: options.encode.level,
        max_segment_len: segments.iter().map(|s| s.new_len).max().unwrap_or(0),
        apply_memory: segments.iter().map(SegmentEntry::memory).max().unwrap_or(0),
        segment_count: segments.len() as u64,
    };
    let report = report_spans.map(|spans| {
        let table = Index::encode(&header, &segments).len() as u64;
        crate::generate::report::build(content.container.clone(), spans, &costs, table)
    });
    Ok(Delta {
        header,
        segments,
        payloads,
        copy_new_len,
        signatures: Vec::new(),
        content,
        report,
    })
}

/// What the images hold, as far as the options need it (see [`map_content`]).
struct Mapped {
    /// The gzip and zlib files of the new image with their old versions.
    deflate: Vec<deflate::Pair>,
    /// The changed ELF files of the new image with their old partners.
    exec: Vec<exec::Pair>,
    /// The content summary.
    content: ContentSummary,
    /// The report's file spans (with `options.report`).
    spans: Option<Vec<FileSpan>>,
}

/// What the images hold, as far as `options` need it: the gzip and zlib
/// files of the new image with their old versions (deflate segments), its
/// changed ELF files with their partners (executable segments), the
/// content summary, and the report's file spans.
fn map_content(old: &[u8], new_image: &NewImage<'_>, options: &DeltaOptions) -> Mapped {
    let new = new_image.bytes;
    let mapped = !options.full && (options.deflate || options.exec || options.report);
    let (maps, mut content) = if mapped {
        map_both(old, new_image.map())
    } else {
        (None, ContentSummary::default())
    };
    let (deflate, exec) = match &maps {
        Some((old_map, new_map)) => (
            if options.deflate {
                deflate_pairs(old_map, new_map, old, new)
            } else {
                Vec::new()
            },
            if options.exec {
                exec::exec_pairs(old_map, new_map, old, new)
            } else {
                Vec::new()
            },
        ),
        None => (Vec::new(), Vec::new()),
    };
    content.deflate_candidates = deflate.len() as u64;
    content.exec_candidates = exec.len() as u64;
    let spans = match (&maps, options.report) {
        (Some((old_map, new_map)), true) => {
            let old_paths = old_map.files.iter().map(|f| f.path.clone()).collect();
            let partners = (deflate.iter())
                .filter_map(|p| Some((p.path.clone(), p.old_path.clone()?)))
                .chain(exec.iter().map(|p| (p.path.clone(), p.old_path.clone())))
                .collect();
            Some(crate::generate::report::spans(
                new_map, &old_paths, &partners,
            ))
        }
        (None, true) => Some(Vec::new()),
        _ => None,
    };
    Mapped {
        deflate,
        exec,
        content,
        spans,
    }
}

/// A segment made: the new range it produces, its table entry, its payload
/// (kind byte first when the delta has kinds) and the report's pieces of it.
struct Made {
    range: Range<usize>,
    entry: SegmentEntry,
    payload: Vec<u8>,
    pieces: Vec<Piece>,
}

impl Made {
    fn new(range: Range<usize>, entry: SegmentEntry, payload: Vec<u8>, pieces: Vec<Piece>) -> Made {
        Made {
            range,
            entry,
            payload,
            pieces,
        }
    }

    /// The segment with its kind byte before the payload (a delta whose
    /// header has `FLAG_SEGMENT_KINDS`).
    fn with_kind(mut self, kind: u8) -> Made {
        self.payload.insert(0, kind);
        self.entry.payload_len += 1;
        self.entry.payload_digest = *blake3::hash(&self.payload).as_bytes();
        self
    }
}

/// The deflate segments of the candidate gzip and zlib files `pairs` (see
/// [`deflate_pairs`]) that round-trip and are worth it, each checked by
/// `runner`, in new-image order.
fn deflate_segments<R: Runner>(
    old: &[u8],
    new_image: &NewImage<'_>,
    pairs: Vec<deflate::Pair>,
    options: &DeltaOptions,
    runner: &R,
) -> Result<Vec<Made>, R::Error> {
    let new = new_image.bytes;
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let total = pairs.iter().map(|pair| pair.new.len() as u64).sum();
    let items = pairs
        .into_iter()
        .map(|pair| (pair.new.len() as u64, pair))
        .collect();
    let deflating = Tally::start(runner, Phase::Deflating, total);
    let analyses: Vec<_> = runner
        .map(items, |pair| {
            deflate::analyse(old, new, pair, &new_image.streams)
        })
        .into_iter()
        .flatten()
        .collect();
    let items = (0..analyses.len())
        .map(|i| (analyses[i].inflated.raw.len() as u64, i))
        .collect();
    let encoded = runner.map(items, |i| {
        let done = analyses[i].new.len() as u64;
        let encoded = deflate_segment(old, new, &analyses, i, options, runner);
        deflating.add(done);
        encoded
    });
    deflating.finish();
    let deflated: Vec<_> = encoded
        .into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()?;
    Ok(deflated)
}

/// The deflate segment of `analyses[i]`, checked by `runner`, if it is
/// worth it.
fn deflate_segment<R: Runner>(
    old: &[u8],
    new: &[u8],
    analyses: &[deflate::Analysis],
    i: usize,
    options: &DeltaOptions,
    runner: &R,
) -> Result<Option<Made>, R::Error> {
    let history = options.copy_new;
    let range = analyses[i].new.clone();
    let digest = runner.digest(&new[range.clone()]);
    let Some((entry, payload)) =
        deflate::encode(new, analyses, i, history, digest, options.encode.level)?
    else {
        return Ok(None);
    };
    let segment = SegmentRef {
        index: 0,
        new_offset: range.start as u64,
        payload_offset: 0,
        entry: &entry,
        new_limit: if history { range.start as u64 } else { 0 },
        window_list: options.window_list,
        kinds: true,
        allowed: Kinds {
            lzma: false,
            deflate_chunks: true,
            exec: false,
        },
    };
    runner.check(old, new, segment, &payload)?;
    let piece = Piece {
        range: range.start as u64..range.end as u64,
        how: crate::generate::report::How::Deflate,
        weight: 1,
    };
    Ok(Some(Made::new(range, entry, payload, vec![piece])))
}

/// The executable segments of the candidate ELF files `pairs` (see
/// [`exec::exec_pairs`]) that are smaller than the plain segment of the
/// same bytes, each checked by `runner`, in new-image order.
fn exec_segments<R: Runner>(
    old: &[u8],
    new_image: &NewImage<'_>,
    pairs: Vec<exec::Pair>,
    index: &BlockIndex,
    options: &DeltaOptions,
    lzma: Option<BranchFilter>,
    runner: &R,
) -> Result<Vec<Made>, R::Error> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let total = pairs.iter().map(|pair| pair.new.len() as u64).sum();
    let items = pairs
        .into_iter()
        .map(|pair| (pair.new.len() as u64, pair))
        .collect();
    let tally = Tally::start(runner, Phase::Executables, total);
    let made = runner.map(items, |pair| {
        let made = exec_segment(old, new_image, &pair, index, options, lzma, runner);
        tally.add(pair.new.len() as u64);
        made
    });
    tally.finish();
    made.into_iter()
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()
}

/// Bytes an executable segment must save over the plain segment of the
/// same bytes: two table entries and frame headers (it splits a plain
/// segment in two). On os-minor, files whose build ID alone changed cost
/// about 145 bytes either way, and 55 such segments made the delta larger.
const EXEC_MARGIN: u64 = 2 * delta_format::ENTRY_LEN as u64 + 64;

/// Most an executable segment may cost, in percent of the plain segment of
/// the same bytes, both compressed at the probe level. That plain segment
/// stands alone, and so costs more than the same bytes inside a merged
/// segment that may also copy earlier new bytes: on os-major (bookworm to
/// trixie) 95% let 329 files through and made the delta 0.5% larger than
/// without executable segments, 85% 1.7% smaller; the point releases lose
/// little (arm64-minor 985,862 bytes at 95%, 1,008,830 at 85%).
const EXEC_SHARE: u64 = 85;

/// The executable segment of `pair`, checked by `runner`, if it is smaller
/// than the plain segment of the same bytes would be, by more than
/// [`EXEC_MARGIN`] and to at most [`EXEC_SHARE`].
fn exec_segment<R: Runner>(
    old: &[u8],
    new_image: &NewImage<'_>,
    pair: &exec::Pair,
    index: &BlockIndex,
    options: &DeltaOptions,
    lzma: Option<BranchFilter>,
    runner: &R,
) -> Result<Option<Made>, R::Error> {
    let new = new_image.bytes;
    let range = pair.new.clone();
    // The applier holds the old file whole: one past the segment's memory
    // is not worth planning.
    if pair.old_len() > options.encode.max_memory {
        return Ok(None);
    }
    let produced = Produced {
        bytes: &new[range.clone()],
        digest: runner.digest(&new[range.clone()]),
    };
    // Both are compared compressed at the probe level; only the segment
    // kept is compressed at the delta's level.
    let probe = EncodeOptions {
        level: exec::PROBE_LEVEL,
        ..options.encode.clone()
    };
    let plan = plan_segment(old, new, range.clone(), index, &options.diff);
    let layout = WindowLayout::Contiguous;
    let plain = encode_segment(old, produced, &plan, layout, &probe, lzma)?;
    let prepared = new_image.prepare_exec(old, pair, produced.digest)?;
    // The segment costs a table entry, and splits the plain segment around
    // it in two: it must win by more than that.
    let (exec_len, plain_len) = (prepared.probe_len, plain.entry.payload_len);
    let worth = exec_len + EXEC_MARGIN < plain_len && exec_len * 100 < plain_len * EXEC_SHARE;
    if !worth {
        return Ok(None);
    }
    let Some(made) = exec::finish(prepared, produced, &options.encode)? else {
        return Ok(None);
    };
    let segment = SegmentRef {
        index: 0,
        new_offset: range.start as u64,
        payload_offset: 0,
        entry: &made.entry,
        new_limit: 0,
        window_list: options.window_list,
        kinds: true,
        allowed: Kinds {
            exec: true,
            ..Kinds::default()
        },
    };
    runner.check(old, new, segment, &made.payload)?;
    let piece = Piece {
        range: range.start as u64..range.end as u64,
        how: crate::generate::report::How::Exec,
        weight: 1,
    };
    Ok(Some(Made::new(
        range,
        made.entry,
        made.payload,
        vec![piece],
    )))
}

/// How the plain and LZMA segments are read: what [`SegmentRef`] needs
/// besides each one's place.
struct SegmentChecks {
    copy_new: bool,
    window_list: bool,
    kinds: bool,
    lzma: bool,
}

impl SegmentChecks {
    /// Has `runner` check every encoded segment, as the delta holds it.
    fn run<R: Runner>(
        &self,
        all: &[Made],
        old: &[u8],
        new: &[u8],
        runner: &R,
    ) -> Result<(), R::Error> {
        let checked = runner.map(
            all.iter()
                .enumerate()
                .map(|(i, made)| (made.entry.new_len, (i, made)))
                .collect(),
            |(i, made)| {
                let start = made.range.start as u64;
                let segment = SegmentRef {
                    index: i as u64,
                    new_offset: start,
                    payload_offset: 0,
                    entry: &made.entry,
                    // COPY_NEW ops read what the segments before wrote.
                    new_limit: if self.copy_new { start } else { 0 },
                    window_list: self.window_list,
                    kinds: self.kinds,
                    allowed: Kinds {
                        lzma: self.lzma,
                        deflate_chunks: false,
                        exec: false,
                    },
                };
                runner.check(old, new, segment, &made.payload)
            },
        );
        checked.into_iter().collect()
    }
}

/// The branch filter for LZMA segments of `new`: that of the machine most
/// ELF headers found at 512-byte boundaries name (where ext4 and tar
/// files start), or none.
fn branch_filter(new: &[u8]) -> BranchFilter {
    const EM_386: u16 = 3;
    const EM_ARM: u16 = 40;
    const EM_X86_64: u16 = 62;
    const EM_AARCH64: u16 = 183;
    let mut votes = [0u64; 4];
    for header in new.chunks_exact(512) {
        // Magic, 32- or 64-bit, little-endian, version 1.
        if header[..4] != *b"\x7fELF"
            || !matches!(header[4], 1 | 2)
            || header[5] != 1
            || header[6] != 1
        {
            continue;
        }
        let machine = u16::from_le_bytes([header[18], header[19]]);
        let filter = match machine {
            EM_386 | EM_X86_64 => BranchFilter::X86,
            EM_AARCH64 => BranchFilter::Arm64,
            EM_ARM => BranchFilter::ArmThumb,
            _ => BranchFilter::None,
        };
        votes[filter as usize] += 1;
    }
    let filters = [
        BranchFilter::None,
        BranchFilter::X86,
        BranchFilter::Arm64,
        BranchFilter::ArmThumb,
    ];
    let best = (1..4).max_by_key(|&i| votes[i]).unwrap_or(0);
    if votes[best] > 0 {
        filters[best]
    } else {
        BranchFilter::None
    }
}

/// Bytes of new image in `units`.
fn span(units: &[(u64, Range<usize>)]) -> u64 {
    units.iter().map(|(_, range)| range.len() as u64).sum()
}

/// [`split`] of the new image's `len` bytes into units of `step`, around
/// `holes` (sorted, disjoint): the ranges that deflate segments produce.
fn split_around(len: usize, step: usize, holes: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut units = Vec::new();
    let mut at = 0;
    for hole in holes.iter().chain(std::iter::once(&(len..len))) {
        units.extend(
            split(hole.start - at, step)
                .into_iter()
                .map(|r| r.start + at..r.end + at),
        );
        at = hole.end;
    }
    units
}

/// Generates a whole delta in memory on one thread ([`generate`] with
/// [`Serial`]): the reference generator of the tests and fuzz targets.
///
/// # Errors
/// [`Error::Compress`](crate::Error::Compress) when zstd fails.
pub fn diff_slices(old: &[u8], new: &[u8], options: &DeltaOptions) -> Result<Vec<u8>> {
    Ok(generate(old, new, options, &Serial)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{mutate, Rng};

    #[test]
    fn migration_sets_one_header_flag_and_changes_nothing_else() {
        let mut rng = Rng::new(12);
        let old = rng.text(300_000);
        let new = mutate(&old, &mut rng, 5);
        let options = DeltaOptions {
            segment_len: 64 << 10,
            ..DeltaOptions::default()
        };
        let plain = generate(&old, &new, &options, &Serial).unwrap();
        let migration = DeltaOptions {
            migration: true,
            ..options
        };
        let marked = generate(&old, &new, &migration, &Serial).unwrap();
        assert_eq!(marked.header.flags, plain.header.flags | FLAG_MIGRATION);
        assert_eq!(plain.header.flags & FLAG_MIGRATION, 0);
        let unflagged = Header {
            flags: plain.header.flags,
            ..marked.header.clone()
        };
        assert_eq!(unflagged, plain.header);
        assert_eq!(marked.segments, plain.segments);
        assert_eq!(marked.payloads, plain.payloads);
    }
}
