//! Server-side delta generator: picks parameters, builds deltas in
//! parallel, checks them.
//!
//! [`generate`] maps both images ([`memmap2`], read-only) and runs core's
//! one pipeline ([`delta_core::generate`]: index and hash, plan units,
//! merge, copy repeats, encode, header) on a rayon pool: the pool indexes
//! the old image's pieces and hashes both images in parallel, plans every
//! unit and encodes every segment on its own, most costly first, so the
//! work scales with cores. The steps and their order are core's; this crate
//! supplies the threads and policy. Every segment is re-applied right after
//! encoding and compared with the new image, so a generator bug can never
//! ship a delta that does not rebuild its target.
//!
//! Memory: the mapped inputs (paged in by the kernel, not copied), the block
//! index (~0.6% of the old image, plus its fine index: up to three quarters
//! of the old image's size for small images, at most 288 MiB; dropped once
//! the units are planned), the plans of all segments, the index of literal
//! blocks (about one byte per literal byte), and the encoded
//! payloads until they are written (about the delta's size), plus
//! per-thread scratch of a few segments.
//!
//! [`generate`] takes files: regular files or block devices, opened
//! without blocking (anything else is refused up front), checked again for
//! changes before the delta, written to an unnamed temporary file, is put
//! in place; an output that is an input or not a regular file is refused.
//!
//! [`generate_to`] does the same into any writer (standard output), once
//! the inputs are found unchanged. [`GenOptions::progress`] is told each
//! phase ([`GenPhase`]) with bytes done and total, from the worker threads.
//!
//! It deliberately does not stream its inputs: a build server has both
//! images on disk and random access is what finds moved data.
//!
//! ```
//! use delta_gen::{generate_to_vec, GenOptions};
//! let old = vec![1u8; 10_000];
//! let mut new = old.clone();
//! new[5000] = 2;
//! let delta = generate_to_vec(&old, &new, &GenOptions::default()).unwrap();
//! assert_eq!(delta_core::apply_slice(&old, &delta, &Default::default()).unwrap(), new);
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod mmap;
mod output;
mod sign;

pub use delta_core::{Phase as GenPhase, Progress as GenProgress};
pub use error::{Error, Result};
pub use sign::sign_file;

pub use delta_core::{DeltaOptions, DiffOptions, EncodeOptions};

use delta_core::{Patcher, SegmentRef, Sink, Source};
use delta_format::{Digest, SegmentEntry};
use std::cmp::Reverse;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// Receives the generator's progress ([`GenOptions::progress`]), from any
/// worker thread.
pub type GenProgressFn = Arc<dyn Fn(&GenProgress) + Send + Sync>;

/// Knobs of the generator: core's [`DeltaOptions`] (what delta to build,
/// the one place each of its knobs is defined) and the generator's own
/// (threads, keys, output, progress), which change no byte of the delta
/// beyond its signatures. The default replaces no existing output, as
/// `delta gen` without `--force` and the C API.
#[derive(Clone, Default)]
pub struct GenOptions {
    /// What delta to build: segment size, matcher, zstd level, full,
    /// migration, merging, copies of new content, window lists, deflate
    /// and LZMA segments, report (see [`DeltaOptions`]). A missing old
    /// image implies [`DeltaOptions::full`].
    pub delta: DeltaOptions,
    /// Worker threads (0: one per core). At most
    /// [`std::thread::available_parallelism`] are started: threads beyond
    /// the cores cannot run at once and each costs a stack and scratch
    /// (100,000 of them took minutes and hundreds of MiB to start). The
    /// output does not depend on the number.
    pub threads: usize,
    /// Keys that sign the delta (none: unsigned). Each adds a signature of
    /// the table digest; their secret bytes are wiped when dropped.
    pub signing_keys: Vec<delta_core::signature::SecretKey>,
    /// Replace an existing output file (off: [`Error::OutputExists`]
    /// before any work). Never an input, nor anything but a regular file.
    pub replace: bool,
    /// Called as each phase starts and ends and after each unit, segment
    /// or gzip file of a long one (see [`GenPhase`]), from any worker
    /// thread; it must be cheap. The delta does not depend on it.
    pub progress: Option<GenProgressFn>,
}

