//! Preflight for 1.x → 2.x migrations: would the application's `/data`
//! fit the backup?
//!
//! Before repartitioning, the 1.x → 2.x update backs `/data` up with
//! `tar -zcf resin-data.tar.gz resin-data` into a partition that also holds
//! the new OS; the documented rule is "about 170 MB compressed". This crate
//! answers that question before anything is touched: [`check_data`] makes
//! the same gzipped tar stream of a folder (GNU tar format, gzip level 6)
//! and counts its bytes, writing nothing, and stops as soon as the count
//! passes the limit.
//!
//! # Data flow
//!
//! The walker (on the calling thread) reads the folder into a tar stream
//! byte-identical to `tar -cf - -C DIR .`; the stream is cut into blocks of
//! [`CheckOptions::block_size`] which rayon workers deflate in parallel,
//! each primed with the 32 KiB before it, as pigz does. Only compressed
//! lengths come back; they are added in order, and once the running total
//! passes [`CheckOptions::limit`] the walk stops and queued blocks are
//! dropped, so a 20 GiB folder of random data costs about as much as
//! compressing the first 170 MB of it. [`Report`] holds the result and the
//! warnings GNU tar would print while still making a whole archive.
//!
//! # Refusals and exit codes
//!
//! The backup must not only fit but also succeed: GNU tar carries on past
//! an entry it cannot read, but exits 2, and the migration script stops
//! there, half-way. So the check answers with what GNU tar 1.34 would do
//! (checked by injecting each failure into it with `strace`):
//!
//! | entry below the folder                           | GNU tar         | here                  |
//! |--------------------------------------------------|-----------------|-----------------------|
//! | cannot be stat'ed, opened, listed or read        | error, exit 2   | [`Error::Unreadable`] |
//! | gone since its directory was listed (`ENOENT`)   | warning, exit 1 | warning               |
//! | shrank or changed while read                     | warning, exit 1 | warning               |
//! | a socket                                         | warning, exit 0 | warning               |
//!
//! ("Cannot be read" is any errno but `ENOENT`: `EACCES`, `EIO`, …; running
//! out of descriptors or memory is an [`Error::Io`], a problem of the check
//! rather than of the backup.)
//!
//! `delta check-data DIR` prints `error: ` and the one-line message and
//! exits 1 on any error, e.g. `error: backup would fail: cannot open
//! /data/resin-data/app/db.sqlite: Permission denied (os error 13); tar
//! would exit 2`; it exits 3 when the folder is over the limit and 0 when
//! it fits, warnings or not. A folder over the limit is reported as such
//! even if an unreadable entry lies beyond the point where the count
//! passed the limit.
//!
//! # How close to `tar -cz | wc -c`
//!
//! The tar stream is exact. The compressed count uses zlib (bundled, so the
//! same on every machine), whose level 6 makes the same choices as GNU
//! gzip's; measured on 200 MB of `/usr/share` and of binaries, zlib differs
//! from `gzip -6` by −0.08% and −0.07%, and cutting into 1 MiB blocks adds
//! under 0.02%. Other Rust backends were rejected for this reason:
//! miniz_oxide is +0.08–0.25% and cannot take a dictionary, zlib-rs is +3% on
//! binaries. The count depends on `block_size` but not on `threads`.
//!
//! "170 MB" is read as 170,000,000 bytes ([`DEFAULT_LIMIT`]); the docs say
//! MB, and the capacity behind it is empirical anyway (see the domain notes).
//!
//! # Memory
//!
//! At most `2 × threads` blocks are in flight plus the one being filled, so
//! about `(2 × threads + 1) × block_size`, plus a 32 KiB dictionary per
//! block, zlib's state and a 64 KiB scratch per compressing thread (about
//! 330 KiB each), a 256 KiB read buffer, the entry names of the directories
//! on the current path (their current member name once, about 100 bytes
//! per level, and the names not archived yet), and the names of files with
//! several hard links until all their links are seen. With the defaults on
//! a 2-core device that is about 6 MiB; 10,000 levels of nesting add about
//! 1 MiB. File contents are never held beyond the blocks in flight: memory
//! does not grow with the amount of data.
//!
//! Descriptors: at most 64 directories are held open, however deep the
//! folder, plus one file or the directory being entered (see the notes in
//! `walk.rs`): a
//! directory needed again after its descriptor was given up is re-opened
//! by name, and one moved or replaced meanwhile is an [`Error::Changed`].
//!
//! # What it does not do
//!
//! - It writes nothing: no archive, no temp file, and it changes nothing in
//!   the folder, access times included (files and directories are opened
//!   with `O_NOATIME`, see below for symlinks).
//! - It does not reproduce the gzip bytes themselves, only their count; it
//!   does not compute the CRC.
//! - It does not follow symlinks, nor stay on one file system (GNU tar's
//!   default neither).
//! - It does not decide anything beyond the limit: free space on the target
//!   partition and the size of the OS image are the caller's business.
//!
//! Caveats: reading a symlink updates its access time (the kernel offers no
//! way around it); owner names come from `/etc/passwd` and
//! `/etc/group` (not NSS); the reference is GNU tar 1.34 and GNU gzip, a
//! device whose backup used BusyBox tar/gzip would differ slightly (not
//! measured).
//!
//! # Example
//!
//! ```
//! use delta_datacheck::{check_data, CheckOptions};
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("config.json"), br#"{"hello": "world"}"#)?;
//! let report = check_data(dir.path(), &CheckOptions::default())?;
//! assert!(!report.over_limit);
//! assert_eq!(report.files, 2); // "./" and "./config.json"
//! assert_eq!(report.tar_bytes, 10_240); // one GNU tar record
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod dirs;
mod error;
mod gzip;
mod size;
mod tar;
mod walk;

