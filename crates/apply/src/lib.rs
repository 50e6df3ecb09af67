//! On-device delta applier: bounded memory, power-safe and resumable,
//! verified, with progress, an update log and balenaOS update locks.
//!
//! The device agent links this crate and drives an [`Applier`]:
//!
//! 1. **preparing** — single-instance lock, delta header and table read with
//!    two bounded reads (from a file, a pipe or a download: see [`input`])
//!    and checked against [`ApplyOptions::memory_limit`],
//!    1.x → 2.x `/data` preflight when the delta or the options ask for it,
//!    old image size (and, with `verify_source`, digest), target safety;
//! 2. **applying** — segments in order: each payload is read as it arrives
//!    (the delta is read front to back, never stored), checked,
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
//! `apply_memory`) plus [`FIXED_MEMORY`] (fixed buffers, the re-deflater's
//! child and the writer's buffers), whatever the image size; a delta whose
//! sum is over [`ApplyOptions::memory_limit`] (24 MiB by default) is
//! refused before anything is written.
//!
//! Writing: a writer thread puts and hashes each buffer while the caller's
//! thread decodes the next. On a block device (the inactive partition
//! usually holds an earlier release) what the device holds is read first,
//! in 512 KiB sequential reads, and only the 4 KiB blocks that differ are
//! written; zero runs go to the device's own zeroing where it has one (no
//! data sent), or are compared like data. A block found in place is hashed
//! as it was read, so the image digest is of what the target holds.
//! [`Outcome::writes`] says what reached the device.
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

mod ahead;
mod checkpoint;
mod checks;
mod costs;
mod error;
mod history;
#[cfg(feature = "http")]
mod http;
pub mod input;
mod journal;
pub mod keys;
mod locks;
pub mod log;
mod progress;
pub mod redeflate;
mod run;
mod source;
mod storage;
mod target;
mod verify;
mod writer;
mod zero_scan;

pub use ahead::{threads_for, MAX_DEFAULT_THREADS, MAX_THREADS, THREAD_MEMORY};
pub use error::{Error, Result, EXIT_CANCELLED};
pub use input::{DeltaInput, FileInput, Note, ReaderInput, UrlOptions};
pub use progress::{Progress, ProgressFn, Step, StepEvent};
pub use verify::{verify, verify_from, Verified};
pub use writer::{WriteStats, WRITER_MEMORY};

/// The applier's memory besides a delta's buffers (`apply_memory`): its
/// fixed buffers and the re-deflater ([`delta_core::APPLY_OVERHEAD`]) and
/// the writer's ([`WRITER_MEMORY`]). Counted against
/// [`ApplyOptions::memory_limit`].
pub const FIXED_MEMORY: u64 = delta_core::APPLY_OVERHEAD + WRITER_MEMORY;

use progress::Reporter;
use run::Run;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Knobs of the applier. Paths default to balenaOS locations.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Most memory the apply may take, in bytes, in all: a delta whose
    /// header's `apply_memory` plus the applier's [`FIXED_MEMORY`] is over
    /// it is refused before anything is written. Default 24 MiB
    /// ([`delta_core::DEFAULT_MAX_MEMORY`]), which every delta the
    /// generator makes by default fits.
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
    /// Folder of the update logs (None: no log). Default: the device's
    /// `/mnt/data/balenahup` for root, else `logs` in the user's state
    /// folder (`$XDG_STATE_HOME/delta` or `~/.local/state/delta`).
    pub log_dir: Option<PathBuf>,
    /// Update logs kept in `log_dir`, this run's counted: older ones are
    /// removed when a run starts (default 10).
    pub keep_logs: usize,
    /// Folder of the journal for block-device targets. Default:
    /// `/mnt/data/balenahup` for root, else the user's state folder.
    pub state_dir: PathBuf,
    /// Single-instance lock file. Default: `/var/lock/delta-apply.lock`
    /// for root, else `apply.lock` in the user's state folder.
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
    /// Public keys trusted to sign deltas: when not empty, a delta must
    /// carry a valid signature by one of them.
    pub trusted_keys: Vec<delta_core::signature::PublicKey>,
    /// A keyring (see [`keys::load_keyring`]) whose keys are required when
    /// `trusted_keys` is empty and the path exists.
    pub keyring: Option<PathBuf>,
    /// The BLAKE3 of the image the caller means to install: a delta that
    /// makes any other image is refused before anything is written.
    pub expect_new: Option<[u8; 32]>,
    /// Read and compare zero runs like data on every block device, for
    /// devices whose own zeroing is not to be trusted (`delta apply
    /// --compare-zero-runs`); off (the default), zero runs go to the
    /// device's zeroing where it is known to read back as zeros.
    pub compare_zero_runs: bool,
    /// Helper threads decoding segments ahead of the writer (`delta apply
    /// --threads`): 0, the default, is one per core (at most
    /// [`MAX_DEFAULT_THREADS`]); 1 is none, the run decodes every segment
    /// itself within [`memory_limit`](ApplyOptions::memory_limit); N > 1
    /// starts N helpers (at most [`MAX_THREADS`]), each adding at most
    /// [`THREAD_MEMORY`] to it.
    pub threads: usize,
}

