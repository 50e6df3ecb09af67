/* delta.h: C ABI of the delta engine (libdelta).
 *
 * Generated from crates/capi by cbindgen: do not edit; regenerate with
 *   DELTA_BLESS_HEADER=1 cargo test -p delta-capi --test header
 *
 * Every function returns DELTA_OK (0) or a DELTA_ERR_* code; on failure
 * *err, when err is not NULL, receives an error to read with
 * delta_error_message() and free with delta_error_free(). Strings passed in
 * are the caller's and are used only during the call. */

#ifndef DELTA_H
#define DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Version of the ABI: bumped on any incompatible change to a function or
// struct of `delta.h` (a field added to an options struct is one: the
// caller allocates it); it is the major number of the shared library's
// soname (`libdelta.so.1`, which `build.rs` reads from here).
//
// 1: `DeltaGenOptions` gained `segment_len`, `merge_len`,
// `max_reference`, `copy_new`, `window_list`, `lzma` (no longer implied
// by `deflate`) and `replace`; `DeltaApplyOptions` gained
// `compare_zero_runs` and `keep_logs`.
// 2: `DeltaGenOptions` gained `exec`; `DeltaApplyOptions` gained
// `bearer_token` and `threads`.
#define DELTA_ABI_VERSION 2

// Size of the digest strings in result structs: 64 lowercase hex digits
// of a BLAKE3 digest and the terminating NUL.
#define DELTA_DIGEST_HEX_SIZE 65

// Step `Step::Preparing`: checks of the delta, source, target, locks.
#define DELTA_STEP_PREPARING 0

// Step `Step::Applying`: producing the new image.
#define DELTA_STEP_APPLYING 1

// Step `Step::Verifying`: checking the whole new image's digest.
#define DELTA_STEP_VERIFYING 2

// Step `Step::WaitingForLock`: an application holds its update lock
// (the message names it); retrying.
#define DELTA_STEP_WAITING_FOR_LOCK 3

// Step `Step::Committing`: the commit hook, then the switch into place.
#define DELTA_STEP_COMMITTING 4

// Step `Step::Done`: finished.
#define DELTA_STEP_DONE 5

// Success.
#define DELTA_OK 0

// A required argument is NULL, or an argument or option is malformed.
#define DELTA_ERR_INVALID_ARGUMENT 1

// A file operation failed, or reading the delta did (the message names
// the operation and file).
#define DELTA_ERR_IO 2

// The delta is malformed, damaged or over a limit, or a segment failed
// to apply (which a wrong old image can cause too).
#define DELTA_ERR_BAD_DELTA 3

// Not now: the new image is verified but an application's update lock
// kept the commit waiting until the timeout; calling again commits it
// (the command's exit code 3).
#define DELTA_ERR_LOCKED 4

// The cancel flag was set; calling again resumes.
#define DELTA_ERR_CANCELLED 5

// A bug: the library panicked (the message says where).
#define DELTA_ERR_PANIC 6

// Any other failure.
#define DELTA_ERR_OTHER 7

// The old image is not the one the delta was made for, or is missing.
#define DELTA_ERR_SOURCE_MISMATCH 8

// The target is refused: it is, or shares storage with, the old image
// or an input, a mounted device, or not a file or block device.
#define DELTA_ERR_UNSAFE_TARGET 9

// The trusted keys cannot be read, or the delta's signatures do not
// satisfy them.
#define DELTA_ERR_SIGNATURE 10

// The delta makes another image than the `expect_new` digest.
#define DELTA_ERR_UNEXPECTED_IMAGE 11

// The new image is larger than the target or `max_image_size`.
#define DELTA_ERR_TOO_LARGE 12

// The rebuilt image does not match the digest in the delta header.
#define DELTA_ERR_NEW_DIGEST 13

// Another apply holds the single-instance lock.
#define DELTA_ERR_ALREADY_RUNNING 14

