//! Result codes, the opaque [`DeltaError`], and the one wrapper every
//! function body runs in ([`guard`]): it catches panics, turns failures
//! into codes and hands the error to the caller.
//!
//! The codes are stable: a code keeps its number forever and new ones are
//! appended. They sort the Rust errors into what a caller acts on
//! differently (retry later, report a bad download, fix the call); the
//! message says the rest.

use std::ffi::{c_char, c_int, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Success.
pub const DELTA_OK: c_int = 0;
/// A required argument is NULL, or an argument or option is malformed.
pub const DELTA_ERR_INVALID_ARGUMENT: c_int = 1;
/// A file operation failed, or reading the delta did (the message names
/// the operation and file).
pub const DELTA_ERR_IO: c_int = 2;
/// The delta is malformed, damaged or over a limit, or a segment failed
/// to apply (which a wrong old image can cause too).
pub const DELTA_ERR_BAD_DELTA: c_int = 3;
/// Not now: the new image is verified but an application's update lock
/// kept the commit waiting until the timeout; calling again commits it
/// (the command's exit code 3).
pub const DELTA_ERR_LOCKED: c_int = 4;
/// The cancel flag was set; calling again resumes.
pub const DELTA_ERR_CANCELLED: c_int = 5;
/// A bug: the library panicked (the message says where).
pub const DELTA_ERR_PANIC: c_int = 6;
/// Any other failure.
pub const DELTA_ERR_OTHER: c_int = 7;
/// The old image is not the one the delta was made for, or is missing.
pub const DELTA_ERR_SOURCE_MISMATCH: c_int = 8;
/// The target is refused: it is, or shares storage with, the old image
/// or an input, a mounted device, or not a file or block device.
pub const DELTA_ERR_UNSAFE_TARGET: c_int = 9;
/// The trusted keys cannot be read, or the delta's signatures do not
/// satisfy them.
pub const DELTA_ERR_SIGNATURE: c_int = 10;
/// The delta makes another image than the `expect_new` digest.
pub const DELTA_ERR_UNEXPECTED_IMAGE: c_int = 11;
/// The new image is larger than the target or `max_image_size`.
pub const DELTA_ERR_TOO_LARGE: c_int = 12;
/// The rebuilt image does not match the digest in the delta header.
pub const DELTA_ERR_NEW_DIGEST: c_int = 13;
/// Another apply holds the single-instance lock.
pub const DELTA_ERR_ALREADY_RUNNING: c_int = 14;
/// The commit hook failed; the target is verified but not committed.
pub const DELTA_ERR_HOOK_FAILED: c_int = 15;
/// A 1.x → 2.x migration is refused, or its data check could not run.
pub const DELTA_ERR_DATA_TOO_LARGE: c_int = 16;
/// The output of `delta_generate` exists and `options.replace` is off
/// (as `delta gen` without `--force`): refused before any work, the
/// existing file kept as it is.
pub const DELTA_ERR_OUTPUT_EXISTS: c_int = 17;

/// An error: a code, a message with its causes, and the exit code the
/// `delta` command would give. Opaque to C: read it with
/// `delta_error_code` and `delta_error_message`, free it with
/// `delta_error_free`.
#[derive(Debug)]
pub struct DeltaError {
    code: c_int,
    exit_code: c_int,
    message: CString,
}

/// A failure inside a function body, before it becomes a `DeltaError`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: c_int,
    pub(crate) exit_code: c_int,
    pub(crate) message: String,
}

impl Failure {
    /// A failure with `code` and the command's exit code 1.
    pub(crate) fn new(code: c_int, message: impl Into<String>) -> Failure {
        Failure {
            code,
            exit_code: 1,
            message: message.into(),
        }
    }

    /// A bad argument (the command's usage error, exit code 2).
    pub(crate) fn argument(message: impl Into<String>) -> Failure {
        Failure {
            code: DELTA_ERR_INVALID_ARGUMENT,
            exit_code: 2,
            message: message.into(),
        }
    }
}

