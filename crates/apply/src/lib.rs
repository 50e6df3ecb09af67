//! On-device delta applier: bounded memory, power-safe and resumable,
//! verified, with progress, an update log and balenaOS update locks.
//!
//! The device agent links this crate and drives an [`Applier`]:
//!
//! 1. **preparing** — single-instance lock, delta header and table read with
//!    two bounded reads and checked against [`ApplyOptions::memory_limit`],
//!    1.x → 2.x `/data` preflight when the delta or the options ask for it,
//!    old image size (and, with `verify_source`, digest), target safety;
//! 2. **applying** — segments in order: each payload is read, checked,
//!    decompressed and run against the old image (positional reads, no
//!    mapping), its output digest checked, and written sequentially to the
//!    target; a [`journal`] checkpoint follows an `fdatasync` every few
//!    seconds, between segments or inside one, so a re-run after a power cut
//!    resumes where the last checkpoint was: it decodes an interrupted
//!    segment again from its start and writes only the bytes that are
//!    missing;
//! 3. **verifying** — the whole image's digest against the header;
//! 4. **waiting for application lock** — only the commit is gated: every
//!    `updates.lock` under the lock root is probed with a non-blocking
//!    exclusive `flock` until none is held (or the timeout);
//! 5. **committing** — the commit hook (e.g. the bootloader switch), then a
//!    file target's `.partial` is renamed into place and its folder fsynced.
//!
//! Memory: the largest segment's payload + stream + reference (the header's
//! `apply_memory`, refused up front when over the limit) plus about
//! [`delta_core::APPLY_OVERHEAD`] of fixed buffers, whatever the image size.
//!
//! It never writes to the old image, nor to a device that holds it or the
//! running root filesystem, and a failed or interrupted run never leaves the
//! target path looking complete.
//!
//! ```no_run
//! use delta_apply::{Applier, ApplyOptions};
//! use std::path::Path;
//! let mut applier = Applier::new(ApplyOptions::default())
//!     .on_progress(|p| eprintln!("{} {}/{}", p.step.label(), p.bytes_done, p.bytes_total));
//! applier.apply(Some(Path::new("old.img")), Path::new("update.delta"), Path::new("/dev/mmcblk0p3"))?;
//! # Ok::<(), delta_apply::Error>(())
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod checkpoint;
mod error;
pub mod journal;
pub mod locks;
pub mod log;
mod progress;
pub mod storage;
pub mod target;

pub use error::{Error, Result};
pub use progress::{Progress, ProgressFn, Step};

use checkpoint::{Checkpoints, SegmentSink};
use delta_core::{FileSource, Patcher, SegmentRef, Source};
use delta_format::{Header, Index, Limits};
use journal::{Journal, Record, State};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{OldImage, Target, TargetWriter};

