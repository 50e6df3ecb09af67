//! Writing the new image: a temporary file renamed into place, or a block
//! device written in place. Bytes are written strictly in order; zero runs
//! become holes in a file target.

use crate::error::{Error, Result};
use delta_core::Sink;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the new image goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A regular file: written as `<path>.partial`, renamed on commit.
    File {
        /// Final path.
        path: PathBuf,
        /// Path written until the commit.
        partial: PathBuf,
    },
    /// A block device, written in place (the inactive partition).
    Block {
        /// The device node.
        path: PathBuf,
    },
}

impl Target {
    /// Classifies `path`: an existing block device, else a file.
    pub fn new(path: &Path) -> Target {
        match std::fs::metadata(path) {
            Ok(m) if m.file_type().is_block_device() => Target::Block {
                path: path.to_owned(),
            },
            _ => {
                let mut partial = path.as_os_str().to_owned();
                partial.push(".partial");
                Target::File {
                    path: path.to_owned(),
                    partial: PathBuf::from(partial),
                }
            }
        }
    }

    /// The path bytes are written to before the commit.
    pub fn write_path(&self) -> &Path {
        match self {
            Target::File { partial, .. } => partial,
            Target::Block { path } => path,
        }
    }

    /// The path named by the user.
    pub fn path(&self) -> &Path {
        match self {
            Target::File { path, .. } | Target::Block { path } => path,
        }
    }

    /// Refuses a target that is the old image, lives on the old image's
    /// device, or is the device of the running root filesystem.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the reason.
    pub fn check_safe(&self, old: Option<&Path>) -> Result<()> {
        let refuse = |reason: String| {
            Err(Error::UnsafeTarget {
                target: self.path().to_owned(),
                reason,
            })
        };
        let target_meta = std::fs::metadata(self.path()).ok();
        let is_block = matches!(self, Target::Block { .. });
        if let (Some(old), Some(t)) = (old, &target_meta) {
            if let Ok(o) = std::fs::metadata(old) {
                if o.dev() == t.dev() && o.ino() == t.ino() {
                    return refuse(format!("it is the old image {}", old.display()));
                }
                if is_block && o.file_type().is_block_device() && o.rdev() == t.rdev() {
                    return refuse(format!(
                        "it is the same device as the old image {}",
                        old.display()
                    ));
                }
                if is_block && !o.file_type().is_block_device() && o.dev() == t.rdev() {
                    return refuse(format!(
                        "the old image {} is stored on this device",
                        old.display()
                    ));
                }
            }
        }
        if let (true, Some(t), Ok(root)) = (is_block, &target_meta, std::fs::metadata("/")) {
            if t.rdev() == root.dev() {
                return refuse("it holds the running root filesystem".into());
            }
        }
        if let Target::File { path, .. } = self {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return refuse(format!("folder {} does not exist", dir.display()));
                }
            }
        }
        Ok(())
    }

    /// Opens the write path; `fresh` empties a file target first.
    /// `data_len` is the part of the new image that is not zero runs: a
    /// file target needs that much room, the rest becomes holes.
    ///
    /// # Errors
    /// I/O errors naming the path, a device smaller than `new_len`, or a
    /// file system without room for `data_len` bytes.
    pub fn open(&self, fresh: bool, new_len: u64, data_len: u64) -> Result<File> {
        let path = self.write_path();
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        if let Target::File { .. } = self {
            self.check_room(fresh, data_len)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(matches!(self, Target::File { .. }))
            .truncate(false)
            .open(path)
            .map_err(|e| io("open target", e))?;
        match self {
            Target::File { .. } if fresh => file.set_len(0).map_err(|e| io("truncate", e))?,
            Target::File { .. } => {}
            Target::Block { .. } => {
                let size = file.seek(SeekFrom::End(0)).map_err(|e| io("measure", e))?;
                if size < new_len {
                    return Err(Error::UnsafeTarget {
                        target: path.to_owned(),
                        reason: format!("device holds {size} bytes, the new image needs {new_len}"),
                    });
                }
            }
        }
        Ok(file)
    }

    /// Refuses, before anything is written, a file target whose file system
    /// cannot hold `data_len` bytes (counting what a resumed partial file
    /// already holds). A full disk half-way through would cost the device
    /// the whole download and write time for nothing.
    fn check_room(&self, fresh: bool, data_len: u64) -> Result<()> {
        let path = self.write_path();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // Without statvfs (an unusual file system), the writes will tell.
        let Ok(vfs) = rustix::fs::statvfs(dir) else {
            return Ok(());
        };
        let free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let held = match std::fs::metadata(path) {
            Ok(m) if !fresh => m.blocks().saturating_mul(512),
            _ => 0,
        };
        let needed = data_len.saturating_sub(held);
        if needed > free {
            return Err(Error::UnsafeTarget {
                target: path.to_owned(),
                reason: format!(
                    "its file system has {free} bytes free, the new image needs {needed} more \
                     ({data_len} bytes that are not zero runs)"
                ),
            });
        }
        Ok(())
    }
}