/// Where an apply keeps its journal, update logs and instance lock.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Places {
    state: PathBuf,
    logs: PathBuf,
    instance_lock: PathBuf,
}

impl Places {
    /// The device's paths for root (balenaOS: `/mnt/data/balenahup` and
    /// `/var/lock`); for any other user, the first of these folders it can
    /// write to (or create): `$XDG_STATE_HOME/delta`,
    /// `~/.local/state/delta`, `$XDG_RUNTIME_DIR/delta`, and
    /// `/tmp/delta-UID` (only if it is not there yet or is the user's own
    /// folder, not a link), so that `delta apply old.img update.delta -o
    /// new.img` works without privileges, even for a user without a home.
    fn for_this_user() -> Places {
        let device = Places {
            state: "/mnt/data/balenahup".into(),
            logs: "/mnt/data/balenahup".into(),
            instance_lock: "/var/lock/delta-apply.lock".into(),
        };
        let uid = rustix::process::geteuid();
        if uid.is_root() {
            return device;
        }
        let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
        let env = |name| std::env::var_os(name).and_then(absolute);
        let candidates = [
            env("XDG_STATE_HOME").map(|p| p.join("delta")),
            env("HOME").map(|h| h.join(".local/state/delta")),
            env("XDG_RUNTIME_DIR").map(|p| p.join("delta")),
        ];
        let shared = std::env::temp_dir().join(format!("delta-{}", uid.as_raw()));
        let base = candidates
            .into_iter()
            .flatten()
            .find(|dir| writable(dir))
            .or_else(|| own_or_absent(&shared).then_some(shared));
        match base {
            Some(base) => Places {
                state: base.clone(),
                logs: base.join("logs"),
                instance_lock: base.join("apply.lock"),
            },
            None => device,
        }
    }
}

/// True when `dir` is a folder this process may write in, or could be
/// created under the nearest folder that exists.
fn writable(dir: &Path) -> bool {
    let existing = dir.ancestors().find(|p| p.exists());
    existing
        .is_some_and(|p| p.is_dir() && rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok())
}

/// True when `dir` does not exist, or is a folder (not a link) this user
/// owns: a shared folder such as `/tmp` may hold another user's trap.
fn own_or_absent(dir: &Path) -> bool {
    match std::fs::symlink_metadata(dir) {
        Err(e) => e.kind() == std::io::ErrorKind::NotFound && writable(dir),
        Ok(meta) => {
            use std::os::unix::fs::MetadataExt;
            meta.is_dir() && meta.uid() == rustix::process::geteuid().as_raw()
        }
    }
}