impl std::fmt::Debug for GenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenOptions")
            .field("delta", &self.delta)
            .field("threads", &self.threads)
            .field("signing_keys", &self.signing_keys)
            .field("replace", &self.replace)
            .field("progress", &self.progress.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl GenOptions {
    fn check(&self) -> Result<()> {
        let bad = |name, reason: &str| {
            Err(Error::Option {
                name,
                reason: reason.into(),
            })
        };
        let delta = &self.delta;
        if !(64..=1 << 20).contains(&delta.diff.block_size) {
            return bad("block_size", "must be 64 bytes to 1 MiB");
        }
        if !(4096..=16 << 20).contains(&delta.segment_len) {
            return bad("segment_len", "must be 4 KiB to 16 MiB");
        }
        if !(1..=22).contains(&delta.encode.level) {
            return bad("level", "zstd levels are 1 to 22");
        }
        if delta.diff.max_reference > 256 << 20 {
            return bad("max_reference", "must be at most 256 MiB");
        }
        Ok(())
    }
}

/// What a generation produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Size of the old image (0 for a full payload).
    pub old_len: u64,
    /// Size of the new image.
    pub new_len: u64,
    /// Size of the delta file.
    pub delta_len: u64,
    /// Number of segments.
    pub segments: u64,
    /// Bytes of new image copied: from the old image, or from new content
    /// an earlier segment carries (`copy_new_len` of them).
    pub copy_len: u64,
    /// Bytes of new image copied from earlier segments (COPY_NEW ops).
    pub copy_new_len: u64,
    /// Bytes of zero runs.
    pub zero_len: u64,
    /// Bytes diffed against the old image.
    pub diff_len: u64,
    /// Bytes sent as literals.
    pub literal_len: u64,
    /// What the container maps found, and the deflate segments made.
    pub content: delta_core::ContentSummary,
    /// Where the payload bytes go, by file (with [`DeltaOptions::report`]).
    pub report: Option<delta_core::Report>,
}

/// Generates a delta from the file `old` (None: a full payload) to `new`,
/// written to `out` only once complete and checked.
///
/// The inputs must be regular files or block devices (read at their real
/// size); they are opened without blocking and anything else is refused
/// before any work. An existing `out` must be a regular file that is not
/// an input; it is replaced by rename, never written through. The delta is
/// written to an unnamed temporary file in `out`'s folder and linked into
/// place after the inputs are found unchanged: same size, modification and
/// status-change times as when opened, and the same digests when hashed
/// again. A run that fails or dies leaves neither `out` nor `out.tmp`
/// (except on file systems without `O_TMPFILE`, where a killed run can
/// leave `out.tmp`; see the `output` module).
///
/// # Errors
/// I/O errors naming the file, an input that is not an image or changed
/// during the run, an output that is an input or not a regular file, bad
/// options, or a failed self-check.
pub fn generate(
    old: Option<&Path>,
    new: &Path,
    out: &Path,
    options: &GenOptions,
) -> Result<Summary> {
    let run = Inputs::open(old, new, options)?;
    let target = output::Target::prepare(out, &run.list(), options.replace)?;
    run.write_file(&delta_core::NewImage::new(run.new.bytes()), target, out)
}

/// Generates a delta from the file `old` (None: a full payload) to `new`
/// and writes it to `out` (e.g. standard output), once the inputs are
/// found unchanged: [`generate`] without an output file. Nothing is written
/// when generation or that check fails; a failure while writing leaves a
/// partial delta in `out`, which the caller must discard.
///
/// # Errors
/// As [`generate`], with [`Error::Output`] when writing to `out` fails.
pub fn generate_to(
    old: Option<&Path>,
    new: &Path,
    out: &mut dyn Write,
    options: &GenOptions,
) -> Result<Summary> {
    let run = Inputs::open(old, new, options)?;
    let (delta, workers) = run.build()?;
    run.check_unchanged(&workers)?;
    write_delta(delta, &workers, run.lengths(), out)
}

