//! Writing the new image: bytes strictly in order, hashed as they are
//! written; zero runs become holes in a file target; early write-back so
//! checkpoints wait only for the last few MiB.

use crate::error::{Error, Result};
use crate::progress::Reporter;
use crate::storage::Zeroing;
use crate::zero_scan::{Found, ZeroScan, SCAN_BUFFER};
use delta_core::Sink;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

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

/// How the writer puts the image on its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A new file: everything is written, zero runs become holes.
    Sparse,
    /// A block device: what it already holds is compared first, in large
    /// sequential reads, and only the 4 KiB blocks that differ are written;
    /// zero runs are left to the device's own zeroing where it has one.
    Device(Zeroing),
}

/// Puts the new image on its target, in order, on the writer thread, and
/// hashes everything the target holds: the bytes it writes, and for a
/// block it found already in place, the bytes it read there.
struct Placer {
    file: File,
    /// The next byte of the image to put.
    pos: u64,
    mode: Mode,
    /// What the device held where `buf` goes, compared block by block.
    held: Vec<u8>,
    /// Blind writes (no compare) until this position: the last compares
    /// found nearly everything different.
    compare_from: u64,
    /// How far the next blind stretch reaches after another such compare.
    blind_len: u64,
    /// Bytes compared in a row that were nearly all different.
    streak: u64,
    /// The device refused its own zeroing: zero runs are compared from
    /// now on, as with `ApplyOptions::compare_zero_runs`.
    compare_zero_runs: bool,
    /// Zero runs being read ahead, when they are compared.
    scan: Option<ZeroScan>,
    /// Image bytes before this offset have been handed to write-back.
    writeback_start: u64,
    /// Digest of every byte of the image so far (from offset 0).
    hasher: blake3::Hasher,
    stats: WriteStats,
}

/// What reached the target, for the summary, the log and the progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes written to the target (what wears the flash).
    pub written: u64,
    /// Bytes found already in place on a block device, not written.
    pub skipped: u64,
    /// Bytes of zero runs the device zeroed itself (no data sent).
    pub zeroed: u64,
    /// Bytes of the target read to compare.
    pub compared: u64,
}

/// Bytes buffered before they are compared and written: 256 KiB, so that
/// the writer's four buffers (1 MiB) leave a delta's segments most of the
/// default 24 MiB (1 MiB buffers gained nothing measurable on a card; at
/// 512 KiB, alt-minor's apply peaked at 24.5 MiB of resident memory once
/// the executable grew).
const WRITE_BUFFER: usize = 256 << 10;

/// The unit of comparison on a block device: a page, and the block of
/// nearly every file system and flash translation layer.
pub(crate) const BLOCK: u64 = 4096;

/// Blind stretches after compares that found nearly everything different
/// for [`STREAK`] bytes in a row: the first, and the longest (each next one
/// doubles while the compare after it finds the same).
const BLIND_FIRST: u64 = 4 << 20;
const BLIND_MAX: u64 = 256 << 20;
const STREAK: u64 = 8 << 20;

