//! Writing the new image: bytes strictly in order, hashed as they are
//! written; zero runs become holes in a file target; early write-back so
//! checkpoints wait only for the last few MiB.

use crate::error::{Error, Result};
use crate::progress::Reporter;
use delta_core::Sink;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Hashes bytes `0..len` of `file`, reporting bytes done of `total`.
///
/// # Errors
/// I/O errors naming `path`.
pub(crate) fn hash_prefix(
    file: &File,
    path: &Path,
    len: u64,
    report: &mut Reporter<'_>,
    total: u64,
) -> Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], done)
            .map_err(|source| Error::Io {
                op: "read back",
                path: path.to_owned(),
                source,
            })?;
        hasher.update(&buf[..n]);
        done += n as u64;
        report.bytes(done, total);
    }
    Ok(hasher)
}

/// Sequential writer of the new image that hashes everything it writes.
pub struct TargetWriter {
    file: File,
    buf: Vec<u8>,
    /// Position of `buf[0]` in the image.
    pos: u64,
    sparse: bool,
    /// Image bytes before this offset have been handed to write-back.
    writeback_start: u64,
    /// Digest of every byte of the image so far (from offset 0).
    hasher: blake3::Hasher,
}

const WRITE_BUFFER: usize = 1 << 20;

/// Written bytes handed to the kernel's write-back at a time. Starting
/// write-back early keeps the storage busy while segments are being decoded,
/// so a checkpoint's `fdatasync` only waits for the last few MiB instead of
/// everything written since the previous checkpoint, and the applier does not
/// fill the page cache (and evict the running application's) with an image
/// it will not read again.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl std::fmt::Debug for TargetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetWriter")
            .field("pos", &self.pos)
            .field("sparse", &self.sparse)
            .finish_non_exhaustive()
    }
}

impl TargetWriter {
    /// A writer of `file` positioned at `start`: the bytes before it (an
    /// interrupted run wrote them) are read back into the digest first. A
    /// `sparse` (file) target is cut or extended to `start`, as its tail
    /// may be a hole not yet part of the file.
    ///
    /// # Errors
    /// I/O errors naming `path`.
    pub(crate) fn start(
        file: File,
        path: &Path,
        start: u64,
        sparse: bool,
        report: &mut Reporter<'_>,
        total: u64,
    ) -> Result<TargetWriter> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        if sparse && start > 0 {
            file.set_len(start).map_err(|e| io("truncate", e))?;
        }
        let hasher = hash_prefix(&file, path, start, report, total)?;
        let mut file = file;
        file.seek(SeekFrom::Start(start))
            .map_err(|e| io("seek", e))?;
        Ok(TargetWriter {
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            pos: start,
            sparse,
            writeback_start: start,
            hasher,
        })
    }

    /// Bytes of the image produced so far.
    pub fn position(&self) -> u64 {
        self.pos + self.buf.len() as u64
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.advance(self.buf.len() as u64);
        self.buf.clear();
        Ok(())
    }

    /// Moves past `len` bytes just written, and hands every
    /// [`WRITEBACK_CHUNK`] to write-back.
    fn advance(&mut self, len: u64) {
        self.pos += len;
        if self.pos - self.writeback_start >= WRITEBACK_CHUNK {
            // The range since the previous call: its older part is clean by
            // now and leaves the cache, the newer part starts write-back.
            self.advise_dont_need(self.writeback_start.saturating_sub(WRITEBACK_CHUNK));
            self.writeback_start = self.pos;
        }
    }

    /// `posix_fadvise(DONTNEED)` from `from` to the current position: Linux
    /// starts asynchronous write-back of the dirty pages in the range and
    /// drops the clean ones. Advice only, so a refusal changes nothing.
    fn advise_dont_need(&self, from: u64) {
        let Some(len) = std::num::NonZeroU64::new(self.pos.saturating_sub(from)) else {
            return;
        };
        let _ = rustix::fs::fadvise(&self.file, from, Some(len), rustix::fs::Advice::DontNeed);
    }

    /// Writes buffered bytes and makes them durable (`fdatasync`).
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.file.sync_data()?;
        // Everything is clean now: let it all leave the page cache.
        self.advise_dont_need(0);
        self.writeback_start = self.pos;
        Ok(())
    }

    /// Flushes, sets a file target's length (trailing holes), fsyncs, and
    /// returns the digest of the whole image.
    pub fn finish(mut self) -> io::Result<blake3::Hash> {
        self.flush_buf()?;
        if self.sparse {
            self.file.set_len(self.pos)?;
        }
        self.file.sync_all()?;
        Ok(self.hasher.finalize())
    }
}

impl Sink for TargetWriter {
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        if self.buf.len() + bytes.len() > WRITE_BUFFER {
            self.flush_buf()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            self.file.write_all(bytes)?;
            self.advance(bytes.len() as u64);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        if !self.sparse || len < 64 * 1024 {
            let mut left = len;
            let zeros = [0u8; 16 * 1024];
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                self.write_bytes(&zeros[..n])?;
                left -= n as u64;
            }
            return Ok(());
        }
        let mut left = len;
        let zeros = [0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            self.hasher.update(&zeros[..n]);
            left -= n as u64;
        }
        self.flush_buf()?;
        self.pos += len;
        self.file.seek(SeekFrom::Start(self.pos))?;
        Ok(())
    }

    /// Reads bytes written before (COPY_NEW ops), flushing the buffer first
    /// when the range reaches into it. A file target may end in a hole that
    /// is not yet part of the file: those bytes read as zeros.
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.position())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.pos {
            self.flush_buf()?;
        }
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