/// Knobs of the applier. Paths default to balenaOS locations.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Most buffer memory a delta may need (its header's `apply_memory`),
    /// in bytes; fixed overhead of about 2 MiB comes on top.
    pub memory_limit: u64,
    /// Hash the whole old image before writing anything.
    pub verify_source: bool,
    /// Folder whose `*/*/updates.lock` files gate the commit.
    pub lock_root: PathBuf,
    /// Time between lock probes.
    pub lock_poll: Duration,
    /// Give up waiting for locks after this long (None: wait forever).
    pub lock_timeout: Option<Duration>,
    /// Commit even if application locks are held.
    pub override_lock: bool,
    /// Supervisor target-state config (JSON) that may set the override.
    pub supervisor_config: PathBuf,
    /// Shell command run once the locks are clear, before the commit.
    pub commit_hook: Option<String>,
    /// Folder of the update logs (None: no log).
    pub log_dir: Option<PathBuf>,
    /// Folder of the journal for block-device targets.
    pub state_dir: PathBuf,
    /// Single-instance lock file.
    pub instance_lock: PathBuf,
    /// Treat the update as a 1.x → 2.x migration even if the delta does not
    /// say so.
    pub migration: bool,
    /// The application data folder checked for migrations.
    pub data_dir: PathBuf,
    /// Largest tar+gzip size of `data_dir` allowed for a migration, bytes.
    pub data_limit: u64,
    /// Bytes written between journal checkpoints.
    pub checkpoint_bytes: u64,
    /// Longest time between journal checkpoints: what a power cut can cost.
    pub checkpoint_interval: Duration,
    /// Largest new image written to a file target, in bytes (a block
    /// device target is bounded by its size instead). Zero runs cost a
    /// file nothing on disk but are still hashed, so without a bound a
    /// delta of a few hundred bytes could ask for a terabyte of work.
    pub max_image_size: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            memory_limit: 24 << 20,
            verify_source: false,
            lock_root: "/tmp/balena-supervisor/services".into(),
            lock_poll: Duration::from_secs(5),
            lock_timeout: None,
            override_lock: false,
            supervisor_config: "/tmp/balena-supervisor/target-state-config".into(),
            commit_hook: None,
            log_dir: Some("/mnt/data/balenahup".into()),
            state_dir: "/mnt/data/balenahup".into(),
            instance_lock: "/var/lock/delta-apply.lock".into(),
            migration: false,
            data_dir: "/mnt/data/resin-data".into(),
            data_limit: delta_datacheck::DEFAULT_LIMIT,
            checkpoint_bytes: 256 << 20,
            checkpoint_interval: Duration::from_secs(5),
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
        }
    }
}

/// Default of [`ApplyOptions::max_image_size`]: 8 GiB, several times the
/// root file systems of balenaOS images.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 8 << 30;

/// What a successful apply did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Size of the new image.
    pub new_len: u64,
    /// Segments in the delta.
    pub segments: u64,
    /// Segments found done from an earlier, interrupted run.
    pub resumed_segments: u64,
    /// Bytes of the new image found written by an earlier, interrupted run
    /// (whole segments and the written part of the next one).
    pub resumed_bytes: u64,
    /// blake3 of the new image, hex.
    pub new_digest: String,
    /// Non-fatal problems (e.g. the update log could not be written).
    pub warnings: Vec<String>,
    /// The update log written, if any.
    pub log_path: Option<PathBuf>,
}