/// Written bytes handed to the kernel's write-back at a time. Starting
/// write-back early keeps the storage busy while segments are being decoded,
/// so a checkpoint's `fdatasync` only waits for the last few MiB instead of
/// everything written since the previous checkpoint, and the applier does not
/// fill the page cache (and evict the running application's) with an image
/// it will not read again.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl Placer {
    fn new(file: File, start: u64, mode: Mode, hasher: blake3::Hasher) -> Placer {
        Placer {
            file,
            pos: start,
            mode,
            held: Vec::new(),
            compare_from: 0,
            blind_len: BLIND_FIRST,
            streak: 0,
            compare_zero_runs: false,
            scan: None,
            writeback_start: start,
            hasher,
            stats: WriteStats::default(),
        }
    }

    /// Puts `bytes` at the current position: written, or on a block
    /// device compared first; hashed either way.
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if matches!(self.mode, Mode::Device(_)) && self.pos >= self.compare_from {
            self.put_compared(bytes)?;
        } else {
            self.file.write_all_at(bytes, self.pos)?;
            self.hasher.update(bytes);
            self.stats.written += bytes.len() as u64;
        }
        self.advance(bytes.len() as u64);
        Ok(())
    }

    /// Reads what the device holds where `bytes` go and writes only the
    /// blocks that differ, in runs. A block found in place is hashed as
    /// read: the digest is of what the target holds.
    fn put_compared(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut held = std::mem::take(&mut self.held);
        held.resize(bytes.len(), 0);
        if self.file.read_exact_at(&mut held, self.pos).is_err() {
            // Unreadable (a bad block, past the end): written as it would
            // be without the compare, which may well mend it.
            self.held = held;
            self.file.write_all_at(bytes, self.pos)?;
            self.hasher.update(bytes);
            self.stats.written += bytes.len() as u64;
            return Ok(());
        }
        self.stats.compared += bytes.len() as u64;
        let mut run: Option<usize> = None;
        let mut at = 0usize;
        let mut differing = 0u64;
        let mut result = Ok(());
        while at < bytes.len() && result.is_ok() {
            // Blocks are aligned to the device, not to this buffer.
            let to_boundary = BLOCK - (self.pos + at as u64) % BLOCK;
            let end = (at + to_boundary as usize).min(bytes.len());
            let same = skipped_in_place(&held[at..end], &bytes[at..end], self.pos + at as u64);
            match (same, run) {
                (false, None) => run = Some(at),
                (true, Some(from)) => {
                    result = self.write_run(&bytes[from..at], from);
                    run = None;
                }
                _ => {}
            }
            if same {
                self.hasher.update(&held[at..end]);
                self.stats.skipped += (end - at) as u64;
            } else {
                self.hasher.update(&bytes[at..end]);
                differing += (end - at) as u64;
            }
            at = end;
        }
        if let (Ok(()), Some(from)) = (&result, run) {
            result = self.write_run(&bytes[from..], from);
        }
        self.held = held;
        // Nearly all different for a while (a zeroed or foreign target,
        // not one changed file): stop paying for reads for a stretch,
        // longer each time the compare after it finds the same.
        if differing * 10 >= bytes.len() as u64 * 9 {
            self.streak += bytes.len() as u64;
            if self.streak >= STREAK || self.blind_len > BLIND_FIRST {
                self.compare_from = self.pos + bytes.len() as u64 + self.blind_len;
                self.blind_len = (self.blind_len * 2).min(BLIND_MAX);
                self.streak = 0;
            }
        } else {
            self.streak = 0;
            self.blind_len = BLIND_FIRST;
        }
        result
    }

    /// Writes `run`, which starts `from` bytes past the current position.
    fn write_run(&mut self, run: &[u8], from: usize) -> io::Result<()> {
        self.file.write_all_at(run, self.pos + from as u64)?;
        self.stats.written += run.len() as u64;
        Ok(())
    }

    /// Moves past `len` bytes just put, and hands every
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

    /// Makes everything put so far durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        // Everything is clean now: let it all leave the page cache.
        self.advise_dont_need(0);
        self.writeback_start = self.pos;
        Ok(())
    }

    /// Sets a file target's length (trailing holes), fsyncs, and returns
    /// the digest of the whole image and what the writes did.
    fn finish(mut self) -> io::Result<(blake3::Hash, WriteStats)> {
        if let Some(scan) = self.scan.take() {
            let (read, wrong) = scan.finish();
            self.stats.compared += read;
            if wrong {
                // The digest is of what the target holds, and a zero run
                // there does not hold zeros.
                self.hasher.update(b"a zero run that is not");
            }
        }
        if self.mode == Mode::Sparse {
            self.file.set_len(self.pos)?;
        }
        self.file.sync_all()?;
        Ok((self.hasher.finalize(), self.stats))
    }

    /// Puts `len` zero bytes: a hole in a file. On a block device whose
    /// own zeroing is known to read back as zeros, the whole blocks go to it
    /// (no data sent, nothing read); on others (an SD card) zero runs are
    /// compared like data, as reading costs less than writing.
    fn put_zeros(&mut self, mut len: u64) -> io::Result<()> {
        while len > 0 {
            let piece = self.scan.as_mut().and_then(|scan| scan.piece_at(self.pos));
            let n = match piece {
                Some(piece) if piece.start <= self.pos => {
                    let n = len.min(piece.end - self.pos);
                    self.put_scanned_zeros(piece.start, n)?;
                    n
                }
                Some(piece) => {
                    let n = len.min(piece.start - self.pos);
                    self.put_zero_run(n)?;
                    n
                }
                None => {
                    self.put_zero_run(len)?;
                    len
                }
            };
            len -= n;
        }
        Ok(())
    }

    /// Has the zero runs `runs` (whole blocks, in order, past the current
    /// position) read ahead, on a thread of their own.
    fn scan_ahead(&mut self, runs: &[std::ops::Range<u64>]) {
        let scan = direct_reader(&self.file).and_then(|file| ZeroScan::start(file, runs));
        // No thread to be had: they are compared when the writer gets there.
        self.scan = scan.ok();
    }

    /// Puts `len` zero bytes inside the piece read ahead at `piece`: zeros
    /// go over the whole blocks it found not zero, without reading.
    fn put_scanned_zeros(&mut self, piece: u64, len: u64) -> io::Result<()> {
        let head = ((BLOCK - self.pos % BLOCK) % BLOCK).min(len);
        let body = (len - head) / BLOCK * BLOCK;
        self.put_zero_bytes(head)?;
        let found = match &self.scan {
            Some(scan) if body > 0 => scan.found(piece),
            _ => Found::Unread,
        };
        if found == Found::Unread {
            self.put_zero_bytes(body)?;
        } else {
            let mut done = 0;
            while done < body {
                // A run of blocks to write, or of blocks in place.
                let write = found.must_write((self.pos - piece) / BLOCK);
                let mut n = BLOCK;
                while done + n < body && found.must_write((self.pos + n - piece) / BLOCK) == write {
                    n += BLOCK;
                }
                if write {
                    self.write_zeros(n)?;
                } else {
                    self.stats.skipped += n;
                }
                hash_zeros(&mut self.hasher, n);
                self.advance(n);
                done += n;
            }
        }
        self.put_zero_bytes(len - head - body)
    }

    /// Writes `len` zero bytes at the current position, without reading.
    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64);
            self.write_run(&ZEROS[..n as usize], done as usize)?;
            done += n;
        }
        Ok(())
    }

    /// Puts `len` zero bytes that were not read ahead.
    fn put_zero_run(&mut self, len: u64) -> io::Result<()> {
        let zeroing = match self.mode {
            Mode::Sparse => {
                hash_zeros(&mut self.hasher, len);
                self.pos += len;
                return Ok(());
            }
            Mode::Device(zeroing) => zeroing,
        };
        // Whole blocks only go to the device's zeroing.
        let head = ((BLOCK - self.pos % BLOCK) % BLOCK).min(len);
        let body = (len - head) / BLOCK * BLOCK;
        self.put_zero_bytes(head)?;
        let mut left = body;
        while left > 0 {
            let chunk = left.min(ZERO_CHUNK);
            if self.compare_zero_runs || zero_range(&self.file, zeroing, self.pos, chunk).is_err() {
                // Not supported after all: compared from now on.
                self.compare_zero_runs = true;
                self.put_zero_bytes(chunk)?;
            } else {
                hash_zeros(&mut self.hasher, chunk);
                self.stats.zeroed += chunk;
                self.advance(chunk);
            }
            left -= chunk;
        }
        self.put_zero_bytes(len - head - body)
    }

    /// Puts `len` zero bytes on a block device as data, compared first, in
    /// pieces.
    fn put_zero_bytes(&mut self, len: u64) -> io::Result<()> {
        let mut left = len;
        while left > 0 {
            let n = left.min(WRITE_BUFFER as u64);
            self.put_compared(&ZEROS[..n as usize])?;
            self.advance(n);
            left -= n;
        }
        Ok(())
    }
}