/// Hashes bytes `0..len` of `file` into `hasher`, reporting bytes done.
///
/// # Errors
/// I/O errors naming `path`.
pub fn hash_prefix(
    file: &File,
    path: &Path,
    len: u64,
    hasher: &mut blake3::Hasher,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|source| Error::Io {
            op: "seek",
            path: path.to_owned(),
            source,
        })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last = Instant::now();
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        reader
            .read_exact(&mut buf[..n])
            .map_err(|source| Error::Io {
                op: "read back",
                path: path.to_owned(),
                source,
            })?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if last.elapsed() >= PROGRESS_EVERY {
            progress(done);
            last = Instant::now();
        }
    }
    progress(done);
    Ok(())
}

/// How often long loops report progress.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Sequential writer of the new image that hashes everything it writes.
pub struct TargetWriter<'a> {
    file: File,
    buf: Vec<u8>,
    /// Position of `buf[0]` in the image.
    pos: u64,
    sparse: bool,
    /// Image bytes before this offset have been handed to write-back.
    writeback_start: u64,
    /// Digest of every byte written so far (from offset 0).
    pub hasher: blake3::Hasher,
    last_report: Instant,
    progress: &'a mut dyn FnMut(u64),
}

const WRITE_BUFFER: usize = 1 << 20;

/// Written bytes handed to the kernel's write-back at a time. Starting
/// write-back early keeps the storage busy while segments are being decoded,
/// so a checkpoint's `fdatasync` only waits for the last few MiB instead of
/// everything written since the previous checkpoint, and the applier does not
/// fill the page cache (and evict the running application's) with an image
/// it will not read again.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl std::fmt::Debug for TargetWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetWriter")
            .field("pos", &self.pos)
            .field("sparse", &self.sparse)
            .finish_non_exhaustive()
    }
}

impl<'a> TargetWriter<'a> {
    /// A writer positioned at `pos`, continuing `hasher`.
    pub fn new(
        file: File,
        pos: u64,
        sparse: bool,
        hasher: blake3::Hasher,
        progress: &'a mut dyn FnMut(u64),
    ) -> io::Result<TargetWriter<'a>> {
        let mut file = file;
        file.seek(SeekFrom::Start(pos))?;
        Ok(TargetWriter {
            file,
            buf: Vec::with_capacity(WRITE_BUFFER),
            pos,
            sparse,
            writeback_start: pos,
            hasher,
            last_report: Instant::now(),
            progress,
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

    /// Flushes, sets a file target's length (trailing holes) and fsyncs.
    pub fn finish(mut self) -> io::Result<(File, blake3::Hasher)> {
        self.flush_buf()?;
        if self.sparse {
            self.file.set_len(self.pos)?;
        }
        self.file.sync_all()?;
        Ok((self.file, self.hasher))
    }

    fn report(&mut self) {
        if self.last_report.elapsed() >= PROGRESS_EVERY {
            self.last_report = Instant::now();
            let done = self.position();
            (self.progress)(done);
        }
    }
}

impl Sink for TargetWriter<'_> {
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
        self.report();
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
        self.report();
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
