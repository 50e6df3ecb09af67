//! `delta_apply`: a [`delta_apply::Applier`] with options from C, progress
//! to a C callback and cancellation from a C flag.
//!
//! The cancel flag is the caller's `int`: a watcher thread, alive only
//! while `delta_apply` runs, reads it every few milliseconds with an atomic
//! load (as does each progress report) and sets the applier's
//! [`delta_apply::Applier::cancel_handle`] once it is not zero. The applier
//! stops at the next segment, checkpoint or lock probe.

use crate::error::{catch, finish, optional_path_arg, path_arg, DeltaError, Failure};
use delta_apply::{Applier, ApplyOptions, Progress, Step};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Step `Step::Preparing`: checks of the delta, source, target, locks.
pub const DELTA_STEP_PREPARING: u32 = 0;
/// Step `Step::Applying`: producing the new image.
pub const DELTA_STEP_APPLYING: u32 = 1;
/// Step `Step::Verifying`: checking the whole new image's digest.
pub const DELTA_STEP_VERIFYING: u32 = 2;
/// Step `Step::WaitingForLock`: an application holds its update lock
/// (the message names it); retrying.
pub const DELTA_STEP_WAITING_FOR_LOCK: u32 = 3;
/// Step `Step::Committing`: the commit hook, then the switch into place.
pub const DELTA_STEP_COMMITTING: u32 = 4;
/// Step `Step::Done`: finished.
pub const DELTA_STEP_DONE: u32 = 5;

fn step_number(step: Step) -> u32 {
    match step {
        Step::Preparing => DELTA_STEP_PREPARING,
        Step::Applying => DELTA_STEP_APPLYING,
        Step::Verifying => DELTA_STEP_VERIFYING,
        Step::WaitingForLock => DELTA_STEP_WAITING_FOR_LOCK,
        Step::Committing => DELTA_STEP_COMMITTING,
        Step::Done => DELTA_STEP_DONE,
    }
}

/// Receives progress reports, on the thread that called `delta_apply`:
/// the step (a `DELTA_STEP_*` number), bytes done and total in that step,
/// and a detail or NULL (valid during the call only). Called at each step
/// change and at least once a second during long steps.
pub type DeltaProgressFn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        step: u32,
        bytes_done: u64,
        bytes_total: u64,
        message: *const c_char,
    ),
>;

