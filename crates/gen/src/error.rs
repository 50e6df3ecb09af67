//! Errors of the generator.

use std::io;
use std::path::PathBuf;

/// What can go wrong while generating a delta.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("open", "map", "write", ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A delta to sign is malformed.
    #[error("delta {path}: {source}")]
    Delta {
        /// The delta file.
        path: std::path::PathBuf,
        /// What is wrong.
        source: delta_format::Error,
    },
    /// Writing the delta to the caller's writer failed.
    #[error("writing the delta: {source}")]
    Output {
        /// The cause.
        source: io::Error,
    },
    /// An input image could not be opened, measured or mapped.
    #[error("{op} {role} {path}: {source}")]
    Input {
        /// What was being done ("open", "stat", "map").
        op: &'static str,
        /// "old image" or "new image".
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An input is neither a regular file nor a block device.
    #[error("{role} {path} is {kind}, not a regular file or a block device")]
    NotAnImage {
        /// "old image" or "new image".
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// What it is ("a FIFO (named pipe)", "a character device", ...).
        kind: &'static str,
    },
    /// The output exists and is not a regular file (a device, a FIFO, a
    /// directory), so a delta file cannot be renamed over it.
    #[error("refusing to write {path}: it is {kind}, not a regular file")]
    OutputNotRegular {
        /// The output.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The output is a symbolic link: renaming the delta over it would
    /// replace the link (`/dev/stdout` among them), with `--force` or not.
    #[error(
        "refusing to write {path}: it is a symbolic link (to {to}); name the file itself, \
         or - for stdout"
    )]
    OutputIsSymlink {
        /// The output.
        path: PathBuf,
        /// Where the link points.
        to: String,
    },
    /// The output exists and [`GenOptions::replace`](crate::GenOptions::replace)
    /// is off.
    #[error("refusing to replace {path}: it exists (use --force to replace it)")]
    OutputExists {
        /// The output.
        path: PathBuf,
    },
    /// The output, or its temporary name, is one of the inputs (same device
    /// and inode, after following symbolic links).
    #[error("refusing to write {path}: it is the {input}")]
    OutputIsInput {
        /// The output or its temporary file.
        path: PathBuf,
        /// Which input, e.g. "new image new.img".
        input: String,
    },
    /// An input changed between being opened and the delta being put in
    /// place; nothing was written.
    #[error(
        "{role} {path} changed while the delta was being generated ({what}); no delta written"
    )]
    Changed {
        /// "old image" or "new image".
        role: &'static str,
        /// The file.
        path: PathBuf,
        /// What changed: size, modification time, contents.
        what: String,
    },
    /// Encoding failed.
    #[error(transparent)]
    Core(#[from] delta_core::Error),
    /// A freshly encoded segment did not reproduce its bytes (a bug).
    #[error(
        "self-check failed: segment {segment} does not reproduce new image bytes {start}..{end}: {reason}"
    )]
    SelfCheck {
        /// Index of the segment.
        segment: u64,
        /// Start of its range.
        start: u64,
        /// End of its range.
        end: u64,
        /// The applier's error, or how the bytes differ.
        reason: String,
    },
    /// The thread pool could not be built.
    #[error("cannot start {threads} worker threads: {reason}")]
    Threads {
        /// Threads asked for.
        threads: usize,
        /// The cause.
        reason: String,
    },
    /// An option is out of range.
    #[error("invalid option {name}: {reason}")]
    Option {
        /// The option.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