/// `file` opened again for reading with `O_DIRECT`: reads that bypass the
/// page cache and its read-ahead. A thread reading far ahead through the
/// page cache would have the kernel read ahead megabytes at a time, and on
/// a slow card every other read (blocks read back, pages written in part)
/// would wait behind them.
fn direct_reader(file: &File) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Zero bytes to write, compare and hash from.
static ZEROS: [u8; WRITE_BUFFER] = [0u8; WRITE_BUFFER];

/// Hashes `len` zero bytes.
fn hash_zeros(hasher: &mut blake3::Hasher, mut len: u64) {
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..n]);
        len -= n as u64;
    }
}

/// Whether a block found holding `held` may stay: it already holds the
/// new bytes.
pub(crate) fn skipped_in_place(held: &[u8], new: &[u8], offset: u64) -> bool {
    #[cfg(debug_assertions)]
    if wrong_block_for_tests() == Some(offset) {
        return true;
    }
    let _ = offset;
    held == new
}

/// Test hook, in debug builds only: `DELTA_TEST_SKIP_WRONG_BLOCK=OFFSET`
/// makes the block at OFFSET count as in place even when it differs, as if
/// the device had read back wrong. The digest, of what the target holds,
/// must then refuse the image.
#[cfg(debug_assertions)]
fn wrong_block_for_tests() -> Option<u64> {
    static OFFSET: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("DELTA_TEST_SKIP_WRONG_BLOCK")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// Zero runs shorter than this are written as bytes: holes and the
/// device's zeroing pay off only for long runs.
pub(crate) const SHORT_ZERO_RUN: u64 = 64 << 10;

/// Bytes of a zero run handed to the device's zeroing at a time, so that
/// progress and checkpoints keep moving.
const ZERO_CHUNK: u64 = 64 << 20;

/// Asks a block device to zero `len` bytes at `offset` itself, without the
/// zeros being sent.
fn zero_range(file: &File, zeroing: Zeroing, offset: u64, len: u64) -> io::Result<()> {
    match zeroing {
        Zeroing::Discard => discard(file, offset, len),
        // The kernel zeroes with the device's write-zeroes, or a discard it
        // knows reads back as zeros, and refuses rather than write zeros.
        Zeroing::WriteZeroes => {
            use rustix::fs::FallocateFlags;
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            rustix::fs::fallocate(file, flags, offset, len).map_err(io::Error::from)
        }
        Zeroing::Compare => Err(io::ErrorKind::Unsupported.into()),
    }
}

/// `ioctl(BLKDISCARD)` of `len` bytes at `offset` (both multiples of the
/// logical block size). rustix has no wrapper for it.
#[allow(unsafe_code)]
fn discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::ioctl::{ioctl, opcode, Opcode, Setter};
    // <linux/fs.h>: #define BLKDISCARD _IO(0x12,119), taking uint64_t[2].
    const BLKDISCARD: Opcode = opcode::none(0x12, 119);
    // SAFETY: BLKDISCARD takes a pointer to two u64, the start and the
    // length of the range, which the kernel only reads; Setter passes a
    // pointer to exactly that, valid for the call.
    unsafe { ioctl(file, Setter::<BLKDISCARD, [u64; 2]>::new([offset, len])) }
        .map_err(io::Error::from)
}

