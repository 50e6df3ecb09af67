//! The crate's one error type.
//!
//! Only what stops the check is an error: the folder missing, bad options,
//! the machine running out of descriptors or memory. What GNU tar would
//! merely warn about (a file vanishing or unreadable, a socket) ends up in
//! [`Report::warnings`](crate::Report::warnings) instead, exactly as the
//! backup would carry on past it.

use std::io;
use std::path::PathBuf;

/// Everything that can stop [`check_data`](crate::check_data) or
/// [`parse_size`](crate::parse_size).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data folder does not exist.
    #[error("data folder {path} does not exist")]
    NotFound {
        /// The folder asked for.
        path: PathBuf,
    },
    /// The data folder exists but is not a directory.
    #[error("data folder {path} is not a directory")]
    NotADirectory {
        /// The path asked for.
        path: PathBuf,
    },
    /// An I/O operation failed in a way that makes the count meaningless
    /// (the data folder itself unreadable, out of file descriptors or memory).
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done, e.g. "open directory".
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A size given as text could not be understood.
    #[error("invalid size {text:?}: {reason}")]
    InvalidSize {
        /// The text as given.
        text: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A field of [`CheckOptions`](crate::CheckOptions) is out of range.
    #[error("invalid option {name} = {value}: {reason}")]
    InvalidOption {
        /// The field name.
        name: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range.
        reason: &'static str,
    },
    /// The compression threads could not be started.
    #[error("cannot start {threads} compression threads")]
    ThreadPool {
        /// Threads asked for (0 = all cores).
        threads: usize,
        /// The cause.
        source: rayon::ThreadPoolBuildError,
    },
    /// zlib refused to compress a block (an internal error: it does not
    /// happen on any input).
    #[error("deflate failed on block #{index}")]
    Compress {
        /// Block number, from 0.
        index: u64,
        /// The cause.
        source: flate2::CompressError,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