/// Generates a delta from each of the files `olds` to `new`, into
/// `out_dir`, each named as [`many_outputs`] says: what [`generate`] makes
/// of each old image, byte for byte, but with the work on the new image
/// alone done once for all (its digest, its container map and the
/// analysis of its gzip and zlib files, and the segments that read no
/// old image, see [`delta_core::NewImage::for_many`]).
/// The deltas are made one after the other, each with all the threads.
///
/// Every input is opened and every output checked (see [`generate`])
/// before any work; each delta is put in place as soon as it is made, so
/// a failure leaves the ones before it. `options.delta.full` is refused
/// (a full payload has no old image: use [`generate`]).
///
/// # Errors
/// As [`generate`]; [`Error::Option`] for no old image, a full payload,
/// or two old images that would give one output name.
pub fn generate_many(
    olds: &[&Path],
    new: &Path,
    out_dir: &Path,
    options: &GenOptions,
) -> Result<Vec<Summary>> {
    generate_many_with(olds, new, out_dir, options, &mut |_, _| {})
}

/// [`generate_many`], telling `done` each delta's path and summary as soon
/// as it is in place.
///
/// # Errors
/// As [`generate_many`].
pub fn generate_many_with(
    olds: &[&Path],
    new: &Path,
    out_dir: &Path,
    options: &GenOptions,
    done: &mut dyn FnMut(&Path, &Summary),
) -> Result<Vec<Summary>> {
    if options.delta.full {
        return Err(Error::Option {
            name: "full",
            reason: "a full payload has no old images to make deltas from".into(),
        });
    }
    let outs = many_outputs(olds, out_dir)?;
    let mut run = Inputs::open_new(new, options)?;
    let opened = olds
        .iter()
        .map(|path| mmap::Input::open(path, mmap::Role::Old))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<&mmap::Input> = opened.iter().chain([&run.new]).collect();
    let targets = outs
        .iter()
        .map(|out| output::Target::prepare(out, &inputs, options.replace))
        .collect::<Result<Vec<_>>>()?;
    let new_image = delta_core::NewImage::for_many(run.new.bytes());
    let mut summaries = Vec::with_capacity(olds.len());
    for ((old, target), out) in opened.into_iter().zip(targets).zip(&outs) {
        run.old = Some(old);
        let summary = run.write_file(&new_image, target, out)?;
        done(out, &summary);
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The deltas [`generate_many`] writes: `out_dir/NAME.delta` for each old
/// image, NAME its file name without the last extension (`old.img`:
/// `old.delta`).
///
/// # Errors
/// [`Error::Option`] for no old image, an old path without a file name,
/// or two that give the same name.
pub fn many_outputs(olds: &[&Path], out_dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let bad = |reason: String| Error::Option {
        name: "from",
        reason,
    };
    if olds.is_empty() {
        return Err(bad("give at least one old image".into()));
    }
    let mut outs: Vec<std::path::PathBuf> = Vec::with_capacity(olds.len());
    for old in olds {
        let stem = old
            .file_stem()
            .ok_or_else(|| bad(format!("{} has no file name", old.display())))?;
        let mut name = stem.to_owned();
        name.push(".delta");
        let out = out_dir.join(name);
        if let Some(i) = outs.iter().position(|o| *o == out) {
            return Err(bad(format!(
                "{} and {} would both be written to {}; give the old images distinct names",
                olds[i].display(),
                old.display(),
                out.display()
            )));
        }
        outs.push(out);
    }
    Ok(outs)
}

/// The opened inputs of a file generation, with its options and pool.
struct Inputs {
    options: GenOptions,
    pool: rayon::ThreadPool,
    old: Option<mmap::Input>,
    new: mmap::Input,
}

impl Inputs {
    fn open(old: Option<&Path>, new: &Path, options: &GenOptions) -> Result<Inputs> {
        let mut options = options.clone();
        options.delta.full |= old.is_none();
        let pool = thread_pool(&options)?;
        // A full payload does not read the old image.
        let old = old
            .filter(|_| !options.delta.full)
            .map(|path| mmap::Input::open(path, mmap::Role::Old))
            .transpose()?;
        let new = mmap::Input::open(new, mmap::Role::New)?;
        Ok(Inputs {
            options,
            pool,
            old,
            new,
        })
    }

    /// The new image alone, for [`generate_many`] (which sets `old` for
    /// each delta in turn).
    fn open_new(new: &Path, options: &GenOptions) -> Result<Inputs> {
        let pool = thread_pool(options)?;
        let new = mmap::Input::open(new, mmap::Role::New)?;
        Ok(Inputs {
            options: options.clone(),
            pool,
            old: None,
            new,
        })
    }

    /// Builds the delta (reusing `new_image`), writes it to `target` (the
    /// file `out`), checks the inputs again and puts it in place.
    fn write_file(
        &self,
        new_image: &delta_core::NewImage<'_>,
        target: output::Target,
        out: &Path,
    ) -> Result<Summary> {
        let io = |op, source| Error::Io {
            op,
            path: out.to_owned(),
            source,
        };
        let (delta, workers) = self.build_to(new_image)?;
        let mut writer = BufWriter::with_capacity(1 << 20, target.file());
        let summary =
            write_delta(delta, &workers, self.lengths(), &mut writer).map_err(|e| match e {
                // Write errors name the output file.
                Error::Output { source } => io("write", source),
                e => e,
            })?;
        let file = writer
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        self.check_unchanged(&workers)?;
        target.commit()?;
        Ok(summary)
    }

    fn list(&self) -> Vec<&mmap::Input> {
        self.old.iter().chain([&self.new]).collect()
    }

    /// Old and new image lengths (old: 0 for a full payload).
    fn lengths(&self) -> (u64, u64) {
        (self.old_bytes().len() as u64, self.new.bytes().len() as u64)
    }

    fn old_bytes(&self) -> &[u8] {
        self.old.as_ref().map_or(&[][..], mmap::Input::bytes)
    }

    /// Runs the pipeline; a failed self-check caused by an input changing
    /// under its mapping is reported as that change.
    fn build(&self) -> Result<(delta_core::Delta, Workers<'_>)> {
        self.build_to(&delta_core::NewImage::new(self.new.bytes()))
    }

    /// [`Inputs::build`] reusing what earlier generations worked out of
    /// `new_image` (the new image's bytes).
    fn build_to(
        &self,
        new_image: &delta_core::NewImage<'_>,
    ) -> Result<(delta_core::Delta, Workers<'_>)> {
        let workers = Workers::new(&self.pool, self.options.progress.clone());
        let built = build_delta(&workers, self.old_bytes(), new_image, &self.options);
        let digests = workers.digests.get();
        let delta = built.map_err(|e| match e {
            // A segment not rebuilding its bytes may be an input changing
            // under the mapping: say so.
            Error::SelfCheck { .. } => match unchanged(&self.pool, &self.list(), digests) {
                Err(changed @ Error::Changed { .. }) => changed,
                _ => e,
            },
            e => e,
        })?;
        Ok((delta, workers))
    }

    /// The checking phase: [`unchanged`], with progress.
    fn check_unchanged(&self, workers: &Workers<'_>) -> Result<()> {
        let inputs = self.list();
        let hashed = inputs
            .iter()
            .filter(|i| i.block_device().is_some())
            .map(|i| i.bytes().len() as u64)
            .sum();
        workers.report(GenPhase::Checking, 0, hashed);
        unchanged(&self.pool, &inputs, workers.digests.get())?;
        workers.report(GenPhase::Checking, hashed, hashed);
        Ok(())
    }
}

/// Checks that every input is still as it was opened: first size and times
/// (touching no mapped byte, so a shrunk file is reported rather than
/// faulting), then, for block devices and given the digests the header
/// records, the bytes: a device written through another node keeps its
/// times. A regular file cannot be written without changing its ctime, so
/// its bytes are not hashed again (that would cost a second pass over
/// both images on every run).
fn unchanged(
    pool: &rayon::ThreadPool,
    inputs: &[&mmap::Input],
    digests: Option<&Digests>,
) -> Result<()> {
    for input in inputs {
        input.check_unchanged()?;
    }
    let Some(digests) = digests else {
        return Ok(());
    };
    for input in inputs.iter().filter(|i| i.block_device().is_some()) {
        let recorded = match input.role() {
            mmap::Role::Old => digests.old,
            mmap::Role::New => digests.new,
        };
        if pool.install(|| digest(input.bytes())) != recorded {
            return Err(input.changed("its contents no longer match their digest".into()));
        }
    }
    Ok(())
}

/// Generates a delta of in-memory images into a vector.
///
/// # Errors
/// Bad options or a failed self-check.
pub fn generate_to_vec(old: &[u8], new: &[u8], options: &GenOptions) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    generate_into(old, new, options, &mut out)?;
    Ok(out)
}

/// Generates a delta of `old` to `new` (old ignored for a full payload) into
/// `out`.
///
/// # Errors
/// Bad options, a failed self-check, or [`Error::Output`] when writing to
/// `out` fails.
pub fn generate_into(
    old: &[u8],
    new: &[u8],
    options: &GenOptions,
    out: &mut dyn Write,
) -> Result<Summary> {
    let pool = thread_pool(options)?;
    let workers = Workers::new(&pool, options.progress.clone());
    generate_with(&workers, old, new, options, out)
}

/// Checks the options and starts the worker threads: `options.threads`
/// (0: one per core), at most one per core.
fn thread_pool(options: &GenOptions) -> Result<rayon::ThreadPool> {
    options.check()?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.min(cores))
        .build()
        .map_err(|e| Error::Threads {
            threads: options.threads,
            reason: e.to_string(),
        })
}