/// Applies deltas and full-image payloads onto a target.
pub struct Applier {
    options: ApplyOptions,
    progress: Option<ProgressFn>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// An open delta file with its checked index.
struct Delta {
    path: PathBuf,
    file: File,
    index: Index,
    /// Digest of header and table: identifies the delta in the journal.
    id: String,
}

impl Delta {
    /// Opens a delta file (a regular file or a block device, never
    /// blocking) and reads its header and table through the one reader.
    fn open(path: &Path, limits: &Limits) -> Result<Delta> {
        let (mut file, file_len) = delta_core::open_image(path).map_err(|source| Error::Io {
            op: "open delta",
            path: path.to_owned(),
            source,
        })?;
        let bad = |source| Error::Header {
            path: path.to_owned(),
            source,
        };
        file.seek(SeekFrom::Start(0)).map_err(|source| Error::Io {
            op: "seek",
            path: path.to_owned(),
            source,
        })?;
        let index =
            delta_format::read_index(&mut std::io::BufReader::new(&file), limits).map_err(bad)?;
        index.check_file_len(file_len).map_err(bad)?;
        Ok(Delta {
            path: path.to_owned(),
            id: hex(&index.table_digest),
            file,
            index,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// State shared by the steps of one run.
struct Run<'a> {
    options: &'a ApplyOptions,
    progress: &'a mut Option<ProgressFn>,
    cancel: &'a AtomicBool,
    log: log::UpdateLog,
    step_started: Instant,
    step: Step,
    /// Non-fatal problems met so far, for the outcome.
    warnings: Vec<String>,
}

impl Run<'_> {
    /// Records a non-fatal problem in the log and the outcome.
    fn warn(&mut self, message: String) {
        self.log.line(format!("warning: {message}"));
        self.warnings.push(message);
    }

    fn report(&mut self, step: Step, done: u64, total: u64, message: Option<String>) {
        if step != self.step {
            self.log.line(format!(
                "step {} finished in {:.3}s",
                self.step.label(),
                self.step_started.elapsed().as_secs_f64()
            ));
            if step != Step::Done {
                self.log.line(format!("step {} started", step.label()));
            }
            self.step = step;
            self.step_started = Instant::now();
        }
        if let Some(f) = self.progress.as_mut() {
            f(&Progress {
                step,
                bytes_done: done,
                bytes_total: total,
                message,
            });
        }
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

impl Applier {
    /// An applier with `options`.
    pub fn new(options: ApplyOptions) -> Applier {
        Applier {
            options,
            progress: None,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Sets the progress callback.
    pub fn on_progress(mut self, f: impl FnMut(&Progress) + Send + 'static) -> Applier {
        self.progress = Some(Box::new(f));
        self
    }

    /// A flag that, once set, stops the apply at the next segment or lock
    /// probe with [`Error::Cancelled`] (the run can be resumed).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Rebuilds the new image from `old` (None for a full-image payload)
    /// and `delta` into `target`, verified and committed.
    ///
    /// # Errors
    /// See [`Error`]; the target path is never left looking complete, and
    /// [`Error::exit_code`] gives the process exit code.
    pub fn apply(&mut self, old: Option<&Path>, delta: &Path, target: &Path) -> Result<Outcome> {
        let _instance = locks::InstanceLock::acquire(&self.options.instance_lock)?;
        let (log, warning) = match &self.options.log_dir {
            Some(dir) => log::UpdateLog::open(dir),
            None => (log::UpdateLog::disabled(), None),
        };
        let mut run = Run {
            options: &self.options,
            progress: &mut self.progress,
            cancel: &self.cancel,
            log,
            step_started: Instant::now(),
            step: Step::Preparing,
            warnings: Vec::new(),
        };
        let started = Instant::now();
        run.log.line(format!(
            "delta-apply {} old={} delta={} target={} options={:?}",
            env!("CARGO_PKG_VERSION"),
            old.map_or("-".into(), |p| p.display().to_string()),
            delta.display(),
            target.display(),
            run.options
        ));
        run.log.line("step preparing started");
        let result = apply_inner(&mut run, old, delta, target);
        match &result {
            Ok(outcome) => run.log.line(format!(
                "result: success, {} bytes, blake3 {}, {} segments ({} resumed), {:.3}s",
                outcome.new_len,
                outcome.new_digest,
                outcome.segments,
                outcome.resumed_segments,
                started.elapsed().as_secs_f64()
            )),
            Err(e) => {
                let mut chain = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    chain.push_str(&format!("\n  caused by: {s}"));
                    source = s.source();
                }
                run.log.line(format!(
                    "result: failure (exit code {}) after {:.3}s in step {}: {chain}",
                    e.exit_code(),
                    started.elapsed().as_secs_f64(),
                    run.step.label()
                ));
            }
        }
        let log_path = run.log.path().map(Path::to_owned);
        let warnings = std::mem::take(&mut run.warnings);
        result.map(|mut outcome| {
            outcome.warnings.extend(warning);
            outcome.warnings.extend(warnings);
            outcome.log_path = log_path;
            outcome
        })
    }
}

fn apply_inner(
    run: &mut Run<'_>,
    old: Option<&Path>,
    delta_path: &Path,
    target_path: &Path,
) -> Result<Outcome> {
    let options = run.options;
    run.report(Step::Preparing, 0, 0, None);
    // The table is held in memory too: about 170 bytes per segment, so cap
    // the count by the memory limit (24 MiB allows 24 Ki segments, enough
    // for images of 96 GiB even at 4 MiB per segment, unmerged).
    let limits = Limits {
        max_memory: options.memory_limit,
        max_segments: (options.memory_limit / 1024).max(1024),
        ..Limits::default()
    };
    let delta = Delta::open(delta_path, &limits)?;
    let header = delta.index.header.clone();
    let target = Target::new(target_path)?;
    run.log.line(format!(
        "delta: {} -> {} bytes, {} segments, needs {} bytes of buffers, full={} migration={}",
        header.old_len,
        header.new_len,
        header.segment_count,
        header.apply_memory,
        header.is_full(),
        header.is_migration()
    ));

    if header.is_migration() || options.migration {
        check_migration_data(run)?;
    }

    let old = if header.is_full() { None } else { old };
    let (source, old_image) = match old {
        Some(path) => {
            let (source, image) = open_source(path, &header)?;
            (source, Some(image))
        }
        None if header.is_full() => (FileSource::new(tempfile_empty()?, 0), None),
        None => {
            return Err(Error::NeedsSource {
                path: delta_path.to_owned(),
            })
        }
    };
    let journal = Journal::new(journal_path(options, &target));
    let written_names = [target.write_path(), journal.path(), journal.temp_path()];
    target.check_safe(old_image.as_ref(), &written_names)?;
    target.check_fits(delta_path, header.new_len, options.max_image_size)?;
    if let (true, Some(path)) = (options.verify_source, old) {
        verify_source(run, &source, path, &header)?;
    }

    let identity = Record {
        version: 2,
        delta_id: delta.id.clone(),
        old: old.map(|p| p.display().to_string()).unwrap_or_default(),
        target: target.path().display().to_string(),
        segments_done: 0,
        segment_bytes: 0,
        state: State::Applying,
    };
    let (loaded, warning) = journal.load()?;
    if let Some(warning) = warning {
        run.warn(warning);
    }
    let resume = loaded.filter(|r| {
        r.version == identity.version
            && r.delta_id == identity.delta_id
            && r.old == identity.old
            && r.target == identity.target
            && r.segments_done <= header.segment_count
            && r.segment_bytes
                <= delta
                    .index
                    .segments
                    .get(r.segments_done as usize)
                    .map_or(0, |s| s.new_len)
            && target.partial_len().is_some()
    });
    let resume = match resume {
        Some(r) if r.state == State::Verified && !target.may_hold(header.new_len) => {
            run.warn(format!(
                "journal {} says the target is verified, but {} holds {} bytes, not the new \
                 image's {}; discarding the journal and starting over",
                journal.path().display(),
                target.write_path().display(),
                target.partial_len().unwrap_or(0),
                header.new_len
            ));
            None
        }
        other => other,
    };
    let write = Write {
        delta: &delta,
        source: &source,
        old: old_image.as_ref(),
        target: &target,
        journal: &journal,
    };
    let result = write_and_commit(run, &write, identity, resume);
    if let Err(e) = &result {
        if is_data_error(e) {
            // Nothing useful to resume: remove the partial target and journal.
            if let Target::File { partial, .. } = &target {
                let _ = std::fs::remove_file(partial);
            }
            let _ = journal.remove();
        }
    }
    result
}

fn is_data_error(e: &Error) -> bool {
    match e {
        Error::Segment { source, .. } => !matches!(
            source,
            delta_core::Error::Write { .. } | delta_core::Error::ReadSource { .. }
        ),
        Error::NewDigest { .. } | Error::SourceMismatch { .. } => true,
        _ => false,
    }
}

/// What one run writes from and to.
struct Write<'a> {
    delta: &'a Delta,
    source: &'a FileSource,
    old: Option<&'a OldImage>,
    target: &'a Target,
    journal: &'a Journal,
}

impl Write<'_> {
    fn io(&self, op: &'static str) -> impl Fn(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            op,
            path: self.target.write_path().to_owned(),
            source,
        }
    }
}

fn write_and_commit(
    run: &mut Run<'_>,
    w: &Write<'_>,
    identity: Record,
    resume: Option<Record>,
) -> Result<Outcome> {
    let header = &w.delta.index.header;
    let new_len = header.new_len;
    let mut resume = resume;
    if resume.as_ref().is_some_and(|r| r.state == State::Verified) {
        run.log
            .line("journal: target already verified; checking it again before the commit");
        if !holds_new_image(run, w)? {
            run.warn(format!(
                "journal {} says the target is verified, but {} does not match the new \
                 image's digest; discarding the journal and starting over",
                w.journal.path().display(),
                w.target.write_path().display()
            ));
            resume = None;
        }
    }
    let verified = resume.as_ref().is_some_and(|r| r.state == State::Verified);
    if !verified {
        write_image(run, w, &identity, resume.as_ref())?;
    }
    let target = w.target;
    wait_for_locks(run)?;
    run.report(Step::Committing, 0, new_len, None);
    if let Some(command) = &run.options.commit_hook {
        run_hook(command, target.path())?;
        run.log.line(format!("commit hook `{command}` succeeded"));
    }
    if let Target::File { path, partial } = target {
        std::fs::rename(partial, path).map_err(|source| Error::Io {
            op: "rename into place",
            path: path.clone(),
            source,
        })?;
        journal::sync_parent(path)?;
    }
    w.journal.remove()?;
    run.report(Step::Done, new_len, new_len, None);
    Ok(Outcome {
        new_len,
        segments: header.segment_count,
        resumed_segments: resume.as_ref().map_or(0, |r| r.segments_done),
        resumed_bytes: resume
            .as_ref()
            .map_or(0, |r| resume_offset(&w.delta.index, r)),
        new_digest: hex(&header.new_digest),
        warnings: Vec::new(),
        log_path: None,
    })
}

/// Whether the target already holds the whole new image (a journal said
/// so): its digest is computed again.
fn holds_new_image(run: &mut Run<'_>, w: &Write<'_>) -> Result<bool> {
    let header = &w.delta.index.header;
    let new_len = header.new_len;
    let file = w.target.open(false, w.old, 0)?;
    let mut hasher = blake3::Hasher::new();
    run.report(Step::Verifying, 0, new_len, None);
    target::hash_prefix(&file, w.target.write_path(), new_len, &mut hasher, |done| {
        run.report(Step::Verifying, done, new_len, None)
    })?;
    Ok(hasher.finalize().as_bytes() == &header.new_digest)
}

/// Writes the new image (the rest of it, when resuming), checks its
/// digest and records it verified in the journal.
fn write_image(
    run: &mut Run<'_>,
    w: &Write<'_>,
    identity: &Record,
    resume: Option<&Record>,
) -> Result<()> {
    let index = &w.delta.index;
    let header = &index.header;
    let new_len = header.new_len;
    let resumed_bytes = resume.map_or(0, |r| resume_offset(index, r));
    let zero_len: u64 = index.segments.iter().map(|s| s.zero_len).sum();
    let file = w
        .target
        .open(resume.is_none(), w.old, new_len.saturating_sub(zero_len))?;
    let mut hasher = blake3::Hasher::new();
    if let Some(r) = resume.filter(|_| resumed_bytes > 0) {
        run.log.line(format!(
            "journal: resuming at segment {}, {} bytes into it (byte {resumed_bytes}); \
             re-reading the written part",
            r.segments_done, r.segment_bytes
        ));
        if let Target::File { .. } = w.target {
            file.set_len(resumed_bytes).map_err(w.io("truncate"))?;
        }
        target::hash_prefix(
            &file,
            w.target.write_path(),
            resumed_bytes,
            &mut hasher,
            |done| {
                run.report(
                    Step::Applying,
                    done,
                    new_len,
                    Some("re-reading written part".into()),
                )
            },
        )?;
    } else {
        w.journal.store(identity)?;
    }
    run.report(Step::Applying, resumed_bytes, new_len, None);
    let hasher = apply_segments(run, w, identity, file, resume, hasher)?;
    run.report(Step::Verifying, new_len, new_len, None);
    if hasher.finalize().as_bytes() != &header.new_digest {
        return Err(Error::NewDigest {
            path: w.target.write_path().to_owned(),
        });
    }
    w.journal.store(&Record {
        segments_done: header.segment_count,
        state: State::Verified,
        ..identity.clone()
    })
}

/// The first byte of the new image a resumed run still has to write.
fn resume_offset(index: &Index, record: &Record) -> u64 {
    index
        .new_offsets
        .get(record.segments_done as usize)
        .map_or(index.header.new_len, |start| start + record.segment_bytes)
}

fn apply_segments(
    run: &mut Run<'_>,
    w: &Write<'_>,
    identity: &Record,
    file: File,
    resume: Option<&Record>,
    hasher: blake3::Hasher,
) -> Result<blake3::Hasher> {
    let Write {
        delta,
        source,
        target,
        journal,
        ..
    } = *w;
    let index = &delta.index;
    let new_len = index.header.new_len;
    let write_path = target.write_path().to_owned();
    let io = |op, source| Error::Io {
        op,
        path: write_path.clone(),
        source,
    };
    let start_segment = resume.map_or(0, |r| r.segments_done as usize);
    let mut skip = resume.map_or(0, |r| r.segment_bytes);
    let start = resume.map_or(0, |r| resume_offset(index, r));
    let mut progress = run.progress.as_mut();
    let mut report_bytes = |done: u64| {
        if let Some(f) = progress.as_deref_mut() {
            f(&Progress {
                step: Step::Applying,
                bytes_done: done,
                bytes_total: new_len,
                message: None,
            });
        }
    };
    let sparse = matches!(target, Target::File { .. });
    let mut writer = TargetWriter::new(file, start, sparse, hasher, &mut report_bytes)
        .map_err(|e| io("seek", e))?;
    let mut checkpoints = Checkpoints::new(
        journal,
        &write_path,
        identity,
        run.cancel,
        run.options.checkpoint_bytes,
        run.options.checkpoint_interval,
        start,
    );
    let mut patcher = Patcher::new();
    let mut payload = Vec::new();
    for i in start_segment..index.segments.len() {
        if run.cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let seg = SegmentRef::of(index, i);
        let entry = seg.entry;
        // Bounded: payload_len <= apply_memory <= memory_limit.
        payload.resize(entry.payload_len as usize, 0);
        delta
            .file
            .read_exact_at(&mut payload, seg.payload_offset)
            .map_err(|source| Error::Io {
                op: "read",
                path: delta.path.clone(),
                source,
            })?;
        let mut sink = SegmentSink::new(
            &mut writer,
            &mut checkpoints,
            seg.index,
            seg.new_offset,
            std::mem::take(&mut skip),
        );
        let applied = patcher.apply_segment(source, seg, &payload, &mut sink);
        if let Some(failure) = sink.take_failure() {
            return Err(failure);
        }
        applied.map_err(|source| Error::Segment {
            path: delta.path.clone(),
            source,
        })?;
        let last = i + 1 == index.segments.len();
        if !last && checkpoints.due(writer.position()) {
            checkpoints.store(&mut writer, i as u64 + 1, 0)?;
        }
    }
    let (_file, hasher) = writer.finish().map_err(|e| io("write", e))?;
    run.log
        .line(format!("wrote {new_len} bytes to {}", write_path.display()));
    Ok(hasher)
}

fn wait_for_locks(run: &mut Run<'_>) -> Result<()> {
    let options = run.options;
    if options.override_lock {
        run.log.line("update locks overridden by option");
        return Ok(());
    }
    if locks::override_requested(&options.supervisor_config) {
        run.log.line(format!(
            "update locks overridden by {}",
            options.supervisor_config.display()
        ));
        return Ok(());
    }
    let started = Instant::now();
    loop {
        let held = locks::held_locks(&options.lock_root);
        let Some(lock) = held.first() else {
            return Ok(());
        };
        let message = format!("waiting for application lock {}", lock.display());
        if run.step != Step::WaitingForLock {
            run.log.line(&message);
        }
        let waited = started.elapsed();
        if options.lock_timeout.is_some_and(|t| waited >= t) {
            return Err(Error::LockTimeout {
                lock: lock.clone(),
                waited,
            });
        }
        // Sleep in slices of at most a second so progress keeps flowing and
        // cancellation is prompt.
        let poll_end = Instant::now() + options.lock_poll;
        loop {
            run.report(Step::WaitingForLock, 0, 0, Some(message.clone()));
            run.check_cancel()?;
            let now = Instant::now();
            let deadline = options
                .lock_timeout
                .map_or(poll_end, |t| poll_end.min(started + t));
            if now >= deadline {
                break;
            }
            std::thread::sleep((deadline - now).min(Duration::from_secs(1)));
        }
    }
}

fn run_hook(command: &str, target: &Path) -> Result<()> {
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("DELTA_TARGET", target)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(Error::HookFailed {
            command: command.to_owned(),
            status: s.to_string(),
        }),
        Err(e) => Err(Error::HookFailed {
            command: command.to_owned(),
            status: format!("cannot start: {e}"),
        }),
    }
}

fn check_migration_data(run: &mut Run<'_>) -> Result<()> {
    let options = run.options;
    let dir = &options.data_dir;
    run.report(
        Step::Preparing,
        0,
        0,
        Some(format!("1.x to 2.x migration: measuring {}", dir.display())),
    );
    let report = delta_datacheck::check_data(
        dir,
        &delta_datacheck::CheckOptions {
            limit: options.data_limit,
            ..Default::default()
        },
    )?;
    run.log.line(format!(
        "migration data check: {} compresses to {}{} bytes (limit {})",
        dir.display(),
        if report.over_limit { "at least " } else { "" },
        report.compressed_bytes,
        options.data_limit
    ));
    if report.over_limit {
        return Err(Error::DataTooLarge {
            dir: dir.clone(),
            at_least: "at least ",
            size: report.compressed_bytes,
            limit: options.data_limit,
        });
    }
    Ok(())
}

/// Opens the old image (a regular file or a block device, never blocking
/// on a FIFO) and checks its size.
fn open_source(path: &Path, header: &Header) -> Result<(FileSource, OldImage)> {
    let (file, len) = delta_core::open_image(path).map_err(|source| Error::Io {
        op: "open old image",
        path: path.to_owned(),
        source,
    })?;
    if len != header.old_len {
        return Err(Error::SourceMismatch {
            path: path.to_owned(),
            what: format!(
                "size is {len} bytes, the delta was made for an old image of {} bytes",
                header.old_len
            ),
        });
    }
    let image = OldImage::of(path, &file, len)?;
    Ok((FileSource::new(file, len), image))
}

fn verify_source(
    run: &mut Run<'_>,
    source: &FileSource,
    path: &Path,
    header: &Header,
) -> Result<()> {
    let len = source.len();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last = Instant::now();
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        source
            .read_at(done, &mut buf[..n])
            .map_err(|source| Error::Io {
                op: "read old image",
                path: path.to_owned(),
                source,
            })?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if last.elapsed() >= target::PROGRESS_EVERY {
            run.report(
                Step::Preparing,
                done,
                len,
                Some("verifying old image".into()),
            );
            last = Instant::now();
        }
    }
    let found = hasher.finalize();
    if found.as_bytes() != &header.old_digest {
        return Err(Error::SourceMismatch {
            path: path.to_owned(),
            what: format!(
                "blake3 is {}, the delta was made for {}",
                found.to_hex(),
                hex(&header.old_digest)
            ),
        });
    }
    run.log.line("old image digest verified");
    Ok(())
}

fn journal_path(options: &ApplyOptions, target: &Target) -> PathBuf {
    match target {
        Target::File { path, .. } => {
            let mut name = path.as_os_str().to_owned();
            name.push(".journal");
            PathBuf::from(name)
        }
        Target::Block { path, .. } => {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            options
                .state_dir
                .join(format!("delta-apply-{name}.journal"))
        }
    }
}

/// An empty file standing in for the old image of a full payload.
fn tempfile_empty() -> Result<File> {
    File::open("/dev/null").map_err(|source| Error::Io {
        op: "open",
        path: "/dev/null".into(),
        source,
    })
}
