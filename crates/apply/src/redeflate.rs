//! Re-deflating untrusted deflate segments in a child process, under limits
//! the kernel enforces.
//!
//! preflate-rs rebuilds a deflate stream from its content and corrections,
//! and it is not hardened against hostile corrections: on some, its block
//! loop never ends while its memory grows (a 14.7 KB delta took 3.3 GB in
//! 3.5 minutes). Its loops cannot be reached from outside the crate, so the
//! applier runs each rebuild in a forked child ([`Sandboxed`]) and bounds
//! the child instead:
//!
//! - **memory**: the child's address space may grow by [`Budget::memory`]
//!   past what it shares with the applier at the fork (`RLIMIT_AS`); past
//!   it an allocation fails and the child ends;
//! - **CPU**: at most [`Budget::cpu_seconds`] of CPU (`RLIMIT_CPU`), a
//!   stated multiple of the content's length;
//! - **output**: the stream comes back through a pipe, and the applier
//!   stops the child as soon as it sends more than the segment states;
//! - **time and cancels**: the applier looks every 100 ms, and kills the
//!   child at a cancel or past a wall-clock deadline of four times its
//!   CPU budget.
//!
//! The child shares the applier's pages copy-on-write: the content and the
//! corrections are not copied, and the child's own memory is preflate's.
//! One fork per deflate segment costs about 0.1 ms here.

use delta_core::{first_line, Redeflate};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{kill_process, waitpid, Pid, Resource, Rlimit, Signal, WaitOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits of one rebuild, from the lengths of its content and stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes the child's address space may grow by.
    pub memory: u64,
    /// CPU seconds the child may use.
    pub cpu_seconds: u64,
}

/// Fixed memory of a rebuild: preflate's hash chains and tables (measured
/// 1.0 MiB) and the allocator's slack, with room to spare.
const BASE_MEMORY: u64 = 8 << 20;
/// Memory per byte of content: preflate's copy of it, and its tokens
/// (measured 4.6 bytes a byte on changelogs).
const MEMORY_PER_RAW: u64 = 8;
/// Memory per byte of stream: its output buffer (twice the stream at
/// worst, as it grows) and the pipe's copy.
const MEMORY_PER_STREAM: u64 = 4;
/// Content one CPU second must rebuild: preflate does about 25 MB/s of
/// content here, and a device's core is 3-5 times slower, so this is
/// 20 times the device's rate.
const RAW_PER_CPU_SECOND: u64 = 256 << 10;
/// CPU seconds every rebuild may take (`RLIMIT_CPU` counts whole seconds).
const BASE_CPU_SECONDS: u64 = 2;
/// Longest error message the child sends.
const MAX_MESSAGE: usize = 4096;
/// How often the applier looks at the child, its deadline and a cancel.
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

    /// Wall-clock time after which the applier kills the child: the child
    /// may be waiting for a core.
    fn deadline(self) -> Duration {
        Duration::from_secs(4 * self.cpu_seconds + 2)
    }
}

/// A [`Redeflate`] that runs preflate in a child process with a [`Budget`],
/// and kills it when `cancel` is set.
#[derive(Debug, Default)]
pub struct Sandboxed {
    cancel: Option<Arc<AtomicBool>>,
    /// Highest peak resident memory of a child, in bytes.
    peak: AtomicU64,
}

impl Sandboxed {
    /// A sandbox that also stops a rebuild within 100 ms of `cancel` being
    /// set.
    pub fn with_cancel(cancel: Arc<AtomicBool>) -> Sandboxed {
        Sandboxed {
            cancel: Some(cancel),
            peak: AtomicU64::new(0),
        }
    }

    /// The highest peak resident memory of the children so far, in bytes
    /// (0 before the first rebuild). A child's resident memory counts the
    /// applier's pages it shares, so this is about the applier's and the
    /// child's memory together at that child's peak.
    pub fn peak_memory(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

/// This process's peak resident memory (`VmHWM`), in bytes; 0 where
/// `/proc` does not tell.
pub fn peak_memory_of_self() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
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
}

impl Sandboxed {
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
        let budget = Budget::of(raw.len(), most);
        let cancel = self.cancel.as_deref();
        let (stream, peak) = rebuild_in_child(raw, corrections, most, budget, cancel, preflate)?;
        self.peak.fetch_max(peak, Ordering::Relaxed);
        Ok(stream)
    }
}