/// What the writer thread is asked to do, in order.
enum Job {
    /// Put these bytes next (the buffer then comes back to the pool).
    Bytes(Vec<u8>),
    /// Put this many zero bytes next.
    Zeros(u64),
    /// Answer once everything before is put.
    Barrier(mpsc::SyncSender<io::Result<()>>),
    /// Read these zero runs ahead (see [`Placer::scan_ahead`]).
    Ahead(Vec<std::ops::Range<u64>>),
    /// Answer once everything before is put and durable.
    Sync(mpsc::SyncSender<io::Result<()>>),
}

/// Buffers of [`WRITE_BUFFER`] bytes in flight between the decoder and the
/// writer thread (the one being filled, one queued, one being put).
const POOL: usize = 3;

/// The writer's memory: its [`POOL`] buffers, the one a block device's
/// blocks are compared in, and the one zero runs are read ahead in.
pub const WRITER_MEMORY: u64 = (POOL as u64 + 1) * WRITE_BUFFER as u64 + SCAN_BUFFER as u64 + BLOCK;

/// Writer of the new image, strictly in order: the caller's thread fills
/// buffers, a writer thread compares, writes and hashes them, so decoding
/// the next segment overlaps putting and hashing this one. Memory: [`POOL`]
/// buffers of [`WRITE_BUFFER`] bytes, plus one for comparing.
pub(crate) struct TargetWriter {
    buf: Vec<u8>,
    /// Bytes handed to the writer thread (the image position of `buf[0]`).
    sent: u64,
    jobs: Option<mpsc::SyncSender<Job>>,
    /// Buffers the writer thread is done with.
    free: mpsc::Receiver<Vec<u8>>,
    /// Buffers made so far (at most [`POOL`]).
    made: usize,
    /// Set by the writer thread when a write failed.
    failed: Arc<AtomicBool>,
    /// Bytes of the image the writer thread has put.
    put: Arc<PutMark>,
    /// The target, for reading back (COPY_NEW ops).
    reader: Arc<File>,
    worker: Option<std::thread::JoinHandle<io::Result<(blake3::Hash, WriteStats)>>>,
}

