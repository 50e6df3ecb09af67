//! Errors of the on-device applier.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What can stop an apply. Each message names the file and what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Reading the delta failed, or it ended before its table says (a
    /// pipe or a download cut short).
    #[error("delta {path}: reading byte {offset}: {source}")]
    Input {
        /// The delta: a path, `stdin` or a URL.
        path: PathBuf,
        /// The first byte of the delta not read.
        offset: u64,
        /// The cause.
        source: io::Error,
    },
    /// The delta's header or table is malformed, or over a limit.
    #[error("delta {path}: {source}")]
    Header {
        /// The delta file.
        path: PathBuf,
        /// What is wrong.
        source: delta_format::Error,
    },
    /// A segment failed to apply (damaged delta, wrong old image, I/O).
    #[error("delta {path}: {source}")]
    Segment {
        /// The delta file.
        path: PathBuf,
        /// What is wrong.
        source: delta_core::Error,
    },
    /// The old image is not the one the delta was made for.
    #[error("source mismatch: old image {path}: {what}")]
    SourceMismatch {
        /// The old image.
        path: PathBuf,
        /// Which check failed (size or digest, with expected and found).
        what: String,
    },
    /// A delta (not a full payload) was given without an old image.
    #[error("delta {path} needs an old image (it is not a full-image payload)")]
    NeedsSource {
        /// The delta file.
        path: PathBuf,
    },
    /// The target is the old image, or lives on the same device.
    #[error("refusing to write {target}: {reason}")]
    UnsafeTarget {
        /// The target.
        target: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// A keyring cannot be read, or holds a bad key.
    #[error("trusted keys {path}: {reason}")]
    Keyring {
        /// The key file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The delta's signatures do not satisfy the trusted keys.
    #[error("delta {path}: {source}")]
    Signature {
        /// The delta file.
        path: PathBuf,
        /// Which check failed, with the key ids found and trusted.
        source: delta_core::Error,
    },
    /// The delta makes another image than the one the caller expects.
    #[error("delta {path} makes the image with blake3 {found}, not the expected {expected}: refusing a delta for another release")]
    UnexpectedImage {
        /// The delta file.
        path: PathBuf,
        /// The digest expected.
        expected: String,
        /// The digest in the delta's header.
        found: String,
    },
    /// The new image does not fit the target, or is over the caller's
    /// limit for a file target.
    #[error("delta {delta}: the new image is {new_len} bytes (header new_len), but {limit}")]
    ImageTooLarge {
        /// The delta file.
        delta: PathBuf,
        /// Size of the new image.
        new_len: u64,
        /// Which limit, with its size.
        limit: String,
    },
    /// The whole new image does not match the header's digest.
    #[error("new image {path} does not match the digest in the delta header")]
    NewDigest {
        /// The target written.
        path: PathBuf,
    },
    /// Another apply holds the single-instance lock.
    #[error("another update is running (lock {path} is held): no concurrent updates allowed")]
    AlreadyRunning {
        /// The instance lock file.
        path: PathBuf,
    },
    /// Another apply is writing the same target (it holds the target's
    /// lock, whatever path or instance lock it was started with).
    #[error(
        "target {target}: another apply is writing it (it holds the lock on {locked}); \
         wait for it to end, or stop it"
    )]
    TargetInUse {
        /// The target named by the caller.
        target: PathBuf,
        /// The file or device whose lock is held.
        locked: PathBuf,
    },
    /// An application held its update lock until the timeout.
    #[error("application lock {lock} still held after {}: target verified but not committed; re-run to commit", crate::log::duration(*.waited))]
    LockTimeout {
        /// The held lock.
        lock: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The commit hook failed.
    #[error("commit hook `{command}` failed ({status}): target verified but not committed")]
    HookFailed {
        /// The command.
        command: String,
        /// Exit status or spawn error.
        status: String,
    },
    /// 1.x → 2.x migration refused: the data folder compresses too large.
    #[error("migration refused: {dir} compresses to at least {size} bytes with tar+gzip, over the limit of {limit} bytes; nothing was modified")]
    DataTooLarge {
        /// The data folder.
        dir: PathBuf,
        /// Compressed size measured.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The migration data check could not run.
    #[error("migration data check: {0}")]
    DataCheck(#[from] delta_datacheck::Error),
    /// The caller cancelled (e.g. on SIGTERM): the journal holds a
    /// checkpoint of what was written, so the same run resumes.
    #[error("cancelled; re-run the same command to resume")]
    Cancelled,
    /// A thread decoding segments ahead ended without its answer (a bug:
    /// it panicked).
    #[error("delta {path}: the thread decoding segment {segment} ended without an answer")]
    HelperEnded {
        /// The delta.
        path: PathBuf,
        /// The segment it held.
        segment: u64,
    },
}

/// Exit code of [`Error::Cancelled`]: cancelled, re-run to resume.
pub const EXIT_CANCELLED: i32 = 4;

impl Error {
    /// Process exit code for this error: 3 when the target is verified but
    /// the commit waits on an application lock, [`EXIT_CANCELLED`] (4)
    /// when the run was cancelled (re-run to resume), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::LockTimeout { .. } => 3,
            Error::Cancelled => EXIT_CANCELLED,
            _ => 1,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