// The commit hook failed; the target is verified but not committed.
#define DELTA_ERR_HOOK_FAILED 15

// A 1.x → 2.x migration is refused, or its data check could not run.
#define DELTA_ERR_DATA_TOO_LARGE 16

// The output of `delta_generate` exists and `options.replace` is off
// (as `delta gen` without `--force`): refused before any work, the
// existing file kept as it is.
#define DELTA_ERR_OUTPUT_EXISTS 17

// An error: a code, a message with its causes, and the exit code the
// `delta` command would give. Opaque to C: read it with
// `delta_error_code` and `delta_error_message`, free it with
// `delta_error_free`.
typedef struct DeltaError DeltaError;

// Receives progress reports, on the thread that called `delta_apply`:
// the step (a `DELTA_STEP_*` number), bytes done and total in that step,
// and a detail or NULL (valid during the call only). Called at each step
// change and at least once a second during long steps.
typedef void (*DeltaProgressFn)(void *user_data,
                                uint32_t step,
                                uint64_t bytes_done,
                                uint64_t bytes_total,
                                const char *message);

// Options of `delta_apply()`. Fill with `delta_apply_options_default`,
// then change fields. A string field is a path owned by the caller (valid
// during the call) or NULL for the library's default.
typedef struct DeltaApplyOptions {
  // Most memory the apply may take, in bytes, in all: a delta whose
  // header's `apply_memory` plus the applier's fixed 9 MiB is over it
  // is refused before anything is written (default 24 MiB).
  uint64_t memory_limit;
  // Largest new image written to a file target, in bytes (a block
  // device target is bounded by its size).
  uint64_t max_image_size;
  // Hash the whole old image before writing anything.
  bool verify_source;
  // Treat the update as a 1.x → 2.x migration even if the delta does
  // not say so (the data folder is checked first).
  bool migration;
  // Commit even if application update locks are held.
  bool override_lock;
  // Write no update log (`log_dir` is then ignored).
  bool no_log;
  // Read and compare zero runs like data on every block device, for
  // devices whose own zeroing is not to be trusted (`delta apply
  // --compare-zero-runs`); off, zero runs go to the device's zeroing
  // where it is known to read back as zeros (discard on a loop device,
  // write-zeroes).
  bool compare_zero_runs;
  // Give up waiting for application locks after this many milliseconds
  // (`DELTA_ERR_LOCKED`); negative: wait
  // forever.
  int64_t lock_timeout_ms;
  // Milliseconds between lock probes.
  uint64_t lock_poll_ms;
  // Largest tar+gzip size of `data_dir` allowed for a migration, bytes.
  uint64_t data_limit;
  // Update logs kept in `log_dir`, this run's counted: older ones are
  // removed as a run starts.
  uint64_t keep_logs;
  // Folder of the update logs.
  const char *log_dir;
  // Folder of the journal of block-device targets.
  const char *state_dir;
  // Single-instance lock file.
  const char *instance_lock;
  // Folder whose `*/*/updates.lock` files gate the commit.
  const char *lock_root;
  // Supervisor target-state config (JSON) that may set the override.
  const char *supervisor_config;
  // The application data folder checked for migrations.
  const char *data_dir;
  // Shell command (`sh -c`) run once the locks are clear, before the
  // commit; NULL: none.
  const char *commit_hook;
  // Public keys to trust (a file of key lines or a folder of `*.pub`
  // files): the delta must be signed by one of them. NULL: those of
  // `keyring` when it exists.
  const char *trusted_keys;
  // Default keyring, whose keys are required when it exists and
  // `trusted_keys` is NULL.
  const char *keyring;
  // BLAKE3 (64 hex digits) of the image the caller means to install: a
  // delta for another image is refused before anything is written.
  // NULL: any.
  const char *expect_new;
  // Called with `user_data` at each progress report; NULL: none.
  DeltaProgressFn progress;
  // Passed to `progress` as its first argument.
  void *user_data;
  // NULL, or an `int` the caller may set non-zero from any thread, with
  // an atomic store (C11 `atomic_store`, `__atomic_store_n`, Go's
  // `atomic.StoreInt32`), to stop the apply with `DELTA_ERR_CANCELLED`;
  // it must stay valid until `delta_apply()` returns.
  const int *cancel;
  // Sent as `Authorization: Bearer TOKEN` when `delta` is an http(s)
  // URL (a delta service's device token); NULL: none. The service's
  // 202 and 503 `Retry-After` answers are waited through (up to an
  // hour) either way.
  const char *bearer_token;
  // Helper threads decoding segments ahead of the writer: 0 (the
  // default) is one per core, at most 4; 1 is none (the calling thread
  // decodes every segment, within `memory_limit`); N > 1 starts N
  // helpers (at most 64), each adding at most 20 MiB to it.
  uint32_t threads;
} DeltaApplyOptions;