impl std::fmt::Debug for TargetWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetWriter")
            .field("position", &self.position())
            .finish_non_exhaustive()
    }
}

impl TargetWriter {
    /// A writer of `file` positioned at `start`: the bytes before it (an
    /// interrupted run wrote them) are read back into the digest first. A
    /// `Sparse` (file) target is cut or extended to `start`, as its tail
    /// may be a hole not yet part of the file.
    ///
    /// # Errors
    /// I/O errors naming `path`.
    pub(crate) fn start(
        file: File,
        path: &Path,
        start: u64,
        mode: Mode,
        report: &mut Reporter<'_>,
        total: u64,
    ) -> Result<TargetWriter> {
        let io = |op, source| Error::Io {
            op,
            path: path.to_owned(),
            source,
        };
        if mode == Mode::Sparse && start > 0 {
            file.set_len(start).map_err(|e| io("truncate", e))?;
        }
        let hasher = hash_prefix(&file, path, start, report, total)?;
        let reader = Arc::new(file.try_clone().map_err(|e| io("open target", e))?);
        let (jobs, queue) = mpsc::sync_channel::<Job>(POOL);
        let (give_back, free) = mpsc::sync_channel::<Vec<u8>>(POOL);
        let failed = Arc::new(AtomicBool::new(false));
        let put = Arc::new(PutMark::new(start));
        let placer = Placer::new(file, start, mode, hasher);
        let worker = {
            let (failed, put) = (Arc::clone(&failed), Arc::clone(&put));
            std::thread::Builder::new()
                .name("delta-writer".into())
                .spawn(move || run_placer(placer, &queue, &give_back, &failed, &put))
                .map_err(|e| io("start the writer thread for", e))?
        };
        Ok(TargetWriter {
            buf: Vec::with_capacity(WRITE_BUFFER),
            sent: start,
            jobs: Some(jobs),
            free,
            made: 1,
            failed,
            put,
            reader,
            worker: Some(worker),
        })
    }

    /// Bytes of the image produced so far.
    pub(crate) fn position(&self) -> u64 {
        self.sent + self.buf.len() as u64
    }

    fn send(&mut self, job: Job) -> io::Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job));
        match sent {
            Some(Ok(())) => Ok(()),
            // The writer thread is gone: its result says why.
            _ => Err(self.stop()),
        }
    }

    /// Hands the filled buffer to the writer thread and takes an empty one
    /// (waiting for one when all [`POOL`] are in flight).
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.failed.load(Ordering::Relaxed) {
            return self.barrier();
        }
        let next = match self.free.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.made < POOL => {
                self.made += 1;
                Vec::with_capacity(WRITE_BUFFER)
            }
            Err(_) => match self.free.recv() {
                Ok(buf) => buf,
                Err(_) => return Err(self.stop()),
            },
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.sent += full.len() as u64;
        self.send(Job::Bytes(full))
    }

    /// Waits until everything before is put (or failed).
    fn barrier(&mut self) -> io::Result<()> {
        self.ask(Job::Barrier)
    }

    fn ask(&mut self, job: fn(mpsc::SyncSender<io::Result<()>>) -> Job) -> io::Result<()> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(job(reply))?;
        answer.recv().unwrap_or_else(|_| Err(self.stop()))
    }

    /// Ends the writer thread and returns the error that stopped it.
    fn stop(&mut self) -> io::Error {
        self.jobs = None;
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the writer thread panicked"),
            _ => io::Error::other("the writer thread has stopped"),
        }
    }

    /// Writes buffered bytes and makes them durable (`fdatasync`).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.ask(Job::Sync)
    }

    /// Puts everything, sets a file target's length (trailing holes),
    /// fsyncs, and returns the digest of the whole image and what the
    /// writes did.
    pub(crate) fn finish(mut self) -> io::Result<(blake3::Hash, WriteStats)> {
        self.flush_buf()?;
        self.jobs = None;
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writer thread panicked")),
            None => Err(io::Error::other("the writer thread has stopped")),
        }
    }
}