/// The digests a delta's header records.
struct Digests {
    old: Digest,
    new: Digest,
}

/// Runs the pipeline's work on a rayon pool (items most costly first, see
/// [`map_heaviest_first`]) and re-applies every segment it encodes.
struct Workers<'a> {
    pool: &'a rayon::ThreadPool,
    progress: Option<GenProgressFn>,
    /// The digests of both images, which the header records, as soon as
    /// they are computed (before anything can fail), to tell a changed
    /// input from a bug.
    digests: OnceLock<Digests>,
}

impl<'a> Workers<'a> {
    fn new(pool: &'a rayon::ThreadPool, progress: Option<GenProgressFn>) -> Workers<'a> {
        Workers {
            pool,
            progress,
            digests: OnceLock::new(),
        }
    }

    /// Reports the generator's own phases.
    fn report(&self, phase: GenPhase, bytes_done: u64, bytes_total: u64) {
        delta_core::Runner::progress(
            self,
            &GenProgress {
                phase,
                bytes_done,
                bytes_total,
            },
        );
    }
}

impl delta_core::Runner for Workers<'_> {
    type Error = Error;

    fn map<T: Send, U: Send>(&self, items: Vec<(u64, T)>, work: impl Fn(T) -> U + Sync) -> Vec<U> {
        map_heaviest_first(self.pool, items, work)
    }