/// Options of `delta_apply()`. Fill with `delta_apply_options_default`,
/// then change fields. A string field is a path owned by the caller (valid
/// during the call) or NULL for the library's default.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaApplyOptions {
    /// Most memory the apply may take, in bytes, in all: a delta whose
    /// header's `apply_memory` plus the applier's fixed 9 MiB is over it
    /// is refused before anything is written (default 24 MiB).
    pub memory_limit: u64,
    /// Largest new image written to a file target, in bytes (a block
    /// device target is bounded by its size).
    pub max_image_size: u64,
    /// Hash the whole old image before writing anything.
    pub verify_source: bool,
    /// Treat the update as a 1.x → 2.x migration even if the delta does
    /// not say so (the data folder is checked first).
    pub migration: bool,
    /// Commit even if application update locks are held.
    pub override_lock: bool,
    /// Write no update log (`log_dir` is then ignored).
    pub no_log: bool,
    /// Read and compare zero runs like data on every block device, for
    /// devices whose own zeroing is not to be trusted (`delta apply
    /// --compare-zero-runs`); off, zero runs go to the device's zeroing
    /// where it is known to read back as zeros (discard on a loop device,
    /// write-zeroes).
    pub compare_zero_runs: bool,
    /// Give up waiting for application locks after this many milliseconds
    /// (`DELTA_ERR_LOCKED`); negative: wait
    /// forever.
    pub lock_timeout_ms: i64,
    /// Milliseconds between lock probes.
    pub lock_poll_ms: u64,
    /// Largest tar+gzip size of `data_dir` allowed for a migration, bytes.
    pub data_limit: u64,
    /// Update logs kept in `log_dir`, this run's counted: older ones are
    /// removed as a run starts.
    pub keep_logs: u64,
    /// Folder of the update logs.
    pub log_dir: *const c_char,
    /// Folder of the journal of block-device targets.
    pub state_dir: *const c_char,
    /// Single-instance lock file.
    pub instance_lock: *const c_char,
    /// Folder whose `*/*/updates.lock` files gate the commit.
    pub lock_root: *const c_char,
    /// Supervisor target-state config (JSON) that may set the override.
    pub supervisor_config: *const c_char,
    /// The application data folder checked for migrations.
    pub data_dir: *const c_char,
    /// Shell command (`sh -c`) run once the locks are clear, before the
    /// commit; NULL: none.
    pub commit_hook: *const c_char,
    /// Public keys to trust (a file of key lines or a folder of `*.pub`
    /// files): the delta must be signed by one of them. NULL: those of
    /// `keyring` when it exists.
    pub trusted_keys: *const c_char,
    /// Default keyring, whose keys are required when it exists and
    /// `trusted_keys` is NULL.
    pub keyring: *const c_char,
    /// BLAKE3 (64 hex digits) of the image the caller means to install: a
    /// delta for another image is refused before anything is written.
    /// NULL: any.
    pub expect_new: *const c_char,
    /// Called with `user_data` at each progress report; NULL: none.
    pub progress: DeltaProgressFn,
    /// Passed to `progress` as its first argument.
    pub user_data: *mut c_void,
    /// NULL, or an `int` the caller may set non-zero from any thread, with
    /// an atomic store (C11 `atomic_store`, `__atomic_store_n`, Go's
    /// `atomic.StoreInt32`), to stop the apply with `DELTA_ERR_CANCELLED`;
    /// it must stay valid until `delta_apply()` returns.
    pub cancel: *const c_int,
    /// Sent as `Authorization: Bearer TOKEN` when `delta` is an http(s)
    /// URL (a delta service's device token); NULL: none. The service's
    /// 202 and 503 `Retry-After` answers are waited through (up to an
    /// hour) either way.
    pub bearer_token: *const c_char,
    /// Helper threads decoding segments ahead of the writer: 0 (the
    /// default) is one per core, at most 4; 1 is none (the calling thread
    /// decodes every segment, within `memory_limit`); N > 1 starts N
    /// helpers (at most 64), each adding at most 20 MiB to it.
    pub threads: u32,
}

/// What `delta_apply()` did.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaApplyResult {
    /// Size of the new image, bytes.
    pub new_len: u64,
    /// Segments in the delta.
    pub segments: u64,
    /// Segments found done by an earlier, interrupted run.
    pub resumed_segments: u64,
    /// Bytes of the new image found written by an earlier run.
    pub resumed_bytes: u64,
    /// Non-fatal problems met (e.g. the update log could not be written);
    /// the update log names them.
    pub warnings: u64,
    /// BLAKE3 of the new image, verified: 64 hex digits and a NUL.
    pub new_digest: [c_char; crate::DELTA_DIGEST_HEX_SIZE],
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Fills `options` with the library's defaults (those of the `delta apply`
/// command): string fields NULL.
///
/// # Safety
/// `options` is NULL (ignored) or valid for writing one
/// `DeltaApplyOptions`.
#[no_mangle]
pub unsafe extern "C" fn delta_apply_options_default(options: *mut DeltaApplyOptions) {
    if options.is_null() {
        return;
    }
    let d = ApplyOptions::default();
    let value = DeltaApplyOptions {
        memory_limit: d.memory_limit,
        max_image_size: d.max_image_size,
        verify_source: d.verify_source,
        migration: d.migration,
        override_lock: d.override_lock,
        no_log: d.log_dir.is_none(),
        compare_zero_runs: d.compare_zero_runs,
        lock_timeout_ms: d
            .lock_timeout
            .map_or(-1, |t| i64::try_from(millis(t)).unwrap_or(i64::MAX)),
        lock_poll_ms: millis(d.lock_poll),
        data_limit: d.data_limit,
        keep_logs: u64::try_from(d.keep_logs).unwrap_or(u64::MAX),
        log_dir: std::ptr::null(),
        state_dir: std::ptr::null(),
        instance_lock: std::ptr::null(),
        lock_root: std::ptr::null(),
        supervisor_config: std::ptr::null(),
        data_dir: std::ptr::null(),
        commit_hook: std::ptr::null(),
        trusted_keys: std::ptr::null(),
        keyring: std::ptr::null(),
        expect_new: std::ptr::null(),
        progress: None,
        user_data: std::ptr::null_mut(),
        cancel: std::ptr::null(),
        bearer_token: std::ptr::null(),
        threads: u32::try_from(d.threads).unwrap_or(u32::MAX),
    };
    // SAFETY: not NULL (checked), valid for writing by the caller's
    // contract.
    unsafe { options.write(value) };
}