impl Drop for TargetWriter {
    /// Nothing is written after the writer is gone: the thread is joined.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The writer thread: puts jobs in order until the queue closes. After a
/// failure it puts nothing more and answers every question with the
/// failure.
fn run_placer(
    mut placer: Placer,
    queue: &mpsc::Receiver<Job>,
    give_back: &mpsc::SyncSender<Vec<u8>>,
    failed: &AtomicBool,
    put: &PutMark,
) -> io::Result<(blake3::Hash, WriteStats)> {
    // Whatever ends this thread, nobody waits for it to put more.
    struct End<'a>(&'a PutMark);
    impl Drop for End<'_> {
        fn drop(&mut self) {
            self.0.end();
        }
    }
    let _end = End(put);
    let mut error: Option<io::Error> = None;
    let copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
    for job in queue {
        let done = match job {
            Job::Bytes(bytes) => {
                let done = match error {
                    None => placer.put(&bytes),
                    Some(_) => Ok(()),
                };
                let mut bytes = bytes;
                bytes.clear();
                let _ = give_back.try_send(bytes);
                done
            }
            Job::Zeros(len) => match error {
                None => placer.put_zeros(len),
                Some(_) => Ok(()),
            },
            Job::Ahead(runs) => {
                placer.scan_ahead(&runs);
                Ok(())
            }
            Job::Barrier(reply) => {
                let _ = reply.send(error.as_ref().map_or(Ok(()), |e| Err(copy(e))));
                Ok(())
            }
            Job::Sync(reply) => {
                let done = match &error {
                    None => placer.sync(),
                    Some(e) => Err(copy(e)),
                };
                let _ = reply.send(done.as_ref().map(|_| ()).map_err(copy));
                done
            }
        };
        match (done, &error) {
            (Err(e), None) => {
                failed.store(true, Ordering::Relaxed);
                put.end();
                error = Some(e);
            }
            (Ok(()), None) => put.advance(placer.pos),
            _ => {}
        }
    }
    match error {
        Some(e) => Err(e),
        None => placer.finish(),
    }
}

impl Sink for TargetWriter {
    type Error = io::Error;

    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.buf.len() == WRITE_BUFFER {
                self.flush_buf()?;
            }
            let n = rest.len().min(WRITE_BUFFER - self.buf.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
        Ok(())
    }

    fn write_zeros(&mut self, len: u64) -> io::Result<()> {
        // Short runs are bytes (SHORT_ZERO_RUN < WRITE_BUFFER = ZEROS.len()).
        if len < SHORT_ZERO_RUN {
            return self.write_bytes(&ZEROS[..len as usize]);
        }
        self.flush_buf()?;
        self.sent += len;
        self.send(Job::Zeros(len))
    }

    /// Reads bytes written before (COPY_NEW ops), once the writer thread
    /// has put them. A file target may end in a hole that is not yet part
    /// of the file: those bytes read as zeros.
    fn read_back(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.position())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if offset >= self.sent {
            // Still in the buffer being filled.
            let from = (offset - self.sent) as usize;
            buf.copy_from_slice(&self.buf[from..from + buf.len()]);
            return Ok(());
        }
        if end > self.sent {
            self.flush_buf()?;
        }
        if end > self.put.position() {
            self.barrier()?;
        }
        read_put(&self.reader, offset, buf)
    }
}

