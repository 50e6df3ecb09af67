//! `delta_info` and `delta_verify`: what `delta info` and `delta verify`
//! read and check, through the applier's one reader.

use crate::digest_field;
use crate::error::{catch, finish, optional_path_arg, path_arg, DeltaError, Failure};
use delta_core::to_hex;
use std::ffi::{c_char, c_int};

/// A delta's header, as `delta_info` reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaInfo {
    /// Format version (2 to 5).
    pub format_version: u32,
    /// Header flags (`FORMAT.md`, "Flags").
    pub flags: u32,
    /// A full-image payload: applies without an old image.
    pub full: bool,
    /// Marked as a 1.x → 2.x migration.
    pub migration: bool,
    /// Carries signatures.
    pub is_signed: bool,
    /// Number of signatures.
    pub signatures: u32,
    /// Size of the old image, bytes (0 for a full payload).
    pub old_len: u64,
    /// Size of the new image, bytes.
    pub new_len: u64,
    /// Size of the delta file, bytes.
    pub file_len: u64,
    /// Number of segments.
    pub segment_count: u64,
    /// Largest segment, bytes of new image.
    pub max_segment_len: u64,
    /// Buffer memory the applier needs, bytes (with the applier's fixed
    /// 9 MiB, checked against `DeltaApplyOptions::memory_limit`).
    pub apply_memory: u64,
    /// BLAKE3 of the old image: 64 hex digits and a NUL.
    pub old_digest: [c_char; crate::DELTA_DIGEST_HEX_SIZE],
    /// BLAKE3 of the new image: 64 hex digits and a NUL.
    pub new_digest: [c_char; crate::DELTA_DIGEST_HEX_SIZE],
}

/// Reads the header and table of the delta at `delta_path`, checked as
/// the applier checks them (default limits), into `*info`.
///
/// # Errors
/// A `DELTA_ERR_*` code and `*err` (see `DeltaError`):
/// `DELTA_ERR_IO` naming the file, `DELTA_ERR_BAD_DELTA` for a malformed
/// or over-limit header or table.
///
/// # Safety
/// `delta_path` is NULL or NUL-terminated and valid during the call;
/// `info` and `err` are NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn delta_info(
    delta_path: *const c_char,
    info: *mut DeltaInfo,
    err: *mut *mut DeltaError,
) -> c_int {
    let outcome = catch(|| {
        // SAFETY: NULL or a valid string, by this function's contract.
        let path = unsafe { path_arg(delta_path, "delta_path")? };
        if info.is_null() {
            return Err(Failure::argument("info is NULL"));
        }
        let index = delta_apply::read_delta(path, &delta_format::Limits::default())?;
        let h = &index.header;
        let value = DeltaInfo {
            format_version: h.version(),
            flags: h.flags,
            full: h.is_full(),
            migration: h.is_migration(),
            is_signed: h.is_signed(),
            signatures: u32::try_from(index.signatures.len()).unwrap_or(u32::MAX),
            old_len: h.old_len,
            new_len: h.new_len,
            file_len: index.file_len,
            segment_count: h.segment_count,
            max_segment_len: h.max_segment_len,
            apply_memory: h.apply_memory,
            old_digest: digest_field(&to_hex(&h.old_digest)),
            new_digest: digest_field(&to_hex(&h.new_digest)),
        };
        // SAFETY: not NULL (checked), valid for writing by this
        // function's contract.
        unsafe { info.write(value) };
        Ok(())
    });
    // SAFETY: `err` is NULL or valid by this function's contract.
    unsafe { finish(err, outcome) }
}

/// What `delta_verify` checked.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DeltaVerifyResult {
    /// Payloads whose digests were checked.
    pub payloads: u64,
    /// The old image's size and digest were checked too.
    pub old_checked: bool,
    /// The signatures were checked against trusted keys.
    pub signature_checked: bool,
    /// The id of the trusted key that signed, hex and a NUL (`""` when
    /// signatures were not checked).
    pub signed_by: [c_char; crate::DELTA_DIGEST_HEX_SIZE],
}

/// Checks the delta at `delta` without writing anything, as `delta verify
/// DELTA [OLD] [--trusted-keys KEYS] [--keyring KEYRING]` does: its
/// signatures against `trusted_keys` (a key file or a folder of `*.pub`
/// files; NULL: the keys of `keyring` when that exists, NULL `keyring`
/// meaning the default `/etc/delta/trusted-keys`; no keys: signatures are
/// not checked), every payload's digest and, with `old` (may be NULL), the
/// old image's size and digest. On success `*result` (may be NULL) is
/// filled.
///
/// # Errors
/// The first check that fails: a `DELTA_ERR_*` code and `*err` (see
/// `DeltaError`).
///
/// # Safety
/// Each string is NULL or NUL-terminated and valid during the call;
/// `result` and `err` are NULL or valid for writing.
#[no_mangle]
pub unsafe extern "C" fn delta_verify(
    delta: *const c_char,
    old: *const c_char,
    trusted_keys: *const c_char,
    keyring: *const c_char,
    result: *mut DeltaVerifyResult,
    err: *mut *mut DeltaError,
) -> c_int {
    let outcome = catch(|| {
        // SAFETY: each string is NULL or valid during the call, by
        // this function's contract.
        let (delta, old, trusted_keys, keyring) = unsafe {
            (
                path_arg(delta, "delta")?,
                optional_path_arg(old),
                optional_path_arg(trusted_keys),
                optional_path_arg(keyring),
            )
        };
        let explicit = match trusted_keys {
            Some(path) => delta_apply::keys::load_keyring(path)?,
            None => Vec::new(),
        };
        let keyring = keyring.unwrap_or(std::path::Path::new(delta_apply::keys::DEFAULT_KEYRING));
        let trusted = delta_apply::keys::required_keys(&explicit, Some(keyring))?;
        let verified = delta_apply::verify(delta, old, &trusted)?;
        if !result.is_null() {
            let value = DeltaVerifyResult {
                payloads: verified.payloads,
                old_checked: verified.old_checked,
                signature_checked: verified.signed_by.is_some(),
                signed_by: digest_field(verified.signed_by.as_deref().unwrap_or("")),
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
