//! The crate's one error type.
//!
//! What stops the check is an error: the folder missing, bad options, the
//! machine running out of descriptors or memory, and every entry GNU tar
//! would fail on (exit status 2, "Cannot open: Permission denied", a read
//! error): the backup would stop there, half-way through the migration,
//! which is the failure the check exists to prevent. What GNU tar merely
//! warns about, exiting 0 or 1 with a complete archive (a file removed
//! while the walk runs, a file that changed or shrank while read, a
//! socket), ends up in [`Report::warnings`](crate::Report::warnings).
//!
//! Every message is one line, names the path and ends with the cause, as
//! the CLI prints only the `Display` (the cause is also the `source()`: a
//! caller walking the chain should print the message alone). Control
//! characters in paths are escaped (`\n`), and paths longer than
//! [`SHOWN_MAX`] bytes (nesting can make them megabytes long) are shown by
//! their first and last components and their depth; the error keeps the
//! whole path.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Longest path shown in full in a message, in bytes.
const SHOWN_MAX: usize = 160;

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
    #[error("cannot {op} {}: {source}", shown(.path))]
    Io {
        /// What was being done, e.g. "open directory".
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An entry below the data folder cannot be read, so `tar` would fail
    /// on it (exit status 2) and the backup would stop there.
    #[error(
        "backup would fail: cannot {op} {}: {source}; tar would exit 2",
        shown(.path)
    )]
    Unreadable {
        /// What failed, e.g. "open" or "read directory".
        op: &'static str,
        /// The entry: the data folder joined with its path inside.
        path: PathBuf,
        /// The cause, e.g. `Permission denied`.
        source: io::Error,
    },
    /// A directory opened again by name (the walk holds a bounded number
    /// of descriptors, see the crate docs) is no longer the one archived.
    #[error("{} was moved or replaced during the check; run it again", shown(.path))]
    Changed {
        /// The directory: the data folder joined with its path inside.
        path: PathBuf,
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
    #[error("cannot start {threads} compression threads: {source}")]
    ThreadPool {
        /// Threads asked for (0 = all cores).
        threads: usize,
        /// The cause.
        source: rayon::ThreadPoolBuildError,
    },
    /// zlib refused to compress a block (an internal error: it does not
    /// happen on any input).
    #[error("deflate failed on block #{index}: {source}")]
    Compress {
        /// Block number, from 0.
        index: u64,
        /// The cause.
        source: flate2::CompressError,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `path` for a message: whole if at most [`SHOWN_MAX`] bytes, else its
/// first and last components around the count left out, and its depth.
fn shown(path: &Path) -> String {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() <= SHOWN_MAX {
        return printable(bytes);
    }
    let parts: Vec<&[u8]> = bytes.split(|&b| b == b'/').collect();
    let head = fitting(parts.iter().copied());
    let tail = fitting(parts.iter().rev().copied());
    let left_out = parts.len().saturating_sub(head + tail);
    if left_out == 0 {
        return printable(bytes);
    }
    let join = |taken: &[&[u8]]| printable(&taken.join(&b'/'));
    let depth = parts.iter().filter(|p| !p.is_empty()).count();
    format!(
        "{}/...{left_out} more.../{} ({depth} levels deep, {} bytes)",
        join(parts.get(..head).unwrap_or_default()),
        join(parts.get(parts.len() - tail..).unwrap_or_default()),
        bytes.len()
    )
}

/// `bytes` as text on one line: invalid UTF-8 replaced, control characters
/// escaped.
fn printable(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    text
}

/// How many of `parts`, from the first, fit in half of [`SHOWN_MAX`] with
/// their separators; at least up to the first non-empty one (the empty
/// part before the `/` of an absolute path shows nothing).
fn fitting<'a>(parts: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut used = 0;
    let mut named = false;
    parts
        .take_while(|part| {
            used += part.len() + 1;
            let needed = !named;
            named |= !part.is_empty();
            needed || used <= SHOWN_MAX / 2
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_paths_are_shown_whole() {
        let path = Path::new("/data/resin-data/app/db");
        assert_eq!(shown(path), "/data/resin-data/app/db");
        let limit = PathBuf::from(format!("/{}", "x".repeat(SHOWN_MAX - 1)));
        assert_eq!(shown(&limit), limit.display().to_string());
    }

    #[test]
    fn long_paths_keep_both_ends_and_the_depth() {
        let mut path = PathBuf::from("/data/resin-data");
        for _ in 0..10_000 {
            path.push("d");
        }
        path.push("secret");
        let text = shown(&path);
        assert!(text.len() < 2 * SHOWN_MAX, "{text}");
        assert!(text.starts_with("/data/resin-data/d/d/"), "{text}");
        assert!(text.contains("/d/d/secret ("), "{text}");
        let len = path.as_os_str().len();
        assert!(
            text.ends_with(&format!("(10003 levels deep, {len} bytes)")),
            "{text}"
        );
        // The parts shown and left out add up to all of them.
        let left_out: usize = text
            .split("...")
            .nth(1)
            .and_then(|s| s.strip_suffix(" more"))
            .and_then(|s| s.parse().ok())
            .unwrap();
        let shown_parts = text.split(" (").next().unwrap().split('/').count() - 1;
        assert_eq!(left_out + shown_parts, 10_003 + 1);
    }

    #[test]
    fn control_characters_are_escaped() {
        let path = Path::new("/data/two\nlines\tand\x1b[31mred");
        assert_eq!(shown(path), "/data/two\\nlines\\tand\\u{1b}[31mred");
    }

    #[test]
    fn huge_components_are_not_cut() {
        let path = PathBuf::from(format!("/{}/{}", "a".repeat(200), "b".repeat(200)));
        assert_eq!(shown(&path), path.display().to_string());
        let path = PathBuf::from(format!(
            "/{}/{}/{}",
            "a".repeat(200),
            "m".repeat(200),
            "b".repeat(200)
        ));
        let text = shown(&path);
        assert!(text.contains("/...1 more.../"), "{text}");
        assert!(text.ends_with("(3 levels deep, 603 bytes)"), "{text}");
    }

    #[test]
    fn messages_are_one_line_with_the_cause() {
        let err = Error::Unreadable {
            op: "open",
            path: PathBuf::from("/data/x/y"),
            source: io::Error::from_raw_os_error(13),
        };
        assert_eq!(
            err.to_string(),
            "backup would fail: cannot open /data/x/y: Permission denied (os error 13); tar would exit 2"
        );
        let err = Error::Io {
            op: "open directory",
            path: PathBuf::from("/data/x"),
            source: io::Error::from_raw_os_error(24),
        };
        assert_eq!(
            err.to_string(),
            "cannot open directory /data/x: Too many open files (os error 24)"
        );
    }
}
