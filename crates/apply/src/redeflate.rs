//! Re-deflating untrusted deflate segments in a child process, under limits
//! the kernel enforces.
//!
//! preflate-rs rebuilds a deflate stream from its content and corrections,
//! and it is not hardened against hostile corrections: on some, its block
//! loop never ends while its memory grows (a 14.7 KB delta took 3.3 GB in
//! 3.5 minutes). Its loops cannot be reached from outside the crate, so the
//! applier runs the rebuilds in a forked worker process ([`Sandboxed`]) and
//! bounds the worker instead, for each rebuild:
//!
//! - **memory**: the worker's address space may grow by [`Budget::memory`]
//!   past what it has mapped when the rebuild starts (`RLIMIT_AS`); past it
//!   an allocation fails and the worker ends;
//! - **CPU**: at most [`Budget::cpu_seconds`] of CPU (`RLIMIT_CPU`), a
//!   stated multiple of the content's length;
//! - **output**: the applier reads at most the stream length the segment
//!   states, and stops the worker when it says it has more;
//! - **time and cancels**: the applier looks every 100 ms, and kills the
//!   worker at a cancel or past a wall-clock deadline of four times its
//!   CPU budget.
//!
//! One worker serves the deflate segments of an apply, and the segments
//! of other kinds between them up to [`WORKER_ROOM`] of buffers: a fork
//! costs 1-3 ms on some machines, and a fork per gzip file made an apply
//! of an OS image 1.4 times slower. A segment needing more ends the worker
//! ([`Redeflate::idle`]), so that it never holds memory beside the largest
//! segments; between rebuilds it gives its free heap back. It is forked
//! from the applier, so its resident memory counts the pages it shares
//! with it; it reports what it adds beyond them ([`Sandboxed::peak_memory`]).

use delta_core::{first_line, Rebuilder, Redeflate, RedeflateChunks};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{kill_process, waitpid, Pid, Resource, Rlimit, Signal, WaitOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of one rebuild, from the lengths of its content and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes the worker's address space may grow by.
    pub memory: u64,
    /// CPU seconds the rebuild may use.
    pub cpu_seconds: u64,
}

/// Fixed memory of a rebuild: preflate's hash chains and tables (measured
/// 1.0 MiB) and the allocator's slack, with room to spare.
const BASE_MEMORY: u64 = 8 << 20;
/// Memory per byte of content: preflate's copy of it, and its tokens
/// (measured 4.6 bytes a byte on changelogs).
const MEMORY_PER_RAW: u64 = 8;
/// Memory per byte of stream: its output buffer (twice the stream at
/// worst, as it grows) and the socket's copy.
const MEMORY_PER_STREAM: u64 = 4;
/// Content one CPU second must rebuild: preflate does about 25 MB/s of
/// content here, and a device's core is 3-5 times slower, so this is
/// 20 times the device's rate.
const RAW_PER_CPU_SECOND: u64 = 256 << 10;
/// CPU seconds every rebuild may take (`RLIMIT_CPU` counts whole seconds).
const BASE_CPU_SECONDS: u64 = 2;
/// Buffers of a segment of another kind that the worker may stay beside
/// (the copies and small edits between two gzip files); a segment needing
/// more ends it, so that the worker never holds memory beside the largest
/// segments, which the applier's memory limit is set by.
const WORKER_ROOM: u64 = 4 << 20;
/// Longest error message the worker sends.
const MAX_MESSAGE: usize = 4096;
/// How often the applier looks at the worker, its deadline and a cancel.
const TICK: Duration = Duration::from_millis(100);

impl Budget {
    /// The budget of rebuilding a `stream_len`-byte stream from `raw_len`
    /// bytes of content.
    pub fn of(raw_len: usize, stream_len: usize) -> Budget {
        Budget {
            memory: BASE_MEMORY
                .saturating_add((raw_len as u64).saturating_mul(MEMORY_PER_RAW))
                .saturating_add((stream_len as u64).saturating_mul(MEMORY_PER_STREAM)),
            cpu_seconds: BASE_CPU_SECONDS + (raw_len as u64).div_ceil(RAW_PER_CPU_SECOND),
        }
    }

    /// Wall-clock time after which the applier kills the worker: it may be
    /// waiting for a core.
    fn deadline(self) -> Duration {
        Duration::from_secs(4 * self.cpu_seconds + 2)
    }
}