    fn join<A: Send, B: Send>(
        &self,
        a: impl FnOnce() -> A + Send,
        b: impl FnOnce() -> B + Send,
    ) -> (A, B) {
        self.pool.join(a, b)
    }

    fn digest(&self, bytes: &[u8]) -> Digest {
        self.pool.install(|| digest(bytes))
    }

    fn progress(&self, progress: &GenProgress) {
        if let Some(f) = &self.progress {
            f(progress);
        }
    }

    fn hashed(&self, old: &Digest, new: &Digest) {
        let digests = Digests {
            old: *old,
            new: *new,
        };
        // Told once per generation.
        let _ = self.digests.set(digests);
    }

    fn check(&self, old: &[u8], new: &[u8], segment: SegmentRef<'_>, payload: &[u8]) -> Result<()> {
        self_check(old, new, segment, payload)
    }
}

/// [`generate_into`] with `workers`.
fn generate_with(
    workers: &Workers<'_>,
    old: &[u8],
    new: &[u8],
    options: &GenOptions,
    out: &mut dyn Write,
) -> Result<Summary> {
    let delta = build_delta(workers, old, &delta_core::NewImage::new(new), options)?;
    let old_len = if options.delta.full {
        0
    } else {
        old.len() as u64
    };
    write_delta(delta, workers, (old_len, new.len() as u64), out)
}