/// What the child runs: preflate's rebuild, its error as one line.
fn preflate(raw: &[u8], corrections: &[u8]) -> Result<Vec<u8>, String> {
    preflate_rs::recreate_whole_deflate_stream(raw, corrections)
        .map_err(|e| first_line(e.message()).to_string())
}

/// The rebuild a child runs.
type Rebuild = fn(&[u8], &[u8]) -> Result<Vec<u8>, String>;

/// What the child sends first: one of these bytes, its peak resident
/// memory (u64, little-endian), then the stream or a message.
const HEAD: usize = 9;
const SENT_STREAM: u8 = 0;
const SENT_ERROR: u8 = 1;
const SENT_PANIC: u8 = 2;

/// Runs `rebuild` in a forked child under `budget`: the stream, of at
/// most `stream_len` bytes, and the child's peak resident memory.
fn rebuild_in_child(
    raw: &[u8],
    corrections: &[u8],
    stream_len: usize,
    budget: Budget,
    cancel: Option<&AtomicBool>,
    rebuild: Rebuild,
) -> Result<(Vec<u8>, u64), String> {
    let (mut from_child, to_child) =
        std::io::pipe().map_err(|e| format!("cannot make a pipe for the re-deflater: {e}"))?;
    let child = Child::fork(|| run_child(raw, corrections, budget, rebuild, to_child))?;
    let too_long =
        || format!("the corrections rebuild more than the {stream_len} stream bytes stated");
    let mut received = Vec::new();
    let most = HEAD + stream_len.max(MAX_MESSAGE);
    let started = Instant::now();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err("cancelled while re-deflating".into());
        }
        if started.elapsed() > budget.deadline() {
            return Err(format!(
                "the re-deflater took more than {} s; the corrections are damaged",
                budget.deadline().as_secs()
            ));
        }
        let mut fds = [PollFd::new(&from_child, PollFlags::IN)];
        let tick = Timespec::try_from(TICK).expect("100 ms is a timespec");
        match poll(&mut fds, Some(&tick)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(format!("waiting for the re-deflater: {e}")),
        }
        let n = match from_child.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading from the re-deflater: {e}")),
        };
        if n == 0 {
            break;
        }
        if received.len() + n > most {
            return Err(too_long());
        }
        if received.is_empty() {
            received.reserve_exact(most.min(HEAD + stream_len));
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let ended = child.wait(budget)?;
    let (what, peak) = match received.get(..HEAD) {
        Some(head) => {
            let peak = u64::from_le_bytes(head[1..HEAD].try_into().expect("8 bytes"));
            (head[0], peak)
        }
        None => {
            return Err(ended
                .err()
                .unwrap_or_else(|| "the re-deflater ended without sending a stream".to_string()))
        }
    };
    let body = &received[HEAD..];
    match what {
        SENT_STREAM if ended.is_ok() => {
            if body.len() > stream_len {
                return Err(too_long());
            }
            received.drain(..HEAD);
            Ok((received, peak))
        }
        SENT_ERROR => Err(format!(
            "the corrections do not rebuild it: {}",
            String::from_utf8_lossy(body)
        )),
        SENT_PANIC => {
            Err("the corrections do not rebuild it (the re-deflater failed a check)".into())
        }
        _ => Err(ended
            .err()
            .unwrap_or_else(|| "the re-deflater sent an unknown answer".to_string())),
    }
}