impl From<delta_apply::Error> for Failure {
    fn from(e: delta_apply::Error) -> Failure {
        use delta_apply::Error as E;
        let code = match &e {
            E::Io { .. } | E::Input { .. } => DELTA_ERR_IO,
            E::Header { .. } | E::Segment { .. } => DELTA_ERR_BAD_DELTA,
            E::SourceMismatch { .. } | E::NeedsSource { .. } => DELTA_ERR_SOURCE_MISMATCH,
            E::UnsafeTarget { .. } => DELTA_ERR_UNSAFE_TARGET,
            E::Keyring { .. } | E::Signature { .. } => DELTA_ERR_SIGNATURE,
            E::UnexpectedImage { .. } => DELTA_ERR_UNEXPECTED_IMAGE,
            E::ImageTooLarge { .. } => DELTA_ERR_TOO_LARGE,
            E::NewDigest { .. } => DELTA_ERR_NEW_DIGEST,
            E::AlreadyRunning { .. } => DELTA_ERR_ALREADY_RUNNING,
            E::LockTimeout { .. } => DELTA_ERR_LOCKED,
            E::HookFailed { .. } => DELTA_ERR_HOOK_FAILED,
            E::DataTooLarge { .. } | E::DataCheck(_) => DELTA_ERR_DATA_TOO_LARGE,
            E::Cancelled => DELTA_ERR_CANCELLED,
            _ => DELTA_ERR_OTHER,
        };
        Failure {
            code,
            exit_code: e.exit_code(),
            message: delta_apply::cause_chain(&e),
        }
    }
}

impl From<delta_gen::Error> for Failure {
    fn from(e: delta_gen::Error) -> Failure {
        use delta_gen::Error as E;
        let code = match &e {
            E::Io { .. } | E::Input { .. } | E::Output { .. } => DELTA_ERR_IO,
            E::Option { .. } | E::Threads { .. } | E::NotAnImage { .. } => {
                DELTA_ERR_INVALID_ARGUMENT
            }
            E::OutputNotRegular { .. } | E::OutputIsInput { .. } => DELTA_ERR_UNSAFE_TARGET,
            // The library's message names the command's --force.
            E::OutputExists { path } => {
                return Failure::new(
                    DELTA_ERR_OUTPUT_EXISTS,
                    format!(
                        "refusing to replace {}: it exists (set options.replace to replace it)",
                        path.display()
                    ),
                )
            }
            _ => DELTA_ERR_OTHER,
        };
        Failure::new(code, delta_apply::cause_chain(&e))
    }
}

/// Runs `body`, the body of an exported function: a panic becomes a
/// `DELTA_ERR_PANIC` failure.
pub(crate) fn catch(body: impl FnOnce() -> Result<(), Failure>) -> Result<(), Failure> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(Failure::new(
            DELTA_ERR_PANIC,
            format!("internal error (a bug in libdelta, please report it): {what}"),
        ))
    })
}

/// The code of `outcome`; on failure `*err` (when `err` is not NULL)
/// receives a new `DeltaError`, on success NULL.
///
/// # Safety
/// `err` is NULL or valid for writing one pointer.
pub(crate) unsafe fn finish(err: *mut *mut DeltaError, outcome: Result<(), Failure>) -> c_int {
    let (code, error) = match outcome {
        Ok(()) => (DELTA_OK, std::ptr::null_mut()),
        Err(f) => {
            // A NUL inside a message (from a path) would cut it short.
            let message = CString::new(f.message.replace('\0', "\\0")).unwrap_or_default();
            let error = DeltaError {
                code: f.code,
                exit_code: f.exit_code,
                message,
            };
            (f.code, error_ptr(err, error))
        }
    };
    if !err.is_null() {
        // SAFETY: the caller passes NULL (checked) or a pointer valid for
        // writing one pointer.
        unsafe { err.write(error) };
    }
    code
}

/// `catch` then `finish`.
///
/// # Safety
/// As `finish`.
#[cfg(test)]
unsafe fn guard(err: *mut *mut DeltaError, body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    // SAFETY: forwarded to the caller's contract.
    unsafe { finish(err, catch(body)) }
}

/// The error on the heap when the caller asked for it (`err` not NULL).
fn error_ptr(err: *mut *mut DeltaError, error: DeltaError) -> *mut DeltaError {
    if err.is_null() {
        std::ptr::null_mut()
    } else {
        Box::into_raw(Box::new(error))
    }
}

/// The C string argument `name` as a path (any bytes but NUL).
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string that stays valid and unchanged
/// for `'a`.
pub(crate) unsafe fn path_arg<'a>(ptr: *const c_char, name: &str) -> Result<&'a Path, Failure> {
    // SAFETY: forwarded to the caller's contract.
    unsafe { optional_path_arg(ptr) }.ok_or_else(|| Failure::argument(format!("{name} is NULL")))
}