/// What a request asks the worker to rebuild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A whole stream (kind `DEFLATE`).
    Whole = 0,
    /// The first chunk of a stream (kind `DEFLATE_CHUNKS`).
    First = 1,
    /// The next chunk of the stream the last `First` started.
    Next = 2,
}

impl Mode {
    fn from_u64(n: u64) -> Option<Mode> {
        [Mode::Whole, Mode::First, Mode::Next]
            .into_iter()
            .find(|m| *m as u64 == n)
    }
}

/// What a worker runs: preflate's rebuild, its error as one line. The
/// [`Rebuilder`] carries a chunked stream from one request to the next.
fn preflate(
    chunks: &mut Rebuilder,
    mode: Mode,
    raw: &[u8],
    corrections: &[u8],
) -> Result<Vec<u8>, String> {
    match mode {
        Mode::Whole => preflate_rs::recreate_whole_deflate_stream(raw, corrections)
            .map_err(|e| first_line(e.message()).to_string()),
        Mode::First => {
            *chunks = Rebuilder::new();
            chunks.chunk(raw, corrections)
        }
        Mode::Next => chunks.chunk(raw, corrections),
    }
}

/// The rebuild a worker runs.
type Rebuild = fn(&mut Rebuilder, Mode, &[u8], &[u8]) -> Result<Vec<u8>, String>;

/// A [`Redeflate`] that runs preflate in a worker process with a
/// [`Budget`] for each rebuild, and kills it when `cancel` is set.
#[derive(Debug)]
pub struct Sandboxed {
    cancel: Option<Arc<AtomicBool>>,
    rebuild: Rebuild,
    /// The worker serving the current run of deflate segments.
    worker: Mutex<Option<Worker>>,
    /// Highest memory of this process and a worker together at the end of
    /// a rebuild, in bytes.
    peak: AtomicU64,
    /// The most a worker held of its own between rebuilds, in bytes.
    residual: AtomicU64,
    /// The most a worker has had of its own, in bytes.
    own_peak: AtomicU64,
}

/// A worker's own memory (beyond the pages it shares with the applier).
#[derive(Debug, Clone, Copy)]
struct Own {
    /// The most it has had.
    peak: u64,
    /// What it holds after a rebuild, its heap trimmed.
    now: u64,
}

impl Default for Sandboxed {
    fn default() -> Sandboxed {
        Sandboxed::running(preflate, None)
    }
}

impl Sandboxed {
    /// A sandbox that also stops a rebuild within 100 ms of `cancel` being
    /// set.
    pub fn with_cancel(cancel: Arc<AtomicBool>) -> Sandboxed {
        Sandboxed::running(preflate, Some(cancel))
    }

    fn running(rebuild: Rebuild, cancel: Option<Arc<AtomicBool>>) -> Sandboxed {
        Sandboxed {
            cancel,
            rebuild,
            worker: Mutex::new(None),
            peak: AtomicU64::new(0),
            residual: AtomicU64::new(0),
            own_peak: AtomicU64::new(0),
        }
    }

