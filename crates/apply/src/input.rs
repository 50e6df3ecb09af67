//! Where the applier reads a delta from.
//!
//! A delta is read once, front to back: the header, the table and the
//! signatures first, then each payload in apply order (see `FORMAT.md`,
//! "File layout"). So it can come from a file, a pipe or a download, and be
//! applied as it arrives, without being stored. A resumed run skips the
//! payloads its journal says are written: a file seeks, a download asks for
//! the rest with a `Range` request, a pipe reads and discards.
//!
//! A device agent with its own transport implements [`DeltaInput`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Fills `buf` from `input`, as `read_exact` does; on failure, also says
/// how many bytes of `buf` it read first (where a cut-short delta ended).
pub(crate) fn read_full(input: &mut dyn Read, buf: &mut [u8]) -> Result<(), (usize, io::Error)> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Err((filled, io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((filled, e)),
        }
    }
    Ok(())
}

/// A line for the update log, and when it happened (a download retries
/// inside one read; the log learns of it after).
#[derive(Debug, Clone)]
pub struct Note {
    /// When it happened.
    pub at: std::time::SystemTime,
    /// What happened.
    pub text: String,
}

impl Note {
    /// `text`, happening now.
    pub fn now(text: String) -> Note {
        Note {
            at: std::time::SystemTime::now(),
            text,
        }
    }
}

/// A delta read front to back.
pub trait DeltaInput: Read + Send {
    /// Names the delta in messages and the update log: a path, `stdin` or
    /// a URL.
    fn name(&self) -> &str;

    /// The delta's length in bytes, once the input knows it (a file's size,
    /// a download's `Content-Length`); None for a pipe. The applier checks
    /// it against the table, and reads a pipe to its end instead.
    fn known_len(&self) -> Option<u64> {
        None
    }

    /// Moves `len` bytes forward without using them: payloads a resumed run
    /// has already written. Reads and discards them unless the input can do
    /// better.
    ///
    /// # Errors
    /// The input's read errors, or [`io::ErrorKind::UnexpectedEof`] when
    /// it ends first.
    fn skip(&mut self, len: u64) -> io::Result<()> {
        discard(self, len)
    }

    /// What happened since the last call that the update log should record
    /// (a download's retries, with their reasons and offsets), each with
    /// the time it happened.
    fn take_notes(&mut self) -> Vec<Note> {
        Vec::new()
    }
}

/// Reads and drops `len` bytes of `reader`.
///
/// # Errors
/// The reader's errors, or [`io::ErrorKind::UnexpectedEof`] when it ends
/// first.
pub fn discard<R: Read + ?Sized>(reader: &mut R, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// How a download retries (see `http::UrlInput`).
#[derive(Debug, Clone)]
pub struct UrlOptions {
    /// Failed attempts in a row (no byte received between them) before the
    /// download gives up.
    pub retries: u32,
    /// Longest wait for a connection, an answer or the next bytes.
    pub timeout: Duration,
    /// Wait before the first retry; it doubles with each failure in a row,
    /// up to [`MAX_BACKOFF`].
    pub backoff: Duration,
    /// A flag that stops the waits between retries (the applier's cancel
    /// handle).
    pub cancel: Option<Arc<AtomicBool>>,
    /// Sent as `Authorization: Bearer TOKEN` (a delta service's device
    /// token).
    pub bearer: Option<String>,
    /// Longest total wait for a server that answers 202 Accepted (a delta
    /// service still making the delta) or 503 with `Retry-After`. These
    /// waits do not count as failed attempts.
    pub pending_limit: Duration,
}

impl Default for UrlOptions {
    fn default() -> Self {
        UrlOptions {
            retries: 10,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_secs(1),
            cancel: None,
            bearer: None,
            pending_limit: Duration::from_secs(3600),
        }
    }
}

/// Longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether `text` names a delta to download: an `http://` or `https://`
/// URL.
pub fn is_url(text: &str) -> bool {
    let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Opens the delta a command line names: `-` is standard input, an
/// `http://` or `https://` URL is downloaded (with the `http` feature),
/// anything else is a path to a file or a block device.
///
/// # Errors
/// The open's error for a path, or [`io::ErrorKind::Unsupported`] for a
/// URL without the `http` feature; a URL is not contacted until the first
/// read.
pub fn open(name: &std::ffi::OsStr, url: &UrlOptions) -> io::Result<Box<dyn DeltaInput>> {
    if name == "-" {
        return Ok(Box::new(stdin()));
    }
    if let Some(text) = name.to_str().filter(|t| is_url(t)) {
        #[cfg(feature = "http")]
        return Ok(Box::new(crate::http::UrlInput::new(text, url.clone())));
        #[cfg(not(feature = "http"))]
        {
            let _ = (url, text);
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this build has no download client (built without the http feature); \
                 pipe the download to `-` instead",
            ));
        }
    }
    open_path(Path::new(name))
}