/// The delta of `old` to `new`, checked and signed, in memory.
fn build_delta(
    workers: &Workers<'_>,
    old: &[u8],
    new_image: &delta_core::NewImage<'_>,
    options: &GenOptions,
) -> Result<delta_core::Delta> {
    let old = if options.delta.full { &[][..] } else { old };
    let new = new_image.bytes();
    let mut delta = workers
        .pool
        .install(|| delta_core::generate_reusing(old, new_image, &options.delta, workers))?;
    check_reference_total(&delta.segments, old.len() as u64, new.len() as u64)?;
    if !options.signing_keys.is_empty() {
        delta.sign(&options.signing_keys)?;
    }
    Ok(delta)
}

/// The writing phase: writes `delta` to `out`, with progress, and sums it
/// up.
fn write_delta(
    mut delta: delta_core::Delta,
    workers: &Workers<'_>,
    (old_len, new_len): (u64, u64),
    out: &mut dyn Write,
) -> Result<Summary> {
    let write_err = |source| Error::Output { source };
    let total = delta.file_len();
    workers.report(GenPhase::Writing, 0, total);
    let mut counted = Counted {
        out,
        workers,
        done: 0,
        reported: 0,
        total,
    };
    let delta_len = delta.write_to(&mut counted).map_err(write_err)?;
    counted.flush().map_err(write_err)?;
    workers.report(GenPhase::Writing, delta_len, total);

    let mut summary = Summary {
        old_len,
        new_len,
        delta_len,
        segments: delta.segments.len() as u64,
        copy_new_len: delta.copy_new_len,
        content: delta.content.clone(),
        report: delta.report.take().map(|mut report| {
            // Signatures came after the report was made.
            report.table_bytes = delta_len - report.payload_bytes;
            report
        }),
        ..Summary::default()
    };
    for s in &delta.segments {
        summary.copy_len += s.copy_len;
        summary.zero_len += s.zero_len;
        summary.diff_len += s.diff_len;
        summary.literal_len += s.literal_len;
    }
    Ok(summary)
}

/// A writer that reports the writing phase every few MiB.
struct Counted<'o, 'w, 'p> {
    out: &'o mut dyn Write,
    workers: &'w Workers<'p>,
    done: u64,
    reported: u64,
    total: u64,
}

impl Write for Counted<'_, '_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.done += n as u64;
        if self.done - self.reported >= 4 << 20 {
            self.reported = self.done;
            self.workers
                .report(GenPhase::Writing, self.done.min(self.total), self.total);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Refuses segments that together reference more old bytes than the
/// format allows (FORMAT.md, segment table rules): no applier would
/// accept the delta. Only options far from the defaults get here (segments
/// of a few KiB with windows of many MiB).
fn check_reference_total(segments: &[SegmentEntry], old_len: u64, new_len: u64) -> Result<()> {
    let total = segments
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.ref_len));
    let limit = delta_format::max_reference_total(old_len, new_len);
    if total > limit {
        return Err(Error::Option {
            name: "max_reference",
            reason: format!(
                "the segments would reference {total} bytes of old image in all, over the \
                 format's limit of {limit} (4*(old_len+new_len)+64 MiB); use larger segments \
                 or a smaller reference window"
            ),
        });
    }
    Ok(())
}