impl Default for ApplyOptions {
    fn default() -> Self {
        let places = Places::for_this_user();
        ApplyOptions {
            memory_limit: delta_core::DEFAULT_MAX_MEMORY,
            verify_source: false,
            lock_root: "/tmp/balena-supervisor/services".into(),
            lock_poll: Duration::from_secs(5),
            lock_timeout: None,
            override_lock: false,
            supervisor_config: "/tmp/balena-supervisor/target-state-config".into(),
            commit_hook: None,
            log_dir: Some(places.logs),
            keep_logs: 10,
            state_dir: places.state,
            instance_lock: places.instance_lock,
            migration: false,
            data_dir: "/mnt/data/resin-data".into(),
            data_limit: delta_datacheck::DEFAULT_LIMIT,
            checkpoint_bytes: 256 << 20,
            checkpoint_interval: Duration::from_secs(5),
            max_image_size: DEFAULT_MAX_IMAGE_SIZE,
            trusted_keys: Vec::new(),
            keyring: Some(keys::DEFAULT_KEYRING.into()),
            expect_new: None,
            compare_zero_runs: false,
            threads: 0,
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
    /// What this run's writes did on the target: bytes written (flash
    /// wear), found already in place, zeroed by the device itself.
    pub writes: WriteStats,
    /// Non-fatal problems (e.g. the update log could not be written).
    pub warnings: Vec<String>,
    /// The update log written, if any.
    pub log_path: Option<PathBuf>,
    /// Peak resident memory of the apply, in bytes: of this process, or of
    /// a re-deflater child at its peak (which counts the pages it shares
    /// with this process), whichever is higher; 0 where `/proc` does not
    /// tell. In a library it is the host process's peak.
    pub peak_memory: u64,
}

/// Applies deltas and full-image payloads onto a target.
pub struct Applier {
    options: ApplyOptions,
    progress: Option<ProgressFn>,
    cancel: Arc<AtomicBool>,
    /// The update log of the last run, if one was written.
    log_path: Option<PathBuf>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier with `options`.
    pub fn new(options: ApplyOptions) -> Applier {
        Applier {
            options,
            progress: None,
            cancel: Arc::new(AtomicBool::new(false)),
            log_path: None,
        }
    }

    /// Sets the progress callback.
    pub fn on_progress(mut self, f: impl FnMut(&Progress) + Send + 'static) -> Applier {
        self.progress = Some(Box::new(f));
        self
    }

    /// A flag that, once set, stops the apply at the next write, segment
    /// or lock probe with [`Error::Cancelled`], after a journal checkpoint
    /// of what was written (the run can be resumed). Setting it from a
    /// signal handler is safe (`signal_hook::flag::register`).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// The update log written by the last [`apply`](Applier::apply), if
    /// any: also after a failure, for the caller to point at.
    pub fn log_path(&self) -> Option<&Path> {
        self.log_path.as_deref()
    }

    /// Rebuilds the new image from `old` (None for a full-image payload)
    /// and the delta file `delta` into `target`, verified and committed.
    ///
    /// # Errors
    /// See [`Error`]; the target path is never left looking complete, and
    /// [`Error::exit_code`] gives the process exit code.
    pub fn apply(&mut self, old: Option<&Path>, delta: &Path, target: &Path) -> Result<Outcome> {
        let input = open_file(delta)?;
        self.apply_from(old, input, target)
    }

    /// As [`Applier::apply`], with the delta read front to back from
    /// `delta` as it arrives: a pipe ([`ReaderInput`], [`input::stdin`]), a
    /// download (`http::UrlInput`) or the caller's own transport. Each
    /// payload is checked against its digest before it is used; a resumed
    /// run skips what its journal says is written.
    ///
    /// # Errors
    /// As [`Applier::apply`]; a delta cut short is [`Error::Input`], and
    /// the run can be resumed.
    pub fn apply_from(
        &mut self,
        old: Option<&Path>,
        delta: Box<dyn DeltaInput>,
        target: &Path,
    ) -> Result<Outcome> {
        let _instance = locks::InstanceLock::acquire(&self.options.instance_lock)?;
        let (log, warning) = match &self.options.log_dir {
            Some(dir) => log::UpdateLog::open(dir, self.options.keep_logs),
            None => (log::UpdateLog::disabled(), None),
        };
        let mut report = Reporter::new(&mut self.progress, log);
        let started = Instant::now();
        report.log.line(format!(
            "delta-apply {} old={} delta={} target={} options={:?}",
            env!("CARGO_PKG_VERSION"),
            old.map_or("-".into(), |p| p.display().to_string()),
            delta.name(),
            target.display(),
            self.options
        ));
        report.log.line("step preparing started");
        let paths = run::Paths { old, delta, target };
        let result =
            Run::prepare(&self.options, &self.cancel, &mut report, paths).and_then(|mut run| {
                run.write()?;
                run.commit()
            });
        let took = log::duration(started.elapsed());
        match &result {
            Ok(outcome) => report.log.line(format!(
                "result: success, {} bytes, blake3 {}, {} segments ({} resumed), {took}",
                outcome.new_len, outcome.new_digest, outcome.segments, outcome.resumed_segments,
            )),
            Err(e @ Error::Cancelled) => report.log.line(format!(
                "result: cancelled (exit code {}) after {took} in step {}: the journal is \
                 kept; re-run the same command to resume",
                e.exit_code(),
                report.current().label(),
            )),
            Err(e) => report.log.line(format!(
                "result: failure (exit code {}) after {took} in step {}: {}",
                e.exit_code(),
                report.current().label(),
                cause_chain(e)
            )),
        }
        let log_path = report.log.path().map(Path::to_owned);
        self.log_path.clone_from(&log_path);
        let warnings = std::mem::take(&mut report.warnings);
        result.map(|mut outcome| {
            outcome.warnings.extend(warning);
            outcome.warnings.extend(warnings);
            outcome.log_path = log_path;
            outcome
        })
    }
}

/// Opens a delta file (a regular file or a block device, never blocking)
/// and reads its header and table through the one reader, checked against
/// `limits` and the file's length: what the applier does first, for
/// callers that only inspect a delta (`delta info`).
///
/// # Errors
/// I/O errors naming the file, or a malformed or over-limit header or
/// table ([`Error::Header`]).
pub fn read_delta(path: &Path, limits: &delta_format::Limits) -> Result<delta_format::Index> {
    let mut input = open_file(path)?;
    read_index_from(input.as_mut(), limits).map(|(index, _)| index)
}

/// Opens the delta at `path` as an input (see [`input::open_path`]).
fn open_file(path: &Path) -> Result<Box<dyn DeltaInput>> {
    input::open_path(path).map_err(|source| Error::Io {
        op: "open delta",
        path: path.to_owned(),
        source,
    })
}

/// Reads the header, table and signatures at the start of `input` through
/// the one reader, checked against `limits` and, when the input knows it,
/// its length. Returns the index and the bytes read.
///
/// # Errors
/// A malformed, truncated or over-limit header or table
/// ([`Error::Header`]).
pub fn read_index_from(
    input: &mut dyn DeltaInput,
    limits: &delta_format::Limits,
) -> Result<(delta_format::Index, u64)> {
    let name = PathBuf::from(input.name());
    let bad = |source| Error::Header { path: name, source };
    let mut counted = input::Counted {
        inner: &mut *input,
        count: 0,
    };
    let index = delta_format::read_index(&mut counted, limits);
    let read = counted.count;
    match (index, input.known_len()) {
        (Ok(index), Some(len)) => match index.check_file_len(len) {
            Ok(()) => Ok((index, read)),
            Err(e) => Err(bad(e)),
        },
        (Ok(index), None) => Ok((index, read)),
        (Err(e), _) => Err(bad(e)),
    }
}

/// Makes the C allocator hand buffers of 1 MiB or more back to the system
/// when they are freed, so that the applier's peak memory stays what
/// `apply_memory` and its fixed overhead say. Call it once, early, in a
/// process that applies deltas (`delta apply` does; it changes a setting
/// of the whole process).
///
/// glibc otherwise raises its mmap threshold each time a large buffer is
/// freed, up to 32 MiB, and then serves large buffers from a heap that
/// fragments: segments whose buffers differ in size (zstd windows, LZMA
/// dictionaries) took the alt-major apply from 26.5 MiB to 33.6 MiB of
/// peak RSS. Elsewhere (musl) it does nothing.
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt changes one malloc tunable; it takes no pointers and
    // glibc serialises it against allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// The causes of `e` (each `source()`), outermost first: the one walk of
/// a cause chain, which [`cause_chain`] and the CLI's JSON errors share.
pub fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(e.source(), |cause| cause.source())
}

/// The error's message and each cause that the message does not already
/// include (most variants print their cause), one per line, as the update
/// log has them.
pub fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = e.to_string();
    for cause in causes(e) {
        let text = cause.to_string();
        if !chain.contains(&text) {
            chain.push_str(&format!("\n  caused by: {text}"));
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every delta the generator makes by default fits the default cap.
    #[test]
    fn default_deltas_fit_the_default_memory_cap() {
        assert!(delta_core::SEGMENT_MEMORY + FIXED_MEMORY <= ApplyOptions::default().memory_limit);
    }

    #[test]
    fn the_log_names_each_cause_once() {
        let e = Error::Io {
            op: "open delta",
            path: "u.delta".into(),
            source: std::io::Error::other("disk on fire"),
        };
        let chain = cause_chain(&e);
        assert_eq!(chain.matches("disk on fire").count(), 1, "{chain}");
        let causes: Vec<String> = causes(&e).map(ToString::to_string).collect();
        assert_eq!(causes, ["disk on fire"]);
    }
}