/// The child's side: limits itself, rebuilds, sends the outcome, exits.
fn run_child(
    raw: &[u8],
    corrections: &[u8],
    budget: Budget,
    rebuild: Rebuild,
    mut out: std::io::PipeWriter,
) {
    // Nothing the child meets reaches the applier's terminal: not a panic
    // message, nor the allocator's message when the limit is reached.
    std::panic::set_hook(Box::new(|_| {}));
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stderr(null.as_fd());
    }
    let mapped = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map(|pages| pages * rustix::param::page_size() as u64);
    let Some(mapped) = mapped else {
        let _ = out.write_all(&head(SENT_ERROR));
        let _ = out.write_all(b"cannot read /proc/self/statm to limit the re-deflater");
        return;
    };
    let limit = |resource, value: u64| {
        let value = Some(value);
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: value,
                maximum: value,
            },
        )
    };
    if let Err(e) = limit(Resource::As, mapped.saturating_add(budget.memory))
        .and_then(|()| limit(Resource::Cpu, budget.cpu_seconds))
    {
        let _ = out.write_all(&head(SENT_ERROR));
        let _ = write!(out, "cannot limit the re-deflater: {e}");
        return;
    }
    let rebuilt = std::panic::catch_unwind(|| rebuild(raw, corrections));
    let _ = match rebuilt {
        Ok(Ok(stream)) => out
            .write_all(&head(SENT_STREAM))
            .and_then(|()| out.write_all(&stream)),
        Ok(Err(message)) => {
            let message = &message.as_bytes()[..message.len().min(MAX_MESSAGE)];
            out.write_all(&head(SENT_ERROR))
                .and_then(|()| out.write_all(message))
        }
        Err(_) => out.write_all(&head(SENT_PANIC)),
    };
}

/// The first bytes the child sends: `what`, and its peak memory so far.
fn head(what: u8) -> [u8; HEAD] {
    let mut head = [what; HEAD];
    head[1..].copy_from_slice(&peak_memory_of_self().to_le_bytes());
    head
}

/// A forked child, killed and reaped when dropped before [`Child::wait`].
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

    /// Waits for the child to end (it has closed its pipe): `Ok` when it
    /// exited, or a message saying which limit stopped it.
    fn wait(mut self, budget: Budget) -> Result<Result<(), String>, String> {
        let Some(pid) = self.pid.take() else {
            return Ok(Err("the re-deflater was not started".into()));
        };
        let status = loop {
            match waitpid(Some(pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => break status,
                Ok(None) | Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("waiting for the re-deflater: {e}")),
            }
        };
        if status.exited() {
            return Ok(Ok(()));
        }
        let signal = status.terminating_signal().unwrap_or(0);
        Ok(Err(if signal == libc::SIGXCPU || signal == libc::SIGKILL {
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
        }))
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

    fn spin(_: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        loop {
            std::hint::black_box(0u64);
        }
    }

    fn grow(_: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        let mut held = Vec::new();
        loop {
            held.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&held);
        }
    }

    fn endless(_: &[u8], _: &[u8]) -> Result<Vec<u8>, String> {
        Ok(vec![7u8; 1 << 20])
    }

    /// A child that never ends is stopped by the CPU limit, one that grows
    /// without end by the memory limit, and one that sends too much by the
    /// applier; none takes the test down.
    #[test]
    fn the_limits_stop_a_runaway_child() {
        let budget = Budget {
            memory: 64 << 20,
            cpu_seconds: 1,
        };
        let err = rebuild_in_child(&[], &[], 10, budget, None, spin).unwrap_err();
        assert!(err.contains("CPU"), "{err}");
        let err = rebuild_in_child(&[], &[], 10, budget, None, grow).unwrap_err();
        assert!(err.contains("memory"), "{err}");
        let err = rebuild_in_child(&[], &[], 10, budget, None, endless).unwrap_err();
        assert!(err.contains("more than the 10"), "{err}");
    }

    #[test]
    fn a_cancel_stops_the_child_within_a_tick() {
        let budget = Budget {
            memory: 64 << 20,
            cpu_seconds: 60,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let setter = Arc::clone(&cancel);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            setter.store(true, Ordering::Relaxed);
        });
        let started = Instant::now();
        let err = rebuild_in_child(&[], &[], 10, budget, Some(&cancel), spin).unwrap_err();
        t.join().unwrap();
        assert!(err.contains("cancelled"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
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
