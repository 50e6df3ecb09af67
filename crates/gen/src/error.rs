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
    /// Encoding failed.
    #[error(transparent)]
    Core(#[from] delta_core::Error),
    /// A freshly encoded segment did not reproduce its bytes (a bug).
    #[error(
        "self-check failed: segment {segment} does not reproduce new image bytes {start}..{end}"
    )]
    SelfCheck {
        /// Index of the segment.
        segment: u64,
        /// Start of its range.
        start: u64,
        /// End of its range.
        end: u64,
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