/// `work` on every item (each with its cost) on all threads of `pool`,
/// results in item order. Items are taken from one queue, most costly
/// first, so that no thread is
/// left with a slow item while the others are idle (rayon's splitting hands
/// each thread a fixed run of neighbours, and a few literal-heavy segments
/// dominate an OS image).
fn map_heaviest_first<T: Send, U: Send>(
    pool: &rayon::ThreadPool,
    items: Vec<(u64, T)>,
    work: impl Fn(T) -> U + Sync,
) -> Vec<U> {
    let mut queue: Vec<(u64, usize, T)> = items
        .into_iter()
        .enumerate()
        .map(|(i, (cost, item))| (cost, i, item))
        .collect();
    queue.sort_unstable_by_key(|&(cost, i, _)| (Reverse(cost), i));
    let queue = Mutex::new(queue.into_iter());
    let mut done: Vec<(usize, U)> = pool
        .broadcast(|_| {
            let mut mine = Vec::new();
            loop {
                // The lock is held only to take the next item.
                let next = queue.lock().unwrap_or_else(PoisonError::into_inner).next();
                let Some((_, i, item)) = next else {
                    break mine;
                };
                mine.push((i, work(item)));
            }
        })
        .into_iter()
        .flatten()
        .collect();
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, u)| u).collect()
}

fn digest(bytes: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update_rayon(bytes);
    *hasher.finalize().as_bytes()
}

/// Re-applies a freshly encoded segment (the one producing `range` of
/// `new`) and compares it with its bytes.
fn self_check(old: &[u8], new: &[u8], seg: SegmentRef<'_>, payload: &[u8]) -> Result<()> {
    let start = seg.new_offset;
    let expected = &new[start as usize..(start + seg.entry.new_len) as usize];
    let mut sink = CompareSink {
        expected,
        before: &new[..start as usize],
        pos: 0,
        equal: true,
    };
    let applied = Patcher::new().apply_segment(old, seg, payload, &mut sink);
    let reason = match applied {
        Err(e) => delta_core::Error::from(e).to_string(),
        Ok(_) if !sink.equal => "the bytes differ".into(),
        Ok(_) if sink.pos != expected.len() => {
            format!("it produced {} bytes, not {}", sink.pos, expected.len())
        }
        Ok(_) => return Ok(()),
    };
    Err(Error::SelfCheck {
        segment: seg.index,
        start,
        end: start + expected.len() as u64,
        reason,
    })
}

/// Zero bytes that zero runs are compared with.
static ZEROS: [u8; 4096] = [0; 4096];

/// A sink that compares what it receives with the expected bytes, and reads
/// back from the new image `before` them.
struct CompareSink<'a> {
    expected: &'a [u8],
    before: &'a [u8],
    pos: usize,
    equal: bool,
}