/// The C string `ptr` as a path, None when NULL.
///
/// # Safety
/// As `path_arg`.
pub(crate) unsafe fn optional_path_arg<'a>(ptr: *const c_char) -> Option<&'a Path> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: not NULL (checked), and NUL-terminated and valid for 'a by
    // the caller's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    Some(Path::new(std::ffi::OsStr::from_bytes(bytes)))
}

/// The code of `error`; `DELTA_ERR_INVALID_ARGUMENT` for NULL.
///
/// # Safety
/// `error` is NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn delta_error_code(error: *const DeltaError) -> c_int {
    // SAFETY: NULL or a live error by the caller's contract.
    unsafe { error.as_ref() }.map_or(DELTA_ERR_INVALID_ARGUMENT, |e| e.code)
}

/// The exit code the `delta` command gives for this error: 3 for
/// `DELTA_ERR_LOCKED`, 4 for `DELTA_ERR_CANCELLED`, 2 for a bad argument,
/// 1 otherwise.
///
/// # Safety
/// As `delta_error_code`.
#[no_mangle]
pub unsafe extern "C" fn delta_error_exit_code(error: *const DeltaError) -> c_int {
    // SAFETY: NULL or a live error by the caller's contract.
    unsafe { error.as_ref() }.map_or(2, |e| e.exit_code)
}

/// The message of `error`, naming the file and what was wrong, one line
/// per further cause: valid until the error is freed. `""` for NULL.
///
/// # Safety
/// As `delta_error_code`.
#[no_mangle]
pub unsafe extern "C" fn delta_error_message(error: *const DeltaError) -> *const c_char {
    // SAFETY: NULL or a live error by the caller's contract.
    unsafe { error.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
}

/// Frees `error`; NULL is ignored.
///
/// # Safety
/// `error` is NULL or an error from this library, freed only once.
#[no_mangle]
pub unsafe extern "C" fn delta_error_free(error: *mut DeltaError) {
    if !error.is_null() {
        // SAFETY: made by Box::into_raw in `guard` and not freed before,
        // by the caller's contract.
        drop(unsafe { Box::from_raw(error) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(error: *const DeltaError) -> String {
        // SAFETY: `error` is live; the message is valid until it is freed.
        unsafe { CStr::from_ptr(delta_error_message(error)) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let mut err = std::ptr::null_mut();
        // SAFETY: `err` is a valid place for a pointer.
        let code = unsafe { guard(&mut err, || panic!("boom")) };
        assert_eq!(code, DELTA_ERR_PANIC);
        // SAFETY: `err` was set by `guard` and is freed once below.
        unsafe {
            assert_eq!(delta_error_code(err), DELTA_ERR_PANIC);
            assert!(message(err).contains("boom"), "{}", message(err));
            delta_error_free(err);
        }
    }

    #[test]
    fn failures_keep_their_code_and_success_clears_err() {
        let mut err = std::ptr::null_mut();
        // SAFETY: `err` is a valid place for a pointer.
        let code = unsafe { guard(&mut err, || Err(Failure::argument("x is NULL"))) };
        assert_eq!(code, DELTA_ERR_INVALID_ARGUMENT);
        // SAFETY: `err` was set by `guard` and is freed once.
        unsafe {
            assert_eq!(message(err), "x is NULL");
            assert_eq!(delta_error_exit_code(err), 2);
            delta_error_free(err);
        }
        // SAFETY: as above; a NULL `err` is allowed too.
        unsafe {
            assert_eq!(guard(&mut err, || Ok(())), DELTA_OK);
            assert!(err.is_null());
            assert_eq!(
                guard(std::ptr::null_mut(), || Err(Failure::argument("y"))),
                1
            );
            assert_eq!(
                delta_error_code(std::ptr::null()),
                DELTA_ERR_INVALID_ARGUMENT
            );
            assert_eq!(message(std::ptr::null()), "");
        }
    }

    #[test]
    fn the_lock_timeout_is_not_now() {
        let e = delta_apply::Error::LockTimeout {
            lock: "a/b/updates.lock".into(),
            waited: std::time::Duration::from_secs(1),
        };
        let f = Failure::from(e);
        assert_eq!((f.code, f.exit_code), (DELTA_ERR_LOCKED, 3));
    }
}