// What `delta_apply()` did.
typedef struct DeltaApplyResult {
  // Size of the new image, bytes.
  uint64_t new_len;
  // Segments in the delta.
  uint64_t segments;
  // Segments found done by an earlier, interrupted run.
  uint64_t resumed_segments;
  // Bytes of the new image found written by an earlier run.
  uint64_t resumed_bytes;
  // Non-fatal problems met (e.g. the update log could not be written);
  // the update log names them.
  uint64_t warnings;
  // BLAKE3 of the new image, verified: 64 hex digits and a NUL.
  char new_digest[DELTA_DIGEST_HEX_SIZE];
} DeltaApplyResult;

// Options of `delta_generate`. Fill with `delta_gen_options_default`,
// then change fields. Each maps to one knob of the Rust
// `delta_gen::GenOptions` (most of them in its `delta_core::DeltaOptions`)
// or of the `delta gen` command; `tests/knobs.rs` lists the Rust knobs
// left out on purpose.
typedef struct DeltaGenOptions {
  // Bytes of new image per segment, 4 KiB to 16 MiB (`--segment-size`).
  uint64_t segment_len;
  // Largest segment made by merging cheap neighbours, in bytes of new
  // image; at most `segment_len` disables merging (`--max-merge`).
  uint64_t merge_len;
  // Most bytes of old image a segment's zstd frame may reference, at
  // most 256 MiB: the applier's memory grows with it
  // (`--max-reference`).
  uint64_t max_reference;
  // zstd level of payloads, 1 to 22 (random-looking streams get at
  // most 3).
  int32_t level;
  // Worker threads (0: one per core; more than the cores are not
  // started). The delta does not depend on it.
  uint32_t threads;
  // Build a full-image payload (no old image needed to apply); implied
  // when `old` is NULL.
  bool full;
  // Mark the update as a 1.x → 2.x migration.
  bool migration;
  // Let segments copy new content that earlier segments carry; off,
  // each segment depends on the old image only (`--independent-segments`).
  bool copy_new;
  // Give payloads window lists (appliers need the `WINDOW_LIST` flag);
  // off, every window is one contiguous range (`--contiguous-windows`).
  bool window_list;
  // See through gzip and zlib files of ext4 and tar images (deflate
  // segments, format version 3); off, as `--no-deflate`.
  bool deflate;
  // Compress segments of mostly new bytes (new executables) with LZMA2
  // where that is smaller (LZMA segments, format version 4); off, as
  // `--no-lzma`. Independent of `deflate`.
  bool lzma;
  // Replace an existing `out_delta` (off, the default, as `delta gen`
  // without `--force`: `DELTA_ERR_OUTPUT_EXISTS` before any work).
  // Never an input, nor anything but a regular file.
  bool replace;
  // Make changed ELF files from their old partners with references
  // projected (executable segments, format version 6); off, as
  // `--no-exec`. Last, so that the fields before keep their offsets.
  bool exec;
} DeltaGenOptions;