/// Fills `buf` from `file` at `offset`, bytes the writer thread has put:
/// past the end of a file target (a trailing hole not yet part of it) they
/// are zeros.
fn read_put(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
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

/// How far the writer thread has put the image, for threads that wait to
/// read it back.
#[derive(Debug)]
pub(crate) struct PutMark {
    /// Bytes put, and whether the writer thread has ended (or failed).
    state: Mutex<(u64, bool)>,
    moved: Condvar,
}

impl PutMark {
    fn new(start: u64) -> PutMark {
        PutMark {
            state: Mutex::new((start, false)),
            moved: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, bool)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn position(&self) -> u64 {
        self.lock().0
    }

    fn advance(&self, pos: u64) {
        self.lock().0 = pos;
        self.moved.notify_all();
    }

    /// Nothing more will be put: waiters stop waiting.
    fn end(&self) {
        self.lock().1 = true;
        self.moved.notify_all();
    }

    /// Waits until bytes before `end` are put; false if the writer thread
    /// ended first, or `patience` passed.
    fn wait_for(&self, end: u64, patience: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + patience;
        let mut state = self.lock();
        loop {
            if state.0 >= end {
                return true;
            }
            let now = std::time::Instant::now();
            if state.1 || now >= deadline {
                return false;
            }
            state = match self.moved.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

/// The target as the writer thread puts it, read by other threads: a
/// helper decoding a segment ahead reads back the new-image bytes it
/// copies once they are put.
#[derive(Debug, Clone)]
pub(crate) struct PutView {
    reader: Arc<File>,
    put: Arc<PutMark>,
}

impl PutView {
    /// Fills `buf` with the new-image bytes at `offset`, waiting up to
    /// `patience` for the writer thread to put them.
    ///
    /// # Errors
    /// `WouldBlock` when they were not put in time (or will not be: the
    /// writer ended); I/O errors reading them.
    pub(crate) fn read_at(
        &self,
        offset: u64,
        buf: &mut [u8],
        patience: std::time::Duration,
    ) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if !self.put.wait_for(end, patience) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the new-image bytes were not written in time",
            ));
        }
        read_put(&self.reader, offset, buf)
    }
}

impl TargetWriter {
    /// A view of what the writer thread puts, for other threads.
    pub(crate) fn view(&self) -> PutView {
        PutView {
            reader: Arc::clone(&self.reader),
            put: Arc::clone(&self.put),
        }
    }

    /// Has the zero runs `runs` (in order, past everything handed over so
    /// far) read ahead on a thread of their own from now on, long before
    /// the writer reaches them: on a device whose own zeroing is not
    /// trusted, it then reads them while it writes the data before them.
    pub(crate) fn scan_ahead(&mut self, runs: Vec<std::ops::Range<u64>>) -> io::Result<()> {
        let from = self.position();
        // Whole blocks, past what is handed over.
        let runs: Vec<_> = runs
            .into_iter()
            .map(|r| r.start.max(from).next_multiple_of(BLOCK)..r.end / BLOCK * BLOCK)
            .filter(|r| r.start < r.end)
            .collect();
        if runs.is_empty() {
            return Ok(());
        }
        self.flush_buf()?;
        self.send(Job::Ahead(runs))
    }

    /// Hands the bytes buffered so far to the writer thread, so that a
    /// thread waiting to read them back gets them without this one
    /// writing more.
    pub(crate) fn hand_over(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts `new` through a writer in `mode` onto a file holding `held`,
    /// in pieces of 300,000 bytes, all-zero pieces as zero runs; returns
    /// the file's bytes, the digest and the stats.
    fn put(mode: Mode, held: &[u8], new: &[u8]) -> (Vec<u8>, blake3::Hash, WriteStats) {
        put_with_ahead(mode, held, new, Vec::new())
    }

    /// [`put`], with `ahead` handed to [`TargetWriter::scan_ahead`]
    /// first.
    fn put_with_ahead(
        mode: Mode,
        held: &[u8],
        new: &[u8],
        ahead: Vec<std::ops::Range<u64>>,
    ) -> (Vec<u8>, blake3::Hash, WriteStats) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, held).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut callback = None;
        let mut report = Reporter::new(&mut callback, crate::log::UpdateLog::disabled());
        let mut writer = TargetWriter::start(file, &path, 0, mode, &mut report, 0).unwrap();
        writer.scan_ahead(ahead).unwrap();
        for piece in new.chunks(300_000) {
            if piece.iter().all(|&b| b == 0) {
                writer.write_zeros(piece.len() as u64).unwrap();
            } else {
                writer.write_bytes(piece).unwrap();
            }
        }
        let (digest, stats) = writer.finish().unwrap();
        (std::fs::read(&path).unwrap(), digest, stats)
    }

    fn images() -> (Vec<u8>, Vec<u8>) {
        let mut rng = delta_core::testing::Rng::new(5);
        let held = rng.bytes(6 << 20);
        let mut new = held.clone();
        new[100_000..130_000].copy_from_slice(&rng.bytes(30_000));
        new[2 << 20..(2 << 20) + 900_000].fill(0);
        new[5 << 20..(5 << 20) + 4096].copy_from_slice(&rng.bytes(4096));
        (held, new)
    }

    #[test]
    fn a_device_without_zeroing_gets_only_the_blocks_that_differ() {
        let (held, new) = images();
        let (out, digest, stats) = put(Mode::Device(Zeroing::Compare), &held, &new);
        assert!(out == new);
        assert_eq!(digest, blake3::hash(&new));
        let differing = held
            .chunks(4096)
            .zip(new.chunks(4096))
            .filter(|(a, b)| a != b)
            .count() as u64
            * 4096;
        assert!(stats.written <= differing, "{stats:?}, {differing} differ");
        assert_eq!(stats.written + stats.skipped, new.len() as u64, "{stats:?}");
        assert_eq!(stats.zeroed, 0);
    }

    /// Zero runs read ahead of the writer, on their own thread, end up
    /// zero where the device held data; a run announced as zeros where
    /// bytes come (a segment of nearly all zeros, a lying index) gets the
    /// bytes.
    #[test]
    fn zero_runs_read_ahead_are_mended_and_bytes_put_there_win() {
        let (held, mut new) = images();
        new[3 << 20..4 << 20].fill(0);
        let ahead = vec![
            (2 << 20) + 4096..(2 << 20) + 900_000,
            3 << 20..4 << 20,
            (5 << 20) - 8192..(5 << 20) + 8192,
        ];
        let (out, digest, stats) =
            put_with_ahead(Mode::Device(Zeroing::Compare), &held, &new, ahead);
        assert!(out == new);
        assert_eq!(digest, blake3::hash(&new));
        assert_eq!(stats.zeroed, 0);
        assert!(stats.written >= (1 << 20) + 900_000, "{stats:?}");
        // Every byte was compared, by one thread or the other.
        assert!(stats.compared >= new.len() as u64, "{stats:?}");
    }

    #[test]
    fn a_file_gets_everything_and_holes() {
        let (_, new) = images();
        let (out, digest, stats) = put(Mode::Sparse, &[], &new);
        assert!(out == new);
        assert_eq!(digest, blake3::hash(&new));
        assert_eq!(stats.skipped, 0);
        assert!(
            stats.written < new.len() as u64,
            "zero runs are holes: {stats:?}"
        );
    }

    #[test]
    fn a_foreign_device_is_written_blind_after_a_streak() {
        let mut rng = delta_core::testing::Rng::new(6);
        let held = rng.bytes(64 << 20);
        let new = rng.bytes(64 << 20);
        let (out, digest, stats) = put(Mode::Device(Zeroing::Compare), &held, &new);
        assert!(out == new);
        assert_eq!(digest, blake3::hash(&new));
        assert_eq!(stats.written, new.len() as u64);
        // Compares stop paying after a streak: far less than all is read.
        assert!(stats.compared < new.len() as u64 / 2, "{stats:?}");
    }

    /// A thread reading back through a [`PutView`] gets the bytes once
    /// they are handed over and put, and stops waiting (with `WouldBlock`)
    /// when the writer ends without putting them.
    #[test]
    fn a_view_waits_for_handed_over_bytes_and_not_past_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let file = std::fs::File::create_new(&path).unwrap();
        let mut callback = None;
        let mut report = Reporter::new(&mut callback, crate::log::UpdateLog::disabled());
        let mut writer = TargetWriter::start(file, &path, 0, Mode::Sparse, &mut report, 0).unwrap();
        let view = writer.view();
        let reader = {
            let view = view.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 3];
                view.read_at(1000, &mut buf, std::time::Duration::from_secs(60))
                    .map(|()| buf)
            })
        };
        let bytes: Vec<u8> = (0..2000u32).map(|i| i as u8).collect();
        writer.write_bytes(&bytes).unwrap();
        // Buffered here until handed over: the reader waits for them.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!reader.is_finished());
        writer.hand_over().unwrap();
        let got = reader.join().unwrap().unwrap();
        assert_eq!(got, [1000u32 as u8, 1001u32 as u8, 1002u32 as u8]);
        // Bytes past what the writer puts before it ends never come.
        let late = std::thread::spawn(move || {
            let mut buf = [0u8; 3];
            view.read_at(5000, &mut buf, std::time::Duration::from_secs(60))
        });
        writer.finish().unwrap();
        let err = late.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }
}