impl DeltaApplyOptions {
    /// The Rust options: the library's defaults, overridden by each field.
    ///
    /// # Safety
    /// Each string field is NULL or a NUL-terminated string valid during
    /// the call.
    unsafe fn options(&self) -> Result<ApplyOptions, Failure> {
        let d = ApplyOptions::default();
        let path = |ptr| {
            // SAFETY: each string field is NULL or a valid string, by this
            // function's contract.
            unsafe { optional_path_arg(ptr) }.map(std::path::Path::to_owned)
        };
        let text = |ptr: *const c_char, name: &str| -> Result<Option<String>, Failure> {
            if ptr.is_null() {
                return Ok(None);
            }
            // SAFETY: not NULL (checked), a valid string by this
            // function's contract.
            let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
            std::str::from_utf8(bytes)
                .map(|s| Some(s.to_owned()))
                .map_err(|_| Failure::argument(format!("options.{name} is not UTF-8")))
        };
        let trusted_keys = match path(self.trusted_keys) {
            Some(path) => delta_apply::keys::load_keyring(&path)?,
            None => Vec::new(),
        };
        let expect_new = match text(self.expect_new, "expect_new")? {
            Some(hex) => Some(*delta_core::from_hex::<32>(hex.trim()).ok_or_else(|| {
                Failure::argument("options.expect_new: expected 64 hex digits (a BLAKE3 digest)")
            })?),
            None => None,
        };
        Ok(ApplyOptions {
            memory_limit: self.memory_limit,
            max_image_size: self.max_image_size,
            verify_source: self.verify_source,
            migration: self.migration,
            override_lock: self.override_lock,
            compare_zero_runs: self.compare_zero_runs,
            threads: usize::try_from(self.threads).unwrap_or(usize::MAX),
            log_dir: if self.no_log {
                None
            } else {
                path(self.log_dir).or(d.log_dir)
            },
            lock_timeout: u64::try_from(self.lock_timeout_ms)
                .ok()
                .map(Duration::from_millis),
            lock_poll: Duration::from_millis(self.lock_poll_ms),
            data_limit: self.data_limit,
            keep_logs: usize::try_from(self.keep_logs).unwrap_or(usize::MAX),
            state_dir: path(self.state_dir).unwrap_or(d.state_dir),
            instance_lock: path(self.instance_lock).unwrap_or(d.instance_lock),
            lock_root: path(self.lock_root).unwrap_or(d.lock_root),
            supervisor_config: path(self.supervisor_config).unwrap_or(d.supervisor_config),
            data_dir: path(self.data_dir).unwrap_or(d.data_dir),
            commit_hook: text(self.commit_hook, "commit_hook")?,
            trusted_keys,
            keyring: path(self.keyring).or(d.keyring),
            expect_new,
            ..d
        })
    }
}

/// The caller's cancel flag, read with atomic loads.
#[derive(Debug, Clone, Copy)]
struct CancelFlag(*const c_int);