// What `delta_generate` produced.
typedef struct DeltaGenResult {
  // Size of the old image (0 for a full payload), bytes.
  uint64_t old_len;
  // Size of the new image, bytes.
  uint64_t new_len;
  // Size of the delta file, bytes.
  uint64_t delta_len;
  // Number of segments.
  uint64_t segments;
  // Bytes of new image copied (from the old image or earlier segments).
  uint64_t copy_len;
  // Bytes of zero runs.
  uint64_t zero_len;
  // Bytes diffed against the old image.
  uint64_t diff_len;
  // Bytes sent as literals.
  uint64_t literal_len;
} DeltaGenResult;

// A delta's header, as `delta_info` reads it.
typedef struct DeltaInfo {
  // Format version (2 to 5).
  uint32_t format_version;
  // Header flags (`FORMAT.md`, "Flags").
  uint32_t flags;
  // A full-image payload: applies without an old image.
  bool full;
  // Marked as a 1.x → 2.x migration.
  bool migration;
  // Carries signatures.
  bool is_signed;
  // Number of signatures.
  uint32_t signatures;
  // Size of the old image, bytes (0 for a full payload).
  uint64_t old_len;
  // Size of the new image, bytes.
  uint64_t new_len;
  // Size of the delta file, bytes.
  uint64_t file_len;
  // Number of segments.
  uint64_t segment_count;
  // Largest segment, bytes of new image.
  uint64_t max_segment_len;
  // Buffer memory the applier needs, bytes (with the applier's fixed
  // 9 MiB, checked against `DeltaApplyOptions::memory_limit`).
  uint64_t apply_memory;
  // BLAKE3 of the old image: 64 hex digits and a NUL.
  char old_digest[DELTA_DIGEST_HEX_SIZE];
  // BLAKE3 of the new image: 64 hex digits and a NUL.
  char new_digest[DELTA_DIGEST_HEX_SIZE];
} DeltaInfo;

// What `delta_verify` checked.
typedef struct DeltaVerifyResult {
  // Payloads whose digests were checked.
  uint64_t payloads;
  // The old image's size and digest were checked too.
  bool old_checked;
  // The signatures were checked against trusted keys.
  bool signature_checked;
  // The id of the trusted key that signed, hex and a NUL (`""` when
  // signatures were not checked).
  char signed_by[DELTA_DIGEST_HEX_SIZE];
} DeltaVerifyResult;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// The library's version (the `delta` command's), e.g. `"0.1.0"`: a
// static string, never freed.
const char *delta_version(void);

// `DELTA_ABI_VERSION` of the library loaded at run time, to compare
// with the one of the header compiled against.
unsigned int delta_abi_version(void);

// Fills `options` with the library's defaults (those of the `delta apply`
// command): string fields NULL.
//
// # Safety
// `options` is NULL (ignored) or valid for writing one
// `DeltaApplyOptions`.
void delta_apply_options_default(struct DeltaApplyOptions *options);

// Rebuilds the new image from `old` (NULL for a full-image payload) and
// `delta` into `target` (a file, written as `TARGET.partial` and renamed
// once verified, or the inactive partition's block device), verifies it
// and commits it, as `delta apply OLD DELTA -o TARGET` does. `delta` is a
// path, `-` for standard input, or an `http://` or `https://` URL,
// applied as it downloads (10 retries, 30 s timeout).
//
// `options` NULL means the defaults, with no progress callback and no
// cancel flag (`options.progress`, `options.user_data`,
// `options.cancel`). On success `*result` (may be NULL) is filled. Under glibc it sets the process's mmap threshold to
// 1 MiB (`mallopt(M_MMAP_THRESHOLD)`), so that freed buffers leave the
// process and peak memory stays within what the delta states.
//
// # Errors
// A `DELTA_ERR_*` code and `*err` (see `DeltaError`); the target
// path is never left looking complete. `DELTA_ERR_LOCKED`:
// verified, not committed, call again later.
//
// # Safety
// Each string is NULL or NUL-terminated and valid during the call;
// `options`, `result` and `err` are NULL or valid; `options.progress` is
// NULL or a function of that signature; `options.cancel` as its field
// says.
int delta_apply(const char *old,
                const char *delta,
                const char *target,
                const struct DeltaApplyOptions *options,
                struct DeltaApplyResult *result,
                struct DeltaError **err);

