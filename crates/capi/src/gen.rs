//! `delta_generate`: [`delta_gen::generate`] with options from C.

use crate::error::{catch, finish, optional_path_arg, path_arg, DeltaError, Failure};
use delta_gen::{DeltaOptions, DiffOptions, EncodeOptions, GenOptions};
use std::ffi::{c_char, c_int};

/// Options of `delta_generate`. Fill with `delta_gen_options_default`,
/// then change fields. Each maps to one knob of the Rust
/// `delta_gen::GenOptions` (most of them in its `delta_core::DeltaOptions`)
/// or of the `delta gen` command; `tests/knobs.rs` lists the Rust knobs
/// left out on purpose.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaGenOptions {
    /// Bytes of new image per segment, 4 KiB to 16 MiB (`--segment-size`).
    pub segment_len: u64,
    /// Largest segment made by merging cheap neighbours, in bytes of new
    /// image; at most `segment_len` disables merging (`--max-merge`).
    pub merge_len: u64,
    /// Most bytes of old image a segment's zstd frame may reference, at
    /// most 256 MiB: the applier's memory grows with it
    /// (`--max-reference`).
    pub max_reference: u64,
    /// zstd level of payloads, 1 to 22 (random-looking streams get at
    /// most 3).
    pub level: i32,
    /// Worker threads (0: one per core; more than the cores are not
    /// started). The delta does not depend on it.
    pub threads: u32,
    /// Build a full-image payload (no old image needed to apply); implied
    /// when `old` is NULL.
    pub full: bool,
    /// Mark the update as a 1.x → 2.x migration.
    pub migration: bool,
    /// Let segments copy new content that earlier segments carry; off,
    /// each segment depends on the old image only (`--independent-segments`).
    pub copy_new: bool,
    /// Give payloads window lists (appliers need the `WINDOW_LIST` flag);
    /// off, every window is one contiguous range (`--contiguous-windows`).
    pub window_list: bool,
    /// See through gzip and zlib files of ext4 and tar images (deflate
    /// segments, format version 3); off, as `--no-deflate`.
    pub deflate: bool,
    /// Compress segments of mostly new bytes (new executables) with LZMA2
    /// where that is smaller (LZMA segments, format version 4); off, as
    /// `--no-lzma`. Independent of `deflate`.
    pub lzma: bool,
    /// Replace an existing `out_delta` (off, the default, as `delta gen`
    /// without `--force`: `DELTA_ERR_OUTPUT_EXISTS` before any work).
    /// Never an input, nor anything but a regular file.
    pub replace: bool,
    /// Make changed ELF files from their old partners with references
    /// projected (executable segments, format version 6); off, as
    /// `--no-exec`. Last, so that the fields before keep their offsets.
    pub exec: bool,
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

/// Fills `options` with the library's defaults (those of `delta gen`,
/// `replace` off as without `--force`).
///
/// # Safety
/// `options` is NULL (ignored) or valid for writing one `DeltaGenOptions`.
#[no_mangle]
pub unsafe extern "C" fn delta_gen_options_default(options: *mut DeltaGenOptions) {
    if options.is_null() {
        return;
    }
    // SAFETY: not NULL (checked), valid for writing by the caller's
    // contract.
    unsafe { options.write(DeltaGenOptions::default()) };
}

impl Default for DeltaGenOptions {
    /// The Rust defaults.
    fn default() -> Self {
        let g = GenOptions::default();
        let d = &g.delta;
        let wide = |len: usize| u64::try_from(len).unwrap_or(u64::MAX);
        DeltaGenOptions {
            segment_len: wide(d.segment_len),
            merge_len: wide(d.merge_len),
            max_reference: wide(d.diff.max_reference),
            level: d.encode.level,
            threads: u32::try_from(g.threads).unwrap_or(u32::MAX),
            full: d.full,
            migration: d.migration,
            copy_new: d.copy_new,
            window_list: d.window_list,
            deflate: d.deflate,
            lzma: d.lzma,
            replace: g.replace,
            exec: d.exec,
        }
    }
}

impl DeltaGenOptions {
    /// The Rust options: the library's defaults, overridden by each field.
    fn options(&self) -> Result<GenOptions, Failure> {
        let size = |len: u64, name: &str| {
            usize::try_from(len).map_err(|e| Failure::argument(format!("options.{name}: {e}")))
        };
        let d = GenOptions::default();
        Ok(GenOptions {
            delta: DeltaOptions {
                diff: DiffOptions {
                    max_reference: size(self.max_reference, "max_reference")?,
                    ..d.delta.diff
                },
                encode: EncodeOptions {
                    level: self.level,
                    ..d.delta.encode
                },
                segment_len: size(self.segment_len, "segment_len")?,
                merge_len: size(self.merge_len, "merge_len")?,
                full: self.full,
                migration: self.migration,
                copy_new: self.copy_new,
                window_list: self.window_list,
                deflate: self.deflate,
                lzma: self.lzma,
                exec: self.exec,
                ..d.delta
            },
            threads: size(u64::from(self.threads), "threads")?,
            replace: self.replace,
            ..d
        })
    }
}

/// Generates a delta from the image `old` (NULL: a full-image payload) to
/// `new`, written to `out_delta` only once complete and checked by
/// re-applying it, as `delta gen OLD NEW -o OUT` does: an existing
/// `out_delta` is refused unless `options.replace` is set. `options` NULL
/// means the defaults (`delta_gen_options_default`). On success `*result`
/// (may be NULL) is filled.
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
        let (old, new, out, options) = unsafe {
            (
                optional_path_arg(old),
                path_arg(new_image, "new_image")?,
                path_arg(out_delta, "out_delta")?,
                options.as_ref(),
            )
        };
        let options = options.copied().unwrap_or_default().options()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_c_field_reaches_its_rust_knob() {
        let d = DeltaGenOptions::default();
        let changed = DeltaGenOptions {
            segment_len: 8192,
            merge_len: 16384,
            max_reference: 1 << 20,
            level: d.level - 1,
            threads: 3,
            full: !d.full,
            migration: !d.migration,
            copy_new: !d.copy_new,
            window_list: !d.window_list,
            deflate: !d.deflate,
            lzma: !d.lzma,
            replace: !d.replace,
            exec: !d.exec,
        };
        let o = changed.options().unwrap();
        let delta = &o.delta;
        assert_eq!(
            (delta.segment_len, delta.merge_len, delta.diff.max_reference),
            (8192, 16384, 1 << 20)
        );
        assert_eq!((delta.encode.level, o.threads), (d.level - 1, 3));
        assert_eq!(
            (
                delta.full,
                delta.migration,
                delta.copy_new,
                delta.window_list
            ),
            (!d.full, !d.migration, !d.copy_new, !d.window_list)
        );
        // deflate and lzma are two knobs: one no longer turns the other off.
        assert_eq!((delta.deflate, delta.lzma), (!d.deflate, !d.lzma));
        assert_eq!(o.replace, !d.replace);
        assert_eq!(delta.exec, !d.exec);
        let only_deflate_off = DeltaGenOptions {
            deflate: false,
            ..DeltaGenOptions::default()
        };
        assert!(only_deflate_off.options().unwrap().delta.lzma);
    }
}
