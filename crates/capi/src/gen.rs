//! `delta_generate`: [`delta_gen::generate`] with options from C.

use crate::error::{catch, finish, optional_path_arg, path_arg, DeltaError, Failure};
use delta_gen::GenOptions;
use std::ffi::{c_char, c_int};

/// Options of `delta_generate`. Fill with `delta_gen_options_default`,
/// then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaGenOptions {
    /// zstd level of payloads, 1 to 22 (random-looking streams get at
    /// most 3).
    pub level: i32,
    /// Worker threads (0: one per core; more than the cores are not
    /// started). The delta does not depend on it.
    pub threads: u32,
    /// Build a full-image payload (no old image needed to apply); implied
    /// when `old` is NULL.
    pub full: bool,
    /// See through gzip and zlib files of ext4 and tar images, and
    /// compress new executables with LZMA2 (format versions 3 to 5); off,
    /// deltas are version 2.
    pub deflate: bool,
    /// Mark the update as a 1.x → 2.x migration.
    pub migration: bool,
}

/// What `delta_generate` produced.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaGenResult {
    /// Size of the old image (0 for a full payload), bytes.
    pub old_len: u64,
    /// Size of the new image, bytes.
    pub new_len: u64,
    /// Size of the delta file, bytes.
    pub delta_len: u64,
    /// Number of segments.
    pub segments: u64,
    /// Bytes of new image copied (from the old image or earlier segments).
    pub copy_len: u64,
    /// Bytes of zero runs.
    pub zero_len: u64,
    /// Bytes diffed against the old image.
    pub diff_len: u64,
    /// Bytes sent as literals.
    pub literal_len: u64,
}

/// Fills `options` with the library's defaults (those of `delta gen`).
///
/// # Safety
/// `options` is NULL (ignored) or valid for writing one `DeltaGenOptions`.
#[no_mangle]
pub unsafe extern "C" fn delta_gen_options_default(options: *mut DeltaGenOptions) {
    if options.is_null() {
        return;
    }
    let d = GenOptions::default();
    let value = DeltaGenOptions {
        level: d.delta.encode.level,
        threads: u32::try_from(d.threads).unwrap_or(u32::MAX),
        full: d.delta.full,
        deflate: d.delta.deflate,
        migration: d.delta.migration,
    };
    // SAFETY: not NULL (checked), valid for writing by the caller's
    // contract.
    unsafe { options.write(value) };
}

/// Generates a delta from the image `old` (NULL: a full-image payload) to
/// `new`, written to `out_delta` only once complete and checked by
/// re-applying it, as `delta gen OLD NEW -o OUT` does. `options` NULL
/// means the defaults. On success `*result` (may be NULL) is filled.
///
/// # Errors
/// A `DELTA_ERR_*` code and `*err` (see `DeltaError`).
///
/// # Safety
/// Each string is NULL or NUL-terminated and valid during the call;
/// `options`, `result` and `err` are NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn delta_generate(
    old: *const c_char,
    new_image: *const c_char,
    out_delta: *const c_char,
    options: *const DeltaGenOptions,
    result: *mut DeltaGenResult,
    err: *mut *mut DeltaError,
) -> c_int {
    let outcome = catch(|| {
        // SAFETY: each pointer is NULL or valid during the call, by
        // this function's contract.
        let (old, new, out, options_in) = unsafe {
            (
                optional_path_arg(old),
                path_arg(new_image, "new_image")?,
                path_arg(out_delta, "out_delta")?,
                options.as_ref(),
            )
        };
        let mut options = GenOptions::default();
        if let Some(o) = options_in {
            let delta = &mut options.delta;
            delta.encode.level = o.level;
            delta.full = o.full;
            delta.deflate = o.deflate;
            delta.lzma = o.deflate;
            delta.migration = o.migration;
            options.threads = usize::try_from(o.threads)
                .map_err(|e| Failure::argument(format!("options.threads: {e}")))?;
        }
        let s = delta_gen::generate(old, new, out, &options)?;
        if !result.is_null() {
            let value = DeltaGenResult {
                old_len: s.old_len,
                new_len: s.new_len,
                delta_len: s.delta_len,
                segments: s.segments,
                copy_len: s.copy_len,
                zero_len: s.zero_len,
                diff_len: s.diff_len,
                literal_len: s.literal_len,
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