use std::path::Path;
use std::sync::atomic::AtomicBool;

pub use error::{Error, Result};
pub use size::parse_size;

/// The default limit: "about 170MB (compressed)", read as 170 × 10^6 bytes.
pub const DEFAULT_LIMIT: u64 = 170_000_000;

/// Smallest accepted [`CheckOptions::block_size`]: one deflate window.
pub const MIN_BLOCK_SIZE: usize = 32 * 1024;
/// Largest accepted [`CheckOptions::block_size`].
pub const MAX_BLOCK_SIZE: usize = 256 * 1024 * 1024;
/// Most accepted [`CheckOptions::threads`].
pub const MAX_THREADS: usize = 1024;

/// Knobs for [`check_data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Largest acceptable compressed size, in bytes; the check stops once
    /// the count passes it. Default [`DEFAULT_LIMIT`].
    pub limit: u64,
    /// Compression threads; 0 = one per core (or `RAYON_NUM_THREADS`).
    /// Default 0.
    pub threads: usize,
    /// Bytes of tar stream per parallel block, from [`MIN_BLOCK_SIZE`] to
    /// [`MAX_BLOCK_SIZE`]. Larger blocks cost memory, smaller ones a few
    /// bytes of sync flush each and a slower early stop. Default 1 MiB.
    pub block_size: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            limit: DEFAULT_LIMIT,
            threads: 0,
            block_size: 1024 * 1024,
        }
    }
}

/// What [`check_data`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Size in bytes of `tar -cz` of the folder. Exact (within the 0.1%
    /// of zlib vs GNU gzip) when `over_limit` is false; when the check
    /// stopped early, a lower bound that already exceeds `limit`.
    pub compressed_bytes: u64,
    /// Bytes of tar stream produced: the whole archive (a multiple of
    /// 10240) when the check ran to the end, else how far it got.
    pub tar_bytes: u64,
    /// Archive members written (directories, files, links, fifos,
    /// devices), as `tar -t | wc -l` would count; when stopped early, those
    /// written so far.
    pub files: u64,
    /// `compressed_bytes > limit`: the data would not fit.
    pub over_limit: bool,
    /// The limit used, in bytes.
    pub limit: u64,
    /// What GNU tar would have warned about while still writing a whole
    /// archive, `./name: message` in its words, e.g. `./run/app.sock:
    /// socket ignored` (exit 0) or `./tmp/x: File removed before we read
    /// it` (exit 1). At most 1000, then a count.
    pub warnings: Vec<String>,
}

