//! C ABI of the delta engine: `libdelta.so` / `libdelta.a` and
//! `include/delta.h`, for device agents written in C, Go (cgo) or anything
//! else that calls C.
//!
//! Each `delta_*` function wraps one library call: [`delta_info`] reads a
//! delta's header through [`delta_apply::read_delta`], [`delta_apply()`]
//! drives a [`delta_apply::Applier`], [`delta_generate`] calls
//! [`delta_gen::generate`] and [`delta_verify()`] calls
//! [`delta_apply::verify()`], as the `delta` command does. Options come in
//! as `#[repr(C)]` structs whose initializers (`delta_*_options_default`)
//! take their values from the Rust `Default`s; results go out as
//! `#[repr(C)]` structs with fixed-size digest strings, so that the only
//! heap object handed to the caller is a [`DeltaError`].
//!
//! Every function returns one of the `DELTA_OK` / `DELTA_ERR_*` codes;
//! on failure `*err` (when `err` is not NULL) receives an error that
//! [`delta_error_message`] describes and [`delta_error_free`] frees. No
//! panic crosses the boundary: each body runs under
//! [`std::panic::catch_unwind`] and a panic becomes [`DELTA_ERR_PANIC`].
//! Paths are taken as bytes (Linux paths need not be UTF-8).
//!
//! It deliberately adds no logic of its own: defaults, checks and messages
//! are the Rust crates'. The header is generated from this crate by
//! cbindgen (`tests/header.rs` fails when the committed one drifts).
//!
//! ```
//! let mut options = std::mem::MaybeUninit::uninit();
//! // SAFETY: `options` is a valid place for one `DeltaApplyOptions`.
//! let options = unsafe {
//!     delta::delta_apply_options_default(options.as_mut_ptr());
//!     options.assume_init()
//! };
//! assert_eq!(options.memory_limit, delta_apply::ApplyOptions::default().memory_limit);
//! assert!(options.log_dir.is_null());
//! ```
// The C ABI is raw pointers: unsafe is allowed here, and only here, in the
// workspace; every block says why it holds.
#![allow(unsafe_code)]
#![deny(missing_docs)]

mod apply;
mod error;
mod gen;
mod info;

pub use apply::{
    delta_apply, delta_apply_options_default, DeltaApplyOptions, DeltaApplyResult, DeltaProgressFn,
    DELTA_STEP_APPLYING, DELTA_STEP_COMMITTING, DELTA_STEP_DONE, DELTA_STEP_PREPARING,
    DELTA_STEP_VERIFYING, DELTA_STEP_WAITING_FOR_LOCK,
};
pub use error::{
    delta_error_code, delta_error_exit_code, delta_error_free, delta_error_message, DeltaError,
    DELTA_ERR_ALREADY_RUNNING, DELTA_ERR_BAD_DELTA, DELTA_ERR_CANCELLED, DELTA_ERR_DATA_TOO_LARGE,
    DELTA_ERR_HOOK_FAILED, DELTA_ERR_INVALID_ARGUMENT, DELTA_ERR_IO, DELTA_ERR_LOCKED,
    DELTA_ERR_NEW_DIGEST, DELTA_ERR_OTHER, DELTA_ERR_OUTPUT_EXISTS, DELTA_ERR_PANIC,
    DELTA_ERR_SIGNATURE, DELTA_ERR_SOURCE_MISMATCH, DELTA_ERR_TOO_LARGE,
    DELTA_ERR_UNEXPECTED_IMAGE, DELTA_ERR_UNSAFE_TARGET, DELTA_OK,
};
pub use gen::{delta_gen_options_default, delta_generate, DeltaGenOptions, DeltaGenResult};
pub use info::{delta_info, delta_verify, DeltaInfo, DeltaVerifyResult};

use std::ffi::{c_char, c_uint};

/// Version of the ABI: bumped on any incompatible change to a function or
/// struct of `delta.h` (a field added to an options struct is one: the
/// caller allocates it); it is the major number of the shared library's
/// soname (`libdelta.so.1`, which `build.rs` reads from here).
///
/// 1: `DeltaGenOptions` gained `segment_len`, `merge_len`,
/// `max_reference`, `copy_new`, `window_list`, `lzma` (no longer implied
/// by `deflate`) and `replace`; `DeltaApplyOptions` gained
/// `compare_zero_runs` and `keep_logs`.
/// 2: `DeltaGenOptions` gained `exec`; `DeltaApplyOptions` gained
/// `bearer_token` and `threads`.
pub const DELTA_ABI_VERSION: c_uint = 2;

/// Size of the digest strings in result structs: 64 lowercase hex digits
/// of a BLAKE3 digest and the terminating NUL.
pub const DELTA_DIGEST_HEX_SIZE: usize = 65;

/// The library's version (the `delta` command's), e.g. `"0.1.0"`: a
/// static string, never freed.
#[no_mangle]
pub extern "C" fn delta_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// `DELTA_ABI_VERSION` of the library loaded at run time, to compare
/// with the one of the header compiled against.
#[no_mangle]
pub extern "C" fn delta_abi_version() -> c_uint {
    DELTA_ABI_VERSION
}

/// Copies `hex` (64 ASCII hex digits) into a NUL-terminated C array.
fn digest_field(hex: &str) -> [c_char; DELTA_DIGEST_HEX_SIZE] {
    let mut field = [0; DELTA_DIGEST_HEX_SIZE];
    for (slot, byte) in field
        .iter_mut()
        .zip(hex.bytes().take(DELTA_DIGEST_HEX_SIZE - 1))
    {
        *slot = byte as c_char;
    }
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn the_version_is_the_crates() {
        // SAFETY: delta_version returns a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(delta_version()) };
        assert_eq!(version.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(delta_abi_version(), DELTA_ABI_VERSION);
    }

    #[test]
    fn digests_fit_their_field_with_a_nul() {
        let field = digest_field(&"ab".repeat(40));
        assert_eq!(field[63], b'b' as c_char);
        assert_eq!(field[64], 0);
        assert_eq!(digest_field("")[0], 0);
    }
}