impl Sink for CompareSink<'_> {
    type Error = io::Error;

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let end = self.pos + bytes.len();
        self.equal &= self.expected.get(self.pos..end) == Some(bytes);
        self.pos = end;
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        let end = self.pos + len as usize;
        self.equal &= self.expected.get(self.pos..end).is_some_and(|bytes| {
            bytes
                .chunks(ZEROS.len())
                .all(|chunk| chunk == &ZEROS[..chunk.len()])
        });
        self.pos = end;
        Ok(())
    }

    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.before.read_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_failed_self_check_says_why() {
        let old = vec![7u8; 20_000];
        let mut new = old.clone();
        new[10_000..10_100].fill(1);
        let delta = generate_to_vec(&old, &new, &GenOptions::default()).unwrap();
        let index = delta_format::read_index(&mut &delta[..], &Default::default()).unwrap();
        let seg = SegmentRef::of(&index, 0);
        let start = seg.payload_offset as usize;
        let mut payload = delta[start..start + seg.entry.payload_len as usize].to_vec();
        self_check(&old, &new, seg, &payload).unwrap();
        payload[0] ^= 1;
        let err = self_check(&old, &new, seg, &payload)
            .unwrap_err()
            .to_string();
        assert!(err.contains("payload digest mismatch"), "{err}");
    }

    #[test]
    fn write_errors_name_the_delta_not_a_made_up_path() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = generate_into(b"old", b"new", &GenOptions::default(), &mut Full).unwrap_err();
        assert_eq!(err.to_string(), "writing the delta: disk full");
    }

    #[test]
    fn heaviest_first_keeps_item_order_and_runs_each_once() {
        let items: Vec<u64> = (0..200).map(|i| (i * 7919) % 101).collect();
        let calls = AtomicUsize::new(0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let out = map_heaviest_first(
            &pool,
            items
                .iter()
                .enumerate()
                .map(|(i, &c)| (c, (i, c)))
                .collect(),
            |(i, c)| {
                calls.fetch_add(1, Ordering::Relaxed);
                (i, c * 2)
            },
        );
        assert_eq!(calls.load(Ordering::Relaxed), items.len());
        let expected: Vec<(usize, u64)> = items.iter().map(|&c| c * 2).enumerate().collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn segments_over_the_reference_total_are_refused() {
        let entry = |ref_len| SegmentEntry {
            ref_len,
            ..SegmentEntry::default()
        };
        let limit = delta_format::max_reference_total(1000, 1000);
        check_reference_total(&[entry(limit / 2), entry(limit / 2)], 1000, 1000).unwrap();
        let err = check_reference_total(&[entry(limit / 2), entry(limit / 2 + 2)], 1000, 1000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("over the format's limit of {limit}")),
            "{err}"
        );
    }

    #[test]
    fn progress_reports_the_phases_and_changes_no_byte() {
        let mut fixtures = delta_core::testing::fixtures().into_iter().map(|(_, b)| b);
        let (old, new) = (fixtures.next().unwrap(), fixtures.next().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let options = GenOptions {
            delta: DeltaOptions {
                segment_len: 64 << 10,
                ..DeltaOptions::default()
            },
            progress: Some(Arc::new(move |p: &GenProgress| {
                sink.lock().unwrap().push(*p);
            })),
            ..GenOptions::default()
        };
        let with = generate_to_vec(&old, &new, &options).unwrap();
        let without = GenOptions {
            progress: None,
            ..options.clone()
        };
        assert_eq!(with, generate_to_vec(&old, &new, &without).unwrap());
        assert!(format!("{options:?}").contains("progress: Some"));
        let seen = seen.lock().unwrap();
        let mut phases: Vec<GenPhase> = seen.iter().map(|p| p.phase).collect();
        phases.dedup();
        assert_eq!(
            phases,
            [
                GenPhase::Indexing,
                GenPhase::Planning,
                GenPhase::Encoding,
                GenPhase::Writing
            ]
        );
        assert!(seen.iter().all(|p| p.bytes_done <= p.bytes_total));
        let last = |phase| seen.iter().rfind(|p| p.phase == phase).unwrap();
        assert_eq!(last(GenPhase::Encoding).bytes_done, new.len() as u64);
        assert_eq!(last(GenPhase::Writing).bytes_done, with.len() as u64);
        let encoding = seen.iter().filter(|p| p.phase == GenPhase::Encoding);
        assert!(encoding.count() > 2, "reported per segment");
    }

    #[test]
    fn output_does_not_depend_on_threads() {
        let mut fixtures = delta_core::testing::fixtures().into_iter().map(|(_, b)| b);
        let (old, new) = (fixtures.next().unwrap(), fixtures.next().unwrap());
        let options = |threads| GenOptions {
            threads,
            delta: DeltaOptions {
                segment_len: 64 << 10,
                ..DeltaOptions::default()
            },
            ..GenOptions::default()
        };
        let one = generate_to_vec(&old, &new, &options(1)).unwrap();
        let three = generate_to_vec(&old, &new, &options(3)).unwrap();
        assert_eq!(one, three);
        // The same pipeline as core's serial runner.
        let serial = delta_core::diff_slices(&old, &new, &options(3).delta).unwrap();
        assert_eq!(three, serial);
    }
}