/// Progress, reported each time another block of the stream is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tar bytes counted so far.
    pub tar_bytes: u64,
    /// Compressed bytes for them, including the 18-byte gzip wrapper.
    pub compressed_bytes: u64,
}

/// Why the walk stopped before the end.
pub(crate) enum Halt {
    /// The compressed count passed the limit.
    OverLimit,
    /// A real error.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        Halt::Failed(e)
    }
}

/// Computes the size of `tar -cz` of `dir` (as `tar -czf - -C dir .`),
/// stopping early once it passes `options.limit`. Nothing is written and
/// nothing in `dir` changes.
///
/// # Errors
/// [`Error::NotFound`] or [`Error::NotADirectory`] for a bad `dir`;
/// [`Error::InvalidOption`] for out-of-range options; [`Error::Io`] if
/// `dir` itself cannot be read or the process runs out of file descriptors
/// or memory; [`Error::Unreadable`] for the first entry below `dir` that
/// GNU tar would fail on (exit 2: permission denied, I/O error), as the
/// backup would stop there; [`Error::Changed`] if a directory is moved or
/// replaced while the check runs. Entries vanishing during the walk, files
/// changing while read and sockets are warnings in the report, as GNU tar
/// still writes a whole archive (exit 1, or 0 for sockets).
pub fn check_data(dir: &Path, options: &CheckOptions) -> Result<Report> {
    check_data_with_progress(dir, options, |_| {})
}

/// [`check_data`], calling `progress` on the calling thread after each
/// block is counted (every `block_size` bytes of tar stream).
///
/// # Errors
/// As [`check_data`].
pub fn check_data_with_progress(
    dir: &Path,
    options: &CheckOptions,
    progress: impl FnMut(&Progress),
) -> Result<Report> {
    validate(options)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .thread_name(|i| format!("datacheck-{i}"))
        .build()
        .map_err(|source| Error::ThreadPool {
            threads: options.threads,
            source,
        })?;
    let threads = pool.current_num_threads();
    let cancel = AtomicBool::new(false);
    let mut members = 0;
    let mut warnings = walk::Warnings::default();
    let totals = pool.in_place_scope(|scope| {
        let mut counter = gzip::Counter::new(
            scope,
            &cancel,
            threads,
            options.block_size,
            options.limit,
            progress,
        );
        let mut walker = walk::Walker::new(&mut counter);
        let walked = walker.walk(dir);
        members = walker.members;
        warnings = std::mem::take(&mut walker.warnings);
        match walked {
            Ok(()) => counter.finish(),
            Err(Halt::OverLimit) => counter.stop(),
            Err(Halt::Failed(e)) => {
                // The walk's error is the one to report; the workers only
                // need stopping.
                let _ = counter.stop();
                Err(e)
            }
        }
    })?;
    Ok(Report {
        compressed_bytes: totals.compressed,
        tar_bytes: totals.tar,
        files: members,
        over_limit: totals.over_limit,
        limit: options.limit,
        warnings: warnings.into_vec(),
    })
}

fn validate(options: &CheckOptions) -> Result<()> {
    let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&options.block_size) {
        return Err(Error::InvalidOption {
            name: "block_size",
            value: as_u64(options.block_size),
            reason: "must be from 32 KiB to 256 MiB",
        });
    }
    if options.threads > MAX_THREADS {
        return Err(Error::InvalidOption {
            name: "threads",
            value: as_u64(options.threads),
            reason: "must be at most 1024 (0 = one per core)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options() {
        let options = CheckOptions::default();
        assert_eq!(options.limit, 170_000_000);
        assert_eq!(options.threads, 0);
        assert_eq!(options.block_size, 1 << 20);
        assert!(validate(&options).is_ok());
    }

    #[test]
    fn out_of_range_options() {
        let small = CheckOptions {
            block_size: MIN_BLOCK_SIZE - 1,
            ..CheckOptions::default()
        };
        assert!(matches!(
            validate(&small),
            Err(Error::InvalidOption {
                name: "block_size",
                ..
            })
        ));
        let many = CheckOptions {
            threads: MAX_THREADS + 1,
            ..CheckOptions::default()
        };
        assert!(matches!(
            validate(&many),
            Err(Error::InvalidOption {
                name: "threads",
                ..
            })
        ));
    }
}