    /// The peak memory of this process and the worker together while the
    /// worker lived, in bytes, counted high: at each rebuild, this
    /// process's resident memory plus the most the worker has had of its
    /// own; at each other segment, this process's resident memory plus
    /// that segment's buffers plus what the worker held of its own
    /// between rebuilds. (This process alone: [`peak_memory_of_self`].)
    pub fn peak_memory(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The most memory a worker has had of its own (beyond the pages it
    /// shares with this process), in bytes.
    pub fn worker_peak_memory(&self) -> u64 {
        self.own_peak.load(Ordering::Relaxed)
    }

    /// The stream `corrections` rebuild from `raw`, if it is at most
    /// `most` bytes long, within the [`Budget`] of those lengths.
    ///
    /// # Errors
    /// One line saying what failed or which limit stopped the rebuild.
    pub fn rebuild_at_most(
        &self,
        raw: &[u8],
        corrections: &[u8],
        most: usize,
    ) -> Result<Vec<u8>, String> {
        self.rebuild_in(Mode::Whole, raw, corrections, most, raw.len())
    }

    /// [`Sandboxed::rebuild_at_most`] of a whole stream or of a chunk,
    /// with the CPU budget of `cpu_raw` bytes of content (a chunked
    /// stream's: all of its content).
    fn rebuild_in(
        &self,
        mode: Mode,
        raw: &[u8],
        corrections: &[u8],
        most: usize,
        cpu_raw: usize,
    ) -> Result<Vec<u8>, String> {
        let budget = Budget {
            cpu_seconds: Budget::of(cpu_raw, most).cpu_seconds,
            ..Budget::of(raw.len(), most)
        };
        let mut slot = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let worker = match slot.take() {
            Some(worker) => worker,
            None => Worker::spawn(self.rebuild)?,
        };
        let cancel = self.cancel.as_deref();
        let mut worker = worker;
        match worker.rebuild(mode, raw, corrections, most, budget, cancel) {
            Ok((answer, own)) => {
                let together = proc_status_bytes("VmRSS:").saturating_add(own.peak);
                self.peak.fetch_max(together, Ordering::Relaxed);
                self.residual.fetch_max(own.now, Ordering::Relaxed);
                self.own_peak.fetch_max(own.peak, Ordering::Relaxed);
                *slot = Some(worker);
                answer
            }
            Err(stop) => Err(stop.message(worker, budget, most)),
        }
    }

    /// Ends the worker, if one is running.
    pub fn end_worker(&self) {
        let mut slot = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        drop(slot.take());
    }
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM:`,
/// `VmRSS:`), in bytes; 0 where `/proc` does not tell.
fn proc_status_bytes(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with(key))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

/// This process's peak resident memory (`VmHWM`), in bytes; 0 where
/// `/proc` does not tell.
pub fn peak_memory_of_self() -> u64 {
    proc_status_bytes("VmHWM:")
}

impl Redeflate for Sandboxed {
    fn redeflate(
        &self,
        raw: &[u8],
        corrections: &[u8],
        stream_len: usize,
    ) -> Result<Vec<u8>, String> {
        let stream = self.rebuild_at_most(raw, corrections, stream_len)?;
        if stream.len() != stream_len {
            return Err(format!(
                "rebuilt {} stream bytes, the segment holds {stream_len}",
                stream.len()
            ));
        }
        Ok(stream)
    }

    fn chunks(&self, raw_len: u64) -> Box<dyn RedeflateChunks + '_> {
        Box::new(SandboxedChunks {
            sandbox: self,
            first: true,
            raw_len: usize::try_from(raw_len).unwrap_or(usize::MAX),
        })
    }

    fn idle(&self, memory: u64) {
        let slot = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            return;
        }
        drop(slot);
        if memory > WORKER_ROOM {
            self.end_worker();
        } else {
            // This segment's buffers come on top of what this process
            // holds now, beside what the worker holds between rebuilds.
            let together = proc_status_bytes("VmRSS:")
                .saturating_add(memory)
                .saturating_add(self.residual.load(Ordering::Relaxed));
            self.peak.fetch_max(together, Ordering::Relaxed);
        }
    }
}

/// One stream rebuilt in chunks by a [`Sandboxed`]'s worker, which keeps
/// the stream's state between chunks. The stream's CPU budget is the one
/// of all its content (`raw_len`), set at its first chunk; each chunk's
/// memory budget is its own.
struct SandboxedChunks<'a> {
    sandbox: &'a Sandboxed,
    first: bool,
    raw_len: usize,
}

impl RedeflateChunks for SandboxedChunks<'_> {
    fn next(
        &mut self,
        raw: &[u8],
        corrections: &[u8],
        stream_len: usize,
    ) -> Result<Vec<u8>, String> {
        let mode = if self.first { Mode::First } else { Mode::Next };
        self.first = false;
        let stream = (self.sandbox).rebuild_in(mode, raw, corrections, stream_len, self.raw_len)?;
        if stream.len() != stream_len {
            return Err(format!(
                "rebuilt {} stream bytes, the chunk holds {stream_len}",
                stream.len()
            ));
        }
        Ok(stream)
    }
}

/// What the worker answers first: one of these bytes, the most memory it
/// has had of its own and what it holds of its own now, after the rebuild
/// (u64 each, little-endian), the body's length (u64), then the stream or
/// a message.
const HEAD: usize = 25;
const SENT_STREAM: u8 = 0;
const SENT_ERROR: u8 = 1;
const SENT_PANIC: u8 = 2;
/// A request: its [`Mode`], content length, corrections length, memory
/// budget and CPU budget (u64 each), then the content and the
/// corrections.
const REQUEST: usize = 40;

/// Why a rebuild got no answer.
#[derive(Debug)]
enum Stop {
    Cancelled,
    Deadline,
    TooLong,
    /// The worker hung up: it ended (a limit), or the socket failed.
    Lost(std::io::Error),
}

impl Stop {
    /// The message of a rebuild that `worker` did not answer (it is ended
    /// here: after a stop its state is not known).
    fn message(self, worker: Worker, budget: Budget, most: usize) -> String {
        match self {
            Stop::Cancelled => "cancelled while re-deflating".into(),
            Stop::Deadline => format!(
                "the re-deflater took more than {} s; the corrections are damaged",
                budget.deadline().as_secs()
            ),
            Stop::TooLong => {
                format!("the corrections rebuild more than the {most} stream bytes stated")
            }
            Stop::Lost(e) => worker
                .end_status(budget)
                .unwrap_or_else(|| format!("the re-deflater stopped answering: {e}")),
        }
    }
}

/// A worker process and the applier's end of its socket (non-blocking).
#[derive(Debug)]
struct Worker {
    child: Child,
    socket: UnixStream,
}

impl Worker {
    /// Forks a worker serving rebuilds with `rebuild`.
    fn spawn(rebuild: Rebuild) -> Result<Worker, String> {
        let (socket, theirs) = UnixStream::pair()
            .map_err(|e| format!("cannot make a socket for the re-deflater: {e}"))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| format!("cannot set up the re-deflater's socket: {e}"))?;
        // The worker closes the applier's end (so that it sees the
        // applier hang up); the applier closes the worker's end when the
        // closure is dropped.
        let mine = std::cell::RefCell::new(Some(socket));
        let ours = &mine;
        let child = Child::fork(move || {
            drop(ours.borrow_mut().take());
            serve(theirs, rebuild)
        })?;
        let socket = mine.into_inner().expect("the applier keeps its end");
        Ok(Worker { child, socket })
    }

    /// Sends one rebuild and reads its answer: the worker's outcome and its
    /// own memory.
    #[allow(clippy::type_complexity)]
    fn rebuild(
        &mut self,
        mode: Mode,
        raw: &[u8],
        corrections: &[u8],
        most: usize,
        budget: Budget,
        cancel: Option<&AtomicBool>,
    ) -> Result<(Result<Vec<u8>, String>, Own), Stop> {
        let deadline = Instant::now() + budget.deadline();
        let mut request = Vec::with_capacity(REQUEST);
        for n in [
            mode as u64,
            raw.len() as u64,
            corrections.len() as u64,
            budget.memory,
            budget.cpu_seconds,
        ] {
            request.extend_from_slice(&n.to_le_bytes());
        }
        let mut io = Io {
            socket: &mut self.socket,
            deadline,
            cancel,
        };
        for part in [&request[..], raw, corrections] {
            io.send(part)?;
        }
        let mut head = [0u8; HEAD];
        io.receive(&mut head)?;
        let field = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
        let own = Own {
            peak: field(1),
            now: field(9),
        };
        let len = field(17);
        let allowed = if head[0] == SENT_STREAM {
            most
        } else {
            MAX_MESSAGE
        };
        if len > allowed as u64 {
            return Err(Stop::TooLong);
        }
        let mut body = vec![0u8; len as usize];
        io.receive(&mut body)?;
        let answer = match head[0] {
            SENT_STREAM => Ok(body),
            SENT_ERROR => Err(format!(
                "the corrections do not rebuild it: {}",
                String::from_utf8_lossy(&body)
            )),
            SENT_PANIC => {
                Err("the corrections do not rebuild it (the re-deflater failed a check)".into())
            }
            other => Err(format!("the re-deflater sent an unknown answer {other}")),
        };
        Ok((answer, own))
    }

    /// How the worker ended, once it has hung up: which limit stopped it.
    fn end_status(mut self, budget: Budget) -> Option<String> {
        let status = self.child.wait()?;
        if status.exited() {
            return None;
        }
        let signal = status.terminating_signal().unwrap_or(0);
        Some(if signal == libc::SIGXCPU || signal == libc::SIGKILL {
            format!(
                "the re-deflater used its {} s of CPU; the corrections are damaged",
                budget.cpu_seconds
            )
        } else if signal == libc::SIGABRT || signal == libc::SIGSEGV {
            format!(
                "the re-deflater ran out of its {} MiB of memory; the corrections are damaged",
                budget.memory >> 20
            )
        } else {
            format!("the re-deflater was stopped by signal {signal}")
        })
    }
}

/// The applier's side of one exchange: sends and receives on the
/// non-blocking socket, looking at the deadline and the cancel flag every
/// [`TICK`].
struct Io<'a> {
    socket: &'a mut UnixStream,
    deadline: Instant,
    cancel: Option<&'a AtomicBool>,
}

impl Io<'_> {
    /// Waits until the socket is ready for `flags`, or a stop.
    fn wait(&self, flags: PollFlags) -> Result<(), Stop> {
        loop {
            if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Stop::Cancelled);
            }
            if Instant::now() > self.deadline {
                return Err(Stop::Deadline);
            }
            let mut fds = [PollFd::new(&*self.socket, flags)];
            let tick = Timespec::try_from(TICK).expect("100 ms is a timespec");
            match poll(&mut fds, Some(&tick)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => return Ok(()),
                Err(e) => return Err(Stop::Lost(e.into())),
            }
        }
    }

    fn send(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            self.wait(PollFlags::OUT)?;
            // MSG_NOSIGNAL: a worker that died is an error, not a SIGPIPE
            // that would end the host process.
            match rustix::net::send(&*self.socket, bytes, rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => bytes = &bytes[n..],
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Stop::Lost(e.into())),
            }
        }
        Ok(())
    }

    fn receive(&mut self, mut into: &mut [u8]) -> Result<(), Stop> {
        while !into.is_empty() {
            self.wait(PollFlags::IN)?;
            match self.socket.read(into) {
                Ok(0) => {
                    return Err(Stop::Lost(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => into = &mut into[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(Stop::Lost(e)),
            }
        }
        Ok(())
    }
}

/// The worker: answers rebuilds until the applier hangs up, each under
/// its budget's limits.
fn serve(mut socket: UnixStream, rebuild: Rebuild) {
    // Nothing the worker meets reaches the applier's terminal: not a panic
    // message, nor the allocator's message when a limit is reached.
    std::panic::set_hook(Box::new(|_| {}));
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(null.as_fd());
    }
    default_fatal_signals();
    let shared = proc_status_bytes("VmRSS:");
    let mut chunks = Rebuilder::new();
    // A chunked stream's first chunk was seen: its CPU budget stands.
    let mut in_stream = false;
    loop {
        let mut request = [0u8; REQUEST];
        if socket.read_exact(&mut request).is_err() {
            return;
        }
        let field =
            |i: usize| u64::from_le_bytes(request[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let Some(mode) = Mode::from_u64(field(0)) else {
            return;
        };
        let (raw_len, corrections_len) = (field(1) as usize, field(2) as usize);
        let budget = Budget {
            memory: field(3),
            cpu_seconds: field(4),
        };
        let mut raw = vec![0u8; raw_len];
        let mut corrections = vec![0u8; corrections_len];
        if socket.read_exact(&mut raw).is_err() || socket.read_exact(&mut corrections).is_err() {
            return;
        }
        let keep_cpu = mode == Mode::Next && in_stream;
        in_stream = mode != Mode::Whole;
        let answer = match limit(budget, keep_cpu) {
            Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rebuild(&mut chunks, mode, &raw, &corrections)
            }))
            .unwrap_or_else(|_| Err(String::new())),
            Err(e) => Err(format!("cannot limit the re-deflater: {e}")),
        };
        drop((raw, corrections));
        trim_heap();
        let own_peak = proc_status_bytes("VmHWM:").saturating_sub(shared);
        let own_now = proc_status_bytes("VmRSS:").saturating_sub(shared);
        let (what, body) = match &answer {
            Ok(stream) => (SENT_STREAM, &stream[..]),
            Err(message) if message.is_empty() => (SENT_PANIC, &[][..]),
            Err(message) => (
                SENT_ERROR,
                &message.as_bytes()[..message.len().min(MAX_MESSAGE)],
            ),
        };
        let mut head = [what; HEAD];
        head[1..9].copy_from_slice(&own_peak.to_le_bytes());
        head[9..17].copy_from_slice(&own_now.to_le_bytes());
        head[17..25].copy_from_slice(&(body.len() as u64).to_le_bytes());
        if socket
            .write_all(&head)
            .and_then(|()| socket.write_all(body))
            .is_err()
        {
            return;
        }
    }
}

/// Gives the fatal signals the worker meets at its limits (an allocation
/// failing aborts it, its CPU limit sends SIGXCPU) their default action:
/// the handlers it inherits from the host process (a crash reporter, or
/// the fuzzer's, which wrote a "crash" input each time a worker hit its
/// memory limit) would treat the worker's planned end as the host's crash.
fn default_fatal_signals() {
    for signal in [
        libc::SIGABRT,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGXCPU,
    ] {
        #[allow(unsafe_code)]
        // SAFETY: signal(2) with SIG_DFL takes no pointer and is
        // async-signal-safe, as a forked child of a threaded process needs.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// Gives the heap's free memory back to the system: the worker holds
/// little between rebuilds, when the applier may hold its largest buffers.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; glibc serialises it against
    // allocations.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Limits the worker for one rebuild: its address space may grow by
/// `budget.memory` from now, its CPU time by `budget.cpu_seconds`.
///
/// With `keep_cpu`, the CPU limit is left as it is: the chunks of one
/// stream share the budget its first chunk set, so that a hostile segment
/// of many chunks cannot take a full budget for each.
fn limit(budget: Budget, keep_cpu: bool) -> std::io::Result<()> {
    let mapped = std::fs::read_to_string("/proc/self/statm")?
        .split_whitespace()
        .next()
        .and_then(|pages| pages.parse::<u64>().ok())
        .map(|pages| pages * rustix::param::page_size() as u64)
        .ok_or_else(|| std::io::Error::other("/proc/self/statm unreadable"))?;
    let cpu = std::fs::read_to_string("/proc/self/stat")?;
    // utime and stime, fields 14 and 15, after the command name's ')'.
    let ticks: u64 = cpu
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
        .into_iter()
        .flatten()
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    let used = ticks.div_ceil(rustix::param::clock_ticks_per_second().max(1));
    let limits = [
        (Resource::As, mapped.saturating_add(budget.memory)),
        (Resource::Cpu, used.saturating_add(budget.cpu_seconds)),
    ];
    for (resource, value) in &limits[..if keep_cpu { 1 } else { 2 }] {
        let (resource, value) = (*resource, *value);
        let hard = rustix::process::getrlimit(resource).maximum;
        let soft = hard.map_or(value, |hard| value.min(hard));
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: Some(soft),
                maximum: hard,
            },
        )?;
    }
    Ok(())
}

/// A forked child, killed and reaped when dropped before [`Child::wait`].
#[derive(Debug)]
struct Child {
    pid: Option<Pid>,
}

impl Child {
    /// Forks; the child runs `body` and exits at once, without running the
    /// parent's destructors or exit handlers.
    fn fork(body: impl FnOnce()) -> Result<Child, String> {
        #[allow(unsafe_code)]
        // SAFETY: the child runs only `body`, which calls into preflate,
        // the allocator (glibc's and musl's are safe to use after fork)
        // and plain system calls, then `_exit`s: it never returns into the
        // parent's code, and touches no lock another thread may have held
        // at the fork except the allocator's and the panic hook's (set by
        // the child itself; a child stuck there is killed at its deadline).
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(format!(
                "cannot start the re-deflater: {}",
                std::io::Error::last_os_error()
            )),
            0 => {
                body();
                #[allow(unsafe_code)]
                // SAFETY: `_exit` ends the child; nothing of the parent's
                // state is flushed or dropped twice.
                unsafe {
                    libc::_exit(0)
                }
            }
            pid => Ok(Child {
                pid: Pid::from_raw(pid),
            }),
        }
    }

    /// Waits for the child to end (it has hung up; one that has not is
    /// killed first) and returns how it ended.
    fn wait(&mut self) -> Option<rustix::process::WaitStatus> {
        let pid = self.pid.take()?;
        // A worker that hung up has ended or is ending; one stuck half-way
        // is not waited for.
        let ended = Instant::now() + Duration::from_secs(1);
        loop {
            match waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => return Some(status),
                Ok(None) if Instant::now() < ended => std::thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    let _ = kill_process(pid, Signal::KILL);
                    return waitpid(Some(pid), WaitOptions::empty())
                        .ok()
                        .flatten()
                        .map(|(_, s)| s);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill_process(pid, Signal::KILL);
            while let Err(rustix::io::Errno::INTR) = waitpid(Some(pid), WaitOptions::empty()) {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip_stream(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    fn corrections(stream: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let config = preflate_rs::PreflateConfig::default();
        let (chunk, text) = preflate_rs::preflate_whole_deflate_stream(stream, &config).unwrap();
        (text.text().to_vec(), chunk.corrections)
    }

    fn text() -> Vec<u8> {
        (0..4000)
            .flat_map(|i| format!("line {i}: the quick brown fox {}\n", i * 7 % 13).into_bytes())
            .collect()
    }

    #[test]
    fn a_valid_stream_is_rebuilt_exactly() {
        let stream = gzip_stream(&text());
        let (raw, corr) = corrections(&stream);
        let rebuilt = Sandboxed::default()
            .redeflate(&raw, &corr, stream.len())
            .unwrap();
        assert!(rebuilt == stream);
    }

    #[test]
    fn a_stream_longer_or_shorter_than_stated_is_refused() {
        let stream = gzip_stream(&text());
        let (raw, corr) = corrections(&stream);
        for stated in [stream.len() - 1, stream.len() + 1, 0] {
            let err = Sandboxed::default()
                .redeflate(&raw, &corr, stated)
                .unwrap_err();
            assert!(err.contains("stream bytes"), "{err}");
        }
    }

    #[test]
    fn damaged_corrections_give_one_line_without_source_paths() {
        let stream = gzip_stream(&text());
        let (raw, mut corr) = corrections(&stream);
        corr.truncate(3);
        let err = Sandboxed::default()
            .redeflate(&raw, &corr, stream.len())
            .unwrap_err();
        assert!(!err.contains('\n') && !err.contains(".rs:"), "{err}");
    }

    /// A stream cut into two chunks by preflate (at a block boundary
    /// within its first 8 KiB): the content, and each chunk's content
    /// length, stream length and corrections.
    #[allow(clippy::type_complexity)]
    fn two_chunks(stream: &[u8]) -> (Vec<u8>, Vec<(usize, usize, Vec<u8>)>) {
        let config = preflate_rs::PreflateConfig::default();
        let mut processor = preflate_rs::PreflateStreamProcessor::new(&config);
        let (mut raw, mut chunks, mut at) = (Vec::new(), Vec::new(), 0);
        let mut slice = 8 << 10;
        while !processor.is_done() {
            let end = (at + slice).min(stream.len());
            match processor.decompress(&stream[at..end]) {
                Ok(chunk) => {
                    let text = processor.plain_text().text();
                    raw.extend_from_slice(text);
                    chunks.push((text.len(), chunk.compressed_size, chunk.corrections));
                    at += chunk.compressed_size;
                    processor.shrink_to_dictionary();
                    slice = stream.len();
                }
                Err(_) => slice *= 2,
            }
        }
        (raw, chunks)
    }

    #[test]
    fn a_stream_is_rebuilt_in_chunks_by_one_worker() {
        let text: Vec<u8> = (0..20).flat_map(|_| text()).collect();
        let stream = gzip_stream(&text);
        let (raw, chunks) = two_chunks(&stream);
        assert!(chunks.len() >= 2, "{} chunks", chunks.len());
        let sandbox = Sandboxed::default();
        let mut rebuilder = sandbox.chunks(raw.len() as u64);
        let (mut at, mut out) = (0, Vec::new());
        for (raw_len, stream_len, corrections) in &chunks {
            let part = rebuilder
                .next(&raw[at..at + raw_len], corrections, *stream_len)
                .unwrap();
            at += raw_len;
            out.extend_from_slice(&part);
        }
        assert!(out == stream);
        // A chunk that says it is shorter than it rebuilds is refused.
        let mut rebuilder = sandbox.chunks(raw.len() as u64);
        let (raw_len, stream_len, corrections) = &chunks[0];
        let err = rebuilder
            .next(&raw[..*raw_len], corrections, stream_len - 1)
            .unwrap_err();
        assert!(err.contains("stream bytes"), "{err}");
    }

    /// Burns 1.2 s of CPU (of the worker's own: other tests share the
    /// cores), then answers.
    fn slow(_: &mut Rebuilder, _: Mode, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        let cpu = || {
            let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        let start = cpu();
        while cpu() - start < Duration::from_millis(1200) {
            std::hint::black_box(0u64);
        }
        Ok(vec![1])
    }

    /// The chunks of one stream share its CPU budget (3 s for a byte of
    /// content): a third chunk as slow as the first two is stopped, where a
    /// budget for each chunk would let a hostile segment of 4096 chunks
    /// take 4096 budgets.
    #[test]
    fn the_chunks_of_a_stream_share_its_cpu_budget() {
        assert_eq!(Budget::of(1, 1).cpu_seconds, 3);
        let sandbox = Sandboxed::running(slow, None);
        let mut rebuilder = sandbox.chunks(1);
        for _ in 0..2 {
            assert_eq!(rebuilder.next(&[0], &[], 1).unwrap(), vec![1]);
        }
        let err = rebuilder.next(&[0], &[], 1).unwrap_err();
        assert!(err.contains("s of CPU"), "{err}");
        // A new stream has a budget of its own.
        let mut rebuilder = sandbox.chunks(1);
        assert_eq!(rebuilder.next(&[0], &[], 1).unwrap(), vec![1]);
    }

    fn spin(_: &mut Rebuilder, _: Mode, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        loop {
            std::hint::black_box(0u64);
        }
    }

    fn grow(_: &mut Rebuilder, _: Mode, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        let mut held = Vec::new();
        loop {
            held.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&held);
        }
    }

    fn endless(_: &mut Rebuilder, _: Mode, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(vec![7u8; 1 << 20])
    }

    /// A worker that never ends is stopped by the CPU limit, one that
    /// grows without end by the memory limit, and one that sends too much
    /// by the applier; none takes the test down, and a new worker serves
    /// the next rebuild.
    #[test]
    fn the_limits_stop_a_runaway_worker() {
        let err = Sandboxed::running(spin, None)
            .rebuild_at_most(&[], &[], 10)
            .unwrap_err();
        assert!(err.contains("CPU"), "{err}");
        let err = Sandboxed::running(grow, None)
            .rebuild_at_most(&[], &[], 10)
            .unwrap_err();
        assert!(err.contains("memory"), "{err}");
        let sandbox = Sandboxed::running(endless, None);
        let err = sandbox.rebuild_at_most(&[], &[], 10).unwrap_err();
        assert!(err.contains("more than the 10"), "{err}");
        assert_eq!(
            sandbox.rebuild_at_most(&[], &[], 1 << 20).unwrap().len(),
            1 << 20
        );
    }

    fn pid(_: &mut Rebuilder, _: Mode, _: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(std::process::id().to_le_bytes().to_vec())
    }

    /// One worker serves consecutive rebuilds and small segments of other
    /// kinds between them; a larger one ends it, and the next rebuild forks
    /// a new one.
    #[test]
    fn a_worker_serves_a_run_of_rebuilds_and_ends_when_idle() {
        let sandbox = Sandboxed::running(pid, None);
        let first = sandbox.rebuild_at_most(&[1; 100], &[2; 10], 4).unwrap();
        sandbox.idle(64 << 10);
        let again = sandbox.rebuild_at_most(&[3; 5000], &[], 4).unwrap();
        assert_eq!(first, again, "a second worker for the second rebuild");
        assert_ne!(
            first,
            std::process::id().to_le_bytes(),
            "rebuilt in this process"
        );
        sandbox.idle(WORKER_ROOM + 1);
        let next = sandbox.rebuild_at_most(&[], &[], 4).unwrap();
        assert_ne!(first, next, "the worker outlived idle()");
        assert!(sandbox.peak_memory() > 0);
    }

    #[test]
    fn a_cancel_stops_the_worker_within_a_tick() {
        let cancel = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&cancel);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            setter.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = Sandboxed::running(spin, Some(cancel))
            .rebuild_at_most(&[], &[], 10)
            .unwrap_err();
        t.join().unwrap();
        assert!(err.contains("cancelled"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// The corrections of `testdata/regress/deflate_segment/
    /// preflate-hang-hostile-corrections` (the fuzz harness's layout) make
    /// preflate loop while its memory grows; the sandbox ends it.
    #[test]
    fn hostile_corrections_that_make_preflate_loop_are_stopped() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/regress/deflate_segment/preflate-hang-hostile-corrections"
        );
        let input = std::fs::read(path).unwrap();
        let mut at = 1;
        for _ in 0..2 {
            at += 1 + usize::from(input[at]);
        }
        let len = usize::from(u16::from_le_bytes([input[at], input[at + 1]]));
        let (corr, raw) = input[at + 2..].split_at(len);
        let started = Instant::now();
        let err = Sandboxed::default()
            .redeflate(raw, corr, 1 << 20)
            .unwrap_err();
        let budget = Budget::of(raw.len(), 1 << 20);
        assert!(started.elapsed() < budget.deadline(), "{err}");
        assert!(err.contains("damaged"), "{err}");
    }
}