// SAFETY: the flag is only ever read with atomic loads, and by the
// contract of `delta_apply` stays valid until it returns, which is after
// every thread holding a copy has ended.
unsafe impl Send for CancelFlag {}

impl CancelFlag {
    fn is_set(self) -> bool {
        if self.0.is_null() {
            return false;
        }
        // SAFETY: not NULL (checked); aligned, valid until delta_apply
        // returns, and written only atomically, by its contract; only
        // loads are done through the `*mut`.
        unsafe { AtomicI32::from_ptr(self.0.cast_mut()) }.load(Ordering::Acquire) != 0
    }
}

/// The caller's callback and its data, called from the applier.
struct Callback {
    f: DeltaProgressFn,
    user_data: *mut c_void,
    cancel_flag: CancelFlag,
    cancel: Arc<AtomicBool>,
}

// SAFETY: the applier calls its progress callback on the thread that
// called `delta_apply` (the callback never leaves that call), so the
// caller's pointers are used where the caller gave them.
unsafe impl Send for Callback {}

impl Callback {
    /// Passes `p` on, then reads the cancel flag (the callback is where a
    /// caller often decides to cancel: the applier then stops at its next
    /// check, without waiting for the watcher).
    fn report(&self, p: &Progress) {
        self.call(p);
        if self.cancel_flag.is_set() {
            self.cancel.store(true, Ordering::Relaxed);
        }
    }

    fn call(&self, p: &Progress) {
        let Some(f) = self.f else {
            return;
        };
        let message = p
            .message
            .as_ref()
            .and_then(|m| CString::new(m.replace('\0', "\\0")).ok());
        // SAFETY: a function of the caller's with the DeltaProgressFn
        // signature, given its own user data; the message lives until the
        // call returns.
        unsafe {
            f(
                self.user_data,
                step_number(p.step),
                p.bytes_done,
                p.bytes_total,
                message.as_ref().map_or(std::ptr::null(), |m| m.as_ptr()),
            )
        };
    }
}