/// Opens the delta file at `path` (a regular file or a block device;
/// opening never blocks, and a FIFO is refused: pipe a stream to `-`).
///
/// # Errors
/// The open's error, or [`io::ErrorKind::InvalidInput`] naming what else
/// the path is.
pub fn open_path(path: &Path) -> io::Result<Box<dyn DeltaInput>> {
    Ok(Box::new(FileInput::open(path)?))
}

/// Bytes left in `input` after what was read (0 or 1: it reads one byte
/// at most), for a stream of unknown length whose end must be where its
/// table says. 0 for an input that knows its length (already checked).
///
/// # Errors
/// The input's read errors.
pub(crate) fn bytes_past(input: &mut dyn DeltaInput) -> io::Result<u64> {
    if input.known_len().is_some() {
        return Ok(0);
    }
    io::copy(&mut input.take(1), &mut io::sink())
}

/// A delta file (or a block device holding one).
#[derive(Debug)]
pub struct FileInput {
    name: String,
    file: File,
    len: u64,
}

impl FileInput {
    /// Opens the delta at `path` (a regular file or a block device; opening
    /// never blocks).
    ///
    /// # Errors
    /// The open's error, or [`io::ErrorKind::InvalidInput`] for anything
    /// else than a file or a block device.
    pub fn open(path: &Path) -> io::Result<FileInput> {
        let (file, len) = delta_image::open_image(path)?;
        Ok(FileInput {
            name: path.display().to_string(),
            file,
            len,
        })
    }
}

impl Read for FileInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl DeltaInput for FileInput {
    fn name(&self) -> &str {
        &self.name
    }

    fn known_len(&self) -> Option<u64> {
        Some(self.len)
    }

    fn skip(&mut self, len: u64) -> io::Result<()> {
        let offset = i64::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        self.file.seek(SeekFrom::Current(offset)).map(drop)
    }
}

/// A delta from a stream that cannot seek: a pipe, stdin, a socket.
#[derive(Debug)]
pub struct ReaderInput<R> {
    name: String,
    reader: R,
}

impl<R: Read + Send> ReaderInput<R> {
    /// Reads the delta from `reader`, named `name` in messages.
    pub fn new(name: impl Into<String>, reader: R) -> ReaderInput<R> {
        ReaderInput {
            name: name.into(),
            reader,
        }
    }
}

/// The delta on standard input (`delta apply OLD - -o OUT`).
pub fn stdin() -> ReaderInput<io::Stdin> {
    ReaderInput::new("stdin", io::stdin())
}

impl<R: Read> Read for ReaderInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl<R: Read + Send> DeltaInput for ReaderInput<R> {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Counts the bytes read through it.
pub(crate) struct Counted<'a> {
    pub(crate) inner: &'a mut dyn DeltaInput,
    pub(crate) count: u64,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths() {
        assert!(is_url("https://example.com/u.delta"));
        assert!(is_url("HTTP://10.0.0.1/u.delta"));
        assert!(!is_url("http.delta"));
        assert!(!is_url("./https://x"));
    }

    #[test]
    fn discarding_past_the_end_is_an_unexpected_end() {
        let mut input = ReaderInput::new("t", &b"abc"[..]);
        assert!(input.skip(2).is_ok());
        let e = input.skip(2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_file_skips_by_seeking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut input = FileInput::open(&path).unwrap();
        assert_eq!(input.known_len(), Some(10));
        input.skip(7).unwrap();
        let mut rest = String::new();
        input.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "789");
    }
}