// The code of `error`; `DELTA_ERR_INVALID_ARGUMENT` for NULL.
//
// # Safety
// `error` is NULL or an error from this library not yet freed.
int delta_error_code(const struct DeltaError *error);

// The exit code the `delta` command gives for this error: 3 for
// `DELTA_ERR_LOCKED`, 4 for `DELTA_ERR_CANCELLED`, 2 for a bad argument,
// 1 otherwise.
//
// # Safety
// As `delta_error_code`.
int delta_error_exit_code(const struct DeltaError *error);

// The message of `error`, naming the file and what was wrong, one line
// per further cause: valid until the error is freed. `""` for NULL.
//
// # Safety
// As `delta_error_code`.
const char *delta_error_message(const struct DeltaError *error);

// Frees `error`; NULL is ignored.
//
// # Safety
// `error` is NULL or an error from this library, freed only once.
void delta_error_free(struct DeltaError *error);

// Fills `options` with the library's defaults (those of `delta gen`,
// `replace` off as without `--force`).
//
// # Safety
// `options` is NULL (ignored) or valid for writing one `DeltaGenOptions`.
void delta_gen_options_default(struct DeltaGenOptions *options);

// Generates a delta from the image `old` (NULL: a full-image payload) to
// `new`, written to `out_delta` only once complete and checked by
// re-applying it, as `delta gen OLD NEW -o OUT` does: an existing
// `out_delta` is refused unless `options.replace` is set. `options` NULL
// means the defaults (`delta_gen_options_default`). On success `*result`
// (may be NULL) is filled.
//
// # Errors
// A `DELTA_ERR_*` code and `*err` (see `DeltaError`).
//
// # Safety
// Each string is NULL or NUL-terminated and valid during the call;
// `options`, `result` and `err` are NULL or valid.
int delta_generate(const char *old,
                   const char *new_image,
                   const char *out_delta,
                   const struct DeltaGenOptions *options,
                   struct DeltaGenResult *result,
                   struct DeltaError **err);

// Reads the header and table of the delta at `delta_path`, checked as
// the applier checks them (default limits), into `*info`.
//
// # Errors
// A `DELTA_ERR_*` code and `*err` (see `DeltaError`):
// `DELTA_ERR_IO` naming the file, `DELTA_ERR_BAD_DELTA` for a malformed
// or over-limit header or table.
//
// # Safety
// `delta_path` is NULL or NUL-terminated and valid during the call;
// `info` and `err` are NULL or valid for writing.
int delta_info(const char *delta_path, struct DeltaInfo *info, struct DeltaError **err);

// Checks the delta at `delta` without writing anything, as `delta verify
// DELTA [OLD] [--trusted-keys KEYS] [--keyring KEYRING]` does: its
// signatures against `trusted_keys` (a key file or a folder of `*.pub`
// files; NULL: the keys of `keyring` when that exists, NULL `keyring`
// meaning the default `/etc/delta/trusted-keys`; no keys: signatures are
// not checked), every payload's digest and, with `old` (may be NULL), the
// old image's size and digest. On success `*result` (may be NULL) is
// filled.
//
// # Errors
// The first check that fails: a `DELTA_ERR_*` code and `*err` (see
// `DeltaError`).
//
// # Safety
// Each string is NULL or NUL-terminated and valid during the call;
// `result` and `err` are NULL or valid for writing.
int delta_verify(const char *delta,
                 const char *old,
                 const char *trusted_keys,
                 const char *keyring,
                 struct DeltaVerifyResult *result,
                 struct DeltaError **err);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* DELTA_H */