/// Rebuilds the new image from `old` (NULL for a full-image payload) and
/// `delta` into `target` (a file, written as `TARGET.partial` and renamed
/// once verified, or the inactive partition's block device), verifies it
/// and commits it, as `delta apply OLD DELTA -o TARGET` does. `delta` is a
/// path, `-` for standard input, or an `http://` or `https://` URL,
/// applied as it downloads (10 retries, 30 s timeout).
///
/// `options` NULL means the defaults, with no progress callback and no
/// cancel flag (`options.progress`, `options.user_data`,
/// `options.cancel`). On success `*result` (may be NULL) is filled. Under glibc it sets the process's mmap threshold to
/// 1 MiB (`mallopt(M_MMAP_THRESHOLD)`), so that freed buffers leave the
/// process and peak memory stays within what the delta states.
///
/// # Errors
/// A `DELTA_ERR_*` code and `*err` (see `DeltaError`); the target
/// path is never left looking complete. `DELTA_ERR_LOCKED`:
/// verified, not committed, call again later.
///
/// # Safety
/// Each string is NULL or NUL-terminated and valid during the call;
/// `options`, `result` and `err` are NULL or valid; `options.progress` is
/// NULL or a function of that signature; `options.cancel` as its field
/// says.
#[no_mangle]
pub unsafe extern "C" fn delta_apply(
    old: *const c_char,
    delta: *const c_char,
    target: *const c_char,
    options: *const DeltaApplyOptions,
    result: *mut DeltaApplyResult,
    err: *mut *mut DeltaError,
) -> c_int {
    delta_apply::bound_allocator();
    let outcome = catch(|| {
        // SAFETY: each pointer is NULL or valid during the call, by
        // this function's contract.
        let (old, delta, target, options) = unsafe {
            (
                optional_path_arg(old),
                path_arg(delta, "delta")?,
                path_arg(target, "target")?,
                options.as_ref(),
            )
        };
        let (progress, user_data, cancel) = match options {
            Some(o) => (o.progress, o.user_data, o.cancel),
            None => (None, std::ptr::null_mut(), std::ptr::null()),
        };
        let bearer = match options.map(|o| o.bearer_token) {
            Some(token) if !token.is_null() => {
                // SAFETY: not NULL (checked), a valid string by this
                // function's contract.
                let bytes = unsafe { CStr::from_ptr(token) }.to_bytes();
                let token = std::str::from_utf8(bytes)
                    .map_err(|_| Failure::argument("options.bearer_token is not UTF-8"))?;
                Some(token.to_owned())
            }
            _ => None,
        };
        let options = match options {
            // SAFETY: its strings are NULL or valid by this function's
            // contract.
            Some(o) => unsafe { o.options() }?,
            None => ApplyOptions::default(),
        };
        let mut applier = Applier::new(options);
        let callback = Callback {
            f: progress,
            user_data,
            cancel_flag: CancelFlag(cancel),
            cancel: applier.cancel_handle(),
        };
        if callback.f.is_some() || !cancel.is_null() {
            applier = applier.on_progress(move |p| callback.report(p));
        }
        let url = delta_apply::UrlOptions {
            cancel: Some(applier.cancel_handle()),
            bearer,
            ..delta_apply::UrlOptions::default()
        };
        let input = delta_apply::input::open(delta.as_os_str(), &url).map_err(|source| {
            delta_apply::Error::Io {
                op: "open delta",
                path: delta.to_owned(),
                source,
            }
        })?;
        let outcome = with_cancel_watcher(CancelFlag(cancel), &mut applier, |applier| {
            applier.apply_from(old, input, target)
        })?;
        if !result.is_null() {
            let value = DeltaApplyResult {
                new_len: outcome.new_len,
                segments: outcome.segments,
                resumed_segments: outcome.resumed_segments,
                resumed_bytes: outcome.resumed_bytes,
                warnings: outcome.warnings.len() as u64,
                new_digest: crate::digest_field(&outcome.new_digest),
            };
            // SAFETY: not NULL (checked), valid for writing by this
            // function's contract.
            unsafe { result.write(value) };
        }
        Ok(())
    });
    // SAFETY: `err` is NULL or valid by this function's contract.
    unsafe { finish(err, outcome) }
}

/// How often the watcher reads the caller's cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// Runs `f` on `applier`, with a thread that sets the applier's cancel
/// handle once `flag` is set (no thread when `flag` is NULL). The thread
/// ends before this returns.
fn with_cancel_watcher<T>(
    flag: CancelFlag,
    applier: &mut Applier,
    f: impl FnOnce(&mut Applier) -> T,
) -> T {
    if flag.0.is_null() {
        return f(applier);
    }
    let cancel = applier.cancel_handle();
    let done = AtomicBool::new(false);
    let (cancel, done) = (&cancel, &done);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(move || {
            while !done.load(Ordering::Acquire) {
                if flag.is_set() {
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::park_timeout(CANCEL_POLL);
            }
        });
        let value = f(applier);
        done.store(true, Ordering::Release);
        watcher.thread().unpark();
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_zero_runs_keep_logs_and_threads_reach_the_applier() {
        let mut raw = std::mem::MaybeUninit::uninit();
        // SAFETY: a valid place for the options.
        let mut raw = unsafe {
            delta_apply_options_default(raw.as_mut_ptr());
            raw.assume_init()
        };
        // SAFETY: every string field is NULL.
        let d = unsafe { raw.options() }.unwrap();
        assert!(!d.compare_zero_runs);
        assert_eq!(d.threads, 0);
        raw.compare_zero_runs = true;
        raw.keep_logs = 3;
        raw.threads = 2;
        // SAFETY: every string field is NULL.
        let o = unsafe { raw.options() }.unwrap();
        assert!(o.compare_zero_runs);
        assert_eq!(o.keep_logs, 3);
        assert_eq!(o.threads, 2);
    }
}
